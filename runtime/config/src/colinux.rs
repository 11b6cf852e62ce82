//! The coLinux config language: command-line arguments and `@file`
//! includes, each token a `name=value` key or a guest kernel parameter.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use crate::builder::{AliasTarget, Builder, Value};
use crate::error::{Error, ErrorKind, Origin, Place};
use crate::lexer::{quotes_balanced, split_fields, split_key, tokenize, unquote};
use crate::net::parse_net;
use crate::settings::{
    has_separator, Accel, Arch, Cocon, Parity, SerialOptions, Settings, MAX_COBD, MAX_COFS,
    MAX_ETH, MAX_EXEC, MAX_MEM_MB_X86_64, MAX_SMP, MAX_TTYS, MIN_MEM_MB,
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
        let path = dir.join(name);
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
    Cobd(u8),
    Eth(u8),
    Cofs(u8),
    Ttys(u8),
    Exec(u8),
    /// `hda1`, `sdb`, …
    Alias,
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
            Key::Cobd(_) => "root.img",
            Key::Eth(_) => "slirp",
            Key::Cofs(_) => "C:\\shared",
            Key::Ttys(_) => "/dev/ttyS0",
            Key::Exec(_) => "program,\"args\"",
            Key::Alias => "disk.img or :cobd0",
        }
    }
}

type MakeKey = fn(u8) -> Key;

const INDEXED_KEYS: [(&str, u8, MakeKey); 5] = [
    ("cobd", MAX_COBD, Key::Cobd),
    ("cofs", MAX_COFS, Key::Cofs),
    ("eth", MAX_ETH, Key::Eth),
    ("ttys", MAX_TTYS, Key::Ttys),
    ("exec", MAX_EXEC, Key::Exec),
];

/// Which key a token's name is; `None` for a kernel parameter.
fn classify(name: &str) -> Result<Option<Key>, ErrorKind> {
    let key = match name {
        "kernel" => Key::Kernel,
        "initrd" => Key::Initrd,
        "mem" => Key::Mem,
        "smp" => Key::Smp,
        "arch" => Key::Arch,
        "accel" => Key::Accel,
        "qemu" => Key::Qemu,
        "cocon" => Key::Cocon,
        _ => {
            for (family, max, make) in INDEXED_KEYS {
                let Some(rest) = name.strip_prefix(family) else {
                    continue;
                };
                if rest.is_empty() {
                    let max = u32::from(max);
                    return Err(ErrorKind::MissingIndex { key: family, max });
                }
                // `ethtool=…` and the like are someone else's.
                if is_digits(rest) {
                    return parse_index(family, rest, 0, max).map(|i| Some(make(i)));
                }
            }
            return classify_alias(name);
        }
    };
    Ok(Some(key))
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
        Key::Kernel => Value::Kernel(dir.join(&whole)),
        Key::Initrd => Value::Initrd(dir.join(&whole)),
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
        Key::Qemu => Value::Qemu(program_path(dir, &whole)),
        Key::Cocon => Value::Cocon(parse_cocon(&whole)?),
        Key::Cobd(index) => Value::Cobd(index, dir.join(&whole)),
        Key::Cofs(index) => Value::Cofs(index, dir.join(&whole)),
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
            if device.is_empty() {
                return Err(bad(
                    "serial device",
                    device,
                    "a device such as /dev/ttyS0 or COM1",
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
            Value::Exec(index, program_path(dir, program), args)
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

/// `COLSxROWS[xSCROLLBACK]`.
fn parse_cocon(text: &str) -> Result<Cocon, ErrorKind> {
    let error = || {
        bad(
            "console size",
            text,
            "COLSxROWS[xSCROLLBACK], like 80x25 or 120x40x1000",
        )
    };
    let parts: Vec<&str> = text.trim().split(['x', 'X']).collect();
    if !(2..=3).contains(&parts.len()) {
        return Err(error());
    }
    let cols = parts[0].parse::<u16>().map_err(|_| error())?;
    let rows = parts[1].parse::<u16>().map_err(|_| error())?;
    if cols == 0 || rows == 0 {
        return Err(error());
    }
    let scrollback = match parts.get(2) {
        Some(lines) => Some(lines.parse::<u32>().map_err(|_| error())?),
        None => None,
    };
    Ok(Cocon {
        cols,
        rows,
        scrollback,
    })
}

/// `:cobdN` names an existing device; anything else is a file.
fn parse_alias_target(text: &str, dir: &Path) -> Result<AliasTarget, ErrorKind> {
    let Some(target) = text.strip_prefix(':') else {
        return Ok(AliasTarget::File(dir.join(text)));
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

/// `BAUD=115200 PARITY=n DATA=8 STOP=1`, names and letters in any case.
fn parse_serial_options(text: &str) -> Result<SerialOptions, ErrorKind> {
    let mut options = SerialOptions::default();
    for word in text.split_whitespace() {
        let names = "BAUD, PARITY, DATA or STOP, as NAME=value";
        let (name, value) = word
            .split_once('=')
            .ok_or_else(|| bad("serial option", word, names))?;
        let bad_value = |expected: &str| bad("serial option", word, expected);
        let name = name.to_ascii_uppercase();
        let already = match name.as_str() {
            "BAUD" => options.baud.is_some(),
            "PARITY" => options.parity.is_some(),
            "DATA" => options.data_bits.is_some(),
            "STOP" => options.stop_bits.is_some(),
            _ => return Err(bad_value(names)),
        };
        if already {
            return Err(bad_value(&format!("{name} only once")));
        }
        match name.as_str() {
            "BAUD" => match value.parse::<u32>() {
                Ok(baud) if baud > 0 => options.baud = Some(baud),
                _ => {
                    return Err(bad_value(
                        "BAUD to be a speed in bits per second, like 115200",
                    ))
                }
            },
            "PARITY" => {
                options.parity = Some(match value.to_ascii_lowercase().as_str() {
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
            _ => match value {
                "1" => options.stop_bits = Some(1),
                "2" => options.stop_bits = Some(2),
                _ => return Err(bad_value("STOP to be 1 or 2")),
            },
        }
    }
    Ok(options)
}

/// A program with a path separator is a file next to the config; a bare
/// name is left for a `PATH` search.
pub(crate) fn program_path(dir: &Path, program: &str) -> PathBuf {
    let program = PathBuf::from(program);
    if has_separator(&program) {
        dir.join(program)
    } else {
        program
    }
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
        for kernel_param in [
            "root",
            "ro",
            "ethtool",
            "sdhci.debug",
            "hdmi",
            "hd",
            "Kernel",
            "console",
        ] {
            assert_eq!(key(kernel_param), Ok(None), "{kernel_param}");
        }
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
        for bad in [
            "80",
            "0x25",
            "80x0",
            "80x25x",
            "axb",
            "80x25x1x2",
            "70000x25",
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
        assert!(message("FLOW=x").contains("\"FLOW=x\": expected BAUD, PARITY, DATA or STOP"));
        assert!(message("BAUD").contains("\"BAUD\": expected BAUD, PARITY"));
        assert!(message("BAUD=1 baud=2").contains("BAUD only once"));
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
    fn identity_folds_dots() {
        assert_eq!(
            identity(Path::new("/nonexistent/a/./b/../c.conf")),
            Path::new("/nonexistent/a/c.conf")
        );
        assert_eq!(identity(Path::new("../x/../y")), Path::new("../y"));
    }
}
