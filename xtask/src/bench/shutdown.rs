//! `cargo xtask bench shutdown`: how long colinux-daemon takes to power the
//! debian guest off when SIGTERM comes 1 s, 5 s and 10 s after the start
//! (the guest still booting, nothing listening for the power button yet)
//! and after the login banner, the baseline: a guest that is up.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::runtime::{copy_image, daemon_guest, DaemonGuest};
use crate::stage;

#[derive(clap::Args)]
pub struct Args {
    /// Boots per stop point.
    #[arg(long, default_value_t = 1)]
    runs: u32,
    /// Where the bench keeps its scratch files (copies of the image).
    #[arg(long, default_value = "target/bench/shutdown")]
    dir: PathBuf,
}

const LOGIN: &str = "colinux ttyS0";
const POWER_DOWN: &str = "reboot: Power down";
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// Longer than the daemon's own 90 s, so that its exit code 6 is seen.
const EXIT_TIMEOUT: Duration = Duration::from_secs(150);

#[derive(Clone, Copy)]
enum StopAt {
    Seconds(u64),
    Login,
}

impl std::fmt::Display for StopAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopAt::Seconds(s) => write!(f, "at {s} s"),
            StopAt::Login => write!(f, "after login banner"),
        }
    }
}

/// One stop: seconds from SIGTERM to the daemon's exit, and how it ended.
struct Stop {
    power_off: f64,
    exit_code: Option<i32>,
    powered_down: bool,
    fsck_clean: bool,
}

pub fn run(args: Args) -> Result<()> {
    let dir = stage::root().join(&args.dir);
    let guest = daemon_guest(&dir)?;
    let points = [
        StopAt::Seconds(1),
        StopAt::Seconds(5),
        StopAt::Seconds(10),
        StopAt::Login,
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); points.len()];
    let mut all_clean = true;
    for run in 1..=args.runs {
        for (i, &point) in points.iter().enumerate() {
            copy_image(&guest.image, &dir)?;
            let stop = stop_at(&guest, &dir, point)?;
            let clean = stop.exit_code == Some(0) && stop.powered_down && stop.fsck_clean;
            all_clean &= clean;
            println!(
                "run {run}: SIGTERM {point}: exit after {:.1} s, exit code {}, guest's {POWER_DOWN:?} {}, e2fsck -fn {}",
                stop.power_off,
                stop.exit_code.map_or("none".into(), |c| c.to_string()),
                if stop.powered_down { "seen" } else { "NOT seen" },
                if stop.fsck_clean { "clean" } else { "NOT clean" },
            );
            times[i].push(stop.power_off);
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let baseline = median(&times[points.len() - 1]);
    println!("\nSIGTERM to exit, median of {}:", args.runs);
    for (point, t) in points.iter().zip(&times) {
        let m = median(t);
        println!(
            "  {point}: {m:.1} s ({:.2}x the power-off after the login banner)",
            m / baseline
        );
    }
    if !all_clean {
        bail!("not every stop ended in a clean power-off (see above)");
    }
    Ok(())
}

/// Boots a fresh copy, sends SIGTERM at `point`, times the daemon's exit.
fn stop_at(guest: &DaemonGuest, dir: &Path, point: StopAt) -> Result<Stop> {
    let log_path = dir.join("shutdown.log");
    let log = std::fs::File::create(&log_path)?;
    let mut child = Command::new(&guest.daemon)
        .arg("--name")
        .arg("bench-shutdown")
        .arg(format!("@{}", guest.conf.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("cannot start colinux-daemon")?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut powered_down = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(LOGIN) {
                let _ = tx.send(());
            }
            powered_down |= line.contains(POWER_DOWN);
        }
        powered_down
    });
    match point {
        // From the daemon's start, as a service stopped soon after it started.
        StopAt::Seconds(s) => std::thread::sleep(Duration::from_secs(s)),
        StopAt::Login => {
            if rx.recv_timeout(BOOT_TIMEOUT).is_err() {
                let _ = child.kill();
                bail!(
                    "no {LOGIN:?} within {} s (log: {})",
                    BOOT_TIMEOUT.as_secs(),
                    log_path.display()
                );
            }
        }
    }
    // SAFETY: kill has no memory effects.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let asked = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if asked.elapsed() > EXIT_TIMEOUT {
            let _ = child.kill();
            bail!(
                "the daemon did not exit within {} s of SIGTERM {point} (log: {})",
                EXIT_TIMEOUT.as_secs(),
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let power_off = asked.elapsed().as_secs_f64();
    let powered_down = reader.join().unwrap_or(false);
    let fsck_clean = Command::new("e2fsck")
        .arg("-fn")
        .arg(dir.join("root.ext4"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success();
    Ok(Stop {
        power_off,
        exit_code: status.code(),
        powered_down,
        fsck_clean,
    })
}
