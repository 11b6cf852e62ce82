//! Command lines at their edges. What every binary we ship, and `cargo
//! xtask`, does with a closed pipe: `colinux-daemon --dry-run … | head -1`
//! and `cargo xtask setup --list | true` end quietly, as coreutils do, not
//! with a panic. And output directories that name no directory: a
//! one-line error before anything is built.

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

#[test]
fn output_directories_that_name_no_directory_are_refused_before_any_build() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "mine").unwrap();
    let file = file.to_str().unwrap();
    let missing = dir.path().join("no/such/parent");
    let missing = missing.to_str().unwrap();
    for (args, expected) in [
        (
            &["kernel", "--output", "/"][..],
            "--output /: name the directory",
        ),
        (
            &["kernel", "--output", missing],
            "does not exist; create it first",
        ),
        (
            &["image", "--distro", "debian", "--output", ".."],
            "--output ..: name the directory",
        ),
        (
            &["image", "--distro", "debian", "--output", file],
            "a file is there",
        ),
        (&["dist", "--out", "."], "--out .: name the directory"),
        (&["dist", "--out", file], "a file is there"),
        (&["cluster", "--dir", ".."], "name the directory"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
        assert!(
            errors.len() == 1 && errors[0].contains(expected) && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("a-file")).unwrap(),
        "mine"
    );
}
