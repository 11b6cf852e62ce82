//! `colinux-daemon --create`: a guest's disk and config from an image (a
//! small ext4 made here with mke2fs, and its zstd copy made with zstd),
//! and every refusal leaving nothing behind.
#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use harness::{assert_fsck_clean, Tmpfs};

const DAEMON: &str = env!("CARGO_BIN_EXE_colinux-daemon");

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An image (`image.ext4`, 32 MiB) and its `.zst`, a kernel stand-in and
/// an SSH key pair, in `dir`.
fn inputs(dir: &Path) -> PathBuf {
    let image = dir.join("image.ext4");
    let image_s = image.to_str().unwrap();
    run(
        "mke2fs",
        &["-q", "-t", "ext4", "-F", "-L", "test", image_s, "32M"],
    );
    // 4 MiB that are not zeros, so the disk takes room where it lands.
    let data = dir.join("data.bin");
    let noise: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 | 1)
        .collect();
    std::fs::write(&data, noise).unwrap();
    let write = format!("write {} data.bin", data.display());
    run("debugfs", &["-w", "-R", &write, image_s]);
    std::fs::remove_file(&data).unwrap();
    run("zstd", &["-q", "-f", image_s]);
    std::fs::write(dir.join("vmlinuz"), "a kernel").unwrap();
    let key = dir.join("id_ed25519");
    run(
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-f", key.to_str().unwrap()],
    );
    image
}

fn create(dir: &Path, args: &[&str]) -> Output {
    Command::new(DAEMON)
        .current_dir(dir)
        .arg("--create")
        .args(args)
        .output()
        .unwrap()
}

fn one_line_error(out: &Output, code: i32) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    err
}

/// No disk, config or temporary file in `dir`.
fn nothing_made(dir: &Path) {
    let left: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_guest_from_the_zstd_image_with_its_key_grown_to_the_size_asked() {
    let t = tempfile::tempdir().unwrap();
    inputs(t.path());
    let data = t.path().join("guests dir");
    let out = create(
        t.path(),
        &[
            "web",
            "--image",
            "image.ext4.zst",
            "--size",
            "64M",
            "--data-dir",
            data.to_str().unwrap(),
            "kernel=vmlinuz",
            "root_key=id_ed25519.pub",
            "root_password_hash=$6$salt$hash",
        ],
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("created guest web") && said.contains("(64 MiB)"),
        "{said}"
    );
    assert!(
        said.contains("ssh -p ") && said.contains(" root@127.0.0.1"),
        "{said}"
    );
    let disk = data.join("web.ext4");
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), 64 << 20);
    use std::os::unix::fs::MetadataExt;
    assert!(
        std::fs::metadata(&disk).unwrap().blocks() * 512 < 16 << 20,
        "the disk is not sparse"
    );
    assert_fsck_clean(&disk);
    let conf = data.join("web.conf");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&conf).unwrap().permissions().mode() & 0o777,
        0o600,
        "the config holds a password hash"
    );
    let settings =
        colinux_config::parse_str(&std::fs::read_to_string(&conf).unwrap(), &conf).unwrap();
    assert_eq!(settings.cobd[&0].path, disk);
    assert_eq!(settings.kernel.unwrap().value, t.path().join("vmlinuz"));
    assert_eq!(
        settings.root_key.unwrap().value,
        t.path().join("id_ed25519.pub")
    );
    assert_eq!(settings.root_password_hash.unwrap().value, "$6$salt$hash");
    assert_eq!(settings.mem_mb.unwrap().value, 512);
    assert!(matches!(
        &settings.eth[&0].kind,
        colinux_config::NetKind::Slirp { redirects } if redirects[0].guest_port == 22
    ));
    assert_eq!(settings.kernel_args, ["root=/dev/cobd0", "ro"]);

    // Again: refused, and the guest is untouched; with --force, replaced.
    let before = std::fs::read(&conf).unwrap();
    let again = create(
        t.path(),
        &[
            "web",
            "--image",
            "image.ext4",
            "--data-dir",
            data.to_str().unwrap(),
            "kernel=vmlinuz",
        ],
    );
    let err = one_line_error(&again, 2);
    assert!(
        err.contains("a guest named web exists already") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(&conf).unwrap(), before);
    let forced = create(
        t.path(),
        &[
            "web",
            "--image",
            "image.ext4",
            "--data-dir",
            data.to_str().unwrap(),
            "--force",
            "kernel=vmlinuz",
        ],
    );
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert_eq!(
        std::fs::metadata(&disk).unwrap().len(),
        32 << 20,
        "the image's size"
    );
}

#[test]
fn bad_requests_are_one_line_errors_that_create_nothing() {
    let t = tempfile::tempdir().unwrap();
    inputs(t.path());
    let data = t.path().join("data");
    let with = |extra: &[&str]| {
        let mut args = vec![
            "g",
            "--image",
            "image.ext4.zst",
            "--data-dir",
            data.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        create(t.path(), &args)
    };
    let cases: [(&[&str], &str); 6] = [
        (
            &["kernel=vmlinuz", "root_key=id_ed25519"],
            "private key, which never goes into a guest",
        ),
        (
            &["kernel=vmlinuz", "root_password_hash=hunter2"],
            "give the hash, not the password",
        ),
        (
            &["kernel=vmlinuz", "--size", "16M"],
            "smaller than the image (32 MiB): give at least 32M",
        ),
        (
            &["kernel=vmlinuz", "--size", "lots"],
            "--size lots: give a size such as 20G",
        ),
        (&["kernel=no-kernel"], "no-kernel does not exist"),
        (
            &["kernel=vmlinuz", "cobd0=other.img"],
            "cobd0 is the guest's own disk",
        ),
    ];
    for (extra, needle) in cases {
        let err = one_line_error(&with(extra), 2);
        assert!(err.contains(needle), "{extra:?}: {err}");
        assert!(
            !err.contains("hunter2"),
            "the error shows the password: {err}"
        );
        nothing_made(&data);
    }
    let no_image = create(
        t.path(),
        &[
            "g",
            "--image",
            "none.zst",
            "--data-dir",
            data.to_str().unwrap(),
            "kernel=vmlinuz",
        ],
    );
    let err = one_line_error(&no_image, 2);
    assert!(
        err.contains("none.zst: no such image; give --image FILE"),
        "{err}"
    );
    nothing_made(&data);
    let bad_name = create(
        t.path(),
        &["no/such", "--image", "image.ext4", "kernel=vmlinuz"],
    );
    one_line_error(&bad_name, 2);

    // A data directory on a full disk: the unpacked disk does not fit.
    if let Some(full) = Tmpfs::mount(&t.path().join("small"), 2 << 20) {
        let out = create(
            t.path(),
            &[
                "g",
                "--image",
                "image.ext4.zst",
                "--data-dir",
                full.path().to_str().unwrap(),
                "kernel=vmlinuz",
            ],
        );
        let err = one_line_error(&out, 2);
        assert!(
            err.contains("No space left on device") && err.contains("--data-dir"),
            "{err}"
        );
        nothing_made(full.path());
    }
}
