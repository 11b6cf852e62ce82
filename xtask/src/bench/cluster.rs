//! `cargo xtask bench cluster`: the coMosix cluster's times under TCG:
//! from the start to every node joined and to the first job's answer, a
//! node booting over NFS against the same node image booted from a local
//! cobd (one at a time, beside the same head), and the head's memory.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use crate::cluster::{self, Cluster, NodeRoot};
use crate::stage;

#[derive(clap::Args)]
pub struct Args {
    /// Where the bench's cluster keeps its disks, keys and logs.
    #[arg(long, default_value = "target/bench/cluster")]
    dir: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let dir = stage::root().join(&args.dir);
    let _lock = cluster::lock(&dir)?;
    let mut cluster = Cluster::up(&dir, 1)?;
    let names = cluster.node_names();
    cluster.srun_hostname(&names)?;
    let first_answer = cluster.started.elapsed();
    let (nfs_banner, nfs_joined) = cluster.boot_node(2, NodeRoot::Nfs)?;
    let (local_banner, local_joined) = cluster.boot_node(3, NodeRoot::Local)?;
    let srun_started = Instant::now();
    cluster.srun_hostname(&cluster.node_names())?;
    let srun_three = srun_started.elapsed();
    let head_rss = cluster.head_engine_rss_kib()?;
    let head_used = cluster.on_head("free -m | awk '/^Mem:/ {print $3}'")?;

    println!("head + 1 node, from the head's start:");
    println!(
        "  head up (SSH answers)        {:6.1} s",
        cluster.head_up.as_secs_f64()
    );
    println!(
        "  node joined (idle in Slurm)  {:6.1} s",
        cluster.joined.as_secs_f64()
    );
    println!(
        "  first job answered           {:6.1} s",
        first_answer.as_secs_f64()
    );
    println!("one more node, alone, from its daemon's start:");
    println!(
        "  NFS root:    login banner {:6.1} s, idle in Slurm {:6.1} s",
        nfs_banner.as_secs_f64(),
        nfs_joined.as_secs_f64()
    );
    println!(
        "  local cobd0: login banner {:6.1} s, idle in Slurm {:6.1} s",
        local_banner.as_secs_f64(),
        local_joined.as_secs_f64()
    );
    println!(
        "  NFS / local: {:.2}x to the banner, {:.2}x to idle",
        nfs_banner.as_secs_f64() / local_banner.as_secs_f64(),
        nfs_joined.as_secs_f64() / local_joined.as_secs_f64()
    );
    println!("srun -N 3 hostname: {:.2} s", srun_three.as_secs_f64());
    println!(
        "head: engine RSS {} MiB, guest memory in use {} MiB",
        head_rss / 1024,
        head_used.trim()
    );
    cluster.power_off()
}
