//! `cargo xtask runtime`: both targets' binaries, the manifest, the no-op
//! rebuild, and the Windows daemon starting under Wine. (`cargo xtask test`
//! checks a clean rebuild with `runtime --verify-reproducible`.)

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::{wine, workspace_root};
use sha2::{Digest, Sha256};

fn xtask_runtime() -> Duration {
    let started = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("runtime")
        .status()
        .unwrap();
    assert!(status.success(), "cargo xtask runtime failed");
    started.elapsed()
}

const TARGETS: [(&str, &str); 2] = [
    ("x86_64-unknown-linux-gnu", ""),
    ("x86_64-pc-windows-gnu", ".exe"),
];
const BINS: [&str; 2] = ["colinux-daemon", "colinux-console"];

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// The PE checksum as Windows computes it (imagehlp's CheckSumMappedFile):
/// 16-bit words summed with end-around carry, the field itself skipped,
/// plus the file's length.
fn pe_checksum(b: &[u8], field: usize) -> u32 {
    let mut sum = 0u32;
    for (i, word) in b.chunks(2).enumerate() {
        if i * 2 == field || i * 2 == field + 2 {
            continue;
        }
        sum += u32::from(word[0]) | u32::from(word.get(1).copied().unwrap_or(0)) << 8;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum + b.len() as u32
}

/// A PE32+ image for x86-64, with no link time in its header and no COFF
/// symbol table (its names differ from build to build), and a right PE
/// checksum.
fn assert_pe32_plus_x86_64(path: &Path) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..2], b"MZ", "{}: no DOS header", path.display());
    let pe = u32_at(&b, 0x3c) as usize;
    assert_eq!(
        &b[pe..pe + 4],
        b"PE\0\0",
        "{}: no PE header",
        path.display()
    );
    assert_eq!(u16_at(&b, pe + 4), 0x8664, "{}: not x86-64", path.display());
    assert_eq!(u32_at(&b, pe + 8), 0, "{}: a link time", path.display());
    assert_eq!(
        (u32_at(&b, pe + 12), u32_at(&b, pe + 16)),
        (0, 0),
        "{}: a COFF symbol table",
        path.display()
    );
    assert_eq!(u16_at(&b, pe + 24), 0x20b, "{}: not PE32+", path.display());
    let checksum = pe + 24 + 64;
    assert_eq!(
        u32_at(&b, checksum),
        pe_checksum(&b, checksum),
        "{}: a wrong PE checksum",
        path.display()
    );
}

fn assert_elf_x86_64(path: &Path) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..4], b"\x7fELF", "{}: not ELF", path.display());
    assert_eq!(u16_at(&b, 18), 62, "{}: not x86-64", path.display());
}

#[test]
fn builds_both_targets_then_is_a_no_op() {
    xtask_runtime();
    let mut mtimes = Vec::new();
    for (triple, exe) in TARGETS {
        let dir = workspace_root().join("target/runtime").join(triple);
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap())
                .unwrap();
        assert_eq!(manifest["target"], triple);
        for bin in BINS {
            let name = format!("{bin}{exe}");
            let path = dir.join(&name);
            if exe.is_empty() {
                assert_elf_x86_64(&path);
            } else {
                assert_pe32_plus_x86_64(&path);
            }
            let sha = format!("{:x}", Sha256::digest(std::fs::read(&path).unwrap()));
            let listed = manifest["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["path"] == name.as_str())
                .unwrap_or_else(|| panic!("{name} is not in {triple}'s manifest"));
            assert_eq!(listed["sha256"], sha.as_str(), "{triple}/{name}");
            mtimes.push(std::fs::metadata(&path).unwrap().modified().unwrap());
        }
    }

    let again = xtask_runtime();
    assert!(again < Duration::from_secs(2), "the no-op took {again:?}");
    let after: Vec<_> = TARGETS
        .iter()
        .flat_map(|(triple, exe)| {
            BINS.iter().map(move |bin| {
                let path = workspace_root()
                    .join("target/runtime")
                    .join(triple)
                    .join(format!("{bin}{exe}"));
                std::fs::metadata(path).unwrap().modified().unwrap()
            })
        })
        .collect();
    assert_eq!(mtimes, after, "the no-op rewrote binaries");

    // The shipped Windows binaries start under Wine and describe themselves.
    let wine = wine::Wine::prepare(&workspace_root().join("target/cache")).unwrap();
    for (exe, needle) in [
        ("colinux-daemon.exe", "Exit codes"),
        ("colinux-console.exe", "Ctrl-] detaches"),
    ] {
        let path = workspace_root()
            .join("target/runtime/x86_64-pc-windows-gnu")
            .join(exe);
        let out = Command::new(wine::WINE64)
            .arg(&path)
            .arg("--help")
            .envs(wine.env())
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && help.contains(needle),
            "{} --help under Wine: {}\n{help}",
            path.display(),
            out.status
        );
    }
}

#[test]
fn help_documents_the_clean_rebuild_check() {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["runtime", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--verify-reproducible") && help.contains("target/cache/verify/runtime"),
        "{help}"
    );
}
