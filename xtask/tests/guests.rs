//! The stock images as users run them: each built by `cargo xtask image`
//! with a root key made for the test, booted to login by colinux-daemon
//! (from `cargo xtask runtime`) with our kernel under TCG, logged in to
//! over SSH through the daemon's slirp redirect, and checked from inside.
//! One boot per image; the i386 boot also carries the PAE check and the
//! x86_64 boot the SMP and big-memory checks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use harness::{assert_fsck_clean, free_port, Guest, Ssh};

/// Generous: a systemd boot under TCG takes 35 to 90 s here, more when
/// the other guests of this file boot at the same time.
const BOOT: Duration = Duration::from_secs(420);
const POWER_OFF: Duration = Duration::from_secs(180);
/// The line the getty prints before its prompt (`/etc/issue`, then the
/// hostname and the tty).
const LOGIN_BANNER: &str = "colinux ttyS0";
const GIB_IN_KIB: u64 = 1 << 20;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn xtask_ok(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo xtask {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// colinux-daemon as the runtime stage publishes it, built once.
fn daemon() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let triple = "x86_64-unknown-linux-gnu";
        xtask_ok(&["runtime", "--target", triple]);
        root()
            .join("target/runtime")
            .join(triple)
            .join("colinux-daemon")
    })
}

/// A stock image and what its guest must show.
struct Stock {
    /// The image's name: its recipe, and the files' names.
    name: &'static str,
    /// The kernel's architecture, for `cargo xtask kernel --arch`.
    kernel_arch: &'static str,
    /// Daemon settings beyond the disk, network and kernel.
    settings: &'static [&'static str],
    /// `/etc/os-release`'s ID and VERSION_CODENAME.
    os: (&'static str, &'static str),
    /// `dpkg --print-architecture` and `uname -m`.
    arch: (&'static str, &'static str),
    /// The CPUs the guest must see online.
    cpus: u32,
    /// More than 4 GiB of MemTotal expected.
    big_memory: bool,
}

/// Builds `stock` with the test's key, boots it under the daemon, logs in
/// and checks the guest; then powers it off and checks its filesystem.
fn boot_and_check(stock: &Stock) {
    let started = Instant::now();
    let t = tempfile::tempdir().unwrap();
    let port = free_port();
    let ssh = Ssh::keygen(t.path(), port).unwrap();
    let out = t.path().join("image");
    xtask_ok(&[
        "image",
        "--distro",
        stock.name,
        "--root-key",
        ssh.public_key().to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    xtask_ok(&["kernel", "--arch", stock.kernel_arch]);
    let kernel = root()
        .join("target/kernel")
        .join(stock.kernel_arch)
        .join("bzImage");
    let image = out.join(format!("{}.ext4", stock.name));
    let built = started.elapsed();

    let mut args: Vec<String> = vec![
        "--name".into(),
        format!("guests-{}", stock.name),
        format!("kernel={}", kernel.display()),
        format!("cobd0={}", image.display()),
        format!("eth0=slirp,,tcp:{port}:22"),
        "accel=tcg".into(),
    ];
    args.extend(stock.settings.iter().map(|s| s.to_string()));
    args.extend(["root=/dev/cobd0".into(), "ro".into()]);
    let mut guest = Guest::start(
        &format!("guests-{}", stock.name),
        daemon().to_str().unwrap(),
        &args,
    )
    .unwrap();
    guest.wait_for(LOGIN_BANNER, BOOT).unwrap();
    let at_login = started.elapsed();
    ssh.wait_ready(&guest, Duration::from_secs(120)).unwrap();

    // Waits for the boot to finish: "running", or "degraded" with a unit
    // failed (listed, so the failure says which).
    let state = ssh
        .output(
            &guest,
            "systemctl is-system-running --wait; systemctl --failed --no-legend --plain",
        )
        .unwrap();
    assert_eq!(
        state.trim(),
        "running",
        "{}: the system is not running cleanly; console log {}",
        stock.name,
        guest.log_path().display()
    );
    let facts = facts(&ssh.output(&guest, FACTS).unwrap());
    let fact = |name: &str| -> &str {
        facts
            .get(name)
            .unwrap_or_else(|| panic!("{}: no {name} in {facts:?}", stock.name))
    };
    let what = |name: &str| format!("{}: {name} = {:?} in {facts:?}", stock.name, fact(name));
    assert_eq!(fact("id"), stock.os.0, "{}", what("id"));
    assert_eq!(fact("codename"), stock.os.1, "{}", what("codename"));
    assert_eq!(fact("dpkg_arch"), stock.arch.0, "{}", what("dpkg_arch"));
    assert_eq!(fact("machine"), stock.arch.1, "{}", what("machine"));
    assert_eq!(fact("root"), "/dev/cobd0", "{}", what("root"));
    assert_eq!(fact("eth0"), "10.0.2.15/24", "{}", what("eth0"));
    assert_eq!(fact("machine_id").len(), 32, "{}", what("machine_id"));
    // Host keys: none in the image (tests/image.rs), made by this boot.
    let boot_time: u64 = fact("boot_time").parse().unwrap();
    let key_times: Vec<u64> = fact("host_key_times")
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect();
    assert!(
        key_times.len() >= 2 && key_times.iter().all(|&t| t >= boot_time),
        "{}",
        what("host_key_times")
    );
    assert_eq!(
        fact("cpus").parse::<u32>().unwrap(),
        stock.cpus,
        "{}",
        what("cpus")
    );
    let mem_kib: u64 = fact("mem_kib").parse().unwrap();
    assert_eq!(
        mem_kib > 4 * GIB_IN_KIB,
        stock.big_memory,
        "{}",
        what("mem_kib")
    );

    // The connection may drop as the guest goes down: only the exit counts.
    let _ = ssh.run("systemctl poweroff");
    let status = guest.wait_exit(POWER_OFF).unwrap();
    assert_eq!(status.code(), Some(0), "a clean power-off is exit code 0");
    assert_fsck_clean(&image);
    eprintln!(
        "{}: image and kernel {:.0} s, boot to the login banner {:.0} s, whole test {:.0} s",
        stock.name,
        built.as_secs_f64(),
        (at_login - built).as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// What the guest reports about itself, one `name=value` a line.
const FACTS: &str = r#"
. /etc/os-release
echo "id=$ID"
echo "codename=$VERSION_CODENAME"
echo "dpkg_arch=$(dpkg --print-architecture)"
echo "machine=$(uname -m)"
echo "root=$(findmnt -n -o SOURCE /)"
echo "eth0=$(ip -4 -o addr show dev eth0 | awk '{print $4}')"
echo "machine_id=$(cat /etc/machine-id)"
echo "boot_time=$(awk '$1 == "btime" {print $2}' /proc/stat)"
echo "host_key_times=$(stat -c %Y /etc/ssh/ssh_host_*_key | tr '\n' ' ')"
echo "cpus=$(getconf _NPROCESSORS_ONLN)"
echo "mem_kib=$(awk '$1 == "MemTotal:" {print $2}' /proc/meminfo)"
"#;

fn facts(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Debian stable on i386, with more memory than 32 bits address: PAE.
#[test]
fn debian_trixie_i386_boots_and_sees_6_gib_through_pae() {
    boot_and_check(&Stock {
        name: "debian",
        kernel_arch: "i386",
        settings: &["mem=6144"],
        os: ("debian", "trixie"),
        arch: ("i386", "i686"),
        cpus: 1,
        big_memory: true,
    });
}

#[test]
fn debian_bookworm_i386_boots() {
    boot_and_check(&Stock {
        name: "debian-bookworm",
        kernel_arch: "i386",
        settings: &["mem=512"],
        os: ("debian", "bookworm"),
        arch: ("i386", "i686"),
        cpus: 1,
        big_memory: false,
    });
}

/// Ubuntu on the x86_64 kernel, two CPUs and 6 GiB.
#[test]
fn ubuntu_noble_amd64_boots_with_2_cpus_and_6_gib() {
    boot_and_check(&Stock {
        name: "ubuntu",
        kernel_arch: "x86_64",
        settings: &["arch=x86_64", "smp=2", "mem=6144"],
        os: ("ubuntu", "noble"),
        arch: ("amd64", "x86_64"),
        cpus: 2,
        big_memory: true,
    });
}
