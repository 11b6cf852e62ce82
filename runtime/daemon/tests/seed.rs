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

/// A cluster guest's dry run: the seed is made from the key files (so a
/// missing one is an error before anything starts) and shown as the last
/// virtio disk, read-only.
#[test]
fn a_cluster_guests_dry_run_shows_its_seed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("bzImage"), "kernel").unwrap();
    std::fs::write(d.join("data.img"), "").unwrap();
    std::fs::write(d.join("munge.key"), [1u8; 1024]).unwrap();
    std::fs::write(d.join("host"), "PRIVATE\n").unwrap();
    std::fs::write(d.join("host.pub"), "ssh-ed25519 HOST\n").unwrap();
    std::fs::write(
        d.join("node.ini"),
        "[cluster]\nrole = node\nhostname_prefix = node-\nhost_name = pc17\nhead = 10.77.0.1\n\
         munge_key = munge.key\nssh_host_key = host\n",
    )
    .unwrap();
    let dry_run = || {
        Command::new(env!("CARGO_BIN_EXE_colinux-daemon"))
            .current_dir(d)
            .args([
                "--dry-run",
                "--name",
                "seedtest",
                "kernel=bzImage",
                "cobd0=data.img",
            ])
            .arg("@node.ini")
            .output()
            .unwrap()
    };
    let out = dry_run();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("#   comosix.env: HOSTNAME=node-pc17")
            && text.contains("#   munge.key (1024 bytes)"),
        "{text}"
    );
    let drives: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("# engine command line"))
        .filter(|l| l.starts_with("if=none,id="))
        .collect();
    assert_eq!(drives.len(), 2, "{text}");
    assert!(drives[0].contains("id=cobd0"), "{drives:?}");
    assert!(
        drives[1].starts_with("if=none,id=seed,file=")
            && drives[1].ends_with("/seedtest/seed.img,format=raw,read-only=on"),
        "{drives:?}"
    );

    std::fs::remove_file(d.join("host.pub")).unwrap();
    let out = dry_run();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node.ini:7: ssh_host_key = host: ")
            && err.contains("host.pub does not exist"),
        "{err}"
    );
}
