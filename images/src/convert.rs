//! QEMU disk image → bare filesystem image, the one cobd wants.

use std::path::Path;

use crate::copy::{data_bytes, share_range, sparse_copy};
use crate::disk::{DiskImage, Format};
use crate::error::{Error, ErrorKind, Result};
use crate::fs::{self, FsInfo};
use crate::output::{Output, Overwrite};
use crate::qemu;
use crate::table::{self, Partition, PartitionTable};
use crate::Progress;

/// What a conversion will do, worked out before any byte is written.
pub struct Plan {
    pub disk: DiskImage,
    pub table: PartitionTable,
    /// The partition to extract (number 0 for a disk without a table).
    pub partition: Partition,
}

impl Plan {
    /// Opens `input`, reads its table and picks the partition.
    pub fn new(input: &Path, partition: Option<u32>) -> Result<Plan> {
        let disk = DiskImage::open(input)?;
        let table = table::read(&disk).map_err(|k| Error::new(input, k))?;
        let partition = table
            .select(partition)
            .map_err(|k| Error::new(input, k))?
            .clone();
        Ok(Plan {
            disk,
            table,
            partition,
        })
    }
}

/// What a finished conversion produced.
#[derive(Debug)]
pub struct Converted {
    pub size: u64,
    pub fs: Option<FsInfo>,
    /// Things the user should know, such as a non-ext filesystem.
    pub warnings: Vec<String>,
    /// Whether the output shares the input's extents (a reflink) instead
    /// of holding a copy of its bytes.
    pub shared: bool,
}

/// Writes exactly the planned partition's bytes to `output` (sparse when it
/// is a file; sharing the input's extents instead where the filesystem can,
/// see `copy::share_range`), checks the filesystem in it, and only then moves
/// it into place. See [`Output`] for what `output` may be.
pub fn convert(
    plan: &Plan,
    output: &Path,
    overwrite: Overwrite,
    progress: &dyn Progress,
) -> Result<Converted> {
    let mut out = Output::create(output, overwrite, &plan.disk.sources()?)?;
    let Partition { start, size, .. } = plan.partition;
    out.prepare(size)?;
    let mut shared = false;
    match plan.disk.format {
        Format::Raw => {
            let disk = &plan.disk.file;
            shared = share_range(disk, start, out.file(), 0, size, progress)
                .map_err(|e| e.about(&plan.disk.path, &out))?;
            if !shared {
                let data = data_bytes(disk, start, size)
                    .map_err(|e| Error::io(&plan.disk.path, "read it", e))?;
                out.reserve(data)?;
                sparse_copy(disk, start, out.file(), 0, size, progress)
                    .map_err(|e| e.about(&plan.disk.path, &out))?;
            }
        }
        Format::Qemu(driver) => {
            out.reserve(qemu::allocated(&plan.disk.path, driver)?.min(size))?;
            qemu::extract(
                &plan.disk.path,
                driver,
                start,
                size,
                out.target_path(),
                progress,
            )
            .map_err(|e| out.tool_error(e))?;
        }
    }
    let found = fs::probe(out.file(), 0, size);
    let mut warnings = plan.table.warnings.clone();
    match &found {
        Some(info) if !info.kind.is_ext() => warnings.push(format!(
            "the output holds {}, not ext2/3/4: coLinux-style root (root=/dev/cobd0 without an initrd) needs ext*",
            info.kind
        )),
        None => warnings.push("no filesystem signature found in the output".into()),
        Some(_) => {}
    }
    if let Some(FsInfo {
        kind,
        size: Some(fs_len),
        ..
    }) = &found
    {
        if *fs_len > size {
            return Err(Error::new(
                output,
                ErrorKind::FsLargerThanPartition {
                    number: plan.partition.number,
                    fs: kind.to_string(),
                    fs_len: *fs_len,
                    part_len: size,
                },
            ));
        }
    }
    out.publish()?;
    Ok(Converted {
        size,
        fs: found,
        warnings,
        shared,
    })
}
