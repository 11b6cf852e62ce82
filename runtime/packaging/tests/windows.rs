//! The Windows installer end to end, with the real tools: makensis builds
//! it from the real runtime binaries (the runtime stage's, cached),
//! osslsigncode signs and verifies it, and wine64 installs it silently
//! from an ini, runs the installed daemon, and uninstalls it.
#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

use colinux_packaging::authenticode::{self, AuthenticodeKeys};
use colinux_packaging::nsis::{self, InstallerSpec};

use harness::{wine, workspace_root};

/// A fixed SOURCE_DATE_EPOCH: the signatures must not depend on the clock.
const TIME: u64 = 1_700_000_000;

/// Everything the tests share, made once: the signed binaries, the dev
/// keys, and the signed installer.
struct Built {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    ca: PathBuf,
    daemon: PathBuf,
    installer: PathBuf,
    spec: InstallerSpec,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let windows = runtime_binaries();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let keys = authenticode::make_dev_keys(&dir.join("keys")).unwrap();
        let ca = dir.join("keys").join(authenticode::DEV_CA);
        let sign = |name: &str| {
            let out = dir.join(name);
            authenticode::sign(&windows.join(name), &out, &keys, TIME).unwrap();
            out
        };
        let daemon = sign("colinux-daemon.exe");
        let console = sign("colinux-console.exe");
        // Stand-in kernels, so this test needs no kernel build; the lead's
        // dist test packages the real ones. The installer only copies them.
        let kernel = |name: &str| {
            let path = dir.join(name);
            std::fs::write(&path, format!("stand-in {name}\n").repeat(1000)).unwrap();
            path
        };
        // A stand-in image too: 8 MiB of zeros, which --create unpacks as
        // it would the real one (the dist test boots the real one).
        let raw = dir.join("debian.ext4");
        std::fs::write(&raw, vec![0u8; IMAGE_BYTES as usize]).unwrap();
        let image = dir.join("debian.ext4.zst");
        let zstd = Command::new("zstd")
            .args(["-q", "-o"])
            .arg(&image)
            .arg(&raw)
            .status()
            .unwrap();
        assert!(zstd.success(), "zstd");
        let spec = InstallerSpec {
            version: "0.1.0".into(),
            daemon_exe: daemon.clone(),
            console_exe: console,
            kernels: vec![
                ("i386".into(), kernel("bzImage-i386")),
                ("x86_64".into(), kernel("bzImage-x86_64")),
            ],
            image: Some(image),
            docs: vec![
                workspace_root().join("COPYING"),
                workspace_root().join("runtime/packaging/README.md"),
            ],
            sign: Some((keys, TIME)),
        };
        let installer = dir.join("colinux-0.1.0-setup.exe");
        let start = Instant::now();
        nsis::build(&spec, &installer).unwrap();
        eprintln!(
            "installer: {} bytes in {:.1} s",
            std::fs::metadata(&installer).unwrap().len(),
            start.elapsed().as_secs_f64()
        );
        Built {
            _dir: tmp,
            dir,
            ca,
            daemon,
            installer,
            spec,
        }
    })
}

/// colinux-daemon.exe and colinux-console.exe from the repository's own
/// runtime stage (a no-op when they are up to date).
fn runtime_binaries() -> PathBuf {
    let target = "x86_64-pc-windows-gnu";
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "run", "-q", "-p", "xtask", "--", "runtime", "--target", target,
        ])
        .current_dir(workspace_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo xtask runtime --target {target}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    workspace_root().join("target/runtime").join(target)
}

#[test]
fn signatures_verify_and_a_tampered_installer_does_not() {
    let b = built();
    authenticode::verify(&b.daemon, &b.ca).unwrap();
    authenticode::verify(&b.installer, &b.ca).unwrap();

    let tampered = b.dir.join("tampered-setup.exe");
    let mut bytes = std::fs::read(&b.installer).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&tampered, bytes).unwrap();
    let err = authenticode::verify(&tampered, &b.ca)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not verify"), "{err}");

    // Another CA does not vouch for it either.
    let other = b.dir.join("other-keys");
    authenticode::make_dev_keys(&other).unwrap();
    assert!(authenticode::verify(&b.installer, &other.join(authenticode::DEV_CA)).is_err());
}

#[test]
fn signing_and_the_installer_are_reproducible() {
    let b = built();
    // Signing again gives the same bytes.
    let again = b.dir.join("daemon-again.exe");
    let (keys, time) = b.spec.sign.clone().unwrap();
    authenticode::sign(&b.daemon, &again, &keys, time).unwrap();
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&b.daemon).unwrap()
    );

    // A second build, elsewhere and from inputs made at another time (as
    // every build makes them), compares equal (cmp, as a user would).
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    let kernels = b.spec.kernels.iter().map(|(_, k)| k);
    for input in [&b.spec.daemon_exe, &b.spec.console_exe]
        .into_iter()
        .chain(kernels)
    {
        let file = std::fs::File::options().write(true).open(input).unwrap();
        file.set_modified(later).unwrap();
    }
    let second = b.dir.join("second").join("colinux-0.1.0-setup.exe");
    let start = Instant::now();
    nsis::build(&b.spec, &second).unwrap();
    eprintln!(
        "second installer build: {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let cmp = Command::new("cmp")
        .arg(&b.installer)
        .arg(&second)
        .output()
        .unwrap();
    assert!(
        cmp.status.success(),
        "{}",
        String::from_utf8_lossy(&cmp.stdout)
    );
}

#[test]
fn keys_errors_are_one_line_with_the_fix() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = b.dir.join("keys");
    // A wrong password for an encrypted key.
    let encrypted = dir.path().join("enc.key");
    let status = Command::new("openssl")
        .args(["pkey", "-aes256", "-passout", "pass:right", "-in"])
        .arg(keys_dir.join(authenticode::DEV_KEY))
        .arg("-out")
        .arg(&encrypted)
        .status()
        .unwrap();
    assert!(status.success());
    let mut keys = AuthenticodeKeys {
        cert: keys_dir.join(authenticode::DEV_CERT),
        key: encrypted.clone(),
        password: Some("wrong".into()),
    };
    let out = dir.path().join("x.exe");
    let err = authenticode::sign(&b.daemon, &out, &keys, TIME)
        .unwrap_err()
        .to_string();
    assert!(err.contains("enc.key: wrong password"), "{err}");
    assert!(!out.exists() && !dir.path().join("x.exe.partial").exists());
    keys.password = Some("right".into());
    authenticode::sign(&b.daemon, &out, &keys, TIME).unwrap();
    // The same key, decrypted or not, signs the same bytes.
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&b.daemon).unwrap()
    );

    // Dev keys are reused, and the private key is the owner's alone.
    let again = authenticode::make_dev_keys(&keys_dir).unwrap();
    assert_eq!(again.key, keys_dir.join(authenticode::DEV_KEY));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&again.key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let subject = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-in"])
        .arg(&again.cert)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&subject.stdout).contains("DEVELOPMENT"));
}

/// wine64 with xtask's prefix (target/cache/wine, with the
/// bcryptprimitives.dll shim that Rust programs need on bookworm's Wine).
fn wine(args: &[&str], cwd: &Path) -> Output {
    static WINE: OnceLock<wine::Wine> = OnceLock::new();
    let wine =
        WINE.get_or_init(|| wine::Wine::prepare(&workspace_root().join("target/cache")).unwrap());
    wine::Wine::output(
        Command::new(wine::WINE64)
            .args(args)
            .envs(wine.env())
            .current_dir(cwd),
    )
    .unwrap()
}

fn drive_c() -> PathBuf {
    workspace_root().join("target/cache/wine/drive_c")
}

/// The stand-in image's unpacked size.
const IMAGE_BYTES: u64 = 8 << 20;

/// Where the installer creates guests (`%ProgramData%\coLinux`), emptied
/// for each test: a guest left there would be kept, not created.
fn guests() -> PathBuf {
    let dir = drive_c().join("ProgramData/coLinux");
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A folder with the installer and, if given, an ini beside it, as a
/// share would hold.
fn deployment(name: &str, ini: Option<&str>) -> PathBuf {
    let b = built();
    let dir = b.dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&b.installer, dir.join("setup.exe")).unwrap();
    if let Some(ini) = ini {
        std::fs::write(dir.join("colinux.ini"), ini).unwrap();
    }
    dir
}

/// One install at a time: installs share the machine's registry keys
/// (HKLM\Software\coLinux, the uninstall entry) and the setup log.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The last run's `%TEMP%\colinux-setup.log` in the prefix.
fn setup_log() -> String {
    let path = drive_c().join("users/root/Temp/colinux-setup.log");
    std::fs::read_to_string(&path).unwrap_or_else(|e| format!("{}: {e}", path.display()))
}

fn uninstall(win_dir: &str, dir: &Path) {
    let out = wine(
        &[
            &format!("{win_dir}\\uninstall.exe"),
            "/S",
            &format!("_?={win_dir}"),
        ],
        dir,
    );
    assert!(out.status.success(), "uninstall.exe /S: {out:?}");
}

/// A per-test install folder in the prefix (tests run in parallel).
fn install_dir(name: &str) -> (String, PathBuf) {
    let folder = format!("coLinuxTest-{name}-{}", std::process::id());
    let _ = std::fs::remove_dir_all(drive_c().join(&folder));
    (format!("C:\\{folder}"), drive_c().join(folder))
}

#[test]
fn silent_install_from_an_ini_then_uninstall() {
    let _one = one_at_a_time();
    let guests = guests();
    let share = deployment(
        "share",
        Some(
            "; a lab node\r\n[comosix]\r\nmemory_size = 384\r\n[NFS]\r\nserver = 10.0.0.1\r\n\
         path = /srv/comosix\r\noptions = ro,nolock\r\n[cobd]\r\npath_0 = swap.img\r\n\
         path_1 = data.img\r\n",
        ),
    );
    for disk in ["swap.img", "data.img"] {
        std::fs::write(share.join(disk), vec![0u8; 4096]).unwrap();
    }
    let (win_dir, dir) = install_dir("ini");
    let out = wine(&["setup.exe", "/S", &format!("/D={win_dir}")], &share);
    assert!(out.status.success(), "setup.exe /S: {out:?}");

    let installed = [
        "colinux-daemon.exe",
        "colinux-console.exe",
        "bzImage-i386",
        "bzImage-x86_64",
        "COPYING",
        "README.md",
        "colinux.conf",
        "images/debian.ext4.zst",
        "uninstall.exe",
    ];
    for name in installed {
        assert!(dir.join(name).is_file(), "{name} not installed");
    }
    let b = built();
    assert_eq!(
        std::fs::read(dir.join("colinux-daemon.exe")).unwrap(),
        std::fs::read(&b.daemon).unwrap()
    );
    // The uninstaller was signed while makensis built it.
    authenticode::verify(&dir.join("uninstall.exe"), &b.ca).unwrap();

    let conf = std::fs::read_to_string(dir.join("colinux.conf")).unwrap();
    assert!(conf.contains("\nmem=384"), "{conf}");
    assert!(
        conf.contains("root=/dev/nfs nfsroot=10.0.0.1:/srv/comosix,ro,nolock ip=dhcp"),
        "{conf}"
    );
    assert!(
        conf.contains("\ncobd0=Z:") && conf.contains("swap.img") && conf.contains("data.img"),
        "{conf}"
    );
    assert!(
        conf.contains(&format!("kernel={win_dir}\\bzImage-i386")),
        "{conf}"
    );
    // No QEMU in the prefix: a warning in the config, not a failure.
    assert!(
        conf.contains("https://www.qemu.org/download/#windows"),
        "{conf}"
    );
    // The ini boots its own root: no guest made from the image.
    assert!(!guests.exists(), "a guest was created beside an NFS root");
    assert!(setup_log().contains("no guest created"), "{}", setup_log());

    // The installed daemon accepts the config; only the engine is missing,
    // which is its documented exit code 3.
    let conf_arg = format!("@{win_dir}\\colinux.conf");
    let dry = wine(
        &[
            &format!("{win_dir}\\colinux-daemon.exe"),
            "--dry-run",
            &conf_arg,
        ],
        &dir,
    );
    let stdout = String::from_utf8_lossy(&dry.stdout);
    assert_eq!(dry.status.code(), Some(3), "{dry:?}");
    assert!(
        stdout.contains("mem=384") && stdout.contains("-append"),
        "{stdout}"
    );

    // The uninstaller removes what the installer wrote and nothing else.
    std::fs::write(dir.join("root.ext4"), "the user's disk image").unwrap();
    uninstall(&win_dir, &dir);
    // `_?=` runs the uninstaller in place, so it cannot delete itself (NSIS
    // documents this); everything else it installed is gone.
    for name in installed.iter().filter(|n| **n != "uninstall.exe") {
        assert!(!dir.join(name).exists(), "{name} left behind");
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("root.ext4")).unwrap(),
        "the user's disk image"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_ini_with_a_gap_installs_nothing() {
    let _one = one_at_a_time();
    let share = deployment(
        "gap",
        Some("[comosix]\nmemory_size = 256\n[cobd]\npath_0 = a.img\npath_2 = c.img\n"),
    );
    let (win_dir, dir) = install_dir("gap");
    let out = wine(&["setup.exe", "/S", &format!("/D={win_dir}")], &share);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(!dir.exists(), "{} was created", dir.display());
    // The config crate's one-line message, for whoever deployed it.
    let log = setup_log();
    assert!(
        log.contains("colinux.ini:5: path_2 = c.img: path_1 is missing")
            && log.contains("nothing was installed"),
        "{log}"
    );
}

#[test]
fn without_an_ini_a_guest_is_made_from_the_image_and_outlives_the_uninstall() {
    let _one = one_at_a_time();
    let guests = guests();
    let share = deployment("plain", None);
    let (win_dir, dir) = install_dir("plain");
    let out = wine(&["setup.exe", "/S", &format!("/D={win_dir}")], &share);
    assert!(
        out.status.success(),
        "setup.exe /S: {out:?}\n{}",
        setup_log()
    );
    let log = setup_log();
    assert!(log.contains("QEMU for Windows was not found"), "{log}");
    assert!(log.contains("created guest debian"), "{log}");

    // colinux.conf, which the Start menu starts, is the guest's.
    let disk = guests.join("debian.ext4");
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), IMAGE_BYTES);
    let guest_conf = std::fs::read_to_string(guests.join("debian.conf")).unwrap();
    assert!(
        guest_conf.contains("\ncobd0=C:\\ProgramData\\coLinux\\debian.ext4")
            && guest_conf.contains("eth0=slirp,,tcp:")
            && guest_conf.contains(&format!("kernel={win_dir}\\bzImage-i386")),
        "{guest_conf}"
    );
    let conf = std::fs::read_to_string(dir.join("colinux.conf")).unwrap();
    assert!(
        conf.contains("@\"C:\\ProgramData\\coLinux\\debian.conf\""),
        "{conf}"
    );
    let dry = wine(
        &[
            &format!("{win_dir}\\colinux-daemon.exe"),
            "--dry-run",
            "@colinux.conf",
        ],
        &dir,
    );
    // Only QEMU is missing: its documented exit code.
    assert_eq!(dry.status.code(), Some(3), "{dry:?}");

    // Installing again keeps the guest, and what the guest wrote.
    std::fs::write(&disk, "the guest's data").unwrap();
    let out = wine(&["setup.exe", "/S", &format!("/D={win_dir}")], &share);
    assert!(out.status.success(), "setup.exe /S again: {out:?}");
    assert!(setup_log().contains("kept the existing guest debian"));
    uninstall(&win_dir, &dir);
    assert!(!dir.join("colinux.conf").exists() && !dir.join("images").exists());
    assert_eq!(std::fs::read_to_string(&disk).unwrap(), "the guest's data");
    assert!(guests.join("debian.conf").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_ini_service_is_created_and_the_uninstaller_removes_it() {
    let _one = one_at_a_time();
    let guests = guests();
    let name = format!("test{}", std::process::id());
    let share = deployment(
        "service",
        Some(&format!(
            "[comosix]\nmemory_size = 128\n[service]\ninstall = yes\nname = {name}\n"
        )),
    );
    let (win_dir, dir) = install_dir("service");
    let out = wine(&["setup.exe", "/S", &format!("/D={win_dir}")], &share);
    assert!(
        out.status.success(),
        "setup.exe /S: {out:?}\n{}",
        setup_log()
    );
    // The ini names no disk: the guest is made, and the service runs it.
    assert!(
        setup_log().contains("created guest debian"),
        "{}",
        setup_log()
    );
    assert!(guests.join("debian.ext4").is_file());
    let key = format!("HKLM\\System\\CurrentControlSet\\Services\\colinux-{name}");
    let query = wine(&["reg", "query", &key], &dir);
    let text = String::from_utf8_lossy(&query.stdout);
    assert!(
        text.contains(&format!("--run-service {name}")) && text.contains("colinux.conf"),
        "{query:?}"
    );
    uninstall(&win_dir, &dir);
    let query = wine(&["reg", "query", &key], &dir);
    assert!(
        !query.status.success(),
        "the service is still there: {query:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
