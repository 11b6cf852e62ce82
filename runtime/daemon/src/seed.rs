//! The seed disk (docs/design.md §12, §13): a small FAT volume that carries what
//! differs per guest and every secret (hostname, the cluster's munge key,
//! SSH host keys kept per node, root's SSH key and password hash), so
//! images carry none.
//!
//! FAT because every host reads and writes it without tools, and because
//! Linux mounts it from the earliest point of boot. The volume is written
//! in Rust with `fatfs`; it is the same bytes for the same files (times
//! are FAT's epoch, 1980-01-01, and the volume id comes from the name),
//! so a rebuilt seed does not look changed to the guest.

use std::collections::BTreeMap;
use std::io::{Cursor, Write};
use std::path::Path;

use colinux_config::{Cluster, Settings};

/// The label the guest looks for (`/dev/disk/by-label/COSEED`).
pub const LABEL: &str = "COSEED";

/// The seed's file in the guest's runtime directory (removed at exit).
pub const FILE_NAME: &str = "seed.img";

/// FAT has no smaller sensible volume; the seed is a few KiB of keys.
const MIN_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("seed disk: {name:?} is not a valid file name on a FAT volume ({why})")]
    BadName { name: String, why: &'static str },
    #[error("seed disk: {name:?} is given twice")]
    Duplicate { name: String },
    #[error("seed disk: cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
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

    /// A cluster guest's seed (the contract in docs/design.md §12):
    /// `comosix.env` (ROLE, HOSTNAME, HEAD, NETWORK), `munge.key`, the SSH
    /// host key pair, and `authorized_keys` when a root key is given. The
    /// key files are read now.
    pub fn for_cluster(name: &str, cluster: &Cluster) -> Result<SeedDisk, Error> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| Error::Read {
                path: path.display().to_string(),
                source,
            })
        };
        let mut seed = SeedDisk::new(name);
        let env = format!(
            "ROLE={}\nHOSTNAME={}\nHEAD={}\nNETWORK={}\n",
            cluster.role.value.as_str(),
            cluster.hostname.value,
            cluster.head.value,
            cluster.network()
        );
        seed.insert("comosix.env", env)?;
        seed.insert("munge.key", read(&cluster.munge_key.value)?)?;
        seed.insert("ssh_host_ed25519_key", read(&cluster.ssh_host_key.value)?)?;
        seed.insert(
            "ssh_host_ed25519_key.pub",
            read(&cluster.ssh_host_key_pub())?,
        )?;
        if let Some(root_key) = &cluster.root_key {
            seed.insert("authorized_keys", read(&root_key.value)?)?;
        }
        Ok(seed)
    }

    /// The seed `settings` ask for, if any: a cluster guest's, and root's
    /// credentials for its first start (`root_key=` as `authorized_keys`,
    /// which the cluster's images read too, and `root_password_hash=` as
    /// `root_password_hash`). The stock images' first-boot unit applies
    /// them once (recipes/README.md).
    pub fn for_guest(name: &str, settings: &Settings) -> Result<Option<SeedDisk>, Error> {
        let mut seed = match &settings.cluster {
            Some(cluster) => SeedDisk::for_cluster(name, cluster)?,
            None if settings.root_key.is_none() && settings.root_password_hash.is_none() => {
                return Ok(None)
            }
            None => SeedDisk::new(name),
        };
        if let Some(key) = &settings.root_key {
            let keys = std::fs::read(&key.value).map_err(|source| Error::Read {
                path: key.value.display().to_string(),
                source,
            })?;
            seed.insert("authorized_keys", keys)?;
        }
        if let Some(hash) = &settings.root_password_hash {
            seed.insert("root_password_hash", format!("{}\n", hash.value))?;
        }
        Ok(Some(seed))
    }

    /// The files, by name, with their contents.
    pub fn files(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.files.iter().map(|(n, c)| (n.as_str(), c.as_slice()))
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
        // It holds private keys: the owner alone reads it.
        crate::host::write_private(dest, &bytes).map_err(fail)?;
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
    fn a_cluster_seed_has_the_contracts_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("munge.key"), [9u8; 1024]).unwrap();
        std::fs::write(d.join("host"), "PRIVATE\n").unwrap();
        std::fs::write(d.join("host.pub"), "ssh-ed25519 HOST\n").unwrap();
        std::fs::write(d.join("root.pub"), "ssh-ed25519 ROOT\n").unwrap();
        let config = |extra: &str| {
            colinux_config::parse_str(
                &format!(
                    "cluster_hostname=node-pc17 cluster_head=10.77.0.1 cluster_munge_key=munge.key \
                     cluster_ssh_host_key=host {extra}"
                ),
                &d.join("g.conf"),
            )
            .unwrap()
            .cluster
            .unwrap()
        };
        let seed = SeedDisk::for_cluster("n", &config("cluster_root_key=root.pub")).unwrap();
        let bytes = seed.to_bytes().unwrap();
        assert_eq!(
            read(bytes.clone(), "comosix.env"),
            b"ROLE=node\nHOSTNAME=node-pc17\nHEAD=10.77.0.1\nNETWORK=10.77.0.0/24\n"
        );
        assert_eq!(read(bytes.clone(), "munge.key"), [9u8; 1024]);
        assert_eq!(read(bytes.clone(), "ssh_host_ed25519_key"), b"PRIVATE\n");
        assert_eq!(
            read(bytes.clone(), "ssh_host_ed25519_key.pub"),
            b"ssh-ed25519 HOST\n"
        );
        assert_eq!(read(bytes, "authorized_keys"), b"ssh-ed25519 ROOT\n");
        let without_root = SeedDisk::for_cluster("n", &config("")).unwrap();
        let names: Vec<&str> = without_root.files().map(|(n, _)| n).collect();
        assert!(!names.contains(&"authorized_keys"), "{names:?}");

        std::fs::remove_file(d.join("host.pub")).unwrap();
        let err = SeedDisk::for_cluster("n", &config(""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot read") && err.contains("host.pub"),
            "{err}"
        );
    }

    #[test]
    fn a_guest_with_credentials_gets_a_seed_and_one_without_none() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("me.pub"), "ssh-ed25519 AAAA me\n").unwrap();
        let settings = |text: &str| colinux_config::parse_str(text, &d.join("g.conf")).unwrap();
        assert!(SeedDisk::for_guest("g", &settings("kernel=k"))
            .unwrap()
            .is_none());
        let seed = SeedDisk::for_guest(
            "g",
            &settings("kernel=k root_key=me.pub root_password_hash=$6$salt$hash"),
        )
        .unwrap()
        .unwrap();
        let bytes = seed.to_bytes().unwrap();
        assert_eq!(
            read(bytes.clone(), "authorized_keys"),
            b"ssh-ed25519 AAAA me\n"
        );
        assert_eq!(read(bytes, "root_password_hash"), b"$6$salt$hash\n");
        let hash_only = SeedDisk::for_guest("g", &settings("kernel=k root_password_hash=$6$s$h"))
            .unwrap()
            .unwrap();
        let names: Vec<&str> = hash_only.files().map(|(n, _)| n).collect();
        assert_eq!(names, ["root_password_hash"]);
    }

    #[test]
    fn write_to_replaces_atomically_and_names_the_file_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("seed.img");
        std::fs::write(&dest, "old").unwrap();
        sample().write_to(&dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), sample().to_bytes().unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let missing = dir.path().join("no/such/seed.img");
        let err = sample().write_to(&missing).unwrap_err().to_string();
        assert!(err.contains("no/such/seed.img"), "{err}");
    }
}
