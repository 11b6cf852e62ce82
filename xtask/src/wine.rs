//! Wine, to run the runtime's x86_64-pc-windows-gnu binaries on this Linux
//! host: their unit tests (`cargo xtask test`) and the runtime stage's
//! test, which includes this file, so it uses std and anyhow alone.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Debian's wine64 package puts the 64-bit loader here, off PATH;
/// /usr/bin/wine is a script that looks for the 32-bit one first.
pub const WINE64: &str = "/usr/lib/wine/wine64";

const SHIM: &str = include_str!("wine/bcryptprimitives.c");

pub struct Wine {
    prefix: PathBuf,
}

impl Wine {
    /// Our own Wine prefix under `cache`: made on first use (wineboot, then
    /// the bcryptprimitives.dll that bookworm's Wine lacks), reused after.
    pub fn prepare(cache: &Path) -> Result<Wine> {
        if !Path::new(WINE64).is_file() {
            bail!("{WINE64} is missing: `cargo xtask setup` installs wine64");
        }
        let wine = Wine {
            prefix: cache.join("wine"),
        };
        let system32 = wine.prefix.join("drive_c/windows/system32");
        let dll = system32.join("bcryptprimitives.dll");
        let source = wine.prefix.join("bcryptprimitives.c");
        if dll.is_file() && std::fs::read_to_string(&source).is_ok_and(|s| s == SHIM) {
            return Ok(wine);
        }
        tracing::info!("wine: preparing the prefix {}", wine.prefix.display());
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
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
