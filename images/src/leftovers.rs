//! What a killed run leaves behind: its temporary output files and
//! staging directories, which nothing removes once the process is gone
//! (SIGKILL runs no destructor). A live one is held with an flock by the
//! run that made it; the kernel drops that lock when the run dies, however
//! it dies. So any matching name that no one holds is a leftover, and goes,
//! and a run working beside it at the same moment is never disturbed.

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Takes the lock that marks `file` (a temporary file, or a directory
/// opened read-only) as in use for as long as `file` stays open.
pub fn hold(file: &File) -> io::Result<()> {
    // SAFETY: flock on a descriptor we own.
    match unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Removes every entry of `dir` named `prefix…suffix` that no live run
/// holds; returns how many went. Entries that vanish meanwhile are fine.
pub fn remove(dir: &Path, prefix: &str, suffix: &str) -> io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(prefix) && name.ends_with(suffix)) {
            continue;
        }
        let path = entry.path();
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if hold(&file).is_err() {
            continue; // a live run's
        }
        let gone = if file.metadata()?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match gone {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_no_one_holds_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join(".out.live.partial");
        let dead = dir.path().join(".out.dead.partial");
        let dead_dir = dir.path().join(".out.staging.partial");
        let other = dir.path().join("out");
        for path in [&live, &dead, &other] {
            std::fs::write(path, "x").unwrap();
        }
        std::fs::create_dir(&dead_dir).unwrap();
        std::fs::write(dead_dir.join("inside"), "x").unwrap();
        let held = File::open(&live).unwrap();
        hold(&held).unwrap();
        // A dead run's lock is gone: its file was closed.
        hold(&File::open(&dead).unwrap()).unwrap();

        assert_eq!(remove(dir.path(), ".out.", ".partial").unwrap(), 2);
        assert!(live.exists() && other.exists());
        assert!(!dead.exists() && !dead_dir.exists());
    }
}
