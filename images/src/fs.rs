//! Recognising the filesystem at the start of a byte range, by its superblock.

use std::fmt;

use crate::disk::ReadAt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    Ext2,
    Ext3,
    Ext4,
    Xfs,
    Btrfs,
    Vfat,
    Swap,
    Ntfs,
    Lvm,
    Luks,
}

impl FsKind {
    /// Filesystems a Linux root or data disk holds (swap is not one).
    pub fn is_linux(self) -> bool {
        matches!(
            self,
            FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 | FsKind::Xfs | FsKind::Btrfs
        )
    }

    /// coLinux-style roots (`root=/dev/cobd0` without an initrd) need ext*.
    pub fn is_ext(self) -> bool {
        matches!(self, FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4)
    }

    pub fn name(self) -> &'static str {
        match self {
            FsKind::Ext2 => "ext2",
            FsKind::Ext3 => "ext3",
            FsKind::Ext4 => "ext4",
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
            FsKind::Vfat => "vfat",
            FsKind::Swap => "swap",
            FsKind::Ntfs => "ntfs",
            FsKind::Lvm => "LVM2 member",
            FsKind::Luks => "LUKS",
        }
    }
}

impl fmt::Display for FsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsInfo {
    pub kind: FsKind,
    /// The bytes the filesystem says it spans, where its superblock says so.
    pub size: Option<u64>,
    pub label: String,
    /// The filesystem's own UUID bytes, where it has one.
    pub uuid: Option<[u8; 16]>,
}

/// The superblock bytes we look at: enough for btrfs's at 64 KiB.
const PROBE_LEN: u64 = 0x10000 + 0x1000;

/// Identifies the filesystem starting at `offset`, looking at most `len` bytes in.
pub fn probe(disk: &dyn ReadAt, offset: u64, len: u64) -> Option<FsInfo> {
    let n = PROBE_LEN.min(len).min(disk.size().saturating_sub(offset));
    let mut buf = vec![0u8; n as usize];
    disk.read_at(&mut buf, offset).ok()?;
    probe_bytes(&buf)
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).trim().to_string()
}
fn uuid(b: &[u8]) -> [u8; 16] {
    b[..16].try_into().expect("16 bytes")
}

/// Identifies a filesystem from the first bytes of its device.
pub fn probe_bytes(b: &[u8]) -> Option<FsInfo> {
    let has = |at: usize, magic: &[u8]| b.get(at..at + magic.len()) == Some(magic);
    let info = |kind, size, label, uuid| {
        Some(FsInfo {
            kind,
            size,
            label,
            uuid,
        })
    };

    if has(1024 + 0x38, &[0x53, 0xef]) && b.len() >= 2048 {
        let sb = &b[1024..2048];
        let log_block = le32(sb, 0x18);
        if log_block > 6 {
            return None;
        }
        let block = 1024u64 << log_block;
        let (compat, incompat, ro_compat) = (le32(sb, 0x5c), le32(sb, 0x60), le32(sb, 0x64));
        let mut blocks = u64::from(le32(sb, 0x04));
        if incompat & 0x80 != 0 {
            blocks |= u64::from(le32(sb, 0x150)) << 32;
        }
        // extents, 64bit or flex_bg, or ro features only ext4 has, make ext4.
        let kind = if incompat & (0x40 | 0x80 | 0x200) != 0
            || ro_compat & (0x8 | 0x10 | 0x20 | 0x40 | 0x400) != 0
        {
            FsKind::Ext4
        } else if compat & 0x4 != 0 {
            FsKind::Ext3
        } else {
            FsKind::Ext2
        };
        return info(
            kind,
            blocks.checked_mul(block),
            text(&sb[0x78..0x88]),
            Some(uuid(&sb[0x68..])),
        );
    }
    if has(0, b"XFSB") && b.len() >= 512 {
        let size = u64::from(be32(b, 4)).checked_mul(be64(b, 8));
        return info(FsKind::Xfs, size, text(&b[108..120]), Some(uuid(&b[32..])));
    }
    if has(0x10040, b"_BHRfS_M") && b.len() >= 0x10000 + 0x22b {
        let sb = &b[0x10000..];
        return info(
            FsKind::Btrfs,
            Some(le64(sb, 0x70)),
            text(&sb[0x12b..0x22b]),
            Some(uuid(&sb[0x20..])),
        );
    }
    if has(0, b"LUKS\xba\xbe") {
        return info(FsKind::Luks, None, String::new(), None);
    }
    if has(512, b"LABELONE") && has(512 + 24, b"LVM2 001") {
        return info(FsKind::Lvm, None, String::new(), None);
    }
    if has(3, b"NTFS    ") && b.len() >= 512 {
        let size = le64(b, 0x28).checked_mul(u64::from(le16(b, 11)));
        return info(FsKind::Ntfs, size, String::new(), None);
    }
    for page in [4096usize, 8192, 16384, 65536] {
        if has(page - 10, b"SWAPSPACE2") || has(page - 10, b"SWAP-SPACE") {
            let size = u64::from(le32(b, 1024 + 4))
                .checked_add(1)
                .map(|p| p * page as u64);
            return info(FsKind::Swap, size, text(&b[1024 + 28..1024 + 44]), None);
        }
    }
    if b.len() >= 512 && has(510, &[0x55, 0xaa]) && (has(54, b"FAT") || has(82, b"FAT32   ")) {
        let bytes_per_sector = u64::from(le16(b, 11));
        if !(512..=4096).contains(&bytes_per_sector) || !bytes_per_sector.is_power_of_two() {
            return None;
        }
        let sectors = match le16(b, 19) {
            0 => u64::from(le32(b, 32)),
            n => u64::from(n),
        };
        let label_at = if has(82, b"FAT32   ") { 71 } else { 43 };
        return info(
            FsKind::Vfat,
            Some(sectors * bytes_per_sector),
            text(&b[label_at..label_at + 11]),
            None,
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_generations_are_told_apart() {
        let mut b = vec![0u8; 4096];
        b[1024 + 0x38..][..2].copy_from_slice(&[0x53, 0xef]);
        b[1024 + 0x04..][..4].copy_from_slice(&1000u32.to_le_bytes());
        b[1024 + 0x18..][..4].copy_from_slice(&2u32.to_le_bytes());
        let fs = probe_bytes(&b).unwrap();
        assert_eq!((fs.kind, fs.size), (FsKind::Ext2, Some(4096 * 1000)));
        b[1024 + 0x5c] = 0x4;
        assert_eq!(probe_bytes(&b).unwrap().kind, FsKind::Ext3);
        b[1024 + 0x60] = 0x40;
        assert_eq!(probe_bytes(&b).unwrap().kind, FsKind::Ext4);
    }

    #[test]
    fn swap_and_nothing() {
        let mut b = vec![0u8; 8192];
        assert_eq!(probe_bytes(&b), None);
        b[4086..4096].copy_from_slice(b"SWAPSPACE2");
        b[1028..1032].copy_from_slice(&9u32.to_le_bytes());
        let fs = probe_bytes(&b).unwrap();
        assert_eq!((fs.kind, fs.size), (FsKind::Swap, Some(10 * 4096)));
    }

    #[test]
    fn short_input_never_panics() {
        for n in 0..2100 {
            let mut b = vec![0u8; n];
            if n > 1024 + 0x3a {
                b[1024 + 0x38] = 0x53;
                b[1024 + 0x39] = 0xef;
            }
            let _ = probe_bytes(&b);
        }
    }
}
