//! `Settings::check_files`: every path the guest needs, checked up front.

use std::fs;

use colinux_config::{parse_args, ErrorKind};

#[test]
fn present_files_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    for file in ["vmlinux", "initrd.gz", "root.img", "helper", "qemu"] {
        fs::write(root.join(file), "x").expect("write");
    }
    fs::create_dir(root.join("share")).expect("mkdir");
    let mut args = vec![
        "kernel=vmlinux",
        "initrd=initrd.gz",
        "cobd0=root.img",
        "hda2=root.img",
        "cofs0=share",
        "exec0=./helper",
        // A bare name is found in PATH at run time, so it is not checked.
        "exec1=xterm-that-does-not-exist",
        "qemu=./qemu",
        "ttys0=/dev/ttyS99",
    ];
    if cfg!(unix) {
        // A device is fine for cobd.
        args.push("cobd9=/dev/null");
    }
    let s = parse_args(args, root).expect("parses");
    s.check_files().expect("all there");
}

/// An absolute path (on Windows, `/opt/…` is relative to the current drive).
const NO_QEMU: &str = if cfg!(windows) {
    r"C:\opt\no-qemu\qemu-system-i386.exe"
} else {
    "/opt/no-qemu/qemu-system-i386"
};

#[test]
fn every_problem_is_reported_at_once_with_its_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    fs::create_dir(root.join("a-dir")).expect("mkdir");
    fs::write(root.join("a-file"), "x").expect("write");
    fs::write(
        root.join("guest.conf"),
        "kernel=a-dir\ncobd0=a-dir\ncofs0=a-file\n",
    )
    .expect("write");

    let s = parse_args(
        [
            "@guest.conf",
            "initrd=no-initrd",
            "cobd1=no-disk.img",
            "cofs1=no-dir",
            "exec0=bin/no-helper",
            // The engine is the daemon's to find: a missing one is its
            // own exit code (3), with where to get QEMU.
            &format!("qemu={NO_QEMU}"),
        ],
        root,
    )
    .expect("parses");
    let errors = s.check_files().expect_err("problems").0;
    let messages: Vec<String> = errors
        .iter()
        .map(|e| {
            e.to_string()
                .replace(&root.display().to_string(), "<root>")
                .replace(std::path::MAIN_SEPARATOR, "/")
        })
        .collect();
    assert_eq!(
        messages,
        [
            "guest.conf:1: kernel=a-dir: <root>/a-dir is a directory, not a file",
            "command line argument 2: initrd=no-initrd: <root>/no-initrd does not exist",
            "guest.conf:2: cobd0=a-dir: <root>/a-dir is a directory, not a file",
            "command line argument 3: cobd1=no-disk.img: <root>/no-disk.img does not exist",
            "guest.conf:3: cofs0=a-file: <root>/a-file is not a directory",
            "command line argument 4: cofs1=no-dir: <root>/no-dir does not exist",
            "command line argument 5: exec0=bin/no-helper: <root>/bin/no-helper does not exist",
        ]
    );
    assert!(matches!(
        &*errors[1].kind,
        ErrorKind::FileMissing { path } if *path == root.join("no-initrd")
    ));
}
