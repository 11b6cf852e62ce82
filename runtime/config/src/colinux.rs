//! The coLinux config language: command-line arguments and `@file`
//! includes, each token a `name=value` key or a guest kernel parameter.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use crate::builder::{AliasTarget, Builder, ClusterValue, Value};
use crate::cluster::{is_hostname, ClusterRole, Ipv4Net, HOSTNAME_EXPECTED};
use crate::error::{Error, ErrorKind, Origin, Place};
use crate::lexer::{quotes_balanced, split_fields, split_key, tokenize, unquote};
use crate::net::parse_net;
use crate::settings::{
    has_separator, Accel, Arch, Cocon, Color, ModemLine, Parity, ScsiKind, Serial, SerialOptions,
    Settings, COLOR_NAMES, MAX_COBD, MAX_COFS, MAX_ETH, MAX_EXEC, MAX_MEM_MB_X86_64,
    MAX_SCROLLBACK, MAX_SCSI, MAX_SCSI_SIZE_MB, MAX_SMP, MAX_TTYS, MIN_COCON_COLS, MIN_COCON_ROWS,
    MIN_MEM_MB,
};

/// Config files bigger than this are refused: a stray `@/dev/zero` or
/// `@disk.img` must not eat all memory.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Includes per parse, counted over the whole tree. Cycles are caught on
/// their own; this stops a file that includes another many times over.
pub const MAX_INCLUDES: usize = 256;

/// Reads an included file. [`Parser::new`] reads from disk; tests and
/// fuzzers plug in their own.
pub type ReadFile<'a> = Box<dyn FnMut(&Path) -> io::Result<Vec<u8>> + 'a>;

/// Parses a configuration from any mix of command-line arguments, config
/// text and ini text, in order, into one [`Settings`].
pub struct Parser<'a> {
    cwd: PathBuf,
    read: ReadFile<'a>,
    builder: Builder,
    args_seen: usize,
    /// Files being read, outermost first: (identity for cycle checks, display path).
    open_files: Vec<(PathBuf, PathBuf)>,
    includes: usize,
}

impl Parser<'static> {
    /// A parser whose includes are read from disk; command-line paths
    /// resolve against `cwd`.
    pub fn new(cwd: impl Into<PathBuf>) -> Self {
        Parser::with_reader(cwd, read_config_file)
    }
}

impl<'a> Parser<'a> {
    /// A parser whose includes are read by `read` (given the path to open).
    pub fn with_reader(
        cwd: impl Into<PathBuf>,
        read: impl FnMut(&Path) -> io::Result<Vec<u8>> + 'a,
    ) -> Self {
        Parser {
            cwd: cwd.into(),
            read: Box::new(read),
            builder: Builder::default(),
            args_seen: 0,
            open_files: Vec::new(),
            includes: 0,
        }
    }

    /// The next command-line argument. The shell has already split the
    /// line, so each argument is one token (spaces and all); `@file` reads
    /// a config file, or an ini file if its name ends in `.ini`.
    pub fn arg(&mut self, arg: &str) -> Result<(), Error> {
        self.arg_at(self.args_seen + 1, arg)
    }

    /// Like [`Parser::arg`], for a caller that takes some arguments for
    /// itself (`--dry-run`) and wants messages to count all of them:
    /// `position` is what "command line argument N" will say. Later
    /// [`Parser::arg`] calls count on from it.
    pub fn arg_at(&mut self, position: usize, arg: &str) -> Result<(), Error> {
        self.args_seen = position;
        let origin = Origin::new(Place::Arg(position), arg);
        if arg.is_empty() {
            return Ok(());
        }
        if !quotes_balanced(arg) {
            return Err(Error::new(origin, ErrorKind::UnterminatedQuote));
        }
        let cwd = self.cwd.clone();
        if let Some(name) = arg.strip_prefix('@') {
            return self.include(&unquote(name), None, &cwd, origin);
        }
        self.token(arg, origin, &cwd, true)
    }

    /// Config-language text as if it were the contents of `file`: its
    /// relative paths and includes resolve against `file`'s directory.
    pub fn config_text(&mut self, text: &str, file: &Path) -> Result<(), Error> {
        self.open_files.push((identity(file), file.to_path_buf()));
        let result = self.config_file(text, file, &parent(file));
        self.open_files.pop();
        result
    }

    /// coMosix ini text as if it were the contents of `file`.
    pub fn ini_text(&mut self, text: &str, file: &Path) -> Result<(), Error> {
        crate::ini::parse(text, file, &parent(file), &mut self.builder)
    }

    /// Applies the rules that need everything (alias allocation, memory
    /// against arch, the NFS root's share of the command line).
    pub fn finish(self) -> Result<Settings, Error> {
        self.builder.finish()
    }

    /// `display` is the file as shown in messages, `dir` where its relative paths point.
    fn config_file(&mut self, text: &str, display: &Path, dir: &Path) -> Result<(), Error> {
        let place = |line| Place::Line {
            file: display.to_path_buf(),
            line,
        };
        let tokens = tokenize(text).map_err(|open| {
            Error::new(
                Origin::new(place(open.line), open.partial),
                ErrorKind::UnterminatedQuote,
            )
        })?;
        let display_dir = parent(display);
        for token in tokens {
            let origin = Origin::new(place(token.line), token.text.as_str());
            match token.text.strip_prefix('@') {
                Some(name) => self.include(&unquote(name), Some(&display_dir), dir, origin)?,
                None => self.token(&token.text, origin, dir, false)?,
            }
        }
        Ok(())
    }

    /// Reads `@name`, found relative to `dir` (the including file's
    /// directory, or the current one on the command line).
    fn include(
        &mut self,
        name: &str,
        display_dir: Option<&Path>,
        dir: &Path,
        origin: Origin,
    ) -> Result<(), Error> {
        if name.is_empty() {
            return Err(Error::new(
                origin,
                ErrorKind::BadValue {
                    what: "include",
                    value: String::new(),
                    expected: "a file name after `@`".into(),
                },
            ));
        }
        self.includes += 1;
        if self.includes > MAX_INCLUDES {
            let kind = ErrorKind::TooManyIncludes {
                limit: MAX_INCLUDES,
            };
            return Err(Error::new(origin, kind));
        }
        let display = match display_dir {
            Some(display_dir) => display_dir.join(name),
            None => PathBuf::from(name),
        };
        let path = match host_path(dir, name) {
            Ok(path) => path,
            Err(kind) => return Err(Error::new(origin, kind)),
        };
        let id = identity(&path);
        if let Some(start) = self.open_files.iter().position(|(open, _)| *open == id) {
            let mut chain: Vec<PathBuf> = self.open_files[start..]
                .iter()
                .map(|(_, shown)| shown.clone())
                .collect();
            chain.push(display);
            return Err(Error::new(origin, ErrorKind::IncludeCycle { chain }));
        }
        let bytes = (self.read)(&path).map_err(|error| {
            let kind = ErrorKind::Include {
                path: path.clone(),
                error,
            };
            Error::new(origin.clone(), kind)
        })?;
        let text = decode(bytes, &display)?;

        self.open_files.push((id, display.clone()));
        let file_dir = parent(&path);
        let result = if is_ini(&path) {
            crate::ini::parse(&text, &display, &file_dir, &mut self.builder)
        } else {
            self.config_file(&text, &display, &file_dir)
        };
        self.open_files.pop();
        result
    }

    /// One token that is not an include: a key, or a kernel parameter.
    fn token(
        &mut self,
        text: &str,
        origin: Origin,
        dir: &Path,
        from_shell: bool,
    ) -> Result<(), Error> {
        let (name, value) = split_key(text);
        let value = match classify(name) {
            Ok(Some(key)) => parse_value(key, name, value, dir),
            Ok(None) => Ok(Value::KernelArg(kernel_arg(text, from_shell))),
            Err(kind) => Err(kind),
        };
        match value {
            Ok(value) => self.builder.add(value, origin),
            Err(kind) => Err(Error::new(origin, kind)),
        }
    }
}

/// A coLinux key, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Kernel,
    Initrd,
    Mem,
    Smp,
    Arch,
    Accel,
    Qemu,
    Cocon,
    Color,
    Cursor,
    Setcobd,
    Cobd(u8),
    Scsi(u8),
    Eth(u8),
    Cofs(u8),
    Ttys(u8),
    Exec(u8),
    Pci(u8),
    Video(u8),
    /// `hda1`, `sdb`, …
    Alias,
    Cluster,
    ClusterHostname,
    ClusterHead,
    ClusterNetwork,
    ClusterMunge,
    ClusterSshHost,
    ClusterRoot,
    RootKeyFile,
    RootPasswordHash,
}

impl Key {
    /// A sample value, for "needs a value" messages.
    fn example(&self) -> &'static str {
        match self {
            Key::Kernel => "vmlinux",
            Key::Initrd => "initrd.gz",
            Key::Mem => "512 (MB)",
            Key::Smp => "2",
            Key::Arch => "i386|x86_64",
            Key::Accel => "auto|kvm|whpx|tcg",
            Key::Qemu => "/usr/bin/qemu-system-i386",
            Key::Cocon => "80x25",
            Key::Color => "yellow,black",
            Key::Cursor => "100 (percent)",
            Key::Setcobd => "async|sync",
            Key::Cobd(_) => "root.img",
            Key::Scsi(_) => "disk,data.img[,SIZE_MB] or cdrom,disc.iso",
            Key::Eth(_) => "slirp",
            Key::Cofs(_) => "C:\\shared",
            Key::Ttys(_) => "/dev/ttyS0",
            Key::Exec(_) => "program,\"args\"",
            Key::Pci(_) => "FUNCTION,TYPE,UNIT",
            Key::Video(_) => "SIZE_MB",
            Key::Alias => "disk.img or :cobd0",
            Key::Cluster => "head|node",
            Key::ClusterHostname => "node-pc17",
            Key::ClusterHead => "10.77.0.1",
            Key::ClusterNetwork => "10.77.0.0/24",
            Key::ClusterMunge => "munge.key",
            Key::ClusterSshHost => "ssh_host_ed25519_key",
            Key::ClusterRoot => "id_ed25519.pub",
            Key::RootKeyFile => "id_ed25519.pub",
            Key::RootPasswordHash => "'$y$…' (mkpasswd -m yescrypt)",
        }
    }
}

type MakeKey = fn(u8) -> Key;

/// An indexed key family: `cobd0`…`cobd31`.
struct Family {
    name: &'static str,
    max: u8,
    make: MakeKey,
    /// `pci=` and `video=` without an index are Linux's own parameters.
    bare_is_kernel_arg: bool,
}

const fn family(name: &'static str, max: u8, make: MakeKey) -> Family {
    Family {
        name,
        max,
        make,
        bare_is_kernel_arg: false,
    }
}

/// coLinux's `pciN=` took 0–31 and `videoN=` 0–1.
const MAX_PCI: u8 = 31;
const MAX_VIDEO: u8 = 1;

const INDEXED_KEYS: [Family; 8] = [
    family("cobd", MAX_COBD, Key::Cobd),
    family("scsi", MAX_SCSI, Key::Scsi),
    family("cofs", MAX_COFS, Key::Cofs),
    family("eth", MAX_ETH, Key::Eth),
    family("ttys", MAX_TTYS, Key::Ttys),
    family("exec", MAX_EXEC, Key::Exec),
    Family {
        bare_is_kernel_arg: true,
        ..family("pci", MAX_PCI, Key::Pci)
    },
    Family {
        bare_is_kernel_arg: true,
        ..family("video", MAX_VIDEO, Key::Video)
    },
];

/// Which key a token's name is; `None` for a kernel parameter. A name in
/// the wrong case, or shaped like an indexed key but malformed, is an
/// error: handing `ETH0=` or `cobd1x=` to the kernel would drop it silently.
fn classify(name: &str) -> Result<Option<Key>, ErrorKind> {
    match classify_as_written(name) {
        Ok(None) if name.bytes().any(|b| b.is_ascii_uppercase()) => {
            let lower = name.to_ascii_lowercase();
            match classify_as_written(&lower) {
                Ok(None) => Ok(None),
                _ => Err(ErrorKind::UpperCaseKey { lower }),
            }
        }
        other => other,
    }
}

fn classify_as_written(name: &str) -> Result<Option<Key>, ErrorKind> {
    let key = match name {
        "kernel" => Key::Kernel,
        "initrd" => Key::Initrd,
        "mem" => Key::Mem,
        "smp" => Key::Smp,
        "arch" => Key::Arch,
        "accel" => Key::Accel,
        "qemu" => Key::Qemu,
        "cocon" => Key::Cocon,
        "color" => Key::Color,
        "cursor" => Key::Cursor,
        "setcobd" => Key::Setcobd,
        "cluster" => Key::Cluster,
        "cluster_hostname" => Key::ClusterHostname,
        "cluster_head" => Key::ClusterHead,
        "cluster_network" => Key::ClusterNetwork,
        "cluster_munge_key" => Key::ClusterMunge,
        "cluster_ssh_host_key" => Key::ClusterSshHost,
        "cluster_root_key" => Key::ClusterRoot,
        "root_key" => Key::RootKeyFile,
        "root_password_hash" => Key::RootPasswordHash,
        // Linux has no cluster_ parameters: a typo must not boot silently.
        _ if name.starts_with("cluster_") => {
            return Err(ErrorKind::UnknownClusterKey {
                name: name.to_string(),
            })
        }
        _ => {
            for family in &INDEXED_KEYS {
                let Some(rest) = name.strip_prefix(family.name) else {
                    continue;
                };
                let max = family.max;
                if rest.is_empty() {
                    if family.bare_is_kernel_arg {
                        return Ok(None);
                    }
                    let key = family.name;
                    let max = u32::from(max);
                    return Err(ErrorKind::MissingIndex { key, max });
                }
                if is_digits(rest) {
                    return parse_index(family.name, rest, 0, max).map(|i| Some((family.make)(i)));
                }
                // `ethtool=…`, `pcie_aspm=…` and the like are someone else's.
                if looks_like_index(rest) {
                    return Err(malformed(name, family.name, 0, max));
                }
            }
            return classify_alias(name);
        }
    };
    Ok(Some(key))
}

/// What follows a key family's name in a botched key: digits with
/// something after them (`1x`), a manual's placeholder (`X`, `N`), or a
/// separator before digits (`-1`, `_0`).
fn looks_like_index(rest: &str) -> bool {
    let mut chars = rest.chars();
    match (chars.next(), chars.next()) {
        (Some(first), _) if first.is_ascii_digit() => true,
        (Some(letter), None) => letter.is_ascii_alphabetic(),
        (Some('-' | '_' | '.'), Some(digit)) => digit.is_ascii_digit(),
        _ => false,
    }
}

fn malformed(name: &str, family: &str, min: u8, max: u8) -> ErrorKind {
    ErrorKind::MalformedKey {
        name: name.to_string(),
        family: family.to_string(),
        min: u32::from(min),
        max: u32::from(max),
    }
}

/// `hd` or `sd`, a drive letter, and an optional partition number
/// (1–63 for IDE, 1–15 for SCSI, as Linux numbered them).
fn classify_alias(name: &str) -> Result<Option<Key>, ErrorKind> {
    let bytes = name.as_bytes();
    let max = match bytes {
        [b'h', b'd', b'a'..=b'z', ..] => 63,
        [b's', b'd', b'a'..=b'z', ..] => 15,
        _ => return Ok(None),
    };
    let (drive, partition) = name.split_at(3);
    if partition.is_empty() {
        return Ok(Some(Key::Alias));
    }
    if !is_digits(partition) {
        // `hda1x` is a botched alias; `sdhci.debug` is the kernel's.
        if partition.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(malformed(name, drive, 1, max));
        }
        return Ok(None);
    }
    parse_index(drive, partition, 1, max).map(|_| Some(Key::Alias))
}

fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// `digits` after a key family, within `min..=max`, without leading zeros
/// (so `cobd1` and `cobd01` cannot both be written for one device).
fn parse_index(family: &str, digits: &str, min: u8, max: u8) -> Result<u8, ErrorKind> {
    let out_of_range = ErrorKind::IndexOutOfRange {
        key: family.to_string(),
        min: u32::from(min),
        max: u32::from(max),
    };
    if digits.len() > 1 && digits.starts_with('0') {
        let trimmed = digits.trim_start_matches('0');
        let corrected = format!("{family}{}", if trimmed.is_empty() { "0" } else { trimmed });
        return Err(ErrorKind::LeadingZero { corrected });
    }
    match digits.parse::<u8>() {
        Ok(index) if (min..=max).contains(&index) => Ok(index),
        _ => Err(out_of_range),
    }
}

/// Parses the value of a known key.
fn parse_value(key: Key, name: &str, value: Option<&str>, dir: &Path) -> Result<Value, ErrorKind> {
    let value = match value {
        Some(value) if !unquote(value).trim().is_empty() => value,
        _ => {
            return Err(ErrorKind::MissingValue {
                key: name.to_string(),
                example: key.example(),
            })
        }
    };
    let whole = unquote(value);
    let fields = || split_fields(value);
    Ok(match key {
        Key::Kernel => Value::Kernel(host_path(dir, &whole)?),
        Key::Initrd => Value::Initrd(host_path(dir, &whole)?),
        Key::Mem => Value::Mem(parse_mem("memory size", &whole)?),
        Key::Smp => Value::Smp(parse_smp(&whole)?),
        Key::Arch => Value::Arch(match whole.as_str() {
            "i386" => Arch::I386,
            "x86_64" => Arch::X86_64,
            _ => return Err(bad("arch", &whole, "i386 or x86_64")),
        }),
        Key::Accel => Value::Accel(match whole.as_str() {
            "auto" => Accel::Auto,
            "kvm" => Accel::Kvm,
            "whpx" => Accel::Whpx,
            "tcg" => Accel::Tcg,
            _ => return Err(bad("accelerator", &whole, "auto, kvm, whpx or tcg")),
        }),
        Key::Qemu => Value::Qemu(program_path(dir, &whole)?),
        Key::Cocon => Value::Cocon(parse_cocon(&whole)?),
        Key::Color => Value::Color(parse_color(&whole)?),
        Key::Cursor => Value::Cursor(match whole.trim().parse::<u8>() {
            Ok(percent @ 0..=100) => percent,
            _ => return Err(bad("cursor size", &whole, "a percentage from 0 to 100")),
        }),
        Key::Setcobd => match whole.as_str() {
            "async" | "sync" => Value::Ignored(
                "the disks use QEMU's own I/O, which has no sync/async switch like coLinux's cobd driver",
            ),
            _ => return Err(bad("setcobd mode", &whole, "async or sync")),
        },
        Key::Pci(_) => Value::Ignored("QEMU places its devices on the guest's PCI bus itself"),
        Key::Video(_) => Value::Ignored(
            "there is no coLinux framebuffer (cofb); the console is a serial line",
        ),
        Key::Cluster => Value::Cluster(ClusterValue::Role(parse_role(&whole)?)),
        Key::ClusterHostname => {
            Value::Cluster(ClusterValue::Hostname(parse_hostname(&whole)?))
        }
        Key::ClusterHead => Value::Cluster(ClusterValue::Head(parse_head(&whole)?)),
        Key::ClusterNetwork => Value::Cluster(ClusterValue::Network(parse_network(&whole)?)),
        Key::ClusterMunge => Value::Cluster(ClusterValue::MungeKey(host_path(dir, &whole)?)),
        Key::ClusterSshHost => Value::Cluster(ClusterValue::SshHostKey(host_path(dir, &whole)?)),
        Key::ClusterRoot => Value::Cluster(ClusterValue::RootKey(host_path(dir, &whole)?)),
        Key::RootKeyFile => Value::RootKey(host_path(dir, &whole)?),
        Key::RootPasswordHash => {
            crate::credentials::check_password_hash(&whole)
                .map_err(|reason| ErrorKind::BadPasswordHash { reason })?;
            Value::RootPasswordHash(whole)
        }
        Key::Cobd(index) => Value::Cobd(index, host_path(dir, &whole)?),
        Key::Scsi(index) => parse_scsi(index, &fields(), dir)?,
        Key::Cofs(index) => Value::Cofs(index, host_path(dir, &whole)?),
        Key::Alias => Value::Alias(name.to_string(), parse_alias_target(&whole, dir)?),
        Key::Eth(index) => {
            let (kind, mac) = parse_net(&fields())?;
            Value::Eth(index, kind, mac)
        }
        Key::Ttys(index) => {
            let fields = fields();
            if fields.len() > 2 {
                return Err(ErrorKind::TooManyFields {
                    form: "ttysN=device[,\"BAUD=… PARITY=… DATA=… STOP=…\"]",
                });
            }
            let device = fields[0].trim();
            if device.is_empty() || matches!(Serial::com_port(device), Some(None)) {
                return Err(bad(
                    "serial device",
                    device,
                    "a device such as /dev/ttyS0 or COM1 (COM ports count from 1, without leading zeros)",
                ));
            }
            let options = parse_serial_options(fields.get(1).map_or("", String::as_str))?;
            Value::Ttys(index, device.to_string(), options)
        }
        Key::Exec(index) => {
            let fields = fields();
            if fields.len() > 2 {
                return Err(ErrorKind::TooManyFields {
                    form: "execN=program[,\"args\"] (quote arguments that contain commas)",
                });
            }
            let program = fields[0].trim();
            if program.is_empty() {
                return Err(bad("program", program, "a program to run"));
            }
            let args = fields.get(1).filter(|a| !a.trim().is_empty()).cloned();
            Value::Exec(index, program_path(dir, program)?, args)
        }
    })
}

fn bad(what: &'static str, value: &str, expected: &str) -> ErrorKind {
    ErrorKind::BadValue {
        what,
        value: value.to_string(),
        expected: expected.to_string(),
    }
}

/// The cluster values, shared with the ini's `[cluster]`.
pub(crate) fn parse_role(text: &str) -> Result<ClusterRole, ErrorKind> {
    ClusterRole::parse(text).ok_or_else(|| bad("cluster role", text, "head or node"))
}

pub(crate) fn parse_hostname(text: &str) -> Result<String, ErrorKind> {
    if is_hostname(text) {
        Ok(text.to_string())
    } else {
        Err(bad("hostname", text, HOSTNAME_EXPECTED))
    }
}

pub(crate) fn parse_head(text: &str) -> Result<std::net::Ipv4Addr, ErrorKind> {
    text.parse()
        .map_err(|_| bad("head address", text, "an IPv4 address, like 10.77.0.1"))
}

pub(crate) fn parse_network(text: &str) -> Result<Ipv4Net, ErrorKind> {
    Ipv4Net::parse(text).ok_or_else(|| {
        bad(
            "cluster network",
            text,
            "a network address and prefix length from 8 to 30, like 10.77.0.0/24",
        )
    })
}

/// Megabytes, shared by `mem=` and the ini's `memory_size`.
pub(crate) fn parse_mem(what: &'static str, text: &str) -> Result<u32, ErrorKind> {
    match text.trim().parse::<u32>() {
        Ok(mb) if (MIN_MEM_MB..=MAX_MEM_MB_X86_64).contains(&mb) => Ok(mb),
        _ => Err(bad(
            what,
            text,
            &format!("a size in MB from {MIN_MEM_MB} to {MAX_MEM_MB_X86_64}, like 512"),
        )),
    }
}

fn parse_smp(text: &str) -> Result<u8, ErrorKind> {
    match text.trim().parse::<u8>() {
        Ok(cpus) if (1..=MAX_SMP).contains(&cpus) => Ok(cpus),
        _ => Err(bad(
            "CPU count",
            text,
            &format!("a number from 1 to {MAX_SMP}"),
        )),
    }
}

/// `COLSxROWS[xSCROLLBACK]`; coLinux also took commas (`120,40`).
fn parse_cocon(text: &str) -> Result<Cocon, ErrorKind> {
    let error = || {
        bad(
            "console size",
            text,
            &format!(
                "COLSxROWS[xSCROLLBACK], at least {MIN_COCON_COLS}x{MIN_COCON_ROWS}, \
                 at most {MAX_SCROLLBACK} lines of scrollback, like 80x25 or 120x40x1000"
            ),
        )
    };
    let parts: Vec<&str> = text.trim().split(['x', 'X', ',']).collect();
    if !(2..=3).contains(&parts.len()) {
        return Err(error());
    }
    let cols = parts[0].parse::<u16>().map_err(|_| error())?;
    let rows = parts[1].parse::<u16>().map_err(|_| error())?;
    if cols < MIN_COCON_COLS || rows < MIN_COCON_ROWS {
        return Err(error());
    }
    let scrollback = match parts.get(2) {
        Some(lines) => match lines.parse::<u32>() {
            Ok(lines) if lines <= MAX_SCROLLBACK => Some(lines),
            _ => return Err(error()),
        },
        None => None,
    };
    Ok(Cocon {
        cols,
        rows,
        scrollback,
    })
}

/// `FOREGROUND,BACKGROUND`, two of coLinux's sixteen colour names, different.
fn parse_color(text: &str) -> Result<Color, ErrorKind> {
    let expected = format!(
        "FOREGROUND,BACKGROUND, two different colours of {}",
        COLOR_NAMES.join(", ")
    );
    let names: Vec<String> = text
        .split(',')
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    match names.as_slice() {
        [fg, bg] if fg != bg && [fg, bg].iter().all(|n| COLOR_NAMES.contains(&n.as_str())) => {
            Ok(Color {
                foreground: fg.clone(),
                background: bg.clone(),
            })
        }
        _ => Err(bad("colour", text, &expected)),
    }
}

/// `scsiN=disk|cdrom,PATH[,SIZE[,grow]]`.
fn parse_scsi(index: u8, fields: &[String], dir: &Path) -> Result<Value, ErrorKind> {
    const FORM: &str = "scsiN=disk|cdrom,PATH[,SIZE_MB[,grow]]";
    if fields.len() > 4 {
        return Err(ErrorKind::TooManyFields { form: FORM });
    }
    let kind = match fields[0].trim() {
        "disk" => ScsiKind::Disk,
        "cdrom" => ScsiKind::Cdrom,
        other @ ("pass" | "cdrw" | "tape" | "changer") => {
            return Err(bad(
                "SCSI device type",
                other,
                "disk or cdrom: coLinux's pass-through, CD writer, tape and changer \
                 devices went through its own host driver, which QEMU has no portable equivalent of",
            ))
        }
        other => return Err(bad("SCSI device type", other, "disk or cdrom")),
    };
    let path = fields.get(1).map_or("", |p| p.trim());
    if path.is_empty() {
        return Err(bad(
            "SCSI image",
            path,
            "a file or device after the type, like disk,data.img",
        ));
    }
    let size_mb = match fields.get(2).map_or("", |s| s.trim()) {
        // coLinux read an empty or zero SIZE as "no size".
        "" | "0" => None,
        size => match size.parse::<u32>() {
            Ok(mb @ 1..=MAX_SCSI_SIZE_MB) => Some(mb),
            _ => {
                return Err(bad(
                    "SCSI image size",
                    size,
                    &format!("a size in MB from 1 to {MAX_SCSI_SIZE_MB}"),
                ))
            }
        },
    };
    let grow = match fields.get(3).map_or("", |g| g.trim()) {
        "" => false,
        "grow" if size_mb.is_some() => true,
        "grow" => return Err(bad("SCSI option", "grow", "a SIZE to grow to before it")),
        other => {
            return Err(bad(
                "SCSI option",
                other,
                "grow (extend an existing image to SIZE)",
            ))
        }
    };
    if kind == ScsiKind::Cdrom && size_mb.is_some() {
        return Err(bad(
            "CD-ROM size",
            fields[2].trim(),
            "none: a CD-ROM image is read, never created",
        ));
    }
    Ok(Value::Scsi {
        index,
        kind,
        path: host_path(dir, path)?,
        size_mb,
        grow,
    })
}

/// `:cobdN` names an existing device; anything else is a file.
fn parse_alias_target(text: &str, dir: &Path) -> Result<AliasTarget, ErrorKind> {
    let Some(target) = text.strip_prefix(':') else {
        return Ok(AliasTarget::File(host_path(dir, text)?));
    };
    let error = || bad("alias target", text, &format!(":cobd0 to :cobd{MAX_COBD}"));
    let digits = target
        .strip_prefix("cobd")
        .filter(|d| is_digits(d))
        .ok_or_else(error)?;
    parse_index("cobd", digits, 0, MAX_COBD)
        .map(AliasTarget::Cobd)
        .map_err(|_| error())
}

/// The Windows `mode` options coLinux passed on: `BAUD=115200 PARITY=n
/// DATA=8 STOP=1 dtr=on rts=hs xon=off odsr=off octs=off idsr=off to=off`,
/// names and values in any case, each at most once.
fn parse_serial_options(text: &str) -> Result<SerialOptions, ErrorKind> {
    const NAMES: &str =
        "BAUD, PARITY, DATA, STOP, dtr, rts, xon, odsr, octs, idsr or to, as NAME=value";
    let mut options = SerialOptions::default();
    let mut seen: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        let (name, value) = word
            .split_once('=')
            .ok_or_else(|| bad("serial option", word, NAMES))?;
        let bad_value = |expected: &str| bad("serial option", word, expected);
        let name = name.to_ascii_uppercase();
        if seen.contains(&name) {
            return Err(bad_value(&format!("{name} only once")));
        }
        seen.push(name.clone());
        let value = value.to_ascii_lowercase();
        let switch = || match value.as_str() {
            "on" => Ok(true),
            "off" => Ok(false),
            _ => Err(bad_value(&format!(
                "{} to be on or off",
                name.to_lowercase()
            ))),
        };
        match name.as_str() {
            "BAUD" => match parse_baud(&value) {
                Some(baud) => options.baud = Some(baud),
                None => {
                    return Err(bad_value(
                        "BAUD to be a speed in bits per second, like 115200",
                    ))
                }
            },
            "PARITY" => {
                options.parity = Some(match value.as_str() {
                    "n" => Parity::None,
                    "e" => Parity::Even,
                    "o" => Parity::Odd,
                    "m" => Parity::Mark,
                    "s" => Parity::Space,
                    _ => return Err(bad_value("PARITY to be n, e, o, m or s")),
                })
            }
            "DATA" => match value.parse::<u8>() {
                Ok(bits @ 5..=8) => options.data_bits = Some(bits),
                _ => return Err(bad_value("DATA to be 5, 6, 7 or 8")),
            },
            "STOP" => match value.as_str() {
                "1" => options.stop_bits = Some(1),
                "2" => options.stop_bits = Some(2),
                "1.5" => {
                    return Err(bad_value(
                        "STOP to be 1 or 2: QEMU's host serial ports have no 1.5 stop bits",
                    ))
                }
                _ => return Err(bad_value("STOP to be 1 or 2")),
            },
            "DTR" | "RTS" => {
                let line = match value.as_str() {
                    "on" => ModemLine::On,
                    "off" => ModemLine::Off,
                    "hs" => ModemLine::Handshake,
                    "tg" if name == "RTS" => ModemLine::Toggle,
                    _ if name == "RTS" => return Err(bad_value("rts to be on, off, hs or tg")),
                    _ => return Err(bad_value("dtr to be on, off or hs")),
                };
                match name.as_str() {
                    "DTR" => options.dtr = Some(line),
                    _ => options.rts = Some(line),
                }
            }
            "XON" => options.xon = Some(switch()?),
            "ODSR" => options.odsr = Some(switch()?),
            "OCTS" => options.octs = Some(switch()?),
            "IDSR" => options.idsr = Some(switch()?),
            "TO" => options.timeout = Some(switch()?),
            _ => return Err(bad_value(NAMES)),
        }
    }
    Ok(options)
}

/// A speed in bits per second, or one of `mode`'s two-digit short forms
/// (`96` is 9600, `19` is 19200, `11` is 110).
fn parse_baud(text: &str) -> Option<u32> {
    let short = match text {
        "11" => 110,
        "15" => 150,
        "30" => 300,
        "60" => 600,
        "12" => 1200,
        "24" => 2400,
        "48" => 4800,
        "96" => 9600,
        "19" => 19200,
        _ => return text.parse::<u32>().ok().filter(|&baud| baud > 0),
    };
    Some(short)
}

/// A path from the config: relative to the config's folder. Windows'
/// drive-relative form (`C:disk.img`, relative to whichever folder drive
/// C: was last in) names no fixed file, so it is refused.
pub(crate) fn host_path(dir: &Path, text: &str) -> Result<PathBuf, ErrorKind> {
    let path = Path::new(text);
    if let Some(Component::Prefix(prefix)) = path.components().next() {
        if !path.has_root() {
            return Err(ErrorKind::DriveRelative {
                path: path.to_path_buf(),
                drive: prefix.as_os_str().to_string_lossy().into_owned(),
            });
        }
    }
    Ok(dir.join(path))
}

/// A program with a path separator is a file next to the config; a bare
/// name is left for a `PATH` search.
pub(crate) fn program_path(dir: &Path, program: &str) -> Result<PathBuf, ErrorKind> {
    let path = host_path(dir, program)?;
    Ok(if has_separator(Path::new(program)) {
        path
    } else {
        PathBuf::from(program)
    })
}

/// A pass-through token as the kernel should see it. The shell removed
/// the user's quotes, so an argument with spaces gets them back, or Linux
/// would split it into several parameters.
fn kernel_arg(text: &str, from_shell: bool) -> String {
    if !from_shell || text.contains('"') || !text.contains(char::is_whitespace) {
        return text.to_string();
    }
    match text.split_once('=') {
        Some((name, value)) => format!("{name}=\"{value}\""),
        None => format!("\"{text}\""),
    }
}

fn parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn is_ini(path: &Path) -> bool {
    path.extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("ini"))
}

/// What makes two include paths the same file: the canonical path when the
/// file exists on disk, else the path with `.` and `..` folded away.
fn identity(path: &Path) -> PathBuf {
    if let Ok(canonical) = fs::canonicalize(path) {
        return canonical;
    }
    let mut folded = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(folded.components().next_back(), Some(Component::Normal(_))) =>
            {
                folded.pop();
            }
            other => folded.push(other),
        }
    }
    folded
}

/// UTF-8 with an optional byte-order mark (Notepad writes one).
fn decode(bytes: Vec<u8>, display: &Path) -> Result<String, Error> {
    match String::from_utf8(bytes) {
        Ok(text) => Ok(match text.strip_prefix('\u{feff}') {
            Some(rest) => rest.to_string(),
            None => text,
        }),
        Err(error) => {
            let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
            let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
            let place = Place::Line {
                file: display.to_path_buf(),
                line,
            };
            Err(Error::new(Origin::new(place, ""), ErrorKind::NotUtf8))
        }
    }
}

/// Reads an include from disk: a regular file of at most [`MAX_FILE_BYTES`].
pub fn read_config_file(path: &Path) -> io::Result<Vec<u8>> {
    let meta = fs::metadata(path)?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut bytes = Vec::new();
    File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {MAX_FILE_BYTES} bytes, so not a config file"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Result<Option<Key>, String> {
        classify(name).map_err(|e| e.to_string())
    }

    #[test]
    fn keys_are_classified_by_name() {
        assert_eq!(key("kernel"), Ok(Some(Key::Kernel)));
        assert_eq!(key("cobd31"), Ok(Some(Key::Cobd(31))));
        assert_eq!(key("eth15"), Ok(Some(Key::Eth(15))));
        assert_eq!(key("exec7"), Ok(Some(Key::Exec(7))));
        assert_eq!(key("hda1"), Ok(Some(Key::Alias)));
        assert_eq!(key("hdz63"), Ok(Some(Key::Alias)));
        assert_eq!(key("sdb"), Ok(Some(Key::Alias)));
        assert_eq!(key("scsi31"), Ok(Some(Key::Scsi(31))));
        assert_eq!(key("color"), Ok(Some(Key::Color)));
        assert_eq!(key("cursor"), Ok(Some(Key::Cursor)));
        assert_eq!(key("setcobd"), Ok(Some(Key::Setcobd)));
        assert_eq!(key("pci3"), Ok(Some(Key::Pci(3))));
        assert_eq!(key("video1"), Ok(Some(Key::Video(1))));
        for kernel_param in [
            "root",
            "ro",
            "ethtool",
            "sdhci.debug",
            "hdmi",
            "hd",
            "console",
            "pci",
            "pcie_aspm",
            "video",
            "video.brightness_switch_enabled",
            "scsi_mod.scan",
            "exec-shield",
            "BOOT_IMAGE",
        ] {
            assert_eq!(key(kernel_param), Ok(None), "{kernel_param}");
        }
    }

    #[test]
    fn botched_keys_are_errors_not_kernel_parameters() {
        let message = |name: &str| classify(name).expect_err(name).to_string();
        assert_eq!(
            message("cobd12x"),
            "`cobd12x` looks like a coLinux key but is not one: write cobd0 to cobd31"
        );
        for (name, range) in [
            ("ethX", "eth0 to eth15"),
            ("eth0a", "eth0 to eth15"),
            ("scsi-1", "scsi0 to scsi31"),
            ("ttys_0", "ttys0 to ttys31"),
            ("cofsN", "cofs0 to cofs31"),
            ("exec1.5", "exec0 to exec7"),
            ("pci1x", "pci0 to pci31"),
            ("hda1x", "hda1 to hda63"),
        ] {
            assert!(message(name).ends_with(range), "{name}: {}", message(name));
        }
        assert_eq!(message("scsi"), "`scsi` needs an index, scsi0 to scsi31");
        assert_eq!(message("Kernel"), "keys are lower case: write `kernel`");
        assert_eq!(message("ETH0"), "keys are lower case: write `eth0`");
        assert_eq!(message("Cobd1x"), "keys are lower case: write `cobd1x`");
    }

    #[test]
    fn bad_indexes() {
        let message = |name: &str| classify(name).expect_err(name).to_string();
        assert_eq!(
            message("cobd32"),
            "index out of range: cobd takes cobd0 to cobd31"
        );
        assert_eq!(
            message("eth16"),
            "index out of range: eth takes eth0 to eth15"
        );
        assert_eq!(
            message("exec8"),
            "index out of range: exec takes exec0 to exec7"
        );
        assert_eq!(
            message("ttys99999999999"),
            "index out of range: ttys takes ttys0 to ttys31"
        );
        assert_eq!(
            message("cobd01"),
            "write the index without leading zeros (cobd1)"
        );
        assert_eq!(
            message("cobd00"),
            "write the index without leading zeros (cobd0)"
        );
        assert_eq!(
            message("hda0"),
            "index out of range: hda takes hda1 to hda63"
        );
        assert_eq!(
            message("sdb16"),
            "index out of range: sdb takes sdb1 to sdb15"
        );
        assert_eq!(
            message("hdb01"),
            "write the index without leading zeros (hdb1)"
        );
        assert_eq!(message("cofs"), "`cofs` needs an index, cofs0 to cofs31");
    }

    #[test]
    fn cocon_sizes() {
        assert_eq!(
            parse_cocon("80x25").ok(),
            Some(Cocon {
                cols: 80,
                rows: 25,
                scrollback: None
            })
        );
        assert_eq!(
            parse_cocon("120X40x2000").ok().map(|c| c.scrollback),
            Some(Some(2000))
        );
        assert_eq!(
            parse_cocon("120,40,500").ok(),
            Some(Cocon {
                cols: 120,
                rows: 40,
                scrollback: Some(500)
            }),
            "coLinux also took commas"
        );
        for bad in [
            "80",
            "0x25",
            "80x0",
            "80x25x",
            "axb",
            "80x25x1x2",
            "70000x25",
            "15x25",
            "80x1",
            "80x25x100001",
        ] {
            assert!(
                parse_cocon(bad)
                    .expect_err(bad)
                    .to_string()
                    .contains("expected COLSxROWS[xSCROLLBACK]"),
                "{bad}"
            );
        }
    }

    #[test]
    fn serial_options() {
        assert_eq!(
            parse_serial_options("BAUD=115200 PARITY=n DATA=8 STOP=1").ok(),
            Some(SerialOptions {
                baud: Some(115200),
                parity: Some(Parity::None),
                data_bits: Some(8),
                stop_bits: Some(1),
                ..SerialOptions::default()
            })
        );
        assert_eq!(
            parse_serial_options("parity=E stop=2")
                .ok()
                .map(|o| (o.parity, o.stop_bits, o.baud)),
            Some((Some(Parity::Even), Some(2), None))
        );
        let message = |text: &str| parse_serial_options(text).expect_err(text).to_string();
        assert_eq!(
            message("BAUD=fast"),
            "bad serial option \"BAUD=fast\": expected BAUD to be a speed in bits per second, like 115200"
        );
        assert!(message("PARITY=x").contains("PARITY to be n, e, o, m or s"));
        assert!(message("DATA=9").contains("DATA to be 5, 6, 7 or 8"));
        assert!(message("STOP=1.5").contains("STOP to be 1 or 2"));
        assert!(message("FLOW=x").contains("\"FLOW=x\": expected BAUD, PARITY, DATA, STOP, dtr"));
        assert!(message("BAUD").contains("\"BAUD\": expected BAUD, PARITY"));
        assert!(message("BAUD=1 baud=2").contains("BAUD only once"));
        assert!(message("STOP=1.5").contains("no 1.5 stop bits"));
        assert!(message("dtr=tg").contains("dtr to be on, off or hs"));
        assert!(message("rts=x").contains("rts to be on, off, hs or tg"));
        assert!(message("xon=yes").contains("xon to be on or off"));
        assert!(message("to=on TO=off").contains("TO only once"));
    }

    #[test]
    fn serial_options_in_full_mode_syntax() {
        let options = parse_serial_options(
            "BAUD=96 PARITY=n DATA=8 STOP=1 dtr=on rts=hs xon=off odsr=off octs=on idsr=off to=on",
        )
        .unwrap();
        assert_eq!(
            options,
            SerialOptions {
                baud: Some(9600),
                parity: Some(Parity::None),
                data_bits: Some(8),
                stop_bits: Some(1),
                dtr: Some(ModemLine::On),
                rts: Some(ModemLine::Handshake),
                xon: Some(false),
                odsr: Some(false),
                octs: Some(true),
                idsr: Some(false),
                timeout: Some(true),
            }
        );
        assert_eq!(parse_baud("19"), Some(19200));
        assert_eq!(parse_baud("115200"), Some(115200));
        assert_eq!(parse_baud("0"), None);
        assert_eq!(
            parse_serial_options("RTS=TG").unwrap().rts,
            Some(ModemLine::Toggle)
        );
    }

    #[test]
    fn scsi_values() {
        let scsi = |value: &str| {
            parse_scsi(2, &split_fields(value), Path::new("/c")).map(|v| match v {
                Value::Scsi {
                    kind,
                    path,
                    size_mb,
                    grow,
                    ..
                } => (kind, path, size_mb, grow),
                other => panic!("{other:?}"),
            })
        };
        assert_eq!(
            scsi("disk,file.img").unwrap(),
            (ScsiKind::Disk, PathBuf::from("/c/file.img"), None, false)
        );
        assert_eq!(
            scsi("cdrom,\"my disc.iso\"").unwrap(),
            (
                ScsiKind::Cdrom,
                PathBuf::from("/c/my disc.iso"),
                None,
                false
            )
        );
        assert_eq!(scsi("disk,d.img,1024").unwrap().2, Some(1024));
        assert_eq!(scsi("disk,d.img,0").unwrap().2, None, "coLinux's no-size");
        assert!(scsi("disk,d.img,64,grow").unwrap().3);
        let message = |value: &str| scsi(value).expect_err(value).to_string();
        assert!(message("tape,t.img").contains("no portable equivalent"));
        assert!(message("floppy,f.img").contains("expected disk or cdrom"));
        assert!(message("disk").contains("a file or device after the type"));
        assert!(message("disk,d.img,big").contains("a size in MB from 1 to 1048576"));
        assert!(message("disk,d.img,1048577").contains("a size in MB"));
        assert!(message("disk,d.img,,grow").contains("a SIZE to grow to"));
        assert!(message("disk,d.img,64,shared").contains("expected grow"));
        assert!(message("cdrom,c.iso,700").contains("a CD-ROM image is read, never created"));
        assert!(message("disk,a,1,grow,x").contains("too many fields"));
    }

    #[test]
    fn colors_and_cursor() {
        assert_eq!(
            parse_color("Yellow,black").ok(),
            Some(Color {
                foreground: "yellow".into(),
                background: "black".into()
            })
        );
        for bad in [
            "yellow",
            "yellow,yellow",
            "pink,black",
            "red,green,blue",
            "",
        ] {
            assert!(
                parse_color(bad)
                    .expect_err(bad)
                    .to_string()
                    .contains("two different colours of black, red"),
                "{bad}"
            );
        }
    }

    #[test]
    fn shell_split_kernel_args_get_their_quotes_back() {
        assert_eq!(kernel_arg("init=/bin/sh -x", true), "init=\"/bin/sh -x\"");
        assert_eq!(kernel_arg("two words", true), "\"two words\"");
        assert_eq!(
            kernel_arg("init=\"/bin/sh -x\"", true),
            "init=\"/bin/sh -x\""
        );
        assert_eq!(kernel_arg("ro", true), "ro");
    }

    #[test]
    fn drive_relative_paths_are_refused_on_windows_only() {
        let dir = Path::new(if cfg!(windows) { r"C:\conf" } else { "/conf" });
        let parsed = crate::parse_args(["cobd0=C:disk.img"], dir);
        if cfg!(windows) {
            let message = parsed.expect_err("drive-relative").to_string();
            assert_eq!(
                message,
                r"command line argument 1: cobd0=C:disk.img: C:disk.img is relative to the folder drive C: happens to be in; write the whole path, such as C:\coLinux\disk.img"
            );
            for whole in [r"C:\disk.img", r"\\server\share\disk.img", r"\disk.img"] {
                let settings = crate::parse_args([format!("cobd0={whole}")], dir).unwrap();
                assert!(settings.to_config().contains("disk.img"), "{whole}");
            }
        } else {
            // On Linux it is a file name like any other.
            let settings = parsed.unwrap();
            assert!(settings.to_config().contains("/conf/C:disk.img"));
        }
    }

    #[test]
    fn identity_folds_dots() {
        assert_eq!(
            identity(Path::new("/nonexistent/a/./b/../c.conf")),
            Path::new("/nonexistent/a/c.conf")
        );
        assert_eq!(identity(Path::new("../x/../y")), Path::new("../y"));
    }
}
