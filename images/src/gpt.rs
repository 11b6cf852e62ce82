//! The GUID partition table, with 512- or 4096-byte logical sectors, its
//! CRCs, and the backup copy at the end of the disk.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::disk::ReadAt;
use crate::error::TableError;

const SIGNATURE: &[u8; 8] = b"EFI PART";
const HEADER_LEN: u32 = 92;
const ENTRY_LEN: u32 = 128;
const ENTRY_COUNT: u32 = 128;
/// The largest entry array we read; real ones are 16 KiB.
const MAX_ENTRIES_BYTES: u64 = 4 << 20;
pub const SECTOR_SIZES: [u64; 2] = [512, 4096];

pub const TYPE_LINUX_FS: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
pub const TYPE_LINUX_SWAP: &str = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F";

/// A GUID, stored as on disk (the first three fields little-endian).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }

    /// Parses the canonical text form, `0FC63DAF-8483-4772-8E79-3D69D8477DE4`.
    pub fn parse(text: &str) -> Option<Guid> {
        let hex: Vec<u8> = text.bytes().filter(|&b| b != b'-').collect();
        if hex.len() != 32 || text.len() != 36 {
            return None;
        }
        let mut plain = [0u8; 16];
        for (i, pair) in hex.chunks(2).enumerate() {
            plain[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
        }
        let mut g = plain;
        g[0..4].reverse();
        g[4..6].reverse();
        g[6..8].reverse();
        Some(Guid(g))
    }

    /// The same GUID for the `uuid` crate, which keeps the canonical byte
    /// order where we keep the on-disk one.
    fn uuid(self) -> uuid::Uuid {
        uuid::Uuid::from_bytes_le(self.0)
    }

    /// A version-4-shaped GUID made from the first bytes of `seed`.
    pub fn from_seed(seed: &[u8; 32]) -> Guid {
        let mut g = [0u8; 16];
        g.copy_from_slice(&seed[..16]);
        g[7] = (g[7] & 0x0f) | 0x40;
        g[8] = (g[8] & 0x3f) | 0x80;
        Guid(g)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.0;
        write!(
            f,
            "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-",
            u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
            u16::from_le_bytes([g[4], g[5]]),
            u16::from_le_bytes([g[6], g[7]]),
            g[8],
            g[9]
        )?;
        g[10..].iter().try_for_each(|b| write!(f, "{b:02X}"))
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based index in the entry array, as Linux numbers it.
    pub number: u32,
    pub type_guid: Guid,
    pub guid: Guid,
    pub first_lba: u64,
    /// Inclusive, as GPT stores it.
    pub last_lba: u64,
    pub attributes: u64,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpt {
    pub sector_size: u64,
    pub disk_guid: Guid,
    pub partitions: Vec<Entry>,
    /// Problems we worked around, such as a corrupt primary header.
    pub warnings: Vec<String>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn has_signature(disk: &dyn ReadAt, offset: u64) -> bool {
    let mut sig = [0u8; 8];
    disk.read_at(&mut sig, offset).is_ok() && &sig == SIGNATURE
}

/// Looks for a GPT. `Ok(None)` means there is no GPT signature at either the
/// primary or the backup location for any sector size.
pub fn parse(disk: &dyn ReadAt) -> Result<Option<Gpt>, TableError> {
    let size = disk.size();
    let sector_size = SECTOR_SIZES
        .into_iter()
        .find(|&ss| has_signature(disk, ss))
        .or_else(|| {
            SECTOR_SIZES
                .into_iter()
                .find(|&ss| size >= 2 * ss && has_signature(disk, (size / ss - 1) * ss))
        });
    let Some(ss) = sector_size else {
        return Ok(None);
    };
    let last_lba = size / ss - 1;
    let primary = load(disk, ss, 1);
    let (mut gpt, backup_lba) = match primary {
        Ok(loaded) => loaded,
        Err(primary_err) => match load(disk, ss, last_lba) {
            Ok((mut gpt, _)) => {
                gpt.warnings.push(format!(
                    "the primary GPT is corrupt ({}); using the backup GPT at LBA {last_lba}",
                    reason(&primary_err)
                ));
                return Ok(Some(gpt));
            }
            // A truncated image has lost its backup too: say what is wrong.
            Err(_) if matches!(primary_err, TableError::Truncated { .. }) => {
                return Err(primary_err)
            }
            Err(backup_err) => {
                return Err(TableError::Corrupt(format!(
                    "its GPT is corrupt: primary: {}; backup: {}",
                    reason(&primary_err),
                    reason(&backup_err)
                )))
            }
        },
    };
    // The primary is good. A bad backup is worth a warning, not a failure.
    let backup_at = if backup_lba <= last_lba {
        backup_lba
    } else {
        last_lba
    };
    if let Err(e) = load(disk, ss, backup_at) {
        gpt.warnings.push(format!(
            "the backup GPT at LBA {backup_at} is invalid ({}); the primary is good",
            reason(&e)
        ));
    }
    Ok(Some(gpt))
}

fn reason(e: &TableError) -> String {
    match e {
        TableError::Corrupt(m) => m.clone(),
        other => other.to_string(),
    }
}

/// Reads and checks the header at `lba` and its entry array. Returns the
/// table and the LBA the header names for its other copy.
fn load(disk: &dyn ReadAt, ss: u64, lba: u64) -> Result<(Gpt, u64), TableError> {
    let corrupt = |m: String| TableError::Corrupt(m);
    let offset = lba * ss;
    let mut header = vec![0u8; ss as usize];
    disk.read_at(&mut header, offset)
        .map_err(|_| TableError::Truncated {
            what: format!("the GPT header at LBA {lba}"),
            offset,
            len: disk.size(),
        })?;
    if &header[..8] != SIGNATURE {
        return Err(corrupt(format!("no GPT signature at LBA {lba}")));
    }
    let header_len = u32_at(&header, 12);
    if header_len < HEADER_LEN || u64::from(header_len) > ss {
        return Err(corrupt(format!("header size {header_len} is impossible")));
    }
    let stored_crc = u32_at(&header, 16);
    let mut crc_input = header[..header_len as usize].to_vec();
    crc_input[16..20].fill(0);
    if crc32fast::hash(&crc_input) != stored_crc {
        return Err(corrupt(format!("header CRC mismatch at LBA {lba}")));
    }
    let my_lba = u64_at(&header, 24);
    if my_lba != lba {
        return Err(corrupt(format!(
            "the header at LBA {lba} says it is at LBA {my_lba}"
        )));
    }
    let other_lba = u64_at(&header, 32);
    let mut disk_guid = Guid::default();
    disk_guid.0.copy_from_slice(&header[56..72]);
    let entries_lba = u64_at(&header, 72);
    let count = u32_at(&header, 80);
    let entry_len = u32_at(&header, 84);
    let entries_crc = u32_at(&header, 88);
    if entry_len < ENTRY_LEN || !entry_len.is_multiple_of(8) {
        return Err(corrupt(format!(
            "partition entry size {entry_len} is impossible"
        )));
    }
    let array_len = u64::from(count) * u64::from(entry_len);
    if array_len > MAX_ENTRIES_BYTES {
        return Err(corrupt(format!(
            "{count} partition entries of {entry_len} bytes is implausibly many"
        )));
    }
    let array_offset = entries_lba.checked_mul(ss).ok_or_else(|| {
        corrupt(format!(
            "partition entries at LBA {entries_lba} are past any disk"
        ))
    })?;
    let mut array = vec![0u8; array_len as usize];
    disk.read_at(&mut array, array_offset)
        .map_err(|_| TableError::Truncated {
            what: format!("the GPT partition entries at LBA {entries_lba}"),
            offset: array_offset,
            len: disk.size(),
        })?;
    if crc32fast::hash(&array) != entries_crc {
        return Err(corrupt(format!(
            "partition entries CRC mismatch at LBA {entries_lba}"
        )));
    }
    let mut partitions = Vec::new();
    for (i, raw) in array.chunks_exact(entry_len as usize).enumerate() {
        let mut type_guid = Guid::default();
        type_guid.0.copy_from_slice(&raw[0..16]);
        if type_guid.is_zero() {
            continue;
        }
        let mut guid = Guid::default();
        guid.0.copy_from_slice(&raw[16..32]);
        let number = i as u32 + 1;
        let (first_lba, last_lba) = (u64_at(raw, 32), u64_at(raw, 40));
        if first_lba > last_lba
            || last_lba
                .checked_add(1)
                .and_then(|l| l.checked_mul(ss))
                .is_none()
        {
            return Err(corrupt(format!(
                "partition {number} has first LBA {first_lba} after its last LBA {last_lba}"
            )));
        }
        let name_units: Vec<u16> = raw[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        partitions.push(Entry {
            number,
            type_guid,
            guid,
            first_lba,
            last_lba,
            attributes: u64_at(raw, 48),
            name: String::from_utf16_lossy(&name_units),
        });
    }
    let gpt = Gpt {
        sector_size: ss,
        disk_guid,
        partitions,
        warnings: Vec::new(),
    };
    Ok((gpt, other_lba))
}

/// The first LBA a partition may use with the standard 128-entry array.
pub fn first_usable_lba(ss: u64) -> u64 {
    2 + entry_array_sectors(ss)
}

fn entry_array_sectors(ss: u64) -> u64 {
    u64::from(ENTRY_COUNT * ENTRY_LEN).div_ceil(ss)
}

/// Sectors that the backup entries and header take at the end of the disk.
pub fn tail_sectors(ss: u64) -> u64 {
    entry_array_sectors(ss) + 1
}

/// Writes a GPT onto `device`, which already has the disk's full size: the
/// protective MBR, then both headers and entry arrays (128 entries, as every
/// tool writes), with the `gpt` crate. Partitions keep their numbers.
pub fn write<D: Read + Write + Seek + fmt::Debug>(
    mut device: D,
    ss: u64,
    disk_guid: Guid,
    partitions: &[Entry],
) -> io::Result<()> {
    let block_size = match ss {
        4096 => ::gpt::disk::LogicalBlockSize::Lb4096,
        _ => ::gpt::disk::LogicalBlockSize::Lb512,
    };
    let size = device.seek(SeekFrom::End(0))?;
    let covered = u32::try_from(size / ss - 1).unwrap_or(u32::MAX);
    ::gpt::mbr::ProtectiveMBR::with_lb_size(covered)
        .overwrite_lba0(&mut device)
        .map_err(io::Error::other)?;
    let mut disk = ::gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(block_size)
        .create_from_device(device, Some(disk_guid.uuid()))
        .map_err(io::Error::other)?;
    let entries = partitions.iter().map(|p| {
        let entry = ::gpt::partition::Partition {
            part_type_guid: ::gpt::partition_types::Type {
                guid: p.type_guid.uuid(),
                os: ::gpt::partition_types::OperatingSystem::None,
            },
            part_guid: p.guid.uuid(),
            first_lba: p.first_lba,
            last_lba: p.last_lba,
            flags: p.attributes,
            name: p.name.clone(),
        };
        (p.number, entry)
    });
    disk.update_partitions(entries.collect())
        .map_err(io::Error::other)?;
    disk.write().map_err(io::Error::other)?;
    Ok(())
}

/// A short name for a GPT partition type.
pub fn type_name(guid: &Guid) -> &'static str {
    match guid.to_string().as_str() {
        TYPE_LINUX_FS => "Linux filesystem",
        TYPE_LINUX_SWAP => "Linux swap",
        "44479540-F297-41B2-9AF7-D131D5F0458A" => "Linux root (x86)",
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" => "Linux root (x86-64)",
        "933AC7E1-2EB4-4F13-B844-0E14E2AEF915" => "Linux home",
        "E6D6D379-F507-44C2-A23C-238F2A3DF928" => "Linux LVM",
        "A19D880F-05FC-4D3B-A006-743F0F84911E" => "Linux RAID",
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" => "EFI System",
        "21686148-6449-6E6F-744E-656564454649" => "BIOS boot",
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" => "Microsoft basic data",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linux(number: u32, first: u64, last: u64) -> Entry {
        Entry {
            number,
            type_guid: Guid::parse(TYPE_LINUX_FS).unwrap(),
            guid: Guid::from_seed(&[number as u8; 32]),
            first_lba: first,
            last_lba: last,
            attributes: 0,
            name: "root".into(),
        }
    }

    fn disk_with(ss: u64, size: u64, parts: &[Entry]) -> Vec<u8> {
        let mut disk = io::Cursor::new(vec![0u8; size as usize]);
        write(&mut disk, ss, Guid::from_seed(&[7; 32]), parts).unwrap();
        disk.into_inner()
    }

    #[test]
    fn guid_text_round_trips() {
        let g = Guid::parse(TYPE_LINUX_FS).unwrap();
        assert_eq!(g.0[..4], [0xaf, 0x3d, 0xc6, 0x0f]);
        assert_eq!(g.to_string(), TYPE_LINUX_FS);
        assert_eq!(Guid::parse("nonsense"), None);
    }

    #[test]
    fn write_then_parse_for_both_sector_sizes() {
        for ss in SECTOR_SIZES {
            let size = 4 << 20;
            let part = linux(1, first_usable_lba(ss), size / ss - tail_sectors(ss) - 1);
            let d = disk_with(ss, size, std::slice::from_ref(&part));
            let gpt = parse(&d).unwrap().unwrap();
            assert_eq!(gpt.sector_size, ss);
            assert_eq!(gpt.partitions, vec![part]);
            assert!(gpt.warnings.is_empty(), "{:?}", gpt.warnings);
        }
    }

    #[test]
    fn a_corrupt_primary_falls_back_to_the_backup() {
        let size = 1 << 20;
        let mut d = disk_with(512, size, &[linux(1, 34, 1000)]);
        d[512 + 100] ^= 0xff; // inside the header's reserved tail: CRC breaks
        d[512 + 20] ^= 0xff;
        let gpt = parse(&d).unwrap().unwrap();
        assert_eq!(gpt.partitions.len(), 1);
        assert!(
            gpt.warnings[0].contains("using the backup GPT"),
            "{:?}",
            gpt.warnings
        );
    }

    #[test]
    fn both_copies_corrupt_is_an_error() {
        let size = 1 << 20;
        let mut d = disk_with(512, size, &[linux(1, 34, 1000)]);
        d[2 * 512] ^= 0xff; // primary entries
        let last = size as usize - 512;
        d[last + 20] ^= 0xff; // backup header
        let err = parse(&d).unwrap_err().to_string();
        assert!(
            err.contains("primary: partition entries CRC mismatch"),
            "{err}"
        );
        assert!(err.contains("backup: header CRC mismatch"), "{err}");
    }

    #[test]
    fn no_signature_is_no_gpt() {
        assert_eq!(parse(&vec![0u8; 8192]).unwrap(), None);
    }
}
