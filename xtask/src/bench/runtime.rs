//! `cargo xtask bench runtime`: boot time to the login banner under
//! colinux-daemon vs the same engine command line run by hand, and vs the
//! Windows path (`colinux-daemon.exe` under Wine with the Windows engine),
//! the daemons' memory, `pc` vs `microvm`, and the driver probe's cost.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::stage;

#[derive(clap::Args)]
pub struct Args {
    /// Boots per variant (they alternate, so drift hits all alike).
    #[arg(long, default_value_t = 2)]
    runs: u32,
    /// Where the bench keeps its scratch files (copies of the image).
    #[arg(long, default_value = "target/bench/runtime")]
    dir: PathBuf,
}

/// The line every boot waits for: the getty's banner on the console.
const MARKER: &str = "colinux ttyS0";
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// microvm is tried once; past twice pc's time it is not the faster one.
const MICROVM_TIMEOUT: Duration = Duration::from_secs(120);

pub fn run(args: Args) -> Result<()> {
    let dir = stage::root().join(&args.dir);
    let DaemonGuest {
        daemon,
        conf,
        image,
    } = daemon_guest(&dir)?;

    copy_image(&image, &dir)?;
    // The engine command line the daemon would run, for the plain runs:
    // the same devices, minus the QMP socket only the daemon serves.
    let dry = Command::new(&daemon)
        .arg("--dry-run")
        .arg(format!("@{}", conf.display()))
        .output()?;
    if !dry.status.success() {
        bail!(
            "colinux-daemon --dry-run: {}",
            String::from_utf8_lossy(&dry.stderr)
        );
    }
    let plain = plain_engine(&String::from_utf8_lossy(&dry.stdout))?;

    let windows = windows_daemon(&dir, &conf)?;
    let (mut with_daemon, mut by_hand, mut rss_kib) = (Vec::new(), Vec::new(), Vec::new());
    let (mut on_windows, mut windows_rss_kib) = (Vec::new(), Vec::new());
    for run in 1..=args.runs {
        // Rotate which goes first, so that drift hits all alike.
        let mut turns = [Turn::Daemon, Turn::Plain, Turn::Windows];
        turns.rotate_left(run as usize % 3);
        for turn in turns {
            copy_image(&image, &dir)?;
            if turn == Turn::Windows {
                let (secs, rss) = boot(windows.command(), &dir, Stop::Interrupt, BOOT_TIMEOUT)?;
                println!(
                    "run {run}: colinux-daemon.exe under Wine {secs:.1} s to the login banner, its peak RSS {} KiB",
                    rss.unwrap_or(0)
                );
                on_windows.push(secs);
                windows_rss_kib.extend(rss);
            } else if turn == Turn::Daemon {
                let mut cmd = Command::new(&daemon);
                cmd.arg("--name")
                    .arg("bench")
                    .arg(format!("@{}", conf.display()));
                let (secs, rss) = boot(cmd, &dir, Stop::Terminate, BOOT_TIMEOUT)?;
                println!(
                    "run {run}: colinux-daemon {secs:.1} s to the login banner, daemon peak RSS {} KiB",
                    rss.unwrap_or(0)
                );
                with_daemon.push(secs);
                rss_kib.extend(rss);
            } else {
                let mut cmd = Command::new(&plain.0);
                cmd.args(&plain.1).current_dir(&dir);
                let (secs, _) = boot(cmd, &dir, Stop::Kill, BOOT_TIMEOUT)?;
                println!("run {run}: plain qemu     {secs:.1} s to the login banner");
                by_hand.push(secs);
            }
        }
    }

    copy_image(&image, &dir)?;
    let mut cmd = Command::new(&plain.0);
    cmd.args(microvm(&plain.1)).current_dir(&dir);
    let microvm = boot(cmd, &dir, Stop::Kill, MICROVM_TIMEOUT).map(|(secs, _)| secs);

    // The probe itself is measured in runtime/driver (README); this is
    // what a user pays for --status-driver once the boot's probe is cached.
    let start = Instant::now();
    let out = Command::new(&daemon).arg("--status-driver").output()?;
    if !out.status.success() {
        bail!("--status-driver failed");
    }
    let warm = start.elapsed().as_secs_f64();

    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (d, p) = (median(&mut with_daemon), median(&mut by_hand));
    println!("\nlogin banner, median of {}: colinux-daemon {d:.1} s, plain qemu {p:.1} s: {:+.1}% ({:.3}x)", args.runs, (d / p - 1.0) * 100.0, d / p);
    let w = median(&mut on_windows);
    println!(
        "login banner, median of {}: colinux-daemon.exe under Wine {w:.1} s against colinux-daemon {d:.1} s ({:.3}x)",
        args.runs,
        w / d
    );
    println!(
        "daemon peak RSS: max {} KiB; colinux-daemon.exe under Wine (Wine's own share included): max {} KiB",
        rss_kib.iter().max().unwrap_or(&0),
        windows_rss_kib.iter().max().unwrap_or(&0)
    );
    match microvm {
        Ok(secs) => println!("microvm: {secs:.1} s to the login banner (pc by hand: {p:.1} s)"),
        Err(e) => println!("microvm: did not reach the login banner: {e:#}"),
    }
    println!("colinux-daemon --status-driver with this boot's cached probe: {:.1} ms (process start included)", warm * 1000.0);
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Turn {
    Daemon,
    Plain,
    Windows,
}

/// The Windows path: the runtime stage's `colinux-daemon.exe` under Wine,
/// with the Windows engine setup fetched, booting the same guest.
struct WindowsDaemon {
    wine: harness::wine::Wine,
    daemon: PathBuf,
    args: Vec<String>,
}

impl WindowsDaemon {
    fn command(&self) -> Command {
        let mut cmd = self.wine.command(&self.daemon);
        cmd.args(&self.args);
        cmd
    }
}

fn windows_daemon(dir: &Path, conf: &Path) -> Result<WindowsDaemon> {
    use harness::wine::{z_path, Wine, WINDOWS_ENGINE};
    let windows = crate::runtime::Target::Windows.triple();
    let status = Command::new(std::env::current_exe()?)
        .args(["runtime", "--target", windows])
        .status()?;
    if !status.success() {
        bail!("cargo xtask runtime --target {windows} failed");
    }
    let engine = WINDOWS_ENGINE.program();
    if !engine.is_file() {
        bail!(
            "{}: the Windows engine is missing; `cargo xtask setup` fetches it",
            engine.display()
        );
    }
    Ok(WindowsDaemon {
        wine: Wine::prepare(&stage::cache_dir())?,
        daemon: stage::root()
            .join("target/runtime")
            .join(windows)
            .join("colinux-daemon.exe"),
        // The same config, with the Windows engine and the disk as Z: paths.
        args: vec![
            "--name".into(),
            "bench-windows".into(),
            format!("--cwd={}", z_path(dir)),
            format!("qemu={}", z_path(&engine)),
            format!("@{}", z_path(conf)),
        ],
    })
}

/// The daemon users get, and a config booting a copy of the debian image
/// (`root.ext4` in `dir`) with our i386 kernel under TCG.
pub(super) struct DaemonGuest {
    pub daemon: PathBuf,
    pub conf: PathBuf,
    pub image: PathBuf,
}

/// Brings the kernel, the image and the runtime up to date (their stages)
/// and writes the guest's config into `dir`.
pub(super) fn daemon_guest(dir: &Path) -> Result<DaemonGuest> {
    let root = stage::root();
    std::fs::create_dir_all(dir)?;
    let xtask = std::env::current_exe()?;
    let host = crate::runtime::Target::Linux.triple();
    let stages: [&[&str]; 3] = [
        &["kernel", "--arch", "i386"],
        &["image", "--distro", "debian"],
        &["runtime", "--target", host],
    ];
    for stage_args in stages {
        let status = Command::new(&xtask).args(stage_args).status()?;
        if !status.success() {
            bail!("cargo xtask {} failed", stage_args.join(" "));
        }
    }
    let kernel = root.join("target/kernel/i386/bzImage");
    let conf = dir.join("bench.conf");
    std::fs::write(
        &conf,
        format!(
            "kernel=\"{}\" mem=512 accel=tcg cobd0=root.ext4 eth0=slirp root=/dev/cobd0 ro\n",
            kernel.display()
        ),
    )?;
    Ok(DaemonGuest {
        daemon: root
            .join("target/runtime")
            .join(host)
            .join("colinux-daemon"),
        conf,
        image: root.join("target/images/debian/debian.ext4"),
    })
}

/// A fresh copy of the image for each boot: every boot starts alike.
pub(super) fn copy_image(image: &Path, dir: &Path) -> Result<()> {
    let status = Command::new("cp")
        .arg("--sparse=always")
        .arg(image)
        .arg(dir.join("root.ext4"))
        .status()?;
    if !status.success() {
        bail!("cannot copy {}", image.display());
    }
    Ok(())
}

/// The engine and its arguments from a `--dry-run`, without the QMP
/// chardev and monitor (nobody would serve that socket).
fn plain_engine(dry_run: &str) -> Result<(String, Vec<String>)> {
    let mut lines = dry_run
        .lines()
        .skip_while(|l| !l.starts_with("# engine command line"))
        .skip(1);
    let program = lines
        .next()
        .context("no engine command line in the dry run")?
        .to_string();
    let mut args = Vec::new();
    let all: Vec<&str> = lines.collect();
    let mut i = 0;
    while i < all.len() {
        let (flag, value) = (all[i], all.get(i + 1).copied().unwrap_or(""));
        let qmp = (flag == "-chardev" && value.contains("id=qmp"))
            || (flag == "-mon" && value.contains("chardev=qmp"));
        if qmp {
            i += 2;
            continue;
        }
        args.push(flag.to_string());
        i += 1;
    }
    Ok((program, args))
}

/// The same guest on `microvm`: virtio-mmio devices instead of PCI.
fn microvm(pc_args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < pc_args.len() {
        let (flag, value) = (
            pc_args[i].as_str(),
            pc_args.get(i + 1).map(String::as_str).unwrap_or(""),
        );
        match flag {
            "-machine" => {
                out.extend(["-machine".to_string(), "microvm,rtc=on,acpi=on".to_string()]);
                i += 2;
                continue;
            }
            "-device" => {
                out.extend(["-device".to_string(), value.replace("-pci", "-device")]);
                i += 2;
                continue;
            }
            _ => out.push(flag.to_string()),
        }
        i += 1;
    }
    out
}

/// How a boot is ended once its banner is seen.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// A daemon: SIGTERM, and it powers the guest off.
    Terminate,
    /// A daemon under Wine: SIGINT, which Wine makes a Ctrl-C event.
    Interrupt,
    /// A plain engine.
    Kill,
}

/// Boots until the marker, then stops the guest; returns the seconds to
/// the marker and, for a daemon, its resident memory then.
fn boot(mut cmd: Command, dir: &Path, how: Stop, timeout: Duration) -> Result<(f64, Option<u64>)> {
    let log = std::fs::File::create(dir.join("boot.log"))?;
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("cannot start the guest")?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(MARKER) {
                let _ = tx.send(());
            }
        }
    });
    let seen = rx.recv_timeout(timeout).is_ok();
    let secs = start.elapsed().as_secs_f64();
    let rss = (how != Stop::Kill)
        .then(|| peak_rss_kib(child.id()))
        .flatten();
    stop(&mut child, how);
    if !seen {
        bail!(
            "no {MARKER:?} within {} s (log: {})",
            timeout.as_secs(),
            dir.join("boot.log").display()
        );
    }
    Ok((secs, rss))
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// A daemon powers the guest off; a plain engine is killed.
fn stop(child: &mut Child, how: Stop) {
    let signal = match how {
        Stop::Terminate => Some(libc::SIGTERM),
        Stop::Interrupt => Some(libc::SIGINT),
        Stop::Kill => None,
    };
    if let Some(signal) = signal {
        // SAFETY: kill has no memory effects.
        unsafe {
            libc::kill(child.id() as libc::pid_t, signal);
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}
