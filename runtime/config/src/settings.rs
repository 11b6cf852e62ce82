//! The typed result of parsing: what the daemon turns into an engine command line.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::cluster::{Cluster, ClusterRole};
use crate::error::{
    check_kernel_cmdline, one_line, CmdlineTooLong, Error, ErrorKind, FileErrors, Origin,
};
use crate::net::{Net, NetKind};

/// Highest index of each device family (the old coLinux limits).
pub const MAX_COBD: u8 = 31;
pub const MAX_ETH: u8 = 15;
pub const MAX_COFS: u8 = 31;
pub const MAX_TTYS: u8 = 31;
pub const MAX_EXEC: u8 = 7;
pub const MAX_SCSI: u8 = 31;

/// The largest `scsiN=` SIZE, in MB (coLinux's own limit, 1 TB).
pub const MAX_SCSI_SIZE_MB: u32 = 1 << 20;

/// `cocon=` bounds: coLinux's smallest console, and a scrollback that
/// keeps the daemon's buffer (80 bytes a line) under 8 MB.
pub const MIN_COCON_COLS: u16 = 16;
pub const MIN_COCON_ROWS: u16 = 2;
pub const MAX_SCROLLBACK: u32 = 100_000;

/// Bounds of `mem=`, in MB. Below 16 MB a modern kernel does not boot;
/// an i386 guest addresses at most 64 GB, and that only with PAE.
pub const MIN_MEM_MB: u32 = 16;
pub const MAX_MEM_MB_I386: u32 = 64 * 1024;
pub const MAX_MEM_MB_X86_64: u32 = 4 * 1024 * 1024;

/// Bounds of the default memory size, see [`default_mem_mb`].
pub const DEFAULT_MEM_FLOOR_MB: u32 = 64;
pub const DEFAULT_MEM_CAP_I386_MB: u32 = 2048;
pub const DEFAULT_MEM_CAP_X86_64_MB: u32 = 8192;

/// `smp=` bounds.
pub const MAX_SMP: u8 = 64;

/// A single-valued setting and where its winning (last) value was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    pub value: T,
    pub origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arch {
    /// What coLinux always ran, and still the default.
    #[default]
    I386,
    X86_64,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::I386 => "i386",
            Arch::X86_64 => "x86_64",
        }
    }

    pub fn max_mem_mb(self) -> u32 {
        match self {
            Arch::I386 => MAX_MEM_MB_I386,
            Arch::X86_64 => MAX_MEM_MB_X86_64,
        }
    }
}

/// Which accelerator to use; `Auto` lets the driver probe (KVM, WHPX, else TCG).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    #[default]
    Auto,
    Kvm,
    Whpx,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Auto => "auto",
            Accel::Kvm => "kvm",
            Accel::Whpx => "whpx",
            Accel::Tcg => "tcg",
        }
    }
}

/// `cocon=COLSxROWS[xSCROLLBACK]`: the console's size and scrollback in lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cocon {
    pub cols: u16,
    pub rows: u16,
    pub scrollback: Option<u32>,
}

impl fmt::Display for Cocon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.cols, self.rows)?;
        if let Some(lines) = self.scrollback {
            write!(f, "x{lines}")?;
        }
        Ok(())
    }
}

/// `cobdN=`: a host file or block device given to the guest as `/dev/cobdN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub path: PathBuf,
    pub origin: Origin,
}

/// `scsiN=disk|cdrom,PATH[,SIZE[,grow]]`: a SCSI disk (`/dev/sdX` in the
/// guest) or CD-ROM (`/dev/srX`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scsi {
    pub kind: ScsiKind,
    pub path: PathBuf,
    /// SIZE in MB: the daemon creates a missing disk file this big. An
    /// existing file keeps its size unless `grow` is given too.
    pub size_mb: Option<u32>,
    /// `,grow`: an existing file smaller than SIZE is extended to it
    /// (never shrunk: that would cut off data).
    pub grow: bool,
    pub origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScsiKind {
    Disk,
    Cdrom,
}

impl ScsiKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ScsiKind::Disk => "disk",
            ScsiKind::Cdrom => "cdrom",
        }
    }
}

/// `color=FOREGROUND,BACKGROUND`: the FLTK console's colours, by coLinux's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Color {
    pub foreground: String,
    pub background: String,
}

/// The colour names coLinux's `color=` knew.
pub const COLOR_NAMES: [&str; 16] = [
    "black",
    "red",
    "green",
    "brown",
    "blue",
    "magenta",
    "cyan",
    "gray",
    "darkgray",
    "brightred",
    "brightgreen",
    "yellow",
    "brightblue",
    "brightmagenta",
    "brightcyan",
    "white",
];

/// A coLinux key that parses but has nothing to drive here, with why:
/// the daemon notes it when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    pub reason: &'static str,
    pub origin: Origin,
}

/// `hda1=…` / `sda1=…`: another name for a cobd device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub cobd: u8,
    pub origin: Origin,
}

/// `cofsN=dir`: a host directory shared as the 9p tag `cofsN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub dir: PathBuf,
    pub origin: Origin,
}

/// `ttysN=device[,"BAUD=… PARITY=… DATA=… STOP=…"]`: a host serial port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serial {
    /// As written (`/dev/ttyS0`, `COM1`); devices are not resolved like files.
    pub device: String,
    pub options: SerialOptions,
    pub origin: Origin,
}

impl Serial {
    /// The port number of a Windows `COMn` name, in any case: `Some(Some(n))`
    /// for `COM1` to `COM256`, `Some(None)` for a botched one (`COM0`,
    /// `COM01`), `None` for any other device.
    pub fn com_port(device: &str) -> Option<Option<u16>> {
        let prefix = device.get(..3)?;
        let digits = &device[3..];
        if !prefix.eq_ignore_ascii_case("com")
            || digits.is_empty()
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        Some(
            digits
                .parse::<u16>()
                .ok()
                .filter(|n| (1..=256).contains(n) && !digits.starts_with('0')),
        )
    }
}

/// Line settings in the Windows `mode` syntax. `None` leaves the port as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SerialOptions {
    pub baud: Option<u32>,
    pub parity: Option<Parity>,
    pub data_bits: Option<u8>,
    pub stop_bits: Option<u8>,
    /// `dtr=on|off|hs`
    pub dtr: Option<ModemLine>,
    /// `rts=on|off|hs|tg`
    pub rts: Option<ModemLine>,
    /// `xon=on|off`: XON/XOFF flow control.
    pub xon: Option<bool>,
    /// `odsr=on|off`: output waits for DSR.
    pub odsr: Option<bool>,
    /// `octs=on|off`: output waits for CTS.
    pub octs: Option<bool>,
    /// `idsr=on|off`: input needs DSR.
    pub idsr: Option<bool>,
    /// `to=on|off`: infinite timeout.
    pub timeout: Option<bool>,
}

/// A modem control line's setting in `mode` syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModemLine {
    On,
    Off,
    /// `hs`: handshaking.
    Handshake,
    /// `tg` (RTS only): toggle.
    Toggle,
}

impl ModemLine {
    pub fn as_str(self) -> &'static str {
        match self {
            ModemLine::On => "on",
            ModemLine::Off => "off",
            ModemLine::Handshake => "hs",
            ModemLine::Toggle => "tg",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    None,
    Even,
    Odd,
    Mark,
    Space,
}

impl Parity {
    pub fn letter(self) -> char {
        match self {
            Parity::None => 'n',
            Parity::Even => 'e',
            Parity::Odd => 'o',
            Parity::Mark => 'm',
            Parity::Space => 's',
        }
    }
}

impl fmt::Display for SerialOptions {
    /// The option string as coLinux wrote it: `BAUD=115200 PARITY=n DATA=8 STOP=1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(baud) = self.baud {
            parts.push(format!("BAUD={baud}"));
        }
        if let Some(parity) = self.parity {
            parts.push(format!("PARITY={}", parity.letter()));
        }
        if let Some(data) = self.data_bits {
            parts.push(format!("DATA={data}"));
        }
        if let Some(stop) = self.stop_bits {
            parts.push(format!("STOP={stop}"));
        }
        for (name, line) in [("dtr", self.dtr), ("rts", self.rts)] {
            if let Some(line) = line {
                parts.push(format!("{name}={}", line.as_str()));
            }
        }
        let switches = [
            ("xon", self.xon),
            ("odsr", self.odsr),
            ("octs", self.octs),
            ("idsr", self.idsr),
            ("to", self.timeout),
        ];
        for (name, on) in switches {
            if let Some(on) = on {
                parts.push(format!("{name}={}", if on { "on" } else { "off" }));
            }
        }
        f.write_str(&parts.join(" "))
    }
}

/// `execN=program[,"args"]`: a helper started with the guest and stopped with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    /// Resolved against the config's directory when it contains a path
    /// separator; a bare name is left for a `PATH` search.
    pub program: PathBuf,
    /// The argument string as written; see [`Exec::argv`].
    pub args: Option<String>,
    pub origin: Origin,
}

impl Exec {
    /// The arguments split at whitespace (the quotes around the whole string
    /// are already gone, so there is nothing finer to honour).
    pub fn argv(&self) -> Vec<String> {
        self.args
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }
}

/// The guest an installer creates (`colinux-daemon --create`), from an
/// ini file's `[guest]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRequest {
    /// `create = no` asks for none.
    pub create: bool,
    pub name: String,
    /// As written (`20G`); [`crate::parse_size`] accepted it.
    pub size: Option<String>,
    /// The user's own image instead of the shipped one.
    pub image: Option<PathBuf>,
}

impl Default for GuestRequest {
    fn default() -> Self {
        GuestRequest {
            create: true,
            name: "debian".into(),
            size: None,
            image: None,
        }
    }
}

/// A coMosix NFS root, from an ini file's `[NFS]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsRoot {
    pub server: String,
    pub path: String,
    pub options: Option<String>,
}

impl NfsRoot {
    /// The kernel parameters that boot from it:
    /// `root=/dev/nfs nfsroot=server:path[,options] ip=dhcp`. With a
    /// `hostname` (a cluster node's), `ip=::::HOSTNAME:eth0:dhcp`: the
    /// kernel sends it in its DHCP request and sets it.
    pub fn kernel_args(&self, hostname: Option<&str>) -> Vec<String> {
        let mut nfsroot = format!("nfsroot={}:{}", self.server, self.path);
        if let Some(options) = &self.options {
            nfsroot.push(',');
            nfsroot.push_str(options);
        }
        let ip = match hostname {
            Some(name) => format!("ip=::::{name}:eth0:dhcp"),
            None => "ip=dhcp".into(),
        };
        vec!["root=/dev/nfs".into(), nfsroot, ip]
    }
}

/// Everything a coLinux configuration says, after the last-one-wins and
/// duplicate rules, with alias disks allocated and relative paths resolved
/// against the directory of the file that named them (the current directory
/// for the command line).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    pub kernel: Option<Located<PathBuf>>,
    pub initrd: Option<Located<PathBuf>>,
    /// `mem=` or an ini `memory_size`; see [`Settings::mem_mb_or_default`].
    pub mem_mb: Option<Located<u32>>,
    pub smp: Option<Located<u8>>,
    pub arch: Option<Located<Arch>>,
    pub accel: Option<Located<Accel>>,
    /// Where QEMU is; `None` means search `PATH`. A bare name is kept as is.
    pub qemu: Option<Located<PathBuf>>,
    pub cocon: Option<Located<Cocon>>,
    pub color: Option<Located<Color>>,
    /// `cursor=PERCENT`, 0 to 100.
    pub cursor: Option<Located<u8>>,
    pub cobd: BTreeMap<u8, Disk>,
    pub scsi: BTreeMap<u8, Scsi>,
    /// `hda1` → cobd index, for every alias, whether it named a file or `:cobdN`.
    pub aliases: BTreeMap<String, Alias>,
    pub eth: BTreeMap<u8, Net>,
    pub cofs: BTreeMap<u8, Share>,
    pub ttys: BTreeMap<u8, Serial>,
    pub exec: BTreeMap<u8, Exec>,
    /// Keys accepted for old configs that have nothing to drive here
    /// (`setcobd=`, `pciN=`, `videoN=`), in order.
    pub ignored: Vec<Ignored>,
    /// Tokens that are not coLinux keys, in order, as written, for the guest kernel.
    pub kernel_args: Vec<String>,
    pub nfs_root: Option<Located<NfsRoot>>,
    /// An ini file's `[service] install = yes`: the service name the
    /// Windows installer creates. The guest itself does not use it.
    pub service: Option<Located<String>>,
    /// An ini file's `[guest]`: what the Windows installer creates. The
    /// guest itself does not use it either.
    pub guest: Option<Located<GuestRequest>>,
    /// A coMosix cluster guest (`cluster=…` keys or an ini's `[cluster]`).
    pub cluster: Option<Cluster>,
    /// `root_key=`: a public key file for root's SSH login, handed to the
    /// guest at its first start (docs/design.md §13).
    pub root_key: Option<Located<PathBuf>>,
    /// `root_password_hash=`: a crypt(3) hash for root, likewise. Never
    /// shown in messages or `describe`.
    pub root_password_hash: Option<Located<String>>,
}

/// The memory a guest gets without `mem=`: a quarter of the host's RAM, at
/// least 64 MB, and at most 2 GB for i386 (a 32-bit kernel past 896 MB only
/// adds highmem, and 2 GB fits every i386 config, PAE or not) or 8 GB for
/// x86_64 (enough for any image we ship; more must be asked for).
pub fn default_mem_mb(arch: Arch, host_ram_mb: u64) -> u32 {
    let cap = match arch {
        Arch::I386 => DEFAULT_MEM_CAP_I386_MB,
        Arch::X86_64 => DEFAULT_MEM_CAP_X86_64_MB,
    };
    let quarter = u32::try_from(host_ram_mb / 4).unwrap_or(u32::MAX);
    quarter.min(cap).max(DEFAULT_MEM_FLOOR_MB)
}

impl Settings {
    pub fn arch(&self) -> Arch {
        self.arch.as_ref().map(|a| a.value).unwrap_or_default()
    }

    pub fn accel(&self) -> Accel {
        self.accel.as_ref().map(|a| a.value).unwrap_or_default()
    }

    /// CPUs; 1 unless `smp=` says otherwise.
    pub fn smp(&self) -> u8 {
        self.smp.as_ref().map_or(1, |s| s.value)
    }

    /// `mem=` if given, else [`default_mem_mb`] for this arch and host.
    pub fn mem_mb_or_default(&self, host_ram_mb: u64) -> u32 {
        match &self.mem_mb {
            Some(mem) => mem.value,
            None => default_mem_mb(self.arch(), host_ram_mb),
        }
    }

    /// The guest kernel command line: `daemon_args` (what the daemon needs,
    /// e.g. `console=ttyS0`), then the NFS root parameters, then the user's
    /// pass-through tokens, which come last so they can override.
    pub fn kernel_cmdline(&self, daemon_args: &[&str]) -> Result<String, CmdlineTooLong> {
        let nfs = self.nfs_kernel_args().unwrap_or_default();
        let words: Vec<&str> = daemon_args
            .iter()
            .copied()
            .chain(nfs.iter().map(String::as_str))
            .chain(self.kernel_args.iter().map(String::as_str))
            .filter(|w| !w.is_empty())
            .collect();
        let cmdline = words.join(" ");
        check_kernel_cmdline(&cmdline)?;
        Ok(cmdline)
    }

    /// The NFS root's kernel parameters; a cluster node's name its host.
    fn nfs_kernel_args(&self) -> Option<Vec<String>> {
        let hostname = self
            .cluster
            .as_ref()
            .filter(|c| c.role.value == ClusterRole::Node)
            .map(|c| c.hostname.value.as_str());
        Some(self.nfs_root.as_ref()?.value.kernel_args(hostname))
    }

    /// Checks every path the guest needs, before anything starts, and
    /// reports all the problems at once, each with where it was written:
    /// kernel and initrd must be files, cobd paths files or block devices,
    /// cofs paths directories; exec programs only when they contain a path
    /// separator (a bare name is searched in `PATH`). `qemu=` is the
    /// daemon's to find: a missing engine has its own exit code.
    pub fn check_files(&self) -> Result<(), FileErrors> {
        let mut errors = Vec::new();
        let mut check = |path: &Path, origin: &Origin, want: Want| {
            if let Some(kind) = file_problem(path, want) {
                errors.push(Error::new(origin.clone(), kind));
            }
        };
        for setting in [&self.kernel, &self.initrd].into_iter().flatten() {
            check(&setting.value, &setting.origin, Want::File);
        }
        for disk in self.cobd.values() {
            check(&disk.path, &disk.origin, Want::NotDir);
        }
        for scsi in self.scsi.values() {
            match scsi.path.parent() {
                // The daemon creates it, in a folder that must exist.
                Some(dir) if scsi.size_mb.is_some() && !scsi.path.exists() => {
                    let dir = if dir.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        dir
                    };
                    check(dir, &scsi.origin, Want::Dir);
                }
                _ => check(&scsi.path, &scsi.origin, Want::NotDir),
            }
        }
        for share in self.cofs.values() {
            check(&share.dir, &share.origin, Want::Dir);
        }
        if let Some(cluster) = &self.cluster {
            let key_files = [
                Some((cluster.munge_key.value.clone(), &cluster.munge_key.origin)),
                Some((
                    cluster.ssh_host_key.value.clone(),
                    &cluster.ssh_host_key.origin,
                )),
                Some((cluster.ssh_host_key_pub(), &cluster.ssh_host_key.origin)),
                cluster
                    .root_key
                    .as_ref()
                    .map(|k| (k.value.clone(), &k.origin)),
            ];
            for (path, origin) in key_files.into_iter().flatten() {
                check(&path, origin, Want::Readable);
            }
        }
        if let Some(key) = &self.root_key {
            check(&key.value, &key.origin, Want::PublicKey);
        }
        let explicit_programs = self
            .exec
            .values()
            .map(|e| (&e.program, &e.origin))
            .filter(|(program, _)| has_separator(program));
        for (program, origin) in explicit_programs {
            check(program, origin, Want::File);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(FileErrors(errors))
        }
    }

    /// The resolved settings, one per line, in the config language with
    /// where each came from as a comment: what `colinux-daemon --dry-run`
    /// prints. With `host_ram_mb`, a default memory size is resolved too.
    /// `root_password_hash` is said to be given, not shown.
    pub fn describe(&self, host_ram_mb: Option<u64>) -> String {
        self.lines(host_ram_mb, false)
    }

    /// What [`Settings::describe`] prints, with `root_password_hash` in
    /// it: a config file that reads back to these settings (the
    /// installer's, written with the owner's permissions only).
    pub fn to_config(&self) -> String {
        self.lines(None, true)
    }

    fn lines(&self, host_ram_mb: Option<u64>, with_secrets: bool) -> String {
        let mut lines: Vec<(String, String)> = Vec::new();
        let mut add = |setting: String, note: String| lines.push((setting, note));
        let from = |origin: &Origin| origin.place.to_string();

        let path_setting = |name: &str, setting: &Option<Located<PathBuf>>| match setting {
            Some(s) => (format!("{name}={}", quote_path(&s.value)), from(&s.origin)),
            None => (format!("# {name}: none"), String::new()),
        };
        let (setting, note) = path_setting("kernel", &self.kernel);
        add(setting, note);
        let (setting, note) = path_setting("initrd", &self.initrd);
        add(setting, note);
        match (&self.mem_mb, host_ram_mb) {
            (Some(mem), _) => add(format!("mem={}", mem.value), from(&mem.origin)),
            (None, Some(host)) => add(
                format!("mem={}", self.mem_mb_or_default(host)),
                format!("default for {host} MB of host RAM"),
            ),
            (None, None) => add(
                "# mem: default".into(),
                "a quarter of host RAM, 64 MB or more".into(),
            ),
        }
        let or_default = |origin: Option<&Origin>| origin.map_or("default".into(), from);
        add(
            format!("smp={}", self.smp()),
            or_default(self.smp.as_ref().map(|s| &s.origin)),
        );
        add(
            format!("arch={}", self.arch().as_str()),
            or_default(self.arch.as_ref().map(|s| &s.origin)),
        );
        add(
            format!("accel={}", self.accel().as_str()),
            or_default(self.accel.as_ref().map(|s| &s.origin)),
        );
        match &self.qemu {
            Some(q) => add(format!("qemu={}", quote_path(&q.value)), from(&q.origin)),
            None => add("# qemu: searched in PATH".into(), String::new()),
        }
        if let Some(cocon) = &self.cocon {
            add(format!("cocon={}", cocon.value), from(&cocon.origin));
        }
        if let Some(color) = &self.color {
            let Color {
                foreground,
                background,
            } = &color.value;
            add(
                format!("color={foreground},{background}"),
                from(&color.origin),
            );
        }
        if let Some(cursor) = &self.cursor {
            add(format!("cursor={}", cursor.value), from(&cursor.origin));
        }
        for (index, disk) in &self.cobd {
            add(
                format!("cobd{index}={}", quote_path(&disk.path)),
                from(&disk.origin),
            );
        }
        for (index, scsi) in &self.scsi {
            let mut value = format!("{},{}", scsi.kind.as_str(), quote_path(&scsi.path));
            if let Some(size) = scsi.size_mb {
                write!(value, ",{size}").ok();
            }
            if scsi.grow {
                value.push_str(",grow");
            }
            add(format!("scsi{index}={value}"), from(&scsi.origin));
        }
        for (name, alias) in &self.aliases {
            add(format!("{name}=:cobd{}", alias.cobd), from(&alias.origin));
        }
        for (index, net) in &self.eth {
            add(
                format!("eth{index}={}", describe_net(net)),
                from(&net.origin),
            );
        }
        for (index, share) in &self.cofs {
            add(
                format!("cofs{index}={}", quote_path(&share.dir)),
                from(&share.origin),
            );
        }
        for (index, serial) in &self.ttys {
            let mut value = quote(&serial.device);
            if serial.options != SerialOptions::default() {
                write!(value, ",\"{}\"", serial.options).ok();
            }
            add(format!("ttys{index}={value}"), from(&serial.origin));
        }
        for (index, exec) in &self.exec {
            let mut value = quote_path(&exec.program);
            if let Some(args) = &exec.args {
                write!(value, ",\"{args}\"").ok();
            }
            add(format!("exec{index}={value}"), from(&exec.origin));
        }
        for ignored in &self.ignored {
            add(
                one_line(&ignored.origin.token).into_owned(),
                format!("{}; ignored", from(&ignored.origin)),
            );
        }
        if let Some(cluster) = &self.cluster {
            add(
                format!("cluster={}", cluster.role.value.as_str()),
                from(&cluster.role.origin),
            );
            add(
                format!("cluster_hostname={}", cluster.hostname.value),
                from(&cluster.hostname.origin),
            );
            add(
                format!("cluster_head={}", cluster.head.value),
                from(&cluster.head.origin),
            );
            add(
                format!("cluster_network={}", cluster.network()),
                cluster
                    .network
                    .as_ref()
                    .map_or("default: the head's /24".into(), |n| from(&n.origin)),
            );
            let keys = [
                ("cluster_munge_key", Some(&cluster.munge_key)),
                ("cluster_ssh_host_key", Some(&cluster.ssh_host_key)),
                ("cluster_root_key", cluster.root_key.as_ref()),
            ];
            for (name, key) in keys {
                if let Some(key) = key {
                    add(
                        format!("{name}={}", quote_path(&key.value)),
                        from(&key.origin),
                    );
                }
            }
        }
        if let Some(key) = &self.root_key {
            add(
                format!("root_key={}", quote_path(&key.value)),
                format!(
                    "{}; handed to the guest at its first start",
                    from(&key.origin)
                ),
            );
        }
        if let Some(hash) = &self.root_password_hash {
            add(
                if with_secrets {
                    format!("root_password_hash={}", quote(&hash.value))
                } else {
                    "root_password_hash=(given, not shown)".into()
                },
                format!(
                    "{}; handed to the guest at its first start",
                    from(&hash.origin)
                ),
            );
        }
        if let (Some(nfs), Some(args)) = (&self.nfs_root, self.nfs_kernel_args()) {
            add(
                args.join(" "),
                format!("NFS root from {}", from(&nfs.origin)),
            );
        }
        if !self.kernel_args.is_empty() {
            add(self.kernel_args.join(" "), "kernel arguments".into());
        }

        // Align the notes, but do not let one long path push them all far right.
        let width = lines
            .iter()
            .map(|(s, _)| s.len())
            .filter(|&len| len <= 48)
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (setting, note) in lines {
            if note.is_empty() {
                writeln!(out, "{setting}").ok();
            } else {
                writeln!(out, "{setting:<width$}  # {note}").ok();
            }
        }
        out
    }
}

impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(None))
    }
}

fn describe_net(net: &Net) -> String {
    let mac = net.mac.map(|m| m.to_string()).unwrap_or_default();
    let mut fields = match &net.kind {
        NetKind::Slirp { redirects } => {
            let redirects: Vec<String> = redirects.iter().map(|r| r.to_string()).collect();
            vec!["slirp".to_string(), mac, redirects.join("/")]
        }
        NetKind::Tuntap { name } => vec![
            "tuntap".to_string(),
            name.as_deref().map(quote_always).unwrap_or_default(),
            mac,
        ],
        NetKind::Bridge {
            backend,
            name,
            promisc,
        } => vec![
            backend.as_str().to_string(),
            name.as_deref().map(quote_always).unwrap_or_default(),
            mac,
            if *promisc { "promisc" } else { "nopromisc" }.to_string(),
        ],
    };
    // Trailing empty fields say nothing.
    while fields.len() > 1 && fields.last().is_some_and(|f| f.is_empty()) {
        fields.pop();
    }
    fields.join(",")
}

/// Quotes a value if the config language would split it, and escapes
/// control characters so that each setting stays on its line.
fn quote(text: &str) -> String {
    let text = one_line(text);
    if text.is_empty() || text.contains(|c: char| c.is_whitespace() || c == ',' || c == '#') {
        quote_always(&text)
    } else {
        text.into_owned()
    }
}

fn quote_always(text: &str) -> String {
    format!("\"{text}\"")
}

fn quote_path(path: &Path) -> String {
    quote(&path.display().to_string())
}

pub(crate) fn has_separator(path: &Path) -> bool {
    path.to_string_lossy().contains(std::path::is_separator)
}

#[derive(Clone, Copy)]
enum Want {
    File,
    /// A file this process can open for reading (a key file).
    Readable,
    /// A readable OpenSSH public key file, never a private key.
    PublicKey,
    /// A file or a block device.
    NotDir,
    Dir,
}

fn file_problem(path: &Path, want: Want) -> Option<ErrorKind> {
    let path_buf = path.to_path_buf();
    match fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Some(ErrorKind::FileMissing { path: path_buf })
        }
        Err(error) => Some(ErrorKind::FileUnreadable {
            path: path_buf,
            error,
        }),
        Ok(meta) => match want {
            Want::File | Want::Readable | Want::PublicKey if !meta.is_file() => {
                Some(ErrorKind::NotAFile { path: path_buf })
            }
            Want::Readable => fs::File::open(path)
                .err()
                .map(|error| ErrorKind::FileUnreadable {
                    path: path_buf,
                    error,
                }),
            Want::PublicKey => match fs::read(path) {
                Err(error) => Some(ErrorKind::FileUnreadable {
                    path: path_buf,
                    error,
                }),
                Ok(bytes) => {
                    crate::credentials::check_public_keys(&String::from_utf8_lossy(&bytes))
                        .err()
                        .map(|reason| ErrorKind::NotAPublicKey {
                            path: path_buf,
                            reason,
                        })
                }
            },
            Want::NotDir if meta.is_dir() => Some(ErrorKind::NotAFile { path: path_buf }),
            Want::Dir if !meta.is_dir() => Some(ErrorKind::NotADirectory { path: path_buf }),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_memory_is_a_quarter_of_the_host_within_bounds() {
        assert_eq!(default_mem_mb(Arch::I386, 4096), 1024);
        assert_eq!(default_mem_mb(Arch::I386, 64 * 1024), 2048, "i386 cap");
        assert_eq!(default_mem_mb(Arch::X86_64, 64 * 1024), 8192, "x86_64 cap");
        assert_eq!(default_mem_mb(Arch::X86_64, 16 * 1024), 4096);
        assert_eq!(default_mem_mb(Arch::I386, 128), 64, "floor");
        assert_eq!(default_mem_mb(Arch::I386, 0), 64);
        assert_eq!(default_mem_mb(Arch::X86_64, u64::MAX), 8192);
    }

    #[test]
    fn nfs_root_kernel_args() {
        let mut nfs = NfsRoot {
            server: "10.0.0.1".into(),
            path: "/srv/root".into(),
            options: Some("ro,vers=3".into()),
        };
        assert_eq!(
            nfs.kernel_args(None),
            [
                "root=/dev/nfs",
                "nfsroot=10.0.0.1:/srv/root,ro,vers=3",
                "ip=dhcp"
            ]
        );
        nfs.options = None;
        assert_eq!(nfs.kernel_args(None)[1], "nfsroot=10.0.0.1:/srv/root");
        assert_eq!(
            nfs.kernel_args(Some("node-pc17"))[2],
            "ip=::::node-pc17:eth0:dhcp"
        );
    }

    #[test]
    fn serial_options_print_in_mode_syntax() {
        let options = SerialOptions {
            baud: Some(9600),
            parity: Some(Parity::Even),
            data_bits: Some(7),
            stop_bits: Some(2),
            dtr: Some(ModemLine::On),
            rts: Some(ModemLine::Toggle),
            octs: Some(false),
            timeout: Some(true),
            ..SerialOptions::default()
        };
        assert_eq!(
            options.to_string(),
            "BAUD=9600 PARITY=e DATA=7 STOP=2 dtr=on rts=tg octs=off to=on"
        );
        assert_eq!(SerialOptions::default().to_string(), "");
    }

    #[test]
    fn quoting_only_when_needed() {
        assert_eq!(quote("a.img"), "a.img");
        assert_eq!(quote("my disk.img"), "\"my disk.img\"");
        assert_eq!(quote("a,b"), "\"a,b\"");
        assert_eq!(quote(""), "\"\"");
    }
}
