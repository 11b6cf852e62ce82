//! Host virtualization: which accelerator the engine can really use.
//!
//! coLinux shipped `linux.sys`, a ring-0 driver. Its successor runs QEMU, so
//! the "driver" is the host's own hypervisor interface: KVM on Linux, the
//! Windows Hypervisor Platform (WHPX) on Windows. This crate finds it,
//! proves that it works (on Linux by running a tiny guest in a child process
//! with a timeout), helps enable it, and falls back to TCG, QEMU's software
//! emulation, with a warning when it cannot be used.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use colinux_config::Accel;

mod cache;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(windows)]
mod windows;

/// Env var that overrides the default probe timeout, in milliseconds.
pub const PROBE_TIMEOUT_ENV: &str = "COLINUX_KVM_PROBE_TIMEOUT_MS";
/// The probe timeout when the env var is unset or invalid.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How `detect` probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOptions {
    /// The longest the test guest may take before the backend is declared
    /// not usable.
    pub timeout: Duration,
    /// Read and write the per-boot probe cache.
    pub use_cache: bool,
    /// Where the cache file lives; `None` is the default location
    /// (see [`default_cache_dir`]).
    pub cache_dir: Option<PathBuf>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            timeout: timeout_from_env(std::env::var(PROBE_TIMEOUT_ENV).ok().as_deref()),
            use_cache: true,
            cache_dir: None,
        }
    }
}

/// The timeout that the env var's value asks for; an invalid or zero value
/// keeps the default rather than failing the daemon's start.
fn timeout_from_env(value: Option<&str>) -> Duration {
    match value.map(str::trim).map(str::parse::<u64>) {
        Some(Ok(ms)) if ms > 0 => Duration::from_millis(ms),
        _ => DEFAULT_PROBE_TIMEOUT,
    }
}

/// Whether a backend can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendState {
    /// Proven to work.
    Usable,
    /// Not there at all (no device, no DLL).
    Missing,
    /// There, but this user may not open it.
    NoAccess,
    /// There and openable, but broken: its test failed or hung.
    NotUsable,
}

impl BackendState {
    fn phrase(self) -> &'static str {
        match self {
            BackendState::Usable => "usable",
            BackendState::Missing => "missing",
            BackendState::NoAccess => "no access",
            BackendState::NotUsable => "present but not usable",
        }
    }

    /// The word stored in the cache file.
    fn as_str(self) -> &'static str {
        match self {
            BackendState::Usable => "usable",
            BackendState::Missing => "missing",
            BackendState::NoAccess => "no-access",
            BackendState::NotUsable => "not-usable",
        }
    }

    fn parse(word: &str) -> Option<BackendState> {
        [
            BackendState::Usable,
            BackendState::Missing,
            BackendState::NoAccess,
            BackendState::NotUsable,
        ]
        .into_iter()
        .find(|s| s.as_str() == word)
    }
}

/// One accelerator and what the probe found.
#[derive(Debug, Clone)]
pub struct Backend {
    pub accel: Accel,
    pub state: BackendState,
    /// Why, in one line: what was found, or what is wrong and how to fix it.
    pub detail: String,
}

impl Backend {
    fn is_hardware(&self) -> bool {
        matches!(self.accel, Accel::Kvm | Accel::Whpx)
    }

    /// A sentence naming the backend and its state, e.g. "KVM is missing
    /// (no /dev/kvm: …)", for warnings and errors.
    fn summary(&self) -> String {
        if self.detail_after_name().len() < self.detail.len() {
            return self.detail.clone();
        }
        let is = match self.state {
            BackendState::Usable => "is usable",
            BackendState::Missing => "is missing",
            BackendState::NoAccess => "is not accessible",
            BackendState::NotUsable => "is present but not usable",
        };
        format!("{} {is} ({})", display_name(self.accel), self.detail)
    }

    /// The backend's detail without a leading repetition of its own name
    /// (details read as sentences on their own, e.g. in a warning).
    fn detail_after_name(&self) -> &str {
        let name = display_name(self.accel);
        self.detail
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .unwrap_or(&self.detail)
    }
}

/// The TCG entry that every report ends with.
fn tcg_backend() -> Backend {
    Backend {
        accel: Accel::Tcg,
        state: BackendState::Usable,
        detail: "software emulation, always available".into(),
    }
}

fn display_name(accel: Accel) -> &'static str {
    match accel {
        Accel::Auto => "auto",
        Accel::Kvm => "KVM",
        Accel::Whpx => "WHPX",
        Accel::Tcg => "TCG",
    }
}

/// What `detect` found.
#[derive(Debug, Clone)]
pub struct HostReport {
    /// Hardware backends of this host's OS first, TCG last.
    pub backends: Vec<Backend>,
    /// The test guest did not run now: its result came from this boot's cache.
    pub from_cache: bool,
    /// How long `detect` took.
    pub probe_time: Duration,
}

/// The accelerator to start the engine with.
#[derive(Debug, Clone)]
pub struct Choice {
    /// Never `Auto`.
    pub accel: Accel,
    /// Set when the choice is slower than the user may expect, e.g. TCG
    /// because KVM is there but broken.
    pub warning: Option<String>,
}

impl Choice {
    /// The value for QEMU's `-accel`.
    pub fn qemu_accel(&self) -> &'static str {
        qemu_accel(self.accel)
    }
}

/// The value for QEMU's `-accel` (`Auto` has none, so it maps to `tcg`,
/// the one that always works; callers should `choose` first).
pub fn qemu_accel(accel: Accel) -> &'static str {
    match accel {
        Accel::Kvm => "kvm",
        Accel::Whpx => "whpx",
        Accel::Auto | Accel::Tcg => "tcg",
    }
}

impl HostReport {
    /// The first usable hardware backend, else TCG.
    pub fn best(&self) -> Accel {
        self.backends
            .iter()
            .find(|b| b.is_hardware() && b.state == BackendState::Usable)
            .map_or(Accel::Tcg, |b| b.accel)
    }

    /// The backend entry for `accel`, if this host lists one.
    pub fn backend(&self, accel: Accel) -> Option<&Backend> {
        self.backends.iter().find(|b| b.accel == accel)
    }

    /// The accelerator for a requested `accel=`.
    pub fn choose(&self, requested: Accel) -> Result<Choice, DriverError> {
        match requested {
            Accel::Tcg => Ok(Choice {
                accel: Accel::Tcg,
                warning: None,
            }),
            Accel::Auto => {
                let accel = self.best();
                // Falling back is only news when hardware was there but
                // failed; a host without any is simply a TCG host.
                let warning = if accel == Accel::Tcg {
                    self.backends
                        .iter()
                        .find(|b| {
                            b.is_hardware()
                                && matches!(
                                    b.state,
                                    BackendState::NoAccess | BackendState::NotUsable
                                )
                        })
                        .map(|b| {
                            format!(
                                "{}: falling back to TCG (software emulation, much slower)",
                                b.summary()
                            )
                        })
                } else {
                    None
                };
                Ok(Choice { accel, warning })
            }
            Accel::Kvm | Accel::Whpx => match self.backend(requested) {
                Some(b) if b.state == BackendState::Usable => Ok(Choice {
                    accel: requested,
                    warning: None,
                }),
                Some(b) => Err(DriverError::Unusable {
                    accel: requested.as_str(),
                    reason: b.summary(),
                }),
                None => Err(DriverError::NotOnThisHost {
                    accel: requested.as_str(),
                    os: std::env::consts::OS,
                }),
            },
        }
    }
}

impl fmt::Display for HostReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.backends {
            let name = display_name(b.accel);
            let rest = b.detail_after_name();
            if rest.len() < b.detail.len() {
                // The detail already says the state ("KVM present but not
                // usable (…)"): print it once.
                writeln!(f, "{name}: {rest}")?;
            } else {
                writeln!(f, "{name}: {} ({})", b.state.phrase(), b.detail)?;
            }
        }
        if self.from_cache {
            writeln!(
                f,
                "result: from this boot's probe cache (clear it to probe again)"
            )?;
        } else {
            writeln!(f, "result: probed now")?;
        }
        writeln!(f, "probe time: {:.3} s", self.probe_time.as_secs_f64())?;
        write!(f, "will use: {}", self.best().as_str())
    }
}

/// Errors of this crate; each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("accel={accel} requested, but {reason}; use accel=auto or accel=tcg")]
    Unusable { accel: &'static str, reason: String },
    #[error("accel={accel} is not available on {os}; use accel=auto or accel=tcg")]
    NotOnThisHost {
        accel: &'static str,
        os: &'static str,
    },
    #[error("`{command}` failed: {reason}")]
    Command { command: String, reason: String },
    #[error("{0}")]
    NoHardwareVirtualization(String),
    #[error("installing or removing the virtualization driver is not supported on {0}")]
    Unsupported(&'static str),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// The cache file's directory when `ProbeOptions::cache_dir` is `None`.
/// `None` where no cache is kept (e.g. Windows).
pub fn default_cache_dir() -> Option<PathBuf> {
    cache::default_dir()
}

/// Finds the host's backends, proving the hardware ones work. Bounded by
/// `opts.timeout` plus a little slack; never fails (problems become
/// backend states).
pub fn detect(opts: &ProbeOptions) -> HostReport {
    let start = std::time::Instant::now();
    #[cfg(target_os = "linux")]
    let (mut backends, from_cache) = {
        let (kvm, cached) = linux::detect_kvm(opts);
        (vec![kvm], cached)
    };
    // The WHPX check is one DLL load and one call: nothing to cache.
    #[cfg(windows)]
    let (mut backends, from_cache) = {
        let _ = opts;
        (vec![windows::detect_whpx()], false)
    };
    #[cfg(not(any(target_os = "linux", windows)))]
    let (mut backends, from_cache) = {
        let _ = opts;
        (Vec::new(), false)
    };
    backends.push(tcg_backend());
    HostReport {
        backends,
        from_cache,
        probe_time: start.elapsed(),
    }
}

/// Enables the host's virtualization where this process may, else says the
/// exact commands to run. The text ends with the new status where it changed.
pub fn install() -> Result<String, DriverError> {
    #[cfg(target_os = "linux")]
    return linux::install();
    #[cfg(windows)]
    return windows::install();
    #[cfg(not(any(target_os = "linux", windows)))]
    Err(DriverError::Unsupported(std::env::consts::OS))
}

/// Undoes `install` where this process may, else says the commands to run.
pub fn remove() -> Result<String, DriverError> {
    #[cfg(target_os = "linux")]
    return linux::remove();
    #[cfg(windows)]
    return windows::remove();
    #[cfg(not(any(target_os = "linux", windows)))]
    Err(DriverError::Unsupported(std::env::consts::OS))
}

/// Forgets the probe result, so the next `detect` runs the test guest.
/// A missing cache is not an error.
pub fn clear_cache(opts: &ProbeOptions) -> std::io::Result<()> {
    match cache::file_path(opts) {
        Some(path) => match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
