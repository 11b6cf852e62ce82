//! `cargo xtask dist`: the release. It drives the stages a release needs,
//! then packages (runtime/packaging, one module per format), signs and
//! publishes `target/dist/` atomically with one manifest joining theirs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use colinux_packaging::authenticode::{self, AuthenticodeKeys};
use colinux_packaging::signature::SigningKey;
use colinux_packaging::{deb, linux, nsis, sbom, tarball};
use serde_json::{json, Value};

use crate::progress::Phase;
use crate::runtime::Target;
use crate::stage::{self, CacheKey};

/// Build everything a release ships into target/dist/: the Windows
/// installer, the Debian package and Linux tarball, the stock root
/// filesystem, SHA256SUMS, a minisign signature on each file, the public
/// key (colinux-release.pub), an SBOM and manifest.json. Runs the kernel,
/// runtime and image stages first (each a no-op when up to date), and is a
/// no-op itself when nothing changed.
///
/// Without --release, everything is signed with development keys made once
/// in target/cache/dist/dev-keys/, and the bundle says so. With --release
/// the keys come from the options below or their environment variables,
/// and dist refuses to run without them.
#[derive(clap::Args)]
#[command(
    after_help = "Release keys (--release), each option or its environment variable:
  --minisign-key FILE       COLINUX_MINISIGN_KEY       minisign secret key (mode 0600)
                            COLINUX_MINISIGN_PASSWORD  its password, if it has one
  --authenticode-cert FILE  COLINUX_AUTHENTICODE_CERT  PEM code-signing certificate chain
  --authenticode-key FILE   COLINUX_AUTHENTICODE_KEY   PEM private key (mode 0600)
                            COLINUX_AUTHENTICODE_PASSWORD  its password, if it has one"
)]
pub struct Args {
    /// Sign with the release keys; refuse to run without them.
    #[arg(long)]
    release: bool,
    /// Publish into DIR instead of target/dist.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The minisign secret key (with --release).
    #[arg(long, value_name = "FILE", requires = "release")]
    minisign_key: Option<PathBuf>,
    /// The Authenticode certificate chain, PEM (with --release).
    #[arg(long, value_name = "FILE", requires = "release")]
    authenticode_cert: Option<PathBuf>,
    /// The Authenticode private key, PEM (with --release).
    #[arg(long, value_name = "FILE", requires = "release")]
    authenticode_key: Option<PathBuf>,
    /// Build the bundle again from scratch in target/cache/verify/dist and
    /// fail unless every file, signatures included, is bit-identical to
    /// the published one, naming those that differ.
    #[arg(long)]
    verify_reproducible: bool,
}

/// The workspace version, the one every crate and package carries.
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Who the Debian package names as its maintainer.
const MAINTAINER: &str = "coLinux developers <colinux@users.noreply.github.com>";

/// This stage's code and the packaging crate's are inputs too.
const STAGE_CODE: &[&str] = &[include_str!("dist.rs"), include_str!("stage.rs")];
const PACKAGING: &str = "runtime/packaging";

/// The stages a release is made from, as `cargo xtask` arguments, and where
/// each publishes.
const STAGES: &[(&[&str], &str)] = &[
    (&["kernel", "--arch", "i386"], "target/kernel/i386"),
    (&["kernel", "--arch", "x86_64"], "target/kernel/x86_64"),
    (&["runtime"], "target/runtime/x86_64-unknown-linux-gnu"),
    (&["runtime"], "target/runtime/x86_64-pc-windows-gnu"),
    (&["image", "--distro", "debian"], "target/images/debian"),
];

pub fn run(args: Args) -> Result<()> {
    let root = stage::root();
    let dest = match &args.out {
        Some(dir) => stage::output_dir(dir, "--out")?,
        None => root.join("target/dist"),
    };
    // The first command on a fresh machine: it installs what it needs, as
    // `cargo xtask test` does.
    crate::setup::run(crate::setup::Args::default())?;
    let cache = stage::cache_dir().join("dist");
    let _lock = stage::lock(&cache)?;
    let keys = Keys::load(&args, &cache)?;
    run_stages()?;

    let sde = stage::source_date_epoch(&[])?;
    let commit = git(&["rev-parse", "HEAD"])?;
    let mut key = CacheKey::new("dist");
    key.value("version", VERSION);
    key.value("commit", &commit);
    key.value("SOURCE_DATE_EPOCH", &sde.to_string());
    key.value("code", &STAGE_CODE.concat());
    key.value("minisign key", keys.minisign.public_file());
    key.file(&keys.authenticode.cert)?;
    let mut stages = serde_json::Map::new();
    for (_, dir) in STAGES {
        let manifest = root.join(dir).join("manifest.json");
        key.file(&manifest)?;
        stages.insert(dir.to_string(), read_json(&manifest)?);
    }
    for file in files_under(&root.join(PACKAGING))? {
        key.file(&file)?;
    }
    for file in [
        "Cargo.lock",
        "COPYING",
        "README.md",
        "runtime/daemon/README.md",
    ] {
        key.file(&root.join(file))?;
    }
    let tools: Value = ["makensis", "osslsigncode", "dpkg-deb", "minisign"]
        .iter()
        .map(|t| (t.to_string(), Value::String(stage::tool_version(t))))
        .collect::<serde_json::Map<_, _>>()
        .into();
    key.value("tools", &tools.to_string());
    let (cache_key, inputs) = key.finish();

    let run = stage::Run::new("dist", args.verify_reproducible);
    if run.up_to_date(&dest, &cache_key)? {
        tracing::info!("dist: {} is up to date", dest.display());
        run.done()?;
        return tell_where(&dest, &keys);
    }
    let work = run.work_dir(&cache.join("work"))?;
    let staging = run.staging(&dest)?;
    let bundle = Bundle {
        root: &root,
        out: staging.path(),
        work: &work,
        keys: &keys,
        sde,
        commit: &commit,
    };
    bundle.windows_installer()?;
    bundle.linux_packages()?;
    bundle.images()?;
    bundle.sbom()?;
    bundle.sign_artifacts()?;
    std::fs::write(
        staging.path().join("colinux-release.pub"),
        keys.minisign.public_file(),
    )?;

    let manifest = json!({
        "stage": "dist",
        "version": VERSION,
        "commit": commit,
        "cache_key": cache_key,
        "SOURCE_DATE_EPOCH": sde,
        "signed_with": keys.description(),
        "inputs": inputs,
        "tools": tools,
        "stages": stages,
    });
    let seal = |dir: &Path| -> Result<()> {
        for file in ["SHA256SUMS", "manifest.json"] {
            bundle_sign(&keys, &dir.join(file), sde, &commit)?;
        }
        Ok(())
    };
    run.finish_sealed(staging, &dest, manifest, Some(&seal))?;
    let verified = run.verifying();
    run.done()?;
    if verified {
        return Ok(());
    }
    tell_where(&dest, &keys)
}

/// The last words of a dist run: where the bundle is and how to check it.
fn tell_where(dest: &Path, keys: &Keys) -> Result<()> {
    let files = files_under(dest)?;
    let bytes: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    if keys.development {
        tracing::warn!(
            "dist: signed with DEVELOPMENT keys (target/cache/dist/dev-keys): not for release; cargo xtask dist --release signs with the release keys"
        );
    }
    let dir = dest.display();
    println!(
        "the bundle: {dir} ({} files, {} MiB)\n\
         check it:   cd {dir} && sha256sum -c SHA256SUMS && minisign -Vm SHA256SUMS -p colinux-release.pub\n\
         \x20           (bash ci/verify-dist.sh {dir} checks every signature, the installer's Authenticode and the .debs with lintian)",
        files.len(),
        bytes >> 20
    );
    Ok(())
}

/// The stages run as they would from the command line, each with its own
/// progress and no-op check.
fn run_stages() -> Result<()> {
    let mut done: Vec<&[&str]> = Vec::new();
    for (stage_args, _) in STAGES {
        if !done.contains(stage_args) {
            stage::run_xtask(stage_args)?;
            done.push(stage_args);
        }
    }
    Ok(())
}

/// The signing keys of this run.
struct Keys {
    minisign: SigningKey,
    authenticode: AuthenticodeKeys,
    development: bool,
}

impl Keys {
    fn load(args: &Args, cache: &Path) -> Result<Keys> {
        if !args.release {
            let dir = cache.join("dev-keys");
            return Ok(Keys {
                minisign: SigningKey::development(&dir)?,
                authenticode: authenticode::make_dev_keys(&dir)?,
                development: true,
            });
        }
        let minisign = secret_file(&args.minisign_key, "--minisign-key", "COLINUX_MINISIGN_KEY")?;
        let cert = given(
            &args.authenticode_cert,
            "--authenticode-cert",
            "COLINUX_AUTHENTICODE_CERT",
        )?;
        let key = secret_file(
            &args.authenticode_key,
            "--authenticode-key",
            "COLINUX_AUTHENTICODE_KEY",
        )?;
        let password = |var: &str| std::env::var(var).ok().filter(|p| !p.is_empty());
        Ok(Keys {
            minisign: SigningKey::from_file(
                &minisign,
                password("COLINUX_MINISIGN_PASSWORD").as_deref(),
            )?,
            authenticode: AuthenticodeKeys {
                cert,
                key,
                password: password("COLINUX_AUTHENTICODE_PASSWORD"),
            },
            development: false,
        })
    }

    fn description(&self) -> &'static str {
        if self.development {
            "DEVELOPMENT keys (target/cache/dist/dev-keys), not for release"
        } else {
            "release keys"
        }
    }
}

/// A key file given by option or environment variable, which must exist.
fn given(option: &Option<PathBuf>, flag: &str, var: &str) -> Result<PathBuf> {
    let path = option
        .clone()
        .or_else(|| std::env::var_os(var).map(PathBuf::from))
        .with_context(|| format!("--release needs {flag} FILE or {var}"))?;
    std::fs::File::open(&path).with_context(|| {
        format!(
            "{}: cannot read the key file ({flag}, {var})",
            path.display()
        )
    })?;
    Ok(path)
}

/// As `given`, for a secret key: nobody but its owner may read it.
fn secret_file(option: &Option<PathBuf>, flag: &str, var: &str) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = given(option, flag, var)?;
    let mode = std::fs::metadata(&path)?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "{}: a secret key readable by others (mode {:o}): chmod 600 it",
            path.display(),
            mode & 0o777
        );
    }
    Ok(path)
}

/// What one dist run writes into its staging directory.
struct Bundle<'a> {
    root: &'a Path,
    out: &'a Path,
    work: &'a Path,
    keys: &'a Keys,
    sde: u64,
    commit: &'a str,
}

impl Bundle<'_> {
    fn kernels(&self) -> Vec<(String, PathBuf)> {
        ["i386", "x86_64"]
            .iter()
            .map(|arch| {
                (
                    arch.to_string(),
                    self.root.join("target/kernel").join(arch).join("bzImage"),
                )
            })
            .collect()
    }

    fn docs(&self) -> Vec<PathBuf> {
        ["README.md", "COPYING"]
            .iter()
            .map(|f| self.root.join(f))
            .collect()
    }

    /// The installer, holding the daemon and console signed first.
    fn windows_installer(&self) -> Result<()> {
        let phase = Phase::start("windows");
        let bin = self.root.join("target/runtime/x86_64-pc-windows-gnu");
        let signed = self.work.join("windows");
        std::fs::create_dir_all(&signed)?;
        for exe in ["colinux-daemon.exe", "colinux-console.exe"] {
            authenticode::sign(
                &bin.join(exe),
                &signed.join(exe),
                &self.keys.authenticode,
                self.sde,
            )?;
        }
        let name = format!("colinux-{VERSION}-windows-x86_64-setup.exe");
        nsis::build(
            &nsis::InstallerSpec {
                version: VERSION.to_string(),
                daemon_exe: signed.join("colinux-daemon.exe"),
                console_exe: signed.join("colinux-console.exe"),
                kernels: self.kernels(),
                image: Some(self.root.join("target/images/debian/debian.ext4.zst")),
                docs: self.docs(),
                sign: Some((self.keys.authenticode.clone(), self.sde)),
            },
            &self.out.join(&name),
        )?;
        phase.done(&name);
        Ok(())
    }

    /// The Debian packages (the runtime's and the stock image's) and the
    /// tarball holding both, from one layout each.
    fn linux_packages(&self) -> Result<()> {
        let phase = Phase::start("linux");
        let version = deb::deb_version(VERSION);
        let inputs = linux::LinuxInputs {
            runtime_dir: self.root.join("target/runtime/x86_64-unknown-linux-gnu"),
            kernel_i386: self.root.join("target/kernel/i386/bzImage"),
            kernel_x86_64: self.root.join("target/kernel/x86_64/bzImage"),
            repo_root: self.root.to_path_buf(),
            version: version.clone(),
            maintainer: MAINTAINER.to_string(),
            source_date_epoch: self.sde,
        };
        let images = self.root.join("target/images/debian");
        let runtime = linux::linux_layout(&inputs)?;
        let image = linux::image_layout(
            &inputs,
            &images.join("debian.ext4.zst"),
            &images.join("debian.packages"),
        )?;
        let tar = format!("colinux-{VERSION}-linux-x86_64.tar.gz");
        let both: Vec<_> = runtime.iter().chain(&image).cloned().collect();
        tarball::write_tar_gz(&both, &self.out.join(&tar), self.sde)?;
        let mut built = Vec::new();
        for (package, entries) in [(deb::RUNTIME, runtime), (deb::IMAGE_DEBIAN, image)] {
            let deb = deb::build_deb(
                &deb::DebSpec {
                    package,
                    version: version.clone(),
                    source_date_epoch: self.sde,
                    maintainer: MAINTAINER.to_string(),
                    entries,
                },
                self.out,
            )?;
            built.push(
                deb.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        phase.done(&format!("{} and {tar}", built.join(", ")));
        Ok(())
    }

    /// The stock root filesystem: the compressed image, the rootfs tarball
    /// and the package list, as the image stage published them.
    fn images(&self) -> Result<()> {
        let dir = self.root.join("target/images/debian");
        let manifest = read_json(&dir.join("manifest.json"))?;
        let label = format!(
            "debian-{}-{}",
            manifest["suite"].as_str().unwrap_or("unknown"),
            manifest["arch"].as_str().unwrap_or("unknown")
        );
        for suffix in ["ext4.zst", "tar.gz", "packages"] {
            let to = self.out.join(format!("colinux-{VERSION}-{label}.{suffix}"));
            std::fs::copy(dir.join(format!("debian.{suffix}")), &to)
                .with_context(|| format!("cannot copy the debian image's {suffix}"))?;
        }
        Ok(())
    }

    /// CycloneDX: the Rust crates linked into the shipped binaries, and
    /// each image's packages.
    fn sbom(&self) -> Result<()> {
        let packages =
            std::fs::read_to_string(self.root.join("target/images/debian/debian.packages"))?;
        let crates = linked_crates(self.root, crate::runtime::PACKAGE, &Target::ALL)?;
        let text = sbom::cyclonedx(
            "colinux",
            VERSION,
            &crates,
            &[sbom::ImagePackages {
                image: "debian",
                distro: "debian",
                packages: &packages,
            }],
        )?;
        std::fs::write(self.out.join(format!("colinux-{VERSION}.cdx.json")), text)?;
        Ok(())
    }

    /// A `.minisig` beside every artifact.
    fn sign_artifacts(&self) -> Result<()> {
        let phase = Phase::start("sign");
        let mut files = files_under(self.out)?;
        files.retain(|f| f.extension().is_none_or(|e| e != "minisig"));
        for file in &files {
            bundle_sign(self.keys, file, self.sde, self.commit)?;
        }
        phase.done(&format!("{} files", files.len()));
        Ok(())
    }
}

/// The third-party crates `package`'s binaries link for each target, as
/// the runtime stage builds them (`cargo build --package P --target T`):
/// `cargo tree -e normal` with the same selection. Not `cargo metadata`'s
/// resolve graph: it unifies features over the whole workspace, and so
/// lists crates (aho-corasick, for xtask's regex) that the daemon does not
/// link. Each crate's source and checksum come from Cargo.lock.
fn linked_crates(root: &Path, package: &str, targets: &[Target]) -> Result<Vec<sbom::Crate>> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock"))?;
    let locked: std::collections::BTreeMap<_, _> = sbom::lock_packages(&lock)
        .filter_map(|p| Some(((p.name?, p.version?), (p.source?, p.checksum))))
        .collect();
    let mut linked: std::collections::BTreeMap<(String, String), sbom::Crate> = Default::default();
    for target in targets {
        let triple = target.triple();
        let out = stage::cargo()
            .current_dir(root)
            .args(["tree", "--locked", "--edges", "normal", "--prefix", "none"])
            .args(["--format", "{p}", "--target", triple, "--package", package])
            .output()
            .context("cannot run cargo tree")?;
        if !out.status.success() {
            bail!(
                "cargo tree --target {triple} --package {package} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut words = line.split_whitespace();
            let (Some(name), Some(version)) = (words.next(), words.next()) else {
                continue;
            };
            let key = (
                name.to_string(),
                version.trim_start_matches('v').to_string(),
            );
            // A workspace crate has no source in Cargo.lock.
            let Some((source, checksum)) = locked.get(&key) else {
                continue;
            };
            linked
                .entry(key.clone())
                .or_insert_with(|| sbom::Crate {
                    name: key.0,
                    version: key.1,
                    source: source.clone(),
                    checksum: checksum.clone(),
                    targets: Default::default(),
                })
                .targets
                .insert(triple.to_string());
        }
    }
    Ok(linked.into_values().collect())
}

/// Signs `file` with a trusted comment that names it, the release and the
/// kind of key.
fn bundle_sign(keys: &Keys, file: &Path, sde: u64, commit: &str) -> Result<()> {
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    let mut comment = format!("timestamp:{sde}\tfile:{name}\tversion:{VERSION}\tcommit:{commit}");
    if keys.development {
        comment.push_str("\tDEVELOPMENT KEY");
    }
    keys.minisign.sign_file(file, &comment)?;
    Ok(())
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}: run its stage first", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// Every file under `dir`, sorted.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in
            std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn git(args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(stage::root())
        .output()
        .context("cannot run git")?;
    if !out.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sbom_lists_per_target_the_crates_the_daemon_links_and_no_tools() {
        let root = stage::root();
        let crates = linked_crates(&root, crate::runtime::PACKAGE, &Target::ALL).unwrap();
        let targets_of = |name: &str| -> Vec<&str> {
            let found = crates.iter().find(|c| c.name == name);
            found.map_or(vec![], |c| c.targets.iter().map(String::as_str).collect())
        };
        let both = ["x86_64-pc-windows-gnu", "x86_64-unknown-linux-gnu"];
        assert_eq!(
            targets_of("ruzstd"),
            both,
            "the daemon unpacks images with it"
        );
        assert_eq!(targets_of("kvm-ioctls"), ["x86_64-unknown-linux-gnu"]);
        assert_eq!(targets_of("windows-sys"), ["x86_64-pc-windows-gnu"]);
        // Only the workspace's tools use these.
        for tool in [
            "indicatif",
            "xshell",
            "libfuzzer-sys",
            "aho-corasick",
            "cargo_metadata",
        ] {
            assert_eq!(targets_of(tool), Vec::<&str>::new(), "{tool}");
        }
        // Every crate has its Cargo.lock checksum.
        sbom::cyclonedx("colinux", VERSION, &crates, &[]).unwrap();
    }
}
