//! `cargo xtask kernel`: the patched guest kernel, from verified source.
//!
//! Phases: fetch (a verified tarball), unpack (a pristine tree, once per
//! source), patch (our series, applied so that only files whose content
//! changed get a new mtime), config (tinyconfig + our fragments, checked),
//! build (out of tree, reproducible, ccache when present), install
//! (modules into a staging root) and publish (`target/kernel/<arch>/`).

mod kconfig;
mod series;
pub mod source;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use colinux_packaging::tarball;
use serde_json::json;

use crate::progress::Phase;
use crate::stage::{self, run_logged, CacheKey};

/// The patch series the pipeline builds unless told otherwise (the image
/// stage reads its version too: the kernel its images boot).
pub const PATCHES: &str = "kernel-patches/linux-6.1";

/// Build the patched guest kernel (bzImage, modules, .config, System.map)
/// into target/kernel/<arch>/. A rebuild with unchanged inputs is a no-op;
/// a changed patch or fragment rebuilds incrementally.
#[derive(clap::Args)]
pub struct Args {
    /// The guest architecture.
    #[arg(long, value_enum, default_value_t = Arch::I386)]
    arch: Arch,
    /// Use this kernel source (a .tar.xz/.tar.gz/.tar tarball or an unpacked
    /// tree) instead of the pinned upstream tarball or Debian's linux-source.
    #[arg(long, value_name = "PATH")]
    source: Option<PathBuf>,
    /// The patch series directory (source.toml, series, patches, config/).
    #[arg(long, value_name = "DIR", default_value = PATCHES)]
    patches: PathBuf,
    /// Where to publish, instead of target/kernel/<arch>.
    #[arg(long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// Apply the patch series in dry-run mode against the source, report
    /// each patch, and build nothing.
    #[arg(long)]
    check_patches: bool,
    /// Build again from scratch, without ccache, in a build directory
    /// elsewhere (target/cache/verify/kernel), and fail unless every output
    /// is bit-identical to the published one, naming those that differ.
    #[arg(long, conflicts_with = "check_patches")]
    verify_reproducible: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    I386,
    #[value(name = "x86_64")]
    X86_64,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::I386 => "i386",
            Arch::X86_64 => "x86_64",
        }
    }
}

/// This stage's own code is an input too: changing how it builds changes
/// what it builds.
const STAGE_CODE: &str = concat!(
    include_str!("kernel.rs"),
    include_str!("kernel/source.rs"),
    include_str!("kernel/kconfig.rs"),
    include_str!("stage.rs")
);

/// Bump when the compiler's environment changes in a way make cannot see:
/// build directories made under another value are started over.
const BUILD_ENV: &str = "2: ccache without CCACHE_BASEDIR";

/// The project version, which the kernel carries as `-co-<version>`.
const VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn run(args: Args) -> Result<()> {
    let output = (args.output.as_deref())
        .map(|dir| stage::output_dir(dir, "--output"))
        .transpose()?;
    let dir = stage::root().join(&args.patches);
    let patches = series::load(&dir)?;
    let pins = source::Pins::load(&dir.join("source.toml"))?;
    let cache = stage::cache_dir().join("kernel");
    let _lock = stage::lock(&cache)?;
    let arch = args.arch.name();

    let phase = Phase::start("fetch");
    let src = source::resolve(args.source.as_deref(), &pins, &cache)?;
    phase.done(&src.describe());

    let phase = Phase::start("unpack");
    let pristine = src.unpack(&cache)?;
    phase.done(&pristine.display().to_string());

    if args.check_patches {
        return check_patches(&pristine, &patches);
    }

    let sde = stage::source_date_epoch(&[&dir])?;
    let fragments = fragments(&dir, args.arch);
    let mut key = CacheKey::new("kernel");
    key.value("arch", arch);
    key.value("source", &src.sha256);
    key.value("version", VERSION);
    key.value("stage code", STAGE_CODE);
    key.value("SOURCE_DATE_EPOCH", &sde.to_string());
    key.file(&dir.join("series"))?;
    for (_, path) in &patches {
        key.file(path)?;
    }
    for path in &fragments {
        key.file(path)?;
    }
    let tools: serde_json::Map<String, serde_json::Value> = ["gcc", "make", "ld"]
        .iter()
        .map(|t| (t.to_string(), stage::tool_version(t).into()))
        .collect();
    for (tool, version) in &tools {
        key.value(tool, version.as_str().unwrap_or_default());
    }
    let config_key = config_key(arch, &src.sha256, &patches, &fragments, &tools)?;
    let (cache_key, inputs) = key.finish();
    let dest = output.unwrap_or_else(|| stage::root().join("target/kernel").join(arch));
    let run = stage::Run::new("kernel", args.verify_reproducible);
    if run.up_to_date(&dest, &cache_key)? {
        tracing::info!("kernel: {} is up to date", dest.display());
        return Ok(());
    }

    let phase = Phase::start("patch");
    let tree = cache.join("tree");
    let changed = apply_series(&pristine, &src.sha256, &tree, &patches)?;
    let localversion = std::fs::read_to_string(tree.join("localversion-co")).unwrap_or_default();
    if localversion.trim() != format!("-co-{VERSION}") {
        bail!(
            "the series sets the kernel's localversion to {:?}, but the project version is {VERSION}: update localversion-co in {}",
            localversion.trim(),
            dir.display()
        );
    }
    phase.done(&format!(
        "{} patches, {changed} files changed since the last build",
        patches.len()
    ));

    // The patched tree is the input; the build starts over (in an empty
    // directory) when verifying.
    let work = run.work_dir(&cache)?;
    let build = work.join(format!("build-{arch}"));
    // The tree keeps the tarball's mtimes, so objects built from another
    // source could look newer than their new sources; and make cannot see a
    // change in how the compiler is run from its environment. Either way,
    // start that build over.
    // Before the stamp below is written: newer than a killed make's
    // marker, it would go with what that make wrote, and the next run
    // would start the build over.
    stage::InPlaceWrites::recover(&build)?;
    let built_from = build.join(".colinux-source");
    let stamp = format!("{} {BUILD_ENV}", src.sha256);
    let last = std::fs::read_to_string(&built_from).unwrap_or_default();
    let mut last = last.lines();
    if last.next() != Some(stamp.as_str()) {
        let _ = std::fs::remove_dir_all(&build);
    } else if last.next() != Some(sde.to_string().as_str()) {
        // usr/gen_initramfs.sh reads KBUILD_BUILD_TIMESTAMP from the
        // environment, so make misses a new one, and the built-in
        // initramfs kept the last build's times (the clean-rebuild check
        // found the bzImage differing there).
        let _ = std::fs::remove_file(build.join("usr/initramfs_data.cpio"));
    }
    std::fs::create_dir_all(&build)?;
    std::fs::write(&built_from, format!("{stamp}\n{sde}\n"))?;
    let log = work.join(format!("build-{arch}.log"));
    std::fs::write(&log, "")?;
    let make = Make {
        tree: &tree,
        build: &build,
        arch: args.arch,
        sde,
        log: &log,
        ccache: !run.verifying(),
    };

    let phase = Phase::start("config");
    let how = configure(&make, &work, &fragments, &config_key)?;
    phase.done(&format!("every option of the fragments holds ({how})"));

    let phase = Phase::start("build");
    make.run(&["bzImage", "modules"])?;
    let bzimage = build.join("arch/x86/boot/bzImage");
    phase.done(&format!(
        "bzImage {} KiB",
        std::fs::metadata(&bzimage)?.len() / 1024
    ));

    let release = std::fs::read_to_string(build.join("include/config/kernel.release"))?
        .trim()
        .to_string();
    let phase = Phase::start("install");
    let staging = run.staging(&dest)?;
    let out = staging.path();
    let modules_root = work.join(format!("modules-{arch}"));
    let _ = std::fs::remove_dir_all(&modules_root);
    let root_arg = format!("INSTALL_MOD_PATH={}", modules_root.display());
    make.run(&["modules_install", &root_arg, "INSTALL_MOD_STRIP=1"])?;
    // The build/source links point into this machine's build tree.
    for link in ["build", "source"] {
        let path = modules_root.join("lib/modules").join(&release).join(link);
        if path.is_symlink() {
            std::fs::remove_file(&path)?;
        }
    }
    std::fs::copy(&bzimage, out.join("bzImage"))?;
    std::fs::copy(build.join(".config"), out.join(".config"))?;
    std::fs::copy(build.join("System.map"), out.join("System.map"))?;
    let modules = tarball::entries_from_dir(&modules_root, "")?;
    tarball::write_tar_gz(&modules, &out.join("modules.tar.gz"), sde)?;
    phase.done(&format!("modules of {release}"));

    let manifest = json!({
        "stage": "kernel",
        "arch": arch,
        "kernel_release": release,
        "cache_key": cache_key,
        "SOURCE_DATE_EPOCH": sde,
        "source": src.manifest(),
        "inputs": inputs,
        "tools": tools,
    });
    run.finish(staging, &dest, manifest)?;
    run.done()
}

fn fragments(dir: &Path, arch: Arch) -> Vec<PathBuf> {
    vec![
        dir.join("config/common.config"),
        dir.join(format!("config/{}.config", arch.name())),
    ]
}

/// Runs make on the out-of-tree build with the reproducible settings.
struct Make<'a> {
    tree: &'a Path,
    build: &'a Path,
    arch: Arch,
    sde: u64,
    log: &'a Path,
    ccache: bool,
}

impl Make<'_> {
    fn command(&self, targets: &[&str]) -> Command {
        let mut cmd = Command::new("make");
        cmd.arg("-C").arg(self.tree);
        cmd.arg(format!("O={}", self.build.display()));
        cmd.arg(format!("ARCH={}", self.arch.name()));
        cmd.arg(format!(
            "-j{}",
            std::thread::available_parallelism().map_or(2, |n| n.get())
        ));
        if self.ccache && stage::which("ccache").is_some() {
            // No CCACHE_BASEDIR: it rewrites absolute paths into relative
            // ones, which the kernel's -fmacro-prefix-map then misses, and
            // __FILE__ strings in the image change (measured: 4 KiB of
            // .rodata). Cache hits need the same checkout path instead.
            cmd.args(["CC=ccache gcc", "HOSTCC=ccache gcc"]);
        }
        cmd.env("KBUILD_BUILD_TIMESTAMP", build_timestamp(self.sde));
        cmd.env("KBUILD_BUILD_USER", "colinux");
        cmd.env("KBUILD_BUILD_HOST", "colinux");
        cmd.env("KBUILD_BUILD_VERSION", "1");
        cmd.env("SOURCE_DATE_EPOCH", self.sde.to_string());
        cmd.env("LC_ALL", "C");
        cmd.env("TZ", "UTC");
        cmd.args(targets);
        cmd
    }

    fn run(&self, targets: &[&str]) -> Result<()> {
        let _writes = stage::InPlaceWrites::begin(self.build)?;
        run_logged(&mut self.command(targets), self.log)
    }
}

/// `uname -v`'s date, from SOURCE_DATE_EPOCH rather than the clock.
fn build_timestamp(sde: u64) -> String {
    Command::new("date")
        .args(["-u", "-d", &format!("@{sde}"), "+%a %b %e %H:%M:%S UTC %Y"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("@{sde}"))
}

/// What the checked config depends on: the source, the patches that touch
/// a file Kconfig reads, the fragments, the compiler and linker (Kconfig
/// asks them what they support), and the code that makes and checks it.
/// A patch that only changes C files leaves it alone.
fn config_key(
    arch: &str,
    source: &str,
    patches: &[(series::Patch, PathBuf)],
    fragments: &[PathBuf],
    tools: &serde_json::Map<String, serde_json::Value>,
) -> Result<String> {
    let mut key = CacheKey::new("kernel config");
    key.value("arch", arch);
    key.value("source", source);
    key.value("code", STAGE_CODE);
    for (tool, version) in tools {
        key.value(tool, version.as_str().unwrap_or_default());
    }
    for (patch, path) in patches {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if series::touched_files(&text, patch.strip)
            .iter()
            .any(|f| feeds_kconfig(f))
        {
            key.value(&patch.name, &text);
        }
    }
    for path in fragments {
        key.file(path)?;
    }
    Ok(key.finish().0)
}

/// Whether a file of the tree can change what olddefconfig makes of our
/// fragments: Kconfig files, the configs tinyconfig merges, the scripts
/// Kconfig runs, and Makefiles (the version in the config's header).
fn feeds_kconfig(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.starts_with("Kconfig")
        || name.starts_with("Makefile")
        || path.starts_with("scripts/")
        || path.contains("configs/")
}

/// tinyconfig, then our fragments merged with the kernel's own
/// merge_config.sh, then olddefconfig; then every option the fragments ask
/// for must hold. The checked result is kept under its inputs' `key`
/// (`config-<arch>/checked-<key>.config`), so a rebuild with the same
/// inputs, even in an empty build directory, skips all that. It replaces
/// the build's .config only if it differs, so an unchanged config costs
/// make nothing; make's own syncconfig takes a new one in at the start of
/// the build. Returns how the config was had, for the progress line.
fn configure(make: &Make, work: &Path, fragments: &[PathBuf], key: &str) -> Result<&'static str> {
    let scratch = work.join(format!("config-{}", make.arch.name()));
    std::fs::create_dir_all(&scratch)?;
    let checked = scratch.join(format!("checked-{key}.config"));
    let (final_text, how) = match std::fs::read_to_string(&checked) {
        Ok(text) => (text, "checked before with the same inputs"),
        Err(_) => (
            check_config(make, &scratch, fragments, &checked)?,
            "checked now",
        ),
    };
    let target = make.build.join(".config");
    if std::fs::read_to_string(&target).ok().as_deref() != Some(final_text.as_str()) {
        std::fs::write(&target, &final_text)?;
    }
    Ok(how)
}

/// Makes the config in `scratch` and checks it; keeps it as `checked`
/// (written whole, then renamed) beside the configs checked for other
/// inputs, the newest [`CHECKED_CONFIGS_KEPT`] of them: worktrees sharing
/// the cache take turns with their own fragments, and must not evict each
/// other's.
fn check_config(
    make: &Make,
    scratch: &Path,
    fragments: &[PathBuf],
    checked: &Path,
) -> Result<String> {
    let probe = Make {
        build: scratch,
        ccache: false,
        ..*make
    };
    probe.run(&["tinyconfig"])?;
    let mut merge = Command::new(make.tree.join("scripts/kconfig/merge_config.sh"));
    merge
        .current_dir(make.tree)
        .arg("-m")
        .arg("-O")
        .arg(scratch)
        .arg(scratch.join(".config"))
        .args(fragments);
    merge.env("ARCH", make.arch.name());
    run_logged(&mut merge, make.log)?;
    probe.run(&["olddefconfig"])?;

    let mut wanted = kconfig::Config::new();
    for path in fragments {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        wanted.extend(kconfig::parse(&text, path)?);
    }
    let final_path = scratch.join(".config");
    let final_text = std::fs::read_to_string(&final_path)?;
    let mismatches = kconfig::check(&wanted, &kconfig::parse(&final_text, &final_path)?);
    if !mismatches.is_empty() {
        let list: Vec<String> = mismatches
            .iter()
            .map(|m| format!("{}={} (got {})", m.name, m.wanted, m.got))
            .collect();
        bail!(
            "{} option(s) of the config fragments did not stick after olddefconfig (a dependency is missing or another option conflicts): {}",
            list.len(),
            list.join(", ")
        );
    }
    let partial = checked.with_extension("partial");
    std::fs::write(&partial, &final_text)?;
    std::fs::rename(&partial, checked)?;
    let mut kept: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(scratch)? {
        let entry = entry?;
        if entry.path().extension().is_some_and(|e| e == "config") {
            kept.push((entry.metadata()?.modified()?, entry.path()));
        }
    }
    kept.sort();
    for (_, old) in kept.iter().rev().skip(CHECKED_CONFIGS_KEPT) {
        std::fs::remove_file(old)?;
    }
    Ok(final_text)
}

/// How many checked configs `check_config` keeps (about 75 KiB each).
const CHECKED_CONFIGS_KEPT: usize = 8;

/// Dry-runs the series against the pristine tree, one patch after another.
fn check_patches(pristine: &Path, patches: &[(series::Patch, PathBuf)]) -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let mini = scratch.path().join("tree");
    let touched = touched_by(patches)?;
    copy_files(pristine, &mini, &touched)?;
    let mut failed = 0;
    for (patch, path) in patches {
        // Each patch is applied for real in the scratch copy, so the next
        // one is checked against the tree as the series leaves it.
        match apply_one(&mini, patch, path) {
            Ok(()) => println!("ok      {}", patch.name),
            Err(e) => {
                failed += 1;
                println!("FAILED  {}\n{e:#}", patch.name);
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} patches do not apply to {}",
            patches.len(),
            pristine.display()
        );
    }
    println!(
        "all {} patches apply cleanly to {}",
        patches.len(),
        pristine.display()
    );
    Ok(())
}

fn touched_by(patches: &[(series::Patch, PathBuf)]) -> Result<BTreeSet<String>> {
    let mut files = BTreeSet::new();
    for (patch, path) in patches {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        files.extend(series::touched_files(&text, patch.strip));
    }
    Ok(files)
}

fn apply_one(tree: &Path, patch: &series::Patch, path: &Path) -> Result<()> {
    let rejects = tempfile::tempdir()?;
    let reject_file = rejects.path().join("rejected.rej");
    let out = Command::new("patch")
        .current_dir(tree)
        .arg(format!("-p{}", patch.strip))
        // No fuzz: a series that no longer applies exactly must say so, not
        // land its hunks somewhere nearby.
        .args([
            "--batch",
            "--forward",
            "--fuzz=0",
            "--no-backup-if-mismatch",
        ])
        .arg(format!("--reject-file={}", reject_file.display()))
        .arg("-i")
        .arg(path)
        .output()
        .context("cannot run patch (install it with cargo xtask setup)")?;
    if !out.status.success() {
        let rejected = std::fs::read_to_string(&reject_file).unwrap_or_default();
        bail!(
            "patch {} does not apply:\n{}{}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            if rejected.is_empty() {
                String::new()
            } else {
                format!("the rejected hunks:\n{rejected}")
            }
        );
    }
    Ok(())
}

fn copy_files(from: &Path, to: &Path, files: &BTreeSet<String>) -> Result<()> {
    for file in files {
        let src = from.join(file);
        if src.exists() {
            let dst = to.join(file);
            std::fs::create_dir_all(dst.parent().expect("a file has a parent"))?;
            std::fs::copy(&src, &dst).with_context(|| format!("cannot copy {}", src.display()))?;
        }
    }
    Ok(())
}

/// Makes `tree` equal to the pristine tree plus the series. The series is
/// applied to copies of just the files it touches; a file in `tree` is only
/// rewritten when its content differs, so make rebuilds only what changed.
/// Returns the number of files rewritten.
fn apply_series(
    pristine: &Path,
    source_id: &str,
    tree: &Path,
    patches: &[(series::Patch, PathBuf)],
) -> Result<usize> {
    let state_path = tree.join(".colinux-series.json");
    let state: serde_json::Value = std::fs::read_to_string(&state_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    if state["source"] != source_id {
        // A new source: start over from a full copy.
        let _ = std::fs::remove_dir_all(tree);
        let status = Command::new("cp")
            .arg("-a")
            .arg(pristine)
            .arg(tree)
            .status()?;
        if !status.success() {
            bail!("cannot copy {} to {}", pristine.display(), tree.display());
        }
    }
    let touched = touched_by(patches)?;
    let scratch = tempfile::tempdir()?;
    let mini = scratch.path().join("tree");
    std::fs::create_dir_all(&mini)?;
    copy_files(pristine, &mini, &touched)?;
    for (patch, path) in patches {
        apply_one(&mini, patch, path)
            .with_context(|| format!("the series stops at {}", patch.name))?;
    }
    let previously: BTreeSet<String> = state["touched"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut changed = 0;
    for file in touched.union(&previously) {
        let want = if mini.join(file).exists() {
            Some(mini.join(file))
        } else {
            Some(pristine.join(file)).filter(|p| p.exists())
        };
        let have = tree.join(file);
        let want_bytes = want.as_ref().map(std::fs::read).transpose()?;
        if std::fs::read(&have).ok() == want_bytes {
            continue;
        }
        changed += 1;
        match want {
            Some(src) => {
                std::fs::create_dir_all(have.parent().expect("a file has a parent"))?;
                let _ = std::fs::remove_file(&have);
                std::fs::copy(&src, &have)?;
            }
            None => std::fs::remove_file(&have)?,
        }
    }
    let state = json!({ "source": source_id, "touched": touched });
    std::fs::write(&state_path, serde_json::to_string_pretty(&state)?)?;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn patch_adding(file: &str, old: &str, new: &str) -> String {
        format!("Test patch.\n--- a/{file}\n+++ b/{file}\n@@ -1 +1,2 @@\n {old}\n+{new}\n")
    }

    fn mtime(p: &Path) -> SystemTime {
        std::fs::metadata(p).unwrap().modified().unwrap()
    }

    /// The checked config is reused across a patch to C code, and made
    /// again for a patch to a Kconfig file or a new fragment.
    #[test]
    fn the_config_key_follows_only_what_kconfig_reads() {
        let t = tempfile::tempdir().unwrap();
        let fragment = t.path().join("common.config");
        std::fs::write(&fragment, "CONFIG_A=y\n").unwrap();
        let tools = serde_json::Map::new();
        let key = |patches: &[(&str, &str)]| {
            let patches: Vec<(series::Patch, PathBuf)> = patches
                .iter()
                .map(|(file, added)| {
                    let path = t.path().join("test.patch");
                    std::fs::write(&path, patch_adding(file, "x", added)).unwrap();
                    let patch = series::Patch {
                        name: path.display().to_string(),
                        strip: 1,
                    };
                    (patch, path)
                })
                .collect();
            config_key(
                "i386",
                "sha",
                &patches,
                std::slice::from_ref(&fragment),
                &tools,
            )
            .unwrap()
        };
        let base = key(&[]);
        assert_eq!(key(&[("drivers/block/virtio_blk.c", "/* c */")]), base);
        assert_eq!(key(&[("include/linux/fs.h", "/* h */")]), base);
        assert_ne!(key(&[("fs/Kconfig", "source \"fs/cofs/Kconfig\"")]), base);
        assert_ne!(key(&[("scripts/kconfig/conf.c", "/* conf */")]), base);
        assert_ne!(key(&[("arch/x86/configs/tiny.config", "# tiny")]), base);
        std::fs::write(&fragment, "CONFIG_A=m\n").unwrap();
        assert_ne!(key(&[]), base);
    }

    /// The tree equals pristine + series after every run, and only files
    /// whose content changed get rewritten (so make rebuilds only those).
    #[test]
    fn series_changes_rewrite_only_changed_files() {
        let t = tempfile::tempdir().unwrap();
        let pristine = t.path().join("pristine");
        std::fs::create_dir_all(pristine.join("drivers")).unwrap();
        std::fs::write(pristine.join("drivers/a.c"), "a\n").unwrap();
        std::fs::write(pristine.join("drivers/b.c"), "b\n").unwrap();
        std::fs::write(pristine.join("Makefile"), "all:\n").unwrap();
        let series_dir = t.path().join("series");
        std::fs::create_dir_all(&series_dir).unwrap();
        let tree = t.path().join("tree");
        let load = |text: &str| -> Vec<(series::Patch, PathBuf)> {
            std::fs::write(series_dir.join("series"), text).unwrap();
            series::load(&series_dir).unwrap()
        };
        std::fs::write(
            series_dir.join("1.patch"),
            patch_adding("drivers/a.c", "a", "a2"),
        )
        .unwrap();
        std::fs::write(
            series_dir.join("2.patch"),
            patch_adding("drivers/b.c", "b", "b2"),
        )
        .unwrap();

        let changed = apply_series(&pristine, "src1", &tree, &load("1.patch\n2.patch\n")).unwrap();
        assert_eq!(changed, 2);
        assert_eq!(
            std::fs::read_to_string(tree.join("drivers/a.c")).unwrap(),
            "a\na2\n"
        );
        let a_time = mtime(&tree.join("drivers/a.c"));
        std::thread::sleep(Duration::from_millis(20));

        // Same series again: nothing is rewritten.
        assert_eq!(
            apply_series(&pristine, "src1", &tree, &load("1.patch\n2.patch\n")).unwrap(),
            0
        );
        // Drop patch 2: b.c goes back to pristine, a.c keeps its mtime.
        assert_eq!(
            apply_series(&pristine, "src1", &tree, &load("1.patch\n")).unwrap(),
            1
        );
        assert_eq!(
            std::fs::read_to_string(tree.join("drivers/b.c")).unwrap(),
            "b\n"
        );
        assert_eq!(mtime(&tree.join("drivers/a.c")), a_time);

        // A patch that does not apply names itself.
        std::fs::write(
            series_dir.join("3.patch"),
            patch_adding("drivers/b.c", "nope", "x"),
        )
        .unwrap();
        let err = apply_series(&pristine, "src1", &tree, &load("1.patch\n3.patch\n")).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("the series stops at 3.patch"), "{err}");
        assert!(
            err.contains("the rejected hunks:") && err.contains("+x"),
            "{err}"
        );
    }
}
