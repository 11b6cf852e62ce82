//! The coLinux config language (`kernel=… cobd0=… eth0=slirp`, `@file`
//! includes) and coMosix-style ini files, parsed into typed settings.
//!
//! ```
//! use std::path::Path;
//! let settings = colinux_config::parse_str(
//!     "kernel=vmlinux mem=256 cobd0=root.img eth0=slirp,,tcp:2222:22 root=/dev/cobd0 ro",
//!     Path::new("/etc/colinux/guest.conf"),
//! )?;
//! assert_eq!(settings.mem_mb.map(|m| m.value), Some(256));
//! assert_eq!(settings.cobd[&0].path, Path::new("/etc/colinux/root.img"));
//! assert_eq!(settings.kernel_args, ["root=/dev/cobd0", "ro"]);
//! # Ok::<(), colinux_config::Error>(())
//! ```
//!
//! Errors name their place and token on one line:
//! `guest.conf:3: eth0=slirp,zz:11: bad MAC address "zz:11": …`.
//! See the crate's README for the language.

mod builder;
mod cluster;
mod colinux;
pub mod credentials;
mod error;
mod ini;
mod lexer;
mod net;
mod settings;

use std::path::Path;

pub use cluster::{is_hostname, machine_name, Cluster, ClusterRole, Ipv4Net, MAX_HOSTNAME};
pub use colinux::{read_config_file, Parser, ReadFile, MAX_FILE_BYTES, MAX_INCLUDES};
pub use error::{
    check_kernel_cmdline, CmdlineTooLong, Error, ErrorKind, FileErrors, Origin, Place,
    COMMAND_LINE_SIZE, MAX_KERNEL_CMDLINE,
};
pub use ini::parse_size;
pub use net::{BridgeBackend, MacAddr, Net, NetKind, PortRedirect, Protocol};
pub use settings::{
    default_mem_mb, Accel, Alias, Arch, Cocon, Color, Disk, Exec, GuestRequest, Ignored, Located,
    ModemLine, NfsRoot, Parity, Scsi, ScsiKind, Serial, SerialOptions, Settings, Share,
    COLOR_NAMES, DEFAULT_MEM_CAP_I386_MB, DEFAULT_MEM_CAP_X86_64_MB, DEFAULT_MEM_FLOOR_MB,
    MAX_COBD, MAX_COFS, MAX_ETH, MAX_EXEC, MAX_MEM_MB_I386, MAX_MEM_MB_X86_64, MAX_SCROLLBACK,
    MAX_SCSI, MAX_SCSI_SIZE_MB, MAX_SMP, MAX_TTYS, MIN_COCON_COLS, MIN_COCON_ROWS, MIN_MEM_MB,
};

/// Parses the daemon's arguments (without the program name). Each argument
/// is one token; `@file` arguments are read from disk, relative to `cwd`.
pub fn parse_args<I, S>(args: I, cwd: &Path) -> Result<Settings, Error>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut parser = Parser::new(cwd);
    for arg in args {
        parser.arg(arg.as_ref())?;
    }
    parser.finish()
}

/// Parses config-language text as the contents of `file` (which is only
/// named in messages, and whose directory anchors relative paths). Only
/// `@` includes touch the filesystem.
pub fn parse_str(text: &str, file: &Path) -> Result<Settings, Error> {
    let mut parser = Parser::new(file.parent().unwrap_or(Path::new("")));
    parser.config_text(text, file)?;
    parser.finish()
}

/// Parses a coMosix ini file's text as the contents of `file`. Touches
/// the system only to read this machine's name, for a `[cluster]`
/// without `host_name`.
pub fn parse_ini_str(text: &str, file: &Path) -> Result<Settings, Error> {
    let mut parser = Parser::new(file.parent().unwrap_or(Path::new("")));
    parser.ini_text(text, file)?;
    parser.finish()
}
