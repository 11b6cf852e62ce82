//! A realistic old-style configuration (tests/data/colinux.conf), with
//! comments, quotes, a config include, a coMosix ini include and kernel
//! parameters, parsed in full.

use std::path::{Path, PathBuf};

use colinux_config::{
    read_config_file, Arch, Cocon, MacAddr, NetKind, NfsRoot, Parity, Parser, Place, PortRedirect,
    Protocol, Settings,
};

/// Parses like `colinux-daemon @tests/data/colinux.conf` run from this
/// crate's directory. Paths stay relative, so the expected output does not
/// depend on where the checkout is; includes are read from the real files.
fn parse_data() -> Settings {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut parser = Parser::with_reader("", |path: &Path| read_config_file(&manifest.join(path)));
    parser.arg("@tests/data/colinux.conf").expect("parses");
    parser.finish().expect("finishes")
}

fn data(path: &str) -> PathBuf {
    Path::new("tests/data").join(path)
}

fn line(file: &str, line: usize) -> Place {
    Place::Line {
        file: data(file),
        line,
    }
}

#[test]
fn every_setting_of_the_sample_config() {
    let s = parse_data();

    let kernel = s.kernel.as_ref().expect("kernel");
    assert_eq!(kernel.value, data("vmlinux"));
    assert_eq!(kernel.origin.place, line("colinux.conf", 5));
    assert_eq!(s.initrd.as_ref().expect("initrd").value, data("initrd.gz"));
    // mem=384, then the ini's memory_size=768, then mem=512: the last wins.
    let mem = s.mem_mb.as_ref().expect("mem");
    assert_eq!(
        (mem.value, &mem.origin.place),
        (512, &line("colinux.conf", 27))
    );
    assert_eq!(s.smp(), 2);
    assert_eq!(s.arch(), Arch::I386);
    assert_eq!(s.accel, None);
    assert_eq!(s.qemu, None);
    assert_eq!(
        s.cocon.as_ref().expect("cocon").value,
        Cocon {
            cols: 120,
            rows: 40,
            scrollback: Some(2000)
        }
    );

    let disks: Vec<(u8, PathBuf, Place)> = s
        .cobd
        .iter()
        .map(|(i, d)| (*i, d.path.clone(), d.origin.place.clone()))
        .collect();
    assert_eq!(
        disks,
        [
            (0, data("images/root.img"), line("node.ini", 11)),
            (1, data("images/swap.img"), line("node.ini", 12)),
            (2, data("images/scratch.img"), line("colinux.conf", 14)),
            (5, data("images/Data Disk.img"), line("colinux.conf", 12)),
        ]
    );
    let aliases: Vec<(&str, u8)> = s
        .aliases
        .iter()
        .map(|(n, a)| (n.as_str(), a.cobd))
        .collect();
    assert_eq!(aliases, [("hda1", 0), ("hdb1", 2)]);

    let redirect = |protocol, host_port, guest_port, count| PortRedirect {
        protocol,
        host_port,
        guest_port,
        count,
    };
    assert_eq!(
        s.eth[&0].kind,
        NetKind::Slirp {
            redirects: vec![
                redirect(Protocol::Tcp, 2222, 22, 1),
                redirect(Protocol::Tcp, 8080, 80, 1),
                redirect(Protocol::Udp, 6000, 6000, 4),
            ]
        }
    );
    assert_eq!(s.eth[&0].mac, None);
    assert_eq!(s.eth[&0].origin.place, line("network.conf", 3));
    assert_eq!(
        s.eth[&1].kind,
        NetKind::Tuntap {
            name: Some("coLinux tap".into())
        }
    );
    assert_eq!(s.eth[&1].mac, Some(MacAddr([0x02, 0xff, 0, 0, 0, 1])));

    assert_eq!(s.cofs[&0].dir, data("shared/My Documents"));
    let serial = &s.ttys[&0];
    assert_eq!(serial.device, "/dev/ttyS0");
    assert_eq!(
        (
            serial.options.baud,
            serial.options.parity,
            serial.options.data_bits,
            serial.options.stop_bits
        ),
        (Some(115200), Some(Parity::None), Some(8), Some(1))
    );
    assert_eq!(s.exec[&0].program, data("tools/xming"));
    assert_eq!(
        s.exec[&0].argv(),
        [":0", "-clipboard", "-multiwindow", "-ac"]
    );

    let nfs = s.nfs_root.as_ref().expect("nfs root");
    assert_eq!(
        nfs.value,
        NfsRoot {
            server: "192.168.10.1".into(),
            path: "/srv/comosix".into(),
            options: Some("ro,nolock".into())
        }
    );
    assert_eq!(
        s.kernel_args,
        ["ro", "console=ttyS0", "init=\"/sbin/init splash\""]
    );
    assert_eq!(
        s.kernel_cmdline(&["panic=1"]).expect("fits"),
        "panic=1 root=/dev/nfs nfsroot=192.168.10.1:/srv/comosix,ro,nolock ip=dhcp \
         ro console=ttyS0 init=\"/sbin/init splash\""
    );
    assert_eq!(
        (s.cofs.len(), s.ttys.len(), s.exec.len(), s.eth.len()),
        (1, 1, 1, 2)
    );
}

#[test]
fn the_dry_run_description() {
    let expected = r#"kernel=tests/data/vmlinux                    # tests/data/colinux.conf:5
initrd=tests/data/initrd.gz                  # tests/data/colinux.conf:6
mem=512                                      # tests/data/colinux.conf:27
smp=2                                        # tests/data/colinux.conf:8
arch=i386                                    # tests/data/colinux.conf:9
accel=auto                                   # default
# qemu: searched in PATH
cocon=120x40x2000                            # tests/data/colinux.conf:21
cobd0=tests/data/images/root.img             # tests/data/node.ini:11
cobd1=tests/data/images/swap.img             # tests/data/node.ini:12
cobd2=tests/data/images/scratch.img          # tests/data/colinux.conf:14
cobd5="tests/data/images/Data Disk.img"      # tests/data/colinux.conf:12
hda1=:cobd0                                  # tests/data/colinux.conf:13
hdb1=:cobd2                                  # tests/data/colinux.conf:14
eth0=slirp,,tcp:2222:22/tcp:8080:80/udp:6000:6000:4  # tests/data/network.conf:3
eth1=tuntap,"coLinux tap",02:ff:00:00:00:01  # tests/data/network.conf:4
cofs0="tests/data/shared/My Documents"       # tests/data/colinux.conf:18
ttys0=/dev/ttyS0,"BAUD=115200 PARITY=n DATA=8 STOP=1"  # tests/data/colinux.conf:19
exec0=tests/data/tools/xming,":0 -clipboard -multiwindow -ac"  # tests/data/colinux.conf:20
root=/dev/nfs nfsroot=192.168.10.1:/srv/comosix,ro,nolock ip=dhcp  # NFS root from tests/data/node.ini:5
ro console=ttyS0 init="/sbin/init splash"    # kernel arguments
"#;
    let s = parse_data();
    let sep = |s: String| s.replace(std::path::MAIN_SEPARATOR, "/");
    assert_eq!(sep(s.describe(Some(1 << 20))), expected);
    assert_eq!(sep(s.to_string()), expected);
}

#[test]
fn the_description_resolves_a_default_memory_size() {
    let s = colinux_config::parse_str("kernel=vmlinux", Path::new("a.conf")).expect("parses");
    let described = s.describe(Some(16 * 1024));
    assert!(
        described.contains("mem=2048                  # default for 16384 MB of host RAM"),
        "{described}"
    );
    assert!(s.to_string().contains("# mem: default"));
}

#[test]
fn check_files_reports_every_missing_path_with_its_place() {
    // The sample names files that are not in tests/data.
    let s = parse_data();
    let errors = s.check_files().expect_err("the images are not there");
    assert_eq!(
        errors.to_string().replace(std::path::MAIN_SEPARATOR, "/"),
        r#"tests/data/colinux.conf:5: kernel=vmlinux: tests/data/vmlinux does not exist
tests/data/colinux.conf:6: initrd=initrd.gz: tests/data/initrd.gz does not exist
tests/data/node.ini:11: path_0 = images/root.img: tests/data/images/root.img does not exist
tests/data/node.ini:12: path_1 = "images/swap.img": tests/data/images/swap.img does not exist
tests/data/colinux.conf:14: hdb1=images/scratch.img: tests/data/images/scratch.img does not exist
tests/data/colinux.conf:12: cobd5="images/Data Disk.img": tests/data/images/Data Disk.img does not exist
tests/data/colinux.conf:18: cofs0="shared/My Documents": tests/data/shared/My Documents does not exist
tests/data/colinux.conf:20: exec0=tools/xming,":0 -clipboard -multiwindow -ac": tests/data/tools/xming does not exist"#
    );
}
