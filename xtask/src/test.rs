//! `cargo xtask test`: every test of the project, after installing what they need.

use anyhow::Result;
use xshell::{cmd, Shell};

/// Install the host dependencies (as `cargo xtask setup` does), then run
/// every test in the workspace: unit tests and the integration tests that
/// drive the real tools. This is the command CI runs.
#[derive(clap::Args)]
pub struct Args {
    /// Extra arguments for `cargo test`, such as a test name filter.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cargo_args: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    crate::setup::run(crate::setup::Args::default())?;
    let sh = Shell::new()?;
    let cargo_args = args.cargo_args;
    cmd!(sh, "cargo test --workspace --locked {cargo_args...}").run()?;
    Ok(())
}
