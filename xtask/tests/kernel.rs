//! The guest kernel, built by `cargo xtask kernel` (cached between runs
//! where the machine keeps target/cache and ccache) and booted under QEMU
//! TCG. The checks run inside the guest (guest-init) and come back as
//! `SMOKE …` lines on the serial console.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use harness::{qemu_direct_boot, workspace_root, Guest};

fn xtask(args: &[&str]) {
    let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "cargo xtask {} failed", args.join(" "));
}

/// Builds (or reuses) the i386 kernel and the smoke-test initramfs, once
/// for all the tests of this binary.
fn kernel_and_initramfs() -> (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            xtask(&["kernel", "--arch", "i386"]);
            xtask(&["initramfs", "--arch", "i386"]);
            let target = workspace_root().join("target");
            (
                target.join("kernel/i386/bzImage"),
                target.join("initramfs/i386/initramfs.cpio"),
            )
        })
        .clone()
}

fn sh(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An ext4 image holding `files` (path, content), made with mke2fs -d.
fn ext4(dir: &Path, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let content = dir.join(format!("{name}.d"));
    for (path, data) in files {
        let p = content.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        if *path == "init" {
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
    }
    for d in ["dev", "proc", "sys", "mnt"] {
        std::fs::create_dir_all(content.join(d)).unwrap();
    }
    let image = dir.join(name);
    std::fs::File::create(&image)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    sh(
        "mke2fs",
        &[
            "-q",
            "-F",
            "-t",
            "ext4",
            "-d",
            content.to_str().unwrap(),
            image.to_str().unwrap(),
        ],
    );
    image
}

fn drive(args: &mut Vec<String>, image: &Path) {
    args.extend([
        "-drive".into(),
        format!("file={},if=virtio,format=raw", image.display()),
    ]);
}

/// Boots, waits for the result line, and checks the guest powered off.
fn boot_and_check(name: &str, program: &str, args: &[String], expected: &[&str]) {
    let mut guest = Guest::start(name, program, args).unwrap();
    let result = guest
        .wait_for("SMOKE RESULT:", Duration::from_secs(240))
        .unwrap_or_else(|e| panic!("{e}"));
    let transcript = guest.transcript();
    let failures: Vec<&String> = transcript
        .iter()
        .filter(|l| l.starts_with("SMOKE ") && l.contains(": FAIL"))
        .collect();
    assert!(
        result.ends_with("PASS"),
        "{name}: {failures:?}; console log {}",
        guest.log_path().display()
    );
    for check in expected {
        let prefix = format!("SMOKE {check}: ok");
        assert!(
            transcript.iter().any(|l| l.starts_with(&prefix)),
            "{name}: no {prefix:?}; console log {}",
            guest.log_path().display()
        );
    }
    let status = guest
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        status.success(),
        "{name}: QEMU ended with {status} instead of a clean power-off"
    );
}

#[test]
fn kernel_boots_with_cobd_disks_and_a_cofs_share() {
    let (kernel, initramfs) = kernel_and_initramfs();
    let t = tempfile::tempdir().unwrap();
    let hello: &[u8] = b"hello from the host\n";
    let disk0 = ext4(t.path(), "cobd0.ext4", &[("hello.txt", hello)]);
    let disk1 = t.path().join("cobd1.img");
    std::fs::File::create(&disk1)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let share = t.path().join("share");
    std::fs::create_dir_all(share.join("sub")).unwrap();
    std::fs::write(share.join("hello.txt"), hello).unwrap();
    std::fs::write(share.join("sub/hello.txt"), hello).unwrap();

    let append = "console=ttyS0 rdinit=/init panic=-1 smoke.disks=2 smoke.root smoke.share smoke.file=hello.txt";
    let (program, mut args) = qemu_direct_boot("i386", &kernel, Some(&initramfs), append, 256);
    drive(&mut args, &disk0);
    drive(&mut args, &disk1);
    args.extend([
        "-fsdev".into(),
        format!(
            "local,id=cofs0,path={},security_model=none",
            share.display()
        ),
        "-device".into(),
        "virtio-9p-pci,fsdev=cofs0,mount_tag=cofs0".into(),
    ]);
    let checks = [
        "cobd0",
        "cobd1",
        "ext4 on cobd0",
        "cofs cofs0",
        "cofs cofs0:sub",
        "cofs uid/gid/fmask",
        "cofs rejects bad options",
    ];
    boot_and_check("kernel-smoke-i386", &program, &args, &checks);
}

#[test]
fn kernel_mounts_root_from_cobd0_without_an_initrd() {
    let (kernel, _) = kernel_and_initramfs();
    let init = workspace_root().join("target/i686-unknown-linux-musl/release/guest-init");
    let init_bytes = std::fs::read(&init).unwrap();
    let t = tempfile::tempdir().unwrap();
    let disk0 = ext4(
        t.path(),
        "root.ext4",
        &[("init", &init_bytes), ("hello.txt", b"root on cobd0\n")],
    );

    let append =
        "console=ttyS0 root=/dev/cobd0 rootfstype=ext4 ro init=/init panic=-1 smoke.disks=1";
    let (program, mut args) = qemu_direct_boot("i386", &kernel, None, append, 256);
    drive(&mut args, &disk0);
    boot_and_check("kernel-rootfs-i386", &program, &args, &["cobd0"]);
}

/// The config check on a real kconfig run: cobd depends on virtio-blk, so
/// with virtio-blk switched off olddefconfig drops cobd, and the stage must
/// fail naming it before building anything.
#[test]
fn config_check_catches_an_option_whose_dependency_is_missing() {
    kernel_and_initramfs(); // the tree exists; runs of the stage serialize on its lock
    let t = tempfile::tempdir().unwrap();
    let patches = t.path().join("linux-6.1");
    let copy = Command::new("cp")
        .arg("-a")
        .arg(workspace_root().join("kernel-patches/linux-6.1"))
        .arg(&patches)
        .status()
        .unwrap();
    assert!(copy.success());
    let arch_fragment = patches.join("config/i386.config");
    let mut text = std::fs::read_to_string(&arch_fragment).unwrap();
    text.push_str("# CONFIG_VIRTIO_BLK is not set\n");
    std::fs::write(&arch_fragment, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["kernel", "--arch", "i386", "--patches"])
        .arg(&patches)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the stage accepted a config that lost CONFIG_VIRTIO_BLK_COBD"
    );
    assert!(
        stderr.contains("did not stick") && stderr.contains("CONFIG_VIRTIO_BLK_COBD=y (got n)"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("build: started"),
        "it built anyway: {stderr}"
    );
}
