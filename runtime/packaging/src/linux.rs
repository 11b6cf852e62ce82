//! The Linux host layout, shared by the .deb and the tarball: one list of
//! [`Entry`]s, so both ship the same files with the same modes.
//!
//! | path | what |
//! |---|---|
//! | `usr/bin/colinux-daemon`, `usr/bin/colinux-console` | the runtime, stripped |
//! | `usr/lib/colinux/vmlinuz-i386`, `usr/lib/colinux/vmlinuz-x86_64` | the guest kernels (the kernel stage's `bzImage`s) |
//! | `usr/lib/systemd/system/colinux@.service` | `colinux@NAME` runs `/etc/colinux/NAME.conf` |
//! | `usr/share/man/man1/colinux-{daemon,console}.1.gz` | from the clap definitions |
//! | `usr/share/doc/colinux/` | `README.md`, `README.daemon.md`, `copyright`, the changelog, `examples/guest.conf` |
//! | `etc/colinux/` | the guests' config files (empty) |
//!
//! The stock image is a package of its own ([`image_layout`],
//! `colinux-image-debian`): `usr/share/colinux/debian.ext4.zst`, where
//! `colinux-daemon --create` looks for it. The tarball holds both layouts.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::deb;
use crate::tarball::{self, Entry};

pub const DAEMON: &str = "usr/bin/colinux-daemon";
pub const CONFIG_DIR: &str = "etc/colinux";
pub const KERNEL_DIR: &str = "usr/lib/colinux";
/// `/usr/lib`, not `/lib`: bookworm's systemd reads both, lintian accepts
/// both and calls `/usr/lib/systemd/system` the standard, and the package
/// moves no file between the two (the usrmerge moratorium's concern).
pub const UNIT: &str = "usr/lib/systemd/system/colinux@.service";
pub const DOC_DIR: &str = "usr/share/doc/colinux";
/// The stock image's place; the daemon's `--create` finds it there,
/// relative to itself (`../share/colinux/`).
pub const IMAGE: &str = "usr/share/colinux/debian.ext4.zst";

/// Where the layout's files come from.
#[derive(Debug, Clone)]
pub struct LinuxInputs {
    /// The runtime stage's output for x86_64-unknown-linux-gnu
    /// (target/runtime/x86_64-unknown-linux-gnu/): colinux-daemon and
    /// colinux-console, unstripped there and stripped here.
    pub runtime_dir: PathBuf,
    /// The kernel stage's target/kernel/i386/bzImage.
    pub kernel_i386: PathBuf,
    /// The kernel stage's target/kernel/x86_64/bzImage.
    pub kernel_x86_64: PathBuf,
    /// The repository root: README.md and runtime/daemon/README.md.
    pub repo_root: PathBuf,
    /// The Debian version ([`deb::deb_version`] of the workspace version).
    pub version: String,
    /// For the changelog: `Name <address>`.
    pub maintainer: String,
    pub source_date_epoch: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("strip {}: {problem}", binary.display())]
    Strip { binary: PathBuf, problem: String },
}

/// The layout's entries, in no particular order (the writers sort them).
pub fn linux_layout(inputs: &LinuxInputs) -> Result<Vec<Entry>, Error> {
    let sde = inputs.source_date_epoch;
    let doc = |name: &str| format!("{DOC_DIR}/{name}");
    let mut entries = Vec::new();
    for name in ["colinux-daemon", "colinux-console"] {
        let binary = inputs.runtime_dir.join(name);
        entries.push(Entry::bytes(
            &format!("usr/bin/{name}"),
            stripped(&binary)?,
            0o755,
        ));
    }
    for (arch, kernel) in [
        ("i386", &inputs.kernel_i386),
        ("x86_64", &inputs.kernel_x86_64),
    ] {
        readable(kernel)?;
        entries.push(Entry::file(
            &format!("{KERNEL_DIR}/vmlinuz-{arch}"),
            kernel,
            0o644,
        ));
    }
    let unit = colinux_daemon::service::template_unit_text(
        &Path::new("/").join(DAEMON),
        &Path::new("/").join(CONFIG_DIR),
    );
    entries.push(Entry::bytes(UNIT, unit, 0o644));
    let date = deb::Utc::new(sde).iso_date();
    for (name, page) in crate::manpage::pages(&date) {
        entries.push(Entry::bytes(
            &format!("usr/share/man/man1/{name}"),
            page,
            0o644,
        ));
    }
    for (name, source) in [
        ("README.md", "README.md"),
        ("README.daemon.md", "runtime/daemon/README.md"),
    ] {
        let path = inputs.repo_root.join(source);
        readable(&path)?;
        entries.push(Entry::file(&doc(name), path, 0o644));
    }
    entries.push(Entry::bytes(
        &doc("copyright"),
        include_str!("../debian/copyright"),
        0o644,
    ));
    entries.push(changelog_entry(&deb::RUNTIME, inputs));
    entries.push(Entry::bytes(
        &doc("examples/guest.conf"),
        include_str!("../debian/examples/guest.conf"),
        0o644,
    ));
    entries.push(Entry::dir(CONFIG_DIR));
    Ok(entries)
}

/// The stock image's package: the compressed image the image stage
/// published (`debian.ext4.zst`) and its package list.
pub fn image_layout(
    inputs: &LinuxInputs,
    image: &Path,
    packages: &Path,
) -> Result<Vec<Entry>, Error> {
    let doc = |name: &str| format!("usr/share/doc/{}/{name}", deb::IMAGE_DEBIAN.name);
    readable(image)?;
    readable(packages)?;
    Ok(vec![
        Entry::file(IMAGE, image, 0o644),
        Entry::file(&doc("debian.packages"), packages, 0o644),
        Entry::bytes(
            &doc("copyright"),
            include_str!("../debian/image-debian/copyright"),
            0o644,
        ),
        changelog_entry(&deb::IMAGE_DEBIAN, inputs),
    ])
}

fn changelog_entry(package: &deb::Package, inputs: &LinuxInputs) -> Entry {
    let text = deb::changelog(
        package,
        &inputs.version,
        &inputs.maintainer,
        inputs.source_date_epoch,
    );
    Entry::bytes(
        &format!(
            "usr/share/doc/{}/{}",
            package.name,
            deb::changelog_name(&inputs.version)
        ),
        tarball::gzip(text.as_bytes()),
        0o644,
    )
}

/// Fails early, naming the file, rather than halfway through a package.
fn readable(path: &Path) -> Result<(), Error> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// `binary` without its symbols, as Debian ships executables (dh_strip's
/// options); the runtime stage keeps them for reading crash reports.
fn stripped(binary: &Path) -> Result<Vec<u8>, Error> {
    readable(binary)?;
    let failed = |problem: String| Error::Strip {
        binary: binary.to_path_buf(),
        problem,
    };
    let dir = tempfile::tempdir().map_err(|e| failed(format!("temporary directory: {e}")))?;
    let out = dir.path().join("stripped");
    let output = Command::new("strip")
        .args(["--remove-section=.comment", "--remove-section=.note", "-o"])
        .arg(&out)
        .arg(binary)
        .output()
        .map_err(|e| failed(format!("cannot run strip: {e}")))?;
    if !output.status.success() {
        return Err(failed(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    std::fs::read(&out).map_err(|e| failed(format!("{}: {e}", out.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example config is what the daemon's own parser accepts.
    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../debian/examples/guest.conf");
        let settings =
            colinux_config::parse_str(text, Path::new("/etc/colinux/guest.conf")).unwrap();
        let shown = settings.to_string();
        assert!(
            shown.contains("/usr/lib/colinux/vmlinuz-i386")
                && shown.contains("/var/lib/colinux/debian.ext4"),
            "{shown}"
        );
    }

    #[test]
    fn missing_inputs_are_named() {
        let t = tempfile::tempdir().unwrap();
        let inputs = LinuxInputs {
            runtime_dir: t.path().into(),
            kernel_i386: t.path().join("k"),
            kernel_x86_64: t.path().join("k"),
            repo_root: t.path().into(),
            version: "0.1.0".into(),
            maintainer: "A <a@example.org>".into(),
            source_date_epoch: 0,
        };
        let e = linux_layout(&inputs).unwrap_err().to_string();
        assert!(
            e.starts_with(&t.path().join("colinux-daemon").display().to_string()),
            "{e}"
        );
    }
}
