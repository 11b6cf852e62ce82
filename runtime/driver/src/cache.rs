//! The per-boot probe cache: one small text file, so that only the first
//! engine start after a boot (or a kvm module reload) pays for the test guest.
//!
//! ```text
//! colinux-driver-probe 1
//! key boot=<boot_id> rdev=<hex> ctime=<s>.<ns>
//! timeout_ms 3000
//! result not-usable KVM present but not usable (probe timed out after 3.0 s)
//! ```
// Only Linux probes slowly enough to cache; elsewhere only the paths are used.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{BackendState, ProbeOptions};

pub(crate) const FILE_NAME: &str = "driver-probe";
const MAGIC: &str = "colinux-driver-probe 1";
/// A real cache file is ~200 bytes; anything much bigger is not ours.
const MAX_LEN: u64 = 4096;

/// One cached probe result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// What must match for the result to still hold (boot and device).
    pub key: String,
    /// The timeout the probe ran with: a timed-out result does not answer a
    /// later, more patient probe.
    pub timeout: Duration,
    pub state: BackendState,
    pub detail: String,
}

impl Entry {
    /// Whether this entry answers a probe with `key` and `timeout`.
    pub fn answers(&self, key: &str, timeout: Duration) -> bool {
        self.key == key && (self.state == BackendState::Usable || self.timeout >= timeout)
    }
}

pub(crate) fn render(entry: &Entry) -> String {
    // Newlines would break the line format; details are one line anyway.
    let one_line = |s: &str| s.replace(['\n', '\r'], " ");
    format!(
        "{MAGIC}\nkey {}\ntimeout_ms {}\nresult {} {}\n",
        one_line(&entry.key),
        entry.timeout.as_millis(),
        entry.state.as_str(),
        one_line(&entry.detail)
    )
}

/// `None` for anything that is not exactly what `render` writes.
pub(crate) fn parse(text: &str) -> Option<Entry> {
    let mut lines = text.lines();
    if lines.next()? != MAGIC {
        return None;
    }
    let key = lines.next()?.strip_prefix("key ")?.to_owned();
    let timeout_ms: u64 = lines.next()?.strip_prefix("timeout_ms ")?.parse().ok()?;
    let result = lines.next()?.strip_prefix("result ")?;
    let (word, detail) = result.split_once(' ').unwrap_or((result, ""));
    let state = BackendState::parse(word)?;
    if lines.next().is_some() || key.is_empty() {
        return None;
    }
    Some(Entry {
        key,
        timeout: Duration::from_millis(timeout_ms),
        state,
        detail: detail.to_owned(),
    })
}

/// The cache file for these options; `None` where no cache is kept.
pub(crate) fn file_path(opts: &ProbeOptions) -> Option<PathBuf> {
    opts.cache_dir
        .clone()
        .or_else(default_dir)
        .map(|dir| dir.join(FILE_NAME))
}

/// `$XDG_RUNTIME_DIR/colinux`, else `/run/colinux` for root, else
/// `$TMPDIR/colinux-<uid>`: all cleared at boot on a usual system.
#[cfg(unix)]
pub(crate) fn default_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    Some(pick_default_dir(xdg, uid, std::env::temp_dir()))
}

#[cfg(unix)]
fn pick_default_dir(xdg: Option<PathBuf>, uid: u32, tmp: PathBuf) -> PathBuf {
    match xdg {
        // The spec ignores a relative XDG_RUNTIME_DIR; so do we.
        Some(dir) if dir.is_absolute() => dir.join("colinux"),
        _ if uid == 0 => PathBuf::from("/run/colinux"),
        _ => tmp.join(format!("colinux-{uid}")),
    }
}

/// Windows: WHPX is checked in microseconds, so no cache is kept.
#[cfg(not(unix))]
pub(crate) fn default_dir() -> Option<PathBuf> {
    None
}

/// The cached entry if `path` holds a valid one; corrupt, foreign or
/// unreadable files count as absent (the next write replaces them).
pub(crate) fn read(path: &Path) -> Option<Entry> {
    if !trusted_dir(path.parent()?) {
        return None;
    }
    let file = std::fs::File::open(path).ok()?;
    if file.metadata().ok()?.len() > MAX_LEN {
        return None;
    }
    let text = std::io::read_to_string(file).ok()?;
    parse(&text)
}

/// Writes atomically (temp file + rename), so a concurrent reader sees the
/// old file or the new one, never half of one.
pub(crate) fn write(path: &Path, entry: &Entry) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("cache path has no directory"))?;
    create_private_dir(dir)?;
    if !trusted_dir(dir) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{} belongs to another user", dir.display()),
        ));
    }
    let tmp = dir.join(format!(".{FILE_NAME}.{}.tmp", std::process::id()));
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(render(entry).as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// In a shared `/tmp`, another user could create `colinux-<uid>` first and
/// plant a "KVM usable" result; only trust a directory that is ours.
#[cfg(unix)]
fn trusted_dir(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    std::fs::metadata(dir).is_ok_and(|m| m.is_dir() && (m.uid() == uid || m.uid() == 0))
}

#[cfg(not(unix))]
fn trusted_dir(_dir: &Path) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            key: "boot=abc rdev=a:e8 ctime=1.2".into(),
            timeout: Duration::from_millis(3000),
            state: BackendState::NotUsable,
            detail: "KVM present but not usable (probe timed out after 3.0 s)".into(),
        }
    }

    #[test]
    fn render_parse_round_trip() {
        let e = entry();
        assert_eq!(parse(&render(&e)), Some(e.clone()));
        let usable = Entry {
            state: BackendState::Usable,
            detail: String::new(),
            ..e
        };
        assert_eq!(parse(&render(&usable)), Some(usable));
    }

    #[test]
    fn newlines_in_detail_do_not_break_the_format() {
        let e = Entry {
            detail: "two\nlines".into(),
            ..entry()
        };
        assert_eq!(
            parse(&render(&e)).map(|p| p.detail),
            Some("two lines".into())
        );
    }

    #[test]
    fn corrupt_text_is_rejected() {
        let good = render(&entry());
        let bad = [
            String::new(),
            "garbage".into(),
            good.replace("colinux-driver-probe 1", "colinux-driver-probe 2"),
            good.replace("timeout_ms 3000", "timeout_ms lots"),
            good.replace("result not-usable", "result sort-of"),
            good.replace("key boot=abc rdev=a:e8 ctime=1.2", "key "),
            good.lines().take(3).collect::<Vec<_>>().join("\n"),
            format!("{good}extra line\n"),
            good.replace('\n', "\r\n").replace("key", "kee"),
        ];
        for text in bad {
            assert_eq!(parse(&text), None, "{text:?}");
        }
    }

    #[test]
    fn answers_needs_same_key_and_enough_patience() {
        let e = entry();
        assert!(e.answers(&e.key, Duration::from_secs(3)));
        assert!(e.answers(&e.key, Duration::from_secs(1)));
        assert!(!e.answers("boot=other rdev=a:e8 ctime=1.2", Duration::from_secs(1)));
        // A 3 s timeout says nothing about whether 10 s would do.
        assert!(!e.answers(&e.key, Duration::from_secs(10)));
        let usable = Entry {
            state: BackendState::Usable,
            ..e
        };
        assert!(usable.answers(&usable.key, Duration::from_secs(10)));
    }

    #[test]
    fn write_then_read_and_corrupt_file_is_replaced() {
        let dir = std::env::temp_dir().join(format!("colinux-driver-cache-{}", std::process::id()));
        let path = dir.join("sub").join(FILE_NAME);
        write(&path, &entry()).expect("write cache");
        assert_eq!(read(&path), Some(entry()));
        std::fs::write(&path, "colinux-driver-probe 1\nkey \0\n").expect("corrupt");
        assert_eq!(read(&path), None);
        write(&path, &entry()).expect("rewrite cache");
        assert_eq!(read(&path), Some(entry()));
        // No temp files left beside it.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE_NAME]);
        std::fs::write(&path, vec![b'x'; 10_000]).expect("oversize");
        assert_eq!(read(&path), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unwritable_location_is_an_error_not_a_panic() {
        let dir = std::env::temp_dir().join(format!("colinux-driver-ro-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A plain file where the directory should be: fails even for root.
        let blocker = dir.join("blocker");
        std::fs::write(&blocker, "").unwrap();
        assert!(write(&blocker.join(FILE_NAME), &entry()).is_err());
        assert_eq!(read(&blocker.join(FILE_NAME)), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[test]
    fn default_dir_order() {
        let tmp = PathBuf::from("/tmp");
        assert_eq!(
            pick_default_dir(Some("/run/user/1000".into()), 1000, tmp.clone()),
            PathBuf::from("/run/user/1000/colinux")
        );
        assert_eq!(
            pick_default_dir(Some("relative".into()), 0, tmp.clone()),
            PathBuf::from("/run/colinux")
        );
        assert_eq!(
            pick_default_dir(None, 0, tmp.clone()),
            PathBuf::from("/run/colinux")
        );
        assert_eq!(
            pick_default_dir(None, 1000, tmp),
            PathBuf::from("/tmp/colinux-1000")
        );
    }
}
