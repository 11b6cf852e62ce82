//! `cargo xtask bench kill`: the full sweep of the kill-and-rerun checks
//! (xtask/tests/faults.rs), at more points than the test suite's few.

use anyhow::{bail, Result};

use crate::stage;

#[derive(clap::Args)]
pub struct Args {
    /// Kill points per stage, spread evenly over an uninterrupted run.
    #[arg(long, default_value_t = 9)]
    points: u32,
    /// Only the checks whose name holds this (convert, runtime, image,
    /// kernel, dist).
    #[arg(long, value_name = "STAGE")]
    only: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let mut cmd = stage::cargo();
    cmd.args(["test", "-p", "xtask", "--test", "faults", "--"])
        .args(["--nocapture", "--test-threads", "1"])
        .arg(args.only.as_deref().unwrap_or("killed"))
        .env("COLINUX_KILL_POINTS", args.points.to_string())
        .current_dir(stage::root());
    let status = cmd.status()?;
    if !status.success() {
        bail!("the kill sweep failed ({status}); the lines above name the stage and the point");
    }
    Ok(())
}
