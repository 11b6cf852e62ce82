//! Free space: checked before a write whose size we can estimate, and
//! named when a write finds the disk full anyway (the estimate is only
//! an estimate, and other programs write too).

use std::io;
use std::path::{Path, PathBuf};

use crate::table::human;

/// A write of about `needed` bytes that does not fit where it goes.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "no space left on {} (needed about {}, free {})",
    dir.display(),
    human(*needed),
    human(*free)
)]
pub struct NoSpace {
    pub dir: PathBuf,
    pub needed: u64,
    pub free: u64,
}

/// Bytes an unprivileged writer can still allocate on the filesystem that
/// holds `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: an all-zero statvfs is valid, and statvfs only fills it.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a struct we own.
    if unsafe { libc::statvfs(name.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// True for the error a write gets on a full filesystem.
pub fn is_full(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC)
}

/// What a writer expects to need in `dir`, and what was free there before
/// it began: the numbers both the up-front check and a late ENOSPC report.
#[derive(Debug, Clone)]
pub struct Budget {
    dir: PathBuf,
    needed: u64,
    free: u64,
}

impl Budget {
    /// Fails unless `dir`'s filesystem has about `needed` bytes free. A
    /// filesystem that cannot say (statvfs fails) passes: the write finds out.
    pub fn check(dir: &Path, needed: u64) -> Result<Budget, NoSpace> {
        let free = free_bytes(dir).unwrap_or(u64::MAX);
        let budget = Budget {
            dir: dir.to_owned(),
            needed,
            free,
        };
        if free < needed {
            return Err(NoSpace {
                dir: budget.dir,
                needed,
                free,
            });
        }
        Ok(budget)
    }

    /// Where the writes go.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The error to give when the write ran out of space: it needed at
    /// least what was free when it began, whatever the estimate said.
    pub fn no_space(&self) -> NoSpace {
        NoSpace {
            dir: self.dir.clone(),
            needed: self.needed.max(self.free),
            free: self.free,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_larger_than_the_free_space_is_refused_with_both_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        assert!(free > 0);
        Budget::check(dir.path(), 1).unwrap();
        let err = Budget::check(dir.path(), u64::MAX).unwrap_err();
        assert_eq!(err.needed, u64::MAX);
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "no space left on {} (needed about ",
                dir.path().display()
            )),
            "{text}"
        );
        assert!(text.contains(", free "), "{text}");
    }
}
