//! The seed disk (DESIGN.md §12): a small FAT volume that carries what
//! differs per guest and every secret (hostname, the cluster's munge key,
//! SSH host keys kept per node, root's SSH key), so images carry none.
//!
//! FAT because every host reads and writes it without tools, and because
//! Linux mounts it from the earliest point of boot. The volume is written
//! in Rust with `fatfs`; it is the same bytes for the same files (times
//! are FAT's epoch, 1980-01-01, and the volume id comes from the name),
//! so a rebuilt seed does not look changed to the guest.

use std::collections::BTreeMap;
use std::io::{Cursor, Write};
use std::path::Path;

/// The label the guest looks for (`/dev/disk/by-label/COSEED`).
pub const LABEL: &str = "COSEED";

/// FAT has no smaller sensible volume; the seed is a few KiB of keys.
const MIN_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("seed disk: {name:?} is not a valid file name on a FAT volume ({why})")]
    BadName { name: String, why: &'static str },
    #[error("seed disk: {name:?} is given twice")]
    Duplicate { name: String },
    #[error("seed disk {dest}: {source}")]
    Write {
        dest: String,
        #[source]
        source: std::io::Error,
    },
}

/// The files of a seed disk, by name. The volume is flat: fatfs 0.3
/// writes long-name entries before a subdirectory's `.` and `..`, which
/// fsck.fat rejects, and a handful of files needs no directories.
#[derive(Debug, Clone)]
pub struct SeedDisk {
    name: String,
    files: BTreeMap<String, Vec<u8>>,
}

impl SeedDisk {
    /// `name` is the guest's name: it makes the volume id, so two guests'
    /// seeds tell themselves apart in `blkid`.
    pub fn new(name: &str) -> SeedDisk {
        SeedDisk {
            name: name.to_owned(),
            files: BTreeMap::new(),
        }
    }

    /// Adds a file at the top of the volume.
    pub fn insert(&mut self, name: &str, contents: impl Into<Vec<u8>>) -> Result<(), Error> {
        check_name(name)?;
        if self.files.contains_key(name) {
            return Err(Error::Duplicate {
                name: name.to_owned(),
            });
        }
        self.files.insert(name.to_owned(), contents.into());
        Ok(())
    }

    /// The volume's bytes.
    pub fn to_bytes(&self) -> std::io::Result<Vec<u8>> {
        let mut disk = Cursor::new(vec![0u8; self.size() as usize]);
        let mut label = [b' '; 11];
        label[..LABEL.len()].copy_from_slice(LABEL.as_bytes());
        fatfs::format_volume(
            &mut disk,
            fatfs::FormatVolumeOptions::new()
                .volume_id(self.volume_id())
                .volume_label(label),
        )?;
        disk.set_position(0);
        let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new())?;
        {
            let root = fs.root_dir();
            for (name, contents) in &self.files {
                let mut file = root.create_file(name)?;
                file.truncate()?;
                file.write_all(contents)?;
                file.flush()?;
            }
        }
        // Unmounting clears the dirty flag, so fsck sees a clean volume.
        fs.unmount()?;
        Ok(disk.into_inner())
    }

    /// Writes the volume to `dest` through a temporary file and a rename,
    /// so a guest never sees half a seed.
    pub fn write_to(&self, dest: &Path) -> Result<(), Error> {
        let fail = |source| Error::Write {
            dest: dest.display().to_string(),
            source,
        };
        let bytes = self.to_bytes().map_err(fail)?;
        let tmp = dest.with_file_name(format!(
            ".{}.tmp-{}",
            dest.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let written = std::fs::File::create(&tmp)
            .and_then(|mut file| {
                file.write_all(&bytes)?;
                file.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, dest));
        if let Err(source) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(fail(source));
        }
        Ok(())
    }

    /// Room for every file in whole 4 KiB clusters and as much again, in
    /// whole 64 KiB; at least 1 MiB.
    fn size(&self) -> u64 {
        let round = |n: u64, to: u64| n.div_ceil(to) * to;
        let content: u64 = self
            .files
            .values()
            .map(|c| round(c.len() as u64 + 1, 4096))
            .sum();
        round((2 * content).max(MIN_BYTES), 64 * 1024)
    }

    /// FNV-1a of the name: stable for a guest, different between guests.
    fn volume_id(&self) -> u32 {
        self.name.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
            (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
        })
    }
}

/// A name the guest's vfat driver and every host read back unchanged:
/// no `/` (the volume is flat), not `.` or `..`, none of FAT's reserved
/// characters, no trailing dot or space (Windows drops them).
fn check_name(name: &str) -> Result<(), Error> {
    let why = if name.is_empty() || name == "." || name == ".." {
        "empty, . or .."
    } else if name.len() > 255 {
        "longer than 255 bytes"
    } else if name.contains('/') {
        "the seed disk has no directories"
    } else if name
        .chars()
        .any(|c| c.is_control() || "\\:*?\"<>|".contains(c))
    {
        "a control character or one of \\ : * ? \" < > |"
    } else if name.ends_with('.') || name.ends_with(' ') {
        "ends in a dot or a space"
    } else {
        return Ok(());
    };
    Err(Error::BadName {
        name: name.to_owned(),
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample() -> SeedDisk {
        let mut seed = SeedDisk::new("node1");
        seed.insert("hostname", "cn-desk042\n").unwrap();
        seed.insert("munge.key", vec![7u8; 1024]).unwrap();
        seed.insert("ssh_host_ed25519_key", "PRIVATE\n").unwrap();
        seed.insert("ssh_host_ed25519_key.pub", "ssh-ed25519 AAAA\n")
            .unwrap();
        seed
    }

    fn read(bytes: Vec<u8>, name: &str) -> Vec<u8> {
        let fs = fatfs::FileSystem::new(Cursor::new(bytes), fatfs::FsOptions::new()).unwrap();
        let mut out = Vec::new();
        fs.root_dir()
            .open_file(name)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn files_read_back_with_their_label_and_the_same_bytes_each_time() {
        let bytes = sample().to_bytes().unwrap();
        assert_eq!(bytes, sample().to_bytes().unwrap());
        assert_eq!(bytes.len() as u64, MIN_BYTES);
        assert_eq!(read(bytes.clone(), "munge.key"), vec![7u8; 1024]);
        assert_eq!(
            read(bytes.clone(), "ssh_host_ed25519_key.pub"),
            b"ssh-ed25519 AAAA\n"
        );
        let fs = fatfs::FileSystem::new(Cursor::new(bytes), fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.volume_label(), LABEL);
        assert_ne!(
            fs.volume_id(),
            SeedDisk::new("node2").volume_id(),
            "two guests' seeds differ in blkid"
        );
    }

    #[test]
    fn a_large_file_grows_the_volume() {
        let mut seed = SeedDisk::new("big");
        seed.insert("blob", vec![1u8; 3 << 20]).unwrap();
        let bytes = seed.to_bytes().unwrap();
        assert!(bytes.len() >= 6 << 20, "{}", bytes.len());
        assert_eq!(read(bytes, "blob").len(), 3 << 20);
    }

    #[test]
    fn bad_names_and_duplicates_are_refused_with_the_name() {
        let mut seed = SeedDisk::new("n");
        for name in ["", "..", "ssh/key", "a:b", "trailing.", "ctl\u{1}"] {
            let err = seed.insert(name, "x").unwrap_err().to_string();
            assert!(err.contains(&format!("{name:?}")), "{err}");
        }
        seed.insert("hostname", "a").unwrap();
        let err = seed.insert("hostname", "b").unwrap_err().to_string();
        assert!(err.contains("given twice"), "{err}");
    }

    #[test]
    fn write_to_replaces_atomically_and_names_the_file_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("seed.img");
        std::fs::write(&dest, "old").unwrap();
        sample().write_to(&dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), sample().to_bytes().unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let missing = dir.path().join("no/such/seed.img");
        let err = sample().write_to(&missing).unwrap_err().to_string();
        assert!(err.contains("no/such/seed.img"), "{err}");
    }
}
