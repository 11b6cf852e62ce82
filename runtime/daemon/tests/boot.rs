//! colinux-daemon end to end: our i386 kernel and the debian image (both
//! built by `cargo xtask`, cached) booted by the daemon under TCG, with a
//! root disk, a scratch disk, a host folder and slirp with a port redirect.
//!
//! The guest runs one extra unit, written into a copy of the image with
//! debugfs, that exercises the devices and reports on the console.
//!
//! A stop must power the guest off cleanly whenever it comes: after the
//! login prompt, mid-boot, and as the engine starts (before anything in
//! the guest listens for the power button). The faults ride along: the
//! daemon killed (QEMU goes too, the next start under the name works, the
//! guest's ext4 recovers), QEMU killed, two daemons racing for one name,
//! and a guest that never powers off (exit code 6 at the timeout).
#![cfg(target_os = "linux")]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    artifacts, root_with_checks, run, scratch_written, ssh_banner, wait_seen, BOOT, POWER_OFF,
};
use harness::{assert_fsck_clean, free_port, scaled, Guest};

const DAEMON: &str = env!("CARGO_BIN_EXE_colinux-daemon");
const CONSOLE: &str = env!("CARGO_BIN_EXE_colinux-console");

/// A guest directory: a copy of the image with the checks in it, a scratch
/// disk, a host folder, and `test.conf` naming them with relative paths.
struct GuestDir {
    dir: tempfile::TempDir,
    port: u16,
}

impl GuestDir {
    fn new() -> GuestDir {
        let (kernel, _) = artifacts();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        root_with_checks(&p.join("root.ext4"));
        std::fs::File::create(p.join("scratch.img"))
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        std::fs::create_dir(p.join("share")).unwrap();
        // exec0: a helper that records its pid and would run for ten minutes.
        std::fs::write(
            p.join("helper.sh"),
            "#!/bin/sh\necho $$ > \"$1\"\nexec sleep 600\n",
        )
        .unwrap();
        run("chmod", &["+x", p.join("helper.sh").to_str().unwrap()]);
        std::fs::write(p.join("share/hello.txt"), "hello-from-host\n").unwrap();
        let port = free_port();
        std::fs::write(
            p.join("test.conf"),
            format!(
                "# The end-to-end test's guest.\n\
                 kernel=\"{}\"\n\
                 mem=512\n\
                 cobd0=root.ext4   # root\n\
                 cobd1=scratch.img # scratch\n\
                 cofs0=share\n\
                 eth0=slirp,,tcp:{port}:22\n\
                 exec0=./helper.sh,\"helper.pid\"\n\
                 accel=tcg\n\
                 root=/dev/cobd0 ro\n",
                kernel.display()
            ),
        )
        .unwrap();
        GuestDir { dir, port }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `colinux-daemon ARGS… @test.conf`, with the console log kept.
    fn daemon(&self, log_name: &str, args: &[&str]) -> Guest {
        let mut all: Vec<String> = vec!["--cwd".into(), self.dir.path().display().to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        all.push(format!("@{}", self.path("test.conf").display()));
        Guest::start(log_name, DAEMON, &all).unwrap()
    }
}

fn sigterm(pid: u32) {
    run("kill", &["-TERM", &pid.to_string()]);
}

fn sigkill(pid: u32) {
    run("kill", &["-KILL", &pid.to_string()]);
}

/// The engine's pid, from the daemon's "running (engine pid N, …)" line.
fn engine_pid(daemon: &mut Guest) -> u32 {
    let line = daemon.wait_for("engine pid", BOOT).unwrap();
    line.split("engine pid ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no engine pid in {line:?}"))
}

/// Whether process `pid` ends (or is a zombie) within `timeout` (scaled).
fn ends_within(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + scaled(timeout);
    while Instant::now() < deadline {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state follows the parenthesised command name.
            Ok(stat) if !stat.rsplit(')').next().unwrap_or("").starts_with(" Z") => {}
            _ => return true,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn assert_runtime_dir_gone(name: &str) {
    let dir = colinux_daemon::host::runtime_dir(name);
    assert!(!dir.exists(), "{} was left behind", dir.display());
}

/// `--shutdown-timeout` for a stop that comes before the guest has booted:
/// the power-off waits for the boot to reach systemd-logind.
fn early_stop_timeout() -> String {
    scaled(BOOT).as_secs().to_string()
}

/// SIGTERM now; then the guest's own power-off on the console, exit code
/// 0, no runtime directory left, and a clean root filesystem.
fn sigterm_powers_off_cleanly(daemon: &mut Guest, name: &str, root_image: &Path) {
    sigterm(daemon.pid());
    daemon
        .wait_for("powering the guest off", Duration::from_secs(60))
        .unwrap();
    daemon
        .wait_for("reboot: Power down", BOOT + POWER_OFF)
        .unwrap();
    let status = daemon.wait_exit(POWER_OFF).unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "a clean power-off is exit code 0; console log {}",
        daemon.log_path().display()
    );
    assert!(daemon
        .transcript()
        .iter()
        .any(|l| l.contains("the guest powered off")));
    assert_runtime_dir_gone(name);
    assert_fsck_clean(root_image);
}

#[test]
fn boots_with_disks_share_and_redirect_then_sigterm_powers_off_cleanly() {
    let g = GuestDir::new();
    let mut daemon = g.daemon(
        "daemon-attached",
        &["-p", g.path("daemon.pid").to_str().unwrap()],
    );
    daemon.wait_for("E2E: started", BOOT).unwrap();
    daemon
        .wait_for("E2E: scratch written", Duration::from_secs(30))
        .unwrap();
    daemon
        .wait_for("E2E: cofs read: hello-from-host", Duration::from_secs(30))
        .unwrap();
    let devices = daemon
        .wait_for("E2E: devices:", Duration::from_secs(30))
        .unwrap();
    assert!(
        devices.contains("/dev/cobd0=75:0") && devices.contains("/dev/cobd1=75:1"),
        "{devices}"
    );
    wait_seen(&mut daemon, "colinux ttyS0", BOOT);
    let pid: u32 = std::fs::read_to_string(g.path("daemon.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, daemon.pid(), "the pidfile holds the daemon's pid");

    let banner = ssh_banner(g.port);
    assert!(banner.starts_with("SSH-2.0-"), "{banner:?}");

    // After the login prompt: the stop issue 15 did not break.
    sigterm_powers_off_cleanly(&mut daemon, "test", &g.path("root.ext4"));
    assert!(!g.path("daemon.pid").exists(), "the pidfile is removed");
    let helper = std::fs::read_to_string(g.path("helper.pid")).expect("exec0 ran");
    assert!(
        !Path::new("/proc").join(helper.trim()).exists(),
        "exec0 (pid {}) outlived the guest",
        helper.trim()
    );

    assert!(
        scratch_written(&g.path("scratch.img")),
        "what the guest wrote to /dev/cobd1"
    );
    assert_eq!(
        std::fs::read_to_string(g.path("share/from-guest.txt")).unwrap(),
        "written-by-guest\n"
    );
}

#[test]
fn sigterm_mid_boot_powers_off_cleanly() {
    let g = GuestDir::new();
    let name = "e2e-mid-boot";
    let timeout = early_stop_timeout();
    let mut daemon = g.daemon(
        "daemon-sigterm-mid-boot",
        &["--name", name, "--shutdown-timeout", &timeout],
    );
    // systemd has just started: nothing listens for the power button yet.
    daemon.wait_for("Welcome to", BOOT).unwrap();
    sigterm_powers_off_cleanly(&mut daemon, name, &g.path("root.ext4"));
}

#[test]
fn a_killed_daemon_takes_qemu_along_and_the_next_start_stopped_at_once_powers_off_cleanly() {
    let g = GuestDir::new();
    let name = "e2e-restarted";
    let mut killed = g.daemon("daemon-sigkilled", &["--name", name]);
    let engine = engine_pid(&mut killed);
    // The root filesystem is mounted read-write by then.
    killed.wait_for("Local File Systems", BOOT).unwrap();
    sigkill(killed.pid());
    killed.wait_exit(Duration::from_secs(30)).unwrap();
    assert!(
        ends_within(engine, Duration::from_secs(30)),
        "QEMU (pid {engine}) outlived its killed daemon"
    );
    assert!(
        colinux_daemon::host::runtime_dir(name)
            .join("daemon.lock")
            .exists(),
        "a killed daemon cannot clean up; the next start must cope with what it left"
    );
    let fsck = Command::new("e2fsck")
        .arg("-p")
        .arg(g.path("root.ext4"))
        .output()
        .unwrap();
    assert!(
        matches!(fsck.status.code(), Some(0 | 1)),
        "e2fsck -p could not recover the guest's ext4 ({}):\n{}{}",
        fsck.status,
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    assert_fsck_clean(&g.path("root.ext4"));

    // The same name again, stopped as soon as the engine runs: the power
    // button is pressed long before the guest can listen for it.
    let timeout = early_stop_timeout();
    let mut again = g.daemon(
        "daemon-sigterm-at-start",
        &["--name", name, "--shutdown-timeout", &timeout],
    );
    engine_pid(&mut again);
    sigterm_powers_off_cleanly(&mut again, name, &g.path("root.ext4"));
}

/// The kernel and a copy of the image, booted with a shell as PID 1: no
/// ACPI listener at all, so it never powers off by itself.
fn no_listener_args(dir: &Path, name: &str) -> Vec<String> {
    let (kernel, image) = artifacts();
    let root = dir.join("root.ext4");
    if !root.exists() {
        run(
            "cp",
            &[
                "--sparse=always",
                image.to_str().unwrap(),
                root.to_str().unwrap(),
            ],
        );
    }
    vec![
        "--name".into(),
        name.into(),
        format!("kernel={}", kernel.display()),
        format!("cobd0={}", root.display()),
        "accel=tcg".into(),
        "mem=128".into(),
        "root=/dev/cobd0".into(),
        "ro".into(),
        "init=/bin/sh".into(),
    ]
}

#[test]
fn racing_daemons_a_guest_that_never_powers_off_and_a_killed_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let name = "e2e-no-listener";

    // Three daemons for one name at once: exactly one runs.
    let mut args = no_listener_args(dir.path(), name);
    args.extend(["--shutdown-timeout".into(), "20".into()]);
    let mut contenders: Vec<Guest> = (0..3)
        .map(|i| Guest::start(&format!("daemon-race-{i}"), DAEMON, &args).unwrap())
        .collect();
    let deadline = Instant::now() + scaled(Duration::from_secs(60));
    let mut winner = None;
    let mut losers = 0;
    while winner.is_none() || losers < 2 {
        assert!(Instant::now() < deadline, "the race did not settle");
        let mut i = 0;
        while i < contenders.len() {
            let said = contenders[i].transcript();
            if said.iter().any(|l| l.contains("engine pid")) {
                assert!(winner.is_none(), "two daemons run the guest {name:?}");
                winner = Some(contenders.remove(i));
            } else if said.iter().any(|l| l.contains("already running")) {
                let mut loser = contenders.remove(i);
                assert_eq!(
                    loser.wait_exit(Duration::from_secs(10)).unwrap().code(),
                    Some(2)
                );
                losers += 1;
            } else {
                i += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut winner = winner.unwrap();

    // Its guest ignores the power button: exit code 6 at the timeout,
    // and the runtime directory goes anyway.
    winner.wait_for("as init process", BOOT).unwrap();
    sigterm(winner.pid());
    winner
        .wait_for(
            "still waiting for the guest to power off",
            Duration::from_secs(60),
        )
        .unwrap();
    let status = winner.wait_exit(POWER_OFF).unwrap();
    assert_eq!(status.code(), Some(6), "{}", winner.log_path().display());
    let said = winner.transcript();
    assert!(said
        .iter()
        .any(|l| l.contains("did not power off within 20 s")));
    assert!(!said.iter().any(|l| l.contains("reboot: Power down")));
    assert_runtime_dir_gone(name);

    // QEMU killed under a detached daemon: reported, exit code 4, and its
    // sockets, pidfile and runtime directory are gone.
    let pidfile = dir.path().join("daemon.pid");
    let mut args = no_listener_args(dir.path(), name);
    args.extend(["-d".into(), "-p".into(), pidfile.display().to_string()]);
    let mut daemon = Guest::start("daemon-qemu-killed", DAEMON, &args).unwrap();
    let engine = engine_pid(&mut daemon);
    let runtime_dir = colinux_daemon::host::runtime_dir(name);
    for made in ["console.sock", "qmp.sock", "daemon.lock"] {
        assert!(runtime_dir.join(made).exists(), "no {made} while running");
    }
    assert!(pidfile.exists());
    sigkill(engine);
    let status = daemon.wait_exit(Duration::from_secs(30)).unwrap();
    assert_eq!(status.code(), Some(4), "{}", daemon.log_path().display());
    assert!(
        daemon
            .transcript()
            .iter()
            .any(|l| l.contains("the engine failed: qemu exited with signal: 9")),
        "{}",
        daemon.log_path().display()
    );
    assert!(!pidfile.exists(), "the pidfile outlived the daemon");
    assert_runtime_dir_gone(name);
}

#[test]
fn a_detached_console_attaches_refuses_a_second_detaches_and_reattaches() {
    let g = GuestDir::new();
    let name = "e2e-detached";
    let mut daemon = g.daemon("daemon-detached", &["-d", "--name", name]);
    daemon
        .wait_for("colinux-console e2e-detached", Duration::from_secs(60))
        .unwrap();

    let mut first = Guest::start("console-first", CONSOLE, &[name.into()]).unwrap();
    first.wait_for("E2E: done", BOOT).unwrap();
    // No credentials and nobody at a terminal: the boot says how to add
    // them, and goes on to the login prompt without waiting.
    wait_seen(
        &mut first,
        "nobody can log in yet: give the daemon root_key=FILE",
        BOOT,
    );
    wait_seen(&mut first, "colinux ttyS0", BOOT);

    // A second console is told, and the first keeps working.
    let second = Command::new(CONSOLE).arg(name).output().unwrap();
    let said = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(3), "{said}");
    assert!(
        said.contains("another colinux-console is attached"),
        "{said}"
    );
    // The getty echoes what is typed; an empty password then brings the
    // prompt back ("Login incorrect" on bookworm, a new banner on trixie).
    first.send("root\n").unwrap();
    first
        .wait_for("login: root", Duration::from_secs(60))
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    first.send("\n").unwrap();

    // Detach: the guest keeps running.
    first.close_input();
    assert_eq!(
        first.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );

    // Re-attach: the scrollback comes back, and typing works again.
    let mut again = Guest::start("console-again", CONSOLE, &[name.into()]).unwrap();
    again
        .wait_for("E2E: done", Duration::from_secs(30))
        .unwrap();
    again
        .wait_for("login: root", Duration::from_secs(30))
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    // The guest echoes it, at whichever prompt its login is.
    again.send("root\n").unwrap();
    again.wait_for("root", Duration::from_secs(60)).unwrap();

    sigterm(daemon.pid());
    let status = daemon.wait_exit(POWER_OFF).unwrap();
    assert_eq!(status.code(), Some(0));
    again
        .wait_for("the guest stopped", Duration::from_secs(10))
        .unwrap();
    assert_runtime_dir_gone(name);
    assert_fsck_clean(&g.path("root.ext4"));
}

/// A stand-in engine that only records that it ran.
fn fake_engine(dir: &Path) -> PathBuf {
    let path = dir.join("fake-qemu");
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(
        f,
        "#!/bin/sh\ntouch \"{}\"",
        dir.join("engine-ran").display()
    )
    .unwrap();
    drop(f);
    run("chmod", &["+x", path.to_str().unwrap()]);
    path
}

#[test]
fn config_errors_are_reported_before_the_engine_starts() {
    let dir = tempfile::tempdir().unwrap();
    let engine = fake_engine(dir.path());
    std::fs::write(dir.path().join("vmlinuz"), "not really a kernel").unwrap();
    std::fs::write(
        dir.path().join("bad.conf"),
        format!(
            "kernel=vmlinuz\nqemu={}\ncobd0=missing-root.img\n",
            engine.display()
        ),
    )
    .unwrap();
    let err = daemon_fails(dir.path(), &["@bad.conf"], 2);
    assert!(
        err.contains("bad.conf:3") && err.contains("missing-root.img"),
        "{err}"
    );
    assert!(
        !dir.path().join("engine-ran").exists(),
        "the engine was started"
    );

    // A syntax error names its place too.
    std::fs::write(
        dir.path().join("mac.conf"),
        "kernel=vmlinuz eth0=slirp,zz:11\n",
    )
    .unwrap();
    let err = daemon_fails(dir.path(), &["@mac.conf"], 2);
    assert!(err.contains("mac.conf:1") && err.contains("MAC"), "{err}");

    // A missing engine says which package has it.
    let err = daemon_fails(dir.path(), &["kernel=vmlinuz", "qemu=no-such-qemu"], 3);
    assert!(err.contains("qemu-system-x86"), "{err}");
}

/// Runs the daemon in `dir`, expects success, returns its stdout.
fn daemon_ok(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(DAEMON)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Runs the daemon in `dir`, expects exit code `code`, returns its stderr.
fn daemon_fails(dir: &Path, args: &[&str], code: i32) -> String {
    let out = Command::new(DAEMON)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{err}");
    err
}

#[test]
fn a_kernel_panic_ends_the_daemon_with_exit_code_1() {
    let (kernel, _) = artifacts();
    let args: Vec<String> = vec![
        "--name".into(),
        "e2e-panic".into(),
        format!("kernel={}", kernel.display()),
        "accel=tcg".into(),
        "mem=128".into(),
        "root=/dev/cobd7".into(), // no such disk: the kernel cannot mount its root
    ];
    let mut daemon = Guest::start("daemon-panic", DAEMON, &args).unwrap();
    daemon.wait_for("Kernel panic - not syncing", BOOT).unwrap();
    let status = daemon.wait_exit(Duration::from_secs(60)).unwrap();
    assert_eq!(status.code(), Some(1), "a guest panic is exit code 1");
    assert!(daemon
        .transcript()
        .iter()
        .any(|l| l.contains("the guest crashed: kernel panic")));
}

#[test]
fn an_engine_that_fails_at_once_is_exit_code_4_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let engine = dir.path().join("broken-qemu");
    std::fs::write(
        &engine,
        "#!/bin/sh\necho 'qemu: could not load kernel' >&2\nexit 1\n",
    )
    .unwrap();
    run("chmod", &["+x", engine.to_str().unwrap()]);
    std::fs::write(dir.path().join("vmlinuz"), "k").unwrap();
    let err = daemon_fails(
        dir.path(),
        &[
            "--name",
            "e2e-broken",
            "kernel=vmlinuz",
            "accel=tcg",
            &format!("qemu={}", engine.display()),
        ],
        4,
    );
    assert!(
        err.contains("exited at once") && err.contains("could not load kernel"),
        "{err}"
    );
}

#[test]
fn dry_run_prints_settings_and_the_engine_command_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = fake_engine(dir.path());
    std::fs::write(dir.path().join("vmlinuz"), "k").unwrap();
    std::fs::write(dir.path().join("root.img"), "r").unwrap();
    let qemu = format!("qemu={}", engine.display());
    let text = daemon_ok(
        dir.path(),
        &[
            "--dry-run",
            "kernel=vmlinuz",
            "cobd0=root.img",
            "accel=tcg",
            "mem=128",
            &qemu,
            "root=/dev/cobd0",
        ],
    );
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == engine.display().to_string())
        .expect("engine line");
    let argv = &lines[at + 1..];
    let after = |flag: &str| argv[argv.iter().position(|a| *a == flag).unwrap() + 1];
    assert_eq!(after("-m"), "128");
    assert_eq!(after("-accel"), "tcg");
    assert_eq!(after("-append"), "console=ttyS0 root=/dev/cobd0");
    assert!(after("-drive").contains(&format!("file={}", dir.path().join("root.img").display())));
    assert!(
        text.contains("mem=128"),
        "the resolved settings come first:\n{text}"
    );
    assert!(
        !dir.path().join("engine-ran").exists(),
        "a dry run started the engine"
    );
}

#[test]
fn status_driver_says_what_will_be_used() {
    let text = daemon_ok(Path::new("."), &["--status-driver"]);
    assert!(text.contains("will use"), "{text}");
}
