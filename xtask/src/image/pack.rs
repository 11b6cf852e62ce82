//! From the finished tree to the outputs, bit for bit the same on every
//! run: the rootfs tarball, the package list, and the ext4 image made with
//! `mke2fs -d` (no mount, no loop device).

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::stage::{self, run_logged};

/// What a walk of the tree found: every path (relative, sorted), and what
/// the ext4 image needs to hold them.
pub struct Content {
    pub paths: Vec<PathBuf>,
    pub blocks: u64,
    pub inodes: u64,
}

const BLOCK: u64 = 4096;

impl Content {
    /// The bytes the content takes in an ext4 filesystem: data blocks and
    /// inode table entries, before the filesystem's own overhead.
    pub fn bytes(&self) -> u64 {
        self.blocks * BLOCK + self.inodes * 256
    }
}

/// Walks the tree: clamps every time after `sde` to `sde` (mke2fs copies
/// times as they are; tar's own clamp would only cover the tarball) and
/// measures the content.
pub fn settle(tree: &Path, sde: u64) -> Result<Content> {
    let mut content = Content {
        paths: Vec::new(),
        blocks: 0,
        inodes: 1,
    };
    // Hard links share one inode and its blocks (resolute's uutils
    // coreutils is one 11 MiB file with about a hundred names).
    let mut linked = std::collections::HashSet::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = tree.join(&rel);
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let entry = entry?;
            let rel = rel.join(entry.file_name());
            let meta = entry.metadata()?;
            let first_name = meta.nlink() < 2 || meta.is_dir() || linked.insert(meta.ino());
            if !first_name {
                content.paths.push(rel);
                continue;
            }
            content.inodes += 1;
            content.blocks += match meta.file_type() {
                t if t.is_file() => meta.len().div_ceil(BLOCK),
                t if t.is_dir() => 1,
                t if t.is_symlink() && meta.len() >= 60 => 1,
                _ => 0,
            };
            if meta.mtime() as u64 > sde || meta.atime() as u64 > sde {
                set_times(&tree.join(&rel), sde)?;
            }
            if meta.is_dir() {
                stack.push(rel.clone());
            }
            content.paths.push(rel);
        }
    }
    set_times(tree, sde)?;
    content.paths.sort();
    Ok(content)
}

fn set_times(path: &Path, sde: u64) -> Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    let t = libc::timespec {
        tv_sec: sde as libc::time_t,
        tv_nsec: 0,
    };
    // SAFETY: a valid NUL-terminated path and two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [t, t].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        bail!(
            "cannot set the times of {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// The rootfs as a gzip'd tarball: sorted, numeric owners, clamped times,
/// no atime/ctime, gzip without a name or time. Level 4: 3% larger than
/// gzip's default 6 and less than half its time (BENCHMARKS.md).
pub fn tarball(tree: &Path, out: &Path, sde: u64, log: &Path) -> Result<()> {
    let file = File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut tar = Command::new("tar")
        .args([
            "--create",
            "--sort=name",
            "--numeric-owner",
            "--one-file-system",
        ])
        .arg(format!("--mtime=@{sde}"))
        .args(["--clamp-mtime", "--format=pax", "--xattrs"])
        .arg("--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime")
        .arg("--directory")
        .arg(tree)
        .args(["--file", "-", "."])
        .stdout(Stdio::piped())
        .stderr(File::create(log)?)
        .spawn()
        .context("cannot run tar")?;
    let gzip = Command::new("gzip")
        .args(["-n", "-4"])
        .stdin(tar.stdout.take().expect("piped"))
        .stdout(file)
        .status()
        .context("cannot run gzip")?;
    let status = tar.wait()?;
    if !status.success() || !gzip.success() {
        bail!(
            "packing {} failed (tar {status}, gzip {gzip}): {}",
            tree.display(),
            std::fs::read_to_string(log).unwrap_or_default().trim()
        );
    }
    Ok(())
}

/// "name version architecture" per installed package, sorted, from the
/// tree's own dpkg database.
pub fn package_list(tree: &Path) -> Result<(String, usize)> {
    let out = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            tree.join("var/lib/dpkg").display()
        ))
        .args([
            "--show",
            "--showformat=${Package}\\t${Version}\\t${Architecture}\\n",
        ])
        .output()
        .context("cannot run dpkg-query")?;
    if !out.status.success() {
        bail!(
            "dpkg-query failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut lines: Vec<&str> = std::str::from_utf8(&out.stdout)?.lines().collect();
    lines.sort();
    Ok((lines.join("\n") + "\n", lines.len()))
}

/// ext4 features, pinned so the host's /etc/mke2fs.conf cannot change the
/// image: what Linux 4.x and e2fsprogs 1.43 or later all handle.
const MKE2FS_CONF: &str = "\
[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384
[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
";

/// A UUID (RFC 4122 form) derived from the name and the time, so the same
/// build gives the same filesystem and different images differ.
pub fn derived_uuid(label: &str, name: &str, sde: u64) -> String {
    let h = Sha256::digest(format!("colinux {label} {name} {sde}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = stage::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

/// The filesystem's size: fixed, or the content plus the filesystem's own
/// overhead (journal, bitmaps, group tables, reserve) plus `free`, rounded
/// up to 64 MiB.
pub fn image_size(content: &Content, fixed: Option<u64>, free: u64) -> (u64, u64) {
    // 64 MiB of journal for filesystems over 1 GiB, 5% reserved for root,
    // about 2% of group metadata: measured on the stock images.
    let needed = content.bytes() * 108 / 100 + (64 << 20);
    let size = fixed.unwrap_or_else(|| (needed + free).div_ceil(64 << 20) * (64 << 20));
    (size, needed)
}

pub struct Ext4<'a> {
    pub tree: &'a Path,
    pub out: &'a Path,
    pub name: &'a str,
    pub size: u64,
    pub needed: u64,
    pub sde: u64,
    pub log: &'a Path,
}

impl Ext4<'_> {
    pub fn make(&self, content: &Content) -> Result<()> {
        if self.size < self.needed {
            bail!(
                "a size of {} MiB is too small for the {} image: its content needs about {} MiB; give a larger --size or none",
                self.size >> 20,
                self.name,
                self.needed.div_ceil(1 << 20)
            );
        }
        let conf = self.out.with_extension("mke2fs.conf");
        std::fs::write(&conf, MKE2FS_CONF)?;
        let uuid = derived_uuid("filesystem", self.name, self.sde);
        let seed = derived_uuid("hash seed", self.name, self.sde);
        let label: String = self.name.chars().take(16).collect();
        let result = run_logged(
            Command::new("mke2fs")
                .args(["-q", "-F", "-t", "ext4", "-L", &label, "-U", &uuid])
                .arg("-E")
                .arg(format!("hash_seed={seed},root_owner=0:0,nodiscard"))
                .arg("-d")
                .arg(self.tree)
                .arg(self.out)
                .arg(format!("{}k", self.size / 1024))
                .env("MKE2FS_CONFIG", &conf)
                .env("E2FSPROGS_FAKE_TIME", self.sde.to_string())
                .env("LC_ALL", "C"),
            self.log,
        );
        std::fs::remove_file(&conf)?;
        if let Err(e) = result {
            let log = std::fs::read_to_string(self.log).unwrap_or_default();
            if log.contains("Could not allocate") || log.contains("No space left") {
                bail!(
                    "the {} image does not fit in {} MiB (mke2fs ran out of space); give a larger --size",
                    self.name,
                    self.size >> 20
                );
            }
            return Err(e);
        }
        self.settle_inode_times(content)
    }

    /// mke2fs copies each inode's ctime and atime from the tree, where
    /// they are the time of extraction; set them to SOURCE_DATE_EPOCH.
    fn settle_inode_times(&self, content: &Content) -> Result<()> {
        let script = self.out.with_extension("debugfs");
        let mut w = std::io::BufWriter::new(File::create(&script)?);
        let sde = self.sde;
        writeln!(w, "sif / ctime @{sde}\nsif / atime @{sde}")?;
        for path in &content.paths {
            let p = path.to_str().filter(|p| !p.contains(['"', '\n']));
            let Some(p) = p else {
                bail!(
                    "{}: a file name with a quote, a newline or bytes that are not UTF-8 cannot be set reproducibly",
                    self.tree.join(path).display()
                );
            };
            writeln!(w, "sif \"/{p}\" ctime @{sde}\nsif \"/{p}\" atime @{sde}")?;
        }
        w.into_inner()?.sync_all()?;
        let out = Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&script)
            .arg(self.out)
            .env("E2FSPROGS_FAKE_TIME", sde.to_string())
            .output()
            .context("cannot run debugfs")?;
        std::fs::remove_file(&script)?;
        // debugfs reports a failed command on stderr but still exits 0.
        let errors: Vec<String> = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.starts_with("debugfs "))
            .map(str::to_string)
            .collect();
        if !out.status.success() || !errors.is_empty() {
            bail!(
                "debugfs could not set the inode times: {}",
                errors.join("; ")
            );
        }
        Ok(())
    }

    /// `e2fsck -fn`: the image we ship must be clean.
    pub fn check(&self) -> Result<()> {
        run_logged(
            Command::new("e2fsck").args(["-f", "-n"]).arg(self.out),
            self.log,
        )
        .context("the new image fails e2fsck")
    }
}

/// The compressed copy for download: zstd with a 128 MiB window. Measured
/// on the trixie image (BENCHMARKS.md): level 6 is 9% larger than the 12
/// the stage used before and five times faster, which keeps the stage's
/// overhead over mmdebstrap within its goal; any level is still far
/// smaller than gzip. Plain `zstd -d` reads it (the window is within
/// zstd's default limit).
pub const ZSTD_LEVEL: [&str; 2] = ["-6", "--long=27"];

pub fn compress(image: &Path, out: &Path) -> Result<()> {
    let status = Command::new("zstd")
        .args(ZSTD_LEVEL)
        .args(["-q", "-T0", "--no-progress", "-f"])
        .arg(image)
        .arg("-o")
        .arg(out)
        .status()
        .context("cannot run zstd (cargo xtask setup installs it)")?;
    if !status.success() {
        bail!("zstd could not compress {}", image.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_derived_and_well_formed() {
        let a = derived_uuid("filesystem", "debian", 1);
        assert_eq!(a, derived_uuid("filesystem", "debian", 1));
        assert_ne!(a, derived_uuid("filesystem", "debian", 2));
        assert_ne!(a, derived_uuid("hash seed", "debian", 1));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4", "version 4 form");
    }

    #[test]
    fn auto_size_is_content_plus_free_rounded() {
        let content = Content {
            paths: vec![],
            blocks: 100_000,
            inodes: 10_000,
        };
        let (auto, needed) = image_size(&content, None, 512 << 20);
        assert!(auto >= needed + (512 << 20));
        assert_eq!(auto % (64 << 20), 0);
        assert_eq!(image_size(&content, Some(1 << 30), 0).0, 1 << 30);
    }

    /// The tarball and the settled tree do not depend on when or in what
    /// order the files were made.
    #[test]
    fn tarball_is_the_same_for_the_same_tree() {
        let t = tempfile::tempdir().unwrap();
        let mut shas = Vec::new();
        for (i, order) in [["a", "b", "c"], ["c", "a", "b"]].iter().enumerate() {
            let tree = t.path().join(format!("tree{i}"));
            std::fs::create_dir_all(tree.join("etc")).unwrap();
            for name in order {
                std::fs::write(tree.join("etc").join(name), name).unwrap();
            }
            std::os::unix::fs::symlink("a", tree.join("etc/link")).unwrap();
            std::fs::write(tree.join("big"), vec![1u8; 40_000]).unwrap();
            std::fs::hard_link(tree.join("big"), tree.join("etc/big")).unwrap();
            let content = settle(&tree, 1_000_000).unwrap();
            assert_eq!(content.paths.len(), 7);
            assert_eq!(
                (content.inodes, content.blocks),
                (7, 1 + 3 + 10),
                "the root, etc and five names of four files; a hard link counts once"
            );
            let meta = std::fs::symlink_metadata(tree.join("etc/link")).unwrap();
            assert_eq!(meta.mtime(), 1_000_000, "symlinks themselves are settled");
            let out = t.path().join(format!("{i}.tar.gz"));
            tarball(&tree, &out, 1_000_000, &t.path().join("log")).unwrap();
            shas.push(stage::sha256_file(&out).unwrap());
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        assert_eq!(shas[0], shas[1]);
    }
}
