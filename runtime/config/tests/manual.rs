//! The keys of the coLinux 0.7 daemon manual that go beyond the basics:
//! `scsiN=`, `color=`, `cursor=`, the full `mode` syntax of `ttysN=`,
//! the keys kept only to be noted (`setcobd=`, `pciN=`, `videoN=`), and
//! the botched keys that are errors rather than kernel parameters. Each
//! error is checked whole: file, line, token and message.

use std::fs;
use std::path::Path;

use colinux_config::{parse_args, parse_str, Color, ModemLine, ScsiKind, Settings};

mod common;
use common::{error, parse, FILE};

#[test]
fn scsi_disks_and_cdroms() {
    let s =
        parse("scsi0=disk,file.img\nscsi1=cdrom,\"my disc.iso\"\nscsi5=disk,new.img,512,grow\n");
    let disk = &s.scsi[&0];
    assert_eq!(
        (disk.kind, disk.path.as_path(), disk.size_mb, disk.grow),
        (
            ScsiKind::Disk,
            Path::new("/etc/colinux/file.img"),
            None,
            false
        )
    );
    assert_eq!(s.scsi[&1].kind, ScsiKind::Cdrom);
    assert_eq!(s.scsi[&1].path, Path::new("/etc/colinux/my disc.iso"));
    assert_eq!((s.scsi[&5].size_mb, s.scsi[&5].grow), (Some(512), true));
    assert_eq!(s.scsi[&5].origin.place.to_string(), format!("{FILE}:3"));
    assert!(s.kernel_args.is_empty(), "nothing reaches the kernel");
}

#[test]
fn scsi_errors() {
    assert_eq!(
        error("scsi0=a.img\nscsi0=disk,a.img\nscsi0=disk,b.img"),
        "/etc/colinux/my.conf:1: scsi0=a.img: bad SCSI device type \"a.img\": expected disk or cdrom"
    );
    assert_eq!(
        error("scsi0=disk,a.img\nscsi0=disk,b.img"),
        "/etc/colinux/my.conf:2: scsi0=disk,b.img: scsi0 is already defined at \
         /etc/colinux/my.conf:1: scsi0=disk,a.img"
    );
    assert_eq!(
        error("scsi32=disk,a.img"),
        "/etc/colinux/my.conf:1: scsi32=disk,a.img: index out of range: scsi takes scsi0 to scsi31"
    );
    assert_eq!(
        error("scsi1=cdrom,c.iso,650"),
        "/etc/colinux/my.conf:1: scsi1=cdrom,c.iso,650: bad CD-ROM size \"650\": \
         expected none: a CD-ROM image is read, never created"
    );
    assert!(error("scsi2=changer,/dev/sch0,4").contains("no portable equivalent"));
    assert!(error("scsi0=").contains("`scsi0` needs a value: scsi0=disk,data.img"));
}

#[test]
fn console_appearance_keys_last_one_wins() {
    let s = parse("color=yellow,black cursor=0\ncolor=White,Blue cursor=100 cocon=100,30\n");
    let color = s.color.expect("color");
    assert_eq!(
        color.value,
        Color {
            foreground: "white".into(),
            background: "blue".into()
        }
    );
    assert_eq!(color.origin.place.to_string(), format!("{FILE}:2"));
    assert_eq!(s.cursor.expect("cursor").value, 100);
    assert_eq!(s.cocon.expect("cocon").value.rows, 30);
    assert_eq!(
        error("cursor=half"),
        "/etc/colinux/my.conf:1: cursor=half: bad cursor size \"half\": expected a percentage from 0 to 100"
    );
    assert!(error("color=black,black").contains("two different colours"));
}

#[test]
fn keys_kept_for_old_configs_are_recorded_with_why() {
    let s = parse("setcobd=sync\npci2=0,scsi,0 video0=4\n");
    let ignored: Vec<(String, &str)> = s
        .ignored
        .iter()
        .map(|i| (i.origin.to_string(), i.reason))
        .collect();
    assert_eq!(ignored.len(), 3);
    assert_eq!(ignored[0].0, format!("{FILE}:1: setcobd=sync"));
    assert!(ignored[1].1.contains("PCI bus"), "{ignored:?}");
    assert!(ignored[2].1.contains("framebuffer"), "{ignored:?}");
    assert!(error("setcobd=maybe").contains("bad setcobd mode \"maybe\": expected async or sync"));
    // Linux's own `pci=` and `video=` are still kernel parameters.
    assert_eq!(
        parse("pci=nomsi video=1024x768").kernel_args,
        ["pci=nomsi", "video=1024x768"]
    );
}

#[test]
fn serial_ports_in_full_mode_syntax() {
    let s = parse("ttys0=COM1,\"BAUD=115200 PARITY=n DATA=8 STOP=1 dtr=on rts=on\"");
    let options = s.ttys[&0].options;
    assert_eq!((options.baud, options.stop_bits), (Some(115200), Some(1)));
    assert_eq!(
        (options.dtr, options.rts),
        (Some(ModemLine::On), Some(ModemLine::On))
    );
    assert_eq!(
        error("ttys0=COM0"),
        "/etc/colinux/my.conf:1: ttys0=COM0: bad serial device \"COM0\": expected a device \
         such as /dev/ttyS0 or COM1 (COM ports count from 1, without leading zeros)"
    );
    assert!(error("ttys1=com01").contains("bad serial device \"com01\""));
    assert!(error("ttys0=COM1,\"odsr=maybe\"").contains("odsr to be on or off"));
}

#[test]
fn botched_keys_are_errors_with_their_place() {
    assert_eq!(
        error("kernel=vmlinux\ncobd12x=disk.img\n"),
        "/etc/colinux/my.conf:2: cobd12x=disk.img: `cobd12x` looks like a coLinux key \
         but is not one: write cobd0 to cobd31"
    );
    assert_eq!(
        error("ethX=slirp"),
        "/etc/colinux/my.conf:1: ethX=slirp: `ethX` looks like a coLinux key but is not one: \
         write eth0 to eth15"
    );
    assert_eq!(
        error("Cobd0=root.img"),
        "/etc/colinux/my.conf:1: Cobd0=root.img: keys are lower case: write `cobd0`"
    );
    let message = parse_args(["kernel=k", "ttys-1=COM1"], Path::new("/home/u"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        "command line argument 2: ttys-1=COM1: `ttys-1` looks like a coLinux key but is not one: \
         write ttys0 to ttys31"
    );
}

#[test]
fn a_scsi_size_lets_the_image_be_missing_but_not_its_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    fs::write(root.join("old.img"), "x").expect("write");
    let ok = parse_args(
        [
            "scsi0=disk,old.img",
            "scsi1=disk,new.img,64",
            "scsi2=disk,old.img,64",
        ],
        root,
    )
    .expect("parses");
    ok.check_files().expect("new.img will be created");

    let bad = parse_args(
        ["scsi0=disk,absent.img", "scsi1=disk,no-dir/new.img,64"],
        root,
    )
    .expect("parses");
    let message = bad.check_files().unwrap_err().to_string();
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(lines.len(), 2, "{message}");
    assert!(
        lines[0].starts_with("command line argument 1: scsi0=disk,absent.img: ")
            && lines[0].ends_with("absent.img does not exist"),
        "{message}"
    );
    assert!(
        lines[1].starts_with("command line argument 2: scsi1=disk,no-dir/new.img,64: ")
            && lines[1].ends_with("no-dir does not exist"),
        "{message}"
    );
}

#[test]
fn the_resolved_settings_read_back_the_same() {
    let s = parse(
        "scsi0=disk,\"a b.img\",64,grow scsi3=cdrom,c.iso color=brown,cyan cursor=33 \
         cocon=80,25,900 ttys0=COM2,\"baud=96 parity=m xon=on octs=off idsr=on to=off rts=tg\" \
         setcobd=async pci1=0,net,0",
    );
    let again = parse_str(&s.describe(None), Path::new(FILE)).expect("reads back");
    assert_eq!(again.scsi.len(), 2);
    for (index, scsi) in &s.scsi {
        let back = &again.scsi[index];
        assert_eq!(
            (back.kind, &back.path, back.size_mb, back.grow),
            (scsi.kind, &scsi.path, scsi.size_mb, scsi.grow)
        );
    }
    let value = |s: &Settings| {
        let color = s.color.as_ref().map(|c| c.value.clone());
        let cocon = s.cocon.as_ref().map(|c| c.value);
        (color, s.cursor.as_ref().map(|c| c.value), cocon)
    };
    assert_eq!(value(&again), value(&s));
    assert_eq!(value(&again).1, Some(33));
    assert_eq!(again.ttys[&0].device, "COM2");
    assert_eq!(again.ttys[&0].options, s.ttys[&0].options);
    let reasons = |s: &Settings| s.ignored.iter().map(|i| i.reason).collect::<Vec<_>>();
    assert_eq!(reasons(&again), reasons(&s));
}
