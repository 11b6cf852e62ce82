//! `cargo xtask bench runtime`: boot time to the login banner under
//! colinux-daemon vs the same engine command line run by hand, the
//! daemon's memory, `pc` vs `microvm`, and the driver probe's cost.

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

    let (mut with_daemon, mut by_hand, mut rss_kib) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=args.runs {
        // Alternate which goes first, so that drift hits both alike.
        for daemon_turn in [run % 2 == 1, run % 2 == 0] {
            copy_image(&image, &dir)?;
            if daemon_turn {
                let mut cmd = Command::new(&daemon);
                cmd.arg("--name")
                    .arg("bench")
                    .arg(format!("@{}", conf.display()));
                let (secs, rss) = boot(cmd, &dir, true, BOOT_TIMEOUT)?;
                println!(
                    "run {run}: colinux-daemon {secs:.1} s to the login banner, daemon peak RSS {} KiB",
                    rss.unwrap_or(0)
                );
                with_daemon.push(secs);
                rss_kib.extend(rss);
            } else {
                let mut cmd = Command::new(&plain.0);
                cmd.args(&plain.1).current_dir(&dir);
                let (secs, _) = boot(cmd, &dir, false, BOOT_TIMEOUT)?;
                println!("run {run}: plain qemu     {secs:.1} s to the login banner");
                by_hand.push(secs);
            }
        }
    }

    copy_image(&image, &dir)?;
    let mut cmd = Command::new(&plain.0);
    cmd.args(microvm(&plain.1)).current_dir(&dir);
    let microvm = boot(cmd, &dir, false, MICROVM_TIMEOUT).map(|(secs, _)| secs);

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
    println!(
        "daemon peak RSS: max {} KiB",
        rss_kib.iter().max().unwrap_or(&0)
    );
    match microvm {
        Ok(secs) => println!("microvm: {secs:.1} s to the login banner (pc by hand: {p:.1} s)"),
        Err(e) => println!("microvm: did not reach the login banner: {e:#}"),
    }
    println!("colinux-daemon --status-driver with this boot's cached probe: {:.1} ms (process start included)", warm * 1000.0);
    Ok(())
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

/// Boots until the marker, then stops the guest; returns the seconds to
/// the marker and, for the daemon, its resident memory then.
fn boot(
    mut cmd: Command,
    dir: &Path,
    is_daemon: bool,
    timeout: Duration,
) -> Result<(f64, Option<u64>)> {
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
    let rss = if is_daemon {
        peak_rss_kib(child.id())
    } else {
        None
    };
    stop(&mut child, is_daemon);
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

/// The daemon powers the guest off (SIGTERM); a plain engine is killed.
fn stop(child: &mut Child, is_daemon: bool) {
    if is_daemon {
        // SAFETY: kill has no memory effects.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
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
