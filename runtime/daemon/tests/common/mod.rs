//! What the daemon's boot tests share: the kernel and image they boot, the
//! checks the guest runs, and how they read the guest from outside.
#![allow(dead_code)] // each test file uses its own part

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use harness::{scaled, workspace_root, xtask_ok, Guest};

/// Generous: a systemd boot under TCG takes about 35 s here.
pub const BOOT: Duration = Duration::from_secs(240);
pub const POWER_OFF: Duration = Duration::from_secs(120);

/// The kernel and the stock debian image, built (or found up to date) once.
pub fn artifacts() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        xtask_ok(&["kernel", "--arch", "i386"]);
        xtask_ok(&["image", "--distro", "debian"]);
        (
            workspace_root().join("target/kernel/i386/bzImage"),
            workspace_root().join("target/images/debian/debian.ext4"),
        )
    })
}

pub fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The guest's checks, run as a unit once the system is up.
pub const CHECKS: &str = r#"#!/bin/sh
say() { echo "E2E: $*" > /dev/console; }
say started
printf 'colinux-e2e-scratch-data' | dd of=/dev/cobd1 bs=512 conv=sync,fsync 2>/dev/null && say "scratch written"
mkdir -p /mnt/host
if mount -t cofs cofs0 /mnt/host; then
    say "cofs read: $(cat /mnt/host/hello.txt)"
    echo written-by-guest > /mnt/host/from-guest.txt
fi
say "devices: $(stat -c '%n=%t:%T' /dev/cobd0 /dev/cobd1 | tr '\n' ' ')"
say done
"#;

pub const UNIT: &str = "[Unit]\nDescription=colinux-daemon end-to-end checks\nAfter=local-fs.target\n\n\
[Service]\nType=oneshot\nExecStart=/usr/local/sbin/colinux-e2e\n\n[Install]\nWantedBy=multi-user.target\n";

/// A copy of the image at `root` with the checks in it, run as a unit
/// once the system is up.
pub fn root_with_checks(root: &Path) {
    let (_, image) = artifacts();
    run(
        "cp",
        &[
            "--sparse=always",
            image.to_str().unwrap(),
            root.to_str().unwrap(),
        ],
    );
    add_checks(root);
}

/// Writes the checks into the ext4 image `root`.
pub fn add_checks(root: &Path) {
    // debugfs splits its commands on spaces: its files go where no path has one.
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let script = dir.join("colinux-e2e");
    let unit = dir.join("colinux-e2e.service");
    std::fs::write(&script, CHECKS).unwrap();
    std::fs::write(&unit, UNIT).unwrap();
    let commands = format!(
        "write {script} /usr/local/sbin/colinux-e2e\n\
         set_inode_field /usr/local/sbin/colinux-e2e mode 0100755\n\
         write {unit} /etc/systemd/system/colinux-e2e.service\n\
         symlink /etc/systemd/system/multi-user.target.wants/colinux-e2e.service /etc/systemd/system/colinux-e2e.service\n",
        script = script.display(),
        unit = unit.display(),
    );
    let commands_file = dir.join("debugfs.cmds");
    std::fs::write(&commands_file, commands).unwrap();
    run(
        "debugfs",
        &[
            "-w",
            "-f",
            commands_file.to_str().unwrap(),
            root.to_str().unwrap(),
        ],
    );
}

/// The first bytes the guest's scratch disk holds: what its checks wrote.
pub fn scratch_written(scratch: &Path) -> bool {
    let mut data = vec![0u8; 24];
    std::fs::File::open(scratch)
        .unwrap()
        .read_exact(&mut data)
        .unwrap();
    data == b"colinux-e2e-scratch-data"
}

/// Reads the guest's SSH banner through the slirp redirect, retrying while
/// sshd starts.
pub fn ssh_banner(port: u16) -> String {
    let deadline = Instant::now() + scaled(Duration::from_secs(60));
    loop {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut buf = [0u8; 64];
            if let Ok(n) = stream.read(&mut buf) {
                if n > 0 {
                    return String::from_utf8_lossy(&buf[..n]).into_owned();
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no SSH banner on host port {port}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits for `marker` unless an earlier wait already read past it (the
/// login banner and the checks' output race each other).
pub fn wait_seen(guest: &mut Guest, marker: &str, timeout: Duration) {
    if !guest.transcript().iter().any(|l| l.contains(marker)) {
        guest.wait_for(marker, timeout).unwrap();
    }
}
