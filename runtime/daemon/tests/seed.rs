//! The seed disk as tools we did not write see it: dosfstools' fsck.fat
//! and mtools (what a host without a FAT driver would use). This host's
//! kernel has no vfat, so the guest's own view waits for a boot test.
#![cfg(target_os = "linux")]

use std::process::{Command, Output};

use colinux_daemon::seed::{SeedDisk, LABEL};

fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (cargo xtask setup installs it)"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(program: &str, args: &[&str]) -> String {
    String::from_utf8(run(program, args).stdout).unwrap()
}

fn seed() -> SeedDisk {
    let mut seed = SeedDisk::new("desk042");
    seed.insert("hostname", "cn-desk042\n").unwrap();
    seed.insert(
        "munge.key",
        (0..=255u8).cycle().take(1024).collect::<Vec<_>>(),
    )
    .unwrap();
    seed.insert("ssh_host_ed25519_key.pub", "ssh-ed25519 AAAA host\n")
        .unwrap();
    seed.insert("authorized_keys", "ssh-ed25519 BBBB admin\n")
        .unwrap();
    seed
}

#[test]
fn fsck_fat_and_mtools_read_the_seed_back() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("seed.img");
    seed().write_to(&image).unwrap();
    let img = image.to_str().unwrap();

    // -n: check only; a dirty flag or a bad FAT makes it fail.
    run("fsck.fat", &["-n", img]);
    let listing = stdout("mdir", &["-i", img, "::"]);
    assert!(
        listing.contains(&format!("Volume in drive : is {LABEL}")),
        "{listing}"
    );
    assert_eq!(stdout("mtype", &["-i", img, "::hostname"]), "cn-desk042\n");
    assert_eq!(
        stdout("mtype", &["-i", img, "::ssh_host_ed25519_key.pub"]),
        "ssh-ed25519 AAAA host\n"
    );
    let key = run("mtype", &["-i", img, "::munge.key"]).stdout;
    assert_eq!(key.len(), 1024);
    assert!(key.iter().enumerate().all(|(i, &b)| b == i as u8));
}
