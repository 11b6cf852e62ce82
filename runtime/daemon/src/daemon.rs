//! `colinux-daemon`: the command line, then one of: a dry run, a driver
//! action, a service action, or running the guest.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use clap::Parser;
use colinux_config::Settings;

use crate::engine::{self, Plan};
use crate::host;
use crate::seed::{self, SeedDisk};
use crate::supervise::{self, exit, Msg, RunOptions, StartError};

const AFTER_HELP: &str = "\
CONFIG is the coLinux config language, as tokens on the command line and in
@files, in any mix:  colinux-daemon kernel=vmlinuz cobd0=root.ext4 \\
root=/dev/cobd0 eth0=slirp,,tcp:2222:22 @more.conf
Keys: kernel= initrd= mem= smp= arch=i386|x86_64 accel=auto|kvm|whpx|tcg qemu=
cobdN= (hdXN=/sdXN= aliases) scsiN=disk|cdrom,FILE[,SIZE[,grow]]
ethN=slirp|tuntap|pcap-bridge|ndis-bridge cofsN= ttysN= execN= cocon= color=
cursor=, and for a coMosix cluster guest cluster=head|node cluster_hostname=
cluster_head= cluster_network= cluster_munge_key= cluster_ssh_host_key=
cluster_root_key= (its seed disk is made from them), root_key=FILE (a public key)
root_password_hash=HASH (crypt(3)) for root's login, handed to the guest on a
seed disk at its first start; anything else goes to the
guest kernel's command line, except a botched key (cobd1x=, ethX=, ETH0=),
which is an error. On Linux, ethN=pcap-bridge,BRIDGE adds a tap to the host
bridge BRIDGE (needs CAP_NET_ADMIN).
An @file ending in .ini is read as a coMosix ini file.

Console: attached (default), the guest console is this terminal and Ctrl-C
powers the guest off (a second Ctrl-C stops it at once). With -d, the console
is a socket: `colinux-console NAME` attaches, Ctrl-] detaches.

Exit codes:
  0  the guest powered off (also after Ctrl-C or SIGTERM)
  1  the guest's kernel panicked or the guest crashed
  2  configuration or command-line error; nothing was started
  3  the engine (QEMU) is not installed or not where qemu= says
  4  the engine failed to start, failed, or was stopped or killed from outside
  5  the guest rebooted (a service manager restarts the daemon)
  6  the guest did not power off in time and the engine was stopped
  7  the guest could not mount its root filesystem: an NFS root whose server
     it could not reach (no DHCP answer, or the mount failed); the engine
     was stopped";

/// Runs a coLinux guest (a Debian or Ubuntu image beside the host) as one
/// process, on QEMU with the best accelerator the host really has.
#[derive(Parser, Debug)]
#[command(name = "colinux-daemon", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Config tokens and @files (see below)
    #[arg(value_name = "CONFIG")]
    pub config: Vec<String>,

    /// Detached: the console goes to a socket for colinux-console, not to this terminal
    #[arg(short = 'd', long = "detached")]
    pub detached: bool,

    /// Write the daemon's pid to FILE (removed when it ends)
    #[arg(short = 'p', long = "pidfile", value_name = "FILE")]
    pub pidfile: Option<PathBuf>,

    /// Suppress kernel messages on this terminal (the console socket still has them)
    #[arg(short = 'k', long = "quiet-kernel")]
    pub quiet_kernel: bool,

    /// The daemon's own log level: error, warn, info, debug, trace, or 0-4
    #[arg(
        short = 'v',
        long = "verbose",
        value_name = "LEVEL",
        default_value = "info"
    )]
    pub verbose: String,

    /// The guest's name, for colinux-console and services [default: the first @file's name, else colinux]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Check the whole configuration, print the resolved settings and the engine command line (one argument per line), and start nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Seconds the guest gets to power off after Ctrl-C/SIGTERM (its power button is pressed every 2 s meanwhile) before the engine is stopped
    #[arg(long, value_name = "SECS", default_value_t = 90)]
    pub shutdown_timeout: u64,

    /// Print the host virtualization found and the accelerator that will be used
    #[arg(long, conflicts_with_all = ["install_driver", "remove_driver"])]
    pub status_driver: bool,

    /// Enable the host's virtualization (Linux: load KVM, kvm group; Windows: Hypervisor Platform), or print the exact commands
    #[arg(long, conflicts_with = "remove_driver")]
    pub install_driver: bool,

    /// Undo --install-driver where that is possible, or print the exact commands
    #[arg(long)]
    pub remove_driver: bool,

    /// Install and enable a service (systemd unit / Windows service) that runs this guest with the given CONFIG
    #[arg(long, value_name = "NAME", conflicts_with = "remove_service")]
    pub install_service: Option<String>,

    /// Stop, disable and remove the service NAME
    #[arg(long, value_name = "NAME")]
    pub remove_service: Option<String>,

    /// For installers: read the coMosix ini FILE (after any CONFIG tokens, which it overrides) with the config rules, write the result to --write-config, and print `service=NAME` if its [service] asks for one
    #[arg(long, value_name = "FILE", requires = "write_config")]
    pub from_ini: Option<PathBuf>,

    /// Where --from-ini writes the config file (replaced atomically; nothing is written on an error)
    #[arg(long, value_name = "OUT", requires = "from_ini")]
    pub write_config: Option<PathBuf>,

    /// Create the guest NAME from the shipped image (or --image): its own disk and its config (SSH forwarded from a free port on 127.0.0.1, CONFIG tokens such as root_key=FILE added), then print how to start and reach it
    #[arg(long, value_name = "NAME", conflicts_with_all = ["install_service", "remove_service", "from_ini", "dry_run"])]
    pub create: Option<String>,

    /// For --create: the image to unpack, an .ext4 or its .ext4.zst [default: the installed debian image]
    #[arg(long, value_name = "FILE", requires = "create")]
    pub image: Option<PathBuf>,

    /// For --create: the disk's size, such as 20G (the guest grows its root filesystem into it at boot) [default: the image's]
    #[arg(long, value_name = "SIZE", requires = "create")]
    pub size: Option<String>,

    /// For --create: where the disk and config go [default: /var/lib/colinux and /etc/colinux as root, else ~/.local/share/colinux; %ProgramData%\coLinux on Windows]
    #[arg(long, value_name = "DIR", requires = "create")]
    pub data_dir: Option<PathBuf>,

    /// For --create: replace the guest of that name, its disk too
    #[arg(long, requires = "create")]
    pub force: bool,

    /// Work from DIR (services start elsewhere; relative config paths keep their meaning)
    #[arg(long, value_name = "DIR", hide = true)]
    pub cwd: Option<PathBuf>,

    /// Run as the Windows service NAME (used by the service manager)
    #[arg(long, value_name = "NAME", hide = true)]
    pub run_service: Option<String>,
}

/// The command line definition, for man pages and shell completions.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Parses the daemon's arguments and does what they say. Returns the exit code.
pub fn main(args: Vec<std::ffi::OsString>) -> u8 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { exit::CONFIG } else { 0 };
        }
    };
    if let Err(message) = init_logging(&cli.verbose) {
        eprintln!("colinux-daemon: {message}");
        return exit::CONFIG;
    }
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("colinux-daemon: {}", e.message);
            e.code
        }
    }
}

fn init_logging(level: &str) -> Result<(), String> {
    let level = match level.to_ascii_lowercase().as_str() {
        "0" | "error" => tracing::Level::ERROR,
        "1" | "warn" => tracing::Level::WARN,
        "2" | "info" => tracing::Level::INFO,
        "3" | "debug" => tracing::Level::DEBUG,
        "4" | "trace" => tracing::Level::TRACE,
        other => {
            return Err(format!(
                "-v {other}: use error, warn, info, debug, trace or 0-4"
            ))
        }
    };
    // try_init: a Windows service initialises once per process.
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .with_ansi(false)
        .event_format(LogFormat)
        .try_init();
    Ok(())
}

/// `colinux-daemon: message` (and the level, when it is not info).
struct LogFormat;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for LogFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "colinux-daemon: ")?;
        match *event.metadata().level() {
            tracing::Level::INFO => {}
            level => write!(writer, "{}: ", level.as_str().to_ascii_lowercase())?,
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

fn dispatch(cli: Cli) -> Result<u8, StartError> {
    if let Some(dir) = &cli.cwd {
        std::env::set_current_dir(dir)
            .map_err(|e| StartError::new(exit::CONFIG, format!("--cwd {}: {e}", dir.display())))?;
    }
    if cli.status_driver || cli.install_driver || cli.remove_driver {
        return driver_action(&cli);
    }
    if let Some(name) = &cli.remove_service {
        return crate::service::remove(name).map(|text| {
            println!("{text}");
            0
        });
    }
    #[cfg(windows)]
    if let Some(name) = cli.run_service.clone() {
        return crate::service::run_windows_service(name, cli);
    }
    if let (Some(ini), Some(out)) = (&cli.from_ini, &cli.write_config) {
        return crate::from_ini::write_config(&cli.config, ini, out).map(|stdout| {
            print!("{stdout}");
            0
        });
    }
    if let Some(name) = &cli.create {
        host::check_name(name).map_err(|m| StartError::new(exit::CONFIG, m))?;
        let request = crate::create::Request {
            name,
            image: cli.image.as_deref(),
            size: cli.size.as_deref(),
            data_dir: cli.data_dir.as_deref(),
            force: cli.force,
            config: &cli.config,
        };
        return crate::create::create(&request).map(|text| {
            print!("{text}");
            0
        });
    }
    if cli.config.is_empty() {
        return Err(StartError::new(
            exit::CONFIG,
            "no configuration: give config tokens or @file (for example @debian.conf); see --help",
        ));
    }
    let name = cli
        .name
        .clone()
        .unwrap_or_else(|| host::default_name(&cli.config));
    host::check_name(&name).map_err(|m| StartError::new(exit::CONFIG, m))?;
    let settings = load(&cli.config)?;
    if let Some(service) = &cli.install_service {
        host::check_name(service).map_err(|m| StartError::new(exit::CONFIG, m))?;
        return crate::service::install(service, &cli.config).map(|text| {
            println!("{text}");
            0
        });
    }
    let (tx, rx) = mpsc::channel();
    let stop = tx.clone();
    // Ctrl-C, SIGTERM and SIGHUP (or the Windows console's close) all mean
    // "power the guest off".
    if !cli.dry_run {
        ctrlc::set_handler(move || {
            let _ = stop.send(Msg::Stop);
        })
        .map_err(|e| StartError::new(exit::ENGINE_FAILED, format!("cannot handle signals: {e}")))?;
    }
    run(&cli, &name, &settings, (tx, rx))
}

/// Parses and checks the configuration: every file it names must exist.
pub fn load(config: &[String]) -> Result<Settings, StartError> {
    let cwd = std::env::current_dir()
        .map_err(|e| StartError::new(exit::CONFIG, format!("current directory: {e}")))?;
    let settings = colinux_config::parse_args(config, &cwd)
        .map_err(|e| StartError::new(exit::CONFIG, e.to_string()))?;
    if settings.kernel.is_none() {
        return Err(StartError::new(
            exit::CONFIG,
            engine::EngineError::NoKernel.to_string(),
        ));
    }
    settings
        .check_files()
        .map_err(|e| StartError::new(exit::CONFIG, e.to_string()))?;
    engine::check_host_support(&settings)
        .map_err(|e| StartError::new(exit::CONFIG, e.to_string()))?;
    Ok(settings)
}

/// The dry run, or the real run, of `settings`. Shared with the Windows service.
pub fn run(
    cli: &Cli,
    name: &str,
    settings: &Settings,
    events: (mpsc::Sender<Msg>, mpsc::Receiver<Msg>),
) -> Result<u8, StartError> {
    let report = colinux_driver::detect(&colinux_driver::ProbeOptions::default());
    let choice = report
        .choose(settings.accel())
        .map_err(|e| StartError::new(exit::CONFIG, e.to_string()))?;
    if let Some(warning) = &choice.warning {
        tracing::warn!("{warning}");
    }
    let host_ram_mb = host::host_ram_mb().unwrap_or(1024);
    let plan = Plan {
        name: name.to_string(),
        accel: choice.accel,
        host_ram_mb,
        seed_disk: None,
        taps: Default::default(),
        // Someone is there to answer: not a script's pipe or /dev/null.
        console_attached: !cli.detached && std::io::IsTerminal::is_terminal(&std::io::stdin()),
    };
    let found = engine::find_engine(settings);
    if cli.dry_run {
        let program = found
            .clone()
            .unwrap_or_else(|_| PathBuf::from(engine::default_engine(settings.arch())));
        // The socket path is known; a Windows port is only picked at start.
        let qmp = supervise::qmp_endpoint(&host::runtime_dir(name), 0);
        #[cfg(target_os = "linux")]
        for (index, bridge) in engine::host_bridges(settings)
            .map_err(|e| StartError::new(exit::CONFIG, e.to_string()))?
        {
            crate::tap::check_bridge(&bridge).map_err(|e| {
                StartError::new(
                    exit::CONFIG,
                    format!("{}: {e}", settings.eth[&index].origin),
                )
            })?;
        }
        // The seed is made (so its key files are read) but not written.
        let seed = SeedDisk::for_guest(name, settings)
            .map_err(|e| StartError::new(exit::CONFIG, e.to_string()))?;
        let plan = Plan {
            seed_disk: seed
                .is_some()
                .then(|| host::runtime_dir(name).join(seed::FILE_NAME)),
            ..plan
        };
        let command = engine::engine_command(settings, &plan, &qmp, program)
            .map_err(|e| StartError::new(exit::CONFIG, e.to_string()))?;
        println!("# settings");
        print!("{}", settings.describe(Some(host_ram_mb)));
        if let (Some(seed), Some(path)) = (&seed, &plan.seed_disk) {
            println!(
                "# seed disk {} (label {}, read-only, the last virtio disk), made at start:",
                path.display(),
                seed::LABEL
            );
            for (file, contents) in seed.files() {
                match file {
                    "comosix.env" => {
                        for line in String::from_utf8_lossy(contents).lines() {
                            println!("#   {file}: {line}");
                        }
                    }
                    _ => println!("#   {file} ({} bytes)", contents.len()),
                }
            }
        }
        println!(
            "# guest {name:?}, accelerator {} (accel={}; the host's best: {})",
            choice.accel.as_str(),
            settings.accel().as_str(),
            report.best().as_str()
        );
        println!("# engine command line, one argument per line");
        println!("{}", command.program.display());
        for arg in &command.args {
            println!("{arg}");
        }
        return found
            .map(|_| 0)
            .map_err(|e| StartError::new(exit::ENGINE_MISSING, e.to_string()));
    }
    let program = found.map_err(|e| StartError::new(exit::ENGINE_MISSING, e.to_string()))?;
    let opts = RunOptions {
        name: name.to_string(),
        detached: cli.detached,
        quiet_kernel: cli.quiet_kernel,
        pidfile: cli.pidfile.clone(),
        shutdown_timeout: Duration::from_secs(cli.shutdown_timeout),
    };
    let outcome = supervise::run(settings, plan, program, &opts, events)?;
    let code = outcome.exit_code();
    if code == exit::POWERED_OFF {
        tracing::info!("{}", outcome.describe());
    } else {
        tracing::error!("{} (exit code {code})", outcome.describe());
    }
    Ok(code)
}

fn driver_action(cli: &Cli) -> Result<u8, StartError> {
    let failed =
        |e: colinux_driver::DriverError| StartError::new(exit::ENGINE_FAILED, e.to_string());
    let text = if cli.install_driver {
        colinux_driver::install().map_err(failed)?
    } else if cli.remove_driver {
        colinux_driver::remove().map_err(failed)?
    } else {
        colinux_driver::detect(&colinux_driver::ProbeOptions::default()).to_string()
    };
    println!("{}", text.trim_end());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_documents_flags_and_exit_codes() {
        let help = Cli::try_parse_from(["colinux-daemon", "--help"])
            .unwrap_err()
            .to_string();
        for needle in [
            "--detached",
            "--pidfile",
            "--quiet-kernel",
            "--verbose",
            "--dry-run",
            "--status-driver",
            "--install-driver",
            "--remove-driver",
            "--install-service",
            "--remove-service",
            "--shutdown-timeout",
            "--from-ini",
            "--write-config",
            "Exit codes",
            "6  the guest did not power off",
            "7  the guest could not mount its root filesystem",
        ] {
            assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
        }
        assert!(!help.contains("--run-service"), "internal flag shown");
    }

    #[test]
    fn flags_and_config_tokens_mix() {
        let cli = Cli::try_parse_from([
            "colinux-daemon",
            "-d",
            "kernel=k",
            "-p",
            "/run/g.pid",
            "@g.conf",
            "-k",
            "root=/dev/cobd0",
            "-v",
            "3",
        ])
        .unwrap();
        assert!(cli.detached && cli.quiet_kernel);
        assert_eq!(cli.pidfile, Some(PathBuf::from("/run/g.pid")));
        assert_eq!(cli.config, ["kernel=k", "@g.conf", "root=/dev/cobd0"]);
        assert_eq!(cli.verbose, "3");
    }

    #[test]
    fn config_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("g.conf");
        std::fs::write(&conf, "kernel=missing-kernel\ncobd0=missing.img\n").unwrap();
        let err = load(&[format!("@{}", conf.display())]).unwrap_err();
        assert_eq!(err.code, exit::CONFIG);
        assert!(
            err.message.contains("missing-kernel") && err.message.contains("missing.img"),
            "{}",
            err.message
        );
        let err = load(&["cobd0=x".into()]).unwrap_err();
        assert!(err.message.contains("kernel="), "{}", err.message);
    }
}
