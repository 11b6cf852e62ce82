//! Host facts and places: memory size, the per-guest runtime directory and
//! the lock that keeps two daemons off one guest name, and atomic writes.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A guest's name becomes file, pipe and unit names: keep it plain.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "guest name {name:?}: use 1-64 letters, digits, '-', '_' or '.' (not starting with '.')"
        ))
    }
}

/// The guest name when `--name` is not given: the first `@file`'s stem.
pub fn default_name(config_args: &[String]) -> String {
    config_args
        .iter()
        .find_map(|a| a.strip_prefix('@'))
        .and_then(|file| Path::new(file).file_stem())
        .map(|stem| stem.to_string_lossy().into_owned())
        .filter(|stem| check_name(stem).is_ok())
        .unwrap_or_else(|| "colinux".into())
}

/// Where a guest's sockets and lock live: `$XDG_RUNTIME_DIR/colinux/NAME`,
/// else `/run/colinux/NAME` for root, else a per-user directory in the
/// temporary directory.
pub fn runtime_dir(name: &str) -> PathBuf {
    base_runtime_dir().join(name)
}

fn base_runtime_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("colinux");
    }
    #[cfg(unix)]
    {
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        if uid == 0 {
            return PathBuf::from("/run/colinux");
        }
        std::env::temp_dir().join(format!("colinux-{uid}"))
    }
    #[cfg(windows)]
    {
        std::env::temp_dir().join("colinux")
    }
}

/// Creates the runtime directory, private to its owner.
fn create_runtime_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

const LOCK_FILE: &str = "daemon.lock";

/// The guest's runtime directory, held for the daemon's life: a second
/// daemon for the same guest name stops at once instead of fighting over
/// its sockets and disks. Dropping it removes the directory.
pub struct InstanceLock {
    dir: PathBuf,
    /// The lock lasts as long as the file is open.
    _file: Option<File>,
}

impl InstanceLock {
    /// Creates `dir` if needed and takes its lock.
    pub fn acquire(dir: &Path, name: &str) -> Result<InstanceLock, String> {
        let path = dir.join(LOCK_FILE);
        let failed = |e: io::Error| format!("{}: {e}", path.display());
        // A daemon that ends removes the lock file and the directory while
        // another may be opening them; a lock on a file that is no longer
        // at `path` guards nothing, so such an attempt starts over.
        for _ in 0..20 {
            create_runtime_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let mut file = match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
            {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(failed(e)),
            };
            if !try_lock(&file) {
                let pid = std::fs::read_to_string(&path).unwrap_or_default();
                return Err(format!(
                    "a guest named {name:?} is already running (daemon pid {}); give this one another --name",
                    pid.trim()
                ));
            }
            if !still_at(&file, &path) {
                continue;
            }
            file.set_len(0)
                .and_then(|_| writeln!(file, "{}", std::process::id()))
                .map_err(failed)?;
            return Ok(InstanceLock {
                dir: dir.to_path_buf(),
                _file: Some(file),
            });
        }
        Err(format!(
            "{}: removed again each time it was made; is a guest named {name:?} starting and stopping in a loop?",
            path.display()
        ))
    }
}

impl Drop for InstanceLock {
    /// Everything in the directory is ours while we hold the lock (our
    /// sockets, the lock file), so it all goes, the lock file last and
    /// still locked. A daemon starting meanwhile makes a new lock file,
    /// and then the directory stays for it.
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                if entry.file_name() != LOCK_FILE {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        // Windows deletes an open file only once it is closed.
        #[cfg(windows)]
        drop(self._file.take());
        let _ = std::fs::remove_file(self.dir.join(LOCK_FILE));
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Whether `path` still names the open `file`.
#[cfg(unix)]
fn still_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

#[cfg(windows)]
fn still_at(_file: &File, path: &Path) -> bool {
    // An open file cannot be deleted away from under us on Windows.
    path.exists()
}

#[cfg(unix)]
fn try_lock(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; flock has no memory effects.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

#[cfg(windows)]
fn try_lock(file: &File) -> bool {
    // Windows: the console pipe is created first-instance-only, which is
    // the real guard; the file lock keeps the pid for the message.
    file.try_lock().is_ok()
}

/// Writes `path` atomically (temporary file, then rename).
pub fn write_atomically(path: &Path, contents: &str) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

/// Where `path` is written before it is renamed into place: beside it,
/// hidden, and this process's own.
pub fn partial_path(path: &Path) -> PathBuf {
    path.with_file_name(format!(
        ".{}.partial-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ))
}

/// Writes `bytes` to `path` for its owner alone (keys, a password hash),
/// through a temporary file beside it, synced and renamed into place: a
/// reader never sees half of it, and a failure leaves the old file.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let partial = partial_path(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options
        .open(&partial)
        .and_then(|mut file| {
            io::Write::write_all(&mut file, bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&partial, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// The host's physical memory in MB, if it can be read.
pub fn host_ram_mb() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let kb: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb / 1024)
    }
    #[cfg(windows)]
    {
        use windows_sys::Win32::System::SystemInformation::{GlobalMemoryStatusEx, MEMORYSTATUSEX};
        // SAFETY: a zeroed MEMORYSTATUSEX with its length set is what the call expects.
        unsafe {
            let mut status: MEMORYSTATUSEX = std::mem::zeroed();
            status.dwLength = std::mem::size_of::<MEMORYSTATUSEX>() as u32;
            (GlobalMemoryStatusEx(&mut status) != 0).then_some(status.ullTotalPhys / (1024 * 1024))
        }
    }
    #[cfg(not(any(target_os = "linux", windows)))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("debian-1.test_x").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            default_name(&args(&["kernel=k", "@/etc/colinux/web.conf"])),
            "web"
        );
        assert_eq!(default_name(&args(&["kernel=k"])), "colinux");
        assert_eq!(default_name(&args(&["@bad name.conf"])), "colinux");
    }

    #[test]
    fn one_daemon_per_name_and_the_directory_goes_with_it() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("g");
        let held = InstanceLock::acquire(&dir, "g").unwrap();
        std::fs::write(dir.join("console.sock"), "").unwrap();
        let err = InstanceLock::acquire(&dir, "g").err().unwrap();
        assert!(
            err.contains("already running") && err.contains(&std::process::id().to_string()),
            "{err}"
        );
        assert!(
            dir.join(LOCK_FILE).exists() && dir.join("console.sock").exists(),
            "a refused daemon touched the running one's directory"
        );
        drop(held);
        assert!(!dir.exists(), "the runtime directory is left behind");
        let again = InstanceLock::acquire(&dir, "g").unwrap();
        assert!(dir.join(LOCK_FILE).exists());
        drop(again);
        assert!(!dir.exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_lock_on_a_removed_lock_file_is_not_trusted() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("g");
        let held = InstanceLock::acquire(&dir, "g").unwrap();
        // Opened before the holder leaves, as a daemon starting then would.
        let stale = File::open(dir.join(LOCK_FILE)).unwrap();
        drop(held);
        assert!(
            try_lock(&stale),
            "the old file is free once its holder left"
        );
        assert!(!still_at(&stale, &dir.join(LOCK_FILE)));
        // The next daemon makes a new file, which the old lock does not cover.
        let next = InstanceLock::acquire(&dir, "g").unwrap();
        assert!(!still_at(&stale, &dir.join(LOCK_FILE)));
        drop(next);
    }

    #[test]
    fn host_memory_is_known() {
        if cfg!(target_os = "linux") {
            assert!(host_ram_mb().unwrap() > 64);
        }
    }
}
