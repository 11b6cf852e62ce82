//! `cargo xtask test`: every test of the project, after installing what they need.

use anyhow::Result;
use xshell::{cmd, Shell};

/// Install the host dependencies (as `cargo xtask setup` does), run every
/// test in the workspace (unit tests, and the integration tests that drive
/// the real tools, build the kernel and boot it under QEMU), then check that
/// a clean rebuild of the kernel is bit-identical. This is what CI runs.
#[derive(clap::Args)]
pub struct Args {
    /// Extra arguments for `cargo test`, such as a test name filter. With
    /// these, the kernel reproducibility check is skipped.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cargo_args: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    crate::setup::run(crate::setup::Args::default())?;
    let sh = Shell::new()?;
    sh.change_dir(crate::stage::root());
    let cargo_args = &args.cargo_args;
    cmd!(sh, "cargo test --workspace --locked {cargo_args...}").run()?;
    if cargo_args.is_empty() {
        // Slow (a second full build without ccache), so last.
        let xtask = std::env::current_exe()?;
        cmd!(sh, "{xtask} kernel --arch i386 --verify-reproducible").run()?;
    }
    Ok(())
}
