//! `cargo xtask cluster`: coMosix on one machine (DESIGN.md §12), the demo
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
    if !stage::is_root() {
        bail!("cargo xtask cluster needs root (a network namespace, a bridge and taps)");
    }
    let dir = stage::root().join(&args.dir);
    let _lock = stage::lock(&dir)?;
    if args.down {
        return down(&dir);
    }
    let started = Instant::now();
    for stage_args in [
        &["kernel", "--arch", "i386"][..],
        &["runtime", "--target", "x86_64-unknown-linux-gnu"],
        &["image", "--recipe", "recipes/comosix-node.toml"],
        &["image", "--recipe", "recipes/comosix-head.toml"],
    ] {
        stage::run_xtask(stage_args)?;
    }
    let plan = Plan::new(&dir, args.nodes)?;
    stop_leftovers(&dir)?;
    plan.prepare()?;
    let net = Namespace::create()?;

    tracing::info!("booting the head, {}", plan.head.hostname);
    let mut head = plan.start(&plan.head)?;
    head.wait_for(&plan.head.banner(), BOOT_TIMEOUT)?;
    let ssh = plan.ssh();
    ssh.wait_ready(&head)?;
    tracing::info!(
        "the head is up after {:.0} s; booting {} node(s) from its NFS export",
        started.elapsed().as_secs_f64(),
        plan.nodes.len()
    );
    let mut nodes = Vec::new();
    for node in &plan.nodes {
        nodes.push(plan.start(node)?);
    }
    let names: Vec<&str> = plan.nodes.iter().map(|n| n.hostname.as_str()).collect();
    wait_joined(&ssh, &head, &names)?;
    tracing::info!(
        "{} node(s) joined Slurm after {:.0} s",
        names.len(),
        started.elapsed().as_secs_f64()
    );
    let answer = ssh.output(&head, &format!("srun -N {} hostname | sort", names.len()))?;
    println!("$ srun -N {} hostname", names.len());
    print!("{answer}");
    check_answer(&answer, &names)?;

    if args.fail_node {
        let (gone, rest) = names.split_last().expect("at least one node");
        let mut victim = nodes.pop().expect("at least one node");
        fail_node(&ssh, &head, &mut victim, gone, rest)?;
    }
    if args.keep {
        net.keep();
        std::mem::forget(head);
        nodes.into_iter().for_each(std::mem::forget);
        println!(
            "The cluster is running. Reach the head with:\n  ip netns exec {NETNS} ssh -i {} -o UserKnownHostsFile={} root@{HEAD}\nStop it with: cargo xtask cluster --down",
            plan.root_key.display(),
            plan.known_hosts.display()
        );
        return Ok(());
    }
    for node in nodes.iter_mut() {
        node.signal_power_off();
    }
    for node in nodes.iter_mut() {
        node.wait_powered_off()?;
    }
    head.signal_power_off();
    head.wait_powered_off()?;
    drop(net);
    plan.check_disks()?;
    tracing::info!(
        "the cluster powered off cleanly; {:.0} s in all",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One guest of the cluster.
struct Guest {
    name: String,
    hostname: String,
    ini: PathBuf,
    /// Config tokens for the daemon's command line besides the ini.
    tokens: Vec<String>,
}

impl Guest {
    /// The getty's banner on the console: the guest is up.
    fn banner(&self) -> String {
        format!("{} ttyS0", self.hostname)
    }
}

/// The cluster's files, all under one directory.
struct Plan {
    dir: PathBuf,
    daemon: PathBuf,
    head: Guest,
    nodes: Vec<Guest>,
    root_key: PathBuf,
    known_hosts: PathBuf,
}

impl Plan {
    fn new(dir: &Path, nodes: u8) -> Result<Plan> {
        let root = stage::root();
        let kernel = root.join("target/kernel/i386/bzImage");
        let daemon = root.join("target/runtime/x86_64-unknown-linux-gnu/colinux-daemon");
        let mac = |n: u8| format!("02:c0:00:00:00:{n:02x}");
        let tokens = |n: u8, extra: &[&str]| {
            let mut t = vec![
                format!("kernel={}", kernel.display()),
                format!("eth0=pcap-bridge,{BRIDGE},{}", mac(n)),
            ];
            t.extend(extra.iter().map(|s| s.to_string()));
            t
        };
        let head = Guest {
            name: "comosix-head".into(),
            hostname: format!("{HEAD_PREFIX}{HEAD_HOST}"),
            ini: dir.join("conf/head.ini"),
            tokens: tokens(1, &["root=/dev/cobd0", "ro"]),
        };
        let nodes = (1..=nodes)
            .map(|i| Guest {
                name: format!("comosix-node-{i}"),
                hostname: format!("{NODE_PREFIX}pc{i}"),
                ini: dir.join(format!("conf/node-{i}.ini")),
                tokens: tokens(i + 1, &["ro"]),
            })
            .collect();
        Ok(Plan {
            dir: dir.to_path_buf(),
            daemon,
            head,
            nodes,
            root_key: dir.join("keys/id_ed25519"),
            known_hosts: dir.join("keys/known_hosts"),
        })
    }

    fn disk(&self, image: &str) -> PathBuf {
        self.dir.join("disks").join(format!("{image}.ext4"))
    }

    fn host_key(&self, guest: &Guest) -> PathBuf {
        self.dir
            .join("keys")
            .join(&guest.hostname)
            .join("ssh_host_ed25519_key")
    }

    /// Fresh copies of the images, the keys (made once, then kept), and
    /// each guest's ini.
    fn prepare(&self) -> Result<()> {
        let images = stage::root().join("target/images");
        std::fs::create_dir_all(self.dir.join("disks"))?;
        for image in ["comosix-head", "comosix-node"] {
            let from = images.join(image).join(format!("{image}.ext4"));
            let status = Command::new("cp")
                .args(["--reflink=auto", "--sparse=always"])
                .arg(&from)
                .arg(self.disk(image))
                .status()?;
            if !status.success() {
                bail!("cannot copy {} ({status})", from.display());
            }
        }
        let keys = self.dir.join("keys");
        std::fs::create_dir_all(&keys)?;
        let munge = keys.join("munge.key");
        if !munge.exists() {
            let mut key = vec![0u8; 1024];
            File::open("/dev/urandom")?.read_exact(&mut key)?;
            write_private(&munge, &key)?;
        }
        keygen(&self.root_key, "root@comosix-demo")?;
        let mut known = String::new();
        for guest in std::iter::once(&self.head).chain(&self.nodes) {
            let key = self.host_key(guest);
            keygen(&key, &guest.hostname)?;
            if guest.name == self.head.name {
                let public = std::fs::read_to_string(key.with_extension("pub"))?;
                known.push_str(&format!("{HEAD} {}", public.trim_end()));
                known.push('\n');
            }
        }
        std::fs::write(&self.known_hosts, known)?;

        std::fs::create_dir_all(self.dir.join("conf"))?;
        std::fs::create_dir_all(self.dir.join("logs"))?;
        let cluster = |guest: &Guest, role: &str, prefix: &str, host: &str| {
            format!(
                "[cluster]\nrole = {role}\nhostname_prefix = {prefix}\nhost_name = {host}\n\
                 head = {HEAD}\nnetwork = {NETWORK}\nmunge_key = {}\nssh_host_key = {}\nroot_key = {}\n",
                munge.display(),
                self.host_key(guest).display(),
                self.root_key.with_extension("pub").display()
            )
        };
        std::fs::write(
            &self.head.ini,
            format!(
                "; the coMosix head (cargo xtask cluster)\n[comosix]\nmemory_size = {HEAD_MEM_MB}\n\
                 [cobd]\npath_0 = {}\npath_1 = {}\n{}",
                self.disk("comosix-head").display(),
                self.disk("comosix-node").display(),
                cluster(&self.head, "head", HEAD_PREFIX, HEAD_HOST)
            ),
        )?;
        for (i, node) in self.nodes.iter().enumerate() {
            std::fs::write(
                &node.ini,
                format!(
                    "; a coMosix node (cargo xtask cluster)\n[comosix]\nmemory_size = {NODE_MEM_MB}\n\
                     [NFS]\nserver = {HEAD}\npath = /srv/comosix/node\noptions = vers=3,tcp,nolock\n{}",
                    cluster(node, "node", NODE_PREFIX, &format!("pc{}", i + 1))
                ),
            )?;
        }
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
            .arg(format!("@{}", guest.ini.display()))
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
            let disk = self.disk(image);
            let out = Command::new("e2fsck").arg("-fn").arg(&disk).output()?;
            if !out.status.success() {
                bail!(
                    "e2fsck -fn {} after the power-off: {}",
                    disk.display(),
                    String::from_utf8_lossy(&out.stdout).trim()
                );
            }
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

/// Each node's state as the controller sees it (`sinfo -N`).
fn node_states(ssh: &Ssh, head: &Member) -> Result<Vec<(String, String)>> {
    let out = ssh.output(head, "sinfo -h -N -o '%N %T'")?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, s)| (n.to_string(), s.trim().to_string()))
        .collect())
}

fn wait_joined(ssh: &Ssh, head: &Member, names: &[&str]) -> Result<()> {
    let mut last = Vec::new();
    let result = poll(head, "every node idle in Slurm", JOIN_TIMEOUT, || {
        last = node_states(ssh, head)?;
        Ok(names.iter().all(|n| {
            last.iter()
                .any(|(name, state)| name == n && state == "idle")
        }))
    });
    result.with_context(|| format!("sinfo said: {last:?}"))
}

/// The answer of `srun -N N hostname` names every node once.
fn check_answer(answer: &str, names: &[&str]) -> Result<()> {
    let mut got: Vec<&str> = answer.lines().map(str::trim).collect();
    got.sort_unstable();
    let mut want = names.to_vec();
    want.sort_unstable();
    if got != want {
        bail!("srun answered {got:?}, expected {want:?}");
    }
    Ok(())
}

/// Powers `victim` off while a job runs on every node, waits until Slurm
/// marks it down, and runs a job on the rest.
fn fail_node(
    ssh: &Ssh,
    head: &Member,
    victim: &mut Member,
    gone: &str,
    rest: &[&str],
) -> Result<()> {
    let all = rest.len() + 1;
    let job = ssh.output(
        head,
        &format!("sbatch --parsable -N {all} -o /dev/null --wrap 'srun sleep 600'"),
    )?;
    let job = job.trim().to_string();
    poll(head, "the long job running", JOIN_TIMEOUT, || {
        Ok(ssh
            .output(head, &format!("squeue -h -j {job} -o %T"))?
            .trim()
            == "RUNNING")
    })?;
    tracing::info!("job {job} runs on {all} node(s); powering {gone} off in its middle");
    let asked = Instant::now();
    victim.signal_power_off();
    victim.wait_powered_off()?;
    let mut state = String::new();
    poll(
        head,
        &format!("Slurm marking {gone} down"),
        DOWN_TIMEOUT,
        || {
            state = ssh
                .output(head, &format!("sinfo -h -N -n {gone} -o %T"))?
                .trim()
                .to_string();
            Ok(state.starts_with("down") || state.starts_with("fail"))
        },
    )?;
    println!(
        "{gone} powered off in the middle of job {job}: Slurm marked it {state} {:.0} s later",
        asked.elapsed().as_secs_f64()
    );
    if rest.is_empty() {
        return Ok(());
    }
    let answer = ssh.output(
        head,
        &format!("timeout 300 srun -N {} hostname | sort", rest.len()),
    )?;
    println!(
        "$ srun -N {} hostname   # after {gone} went down",
        rest.len()
    );
    print!("{answer}");
    check_answer(&answer, rest)
}

/// The cluster's network namespace: the bridge and this machine's end of
/// it. Removed when dropped, unless kept.
struct Namespace {
    keep: bool,
}

impl Namespace {
    fn create() -> Result<Namespace> {
        if netns_exists()? {
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
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
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
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .output()?;
    if !out.status.success() {
        bail!(
            "ssh-keygen {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
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
