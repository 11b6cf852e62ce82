//! Root filesystem images, built for real by `cargo xtask image` (mmdebstrap
//! against the Debian archive; the bootstrap and apt cache persist in
//! target/cache/image), inspected with debugfs and e2fsck without mounting.
//! tests/guests.rs boots them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use harness::{assert_fsck_clean, workspace_root};

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .unwrap()
}

fn xtask_ok(args: &[&str]) {
    let out = xtask(args);
    assert!(
        out.status.success(),
        "cargo xtask {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The error line of a run that must fail.
fn xtask_err(args: &[&str]) -> String {
    let out = xtask(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "cargo xtask {} succeeded",
        args.join(" ")
    );
    assert!(stderr.contains("error: "), "{stderr}");
    stderr
}

/// A stock image, built once for every test of this binary.
fn stock(built: &'static OnceLock<PathBuf>, distro: &str) -> PathBuf {
    built
        .get_or_init(|| {
            xtask_ok(&["image", "--distro", distro]);
            workspace_root().join("target/images").join(distro)
        })
        .clone()
}

/// Debian stable (trixie), i386.
fn debian() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    stock(&BUILT, "debian")
}

/// Ubuntu noble, amd64.
fn ubuntu() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    stock(&BUILT, "ubuntu")
}

/// debugfs's answer to one request: stdout, and stderr (where it reports
/// a missing file).
fn debugfs_output(image: &Path, request: &str) -> Output {
    Command::new("debugfs")
        .args(["-R", request])
        .arg(image)
        .output()
        .unwrap()
}

fn debugfs(image: &Path, request: &str) -> String {
    String::from_utf8_lossy(&debugfs_output(image, request).stdout).into_owned()
}

/// The release, the architecture and a merged /usr, read from the image.
fn assert_release(dir: &Path, name: &str, os: &str, codename: &str, arch: &str) {
    let image = dir.join(format!("{name}.ext4"));
    let os_release = debugfs(&image, "cat /usr/lib/os-release");
    assert!(
        os_release.lines().any(|l| l == format!("ID={os}"))
            && os_release
                .lines()
                .any(|l| l == format!("VERSION_CODENAME={codename}")),
        "{os_release}"
    );
    let packages = std::fs::read_to_string(dir.join(format!("{name}.packages"))).unwrap();
    let libc = packages.lines().find(|l| l.starts_with("libc6\t"));
    assert!(
        libc.is_some_and(|l| l.ends_with(&format!("\t{arch}"))),
        "{libc:?}"
    );
    for top in ["bin", "sbin", "lib"] {
        let link = debugfs(&image, &format!("stat /{top}"));
        assert!(
            link.contains("Type: symlink")
                && link.contains(&format!("Fast link dest: \"usr/{top}\"")),
            "/{top} is not merged into /usr: {link}"
        );
    }
    let sources = debugfs(&image, &format!("cat /etc/apt/sources.list.d/{os}.sources"));
    assert!(
        sources.contains(&format!("Suites: {codename} {codename}-updates")),
        "{sources}"
    );
    let one_line = debugfs_output(&image, "stat /etc/apt/sources.list").stderr;
    let one_line = String::from_utf8_lossy(&one_line);
    assert!(one_line.contains("not found"), "{one_line}");
}

#[test]
fn the_debian_image_is_trixie_i386_with_merged_usr() {
    assert_release(&debian(), "debian", "debian", "trixie", "i386");
}

#[test]
fn the_ubuntu_image_is_noble_amd64_clean_and_has_no_identity() {
    let dir = ubuntu();
    assert_release(&dir, "ubuntu", "ubuntu", "noble", "amd64");
    assert_clean_locked_without_identity(&dir, "ubuntu");
}

#[test]
fn the_debian_image_is_clean_locked_and_has_no_identity() {
    assert_clean_locked_without_identity(&debian(), "debian");
}

/// What every stock image must be: clean, root locked, no machine identity
/// or host keys, our units and network, outputs that match their sums.
fn assert_clean_locked_without_identity(dir: &Path, name: &str) {
    let image = dir.join(format!("{name}.ext4"));
    assert_fsck_clean(&image);

    let fstab = debugfs(&image, "cat /etc/fstab");
    let root_line = fstab
        .lines()
        .find(|l| !l.starts_with('#') && l.split_whitespace().nth(1) == Some("/"))
        .unwrap_or_else(|| panic!("no root line in the fstab:\n{fstab}"));
    assert!(root_line.starts_with("/dev/cobd0 "), "{root_line}");

    let shadow = debugfs(&image, "cat /etc/shadow");
    let root_pw = shadow
        .lines()
        .find_map(|l| l.strip_prefix("root:"))
        .and_then(|rest| rest.split(':').next())
        .expect("root in /etc/shadow");
    assert!(root_pw.starts_with('!'), "root is not locked: {root_pw:?}");
    assert!(!debugfs(&image, "ls /root/.ssh").contains("authorized_keys"));

    let ssh = debugfs(&image, "ls /etc/ssh");
    assert!(ssh.contains("sshd_config"), "{ssh}");
    assert!(!ssh.contains("ssh_host_"), "host keys shipped: {ssh}");
    let machine_id = debugfs(&image, "stat /etc/machine-id");
    assert!(machine_id.contains("Size: 0"), "{machine_id}");
    assert!(!debugfs(&image, "ls /var/lib/dbus").contains("machine-id"));

    let wants = debugfs(&image, "ls /etc/systemd/system/multi-user.target.wants");
    assert!(wants.contains("colinux-firstboot.service"), "{wants}");
    // Root's login comes at the first start, from the daemon's seed disk.
    assert!(wants.contains("colinux-credentials.service"), "{wants}");
    let script = debugfs(&image, "stat /usr/lib/colinux/credentials");
    assert!(script.contains("Mode:  0755"), "{script}");
    let gettys = debugfs(&image, "ls /etc/systemd/system/getty.target.wants");
    assert!(gettys.contains("serial-getty@ttyS0.service"), "{gettys}");
    assert!(!gettys.contains("getty@tty1"), "{gettys}");
    let network = debugfs(&image, "cat /etc/systemd/network/20-eth0.network");
    assert!(network.contains("DHCP=ipv4"), "{network}");

    let packages = std::fs::read_to_string(dir.join(format!("{name}.packages"))).unwrap();
    assert!(packages.lines().any(|l| l.starts_with("openssh-server\t")));
    assert!(packages.lines().all(|l| l.split('\t').count() == 3));
    let check = Command::new("sha256sum")
        .args(["--check", "--quiet", "SHA256SUMS"])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(check.success(), "SHA256SUMS does not match the outputs");
    let tar = Command::new("tar")
        .args(["-tzf"])
        .arg(dir.join(format!("{name}.tar.gz")))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&tar.stdout)
        .lines()
        .any(|l| l == "./etc/fstab"));
    let unzstd = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zstd -dc {} | cmp - {}",
            dir.join(format!("{name}.ext4.zst")).display(),
            image.display()
        ))
        .status()
        .unwrap();
    assert!(unzstd.success(), "the .zst does not unpack to the .ext4");
}

#[test]
fn an_unchanged_rebuild_is_a_no_op_and_a_failed_one_keeps_the_old_image() {
    let dir = debian();
    let before = std::fs::metadata(dir.join("debian.ext4"))
        .unwrap()
        .modified()
        .unwrap();
    xtask_ok(&["image", "--distro", "debian"]);
    let after = std::fs::metadata(dir.join("debian.ext4"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after, "an unchanged rebuild rewrote the image");

    let err = xtask_err(&["image", "--distro", "debian", "--size", "64M"]);
    assert!(err.contains("too small") && err.contains("--size"), "{err}");
    let check = Command::new("sha256sum")
        .args(["--check", "--quiet", "SHA256SUMS"])
        .current_dir(&dir)
        .status()
        .unwrap();
    assert!(check.success(), "the good image changed");
    // Only this image's staging (`.debian.XXXXXX`): the other tests of this
    // file build other images beside it at the same time.
    let leftovers: Vec<String> = std::fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".debian."))
        .collect();
    assert!(leftovers.is_empty(), "partial output left: {leftovers:?}");
}

/// `cargo xtask test` checks the image is reproducible with
/// `--verify-reproducible`: everything after the bootstrap again, from the
/// cached bootstrap (a fresh one follows the archive), in another
/// directory. It compares only with the image of the same inputs.
#[test]
fn verify_reproducible_compares_only_with_the_current_image() {
    debian();
    let err = xtask_err(&[
        "image",
        "--distro",
        "debian",
        "--size",
        "1G",
        "--verify-reproducible",
    ]);
    assert!(
        err.contains("does not hold the current build to compare with")
            && err.contains("run `cargo xtask image` with the same options first"),
        "{err}"
    );
    let help = String::from_utf8_lossy(&xtask(&["image", "--help"]).stdout).into_owned();
    assert!(
        help.contains("--verify-reproducible") && help.contains("target/cache/verify/image"),
        "{help}"
    );
}

#[test]
fn bad_recipes_and_options_are_clear_errors() {
    let err = xtask_err(&["image", "--distro", "gentoo"]);
    assert!(
        err.contains("gentoo") && err.contains("debian, debian-bookworm, ubuntu"),
        "{err}"
    );

    // An unreachable archive stops the build at once, naming the mirror.
    let err = xtask_err(&[
        "image",
        "--distro",
        "ubuntu",
        "--mirror",
        "http://127.0.0.1:9/ubuntu",
    ]);
    assert!(
        err.contains("cannot reach the ubuntu mirror http://127.0.0.1:9/ubuntu")
            && err.contains("--mirror URL"),
        "{err}"
    );

    let t = tempfile::tempdir().unwrap();
    let recipe = |name: &str, text: &str| {
        let path = t.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    // Each refused before the bootstrap, with nothing published.
    let out = t.path().join("out");
    let refused = |path: &str| -> String {
        let err = xtask_err(&["image", "--recipe", path, "--output", out.to_str().unwrap()]);
        assert!(!out.exists(), "{path}: something was published");
        err
    };
    let old_kernel = recipe("newer", "extends = \"debian\"\nmin_kernel = \"6.12\"\n");
    let err = refused(&old_kernel);
    assert!(
        err.contains("needs Linux 6.12 or later")
            && err.contains("the kernel it boots is 6.1.")
            && err.contains("source.toml"),
        "{err}"
    );
    // trixie dropped mips64el, and the Debian archive dropped woody.
    let arch = recipe("mips", "extends = \"debian\"\narch = \"mips64el\"\n");
    let err = refused(&arch);
    assert!(
        err.contains("trixie does not publish the architecture mips64el") && err.contains("i386"),
        "{err}"
    );
    let suite = recipe(
        "woody",
        "extends = \"debian\"\nsuite = \"woody\"\nextra_suites = []\n",
    );
    let err = refused(&suite);
    assert!(
        err.contains("has no suite \"woody\"") && err.contains("HTTP 404"),
        "{err}"
    );
    // The archive's keyring package is refused unless it is the pinned one.
    let wrong = "0".repeat(64);
    let keyring = recipe(
        "badkey",
        &format!("extends = \"ubuntu\"\n[keyring_package]\nsha256 = \"{wrong}\"\n"),
    );
    let err = refused(&keyring);
    assert!(
        err.contains("has sha256 36de43b15853ccae0028e9a767613770c704833f82586f28eb262f0311adb8a8")
            && err.contains(&format!("pins {wrong}")),
        "{err}"
    );
    let typo = recipe("typo", "extends = \"debian\"\npackges = [\"vim\"]\n");
    let err = xtask_err(&["image", "--recipe", &typo]);
    assert!(
        err.contains("typo.toml") && err.contains("packges"),
        "{err}"
    );

    let missing = recipe(
        "missing",
        "extends = \"debian\"\noverlays = [\"nowhere\"]\n",
    );
    let err = xtask_err(&["image", "--recipe", &missing]);
    assert!(err.contains("overlays/nowhere"), "{err}");

    let err = xtask_err(&[
        "image",
        "--distro",
        "debian",
        "--root-password-hash",
        "hunter2",
    ]);
    assert!(err.contains("crypt(3)"), "{err}");
    let key = t.path().join("id");
    std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
    let err = xtask_err(&[
        "image",
        "--distro",
        "debian",
        "--root-key",
        key.to_str().unwrap(),
    ]);
    assert!(err.contains("private key"), "{err}");

    // A failing hook is named with its output; the bootstrap is reused.
    std::fs::create_dir_all(t.path().join("hooks")).unwrap();
    std::fs::write(
        t.path().join("hooks/fail.sh"),
        "echo checking the widget\nexit 3\n",
    )
    .unwrap();
    let failing = recipe("failing", "extends = \"debian\"\nhooks = [\"fail.sh\"]\n");
    let err = xtask_err(&[
        "image",
        "--recipe",
        &failing,
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(
        err.contains("fail.sh") && err.contains("checking the widget"),
        "{err}"
    );
    assert!(!out.exists());
}
