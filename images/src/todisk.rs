//! Filesystem image → partitioned disk image, for QEMU, VirtualBox and the like.

use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::copy::{data_bytes, sparse_copy};
use crate::disk::{DiskImage, Format, ReadAt};
use crate::error::{Error, ErrorKind, Result};
use crate::fs::{self, FsKind};
use crate::gpt::{self, Guid};
use crate::mbr;
use crate::output::{Output, Overwrite};
use crate::table;
use crate::{qemu, Progress};

/// Disks end on a whole MiB, which every hypervisor's importer accepts.
const DISK_ALIGN: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// An MBR with the partition at this sector (2048, or 63 for old tools).
    Mbr { start_sector: u64 },
    /// A GPT with this logical sector size; the partition starts at 1 MiB.
    Gpt { sector_size: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

#[derive(Debug)]
pub struct Wrapped {
    pub disk_size: u64,
    pub partition_start: u64,
    pub partition_size: u64,
    pub fs: Option<FsKind>,
}

/// Seeds the disk and partition identifiers from the content, so the same
/// filesystem always gives the same disk: rebuilds stay bit-identical.
fn seed(image: &DiskImage) -> std::io::Result<[u8; 32]> {
    let mut head = vec![0u8; image.size().min(1 << 20) as usize];
    image.read_at(&mut head, 0)?;
    let mut h = Sha256::new();
    h.update(b"colinux to-disk v1");
    h.update(image.size().to_le_bytes());
    h.update(&head);
    Ok(h.finalize().into())
}

/// Wraps the filesystem image `input` into a one-partition disk at `output`
/// (see [`Output`] for what it may be; a block device takes a raw disk).
pub fn to_disk(
    input: &Path,
    output: &Path,
    layout: Layout,
    format: DiskFormat,
    overwrite: Overwrite,
    progress: &dyn Progress,
) -> Result<Wrapped> {
    let image = DiskImage::open(input)?;
    if image.format != Format::Raw {
        return Err(Error::new(
            input,
            ErrorKind::Unsupported(format!(
                "is a {} image, but --to-disk takes a raw filesystem image; convert it with `qemu-img convert -O raw` first",
                image.format.name()
            )),
        ));
    }
    let size = image.size();
    let sector = match layout {
        Layout::Mbr { .. } => mbr::SECTOR,
        Layout::Gpt { sector_size } => sector_size,
    };
    if size % sector != 0 {
        return Err(Error::new(
            input,
            ErrorKind::NotSectorMultiple { len: size, sector },
        ));
    }
    let fs = fs::probe(&image, 0, size).map(|f| f.kind);
    if fs.is_none() {
        return Err(Error::new(input, ErrorKind::Unrecognised));
    }
    let seed = seed(&image).map_err(|e| Error::io(input, "read it", e))?;
    let mut out = Output::create(output, overwrite, &image.sources()?)?;
    // The filesystem's data, twice for qcow2: the raw disk, then the qcow2.
    let data = data_bytes(&image.file, 0, size).map_err(|e| Error::io(input, "read it", e))?;
    out.reserve(match format {
        DiskFormat::Raw => data,
        DiskFormat::Qcow2 => 2 * data,
    })?;

    // Build the raw disk, then (for qcow2) convert it next to the output.
    let raw_temp;
    let raw = if format == DiskFormat::Raw {
        &out
    } else {
        raw_temp = out.scratch()?;
        &raw_temp
    };
    let wrapped = write_raw(&image, raw, layout, fs, &seed, progress)?;
    if format == DiskFormat::Qcow2 {
        qemu::raw_to_qcow2(
            raw.target_path(),
            out.target_path(),
            wrapped.disk_size,
            progress,
        )
        .map_err(|e| out.tool_error(e))?;
    }
    out.publish()?;
    Ok(wrapped)
}

fn write_raw(
    image: &DiskImage,
    out: &Output,
    layout: Layout,
    fs: Option<FsKind>,
    seed: &[u8; 32],
    progress: &dyn Progress,
) -> Result<Wrapped> {
    let size = image.size();
    let swap = fs == Some(FsKind::Swap);
    let write = |e| out.error("write it", e);
    let (start, disk_size) = match layout {
        Layout::Mbr { start_sector } => {
            let sectors = size / mbr::SECTOR;
            if start_sector + sectors > u64::from(u32::MAX) {
                return Err(Error::new(
                    &image.path,
                    ErrorKind::Unsupported(
                        "is too large for an MBR disk (2 TiB); use --gpt".into(),
                    ),
                ));
            }
            let start = start_sector * mbr::SECTOR;
            let disk_size = (start + size).next_multiple_of(DISK_ALIGN);
            let entry = mbr::Entry {
                number: 1,
                bootable: true,
                kind: if swap {
                    mbr::TYPE_SWAP
                } else {
                    mbr::TYPE_LINUX
                },
                start_lba: start_sector,
                sectors,
            };
            let disk_id = u32::from_le_bytes([seed[0], seed[1], seed[2], seed[3]]);
            out.prepare(disk_size)?;
            out.file()
                .write_all_at(&mbr::build(disk_id, &[entry]), 0)
                .map_err(write)?;
            (start, disk_size)
        }
        Layout::Gpt { sector_size: ss } => {
            let first = DISK_ALIGN / ss;
            let last = first + size / ss - 1;
            let disk_size = ((last + 1 + gpt::tail_sectors(ss)) * ss).next_multiple_of(DISK_ALIGN);
            let type_guid = if swap {
                gpt::TYPE_LINUX_SWAP
            } else {
                gpt::TYPE_LINUX_FS
            };
            let entry = gpt::Entry {
                number: 1,
                type_guid: Guid::parse(type_guid).expect("a valid constant"),
                guid: Guid::from_seed(&Sha256::digest(seed).into()),
                first_lba: first,
                last_lba: last,
                attributes: 0,
                name: if swap { "swap" } else { "root" }.into(),
            };
            out.prepare(disk_size)?;
            gpt::write(out.file(), ss, Guid::from_seed(seed), &[entry]).map_err(write)?;
            (first * ss, disk_size)
        }
    };
    sparse_copy(&image.file, 0, out.file(), start, size, progress)
        .map_err(|e| e.about(&image.path, out))?;

    // Read back what we wrote, as any reader of the disk would.
    let check = table::read(out.file()).map_err(|k| Error::new(&out.path, k))?;
    let part = check
        .select(Some(1))
        .map_err(|k| Error::new(&out.path, k))?;
    assert_eq!(
        (part.start, part.size),
        (start, size),
        "the table we wrote reads back differently"
    );
    Ok(Wrapped {
        disk_size,
        partition_start: start,
        partition_size: size,
        fs,
    })
}
