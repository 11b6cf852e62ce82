//! What every binary we ship, and `cargo xtask`, does with a closed pipe:
//! `colinux-daemon --dry-run … | head -1` and `cargo xtask setup --list |
//! true` end quietly, as coreutils do, not with a panic.

use std::process::{Command, Stdio};

/// Runs `command` with its stdout a pipe whose reader is already gone, and
/// checks that it ended by SIGPIPE (as `yes | true` does) with no panic.
fn into_a_closed_pipe(mut command: Command) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = command
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{command:?}: {stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{command:?} ended with {}: {stderr}",
        out.status
    );
}

#[test]
fn cargo_xtask_setup_list_into_a_closed_pipe_ends_quietly() {
    let mut setup = Command::new(env!("CARGO_BIN_EXE_xtask"));
    setup.args(["setup", "--list"]);
    into_a_closed_pipe(setup);
}

#[test]
fn colinux_daemon_dry_run_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vmlinuz"), "k").unwrap();
    // The daemon as the runtime stage builds it is not a dependency of
    // xtask's tests; cargo builds this one for them.
    let daemon = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--package",
            "colinux-daemon",
            "--bin",
            "colinux-daemon",
        ])
        .status()
        .unwrap();
    assert!(daemon.success());
    let exe =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/colinux-daemon");
    let mut dry = Command::new(exe);
    dry.current_dir(dir.path())
        .args(["--dry-run", "kernel=vmlinuz", "qemu=no-such-qemu"]);
    into_a_closed_pipe(dry);
}
