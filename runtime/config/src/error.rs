//! Where a setting came from, and what can be wrong with it.
//!
//! Every error names its place (`file:line` or `command line argument N`)
//! and the offending token, and displays as one line:
//! `my.conf:12: eth0=slirp,zz:11: bad MAC address "zz:11": …`.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Linux x86's `COMMAND_LINE_SIZE`: the kernel command line buffer, NUL included.
pub const COMMAND_LINE_SIZE: usize = 2048;

/// The longest kernel command line the guest accepts, in bytes (the NUL needs the last one).
pub const MAX_KERNEL_CMDLINE: usize = COMMAND_LINE_SIZE - 1;

/// Where a token was written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Place {
    /// The Nth command-line argument, counted from 1 over the arguments
    /// given to the parser (so the daemon's `$1` is argument 1).
    Arg(usize),
    /// A line (counted from 1) of a config or ini file. The path is as the
    /// user wrote it: relative paths stay relative to the current directory.
    Line { file: PathBuf, line: usize },
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Arg(index) => write!(f, "command line argument {index}"),
            Place::Line { file, line } => write!(f, "{}:{line}", shown(file)),
        }
    }
}

/// A place plus the token written there (`cobd0=root.img`, `[NFS]`, `path_0 = a.img`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub place: Place,
    pub token: String,
}

impl Origin {
    /// A `root_password_hash` token keeps its value out of every message
    /// (a password given by mistake would be printed otherwise).
    pub fn new(place: Place, token: impl Into<String>) -> Self {
        let mut token = token.into();
        if token
            .trim_start()
            .to_ascii_lowercase()
            .starts_with(HIDDEN_KEY)
        {
            token = format!("{HIDDEN_KEY}=(not shown)");
        }
        Origin { place, token }
    }
}

/// The key whose value no message shows.
const HIDDEN_KEY: &str = "root_password_hash";

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.token.is_empty() {
            write!(f, "{}", self.place)
        } else {
            write!(f, "{}: {}", self.place, one_line(&self.token))
        }
    }
}

/// A config error: where it is, the token, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {kind}")]
pub struct Error {
    pub origin: Origin,
    // Boxed to keep `Result<_, Error>` small on the happy path. Not a
    // `#[source]`: the message already holds it, and error chains printed
    // with `{:#}` would repeat it.
    pub kind: Box<ErrorKind>,
}

impl Error {
    pub fn new(origin: Origin, kind: ErrorKind) -> Self {
        Error {
            origin,
            kind: Box::new(kind),
        }
    }
}

/// What is wrong. Messages are lower-case fragments that follow `place: token: `.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    #[error("unterminated quote (a `\"` must be closed on the same line)")]
    UnterminatedQuote,

    #[error("`{key}` needs a value: {key}={example}")]
    MissingValue { key: String, example: &'static str },

    #[error("`{key}` needs an index, {key}0 to {key}{max}")]
    MissingIndex { key: &'static str, max: u32 },

    #[error("index out of range: {key} takes {key}{min} to {key}{max}")]
    IndexOutOfRange { key: String, min: u32, max: u32 },

    #[error("write the index without leading zeros ({corrected})")]
    LeadingZero { corrected: String },

    /// A name shaped like a daemon key (`cobd12x`, `ethX`, `scsi-1`) that is
    /// not one: refused, so that it is not handed to the kernel by accident.
    #[error(
        "`{}` looks like a coLinux key but is not one: write {family}{min} to {family}{max}",
        one_line(name)
    )]
    MalformedKey {
        name: String,
        family: String,
        min: u32,
        max: u32,
    },

    #[error("keys are lower case: write `{}`", one_line(lower))]
    UpperCaseKey { lower: String },

    /// A value that does not parse: `what` names the field, `expected` says what would.
    #[error("bad {what} {value:?}: expected {expected}")]
    BadValue {
        what: &'static str,
        value: String,
        expected: String,
    },

    #[error("too many fields: the form is {form}")]
    TooManyFields { form: &'static str },

    #[error("bad MAC address {mac:?}: {reason}")]
    BadMac { mac: String, reason: String },

    #[error("{name} is already defined at {first}")]
    Duplicate { name: String, first: Origin },

    #[error("{alias} points at cobd{cobd}, which is not defined")]
    AliasTargetUndefined { alias: String, cobd: u8 },

    #[error("no free cobd index left for {alias} (cobd0 to cobd31 are all in use)")]
    NoFreeCobd { alias: String },

    #[error("host {protocol} port {port} is already forwarded by {first}")]
    PortOverlap {
        protocol: &'static str,
        port: u32,
        first: Origin,
    },

    #[error("cannot read {}: {error}", shown(path))]
    Include { path: PathBuf, error: io::Error },

    #[error("include cycle: {}", chain.iter().map(|p| shown(p)).collect::<Vec<_>>().join(" -> "))]
    IncludeCycle { chain: Vec<PathBuf> },

    #[error("more than {limit} includes in total; is something including itself indirectly?")]
    TooManyIncludes { limit: usize },

    #[error("the file is not valid UTF-8")]
    NotUtf8,

    #[error(transparent)]
    CmdlineTooLong(#[from] CmdlineTooLong),

    // coMosix ini files.
    #[error(
        "unknown section [{}]; expected [comosix], [NFS], [cobd], [engine], [service], [cluster], [credentials] or [guest]",
        one_line(name)
    )]
    IniUnknownSection { name: String },

    #[error("unknown key {key:?} in [{section}]; expected {expected}")]
    IniUnknownKey {
        section: &'static str,
        key: String,
        expected: &'static str,
    },

    #[error(
        "a key outside any section; put it under [comosix], [NFS], [cobd], [engine], [service], [cluster], [credentials] or [guest]"
    )]
    IniKeyOutsideSection,

    #[error("expected `[section]`, `key = value` or a `;` comment")]
    IniSyntax,

    #[error("path_{missing} is missing, so path_{dropped} would be dropped (paths must count up from path_0 without gaps)")]
    IniGap { missing: u8, dropped: u8 },

    #[error(
        "`{}` is not a cluster key: cluster, cluster_hostname, cluster_head, cluster_network, \
         cluster_munge_key, cluster_ssh_host_key or cluster_root_key",
        one_line(name)
    )]
    UnknownClusterKey { name: String },

    #[error("{reason}")]
    BadPasswordHash { reason: &'static str },

    #[error("{}: {reason}", path.display())]
    NotAPublicKey { path: PathBuf, reason: String },

    #[error("a cluster guest needs {missing} as well")]
    ClusterIncomplete { missing: &'static str },

    #[error("[cluster] needs `{missing}`")]
    IniClusterIncomplete { missing: &'static str },

    #[error("[NFS] needs `{missing}` as well")]
    NfsIncomplete { missing: &'static str },

    #[error("{} is relative to the folder drive {drive} happens to be in; write the whole path, such as {drive}\\coLinux\\{}", shown(path), path.file_name().map_or("disk.img".into(), |n| n.to_string_lossy()))]
    DriveRelative { path: PathBuf, drive: String },

    // Settings::check_files.
    #[error("{} does not exist", shown(path))]
    FileMissing { path: PathBuf },

    #[error("{} is a directory, not a file", shown(path))]
    NotAFile { path: PathBuf },

    #[error("{} is not a directory", shown(path))]
    NotADirectory { path: PathBuf },

    #[error("cannot access {}: {error}", shown(path))]
    FileUnreadable { path: PathBuf, error: io::Error },
}

/// A kernel command line longer than the guest accepts. Linux would cut it
/// silently (the old coLinux did too); we refuse instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the kernel command line would be {len} bytes; the guest accepts at most {max} (COMMAND_LINE_SIZE {size} includes the NUL)", max = MAX_KERNEL_CMDLINE, size = COMMAND_LINE_SIZE)]
pub struct CmdlineTooLong {
    pub len: usize,
}

/// Checks a complete kernel command line (what the daemon finally passes
/// with `-append`) against the guest's limit.
pub fn check_kernel_cmdline(cmdline: &str) -> Result<(), CmdlineTooLong> {
    if cmdline.len() > MAX_KERNEL_CMDLINE {
        Err(CmdlineTooLong { len: cmdline.len() })
    } else {
        Ok(())
    }
}

/// User text as it goes into a one-line message: control characters
/// (a newline in a command-line argument, say) are escaped.
pub(crate) fn one_line(text: &str) -> Cow<'_, str> {
    if text.contains(char::is_control) {
        Cow::Owned(
            text.chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

fn shown(path: &Path) -> String {
    one_line(&path.display().to_string()).into_owned()
}

/// Everything [`crate::Settings::check_files`] found wrong, one error per path.
#[derive(Debug)]
pub struct FileErrors(pub Vec<Error>);

impl fmt::Display for FileErrors {
    /// One line per problem, so the daemon can print them all at once.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FileErrors {}
