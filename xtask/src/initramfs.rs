//! `cargo xtask initramfs`: the tiny initramfs of the kernel smoke test,
//! made of our static guest init (`guest-init/`) and nothing else.

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::kernel::Arch;
use crate::stage::{self, CacheKey};

/// Build the smoke-test initramfs for the guest architecture into
/// target/initramfs/<arch>/initramfs.cpio: a newc cpio archive holding the
/// static guest-init as /init and a /dev/console node.
#[derive(clap::Args)]
pub struct Args {
    /// The guest architecture.
    #[arg(long, value_enum, default_value_t = Arch::I386)]
    pub arch: Arch,
    /// Rebuild from scratch (the init too, in a target directory of its
    /// own) and check that the archive is bit-identical to the published
    /// one; nothing is published.
    #[arg(long)]
    pub verify_reproducible: bool,
}

/// The Rust target that builds static binaries for the guest.
pub fn musl_target(arch: Arch) -> &'static str {
    match arch {
        Arch::I386 => "i686-unknown-linux-musl",
        Arch::X86_64 => "x86_64-unknown-linux-musl",
    }
}

pub fn run(args: Args) -> Result<()> {
    let root = stage::root();
    let cache = stage::cache_dir().join("initramfs");
    let _lock = stage::lock(&cache)?;
    let run = stage::Run::new("initramfs", args.verify_reproducible);
    let work = run.work_dir(&cache)?;
    // The workspace's target directory, where cargo decides itself whether
    // the init needs rebuilding; a verification builds it from nothing.
    let cargo_dir = if run.verifying() {
        work.join("cargo")
    } else {
        root.join("target")
    };
    let target = musl_target(args.arch);
    let status = stage::cargo()
        .current_dir(&root)
        .args([
            "build",
            "--quiet",
            "--release",
            "--locked",
            "--package",
            "guest-init",
            "--target",
            target,
        ])
        .env("CARGO_TARGET_DIR", &cargo_dir)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("building guest-init for {target} failed (is the target installed? `cargo xtask setup` adds it)");
    }
    let init = cargo_dir.join(target).join("release/guest-init");
    let sde = stage::source_date_epoch(&[&root.join("guest-init")])?;
    let mut key = CacheKey::new("initramfs");
    key.value("arch", args.arch.name());
    key.value("SOURCE_DATE_EPOCH", &sde.to_string());
    key.file_as(&format!("guest-init ({target})"), &init)?;
    let (cache_key, inputs) = key.finish();
    let dest = root.join("target/initramfs").join(args.arch.name());
    if run.up_to_date(&dest, &cache_key)? {
        tracing::info!("initramfs: {} is up to date", dest.display());
        return run.done();
    }
    let staging = run.staging(&dest)?;
    let cpio = newc(&std::fs::read(&init)?, sde);
    std::fs::write(staging.path().join("initramfs.cpio"), cpio)?;
    let manifest = json!({ "stage": "initramfs", "arch": args.arch.name(), "cache_key": cache_key, "SOURCE_DATE_EPOCH": sde, "inputs": inputs });
    run.finish(staging, &dest, manifest)?;
    run.done()
}

/// One entry of a newc cpio archive.
struct Entry<'a> {
    name: &'a str,
    mode: u32,
    rdev: (u32, u32),
    data: &'a [u8],
}

/// The archive the kernel unpacks as its first root: the directories the
/// init mounts on, /dev/console (so init has a console before devtmpfs),
/// and /init. Owners are root and every mtime is SOURCE_DATE_EPOCH.
fn newc(init: &[u8], mtime: u64) -> Vec<u8> {
    let dir = |name| Entry {
        name,
        mode: 0o040755,
        rdev: (0, 0),
        data: &[],
    };
    let entries = [
        dir("dev"),
        Entry {
            name: "dev/console",
            mode: 0o020600,
            rdev: (5, 1),
            data: &[],
        },
        dir("mnt"),
        dir("proc"),
        dir("sys"),
        Entry {
            name: "init",
            mode: 0o100755,
            rdev: (0, 0),
            data: init,
        },
    ];
    let mut out = Vec::new();
    for (ino, e) in entries.iter().enumerate() {
        push_entry(&mut out, ino as u32 + 1, e, mtime);
    }
    push_entry(
        &mut out,
        0,
        &Entry {
            name: "TRAILER!!!",
            mode: 0,
            rdev: (0, 0),
            data: &[],
        },
        0,
    );
    out
}

fn push_entry(out: &mut Vec<u8>, ino: u32, e: &Entry, mtime: u64) {
    let nlink = if e.mode & 0o170000 == 0o040000 { 2 } else { 1 };
    let fields = [
        ino,
        e.mode,
        0,
        0,
        nlink,
        mtime as u32,
        e.data.len() as u32,
        0,
        0,
        e.rdev.0,
        e.rdev.1,
        e.name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(e.name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(e.data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn cpio_lists_what_we_packed() {
        let archive = newc(b"#!/bin/true\n", 1_700_000_000);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.cpio");
        std::fs::write(&path, &archive).unwrap();
        // The real cpio reads it back, device node and all.
        let out = Command::new("cpio")
            .args(["-itv", "-F"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8_lossy(&out.stdout);
        for name in ["dev/console", "init", "proc", "sys", "mnt"] {
            assert!(
                listing.lines().any(|l| l.ends_with(name)),
                "{name} missing from:\n{listing}"
            );
        }
        assert!(listing.contains("crw-------"), "{listing}");
        assert!(archive.len().is_multiple_of(4));
    }
}
