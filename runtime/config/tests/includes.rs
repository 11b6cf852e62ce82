//! `@file` includes on disk: where they resolve, cycles, and bad files.

use std::fs;
use std::path::Path;

use colinux_config::{parse_args, parse_str, ErrorKind, Place, MAX_INCLUDES};

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("mkdir");
    }
    fs::write(path, text).expect("write");
}

#[test]
fn includes_resolve_against_the_including_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "conf/main.conf", "kernel=vmlinux @net/eth.conf\nro\n");
    write(
        root,
        "conf/net/eth.conf",
        "eth0=slirp cofs0=share @../disks.conf",
    );
    write(root, "conf/disks.conf", "cobd0=root.img\n");

    let s = parse_args(["@conf/main.conf", "init=/bin/sh"], root).expect("parses");
    assert_eq!(s.kernel.expect("kernel").value, root.join("conf/vmlinux"));
    assert_eq!(s.cofs[&0].dir, root.join("conf/net/share"));
    assert_eq!(s.cobd[&0].path, root.join("conf/net/../root.img"));
    assert_eq!(s.kernel_args, ["ro", "init=/bin/sh"]);
    // Places show the path as the user would write it from the current directory.
    assert_eq!(
        s.cobd[&0].origin.place,
        Place::Line {
            file: "conf/net/../disks.conf".into(),
            line: 1
        }
    );
    assert_eq!(
        s.eth[&0]
            .origin
            .to_string()
            .replace(std::path::MAIN_SEPARATOR, "/"),
        "conf/net/eth.conf:1: eth0=slirp"
    );
}

#[test]
fn an_absolute_include_and_a_quoted_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "my dir/x.conf", "mem=100");
    let absolute = root.join("my dir/x.conf");
    let s = parse_args([format!("@{}", absolute.display())], Path::new("/")).expect("parses");
    assert_eq!(s.mem_mb.expect("mem").value, 100);

    write(root, "main.conf", "@\"my dir/x.conf\" smp=2");
    let s = parse_args(["@main.conf"], root).expect("parses");
    assert_eq!(s.smp(), 2);
    assert_eq!(s.mem_mb.expect("mem").value, 100);
}

#[test]
fn parse_str_includes_relative_to_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "extra.conf", "smp=4");
    let s = parse_str("@extra.conf", &dir.path().join("virtual.conf")).expect("parses");
    assert_eq!(s.smp(), 4);
}

#[test]
fn include_cycles_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "a.conf", "mem=64\n@b.conf");
    write(root, "b.conf", "ro\n\n@sub/../a.conf");
    fs::create_dir(root.join("sub")).expect("mkdir");
    let e = parse_args(["@a.conf"], root).expect_err("cycle");
    assert_eq!(
        e.to_string(),
        "b.conf:3: @sub/../a.conf: include cycle: a.conf -> b.conf -> sub/../a.conf"
    );
    assert!(matches!(*e.kind, ErrorKind::IncludeCycle { ref chain } if chain.len() == 3));

    write(root, "self.conf", "@./self.conf");
    assert_eq!(
        parse_args(["@self.conf"], root)
            .expect_err("cycle")
            .to_string(),
        "self.conf:1: @./self.conf: include cycle: self.conf -> ./self.conf"
    );
}

#[test]
fn including_a_file_twice_without_a_cycle_is_fine() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "common.conf", "console=ttyS0");
    write(dir.path(), "main.conf", "@common.conf @common.conf");
    let s = parse_args(["@main.conf", "@common.conf"], dir.path()).expect("parses");
    assert_eq!(s.kernel_args, ["console=ttyS0"; 3]);
}

#[test]
fn too_many_includes_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "empty.conf", "# nothing");
    write(
        dir.path(),
        "many.conf",
        &"@empty.conf\n".repeat(MAX_INCLUDES + 5),
    );
    let e = parse_args(["@many.conf"], dir.path()).expect_err("too many");
    assert_eq!(
        e.to_string(),
        format!(
            "many.conf:{MAX_INCLUDES}: @empty.conf: more than {MAX_INCLUDES} includes in total; \
             is something including itself indirectly?"
        )
    );
}

#[test]
fn a_missing_include_names_its_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "main.conf", "mem=64\n  @missing.conf");
    let e = parse_args(["ro", "@main.conf"], dir.path()).expect_err("missing");
    let path = dir.path().join("missing.conf");
    assert!(
        e.to_string().starts_with(&format!(
            "main.conf:2: @missing.conf: cannot read {}: ",
            path.display()
        )),
        "{e}"
    );
    assert!(matches!(*e.kind, ErrorKind::Include { path: ref p, .. } if *p == path));

    let e = parse_args(["ro", "@nowhere.conf"], dir.path()).expect_err("missing");
    assert!(
        e.to_string()
            .starts_with("command line argument 2: @nowhere.conf: cannot read "),
        "{e}"
    );
    assert_eq!(
        parse_args(["@"], dir.path())
            .expect_err("empty")
            .to_string(),
        "command line argument 1: @: bad include \"\": expected a file name after `@`"
    );
}

#[test]
fn only_small_regular_files_are_included() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::create_dir(dir.path().join("a.conf")).expect("mkdir");
    let e = parse_args(["@a.conf"], dir.path()).expect_err("a directory");
    assert!(e.to_string().ends_with(": not a regular file"), "{e}");

    let big = vec![b' '; (colinux_config::MAX_FILE_BYTES + 1) as usize];
    fs::write(dir.path().join("big.conf"), big).expect("write");
    let e = parse_args(["@big.conf"], dir.path()).expect_err("too big");
    assert!(e.to_string().contains("larger than 1048576 bytes"), "{e}");

    #[cfg(unix)]
    {
        let e = parse_args(["@/dev/zero"], dir.path()).expect_err("a device");
        assert!(e.to_string().ends_with(": not a regular file"), "{e}");
    }
}

#[test]
fn invalid_utf8_names_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(
        dir.path().join("latin1.conf"),
        b"mem=64\nro\ncofs0=C:\\Dokumente\xfc\n",
    )
    .expect("write");
    let e = parse_args(["@latin1.conf"], dir.path()).expect_err("not UTF-8");
    assert_eq!(e.to_string(), "latin1.conf:3: the file is not valid UTF-8");
}

#[test]
fn a_byte_order_mark_is_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("bom.conf"), "\u{feff}mem=64\r\nro\r\n").expect("write");
    let s = parse_args(["@bom.conf"], dir.path()).expect("parses");
    assert_eq!(s.mem_mb.expect("mem").value, 64);
    assert_eq!(s.kernel_args, ["ro"]);
}

#[test]
fn errors_inside_an_include_name_its_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "conf/guest.conf",
        "# guest\n\n\n\n\n\n\n\n\n\n\neth0=slirp,zz:11\n",
    );
    let e = parse_args(["@conf/guest.conf"], dir.path()).expect_err("bad MAC");
    assert!(
        e.to_string()
            .starts_with("conf/guest.conf:12: eth0=slirp,zz:11: bad MAC address \"zz:11\": "),
        "{e}"
    );
}
