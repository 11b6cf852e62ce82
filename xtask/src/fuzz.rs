//! `cargo xtask fuzz`: the fuzz targets of `fuzz/` under libFuzzer.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Result};

use crate::progress::Phase;
use crate::stage::{self, run_logged};

/// Run the fuzz targets (fuzz/fuzz_targets/) with cargo-fuzz, each for a
/// while, from its committed seeds (fuzz/seeds/TARGET/) and the corpus
/// earlier runs grew (fuzz/corpus/TARGET/, not tracked). A crash, timeout
/// or out-of-memory input is copied into the seeds, where `cargo test -p
/// colinux-fuzz` replays it from then on, and the command fails. Installs
/// the nightly toolchain and cargo-fuzz first if they are missing.
#[derive(clap::Args)]
pub struct Args {
    /// How long each target runs, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Only this target (default: every target, one after another).
    target: Option<String>,
}

/// The package that holds the targets, and its folder.
const PACKAGE: &str = "colinux-fuzz";

pub fn run(args: Args) -> Result<()> {
    let mut targets = stage::package_bins(PACKAGE)?;
    if let Some(only) = &args.target {
        if !targets.contains(only) {
            bail!("no fuzz target {only} (there are: {})", targets.join(", "));
        }
        targets = vec![only.clone()];
    }
    let cargo_fuzz = crate::setup::fuzz_tools()?;
    let fuzz = stage::root().join("fuzz");
    let artifacts = fuzz.join("artifacts");
    std::fs::create_dir_all(&artifacts)?;
    let log = artifacts.join("fuzz.log");
    std::fs::write(&log, "")?;
    let cargo_fuzz = |verb: &str| {
        let mut cmd = std::process::Command::new(&cargo_fuzz);
        cmd.current_dir(stage::root())
            .args([
                "fuzz",
                verb,
                "--fuzz-dir",
                "fuzz",
                "--features",
                "libfuzzer",
            ])
            // -Zsanitizer and the coverage passes need nightly.
            .env("RUSTUP_TOOLCHAIN", "nightly");
        cmd
    };

    let phase = Phase::start("build");
    let mut build = cargo_fuzz("build");
    build.args(&args.target);
    run_logged(&mut build, &log)?;
    phase.done(&targets.join(", "));

    let mut found = Vec::new();
    for target in &targets {
        tracing::info!("fuzz: {target} for {} s", args.seconds);
        let phase = Phase::start("fuzz");
        let seeds = fuzz.join("seeds").join(target);
        let corpus = fuzz.join("corpus").join(target);
        let target_artifacts = artifacts.join(target);
        std::fs::create_dir_all(&corpus)?;
        std::fs::create_dir_all(&target_artifacts)?;
        let before = file_names(&target_artifacts)?;
        let target_log = artifacts.join(format!("{target}.log"));
        std::fs::write(&target_log, "")?;
        let mut cmd = cargo_fuzz("run");
        // New inputs go to the first corpus folder; the seeds stay as committed.
        cmd.arg(target).arg(&corpus).arg(&seeds).arg("--").args([
            format!("-max_total_time={}", args.seconds),
            format!("-artifact_prefix={}/", target_artifacts.display()),
        ]);
        let outcome = run_logged(&mut cmd, &target_log);
        let new: Vec<String> = file_names(&target_artifacts)?
            .difference(&before)
            .cloned()
            .collect();
        if new.is_empty() {
            // No finding: a failure is the run's own (a build error, say).
            outcome?;
        }
        for name in &new {
            std::fs::copy(target_artifacts.join(name), seeds.join(name))?;
            found.push(format!("fuzz/seeds/{target}/{name}"));
        }
        let stats = last_stats(&target_log);
        match new.len() {
            0 => phase.done(&format!("{target}: nothing found; {stats}")),
            n => phase.done(&format!(
                "{target}: {n} finding(s) added to its seeds; {stats}"
            )),
        }
    }
    if !found.is_empty() {
        bail!(
            "the fuzzers found {} input(s) that break a check, now regression seeds (`cargo test -p {PACKAGE}` replays them; the logs are in {}): {}",
            found.len(),
            artifacts.display(),
            found.join(", ")
        );
    }
    Ok(())
}

fn file_names(dir: &Path) -> Result<BTreeSet<String>> {
    Ok(std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?)
}

/// libFuzzer's last status line, without its `#N` prefix: executions,
/// coverage, corpus size.
fn last_stats(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('#') && l.contains(" cov: "))
        .unwrap_or("no status line");
    let runs = line
        .trim_start_matches('#')
        .split_whitespace()
        .next()
        .unwrap_or("?");
    let rest = line.split_once(" cov: ").map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |name: &str| {
        fields
            .iter()
            .position(|f| *f == name)
            .and_then(|i| fields.get(i + 1))
            .copied()
            .unwrap_or("?")
    };
    format!(
        "{runs} runs, coverage {}, corpus {}",
        fields.first().copied().unwrap_or("?"),
        field("corp:")
    )
}
