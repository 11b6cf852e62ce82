//! Writing outputs safely: into a temporary file beside the target, renamed
//! over it only once complete, and never over an existing file unless asked.

use std::fs::{File, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::error::{Error, ErrorKind, Result};

pub struct Output {
    pub path: PathBuf,
    pub temp: NamedTempFile,
    force: bool,
}

impl Output {
    /// Refuses an existing `path` without `force`, before any work is done.
    pub fn create(path: &Path, force: bool) -> Result<Output> {
        if path.is_dir() {
            return Err(Error::new(path, ErrorKind::Directory));
        }
        if !force && path.symlink_metadata().is_ok() {
            return Err(Error::new(path, ErrorKind::Exists));
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .map_or("output".into(), |n| n.to_string_lossy().into_owned());
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .tempfile_in(dir)
            .map_err(|e| Error::io(dir, "create a temporary file in it", e))?;
        Ok(Output {
            path: path.to_owned(),
            temp,
            force,
        })
    }

    pub fn file(&self) -> &File {
        self.temp.as_file()
    }

    pub fn temp_path(&self) -> &Path {
        self.temp.path()
    }

    pub fn error(&self, op: &'static str, e: std::io::Error) -> Error {
        Error::io(&self.path, op, e)
    }

    /// Moves the finished file into place with the usual 0666 & ~umask mode.
    pub fn publish(self) -> Result<()> {
        let mode = 0o666 & !current_umask();
        std::fs::set_permissions(self.temp.path(), Permissions::from_mode(mode))
            .map_err(|e| Error::io(&self.path, "set its permissions", e))?;
        let result = if self.force {
            self.temp.persist(&self.path)
        } else {
            self.temp.persist_noclobber(&self.path)
        };
        result.map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                Error::new(&self.path, ErrorKind::Exists)
            } else {
                Error::io(&self.path, "move the finished file into place", e.error)
            }
        })?;
        Ok(())
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
