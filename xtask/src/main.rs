//! `cargo xtask <stage>`: the coLinux build-and-image pipeline.
//!
//! Thin by design: each stage is one file that parses its options and calls
//! into the library crates, where the logic lives.

mod bench;
mod cluster;
mod convert;
mod dist;
mod fuzz;
mod image;
mod initramfs;
mod kernel;
mod progress;
mod rehearse;
mod runtime;
mod setup;
mod stage;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    version,
    about = "The coLinux build-and-image pipeline"
)]
struct Cli {
    /// Log more: -v for debug, -vv for trace.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    stage: Stage,
}

#[derive(Subcommand)]
enum Stage {
    Setup(setup::Args),
    Convert(convert::Args),
    Kernel(kernel::Args),
    Image(image::Args),
    Runtime(runtime::Args),
    Dist(dist::Args),
    Cluster(cluster::Args),
    Initramfs(initramfs::Args),
    Bench(bench::Args),
    Fuzz(fuzz::Args),
    Test(test::Args),
    Rehearse(rehearse::Args),
}

fn main() -> ExitCode {
    colinux_daemon::closed_pipe::quiet_on_closed_pipe();
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.stage {
        Stage::Setup(args) => setup::run(args),
        Stage::Convert(args) => convert::run(args),
        Stage::Kernel(args) => kernel::run(args),
        Stage::Image(args) => image::run(args),
        Stage::Runtime(args) => runtime::run(args),
        Stage::Dist(args) => dist::run(args),
        Stage::Cluster(args) => cluster::run(args),
        Stage::Initramfs(args) => initramfs::run(args),
        Stage::Bench(args) => bench::run(args),
        Stage::Fuzz(args) => fuzz::run(args),
        Stage::Test(args) => test::run(args),
        Stage::Rehearse(args) => rehearse::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(table) = err.downcast_ref::<images::Error>().and_then(|e| e.table()) {
                eprint!("{}", table.render());
            }
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => tracing::Level::INFO,
        1 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
