//! Recipes: `recipes/<name>.toml`, a short declarative description of one
//! root filesystem. A recipe may `extends` another: tables merge key by key,
//! the `packages`, `overlays` and `hooks` lists append to the base's, and
//! every other value replaces the base's.
//!
//! A library of its own, apart from the image stage, so the fuzzer
//! (`fuzz/`) can reach the parser.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The base recipe's name, already merged in by `load`.
    #[serde(default)]
    pub extends: Option<String>,
    pub distro: Distro,
    pub suite: String,
    /// Debian's architecture name (i386, amd64).
    pub arch: String,
    /// Empty: the host's mirror for Debian.
    #[serde(default)]
    pub mirror: String,
    #[serde(default)]
    pub extra_suites: Vec<String>,
    /// "URL SUITE" of a separate security archive, or empty.
    #[serde(default)]
    pub security: String,
    pub components: Vec<String>,
    /// The archive keyring, as the image holds it (its apt sources name
    /// it); the build checks the archive with the host's copy, or with the
    /// one in `keyring_package`.
    pub keyring: PathBuf,
    /// The archive's own keyring package, pinned, when the host has none.
    #[serde(default)]
    pub keyring_package: Option<KeyringPackage>,
    /// The oldest Linux the userland runs on ("4.15"): a build for an older
    /// kernel stops before it starts.
    #[serde(default)]
    pub min_kernel: Option<String>,
    pub variant: String,
    #[serde(default)]
    pub packages: Vec<String>,
    /// Directories under `recipes/overlays/`, copied over the root in order.
    #[serde(default)]
    pub overlays: Vec<String>,
    /// Scripts under `recipes/hooks/`, run inside the root in order.
    #[serde(default)]
    pub hooks: Vec<String>,
    pub hostname: String,
    pub size: SizePolicy,
    #[serde(default)]
    pub network: BTreeMap<String, Interface>,
    pub console: Console,
    pub users: Users,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyringPackage {
    /// The .deb's path under the mirror (pool/…).
    pub file: String,
    /// Its sha256: the build refuses any other file.
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Distro {
    Debian,
    Ubuntu,
}

impl Distro {
    pub fn name(self) -> &'static str {
        match self {
            Distro::Debian => "debian",
            Distro::Ubuntu => "ubuntu",
        }
    }

    /// Where the archive lives when the recipe does not say.
    pub fn default_mirror(self) -> &'static str {
        match self {
            Distro::Debian => "http://deb.debian.org/debian",
            Distro::Ubuntu => "http://archive.ubuntu.com/ubuntu",
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SizePolicy {
    /// "auto" or a size such as "2G".
    pub size: String,
    /// With "auto": the free space beyond the content.
    #[serde(default = "default_free")]
    pub free: String,
}

fn default_free() -> String {
    "512M".into()
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    #[serde(default)]
    pub dhcp: bool,
    /// A static address with its prefix, such as "10.0.2.15/24".
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub dns: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Console {
    /// The terminals that get a login prompt (ttyS0, hvc0, tty1 …).
    pub getty: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Users {
    /// Only "locked": credentials come from the command line, never a recipe.
    pub root: String,
}

/// The lists a derived recipe adds to rather than replaces.
const APPENDED: &[&str] = &["packages", "overlays", "hooks"];

/// Loads `dir/<name>.toml`, following `extends`, and checks it.
pub fn load(dir: &Path, name: &str) -> Result<Recipe> {
    load_file(&dir.join(format!("{name}.toml")), dir)
}

/// Loads a recipe from a file; `extends` names recipes in `dir`.
pub fn load_file(path: &Path, dir: &Path) -> Result<Recipe> {
    load_file_with(path, dir, &|p: &Path| std::fs::read_to_string(p))
}

/// Reads a recipe's text; a missing file is `ErrorKind::NotFound`.
pub type ReadFile<'a> = &'a dyn Fn(&Path) -> io::Result<String>;

/// `load_file`, with every recipe of the chain read through `read` (the
/// fuzzer serves them from memory).
pub fn load_file_with(path: &Path, dir: &Path, read: ReadFile) -> Result<Recipe> {
    let mut chain = Vec::new();
    let table = merged(path, dir, read, &mut chain)?;
    let recipe: Recipe = table
        .try_into()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("{}: {}", path.display(), e.message()))?;
    recipe
        .check()
        .with_context(|| format!("{}", path.display()))?;
    Ok(recipe)
}

/// The recipe file and the bases it extends, nearest first: the files a
/// build of it reads.
pub fn chain(path: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut chain = Vec::new();
    merged(
        path,
        dir,
        &|p: &Path| std::fs::read_to_string(p),
        &mut chain,
    )?;
    Ok(chain)
}

/// The recipe at `path` with its bases merged under it.
fn merged(
    path: &Path,
    dir: &Path,
    read: ReadFile,
    chain: &mut Vec<PathBuf>,
) -> Result<toml::Table> {
    if chain.iter().any(|p| p == path) {
        bail!("{}: recipes extend each other in a loop", path.display());
    }
    chain.push(path.to_path_buf());
    let text = read(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "no recipe {} (the stock recipes are in recipes/)",
                path.display()
            )
        } else {
            anyhow::anyhow!("cannot read recipe {}: {e}", path.display())
        }
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| syntax_error(path, &text, &e))?;
    let Some(base) = table.get("extends") else {
        return Ok(table);
    };
    let Some(base) = base.as_str() else {
        bail!("{}: extends must be a recipe name", path.display());
    };
    // A base next to the recipe first, else a stock one.
    let beside = path.with_file_name(format!("{base}.toml"));
    let base_path = if beside.is_file() {
        beside
    } else {
        dir.join(format!("{base}.toml"))
    };
    let mut merged_base = merged(&base_path, dir, read, chain)?;
    merge(&mut merged_base, table);
    Ok(merged_base)
}

/// toml's own message shows the line with a caret below it; ours is one
/// line: `file:LINE:COLUMN: what`.
fn syntax_error(path: &Path, text: &str, e: &toml::de::Error) -> anyhow::Error {
    let place = e.span().map_or(String::new(), |span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!(":{line}:{column}")
    });
    let message: Vec<&str> = e.message().lines().filter(|l| !l.is_empty()).collect();
    anyhow::anyhow!("{}{place}: {}", path.display(), message.join(": "))
}

fn merge(base: &mut toml::Table, derived: toml::Table) {
    for (key, value) in derived {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(d)) => merge(b, d),
            (Some(toml::Value::Array(b)), toml::Value::Array(d))
                if APPENDED.contains(&key.as_str()) =>
            {
                b.extend(d)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

impl Recipe {
    fn check(&self) -> Result<()> {
        if self.users.root != "locked" {
            bail!(
                "users.root = {:?}: the only value is \"locked\"; give a password hash or key with --root-password-hash or --root-key, never in a recipe",
                self.users.root
            );
        }
        if !self.size.size.eq_ignore_ascii_case("auto") {
            parse_size(&self.size.size).context("size.size")?;
        }
        parse_size(&self.size.free).context("size.free")?;
        if self.hostname.is_empty()
            || self.hostname.len() > 63
            || !self
                .hostname
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            bail!(
                "hostname {:?} is not a valid host name (letters, digits and -, at most 63)",
                self.hostname
            );
        }
        for (name, iface) in &self.network {
            if iface.dhcp == iface.address.is_some() {
                bail!("network.{name}: give either dhcp = true or an address");
            }
        }
        if !self.security.is_empty() && self.security.split_whitespace().count() != 2 {
            bail!(
                "security = {:?}: expected \"URL SUITE\" or empty",
                self.security
            );
        }
        for name in self.overlays.iter().chain(&self.hooks) {
            if name.contains("..") || name.starts_with('/') {
                bail!("{name:?}: overlays and hooks are named relative to recipes/overlays and recipes/hooks");
            }
        }
        if let Some(package) = &self.keyring_package {
            if !package.file.ends_with(".deb") || package.file.starts_with('/') {
                bail!(
                    "keyring_package.file = {:?}: expected the .deb's path under the mirror, such as pool/main/u/ubuntu-keyring/ubuntu-keyring_2023.11.28.1_all.deb",
                    package.file
                );
            }
            if package.sha256.len() != 64 || !package.sha256.chars().all(|c| c.is_ascii_hexdigit())
            {
                bail!(
                    "keyring_package.sha256 = {:?}: expected 64 hexadecimal digits",
                    package.sha256
                );
            }
        }
        if let Some(min) = &self.min_kernel {
            if kernel_version(min).is_none() {
                bail!("min_kernel = {min:?}: expected a Linux version such as \"4.15\"");
            }
        }
        Ok(())
    }

    /// Whether a kernel of this version (such as "6.1.192") runs the
    /// userland; true when the recipe states no minimum.
    pub fn runs_on(&self, kernel: &str) -> bool {
        let min = self.min_kernel.as_deref().and_then(kernel_version);
        match (min, kernel_version(kernel)) {
            (Some(min), Some(kernel)) => kernel >= min,
            _ => true,
        }
    }

    /// The apt sources, as mmdebstrap takes them: one "deb URL SUITE
    /// COMPONENTS" line per suite.
    pub fn sources(&self, mirror: &str) -> Vec<String> {
        let components = self.components.join(" ");
        let mut lines: Vec<String> = std::iter::once(&self.suite)
            .chain(&self.extra_suites)
            .map(|suite| format!("deb {mirror} {suite} {components}"))
            .collect();
        if !self.security.is_empty() {
            lines.push(format!("deb {} {components}", self.security));
        }
        lines
    }
}

/// "6.1.192" → [6, 1, 192]; the numbers before any suffix ("-co").
fn kernel_version(text: &str) -> Option<Vec<u32>> {
    let numbers = text.split(['-', '+', '~']).next()?;
    numbers.split('.').map(|n| n.parse().ok()).collect()
}

/// "512M", "2G", "1.5G", "4096K" or a number of bytes.
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let (number, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let scale: u64 = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => bail!("{text:?} is not a size (use a number with K, M, G or T)"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v > 0.0)
        .with_context(|| format!("{text:?} is not a size (use a number with K, M, G or T)"))?;
    Ok((value * scale as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
    }

    const BASE: &str = r#"
distro = "debian"
suite = "bookworm"
arch = "i386"
extra_suites = ["bookworm-updates"]
security = "http://deb.debian.org/debian-security bookworm-security"
components = ["main"]
keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
variant = "apt"
packages = ["systemd-sysv", "openssh-server"]
overlays = ["base"]
hooks = ["slim.sh"]
hostname = "colinux"
[size]
size = "auto"
free = "512M"
[network.eth0]
dhcp = true
[console]
getty = ["ttyS0"]
[users]
root = "locked"
"#;

    #[test]
    fn the_stock_recipes_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes");
        let debian = load(&dir, "debian").unwrap();
        assert_eq!(
            (debian.suite.as_str(), debian.arch.as_str()),
            ("trixie", "i386")
        );
        assert!(debian.security.ends_with(" trixie-security"));
        let bookworm = load(&dir, "debian-bookworm").unwrap();
        assert_eq!(bookworm.suite, "bookworm");
        assert_eq!(bookworm.extra_suites, ["bookworm-updates"], "replaced");
        assert_eq!(bookworm.packages, debian.packages, "inherited");
        assert_eq!(
            chain(&dir.join("debian-bookworm.toml"), &dir).unwrap(),
            [dir.join("debian-bookworm.toml"), dir.join("debian.toml")]
        );
        assert!(debian.packages.iter().any(|p| p == "openssh-server"));
        let ubuntu = load(&dir, "ubuntu").unwrap();
        assert_eq!(
            (ubuntu.distro, ubuntu.arch.as_str()),
            (Distro::Ubuntu, "amd64")
        );
        assert_eq!(ubuntu.packages, debian.packages, "inherited");
        assert!(ubuntu.security.is_empty(), "replaced by the empty string");
    }

    #[test]
    fn a_derived_recipe_appends_lists_and_replaces_the_rest() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "base", BASE);
        write(
            t.path(),
            "node",
            "extends = \"base\"\nhostname = \"node1\"\npackages = [\"nfs-common\"]\n[network.eth1]\ndhcp = true\n[size]\nfree = \"1G\"\n",
        );
        let node = load(t.path(), "node").unwrap();
        assert_eq!(node.hostname, "node1");
        assert_eq!(
            node.packages,
            ["systemd-sysv", "openssh-server", "nfs-common"]
        );
        assert_eq!(node.size.size, "auto", "tables merge key by key");
        assert_eq!(node.size.free, "1G");
        assert_eq!(node.network.len(), 2);
        assert_eq!(node.extends.as_deref(), Some("base"));
    }

    #[test]
    fn bad_recipes_are_named_with_the_problem() {
        let t = tempfile::tempdir().unwrap();
        let err = |name: &str, text: &str| {
            write(t.path(), name, text);
            format!("{:#}", load(t.path(), name).unwrap_err())
        };
        let e = err("syntax", "distro = \"debian\"\nsuite = = \"x\"\n");
        assert!(
            e.starts_with(&format!("{}:2:", t.path().join("syntax.toml").display())),
            "{e}"
        );
        assert!(!e.contains('\n'), "one line: {e:?}");
        let e = err("typo", &format!("{BASE}\npackges = [\"vim\"]\n"));
        assert!(e.contains("typo.toml") && e.contains("packges"), "{e}");
        let e = err("distro", &BASE.replace("\"debian\"", "\"gentoo\""));
        assert!(e.contains("distro.toml") && e.contains("gentoo"), "{e}");
        let e = err("loop", "extends = \"loop\"\n");
        assert!(e.contains("loop"), "{e}");
        let e = err("nobase", "extends = \"missing\"\n");
        assert!(e.contains("missing.toml"), "{e}");
        let e = err("pw", &BASE.replace("root = \"locked\"", "root = \"$6$x\""));
        assert!(e.contains("--root-password-hash"), "{e}");
        let e = err("size", &BASE.replace("free = \"512M\"", "free = \"lots\""));
        assert!(e.contains("size.free") && e.contains("lots"), "{e}");
        let e = err("host", &BASE.replace("\"colinux\"", "\"co linux\""));
        assert!(e.contains("co linux"), "{e}");
        let e = err("net", &BASE.replace("dhcp = true", "dhcp = false"));
        assert!(e.contains("network.eth0"), "{e}");
        let e = err("ovl", &BASE.replace("\"base\"]", "\"../etc\"]"));
        assert!(e.contains("../etc"), "{e}");
    }

    #[test]
    fn kernel_minimum_and_keyring_package_are_checked() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "base", &format!("min_kernel = \"4.15\"\n{BASE}"));
        let r = load(t.path(), "base").unwrap();
        assert!(r.runs_on("6.1.192") && r.runs_on("4.15") && r.runs_on("5.4.0-co"));
        assert!(!r.runs_on("4.14.336") && !r.runs_on("3.2"));
        let e = |text: &str| {
            write(t.path(), "bad", text);
            format!("{:#}", load(t.path(), "bad").unwrap_err())
        };
        let err = e(&format!("min_kernel = \"new\"\n{BASE}"));
        assert!(
            err.contains("min_kernel") && err.contains("\"new\""),
            "{err}"
        );
        let package = |file: &str, sha: &str| {
            format!("{BASE}[keyring_package]\nfile = \"{file}\"\nsha256 = \"{sha}\"\n")
        };
        let good = "0".repeat(64);
        let err = e(&package("pool/k.tar", &good));
        assert!(err.contains("keyring_package.file"), "{err}");
        let err = e(&package("pool/k.deb", "abc"));
        assert!(err.contains("keyring_package.sha256"), "{err}");
        write(t.path(), "ok", &package("pool/k.deb", &good));
        assert!(load(t.path(), "ok").unwrap().keyring_package.is_some());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        for bad in ["", "G", "-1G", "2X", "1e400"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sources_list_every_suite() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "base", BASE);
        let r = load(t.path(), "base").unwrap();
        assert_eq!(
            r.sources("http://m/debian"),
            [
                "deb http://m/debian bookworm main",
                "deb http://m/debian bookworm-updates main",
                "deb http://deb.debian.org/debian-security bookworm-security main",
            ]
        );
    }
}
