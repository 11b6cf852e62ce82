//! `cargo xtask rehearse`: the README's commands on a machine where only
//! `cargo xtask setup` installed anything, to catch what a green CI on a
//! well-stocked machine hides (a fresh machine once failed for want of a
//! package that mmdebstrap only recommends).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::progress::Phase;
use crate::stage::{self, run_logged, CacheKey};

/// Rehearse a fresh machine: bootstrap a minimal Debian bookworm (cached),
/// clone the last commit into it, lend it this host's Rust toolchain through
/// a copy-on-write overlay (with every extra rustup target removed), enter it
/// with chroot in a mount and PID namespace of its own, and run there
/// `cargo xtask setup`, then the image stage and the image's boot test
/// (with --full: the whole of `cargo xtask test`). Needs root.
#[derive(clap::Args)]
#[command(after_help = "Each step's output goes to target/cache/rehearse/<step>.log.")]
pub struct Args {
    /// Run the whole test suite (`cargo xtask test`) after setup, instead
    /// of the image stage and one boot test.
    #[arg(long)]
    full: bool,
    /// Bootstrap the base system again instead of reusing the cached one.
    #[arg(long)]
    fresh_base: bool,
    /// Keep the rehearsal's root filesystem afterwards, to look inside.
    #[arg(long)]
    keep: bool,
}

/// The base: Debian's minimal system, plus what the README assumes before
/// its first command (git to clone, and the C toolchain that rustup's Rust
/// links with). A real fresh machine has more, so this is the stricter test.
const BASE: &[&str] = &["ca-certificates", "git", "gcc", "libc6-dev"];
const SUITE: &str = "bookworm";

/// What the machine, not a package, provides.
const HOST_FILES: &[&str] = &["/etc/resolv.conf", "/etc/ssl/certs/ca-certificates.crt"];

/// Runs as `bash enter.sh ROOT RUSTUP CARGO OVERLAY COMMAND…` inside
/// `unshare --mount --pid --fork`: the mounts vanish with the namespace.
/// redirect_dir lets rustup rename the toolchain's directories there.
const ENTER: &str = r#"set -eu
root=$1 rustup=$2 cargo=$3 overlay=$4; shift 4
# A root that is a mount point, as a machine's is (unshare inside needs it).
mount --bind "$root" "$root"
for tool in rustup cargo; do
    mkdir -p "$overlay/$tool-upper" "$overlay/$tool-work" "$root/opt/$tool"
    eval lower=\$$tool
    mount -t overlay overlay \
        -o "lowerdir=$lower,upperdir=$overlay/$tool-upper,workdir=$overlay/$tool-work,redirect_dir=on" \
        "$root/opt/$tool"
done
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
exec chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
    PATH=/opt/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    RUSTUP_HOME=/opt/rustup CARGO_HOME=/opt/cargo SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    ${COLINUX_TIMEOUT_SCALE:+COLINUX_TIMEOUT_SCALE=$COLINUX_TIMEOUT_SCALE} \
    bash -euc 'cd /src && exec "$@"' rehearse "$@"
"#;

/// A fresh machine has only the host's own target.
const ONLY_HOST_TARGET: &str = r#"host=$(rustc -vV | sed -n 's/^host: //p')
for t in $(rustup target list --installed); do
    [ "$t" = "$host" ] || rustup target remove "$t"
done"#;

pub fn run(args: Args) -> Result<()> {
    if !stage::is_root() {
        bail!("cargo xtask rehearse needs root (chroot, mounts and mmdebstrap's root mode)");
    }
    crate::setup::run(crate::setup::Args::default())?;
    let dir = stage::cache_dir().join("rehearse");
    let _lock = stage::lock(&dir)?;
    let base = base(&dir, args.fresh_base)?;

    let phase = Phase::start("unpack");
    let root = dir.join("root");
    let overlay = dir.join("overlay");
    remove(&root)?;
    remove(&overlay)?;
    std::fs::create_dir_all(&root)?;
    let mut tar = Command::new("tar");
    tar.arg("-xf").arg(&base).arg("-C").arg(&root);
    run_logged(&mut tar, &dir.join("unpack.log"))?;
    // The network a fresh machine is on: its resolver, and the certificate
    // authorities it trusts (here they include the egress proxy's own).
    for file in HOST_FILES {
        std::fs::copy(file, root.join(&file[1..]))
            .with_context(|| format!("cannot copy {file} into the rehearsal"))?;
    }
    let commit = clone_into(&root.join("src"), &dir.join("clone.log"))?;
    phase.done(&format!("commit {commit}"));

    let toolchain = Toolchain::of_this_host()?;
    let script = dir.join("enter.sh");
    std::fs::write(&script, ENTER)?;
    let enter = |step: &'static str, command: &[&str]| -> Result<()> {
        let phase = Phase::start(step);
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--pid", "--fork"])
            .arg("bash")
            .arg(&script)
            .args([&root, &toolchain.rustup, &toolchain.cargo, &overlay])
            .args(command);
        let log = dir.join(format!("{step}.log"));
        remove_file(&log)?;
        run_logged(&mut cmd, &log)?;
        phase.done(&command.join(" "));
        Ok(())
    };
    enter("targets", &["sh", "-c", ONLY_HOST_TARGET])?;
    enter("setup", &["cargo", "xtask", "setup"])?;
    if args.full {
        enter("test", &["cargo", "xtask", "test"])?;
    } else {
        enter("image", &["cargo", "xtask", "image", "--distro", "debian"])?;
        enter(
            "boot",
            &[
                "cargo",
                "test",
                "--locked",
                "--package",
                "xtask",
                "--test",
                "guests",
                "debian_trixie_i386_boots",
            ],
        )?;
    }
    if !args.keep {
        remove(&root)?;
        remove(&overlay)?;
    }
    tracing::info!(
        "rehearse: commit {commit} passed on a machine where only setup installed anything"
    );
    Ok(())
}

/// The minimal bookworm, from the archives this host's apt uses, cached as
/// a tarball under a key of its package list and those sources.
fn base(dir: &Path, fresh: bool) -> Result<PathBuf> {
    let sources = host_sources();
    if sources.is_empty() {
        bail!("this host has no apt sources (/etc/apt/sources.list, /etc/apt/sources.list.d/*.list|*.sources) to bootstrap from");
    }
    let mut key = CacheKey::new("rehearse-base");
    key.value("suite", SUITE);
    key.value("packages", &BASE.join(","));
    for source in &sources {
        key.file(source)?;
    }
    let (key, _) = key.finish();
    let tarball = dir.join(format!("base-{}.tar", &key[..16]));
    if tarball.is_file() && !fresh {
        return Ok(tarball);
    }
    let phase = Phase::start("base");
    let partial = tarball.with_extension("tar.partial");
    let mut mmdebstrap = Command::new("mmdebstrap");
    mmdebstrap
        .args(["--mode=root", "--variant=minbase", "--architectures=amd64"])
        .arg(format!("--include={}", BASE.join(",")))
        .arg("--format=tar")
        .arg(SUITE)
        .arg(&partial)
        .args(&sources);
    run_logged(&mut mmdebstrap, &dir.join("base.log"))?;
    std::fs::rename(&partial, &tarball)?;
    phase.done(&format!("{SUITE} minbase + {}", BASE.join(" ")));
    Ok(tarball)
}

/// The host's apt source files: the rehearsal sees the archives it sees.
fn host_sources() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources"))
        .collect();
    files.sort();
    let main = PathBuf::from("/etc/apt/sources.list");
    if std::fs::metadata(&main).is_ok_and(|m| m.len() > 0) {
        files.insert(0, main);
    }
    files
}

/// A clean clone of the last commit, as CI gets it.
fn clone_into(dest: &Path, log: &Path) -> Result<String> {
    let root = stage::root();
    let status = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()?;
    if !status.stdout.is_empty() {
        tracing::warn!("rehearse: uncommitted changes are not rehearsed, only the last commit");
    }
    let mut clone = Command::new("git");
    clone
        .args(["clone", "--quiet", "--no-hardlinks"])
        .arg(&root)
        .arg(dest);
    run_logged(&mut clone, log)?;
    let head = Command::new("git")
        .arg("-C")
        .arg(dest)
        .args(["rev-parse", "--short", "HEAD"])
        .output()?;
    Ok(String::from_utf8_lossy(&head.stdout).trim().to_string())
}

/// This host's rustup and cargo homes, lent to the rehearsal read-only
/// (through an overlay, so removing targets there changes nothing here).
struct Toolchain {
    rustup: PathBuf,
    cargo: PathBuf,
}

impl Toolchain {
    fn of_this_host() -> Result<Toolchain> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let dir = |var: &str, default: &str| -> Result<PathBuf> {
            let path = std::env::var_os(var)
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(default)))
                .with_context(|| format!("neither {var} nor HOME is set"))?;
            if !path.is_dir() {
                bail!("{} ({var}) is not a directory: rehearse lends the rehearsal this host's rustup toolchain", path.display());
            }
            Ok(path)
        };
        Ok(Toolchain {
            rustup: dir("RUSTUP_HOME", ".rustup")?,
            cargo: dir("CARGO_HOME", ".cargo")?,
        })
    }
}

fn remove(path: &Path) -> Result<()> {
    gone(path, std::fs::remove_dir_all(path))
}

fn remove_file(path: &Path) -> Result<()> {
    gone(path, std::fs::remove_file(path))
}

fn gone(path: &Path, result: std::io::Result<()>) -> Result<()> {
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}
