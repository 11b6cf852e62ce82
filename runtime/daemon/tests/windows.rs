//! colinux-daemon.exe end to end: the Windows build of the daemon (the
//! runtime stage's), run under wine64, drives the real QEMU for Windows
//! (the Windows engine that `cargo xtask setup` fetches) to boot our
//! kernels and the stock image under TCG. This is the Windows code path:
//! Windows paths in the config, the win-stdio console, QMP over loopback
//! TCP, the named-pipe console for colinux-console.exe, console control
//! events, and the job object that takes the engine with a killed daemon.
//!
//! Boots are few and shared: one attached boot carries the paths, the
//! forward, the disks, root's key at the first start (the seed disk), an
//! SSH login, console input and Ctrl-C; one detached boot carries
//! the named-pipe console, the killed daemon, the restart and a killed
//! engine; a panic boot uses the x86_64 kernel; a service boot under
//! Wine's service manager carries install, start, stop and removal. The
//! attached boot also reads a coMosix node's ini (its seed disk checked
//! with mtools on the host and found by its label inside) and carries
//! ttys0=COM5.
#![cfg(target_os = "linux")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{add_checks, artifacts, run, scratch_written, ssh_banner, wait_seen, BOOT};
use harness::wine::{z_path, Wine, WINDOWS_ENGINE};
use harness::{
    assert_fsck_clean, free_port, scaled, workspace_root, xtask_ok, Guest, SerialLine, Ssh,
};

/// Wine adds its own start-up to every program, and TCG under Wine is
/// slower than under Linux.
const WINE_BOOT: Duration = Duration::from_secs(2 * BOOT.as_secs());
const POWER_OFF: Duration = Duration::from_secs(180);

struct Windows {
    wine: Wine,
    daemon: PathBuf,
    console: PathBuf,
    /// The engine's program, as a Windows path.
    engine: String,
}

/// The runtime's Windows binaries, the Wine prefix and the engine, once.
fn windows() -> &'static Windows {
    static READY: OnceLock<Windows> = OnceLock::new();
    READY.get_or_init(|| {
        xtask_ok(&["runtime"]);
        let engine = WINDOWS_ENGINE.program();
        assert!(
            engine.is_file(),
            "{}: the Windows engine is missing; `cargo xtask setup` fetches it",
            engine.display()
        );
        let bin = workspace_root().join("target/runtime/x86_64-pc-windows-gnu");
        Windows {
            wine: Wine::prepare(&workspace_root().join("target/cache")).unwrap(),
            daemon: bin.join("colinux-daemon.exe"),
            console: bin.join("colinux-console.exe"),
            engine: z_path(&engine),
        }
    })
}

impl Windows {
    fn start(&self, log: &str, exe: &Path, args: &[String]) -> Guest {
        let mut command = self.wine.command(exe);
        command.args(args);
        Guest::spawn(log, command).unwrap()
    }

    fn daemon(&self, log: &str, args: &[String]) -> Guest {
        self.start(log, &self.daemon, args)
    }

    fn daemon_output(&self, args: &[String]) -> Output {
        Wine::output(self.wine.command(&self.daemon).args(args)).unwrap()
    }

    /// A folder on the prefix's `C:` drive, as (host path, Windows path).
    fn drive_c_dir(&self, name: &str) -> (PathBuf, String) {
        let host = self.wine.drive_c().join(name);
        let _ = std::fs::remove_dir_all(&host);
        std::fs::create_dir_all(&host).unwrap();
        (host, format!("C:\\{}", name.replace('/', "\\")))
    }

    /// The daemon's runtime directory for `name` (`%TEMP%\colinux\NAME`;
    /// Wine's `%TEMP%` is `C:\users\USER\Temp`), as a host path.
    fn runtime_dir(&self, name: &str) -> Option<PathBuf> {
        let users = std::fs::read_dir(self.wine.drive_c().join("users")).ok()?;
        users
            .filter_map(Result::ok)
            .map(|user| user.path().join("Temp/colinux").join(name))
            .find(|dir| dir.exists())
    }
}

/// The Linux pids of the Windows engine processes that run guest `name`
/// (Wine shows a Windows program's command line in /proc).
fn engines_of(name: &str) -> Vec<u32> {
    let needle = format!("guest={name},");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            (cmdline.contains("qemu-system-x86_64") && cmdline.contains(&needle)).then_some(pid)
        })
        .collect()
}

/// Whether no engine runs guest `name` within `timeout` (scaled).
fn engine_gone_within(name: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + scaled(timeout);
    while Instant::now() < deadline {
        if engines_of(name).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn signal(pid: u32, signal: &str) {
    run("kill", &[signal, &pid.to_string()]);
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_configs_are_refused_before_the_engine_starts() {
    let w = windows();
    let (kernel, _) = artifacts();
    let (dir, win_dir) = w.drive_c_dir("colinux errors");
    std::fs::write(dir.join("root.img"), "r").unwrap();
    let kernel = format!("kernel={}", z_path(kernel));
    let qemu = format!("qemu={}", w.engine);
    let start = |name: &str, extra: &[String]| {
        let mut args = vec!["--name".to_string(), name.to_string()];
        args.extend_from_slice(extra);
        let out = w.daemon_output(&args);
        assert!(engines_of(name).is_empty(), "{name}: an engine was started");
        out
    };

    let no_engine = start(
        "win-no-engine",
        &[
            kernel.clone(),
            "qemu=C:\\no qemu here\\qemu-system-x86_64.exe".into(),
        ],
    );
    let said = stderr_of(&no_engine);
    assert_eq!(no_engine.status.code(), Some(3), "{said}");
    assert!(
        said.contains("C:\\no qemu here\\qemu-system-x86_64.exe not found")
            && said.contains("install QEMU for Windows"),
        "{said}"
    );

    let no_kernel = start(
        "win-no-kernel",
        &["kernel=C:\\nowhere\\vmlinuz".into(), qemu.clone()],
    );
    let said = stderr_of(&no_kernel);
    assert_eq!(no_kernel.status.code(), Some(2), "{said}");
    assert!(said.contains("kernel=C:\\nowhere\\vmlinuz"), "{said}");

    let no_disk = start(
        "win-no-disk",
        &[
            kernel.clone(),
            qemu.clone(),
            format!("cobd0={win_dir}\\missing.img"),
        ],
    );
    let said = stderr_of(&no_disk);
    assert_eq!(no_disk.status.code(), Some(2), "{said}");
    assert!(said.contains("missing.img does not exist"), "{said}");

    let cofs = start(
        "win-cofs",
        &[kernel.clone(), qemu.clone(), format!("cofs0={win_dir}")],
    );
    let said = stderr_of(&cofs);
    assert_eq!(cofs.status.code(), Some(2), "{said}");
    assert_eq!(said.trim().lines().count(), 1, "one line: {said}");
    assert!(said.contains("QEMU for Windows has no 9p"), "{said}");

    // A drive-relative path names no fixed file; a UNC path is checked as
    // any other path is.
    let relative = start(
        "win-drive-relative",
        &[kernel.clone(), qemu.clone(), "cobd0=C:root.img".into()],
    );
    let said = stderr_of(&relative);
    assert_eq!(relative.status.code(), Some(2), "{said}");
    assert_eq!(said.trim().lines().count(), 1, "one line: {said}");
    assert!(
        said.contains(
            "cobd0=C:root.img: C:root.img is relative to the folder drive C: happens to be in"
        ),
        "{said}"
    );
    let unc = start(
        "win-unc",
        &[
            kernel.clone(),
            qemu.clone(),
            r"cobd0=\\nosuchhost\share\root.img".into(),
        ],
    );
    let said = stderr_of(&unc);
    assert_eq!(unc.status.code(), Some(2), "{said}");
    assert!(
        said.contains(r"cobd0=\\nosuchhost\share\root.img"),
        "{said}"
    );

    let whpx = start(
        "win-whpx",
        &[kernel.clone(), qemu.clone(), "accel=whpx".into()],
    );
    let said = stderr_of(&whpx);
    assert_eq!(whpx.status.code(), Some(2), "{said}");
    assert!(
        said.contains("accel=whpx") && said.contains("use accel=auto or accel=tcg"),
        "{said}"
    );

    // A path QEMU for Windows cannot open: MAX_PATH (260) or longer.
    let long = format!("{win_dir}\\{}\\long.img", LONG_DIRS.join("\\"));
    assert!(long.len() > 260, "past MAX_PATH");
    std::fs::create_dir_all(dir.join(LONG_DIRS.join("/"))).unwrap();
    std::fs::write(dir.join(LONG_DIRS.join("/")).join("long.img"), "r").unwrap();
    let too_long = start(
        "win-long-path",
        &[kernel.clone(), qemu.clone(), format!("cobd0={long}")],
    );
    let said = stderr_of(&too_long);
    assert_eq!(too_long.status.code(), Some(2), "{said}");
    assert_eq!(said.trim().lines().count(), 1, "one line: {said}");
    assert!(
        said.contains(&format!(
            "cobd0={long}: the path is {} characters long",
            long.len()
        )) && said.contains("subst X:"),
        "{said}"
    );

    // Commas are doubled for QEMU; spaces and non-ASCII names pass as they are.
    std::fs::write(dir.join("a,b é.img"), "r").unwrap();
    let dry = w.daemon_output(&[
        "--dry-run".into(),
        kernel,
        qemu,
        format!("cobd0={win_dir}\\a,b é.img"),
    ]);
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(dry.status.success(), "{}", stderr_of(&dry));
    assert!(
        text.contains(&format!("file={win_dir}\\a,,b é.img,format=raw")),
        "{text}"
    );
}

/// Folders that make a path longer than Windows' MAX_PATH (260).
const LONG_DIRS: [&str; 3] = [
    "a folder whose name is as long as the names users give their folders when they write whole sentences into them",
    "and a second folder inside it that has a long name of its own",
    "and a third one to be sure that the whole path is well past the limit that Windows sets for it",
];
#[test]
fn boots_to_login_from_windows_paths_and_ctrl_c_powers_it_off_cleanly() {
    let w = windows();
    let (kernel, _) = artifacts();
    let name = "win-attached";
    // The guest made by --create on C: in a folder with a space (its disk
    // unpacked from the image's zstd copy); the scratch disk on Z:.
    let (dir, win_dir) = w.drive_c_dir("colinux test");
    let scratch_dir = tempfile::tempdir().unwrap();
    let scratch = scratch_dir.path().join("scratch.img");
    std::fs::File::create(&scratch)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let port = free_port();
    let ssh = Ssh::keygen(scratch_dir.path(), port).unwrap();
    let image = workspace_root().join("target/images/debian/debian.ext4.zst");
    let created = w.daemon_output(&[
        "--create".into(),
        name.into(),
        "--image".into(),
        z_path(&image),
        "--data-dir".into(),
        win_dir.clone(),
        format!("kernel={}", z_path(kernel)),
        format!("eth0=slirp,,tcp:{port}:22"),
        format!("root_key={}", z_path(&ssh.public_key())),
    ]);
    let said = String::from_utf8_lossy(&created.stdout);
    assert!(
        created.status.success() && said.contains(&format!("ssh -p {port} root@127.0.0.1")),
        "--create: {said}{}",
        stderr_of(&created)
    );
    let root = dir.join(format!("{name}.ext4"));
    add_checks(&root);
    // A serial port: COM5, which Wine maps to a pseudo-terminal here.
    let com5 = SerialLine::open().unwrap();
    w.wine.map_com_port(5, com5.path()).unwrap();
    // More settings as a Windows desk writes them: CRLF lines, quoted paths.
    std::fs::write(
        dir.join("more.conf"),
        format!(
            "# The desk's own additions.\r\nqemu=\"{}\"\r\ncobd1=\"{}\"\r\nttys0=COM5\r\n",
            w.engine,
            z_path(&scratch)
        ),
    )
    .unwrap();
    // And a coMosix node's ini: no head answers under Wine, and its root
    // is the disk above (not NFS), but the seed disk is made all the same.
    let host_key = dir.join("host_key");
    run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            host_key.to_str().unwrap(),
        ],
    );
    std::fs::write(dir.join("munge.key"), [7u8; 1024]).unwrap();
    std::fs::write(
        dir.join("node.ini"),
        "; a coMosix desk\r\n[cluster]\r\nrole = node\r\nhostname_prefix = node-\r\n\
         host_name = Desk1\r\nhead = 10.77.0.1\r\nmunge_key = munge.key\r\n\
         ssh_host_key = host_key\r\n",
    )
    .unwrap();
    let mut daemon = w.daemon(
        "win-daemon-attached",
        &[
            "--name".into(),
            name.into(),
            format!("@{win_dir}\\{name}.conf"),
            format!("@{win_dir}\\more.conf"),
            format!("@{win_dir}\\node.ini"),
        ],
    );
    // accel=auto: no WHPX under Wine, so TCG, and the daemon says which.
    let running = daemon.wait_for("running (engine pid", WINE_BOOT).unwrap();
    assert!(running.contains("accel tcg"), "{running}");
    daemon.wait_for("E2E: scratch written", WINE_BOOT).unwrap();
    wait_seen(&mut daemon, "colinux ttyS0", WINE_BOOT);
    let banner = ssh_banner(port);
    assert!(banner.starts_with("SSH-2.0-OpenSSH"), "{banner:?}");
    // root_key= reached the guest on the seed disk the Windows daemon wrote.
    ssh.wait_ready(&daemon, Duration::from_secs(120)).unwrap();
    let applied = ssh
        .output(&daemon, "cat /var/lib/colinux/credentials-applied")
        .unwrap();
    assert!(
        applied.starts_with("root's SSH key set from the host's credentials"),
        "{applied}"
    );

    // The seed disk the Windows daemon wrote holds the node's files, and
    // the guest finds it by its label.
    let seed = w
        .runtime_dir(name)
        .expect("no runtime directory")
        .join("seed.img");
    let seed = seed.to_str().unwrap();
    let listing = String::from_utf8(run("mdir", &["-b", "-i", seed, "::"]).stdout).unwrap();
    for file in [
        "authorized_keys",
        "comosix.env",
        "munge.key",
        "ssh_host_ed25519_key",
        "ssh_host_ed25519_key.pub",
    ] {
        assert!(listing.contains(&format!("::/{file}")), "{file}: {listing}");
    }
    let env = ssh
        .output(
            &daemon,
            "mount -o ro \"$(blkid -L COSEED)\" /mnt && cat /mnt/comosix.env; umount /mnt",
        )
        .unwrap();
    assert_eq!(
        env,
        "ROLE=node\nHOSTNAME=node-desk1\nHEAD=10.77.0.1\nNETWORK=10.77.0.0/24\n"
    );

    // ttys0=COM5 is the guest's ttyS1: what the guest writes arrives. (The
    // other way is not tested: with the guest reading its ttyS1 and a line
    // typed on the terminal, QEMU for Windows under Wine spun and the
    // guest froze.)
    ssh.output(
        &daemon,
        "stty -F /dev/ttyS1 raw -echo && echo COM5-FROM-GUEST > /dev/ttyS1",
    )
    .unwrap();
    com5.wait_for("COM5-FROM-GUEST\n", Duration::from_secs(60))
        .unwrap();

    // What is typed on the daemon's stdio reaches the getty, which echoes it.
    std::thread::sleep(Duration::from_secs(2));
    daemon.send("root\n").unwrap();
    daemon
        .wait_for("login: root", Duration::from_secs(60))
        .unwrap();

    // Ctrl-C: Wine turns SIGINT into the console's control event.
    signal(daemon.pid(), "-INT");
    daemon
        .wait_for("powering the guest off", Duration::from_secs(60))
        .unwrap();
    daemon.wait_for("reboot: Power down", POWER_OFF).unwrap();
    let status = daemon.wait_exit(POWER_OFF).unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "a clean power-off is exit code 0; console log {}",
        daemon.log_path().display()
    );
    assert!(
        engine_gone_within(name, Duration::from_secs(10)),
        "the engine outlived the daemon"
    );
    assert_eq!(w.runtime_dir(name), None, "the runtime directory is left");
    assert_fsck_clean(&root);
    assert!(
        scratch_written(&scratch),
        "what the guest wrote to /dev/cobd1 is on the Z: disk"
    );
}

#[test]
fn the_named_pipe_console_a_killed_daemon_and_a_killed_engine() {
    let w = windows();
    let (kernel, image) = artifacts();
    let name = "win-detached";
    let (dir, win_dir) = w.drive_c_dir("colinux detached");
    run(
        "cp",
        &[
            "--sparse=always",
            image.to_str().unwrap(),
            dir.join("root.ext4").to_str().unwrap(),
        ],
    );
    let args = vec![
        "--name".into(),
        name.into(),
        format!("qemu={}", w.engine),
        format!("kernel={}", z_path(kernel)),
        format!("cobd0={win_dir}\\root.ext4"),
        "mem=256".into(),
        "accel=tcg".into(),
        "root=/dev/cobd0".into(),
        "ro".into(),
    ];
    let mut detached = w.daemon("win-daemon-detached", &[&["-d".into()], &args[..]].concat());
    detached
        .wait_for(&format!("colinux-console {name}"), WINE_BOOT)
        .unwrap();
    assert!(w.runtime_dir(name).is_some(), "no runtime directory");

    // The console over the named pipe replays the scrollback.
    let console_args = [name.to_string()];
    let mut first = w.start("win-console-first", &w.console, &console_args);
    first.wait_for("Linux version", WINE_BOOT).unwrap();
    first.wait_for("Welcome to", WINE_BOOT).unwrap();
    // A second console is told, and the first keeps the guest.
    let second = Wine::output(w.wine.command(&w.console).arg(name)).unwrap();
    let said = stderr_of(&second);
    assert_eq!(second.status.code(), Some(3), "{said}");
    assert!(
        said.contains("another colinux-console is attached"),
        "{said}"
    );
    // Detach, and attach again: the scrollback comes back.
    first.close_input();
    assert_eq!(
        first.wait_exit(Duration::from_secs(30)).unwrap().code(),
        Some(0)
    );
    let mut again = w.start("win-console-again", &w.console, &console_args);
    again
        .wait_for("Welcome to", Duration::from_secs(60))
        .unwrap();

    // The daemon killed outright: its engine goes with it (the job object).
    assert_eq!(engines_of(name).len(), 1, "one engine runs the guest");
    signal(detached.pid(), "-KILL");
    detached.wait_exit(Duration::from_secs(30)).unwrap();
    assert!(
        engine_gone_within(name, Duration::from_secs(30)),
        "QEMU outlived its killed daemon"
    );
    drop(again);

    // The name starts again; this time the engine is killed: exit code 4,
    // and the daemon cleans its runtime state up.
    let mut restarted = w.daemon("win-daemon-restarted", &args);
    restarted
        .wait_for("running (engine pid", WINE_BOOT)
        .unwrap();
    restarted.wait_for("Linux version", WINE_BOOT).unwrap();
    let engines = engines_of(name);
    assert_eq!(engines.len(), 1, "one engine runs the guest");
    signal(engines[0], "-KILL");
    let status = restarted.wait_exit(Duration::from_secs(60)).unwrap();
    assert_eq!(
        status.code(),
        Some(4),
        "a killed engine is exit code 4; console log {}",
        restarted.log_path().display()
    );
    assert_eq!(w.runtime_dir(name), None, "the runtime directory is left");
}

#[test]
fn an_x86_64_guest_kernel_panic_is_exit_code_1() {
    let w = windows();
    xtask_ok(&["kernel", "--arch", "x86_64"]);
    let kernel = workspace_root().join("target/kernel/x86_64/bzImage");
    let mut daemon = w.daemon(
        "win-daemon-panic",
        &[
            "--name".into(),
            "win-panic".into(),
            format!("qemu={}", w.engine),
            format!("kernel={}", z_path(&kernel)),
            "arch=x86_64".into(),
            "accel=tcg".into(),
            "mem=128".into(),
            "root=/dev/cobd7".into(), // no such disk: the kernel cannot mount its root
        ],
    );
    daemon
        .wait_for("Kernel panic - not syncing", WINE_BOOT)
        .unwrap();
    let status = daemon.wait_exit(Duration::from_secs(60)).unwrap();
    assert_eq!(status.code(), Some(1), "a guest panic is exit code 1");
    assert!(engine_gone_within("win-panic", Duration::from_secs(10)));
}

/// `sc ARGS` in the prefix, to its end.
fn sc(w: &Windows, args: &[&str]) -> Output {
    Wine::output(w.wine.command("sc").args(args)).unwrap()
}

#[test]
fn a_windows_service_boots_the_guest_and_its_stop_powers_it_off() {
    let w = windows();
    let (kernel, image) = artifacts();
    let name = "win-service";
    let service = format!("colinux-{name}");
    // What an interrupted run may have left in the prefix.
    let _ = w.daemon_output(&["--remove-service".into(), name.into()]);
    let (dir, win_dir) = w.drive_c_dir("colinux service");
    let root = dir.join("root.ext4");
    run(
        "cp",
        &[
            "--sparse=always",
            image.to_str().unwrap(),
            root.to_str().unwrap(),
        ],
    );
    std::fs::write(
        dir.join("guest.conf"),
        format!(
            "qemu=\"{}\"\r\nkernel=\"{}\"\r\ncobd0=root.ext4\r\nmem=256\r\naccel=tcg\r\nroot=/dev/cobd0 ro\r\n",
            w.engine,
            z_path(kernel)
        ),
    )
    .unwrap();
    let install = w.daemon_output(&[
        "--install-service".into(),
        name.into(),
        format!("@{win_dir}\\guest.conf"),
    ]);
    let said = String::from_utf8_lossy(&install.stdout);
    assert!(
        install.status.success() && said.contains(&format!("installed service {service}")),
        "{said}{}",
        stderr_of(&install)
    );
    let start = sc(w, &["start", &service]);
    assert!(start.status.success(), "sc start: {}", stderr_of(&start));

    // The service's guest is detached: its console is the named pipe.
    let mut console = w.start("win-service-console", &w.console, &[name.to_string()]);
    console.wait_for("colinux ttyS0", WINE_BOOT).unwrap();
    let stop = sc(w, &["stop", &service]);
    assert!(stop.status.success(), "sc stop: {}", stderr_of(&stop));
    console.wait_for("reboot: Power down", POWER_OFF).unwrap();
    let deadline = Instant::now() + scaled(POWER_OFF);
    while !String::from_utf8_lossy(&sc(w, &["query", &service]).stdout).contains("STOPPED") {
        assert!(Instant::now() < deadline, "{service} did not stop");
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(engine_gone_within(name, Duration::from_secs(10)));
    assert_fsck_clean(&root);

    let remove = w.daemon_output(&["--remove-service".into(), name.into()]);
    assert!(remove.status.success(), "{}", stderr_of(&remove));
    assert!(
        !sc(w, &["query", &service]).status.success(),
        "{service} is still installed"
    );
}
