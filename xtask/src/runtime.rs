//! `cargo xtask runtime`: the host runtime's binaries (colinux-daemon,
//! colinux-console), in release mode, for Linux and Windows hosts.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::progress::Phase;
use crate::stage::{self, run_logged, CacheKey};

/// Build every binary of the colinux-daemon package (colinux-daemon,
/// colinux-console) in release mode into target/runtime/<target>/, with
/// manifest.json and SHA256SUMS. Unchanged sources (runtime/), Cargo.lock
/// and compiler make it a no-op. Windows binaries are cross-linked with
/// mingw-w64 (`cargo xtask setup` installs it), without a COFF symbol
/// table.
#[derive(clap::Args)]
pub struct Args {
    /// Build for this target; repeat for several. Default: every target.
    #[arg(long = "target", value_enum, value_name = "TARGET")]
    targets: Vec<Target>,
    /// Build again from an empty cargo target directory elsewhere
    /// (target/cache/verify/runtime), and fail unless every binary is
    /// bit-identical to the published one, naming those that differ.
    #[arg(long)]
    verify_reproducible: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    #[value(name = "x86_64-unknown-linux-gnu")]
    Linux,
    #[value(name = "x86_64-pc-windows-gnu")]
    Windows,
}

impl Target {
    /// The targets the release ships binaries for.
    pub const ALL: [Target; 2] = [Target::Linux, Target::Windows];

    pub fn triple(self) -> &'static str {
        match self {
            Target::Linux => "x86_64-unknown-linux-gnu",
            Target::Windows => "x86_64-pc-windows-gnu",
        }
    }

    /// The linker rustc runs by default for this target.
    fn linker(self) -> &'static str {
        match self {
            Target::Linux => "cc",
            Target::Windows => "x86_64-w64-mingw32-gcc",
        }
    }

    fn exe(self, name: &str) -> String {
        match self {
            Target::Linux => name.to_string(),
            Target::Windows => format!("{name}.exe"),
        }
    }
}

/// The package whose binaries this stage ships.
pub const PACKAGE: &str = "colinux-daemon";

/// This stage's own code is an input too.
const STAGE_CODE: &str = concat!(include_str!("runtime.rs"), include_str!("stage.rs"));

pub fn run(args: Args) -> Result<()> {
    let targets = if args.targets.is_empty() {
        Target::ALL.to_vec()
    } else {
        args.targets
    };
    let cache = stage::cache_dir().join("runtime");
    let _lock = stage::lock(&cache)?;
    let run = stage::Run::new("runtime", args.verify_reproducible);
    let work = run.work_dir(&cache)?;
    for target in targets {
        build(target, &run, &work)?;
    }
    run.done()
}

/// Builds one target in `work` (the cache, or a verification's rebuild
/// directory).
fn build(target: Target, run: &stage::Run, work: &Path) -> Result<()> {
    let root = stage::root();
    let triple = target.triple();
    let runtime = root.join("runtime");
    let sde = stage::source_date_epoch(&[&runtime])?;
    let tools: serde_json::Map<String, serde_json::Value> = ["rustc", "cargo", target.linker()]
        .iter()
        .map(|t| (t.to_string(), stage::tool_version(t).into()))
        .collect();
    let mut key = CacheKey::new("runtime");
    key.value("target", triple);
    key.value("profile", "release");
    key.value("stage code", STAGE_CODE);
    key.value("SOURCE_DATE_EPOCH", &sde.to_string());
    for (tool, version) in &tools {
        key.value(tool, version.as_str().unwrap_or_default());
    }
    for path in [root.join("Cargo.toml"), root.join("Cargo.lock")]
        .into_iter()
        .chain(source_files(&runtime)?)
    {
        key.file(&path)?;
    }
    let (cache_key, inputs) = key.finish();
    let dest = root.join("target/runtime").join(triple);
    if run.up_to_date(&dest, &cache_key)? {
        tracing::info!("runtime: {} is up to date", dest.display());
        return Ok(());
    }
    if stage::which(target.linker()).is_none() {
        bail!(
            "{} is not installed: it links {triple} binaries (`cargo xtask setup` installs it)",
            target.linker()
        );
    }

    let phase = Phase::start(triple);
    // A cargo target directory of our own: the release flags below would
    // otherwise fight over fingerprints with anyone building in target/.
    let cargo_dir = work.join("cargo");
    let log = work.join(format!("build-{triple}.log"));
    std::fs::write(&log, "")?;
    let mut cmd = stage::cargo();
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--locked",
            "--bins",
            "--package",
            PACKAGE,
        ])
        .args(["--target", triple])
        .env("CARGO_TARGET_DIR", &cargo_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags(target).join("\x1f"))
        .env("SOURCE_DATE_EPOCH", sde.to_string());
    run_logged(&mut cmd, &log).with_context(|| {
        format!("building the runtime for {triple} failed (is the target installed? `cargo xtask setup` adds it)")
    })?;

    let staging = run.staging(&dest)?;
    let release = cargo_dir.join(triple).join("release");
    let mut sizes = Vec::new();
    for bin in stage::package_bins(PACKAGE)? {
        let name = target.exe(&bin);
        let built = release.join(&name);
        std::fs::copy(&built, staging.path().join(&name))
            .with_context(|| format!("cannot copy {}", built.display()))?;
        sizes.push(format!(
            "{name} {} KiB",
            std::fs::metadata(&built)?.len() / 1024
        ));
    }
    phase.done(&sizes.join(", "));

    let manifest = json!({
        "stage": "runtime",
        "target": triple,
        "profile": "release",
        "cache_key": cache_key,
        "SOURCE_DATE_EPOCH": sde,
        "inputs": inputs,
        "tools": tools,
    });
    run.finish(staging, &dest, manifest)
}

/// Flags that keep this machine out of the binaries: paths are remapped
/// to fixed prefixes, and mingw's ld, which stamps the link time into the
/// PE header unless told not to, writes zero there.
///
/// Windows binaries also go without their COFF symbol table, whose names
/// differ in every build: rustc writes the import libraries for raw-dylib
/// (windows-link) into a fresh `deps/rustcXXXXXX/` directory of the build
/// directory, ld names their `_head_`/`_iname` symbols after that path,
/// and ld's hash order of the global symbols then changes with those
/// names; the PE checksum covers it all. Nothing else differed (measured:
/// `strip --strip-all` of an unstripped build, its time stamp pinned to 0,
/// gives these very bytes), so a build without the strip has the shipped
/// code at the same addresses, with names, for reading a crash report.
fn rustflags(target: Target) -> Vec<String> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    let mut flags = vec![format!(
        "--remap-path-prefix={}=/colinux",
        stage::root().display()
    )];
    if let Some(home) = cargo_home {
        flags.push(format!("--remap-path-prefix={}=/cargo", home.display()));
    }
    if target == Target::Windows {
        flags.push("-Clink-arg=-Wl,--no-insert-timestamp".into());
        flags.push("-Cstrip=symbols".into());
    }
    flags
}

/// Every file under `dir`, sorted, except build outputs (`target/`) and
/// hidden files.
fn source_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if entry.file_type()?.is_dir() {
            files.extend(source_files(&entry.path())?);
        } else {
            files.push(entry.path());
        }
    }
    Ok(files)
}
