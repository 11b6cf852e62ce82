//! Disk images for coLinux.
//!
//! A QEMU disk image holds a partition table in front of the filesystem that
//! coLinux's cobd wants bare. This crate reads the table (MBR with logical
//! partitions, GPT with 512- or 4096-byte sectors), recognises filesystems,
//! extracts one partition as a sparse file, and wraps a filesystem back into
//! a partitioned disk.
//!
//! The table parsers ([`mbr`], [`gpt`]) work on any [`ReadAt`] and never do
//! I/O of their own, so they are fuzzed on plain byte slices.

pub mod convert;
pub mod copy;
pub mod disk;
mod error;
pub mod fs;
pub mod gpt;
pub mod leftovers;
pub mod mbr;
mod output;
pub mod qemu;
pub mod space;
pub mod table;
pub mod todisk;

pub use convert::{convert, Plan};
pub use disk::{DiskImage, Format, ReadAt};
pub use error::{Error, Result, TableError};
pub use output::Overwrite;
pub use table::{Partition, PartitionTable, Scheme};

/// Receives progress of long copies. The library never draws anything itself.
pub trait Progress {
    /// Called once with the number of bytes the operation will cover.
    fn start(&self, _total: u64) {}
    /// Called with the number of bytes covered so far (monotonic).
    fn update(&self, _done: u64) {}
    /// True once the user asked to stop (Ctrl-C): long loops then return an
    /// `Interrupted` error, so their temporary files are cleaned up as on
    /// any other error.
    fn cancelled(&self) -> bool {
        false
    }
}

/// A [`Progress`] that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {}
