//! Deterministic tar.gz archives: sorted entries, owner 0, clamped mtimes.
//!
//! The same entries give the same bytes whatever their order, the files'
//! owners, modes and times on disk, or the machine: every entry is
//! `root:root` (uid and gid 0) with the mode its [`Entry`] says and the
//! mtime `SOURCE_DATE_EPOCH`, every parent directory is listed before its
//! contents, and the gzip header has mtime 0, no file name and OS
//! "unknown". Every mtime is `SOURCE_DATE_EPOCH` rather than the files'
//! own ones clamped to it: an older mtime would make the archive depend
//! on when the checkout or the build happened.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// One archive member. `path` is relative and `/`-separated, without a
/// leading `/` or `./` (`usr/bin/colinux-daemon`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub content: Content,
    /// Permission bits (`0o755`, `0o644`); the file type comes from `content`.
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A regular file, its bytes read from this file (symlinks followed).
    File(PathBuf),
    /// A regular file with these bytes.
    Bytes(Vec<u8>),
    Dir,
    /// A symbolic link to this target.
    Symlink(String),
}

impl Entry {
    pub fn file(path: &str, source: impl Into<PathBuf>, mode: u32) -> Self {
        Entry {
            path: path.into(),
            content: Content::File(source.into()),
            mode,
        }
    }

    pub fn bytes(path: &str, bytes: impl Into<Vec<u8>>, mode: u32) -> Self {
        Entry {
            path: path.into(),
            content: Content::Bytes(bytes.into()),
            mode,
        }
    }

    pub fn dir(path: &str) -> Self {
        Entry {
            path: path.into(),
            content: Content::Dir,
            mode: 0o755,
        }
    }

    pub fn symlink(path: &str, target: &str) -> Self {
        Entry {
            path: path.into(),
            content: Content::Symlink(target.into()),
            mode: 0o777,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("archive entry {path:?}: {problem}")]
    Entry { path: String, problem: String },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks `entries` and returns them sorted by path, with the parent
/// directories they imply (mode 0755) added. Paths must be relative,
/// without empty, `.` or `..` components, and unique; a parent given as
/// an entry must be a directory.
pub fn normalize(entries: &[Entry]) -> Result<Vec<Entry>, Error> {
    let bad = |path: &str, problem: &str| Error::Entry {
        path: path.into(),
        problem: problem.into(),
    };
    let mut all: BTreeMap<String, Entry> = BTreeMap::new();
    for entry in entries {
        let path = entry.path.as_str();
        if path.is_empty()
            || path.starts_with('/')
            || path.contains('\0')
            || path
                .trim_end_matches('/')
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(bad(
                path,
                "not a relative path of plain names separated by single '/'",
            ));
        }
        if entry.mode & !0o7777 != 0 {
            return Err(bad(
                path,
                &format!("mode {:o} has bits beyond 0o7777", entry.mode),
            ));
        }
        let key = path.trim_end_matches('/').to_string();
        let normal = Entry {
            path: key.clone(),
            ..entry.clone()
        };
        if all.insert(key, normal).is_some() {
            return Err(bad(path, "listed twice"));
        }
    }
    let parents: Vec<String> = all
        .keys()
        .flat_map(|path| {
            path.match_indices('/')
                .map(|(i, _)| path[..i].to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    for parent in parents {
        match all.get(&parent) {
            Some(Entry {
                content: Content::Dir,
                ..
            }) => {}
            Some(_) => return Err(bad(&parent, "has entries below it but is not a directory")),
            None => {
                all.insert(parent.clone(), Entry::dir(&parent));
            }
        }
    }
    // Sorted by path components, so a directory comes right before its
    // contents ("a/b" before "a-b", which plain string order would swap).
    let mut sorted: Vec<Entry> = all.into_values().collect();
    sorted.sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));
    Ok(sorted)
}

/// Writes `entries` as a deterministic `.tar.gz` to `out`, through a
/// temporary file beside it that is renamed into place when complete.
pub fn write_tar_gz(entries: &[Entry], out: &Path, source_date_epoch: u64) -> Result<(), Error> {
    let entries = normalize(entries)?;
    let dir = match out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // Removed when dropped, so a failure leaves nothing behind.
    let tmp = tempfile::Builder::new()
        .prefix(".colinux-tar.")
        .tempfile_in(dir)
        .map_err(io_error(dir))?;
    write_to(&entries, tmp.as_file(), tmp.path(), source_date_epoch)?;
    // A release file, not the private 0600 of a temporary one.
    let public = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644);
    tmp.as_file()
        .set_permissions(public)
        .map_err(io_error(tmp.path()))?;
    tmp.persist(out).map_err(|e| io_error(out)(e.error))?;
    Ok(())
}

/// A gzip stream like `gzip -9n`'s: best compression, mtime 0, no file name.
fn gz_writer<W: Write>(w: W) -> flate2::write::GzEncoder<W> {
    // mtime 0 and no name are GzBuilder's defaults; say so anyway.
    flate2::GzBuilder::new()
        .mtime(0)
        .write(w, flate2::Compression::best())
}

/// `data` compressed like `gzip -9n` (man pages, changelogs).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = gz_writer(Vec::new());
    // Writes to a Vec cannot fail.
    let _ = gz.write_all(data);
    gz.finish().unwrap_or_default()
}

fn write_to(entries: &[Entry], file: &File, tmp: &Path, sde: u64) -> Result<(), Error> {
    let gz = gz_writer(BufWriter::new(file));
    let mut tar = tar::Builder::new(gz);
    for entry in entries {
        append(&mut tar, entry, sde).map_err(|e| match e {
            Appended::Source(path, source) => Error::Io { path, source },
            Appended::Archive(source) => Error::Io {
                path: tmp.to_path_buf(),
                source,
            },
        })?;
    }
    let gz = tar.into_inner().map_err(io_error(tmp))?;
    gz.finish()
        .map_err(io_error(tmp))?
        .into_inner()
        .map_err(|e| io_error(tmp)(e.into_error()))?;
    file.sync_all().map_err(io_error(tmp))
}

enum Appended {
    /// Reading an entry's source file failed.
    Source(PathBuf, io::Error),
    /// Writing the archive failed.
    Archive(io::Error),
}

fn header(kind: tar::EntryType, mode: u32, size: u64, sde: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(sde);
    h.set_uid(0);
    h.set_gid(0);
    // Names too, for tar -tv and for extracting as root.
    let _ = h.set_username("root");
    let _ = h.set_groupname("root");
    h
}

fn append<W: Write>(tar: &mut tar::Builder<W>, entry: &Entry, sde: u64) -> Result<(), Appended> {
    let path = entry.path.as_str();
    match &entry.content {
        Content::Dir => {
            let mut h = header(tar::EntryType::Directory, entry.mode, 0, sde);
            tar.append_data(&mut h, format!("{path}/"), io::empty())
                .map_err(Appended::Archive)
        }
        Content::Bytes(bytes) => {
            let mut h = header(tar::EntryType::Regular, entry.mode, bytes.len() as u64, sde);
            tar.append_data(&mut h, path, bytes.as_slice())
                .map_err(Appended::Archive)
        }
        Content::File(source) => {
            let file = File::open(source).map_err(|e| Appended::Source(source.clone(), e))?;
            let meta = file
                .metadata()
                .map_err(|e| Appended::Source(source.clone(), e))?;
            if !meta.is_file() {
                return Err(Appended::Source(
                    source.clone(),
                    io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
                ));
            }
            let mut h = header(tar::EntryType::Regular, entry.mode, meta.len(), sde);
            // A file that changes size while it is read is an error of
            // tar's (it checks the length), not a corrupt archive.
            tar.append_data(&mut h, path, file)
                .map_err(|e| Appended::Source(source.clone(), e))
        }
        Content::Symlink(target) => {
            let mut h = header(tar::EntryType::Symlink, entry.mode, 0, sde);
            tar.append_link(&mut h, path, target)
                .map_err(Appended::Archive)
        }
    }
}

/// The entries for the tree under `root`, as `prefix/…` (or bare names for
/// an empty prefix): directories 0755, files 0755 when any execute bit is
/// set and 0644 otherwise, symlinks as they are. For packing a built tree
/// (the kernel's modules) with [`write_tar_gz`].
pub fn entries_from_dir(root: &Path, prefix: &str) -> Result<Vec<Entry>, Error> {
    let mut entries = Vec::new();
    let mut todo = vec![(root.to_path_buf(), prefix.trim_end_matches('/').to_string())];
    while let Some((dir, name)) = todo.pop() {
        for item in std::fs::read_dir(&dir).map_err(io_error(&dir))? {
            let item = item.map_err(io_error(&dir))?;
            let path = item.path();
            let file_name = item.file_name();
            let Some(file_name) = file_name.to_str() else {
                return Err(Error::Io {
                    path,
                    source: io::Error::new(io::ErrorKind::InvalidData, "name is not UTF-8"),
                });
            };
            let member = if name.is_empty() {
                file_name.to_string()
            } else {
                format!("{name}/{file_name}")
            };
            let meta = std::fs::symlink_metadata(&path).map_err(io_error(&path))?;
            if meta.is_dir() {
                entries.push(Entry::dir(&member));
                todo.push((path, member));
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).map_err(io_error(&path))?;
                entries.push(Entry::symlink(&member, &target.to_string_lossy()));
            } else if meta.is_file() {
                use std::os::unix::fs::PermissionsExt;
                let mode = if meta.permissions().mode() & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                };
                entries.push(Entry::file(&member, path, mode));
            } else {
                return Err(Error::Io {
                    path,
                    source: io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "not a file, directory or symlink",
                    ),
                });
            }
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const SDE: u64 = 1_700_000_000;

    fn sample(dir: &Path) -> Vec<Entry> {
        let src = dir.join("src.bin");
        std::fs::write(&src, b"\x7fELF pretend").unwrap();
        vec![
            Entry::file("usr/bin/tool", &src, 0o755),
            Entry::bytes("usr/share/doc/x/README", "hello\n", 0o644),
            Entry::dir("etc/x"),
            Entry::symlink("usr/bin/alias", "tool"),
            Entry::bytes("usr/bin-other", "", 0o600),
        ]
    }

    fn listing(archive: &Path) -> Vec<String> {
        let out = Command::new("tar")
            .args(["--numeric-owner", "--full-time", "-tvzf"])
            .arg(archive)
            .env("TZ", "UTC")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn the_same_entries_in_any_order_give_the_same_bytes() {
        let t = tempfile::tempdir().unwrap();
        let entries = sample(t.path());
        let mut reversed = entries.clone();
        reversed.reverse();
        let (a, b) = (t.path().join("a.tar.gz"), t.path().join("b.tar.gz"));
        write_tar_gz(&entries, &a, SDE).unwrap();
        // The source file's own time and mode do not matter either.
        let src = t.path().join("src.bin");
        std::fs::set_permissions(&src, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        File::options()
            .write(true)
            .open(&src)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH)
            .unwrap();
        write_tar_gz(&reversed, &b, SDE).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&a).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o644);
        // gzip header: magic, deflate, no flags (no name), mtime 0, OS unknown.
        let bytes = std::fs::read(&a).unwrap();
        assert_eq!(&bytes[..8], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
        assert_eq!(bytes[9], 255);
        // No temporary file is left beside the output.
        let names: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }

    #[test]
    fn tar_reads_root_owners_fixed_modes_and_times_with_parents_first() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("x.tar.gz");
        write_tar_gz(&sample(t.path()), &out, SDE).unwrap();
        let when = "2023-11-14 22:13:20";
        let expected = [
            format!("drwxr-xr-x 0/0 0 {when} etc/"),
            format!("drwxr-xr-x 0/0 0 {when} etc/x/"),
            format!("drwxr-xr-x 0/0 0 {when} usr/"),
            format!("drwxr-xr-x 0/0 0 {when} usr/bin/"),
            format!("lrwxrwxrwx 0/0 0 {when} usr/bin/alias -> tool"),
            format!("-rwxr-xr-x 0/0 12 {when} usr/bin/tool"),
            format!("-rw------- 0/0 0 {when} usr/bin-other"),
            format!("drwxr-xr-x 0/0 0 {when} usr/share/"),
            format!("drwxr-xr-x 0/0 0 {when} usr/share/doc/"),
            format!("drwxr-xr-x 0/0 0 {when} usr/share/doc/x/"),
            format!("-rw-r--r-- 0/0 6 {when} usr/share/doc/x/README"),
        ];
        let got: Vec<String> = listing(&out)
            .iter()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(got, expected);
        // And by name, root/root.
        let named = Command::new("tar").arg("-tvzf").arg(&out).output().unwrap();
        assert!(String::from_utf8_lossy(&named.stdout)
            .lines()
            .all(|l| l.contains(" root/root ")));
    }

    #[test]
    fn gzip_is_like_gzip_9n() {
        let data = b"colinux ".repeat(1000);
        let gz = gzip(&data);
        // No name flag, mtime 0, maximum compression (XFL 2), OS unknown.
        assert_eq!(&gz[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255]);
        let out = Command::new("gzip")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        out.stdin.as_ref().unwrap().write_all(&gz).unwrap();
        assert_eq!(out.wait_with_output().unwrap().stdout, data);
    }

    #[test]
    fn long_paths_and_link_targets_survive() {
        let t = tempfile::tempdir().unwrap();
        let long = format!("{}/file", "d".repeat(150));
        let target = "t".repeat(200);
        let out = t.path().join("long.tar.gz");
        write_tar_gz(
            &[
                Entry::bytes(&long, "x", 0o644),
                Entry::symlink("link", &target),
            ],
            &out,
            SDE,
        )
        .unwrap();
        let list = listing(&out).join("\n");
        assert!(
            list.contains(&long) && list.contains(&format!("link -> {target}")),
            "{list}"
        );
    }

    #[test]
    fn bad_entries_are_refused_and_leave_nothing() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("bad.tar.gz");
        for (entries, problem) in [
            (vec![Entry::dir("/etc")], "relative path"),
            (vec![Entry::dir("a/../b")], "relative path"),
            (vec![Entry::dir("a//b")], "relative path"),
            (vec![Entry::dir("a"), Entry::dir("a/")], "listed twice"),
            (
                vec![Entry::bytes("a", "", 0o644), Entry::dir("a/b")],
                "not a directory",
            ),
            (vec![Entry::bytes("a", "", 0o100644)], "beyond"),
        ] {
            let e = write_tar_gz(&entries, &out, SDE).unwrap_err().to_string();
            assert!(e.contains(problem), "{e}");
        }
        let missing = t.path().join("missing");
        let e = write_tar_gz(&[Entry::file("a", &missing, 0o644)], &out, SDE)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&missing.display().to_string()), "{e}");
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_tree_packs_with_normalized_modes() {
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join("tree");
        std::fs::create_dir_all(tree.join("lib/modules")).unwrap();
        std::fs::write(tree.join("lib/modules/a.ko"), "ko").unwrap();
        std::fs::write(tree.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            tree.join("run.sh"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        std::os::unix::fs::symlink("lib", tree.join("l")).unwrap();
        let mut entries = entries_from_dir(&tree, "").unwrap();
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let summary: Vec<(String, u32)> =
            entries.iter().map(|e| (e.path.clone(), e.mode)).collect();
        assert_eq!(
            summary,
            [
                ("l".into(), 0o777),
                ("lib".into(), 0o755),
                ("lib/modules".into(), 0o755),
                ("lib/modules/a.ko".into(), 0o644),
                ("run.sh".into(), 0o755),
            ]
        );
        let out = t.path().join("tree.tar.gz");
        write_tar_gz(&entries, &out, SDE).unwrap();
        assert_eq!(listing(&out).len(), 5);
    }
}
