//! The shape every stage shares (docs/design.md §3): inputs, then a cache key,
//! then outputs published atomically, then a manifest.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The workspace root: stages work relative to it wherever they are run from.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

/// A stage's `--output DIR` (dist's `--out`), checked before anything is
/// built: it must name a directory to create or replace, beside others.
/// Returns it absolute.
pub fn output_dir(dir: &Path, flag: &str) -> Result<PathBuf> {
    let shown = dir.display();
    let absolute = std::path::absolute(dir).with_context(|| format!("{flag} {shown}"))?;
    let named = dir
        .components()
        .next_back()
        .is_some_and(|c| matches!(c, std::path::Component::Normal(_)));
    if !named {
        bail!("{flag} {shown}: name the directory to write, such as target/out (not /, . or ..)");
    }
    if absolute.exists() && !absolute.is_dir() {
        bail!("{flag} {shown}: a file is there; name a directory");
    }
    match absolute.parent() {
        Some(parent) if parent.is_dir() => Ok(absolute),
        Some(parent) => bail!(
            "{flag} {shown}: {} does not exist; create it first",
            parent.display()
        ),
        None => bail!("{flag} {shown}: name a directory below /"),
    }
}

/// Where stages keep what survives between runs (sources, build trees).
pub fn cache_dir() -> PathBuf {
    root().join("target/cache")
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A sha256 over everything that determines a stage's outputs. Each part is
/// labelled and length-prefixed, so no two different input sets collide.
pub struct CacheKey {
    hasher: Sha256,
    /// The inputs, for the manifest.
    pub inputs: Vec<Value>,
}

impl CacheKey {
    pub fn new(stage: &str) -> CacheKey {
        let mut key = CacheKey {
            hasher: Sha256::new(),
            inputs: Vec::new(),
        };
        key.value("stage", stage);
        key
    }

    pub fn value(&mut self, label: &str, value: &str) {
        for part in [label, value] {
            self.hasher.update((part.len() as u64).to_le_bytes());
            self.hasher.update(part.as_bytes());
        }
    }

    /// Hashes a file's contents under its path relative to the workspace.
    pub fn file(&mut self, path: &Path) -> Result<String> {
        let name = path.strip_prefix(root()).unwrap_or(path).display();
        self.file_as(&name.to_string(), path)
    }

    /// Hashes a file's contents under `name`, for a file whose place is
    /// not what matters (a build's output, found in different target
    /// directories by a build and its verification).
    pub fn file_as(&mut self, name: &str, path: &Path) -> Result<String> {
        let sha = sha256_file(path)?;
        self.value(name, &sha);
        self.inputs.push(json!({ "path": name, "sha256": sha }));
        Ok(sha)
    }

    pub fn finish(self) -> (String, Vec<Value>) {
        (hex(&self.hasher.finalize()), self.inputs)
    }
}

/// `SOURCE_DATE_EPOCH` from the environment, else the time of the last
/// commit that touched `inputs` (else of the last commit at all). Keying it
/// to the stage's own inputs keeps unrelated commits from forcing rebuilds.
pub fn source_date_epoch(inputs: &[&Path]) -> Result<u64> {
    if let Some(v) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        return v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"));
    }
    let last_commit = |paths: &[&Path]| -> Option<u64> {
        let out = Command::new("git")
            .args(["log", "-1", "--format=%ct", "--"])
            .args(paths)
            .current_dir(root())
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    last_commit(inputs).or_else(|| last_commit(&[])).context(
        "cannot find the last commit's time (is this a git checkout?): set SOURCE_DATE_EPOCH",
    )
}

/// The first line `program --version` prints, else `program -V` (mke2fs
/// and other e2fsprogs tools), on stdout or stderr: for cache keys and
/// manifests.
pub fn tool_version(program: &str) -> String {
    ["--version", "-V"]
        .iter()
        .find_map(|flag| {
            let out = Command::new(program).arg(flag).output().ok()?;
            if !out.status.success() {
                return None;
            }
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8(text)
                .ok()?
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "not installed".into())
}

/// Runs another stage as `cargo xtask ARGS…` would from the workspace's
/// root (relative paths in ARGS are the repository's), with its own
/// progress and no-op check.
pub fn run_xtask(args: &[&str]) -> Result<()> {
    let xtask = std::env::current_exe()?;
    let status = Command::new(&xtask)
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("cannot run {}", xtask.display()))?;
    if !status.success() {
        bail!("cargo xtask {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Whether this process runs as root (installs, chroots, mounts).
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The cargo that runs this xtask (not whatever `cargo` is first on PATH).
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The program's path if it is on PATH.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

const MANIFEST: &str = "manifest.json";
/// The outputs' sha256 in `sha256sum --check` form.
const SUMS: &str = "SHA256SUMS";

/// True if `dest` holds a manifest for `key` and every output it lists is
/// there with the recorded sha256.
fn up_to_date(dest: &Path, key: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(dest.join(MANIFEST)) else {
        return false;
    };
    let Ok(manifest) = serde_json::from_str::<Value>(&text) else {
        return false;
    };
    if manifest["cache_key"] != key {
        return false;
    }
    let Some(outputs) = manifest["outputs"].as_array() else {
        return false;
    };
    outputs.iter().all(|o| {
        let (Some(name), Some(sha)) = (o["path"].as_str(), o["sha256"].as_str()) else {
            return false;
        };
        sha256_file(&dest.join(name)).is_ok_and(|s| s == sha)
    })
}

/// Every file in `dir`, sorted by name, with its sha256 and size.
fn hash_outputs(dir: &Path) -> Result<Vec<Value>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let path = dir.join(&name);
            let size = std::fs::metadata(&path)?.len();
            Ok(json!({ "path": name, "sha256": sha256_file(&path)?, "size": size }))
        })
        .collect()
}

/// Signs a finished output directory in place (dist's signatures).
pub type Seal<'a> = &'a dyn Fn(&Path) -> Result<()>;

/// Writes SHA256SUMS and the manifest into `staging` (each listing every
/// file there, hashed once), runs `seal` on it (dist signs them there; what
/// it adds is listed in neither), and moves `staging` into place as `dest`,
/// replacing any old one.
fn publish_sealed(staging: &Path, dest: &Path, manifest: Value, seal: Seal) -> Result<()> {
    write_sums_and_manifest(staging, manifest)?;
    seal(staging)?;
    let old = dest.with_extension("old");
    let _ = std::fs::remove_dir_all(&old);
    if dest.exists() {
        std::fs::rename(dest, &old)
            .with_context(|| format!("cannot move {} aside", dest.display()))?;
    }
    std::fs::rename(staging, dest).with_context(|| format!("cannot publish {}", dest.display()))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

fn write_sums_and_manifest(staging: &Path, mut manifest: Value) -> Result<()> {
    let mut outputs = hash_outputs(staging)?;
    let sums: String = outputs
        .iter()
        .map(|o| {
            format!(
                "{}  {}\n",
                o["sha256"].as_str().unwrap_or_default(),
                o["path"].as_str().unwrap_or_default()
            )
        })
        .collect();
    std::fs::write(staging.join(SUMS), &sums)?;
    outputs
        .push(json!({ "path": SUMS, "sha256": hex(&Sha256::digest(&sums)), "size": sums.len() }));
    manifest["outputs"] = Value::Array(outputs);
    std::fs::write(
        staging.join(MANIFEST),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )?;
    Ok(())
}

/// Fails unless every file of `rebuilt` is in `dest` with the same
/// sha256, and the other way round; SHA256SUMS and the manifest aside
/// (they follow from the other files, and from inputs that are the same
/// when `dest` is current). The error names each file that differs, with
/// both sha256s.
pub fn compare(rebuilt: &Path, dest: &Path) -> Result<()> {
    report_differences(
        &shas(&hash_outputs(dest)?),
        &shas(&hash_outputs(rebuilt)?),
        rebuilt,
        dest,
    )
}

/// Name → sha256 of outputs, SHA256SUMS and the manifest aside.
fn shas(outputs: &[Value]) -> std::collections::BTreeMap<String, String> {
    outputs
        .iter()
        .filter_map(|o| {
            Some((
                o["path"].as_str()?.to_string(),
                o["sha256"].as_str()?.to_string(),
            ))
        })
        .filter(|(name, _)| name != SUMS && name != MANIFEST)
        .collect()
}

fn report_differences(
    published: &std::collections::BTreeMap<String, String>,
    rebuilt_shas: &std::collections::BTreeMap<String, String>,
    rebuilt: &Path,
    dest: &Path,
) -> Result<()> {
    let mut names: Vec<&String> = published.keys().chain(rebuilt_shas.keys()).collect();
    names.sort();
    names.dedup();
    let differences: Vec<String> = names
        .into_iter()
        .filter_map(|name| match (published.get(name), rebuilt_shas.get(name)) {
            (Some(a), Some(b)) if a == b => None,
            (Some(a), Some(b)) => Some(format!("{name}: published {a}, rebuilt {b}")),
            (Some(a), None) => Some(format!("{name}: published {a}, missing from the rebuild")),
            (None, Some(b)) => Some(format!("{name}: not published, rebuilt {b}")),
            (None, None) => None,
        })
        .collect();
    if !differences.is_empty() {
        bail!(
            "the clean rebuild differs from {} in {} file(s) (the rebuilt outputs are kept in {}):\n  {}",
            dest.display(),
            differences.len(),
            rebuilt.display(),
            differences.join("\n  ")
        );
    }
    Ok(())
}

/// One run of a stage: a build that publishes, or (`--verify-reproducible`)
/// a clean rebuild that checks the published outputs are reproducible.
/// The rebuild starts from an empty cache in a directory of its own,
/// `target/cache/verify/<stage>`, so absolute paths differ from the first
/// build's, and compares every output with the published one instead of
/// publishing. Every stage verifies this one way.
pub struct Run {
    stage: &'static str,
    /// The rebuild's directory, when verifying.
    rebuild: Option<PathBuf>,
}

impl Run {
    pub fn new(stage: &'static str, verify: bool) -> Run {
        Run {
            stage,
            rebuild: verify.then(|| cache_dir().join("verify").join(stage)),
        }
    }

    pub fn verifying(&self) -> bool {
        self.rebuild.is_some()
    }

    /// True if the stage has nothing to do: `dest` holds the outputs of
    /// `key`. A verification always rebuilds, but needs those outputs: a
    /// stale or missing one is an error, not a reproducibility failure.
    pub fn up_to_date(&self, dest: &Path, key: &str) -> Result<bool> {
        let current = up_to_date(dest, key);
        if self.verifying() {
            if !current {
                bail!(
                    "{} does not hold the current build to compare with: run `cargo xtask {}` with the same options first",
                    dest.display(),
                    self.stage
                );
            }
            return Ok(false);
        }
        Ok(current)
    }

    /// Where this run keeps its working files: the stage's `cache`, or,
    /// when verifying, the rebuild directory, emptied. Call it once, with
    /// the stage's lock held.
    pub fn work_dir(&self, cache: &Path) -> Result<PathBuf> {
        let Some(dir) = &self.rebuild else {
            return Ok(cache.to_path_buf());
        };
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("cannot empty {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir)?;
        tracing::info!(
            "{}: rebuilding from scratch in {}",
            self.stage,
            dir.display()
        );
        Ok(dir.clone())
    }

    /// A fresh directory for the outputs: beside `dest` to publish from, or
    /// in the rebuild directory.
    pub fn staging(&self, dest: &Path) -> Result<Staging> {
        let Some(dir) = &self.rebuild else {
            return staging(dest);
        };
        // Not hidden: a rebuild that differs is kept there to look into.
        let name = dest.file_name().expect("a named output").to_string_lossy();
        Staging::new(dir, &format!("{name}."))
    }

    /// Publishes `staging` as `dest`, or, when verifying, compares it with
    /// `dest` (keeping it if it differs).
    pub fn finish(&self, staging: Staging, dest: &Path, manifest: Value) -> Result<()> {
        self.finish_sealed(staging, dest, manifest, None)
    }

    /// As `finish`, with `publish_sealed`'s seal; a verification then
    /// seals the rebuild too and compares every file, seal included.
    pub fn finish_sealed(
        &self,
        staging: Staging,
        dest: &Path,
        manifest: Value,
        seal: Option<Seal>,
    ) -> Result<()> {
        if !self.verifying() {
            publish_sealed(&staging.keep(), dest, manifest, seal.unwrap_or(&|_| Ok(())))?;
            tracing::info!("{}: wrote {}", self.stage, dest.display());
            return Ok(());
        }
        // Made as for publishing, so a kept rebuild reads the same; a seal
        // covers SHA256SUMS and the manifest, so comparing its files
        // compares those too.
        let compared = write_sums_and_manifest(staging.path(), manifest)
            .and_then(|()| seal.map_or(Ok(()), |seal| seal(staging.path())))
            .and_then(|()| compare(staging.path(), dest));
        if let Err(e) = compared {
            let _ = staging.keep();
            return Err(e);
        }
        tracing::info!(
            "{}: reproducible: a clean rebuild gives the same outputs as {}",
            self.stage,
            dest.display()
        );
        Ok(())
    }

    /// Ends the run. A verification that got here passed, so its rebuild
    /// directory goes; one that failed keeps it, to look into.
    pub fn done(self) -> Result<()> {
        match &self.rebuild {
            Some(dir) => std::fs::remove_dir_all(dir)
                .with_context(|| format!("cannot remove {}", dir.display())),
            None => Ok(()),
        }
    }
}

/// A fresh staging directory beside `dest`, removed if a stage fails.
/// Staging directories a killed run left there (no live run holds them)
/// are removed first.
fn staging(dest: &Path) -> Result<Staging> {
    let parent = dest.parent().expect("outputs live in a directory");
    std::fs::create_dir_all(parent)?;
    let prefix = staging_prefix(dest);
    let removed = images::leftovers::remove(parent, &prefix, "")
        .with_context(|| format!("cannot clean {}", parent.display()))?;
    if removed > 0 {
        tracing::info!(
            "removed {removed} staging directory(ies) a killed run left in {}",
            parent.display()
        );
    }
    Staging::new(parent, &prefix)
}

fn staging_prefix(dest: &Path) -> String {
    let name = dest.file_name().expect("a named output").to_string_lossy();
    format!(".{name}.")
}

/// A stage's outputs before publishing: removed if the run fails, and held
/// (`images::leftovers`) while the run lives, so that one a killed run left
/// is known for what it is.
pub struct Staging {
    dir: tempfile::TempDir,
    _held: File,
}

impl Staging {
    fn new(parent: &Path, prefix: &str) -> Result<Staging> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(parent)
            .with_context(|| {
                format!("cannot create a staging directory in {}", parent.display())
            })?;
        let held = File::open(dir.path())?;
        images::leftovers::hold(&held)?;
        Ok(Staging { dir, _held: held })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Keeps the directory (to publish, or to look into).
    pub fn keep(self) -> PathBuf {
        self.dir.keep()
    }
}

/// The space a stage's writes need in one directory: checked before they
/// begin, and named when they fail on a full disk anyway.
pub struct Space(images::space::Budget);

impl Space {
    /// Fails with "no space left on DIR (needed about N, free M)" unless
    /// `dir`'s filesystem has about `needed` bytes free.
    pub fn check(dir: &Path, needed: u64) -> Result<Space> {
        Ok(Space(images::space::Budget::check(dir, needed)?))
    }

    /// `e`, or the same one-line error if the disk filled up: an ENOSPC in
    /// its causes, or (tools report it in their own words, on their own
    /// stderr) less than a MiB left there now, before the partial outputs go.
    pub fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        let enospc = e.chain().any(|cause| {
            cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(images::space::is_full)
        });
        let full = images::space::free_bytes(self.0.dir()).is_ok_and(|free| free < 1 << 20);
        if enospc || full {
            return self.0.no_space().into();
        }
        e
    }
}

/// Holds an exclusive lock on `dir` (created if needed) until dropped, so
/// two runs of one stage never build in the same cache at once.
pub fn lock(dir: &Path) -> Result<File> {
    use std::os::unix::io::AsRawFd;
    std::fs::create_dir_all(dir)?;
    let file = File::create(dir.join(".lock"))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        tracing::info!("waiting for another run that holds {}", dir.display());
        // SAFETY: as above, now blocking.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!(
                "cannot lock {}: {}",
                dir.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(file)
}

/// Guards a tool that writes its files in place in a cache directory:
/// make, whose compilers write each object where it goes (`as` opens the
/// `.o` itself). Killed midway, it leaves a truncated object newer than
/// its sources, which the next make trusts. A marker is written before
/// the tool runs and removed when the guard is dropped, which SIGKILL
/// skips: a marker found at the start means the last run was killed, and
/// every file it wrote (newer than the marker) is removed, to be made
/// again (ccache makes that cheap).
pub struct InPlaceWrites {
    marker: PathBuf,
}

impl InPlaceWrites {
    /// Removes what a killed run wrote in `dir`, if one was killed. A
    /// stage that writes its own files there before the tool runs calls
    /// this first: written after the marker, they would go too.
    pub fn recover(dir: &Path) -> Result<()> {
        let marker = dir.join(".colinux-writing");
        if let Ok(meta) = std::fs::metadata(&marker) {
            let removed = remove_newer(dir, meta.modified()?)?;
            std::fs::remove_file(&marker)?;
            tracing::info!(
                "the last run in {} was killed: removed the {removed} files it wrote",
                dir.display()
            );
        }
        Ok(())
    }

    pub fn begin(dir: &Path) -> Result<InPlaceWrites> {
        InPlaceWrites::recover(dir)?;
        std::fs::create_dir_all(dir)?;
        let marker = dir.join(".colinux-writing");
        std::fs::write(&marker, "")?;
        Ok(InPlaceWrites { marker })
    }
}

impl Drop for InPlaceWrites {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.marker);
    }
}

/// Removes every file under `dir` modified after `since`; links are
/// not followed (a kernel build directory links to its source tree).
fn remove_newer(dir: &Path, since: std::time::SystemTime) -> Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?; // of the entry itself, never a link's target
        if meta.is_dir() {
            removed += remove_newer(&entry.path(), since)?;
        } else if meta.is_file() && meta.modified()? > since {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Runs a command with its output going to `log`. On failure the error
/// names the command and carries the last 40 lines of the log.
pub fn run_logged(cmd: &mut Command, log: &Path) -> Result<()> {
    let file = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let shown = format!("{cmd:?}");
    let status = cmd
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        bail!(
            "{shown} failed ({status}); the last lines of {}:\n{tail}",
            log.display()
        );
    }
    Ok(())
}

/// The names of a workspace package's binary targets, as cargo sees them
/// (`cargo metadata`, through the `cargo_metadata` crate).
pub fn package_bins(package: &str) -> Result<Vec<String>> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .current_dir(root())
        .no_deps()
        .other_options(["--locked".to_string()])
        .exec()
        .context("cargo metadata failed")?;
    let found = metadata
        .workspace_packages()
        .into_iter()
        .find(|p| p.name.as_str() == package)
        .with_context(|| format!("the workspace has no package {package}"))?;
    let bins: Vec<String> = found
        .targets
        .iter()
        .filter(|t| t.is_kind(cargo_metadata::TargetKind::Bin))
        .map(|t| t.name.clone())
        .collect();
    if bins.is_empty() {
        bail!("the package {package} has no binaries");
    }
    Ok(bins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_changes_the_key() {
        let key = |parts: &[(&str, &str)]| {
            let mut k = CacheKey::new("t");
            parts.iter().for_each(|(l, v)| k.value(l, v));
            k.finish().0
        };
        let base = key(&[("a", "1"), ("b", "2")]);
        assert_eq!(base, key(&[("a", "1"), ("b", "2")]));
        assert_ne!(base, key(&[("a", "1"), ("b", "3")]));
        assert_ne!(
            base,
            key(&[("a", "12"), ("b", "")]),
            "labels and values are delimited"
        );
        assert_ne!(base, key(&[("b", "2"), ("a", "1")]));
    }

    #[test]
    fn publish_then_up_to_date() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let stage = staging(&dest).unwrap();
        std::fs::write(stage.path().join("bzImage"), b"kernel").unwrap();
        publish_sealed(&stage.keep(), &dest, json!({ "cache_key": "k1" }), &|_| {
            Ok(())
        })
        .unwrap();
        assert!(up_to_date(&dest, "k1"));
        assert_eq!(
            std::fs::read_to_string(dest.join("SHA256SUMS")).unwrap(),
            format!("{}  bzImage\n", hex(&Sha256::digest(b"kernel")))
        );
        assert!(!up_to_date(&dest, "k2"));
        std::fs::write(dest.join("bzImage"), b"tampered").unwrap();
        assert!(!up_to_date(&dest, "k1"));
    }

    #[test]
    fn a_killed_runs_staging_goes_and_a_live_ones_stays() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let live = staging(&dest).unwrap();
        // What SIGKILL leaves: the directory, its descriptor closed.
        let killed = staging(&dest).unwrap().keep();
        std::fs::write(killed.join("half-written"), "x").unwrap();
        let next = staging(&dest).unwrap();
        assert!(!killed.exists(), "a killed run's staging was kept");
        assert!(live.path().is_dir() && next.path().is_dir());
    }

    #[test]
    fn what_a_killed_tool_wrote_in_place_goes_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let build = dir.path().join("build");
        let source = dir.path().join("source");
        std::fs::create_dir_all(build.join("sub")).unwrap();
        std::fs::create_dir(&source).unwrap();
        std::os::unix::fs::symlink(&source, build.join("source")).unwrap();
        std::fs::write(build.join("sub/old.o"), "whole").unwrap();
        // Past the clock tick file times are taken from.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let first = InPlaceWrites::begin(&build).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(build.join("sub/half.o"), "trunc").unwrap();
        std::fs::write(source.join("newer.c"), "not ours").unwrap();
        std::mem::forget(first); // SIGKILL: no destructor runs

        let second = InPlaceWrites::begin(&build).unwrap();
        assert!(build.join("sub/old.o").exists());
        assert!(
            !build.join("sub/half.o").exists(),
            "a killed run's file was kept"
        );
        assert!(source.join("newer.c").exists(), "a link was followed");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(build.join("sub/done.o"), "whole").unwrap();
        // Finished (or failed) normally: nothing is removed next time.
        drop(second);
        let _third = InPlaceWrites::begin(&build).unwrap();
        assert!(build.join("sub/done.o").exists());
    }

    /// The kernel stage writes its stamp in the build directory before
    /// make: after a killed run, recovered first, the stamp stays.
    #[test]
    fn what_the_stage_writes_after_recovering_stays() {
        let dir = tempfile::tempdir().unwrap();
        let build = dir.path().join("build");
        std::mem::forget(InPlaceWrites::begin(&build).unwrap()); // killed
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(build.join("half.o"), "trunc").unwrap();
        InPlaceWrites::recover(&build).unwrap();
        assert!(!build.join("half.o").exists());
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(build.join(".stamp"), "source").unwrap();
        let _make = InPlaceWrites::begin(&build).unwrap();
        assert!(build.join(".stamp").exists(), "the stage's own file went");
    }

    #[test]
    fn compare_names_each_file_that_differs_with_both_sha256s() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let stage = staging(&dest).unwrap();
        for (name, data) in [("a", "1"), ("b", "2"), ("c", "3")] {
            std::fs::write(stage.path().join(name), data).unwrap();
        }
        publish_sealed(&stage.keep(), &dest, json!({}), &|_| Ok(())).unwrap();
        let rebuilt = dir.path().join("rebuilt");
        std::fs::create_dir(&rebuilt).unwrap();
        for (name, data) in [("a", "1"), ("b", "2"), ("c", "3")] {
            std::fs::write(rebuilt.join(name), data).unwrap();
        }
        compare(&rebuilt, &dest).unwrap();

        std::fs::write(rebuilt.join("b"), "changed").unwrap();
        std::fs::remove_file(rebuilt.join("c")).unwrap();
        std::fs::write(rebuilt.join("d"), "new").unwrap();
        let err = compare(&rebuilt, &dest).unwrap_err().to_string();
        let sha = |data: &str| hex(&Sha256::digest(data));
        assert!(err.contains("in 3 file(s)"), "{err}");
        assert!(!err.contains("\n  a:"), "{err}");
        for line in [
            format!("b: published {}, rebuilt {}", sha("2"), sha("changed")),
            format!("c: published {}, missing from the rebuild", sha("3")),
            format!("d: not published, rebuilt {}", sha("new")),
        ] {
            assert!(err.contains(&line), "{line:?} not in {err}");
        }
    }
}
