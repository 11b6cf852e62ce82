//! `cargo xtask setup`: the host build dependencies of every stage.

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

/// Install what the pipeline and its tests need on this host: Debian
/// packages and rustup targets. Idempotent and quick when all is present.
/// As root it installs; otherwise it prints the exact commands to run.
#[derive(clap::Args, Default)]
pub struct Args {
    /// Only print what is missing and the commands that install it.
    #[arg(long)]
    check: bool,
}

/// What one stage needs from the host. Each new stage adds its row.
struct Needs {
    stage: &'static str,
    apt: &'static [&'static str],
    rustup_targets: &'static [&'static str],
}

const NEEDS: &[Needs] = &[
    Needs {
        // qemu-img reads qcow2, vmdk, vdi and vhdx, and writes qcow2.
        stage: "convert",
        apt: &["qemu-utils"],
        rustup_targets: &[],
    },
    Needs {
        // The tests make their fixtures with the real partitioning and mkfs tools.
        stage: "convert tests and bench",
        apt: &["fdisk", "gdisk", "e2fsprogs", "dosfstools"],
        rustup_targets: &[],
    },
    Needs {
        // The guest kernel: Debian's 6.1 source, patch, the kernel's build
        // dependencies, and ccache to make rebuilds cheap.
        stage: "kernel",
        apt: &[
            "linux-source-6.1",
            "patch",
            "make",
            "gcc",
            "bc",
            "flex",
            "bison",
            "libelf-dev",
            "libssl-dev",
            "cpio",
            "xz-utils",
            "ccache",
        ],
        rustup_targets: &[],
    },
    Needs {
        // The boot smoke test: QEMU, and static guest binaries for each guest arch.
        stage: "kernel smoke test",
        apt: &["qemu-system-x86"],
        rustup_targets: &["i686-unknown-linux-musl", "x86_64-unknown-linux-musl"],
    },
    Needs {
        // Root filesystems: mmdebstrap (uidmap for its unshare mode), the
        // Debian archive keyring, curl to check the mirror first, mke2fs and
        // debugfs, zstd for the compressed copy. (Ubuntu's keyring is not
        // in Debian bookworm: the ubuntu recipe says where to get it.)
        stage: "image",
        apt: &[
            "mmdebstrap",
            "uidmap",
            "debian-archive-keyring",
            "curl",
            "e2fsprogs",
            "zstd",
        ],
        rustup_targets: &[],
    },
    Needs {
        // The image boot test logs in over SSH through QEMU's port forward.
        stage: "image boot test",
        apt: &["openssh-client"],
        rustup_targets: &[],
    },
    Needs {
        // The runtime for Windows hosts: mingw-w64 links x86_64-pc-windows-gnu
        // binaries, and Wine runs their unit tests; QEMU is the engine.
        stage: "runtime",
        apt: &["gcc-mingw-w64-x86-64", "wine64", "wine", "qemu-system-x86"],
        rustup_targets: &["x86_64-pc-windows-gnu"],
    },
];

pub fn run(args: Args) -> Result<()> {
    let sh = Shell::new()?;
    for n in NEEDS {
        tracing::debug!(
            "setup: {} needs apt {:?} and rustup targets {:?}",
            n.stage,
            n.apt,
            n.rustup_targets
        );
    }
    let apt: Vec<&str> = NEEDS.iter().flat_map(|n| n.apt.iter().copied()).collect();
    let targets: Vec<&str> = NEEDS
        .iter()
        .flat_map(|n| n.rustup_targets.iter().copied())
        .collect();
    let missing_apt = missing_packages(&sh, &apt)?;
    let missing_targets = missing_rustup_targets(&sh, &targets)?;
    if missing_apt.is_empty() && missing_targets.is_empty() {
        tracing::info!("setup: all host dependencies are installed");
        return Ok(());
    }
    let is_root = unsafe { libc::geteuid() } == 0;
    let apt_commands = [
        "apt-get update".to_string(),
        format!(
            "apt-get install -y --no-install-recommends {}",
            missing_apt.join(" ")
        ),
    ];
    let rustup_command = format!("rustup target add {}", missing_targets.join(" "));
    if args.check || !is_root {
        let sudo = if is_root { "" } else { "sudo " };
        eprintln!("missing host dependencies; install them with:");
        if !missing_apt.is_empty() {
            apt_commands.iter().for_each(|c| eprintln!("  {sudo}{c}"));
        }
        if !missing_targets.is_empty() {
            eprintln!("  {rustup_command}");
        }
        bail!(
            "host dependencies are missing: {}",
            [missing_apt, missing_targets].concat().join(", ")
        );
    }
    if !missing_apt.is_empty() {
        tracing::info!("setup: installing {}", missing_apt.join(" "));
        let _env = sh.push_env("DEBIAN_FRONTEND", "noninteractive");
        apt_update(&sh)?;
        cmd!(
            sh,
            "apt-get install -y -q --no-install-recommends {missing_apt...}"
        )
        .run()?;
    }
    if !missing_targets.is_empty() {
        tracing::info!("setup: adding rustup targets {}", missing_targets.join(" "));
        cmd!(sh, "rustup target add {missing_targets...}").run()?;
    }
    Ok(())
}

/// Debian mirrors are sometimes caught mid-sync ("File has unexpected size"),
/// which fails one index of many. Retry a few times; if one index still
/// fails, say which and go on with the lists we have: the install that
/// follows fails clearly if they are not enough.
fn apt_update(sh: &Shell) -> Result<()> {
    const TRIES: u32 = 3;
    for attempt in 1..=TRIES {
        let out = cmd!(sh, "apt-get update -q").ignore_status().output()?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let failed = stderr
            .lines()
            .find(|l| l.starts_with("E: Failed to fetch"))
            .unwrap_or("apt-get update failed");
        tracing::warn!("setup: apt-get update, try {attempt} of {TRIES}: {failed}");
        if attempt < TRIES {
            std::thread::sleep(std::time::Duration::from_secs(5 * u64::from(attempt)));
        }
    }
    tracing::warn!("setup: going on with the package lists apt already has");
    Ok(())
}

fn missing_packages(sh: &Shell, packages: &[&str]) -> Result<Vec<String>> {
    if crate::stage::which("dpkg-query").is_none() {
        bail!(
            "this host has no dpkg; install the equivalents of these Debian packages: {}",
            packages.join(" ")
        );
    }
    // dpkg-query fails for packages it has never heard of; those are missing too.
    let format = "${Package}\t${db:Status-Abbrev}\n";
    let out = cmd!(sh, "dpkg-query -W -f={format} {packages...}")
        .ignore_status()
        .quiet()
        .ignore_stderr()
        .read()?;
    let installed: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, status)| status.starts_with("ii"))
        .map(|(name, _)| name.split(':').next().unwrap_or(name))
        .collect();
    Ok(packages
        .iter()
        .filter(|p| !installed.contains(p))
        .map(|p| p.to_string())
        .collect())
}

fn missing_rustup_targets(sh: &Shell, targets: &[&str]) -> Result<Vec<String>> {
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let installed = cmd!(sh, "rustup target list --installed")
        .quiet()
        .read()
        .context("rustup is needed to add cross-compilation targets")?;
    Ok(targets
        .iter()
        .filter(|t| !installed.lines().any(|l| l.trim() == **t))
        .map(|t| t.to_string())
        .collect())
}
