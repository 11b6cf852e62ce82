//! `cargo xtask bench`: benchmarks that time our stages against the tools
//! people use today, in the same run, and print the ratios.

mod boot;
mod cluster;
mod convert;
mod dist;
mod image;
mod kernel;
mod kill;
mod runtime;
mod shutdown;

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// Run a benchmark. Figures go in BENCHMARKS.md; timings never gate tests.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    which: Which,
}

#[derive(clap::Subcommand)]
enum Which {
    /// Extract a partition at sector 63 of a disk image, with our convert and
    /// with dd, qemu-img dd, qemu-img convert and cp --sparse=always.
    Convert(convert::Args),
    /// Build the kernel with our stage and with plain make; time the no-op
    /// and incremental rebuilds; compare size and boot time with Debian's kernel.
    Kernel(kernel::Args),
    /// Boot the debian image to its login banner under colinux-daemon and
    /// with the same QEMU command line by hand; daemon RSS; pc vs microvm.
    Runtime(runtime::Args),
    /// Per stock recipe: the image stage's work after its bootstrap against
    /// a bare mmdebstrap making the same tree from the same warm apt cache.
    Image(image::Args),
    /// Power the debian guest off under colinux-daemon with SIGTERM 1 s, 5 s
    /// and 10 s after its start and after its login banner; time each.
    Shutdown(shutdown::Args),
    /// Boot each stock image to its login banner under colinux-daemon with
    /// our kernel (no initrd) and with its distribution's kernel and initrd.
    Boot(boot::Args),
    /// Time dist's packaging and signing with the stages up to date, the
    /// no-op dist, and (--cold) the stages' own cold builds to compare.
    Dist(dist::Args),
    /// Kill each stage with SIGKILL at many points of its run and check the
    /// rerun (the full sweep of xtask/tests/faults.rs).
    Kill(kill::Args),
    /// Boot a head and a node, time them to joined and to the first job;
    /// then one node over NFS against one from a local cobd; head memory.
    Cluster(cluster::Args),
}

pub fn run(args: Args) -> Result<()> {
    match args.which {
        Which::Convert(a) => convert::run(a),
        Which::Kernel(a) => kernel::run(a),
        Which::Runtime(a) => runtime::run(a),
        Which::Shutdown(a) => shutdown::run(a),
        Which::Dist(a) => dist::run(a),
        Which::Image(a) => image::run(a),
        Which::Kill(a) => kill::run(a),
        Which::Boot(a) => boot::run(a),
        Which::Cluster(a) => cluster::run(a),
    }
}

/// Runs a command to completion; returns wall seconds and its peak RSS in KiB.
pub fn measure(program: &str, args: &[String], dir: &Path) -> Result<(f64, u64)> {
    let log = dir.join("tool.log");
    let start = Instant::now();
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log)?)
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid, and wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our own child's, not yet waited for; both out
    // pointers are to locals that live through the call.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    let secs = start.elapsed().as_secs_f64();
    if pid < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            tail.lines().last().unwrap_or("")
        );
    }
    Ok((secs, usage.ru_maxrss as u64))
}

pub fn compare(a: &Path, b: &Path) -> Result<()> {
    let status = Command::new("cmp").arg("-s").arg(a).arg(b).status()?;
    if !status.success() {
        bail!("{} and {} differ", a.display(), b.display());
    }
    Ok(())
}
