//! KVM: find `/dev/kvm`, prove it runs a guest, help load or grant it.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cache::{self, Entry};
use crate::{Accel, Backend, BackendState, DriverError, ProbeOptions};

const DEV_KVM: &str = "/dev/kvm";
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
const MISSING: &str = "no /dev/kvm: the kvm module is not loaded or the CPU lacks VT-x/AMD-V";
const NO_ACCESS: &str = "cannot open /dev/kvm (permission denied): add yourself to the kvm group: \
     sudo usermod -aG kvm $USER, then log in again";

/// The test guest writes this byte to this port, then halts.
const PROBE_PORT: u16 = 0x3f8;
const PROBE_BYTE: u8 = 0x5a;

/// KVM's backend entry, and whether it came from the cache.
pub(crate) fn detect_kvm(opts: &ProbeOptions) -> (Backend, bool) {
    let kvm = |state, detail: String| Backend {
        accel: Accel::Kvm,
        state,
        detail,
    };
    // Opening is cheap and depends on who asks (groups), so it is never
    // cached; only the test guest's verdict is.
    if let Err(e) = OpenOptions::new().read(true).write(true).open(DEV_KVM) {
        return match e.kind() {
            ErrorKind::NotFound => (kvm(BackendState::Missing, MISSING.into()), false),
            ErrorKind::PermissionDenied => (kvm(BackendState::NoAccess, NO_ACCESS.into()), false),
            // ENODEV/ENXIO: a stale node with no module behind it.
            _ if matches!(e.raw_os_error(), Some(libc::ENODEV | libc::ENXIO)) => {
                (kvm(BackendState::Missing, MISSING.into()), false)
            }
            _ => (
                kvm(
                    BackendState::NotUsable,
                    format!("KVM present but not usable (cannot open {DEV_KVM}: {e})"),
                ),
                false,
            ),
        };
    }

    let key = cache_key();
    let path = opts
        .use_cache
        .then(|| cache::file_path(opts))
        .flatten()
        .filter(|_| key.is_some());
    if let (Some(path), Some(key)) = (&path, &key) {
        if let Some(entry) = cache::read(path).filter(|e| e.answers(key, opts.timeout)) {
            return (kvm(entry.state, entry.detail), true);
        }
    }

    let (state, detail) = probe(opts.timeout);
    if let (Some(path), Some(key)) = (&path, key) {
        let entry = Entry {
            key,
            timeout: opts.timeout,
            state,
            detail: detail.clone(),
        };
        // A cache that cannot be written only costs the next start a probe.
        let _ = cache::write(path, &entry);
    }
    (kvm(state, detail), false)
}

/// This boot, and this `/dev/kvm` (a module reload makes a new node with a
/// new ctime), so a cached verdict never outlives what it was about.
fn cache_key() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let boot = std::fs::read_to_string(BOOT_ID).ok()?;
    let boot = boot.trim();
    if boot.is_empty() {
        return None;
    }
    let dev = std::fs::metadata(DEV_KVM).ok()?;
    Some(format!(
        "boot={boot} rdev={:x} ctime={}.{}",
        dev.rdev(),
        dev.ctime(),
        dev.ctime_nsec()
    ))
}

/// Runs the test guest in a forked child, so that a hang in KVM_RUN costs
/// `timeout` and a SIGKILL rather than the daemon.
fn probe(timeout: Duration) -> (BackendState, String) {
    let (state, detail, _pid) = probe_with(Guest::Probe, timeout);
    (state, detail)
}

/// `probe`, with the guest to run; also returns the child's pid (0 if none
/// was forked), which is reaped by the time this returns.
fn probe_with(guest: Guest, timeout: Duration) -> (BackendState, String, libc::pid_t) {
    let not_usable = |why: String| {
        (
            BackendState::NotUsable,
            format!("KVM present but not usable ({why})"),
            0,
        )
    };
    let start = Instant::now();
    let mut fds = [0 as libc::c_int; 2];
    // Non-blocking: the parent reads only after the child is gone, and must
    // not wait on a copy of the write end that another thread's fork holds.
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return not_usable(format!(
            "cannot create the probe's pipe: {}",
            std::io::Error::last_os_error()
        ));
    }
    let [read_fd, write_fd] = fds;
    // SAFETY: the child only runs `child_main`, which ends in _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: read_fd is ours; the child only writes.
        unsafe { libc::close(read_fd) };
        child_main(write_fd, guest);
    }
    // SAFETY: the parent keeps only the read end.
    unsafe { libc::close(write_fd) };
    if pid < 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: read_fd is open and ours.
        unsafe { libc::close(read_fd) };
        return not_usable(format!("cannot fork the probe: {e}"));
    }

    let outcome = wait_or_kill(pid, timeout);
    let message = read_message(read_fd);
    // SAFETY: read_fd is open and ours.
    unsafe { libc::close(read_fd) };
    let took = start.elapsed();
    let (state, detail, _) = match outcome {
        Waited::Exited(0) if message.starts_with("ok") => (
            BackendState::Usable,
            format!(
                "test guest ran (paging on, out {PROBE_BYTE:#04x} to port {PROBE_PORT:#x}, hlt) in {} ms",
                took.as_millis()
            ),
            0,
        ),
        Waited::Exited(_) if !message.is_empty() && !message.starts_with("ok") => {
            not_usable(message)
        }
        Waited::Exited(code) => not_usable(format!("probe exited with status {code}")),
        Waited::Signaled(sig) => not_usable(format!("probe died of signal {sig}")),
        Waited::TimedOut => not_usable(format!(
            "probe timed out after {:.1} s",
            timeout.as_secs_f64()
        )),
    };
    (state, detail, pid)
}

enum Waited {
    Exited(i32),
    Signaled(i32),
    TimedOut,
}

/// Polls the child until it exits or `timeout` passes; then kills and
/// reaps it, so no process or zombie is left behind.
fn wait_or_kill(pid: libc::pid_t, timeout: Duration) -> Waited {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(w) = try_reap(pid) {
            return w;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
    // SAFETY: pid is our own unreaped child, so it cannot have been reused.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    // A task killed inside KVM_RUN normally dies at once; allow a little.
    let grace = Instant::now() + Duration::from_millis(500);
    while Instant::now() < grace {
        if try_reap(pid).is_some() {
            return Waited::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // Stuck in the kernel: reap it whenever it dies, without making the
    // caller wait past its timeout.
    std::thread::spawn(move || {
        let mut status = 0;
        // SAFETY: pid is our child; status is a valid int.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    });
    Waited::TimedOut
}

/// `Some` once the child has exited and been reaped.
fn try_reap(pid: libc::pid_t) -> Option<Waited> {
    let mut status = 0;
    // SAFETY: status is a valid int; WNOHANG never blocks.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if r == pid {
        if libc::WIFEXITED(status) {
            Some(Waited::Exited(libc::WEXITSTATUS(status)))
        } else {
            Some(Waited::Signaled(libc::WTERMSIG(status)))
        }
    } else if r < 0 {
        // ECHILD: someone else reaped it (e.g. SIGCHLD ignored); treat as gone.
        Some(Waited::Exited(-1))
    } else {
        None
    }
}

fn read_message(fd: libc::c_int) -> String {
    let mut buf = [0u8; 512];
    // SAFETY: buf is valid for its length; fd is non-blocking.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    let n = usize::try_from(n).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).trim().to_owned()
}

/// The child: run the guest, report on the pipe, `_exit`. Never returns,
/// never unwinds into the parent's copy of the stack, runs no destructors
/// of the parent's state.
fn child_main(write_fd: libc::c_int, guest: Guest) -> ! {
    let result = std::panic::catch_unwind(|| run_test_guest(guest))
        .unwrap_or_else(|_| Err("the probe panicked".to_owned()));
    let (code, message) = match result {
        Ok(()) => (0, "ok".to_owned()),
        Err(why) => (1, why),
    };
    // Shorter than PIPE_BUF, so the write is atomic and cannot block.
    let bytes = &message.as_bytes()[..message.len().min(400)];
    // SAFETY: write_fd is the pipe's write end; bytes is valid; _exit skips
    // atexit handlers and destructors that belong to the parent.
    unsafe {
        libc::write(write_fd, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(code)
    }
}

/// What the test guest runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Guest {
    /// Turn on paging, `out` the probe byte, `hlt`: the least an OS does.
    Probe,
    /// `jmp $` forever: exercises the timeout on a host where KVM works.
    #[cfg(test)]
    Spin,
}

/// The guest starts in flat 32-bit protected mode at 0x1000 and enables
/// paging itself (a 4 MiB identity page at 0x2000), as every OS does:
///
/// ```text
/// mov eax, cr0; or eax, 0x80000000; mov cr0, eax
/// mov dx, 0x3f8; mov al, 0x5a; out dx, al; hlt
/// ```
///
/// Real mode alone is not enough: some KVMs (e.g. kvm_pvm, which needs
/// patched guests) run real-mode code but triple-fault on paging, and QEMU
/// then reboots the guest forever, which looks like a hang.
#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
fn run_test_guest(guest: Guest) -> Result<(), String> {
    use kvm_bindings::{kvm_segment, kvm_userspace_memory_region};
    use kvm_ioctls::{Kvm, VcpuExit};

    const CODE_ADDR: usize = 0x1000;
    const PAGE_DIR: usize = 0x2000;
    const MEM_SIZE: usize = 0x4000;
    let [port_lo, port_hi] = PROBE_PORT.to_le_bytes();
    #[rustfmt::skip]
    let probe = [
        0x0f, 0x20, 0xc0,                   // mov eax, cr0
        0x0d, 0x00, 0x00, 0x00, 0x80,       // or eax, 0x80000000 (PG)
        0x0f, 0x22, 0xc0,                   // mov cr0, eax
        0x66, 0xba, port_lo, port_hi,       // mov dx, PROBE_PORT
        0xb0, PROBE_BYTE,                   // mov al, PROBE_BYTE
        0xee,                               // out dx, al
        0xf4,                               // hlt
    ];
    let code: &[u8] = match guest {
        Guest::Probe => &probe,
        #[cfg(test)]
        Guest::Spin => &[0xeb, 0xfe],
    };

    let kvm = Kvm::new().map_err(|e| format!("cannot open {DEV_KVM}: {e}"))?;
    let version = kvm.get_api_version();
    if version != 12 {
        return Err(format!("KVM API version {version}, expected 12"));
    }
    let vm = kvm
        .create_vm()
        .map_err(|e| format!("KVM_CREATE_VM failed: {e}"))?;
    // SAFETY: a fresh anonymous private mapping; checked below. It is never
    // unmapped: the child _exits right after.
    let mem = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            MEM_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if mem == libc::MAP_FAILED {
        return Err(format!(
            "cannot map guest memory: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: mem is MEM_SIZE zeroed writable bytes, private to us.
    let bytes = unsafe { std::slice::from_raw_parts_mut(mem.cast::<u8>(), MEM_SIZE) };
    bytes[CODE_ADDR..CODE_ADDR + code.len()].copy_from_slice(code);
    // PDE 0: present, writable, 4 MiB page at 0.
    bytes[PAGE_DIR..PAGE_DIR + 4].copy_from_slice(&0x83u32.to_le_bytes());
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: MEM_SIZE as u64,
        userspace_addr: mem as u64,
    };
    // SAFETY: the region is a live mapping of the stated size that outlives
    // the VM (it is never unmapped).
    unsafe { vm.set_user_memory_region(region) }
        .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION failed: {e}"))?;
    let mut vcpu = vm
        .create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU failed: {e}"))?;
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS failed: {e}"))?;
    let flat = |selector, type_| kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    sregs.cs = flat(0x08, 0xb); // code, execute/read, accessed
    let data = flat(0x10, 0x3); // data, read/write, accessed
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.cr0 = 0x11; // PE, ET: protected mode, paging still off
    sregs.cr3 = PAGE_DIR as u64;
    sregs.cr4 = 0x10; // PSE, for the 4 MiB page
    sregs.efer = 0;
    vcpu.set_sregs(&sregs)
        .map_err(|e| format!("KVM_SET_SREGS failed: {e}"))?;
    let regs = kvm_bindings::kvm_regs {
        rip: CODE_ADDR as u64,
        rflags: 0x2, // bit 1 is reserved and must be set
        ..Default::default()
    };
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS failed: {e}"))?;

    let mut saw_out = false;
    // Two exits are expected; a few spare ones tolerate spurious exits.
    for _ in 0..8 {
        match vcpu.run().map_err(|e| format!("KVM_RUN failed: {e}"))? {
            VcpuExit::IoOut(port, data) => {
                if port != PROBE_PORT || data != [PROBE_BYTE] {
                    return Err(format!(
                        "test guest wrote {data:x?} to port {port:#x}, expected [{PROBE_BYTE:#x}] to {PROBE_PORT:#x}"
                    ));
                }
                saw_out = true;
            }
            VcpuExit::Hlt if saw_out => return Ok(()),
            VcpuExit::Hlt => return Err("test guest halted before its out".into()),
            VcpuExit::Shutdown if !saw_out => {
                return Err("test guest triple-faulted turning on paging; \
                     this KVM cannot run ordinary guests"
                    .into())
            }
            VcpuExit::Intr => continue,
            other => return Err(format!("unexpected KVM exit: {other:?}")),
        }
    }
    Err("test guest did not halt".into())
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "x86")))]
fn run_test_guest(_guest: Guest) -> Result<(), String> {
    Err("the KVM test guest exists only for x86 hosts".into())
}

// ---- install / remove ----

/// What `install` or `remove` will do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Nothing to run; the text says why.
    Done(String),
    /// The user must run these (we lack the privilege).
    Tell(String),
    /// Run these commands, then say `note`.
    Run {
        commands: Vec<Vec<String>>,
        note: String,
    },
}

/// The kvm module for this CPU, from its `flags` line; `None` when the CPU
/// (or the hypervisor below this host) exposes neither VT-x nor AMD-V.
pub(crate) fn kvm_module(cpuinfo: &str) -> Option<&'static str> {
    let flags = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags").and_then(|r| r.split_once(':')))?
        .1;
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    if has("vmx") {
        Some("kvm_intel")
    } else if has("svm") {
        Some("kvm_amd")
    } else {
        None
    }
}

fn cmd(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

pub(crate) fn plan_install(
    kvm: &Backend,
    module: Option<&str>,
    is_root: bool,
    sudo_user: Option<&str>,
    user: Option<&str>,
) -> Result<Plan, DriverError> {
    Ok(match kvm.state {
        BackendState::Usable => Plan::Done("KVM is already usable; nothing to install.".into()),
        BackendState::Missing => {
            let Some(module) = module else {
                return Err(DriverError::NoHardwareVirtualization(
                    "the CPU, or the hypervisor this host runs under, does not expose VT-x/AMD-V \
                     (no vmx or svm flag in /proc/cpuinfo): KVM cannot be enabled; the engine will use TCG"
                        .into(),
                ));
            };
            let persist = format!(
                "to load it at every boot: echo {module} | sudo tee /etc/modules-load.d/kvm.conf"
            );
            if is_root {
                Plan::Run {
                    commands: vec![cmd(&["modprobe", module])],
                    note: format!("loaded {module}; {persist}"),
                }
            } else {
                Plan::Tell(format!(
                    "KVM is not loaded; run: sudo modprobe {module}\n({persist})"
                ))
            }
        }
        BackendState::NoAccess => match (is_root, sudo_user) {
            (true, Some(who)) if !who.is_empty() && who != "root" => Plan::Run {
                commands: vec![cmd(&["usermod", "-aG", "kvm", who])],
                note: format!(
                    "added {who} to the kvm group; {who} must log out and in again for it to apply"
                ),
            },
            (true, _) => Plan::Tell(
                "/dev/kvm cannot be opened even as root: check its permissions (ls -l /dev/kvm) \
                 and any container or security policy that hides it"
                    .into(),
            ),
            (false, _) => {
                let who = user.filter(|u| !u.is_empty()).unwrap_or("$USER");
                Plan::Tell(format!(
                    "run: sudo usermod -aG kvm {who}, then log out and in again"
                ))
            }
        },
        BackendState::NotUsable => Plan::Done(format!(
            "{}.\nNothing can be installed to fix that: the host kernel, or the hypervisor this \
             machine runs under, does not run KVM guests properly. The engine will use TCG \
             (software emulation, slower); that is the honest answer.",
            kvm.detail
        )),
    })
}

pub(crate) fn plan_remove(loaded: &[&str], is_root: bool) -> Plan {
    if loaded.is_empty() {
        return Plan::Done("no kvm_intel or kvm_amd module is loaded; nothing to remove.".into());
    }
    if is_root {
        Plan::Run {
            commands: loaded.iter().map(|m| cmd(&["modprobe", "-r", m])).collect(),
            note: format!("unloaded {}", loaded.join(", ")),
        }
    } else {
        Plan::Tell(format!("run: sudo modprobe -r {}", loaded.join(" ")))
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn run(command: &[String]) -> Result<(), DriverError> {
    let shown = command.join(" ");
    let (program, args) = command.split_first().ok_or_else(|| DriverError::Command {
        command: shown.clone(),
        reason: "empty command".into(),
    })?;
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| DriverError::Command {
            command: shown.clone(),
            reason: e.to_string(),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reason = stderr
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map_or_else(|| out.status.to_string(), str::to_owned);
    Err(DriverError::Command {
        command: shown,
        reason,
    })
}

fn execute(plan: Plan) -> Result<(String, bool), DriverError> {
    match plan {
        Plan::Done(text) | Plan::Tell(text) => Ok((text, false)),
        Plan::Run { commands, note } => {
            for c in &commands {
                run(c)?;
            }
            Ok((note, true))
        }
    }
}

/// Clears the default cache and probes afresh; the status text.
fn fresh_status() -> crate::HostReport {
    let opts = ProbeOptions::default();
    let _ = crate::clear_cache(&opts);
    crate::detect(&opts)
}

pub(crate) fn install() -> Result<String, DriverError> {
    // An explicit install deserves a fresh verdict, not this boot's cache.
    let before = fresh_status();
    let kvm = before
        .backend(Accel::Kvm)
        .cloned()
        .ok_or(DriverError::Unsupported("this build"))?;
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let sudo_user = std::env::var("SUDO_USER").ok();
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok();
    let plan = plan_install(
        &kvm,
        kvm_module(&cpuinfo),
        is_root(),
        sudo_user.as_deref(),
        user.as_deref(),
    )?;
    let (text, changed) = execute(plan)?;
    let after = if changed { fresh_status() } else { before };
    Ok(format!("{text}\n\n{after}"))
}

pub(crate) fn remove() -> Result<String, DriverError> {
    crate::clear_cache(&ProbeOptions::default()).map_err(|source| DriverError::Io {
        context: "clearing the probe cache".into(),
        source,
    })?;
    let loaded: Vec<&str> = ["kvm_intel", "kvm_amd"]
        .into_iter()
        .filter(|m| std::path::Path::new("/sys/module").join(m).exists())
        .collect();
    let (text, _) = execute(plan_remove(&loaded, is_root()))?;
    Ok(format!("probe cache cleared; {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kvm(state: BackendState, detail: &str) -> Backend {
        Backend {
            accel: Accel::Kvm,
            state,
            detail: detail.into(),
        }
    }

    #[test]
    fn module_from_cpu_flags() {
        let intel = "vendor_id\t: GenuineIntel\nflags\t\t: fpu vme vmx sse\n";
        let amd = "vendor_id\t: AuthenticAMD\nflags\t\t: fpu svm sse\n";
        let neither = "vendor_id\t: GenuineIntel\nflags\t\t: fpu hypervisor sse\n";
        assert_eq!(kvm_module(intel), Some("kvm_intel"));
        assert_eq!(kvm_module(amd), Some("kvm_amd"));
        assert_eq!(kvm_module(neither), None);
        assert_eq!(kvm_module(""), None);
        // A flag name containing "vmx" is not the flag.
        assert_eq!(kvm_module("flags : vmxnot svmlike\n"), None);
    }

    #[test]
    fn install_plans() {
        let usable = kvm(BackendState::Usable, "ran");
        assert!(matches!(
            plan_install(&usable, Some("kvm_intel"), false, None, None),
            Ok(Plan::Done(_))
        ));

        let missing = kvm(BackendState::Missing, MISSING);
        match plan_install(&missing, Some("kvm_amd"), true, None, None) {
            Ok(Plan::Run { commands, .. }) => assert_eq!(commands, [cmd(&["modprobe", "kvm_amd"])]),
            other => panic!("{other:?}"),
        }
        match plan_install(&missing, Some("kvm_intel"), false, None, Some("ann")) {
            Ok(Plan::Tell(t)) => assert!(t.contains("sudo modprobe kvm_intel"), "{t}"),
            other => panic!("{other:?}"),
        }
        let err = plan_install(&missing, None, true, None, None).unwrap_err();
        assert!(
            err.to_string().contains("does not expose VT-x/AMD-V"),
            "{err}"
        );

        let denied = kvm(BackendState::NoAccess, NO_ACCESS);
        match plan_install(&denied, None, true, Some("ann"), None) {
            Ok(Plan::Run { commands, note }) => {
                assert_eq!(commands, [cmd(&["usermod", "-aG", "kvm", "ann"])]);
                assert!(note.contains("log out and in again"));
            }
            other => panic!("{other:?}"),
        }
        match plan_install(&denied, None, false, None, Some("bob")) {
            Ok(Plan::Tell(t)) => assert!(t.contains("sudo usermod -aG kvm bob"), "{t}"),
            other => panic!("{other:?}"),
        }
        match plan_install(&denied, None, false, None, None) {
            Ok(Plan::Tell(t)) => assert!(t.contains("sudo usermod -aG kvm $USER"), "{t}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            plan_install(&denied, None, true, None, None),
            Ok(Plan::Tell(_))
        ));

        let hung = kvm(
            BackendState::NotUsable,
            "KVM present but not usable (probe timed out after 3.0 s)",
        );
        match plan_install(&hung, Some("kvm_intel"), true, Some("ann"), None) {
            Ok(Plan::Done(t)) => {
                assert!(t.contains("Nothing can be installed"), "{t}");
                assert!(t.contains("TCG"), "{t}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn remove_plans() {
        assert!(matches!(plan_remove(&[], true), Plan::Done(_)));
        assert_eq!(
            plan_remove(&["kvm_intel"], false),
            Plan::Tell("run: sudo modprobe -r kvm_intel".into())
        );
        match plan_remove(&["kvm_amd"], true) {
            Plan::Run { commands, .. } => {
                assert_eq!(commands, [cmd(&["modprobe", "-r", "kvm_amd"])])
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failing_command_reports_its_stderr() {
        let err = run(&cmd(&[
            "sh",
            "-c",
            "echo 'Module kvm_intel is in use' >&2; exit 1",
        ]))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`sh -c echo 'Module kvm_intel is in use' >&2; exit 1` failed: Module kvm_intel is in use"
        );
        assert!(run(&cmd(&["/nonexistent/modprobe"])).is_err());
    }

    /// The timeout path, for real: a guest that spins forever never leaves
    /// KVM_RUN, so the child must be killed at the deadline and reaped.
    #[test]
    fn spinning_guest_times_out_and_is_reaped() {
        if OpenOptions::new()
            .read(true)
            .write(true)
            .open(DEV_KVM)
            .is_err()
        {
            eprintln!("no usable /dev/kvm here; the timeout needs a running guest");
            return;
        }
        let timeout = Duration::from_millis(500);
        let start = Instant::now();
        let (state, detail, pid) = probe_with(Guest::Spin, timeout);
        let took = start.elapsed();
        eprintln!("{detail} after {took:?}");
        assert_eq!(state, BackendState::NotUsable);
        assert!(took < timeout + Duration::from_secs(2), "{took:?}");
        if detail.contains("timed out") {
            assert_eq!(
                detail,
                "KVM present but not usable (probe timed out after 0.5 s)"
            );
            assert!(took >= timeout, "{took:?}");
        }
        assert!(pid > 0);
        // Reaped: it is no longer our child (ECHILD) and no longer exists.
        let mut status = 0;
        // SAFETY: status is a valid int; WNOHANG never blocks.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert_eq!(r, -1);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn cache_key_names_this_boot() {
        if let Some(key) = cache_key() {
            let boot = std::fs::read_to_string(BOOT_ID).unwrap();
            assert!(key.starts_with(&format!("boot={}", boot.trim())), "{key}");
            assert!(key.contains(" rdev=") && key.contains(" ctime="), "{key}");
        } else {
            assert!(std::fs::metadata(DEV_KVM).is_err());
        }
    }
}
