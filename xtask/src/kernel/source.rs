//! Where the kernel source comes from, in the order of docs/design.md §4: a
//! tarball or tree given with --source; the pinned upstream tarball, checked
//! against its sha256; Debian's linux-source package, verified by apt.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::stage;

/// `source.toml`: the pins.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pins {
    pub upstream: Upstream,
    pub debian: Debian,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub version: String,
    pub url: String,
    pub sha256: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Debian {
    /// The binary package that ships the source tarball, e.g. linux-source-6.1.
    pub package: String,
    /// The package version the sha256 below belongs to.
    pub version: String,
    /// The sha256 of `/usr/src/<package>.tar.xz` in that version.
    pub sha256: String,
}

impl Pins {
    pub fn load(path: &Path) -> Result<Pins> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("{} is not a valid source pin file", path.display()))
    }
}

pub enum Kind {
    Tarball(PathBuf),
    Tree(PathBuf),
}

pub struct Source {
    pub kind: Kind,
    /// The tarball's sha256, or for a tree a hash of its file list and stats.
    pub sha256: String,
    provider: &'static str,
    version: String,
}

impl Source {
    pub fn describe(&self) -> String {
        let what = match &self.kind {
            Kind::Tarball(p) | Kind::Tree(p) => p.display().to_string(),
        };
        format!(
            "{} {} ({what}, sha256 {})",
            self.provider,
            self.version,
            &self.sha256[..16]
        )
    }

    pub fn manifest(&self) -> Value {
        let path = match &self.kind {
            Kind::Tarball(p) | Kind::Tree(p) => p.display().to_string(),
        };
        json!({ "provider": self.provider, "version": self.version, "path": path, "sha256": self.sha256 })
    }

    /// A pristine, unpacked tree for this source, made once and kept.
    pub fn unpack(&self, cache: &Path) -> Result<PathBuf> {
        let tarball = match &self.kind {
            Kind::Tree(p) => return Ok(p.clone()),
            Kind::Tarball(p) => p,
        };
        let dest = cache.join("pristine").join(&self.sha256[..16]);
        if dest.join("Makefile").is_file() {
            return Ok(dest);
        }
        std::fs::create_dir_all(cache.join("pristine"))?;
        let tmp = tempfile::Builder::new()
            .prefix(".unpack.")
            .tempdir_in(cache.join("pristine"))?;
        let status = Command::new("tar")
            .arg("-xf")
            .arg(tarball)
            .arg("--strip-components=1")
            .arg("-C")
            .arg(tmp.path())
            .status()
            .context("cannot run tar")?;
        if !status.success() || !tmp.path().join("Makefile").is_file() {
            bail!("{} did not unpack into a kernel tree", tarball.display());
        }
        std::fs::rename(tmp.keep(), &dest)?;
        Ok(dest)
    }
}

pub fn resolve(explicit: Option<&Path>, pins: &Pins, cache: &Path) -> Result<Source> {
    if let Some(path) = explicit {
        return given(path, cache);
    }
    if let Some(source) = upstream(&pins.upstream, cache)? {
        return Ok(source);
    }
    debian(&pins.debian, cache)
}

fn given(path: &Path, cache: &Path) -> Result<Source> {
    let path = path
        .canonicalize()
        .with_context(|| format!("--source {}: no such file or directory", path.display()))?;
    if path.is_dir() {
        if !path.join("Makefile").is_file() || !path.join("Kconfig").is_file() {
            bail!(
                "--source {}: not a kernel tree (no Makefile and Kconfig at its top)",
                path.display()
            );
        }
        return Ok(Source {
            sha256: tree_identity(&path)?,
            kind: Kind::Tree(path),
            provider: "tree",
            version: "given".into(),
        });
    }
    Ok(Source {
        sha256: sha256_memo(&path, cache)?,
        kind: Kind::Tarball(path),
        provider: "tarball",
        version: "given".into(),
    })
}

/// The pinned upstream tarball: from the cache, or downloaded once and
/// checked. Unreachable is not an error (the next provider is tried); a
/// sha256 mismatch is.
fn upstream(pin: &Upstream, cache: &Path) -> Result<Option<Source>> {
    if pin.url.is_empty() || pin.sha256.is_empty() {
        return Ok(None);
    }
    let dir = cache.join("sources");
    let tarball = dir.join(format!("linux-{}.tar.xz", pin.version));
    if !tarball.is_file() {
        std::fs::create_dir_all(&dir)?;
        let partial = dir.join(format!(".linux-{}.tar.xz.partial", pin.version));
        let out = Command::new("curl")
            .args(["-fsSL", "--connect-timeout", "15", "--retry", "2", "-o"])
            .arg(&partial)
            .arg(&pin.url)
            .output();
        match out {
            Ok(o) if o.status.success() => std::fs::rename(&partial, &tarball)?,
            Ok(o) => {
                let _ = std::fs::remove_file(&partial);
                let why = String::from_utf8_lossy(&o.stderr);
                tracing::info!("kernel: the pinned upstream tarball is not reachable ({}); using Debian's package", why.trim());
                return Ok(None);
            }
            Err(_) => {
                tracing::info!(
                    "kernel: no curl to fetch the pinned upstream tarball; using Debian's package"
                );
                return Ok(None);
            }
        }
    }
    let sha256 = sha256_memo(&tarball, cache)?;
    if sha256 != pin.sha256 {
        let _ = std::fs::remove_file(&tarball);
        bail!(
            "{} has sha256 {sha256}, but source.toml pins {}: refusing it",
            pin.url,
            pin.sha256
        );
    }
    Ok(Some(Source {
        kind: Kind::Tarball(tarball),
        sha256,
        provider: "upstream",
        version: pin.version.clone(),
    }))
}

/// Debian's linux-source package: the installed one if any (apt verified
/// it when installing), else downloaded with `apt-get download`.
fn debian(pin: &Debian, cache: &Path) -> Result<Source> {
    let tarball_name = format!("usr/src/{}.tar.xz", pin.package);
    let installed = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Abbrev} ${Version}", &pin.package])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .and_then(|s| s.strip_prefix("ii ").map(|v| v.trim().to_string()));
    let (tarball, version) = match installed {
        Some(version) => (Path::new("/").join(&tarball_name), version),
        None => download(pin, cache, &tarball_name)?,
    };
    let sha256 = sha256_memo(&tarball, cache)?;
    if version == pin.version && sha256 != pin.sha256 {
        bail!(
            "{} {version} has {} sha256 {sha256}, but source.toml pins {}: refusing it",
            pin.package,
            tarball.display(),
            pin.sha256
        );
    }
    if version != pin.version {
        tracing::warn!(
            "kernel: Debian's archive now has {} {version}, source.toml pins {}; using {version} (apt verified it); update the pin",
            pin.package,
            pin.version
        );
    }
    Ok(Source {
        kind: Kind::Tarball(tarball),
        sha256,
        provider: "debian",
        version: format!("{} {version}", pin.package),
    })
}

fn download(pin: &Debian, cache: &Path, tarball_name: &str) -> Result<(PathBuf, String)> {
    let dir = cache.join("debian");
    std::fs::create_dir_all(&dir)?;
    let tmp = tempfile::Builder::new()
        .prefix(".download.")
        .tempdir_in(&dir)?;
    let status = Command::new("apt-get")
        .arg("download")
        .arg(&pin.package)
        .current_dir(tmp.path())
        .status()?;
    if !status.success() {
        bail!("apt-get download {} failed: is the Debian archive reachable? (cargo xtask setup installs it instead)", pin.package);
    }
    let deb = std::fs::read_dir(tmp.path())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download produced no .deb")?;
    let version = Command::new("dpkg-deb")
        .arg("-f")
        .arg(&deb)
        .arg("Version")
        .output()?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let script = format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' './{tarball_name}'",
        deb.display(),
        tmp.path().display()
    );
    let status = Command::new("bash")
        .args(["-o", "pipefail", "-c", &script])
        .status()?;
    if !status.success() {
        bail!("{} does not contain {tarball_name}", deb.display());
    }
    let tarball = dir.join(format!("{}_{version}.tar.xz", pin.package));
    std::fs::rename(tmp.path().join(tarball_name), &tarball)?;
    Ok((tarball, version))
}

/// sha256 of a large file, remembered by path, size and mtime so that a
/// no-op run does not hash 140 MB again.
fn sha256_memo(path: &Path, cache: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let id = format!(
        "{} {} {}",
        path.display(),
        meta.len(),
        meta.mtime_nsec() + meta.mtime() * 1_000_000_000
    );
    let memo = cache.join("sha256-memo.json");
    let mut known: serde_json::Map<String, Value> = std::fs::read_to_string(&memo)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    if let Some(sha) = known.get(&id).and_then(Value::as_str) {
        return Ok(sha.to_string());
    }
    let sha = stage::sha256_file(path)?;
    known.insert(id, Value::String(sha.clone()));
    std::fs::create_dir_all(cache)?;
    std::fs::write(&memo, serde_json::to_string_pretty(&known)?)?;
    Ok(sha)
}

/// Identifies an unpacked tree by its file names, sizes and mtimes.
fn tree_identity(dir: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::MetadataExt;
    let mut hasher = Sha256::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut entries = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let meta = e.metadata()?;
            if meta.is_dir() {
                if e.file_name() != ".git" {
                    stack.push(e.path());
                }
            } else {
                entries.push(format!(
                    "{} {} {}",
                    e.path().strip_prefix(dir)?.display(),
                    meta.len(),
                    meta.mtime()
                ));
            }
        }
    }
    entries.sort();
    entries.iter().for_each(|e| hasher.update(e.as_bytes()));
    Ok(stage::hex(&hasher.finalize()))
}
