//! The Debian package (.deb) for Linux hosts.
//!
//! Built with the Debian tools themselves: `dpkg-shlibdeps` finds the
//! shared libraries' packages and versions, `dpkg-deb --build
//! --root-owner-group` packs, and `lintian` checks ([`lintian`]). The
//! package is reproducible: the data's mtimes are `SOURCE_DATE_EPOCH`
//! (dpkg-deb clamps to it as well), every owner is root, and xz runs with
//! one thread, so the bytes do not depend on the machine's core count.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tarball::{self, Content, Entry};

/// One of the packages a release ships: what its control file says
/// beyond the version, the size and the shared libraries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Package {
    pub name: &'static str,
    pub architecture: &'static str,
    /// Beyond the shared libraries' packages, which dpkg-shlibdeps finds.
    pub depends: &'static str,
    pub recommends: &'static str,
    pub description: &'static str,
    /// `dpkg-deb -Z… -z…`: the image is zstd already, and xz over it
    /// would take half a minute to gain nothing (lintian refuses none).
    pub compression: [&'static str; 2],
}

/// The runtime: the daemon runs its guests on QEMU (and exits with code
/// 3, naming this package, without it).
pub const RUNTIME: Package = Package {
    name: "colinux",
    architecture: "amd64",
    depends: "qemu-system-x86",
    recommends: "colinux-image-debian",
    description: include_str!("../debian/description"),
    compression: ["-Zxz", "-z6"],
};

/// The stock root filesystem, which `colinux-daemon --create` unpacks;
/// any QEMU can boot it too, so it only recommends the runtime.
pub const IMAGE_DEBIAN: Package = Package {
    name: "colinux-image-debian",
    architecture: "all",
    depends: "",
    recommends: "colinux",
    description: include_str!("../debian/image-debian/description"),
    compression: ["-Zgzip", "-z1"],
};

/// What [`build_deb`] packs.
#[derive(Debug, Clone)]
pub struct DebSpec {
    pub package: Package,
    /// The Debian version (see [`deb_version`]), e.g. `0.1.0`.
    pub version: String,
    pub source_date_epoch: u64,
    /// `Name <address>`, as in the changelog (see [`changelog`]).
    pub maintainer: String,
    /// The package's files ([`crate::linux::linux_layout`]); regular files
    /// under `etc/` become conffiles.
    pub entries: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Entries(#[from] tarball::Error),
    #[error("{command}: {problem}")]
    Tool { command: String, problem: String },
    #[error("{}: lintian reports errors: {}", deb.display(), errors.join("; "))]
    Lintian { deb: PathBuf, errors: Vec<String> },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The Debian version for a cargo version: a semver pre-release
/// (`1.0.0-rc.1`) sorts before its release in Debian only with `~`.
/// No `-`, so the package is native and its changelog is `changelog.gz`.
pub fn deb_version(cargo_version: &str) -> String {
    cargo_version.replacen('-', "~", 1)
}

/// The changelog's file name in `/usr/share/doc/PACKAGE/`: a native
/// version (no Debian revision) has `changelog.gz`, lintian's
/// `wrong-name-for-changelog-of-native-package` otherwise.
pub fn changelog_name(version: &str) -> &'static str {
    if version.contains('-') {
        "changelog.Debian.gz"
    } else {
        "changelog.gz"
    }
}

/// A one-entry Debian changelog for `version`, dated `SOURCE_DATE_EPOCH`
/// (gzip it with [`tarball::gzip`], which is `gzip -9n`).
pub fn changelog(
    package: &Package,
    version: &str,
    maintainer: &str,
    source_date_epoch: u64,
) -> String {
    format!(
        "{} ({version}) unstable; urgency=medium\n\n  \
         * Release {version}, built by cargo xtask dist.\n\n \
         -- {maintainer}  {}\n",
        package.name,
        Utc::new(source_date_epoch).rfc2822()
    )
}

/// A UTC time, for the changelog and the man pages' dates.
pub(crate) struct Utc {
    year: i64,
    month: u32,
    day: u32,
    secs_of_day: u64,
    weekday: usize,
}

impl Utc {
    pub(crate) fn new(epoch: u64) -> Self {
        let days = (epoch / 86_400) as i64;
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        Utc {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            secs_of_day: epoch % 86_400,
            // 1970-01-01 was a Thursday.
            weekday: ((days + 4) % 7) as usize,
        }
    }

    pub(crate) fn iso_date(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    fn rfc2822(&self) -> String {
        const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let s = self.secs_of_day;
        format!(
            "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
            DAYS[self.weekday],
            self.day,
            MONTHS[self.month as usize - 1],
            self.year,
            s / 3600,
            s / 60 % 60,
            s % 60
        )
    }
}

/// The package's file name, such as `colinux_<version>_amd64.deb`.
pub fn deb_file_name(package: &Package, version: &str) -> String {
    format!("{}_{version}_{}.deb", package.name, package.architecture)
}

/// Builds `out_dir/`[`deb_file_name`] and returns its path.
/// Works in a temporary directory inside `out_dir` and renames the
/// finished package into place.
pub fn build_deb(spec: &DebSpec, out_dir: &Path) -> Result<PathBuf, Error> {
    let entries = tarball::normalize(&spec.entries)?;
    let work = tempfile::Builder::new()
        .prefix(".colinux-deb.")
        .tempdir_in(out_dir)
        .map_err(io_error(out_dir))?;
    let root = work.path().join("root");
    stage(&entries, &root, spec.source_date_epoch)?;

    let control_dir = root.join("DEBIAN");
    std::fs::create_dir(&control_dir).map_err(io_error(&control_dir))?;
    let write = |name: &str, text: &str| {
        let path = control_dir.join(name);
        std::fs::write(&path, text).map_err(io_error(&path))
    };
    let shlibs = shlib_depends(&spec.package, &entries, &root, work.path())?;
    write("control", &control(spec, &entries, &shlibs))?;
    write("md5sums", &md5sums(&entries, &root)?)?;
    let conffiles = conffiles(&entries);
    if !conffiles.is_empty() {
        write("conffiles", &conffiles)?;
    }

    let name = deb_file_name(&spec.package, &spec.version);
    let built = work.path().join(&name);
    run(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group", "--threads-max=1"])
        .args(spec.package.compression)
        .arg(&root)
        .arg(&built)
        .env("SOURCE_DATE_EPOCH", spec.source_date_epoch.to_string())
        .env("LC_ALL", "C"))?;
    let out = out_dir.join(&name);
    std::fs::rename(&built, &out).map_err(io_error(&out))?;
    Ok(out)
}

/// Writes `entries` (normalized) under `root` with their modes, and the
/// mtime `sde` on files and directories (symlinks are made now, after it,
/// and dpkg-deb clamps them).
fn stage(entries: &[Entry], root: &Path, sde: u64) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir(root).map_err(io_error(root))?;
    for entry in entries {
        let path = root.join(&entry.path);
        match &entry.content {
            Content::Dir => std::fs::create_dir(&path).map_err(io_error(&path))?,
            Content::Bytes(bytes) => std::fs::write(&path, bytes).map_err(io_error(&path))?,
            Content::File(source) => {
                std::fs::copy(source, &path).map_err(io_error(source))?;
            }
            Content::Symlink(target) => {
                std::os::unix::fs::symlink(target, &path).map_err(io_error(&path))?;
                continue;
            }
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(entry.mode))
            .map_err(io_error(&path))?;
    }
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(sde);
    // Deepest first: setting a file's time does not touch its directory's,
    // but creating it did.
    for entry in entries.iter().rev() {
        if !matches!(entry.content, Content::Symlink(_)) {
            let path = root.join(&entry.path);
            std::fs::File::open(&path)
                .and_then(|f| f.set_modified(time))
                .map_err(io_error(&path))?;
        }
    }
    Ok(())
}

/// Runs `cmd`; a failure names the command and its last output lines.
fn run(cmd: &mut Command) -> Result<String, Error> {
    let shown = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let output = cmd.output().map_err(|e| Error::Tool {
        command: shown.clone(),
        problem: format!("cannot run it: {e}"),
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(Error::Tool {
            command: shown,
            problem: format!(
                "{}: {}",
                output.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
            ),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The ELF files' library dependencies, from `dpkg-shlibdeps` (which
/// reads the host's symbols files: `libc6 (>= 2.34), libgcc-s1 (>= 4.2)`).
fn shlib_depends(
    package: &Package,
    entries: &[Entry],
    root: &Path,
    work: &Path,
) -> Result<String, Error> {
    let mut elves = Vec::new();
    for entry in entries {
        if matches!(entry.content, Content::Bytes(_) | Content::File(_)) {
            let path = root.join(&entry.path);
            let mut magic = [0u8; 4];
            let is_elf = std::fs::File::open(&path)
                .and_then(|mut f| io::Read::read_exact(&mut f, &mut magic))
                .is_ok()
                && &magic == b"\x7fELF";
            if is_elf {
                elves.push(path);
            }
        }
    }
    if elves.is_empty() {
        return Ok(String::new());
    }
    // dpkg-shlibdeps wants a source package around it: a minimal one.
    let source = work.join("shlibs");
    let debian = source.join("debian");
    std::fs::create_dir_all(&debian).map_err(io_error(&debian))?;
    let control = debian.join("control");
    std::fs::write(
        &control,
        format!(
            "Source: {0}\n\nPackage: {0}\nArchitecture: {1}\n",
            package.name, package.architecture
        ),
    )
    .map_err(io_error(&control))?;
    let out = run(Command::new("dpkg-shlibdeps")
        .arg("-O")
        .args(elves.iter().map(|e| format!("-e{}", e.display())))
        .current_dir(&source)
        .env("LC_ALL", "C"))?;
    Ok(out
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .unwrap_or_default()
        .to_string())
}

fn control(spec: &DebSpec, entries: &[Entry], shlibs: &str) -> String {
    let package = &spec.package;
    let mut text = format!(
        "Package: {}\n\
         Version: {}\n\
         Architecture: {}\n\
         Maintainer: {}\n\
         Installed-Size: {}\n",
        package.name,
        spec.version,
        package.architecture,
        spec.maintainer,
        installed_size_kib(entries),
    );
    let depends: Vec<&str> = [shlibs, package.depends]
        .into_iter()
        .filter(|d| !d.is_empty())
        .collect();
    for (field, value) in [
        ("Depends", depends.join(", ")),
        ("Recommends", package.recommends.to_string()),
    ] {
        if !value.is_empty() {
            text.push_str(&format!("{field}: {value}\n"));
        }
    }
    text.push_str(&format!(
        "Section: otherosfs\nPriority: optional\nDescription: {}",
        package.description
    ));
    text
}

/// As dpkg-gencontrol counts it: each file's size in KiB rounded up, and
/// 1 KiB for every other entry.
fn installed_size_kib(entries: &[Entry]) -> u64 {
    entries
        .iter()
        .map(|e| match &e.content {
            Content::Bytes(b) => (b.len() as u64).div_ceil(1024),
            Content::File(f) => std::fs::metadata(f).map_or(1, |m| m.len().div_ceil(1024)),
            Content::Dir | Content::Symlink(_) => 1,
        })
        .sum()
}

/// `md5sum` of every regular file, relative to the root, as dpkg wants it.
fn md5sums(entries: &[Entry], root: &Path) -> Result<String, Error> {
    let files: Vec<&str> = entries
        .iter()
        .filter(|e| matches!(e.content, Content::Bytes(_) | Content::File(_)))
        .map(|e| e.path.as_str())
        .collect();
    if files.is_empty() {
        return Ok(String::new());
    }
    run(Command::new("md5sum")
        .arg("--")
        .args(&files)
        .current_dir(root)
        .env("LC_ALL", "C"))
}

/// Regular files under etc/: the administrator's to change, and dpkg keeps
/// their changes on upgrade.
fn conffiles(entries: &[Entry]) -> String {
    let files: BTreeSet<String> = entries
        .iter()
        .filter(|e| {
            e.path.starts_with("etc/") && matches!(e.content, Content::Bytes(_) | Content::File(_))
        })
        .map(|e| format!("/{}\n", e.path))
        .collect();
    files.into_iter().collect()
}

/// What lintian said about a package.
#[derive(Debug, Default)]
pub struct Lintian {
    /// Every tag line (`E: …`, `W: …`, `I: …`, `P: …`, `O: …` for overridden).
    pub lines: Vec<String>,
}

impl Lintian {
    pub fn errors(&self) -> Vec<&str> {
        self.with_level("E: ")
    }

    pub fn warnings(&self) -> Vec<&str> {
        self.with_level("W: ")
    }

    fn with_level(&self, prefix: &str) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|l| l.starts_with(prefix))
            .map(String::as_str)
            .collect()
    }
}

/// Runs `lintian` on `deb` (all tags, overrides shown) and fails if it
/// reports any error; the warnings are the caller's to show.
pub fn lintian(deb: &Path) -> Result<Lintian, Error> {
    let mut cmd = Command::new("lintian");
    cmd.args([
        "--display-info",
        "--display-experimental",
        "--pedantic",
        "--show-overrides",
        "--no-tag-display-limit",
    ])
    .arg(deb)
    .env("LC_ALL", "C.UTF-8");
    let shown = format!("lintian {}", deb.display());
    let output = cmd.output().map_err(|e| Error::Tool {
        command: shown.clone(),
        problem: format!("cannot run it: {e}"),
    })?;
    let report = Lintian {
        lines: String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(String::from)
            .collect(),
    };
    let errors: Vec<String> = report.errors().into_iter().map(String::from).collect();
    if !errors.is_empty() {
        return Err(Error::Lintian {
            deb: deb.to_path_buf(),
            errors,
        });
    }
    // Exit 1 with no error tag: lintian itself failed.
    if !output.status.success() && report.lines.is_empty() {
        return Err(Error::Tool {
            command: shown,
            problem: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_for_the_changelog_and_man_pages() {
        assert_eq!(Utc::new(0).rfc2822(), "Thu, 01 Jan 1970 00:00:00 +0000");
        let t = Utc::new(1_795_968_636);
        assert_eq!(t.iso_date(), "2026-11-29");
        assert_eq!(t.rfc2822(), "Sun, 29 Nov 2026 16:10:36 +0000");
        assert_eq!(Utc::new(951_782_400).iso_date(), "2000-02-29");
    }

    #[test]
    fn versions_and_the_changelog() {
        assert_eq!(deb_version("0.1.0"), "0.1.0");
        assert_eq!(deb_version("1.0.0-rc.1"), "1.0.0~rc.1");
        assert_eq!(changelog_name("0.1.0"), "changelog.gz");
        assert_eq!(changelog_name("0.1.0-1"), "changelog.Debian.gz");
        assert_eq!(
            changelog(&RUNTIME, "0.1.0", "A <a@example.org>", 0),
            "colinux (0.1.0) unstable; urgency=medium\n\n  * Release 0.1.0, built by cargo xtask dist.\n\n -- A <a@example.org>  Thu, 01 Jan 1970 00:00:00 +0000\n"
        );
    }

    #[test]
    fn control_fields_sizes_and_conffiles() {
        let entries = tarball::normalize(&[
            Entry::bytes("usr/bin/x", vec![0; 1025], 0o755),
            Entry::bytes("etc/colinux/a.conf", "", 0o644),
            Entry::symlink("usr/bin/y", "x"),
        ])
        .unwrap();
        // etc, etc/colinux, usr, usr/bin, the link: 1 each; x: 2; a.conf: 0.
        assert_eq!(installed_size_kib(&entries), 7);
        assert_eq!(conffiles(&entries), "/etc/colinux/a.conf\n");
        let spec = DebSpec {
            package: RUNTIME,
            version: "1.2.3".into(),
            source_date_epoch: 0,
            maintainer: "A <a@example.org>".into(),
            entries: vec![],
        };
        let text = control(&spec, &entries, "libc6 (>= 2.34)");
        assert!(text.starts_with("Package: colinux\nVersion: 1.2.3\nArchitecture: amd64\n"));
        assert!(text.contains(
            "\nDepends: libc6 (>= 2.34), qemu-system-x86\nRecommends: colinux-image-debian\n"
        ));
        let image = control(
            &DebSpec {
                package: IMAGE_DEBIAN,
                ..spec
            },
            &entries,
            "",
        );
        assert!(
            image.contains("\nArchitecture: all\n")
                && image.contains("\nRecommends: colinux\nSection: ")
                && !image.contains("Depends:"),
            "{image}"
        );
        assert!(text.contains("\nInstalled-Size: 7\n") && text.ends_with(".conf.\n"));
    }
}
