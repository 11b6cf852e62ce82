//! The examples of the coLinux 0.7 daemon manual (`colinux-daemon.txt`),
//! written as config files in its style, through `colinux-daemon --dry-run`:
//! each key is mapped onto the engine command line, noted (`-v 1` shows the
//! notes on stderr), or refused with a one-line reason. No guest boots.
//!
//! A host without QEMU (Windows under Wine) still prints the whole dry run
//! and exits 3, so both 0 and 3 count as "accepted" here.

use std::path::Path;
use std::process::Command;

const DAEMON: &str = env!("CARGO_BIN_EXE_colinux-daemon");

/// Exit code of a configuration error (`colinux-daemon --help`).
const CONFIG_ERROR: i32 = 2;
/// The engine is not installed: the dry run is still printed.
const ENGINE_MISSING: i32 = 3;

struct DryRun {
    code: i32,
    stdout: String,
    stderr: String,
}

impl DryRun {
    fn accepted(&self) -> &Self {
        assert!(
            self.code == 0 || self.code == ENGINE_MISSING,
            "exit code {}\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    /// The engine's arguments, after the program name.
    fn argv(&self) -> Vec<&str> {
        let mut lines = self
            .stdout
            .lines()
            .skip_while(|line| !line.starts_with("# engine command line"));
        lines.nth(1).expect("the engine program");
        lines.collect()
    }

    /// Every value that follows `flag` in the engine's arguments.
    fn values(&self, flag: &str) -> Vec<&str> {
        self.argv()
            .windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1])
            .collect()
    }

    fn append(&self) -> &str {
        self.values("-append")[0]
    }

    /// A refused configuration: exit code 2 and one error line (besides
    /// warnings such as the host's accelerator) naming `needle`.
    fn refused(&self, needle: &str) {
        assert_eq!(self.code, CONFIG_ERROR, "{}{}", self.stdout, self.stderr);
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|line| !line.starts_with("colinux-daemon: warn: "))
            .collect();
        assert_eq!(errors.len(), 1, "one line: {}", self.stderr);
        assert!(
            errors[0].contains(needle),
            "{needle:?} not in: {}",
            errors[0]
        );
    }
}

/// Writes `config` to `manual.conf` in `dir`, creates the `files` it
/// names there (empty files, or folders for names ending in `/`), and
/// dry-runs it with `-v LEVEL`.
fn dry_run_at(dir: &Path, level: &str, files: &[&str], config: &str) -> DryRun {
    for name in files {
        match name.strip_suffix('/') {
            Some(folder) => std::fs::create_dir_all(dir.join(folder)).unwrap(),
            None => std::fs::write(dir.join(name), b"").unwrap(),
        }
    }
    let conf = dir.join("manual.conf");
    std::fs::write(&conf, config).unwrap();
    let out = Command::new(DAEMON)
        .current_dir(dir)
        .args(["--dry-run", "-v", level])
        .arg(format!("@{}", conf.display()))
        .output()
        .unwrap();
    DryRun {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn dry_run(files: &[&str], config: &str) -> DryRun {
    let dir = tempfile::tempdir().unwrap();
    dry_run_at(dir.path(), "1", files, config)
}

/// The manual's example.conf, every commented-out line switched on.
#[test]
fn the_example_config() {
    let run = dry_run(
        &["vmlinux", "root_fs", "swap_device", "initrd.gz"],
        "# the default kernel\n\
         kernel=vmlinux\n\
         cobd0=root_fs\n\
         cobd1=swap_device\n\
         root=/dev/cobd0\n\
         initrd=initrd.gz\n\
         mem=64\n\
         eth0=slirp\n\
         eth1=tuntap\n\
         ttys0=COM1,\"BAUD=115200 PARITY=n DATA=8 STOP=1 dtr=on rts=on\"\n\
         exec0=Xming.exe,\":0 -clipboard -multiwindow -ac\"\n",
    );
    run.accepted();
    assert_eq!(run.values("-m"), ["64"]);
    assert_eq!(run.append(), "console=ttyS0 root=/dev/cobd0");
    let drives = run.values("-drive");
    assert!(drives[0].contains("id=cobd0,") && drives[0].contains("root_fs"));
    assert!(drives[1].contains("id=cobd1,") && drives[1].contains("swap_device"));
    let netdevs = run.values("-netdev");
    assert_eq!(netdevs[0], "user,id=eth0");
    assert!(netdevs[1].starts_with("tap,id=eth1"), "{netdevs:?}");
    let serial = if cfg!(windows) { "COM1" } else { "/dev/ttyS0" };
    assert!(
        run.values("-chardev")
            .contains(&format!("serial,id=ttys0,path={serial}").as_str()),
        "{:?}",
        run.argv()
    );
    assert!(run
        .values("-device")
        .contains(&"isa-serial,chardev=ttys0,index=1"));
    // The mode options are noted with what to do instead.
    let note = if cfg!(windows) {
        "mode COM1: BAUD=115200 PARITY=n DATA=8 STOP=1 dtr=on rts=on"
    } else {
        "stty -F /dev/ttyS1 115200 cs8 -parenb -cstopb; no equivalent: dtr/rts"
    };
    assert!(run.stderr.contains(note), "{}", run.stderr);
    assert!(
        run.stdout
            .contains("exec0=Xming.exe,\":0 -clipboard -multiwindow -ac\""),
        "{}",
        run.stdout
    );
}

#[test]
fn console_size_cursor_and_colour_are_noted_at_v1() {
    let config = "kernel=vmlinux cocon=120x40\ncocon=120,40,500\ncursor=0\ncursor=100\n\
                  color=yellow,black\n";
    let run = dry_run(&["vmlinux"], config);
    run.accepted();
    assert!(run.stdout.contains("cocon=120x40x500"), "{}", run.stdout);
    for note in [
        "manual.conf:2: cocon=120,40,500: the console is a serial line",
        "manual.conf:4: cursor=100: no meaning on a serial console",
        "manual.conf:5: color=yellow,black: no meaning on a serial console",
    ] {
        assert!(
            run.stderr.contains(note),
            "{note:?} not in:\n{}",
            run.stderr
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let quiet = dry_run_at(dir.path(), "0", &["vmlinux"], config);
    quiet.accepted();
    assert!(!quiet.stderr.contains("serial console"), "{}", quiet.stderr);
}

#[test]
fn cobd_and_alias_examples() {
    let run = dry_run(
        &["vmlinux", "rootfs.img", "swapfs.img", "disc.img"],
        "kernel=vmlinux\ncobd0=rootfs.img\ncobd1=swapfs.img\nhdc=disc.img\nroot=/dev/cobd0\n",
    );
    run.accepted();
    let drives = run.values("-drive");
    assert_eq!(drives.len(), 3, "{drives:?}");
    assert!(drives[2].contains("id=cobd2,") && drives[2].contains("disc.img"));
    assert!(run.stdout.contains("hdc=:cobd2"), "{}", run.stdout);

    let run = dry_run(
        &["vmlinux", "rootfs.img"],
        "kernel=vmlinux cobd0=rootfs.img hda1=:cobd0 root=/dev/cobd0",
    );
    run.accepted();
    assert_eq!(run.values("-drive").len(), 1);
    assert!(run.stdout.contains("hda1=:cobd0"), "{}", run.stdout);
}

#[test]
fn scsi_examples_become_virtio_scsi_disks_and_cdroms() {
    let dir = tempfile::tempdir().unwrap();
    let run = dry_run_at(
        dir.path(),
        "1",
        &["vmlinux", "file.img", "file.iso"],
        "kernel=vmlinux\nscsi0=disk,file.img\nscsi1=cdrom,file.iso\nscsi2=disk,new.img,512\n",
    );
    run.accepted();
    let scsi: Vec<&str> = run
        .values("-device")
        .into_iter()
        .filter(|d| d.contains("scsi"))
        .collect();
    assert_eq!(
        scsi,
        [
            "virtio-scsi-pci,id=scsi",
            "scsi-hd,bus=scsi.0,channel=0,scsi-id=0,lun=0,drive=scsi0",
            "scsi-cd,bus=scsi.0,channel=0,scsi-id=1,lun=0,drive=scsi1",
            "scsi-hd,bus=scsi.0,channel=0,scsi-id=2,lun=0,drive=scsi2",
        ]
    );
    assert!(run.values("-drive")[1].contains("media=cdrom,read-only=on"));
    assert!(
        !dir.path().join("new.img").exists(),
        "a dry run creates no image"
    );

    dry_run(&["vmlinux"], "kernel=vmlinux\nscsi0=tape,/dev/st0\n")
        .refused("manual.conf:2: scsi0=tape,/dev/st0: bad SCSI device type \"tape\"");
    dry_run(&["vmlinux"], "kernel=vmlinux scsi0=disk,absent.img")
        .refused("absent.img does not exist");
}

#[test]
fn network_examples() {
    let run = dry_run(
        &["vmlinux"],
        "kernel=vmlinux eth0=slirp,,tcp:2222:22/tcp:4000:80:3\n\
         eth1=slirp,02:00:00:00:00:01\n\
         eth2=tuntap,\"Local Area Network\"\n\
         eth3=tuntap,,02:00:00:00:00:02\n",
    );
    run.accepted();
    let netdevs = run.values("-netdev");
    assert_eq!(
        netdevs[0],
        "user,id=eth0,hostfwd=tcp::2222-:22,hostfwd=tcp::4000-:80,\
         hostfwd=tcp::4001-:81,hostfwd=tcp::4002-:82"
    );
    assert!(netdevs[2].starts_with("tap,id=eth2,ifname=Local Area Network"));
    let devices = run.values("-device");
    assert!(devices.contains(&"virtio-net-pci,netdev=eth1,mac=02:00:00:00:00:01"));
    assert!(devices.contains(&"virtio-net-pci,netdev=eth3,mac=02:00:00:00:00:02"));

    for bridge in [
        "eth0=pcap-bridge,\"Local Area Network\"",
        "eth0=ndis-bridge,\"Local Area Network\",02:00:00:00:00:04,nopromisc",
    ] {
        dry_run(&["vmlinux"], &format!("kernel=vmlinux\n{bridge}\n"))
            .refused("manual.conf:2: eth0=");
    }
}

#[test]
fn cofs_exec_and_kernel_parameters() {
    let config = "kernel=vmlinux cofs0=coLinux root=/dev/cobd0 init 5 setcobd=async\n";
    let run = dry_run(&["vmlinux", "coLinux/"], config);
    if cfg!(windows) {
        // QEMU for Windows has no 9p: refused before anything starts.
        run.refused("manual.conf:1: cofs0=coLinux: QEMU for Windows has no 9p");
        return;
    }
    run.accepted();
    assert!(run.values("-fsdev")[0].starts_with("local,id=cofs0,path="));
    assert_eq!(run.append(), "console=ttyS0 root=/dev/cobd0 init 5");
    assert!(
        run.stderr.contains("setcobd=async: ignored"),
        "{}",
        run.stderr
    );
}

#[test]
fn botched_keys_are_refused_not_passed_to_the_kernel() {
    for (line, needle) in [
        (
            "cobd12x=a.img",
            "manual.conf:2: cobd12x=a.img: `cobd12x` looks like a coLinux key",
        ),
        (
            "ethX=slirp",
            "manual.conf:2: ethX=slirp: `ethX` looks like a coLinux key",
        ),
        ("scsi=disk,a.img", "`scsi` needs an index"),
        ("TTYS0=COM1", "keys are lower case: write `ttys0`"),
        ("ttys0=COM0", "bad serial device \"COM0\""),
        ("cocon=10x25", "bad console size"),
        ("color=red,red", "bad colour"),
        ("cursor=101", "bad cursor size"),
    ] {
        dry_run(&["vmlinux"], &format!("kernel=vmlinux\n{line}\n")).refused(needle);
    }
}
