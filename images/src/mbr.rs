//! The MBR partition table: four primary entries in sector 0, and logical
//! partitions in a chain of extended boot records (EBRs).

use std::collections::HashSet;

use crate::disk::ReadAt;
use crate::error::TableError;

/// MBR tables always count in 512-byte sectors.
pub const SECTOR: u64 = 512;
const TABLE_OFFSET: usize = 446;
const ENTRY_LEN: usize = 16;
/// Far more logical partitions than any tool makes; past this a chain is looping.
const MAX_LOGICAL: usize = 256;

pub const TYPE_LINUX: u8 = 0x83;
pub const TYPE_SWAP: u8 = 0x82;
pub const TYPE_PROTECTIVE: u8 = 0xee;

/// One used entry, primary (1–4) or logical (5 and up), in absolute sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub number: u32,
    pub bootable: bool,
    pub kind: u8,
    pub start_lba: u64,
    pub sectors: u64,
}

impl Entry {
    pub fn end_lba(&self) -> u64 {
        self.start_lba + self.sectors
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mbr {
    pub disk_id: u32,
    /// Primary and logical partitions, without the extended container.
    pub partitions: Vec<Entry>,
    /// The extended partition that holds the logical ones, if any.
    pub extended: Option<Entry>,
    /// True when an entry of type 0xee says a GPT follows.
    pub protective: bool,
}

pub fn is_extended(kind: u8) -> bool {
    matches!(kind, 0x05 | 0x0f | 0x85)
}

/// A raw 16-byte entry, with its start relative to whatever the table says.
struct RawEntry {
    status: u8,
    kind: u8,
    start: u64,
    sectors: u64,
}

fn raw_entries(sector: &[u8; 512]) -> [RawEntry; 4] {
    std::array::from_fn(|i| {
        let e = &sector[TABLE_OFFSET + i * ENTRY_LEN..][..ENTRY_LEN];
        RawEntry {
            status: e[0],
            kind: e[4],
            start: u32::from_le_bytes([e[8], e[9], e[10], e[11]]).into(),
            sectors: u32::from_le_bytes([e[12], e[13], e[14], e[15]]).into(),
        }
    })
}

fn has_signature(sector: &[u8; 512]) -> bool {
    sector[510..] == [0x55, 0xaa]
}

fn read_sector(
    disk: &dyn ReadAt,
    lba: u64,
    what: impl FnOnce() -> String,
) -> Result<[u8; 512], TableError> {
    let mut sector = [0u8; 512];
    let offset = lba * SECTOR;
    disk.read_at(&mut sector, offset)
        .map_err(|_| TableError::Truncated {
            what: what(),
            offset,
            len: disk.size(),
        })?;
    Ok(sector)
}

/// Reads the MBR. `Ok(None)` means sector 0 is not a partition table at all
/// (no 0x55aa signature, or status bytes that no table has, as in a FAT boot
/// sector); errors mean it is one, but a broken one.
pub fn parse(disk: &dyn ReadAt) -> Result<Option<Mbr>, TableError> {
    let sector = read_sector(disk, 0, || "the MBR".into())?;
    if !has_signature(&sector) {
        return Ok(None);
    }
    let raw = raw_entries(&sector);
    if raw.iter().any(|e| e.status != 0 && e.status != 0x80) {
        return Ok(None);
    }
    if raw
        .iter()
        .any(|e| e.kind != 0 && e.sectors != 0 && e.start == 0)
    {
        return Ok(None);
    }
    let disk_id = u32::from_le_bytes([sector[440], sector[441], sector[442], sector[443]]);
    let mut mbr = Mbr {
        disk_id,
        partitions: Vec::new(),
        extended: None,
        protective: false,
    };
    for (i, e) in raw.iter().enumerate() {
        if e.kind == 0 || e.sectors == 0 {
            continue;
        }
        let entry = Entry {
            number: i as u32 + 1,
            bootable: e.status == 0x80,
            kind: e.kind,
            start_lba: e.start,
            sectors: e.sectors,
        };
        if e.kind == TYPE_PROTECTIVE {
            mbr.protective = true;
        } else if is_extended(e.kind) {
            if mbr.extended.is_some() {
                return Err(TableError::Corrupt(
                    "its MBR has more than one extended partition".into(),
                ));
            }
            mbr.extended = Some(entry);
        } else {
            mbr.partitions.push(entry);
        }
    }
    if let Some(extended) = mbr.extended {
        read_logical(disk, &extended, &mut mbr.partitions)?;
    }
    Ok(Some(mbr))
}

/// Walks the EBR chain. Each EBR's first entry is a logical partition
/// (relative to that EBR); its second links to the next EBR (relative to the
/// start of the extended partition).
fn read_logical(
    disk: &dyn ReadAt,
    extended: &Entry,
    out: &mut Vec<Entry>,
) -> Result<(), TableError> {
    let mut ebr_lba = extended.start_lba;
    let mut seen = HashSet::new();
    let mut number = 5;
    loop {
        if !seen.insert(ebr_lba) || seen.len() > MAX_LOGICAL {
            return Err(TableError::Corrupt(
                "the chain of logical partitions in its extended partition loops".into(),
            ));
        }
        let sector = read_sector(disk, ebr_lba, || {
            format!("the extended boot record for partition {number}")
        })?;
        if !has_signature(&sector) {
            return Err(TableError::Corrupt(format!(
                "the extended boot record at sector {ebr_lba} has no 0x55aa signature"
            )));
        }
        let [logical, next, ..] = raw_entries(&sector);
        if logical.kind != 0 && logical.sectors != 0 {
            let entry = Entry {
                number,
                bootable: logical.status == 0x80,
                kind: logical.kind,
                start_lba: ebr_lba + logical.start,
                sectors: logical.sectors,
            };
            if entry.start_lba <= ebr_lba || entry.end_lba() > extended.end_lba() {
                return Err(TableError::Corrupt(format!(
                    "logical partition {number} (sectors {}..{}) lies outside its extended partition (sectors {}..{})",
                    entry.start_lba,
                    entry.end_lba(),
                    extended.start_lba,
                    extended.end_lba()
                )));
            }
            out.push(entry);
            number += 1;
        }
        if next.kind == 0 || next.sectors == 0 {
            return Ok(());
        }
        if !is_extended(next.kind) {
            return Err(TableError::Corrupt(format!(
                "the extended boot record at sector {ebr_lba} links to an entry of type {:#04x}, not another extended boot record",
                next.kind
            )));
        }
        ebr_lba = extended.start_lba + next.start;
    }
}

/// The CHS address of an LBA in the usual 255-head, 63-sector geometry, or
/// the "use LBA" maximum past cylinder 1023.
fn chs(lba: u64) -> [u8; 3] {
    let (heads, sectors) = (255, 63);
    let cylinder = lba / (heads * sectors);
    if cylinder > 1023 {
        return [254, 0xff, 0xff];
    }
    let head = (lba / sectors) % heads;
    let sector = lba % sectors + 1;
    [
        head as u8,
        (sector as u8 & 0x3f) | ((cylinder >> 2) as u8 & 0xc0),
        cylinder as u8,
    ]
}

/// Builds an MBR sector with up to four primary entries (numbers 1–4).
pub fn build(disk_id: u32, entries: &[Entry]) -> [u8; 512] {
    assert!(entries.len() <= 4, "an MBR has four primary entries");
    let mut sector = [0u8; 512];
    sector[440..444].copy_from_slice(&disk_id.to_le_bytes());
    for (i, entry) in entries.iter().enumerate() {
        let e = &mut sector[TABLE_OFFSET + i * ENTRY_LEN..][..ENTRY_LEN];
        let start = u32::try_from(entry.start_lba).unwrap_or(u32::MAX);
        let sectors = u32::try_from(entry.sectors).unwrap_or(u32::MAX);
        e[0] = if entry.bootable { 0x80 } else { 0 };
        e[1..4].copy_from_slice(&chs(entry.start_lba));
        e[4] = entry.kind;
        e[5..8].copy_from_slice(&chs(entry.end_lba().saturating_sub(1)));
        e[8..12].copy_from_slice(&start.to_le_bytes());
        e[12..16].copy_from_slice(&sectors.to_le_bytes());
    }
    sector[510] = 0x55;
    sector[511] = 0xaa;
    sector
}

/// A short name for an MBR partition type.
pub fn type_name(kind: u8) -> &'static str {
    match kind {
        0x01 | 0x04 | 0x06 | 0x0e => "FAT16",
        0x07 => "NTFS/exFAT",
        0x0b | 0x0c => "FAT32",
        0x82 => "Linux swap",
        0x83 => "Linux",
        0x8e => "Linux LVM",
        0xa5 => "FreeBSD",
        0xee => "GPT protective",
        0xef => "EFI System",
        0xfd => "Linux RAID",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(sectors: u64) -> Vec<u8> {
        vec![0; (sectors * SECTOR) as usize]
    }

    fn entry(number: u32, kind: u8, start: u64, sectors: u64) -> Entry {
        Entry {
            number,
            bootable: false,
            kind,
            start_lba: start,
            sectors,
        }
    }

    #[test]
    fn build_then_parse_round_trips() {
        let mut d = disk(4096);
        let e = Entry {
            bootable: true,
            ..entry(1, TYPE_LINUX, 63, 2000)
        };
        d[..512].copy_from_slice(&build(0xdead_beef, &[e]));
        let mbr = parse(&d).unwrap().unwrap();
        assert_eq!(mbr.disk_id, 0xdead_beef);
        assert_eq!(mbr.partitions, vec![e]);
        assert!(!mbr.protective);
    }

    #[test]
    fn logical_partitions_follow_the_ebr_chain() {
        let mut d = disk(8192);
        let ext = entry(2, 0x05, 2048, 6144);
        d[..512].copy_from_slice(&build(1, &[entry(1, TYPE_LINUX, 63, 1985), ext]));
        // EBR 1 at 2048: logical at +63, link to the next EBR at ext+4096.
        d[2048 * 512..][..512].copy_from_slice(&build(
            0,
            &[entry(0, TYPE_LINUX, 63, 1000), entry(0, 0x05, 4096, 2048)],
        ));
        d[6144 * 512..][..512].copy_from_slice(&build(0, &[entry(0, TYPE_SWAP, 2, 1000)]));
        let mbr = parse(&d).unwrap().unwrap();
        let got: Vec<_> = mbr
            .partitions
            .iter()
            .map(|e| (e.number, e.start_lba, e.kind))
            .collect();
        assert_eq!(got, vec![(1, 63, 0x83), (5, 2111, 0x83), (6, 6146, 0x82)]);
        assert_eq!(mbr.extended, Some(ext));
    }

    #[test]
    fn a_looping_ebr_chain_is_an_error() {
        let mut d = disk(8192);
        d[..512].copy_from_slice(&build(1, &[entry(1, 0x05, 2048, 6144)]));
        d[2048 * 512..][..512].copy_from_slice(&build(
            0,
            &[entry(0, TYPE_LINUX, 63, 100), entry(0, 0x05, 0, 2048)],
        ));
        let err = parse(&d).unwrap_err();
        assert!(err.to_string().contains("loops"), "{err}");
    }

    #[test]
    fn no_signature_or_bad_status_is_not_an_mbr() {
        let d = disk(8);
        assert_eq!(parse(&d).unwrap(), None);
        let mut d = disk(8);
        d[..512].copy_from_slice(&build(0, &[entry(1, TYPE_LINUX, 1, 4)]));
        d[446] = 0x12;
        assert_eq!(parse(&d).unwrap(), None);
    }

    #[test]
    fn a_short_file_is_truncated() {
        let d = vec![0u8; 100];
        assert!(matches!(parse(&d), Err(TableError::Truncated { .. })));
    }

    #[test]
    fn chs_saturates_past_cylinder_1023() {
        assert_eq!(chs(0), [0, 1, 0]);
        assert_eq!(chs(63), [1, 1, 0]);
        assert_eq!(chs(u32::MAX as u64), [254, 0xff, 0xff]);
    }
}
