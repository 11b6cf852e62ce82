//! `scsiN=` end to end: our i386 kernel (built by `cargo xtask`, cached),
//! booted by colinux-daemon under TCG with two SCSI disks and a CD-ROM and
//! no root filesystem. The kernel's own console messages show what the
//! guest sees; then it panics for want of a root, which ends the run after
//! a few seconds instead of a whole system start.
#![cfg(target_os = "linux")]

use std::path::PathBuf;
use std::time::Duration;

use harness::{workspace_root, xtask_ok, Guest};

const DAEMON: &str = env!("CARGO_BIN_EXE_colinux-daemon");

/// The kernel, built (or found up to date).
fn kernel() -> PathBuf {
    xtask_ok(&["kernel", "--arch", "i386"]);
    workspace_root().join("target/kernel/i386/bzImage")
}

#[test]
fn scsi_disks_are_sd_and_cdroms_sr_in_index_order() {
    let kernel = kernel();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::File::create(p.join("second.img"))
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    std::fs::write(p.join("disc.iso"), vec![0u8; 64 << 10]).unwrap();
    std::fs::write(
        p.join("scsi.conf"),
        format!(
            "kernel=\"{}\" mem=128 accel=tcg panic=-1\n\
             scsi0=disk,new.img,8     # created by the daemon\n\
             scsi1=cdrom,disc.iso\n\
             scsi2=disk,second.img\n",
            kernel.display()
        ),
    )
    .unwrap();
    let args = [
        "--cwd".to_string(),
        p.display().to_string(),
        "--name".into(),
        "scsi-test".into(),
        format!("@{}", p.join("scsi.conf").display()),
    ];
    let mut guest = Guest::start("daemon-scsi", DAEMON, &args).unwrap();
    // The probe messages come in no fixed order; the root fs is looked
    // for after them all.
    guest
        .wait_for("Unable to mount root fs", Duration::from_secs(240))
        .unwrap();
    let console = guest.transcript().join("\n");
    // 8 MB and 4 MB in 512-byte sectors: the image the daemon made is sda,
    // the next disk sdb; the CD-ROM between them is sr0.
    for line in [
        ":0:0:0: [sda] 16384 512-byte logical blocks",
        ":0:2:0: [sdb] 8192 512-byte logical blocks",
        ":0:1:0: [sr0] scsi3-mmc drive",
    ] {
        assert!(
            console.contains(line),
            "{line:?} not on the console:\n{console}"
        );
    }
    // Exit code 1: "the guest's kernel panicked" (colinux-daemon --help).
    let status = guest.wait_exit(Duration::from_secs(120)).unwrap();
    assert_eq!(status.code(), Some(1), "the daemon exited with {status}");
    assert_eq!(
        std::fs::metadata(p.join("new.img")).unwrap().len(),
        8 << 20,
        "scsi0's SIZE made the image"
    );
}
