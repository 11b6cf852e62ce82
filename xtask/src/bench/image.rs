//! `cargo xtask bench image`: per stock recipe, in one run, the image stage
//! against a bare `mmdebstrap` making the same tree (DESIGN.md §8).
//!
//! The stage's bootstrap is that very mmdebstrap command (same suites,
//! packages, keyring, mirror and apt cache), so what the stage costs over
//! it is everything after the bootstrap: customize, pack, the ext4 image,
//! the tarball, zstd, hashing and publishing. The bench times those with
//! the bootstrap cached (a build into a new directory) and divides by a
//! bare mmdebstrap run timed from the same warm apt cache.

use std::fs::File;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use anyhow::{bail, Result};

use super::measure;
use crate::image::{failing_updates, index_url, BareBootstrap};
use crate::stage;

#[derive(clap::Args)]
pub struct Args {
    /// The stock recipes to measure (recipes/<NAME>.toml).
    #[arg(long = "distro", value_name = "NAME", default_values = ["debian", "ubuntu"])]
    distros: Vec<String>,
    /// Where the bench writes its images and tarballs.
    #[arg(long, default_value = "target/bench/image")]
    dir: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let dir = stage::root().join(&args.dir);
    std::fs::create_dir_all(&dir)?;
    let xtask = std::env::current_exe()?.display().to_string();
    let mut rows = Vec::new();
    for distro in &args.distros {
        // Untimed: the bootstrap cached, every .deb in the apt cache.
        measure(
            &xtask,
            &["image".into(), "--distro".into(), distro.clone()],
            &dir,
        )?;

        let bare = bare_mmdebstrap(distro, &dir)?;

        let out = dir.join(distro);
        let _ = std::fs::remove_dir_all(&out);
        let stage_args = [
            "image",
            "--distro",
            distro,
            "--output",
            &out.display().to_string(),
        ]
        .map(String::from);
        let (after_bootstrap, _) = measure(&xtask, &stage_args, &dir)?;
        let log = std::fs::read_to_string(dir.join("tool.log"))?;
        println!(
            "{distro}: bare mmdebstrap {bare:.1} s; the stage after its bootstrap {after_bootstrap:.1} s, overhead {:.0}%",
            100.0 * after_bootstrap / bare
        );
        for line in log.lines().filter(|l| l.contains(": done in ")) {
            println!("  {}", line.trim_start_matches(" INFO ").trim());
        }
        rows.push((distro.clone(), bare, after_bootstrap));
        std::fs::remove_dir_all(&out)?;
    }
    println!(
        "\n| recipe | bare mmdebstrap | stage after the bootstrap | overhead |\n|---|---|---|---|"
    );
    for (distro, bare, after) in rows {
        println!(
            "| {distro} | {bare:.1} s | {after:.1} s | {:.0}% |",
            100.0 * after / bare
        );
    }
    Ok(())
}

/// Seconds for one mmdebstrap run as the stage's bootstrap makes it. If
/// only update suites' indexes fail (a mirror mid-sync), the stage builds
/// from the release alone, and so does this, timing the run that worked.
fn bare_mmdebstrap(distro: &str, dir: &std::path::Path) -> Result<f64> {
    let bare = BareBootstrap::new(distro)?;
    let mut sources = bare.sources();
    let out = dir.join(format!("{distro}-bare.tar"));
    let log = dir.join(format!("{distro}-bare.log"));
    for _ in 0..2 {
        let _ = std::fs::remove_file(&out);
        let start = Instant::now();
        let status = bare
            .command(&out, &sources, &log)
            .stdout(Stdio::null())
            .stderr(File::create(&log)?)
            .status()?;
        let secs = start.elapsed().as_secs_f64();
        std::fs::remove_file(&out).ok();
        if status.success() {
            return Ok(secs);
        }
        let output = std::fs::read_to_string(&log)?;
        let failing = failing_updates(&sources, &output);
        if failing.is_empty() {
            break;
        }
        println!(
            "{distro}: bare mmdebstrap without {}, as the stage",
            failing.join(", ")
        );
        sources.retain(|s| !failing.contains(&index_url(s)));
    }
    bail!(
        "the bare mmdebstrap for {distro} failed: see {}",
        log.display()
    )
}
