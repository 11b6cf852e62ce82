//! Runs one guest: starts the engine, serves its console, starts the
//! `execN` helpers, turns Ctrl-C/SIGTERM into an ACPI power-down, and tells
//! how the guest ended (see [`exit`]).
//!
//! The power button is pressed again and again until the guest is gone: a
//! press is an edge, and one that comes before anything in the guest
//! listens (the kernel still booting, or systemd-logind not yet started)
//! is lost; once a listener runs, further presses are ignored by it.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use colinux_config::Settings;

use crate::console::{self, Hub, KernelSign};
use crate::engine::{self, EngineCommand, Plan, QmpEndpoint};
use crate::host::{self, InstanceLock};
use crate::qmp::{Qmp, QmpEvent};
use crate::seed::{self, SeedDisk};

/// The daemon's exit codes (also in `colinux-daemon --help`).
pub mod exit {
    /// The guest powered off cleanly (also after Ctrl-C/SIGTERM).
    pub const POWERED_OFF: u8 = 0;
    /// The guest's kernel panicked or the guest crashed.
    pub const GUEST_CRASHED: u8 = 1;
    /// The configuration or the command line is wrong; nothing was started.
    pub const CONFIG: u8 = 2;
    /// The engine (QEMU) is not installed or not where `qemu=` says.
    pub const ENGINE_MISSING: u8 = 3;
    /// The engine failed to start, failed while running, or was stopped from outside.
    pub const ENGINE_FAILED: u8 = 4;
    /// The guest rebooted; the daemon ends so that a service manager restarts it.
    pub const REBOOTED: u8 = 5;
    /// The guest did not power off in time and the engine was stopped.
    pub const SHUTDOWN_TIMEOUT: u8 = 6;
    /// The guest could not mount its root filesystem (an NFS root whose
    /// server it could not reach); the engine was stopped.
    pub const ROOT_UNMOUNTED: u8 = 7;
}

/// How long a panicked guest's console keeps running so that the whole
/// panic message reaches the console.
const PANIC_GRACE: Duration = Duration::from_secs(2);
/// How long QEMU gets to start and connect to the QMP socket.
const QMP_CONNECT: Duration = Duration::from_secs(30);
const QMP_REPLY: Duration = Duration::from_secs(10);
/// How often the power button is pressed while the guest has not powered off.
const PRESS_AGAIN: Duration = Duration::from_secs(2);
/// How often the daemon says it is still waiting for the guest.
const STILL_WAITING: Duration = Duration::from_secs(15);

pub struct RunOptions {
    pub name: String,
    /// `-d`: the console goes to the socket only.
    pub detached: bool,
    /// `-k`: no kernel log lines on the daemon's terminal.
    pub quiet_kernel: bool,
    pub pidfile: Option<PathBuf>,
    pub shutdown_timeout: Duration,
}

/// What the supervisor reacts to.
#[derive(Debug)]
pub enum Msg {
    /// Ctrl-C, SIGTERM, or a service stop.
    Stop,
    Qmp(QmpEvent),
    /// The console showed a kernel panic.
    Panic,
    /// The console showed that the guest cannot mount its NFS root.
    NfsRoot(KernelSign),
}

/// How a guest that started ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    PoweredOff,
    Crashed(String),
    Rebooted,
    EngineFailed(String),
    ShutdownTimedOut,
    RootUnmounted(String),
}

impl Outcome {
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::PoweredOff => exit::POWERED_OFF,
            Outcome::Crashed(_) => exit::GUEST_CRASHED,
            Outcome::Rebooted => exit::REBOOTED,
            Outcome::EngineFailed(_) => exit::ENGINE_FAILED,
            Outcome::ShutdownTimedOut => exit::SHUTDOWN_TIMEOUT,
            Outcome::RootUnmounted(_) => exit::ROOT_UNMOUNTED,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Outcome::PoweredOff => "the guest powered off".into(),
            Outcome::Crashed(why) => format!("the guest crashed: {why}"),
            Outcome::Rebooted => "the guest rebooted; start the daemon again to boot it".into(),
            Outcome::EngineFailed(why) => format!("the engine failed: {why}"),
            Outcome::RootUnmounted(why) => why.clone(),
            Outcome::ShutdownTimedOut => {
                "the guest did not power off in time and the engine was stopped; check its filesystems (fsck) at the next boot".into()
            }
        }
    }
}

/// A failure before the guest ran, with its exit code.
#[derive(Debug)]
pub struct StartError {
    pub code: u8,
    pub message: String,
}

impl StartError {
    pub fn new(code: u8, message: impl Into<String>) -> StartError {
        StartError {
            code,
            message: message.into(),
        }
    }
}

/// The QMP endpoint the engine is given: a socket in the runtime directory
/// on Unix, a loopback port on Windows (QEMU's Windows build cannot
/// connect to a named pipe). Port 0 only appears in a dry run.
pub fn qmp_endpoint(runtime_dir: &std::path::Path, port: u16) -> QmpEndpoint {
    if cfg!(windows) {
        QmpEndpoint::Tcp(port)
    } else {
        QmpEndpoint::Unix(runtime_dir.join("qmp.sock"))
    }
}

/// Runs the guest until it ends. `events` carries stop requests from the
/// caller (signal handler or service control) and is fed by our threads.
pub fn run(
    settings: &Settings,
    mut plan: Plan,
    program: PathBuf,
    opts: &RunOptions,
    events: (Sender<Msg>, Receiver<Msg>),
) -> Result<Outcome, StartError> {
    let (tx, rx) = events;
    let dir = host::runtime_dir(&opts.name);
    // Dropped last: it removes the directory with our sockets in it.
    let _lock =
        InstanceLock::acquire(&dir, &opts.name).map_err(|m| StartError::new(exit::CONFIG, m))?;

    let qmp_listener = QmpListener::bind(&dir).map_err(|e| {
        StartError::new(
            exit::ENGINE_FAILED,
            format!("cannot create the QMP socket in {}: {e}", dir.display()),
        )
    })?;
    engine::create_scsi_images(settings)
        .map_err(|e| StartError::new(exit::CONFIG, e.to_string()))?;
    // In the runtime directory: it goes with the directory at exit.
    let seed = SeedDisk::for_guest(&opts.name, settings)
        .map_err(|e| StartError::new(exit::CONFIG, e.to_string()))?;
    if let Some(seed) = seed {
        let path = dir.join(seed::FILE_NAME);
        seed.write_to(&path)
            .map_err(|e| StartError::new(exit::CONFIG, e.to_string()))?;
        plan.seed_disk = Some(path);
    }
    // Held until the engine is gone: the taps vanish with the last descriptor.
    #[cfg(target_os = "linux")]
    let _taps = make_taps(settings, &mut plan)?;
    let command = engine::engine_command(settings, &plan, &qmp_listener.endpoint(&dir), program)
        .map_err(|e| StartError::new(exit::CONFIG, e.to_string()))?;

    let mut engine = Engine::spawn(&command)?;
    let hub = Hub::new(
        Box::new(engine.child.stdin.take().expect("piped")),
        !opts.detached,
        opts.quiet_kernel,
        console::scrollback_bytes(settings.cocon.as_ref().map(|c| &c.value)),
    );
    pump_console(
        engine.child.stdout.take().expect("piped"),
        hub.clone(),
        tx.clone(),
    );
    let console_path = console::socket_path(&dir);
    let _ = std::fs::remove_file(&console_path); // stale: we hold the lock
    console::socket_name(&dir, &opts.name)
        .and_then(|name| hub.serve(name))
        .map_err(|e| {
            engine.kill();
            StartError::new(
                exit::ENGINE_FAILED,
                format!("cannot create the console socket: {e}"),
            )
        })?;

    let qmp = match qmp_listener.accept(&mut engine, tx.clone()) {
        Ok(qmp) => qmp,
        Err(why) => {
            engine.kill();
            return Err(StartError::new(exit::ENGINE_FAILED, why));
        }
    };
    let _pidfile = opts
        .pidfile
        .as_ref()
        .map(|p| PidFile::write(p.clone()))
        .transpose()
        .map_err(|e| {
            engine.kill();
            StartError::new(exit::CONFIG, e)
        })?;
    let _terminal = (!opts.detached).then(|| attach_terminal(hub.clone()));
    let helpers = Helpers::start(settings);
    if opts.detached {
        tracing::info!(
            "guest {:?} running (engine pid {}, accel {}); console: colinux-console {}",
            opts.name,
            engine.child.id(),
            plan.accel.as_str(),
            opts.name
        );
    } else {
        tracing::info!(
            "guest {:?} running (engine pid {}, accel {}); Ctrl-C powers it off",
            opts.name,
            engine.child.id(),
            plan.accel.as_str()
        );
    }

    let outcome = supervise(&mut engine, &qmp, &rx, opts.shutdown_timeout, settings);
    helpers.stop();
    Ok(outcome)
}

/// The tap of each `ethN=pcap-bridge,BRIDGE`, on its bridge and up, with
/// its descriptor in the plan for the engine to inherit.
#[cfg(target_os = "linux")]
fn make_taps(settings: &Settings, plan: &mut Plan) -> Result<Vec<crate::tap::Tap>, StartError> {
    let config = |e: String| StartError::new(exit::CONFIG, e);
    let mut taps = Vec::new();
    for (index, bridge) in engine::host_bridges(settings).map_err(|e| config(e.to_string()))? {
        let tap = crate::tap::Tap::on_bridge(&bridge)
            .map_err(|e| config(format!("{}: {e}", settings.eth[&index].origin)))?;
        tracing::info!("eth{index}: tap {} on bridge {bridge}", tap.name());
        plan.taps.insert(index, tap.fd());
        taps.push(tap);
    }
    Ok(taps)
}

/// A power-down under way: since when, and the last press and report.
struct PowerDown {
    asked: Instant,
    pressed: Instant,
    reported: Instant,
}

impl PowerDown {
    fn start(qmp: &Qmp, timeout: Duration) -> PowerDown {
        tracing::info!(
            "powering the guest off: pressing its ACPI power button every {} s until it powers off \
             (a booting guest reacts once its power-key handler, systemd-logind, runs); \
             the engine is stopped if it has not within {} s; Ctrl-C again stops it at once",
            PRESS_AGAIN.as_secs(),
            timeout.as_secs()
        );
        let now = Instant::now();
        press_power_button(qmp);
        PowerDown {
            asked: now,
            pressed: now,
            reported: now,
        }
    }

    /// Presses again, and says what it waits for now and then.
    fn tick(&mut self, qmp: &Qmp, timeout: Duration) {
        if self.pressed.elapsed() >= PRESS_AGAIN {
            self.pressed = Instant::now();
            press_power_button(qmp);
        }
        if self.reported.elapsed() >= STILL_WAITING {
            self.reported = Instant::now();
            tracing::info!(
                "still waiting for the guest to power off ({} s of {} s)",
                self.asked.elapsed().as_secs(),
                timeout.as_secs()
            );
        }
    }
}

fn press_power_button(qmp: &Qmp) {
    // It fails only when the engine is exiting, which the loop sees next.
    if let Err(e) = qmp.execute("system_powerdown", QMP_REPLY) {
        tracing::debug!("system_powerdown: {e}");
    }
}

fn supervise(
    engine: &mut Engine,
    qmp: &Qmp,
    rx: &Receiver<Msg>,
    shutdown_timeout: Duration,
    settings: &Settings,
) -> Outcome {
    let mut power_down: Option<PowerDown> = None;
    let mut panicked: Option<(Instant, String)> = None;
    // Reported before the kernel's own panic, which it may be followed by.
    let mut root_failed: Option<String> = None;
    let mut reason: Option<String> = None;
    let mut gave_up = false;
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Msg::Stop) if power_down.is_none() => {
                power_down = Some(PowerDown::start(qmp, shutdown_timeout));
            }
            Ok(Msg::Stop) => {
                if !gave_up {
                    tracing::warn!("stopping the engine now, without waiting for the guest");
                    gave_up = true;
                    engine.quit(qmp);
                }
            }
            Ok(Msg::Qmp(QmpEvent::Shutdown { reason: r })) => reason = Some(r),
            Ok(Msg::Qmp(QmpEvent::Panicked)) | Ok(Msg::Panic) => {
                if panicked.is_none() {
                    tracing::error!("the guest's kernel panicked");
                    panicked = Some((Instant::now(), "kernel panic (see the console)".into()));
                }
            }
            Ok(Msg::NfsRoot(sign)) => {
                if root_failed.is_none() {
                    let why = nfs_root_failure(settings, sign);
                    tracing::info!("the guest cannot mount its NFS root; stopping the engine");
                    root_failed = Some(why);
                    engine.quit(qmp);
                }
            }
            Ok(Msg::Qmp(QmpEvent::Closed)) | Err(RecvTimeoutError::Timeout) => {}
            // Not expected (the caller keeps a sender), but never spin.
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_millis(100)),
        }
        if let Ok(Some(status)) = engine.child.try_wait() {
            break status;
        }
        if let Some(power_down) = power_down.as_mut().filter(|_| !gave_up) {
            if power_down.asked.elapsed() > shutdown_timeout {
                tracing::warn!(
                    "the guest did not power off within {} s; stopping the engine",
                    shutdown_timeout.as_secs()
                );
                gave_up = true;
                engine.quit(qmp);
            } else {
                power_down.tick(qmp, shutdown_timeout);
            }
        }
        if let Some((at, _)) = &panicked {
            if at.elapsed() > PANIC_GRACE && reason.is_none() {
                reason = Some("guest-panic".into());
                engine.quit(qmp);
            }
        }
    };
    // The SHUTDOWN event can trail the exit by a moment: read what is left.
    while let Ok(msg) = rx.recv_timeout(Duration::from_millis(300)) {
        match msg {
            Msg::Qmp(QmpEvent::Shutdown { reason: r }) if reason.is_none() => reason = Some(r),
            Msg::Qmp(QmpEvent::Closed) => break,
            _ => {}
        }
    }
    if let Some(why) = root_failed {
        return Outcome::RootUnmounted(why);
    }
    outcome(
        status,
        reason.as_deref(),
        panicked.map(|p| p.1),
        gave_up,
        &engine.stderr_tail(),
    )
}

/// What an NFS root failure means, with the server's address.
fn nfs_root_failure(settings: &Settings, sign: KernelSign) -> String {
    let (server, path) = settings.nfs_root.as_ref().map_or(("?", "?"), |n| {
        (n.value.server.as_str(), n.value.path.as_str())
    });
    match sign {
        KernelSign::NfsRootNoAddress => format!(
            "the guest could not reach its NFS root server {server}: it got no address by DHCP \
             on its network (\"IP-Config: Retrying forever (NFS root)\"), so the engine was \
             stopped; is the server, or the cluster's head, up and on the same network?"
        ),
        _ => format!(
            "the guest could not reach its NFS root server {server}: mounting {server}:{path} \
             failed after the kernel's retries (\"VFS: Unable to mount root fs via NFS\"), so \
             the engine was stopped; is the server up, and does it export {path} to this guest?"
        ),
    }
}

/// Classifies the end of the engine.
fn outcome(
    status: ExitStatus,
    reason: Option<&str>,
    panic: Option<String>,
    gave_up: bool,
    stderr: &str,
) -> Outcome {
    if let Some(why) = panic {
        return Outcome::Crashed(why);
    }
    if gave_up {
        return Outcome::ShutdownTimedOut;
    }
    match reason {
        Some("guest-shutdown") if status.success() => Outcome::PoweredOff,
        Some("guest-reset") => Outcome::Rebooted,
        Some("guest-panic") => Outcome::Crashed("the guest reported a panic".into()),
        Some(other) if status.success() => {
            Outcome::EngineFailed(format!("the engine was stopped from outside ({other})"))
        }
        _ => Outcome::EngineFailed(format!("qemu exited with {status}{}", tail_suffix(stderr))),
    }
}

fn tail_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; its last messages:\n{stderr}")
    }
}

/// The running engine process.
struct Engine {
    child: Child,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl Engine {
    fn spawn(command: &EngineCommand) -> Result<Engine, StartError> {
        let mut cmd = Command::new(&command.program);
        cmd.args(&command.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        own_process_group(&mut cmd);
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            let fds = command.inherit_fds.clone();
            // SAFETY: fcntl is async-signal-safe and touches no memory of ours.
            unsafe {
                cmd.pre_exec(move || {
                    for &fd in &fds {
                        if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                exit::ENGINE_MISSING
            } else {
                exit::ENGINE_FAILED
            };
            StartError::new(
                code,
                format!("cannot start {}: {e}", command.program.display()),
            )
        })?;
        die_with_daemon(&child);
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let lines = stderr.clone();
        let pipe = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                tracing::warn!("qemu: {line}");
                let mut lines = lines.lock().unwrap_or_else(|e| e.into_inner());
                if lines.len() == 20 {
                    lines.pop_front();
                }
                lines.push_back(line);
            }
        });
        Ok(Engine { child, stderr })
    }

    fn stderr_tail(&self) -> String {
        let lines = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Asks QEMU to quit; kills it if it does not within a few seconds.
    fn quit(&mut self, qmp: &Qmp) {
        let _ = qmp.execute("quit", Duration::from_secs(3));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a child in its own process group, so that the terminal's Ctrl-C
/// reaches only the daemon (which shuts the guest down properly). On
/// Linux the kernel also stops it if the daemon dies (Windows:
/// [`die_with_daemon`]).
fn own_process_group(cmd: &mut Command) {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
    }
    #[cfg(windows)]
    {
        use std::os::windows::process::CommandExt;
        // CREATE_NEW_PROCESS_GROUP: Ctrl-C in the console is not delivered to it.
        cmd.creation_flags(0x0000_0200);
    }
}

/// Windows has no parent-death signal: the child joins a job object that
/// kills its processes when its last handle closes. The daemon holds that
/// handle and never closes it, so Windows closes it when the daemon ends,
/// however it ends (a kill from Task Manager too). Elsewhere a no-op
/// (Linux: PR_SET_PDEATHSIG in [`own_process_group`]).
fn die_with_daemon(child: &Child) {
    #[cfg(windows)]
    if let Err(e) = windows_job::adopt(child) {
        tracing::warn!(
            "pid {}: cannot tie it to the daemon ({e}); it would outlive a killed daemon",
            child.id()
        );
    }
    #[cfg(not(windows))]
    let _ = child;
}

#[cfg(windows)]
mod windows_job {
    use std::os::windows::io::AsRawHandle;
    use std::process::Child;
    use std::sync::OnceLock;

    use windows_sys::Win32::System::JobObjects::{
        AssignProcessToJobObject, CreateJobObjectW, JobObjectExtendedLimitInformation,
        SetInformationJobObject, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
        JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
    };

    /// The daemon's one job, as an address-sized integer (a HANDLE is a
    /// pointer, which a static cannot hold).
    static JOB: OnceLock<Result<usize, String>> = OnceLock::new();

    fn job() -> Result<usize, String> {
        JOB.get_or_init(|| {
            // SAFETY: no security attributes and no name; the handle is checked.
            let job = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
            if job.is_null() {
                return Err(format!(
                    "CreateJobObject: {}",
                    std::io::Error::last_os_error()
                ));
            }
            // SAFETY: a zeroed limit structure is valid (no limits set).
            let mut limits: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { std::mem::zeroed() };
            limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
            // SAFETY: the pointer and size describe `limits`, which outlives the call.
            let set = unsafe {
                SetInformationJobObject(
                    job,
                    JobObjectExtendedLimitInformation,
                    std::ptr::from_ref(&limits).cast(),
                    std::mem::size_of_val(&limits) as u32,
                )
            };
            if set == 0 {
                return Err(format!(
                    "SetInformationJobObject: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(job as usize)
        })
        .clone()
    }

    pub fn adopt(child: &Child) -> Result<(), String> {
        let job = job()?;
        // SAFETY: both handles are open: the job is never closed, and the
        // child's handle lives as long as `child`.
        let assigned = unsafe { AssignProcessToJobObject(job as _, child.as_raw_handle()) };
        if assigned == 0 {
            return Err(format!(
                "AssignProcessToJobObject: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }
}

/// Copies the engine's console output into the hub.
fn pump_console(mut out: impl Read + Send + 'static, hub: Hub, tx: Sender<Msg>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            for sign in hub.from_engine(&buf[..n]) {
                let _ = tx.send(match sign {
                    KernelSign::Panic => Msg::Panic,
                    nfs => Msg::NfsRoot(nfs),
                });
            }
        }
    });
}

/// Attached mode: the daemon's terminal is the console.
fn attach_terminal(hub: Hub) -> Option<crate::terminal::RawMode> {
    let raw = crate::terminal::RawMode::enter(true);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 1024];
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || hub.to_engine(&buf[..n]).is_err() {
                break;
            }
        }
    });
    raw
}

/// The QMP listener: QEMU connects to it as a client.
enum QmpListener {
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixListener),
    #[cfg(not(unix))]
    Tcp(std::net::TcpListener),
}

impl QmpListener {
    fn bind(dir: &std::path::Path) -> std::io::Result<QmpListener> {
        #[cfg(unix)]
        {
            let path = dir.join("qmp.sock");
            let _ = std::fs::remove_file(&path); // stale: we hold the lock
            let listener = std::os::unix::net::UnixListener::bind(&path)?;
            listener.set_nonblocking(true)?;
            Ok(QmpListener::Unix(listener))
        }
        #[cfg(not(unix))]
        {
            let _ = dir;
            let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
            listener.set_nonblocking(true)?;
            Ok(QmpListener::Tcp(listener))
        }
    }

    fn endpoint(&self, dir: &std::path::Path) -> QmpEndpoint {
        let port = match self {
            #[cfg(not(unix))]
            QmpListener::Tcp(l) => l.local_addr().map(|a| a.port()).unwrap_or(0),
            #[cfg(unix)]
            QmpListener::Unix(_) => 0,
        };
        qmp_endpoint(dir, port)
    }

    /// Waits for QEMU to connect (or to fail first) and shakes hands.
    fn accept(&self, engine: &mut Engine, tx: Sender<Msg>) -> Result<Qmp, String> {
        let deadline = Instant::now() + QMP_CONNECT;
        loop {
            let accepted: std::io::Result<(Box<dyn Read + Send>, Box<dyn std::io::Write + Send>)> =
                match self {
                    #[cfg(unix)]
                    QmpListener::Unix(l) => l.accept().and_then(|(s, _)| {
                        s.set_nonblocking(false)?;
                        Ok((Box::new(s.try_clone()?) as _, Box::new(s) as _))
                    }),
                    #[cfg(not(unix))]
                    QmpListener::Tcp(l) => l.accept().and_then(|(s, _)| {
                        s.set_nonblocking(false)?;
                        Ok((Box::new(s.try_clone()?) as _, Box::new(s) as _))
                    }),
                };
            match accepted {
                Ok((reader, writer)) => {
                    return Qmp::handshake(reader, writer, tx, Msg::Qmp, QMP_REPLY)
                        .map_err(|e| format!("QMP handshake with the engine failed: {e}"))
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(format!("QMP accept: {e}")),
            }
            if let Ok(Some(status)) = engine.child.try_wait() {
                // Give the stderr reader a moment to collect QEMU's complaint.
                std::thread::sleep(Duration::from_millis(200));
                return Err(format!(
                    "qemu exited at once with {status}{}",
                    tail_suffix(&engine.stderr_tail())
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the engine did not connect to QMP within {} s",
                    QMP_CONNECT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `-p FILE`: the daemon's pid, removed when it ends.
struct PidFile(PathBuf);

impl PidFile {
    fn write(path: PathBuf) -> Result<PidFile, String> {
        host::write_atomically(&path, &format!("{}\n", std::process::id()))
            .map_err(|e| format!("pidfile {}: {e}", path.display()))?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The `execN` programs: started once the engine runs, stopped with it.
struct Helpers(Vec<(u8, Child)>);

impl Helpers {
    fn start(settings: &Settings) -> Helpers {
        let mut running = Vec::new();
        for (&index, exec) in &settings.exec {
            let mut cmd = Command::new(&exec.program);
            cmd.args(exec.argv()).stdin(Stdio::null());
            own_process_group(&mut cmd);
            match cmd.spawn() {
                Ok(child) => {
                    die_with_daemon(&child);
                    tracing::info!(
                        "exec{index}: started {} (pid {})",
                        exec.program.display(),
                        child.id()
                    );
                    running.push((index, child));
                }
                Err(e) => {
                    tracing::warn!("exec{index}: cannot start {}: {e}", exec.program.display())
                }
            }
        }
        Helpers(running)
    }

    /// SIGTERM to each helper's group, a few seconds' grace, then kill.
    fn stop(self) {
        for (_, child) in &self.0 {
            terminate(child);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for (index, mut child) in self.0 {
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
            tracing::debug!("exec{index}: stopped");
        }
    }
}

#[cfg(unix)]
fn terminate(child: &Child) {
    // SAFETY: kill has no memory effects; the group id is the child's pid.
    unsafe {
        libc::kill(-(child.id() as libc::pid_t), libc::SIGTERM);
    }
}

#[cfg(windows)]
fn terminate(_child: &Child) {
    // Windows has no polite signal for a console-less child; `stop` kills it.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn status(code: i32) -> ExitStatus {
        use std::os::unix::process::ExitStatusExt;
        ExitStatus::from_raw(code << 8)
    }
    #[cfg(windows)]
    fn status(code: i32) -> ExitStatus {
        use std::os::windows::process::ExitStatusExt;
        ExitStatus::from_raw(code as u32)
    }

    #[test]
    fn outcomes_and_exit_codes() {
        let ok = status(0);
        let cases = [
            (
                outcome(ok, Some("guest-shutdown"), None, false, ""),
                exit::POWERED_OFF,
            ),
            (
                outcome(ok, Some("guest-reset"), None, false, ""),
                exit::REBOOTED,
            ),
            (
                outcome(ok, Some("guest-panic"), None, false, ""),
                exit::GUEST_CRASHED,
            ),
            (
                outcome(
                    ok,
                    Some("host-qmp-quit"),
                    Some("kernel panic".into()),
                    false,
                    "",
                ),
                exit::GUEST_CRASHED,
            ),
            (
                outcome(ok, Some("host-qmp-quit"), None, true, ""),
                exit::SHUTDOWN_TIMEOUT,
            ),
            (
                outcome(ok, Some("host-signal"), None, false, ""),
                exit::ENGINE_FAILED,
            ),
            (
                outcome(status(1), None, None, false, "qemu: bad option"),
                exit::ENGINE_FAILED,
            ),
        ];
        for (outcome, code) in cases {
            assert_eq!(outcome.exit_code(), code, "{outcome:?}");
        }
        let failed = outcome(status(1), None, None, false, "qemu: could not open disk");
        assert!(
            failed.describe().contains("could not open disk"),
            "{}",
            failed.describe()
        );
        assert_eq!(
            Outcome::RootUnmounted("x".into()).exit_code(),
            exit::ROOT_UNMOUNTED
        );
        let outside = outcome(ok, Some("host-signal"), None, false, "");
        assert!(outside
            .describe()
            .contains("stopped from outside (host-signal)"));
    }

    #[test]
    fn an_nfs_root_failure_names_the_server() {
        let settings = colinux_config::parse_ini_str(
            "[NFS]\nserver = 10.77.0.1\npath = /srv/node\n",
            std::path::Path::new("/c/n.ini"),
        )
        .unwrap();
        let dhcp = nfs_root_failure(&settings, KernelSign::NfsRootNoAddress);
        assert!(
            dhcp.starts_with("the guest could not reach its NFS root server 10.77.0.1: it got no address by DHCP"),
            "{dhcp}"
        );
        let mount = nfs_root_failure(&settings, KernelSign::NfsRootUnmounted);
        assert!(
            mount.contains("mounting 10.77.0.1:/srv/node failed"),
            "{mount}"
        );
    }
}
