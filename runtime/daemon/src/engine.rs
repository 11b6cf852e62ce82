//! The engine (QEMU) command line for a guest: the coLinux devices mapped
//! onto virtio (DESIGN.md §1). Pure: nothing here touches the host except
//! [`find_engine`], which searches `PATH`.

use std::path::{Path, PathBuf};

use colinux_config::{Accel, Arch, BridgeBackend, NetKind, Settings};

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
}

/// The program and its arguments, one per element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// What the guest kernel needs from us on its command line, before the
/// user's own parameters (which come last and so can override).
pub const DAEMON_KERNEL_ARGS: &[&str] = &["console=ttyS0"];

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
    #[error("{place}: ttys{index}: only ttys0..ttys{MAX_HOST_SERIAL} exist (they become the guest's ttyS1..ttyS3; ttyS0 is the console)")]
    SerialIndex { place: String, index: u8 },
    #[error("no kernel= given: the guest needs a kernel (for example kernel=vmlinuz)")]
    NoKernel,
    #[error("{0}")]
    Cmdline(String),
    #[error("{program} not found {where_}: {hint}")]
    Missing {
        program: String,
        where_: String,
        hint: &'static str,
    },
}

#[cfg(windows)]
const BRIDGE_INSTEAD: &str = "Use ethN=tuntap,\"TAP adapter name\" and bridge that TAP-Windows adapter with your network adapter in Network Connections, or ethN=slirp.";
#[cfg(not(windows))]
const BRIDGE_INSTEAD: &str = "Use ethN=tuntap,\"tap0\" with tap0 added to a host bridge (ip link set tap0 master br0), or ethN=slirp.";

#[cfg(windows)]
const QEMU_HINT: &str = "install QEMU for Windows (qemu.org/download) and add it to PATH, or set qemu=C:\\path\\to\\qemu-system-i386.exe";
#[cfg(not(windows))]
const QEMU_HINT: &str = "install it with `apt-get install qemu-system-x86` (Debian/Ubuntu), or set qemu=/path/to/qemu-system-i386";

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
        where_: if wanted.components().count() > 1 {
            "(no such file)".into()
        } else {
            "on PATH".into()
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
    let cmdline = settings
        .kernel_cmdline(DAEMON_KERNEL_ARGS)
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
    networks(settings, &mut a)?;
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
            &format!("serial,id=ttys{index},path={}", esc(&serial.device)),
            "-device",
            &format!("isa-serial,chardev=ttys{index},index={}", index + 1),
        ]);
    }
    Ok(EngineCommand { program, args: a.0 })
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

fn networks(settings: &Settings, a: &mut Args) -> Result<(), EngineError> {
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
    fn errors_name_the_setting_and_what_to_do() {
        let bridge = build("kernel=k eth0=pcap-bridge,\"eth0\"")
            .unwrap_err()
            .to_string();
        assert!(
            bridge.contains("test.conf") && bridge.contains("eth0=pcap-bridge is not supported"),
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
}
