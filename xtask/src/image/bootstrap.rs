//! The bootstrap: mmdebstrap turns a recipe's archive, suites and packages
//! into a root tarball. It is the slow, network-bound part of an image, so
//! it is cached on its own key: overlays, hooks and settings change without
//! bootstrapping again.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use sha2::Digest;

use crate::progress::Phase;
use recipe::{Distro, Recipe};

/// The recipe's mirror, else (for Debian) the host's own, else the distro's.
pub fn mirror(recipe: &Recipe) -> String {
    if !recipe.mirror.is_empty() {
        return recipe.mirror.trim_end_matches('/').to_string();
    }
    if recipe.distro == Distro::Debian {
        if let Some(host) = host_mirror(&recipe.suite) {
            return host;
        }
    }
    recipe.distro.default_mirror().to_string()
}

/// The first host apt source that serves `suite` (one-line and deb822).
fn host_mirror(suite: &str) -> Option<String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    files.iter().find_map(|path| {
        let text = std::fs::read_to_string(path).ok()?;
        match path.extension().and_then(|e| e.to_str()) {
            Some("sources") => mirror_in_deb822(&text, suite),
            Some("list") | None => mirror_in_one_line(&text, suite),
            _ => None,
        }
    })
}

fn mirror_in_one_line(text: &str, suite: &str) -> Option<String> {
    text.lines().find_map(|line| {
        // "deb [options] URL SUITE COMPONENTS…": drop the options.
        let line = match (line.find('['), line.find(']')) {
            (Some(a), Some(b)) if a < b => format!("{}{}", &line[..a], &line[b + 1..]),
            _ => line.to_string(),
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        (words.first() == Some(&"deb") && words.get(2) == Some(&suite))
            .then(|| words[1].trim_end_matches('/').to_string())
    })
}

fn mirror_in_deb822(text: &str, suite: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let serves = field("Types")?.split_whitespace().any(|t| t == "deb")
            && field("Suites")?.split_whitespace().any(|s| s == suite)
            && field("Enabled").is_none_or(|e| e != "no");
        serves.then(|| field("URIs"))?.map(|u| {
            u.split_whitespace()
                .next()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_string()
        })
    })
}

/// Before the long work: the mirror answers, has the recipe's suites, and
/// publishes the recipe's architecture in the suite's Release file.
pub fn check_archive(recipe: &Recipe, mirror: &str) -> Result<()> {
    let distro = recipe.distro.name();
    for suite in std::iter::once(&recipe.suite).chain(&recipe.extra_suites) {
        let url = format!("{mirror}/dists/{suite}/InRelease");
        let release = match fetch(&url)? {
            Fetched::Body(body) => String::from_utf8_lossy(&body).into_owned(),
            Fetched::Status(code) => bail!(
                "the {distro} mirror {mirror} has no suite {suite:?} ({url} answers HTTP {code}): check the recipe's suite and extra_suites"
            ),
            Fetched::Unreachable(why) => bail!(
                "cannot reach the {distro} mirror {mirror}: {url}: {why}; pass --mirror URL with a reachable mirror of {distro} {}",
                recipe.suite
            ),
        };
        if suite != &recipe.suite {
            continue;
        }
        let archs = release
            .lines()
            .find_map(|l| l.strip_prefix("Architectures:"))
            .unwrap_or_default();
        if !archs.split_whitespace().any(|a| a == recipe.arch) {
            bail!(
                "{distro} {suite} does not publish the architecture {} (its Release file lists: {}): choose another --arch or suite",
                recipe.arch,
                archs.trim()
            );
        }
    }
    Ok(())
}

enum Fetched {
    Body(Vec<u8>),
    /// An HTTP error status.
    Status(u16),
    Unreachable(String),
}

/// One small download with curl, its outcome told apart.
fn fetch(url: &str) -> Result<Fetched> {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--location"])
        .args([
            "--connect-timeout",
            "10",
            "--max-time",
            "60",
            "--retry",
            "2",
        ])
        .args(["--write-out", "\n%{http_code}"])
        .arg(url)
        .output()
        .context("cannot run curl (cargo xtask setup installs it)")?;
    if !out.status.success() {
        return Ok(Fetched::Unreachable(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let mut body = out.stdout;
    let split = body.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let code: u16 = String::from_utf8_lossy(&body[split..]).trim().parse()?;
    body.truncate(split);
    Ok(match code {
        200 => Fetched::Body(body),
        _ => Fetched::Status(code),
    })
}

/// The keyring file mmdebstrap checks the archive with: the host's, or the
/// one inside the recipe's pinned keyring package, fetched once into
/// `cache` and checked against the pin before anything else.
pub fn keyring(name: &str, recipe: &Recipe, mirror: &str, cache: &Path) -> Result<PathBuf> {
    let Some(package) = &recipe.keyring_package else {
        if !recipe.keyring.is_file() {
            bail!(
                "the {name} recipe's archive keyring {} is missing (cargo xtask setup installs debian-archive-keyring; for another archive, pin its keyring package in keyring_package)",
                recipe.keyring.display()
            );
        }
        return Ok(recipe.keyring.clone());
    };
    let dir = cache.join("keyrings").join(&package.sha256);
    let extracted = dir.join(recipe.keyring.strip_prefix("/").unwrap_or(&recipe.keyring));
    if extracted.is_file() {
        return Ok(extracted);
    }
    let url = format!("{mirror}/{}", package.file);
    let deb = match fetch(&url)? {
        Fetched::Body(body) => body,
        Fetched::Status(code) => bail!(
            "the {name} recipe's keyring package {url} answers HTTP {code}: check keyring_package.file"
        ),
        Fetched::Unreachable(why) => bail!("cannot fetch the keyring package {url}: {why}"),
    };
    let sha256 = crate::stage::hex(&sha2::Sha256::digest(&deb));
    if sha256 != package.sha256 {
        bail!(
            "the keyring package {url} has sha256 {sha256}, but the {name} recipe pins {}: refusing it",
            package.sha256
        );
    }
    // Unpacked beside its final place, then renamed: never half there.
    let partial = cache
        .join("keyrings")
        .join(format!(".{}.partial", package.sha256));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    let deb_file = partial.join("package.deb");
    std::fs::write(&deb_file, &deb)?;
    let out = Command::new("dpkg-deb")
        .arg("--extract")
        .arg(&deb_file)
        .arg(&partial)
        .output()
        .context("cannot run dpkg-deb")?;
    if !out.status.success() {
        bail!(
            "cannot unpack the keyring package {url}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if !partial.join(extracted.strip_prefix(&dir)?).is_file() {
        bail!(
            "the keyring package {url} has no {}: check the recipe's keyring",
            recipe.keyring.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&partial, &dir)?;
    Ok(extracted)
}

pub struct Bootstrap<'a> {
    pub recipe: &'a Recipe,
    pub mirror: &'a str,
    /// The keyring file to check the archive with.
    pub keyring: &'a Path,
    /// Where the .deb files persist between builds.
    pub apt_cache: &'a Path,
    pub sde: u64,
    pub log: &'a Path,
}

/// Transient archive failures worth another try; anything else is final.
const TRANSIENT: &[&str] = &[
    "Mirror sync in progress",
    "Hash Sum mismatch",
    "Temporary failure",
    "Connection timed out",
    "Connection failed",
    "Undetermined Error",
];

impl Bootstrap<'_> {
    /// Writes the root tarball to `out`, retrying transient archive
    /// failures a bounded number of times. If only update suites' indexes
    /// (the extra suites and the security archive) keep failing, as on a
    /// mirror caught mid-sync (docs/design.md §9), the image is made from the
    /// release alone and the returned warning says so; the image's own apt
    /// sources still list them, so `apt upgrade` in the guest catches up.
    pub fn run(&self, out: &Path, phase: &mut Phase) -> Result<Option<String>> {
        std::fs::create_dir_all(self.apt_cache)?;
        let mut sources = self.recipe.sources(self.mirror);
        let mut skipped = None;
        let mut attempt = 1;
        loop {
            match self.attempt(out, &sources, phase) {
                Ok(()) => return Ok(skipped),
                Err(failure) => {
                    let failing = failing_updates(&sources, &failure.output);
                    if !failing.is_empty() && attempt >= 3 && skipped.is_none() {
                        let first_error = failure
                            .output
                            .lines()
                            .find(|l| l.contains("Failed to fetch"))
                            .unwrap_or_default();
                        let warning = format!(
                            "the index of {} failed three times, so this image has only the release's packages until `apt upgrade` in the guest: {}",
                            failing.join(" and "),
                            first_error.trim_start_matches("E: ")
                        );
                        tracing::warn!("bootstrap: {warning}");
                        sources.retain(|s| !failing.contains(&index_url(s)));
                        skipped = Some(warning);
                        continue;
                    }
                    let transient = TRANSIENT.iter().any(|t| failure.output.contains(t));
                    let failed_index = failure
                        .output
                        .lines()
                        .filter(|l| l.contains("Failed to fetch") || l.starts_with("E:"))
                        .take(3)
                        .collect::<Vec<_>>()
                        .join("\n");
                    if transient && attempt < 3 {
                        tracing::warn!(
                            "bootstrap: a transient archive failure (attempt {attempt} of 3), trying again:\n{failed_index}"
                        );
                        attempt += 1;
                        continue;
                    }
                    let tail: Vec<&str> = failure.output.lines().collect();
                    bail!(
                        "mmdebstrap failed ({}){}; the last lines of {}:\n{}",
                        failure.status,
                        if transient { " three times" } else { "" },
                        self.log.display(),
                        tail[tail.len().saturating_sub(25)..].join("\n")
                    );
                }
            }
        }
    }

    pub fn command(&self, out: &Path, sources: &[String]) -> Command {
        let r = self.recipe;
        let cache = self.apt_cache.display();
        let mut cmd = Command::new("mmdebstrap");
        // As root: mmdebstrap's root mode; otherwise its unshare mode.
        cmd.arg(if crate::stage::is_root() {
            "--mode=root"
        } else {
            "--mode=unshare"
        })
        .arg(format!("--variant={}", r.variant))
        .arg(format!("--architectures={}", r.arch))
        .arg(format!("--keyring={}", self.keyring.display()))
        .arg("--verbose");
        if !r.packages.is_empty() {
            cmd.arg(format!("--include={}", r.packages.join(",")));
        }
        // The persistent apt cache: in before the download, out after it.
        cmd.arg("--skip=essential/unlink")
            .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/partial")
            .arg(format!("--setup-hook=sync-in {cache} /var/cache/apt/archives/"))
            .arg(format!("--customize-hook=sync-out /var/cache/apt/archives {cache}"))
            // The host's resolver and name are not the image's; the cache
            // directories' times came from the cache, so reset them (the
            // tarball clamps them to SOURCE_DATE_EPOCH).
            .arg("--customize-hook=rm -f \"$1\"/etc/resolv.conf \"$1\"/etc/hostname; touch \"$1\"/var/cache/apt/archives \"$1\"/var/cache/apt/archives/partial")
            .arg(&r.suite)
            .arg(out)
            .args(sources)
            .env("SOURCE_DATE_EPOCH", self.sde.to_string())
            .env("LC_ALL", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// One mmdebstrap run, its output streamed to the log and counted.
    fn attempt(
        &self,
        out: &Path,
        sources: &[String],
        phase: &mut Phase,
    ) -> std::result::Result<(), Failure> {
        let fail = |e: std::io::Error| Failure {
            status: format!("cannot run mmdebstrap: {e} (cargo xtask setup installs it)"),
            output: String::new(),
        };
        // A failed attempt may leave its output behind; mmdebstrap refuses
        // to write over it.
        let _ = std::fs::remove_file(out);
        let mut log = std::fs::File::create(self.log).map_err(fail)?;
        let mut cmd = self.command(out, sources);
        writeln!(log, "$ {cmd:?}").map_err(fail)?;
        let mut child = cmd.spawn().map_err(fail)?;
        // apt writes "Get:" lines to stdout, mmdebstrap its steps to stderr.
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let tx2 = tx.clone();
        let readers = [
            std::thread::spawn(move || forward(stdout, tx)),
            std::thread::spawn(move || forward(stderr, tx2)),
        ];
        let mut output = String::new();
        let mut fetched = 0;
        let mut step = String::from("starting");
        for line in rx {
            let _ = writeln!(log, "{line}");
            // Index files come as "Get:" lines too, during the update.
            if line.starts_with("Get:") && !step.starts_with("running apt-get update") {
                fetched += 1;
            } else if let Some(s) = line.strip_prefix("I: ") {
                step = s.trim_end_matches("...").to_string();
            }
            phase.update(&format!("{step}; {fetched} packages downloaded"));
            output.push_str(&line);
            output.push('\n');
        }
        for r in readers {
            let _ = r.join();
        }
        let status = child.wait().map_err(fail)?;
        if status.success() {
            tracing::info!(
                "bootstrap: {fetched} packages downloaded, the rest came from the apt cache"
            );
            Ok(())
        } else {
            Err(Failure {
                status: status.to_string(),
                output,
            })
        }
    }
}

/// When every index that failed to download belongs to an update suite
/// (any source but the first, the release), those suites' index URLs;
/// otherwise none.
pub fn failing_updates(sources: &[String], output: &str) -> Vec<String> {
    let fetch_errors: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("Failed to fetch"))
        .collect();
    let failing: Vec<String> = sources[1..]
        .iter()
        .map(|s| index_url(s))
        .filter(|url| fetch_errors.iter().any(|e| e.contains(url)))
        .collect();
    let all_updates = fetch_errors
        .iter()
        .all(|e| failing.iter().any(|url| e.contains(url)));
    if fetch_errors.is_empty() || !all_updates {
        return Vec::new();
    }
    failing
}

/// "deb URL SUITE COMPONENTS…" → "URL/dists/SUITE/", the prefix of every
/// index apt fetches for that source.
pub fn index_url(source: &str) -> String {
    let words: Vec<&str> = source.split_whitespace().collect();
    format!(
        "{}/dists/{}/",
        words.get(1).unwrap_or(&""),
        words.get(2).unwrap_or(&"")
    )
}

struct Failure {
    status: String,
    output: String,
}

fn forward(stream: impl std::io::Read, tx: std::sync::mpsc::Sender<String>) {
    for line in BufReader::new(stream).lines().map_while(Result::ok) {
        if tx.send(line).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_update_suites_that_failed_are_dropped() {
        let sources: Vec<String> = [
            "deb http://m/debian trixie main",
            "deb http://m/debian trixie-updates main",
            "deb http://s/debian-security trixie-security main",
        ]
        .map(String::from)
        .to_vec();
        let updates = "E: Failed to fetch http://m/debian/dists/trixie-updates/main/binary-i386/Packages.xz  File has unexpected size (720 != 1108). Mirror sync in progress?\nE: Failed to fetch http://s/debian-security/dists/trixie-security/main/binary-i386/Packages.xz  File has unexpected size\n";
        assert_eq!(
            failing_updates(&sources, updates),
            [
                "http://m/debian/dists/trixie-updates/",
                "http://s/debian-security/dists/trixie-security/"
            ]
        );
        let release = format!("{updates}E: Failed to fetch http://m/debian/dists/trixie/main/binary-i386/Packages.xz  Hash Sum mismatch\n");
        assert!(
            failing_updates(&sources, &release).is_empty(),
            "the release failed too"
        );
        assert!(failing_updates(&sources, "E: Unable to locate package vim\n").is_empty());
    }

    #[test]
    fn the_host_mirror_is_found_in_both_source_formats() {
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://security.debian.org/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            mirror_in_deb822(deb822, "bookworm").as_deref(),
            Some("http://deb.debian.org/debian")
        );
        assert_eq!(
            mirror_in_deb822(deb822, "bookworm-security").as_deref(),
            Some("http://security.debian.org/debian-security")
        );
        assert_eq!(mirror_in_deb822(deb822, "trixie"), None);
        let disabled = "Enabled: no\nTypes: deb\nURIs: http://x/debian\nSuites: bookworm\n";
        assert_eq!(mirror_in_deb822(disabled, "bookworm"), None);
        let list = "# comment\ndeb-src http://src/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main\n";
        assert_eq!(
            mirror_in_one_line(list, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
    }
}
