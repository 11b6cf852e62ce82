//! `cargo xtask image`: ready-made root filesystems from `recipes/`.
//!
//! Phases: bootstrap (mmdebstrap, cached on its own key), customize
//! (generated configuration, overlays, hooks, credentials, identity
//! removed), pack (tarball, package list), filesystem (`mke2fs -d`, times
//! settled, e2fsck), compress, publish (`target/images/<name>/`).

mod bootstrap;
mod customize;
mod generate;
mod pack;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::progress::Phase;
use crate::stage::{self, CacheKey};
use customize::{Credentials, Customize};

/// Build a root filesystem image from a recipe into target/images/<name>/:
/// <name>.ext4 (sparse), <name>.ext4.zst, <name>.tar.gz, <name>.packages,
/// SHA256SUMS and manifest.json. A rebuild with unchanged inputs is a
/// no-op; changing only overlays, hooks or settings reuses the bootstrap.
#[derive(clap::Args)]
pub struct Args {
    /// The stock recipe to build: recipes/<NAME>.toml (debian,
    /// debian-bookworm, ubuntu).
    #[arg(long, value_name = "NAME", required_unless_present = "recipe")]
    distro: Option<String>,
    /// Build this recipe file instead (its `extends` are looked up in
    /// recipes/); the image is named after the file.
    #[arg(long, value_name = "FILE", conflicts_with = "distro")]
    recipe: Option<PathBuf>,
    /// The Debian architecture, overriding the recipe's (i386, amd64); the
    /// image is then named <name>-<arch>.
    #[arg(long)]
    arch: Option<String>,
    /// The filesystem size (such as 2G), overriding the recipe's policy.
    #[arg(long)]
    size: Option<String>,
    /// The archive mirror URL, overriding the recipe's.
    #[arg(long, value_name = "URL")]
    mirror: Option<String>,
    /// Let root log in over SSH with the public keys in FILE.
    #[arg(long, value_name = "FILE")]
    root_key: Option<PathBuf>,
    /// Set root's password to this crypt(3) hash (from `openssl passwd -6`
    /// or `mkpasswd`); root stays locked without it.
    #[arg(long, value_name = "HASH")]
    root_password_hash: Option<String>,
    /// Where to publish, instead of target/images/<name>.
    #[arg(long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// Bootstrap again even if the cached bootstrap matches.
    #[arg(long)]
    fresh: bool,
    /// Build again from the cached bootstrap (a fresh one would follow the
    /// archive's changes) in an empty directory elsewhere
    /// (target/cache/verify/image): customize, pack, filesystem, compress.
    /// Fail unless every output is bit-identical to the published one,
    /// naming those that differ.
    #[arg(long, conflicts_with = "fresh")]
    verify_reproducible: bool,
}

/// This stage's own code is an input too.
const STAGE_CODE: &str = concat!(
    include_str!("image.rs"),
    include_str!("image/customize.rs"),
    include_str!("image/generate.rs"),
    include_str!("image/pack.rs"),
    include_str!("image/firstboot/colinux-credentials.service"),
    include_str!("image/firstboot/credentials"),
);
const BOOTSTRAP_CODE: &str = include_str!("image/bootstrap.rs");

pub fn run(args: Args) -> Result<()> {
    let output = (args.output.as_deref())
        .map(|dir| stage::output_dir(dir, "--output"))
        .transpose()?;
    let root = stage::root();
    let recipes_dir = root.join("recipes");
    let (mut name, recipe_path) = recipe_file(&args, &recipes_dir)?;
    let mut recipe = recipe::load_file(&recipe_path, &recipes_dir)?;
    // Overlays and hooks: beside a --recipe file first, then the stock ones.
    let mut search: Vec<PathBuf> = args
        .recipe
        .iter()
        .filter_map(|r| r.parent().map(Path::to_path_buf))
        .collect();
    search.push(recipes_dir.clone());
    if let Some(arch) = &args.arch {
        let arch = match arch.as_str() {
            "i386" | "i686" => "i386",
            "amd64" | "x86_64" => "amd64",
            other => bail!("--arch {other}: the guest architectures are i386 and amd64"),
        };
        // Another architecture is another image: it must not replace the
        // recipe's own in target/images/<name>.
        if arch != recipe.arch {
            name = format!("{name}-{arch}");
            recipe.arch = arch.into();
        }
    }
    let fixed_size = match args.size.as_deref().unwrap_or(&recipe.size.size) {
        s if s.eq_ignore_ascii_case("auto") => None,
        s => Some(recipe::parse_size(s).context("--size")?),
    };
    let free = recipe::parse_size(&recipe.size.free)?;
    let mirror = match &args.mirror {
        Some(m) => m.trim_end_matches('/').to_string(),
        None => bootstrap::mirror(&recipe),
    };
    let credentials = credentials(&args)?;
    check_kernel(&name, &recipe, &root)?;

    let bootstrap_sde = bootstrap_epoch(&recipe_path, &recipes_dir)?;
    let sde = stage::source_date_epoch(&[&recipes_dir, &root.join("xtask/src/image")])?
        .max(bootstrap_sde);

    let tools: serde_json::Map<String, serde_json::Value> =
        ["mmdebstrap", "mke2fs", "tar", "gzip", "zstd"]
            .iter()
            .map(|t| (t.to_string(), stage::tool_version(t).into()))
            .collect();
    let mut key = CacheKey::new("image bootstrap");
    key.value("distro", recipe.distro.name());
    key.value("arch", &recipe.arch);
    key.value("variant", &recipe.variant);
    key.value("packages", &recipe.packages.join(","));
    key.value("sources", &recipe.sources(&mirror).join("\n"));
    key.value("SOURCE_DATE_EPOCH", &bootstrap_sde.to_string());
    key.value(
        "mmdebstrap",
        tools["mmdebstrap"].as_str().unwrap_or_default(),
    );
    key.value("code", BOOTSTRAP_CODE);
    match &recipe.keyring_package {
        Some(package) => key.value("keyring package", &package.sha256),
        None if recipe.keyring.is_file() => {
            key.file(&recipe.keyring)?;
        }
        None => {}
    }
    let (bootstrap_key, _) = key.finish();

    let mut key = CacheKey::new("image");
    key.value("name", &name);
    key.value("bootstrap", &bootstrap_key);
    key.value("recipe", &format!("{recipe:?}"));
    key.value("size", &format!("{fixed_size:?} {free}"));
    key.value("SOURCE_DATE_EPOCH", &sde.to_string());
    key.value("code", STAGE_CODE);
    key.value(
        "root keys",
        credentials.authorized_keys.as_deref().unwrap_or(""),
    );
    key.value(
        "root hash",
        credentials.password_hash.as_deref().unwrap_or(""),
    );
    for (tool, version) in &tools {
        key.value(tool, version.as_str().unwrap_or_default());
    }
    for path in customize::inputs(&search, &recipe)? {
        key.file(&path)?;
    }
    if let Some(path) = &args.recipe {
        key.file(path)?;
    }
    let (cache_key, inputs) = key.finish();
    let dest = output.unwrap_or_else(|| root.join("target/images").join(&name));
    let run = stage::Run::new("image", args.verify_reproducible);
    if !args.fresh && run.up_to_date(&dest, &cache_key)? {
        tracing::info!("image: {} is up to date", dest.display());
        return Ok(());
    }

    let cache = stage::cache_dir().join("image");
    let _lock = stage::lock(&cache)?;
    if !stage::is_root() {
        bail!("image builds run as root: the customize phase chroots into the image and keeps its owners and device nodes (run `sudo cargo xtask image …`)");
    }
    let work = run.work_dir(&cache)?;
    let logs = work.join(format!("logs-{name}"));
    std::fs::create_dir_all(&logs)?;

    // Named by key: recipes that differ only after the bootstrap share it.
    let tarball = cache.join(format!("bootstrap-{}.tar", &bootstrap_key[..16]));
    let key_file = tarball.with_extension("key");
    // The key file: the key, then any warning the bootstrap gave.
    let key_text = std::fs::read_to_string(&key_file).unwrap_or_default();
    let cached =
        !args.fresh && tarball.is_file() && key_text.lines().next() == Some(bootstrap_key.as_str());
    let mut warning = key_text.lines().nth(1).map(str::to_string);
    if run.verifying() && !cached {
        bail!(
            "the cached bootstrap {} is missing or stale, and a verification rebuilds from it: run `cargo xtask image` with the same options first",
            tarball.display()
        );
    }
    let mut phase = Phase::start("bootstrap");
    if cached {
        phase.done("reused (the archive, packages and bootstrap time are unchanged)");
    } else {
        bootstrap::check_archive(&recipe, &mirror)?;
        let keyring = bootstrap::keyring(&name, &recipe, &mirror, &cache)?;
        // mmdebstrap picks its output format from the name's extension.
        let partial = tarball.with_extension("partial.tar");
        let _ = std::fs::remove_file(&key_file);
        warning = bootstrap::Bootstrap {
            recipe: &recipe,
            mirror: &mirror,
            keyring: &keyring,
            apt_cache: &apt_cache(&cache, &recipe),
            sde: bootstrap_sde,
            log: &logs.join("mmdebstrap.log"),
        }
        .run(&partial, &mut phase)?;
        std::fs::rename(&partial, &tarball)?;
        let note = warning
            .as_deref()
            .map(|w| format!("\n{w}"))
            .unwrap_or_default();
        std::fs::write(&key_file, format!("{bootstrap_key}{note}\n"))?;
        phase.done(&format!(
            "{} {} {} from {mirror}, {} MiB",
            recipe.distro.name(),
            recipe.suite,
            recipe.arch,
            std::fs::metadata(&tarball)?.len() >> 20
        ));
    }

    let tree = work.join(format!("tree-{name}"));
    let custom = Customize {
        name: &name,
        recipe: &recipe,
        search: &search,
        credentials: &credentials,
        mirror: &mirror,
        tree: &tree,
        log: &logs.join("customize.log"),
        sde,
    };
    let phase = Phase::start("customize");
    custom.unpack(&tarball)?;
    // Overlays and hooks come after the generated files, so a recipe can
    // replace one (the coMosix node's fstab) or enable more units.
    custom.configure()?;
    let overlaid = custom.overlays()?;
    custom.hooks()?;
    custom.credentials()?;
    let forgotten = custom.forget_identity()?;
    phase.done(&format!(
        "{overlaid} overlay files, {} hooks, {} units enabled, {forgotten} machine-unique files removed, root {}",
        recipe.hooks.len(),
        generate::units_to_enable(&recipe).len(),
        match (&credentials.password_hash, &credentials.authorized_keys) {
            (None, None) => "locked",
            (Some(_), _) => "has a password",
            (None, Some(_)) => "locked, SSH key login",
        }
    ));

    let staging = run.staging(&dest)?;
    let out = staging.path();
    let phase = Phase::start("pack");
    let content = pack::settle(&tree, sde)?;
    // The ext4 holds the content; the tarball and the .zst are smaller.
    // Named by the staging's parent: the directory the user gave or knows.
    let space = stage::Space::check(out.parent().unwrap_or(out), 2 * content.bytes())?;
    let (packages, count) = pack::package_list(&tree)?;
    std::fs::write(out.join(format!("{name}.packages")), packages)?;
    phase.done(&format!("{count} packages, {} files", content.paths.len()));

    // The tarball and the filesystem are made from the same settled tree
    // and nothing else, so side by side: the two cores overlap gzip with
    // mke2fs and zstd (measured in BENCHMARKS.md).
    let phase = Phase::start("outputs");
    let (size, needed) = pack::image_size(&content, fixed_size, free);
    let image = out.join(format!("{name}.ext4"));
    let ext4 = pack::Ext4 {
        tree: &tree,
        out: &image,
        name: &name,
        size,
        needed,
        sde,
        log: &logs.join("mke2fs.log"),
    };
    let timed = |work: &dyn Fn() -> Result<()>| -> Result<f64> {
        let start = std::time::Instant::now();
        work()?;
        Ok(start.elapsed().as_secs_f64())
    };
    let (tar_secs, (ext4_secs, zstd_secs)) = std::thread::scope(|s| -> Result<_> {
        let tar = s.spawn(|| {
            timed(&|| {
                pack::tarball(
                    &tree,
                    &out.join(format!("{name}.tar.gz")),
                    sde,
                    &logs.join("tar.log"),
                )
            })
        });
        let filesystem = timed(&|| {
            ext4.make(&content)?;
            ext4.check()
        });
        let compressed = filesystem.and_then(|f| {
            Ok((
                f,
                timed(&|| pack::compress(&image, &out.join(format!("{name}.ext4.zst"))))?,
            ))
        });
        let tar = tar.join().expect("the tarball thread does not panic")?;
        Ok((tar, compressed?))
    })
    .map_err(|e| space.explain(e))?;
    phase.done(&format!(
        "{} MiB ext4 holding {} MiB, e2fsck clean ({ext4_secs:.1} s), then zstd {} ({zstd_secs:.1} s); beside them the tar.gz ({tar_secs:.1} s)",
        size >> 20,
        content.bytes() >> 20,
        pack::ZSTD_LEVEL.join(" "),
    ));

    std::fs::remove_dir_all(&tree)?;
    let manifest = json!({
        "stage": "image",
        "name": name,
        "distro": recipe.distro.name(),
        "suite": recipe.suite,
        "arch": recipe.arch,
        "mirror": mirror,
        "size": size,
        "cache_key": cache_key,
        "bootstrap_key": bootstrap_key,
        "warnings": warning.into_iter().collect::<Vec<_>>(),
        "SOURCE_DATE_EPOCH": sde,
        "inputs": inputs,
        "tools": tools,
    });
    run.finish(staging, &dest, manifest)?;
    run.done()
}

/// The bootstrap's time comes from the recipe and its bases alone, so
/// committing an overlay, a hook or another recipe does not force a new
/// bootstrap. (A recipe outside the repository has no commit: its stock
/// bases do.)
fn bootstrap_epoch(recipe_path: &Path, recipes_dir: &Path) -> Result<u64> {
    let root = stage::root();
    let files = recipe::chain(recipe_path, recipes_dir)?;
    let committed: Vec<&Path> = files
        .iter()
        .map(PathBuf::as_path)
        .filter(|p| p.starts_with(&root))
        .collect();
    stage::source_date_epoch(&committed)
}

/// The persistent apt cache, one per distribution and architecture.
fn apt_cache(cache: &Path, recipe: &recipe::Recipe) -> PathBuf {
    cache.join(format!("apt-{}-{}", recipe.distro.name(), recipe.arch))
}

/// For `cargo xtask bench image`: the bootstrap of a stock recipe as the
/// stage runs it (the same mmdebstrap command, keyring, apt cache and
/// time), to run on its own.
pub struct BareBootstrap {
    recipe: recipe::Recipe,
    mirror: String,
    keyring: PathBuf,
    apt_cache: PathBuf,
    sde: u64,
}

impl BareBootstrap {
    pub fn new(distro: &str) -> Result<BareBootstrap> {
        let recipes_dir = stage::root().join("recipes");
        let path = recipes_dir.join(format!("{distro}.toml"));
        let recipe = recipe::load_file(&path, &recipes_dir)?;
        let mirror = bootstrap::mirror(&recipe);
        let cache = stage::cache_dir().join("image");
        Ok(BareBootstrap {
            keyring: bootstrap::keyring(distro, &recipe, &mirror, &cache)?,
            apt_cache: apt_cache(&cache, &recipe),
            sde: bootstrap_epoch(&path, &recipes_dir)?,
            mirror,
            recipe,
        })
    }

    /// Every apt source of the recipe.
    pub fn sources(&self) -> Vec<String> {
        self.recipe.sources(&self.mirror)
    }

    pub fn command(&self, out: &Path, sources: &[String], log: &Path) -> std::process::Command {
        bootstrap::Bootstrap {
            recipe: &self.recipe,
            mirror: &self.mirror,
            keyring: &self.keyring,
            apt_cache: &self.apt_cache,
            sde: self.sde,
            log,
        }
        .command(out, sources)
    }
}

pub use bootstrap::{failing_updates, index_url};

/// The image's name and its recipe file: --recipe FILE, or the stock
/// recipes/<distro>.toml.
fn recipe_file(args: &Args, recipes_dir: &Path) -> Result<(String, PathBuf)> {
    if let Some(path) = &args.recipe {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .with_context(|| format!("{}: not a recipe file", path.display()))?;
        return Ok((name, path.clone()));
    }
    let name = args
        .distro
        .clone()
        .expect("clap requires --distro or --recipe");
    let path = recipes_dir.join(format!("{name}.toml"));
    if !path.is_file() {
        let mut stock: Vec<String> = std::fs::read_dir(recipes_dir)?
            .filter_map(|e| {
                e.ok()?
                    .path()
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
            })
            .filter(|s| recipes_dir.join(format!("{s}.toml")).is_file())
            .collect();
        stock.sort();
        bail!(
            "unknown distro {name:?}: there is no recipe {}; the recipes are: {}",
            path.display(),
            stock.join(", ")
        );
    }
    Ok((name, path))
}

/// The userland must run on the kernel the image boots: the version the
/// kernel stage's source pins name (the stage builds nothing else).
fn check_kernel(name: &str, recipe: &recipe::Recipe, root: &Path) -> Result<()> {
    let pins_file = root.join(crate::kernel::PATCHES).join("source.toml");
    let kernel = crate::kernel::source::Pins::load(&pins_file)?
        .upstream
        .version;
    if !recipe.runs_on(&kernel) {
        bail!(
            "the {name} image's userland needs Linux {} or later (its recipe's min_kernel), but the kernel it boots is {kernel} ({})",
            recipe.min_kernel.as_deref().unwrap_or_default(),
            pins_file.display()
        );
    }
    Ok(())
}

fn credentials(args: &Args) -> Result<Credentials> {
    let authorized_keys = match &args.root_key {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if let Err(why) = colinux_config::credentials::check_public_keys(&text) {
                bail!("--root-key {}: {why}", path.display());
            }
            Some(text)
        }
        None => None,
    };
    if let Some(hash) = &args.root_password_hash {
        if let Err(why) = colinux_config::credentials::check_password_hash(hash) {
            bail!("--root-password-hash: {why}");
        }
    }
    Ok(Credentials {
        authorized_keys,
        password_hash: args.root_password_hash.clone(),
    })
}
