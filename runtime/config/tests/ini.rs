//! coMosix ini files, alone and included from the coLinux language.

use std::path::Path;

use colinux_config::{parse_args, parse_ini_str, ErrorKind, NfsRoot, Settings};

const FILE: &str = "/cluster/node.ini";

fn parse(text: &str) -> Settings {
    parse_ini_str(text, Path::new(FILE)).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
}

fn error(text: &str) -> String {
    let message = match parse_ini_str(text, Path::new(FILE)) {
        Ok(_) => panic!("{text:?} should fail"),
        Err(e) => e.to_string(),
    };
    assert!(!message.contains('\n'), "one line: {message}");
    message
}

#[test]
fn all_three_sections() {
    let s = parse(concat!(
        "; a coMosix node\r\n",
        "# written by the installer\r\n",
        "[coMosix]\r\n",
        "memory_size = 256\r\n",
        "\r\n",
        "[NFS]\r\n",
        "server=192.168.0.1\r\n",
        "path = /srv/comosix\r\n",
        "options = ro,nolock\r\n",
        "[COBD]\r\n",
        "path_0 = root.img\r\n",
        "path_1 = \"C:\\coMosix\\swap file.img\"\r\n",
    ));
    let mem = s.mem_mb.expect("memory_size");
    assert_eq!(mem.value, 256);
    assert_eq!(
        mem.origin.to_string(),
        "/cluster/node.ini:4: memory_size = 256"
    );
    let nfs = s.nfs_root.expect("nfs");
    assert_eq!(
        nfs.value,
        NfsRoot {
            server: "192.168.0.1".into(),
            path: "/srv/comosix".into(),
            options: Some("ro,nolock".into()),
        }
    );
    assert_eq!(nfs.origin.to_string(), "/cluster/node.ini:6: [NFS]");
    assert_eq!(
        nfs.value.kernel_args(None),
        [
            "root=/dev/nfs",
            "nfsroot=192.168.0.1:/srv/comosix,ro,nolock",
            "ip=dhcp"
        ]
    );
    assert_eq!(s.cobd[&0].path, Path::new("/cluster/root.img"));
    // A Windows path is absolute only on Windows.
    let swap = if cfg!(windows) {
        Path::new("C:\\coMosix\\swap file.img").to_path_buf()
    } else {
        Path::new("/cluster/C:\\coMosix\\swap file.img").to_path_buf()
    };
    assert_eq!(s.cobd[&1].path, swap);
    assert_eq!(
        s.cobd[&1].origin.to_string(),
        "/cluster/node.ini:12: path_1 = \"C:\\coMosix\\swap file.img\""
    );
}

#[test]
fn a_byte_order_mark_and_repeated_keys() {
    let s = parse(
        "\u{feff}[comosix]\nmemory_size=128\nmemory_size=512\n[nfs]\nserver=a\npath=/x\nserver=b",
    );
    assert_eq!(s.mem_mb.expect("mem").value, 512);
    let nfs = s.nfs_root.expect("nfs").value;
    assert_eq!(nfs.server, "b");
    assert_eq!(nfs.options, None);
}

#[test]
fn empty_values_are_unused_slots() {
    let s = parse("[NFS]\nserver=\npath=\noptions=\n[cobd]\npath_0=a.img\npath_1=\npath_2=\n");
    assert_eq!(s.nfs_root, None);
    assert_eq!(s.cobd.len(), 1);
}

#[test]
fn a_gap_in_the_cobd_paths_names_the_missing_one() {
    assert_eq!(
        error("[cobd]\npath_0=a.img\npath_1=b.img\npath_3=d.img\n"),
        "/cluster/node.ini:4: path_3=d.img: path_2 is missing, so path_3 would be dropped \
         (paths must count up from path_0 without gaps)"
    );
    assert!(error("[cobd]\npath_1=b.img").contains("path_0 is missing, so path_1 would be dropped"));
    // An empty path_1 is a gap too.
    assert!(error("[cobd]\npath_0=a\npath_1=\npath_2=c").contains("path_1 is missing, so path_2"));
}

#[test]
fn unknown_sections_and_keys() {
    assert_eq!(
        error("[comosix]\nmemory_size=64\n[network]\n"),
        "/cluster/node.ini:3: [network]: unknown section [network]; expected [comosix], [NFS], [cobd], [engine], [service], [cluster], [credentials] or [guest]"
    );
    assert_eq!(
        error("[comosix]\nmemory=64"),
        "/cluster/node.ini:2: memory=64: unknown key \"memory\" in [comosix]; expected memory_size"
    );
    assert!(error("[NFS]\nhost=a")
        .contains("unknown key \"host\" in [NFS]; expected server, path or options"));
    assert!(error("[cobd]\npath_10=a")
        .contains("unknown key \"path_10\" in [cobd]; expected path_0 to path_9"));
    assert!(error("[cobd]\npath_x=a").contains("unknown key \"path_x\""));
    assert!(error("[cobd]\npath_00=a").contains("unknown key \"path_00\""));
}

#[test]
fn syntax_errors() {
    assert_eq!(
        error("memory_size=64"),
        "/cluster/node.ini:1: memory_size=64: a key outside any section; put it under [comosix], [NFS], [cobd], [engine], [service], [cluster], [credentials] or [guest]"
    );
    assert_eq!(
        error("[comosix\nmemory_size=64"),
        "/cluster/node.ini:1: [comosix: expected `[section]`, `key = value` or a `;` comment"
    );
    assert!(error("[comosix]\nmemory_size 64").contains(":2: memory_size 64: expected `[section]`"));
}

#[test]
fn bad_values() {
    assert_eq!(
        error("[comosix]\nmemory_size = lots"),
        "/cluster/node.ini:2: memory_size = lots: bad memory_size \"lots\": expected a size in MB from 16 to 4194304, like 512"
    );
    assert_eq!(
        error("[NFS]\nserver=10.0.0.1\n"),
        "/cluster/node.ini:1: [NFS]: [NFS] needs `path` as well"
    );
    assert!(error("[NFS]\npath=/srv").contains("[NFS] needs `server` as well"));
    assert!(error("[NFS]\noptions=ro").contains("[NFS] needs `server` as well"));
    assert!(error("[NFS]\nserver=a\npath=srv")
        .contains("bad NFS path \"srv\": expected an absolute export path"));
    assert!(error("[NFS]\nserver=a b\npath=/srv").contains("bad NFS server \"a b\""));
    assert!(error("[NFS]\nserver=a\npath=/srv\noptions=ro, nolock")
        .contains("bad NFS options \"ro, nolock\""));
    assert_eq!(
        error("[cobd]\npath_0=a\npath_0=b"),
        "/cluster/node.ini:3: path_0=b: path_0 is already defined at /cluster/node.ini:2: path_0=a"
    );
}

#[test]
fn an_ini_include_meets_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("node.ini"),
        "[comosix]\nmemory_size=256\n[cobd]\npath_0=root.img\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("NODE2.INI"), "[comosix]\nmemory_size=512\n").expect("write");

    let s = parse_args(
        ["kernel=vmlinux", "@node.ini", "root=/dev/cobd0"],
        dir.path(),
    )
    .expect("parses");
    assert_eq!(s.mem_mb.expect("mem").value, 256);
    assert_eq!(s.cobd[&0].path, dir.path().join("root.img"));
    assert_eq!(s.kernel_args, ["root=/dev/cobd0"]);

    // mem is single-valued: the last one wins, whichever language wrote it.
    let s = parse_args(["@node.ini", "mem=64", "@NODE2.INI"], dir.path()).expect("parses");
    assert_eq!(s.mem_mb.expect("mem").value, 512);

    // path_0 and cobd0 are the same device.
    let e = parse_args(["@node.ini", "cobd0=other.img"], dir.path()).expect_err("duplicate");
    assert_eq!(
        e.to_string(),
        "command line argument 2: cobd0=other.img: cobd0 is already defined at node.ini:4: path_0=root.img"
    );
    let e = parse_args(["cobd0=other.img", "@node.ini"], dir.path()).expect_err("duplicate");
    assert_eq!(
        e.to_string(),
        "node.ini:4: path_0=root.img: cobd0 is already defined at command line argument 1: cobd0=other.img"
    );
    assert!(matches!(*e.kind, ErrorKind::Duplicate { .. }));
}

#[test]
fn the_nfs_root_counts_against_the_kernel_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("node.ini"),
        "[NFS]\nserver=10.0.0.1\npath=/srv/root\n",
    )
    .expect("write");
    let long = format!("x={}", "y".repeat(2000));
    let e = parse_args([long.as_str(), "@node.ini"], dir.path()).expect_err("too long");
    assert!(
        e.to_string()
            .starts_with("node.ini:1: [NFS]: the kernel command line would be 2051 bytes"),
        "{e}"
    );
    let s = parse_args(["@node.ini", "ro"], dir.path()).expect("fits");
    assert_eq!(
        s.kernel_cmdline(&["console=ttyS0"]).expect("fits"),
        "console=ttyS0 root=/dev/nfs nfsroot=10.0.0.1:/srv/root ip=dhcp ro"
    );
}

#[test]
fn engine_and_service_sections() {
    let s = parse(concat!(
        "[engine]\r\n",
        "qemu = \"C:\\Program Files\\qemu\\qemu-system-x86_64.exe\"\r\n",
        "[Service]\r\n",
        "Install = Yes\r\n",
        "name = node-1\r\n",
    ));
    let qemu = s.qemu.expect("qemu");
    // Not a path on this host's separators: kept as written, like qemu= does.
    assert!(qemu
        .value
        .to_string_lossy()
        .ends_with(r"C:\Program Files\qemu\qemu-system-x86_64.exe"));
    assert_eq!(qemu.origin.place.to_string(), "/cluster/node.ini:2");
    let service = s.service.expect("service");
    assert_eq!(service.value, "node-1");
    assert_eq!(
        service.origin.to_string(),
        "/cluster/node.ini:4: Install = Yes"
    );

    // A relative engine path resolves against the ini's directory; a bare
    // name is left for a PATH search.
    let s = parse("[engine]\nqemu = qemu/qemu-system-i386\n");
    assert_eq!(
        s.qemu.unwrap().value,
        Path::new("/cluster/qemu/qemu-system-i386")
    );
    let s = parse("[engine]\nqemu = qemu-system-i386\n");
    assert_eq!(s.qemu.unwrap().value, Path::new("qemu-system-i386"));
}

#[test]
fn service_defaults_and_last_value_wins() {
    assert_eq!(
        parse("[service]\ninstall = true\n").service.unwrap().value,
        "colinux"
    );
    assert!(
        parse("[service]\nname = x\n").service.is_none(),
        "name alone"
    );
    assert!(parse("[service]\ninstall = yes\ninstall = no\n")
        .service
        .is_none());
    let s = parse("[service]\nname = a\ninstall = 1\nname = b\n");
    assert_eq!(s.service.unwrap().value, "b");
    // The memory from [comosix] and the engine from the command line mix
    // as everywhere: the last qemu wins.
    let dir = Path::new("/cluster");
    let mut parser = colinux_config::Parser::with_reader(dir, |_: &Path| {
        Ok(b"[engine]\nqemu = /opt/qemu/qemu-system-i386\n".to_vec())
    });
    parser.arg("qemu=/usr/bin/qemu-system-x86_64").unwrap();
    parser.arg("@node.ini").unwrap();
    let s = parser.finish().unwrap();
    assert_eq!(
        s.qemu.unwrap().value,
        Path::new("/opt/qemu/qemu-system-i386")
    );
}

#[test]
fn engine_and_service_errors() {
    assert_eq!(
        error("[service]\ninstall = maybe\n"),
        "/cluster/node.ini:2: install = maybe: bad [service] install \"maybe\": expected yes or no"
    );
    assert!(error("[service]\nname = my guest\n").contains("bad [service] name \"my guest\""));
    assert!(error("[service]\nname = .hidden\n").contains("bad [service] name"));
    assert_eq!(
        error("[service]\nstart = auto\n"),
        "/cluster/node.ini:2: start = auto: unknown key \"start\" in [service]; expected install or name"
    );
    assert_eq!(
        error("[engine]\naccel = kvm\n"),
        "/cluster/node.ini:2: accel = kvm: unknown key \"accel\" in [engine]; expected qemu"
    );
    assert!(error("[engine]\nqemu =\n").contains("`qemu` needs a value"));
}

/// Found by the dist_ini fuzzer: a stray quote was kept in the path, and the
/// config `--from-ini` wrote from it did not read back.
#[test]
fn a_quote_inside_a_value_is_refused() {
    for value in ["\"C:\\coLinux\\root.img", "root\".img", "\"a\"b\""] {
        let e = error(&format!("[cobd]\npath_0 = {value}\n"));
        assert!(
            e.contains("node.ini:2") && e.contains("no `\"` inside"),
            "{e}"
        );
    }
}
