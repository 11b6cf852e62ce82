//! `cargo xtask bench kernel`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::measure;
use crate::stage;

#[derive(clap::Args)]
pub struct Args {
    /// The guest architecture.
    #[arg(long, value_enum, default_value_t = crate::kernel::Arch::I386)]
    arch: crate::kernel::Arch,
    /// Skip the two cold builds (about 2 x 6 min on 2 cores).
    #[arg(long)]
    no_cold: bool,
    /// Where the bench keeps its scratch files.
    #[arg(long, default_value = "target/bench/kernel")]
    dir: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let root = stage::root();
    let arch = args.arch.name();
    let dir = root.join(&args.dir);
    std::fs::create_dir_all(&dir)?;
    let exe = std::env::current_exe()?.display().to_string();
    let kernel = |extra: &[&str]| -> Vec<String> {
        ["kernel", "--arch", arch]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let cache = stage::cache_dir().join("kernel");
    let tree = cache.join("tree");
    let build = cache.join(format!("build-{arch}"));
    let dest = root.join("target/kernel").join(arch);

    // The stage once, so the tree, config and ccache are in place.
    measure(&exe, &kernel(&[]), &dir).context("the kernel stage itself failed")?;

    let mut report = Vec::new();
    if !args.no_cold {
        // Cold: an empty build directory and no ccache, for both. The
        // build directory is shared: emptied under the stage's lock.
        {
            let _lock = stage::lock(&cache)?;
            std::fs::remove_dir_all(&build)?;
        }
        std::fs::remove_dir_all(&dest)?;
        let ours = timed_env(&exe, &kernel(&[]), &dir)?;
        let plain_dir = dir.join(format!("plain-{arch}"));
        let _ = std::fs::remove_dir_all(&plain_dir);
        std::fs::create_dir_all(&plain_dir)?;
        std::fs::copy(dest.join(".config"), plain_dir.join(".config"))?;
        let o = format!("O={}", plain_dir.display());
        let a = format!("ARCH={arch}");
        let t = tree.display().to_string();
        let make_args = |targets: &[&str]| -> Vec<String> {
            ["-C", t.as_str(), o.as_str(), a.as_str()]
                .iter()
                .chain(targets)
                .map(|s| s.to_string())
                .collect()
        };
        // Handed the finished .config, plain make takes it in itself
        // (syncconfig, building conf first), as the stage's make does: an
        // untimed olddefconfig before would give it that work for free.
        let plain = timed_env("make", &make_args(&["-j2", "bzImage", "modules"]), &dir)?;
        report.push(format!(
            "cold build, ours (whole stage)     {:8.1} s  ({:.1} s of CPU)",
            ours.wall, ours.cpu
        ));
        report.push(format!(
            "cold build, plain make -j2         {:8.1} s  ({:.1} s of CPU)",
            plain.wall, plain.cpu
        ));
        // CPU time is the fairer measure on a shared machine: other work
        // slows the wall clock of both runs unevenly.
        report.push(format!(
            "stage overhead                     {:8.1} %  wall, {:.1} % CPU  (goal < 3 %)",
            (ours.wall / plain.wall - 1.0) * 100.0,
            (ours.cpu / plain.cpu - 1.0) * 100.0
        ));
    }

    let mut noop: Vec<f64> = (0..3)
        .map(|_| measure(&exe, &kernel(&[]), &dir).map(|t| t.0))
        .collect::<Result<_>>()?;
    noop.sort_by(f64::total_cmp);
    report.push(format!(
        "no-op rebuild (median of 3)        {:8.2} s  (goal < 2 s)",
        noop[1]
    ));

    // Incremental: the series plus one patch that changes one C file.
    let touched = touched_series(&root.join("kernel-patches/linux-6.1"), &tree, &dir)?;
    let touched_arg = touched.display().to_string();
    let (incremental, _) = measure(&exe, &kernel(&["--patches", &touched_arg]), &dir)?;
    let (back, _) = measure(&exe, &kernel(&[]), &dir)?;
    report.push(format!(
        "incremental, one patch added       {incremental:8.1} s"
    ));
    report.push(format!("incremental, and removed again     {back:8.1} s"));

    let ours_size = std::fs::metadata(dest.join("bzImage"))?.len();
    report.push(format!(
        "bzImage, ours                      {:8} KiB",
        ours_size / 1024
    ));
    match debian_kernel(&dir) {
        Ok(stock) => {
            let size = std::fs::metadata(&stock)?.len();
            report.push(format!(
                "vmlinuz, Debian linux-image-686    {:8} KiB ({})",
                size / 1024,
                stock.display()
            ));
            let initramfs = root
                .join("target/initramfs")
                .join(arch)
                .join("initramfs.cpio");
            measure(
                &exe,
                &["initramfs".into(), "--arch".into(), arch.into()],
                &dir,
            )?;
            let ours_boot =
                time_to_userspace("bench-boot-ours", arch, &dest.join("bzImage"), &initramfs)?;
            let stock_boot = time_to_userspace("bench-boot-debian", arch, &stock, &initramfs)?;
            report.push(format!(
                "TCG boot to the marker, ours       {ours_boot:8.2} s"
            ));
            report.push(format!(
                "TCG boot to the marker, Debian 686 {stock_boot:8.2} s"
            ));
        }
        Err(e) => report.push(format!("Debian's kernel: not measured ({e:#})")),
    }
    println!("{}", report.join("\n"));
    Ok(())
}

/// Wall and CPU seconds (user and system, the command's whole process tree).
struct Timed {
    wall: f64,
    cpu: f64,
}

/// Runs with ccache disabled, so "cold" means cold.
fn timed_env(program: &str, args: &[String], dir: &Path) -> Result<Timed> {
    std::env::set_var("CCACHE_DISABLE", "1");
    let cpu_before = children_cpu();
    let result = measure(program, args, dir);
    let cpu = children_cpu() - cpu_before;
    std::env::remove_var("CCACHE_DISABLE");
    Ok(Timed {
        wall: result?.0,
        cpu,
    })
}

/// CPU seconds of every child this process has waited for (and of theirs).
fn children_cpu() -> f64 {
    // SAFETY: an all-zero rusage is valid, and getrusage only fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a live local that getrusage fills.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// A copy of the series with one more patch that adds a comment to
/// drivers/block/virtio_blk.c, written against the file as the series
/// leaves it.
fn touched_series(series_dir: &Path, tree: &Path, dir: &Path) -> Result<PathBuf> {
    let copy = dir.join("patches-touched");
    let _ = std::fs::remove_dir_all(&copy);
    let status = Command::new("cp")
        .arg("-a")
        .arg(series_dir)
        .arg(&copy)
        .status()?;
    if !status.success() {
        bail!("cannot copy {}", series_dir.display());
    }
    let file = "drivers/block/virtio_blk.c";
    let text = std::fs::read_to_string(tree.join(file))?;
    let first: Vec<&str> = text.lines().take(3).collect();
    let patch = format!(
        "Bench only: a one-line change to one file.\n--- a/{file}\n+++ b/{file}\n@@ -1,3 +1,4 @@\n {}\n+/* touched by cargo xtask bench kernel */\n {}\n {}\n",
        first[0], first[1], first[2]
    );
    std::fs::write(copy.join("zz-bench-touch.patch"), patch)?;
    let mut series = std::fs::read_to_string(copy.join("series"))?;
    series.push_str("zz-bench-touch.patch\n");
    std::fs::write(copy.join("series"), series)?;
    Ok(copy)
}

/// Debian's stock i386 kernel: the image that linux-image-686 depends on,
/// fetched with apt-get download and unpacked (needs the i386 architecture
/// in apt: `dpkg --add-architecture i386 && apt-get update`).
fn debian_kernel(dir: &Path) -> Result<PathBuf> {
    let deps = Command::new("apt-cache")
        .args(["depends", "linux-image-686"])
        .output()?;
    let deps = String::from_utf8_lossy(&deps.stdout);
    let package = deps
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: ").filter(|p| p.starts_with("linux-image-")))
        .context("apt knows no linux-image-686 (add the i386 architecture: dpkg --add-architecture i386 && apt-get update)")?
        .to_string();
    // "linux-image-6.1.0-50-686:i386": the file name has no architecture suffix.
    let file_prefix = package.split(':').next().unwrap_or(&package).to_string();
    let unpacked = dir.join(&file_prefix);
    if !unpacked.join("boot").is_dir() {
        let status = Command::new("apt-get")
            .args(["download", &package])
            .current_dir(dir)
            .status()?;
        if !status.success() {
            bail!("apt-get download {package} failed");
        }
        let deb = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&file_prefix))
                    && p.extension().is_some_and(|e| e == "deb")
            })
            .context("apt-get download produced no .deb")?;
        let status = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&unpacked)
            .status()?;
        if !status.success() {
            bail!("cannot unpack {}", deb.display());
        }
    }
    std::fs::read_dir(unpacked.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .context("no vmlinuz in the package")
}

/// Seconds from starting QEMU to the guest init's first line.
fn time_to_userspace(name: &str, arch: &str, kernel: &Path, initramfs: &Path) -> Result<f64> {
    let (program, args) = harness::qemu_direct_boot(
        arch,
        kernel,
        Some(initramfs),
        "console=ttyS0 rdinit=/init panic=-1",
        256,
    );
    let started = Instant::now();
    let mut guest = harness::Guest::start(name, &program, &args)?;
    guest.wait_for("SMOKE ", Duration::from_secs(120))?;
    Ok(started.elapsed().as_secs_f64())
}
