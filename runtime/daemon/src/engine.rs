//! The engine (QEMU) command line for a guest: the coLinux devices mapped
//! onto virtio (docs/design.md §1). Pure: nothing here touches the host except
//! [`find_engine`], which searches `PATH`, [`create_scsi_images`], which
//! makes the disk files `scsiN=disk,PATH,SIZE` asks for, and the notes
//! [`engine_command`] logs about settings with no meaning here.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use colinux_config::{
    Accel, Arch, BridgeBackend, ModemLine, NetKind, Parity, ScsiKind, Serial, Settings,
};

/// Where QEMU connects for QMP: the daemon listens, QEMU is the client, so
/// no event is lost between QEMU's start and the daemon's connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QmpEndpoint {
    Unix(PathBuf),
    Tcp(u16),
}

/// What the command line depends on besides the settings and the QMP endpoint.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub accel: Accel,
    pub host_ram_mb: u64,
    /// A cluster guest's seed disk (`seed.rs`), attached read-only after
    /// the cobd disks so that their numbers do not change.
    pub seed_disk: Option<PathBuf>,
    /// Linux: the open tap descriptor of each `ethN=pcap-bridge,…`
    /// (`tap.rs`), which QEMU inherits. Empty in a dry run.
    pub taps: BTreeMap<u8, i32>,
    /// Someone is at the console (not `-d`, not a service, and the
    /// daemon's input is a terminal): the guest's first boot may ask there
    /// for a root password.
    pub console_attached: bool,
}

/// The program and its arguments, one per element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Descriptors the engine inherits (the taps).
    pub inherit_fds: Vec<i32>,
}

/// What the guest kernel needs from us on its command line, before the
/// user's own parameters (which come last and so can override).
pub const DAEMON_KERNEL_ARGS: &[&str] = &["console=ttyS0"];

/// Added when the console is attached: the stock images' first boot asks
/// for a root password only then (a module-style parameter, so the kernel
/// neither warns about it nor hands it to init).
pub const CONSOLE_ATTACHED_ARG: &str = "colinux.console=attached";

/// `ttysN` becomes the guest's `ttyS(N+1)`: ttyS0 is the console, and the
/// pc machine has four ISA serial ports.
pub const MAX_HOST_SERIAL: u8 = 2;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    #[error("{place}: eth{index}={kind} is not supported on this host: QEMU cannot bridge through {kind}. {instead}")]
    Bridge {
        place: String,
        index: u8,
        kind: &'static str,
        instead: &'static str,
    },
    #[error("{place}: eth{index}=pcap-bridge needs the host bridge's name, like eth{index}=pcap-bridge,br0")]
    BridgeName { place: String, index: u8 },
    #[error("{place}: ttys{index}: only ttys0..ttys{MAX_HOST_SERIAL} exist (they become the guest's ttyS1..ttyS3; ttyS0 is the console)")]
    SerialIndex { place: String, index: u8 },
    #[error("no kernel= given: the guest needs a kernel (for example kernel=vmlinuz)")]
    NoKernel,
    /// `origin` is the place and token, like every config error.
    #[error("{origin}: {path}: {problem}")]
    ScsiImage {
        origin: String,
        path: String,
        problem: String,
    },
    #[error("{0}")]
    Cmdline(String),
    /// `origin` is the place and token, like every config error.
    #[error("{origin}: QEMU for Windows has no 9p file sharing (virtfs), so a host folder cannot be shared into the guest on a Windows host yet; copy files with scp through the slirp forward, or share the folder from Windows (SMB) and mount it with cifs in the guest")]
    CofsOnWindows { origin: String },
    #[error("{origin}: the path is {len} characters long, and QEMU for Windows opens no path of 260 (MAX_PATH) or more; move the file to a shorter path, or give its folder a drive letter (subst X: \"C:\\the\\long\\folder\") and name it through that")]
    PathTooLong { origin: String, len: usize },
    #[error("{program} not found {where_}: {hint}")]
    Missing {
        program: String,
        where_: String,
        hint: &'static str,
    },
}

#[cfg(windows)]
const BRIDGE_INSTEAD: &str = "Use ethN=tuntap,\"TAP adapter name\" and bridge that TAP-Windows adapter with your network adapter in Network Connections, or ethN=slirp.";
#[cfg(target_os = "linux")]
const BRIDGE_INSTEAD: &str = "Use ethN=pcap-bridge,BRIDGE (the daemon adds a tap to the host bridge BRIDGE), ethN=tuntap,\"tap0\", or ethN=slirp.";
#[cfg(not(any(windows, target_os = "linux")))]
const BRIDGE_INSTEAD: &str =
    "Use ethN=tuntap,\"tap0\" with tap0 added to a host bridge, or ethN=slirp.";

#[cfg(windows)]
const QEMU_HINT: &str = "install QEMU for Windows (qemu.org/download) and add it to PATH, or set qemu=C:\\path\\to\\qemu-system-i386.exe";
#[cfg(not(windows))]
const QEMU_HINT: &str = "install it with `apt-get install qemu-system-x86` (Debian/Ubuntu), or set qemu=/path/to/qemu-system-i386";

fn daemon_kernel_args(plan: &Plan) -> Vec<&'static str> {
    let mut args = DAEMON_KERNEL_ARGS.to_vec();
    if plan.console_attached {
        args.push(CONSOLE_ATTACHED_ARG);
    }
    args
}

/// Refuses what the engine on this host cannot do, before anything starts:
/// so it is a config error (exit code 2), not an engine failure.
pub fn check_host_support(settings: &Settings) -> Result<(), EngineError> {
    if cfg!(windows) {
        if let Some(share) = settings.cofs.values().next() {
            return Err(EngineError::CofsOnWindows {
                origin: share.origin.to_string(),
            });
        }
        let files = (settings.kernel.iter().chain(&settings.initrd))
            .map(|f| (&f.value, &f.origin))
            .chain(settings.cobd.values().map(|d| (&d.path, &d.origin)))
            .chain(settings.scsi.values().map(|s| (&s.path, &s.origin)));
        for (path, origin) in files {
            let whole = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            let len = whole.to_string_lossy().encode_utf16().count();
            if len >= MAX_PATH {
                let origin = origin.to_string();
                return Err(EngineError::PathTooLong { origin, len });
            }
        }
    }
    Ok(())
}

/// Windows' MAX_PATH, NUL included. QEMU for Windows opens files through
/// the ANSI file API, which refuses longer paths even in the `\\?\` form
/// (tried: "File name is too long").
const MAX_PATH: usize = 260;

/// The QEMU binary's name for the guest's architecture.
pub fn default_engine(arch: Arch) -> &'static str {
    match arch {
        Arch::I386 => "qemu-system-i386",
        Arch::X86_64 => "qemu-system-x86_64",
    }
}

/// The engine to run: `qemu=` if given (a bare name is searched in `PATH`),
/// else the default for the arch, searched in `PATH`.
pub fn find_engine(settings: &Settings) -> Result<PathBuf, EngineError> {
    let wanted = match &settings.qemu {
        Some(q) => q.value.clone(),
        None => PathBuf::from(default_engine(settings.arch())),
    };
    let found = if wanted.components().count() > 1 {
        wanted.is_file().then(|| wanted.clone())
    } else {
        search_path(&wanted)
    };
    found.ok_or_else(|| EngineError::Missing {
        program: wanted.display().to_string(),
        where_: match (&settings.qemu, wanted.components().count() > 1) {
            (Some(q), true) => format!("(no such file, {})", q.origin.place),
            (_, true) => "(no such file)".into(),
            (_, false) => "on PATH".into(),
        },
        hint: QEMU_HINT,
    })
}

fn search_path(name: &Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find_map(|dir| {
        let candidate = dir.join(name);
        let exe = candidate.with_extension(std::env::consts::EXE_EXTENSION);
        [candidate, exe].into_iter().find(|c| c.is_file())
    })
}

/// Doubles commas: QEMU's option syntax reads `,` as a separator.
fn esc(value: &str) -> String {
    value.replace(',', ",,")
}

fn esc_path(path: &Path) -> String {
    esc(&path.to_string_lossy())
}

/// Builds the engine's argument list for `settings`. `program` is what
/// [`find_engine`] returned (or the bare default name, for a dry run on a
/// host without QEMU).
pub fn engine_command(
    settings: &Settings,
    plan: &Plan,
    qmp: &QmpEndpoint,
    program: PathBuf,
) -> Result<EngineCommand, EngineError> {
    let mut a = Args::default();
    let kernel = settings.kernel.as_ref().ok_or(EngineError::NoKernel)?;
    for note in notes(settings) {
        tracing::warn!("{note}");
    }
    let cmdline = settings
        .kernel_cmdline(&daemon_kernel_args(plan))
        .map_err(|e| EngineError::Cmdline(e.to_string()))?;

    a.push([
        "-name",
        &format!(
            "guest={},process=colinux-{}",
            esc(&plan.name),
            esc(&plan.name)
        ),
    ]);
    // pc, not microvm: see BENCHMARKS.md (runtime) for the measurement.
    a.push(["-machine", "pc"]);
    a.push(["-accel", plan.accel.as_str()]);
    if plan.accel == Accel::Kvm {
        a.push(["-cpu", "host"]);
    } else if settings.arch() == Arch::I386 {
        // QEMU's default 32-bit CPU has no PSE-36, so it reports 32-bit
        // physical addresses: a PAE kernel given RAM above 4 GiB faults on
        // its first use of it (a reserved-bit page fault). PSE-36 makes
        // them 36-bit, as on every PAE CPU since the Pentium III.
        a.push(["-cpu", "qemu32,+pse36"]);
    }
    a.push([
        "-m",
        &settings.mem_mb_or_default(plan.host_ram_mb).to_string(),
    ]);
    a.push(["-smp", &settings.smp().to_string()]);
    a.push([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    a.push(["-kernel", &kernel.value.to_string_lossy()]);
    if let Some(initrd) = &settings.initrd {
        a.push(["-initrd", &initrd.value.to_string_lossy()]);
    }
    a.push(["-append", &cmdline]);

    // The console is the engine's stdio; the daemon multiplexes it.
    a.push([
        "-chardev",
        "stdio,id=console,signal=off",
        "-serial",
        "chardev:console",
    ]);
    let qmp = match qmp {
        QmpEndpoint::Unix(path) => format!("socket,id=qmp,path={}", esc_path(path)),
        QmpEndpoint::Tcp(port) => format!("socket,id=qmp,host=127.0.0.1,port={port}"),
    };
    a.push(["-chardev", &qmp, "-mon", "chardev=qmp,mode=control"]);
    // Entropy: without it a first boot waits minutes for ssh host keys.
    a.push(["-device", "virtio-rng-pci"]);

    disks(settings, &mut a);
    if let Some(seed) = &plan.seed_disk {
        a.push([
            "-drive",
            &format!(
                "if=none,id=seed,file={},format=raw,read-only=on",
                esc_path(seed)
            ),
            "-device",
            "virtio-blk-pci,drive=seed",
        ]);
    }
    scsi_devices(settings, &mut a);
    networks(settings, plan, &mut a)?;
    for (index, share) in &settings.cofs {
        a.push([
            "-fsdev",
            &format!(
                "local,id=cofs{index},path={},security_model=none",
                esc_path(&share.dir)
            ),
            "-device",
            &format!("virtio-9p-pci,fsdev=cofs{index},mount_tag=cofs{index}"),
        ]);
    }
    for (&index, serial) in &settings.ttys {
        if index > MAX_HOST_SERIAL {
            return Err(EngineError::SerialIndex {
                place: serial.origin.place.to_string(),
                index,
            });
        }
        a.push([
            "-chardev",
            &format!(
                "serial,id=ttys{index},path={}",
                esc(&host_serial_device(&serial.device))
            ),
            "-device",
            &format!("isa-serial,chardev=ttys{index},index={}", index + 1),
        ]);
    }
    Ok(EngineCommand {
        program,
        args: a.0,
        inherit_fds: plan.taps.values().copied().collect(),
    })
}

/// cobd → virtio-blk in index order. Our kernel names virtio disks
/// `cobd<probe order>`, so a gap in the indices gets an empty stand-in
/// disk: `cobd2=` alone is still `/dev/cobd2` in the guest.
fn disks(settings: &Settings, a: &mut Args) {
    let Some(&last) = settings.cobd.keys().next_back() else {
        return;
    };
    for index in 0..=last {
        let drive = match settings.cobd.get(&index) {
            Some(disk) => format!(
                "if=none,id=cobd{index},file={},format=raw,discard=unmap",
                esc_path(&disk.path)
            ),
            None => format!("if=none,id=cobd{index},driver=null-co,size=0,read-only=on"),
        };
        a.push([
            "-drive",
            &drive,
            "-device",
            &format!("virtio-blk-pci,drive=cobd{index}"),
        ]);
    }
}

/// scsiN → virtio-scsi, target N. Linux scans the targets in order and
/// names disks and CD-ROMs separately, so the disks become /dev/sda,
/// /dev/sdb, … and the CD-ROMs /dev/sr0, /dev/sr1, … in index order.
fn scsi_devices(settings: &Settings, a: &mut Args) {
    if settings.scsi.is_empty() {
        return;
    }
    a.push(["-device", "virtio-scsi-pci,id=scsi"]);
    for (index, scsi) in &settings.scsi {
        let path = esc_path(&scsi.path);
        let (drive, device) = match scsi.kind {
            ScsiKind::Disk => (
                format!("if=none,id=scsi{index},file={path},format=raw,discard=unmap"),
                "scsi-hd",
            ),
            ScsiKind::Cdrom => (
                format!("if=none,id=scsi{index},file={path},format=raw,media=cdrom,read-only=on"),
                "scsi-cd",
            ),
        };
        a.push([
            "-drive",
            &drive,
            "-device",
            &format!("{device},bus=scsi.0,channel=0,scsi-id={index},lun=0,drive=scsi{index}"),
        ]);
    }
}

/// What the host calls a `ttysN=` device: a Windows `COMn` is
/// `/dev/ttyS(n-1)` on Linux; on Windows, ports from COM10 up need the
/// `\\.\` device prefix.
pub fn host_serial_device(device: &str) -> String {
    match Serial::com_port(device) {
        Some(Some(port)) if cfg!(unix) => format!("/dev/ttyS{}", port - 1),
        Some(Some(port)) if port >= 10 => format!("\\\\.\\COM{port}"),
        _ => device.to_string(),
    }
}

/// Settings the guest cannot use here, each on one line with where it was
/// written and why: the daemon logs them at `-v 1` (warn) and above.
pub fn notes(settings: &Settings) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(cocon) = &settings.cocon {
        let scrollback = match cocon.value.scrollback {
            Some(_) => "its scrollback is kept",
            None => "the scrollback keeps its default",
        };
        notes.push(format!(
            "{}: the console is a serial line, so its size is the terminal's; {scrollback}",
            cocon.origin
        ));
    }
    if let Some(color) = &settings.color {
        notes.push(format!(
            "{}: no meaning on a serial console (the terminal's own colours show); ignored",
            color.origin
        ));
    }
    if let Some(cursor) = &settings.cursor {
        notes.push(format!(
            "{}: no meaning on a serial console (the terminal draws the cursor); ignored",
            cursor.origin
        ));
    }
    for ignored in &settings.ignored {
        notes.push(format!("{}: ignored: {}", ignored.origin, ignored.reason));
    }
    for (index, serial) in &settings.ttys {
        if let Some(note) = serial_note(*index, serial) {
            notes.push(format!("{}: {note}", serial.origin));
        }
    }
    notes
}

/// The `mode` options of a serial port, said as what they become: QEMU
/// opens a Linux port at 115200 8N1 and then applies the line settings
/// and modem lines the guest's driver programs, so the options belong in
/// the guest (`stty`). QEMU on Windows leaves the port as Windows has it.
fn serial_note(index: u8, serial: &Serial) -> Option<String> {
    let o = &serial.options;
    if *o == Default::default() {
        return None;
    }
    if cfg!(windows) {
        return Some(format!(
            "QEMU leaves the port's line settings as Windows has them: run              `mode {}: {}` before the guest starts",
            serial.device, o
        ));
    }
    let mut stty = Vec::new();
    if let Some(baud) = o.baud {
        stty.push(baud.to_string());
    }
    if let Some(bits) = o.data_bits {
        stty.push(format!("cs{bits}"));
    }
    match o.parity {
        Some(Parity::None) => stty.push("-parenb".into()),
        Some(Parity::Even) => stty.push("parenb -parodd -cmspar".into()),
        Some(Parity::Odd) => stty.push("parenb parodd -cmspar".into()),
        Some(Parity::Mark) => stty.push("parenb parodd cmspar".into()),
        Some(Parity::Space) => stty.push("parenb -parodd cmspar".into()),
        None => {}
    }
    match o.stop_bits {
        Some(2) => stty.push("cstopb".into()),
        Some(_) => stty.push("-cstopb".into()),
        None => {}
    }
    if let Some(xon) = o.xon {
        stty.push(if xon { "ixon ixoff" } else { "-ixon -ixoff" }.into());
    }
    let hardware_flow = o.rts == Some(ModemLine::Handshake) || o.octs == Some(true);
    if hardware_flow {
        stty.push("crtscts".into());
    }
    let mut no_equivalent = Vec::new();
    if o.dtr.is_some() || (o.rts.is_some() && o.rts != Some(ModemLine::Handshake)) {
        no_equivalent.push("dtr/rts (the guest's driver raises them when it opens the port)");
    }
    if o.odsr.is_some() || o.idsr.is_some() {
        no_equivalent.push("odsr/idsr (Linux has no DSR flow control)");
    }
    if o.timeout.is_some() {
        no_equivalent.push("to (timeouts are the guest program's)");
    }
    let mut note = format!(
        "\"{o}\": QEMU applies the line settings the guest sets, so set them in the guest: \
         stty -F /dev/ttyS{} {}",
        index + 1,
        stty.join(" ")
    );
    if !no_equivalent.is_empty() {
        note.push_str(&format!("; no equivalent: {}", no_equivalent.join(", ")));
    }
    Some(note)
}

/// Makes the disk files that `scsiN=disk,PATH,SIZE` names and that do not
/// exist yet: sparse, SIZE MB, made under a temporary name and then linked
/// into place, so a half-made file never looks like an image and a file
/// that appeared meanwhile is never replaced. An existing file keeps
/// its size unless `,grow` asks for it to be extended; it is never shrunk.
pub fn create_scsi_images(settings: &Settings) -> Result<(), EngineError> {
    for (&index, scsi) in &settings.scsi {
        let Some(size_mb) = scsi.size_mb else {
            continue;
        };
        let error = |problem: String| EngineError::ScsiImage {
            origin: scsi.origin.to_string(),
            path: scsi.path.display().to_string(),
            problem,
        };
        let wanted = u64::from(size_mb) << 20;
        match fs::metadata(&scsi.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                create_sparse(&scsi.path, wanted)
                    .map_err(|e| error(format!("cannot create a {size_mb} MB image: {e}")))?;
                tracing::info!(
                    "scsi{index}: created {} ({size_mb} MB)",
                    scsi.path.display()
                );
            }
            Err(e) => return Err(error(e.to_string())),
            Ok(meta) if !meta.is_file() || meta.len() == wanted => {}
            Ok(meta) if meta.len() < wanted && scsi.grow => {
                fs::OpenOptions::new()
                    .write(true)
                    .open(&scsi.path)
                    .and_then(|file| file.set_len(wanted))
                    .map_err(|e| error(format!("cannot grow it to {size_mb} MB: {e}")))?;
                tracing::info!("scsi{index}: grew {} to {size_mb} MB", scsi.path.display());
            }
            Ok(meta) => tracing::warn!(
                "{}: {} is {} MB, not {size_mb}; left as it is ({})",
                scsi.origin,
                scsi.path.display(),
                meta.len() >> 20,
                if meta.len() < wanted {
                    "add ,grow to extend it"
                } else {
                    "images are never shrunk"
                }
            ),
        }
    }
    Ok(())
}

fn create_sparse(path: &Path, len: u64) -> io::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let made = fs::File::create(&partial)
        .and_then(|file| file.set_len(len))
        .and_then(|()| fs::hard_link(&partial, path));
    let _ = fs::remove_file(&partial);
    made
}

/// The host bridge of each `ethN=pcap-bridge,BRIDGE` this host bridges
/// itself (Linux: a tap the daemon makes, see `tap.rs`), by index.
pub fn host_bridges(settings: &Settings) -> Result<BTreeMap<u8, String>, EngineError> {
    let mut bridges = BTreeMap::new();
    if !cfg!(target_os = "linux") {
        return Ok(bridges);
    }
    for (&index, net) in &settings.eth {
        if let NetKind::Bridge {
            backend: BridgeBackend::Pcap,
            name,
            ..
        } = &net.kind
        {
            let name = name.clone().ok_or_else(|| EngineError::BridgeName {
                place: net.origin.place.to_string(),
                index,
            })?;
            bridges.insert(index, name);
        }
    }
    Ok(bridges)
}

fn networks(settings: &Settings, plan: &Plan, a: &mut Args) -> Result<(), EngineError> {
    let bridges = host_bridges(settings)?;
    for (&index, net) in &settings.eth {
        let netdev = match &net.kind {
            NetKind::Slirp { redirects } => {
                let mut netdev = format!("user,id=eth{index}");
                for r in redirects {
                    for offset in 0..r.count {
                        let host = u32::from(r.host_port) + u32::from(offset);
                        let guest = u32::from(r.guest_port) + u32::from(offset);
                        netdev.push_str(&format!(
                            ",hostfwd={}::{host}-:{guest}",
                            r.protocol.as_str()
                        ));
                    }
                }
                netdev
            }
            NetKind::Tuntap { name } => {
                let mut netdev = format!("tap,id=eth{index}");
                if let Some(name) = name {
                    netdev.push_str(&format!(",ifname={}", esc(name)));
                }
                if cfg!(unix) {
                    netdev.push_str(",script=no,downscript=no");
                }
                netdev
            }
            NetKind::Bridge { .. } if bridges.contains_key(&index) => match plan.taps.get(&index) {
                Some(fd) => format!("tap,id=eth{index},fd={fd}"),
                None => format!(
                    "tap,id=eth{index},fd=<a tap on bridge {}, made at start>",
                    bridges[&index]
                ),
            },
            NetKind::Bridge { backend, .. } => {
                return Err(EngineError::Bridge {
                    place: net.origin.place.to_string(),
                    index,
                    kind: match backend {
                        BridgeBackend::Pcap => "pcap-bridge",
                        BridgeBackend::Ndis => "ndis-bridge",
                    },
                    instead: BRIDGE_INSTEAD,
                })
            }
        };
        let mut device = format!("virtio-net-pci,netdev=eth{index}");
        if let Some(mac) = &net.mac {
            device.push_str(&format!(",mac={mac}"));
        }
        a.push(["-netdev", &netdev, "-device", &device]);
    }
    Ok(())
}

#[derive(Default)]
struct Args(Vec<String>);

impl Args {
    fn push<const N: usize>(&mut self, args: [&str; N]) {
        self.0.extend(args.iter().map(|s| s.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            name: "test".into(),
            accel: Accel::Tcg,
            host_ram_mb: 4096,
            seed_disk: None,
            taps: BTreeMap::new(),
            console_attached: false,
        }
    }

    /// `name` in the config's directory, as this host writes paths.
    fn at(name: &str) -> String {
        Path::new("/c").join(name).display().to_string()
    }

    fn build(config: &str) -> Result<Vec<String>, EngineError> {
        let settings = colinux_config::parse_str(config, Path::new("/c/test.conf")).unwrap();
        let qmp = QmpEndpoint::Unix("/run/q.sock".into());
        engine_command(&settings, &plan(), &qmp, "qemu".into()).map(|c| c.args)
    }

    /// The value following `flag`, for every occurrence.
    fn values<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn an_attached_console_is_said_on_the_kernel_command_line() {
        let settings =
            colinux_config::parse_str("kernel=k root=/dev/cobd0", Path::new("/c/t.conf")).unwrap();
        let qmp = QmpEndpoint::Unix("/run/q.sock".into());
        let append = |console_attached| {
            let plan = Plan {
                console_attached,
                ..plan()
            };
            let args = engine_command(&settings, &plan, &qmp, "qemu".into())
                .unwrap()
                .args;
            values(&args, "-append")[0].to_string()
        };
        assert_eq!(
            append(true),
            "console=ttyS0 colinux.console=attached root=/dev/cobd0"
        );
        assert_eq!(append(false), "console=ttyS0 root=/dev/cobd0");
    }

    #[test]
    fn cofs_is_refused_before_start_only_where_qemu_has_no_9p() {
        let settings =
            colinux_config::parse_str("kernel=vmlinuz cofs0=share", Path::new("/c/test.conf"))
                .unwrap();
        let checked = check_host_support(&settings);
        if cfg!(windows) {
            let message = checked.unwrap_err().to_string();
            assert!(
                message.contains("cofs0=share: QEMU for Windows has no 9p"),
                "{message}"
            );
        } else {
            assert_eq!(checked, Ok(()));
        }
    }

    #[test]
    fn a_path_past_max_path_is_refused_before_start_on_windows() {
        let long = "d".repeat(MAX_PATH);
        let text = format!("kernel=vmlinuz cobd0=short.img cobd1={long}");
        let settings = colinux_config::parse_str(&text, Path::new("/c/test.conf")).unwrap();
        let checked = check_host_support(&settings);
        if cfg!(windows) {
            let message = checked.unwrap_err().to_string();
            assert!(
                message.contains(&format!("cobd1={long}: the path is "))
                    && message.contains("260 (MAX_PATH)"),
                "{message}"
            );
        } else {
            assert_eq!(checked, Ok(()));
        }
    }

    #[test]
    fn a_typical_config_maps_onto_virtio_devices() {
        let args = build(
            "kernel=vmlinuz initrd=initrd.gz mem=256 smp=2 cobd0=root.ext4 cobd1=/dev/sdb \
             eth0=slirp,,tcp:2222:22/udp:5000:50:2 cofs0=/srv/share root=/dev/cobd0 ro",
        )
        .unwrap();
        assert_eq!(values(&args, "-kernel"), [at("vmlinuz")]);
        assert_eq!(values(&args, "-initrd"), [at("initrd.gz")]);
        assert_eq!(values(&args, "-m"), ["256"]);
        assert_eq!(values(&args, "-smp"), ["2"]);
        assert_eq!(values(&args, "-accel"), ["tcg"]);
        assert_eq!(
            values(&args, "-append"),
            ["console=ttyS0 root=/dev/cobd0 ro"]
        );
        assert_eq!(
            values(&args, "-drive"),
            [
                format!(
                    "if=none,id=cobd0,file={},format=raw,discard=unmap",
                    at("root.ext4")
                ),
                "if=none,id=cobd1,file=/dev/sdb,format=raw,discard=unmap".to_string()
            ]
        );
        assert_eq!(
            values(&args, "-netdev"),
            ["user,id=eth0,hostfwd=tcp::2222-:22,hostfwd=udp::5000-:50,hostfwd=udp::5001-:51"]
        );
        assert_eq!(
            values(&args, "-fsdev"),
            ["local,id=cofs0,path=/srv/share,security_model=none"]
        );
        let devices = values(&args, "-device");
        assert!(
            devices.contains(&"virtio-9p-pci,fsdev=cofs0,mount_tag=cofs0"),
            "{devices:?}"
        );
        assert!(
            devices.contains(&"virtio-net-pci,netdev=eth0"),
            "{devices:?}"
        );
        // Disks in index order, before the network card.
        let blk: Vec<&str> = devices
            .iter()
            .copied()
            .filter(|d| d.starts_with("virtio-blk"))
            .collect();
        assert_eq!(
            blk,
            ["virtio-blk-pci,drive=cobd0", "virtio-blk-pci,drive=cobd1"]
        );
        assert_eq!(
            values(&args, "-chardev")[1],
            "socket,id=qmp,path=/run/q.sock",
            "QMP: QEMU connects to the daemon's socket"
        );
        assert!(args.contains(&"-no-reboot".to_string()));
    }

    #[test]
    fn a_cluster_seed_is_the_last_virtio_disk_read_only_and_a_node_names_itself_in_ip() {
        let settings = colinux_config::parse_str(
            "kernel=k cobd1=swap.img cobd0=data.img cluster_hostname=node-pc17 \
             cluster_head=10.77.0.1 cluster_munge_key=m cluster_ssh_host_key=h",
            Path::new("/c/test.conf"),
        )
        .unwrap();
        let plan = Plan {
            seed_disk: Some("/run/colinux/test/seed.img".into()),
            ..plan()
        };
        let qmp = QmpEndpoint::Unix("/run/q.sock".into());
        let args = engine_command(&settings, &plan, &qmp, "qemu".into())
            .unwrap()
            .args;
        let drives = values(&args, "-drive");
        assert_eq!(drives.len(), 3);
        assert!(drives[0].contains("id=cobd0") && drives[1].contains("id=cobd1"));
        assert_eq!(
            drives[2],
            "if=none,id=seed,file=/run/colinux/test/seed.img,format=raw,read-only=on"
        );
        let blk: Vec<&str> = values(&args, "-device")
            .into_iter()
            .filter(|d| d.starts_with("virtio-blk"))
            .collect();
        assert_eq!(
            blk,
            [
                "virtio-blk-pci,drive=cobd0",
                "virtio-blk-pci,drive=cobd1",
                "virtio-blk-pci,drive=seed"
            ]
        );
        let mut parser = colinux_config::Parser::new("/c");
        parser.arg("kernel=k").unwrap();
        parser
            .ini_text(
            "[NFS]\nserver = 10.77.0.1\npath = /srv/comosix/node\noptions = vers=3,nolock,tcp\n\
             [cluster]\nhostname_prefix = node-\nhost_name = pc17\nhead = 10.77.0.1\n\
             munge_key = m\nssh_host_key = h\n",
            Path::new("/c/node.ini"),
        )
        .unwrap();
        let node = parser.finish().unwrap();
        let args = engine_command(&node, &plan, &qmp, "qemu".into())
            .unwrap()
            .args;
        assert_eq!(
            values(&args, "-append"),
            ["console=ttyS0 root=/dev/nfs nfsroot=10.77.0.1:/srv/comosix/node,vers=3,nolock,tcp \
              ip=::::node-pc17:eth0:dhcp"]
        );
        let plain = build("kernel=k cobd0=r.img").unwrap();
        assert!(!plain.iter().any(|a| a.contains("seed")), "{plain:?}");
    }

    #[test]
    fn a_gap_in_cobd_indices_gets_an_empty_stand_in_so_names_stay() {
        let args = build("kernel=k cobd2=data.img cobd0=root.img").unwrap();
        let drives = values(&args, "-drive");
        assert_eq!(drives.len(), 3);
        assert!(
            drives[1].contains("id=cobd1,driver=null-co,size=0"),
            "{drives:?}"
        );
        assert!(
            drives[2].contains(&format!("id=cobd2,file={}", at("data.img"))),
            "{drives:?}"
        );
    }

    #[test]
    fn commas_in_paths_are_escaped_for_qemu() {
        let args = build("kernel=k cobd0=\"/data/a,b.img\"").unwrap();
        assert_eq!(
            values(&args, "-drive"),
            ["if=none,id=cobd0,file=/data/a,,b.img,format=raw,discard=unmap"]
        );
    }

    #[test]
    fn tuntap_mac_and_serial_ports() {
        let args = build(
            "kernel=k eth1=tuntap,\"tap7\",02:00:00:00:00:01 ttys0=/dev/ttyUSB0 ttys2=/dev/ttyS3",
        )
        .unwrap();
        let netdev = values(&args, "-netdev")[0];
        assert!(netdev.starts_with("tap,id=eth1,ifname=tap7"), "{netdev}");
        assert!(
            values(&args, "-device").contains(&"virtio-net-pci,netdev=eth1,mac=02:00:00:00:00:01")
        );
        let chardevs = values(&args, "-chardev");
        assert!(
            chardevs.contains(&"serial,id=ttys0,path=/dev/ttyUSB0"),
            "{chardevs:?}"
        );
        let devices = values(&args, "-device");
        assert!(
            devices.contains(&"isa-serial,chardev=ttys2,index=3"),
            "{devices:?}"
        );
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_pcap_bridge_is_the_daemons_tap_by_descriptor() {
        let settings = colinux_config::parse_str(
            "kernel=k eth0=slirp eth1=pcap-bridge,cobr0,02:c0:00:00:00:01",
            Path::new("/c/test.conf"),
        )
        .unwrap();
        let plan = Plan {
            taps: BTreeMap::from([(1, 7)]),
            ..plan()
        };
        let qmp = QmpEndpoint::Unix("/run/q.sock".into());
        let command = engine_command(&settings, &plan, &qmp, "qemu".into()).unwrap();
        assert_eq!(
            values(&command.args, "-netdev"),
            ["user,id=eth0", "tap,id=eth1,fd=7"]
        );
        assert!(values(&command.args, "-device")
            .contains(&"virtio-net-pci,netdev=eth1,mac=02:c0:00:00:00:01"));
        assert_eq!(command.inherit_fds, [7]);
        let dry = build("kernel=k eth0=pcap-bridge,cobr0").unwrap();
        assert_eq!(
            values(&dry, "-netdev"),
            ["tap,id=eth0,fd=<a tap on bridge cobr0, made at start>"]
        );
        let err = build("kernel=k eth2=pcap-bridge").unwrap_err().to_string();
        assert!(
            err.contains("test.conf:1: eth2=pcap-bridge needs the host bridge's name"),
            "{err}"
        );
        let err = build("kernel=k eth0=ndis-bridge,x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ethN=pcap-bridge,BRIDGE"), "{err}");
    }

    #[test]
    fn errors_name_the_setting_and_what_to_do() {
        // Linux bridges pcap-bridge itself; ndis-bridge is Windows' alone.
        let kind = if cfg!(target_os = "linux") {
            "ndis-bridge"
        } else {
            "pcap-bridge"
        };
        let bridge = build(&format!("kernel=k eth0={kind},\"eth0\""))
            .unwrap_err()
            .to_string();
        assert!(
            bridge.contains("test.conf")
                && bridge.contains(&format!("eth0={kind} is not supported")),
            "{bridge}"
        );
        assert!(bridge.contains("tuntap"), "{bridge}");
        let serial = build("kernel=k ttys3=/dev/ttyS0").unwrap_err().to_string();
        assert!(
            serial.contains("ttys3") && serial.contains("ttys0..ttys2"),
            "{serial}"
        );
        assert_eq!(build("cobd0=root.img").unwrap_err(), EngineError::NoKernel);
    }

    #[test]
    fn kvm_gets_the_host_cpu_and_defaults_fill_in() {
        let settings = colinux_config::parse_str("kernel=k", Path::new("/c/t.conf")).unwrap();
        let plan = Plan {
            accel: Accel::Kvm,
            host_ram_mb: 16384,
            ..plan()
        };
        let args = engine_command(&settings, &plan, &QmpEndpoint::Tcp(4444), "q".into())
            .unwrap()
            .args;
        assert_eq!(values(&args, "-cpu"), ["host"]);
        assert_eq!(
            values(&args, "-m"),
            ["2048"],
            "a quarter of host RAM, capped for i386"
        );
        assert_eq!(values(&args, "-smp"), ["1"]);
    }

    #[test]
    fn an_i386_guest_without_kvm_gets_36_bit_physical_addresses() {
        let i386 = colinux_config::parse_str("kernel=k mem=6144", Path::new("/c/t.conf")).unwrap();
        let args = engine_command(&i386, &plan(), &QmpEndpoint::Tcp(4444), "q".into())
            .unwrap()
            .args;
        assert_eq!(values(&args, "-cpu"), ["qemu32,+pse36"]);
        let x86_64 =
            colinux_config::parse_str("kernel=k arch=x86_64", Path::new("/c/t.conf")).unwrap();
        let args = engine_command(&x86_64, &plan(), &QmpEndpoint::Tcp(4444), "q".into())
            .unwrap()
            .args;
        assert!(values(&args, "-cpu").is_empty(), "{args:?}");
    }

    #[test]
    fn a_missing_engine_names_the_package() {
        let settings =
            colinux_config::parse_str("kernel=k qemu=no-such-qemu-binary", Path::new("/c/t.conf"))
                .unwrap();
        let err = find_engine(&settings).unwrap_err().to_string();
        assert!(
            err.contains("no-such-qemu-binary not found on PATH"),
            "{err}"
        );
        assert!(err.contains(QEMU_HINT), "{err}");
    }

    #[test]
    fn scsi_disks_and_cdroms_go_on_one_virtio_scsi_bus_by_index() {
        let args = build("kernel=k scsi1=cdrom,disc.iso scsi0=disk,\"my,disk.img\",64").unwrap();
        let devices = values(&args, "-device");
        let scsi: Vec<&str> = devices
            .iter()
            .copied()
            .filter(|d| d.contains("scsi"))
            .collect();
        assert_eq!(
            scsi,
            [
                "virtio-scsi-pci,id=scsi",
                "scsi-hd,bus=scsi.0,channel=0,scsi-id=0,lun=0,drive=scsi0",
                "scsi-cd,bus=scsi.0,channel=0,scsi-id=1,lun=0,drive=scsi1",
            ]
        );
        assert_eq!(
            values(&args, "-drive"),
            [
                format!(
                    "if=none,id=scsi0,file={},format=raw,discard=unmap",
                    at("my,disk.img").replace(',', ",,")
                ),
                format!(
                    "if=none,id=scsi1,file={},format=raw,media=cdrom,read-only=on",
                    at("disc.iso")
                ),
            ]
        );
        let none = build("kernel=k cobd0=root.img").unwrap();
        assert!(!none.iter().any(|a| a.contains("scsi")), "{none:?}");
    }

    #[test]
    fn com_ports_are_the_hosts_serial_ports() {
        if cfg!(windows) {
            assert_eq!(host_serial_device("COM1"), "COM1");
            assert_eq!(host_serial_device("com12"), "\\\\.\\COM12");
        } else {
            assert_eq!(host_serial_device("COM1"), "/dev/ttyS0");
            assert_eq!(host_serial_device("com4"), "/dev/ttyS3");
        }
        assert_eq!(host_serial_device("/dev/ttyUSB0"), "/dev/ttyUSB0");
        assert_eq!(host_serial_device("COMPORT"), "COMPORT");
        let args = build("kernel=k ttys0=COM2").unwrap();
        let expected = if cfg!(windows) { "COM2" } else { "/dev/ttyS1" };
        assert!(
            values(&args, "-chardev")
                .contains(&format!("serial,id=ttys0,path={expected}").as_str()),
            "{args:?}"
        );
    }

    fn notes_of(config: &str) -> Vec<String> {
        notes(&colinux_config::parse_str(config, Path::new("/c/test.conf")).unwrap())
    }

    #[test]
    fn console_looks_and_old_keys_are_noted_with_their_place() {
        let notes = notes_of(
            "kernel=k cocon=120x40 color=yellow,black\ncursor=0 setcobd=async pci3=0,net,0 video0=8",
        );
        assert_eq!(notes.len(), 6, "{notes:#?}");
        assert!(
            notes[0].starts_with("/c/test.conf:1: cocon=120x40: the console is a serial line"),
            "{}",
            notes[0]
        );
        assert!(notes[1]
            .starts_with("/c/test.conf:1: color=yellow,black: no meaning on a serial console"));
        assert!(notes[2].starts_with("/c/test.conf:2: cursor=0: no meaning on a serial console"));
        assert!(notes[3].contains("setcobd=async: ignored: the disks use QEMU's own I/O"));
        assert!(notes[4].contains("pci3=0,net,0: ignored: QEMU places its devices"));
        assert!(notes[5].contains("video0=8: ignored: there is no coLinux framebuffer"));
        assert!(notes_of("kernel=k cobd0=r.img ttys0=COM1 root=/dev/cobd0").is_empty());
    }

    #[test]
    #[cfg(unix)]
    fn serial_mode_options_become_the_guests_stty() {
        let notes = notes_of(
            "kernel=k ttys1=COM1,\"BAUD=9600 PARITY=e DATA=7 STOP=2 xon=on rts=hs dtr=on idsr=off to=on\"",
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains(
                "stty -F /dev/ttyS2 9600 cs7 parenb -parodd -cmspar cstopb ixon ixoff crtscts; no equivalent: dtr/rts"
            ),
            "{}",
            notes[0]
        );
        assert!(notes[0].contains("odsr/idsr") && notes[0].contains("to (timeouts"));
    }

    #[test]
    fn scsi_size_creates_a_missing_image_and_never_shrinks_one() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("g.conf");
        let settings = |text: &str| colinux_config::parse_str(text, &conf).unwrap();
        let new = dir.path().join("new.img");
        create_scsi_images(&settings("scsi0=disk,new.img,2")).unwrap();
        assert_eq!(fs::metadata(&new).unwrap().len(), 2 << 20);
        assert!(!dir.path().join("new.img.partial").exists());

        let data = dir.path().join("data.img");
        fs::write(&data, b"user data").unwrap();
        create_scsi_images(&settings("scsi0=disk,data.img,1")).unwrap();
        assert_eq!(
            fs::read(&data).unwrap(),
            b"user data",
            "not resized without grow"
        );
        create_scsi_images(&settings("scsi0=disk,data.img,1,grow")).unwrap();
        assert_eq!(fs::metadata(&data).unwrap().len(), 1 << 20);
        assert!(fs::read(&data).unwrap().starts_with(b"user data"));
        fs::write(&data, vec![7u8; 3 << 20]).unwrap();
        create_scsi_images(&settings("scsi0=disk,data.img,1,grow")).unwrap();
        assert_eq!(fs::metadata(&data).unwrap().len(), 3 << 20, "never shrunk");

        let err = create_scsi_images(&settings("scsi3=disk,missing-dir/x.img,1"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("g.conf:1: scsi3=disk,missing-dir/x.img,1: ")
                && err.contains("cannot create a 1 MB image"),
            "{err}"
        );
    }
}
