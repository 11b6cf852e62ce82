//! `ethN=pcap-bridge,BRIDGE` on Linux, for real, in a network namespace of
//! its own with a bridge and nothing else on it: the daemon's tap is on the
//! bridge while the guest runs and gone after, also when the daemon is
//! killed; a missing bridge and a missing privilege stop it before QEMU.
//! The guest is a cluster node whose NFS server does not exist, so it also
//! shows the seed disk attached and exit code 7 for an unreachable root.
#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use harness::{workspace_root, xtask_ok, Guest};

const DAEMON: &str = env!("CARGO_BIN_EXE_colinux-daemon");
const BRIDGE: &str = "cobr0";

/// A network namespace with a bridge that is up, removed on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("colinux-{tag}-{}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let ns = Netns(name);
        ns.ip(&["link", "add", BRIDGE, "type", "bridge"]);
        ns.ip(&["link", "set", BRIDGE, "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.0];
        all.extend_from_slice(args);
        String::from_utf8(run("ip", &all).stdout).unwrap()
    }

    /// The interfaces on the bridge.
    fn ports(&self) -> Vec<String> {
        self.ip(&["-o", "link", "show", "master", BRIDGE])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_string())
            .collect()
    }

    /// `ip netns exec NS program args…`: the program runs in the namespace.
    fn exec_args(&self, program: &str, args: &[String]) -> Vec<String> {
        let mut all = vec![
            "netns".into(),
            "exec".into(),
            self.0.clone(),
            program.into(),
        ];
        all.extend_from_slice(args);
        all
    }

    fn wait_ports(
        &self,
        what: &str,
        want: impl Fn(&[String]) -> bool,
        timeout: Duration,
    ) -> Vec<String> {
        let deadline = Instant::now() + harness::scaled(timeout);
        loop {
            let ports = self.ports();
            if want(&ports) {
                return ports;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the bridge has {ports:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The daemon failed, and its last line is its one-line error with `needle`.
fn error_line(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected a failure: {err}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("colinux-daemon: ") && last.contains(needle),
        "expected {needle:?} in the last line of: {err}"
    );
}

fn kernel() -> PathBuf {
    xtask_ok(&["kernel", "--arch", "i386"]);
    workspace_root().join("target/kernel/i386/bzImage")
}

/// A node of the cluster contract whose NFS server 10.77.0.1 does not
/// exist: nothing on the bridge answers, so the guest stays in DHCP.
fn node_config(dir: &Path, kernel: &Path) -> PathBuf {
    std::fs::write(dir.join("munge.key"), [5u8; 1024]).unwrap();
    std::fs::write(dir.join("host_key"), "PRIVATE\n").unwrap();
    std::fs::write(dir.join("host_key.pub"), "ssh-ed25519 HOST\n").unwrap();
    std::fs::write(
        dir.join("node.ini"),
        "[comosix]\nmemory_size = 128\n\
         [NFS]\nserver = 10.77.0.1\npath = /srv/comosix/node\noptions = vers=3,nolock,tcp\n\
         [cluster]\nrole = node\nhostname_prefix = node-\nhost_name = test\nhead = 10.77.0.1\n\
         munge_key = munge.key\nssh_host_key = host_key\n",
    )
    .unwrap();
    let conf = dir.join("node.conf");
    std::fs::write(
        &conf,
        format!(
            "kernel=\"{}\" accel=tcg @node.ini eth0=pcap-bridge,{BRIDGE},02:c0:00:00:00:02 ro\n",
            kernel.display()
        ),
    )
    .unwrap();
    conf
}

fn daemon_args(dir: &Path, name: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--cwd".to_string(),
        dir.display().to_string(),
        "--name".into(),
        name.into(),
        "--shutdown-timeout".into(),
        "2".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn a_node_on_a_bridge_without_its_server_ends_with_7_and_leaves_no_tap() {
    let kernel = kernel();
    let dir = tempfile::tempdir().unwrap();
    let conf = node_config(dir.path(), &kernel);
    let ns = Netns::new("tap");
    let name = format!("bridge-test-{}", std::process::id());
    let args = ns.exec_args(
        DAEMON,
        &daemon_args(dir.path(), &name, &[&format!("@{}", conf.display())]),
    );

    // Killed: QEMU goes with the daemon, and its tap with QEMU.
    let killed = Guest::start("daemon-bridge-killed", "ip", &args).unwrap();
    let ports = ns.wait_ports(
        "the tap while the guest runs",
        |p| p.len() == 1,
        Duration::from_secs(30),
    );
    assert!(ports[0].starts_with("cotap"), "{ports:?}");
    // SAFETY: kill has no memory effects; the pid is our child's.
    unsafe { libc::kill(killed.pid() as libc::pid_t, libc::SIGKILL) };
    ns.wait_ports(
        "no tap after the daemon was killed",
        |p| p.is_empty(),
        Duration::from_secs(15),
    );
    drop(killed);

    // The next start under the name works. Nothing answers DHCP on the
    // bridge: the daemon sees the kernel retry forever for its NFS root,
    // stops the engine and exits with 7; the tap goes with it.
    let started = Instant::now();
    let mut guest = Guest::start("daemon-bridge", "ip", &args).unwrap();
    guest
        .wait_for("Linux version", Duration::from_secs(60))
        .unwrap();
    let ports = ns.wait_ports(
        "the tap of the second start",
        |p| p.len() == 1,
        Duration::from_secs(30),
    );
    let seed = colinux_daemon::host::runtime_dir(&name).join("seed.img");
    let fsck = Command::new("fsck.fat")
        .arg("-n")
        .arg(&seed)
        .output()
        .unwrap();
    assert!(fsck.status.success(), "{}: {fsck:?}", seed.display());
    let status = guest.wait_exit(Duration::from_secs(300)).unwrap();
    let took = started.elapsed();
    let log = guest.transcript().join("\n");
    assert_eq!(status.code(), Some(7), "{log}");
    for line in [
        format!("eth0: tap {} on bridge {BRIDGE}", ports[0]),
        "ip=::::node-test:eth0:dhcp".to_string(),
        "[cobd0] 2048 512-byte logical blocks".to_string(),
        "IP-Config: Retrying forever (NFS root)".to_string(),
        "the guest could not reach its NFS root server 10.77.0.1: it got no address by DHCP"
            .to_string(),
        "(exit code 7)".to_string(),
    ] {
        assert!(log.contains(&line), "{line:?} not in:\n{log}");
    }
    eprintln!("the node gave up on its NFS root after {took:?}");
    assert!(
        ns.ports().is_empty(),
        "the tap outlived the daemon: {:?}",
        ns.ports()
    );
    assert!(!seed.exists(), "the seed outlived the daemon");
}

#[test]
fn a_missing_bridge_or_privilege_stops_the_daemon_before_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("bzImage"), "not started").unwrap();
    let ns = Netns::new("errors");
    let daemon = |prefix: &[&str], config: &[&str]| {
        let mut args = vec!["netns", "exec", &ns.0];
        args.extend_from_slice(prefix);
        args.push(DAEMON);
        args.extend_from_slice(&[
            "--cwd",
            d.to_str().unwrap(),
            "--name",
            "bridge-errors",
            "kernel=bzImage",
        ]);
        args.extend_from_slice(config);
        Command::new("ip").args(&args).output().unwrap()
    };
    for dry_run in [&["--dry-run"][..], &[]] {
        let mut config = dry_run.to_vec();
        config.push("eth0=pcap-bridge,br9");
        let out = daemon(&[], &config);
        error_line(&out, "eth0=pcap-bridge,br9: the host has no bridge br9");
        assert_eq!(out.status.code(), Some(2), "{out:?}");
    }
    let out = daemon(&[], &["eth1=pcap-bridge,lo"]);
    error_line(
        &out,
        "eth1=pcap-bridge,lo: lo is a network interface but not a bridge",
    );
    assert_eq!(out.status.code(), Some(2));

    // Root without CAP_NET_ADMIN, as an unprivileged user would be.
    let out = daemon(
        &[
            "setpriv",
            "--inh-caps=-net_admin",
            "--bounding-set=-net_admin",
            "--",
        ],
        &[&format!("eth0=pcap-bridge,{BRIDGE}")],
    );
    error_line(
        &out,
        &format!("making a tap on bridge {BRIDGE} needs CAP_NET_ADMIN"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(ns.ports().is_empty(), "{:?}", ns.ports());
}
