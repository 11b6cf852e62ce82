//! Writing outputs safely.
//!
//! - The output is never a file the input reads from (the same file under
//!   another name, a file of its backing chain, a loop device over one of
//!   them), whatever the caller allows.
//! - A symbolic link is followed, as `cp` and `dd` do: its target is
//!   written and the link stays.
//! - A regular file is written into a temporary file beside it and renamed
//!   over it only once complete; an existing one only with [`Overwrite::file`].
//! - A block device is written in place (it cannot be renamed over), only
//!   with [`Overwrite::device`], checked for size first and flushed at the
//!   end. Anything else (character device, FIFO, socket, directory) is
//!   refused.

use std::fs::{File, Metadata, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::disk::{ReadAt, Source};
use crate::error::{Error, ErrorKind, Result};
use crate::leftovers;
use crate::space::{self, Budget};

/// What the user allows to be overwritten.
#[derive(Debug, Clone, Copy, Default)]
pub struct Overwrite {
    /// Replace an existing regular file (`--force`).
    pub file: bool,
    /// Write onto a block device (`--overwrite-device`).
    pub device: bool,
}

pub struct Output {
    /// The output as the user named it, for messages.
    pub path: PathBuf,
    dest: Dest,
    /// What the writer expects to need, once [`Output::reserve`] checked it.
    budget: Option<Budget>,
}

enum Dest {
    /// A temporary file, renamed over `target` by [`Output::publish`].
    File {
        temp: NamedTempFile,
        target: PathBuf,
        replace: bool,
    },
    /// A block device of `len` bytes, written in place.
    Device {
        file: File,
        target: PathBuf,
        len: u64,
    },
}

impl Output {
    /// Checks `path` against the rules above and opens it, before any work
    /// is done and without changing anything on disk. `sources` are the
    /// files the input reads from.
    pub fn create(path: &Path, overwrite: Overwrite, sources: &[Source]) -> Result<Output> {
        let (target, meta) = resolve(path)?;
        let Some(meta) = meta else {
            return Output::temp_beside(path, target, false);
        };
        refuse_sources(path, &meta, sources)?;
        let kind = meta.file_type();
        if kind.is_file() {
            if !overwrite.file {
                return Err(Error::new(path, ErrorKind::Exists));
            }
            return Output::temp_beside(path, target, true);
        }
        if kind.is_block_device() {
            if !overwrite.device {
                return Err(Error::new(path, ErrorKind::DeviceNeedsFlag));
            }
            return Output::device(path, target);
        }
        Err(Error::new(
            path,
            match () {
                _ if kind.is_dir() => ErrorKind::Directory,
                _ if kind.is_char_device() => ErrorKind::NotWritable("a character device"),
                _ if kind.is_fifo() => ErrorKind::NotWritable("a FIFO"),
                _ if kind.is_socket() => ErrorKind::NotWritable("a socket"),
                _ => ErrorKind::NotWritable("not a regular file"),
            },
        ))
    }

    fn temp_beside(path: &Path, target: PathBuf, replace: bool) -> Result<Output> {
        let temp = temp_beside(&target)?;
        Ok(Output {
            path: path.to_owned(),
            dest: Dest::File {
                temp,
                target,
                replace,
            },
            budget: None,
        })
    }

    fn device(path: &Path, target: PathBuf) -> Result<Output> {
        // O_EXCL on a block device is an exclusive open: the kernel refuses
        // it (EBUSY) while the device is mounted or claimed by another.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_EXCL)
            .open(&target)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EBUSY) => Error::new(
                    path,
                    ErrorKind::Unsupported(
                        "is in use (mounted, or held by another program); unmount it first".into(),
                    ),
                ),
                _ => Error::io(path, "open it for writing", e),
            })?;
        let len = file.size();
        Ok(Output {
            path: path.to_owned(),
            dest: Dest::Device { file, target, len },
            budget: None,
        })
    }

    /// A temporary file beside the output for an intermediate stage (the raw
    /// disk before qcow2), never published. A device takes only final bytes.
    pub fn scratch(&self) -> Result<Output> {
        match &self.dest {
            Dest::File { target, .. } => Ok(Output {
                path: self.path.clone(),
                dest: Dest::File {
                    temp: temp_beside(target)?,
                    target: target.clone(),
                    replace: false,
                },
                budget: self.budget.clone(),
            }),
            Dest::Device { .. } => Err(Error::new(
                &self.path,
                ErrorKind::Unsupported(
                    "is a block device, which takes a raw disk, not qcow2; pass --format raw"
                        .into(),
                ),
            )),
        }
    }

    pub fn file(&self) -> &File {
        match &self.dest {
            Dest::File { temp, .. } => temp.as_file(),
            Dest::Device { file, .. } => file,
        }
    }

    /// Where other programs (qemu-img) write the output's bytes.
    pub fn target_path(&self) -> &Path {
        match &self.dest {
            Dest::File { temp, .. } => temp.path(),
            Dest::Device { target, .. } => target,
        }
    }

    /// Checks that the file's directory has about `needed` bytes free (the
    /// data to be written, holes aside), so a full disk is found before any
    /// work, and remembers it to explain a full disk found later. A device
    /// was sized already.
    pub fn reserve(&mut self, needed: u64) -> Result<()> {
        let Dest::File { temp, .. } = &self.dest else {
            return Ok(());
        };
        let dir = temp.path().parent().unwrap_or(Path::new("."));
        let budget = Budget::check(dir, needed).map_err(|e| Error::new(&self.path, e))?;
        self.budget = Some(budget);
        Ok(())
    }

    /// The error for a failed write or other operation on the output.
    pub fn error(&self, op: &'static str, e: io::Error) -> Error {
        match &self.budget {
            Some(budget) if space::is_full(&e) => Error::new(&self.path, budget.no_space()),
            _ => Error::io(&self.path, op, e),
        }
    }

    /// A tool (qemu-img) that wrote the output and failed on a full disk
    /// gets the same error as our own writes.
    pub fn tool_error(&self, e: Error) -> Error {
        match (&self.budget, &e.kind) {
            (Some(budget), ErrorKind::Tool { message, .. })
                if message.contains("No space left on device") =>
            {
                Error::new(&self.path, budget.no_space())
            }
            _ => e,
        }
    }

    /// Makes bytes `0..len` of the output read as zeros, so that writers
    /// write only data: a file is sized (all one hole); a device is checked
    /// to be large enough and that range zeroed, so that none of its old
    /// bytes show through the image. The rest of a device is left alone.
    pub fn prepare(&self, len: u64) -> Result<()> {
        match &self.dest {
            Dest::File { temp, .. } => temp
                .as_file()
                .set_len(len)
                .map_err(|e| self.error("write it", e)),
            Dest::Device {
                file, len: have, ..
            } => {
                if *have < len {
                    return Err(Error::new(
                        &self.path,
                        ErrorKind::DeviceTooSmall {
                            len: *have,
                            needed: len,
                        },
                    ));
                }
                zero_range(file, len).map_err(|e| self.error("write it", e))
            }
        }
    }

    /// Makes the finished output the real one: a file is moved into place
    /// with the usual 0666 & ~umask mode; a device is flushed to the disk.
    pub fn publish(self) -> Result<()> {
        let (temp, target, replace) = match self.dest {
            Dest::Device { file, .. } => {
                return file
                    .sync_all()
                    .map_err(|e| Error::io(&self.path, "flush it to the device", e));
            }
            Dest::File {
                temp,
                target,
                replace,
            } => (temp, target, replace),
        };
        let mode = 0o666 & !current_umask();
        std::fs::set_permissions(temp.path(), Permissions::from_mode(mode))
            .map_err(|e| Error::io(&self.path, "set its permissions", e))?;
        let result = if replace {
            temp.persist(&target)
        } else {
            temp.persist_noclobber(&target)
        };
        result.map_err(|e| {
            if e.error.kind() == io::ErrorKind::AlreadyExists {
                Error::new(&self.path, ErrorKind::Exists)
            } else {
                Error::io(&self.path, "move the finished file into place", e.error)
            }
        })?;
        Ok(())
    }
}

/// Where writing `path` lands, and what is there now (`None`: nothing). A
/// symbolic link is followed to its final target.
fn resolve(path: &Path) -> Result<(PathBuf, Option<Metadata>)> {
    let link = match path.symlink_metadata() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((path.to_owned(), None)),
        Err(e) => return Err(Error::io(path, "look it up", e)),
        Ok(meta) if !meta.file_type().is_symlink() => return Ok((path.to_owned(), Some(meta))),
        Ok(_) => path,
    };
    let target = std::fs::canonicalize(link).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::new(
            path,
            ErrorKind::DanglingLink(std::fs::read_link(link).unwrap_or_default()),
        ),
        _ => Error::io(path, "follow the link", e),
    })?;
    let meta = std::fs::metadata(&target).map_err(|e| Error::io(path, "follow the link", e))?;
    Ok((target, Some(meta)))
}

/// Refuses an output that is one of `sources`, or a loop device over one.
fn refuse_sources(path: &Path, meta: &Metadata, sources: &[Source]) -> Result<()> {
    let loop_file = loop_backing_file(meta);
    for source in sources {
        // A source that cannot be examined cannot be the output either.
        let Ok(source_meta) = std::fs::metadata(&source.path) else {
            continue;
        };
        let role = if same_file(meta, &source_meta) {
            source.role.clone()
        } else if loop_file
            .as_ref()
            .is_some_and(|f| same_file(f, &source_meta))
        {
            format!(
                "is a loop device over {}, a file of the input",
                source.path.display()
            )
        } else {
            continue;
        };
        return Err(Error::new(path, ErrorKind::IsInput { role }));
    }
    Ok(())
}

/// Two names for one file, or two nodes for one block device.
fn same_file(a: &Metadata, b: &Metadata) -> bool {
    let device = |m: &Metadata| m.file_type().is_block_device().then(|| m.rdev());
    (a.dev(), a.ino()) == (b.dev(), b.ino()) || device(a).is_some_and(|d| device(b) == Some(d))
}

/// The file behind a loop device, from sysfs (`None` for anything else).
fn loop_backing_file(meta: &Metadata) -> Option<Metadata> {
    if !meta.file_type().is_block_device() {
        return None;
    }
    let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
    let sys = format!("/sys/dev/block/{major}:{minor}/loop/backing_file");
    let name = std::fs::read_to_string(sys).ok()?;
    std::fs::metadata(name.trim_end_matches('\n')).ok()
}

fn temp_beside(target: &Path) -> Result<NamedTempFile> {
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = target
        .file_name()
        .map_or("output".into(), |n| n.to_string_lossy().into_owned());
    let prefix = format!(".{name}.");
    // A killed run's temporary file is no one's now: it goes.
    let _ = leftovers::remove(dir, &prefix, ".partial");
    let temp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, "create a temporary file in it", e))?;
    leftovers::hold(temp.as_file()).map_err(|e| Error::io(temp.path(), "lock it", e))?;
    Ok(temp)
}

/// Zeroes bytes `0..len` of a block device: the kernel's zero-range
/// (write-zeroes or discard where the device has them) for whole 4 KiB
/// blocks, which every logical sector size divides; plain writes for the
/// rest, and for all of it where the kernel cannot.
fn zero_range(dev: &File, len: u64) -> io::Result<()> {
    let aligned = len / 4096 * 4096;
    let mut pos = if aligned > 0 && fallocate_zero(dev, aligned).is_ok() {
        aligned
    } else {
        0
    };
    let zeros = vec![0u8; 1 << 20];
    while pos < len {
        let n = (len - pos).min(zeros.len() as u64) as usize;
        dev.write_all_at(&zeros[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}

fn fallocate_zero(dev: &File, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
    let mode = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate on a valid descriptor has no memory effects.
    match unsafe { libc::fallocate(dev.as_raw_fd(), mode, 0, len) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

fn current_umask() -> u32 {
    // SAFETY: umask only swaps the process mask; we restore it at once.
    unsafe {
        let mask = libc::umask(0o022);
        libc::umask(mask);
        mask as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_range_zeroes_exactly_the_range() {
        // A regular file takes the same zero-range call as a block device.
        let file = tempfile::tempfile().unwrap();
        let len = 3 * 4096 + 1000;
        file.write_all_at(&vec![0xaa; len + 5000], 0).unwrap();
        zero_range(&file, len as u64).unwrap();
        let mut got = vec![0; len + 5000];
        file.read_exact_at(&mut got, 0).unwrap();
        assert!(got[..len].iter().all(|&b| b == 0));
        assert!(got[len..].iter().all(|&b| b == 0xaa));
    }
}
