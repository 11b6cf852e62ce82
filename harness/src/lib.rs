//! A small harness that boots a guest under QEMU and reads its serial
//! console, for the boot tests of the kernel, the images and the runtime.
//!
//! - Every timeout is multiplied by `COLINUX_TIMEOUT_SCALE` (default 1), so
//!   slow machines scale them all with one variable.
//! - The whole console goes to `target/test-logs/<name>.log` as it arrives;
//!   errors name that file and quote its last lines.
//! - Guests under test run on TCG: KVM is not trusted here (see the driver).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod wine;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot start {program}: {source} (is it installed? `cargo xtask setup` installs it)")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{name}: {what} not seen within {secs:.0} s; console log {log}; its last lines:\n{tail}"
    )]
    Timeout {
        name: String,
        what: String,
        secs: f64,
        log: PathBuf,
        tail: String,
    },
    #[error("{name}: the guest stopped ({status}) before {what}; console log {log}; its last lines:\n{tail}")]
    Exited {
        name: String,
        what: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{name}: {message}; console log {log}")]
    Failed {
        name: String,
        message: String,
        log: PathBuf,
    },
    /// A tool the tests need is missing or failed to prepare.
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `COLINUX_TIMEOUT_SCALE` times `base`.
pub fn scaled(base: Duration) -> Duration {
    let scale = std::env::var("COLINUX_TIMEOUT_SCALE")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(1.0);
    base.mul_f64(scale)
}

/// Where console logs go: `target/test-logs/` of the workspace, or
/// `$COLINUX_TEST_LOGS`.
pub fn log_dir() -> PathBuf {
    std::env::var_os("COLINUX_TEST_LOGS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/test-logs"))
}

/// The workspace root: where the pipeline's stages publish (`target/…`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the harness crate is in the workspace")
        .to_path_buf()
}

/// Runs `cargo xtask ARGS` from the workspace root, for tests outside the
/// xtask crate that need a stage's outputs (a kernel, an image); panics
/// with its stderr if it fails.
pub fn xtask_ok(args: &[&str]) {
    let out = Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args(["run", "--quiet", "--package", "xtask", "--"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo: {e}"));
    assert!(
        out.status.success(),
        "cargo xtask {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the console printed: a whole line, or what a line holds so far
/// (a prompt such as `Password: ` waits without a newline).
enum Output {
    Line(String),
    Partial(String),
}

/// A running guest.
pub struct Guest {
    name: String,
    child: Child,
    /// The console's input: the child's stdin, or a terminal's master side.
    input: Option<Box<dyn Write + Send>>,
    lines: Receiver<Output>,
    log_path: PathBuf,
    /// Everything the console printed so far.
    transcript: Arc<Mutex<Vec<String>>>,
}

impl Guest {
    /// Starts `program args…` (a QEMU command line whose serial console is
    /// on stdio) as the guest called `name`.
    pub fn start(name: &str, program: &str, args: &[String]) -> Result<Guest> {
        let mut command = Command::new(program);
        command.args(args);
        Guest::spawn(name, command)
    }

    /// Starts `command` (its environment set, say for Wine) as the guest
    /// called `name`; its stdio becomes the console.
    pub fn spawn(name: &str, mut command: Command) -> Result<Guest> {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Guest::with_console(name, command, |child| {
            let input: Box<dyn Write + Send> = Box::new(child.stdin.take().expect("piped"));
            let outputs: Vec<Box<dyn Read + Send>> = vec![
                Box::new(child.stdout.take().expect("piped")),
                Box::new(child.stderr.take().expect("piped")),
            ];
            (input, outputs)
        })
    }

    /// Starts `command` on a new pseudo-terminal, as from a user's
    /// terminal: its stdin, stdout and stderr are the terminal, and the
    /// console is the terminal's other side.
    pub fn spawn_on_terminal(name: &str, mut command: Command) -> Result<Guest> {
        let (master, slave) = open_terminal()?;
        command
            .stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        let reader = master.try_clone()?;
        Guest::with_console(name, command, move |_| {
            let input: Box<dyn Write + Send> = Box::new(master);
            let outputs: Vec<Box<dyn Read + Send>> = vec![Box::new(reader)];
            (input, outputs)
        })
    }

    /// Spawns `command`, then reads the console from what `console` takes
    /// of the child (or of the terminal) into the log and the transcript.
    fn with_console(
        name: &str,
        mut command: Command,
        console: impl FnOnce(&mut Child) -> (Box<dyn Write + Send>, Vec<Box<dyn Read + Send>>),
    ) -> Result<Guest> {
        let dir = log_dir();
        std::fs::create_dir_all(&dir)?;
        let log_path = dir.join(format!("{name}.log"));
        let log = Arc::new(Mutex::new(File::create(&log_path)?));
        writeln!(log.lock().expect("log lock"), "$ {command:?}")?;
        let mut child = command.spawn().map_err(|source| Error::Spawn {
            program: command.get_program().to_string_lossy().into_owned(),
            source,
        })?;
        // The command holds the terminal's other side: ours must close, or
        // reading never sees the end.
        drop(command);
        let (tx, lines) = mpsc::channel();
        let transcript = Arc::new(Mutex::new(Vec::new()));
        let (input, outputs) = console(&mut child);
        for output in outputs {
            let (tx, log, transcript) = (tx.clone(), log.clone(), transcript.clone());
            std::thread::spawn(move || {
                let mut output = output;
                let mut chunk = [0u8; 4096];
                let mut pending = Vec::new();
                let whole = |raw: &[u8]| {
                    let line = String::from_utf8_lossy(raw)
                        .trim_end_matches(['\r', '\n'])
                        .to_string();
                    let _ = writeln!(log.lock().expect("log lock"), "{line}");
                    transcript
                        .lock()
                        .expect("transcript lock")
                        .push(line.clone());
                    let _ = tx.send(Output::Line(line));
                };
                while let Ok(n @ 1..) = output.read(&mut chunk) {
                    pending.extend_from_slice(&chunk[..n]);
                    while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                        whole(&pending[..=end]);
                        pending.drain(..=end);
                    }
                    if !pending.is_empty() {
                        let so_far = String::from_utf8_lossy(&pending).into_owned();
                        let _ = tx.send(Output::Partial(so_far));
                    }
                }
                if !pending.is_empty() {
                    whole(&pending);
                }
            });
        }
        Ok(Guest {
            name: name.into(),
            child,
            input: Some(input),
            lines,
            log_path,
            transcript,
        })
    }

    /// Types `text` on the guest's console.
    pub fn send(&mut self, text: &str) -> Result<()> {
        let Some(input) = self.input.as_mut() else {
            return Err(self.fail("its input is closed"));
        };
        input.write_all(text.as_bytes())?;
        Ok(input.flush()?)
    }

    /// Closes the console's input, as a user hanging up would.
    pub fn close_input(&mut self) {
        self.input.take();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Every console line so far.
    pub fn transcript(&self) -> Vec<String> {
        self.transcript.lock().expect("transcript lock").clone()
    }

    fn tail(&self) -> String {
        let t = self.transcript();
        t[t.len().saturating_sub(25)..].join("\n")
    }

    /// Waits for a console line containing `marker`, for at most
    /// `timeout` (scaled), and returns that line.
    pub fn wait_for(&mut self, marker: &str, timeout: Duration) -> Result<String> {
        self.wait(marker, timeout, false)
    }

    /// Like [`Guest::wait_for`], and also matches a line still being
    /// written: a prompt that waits for an answer on the same line.
    pub fn wait_for_prompt(&mut self, prompt: &str, timeout: Duration) -> Result<String> {
        self.wait(prompt, timeout, true)
    }

    fn wait(&mut self, marker: &str, timeout: Duration, partial: bool) -> Result<String> {
        let timeout = scaled(timeout);
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(Output::Line(line)) if line.contains(marker) => return Ok(line),
                Ok(Output::Partial(line)) if partial && line.contains(marker) => return Ok(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(Error::Timeout {
                        name: self.name.clone(),
                        what: format!("{marker:?}"),
                        secs: timeout.as_secs_f64(),
                        log: self.log_path.clone(),
                        tail: self.tail(),
                    })
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    return Err(Error::Exited {
                        name: self.name.clone(),
                        what: format!("{marker:?}"),
                        status,
                        log: self.log_path.clone(),
                        tail: self.tail(),
                    });
                }
            }
        }
    }

    /// Waits for the engine to exit by itself (the guest powered off), for
    /// at most `timeout` (scaled); kills it past that.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let timeout = scaled(timeout);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(Error::Timeout {
                    name: self.name.clone(),
                    what: "power-off".into(),
                    secs: timeout.as_secs_f64(),
                    log: self.log_path.clone(),
                    tail: self.tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A failure about this guest, pointing at its console log.
    pub fn fail(&self, message: impl Into<String>) -> Error {
        Error::Failed {
            name: self.name.clone(),
            message: message.into(),
            log: self.log_path.clone(),
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A new pseudo-terminal: (master, slave).
fn open_terminal() -> Result<(File, File)> {
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors into the integers; no name,
    // termios or window size is passed.
    let opened = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if opened != 0 {
        return Err(Error::Io(std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors are new and owned by nothing else.
    Ok(unsafe { (File::from_raw_fd(master), File::from_raw_fd(slave)) })
}

/// A pseudo-terminal standing in for a serial port: the program under test
/// opens its far end (raw, at [`SerialLine::path`]); this end collects what
/// arrives.
pub struct SerialLine {
    /// Held open, so the line does not hang up between the program's opens.
    _far: File,
    path: PathBuf,
    received: Arc<Mutex<Vec<u8>>>,
}

impl SerialLine {
    pub fn open() -> Result<SerialLine> {
        use std::os::fd::AsRawFd;
        let (master, far) = open_terminal()?;
        // SAFETY: `far` is an open terminal; termios is a plain C struct
        // that tcgetattr fills before cfmakeraw and tcsetattr read it.
        let made_raw = unsafe {
            let mut termios = std::mem::zeroed::<libc::termios>();
            libc::tcgetattr(far.as_raw_fd(), &mut termios) == 0 && {
                libc::cfmakeraw(&mut termios);
                libc::tcsetattr(far.as_raw_fd(), libc::TCSANOW, &termios) == 0
            }
        };
        if !made_raw {
            return Err(Error::Io(std::io::Error::last_os_error()));
        }
        let path = std::fs::read_link(format!("/proc/self/fd/{}", far.as_raw_fd()))?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, sink) = (master, received.clone());
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = reader.read(&mut chunk) {
                sink.lock()
                    .expect("line lock")
                    .extend_from_slice(&chunk[..n]);
            }
        });
        Ok(SerialLine {
            _far: far,
            path,
            received,
        })
    }

    /// The far end, for the program under test (`/dev/pts/N`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits until `marker` has arrived; the error quotes what did.
    pub fn wait_for(&self, marker: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + scaled(timeout);
        loop {
            let text =
                String::from_utf8_lossy(&self.received.lock().expect("line lock")).into_owned();
            if text.contains(marker) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Setup(format!(
                    "{marker:?} did not arrive on {} within {:.0} s; what did: {text:?}",
                    self.path.display(),
                    scaled(timeout).as_secs_f64()
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Asserts that `e2fsck -fn` finds the ext filesystem in `image` clean,
/// quoting its report when not: every test that writes or boots an image
/// ends with this.
pub fn assert_fsck_clean(image: &Path) {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(image)
        .output()
        .expect("cannot run e2fsck");
    assert!(
        out.status.success(),
        "e2fsck -fn {}:\n{}{}",
        image.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts the command failed, and its error is one line holding `needle`.
pub fn assert_one_line_error(out: &std::process::Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success: {err}"
    );
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: "),
        "the error is not one line: {err}"
    );
    assert!(last.contains(needle), "expected {needle:?} in {last:?}");
}

/// Whether this test can do what only root can (`what`, for the message).
/// Not as root, the check is skipped and says so, except in CI (the `CI`
/// variable set), which runs the suite as root: there it fails, so no
/// check passes there without having run.
pub fn as_root(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{what} needs root, and CI is set: run the suite as root (cargo xtask test)");
    }
    eprintln!("not root: {what} skipped (CI would fail here)");
    false
}

/// A small tmpfs mounted on a directory, unmounted when dropped: a disk
/// that fills up, for the full-disk tests.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts `bytes` of tmpfs on `dir` (created). `None` where this
    /// machine cannot: not root ([`as_root`]). As root, failing to mount
    /// fails the test rather than hiding it.
    pub fn mount(dir: &Path, bytes: u64) -> Option<Tmpfs> {
        if !as_root("mounting a small tmpfs (the full-disk checks)") {
            return None;
        }
        std::fs::create_dir_all(dir).expect("cannot create the mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("cannot run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs on {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Tmpfs(dir.to_owned()))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The QEMU command line for a direct-kernel boot under TCG with the
/// serial console on stdio: the common part of every boot test.
pub fn qemu_direct_boot(
    arch: &str,
    kernel: &Path,
    initrd: Option<&Path>,
    append: &str,
    memory_mib: u32,
) -> (String, Vec<String>) {
    let program = match arch {
        "x86_64" => "qemu-system-x86_64",
        _ => "qemu-system-i386",
    };
    let mut args: Vec<String> = [
        "-accel",
        "tcg",
        "-machine",
        "pc",
        "-nodefaults",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
    ]
    .map(String::from)
    .to_vec();
    args.extend([
        "-m".into(),
        memory_mib.to_string(),
        "-kernel".into(),
        kernel.display().to_string(),
    ]);
    if let Some(initrd) = initrd {
        args.extend(["-initrd".into(), initrd.display().to_string()]);
    }
    args.extend(["-append".into(), append.into()]);
    (program.into(), args)
}

/// A scratch root that dpkg installs into (`dpkg --root`), with the empty
/// database of a machine that has nothing installed yet.
pub struct DpkgRoot(PathBuf);

impl DpkgRoot {
    pub fn new(dir: &Path) -> Result<DpkgRoot> {
        let admin = dir.join("var/lib/dpkg");
        for sub in ["updates", "info", "triggers"] {
            std::fs::create_dir_all(admin.join(sub))?;
        }
        for file in ["status", "available"] {
            std::fs::write(admin.join(file), "")?;
        }
        Ok(DpkgRoot(dir.to_path_buf()))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `dpkg --root=ROOT ARGS…`. Our packages have no maintainer scripts,
    /// but dpkg wants the permission anyway; their dependencies (libc6,
    /// QEMU) are the host's, not in this database.
    pub fn dpkg(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("dpkg");
        cmd.arg(format!("--root={}", self.0.display()))
            .args([
                "--force-script-chrootless",
                "--force-depends",
                "--log=/dev/null",
            ])
            .args(args);
        cmd
    }
}

/// A free TCP port on the loopback interface, for a guest's port redirect.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("no free port on 127.0.0.1")
        .port()
}

/// Logging in to a guest as root over SSH with a key made for the test,
/// through the engine's port redirect to the guest's port 22.
pub struct Ssh {
    key: PathBuf,
    port: u16,
}

impl Ssh {
    /// A new ed25519 key pair in `dir` (`id_ed25519`, `id_ed25519.pub`),
    /// for a guest reached on host port `port`.
    pub fn keygen(dir: &Path, port: u16) -> Result<Ssh> {
        let key = dir.join("id_ed25519");
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "colinux-test", "-f"])
            .arg(&key)
            .output()
            .map_err(|source| Error::Spawn {
                program: "ssh-keygen".into(),
                source,
            })?;
        if !out.status.success() {
            return Err(Error::Io(std::io::Error::other(format!(
                "ssh-keygen failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))));
        }
        Ok(Ssh { key, port })
    }

    /// The same key, for a guest reached on another port (one its
    /// config chose after the key was handed over).
    pub fn at_port(self, port: u16) -> Ssh {
        Ssh { port, ..self }
    }

    /// The public key, for the image's `--root-key`.
    pub fn public_key(&self) -> PathBuf {
        self.key.with_extension("pub")
    }

    /// Runs `command` in the guest; the guest's host key is new on every
    /// boot, so it is neither checked nor remembered.
    pub fn run(&self, command: &str) -> Result<std::process::Output> {
        Command::new("ssh")
            .arg("-i")
            .arg(&self.key)
            .args(["-p", &self.port.to_string()])
            .args(["-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null"])
            .args(["-o", "LogLevel=ERROR"])
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=30"])
            .args(["root@127.0.0.1", command])
            .output()
            .map_err(|source| Error::Spawn {
                program: "ssh".into(),
                source,
            })
    }

    /// Runs `command` in `guest` and returns its output; a failure quotes
    /// ssh's error and points at the console log.
    pub fn output(&self, guest: &Guest, command: &str) -> Result<String> {
        let out = self.run(command)?;
        if !out.status.success() {
            return Err(guest.fail(format!(
                "ssh root@127.0.0.1:{} {command:?} failed ({}): {}",
                self.port,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Retries a login until sshd answers (it starts with the getty, and
    /// may still be making its host keys), for at most `timeout` (scaled).
    pub fn wait_ready(&self, guest: &Guest, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + scaled(timeout);
        loop {
            let out = self.run("true")?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(guest.fail(format!(
                    "no SSH login on host port {} within {:.0} s: {}",
                    self.port,
                    scaled(timeout).as_secs_f64(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_timeouts_and_exit_with_a_stand_in_guest() {
        // The harness only needs a process with a console: sh stands in.
        let script = "echo booting; echo 'MARKER: ready'; sleep 0.2; echo done".to_string();
        let mut g = Guest::start("harness-self-test", "sh", &["-c".into(), script]).unwrap();
        assert_eq!(
            g.wait_for("MARKER:", Duration::from_secs(10)).unwrap(),
            "MARKER: ready"
        );
        assert!(g.wait_exit(Duration::from_secs(10)).unwrap().success());
        let err = g
            .wait_for("never printed", Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the guest stopped") && err.contains("harness-self-test.log"),
            "{err}"
        );
        let log = std::fs::read_to_string(g.log_path()).unwrap();
        assert!(log.contains("MARKER: ready") && log.contains("done"));
    }

    #[test]
    fn a_guest_on_a_terminal_sees_one_and_reads_what_is_typed() {
        let mut sh = Command::new("sh");
        sh.args([
            "-c",
            "test -t 0 && test -t 1 && echo on-a-terminal; read x; printf 'got-%s $ ' $x; read y",
        ]);
        let mut g = Guest::spawn_on_terminal("harness-terminal-test", sh).unwrap();
        g.wait_for("on-a-terminal", Duration::from_secs(10))
            .unwrap();
        g.send("typed\n").unwrap();
        // A prompt: no newline until it is answered.
        let prompt = g.wait_for_prompt("got-", Duration::from_secs(10)).unwrap();
        assert!(prompt.ends_with("got-typed $ "), "{prompt:?}");
        g.send("\n").unwrap();
        assert!(g.wait_exit(Duration::from_secs(10)).unwrap().success());
    }

    #[test]
    fn a_hung_guest_times_out_and_is_killed() {
        let mut g = Guest::start("harness-hang-test", "sleep", &["30".into()]).unwrap();
        let started = Instant::now();
        let err = g
            .wait_for("anything", Duration::from_millis(300))
            .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        assert!(g.wait_exit(Duration::from_millis(300)).is_err());
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}
