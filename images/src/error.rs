use std::io;
use std::path::PathBuf;

use crate::table::PartitionTable;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A problem in a partition table, found by [`crate::mbr`] or [`crate::gpt`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("the image is truncated: {what} at byte {offset} lies past its end ({len} bytes)")]
    Truncated { what: String, offset: u64, len: u64 },
    #[error("{0}")]
    Corrupt(String),
    #[error(
        "it has a protective MBR (type 0xee) but no valid GPT ({0}); repair it with `sgdisk --verify` or `gdisk`"
    )]
    ProtectiveWithoutGpt(String),
}

/// Every error names the file it is about.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct Error {
    pub path: PathBuf,
    pub kind: ErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    #[error("cannot {op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("is a directory, not a disk image")]
    Directory,
    #[error("is empty (0 bytes), not a disk image")]
    Empty,
    #[error("{0}")]
    Table(#[from] TableError),
    #[error("partition {number} ends at byte {end}, past the end of the image ({len} bytes): the image is truncated or its table is wrong")]
    PastEnd { number: u32, end: u64, len: u64 },
    #[error(
        "partitions {a} (bytes {a_start}..{a_end}) and {b} (bytes {b_start}..{b_end}) overlap"
    )]
    Overlap {
        a: u32,
        a_start: u64,
        a_end: u64,
        b: u32,
        b_start: u64,
        b_end: u64,
    },
    #[error("has no partition {number} (it has {})", list_numbers(table))]
    NoSuchPartition {
        number: u32,
        table: Box<PartitionTable>,
    },
    #[error("{} partitions hold a Linux filesystem ({}): choose one with --partition N", candidates.len(), join(candidates))]
    Ambiguous {
        candidates: Vec<u32>,
        table: Box<PartitionTable>,
    },
    #[error(
        "no partition holds a Linux filesystem: choose one with --partition N (it has {})",
        list_numbers(table)
    )]
    NoLinuxPartition { table: Box<PartitionTable> },
    #[error("has no partition table and no filesystem at its start; it is not a disk image we understand")]
    Unrecognised,
    #[error("the {fs} filesystem in partition {number} claims {fs_len} bytes but the partition holds only {part_len}: the image is truncated or the table is wrong")]
    FsLargerThanPartition {
        number: u32,
        fs: String,
        fs_len: u64,
        part_len: u64,
    },
    #[error("is {len} bytes, not a whole number of {sector}-byte sectors")]
    NotSectorMultiple { len: u64, sector: u64 },
    #[error("already exists; pass --force to overwrite it")]
    Exists,
    /// The output would overwrite a file the input reads from; `role` says
    /// which ("is the input x.img (the same file)", "is the backing file of …").
    #[error("{role}: writing it would destroy the input; choose another output (--force does not change this)")]
    IsInput { role: String },
    #[error(
        "is a block device; pass --overwrite-device to write the image onto it (--force does not)"
    )]
    DeviceNeedsFlag,
    #[error("is {len} bytes, too small for the {needed}-byte image")]
    DeviceTooSmall { len: u64, needed: u64 },
    #[error("is {0}; the output must be a regular file or a block device")]
    NotWritable(&'static str),
    #[error("is a symbolic link to {0}, which does not exist; name the target itself, or remove the link")]
    DanglingLink(PathBuf),
    #[error("{0}")]
    NoSpace(#[from] crate::space::NoSpace),
    #[error("`{command}` failed: {message}")]
    Tool { command: String, message: String },
    /// Input we understand but cannot do what was asked with.
    #[error("{0}")]
    Unsupported(String),
}

fn join(numbers: &[u32]) -> String {
    numbers
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn list_numbers(table: &PartitionTable) -> String {
    if table.scheme == crate::Scheme::Bare {
        return "no partition table: convert it without --partition".into();
    }
    if table.partitions.is_empty() {
        return "no partitions".into();
    }
    let numbers: Vec<u32> = table.partitions.iter().map(|p| p.number).collect();
    format!("partitions {}", join(&numbers))
}

impl Error {
    pub fn new(path: impl Into<PathBuf>, kind: impl Into<ErrorKind>) -> Self {
        Error {
            path: path.into(),
            kind: kind.into(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> Self {
        Error::new(path, ErrorKind::Io { op, source })
    }

    /// The partition table attached to the error, for errors that ask the
    /// user to choose a partition and so should show them the choices.
    pub fn table(&self) -> Option<&PartitionTable> {
        match &self.kind {
            ErrorKind::NoSuchPartition { table, .. }
            | ErrorKind::Ambiguous { table, .. }
            | ErrorKind::NoLinuxPartition { table } => Some(table),
            _ => None,
        }
    }
}
