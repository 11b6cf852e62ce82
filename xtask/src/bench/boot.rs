//! `cargo xtask bench boot`: each stock image booted to its login banner
//! under colinux-daemon (TCG), with our kernel and no initrd against the
//! distribution's own kernel and initrd, in the same run.
//!
//! The distribution's kernel and initrd come from a bench recipe that
//! extends the stock one with the kernel package: the image stage installs
//! it with mmdebstrap, whose chroot runs update-initramfs, and the two files
//! are taken out of that image with debugfs. Both kernels then boot fresh
//! copies of the same stock image.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::progress::Phase;
use crate::stage;

#[derive(clap::Args)]
pub struct Args {
    /// Boots per kernel and image (they alternate, so drift hits both).
    #[arg(long, default_value_t = 2)]
    runs: u32,
    /// Only this stock image (debian, debian-bookworm, ubuntu).
    #[arg(long, value_name = "NAME")]
    image: Option<String>,
    /// Where the bench keeps its scratch files.
    #[arg(long, default_value = "target/bench/boot")]
    dir: PathBuf,
}

/// The line every boot waits for: the getty's banner on the console.
const MARKER: &str = "colinux ttyS0";
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

/// A stock image, our kernel for it, and its distribution's kernel.
struct Stock {
    name: &'static str,
    /// Our kernel's architecture (`cargo xtask kernel --arch`, `arch=`).
    ours: &'static str,
    /// The distribution's kernel package, and the Debian architecture and
    /// daemon `arch=` it runs on.
    package: &'static str,
    /// Packages the kernel needs to make an initrd but does not pull in.
    also: &'static [&'static str],
    package_arch: &'static str,
    theirs: &'static str,
}

const STOCK: [Stock; 3] = [
    // Debian dropped its i386 kernels in trixie: i386 userland runs on the
    // amd64 kernel (IA32 emulation), so that is Debian's own kernel here.
    Stock {
        name: "debian",
        ours: "i386",
        package: "linux-image-amd64",
        also: &[],
        package_arch: "amd64",
        theirs: "x86_64",
    },
    Stock {
        name: "debian-bookworm",
        ours: "i386",
        package: "linux-image-686-pae",
        also: &[],
        package_arch: "i386",
        theirs: "i386",
    },
    // The "virtual" flavour: the generic kernel without firmware packages.
    // Ubuntu's kernel only recommends an initramfs generator, and images
    // are built without Recommends, so the bench recipe names one.
    Stock {
        name: "ubuntu",
        ours: "x86_64",
        package: "linux-image-virtual",
        also: &["initramfs-tools"],
        package_arch: "amd64",
        theirs: "x86_64",
    },
];

pub fn run(args: Args) -> Result<()> {
    let root = stage::root();
    let dir = root.join(&args.dir);
    std::fs::create_dir_all(&dir)?;
    let stock: Vec<&Stock> = match &args.image {
        None => STOCK.iter().collect(),
        Some(name) => match STOCK.iter().find(|s| s.name == name) {
            Some(s) => vec![s],
            None => bail!("--image {name}: not a stock image (debian, debian-bookworm, ubuntu)"),
        },
    };
    let host = crate::runtime::Target::Linux.triple();
    xtask(&["runtime", "--target", host])?;
    let daemon = root
        .join("target/runtime")
        .join(host)
        .join("colinux-daemon");

    let mut report = Vec::new();
    for s in stock {
        let phase = Phase::start("images and kernels");
        xtask(&["image", "--distro", s.name])?;
        xtask(&["kernel", "--arch", s.ours])?;
        let image = root
            .join("target/images")
            .join(s.name)
            .join(format!("{}.ext4", s.name));
        let ours = root.join("target/kernel").join(s.ours).join("bzImage");
        let (vmlinuz, initrd) = distribution_kernel(s, &dir)?;
        phase.done(&format!(
            "{}: ours {}, theirs {}",
            s.name,
            ours.display(),
            vmlinuz.display()
        ));

        let copy = dir.join(format!("{}.ext4", s.name));
        let our_settings = vec![
            format!("kernel={}", ours.display()),
            format!("arch={}", s.ours),
            "root=/dev/cobd0".to_string(),
        ];
        // Their kernels name virtio disks vda, and load virtio_blk from
        // the initrd.
        let their_settings = vec![
            format!("kernel={}", vmlinuz.display()),
            format!("initrd={}", initrd.display()),
            format!("arch={}", s.theirs),
            "root=/dev/vda".to_string(),
        ];
        let (mut with_ours, mut with_theirs) = (Vec::new(), Vec::new());
        for run in 1..=args.runs {
            for our_turn in [run % 2 == 1, run % 2 == 0] {
                copy_image(&image, &copy)?;
                let (who, settings) = if our_turn {
                    ("ours", &our_settings)
                } else {
                    ("theirs", &their_settings)
                };
                let secs = boot(
                    &daemon,
                    &format!("bench-boot-{}-{who}", s.name),
                    &copy,
                    settings,
                )?;
                println!(
                    "{} run {run}: {who} {secs:.1} s to the login banner",
                    s.name
                );
                if our_turn {
                    with_ours.push(secs);
                } else {
                    with_theirs.push(secs);
                }
            }
        }
        let (o, t) = (median(&mut with_ours), median(&mut with_theirs));
        report.push(format!(
            "{:16} ours ({} kernel, no initrd) {o:6.1} s, {} {} with its initrd {t:6.1} s: ours takes {:.2}x their time",
            s.name,
            s.ours,
            s.package,
            s.package_arch,
            o / t
        ));
        std::fs::remove_file(&copy)?;
    }
    println!(
        "\nTCG boot to the login banner, median of {} boots each:\n{}",
        args.runs,
        report.join("\n")
    );
    Ok(())
}

fn xtask(args: &[&str]) -> Result<()> {
    let status = Command::new(std::env::current_exe()?).args(args).status()?;
    if !status.success() {
        bail!("cargo xtask {} failed", args.join(" "));
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The distribution's vmlinuz and initrd: from an image of the stock
/// recipe plus the kernel package, built by the image stage (cached like
/// any image), and copied out of its /boot with debugfs.
fn distribution_kernel(s: &Stock, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let name = format!("{}-distribution-kernel", s.name);
    let recipe = dir.join(format!("{name}.toml"));
    std::fs::write(
        &recipe,
        format!(
            "# cargo xtask bench boot: the stock {} image with its distribution's kernel.\n\
             extends = \"{}\"\narch = \"{}\"\npackages = [{}]\n",
            s.name,
            s.name,
            s.package_arch,
            std::iter::once(s.package)
                .chain(s.also.iter().copied())
                .map(|p| format!("\"{p}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )?;
    let out = dir.join(&name);
    xtask(&[
        "image",
        "--recipe",
        &recipe.display().to_string(),
        "--output",
        &out.display().to_string(),
    ])?;
    let image = out.join(format!("{name}.ext4"));
    let listing = Command::new("debugfs")
        .args(["-R", "ls /boot"])
        .arg(&image)
        .output()?;
    let listing = String::from_utf8_lossy(&listing.stdout);
    let find = |prefix: &str| -> Result<String> {
        listing
            .split_whitespace()
            .find(|w| w.starts_with(prefix))
            .map(str::to_string)
            .with_context(|| format!("no /boot/{prefix}* in {}", image.display()))
    };
    let mut files = Vec::new();
    for prefix in ["vmlinuz-", "initrd.img-"] {
        let file = find(prefix)?;
        let to = dir.join(format!("{}-{file}", s.name));
        let status = Command::new("debugfs")
            .arg("-R")
            .arg(format!("dump /boot/{file} {}", to.display()))
            .arg(&image)
            .output()?;
        if !status.status.success() || !to.is_file() {
            bail!("cannot copy /boot/{file} out of {}", image.display());
        }
        files.push(to);
    }
    let initrd = files.pop().expect("two files");
    let vmlinuz = files.pop().expect("two files");
    Ok((vmlinuz, initrd))
}

/// A fresh copy of the image for each boot: every boot is a first boot.
fn copy_image(image: &Path, to: &Path) -> Result<()> {
    let status = Command::new("cp")
        .arg("--sparse=always")
        .arg(image)
        .arg(to)
        .status()?;
    if !status.success() {
        bail!("cannot copy {}", image.display());
    }
    Ok(())
}

/// Seconds from starting the daemon to the login banner; the guest is
/// stopped then (the copy of the image is thrown away).
fn boot(daemon: &Path, name: &str, image: &Path, settings: &[String]) -> Result<f64> {
    let mut args = vec![
        "--name".to_string(),
        name.to_string(),
        format!("cobd0={}", image.display()),
        "mem=512".into(),
        "accel=tcg".into(),
        "eth0=slirp".into(),
        "ro".into(),
    ];
    args.extend(settings.iter().cloned());
    let started = Instant::now();
    let mut guest = harness::Guest::start(name, &daemon.display().to_string(), &args)?;
    guest.wait_for(MARKER, BOOT_TIMEOUT)?;
    Ok(started.elapsed().as_secs_f64())
}
