//! The stock images as users run them: each built by `cargo xtask image`
//! with no credentials in it, made a guest of its own by `colinux-daemon
//! --create` (its zstd copy unpacked, its config written), booted to login
//! by colinux-daemon (from `cargo xtask runtime`) with our kernel under TCG
//! and root's key made for the test handed over at the first start
//! (`root_key=`), logged in to over SSH through the daemon's slirp
//! redirect, and checked from inside. One boot per image; the trixie boot
//! also carries the PAE check and the password path (`root_password_hash=`,
//! a login on the serial console), the x86_64 boot the SMP and big-memory
//! checks. A first boot with neither, on a terminal, asks for a password
//! once.

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
    /// Also hand over a password hash and log in on the serial console.
    console_login: bool,
    /// Give the guest a disk 1 GiB larger than the image (its root grows
    /// at boot) and check that what it frees goes back to the host.
    grow_and_trim: bool,
}

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// Bytes the host file really holds (it is sparse).
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// The password of the console logins, and its hash (`openssl passwd -6`).
const PASSWORD: &str = "co-linux 42!";

fn password_hash() -> String {
    let out = Command::new("openssl")
        .args(["passwd", "-6", "-salt", "colinuxtest", PASSWORD])
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl passwd failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A guest as users make one: `colinux-daemon --create` from the stock
/// image `name` (built, or found current) into `dir`, with `tokens` for its
/// config and a disk `grow` bytes larger than the image. Returns its
/// config file and its disk.
fn create(name: &str, dir: &Path, grow: u64, tokens: &[String]) -> (PathBuf, PathBuf) {
    xtask_ok(&["image", "--distro", name]);
    let images = root().join("target/images").join(name);
    let image_bytes = std::fs::metadata(images.join(format!("{name}.ext4")))
        .unwrap()
        .len();
    let out = Command::new(daemon())
        .arg("--create")
        .arg(name)
        .arg("--image")
        .arg(images.join(format!("{name}.ext4.zst")))
        .arg("--data-dir")
        .arg(dir)
        .arg("--size")
        .arg(format!("{}K", (image_bytes + grow) >> 10))
        .args(tokens)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.starts_with(&format!("created guest {name}")),
        "colinux-daemon --create {name}: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        dir.join(format!("{name}.conf")),
        dir.join(format!("{name}.ext4")),
    )
}

/// Logs in as root on the console with [`PASSWORD`] and checks that a
/// command runs; each answer waits for its prompt (typed ahead, login
/// would throw it away).
fn console_login(guest: &mut Guest) {
    guest.send("root\n").unwrap();
    guest
        .wait_for_prompt("Password:", Duration::from_secs(120))
        .unwrap();
    guest.send(&format!("{PASSWORD}\n")).unwrap();
    guest
        .wait_for_prompt("root@colinux:~#", Duration::from_secs(120))
        .unwrap();
    guest.send("echo CONSOLE-LOGIN-$((6*7))\n").unwrap();
    guest
        .wait_for("CONSOLE-LOGIN-42", Duration::from_secs(60))
        .unwrap();
}

/// Boots a copy of the stock image under the daemon with the test's key
/// (and password hash) handed over at the first start, logs in and checks
/// the guest; then powers it off and checks its filesystem.
fn boot_and_check(stock: &Stock) {
    let started = Instant::now();
    let t = tempfile::tempdir().unwrap();
    let port = free_port();
    let ssh = Ssh::keygen(t.path(), port).unwrap();
    xtask_ok(&["kernel", "--arch", stock.kernel_arch]);
    let kernel = root()
        .join("target/kernel")
        .join(stock.kernel_arch)
        .join("bzImage");
    let mut tokens = vec![
        format!("kernel={}", kernel.display()),
        format!("eth0=slirp,,tcp:{port}:22"),
        format!("root_key={}", ssh.public_key().display()),
    ];
    if stock.console_login {
        tokens.push(format!("root_password_hash={}", password_hash()));
    }
    let grow = if stock.grow_and_trim { GIB } else { 0 };
    let (conf, image) = create(stock.name, t.path(), grow, &tokens);
    let image_bytes = std::fs::metadata(&image).unwrap().len() - grow;
    let built = started.elapsed();

    let mut args: Vec<String> = vec![
        "--name".into(),
        format!("guests-{}", stock.name),
        format!("@{}", conf.display()),
        "accel=tcg".into(),
    ];
    args.extend(stock.settings.iter().map(|s| s.to_string()));
    let mut guest = Guest::start(
        &format!("guests-{}", stock.name),
        daemon().to_str().unwrap(),
        &args,
    )
    .unwrap();
    // What the first start applied is checked from inside (the facts):
    // its console line can drown in systemd's status output.
    guest.wait_for(LOGIN_BANNER, BOOT).unwrap();
    let at_login = started.elapsed();
    ssh.wait_ready(&guest, Duration::from_secs(120)).unwrap();
    if stock.console_login {
        console_login(&mut guest);
    }

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
    let applied = if stock.console_login {
        "root's SSH key and root's password set from the host's credentials"
    } else {
        "root's SSH key set from the host's credentials"
    };
    assert!(
        fact("credentials").starts_with(applied),
        "{}",
        what("credentials")
    );
    if stock.grow_and_trim {
        // The root filesystem grew into the larger disk at boot.
        let root_bytes: u64 = fact("root_bytes").parse().unwrap();
        assert!(
            root_bytes > image_bytes + 900 * MIB,
            "{}: the root filesystem did not grow into the {} MiB disk: {}",
            stock.name,
            (image_bytes + GIB) / MIB,
            what("root_bytes")
        );
        // 1 GiB written, then deleted: the host file gives it back.
        ssh.output(
            &guest,
            "dd if=/dev/zero of=/root/fill bs=1M count=1024 conv=fsync status=none && sync",
        )
        .unwrap();
        let full = allocated(&image);
        ssh.output(&guest, "rm /root/fill && sync && fstrim /")
            .unwrap();
        let freed = full.saturating_sub(allocated(&image));
        assert!(
            freed >= 900 * MIB,
            "{}: only {} MiB of the deleted 1 GiB went back to the host file",
            stock.name,
            freed / MIB
        );
        eprintln!(
            "{}: root grew to {} MiB; deleting 1 GiB and trimming gave {} MiB back",
            stock.name,
            root_bytes / MIB,
            freed / MIB
        );
    }
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
echo "credentials=$(cat /var/lib/colinux/credentials-applied)"
echo "root_bytes=$(findmnt -bno SIZE /)"
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
        console_login: true,
        grow_and_trim: true,
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
        console_login: false,
        grow_and_trim: false,
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
        console_login: false,
        grow_and_trim: false,
    });
}

/// No credentials, and someone at a terminal: the first boot asks for
/// root's password on the console, and the next boot does not ask again.
#[test]
fn a_first_boot_without_credentials_asks_for_a_password_once() {
    let t = tempfile::tempdir().unwrap();
    xtask_ok(&["kernel", "--arch", "i386"]);
    let kernel = root().join("target/kernel/i386/bzImage");
    let (conf, disk) = create(
        "debian",
        t.path(),
        0,
        &[format!("kernel={}", kernel.display())],
    );
    let boot = |log: &str| {
        let mut daemon = Command::new(daemon());
        daemon.args([
            "--name".to_string(),
            "guests-first-boot".into(),
            format!("@{}", conf.display()),
            "accel=tcg".into(),
        ]);
        Guest::spawn_on_terminal(log, daemon).unwrap()
    };
    let mut first = boot("guests-first-boot");
    first.wait_for("choose root's password now", BOOT).unwrap();
    for prompt in ["New password:", "Retype new password:"] {
        first
            .wait_for_prompt(prompt, Duration::from_secs(60))
            .unwrap();
        first.send(&format!("{PASSWORD}\n")).unwrap();
    }
    first
        .wait_for(
            "root's password chosen on the console",
            Duration::from_secs(60),
        )
        .unwrap();
    first.wait_for(LOGIN_BANNER, BOOT).unwrap();
    console_login(&mut first);
    first.send("poweroff\n").unwrap();
    assert_eq!(first.wait_exit(POWER_OFF).unwrap().code(), Some(0));

    let mut second = boot("guests-second-boot");
    second.wait_for(LOGIN_BANNER, BOOT).unwrap();
    assert!(
        !second
            .transcript()
            .iter()
            .any(|l| l.contains("choose root's password")),
        "the second boot asked again; console log {}",
        second.log_path().display()
    );
    console_login(&mut second);
    second.send("poweroff\n").unwrap();
    assert_eq!(second.wait_exit(POWER_OFF).unwrap().code(), Some(0));
    assert_fsck_clean(&disk);
}
