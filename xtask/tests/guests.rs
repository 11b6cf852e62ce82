//! The stock images as users run them: each built by `cargo xtask image`
//! with no credentials in it, made a guest of its own by `colinux-daemon
//! --create` (its zstd copy unpacked, its config written), booted to login
//! by colinux-daemon with our kernel under TCG and root's key made for the
//! test handed over at the first start (`root_key=`), logged in to over
//! SSH through the daemon's slirp redirect, and checked from inside. One
//! boot per image; the trixie boot also carries the PAE check and the
//! password path (`root_password_hash=`, a login on the serial console),
//! the x86_64 boot the SMP and big-memory checks. A first boot with
//! neither, on a terminal, asks for a password once.
//!
//! The shipped image comes from the release bundle (`cargo xtask dist`),
//! as a user gets it: on Linux its two .debs installed with dpkg, whose
//! daemon creates the guest and runs it as the systemd unit does (detached,
//! by name, the console through colinux-console) and which leave the
//! guest's disk when purged; on Windows the silent installer under Wine
//! with an ini naming root's key and a service, which creates the guest
//! that the installed service boots on the real QEMU for Windows, and
//! whose uninstaller leaves it. Those two guests, made from one image,
//! must differ in host keys and machine-id.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use std::sync::Mutex;

use harness::wine::{z_path, Wine, WINDOWS_ENGINE};
use harness::{assert_fsck_clean, free_port, workspace_root, DpkgRoot, Guest, Ssh};

/// Generous: a systemd boot under TCG takes 35 to 90 s here, more when
/// the other guests of this file boot at the same time.
const BOOT: Duration = Duration::from_secs(420);
const POWER_OFF: Duration = Duration::from_secs(180);
/// The line the getty prints before its prompt (`/etc/issue`, then the
/// hostname and the tty).
const LOGIN_BANNER: &str = "colinux ttyS0";
const GIB_IN_KIB: u64 = 1 << 20;

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
        workspace_root()
            .join("target/runtime")
            .join(triple)
            .join("colinux-daemon")
    })
}

/// The release bundle, as `cargo xtask dist` publishes it (a no-op when
/// it is current: the dist test built it).
fn release() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        xtask_ok(&["dist"]);
        workspace_root().join("target/dist")
    })
}

/// The bundle's file whose name starts with `prefix`.
fn released(prefix: &str) -> PathBuf {
    let dir = release();
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(prefix) && !name.ends_with(".minisig")
        })
        .unwrap_or_else(|| panic!("no {prefix}* in {}", dir.display()))
}

/// The Linux packages a user installs: colinux and colinux-image-debian.
const DEBS: [&str; 2] = ["colinux_", "colinux-image-debian_"];

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
    /// Take the daemon, kernel and image from the release's .debs,
    /// installed into a scratch root, instead of from their stages.
    from_release: bool,
}

const GIB: u64 = 1 << 30;
/// Where the image package puts the image.
const INSTALLED_IMAGE: &str = "/usr/share/colinux/debian.ext4.zst";
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

/// A guest as users make one: `daemon --create NAME` into `dir`, from
/// `image` (or the one the daemon finds beside itself), with `tokens` for
/// its config and a disk `size` bytes large. Returns its config and disk.
fn create_with(
    daemon: &Path,
    name: &str,
    image: Option<&Path>,
    dir: &Path,
    size: u64,
    tokens: &[String],
) -> (PathBuf, PathBuf) {
    let mut command = Command::new(daemon);
    command.arg("--create").arg(name);
    if let Some(image) = image {
        command.arg("--image").arg(image);
    }
    let out = command
        .arg("--data-dir")
        .arg(dir)
        .arg("--size")
        .arg(format!("{}K", size >> 10))
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

/// The stock image `name` (built, or found current) unpacked: its size.
fn stock_image(name: &str) -> (PathBuf, u64) {
    xtask_ok(&["image", "--distro", name]);
    let images = workspace_root().join("target/images").join(name);
    let bytes = std::fs::metadata(images.join(format!("{name}.ext4")))
        .unwrap()
        .len();
    (images.join(format!("{name}.ext4.zst")), bytes)
}

/// [`create_with`] the runtime stage's daemon and the image stage's image,
/// `grow` bytes larger.
fn create(name: &str, dir: &Path, grow: u64, tokens: &[String]) -> (PathBuf, PathBuf) {
    let (image, bytes) = stock_image(name);
    create_with(daemon(), name, Some(&image), dir, bytes + grow, tokens)
}

/// The host keys and machine-ids of the guests made from the shipped
/// image so far: no two may share one.
fn check_unique(guest: &str, machine_id: &str, host_key: &str) {
    static SEEN: Mutex<Vec<(String, String, String)>> = Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    for (other, id, key) in seen.iter() {
        assert_ne!(id, machine_id, "{guest} and {other} share a machine-id");
        assert_ne!(key, host_key, "{guest} and {other} share an SSH host key");
    }
    seen.push((guest.into(), machine_id.into(), host_key.into()));
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
    let mut tokens = vec![
        format!("eth0=slirp,,tcp:{port}:22"),
        format!("root_key={}", ssh.public_key().display()),
    ];
    if stock.console_login {
        tokens.push(format!("root_password_hash={}", password_hash()));
    }
    let grow = if stock.grow_and_trim { GIB } else { 0 };
    let (stage_image, image_bytes) = stock_image(stock.name);
    let installed = stock.from_release.then(|| {
        let machine = DpkgRoot::new(&t.path().join("machine")).unwrap();
        let mut install = machine.dpkg(&["--install"]);
        let out = install.args(DEBS.map(released)).output().unwrap();
        assert!(out.status.success(), "dpkg --install: {out:?}");
        machine
    });
    let (daemon, conf, image) = match &installed {
        // The installed daemon finds the installed kernel and image.
        Some(machine) => {
            let daemon = machine.path().join("usr/bin/colinux-daemon");
            let data = machine.path().join("var/lib/colinux");
            let size = image_bytes + grow;
            let (conf, image) = create_with(&daemon, stock.name, None, &data, size, &tokens);
            (daemon, conf, image)
        }
        None => {
            xtask_ok(&["kernel", "--arch", stock.kernel_arch]);
            let kernel = workspace_root()
                .join("target/kernel")
                .join(stock.kernel_arch)
                .join("bzImage");
            tokens.push(format!("kernel={}", kernel.display()));
            let size = image_bytes + grow;
            let (conf, image) = create_with(
                daemon(),
                stock.name,
                Some(&stage_image),
                t.path(),
                size,
                &tokens,
            );
            (daemon().to_path_buf(), conf, image)
        }
    };
    let built = started.elapsed();

    // The installed guest runs as its systemd unit runs it (detached, by
    // name), its console through the installed colinux-console.
    let name = format!("guests-{}", stock.name);
    let mut args: Vec<String> = Vec::new();
    if installed.is_some() {
        args.push("-d".into());
    }
    args.extend([
        "--name".into(),
        name.clone(),
        format!("@{}", conf.display()),
        "accel=tcg".into(),
    ]);
    args.extend(stock.settings.iter().map(|s| s.to_string()));
    let mut guest = Guest::start(&name, daemon.to_str().unwrap(), &args).unwrap();
    let mut console = installed.as_ref().map(|machine| {
        guest
            .wait_for(&format!("colinux-console {name}"), BOOT)
            .unwrap();
        let program = machine.path().join("usr/bin/colinux-console");
        Guest::start(
            &format!("{name}-console"),
            program.to_str().unwrap(),
            std::slice::from_ref(&name),
        )
        .unwrap()
    });
    // What the first start applied is checked from inside (the facts):
    // its console line can drown in systemd's status output.
    console
        .as_mut()
        .unwrap_or(&mut guest)
        .wait_for(LOGIN_BANNER, BOOT)
        .unwrap();
    let at_login = started.elapsed();
    ssh.wait_ready(&guest, Duration::from_secs(120)).unwrap();
    if stock.console_login {
        console_login(console.as_mut().unwrap_or(&mut guest));
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
    if let Some(console) = &mut console {
        let status = console.wait_exit(Duration::from_secs(30)).unwrap();
        assert_eq!(status.code(), Some(0), "the guest stopped: exit code 0");
    }
    if let Some(machine) = &installed {
        check_unique("the Linux guest", fact("machine_id"), fact("host_key"));
        let purge = machine
            .dpkg(&["--purge", "colinux", "colinux-image-debian"])
            .output()
            .unwrap();
        assert!(purge.status.success(), "dpkg --purge: {purge:?}");
        assert!(
            !machine.path().join(&INSTALLED_IMAGE[1..]).exists(),
            "the image package left its image"
        );
    }
    // After a purge too: the guest's disk is the user's.
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
echo "host_key=$(cut -d' ' -f2 /etc/ssh/ssh_host_ed25519_key.pub)"
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

/// The shipped image (Debian stable on i386) from the release's .debs,
/// with more memory than 32 bits address: PAE.
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
        from_release: true,
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
        from_release: false,
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
        from_release: false,
    });
}

/// No credentials, and someone at a terminal: the first boot asks for
/// root's password on the console, and the next boot does not ask again.
#[test]
fn a_first_boot_without_credentials_asks_for_a_password_once() {
    let t = tempfile::tempdir().unwrap();
    xtask_ok(&["kernel", "--arch", "i386"]);
    let kernel = workspace_root().join("target/kernel/i386/bzImage");
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

/// The service the ini asks for: `colinux-` and its default name.
const SERVICE: &str = "colinux-colinux";

/// The release on a Windows desk, as coMosix deployed it: the bundle's
/// setup.exe run silently under Wine with a colinux.ini beside it that
/// names the Windows engine, the memory, root's key, the guest's size and
/// the service; the Windows service it installs boots the guest it
/// created from the installed config (`colinux.conf`), its console is the
/// installed colinux-console, SSH with that key works, the service's stop
/// powers the guest off, and the uninstaller removes the service and
/// leaves the guest's disk.
#[test]
fn the_release_installs_a_guest_on_windows_that_its_service_boots_and_that_outlives_the_uninstall()
{
    let started = Instant::now();
    let engine = WINDOWS_ENGINE.program();
    assert!(
        engine.is_file(),
        "{}: the Windows engine is missing; `cargo xtask setup` fetches it",
        engine.display()
    );
    let wine = Wine::prepare(&workspace_root().join("target/cache")).unwrap();
    let share = tempfile::tempdir().unwrap();
    let setup_exe = format!(
        "colinux-{}-windows-x86_64-setup.exe",
        env!("CARGO_PKG_VERSION")
    );
    std::fs::copy(release().join(setup_exe), share.path().join("setup.exe")).unwrap();
    let ssh = Ssh::keygen(share.path(), 0).unwrap();
    std::fs::copy(ssh.public_key(), share.path().join("root.pub")).unwrap();
    let (_, image_bytes) = stock_image("debian");
    let size_mib = (image_bytes + GIB) >> 20;
    std::fs::write(
        share.path().join("colinux.ini"),
        format!(
            "; a desk\r\n[comosix]\r\nmemory_size = 512\r\n[engine]\r\nqemu = {}\r\n\
             [credentials]\r\nroot_key = root.pub\r\n[guest]\r\nsize = {size_mib}M\r\n\
             [service]\r\ninstall = yes\r\n",
            z_path(&engine)
        ),
    )
    .unwrap();

    let guests = wine.drive_c().join("ProgramData/coLinux");
    let _ = std::fs::remove_dir_all(&guests);
    // No space: NSIS takes /D= unquoted, and Wine quotes an argument
    // with one (the daemon's own test covers such paths).
    let install = wine.drive_c().join("coLinuxRelease");
    let _ = std::fs::remove_dir_all(&install);
    let win_install = r"C:\coLinuxRelease";
    // What an interrupted run may have left in the prefix.
    let sc = |args: &[&str]| Wine::output(wine.command("sc").args(args)).unwrap();
    sc(&["stop", SERVICE]);
    sc(&["delete", SERVICE]);
    let setup = Wine::output(
        wine.command("setup.exe")
            .args(["/S", &format!("/D={win_install}")])
            .current_dir(share.path()),
    )
    .unwrap();
    let log = std::fs::read_to_string(wine.drive_c().join("users/root/Temp/colinux-setup.log"))
        .unwrap_or_default();
    assert!(setup.status.success(), "setup.exe /S: {setup:?}\n{log}");
    assert!(log.contains("created guest debian"), "{log}");
    let disk = guests.join("debian.ext4");
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), size_mib << 20);
    let guest_conf = std::fs::read_to_string(guests.join("debian.conf")).unwrap();
    let port: u16 = guest_conf
        .split("eth0=slirp,,tcp:")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no SSH forward in {guest_conf}"));
    let ssh = ssh.at_port(port);
    let installed = std::time::Instant::now();

    // The installed service boots the guest; its console is the named pipe.
    let start = sc(&["start", SERVICE]);
    assert!(start.status.success(), "sc start: {start:?}\n{log}");
    // The service is running before its daemon has made the console's
    // pipe: until then the console says there is no such guest and exits.
    // Attached, it replays the console from the kernel's first line.
    let deadline = Instant::now() + harness::scaled(Duration::from_secs(120));
    let mut guest = loop {
        let mut console = wine.command(install.join("colinux-console.exe"));
        console.arg("colinux");
        let mut guest = Guest::spawn("guests-windows", console).unwrap();
        match guest.wait_for("Linux version", 2 * BOOT) {
            Ok(_) => break guest,
            Err(e) if Instant::now() > deadline => panic!("colinux-console: {e}"),
            Err(_) => std::thread::sleep(Duration::from_secs(2)),
        }
    };
    guest.wait_for(LOGIN_BANNER, 2 * BOOT).unwrap();
    let at_login = installed.elapsed();
    ssh.wait_ready(&guest, Duration::from_secs(240)).unwrap();
    let facts = facts(&ssh.output(&guest, FACTS).unwrap());
    let fact = |name: &str| facts.get(name).map(String::as_str).unwrap_or_default();
    assert!(
        fact("credentials").starts_with("root's SSH key set from the host's credentials"),
        "{facts:?}"
    );
    let root_bytes: u64 = fact("root_bytes").parse().unwrap_or(0);
    assert!(
        root_bytes > image_bytes + 900 * MIB,
        "the root filesystem did not grow into the {size_mib} MiB disk: {facts:?}"
    );
    check_unique("the Windows guest", fact("machine_id"), fact("host_key"));
    // Stopping the service powers the guest off.
    let stop = sc(&["stop", SERVICE]);
    assert!(stop.status.success(), "sc stop: {stop:?}");
    guest.wait_for("reboot: Power down", 2 * POWER_OFF).unwrap();
    let status = guest.wait_exit(POWER_OFF).unwrap();
    assert_eq!(status.code(), Some(0), "the guest stopped: exit code 0");
    let deadline = Instant::now() + harness::scaled(POWER_OFF);
    while !String::from_utf8_lossy(&sc(&["query", SERVICE]).stdout).contains("STOPPED") {
        assert!(Instant::now() < deadline, "{SERVICE} did not stop");
        std::thread::sleep(Duration::from_secs(1));
    }

    let uninstall = Wine::output(
        wine.command(install.join("uninstall.exe"))
            .args(["/S", &format!("_?={win_install}")])
            .current_dir(&install),
    )
    .unwrap();
    assert!(
        uninstall.status.success(),
        "uninstall.exe /S: {uninstall:?}"
    );
    assert!(!install.join("colinux-daemon.exe").exists());
    assert!(
        !sc(&["query", SERVICE]).status.success(),
        "the uninstaller left {SERVICE}"
    );
    assert_fsck_clean(&disk);
    eprintln!(
        "windows: installed in {:.0} s, boot to the login banner {:.0} s, whole test {:.0} s",
        (installed - started).as_secs_f64(),
        at_login.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
