//! `cargo xtask bench dist`: what packaging and signing add to a release
//! over the stages themselves, and the no-op dist.

use std::path::PathBuf;

use anyhow::Result;

use super::measure;
use crate::stage;

#[derive(clap::Args)]
pub struct Args {
    /// Also time each stage's clean rebuild (`--verify-reproducible`: a
    /// cold build in a directory of its own, the kernels without ccache),
    /// so packaging can be put against a cold run. Slow: about 20 minutes.
    #[arg(long)]
    cold: bool,
    /// Where the bench writes its bundles.
    #[arg(long, default_value = "target/bench/dist")]
    dir: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let root = stage::root();
    let dir = root.join(&args.dir);
    std::fs::create_dir_all(&dir)?;
    let xtask = std::env::current_exe()?.display().to_string();
    let out = dir.join("bundle");
    let dist = |extra: &[&str]| -> Result<f64> {
        let mut a: Vec<String> = vec!["dist".into(), "--out".into(), out.display().to_string()];
        a.extend(extra.iter().map(|s| s.to_string()));
        Ok(measure(&xtask, &a, &dir)?.0)
    };
    // The first run brings every stage up to date; from then on a dist
    // into an empty directory times packaging and signing alone.
    dist(&[])?;
    let _ = std::fs::remove_dir_all(&out);
    let packaging = dist(&[])?;
    let no_op = dist(&[])?;
    println!("dist, stages up to date, into an empty directory: {packaging:.1} s (packaging and signing)");
    println!("dist, nothing changed (no-op): {no_op:.2} s");
    if args.cold {
        let mut cold = 0.0;
        for stage_args in [
            &["kernel", "--arch", "i386"][..],
            &["kernel", "--arch", "x86_64"],
            &["runtime"],
            &["image", "--distro", "debian"],
        ] {
            let mut a: Vec<String> = stage_args.iter().map(|s| s.to_string()).collect();
            a.push("--verify-reproducible".into());
            let (secs, _) = measure(&xtask, &a, &dir)?;
            println!("cold {}: {secs:.1} s", stage_args.join(" "));
            cold += secs;
        }
        println!(
            "packaging and signing are {:.1}% of a cold run ({:.1} s of {:.1} s)",
            100.0 * packaging / (cold + packaging),
            packaging,
            cold + packaging
        );
    }
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}
