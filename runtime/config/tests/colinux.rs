//! The coLinux config language: every syntax form, every key, every error.
//! Inputs that need no files on disk go through `parse_str` and `Parser`.

use std::path::{Path, PathBuf};

use colinux_config::{
    check_kernel_cmdline, parse_args, parse_str, Accel, Arch, BridgeBackend, Cocon, ErrorKind,
    MacAddr, NetKind, Parity, Parser, Place, PortRedirect, Protocol, Settings, MAX_KERNEL_CMDLINE,
};

mod common;
use common::{error, parse, FILE};

/// Parses command-line arguments without a filesystem.
fn args(args: &[&str]) -> Result<Settings, String> {
    let mut parser = Parser::with_reader("/home/user", |path: &Path| {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no {}", path.display()),
        ))
    });
    for arg in args {
        parser.arg(arg).map_err(|e| e.to_string())?;
    }
    parser.finish().map_err(|e| e.to_string())
}

fn etc(path: &str) -> PathBuf {
    Path::new("/etc/colinux").join(path)
}

// ---- syntax ----------------------------------------------------------------

#[test]
fn tokens_are_separated_by_any_whitespace_and_lines() {
    let s = parse("kernel=vmlinux\tmem=64\r\n\n   root=/dev/cobd0\n ro");
    assert_eq!(s.kernel.expect("kernel").value, etc("vmlinux"));
    assert_eq!(s.mem_mb.expect("mem").value, 64);
    assert_eq!(s.kernel_args, ["root=/dev/cobd0", "ro"]);
}

#[test]
fn comments_run_to_the_end_of_the_line() {
    let s = parse("# a guest\nmem=64 # the memory\n#mem=128\nro # read-only root");
    assert_eq!(s.mem_mb.expect("mem").value, 64);
    assert_eq!(s.kernel_args, ["ro"]);
}

#[test]
fn quotes_protect_spaces_commas_and_hashes_anywhere_in_a_value() {
    let s = parse(concat!(
        "cobd0=\"C:\\My Disks\\root #1.img\"\n",
        "eth0=tuntap,\"my tap\",00:11:22:33:44:55\n",
        "ttys0=/dev/ttyS0,\"BAUD=115200 PARITY=n DATA=8 STOP=1\"\n",
        "exec0=xterm,\"-e top, then bash\"\n",
    ));
    assert_eq!(s.cobd[&0].path, etc("C:\\My Disks\\root #1.img"));
    assert_eq!(
        s.cobd[&0].origin.token,
        "cobd0=\"C:\\My Disks\\root #1.img\""
    );
    assert_eq!(
        s.eth[&0].kind,
        NetKind::Tuntap {
            name: Some("my tap".into())
        }
    );
    assert_eq!(s.ttys[&0].options.baud, Some(115200));
    assert_eq!(s.exec[&0].args.as_deref(), Some("-e top, then bash"));
}

#[test]
fn unknown_tokens_go_to_the_kernel_in_order_with_their_quotes() {
    let s = parse(
        r#"root=/dev/cobd0 kernel=vmlinux ro init="/bin/sh -x" console=ttyS0 ethtool=1 BOOT_IMAGE=x"#,
    );
    assert_eq!(
        s.kernel_args,
        [
            "root=/dev/cobd0",
            "ro",
            "init=\"/bin/sh -x\"",
            "console=ttyS0",
            "ethtool=1",
            "BOOT_IMAGE=x"
        ]
    );
}

#[test]
fn each_command_line_argument_is_one_token() {
    // The shell already removed the quotes and split the words.
    let s = args(&[
        "kernel=/boot/vmlinux",
        "eth0=tuntap,my tap,02:00:00:00:00:01",
        "init=/bin/sh -x",
        "",
        "ro",
    ])
    .expect("parses");
    assert_eq!(
        s.eth[&0].kind,
        NetKind::Tuntap {
            name: Some("my tap".into())
        }
    );
    // Linux would split `init=/bin/sh -x`, so it is quoted for the kernel.
    assert_eq!(s.kernel_args, ["init=\"/bin/sh -x\"", "ro"]);
}

#[test]
fn relative_paths_resolve_against_the_file_or_the_current_directory() {
    let s = parse("kernel=vmlinux initrd=../boot/initrd.gz cobd0=/dev/sdb1 cofs0=share");
    assert_eq!(s.kernel.expect("kernel").value, etc("vmlinux"));
    assert_eq!(s.initrd.expect("initrd").value, etc("../boot/initrd.gz"));
    assert_eq!(s.cobd[&0].path, Path::new("/dev/sdb1"));
    assert_eq!(s.cofs[&0].dir, etc("share"));

    let s = args(&["kernel=vmlinux", "cobd0=images/root.img"]).expect("parses");
    assert_eq!(
        s.kernel.expect("kernel").value,
        Path::new("/home/user/vmlinux")
    );
    assert_eq!(s.cobd[&0].path, Path::new("/home/user/images/root.img"));
}

#[test]
fn origins_name_the_file_line_and_token() {
    let s = parse("\n\nmem=64 cobd3=a.img");
    let disk = &s.cobd[&3];
    assert_eq!(
        disk.origin.place,
        Place::Line {
            file: FILE.into(),
            line: 3
        }
    );
    assert_eq!(disk.origin.token, "cobd3=a.img");
    assert_eq!(
        disk.origin.to_string(),
        "/etc/colinux/my.conf:3: cobd3=a.img"
    );

    let s = args(&["mem=64", "cobd3=a.img"]).expect("parses");
    assert_eq!(s.cobd[&3].origin.place, Place::Arg(2));
    assert_eq!(
        s.cobd[&3].origin.to_string(),
        "command line argument 2: cobd3=a.img"
    );
}

#[test]
fn an_unterminated_quote_is_an_error() {
    assert_eq!(
        error("mem=64\neth0=tuntap,\"my tap\nro"),
        "/etc/colinux/my.conf:2: eth0=tuntap,\"my tap: unterminated quote (a `\"` must be closed on the same line)"
    );
    assert_eq!(
        args(&["ro", "eth0=tuntap,\"my tap"]).expect_err("open quote"),
        "command line argument 2: eth0=tuntap,\"my tap: unterminated quote (a `\"` must be closed on the same line)"
    );
}

#[test]
fn a_key_without_a_value_is_an_error() {
    assert_eq!(
        error("mem=64\nkernel"),
        "/etc/colinux/my.conf:2: kernel: `kernel` needs a value: kernel=vmlinux"
    );
    assert_eq!(
        error("cobd0="),
        "/etc/colinux/my.conf:1: cobd0=: `cobd0` needs a value: cobd0=root.img"
    );
    assert_eq!(
        error("eth1=\"\""),
        "/etc/colinux/my.conf:1: eth1=\"\": `eth1` needs a value: eth1=slirp"
    );
    assert_eq!(
        error("exec0"),
        "/etc/colinux/my.conf:1: exec0: `exec0` needs a value: exec0=program,\"args\""
    );
}

#[test]
fn messages_stay_on_one_line_whatever_the_shell_passed() {
    assert_eq!(
        args(&["ro", "cobd99=a\nb"]).expect_err("out of range"),
        "command line argument 2: cobd99=a\\nb: index out of range: cobd takes cobd0 to cobd31"
    );
    let e = args(&["@two\nlines.conf"]).expect_err("missing");
    let sep = std::path::MAIN_SEPARATOR;
    assert!(
        e.starts_with(&format!(
            "command line argument 1: @two\\nlines.conf: cannot read /home/user{sep}two\\nlines.conf: "
        )),
        "{e}"
    );
}

// ---- single-value keys: the last one wins ----------------------------------

#[test]
fn the_last_single_value_wins() {
    let s = parse(concat!(
        "kernel=a initrd=a mem=64 smp=1 arch=x86_64 accel=kvm qemu=a cocon=80x25\n",
        "kernel=b initrd=b mem=128 smp=2 arch=i386 accel=tcg qemu=b cocon=100x30\n",
    ));
    assert_eq!(s.kernel.expect("kernel").value, etc("b"));
    assert_eq!(s.initrd.expect("initrd").value, etc("b"));
    let mem = s.mem_mb.expect("mem");
    assert_eq!(mem.value, 128);
    assert_eq!(mem.origin.token, "mem=128");
    assert_eq!(s.smp.expect("smp").value, 2);
    assert_eq!(s.arch.expect("arch").value, Arch::I386);
    assert_eq!(s.accel.expect("accel").value, Accel::Tcg);
    assert_eq!(s.qemu.expect("qemu").value, Path::new("b"));
    assert_eq!(s.cocon.expect("cocon").value.cols, 100);
}

#[test]
fn the_command_line_overrides_a_file_when_it_comes_later() {
    let mut parser = Parser::new("/home/user");
    parser.arg("mem=512").expect("arg");
    parser
        .config_text("mem=64 kernel=vmlinux", Path::new("/etc/colinux/my.conf"))
        .expect("file");
    parser.arg("mem=256").expect("arg");
    let s = parser.finish().expect("finish");
    let mem = s.mem_mb.expect("mem");
    assert_eq!(mem.value, 256);
    assert_eq!(mem.origin.place, Place::Arg(2));
}

// ---- kernel, initrd, mem, smp, arch, accel, qemu, cocon --------------------

#[test]
fn defaults_without_any_keys() {
    let s = parse("");
    assert_eq!(s, Settings::default());
    assert_eq!(s.smp(), 1);
    assert_eq!(s.arch(), Arch::I386);
    assert_eq!(s.accel(), Accel::Auto);
    assert_eq!(s.mem_mb_or_default(8192), 2048);
    assert_eq!(s.mem_mb_or_default(1024), 256);
    assert_eq!(s.mem_mb_or_default(100), 64);
    assert_eq!(parse("arch=x86_64").mem_mb_or_default(64 * 1024), 8192);
    assert_eq!(parse("mem=300").mem_mb_or_default(64 * 1024), 300);
}

#[test]
fn memory_sizes() {
    assert_eq!(parse("mem=16").mem_mb.expect("mem").value, 16);
    assert_eq!(parse("mem=65536").mem_mb.expect("mem").value, 65536);
    assert_eq!(
        parse("arch=x86_64 mem=131072").mem_mb.expect("mem").value,
        131072
    );
    assert_eq!(
        error("mem=64MB"),
        "/etc/colinux/my.conf:1: mem=64MB: bad memory size \"64MB\": expected a size in MB from 16 to 4194304, like 512"
    );
    assert!(error("mem=8").contains("bad memory size \"8\""));
    assert!(error("mem=-1").contains("bad memory size \"-1\""));
    assert!(error("mem=99999999999").contains("bad memory size"));
    // arch is checked at the end, as it may come after mem.
    assert_eq!(
        error("mem=131072\nro"),
        "/etc/colinux/my.conf:1: mem=131072: bad memory size \"131072\": expected at most 65536 MB \
         for an i386 guest (64 GB with PAE); use arch=x86_64 for more"
    );
    assert!(parse_str("mem=131072 arch=x86_64", Path::new(FILE)).is_ok());
}

#[test]
fn smp_arch_accel_and_qemu() {
    let s = parse("smp=64 arch=x86_64 accel=whpx qemu=qemu-system-x86_64");
    assert_eq!(s.smp(), 64);
    assert_eq!(s.arch(), Arch::X86_64);
    assert_eq!(s.accel(), Accel::Whpx);
    // A bare program name is searched in PATH, so it stays as written.
    assert_eq!(s.qemu.expect("qemu").value, Path::new("qemu-system-x86_64"));
    assert_eq!(
        parse("qemu=bin/qemu-system-i386").qemu.expect("qemu").value,
        etc("bin/qemu-system-i386")
    );
    assert_eq!(parse("accel=auto").accel(), Accel::Auto);
    assert_eq!(parse("accel=kvm").accel(), Accel::Kvm);

    assert_eq!(
        error("smp=0"),
        "/etc/colinux/my.conf:1: smp=0: bad CPU count \"0\": expected a number from 1 to 64"
    );
    assert!(error("smp=65").contains("bad CPU count \"65\""));
    assert!(error("smp=two").contains("bad CPU count \"two\""));
    assert_eq!(
        error("arch=amd64"),
        "/etc/colinux/my.conf:1: arch=amd64: bad arch \"amd64\": expected i386 or x86_64"
    );
    assert_eq!(
        error("accel=hvf"),
        "/etc/colinux/my.conf:1: accel=hvf: bad accelerator \"hvf\": expected auto, kvm, whpx or tcg"
    );
}

#[test]
fn console_size() {
    assert_eq!(
        parse("cocon=120x40x2000").cocon.expect("cocon").value,
        Cocon {
            cols: 120,
            rows: 40,
            scrollback: Some(2000)
        }
    );
    assert_eq!(
        error("cocon=80"),
        "/etc/colinux/my.conf:1: cocon=80: bad console size \"80\": expected COLSxROWS[xSCROLLBACK], at least 16x2, at most 100000 lines of scrollback, like 80x25 or 120x40x1000"
    );
}

// ---- devices ---------------------------------------------------------------

#[test]
fn cobd_devices_zero_to_thirty_one() {
    let s = parse("cobd0=root.img cobd31=/dev/sdc cobd7=\"my disk.img\"");
    assert_eq!(s.cobd.keys().copied().collect::<Vec<_>>(), [0, 7, 31]);
    assert_eq!(s.cobd[&7].path, etc("my disk.img"));
    assert_eq!(
        error("cobd32=x.img"),
        "/etc/colinux/my.conf:1: cobd32=x.img: index out of range: cobd takes cobd0 to cobd31"
    );
    assert_eq!(
        error("cobd01=x.img"),
        "/etc/colinux/my.conf:1: cobd01=x.img: write the index without leading zeros (cobd1)"
    );
    assert_eq!(
        error("cobd=x.img"),
        "/etc/colinux/my.conf:1: cobd=x.img: `cobd` needs an index, cobd0 to cobd31"
    );
}

#[test]
fn every_index_range() {
    assert!(parse_str("cofs31=d ttys31=COM1 exec7=x eth15=slirp", Path::new(FILE)).is_ok());
    assert!(error("cofs32=d").contains("cofs32=d: index out of range: cofs takes cofs0 to cofs31"));
    assert!(error("ttys32=COM1").contains("index out of range: ttys takes ttys0 to ttys31"));
    assert!(error("exec8=x").contains("exec8=x: index out of range: exec takes exec0 to exec7"));
    assert!(
        error("eth16=slirp").contains("eth16=slirp: index out of range: eth takes eth0 to eth15")
    );
}

#[test]
fn a_device_index_defined_twice_names_both_places() {
    assert_eq!(
        error("cobd1=a.img\n\ncobd1=b.img"),
        "/etc/colinux/my.conf:3: cobd1=b.img: cobd1 is already defined at /etc/colinux/my.conf:1: cobd1=a.img"
    );
    for (first, second) in [
        ("eth0=slirp", "eth0=tuntap"),
        ("cofs2=a", "cofs2=b"),
        ("ttys0=COM1", "ttys0=COM2"),
        ("exec3=a", "exec3=b"),
        ("hda1=a.img", "hda1=:cobd0"),
    ] {
        let message = error(&format!("cobd0=root.img {first}\n{second}"));
        let name = first.split('=').next().unwrap_or_default();
        assert_eq!(
            message,
            format!("/etc/colinux/my.conf:2: {second}: {name} is already defined at /etc/colinux/my.conf:1: {first}")
        );
    }

    // A file, then the command line.
    let mut parser = Parser::new("/home/user");
    parser
        .config_text("kernel=vmlinux\ncobd1=a.img", Path::new("my.conf"))
        .expect("file");
    let e = parser.arg("cobd1=b.img").expect_err("duplicate");
    assert_eq!(
        e.to_string(),
        "command line argument 1: cobd1=b.img: cobd1 is already defined at my.conf:2: cobd1=a.img"
    );
    match *e.kind {
        ErrorKind::Duplicate { name, first } => {
            assert_eq!(name, "cobd1");
            assert_eq!(
                first.place,
                Place::Line {
                    file: "my.conf".into(),
                    line: 2
                }
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    // The daemon kept argument 2 (`--dry-run`) for itself.
    let mut parser = Parser::new("/home/user");
    parser.arg_at(1, "cobd1=a.img").expect("arg");
    parser.arg_at(3, "ro").expect("arg");
    assert_eq!(
        parser.arg("cobd1=b.img").expect_err("duplicate").to_string(),
        "command line argument 4: cobd1=b.img: cobd1 is already defined at command line argument 1: cobd1=a.img"
    );
    // Two command-line arguments.
    assert_eq!(
        args(&["cobd1=a.img", "ro", "cobd1=b.img"]).expect_err("duplicate"),
        "command line argument 3: cobd1=b.img: cobd1 is already defined at command line argument 1: cobd1=a.img"
    );
}

#[test]
fn aliases_take_the_next_free_cobd_or_name_one() {
    // hda1 comes first but allocates after every explicit cobd is known.
    let s = parse("hda1=home.img cobd0=root.img cobd1=swap.img sda1=:cobd0 hdb=data.img");
    assert_eq!(s.cobd[&0].path, etc("root.img"));
    assert_eq!(s.cobd[&2].path, etc("home.img"));
    assert_eq!(s.cobd[&2].origin.token, "hda1=home.img");
    assert_eq!(s.cobd[&3].path, etc("data.img"));
    let aliases: Vec<(&str, u8)> = s
        .aliases
        .iter()
        .map(|(n, a)| (n.as_str(), a.cobd))
        .collect();
    assert_eq!(aliases, [("hda1", 2), ("hdb", 3), ("sda1", 0)]);
    assert_eq!(s.aliases["sda1"].origin.token, "sda1=:cobd0");

    // `:cobd0` may name the disk that a later alias brings.
    let s = parse("sda1=:cobd0 hda1=root.img");
    assert_eq!(s.aliases["sda1"].cobd, 0);
    assert_eq!(s.cobd[&0].origin.token, "hda1=root.img");
}

#[test]
fn alias_errors() {
    assert_eq!(
        error("cobd1=a.img\nhda1=:cobd0"),
        "/etc/colinux/my.conf:2: hda1=:cobd0: hda1 points at cobd0, which is not defined"
    );
    assert_eq!(
        error("hda1=:cobd32"),
        "/etc/colinux/my.conf:1: hda1=:cobd32: bad alias target \":cobd32\": expected :cobd0 to :cobd31"
    );
    assert!(error("hda1=:hdb1").contains("bad alias target \":hdb1\""));
    assert!(error("hda0=x").contains("hda0=x: index out of range: hda takes hda1 to hda63"));
    assert!(error("sdc16=x").contains("index out of range: sdc takes sdc1 to sdc15"));
    assert!(parse_str("hdz63=x sdz15=y", Path::new(FILE)).is_ok());

    let all: String = (0..32).map(|i| format!("cobd{i}=d{i}.img ")).collect();
    assert_eq!(
        error(&format!("{all}\nhdc1=more.img")),
        "/etc/colinux/my.conf:2: hdc1=more.img: no free cobd index left for hdc1 (cobd0 to cobd31 are all in use)"
    );
}

#[test]
fn network_forms() {
    let s = parse(concat!(
        "eth0=slirp\n",
        "eth1=slirp,02:00:00:00:00:01\n",
        "eth2=slirp,,tcp:2222:22/udp:5000:5000:10/TCP:8080:80\n",
        "eth3=tuntap\n",
        "eth4=tuntap,\"TAP-Win32 Adapter\"\n",
        "eth5=tuntap,,02-00-00-00-00-05\n",
        "eth6=pcap-bridge,\"Local Area Connection\",02:00:00:00:00:06,nopromisc\n",
        "eth7=ndis-bridge,eth0\n",
    ));
    assert_eq!(s.eth[&0].kind, NetKind::Slirp { redirects: vec![] });
    assert_eq!(s.eth[&0].mac, None);
    assert_eq!(s.eth[&1].mac, Some(MacAddr([2, 0, 0, 0, 0, 1])));
    let tcp = |host_port, guest_port, count| PortRedirect {
        protocol: Protocol::Tcp,
        host_port,
        guest_port,
        count,
    };
    assert_eq!(
        s.eth[&2].kind,
        NetKind::Slirp {
            redirects: vec![
                tcp(2222, 22, 1),
                PortRedirect {
                    protocol: Protocol::Udp,
                    host_port: 5000,
                    guest_port: 5000,
                    count: 10
                },
                tcp(8080, 80, 1),
            ]
        }
    );
    assert_eq!(s.eth[&3].kind, NetKind::Tuntap { name: None });
    assert_eq!(
        s.eth[&4].kind,
        NetKind::Tuntap {
            name: Some("TAP-Win32 Adapter".into())
        }
    );
    assert_eq!(s.eth[&5].mac, Some(MacAddr([2, 0, 0, 0, 0, 5])));
    assert_eq!(
        s.eth[&6].kind,
        NetKind::Bridge {
            backend: BridgeBackend::Pcap,
            name: Some("Local Area Connection".into()),
            promisc: false
        }
    );
    assert_eq!(
        s.eth[&7].kind,
        NetKind::Bridge {
            backend: BridgeBackend::Ndis,
            name: Some("eth0".into()),
            promisc: true
        }
    );
}

#[test]
fn network_errors() {
    assert_eq!(
        error("mem=64\neth0=slirp,zz:11"),
        "/etc/colinux/my.conf:2: eth0=slirp,zz:11: bad MAC address \"zz:11\": expected six hex pairs \
         separated by `:` or `-`, like 02:00:00:12:34:56"
    );
    assert_eq!(
        error("eth0=tuntap,tap0,01:11:22:33:44:55"),
        "/etc/colinux/my.conf:1: eth0=tuntap,tap0,01:11:22:33:44:55: bad MAC address \"01:11:22:33:44:55\": \
         the multicast bit is set (the first octet, 01, is odd); a network card needs a unicast address, \
         e.g. 00:11:22:33:44:55"
    );
    assert!(
        error("eth0=slirp,,tcp:22").contains("eth0=slirp,,tcp:22: bad port redirect \"tcp:22\"")
    );
    assert!(error("eth0=bridge").contains("bad network mode \"bridge\""));
    assert!(error("eth0=slirp,,tcp:1:2,x").contains("too many fields: the form is slirp"));
    assert_eq!(
        error("eth0=slirp,,tcp:8000:80:10\neth1=slirp,,udp:8005:53/tcp:8005:22"),
        "/etc/colinux/my.conf:2: eth1=slirp,,udp:8005:53/tcp:8005:22: host tcp port 8005 is already \
         forwarded by /etc/colinux/my.conf:1: eth0=slirp,,tcp:8000:80:10"
    );
}

#[test]
fn shares_serial_ports_and_helpers() {
    let s = parse(concat!(
        "cofs0=/srv/share cofs1=\"My Documents\"\n",
        "ttys0=/dev/ttyS0,\"BAUD=115200 PARITY=n DATA=8 STOP=1\" ttys1=COM2\n",
        "exec0=/usr/bin/xterm,\"-geometry 80x25 -e top\" exec1=bin/helper exec2=Xming\n",
    ));
    assert_eq!(s.cofs[&0].dir, Path::new("/srv/share"));
    assert_eq!(s.cofs[&1].dir, etc("My Documents"));
    let serial = &s.ttys[&0];
    assert_eq!(serial.device, "/dev/ttyS0");
    assert_eq!(serial.options.parity, Some(Parity::None));
    assert_eq!(serial.options.data_bits, Some(8));
    assert_eq!(serial.options.stop_bits, Some(1));
    assert_eq!(s.ttys[&1].device, "COM2");
    assert_eq!(s.ttys[&1].options, Default::default());
    assert_eq!(s.exec[&0].program, Path::new("/usr/bin/xterm"));
    assert_eq!(s.exec[&0].argv(), ["-geometry", "80x25", "-e", "top"]);
    assert_eq!(s.exec[&1].program, etc("bin/helper"));
    assert_eq!(s.exec[&2].program, Path::new("Xming"));
    assert_eq!(s.exec[&2].args, None);
}

#[test]
fn serial_and_exec_errors() {
    assert_eq!(
        error("ttys0=COM1,\"BAUD=9600 PARITY=x\""),
        "/etc/colinux/my.conf:1: ttys0=COM1,\"BAUD=9600 PARITY=x\": bad serial option \"PARITY=x\": \
         expected PARITY to be n, e, o, m or s"
    );
    assert!(error("ttys0=COM1,\"DATA=9\"").contains("DATA to be 5, 6, 7 or 8"));
    assert!(error("ttys0=COM1,\"STOP=3\"").contains("STOP to be 1 or 2"));
    assert!(error("ttys0=COM1,\"BAUD=x\"").contains("BAUD to be a speed"));
    assert!(
        error("ttys0=COM1,\"SPEED=9600\"").contains("expected BAUD, PARITY, DATA, STOP, dtr, rts")
    );
    assert!(error("ttys0=COM1,a,b").contains("too many fields: the form is ttysN=device"));
    assert!(error("ttys0=,\"BAUD=9600\"").contains("bad serial device \"\""));
    assert_eq!(
        error("exec0=xterm,-e,top"),
        "/etc/colinux/my.conf:1: exec0=xterm,-e,top: too many fields: the form is execN=program[,\"args\"] \
         (quote arguments that contain commas)"
    );
    assert!(error("exec0=,\"-x\"").contains("bad program \"\""));
}

// ---- the kernel command line -----------------------------------------------

#[test]
fn an_over_long_kernel_command_line_is_an_error_at_the_token_that_crosses() {
    let word = "x".repeat(99);
    // 20 words of 99 bytes plus 19 spaces: 1999 bytes.
    let mut text: String = (0..20).map(|_| format!("{word}\n")).collect();
    let s = parse(&text);
    assert_eq!(s.kernel_args.join(" ").len(), 1999);
    text.push_str("mem=64\nroot=/dev/cobd0\ninit=/sbin/init-with-a-long-name\n");
    assert_eq!(
        error(&text),
        "/etc/colinux/my.conf:23: init=/sbin/init-with-a-long-name: the kernel command line would be \
         2048 bytes; the guest accepts at most 2047 (COMMAND_LINE_SIZE 2048 includes the NUL)"
    );
}

#[test]
fn the_final_command_line_is_checked_with_what_the_daemon_adds() {
    let exact = "y".repeat(MAX_KERNEL_CMDLINE);
    assert!(check_kernel_cmdline(&exact).is_ok());
    let over = format!("{exact}y");
    assert_eq!(check_kernel_cmdline(&over).expect_err("too long").len, 2048);

    let s = parse("root=/dev/cobd0 ro");
    assert_eq!(
        s.kernel_cmdline(&["console=ttyS0", "panic=1"])
            .expect("fits"),
        "console=ttyS0 panic=1 root=/dev/cobd0 ro"
    );
    let long = "z".repeat(2030);
    assert_eq!(
        s.kernel_cmdline(&[&long]).expect_err("too long").len,
        2030 + " root=/dev/cobd0 ro".len()
    );
}

// ---- parse_args on real files ----------------------------------------------

#[test]
fn parse_args_reads_includes_relative_to_the_current_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("my.conf"), "kernel=vmlinux\ncobd1=a.img\n").expect("write");
    let s = parse_args(["@my.conf", "mem=128"], dir.path()).expect("parses");
    assert_eq!(s.kernel.expect("kernel").value, dir.path().join("vmlinux"));
    assert_eq!(s.mem_mb.expect("mem").value, 128);

    let e = parse_args(["@my.conf", "mem=128", "cobd1=b.img"], dir.path()).expect_err("duplicate");
    assert_eq!(
        e.to_string(),
        "command line argument 3: cobd1=b.img: cobd1 is already defined at my.conf:2: cobd1=a.img"
    );
    let owned: Vec<String> = vec!["ro".into()];
    assert_eq!(
        parse_args(owned, dir.path()).expect("ok").kernel_args,
        ["ro"]
    );
}
