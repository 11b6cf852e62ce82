//! `cargo xtask cluster`: coMosix on one machine (docs/design.md §12), the demo
//! for a user and the driver of the cluster test.
//!
//! A network namespace with a bridge stands in for the lab's LAN. The head
//! and the nodes run under colinux-daemon inside it, each on a tap the
//! daemon enslaves to the bridge (`eth0=pcap-bridge`). The head exports the
//! node image read-only over NFS and serves DHCP; the nodes boot from that
//! export and join the head's Slurm controller by themselves. What differs
//! per guest (hostname, keys) reaches it on its seed disk, made by the
//! daemon from the guest's coMosix ini.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use harness::scaled;

use crate::stage;

/// Boot a coMosix cluster (a head and N nodes) in a network namespace of
/// its own, wait until every node has joined Slurm, run `srun -N N
/// hostname` on the head and print the answer, then power everything off
/// and check every disk with `e2fsck -fn`. Builds what is missing first
/// (kernel, runtime, the comosix-head and comosix-node images). Needs root.
#[derive(clap::Args)]
#[command(after_help = "\
The cluster network is 10.77.0.0/24 on the bridge cobr0 inside the network
namespace `comosix`; the head is 10.77.0.1 and this machine's end of the
bridge 10.77.0.254. Nothing outside that namespace is touched. Keys (the
munge key, each guest's SSH host key, root's login key) are made once and
kept in DIR/keys; consoles go to DIR/logs/<guest>.log.")]
pub struct Args {
    /// How many nodes boot beside the head.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=50))]
    nodes: u8,
    /// Leave the cluster running and print how to reach the head; stop it
    /// later with --down.
    #[arg(long, conflicts_with = "down")]
    keep: bool,
    /// After the first job, power the last node off in the middle of a job
    /// and show that Slurm marks it down and that the next job runs on the
    /// remaining nodes.
    #[arg(long, conflicts_with = "down")]
    fail_node: bool,
    /// Power off a cluster left running by --keep (or by an interrupted
    /// run) and remove its namespace.
    #[arg(long)]
    down: bool,
    /// Where the cluster's disks, keys, configs and console logs live.
    #[arg(long, default_value = "target/cluster", value_name = "DIR")]
    dir: PathBuf,
}

const NETNS: &str = "comosix";
const BRIDGE: &str = "cobr0";
/// This machine's end of the cluster network, to reach the head over SSH.
const HOST_END: &str = "10.77.0.254/24";
const HEAD: &str = "10.77.0.1";
const NETWORK: &str = "10.77.0.0/24";
/// The head's hostname: prefix + "host machine name", as for the nodes.
const HEAD_PREFIX: &str = "comosix-";
const HEAD_HOST: &str = "head";
/// Node i's hostname is `node-pc<i>`: as if on lab PC pc<i>.
const NODE_PREFIX: &str = "node-";
const HEAD_MEM_MB: u32 = 512;
const NODE_MEM_MB: u32 = 384;

const BOOT_TIMEOUT: Duration = Duration::from_secs(420);
const JOIN_TIMEOUT: Duration = Duration::from_secs(420);
/// Longer than SlurmdTimeout in the head's slurm.conf plus a ping round.
const DOWN_TIMEOUT: Duration = Duration::from_secs(240);
/// The daemon's own --shutdown-timeout is 90 s; past it, exit code 6.
const POWER_OFF_TIMEOUT: Duration = Duration::from_secs(150);

pub fn run(args: Args) -> Result<()> {
    let dir = stage::output_dir(&stage::root().join(&args.dir), "--dir")?;
    let _lock = lock(&dir)?;
    if args.down {
        return down(&dir);
    }
    let started = Instant::now();
    let mut cluster = Cluster::up(&dir, args.nodes)?;
    let names = cluster.node_names();
    let answer = cluster.srun_hostname(&names)?;
    println!("$ srun -N {} hostname", names.len());
    print!("{answer}");
    println!(
        "the head's seed disk, as it sees it: {}",
        cluster.head_seed()?
    );
    if args.fail_node {
        cluster.fail_last_node()?;
    }
    if args.keep {
        println!(
            "The cluster is running. Reach the head with:\n  ip netns exec {NETNS} ssh -i {} -o UserKnownHostsFile={} root@{HEAD}\nStop it with: cargo xtask cluster --down",
            cluster.plan.root_key.display(),
            cluster.plan.known_hosts.display()
        );
        cluster.keep();
        return Ok(());
    }
    cluster.power_off()?;
    tracing::info!(
        "the cluster powered off cleanly; {:.0} s in all",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Needs root; one cluster per directory at a time.
pub fn lock(dir: &Path) -> Result<File> {
    if !stage::is_root() {
        bail!("cargo xtask cluster needs root (a network namespace, a bridge and taps)");
    }
    stage::lock(dir)
}

/// A booted cluster: the head up and every node joined to Slurm.
pub struct Cluster {
    pub plan: Plan,
    // Fields drop in order: a failed run powers the nodes off while their
    // NFS root still answers, then the head, then removes the namespace.
    nodes: Vec<Member>,
    head: Member,
    net: Namespace,
    ssh: Ssh,
    /// When the head's daemon started (after the builds).
    pub started: Instant,
    /// From the start of the boot: the head's SSH login answered.
    pub head_up: Duration,
    /// From the start of the boot: every node idle in Slurm.
    pub joined: Duration,
}

impl Cluster {
    /// Builds what is missing, prepares disks, keys and configs, and boots
    /// the head and then `nodes` nodes.
    pub fn up(dir: &Path, nodes: u8) -> Result<Cluster> {
        for stage_args in [
            &["kernel", "--arch", "i386"][..],
            &["runtime", "--target", "x86_64-unknown-linux-gnu"],
            &["image", "--recipe", "recipes/comosix-node.toml"],
            &["image", "--recipe", "recipes/comosix-head.toml"],
        ] {
            stage::run_xtask(stage_args)?;
        }
        let plan = Plan::new(dir, nodes);
        stop_leftovers(dir)?;
        plan.prepare()?;
        let net = Namespace::create()?;

        let started = Instant::now();
        tracing::info!("booting the head, {}", plan.head.hostname());
        let mut head = plan.start(&plan.head)?;
        head.wait_for(&plan.head.banner(), BOOT_TIMEOUT)?;
        let ssh = plan.ssh();
        ssh.wait_ready(&head)?;
        let head_up = started.elapsed();
        tracing::info!(
            "the head is up after {:.0} s; booting {} node(s) from its NFS export",
            head_up.as_secs_f64(),
            plan.nodes.len()
        );
        let nodes = plan
            .nodes
            .iter()
            .map(|node| plan.start(node))
            .collect::<Result<Vec<_>>>()?;
        let mut cluster = Cluster {
            plan,
            head,
            nodes,
            net,
            ssh,
            started,
            head_up,
            joined: Duration::ZERO,
        };
        let names = cluster.node_names();
        cluster.wait_joined(&names)?;
        cluster.joined = started.elapsed();
        tracing::info!(
            "{} node(s) joined Slurm after {:.0} s",
            names.len(),
            cluster.joined.as_secs_f64()
        );
        Ok(cluster)
    }

    pub fn node_names(&self) -> Vec<String> {
        self.plan.nodes.iter().map(Guest::hostname).collect()
    }

    /// The head's seed disk as the guest sees it: its files, and the
    /// munge key installed from it the same bytes as the host's.
    pub fn head_seed(&self) -> Result<String> {
        let files = self.on_head("ls /run/comosix/seed")?;
        let seen = self.on_head("sha256sum < /run/comosix/munge.key")?;
        let ours = stage::sha256_file(&self.plan.keys().join("munge.key"))?;
        if seen.split_whitespace().next() != Some(ours.as_str()) {
            bail!("the head's munge key is not the cluster's: {seen:?}, expected {ours}");
        }
        Ok(files.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    /// Boots one more node (number `i`) and times it from its start to its
    /// login banner and to idle in Slurm.
    pub fn boot_node(&mut self, i: u8, root: NodeRoot) -> Result<(Duration, Duration)> {
        let local = matches!(root, NodeRoot::Local);
        let guest = self.plan.node(i, root);
        if local {
            self.plan.copy_image(
                "comosix-node",
                &self.plan.disk(&format!("node-pc{i}-local")),
            )?;
        }
        self.plan.prepare_guest(&guest)?;
        let started = Instant::now();
        let mut member = self.plan.start(&guest)?;
        member.wait_for(&guest.banner(), BOOT_TIMEOUT)?;
        let banner = started.elapsed();
        let name = guest.hostname();
        self.nodes.push(member);
        self.plan.nodes.push(guest);
        self.wait_joined(&[name])?;
        Ok((banner, started.elapsed()))
    }

    /// Runs a command on the head as root.
    pub fn on_head(&self, command: &str) -> Result<String> {
        self.ssh.output(&self.head, command)
    }

    /// `srun -N <names> hostname`, checked to name each node once.
    pub fn srun_hostname(&self, names: &[String]) -> Result<String> {
        let answer = self.on_head(&format!(
            "timeout 300 srun -N {} hostname | sort",
            names.len()
        ))?;
        check_answer(&answer, names)?;
        Ok(answer)
    }

    /// The head engine's resident memory, in KiB.
    pub fn head_engine_rss_kib(&self) -> Result<u64> {
        engine_rss_kib(self.head.child.id())
    }

    /// Polls `ready` every 3 s for at most `timeout` (scaled).
    fn poll(
        &self,
        what: &str,
        timeout: Duration,
        ready: impl FnMut() -> Result<bool>,
    ) -> Result<()> {
        poll(&self.head, what, timeout, ready)
    }

    /// Each node's state as the controller sees it (`sinfo -N`).
    fn node_states(&self) -> Result<Vec<(String, String)>> {
        let out = self.on_head("sinfo -h -N -o '%N %T'")?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(n, s)| (n.to_string(), s.trim().to_string()))
            .collect())
    }

    fn wait_joined(&self, names: &[String]) -> Result<()> {
        let mut last = Vec::new();
        let result = self.poll("every node idle in Slurm", JOIN_TIMEOUT, || {
            last = self.node_states()?;
            Ok(names.iter().all(|n| {
                last.iter()
                    .any(|(name, state)| name == n && state == "idle")
            }))
        });
        result.with_context(|| format!("sinfo said: {last:?}"))
    }

    /// Powers the last node off while a job runs on every node, waits
    /// until Slurm marks it down, and runs a job on the rest.
    pub fn fail_last_node(&mut self) -> Result<()> {
        let mut names = self.node_names();
        let gone = names.pop().expect("at least one node");
        let all = names.len() + 1;
        let job = self.on_head(&format!(
            "sbatch --parsable -N {all} -o /dev/null --wrap 'srun sleep 600'"
        ))?;
        let job = job.trim().to_string();
        self.poll("the long job running", JOIN_TIMEOUT, || {
            let state = self.on_head(&format!(
                "scontrol show job {job} | grep -o 'JobState=[A-Z_]*'"
            ))?;
            match state.trim().trim_start_matches("JobState=") {
                "RUNNING" => Ok(true),
                "PENDING" | "CONFIGURING" => Ok(false),
                other => bail!("job {job} ended before the node failure: {other}"),
            }
        })?;
        tracing::info!("job {job} runs on {all} node(s); powering {gone} off in its middle");
        let asked = Instant::now();
        let mut victim = self.nodes.pop().expect("at least one node");
        self.plan.nodes.pop();
        victim.signal_power_off();
        victim.wait_powered_off()?;
        let mut state = String::new();
        self.poll(&format!("Slurm marking {gone} down"), DOWN_TIMEOUT, || {
            state = self
                .on_head(&format!("sinfo -h -N -n {gone} -o %T"))?
                .trim()
                .to_string();
            Ok(state.starts_with("down") || state.starts_with("fail"))
        })?;
        println!(
            "{gone} powered off in the middle of job {job}: Slurm marked it {state} {:.0} s later",
            asked.elapsed().as_secs_f64()
        );
        if !names.is_empty() {
            let answer = self.srun_hostname(&names)?;
            println!(
                "$ srun -N {} hostname   # after {gone} went down",
                names.len()
            );
            print!("{answer}");
        }
        Ok(())
    }

    /// Leaves the guests and the namespace running past this command.
    pub fn keep(self) {
        let Cluster {
            head, nodes, net, ..
        } = self;
        std::mem::forget(head);
        nodes.into_iter().for_each(std::mem::forget);
        net.keep();
    }

    /// Powers the nodes, then the head off (each must exit with code 0),
    /// removes the namespace and checks every disk with `e2fsck -fn`.
    pub fn power_off(self) -> Result<()> {
        let Cluster {
            plan,
            mut head,
            mut nodes,
            net,
            ..
        } = self;
        for node in nodes.iter_mut() {
            node.signal_power_off();
        }
        for node in nodes.iter_mut() {
            node.wait_powered_off()?;
        }
        head.signal_power_off();
        head.wait_powered_off()?;
        drop(net);
        plan.check_disks()
    }
}

/// One guest of the cluster.
pub struct Guest {
    /// The daemon's --name.
    name: String,
    /// `[cluster] role`.
    role: &'static str,
    /// `[cluster] hostname_prefix` and `host_name`: as on a lab PC.
    prefix: &'static str,
    host: String,
    /// The ini's sections besides `[cluster]`.
    sections: String,
    /// Config tokens for the daemon's command line besides the ini.
    tokens: Vec<String>,
}

impl Guest {
    pub fn hostname(&self) -> String {
        format!("{}{}", self.prefix, self.host)
    }

    /// The getty's banner on the console: the guest is up.
    fn banner(&self) -> String {
        format!("{} ttyS0", self.hostname())
    }
}

/// Where a node's root filesystem comes from.
pub enum NodeRoot {
    /// The head's read-only NFS export: what coMosix nodes do.
    Nfs,
    /// A copy of the node image as its own cobd0 (the bench's baseline).
    Local,
}

/// The cluster's files, all under one directory.
pub struct Plan {
    dir: PathBuf,
    daemon: PathBuf,
    kernel: PathBuf,
    head: Guest,
    nodes: Vec<Guest>,
    root_key: PathBuf,
    known_hosts: PathBuf,
}

impl Plan {
    fn new(dir: &Path, nodes: u8) -> Plan {
        let root = stage::root();
        let mut plan = Plan {
            dir: dir.to_path_buf(),
            daemon: root.join("target/runtime/x86_64-unknown-linux-gnu/colinux-daemon"),
            kernel: root.join("target/kernel/i386/bzImage"),
            head: Guest {
                name: "comosix-head".into(),
                role: "head",
                prefix: HEAD_PREFIX,
                host: HEAD_HOST.into(),
                sections: String::new(),
                tokens: Vec::new(),
            },
            nodes: Vec::new(),
            root_key: dir.join("keys/id_ed25519"),
            known_hosts: dir.join("keys/known_hosts"),
        };
        plan.head.sections = format!(
            "[comosix]\nmemory_size = {HEAD_MEM_MB}\n[cobd]\npath_0 = {}\npath_1 = {}\n",
            plan.disk("comosix-head").display(),
            plan.disk("comosix-node").display(),
        );
        plan.head.tokens = plan.tokens(1, &["root=/dev/cobd0", "ro"]);
        plan.nodes = (1..=nodes).map(|i| plan.node(i, NodeRoot::Nfs)).collect();
        plan
    }

    /// Node `i`: `node-pc<i>`, as if on lab PC pc<i>.
    fn node(&self, i: u8, root: NodeRoot) -> Guest {
        let mut sections = format!("[comosix]\nmemory_size = {NODE_MEM_MB}\n");
        let tokens = match root {
            NodeRoot::Nfs => {
                sections.push_str(&format!(
                    "[NFS]\nserver = {HEAD}\npath = /srv/comosix/node\noptions = vers=3,tcp,nolock\n"
                ));
                self.tokens(i + 1, &["ro"])
            }
            NodeRoot::Local => {
                let disk = self.disk(&format!("node-pc{i}-local"));
                sections.push_str(&format!("[cobd]\npath_0 = {}\n", disk.display()));
                // The address as an NFS node gets it: by the kernel's DHCP.
                let ip = format!("ip=::::{NODE_PREFIX}pc{i}:eth0:dhcp");
                self.tokens(i + 1, &["root=/dev/cobd0", "ro", &ip])
            }
        };
        Guest {
            name: format!("comosix-node-{i}"),
            role: "node",
            prefix: NODE_PREFIX,
            host: format!("pc{i}"),
            sections,
            tokens,
        }
    }

    /// The kernel and the guest's tap on the cluster bridge, with MAC
    /// 02:c0:00:00:00:<n>.
    fn tokens(&self, n: u8, extra: &[&str]) -> Vec<String> {
        let mut tokens = vec![
            format!("kernel={}", self.kernel.display()),
            format!("eth0=pcap-bridge,{BRIDGE},02:c0:00:00:00:{n:02x}"),
        ];
        tokens.extend(extra.iter().map(|s| s.to_string()));
        tokens
    }

    fn disk(&self, name: &str) -> PathBuf {
        self.dir.join("disks").join(format!("{name}.ext4"))
    }

    fn keys(&self) -> PathBuf {
        self.dir.join("keys")
    }

    fn host_key(&self, guest: &Guest) -> PathBuf {
        self.keys()
            .join(guest.hostname())
            .join("ssh_host_ed25519_key")
    }

    fn ini(&self, guest: &Guest) -> PathBuf {
        self.dir.join("conf").join(format!("{}.ini", guest.name))
    }

    /// Fresh copies of the images, the cluster's keys (made once, then
    /// kept), and each guest's ini.
    fn prepare(&self) -> Result<()> {
        for dir in ["disks", "keys", "conf", "logs"] {
            std::fs::create_dir_all(self.dir.join(dir))?;
        }
        for image in ["comosix-head", "comosix-node"] {
            self.copy_image(image, &self.disk(image))?;
        }
        let munge = self.keys().join("munge.key");
        if !munge.exists() {
            let mut key = vec![0u8; 1024];
            File::open("/dev/urandom")?.read_exact(&mut key)?;
            write_private(&munge, &key)?;
        }
        keygen(&self.root_key, "root@comosix-demo")?;
        for guest in std::iter::once(&self.head).chain(&self.nodes) {
            self.prepare_guest(guest)?;
        }
        let head_key = std::fs::read_to_string(self.host_key(&self.head).with_extension("pub"))?;
        std::fs::write(
            &self.known_hosts,
            format!("{HEAD} {}\n", head_key.trim_end()),
        )?;
        Ok(())
    }

    /// A fresh sparse copy of a published image.
    fn copy_image(&self, image: &str, to: &Path) -> Result<()> {
        let from = stage::root()
            .join("target/images")
            .join(image)
            .join(format!("{image}.ext4"));
        checked(
            Command::new("cp")
                .args(["--reflink=auto", "--sparse=always"])
                .arg(&from)
                .arg(to),
        )?;
        Ok(())
    }

    /// The guest's SSH host key (made once, then kept) and its ini.
    fn prepare_guest(&self, guest: &Guest) -> Result<()> {
        let key = self.host_key(guest);
        keygen(&key, &guest.hostname())?;
        let ini = format!(
            "; {} of the coMosix cluster (cargo xtask cluster)\n{}[cluster]\nrole = {}\n\
             hostname_prefix = {}\nhost_name = {}\nhead = {HEAD}\nnetwork = {NETWORK}\n\
             munge_key = {}\nssh_host_key = {}\nroot_key = {}\n",
            guest.hostname(),
            guest.sections,
            guest.role,
            guest.prefix,
            guest.host,
            self.keys().join("munge.key").display(),
            key.display(),
            self.root_key.with_extension("pub").display()
        );
        std::fs::write(self.ini(guest), ini)?;
        Ok(())
    }

    /// Starts `guest`'s daemon inside the namespace, in a process group of
    /// its own so that it outlives this command with --keep.
    fn start(&self, guest: &Guest) -> Result<Member> {
        let log_path = self.dir.join("logs").join(format!("{}.log", guest.name));
        let log = File::create(&log_path)?;
        let pidfile = self.pidfile(&guest.name);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", NETNS])
            .arg(&self.daemon)
            .args(["--name", &guest.name, "-p"])
            .arg(&pidfile)
            .args(&guest.tokens)
            .arg(format!("@{}", self.ini(guest).display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.daemon.display()))?;
        Ok(Member {
            name: guest.name.clone(),
            child,
            log_path,
        })
    }

    fn pidfile(&self, name: &str) -> PathBuf {
        self.dir.join("run").join(format!("{name}.pid"))
    }

    fn ssh(&self) -> Ssh {
        Ssh {
            key: self.root_key.clone(),
            known_hosts: self.known_hosts.clone(),
        }
    }

    fn check_disks(&self) -> Result<()> {
        for image in ["comosix-head", "comosix-node"] {
            checked(Command::new("e2fsck").arg("-fn").arg(self.disk(image)))
                .context("a disk is not clean after the power-off")?;
        }
        Ok(())
    }
}

/// A running guest's daemon and its console log.
struct Member {
    name: String,
    child: Child,
    log_path: PathBuf,
}

impl Member {
    fn log_text(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// A failure about this guest, with the end of its console log.
    fn fail(&self, what: impl std::fmt::Display) -> anyhow::Error {
        anyhow::anyhow!(
            "{}: {what}; console log {}; its last lines:\n{}",
            self.name,
            self.log_path.display(),
            self.tail()
        )
    }

    /// Waits for `marker` on the console for at most `timeout` (scaled).
    fn wait_for(&mut self, marker: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + scaled(timeout);
        loop {
            if self.log_text().contains(marker) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                return Err(self.fail(format!("the daemon ended ({status}) before {marker:?}")));
            }
            if Instant::now() >= deadline {
                return Err(self.fail(format!(
                    "{marker:?} not seen within {:.0} s",
                    scaled(timeout).as_secs_f64()
                )));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Asks the guest to power off, as a host shutting down would.
    fn signal_power_off(&mut self) {
        // SAFETY: kill has no memory effects.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }

    /// Waits for the daemon to report a clean power-off (exit code 0).
    fn wait_powered_off(&mut self) -> Result<()> {
        let status = self.wait_exit(POWER_OFF_TIMEOUT)?;
        if status.code() != Some(0) {
            return Err(self.fail(format!(
                "the daemon ended with {status}, not a clean power-off"
            )));
        }
        Ok(())
    }

    fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + scaled(timeout);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(self.fail("the daemon did not end in time and was killed"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Member {
    /// A failed run leaves no guest behind: power off, then kill. A kept
    /// cluster's members are forgotten, not dropped.
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        self.signal_power_off();
        if self.wait_exit(Duration::from_secs(30)).is_err() {
            tracing::warn!("{}: killed after 30 s", self.name);
        }
    }
}

/// Root's SSH login to the head from this machine's end of the bridge,
/// with the head's host key pinned (it is kept across boots).
struct Ssh {
    key: PathBuf,
    known_hosts: PathBuf,
}

impl Ssh {
    fn run(&self, command: &str) -> Result<std::process::Output> {
        Ok(Command::new("ip")
            .args(["netns", "exec", NETNS, "ssh", "-i"])
            .arg(&self.key)
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
            .args(["-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"])
            .arg(format!("root@{HEAD}"))
            .arg(command)
            .output()?)
    }

    fn output(&self, head: &Member, command: &str) -> Result<String> {
        let out = self.run(command)?;
        if !out.status.success() {
            return Err(head.fail(format!(
                "ssh root@{HEAD} {command:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn wait_ready(&self, head: &Member) -> Result<()> {
        poll(head, "an SSH login", BOOT_TIMEOUT, || {
            Ok(self.run("true")?.status.success())
        })
    }
}

/// Polls `ready` every 3 s for at most `timeout` (scaled).
fn poll(
    guest: &Member,
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + scaled(timeout);
    loop {
        if ready()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(guest.fail(format!(
                "{what} not within {:.0} s",
                scaled(timeout).as_secs_f64()
            )));
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// The answer of `srun -N N hostname` names every node once.
fn check_answer(answer: &str, names: &[String]) -> Result<()> {
    let mut got: Vec<&str> = answer.lines().map(str::trim).collect();
    got.sort_unstable();
    let mut want: Vec<&str> = names.iter().map(String::as_str).collect();
    want.sort_unstable();
    if got != want {
        bail!("srun answered {got:?}, expected {want:?}");
    }
    Ok(())
}

/// The resident memory of the engine (QEMU) a daemon runs, in KiB.
fn engine_rss_kib(daemon: u32) -> Result<u64> {
    let mut children = String::new();
    for task in std::fs::read_dir(format!("/proc/{daemon}/task"))? {
        children.push_str(&std::fs::read_to_string(task?.path().join("children"))?);
    }
    for pid in children.split_whitespace() {
        // Its process name is the guest's (-name …,process=), its program QEMU.
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))?;
        if !exe.to_string_lossy().contains("qemu-system") {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        if let Some(kib) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        {
            return Ok(kib);
        }
    }
    bail!("no engine process under daemon {daemon}")
}

/// The cluster's network namespace: the bridge and this machine's end of
/// it. Removed when dropped, unless kept.
struct Namespace {
    keep: bool,
}

impl Namespace {
    fn create() -> Result<Namespace> {
        if netns_exists()? {
            // Left by a run that was killed, or in use by another cluster
            // (one kept from another DIR): only an empty one goes.
            let pids = checked(Command::new("ip").args(["netns", "pids", NETNS]))?;
            if !pids.stdout.trim_ascii().is_empty() {
                bail!(
                    "the network namespace {NETNS} is in use by a running cluster; stop it with cargo xtask cluster --down [--dir DIR]"
                );
            }
            remove_netns()?;
        }
        ip(&["netns", "add", NETNS])?;
        let ns = Namespace { keep: false };
        let inside = |args: &[&str]| {
            let mut all = vec!["-n", NETNS];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["link", "set", "lo", "up"])?;
        inside(&["link", "add", BRIDGE, "type", "bridge"])?;
        inside(&["addr", "add", HOST_END, "dev", BRIDGE])?;
        inside(&["link", "set", BRIDGE, "up"])?;
        Ok(ns)
    }

    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if !self.keep {
            if let Err(err) = remove_netns() {
                tracing::warn!("{err:#}");
            }
        }
    }
}

fn ip(args: &[&str]) -> Result<()> {
    checked(Command::new("ip").args(args))?;
    Ok(())
}

/// Runs `cmd` to its end; a failure names it and quotes what it said.
fn checked(cmd: &mut Command) -> Result<std::process::Output> {
    let shown = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    if !out.status.success() {
        let said = if out.stderr.is_empty() {
            &out.stdout
        } else {
            &out.stderr
        };
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(said).trim()
        );
    }
    Ok(out)
}

fn netns_exists() -> Result<bool> {
    let out = Command::new("ip").args(["netns", "list"]).output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(NETNS)))
}

fn remove_netns() -> Result<()> {
    if netns_exists()? {
        ip(&["netns", "del", NETNS])?;
    }
    Ok(())
}

/// Daemons of an earlier run still alive (a --keep run, or one that was
/// interrupted): their pids, from the pidfiles the daemons write.
fn running_daemons(dir: &Path) -> Result<Vec<(PathBuf, libc::pid_t)>> {
    let run = dir.join("run");
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(&run) else {
        return Ok(found);
    };
    for entry in entries {
        let path = entry?.path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(pid) = text.trim().parse::<libc::pid_t>() else {
            continue;
        };
        // SAFETY: signal 0 only checks that the process exists.
        if unsafe { libc::kill(pid, 0) } == 0 {
            found.push((path, pid));
        }
    }
    Ok(found)
}

/// Refuses to start over a cluster that still runs.
fn stop_leftovers(dir: &Path) -> Result<()> {
    let running = running_daemons(dir)?;
    if !running.is_empty() {
        bail!(
            "a cluster from an earlier run is still running ({} guest(s); pidfiles in {}): stop it with cargo xtask cluster --down",
            running.len(),
            dir.join("run").display()
        );
    }
    std::fs::create_dir_all(dir.join("run"))?;
    Ok(())
}

/// `--down`: SIGTERM every daemon (nodes before the head), wait for their
/// power-off, remove the namespace.
fn down(dir: &Path) -> Result<()> {
    let mut running = running_daemons(dir)?;
    running.sort_by_key(|(path, _)| path.to_string_lossy().contains("head"));
    for (path, pid) in &running {
        tracing::info!("powering off {}", path.display());
        // SAFETY: kill has no memory effects.
        unsafe {
            libc::kill(*pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + scaled(POWER_OFF_TIMEOUT);
        // SAFETY: as above.
        while unsafe { libc::kill(*pid, 0) } == 0 {
            if Instant::now() >= deadline {
                bail!("{} (pid {pid}) did not power off in time", path.display());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    remove_netns()?;
    println!(
        "{} guest(s) powered off; namespace {NETNS} removed",
        running.len()
    );
    Ok(())
}

/// An ed25519 key pair at `path` (and `path.pub`), made once and kept.
fn keygen(path: &Path, comment: &str) -> Result<()> {
    if path.exists() && path.with_extension("pub").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(path.parent().expect("a key file has a directory"))?;
    let _ = std::fs::remove_file(path);
    checked(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path),
    )?;
    Ok(())
}

/// Writes a secret readable by its owner only, atomically.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    let mut file = File::create(&tmp)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
