//! `cargo xtask bench image`: per stock recipe, in one run, the image stage
//! against a bare `mmdebstrap` making the same tree (docs/design.md §8).
//!
//! The stage's bootstrap is that very mmdebstrap command (same suites,
//! packages, keyring, mirror and apt cache), so what the stage costs over
//! it is everything after the bootstrap: customize, pack, the ext4 image,
//! the tarball, zstd, hashing and publishing. The bench times those with
//! the bootstrap cached (a build into a new directory) and divides by a
//! bare mmdebstrap run timed from the same warm apt cache. The stage's
//! cold time is the sum of the two.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::{bail, Result};

use super::measure;
use crate::image::{failing_updates, index_url, BareBootstrap};
use crate::stage;

#[derive(clap::Args)]
pub struct Args {
    /// The stock recipes to measure (recipes/<NAME>.toml).
    #[arg(long = "distro", value_name = "NAME", default_values = ["debian", "debian-bookworm", "ubuntu"])]
    distros: Vec<String>,
    /// Where the bench writes its images and tarballs.
    #[arg(long, default_value = "target/bench/image")]
    dir: PathBuf,
}

/// Each side is timed this many times, alternating, and the fastest run
/// counts: the machine is shared, so the slower runs measure the neighbours.
const ROUNDS: usize = 2;

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
        let (mut bare, mut stage, mut phases) = (f64::MAX, f64::MAX, String::new());
        for _ in 0..ROUNDS {
            bare = bare.min(bare_mmdebstrap(distro, &dir)?);
            let (secs, log) = stage_after_bootstrap(&xtask, distro, &dir)?;
            if secs < stage {
                (stage, phases) = (secs, log);
            }
        }
        println!(
            "{distro}: bare mmdebstrap {bare:.1} s; the stage after its bootstrap {stage:.1} s, overhead {:.0}% (fastest of {ROUNDS})",
            100.0 * stage / bare
        );
        print!("{phases}");
        rows.push((distro.clone(), bare, stage));
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

/// Seconds for the stage with its bootstrap cached (a build into a new
/// directory), and its phase lines. A run that waited for another build's
/// lock on the image cache is not a measurement: it is run again.
fn stage_after_bootstrap(xtask: &str, distro: &str, dir: &Path) -> Result<(f64, String)> {
    let out = dir.join(distro);
    let args = [
        "image",
        "--distro",
        distro,
        "--output",
        &out.display().to_string(),
    ]
    .map(String::from);
    for _ in 0..3 {
        let _ = std::fs::remove_dir_all(&out);
        // Start when no other build holds the image cache.
        drop(stage::lock(&stage::cache_dir().join("image"))?);
        let (secs, _) = measure(xtask, &args, dir)?;
        std::fs::remove_dir_all(&out)?;
        let log = std::fs::read_to_string(dir.join("tool.log"))?;
        if log.contains("waiting for another run") {
            println!("{distro}: the stage waited for another build's lock; timing it again");
            continue;
        }
        let phases: String = log
            .lines()
            .filter(|l| l.contains(": done in "))
            .map(|l| format!("  {}\n", l.trim_start_matches(" INFO ").trim()))
            .collect();
        return Ok((secs, phases));
    }
    bail!("the image stage waited for another build's lock three times: run the bench on a quieter machine")
}

/// Seconds for one mmdebstrap run as the stage's bootstrap makes it. If
/// only update suites' indexes fail (a mirror mid-sync), the stage builds
/// from the release alone, and so does this, timing the run that worked.
fn bare_mmdebstrap(distro: &str, dir: &Path) -> Result<f64> {
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
