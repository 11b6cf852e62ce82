//! One view of a disk's layout, whatever table (or none) it has, with the
//! checks that make extraction safe: overlap, truncation, filesystem size.

use std::fmt::Write as _;

use crate::disk::ReadAt;
use crate::error::{ErrorKind, TableError};
use crate::fs::{self, FsInfo};
use crate::{gpt, mbr};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    Mbr {
        disk_id: u32,
    },
    Gpt {
        sector_size: u64,
        disk_guid: gpt::Guid,
    },
    /// No partition table: the whole disk is one filesystem.
    Bare,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// As Linux numbers it: 1–4 primary and 5+ logical for MBR, the entry index for GPT.
    pub number: u32,
    /// Byte offset of the partition in the disk.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// Start in the table's own sectors, for display.
    pub start_sector: u64,
    /// "83 Linux" or "Linux filesystem".
    pub type_name: String,
    /// The GPT partition name, if any.
    pub name: String,
    pub fs: Option<FsInfo>,
}

impl Partition {
    pub fn end(&self) -> u64 {
        self.start + self.size
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTable {
    pub scheme: Scheme,
    pub disk_size: u64,
    /// Sorted by number. For [`Scheme::Bare`], one pseudo-partition numbered 0
    /// that spans the disk.
    pub partitions: Vec<Partition>,
    /// Problems worked around while reading, for the user to see.
    pub warnings: Vec<String>,
}

/// Reads the disk's layout. A protective MBR requires a valid GPT; a disk
/// with no table must start with a filesystem.
pub fn read(disk: &dyn ReadAt) -> Result<PartitionTable, ErrorKind> {
    let disk_size = disk.size();
    let mut warnings = Vec::new();
    let (scheme, mut partitions) = match mbr::parse(disk)? {
        Some(m) if m.protective => match gpt::parse(disk)? {
            Some(g) => from_gpt(g, &mut warnings),
            None => {
                return Err(TableError::ProtectiveWithoutGpt(
                    "no GPT header at LBA 1 or at the end".into(),
                )
                .into())
            }
        },
        Some(m) => {
            if gpt::parse(disk).ok().flatten().is_some() {
                warnings
                    .push("a stale GPT is also present; following the MBR, as Linux does".into());
            }
            from_mbr(m)
        }
        None => match gpt::parse(disk)? {
            Some(g) => {
                warnings.push("the GPT has no protective MBR in front of it".into());
                from_gpt(g, &mut warnings)
            }
            None => match fs::probe(disk, 0, disk_size) {
                Some(info) => (Scheme::Bare, vec![bare(disk_size, info)]),
                None => return Err(ErrorKind::Unrecognised),
            },
        },
    };
    check_overlap(&partitions)?;
    for p in partitions.iter_mut().filter(|p| p.fs.is_none()) {
        if p.start < disk_size {
            p.fs = fs::probe(disk, p.start, p.size);
        }
    }
    Ok(PartitionTable {
        scheme,
        disk_size,
        partitions,
        warnings,
    })
}

fn bare(disk_size: u64, info: FsInfo) -> Partition {
    Partition {
        number: 0,
        start: 0,
        size: disk_size,
        start_sector: 0,
        type_name: "(no table)".into(),
        name: String::new(),
        fs: Some(info),
    }
}

fn from_mbr(m: mbr::Mbr) -> (Scheme, Vec<Partition>) {
    let mut parts: Vec<Partition> = m
        .partitions
        .iter()
        .map(|e| Partition {
            number: e.number,
            start: e.start_lba * mbr::SECTOR,
            size: e.sectors * mbr::SECTOR,
            start_sector: e.start_lba,
            type_name: format!("{:02x} {}", e.kind, mbr::type_name(e.kind)),
            name: String::new(),
            fs: None,
        })
        .collect();
    parts.sort_by_key(|p| p.number);
    (Scheme::Mbr { disk_id: m.disk_id }, parts)
}

fn from_gpt(g: gpt::Gpt, warnings: &mut Vec<String>) -> (Scheme, Vec<Partition>) {
    warnings.extend(g.warnings);
    let ss = g.sector_size;
    let parts = g
        .partitions
        .iter()
        .map(|e| Partition {
            number: e.number,
            start: e.first_lba * ss,
            size: (e.last_lba - e.first_lba + 1) * ss,
            start_sector: e.first_lba,
            type_name: gpt::type_name(&e.type_guid).to_string(),
            name: e.name.clone(),
            fs: None,
        })
        .collect();
    (
        Scheme::Gpt {
            sector_size: ss,
            disk_guid: g.disk_guid,
        },
        parts,
    )
}

fn check_overlap(parts: &[Partition]) -> Result<(), ErrorKind> {
    let mut by_start: Vec<&Partition> = parts.iter().collect();
    by_start.sort_by_key(|p| (p.start, p.number));
    for pair in by_start.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.end() > b.start {
            return Err(ErrorKind::Overlap {
                a: a.number,
                a_start: a.start,
                a_end: a.end(),
                b: b.number,
                b_start: b.start,
                b_end: b.end(),
            });
        }
    }
    Ok(())
}

impl PartitionTable {
    /// The partition to extract: the one asked for, else the only one that
    /// holds a Linux filesystem. It must lie inside the disk, and so must the
    /// filesystem it holds.
    pub fn select(&self, requested: Option<u32>) -> Result<&Partition, ErrorKind> {
        let part = match requested {
            // A bare filesystem is one whole-disk "partition", whatever it holds.
            None if self.scheme == Scheme::Bare => &self.partitions[0],
            Some(n) => self
                .partitions
                .iter()
                .find(|p| p.number == n)
                .ok_or_else(|| ErrorKind::NoSuchPartition {
                    number: n,
                    table: Box::new(self.clone()),
                })?,
            None => {
                let linux: Vec<&Partition> = self
                    .partitions
                    .iter()
                    .filter(|p| p.fs.as_ref().is_some_and(|f| f.kind.is_linux()))
                    .collect();
                match linux[..] {
                    [one] => one,
                    [] => {
                        return Err(ErrorKind::NoLinuxPartition {
                            table: Box::new(self.clone()),
                        })
                    }
                    _ => {
                        return Err(ErrorKind::Ambiguous {
                            candidates: linux.iter().map(|p| p.number).collect(),
                            table: Box::new(self.clone()),
                        })
                    }
                }
            }
        };
        if part.end() > self.disk_size {
            return Err(ErrorKind::PastEnd {
                number: part.number,
                end: part.end(),
                len: self.disk_size,
            });
        }
        if let Some(FsInfo {
            kind,
            size: Some(fs_len),
            ..
        }) = &part.fs
        {
            if *fs_len > part.size {
                return Err(ErrorKind::FsLargerThanPartition {
                    number: part.number,
                    fs: kind.to_string(),
                    fs_len: *fs_len,
                    part_len: part.size,
                });
            }
        }
        Ok(part)
    }

    /// The table as a human reads it, as `convert --list` prints it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = match &self.scheme {
            Scheme::Mbr { disk_id } => writeln!(
                out,
                "MBR partition table (disk id {disk_id:#010x}), disk size {}",
                human(self.disk_size)
            ),
            Scheme::Gpt {
                sector_size,
                disk_guid,
            } => writeln!(
                out,
                "GPT partition table ({sector_size}-byte sectors, disk {disk_guid}), disk size {}",
                human(self.disk_size)
            ),
            Scheme::Bare => writeln!(
                out,
                "no partition table: the whole disk is one filesystem, size {}",
                human(self.disk_size)
            ),
        };
        let _ = writeln!(
            out,
            "{:>3}  {:>12}  {:>14}  {:>10}  {:<22}  filesystem",
            "#", "start sector", "start byte", "size", "type"
        );
        for p in &self.partitions {
            let fs = match &p.fs {
                Some(f) if f.label.is_empty() => f.kind.to_string(),
                Some(f) => format!("{} \"{}\"", f.kind, f.label),
                None => "-".into(),
            };
            let past_end = if p.end() > self.disk_size {
                "  (runs past the end of the image)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "{:>3}  {:>12}  {:>14}  {:>10}  {:<22}  {fs}{past_end}",
                p.number,
                p.start_sector,
                p.start,
                human(p.size),
                p.type_name
            );
        }
        out
    }
}

/// `4.0 GiB`, `512 B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(number: u32, start: u64, size: u64) -> Partition {
        Partition {
            number,
            start,
            size,
            start_sector: start / 512,
            type_name: "83 Linux".into(),
            name: String::new(),
            fs: None,
        }
    }

    #[test]
    fn overlapping_partitions_are_found() {
        let err = check_overlap(&[part(1, 512, 1024), part(2, 1024, 1024)]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("partitions 1 (bytes 512..1536) and 2"),
            "{err}"
        );
        check_overlap(&[part(1, 512, 512), part(2, 1024, 1024)]).unwrap();
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(100), "100 B");
        assert_eq!(human(4 << 30), "4.0 GiB");
        assert_eq!(human(1536), "1.5 KiB");
    }
}

#[cfg(test)]
mod mutation_tests {
    use super::*;

    /// A deterministic stand-in for the fuzzers that runs in CI: flip bytes
    /// of valid tables and check the readers fail cleanly instead of panicking.
    #[test]
    fn mutated_tables_never_panic() {
        let mut disks = Vec::new();
        // GPT, both sector sizes.
        for ss in gpt::SECTOR_SIZES {
            let size = 256 << 10;
            let part = gpt::Entry {
                number: 1,
                type_guid: gpt::Guid::parse(gpt::TYPE_LINUX_FS).unwrap(),
                guid: gpt::Guid::from_seed(&[3; 32]),
                first_lba: gpt::first_usable_lba(ss),
                last_lba: size / ss - gpt::tail_sectors(ss) - 1,
                attributes: 0,
                name: "root".into(),
            };
            let mut d = std::io::Cursor::new(vec![0u8; size as usize]);
            gpt::write(&mut d, ss, gpt::Guid::from_seed(&[1; 32]), &[part]).unwrap();
            disks.push(d.into_inner());
        }
        // MBR with an extended partition and two logical ones.
        let entry = |kind, start, sectors| mbr::Entry {
            number: 0,
            bootable: false,
            kind,
            start_lba: start,
            sectors,
        };
        let mut d = vec![0u8; 640 << 10];
        d[..512].copy_from_slice(&mbr::build(
            9,
            &[entry(0x83, 63, 900), entry(0x05, 1000, 1000)],
        ));
        d[1000 * 512..][..512].copy_from_slice(&mbr::build(
            0,
            &[entry(0x83, 10, 100), entry(0x05, 200, 300)],
        ));
        d[1200 * 512..][..512].copy_from_slice(&mbr::build(0, &[entry(0x82, 10, 100)]));
        disks.push(d);

        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for disk in &disks {
            // The bytes that matter: the first sectors, the EBRs, the tail.
            let hot: Vec<usize> = (0..16384)
                .chain(1000 * 512..1001 * 512)
                .chain(disk.len() - 16896..disk.len())
                .filter(|&at| at < disk.len())
                .collect();
            for _ in 0..3000 {
                let mut d = disk.clone();
                for _ in 0..1 + next() % 4 {
                    let at = hot[(next() % hot.len() as u64) as usize];
                    d[at] = next() as u8;
                }
                let cut = if next() % 8 == 0 {
                    (next() % d.len() as u64) as usize
                } else {
                    d.len()
                };
                let bytes = &d[..cut];
                let _ = mbr::parse(&bytes);
                let _ = gpt::parse(&bytes);
                if let Ok(t) = read(&bytes) {
                    let _ = t.select(None);
                    let _ = t.render();
                }
            }
        }
    }
}
