//! The coMosix images (recipes/comosix-node.toml and comosix-head.toml),
//! built for real by `cargo xtask image --recipe` and inspected with
//! debugfs without mounting: no secret or identity inside, and the mounts,
//! units and drop-ins that make a node boot from NFS and join the head.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use harness::{assert_fsck_clean, workspace_root, xtask_ok};

/// An image built once for every test of this binary (and not again while
/// its inputs are unchanged: the stage is cached).
fn built(cell: &'static OnceLock<PathBuf>, name: &str) -> PathBuf {
    cell.get_or_init(|| {
        xtask_ok(&["image", "--recipe", &format!("recipes/{name}.toml")]);
        workspace_root()
            .join("target/images")
            .join(name)
            .join(format!("{name}.ext4"))
    })
    .clone()
}

fn node() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    built(&BUILT, "comosix-node")
}

fn head() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    built(&BUILT, "comosix-head")
}

/// debugfs's stdout and stderr (where it says a file is missing).
fn debugfs(image: &Path, request: &str) -> (String, String) {
    let out = Command::new("debugfs")
        .args(["-R", request])
        .arg(image)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cat(image: &Path, path: &str) -> String {
    let (text, err) = debugfs(image, &format!("cat {path}"));
    assert!(!err.contains("not found"), "{path}: {err}");
    text
}

fn assert_missing(image: &Path, path: &str) {
    let (_, err) = debugfs(image, &format!("stat {path}"));
    assert!(
        err.contains("not found"),
        "{path} is in {}",
        image.display()
    );
}

fn ls(image: &Path, dir: &str) -> String {
    debugfs(image, &format!("ls {dir}")).0
}

/// The fields of the fstab's line for a mount point.
fn fstab_entry(fstab: &str, mount_point: &str) -> Vec<String> {
    fstab
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .find(|f| f.get(1).map(String::as_str) == Some(mount_point))
        .unwrap_or_else(|| panic!("no {mount_point} in the fstab:\n{fstab}"))
}

/// What both images must be: clean, with no secret and no identity, and
/// each machine's identity taken from its seed disk at boot.
fn assert_no_secret_and_seeded(image: &Path, label: &str) {
    assert_fsck_clean(image);
    let stats = debugfs(image, "stats").0;
    assert!(
        stats.contains(&format!("Filesystem volume name:   {label}\n")),
        "{stats}"
    );

    assert_missing(image, "/etc/munge/munge.key");
    let ssh = ls(image, "/etc/ssh");
    assert!(
        ssh.contains("sshd_config") && !ssh.contains("ssh_host_"),
        "{ssh}"
    );
    let (machine_id, _) = debugfs(image, "stat /etc/machine-id");
    assert!(machine_id.contains("Size: 0"), "{machine_id}");
    assert_missing(image, "/etc/hostname");
    assert_missing(image, "/root/.ssh/authorized_keys");
    let shadow = cat(image, "/etc/shadow");
    let root = shadow.lines().find(|l| l.starts_with("root:")).unwrap();
    assert!(root.split(':').nth(1).unwrap().starts_with('!'), "{root}");

    // No first-boot key making: the host key is the seed's.
    assert_missing(image, "/etc/systemd/system/colinux-firstboot.service");
    assert!(!ls(image, "/etc/systemd/system/multi-user.target.wants").contains("firstboot"));
    // Nor the stock images' credentials unit: comosix-seed installs root's key.
    assert_missing(image, "/etc/systemd/system/colinux-credentials.service");
    assert_missing(image, "/usr/lib/colinux/credentials");
    assert!(!ls(image, "/etc/systemd/system/multi-user.target.wants").contains("credentials"));
    assert!(ls(image, "/etc/systemd/system/sysinit.target.wants").contains("comosix-seed.service"));
    let seed = cat(image, "/etc/systemd/system/comosix-seed.service");
    assert!(seed.contains("ExecStart=/usr/lib/comosix/seed"), "{seed}");
    let script = cat(image, "/usr/lib/comosix/seed");
    assert!(script.contains("blkid -L COSEED"), "{script}");
    let munge = cat(image, "/etc/systemd/system/munge.service.d/comosix.conf");
    assert!(
        munge.contains("--key-file=/run/comosix/munge.key")
            && munge.contains("Requires=comosix-seed.service"),
        "{munge}"
    );
    assert!(ls(image, "/etc/systemd/system/multi-user.target.wants").contains("munge.service"));
    let sshd = cat(image, "/etc/ssh/sshd_config.d/comosix.conf");
    assert!(
        sshd.contains("HostKey /run/comosix/ssh/ssh_host_ed25519_key"),
        "{sshd}"
    );
    let resolv = debugfs(image, "stat /etc/resolv.conf").0;
    assert!(
        resolv.contains("../run/systemd/resolve/stub-resolv.conf"),
        "{resolv}"
    );
    let udev = cat(image, "/etc/udev/rules.d/61-cobd-by-label.rules");
    assert!(udev.contains("disk/by-label/"), "{udev}");
}

#[test]
fn the_node_image_has_no_secret_and_boots_read_only_from_nfs() {
    let image = node();
    assert_no_secret_and_seeded(&image, "comosix-node");

    let fstab = cat(&image, "/etc/fstab");
    let root = fstab_entry(&fstab, "/");
    assert_eq!(root[2], "nfs", "{fstab}");
    assert!(root[3].split(',').any(|o| o == "ro"), "{fstab}");
    for dir in ["/var", "/tmp", "/root", "/home"] {
        let entry = fstab_entry(&fstab, dir);
        assert_eq!((entry[0].as_str(), entry[2].as_str()), ("tmpfs", "tmpfs"));
    }
    assert!(!fstab.contains("cobd0"), "{fstab}");

    // slurmd: a dynamic node, configless, started once the seed is read.
    let wants = ls(&image, "/etc/systemd/system/multi-user.target.wants");
    assert!(wants.contains("slurmd.service"), "{wants}");
    let slurmd = cat(&image, "/etc/systemd/system/slurmd.service.d/comosix.conf");
    assert!(
        slurmd.contains("-Z --conf-server ${HEAD}")
            && slurmd.contains("EnvironmentFile=/run/comosix/comosix.env"),
        "{slurmd}"
    );
    assert_missing(&image, "/etc/slurm/slurm.conf");
    // A job's slurmstepd ignores SIGTERM: it must not hold a power-off.
    let manager = cat(&image, "/etc/systemd/system.conf.d/comosix-node.conf");
    assert!(manager.contains("DefaultTimeoutStopSec=10s"), "{manager}");
    let tmpfiles = cat(&image, "/etc/tmpfiles.d/comosix-node.conf");
    assert!(tmpfiles.contains("/var/lib/slurm/slurmd"), "{tmpfiles}");

    // The kernel's DHCP address carries the root: no networkd on eth0.
    assert!(!wants.contains("systemd-networkd"), "{wants}");
    assert_missing(&image, "/etc/systemd/network/20-eth0.network");

    // Extra mounts: /etc/comosix/fstab.local, mounted by a unit.
    cat(&image, "/etc/comosix/fstab.local");
    let local = cat(&image, "/etc/systemd/system/comosix-fstab-local.service");
    assert!(
        local.contains("mount -a -T /etc/comosix/fstab.local"),
        "{local}"
    );
    assert!(ls(&image, "/etc/systemd/system/remote-fs.target.wants")
        .contains("comosix-fstab-local.service"));
}

#[test]
fn the_head_image_has_no_secret_and_serves_the_cluster() {
    let image = head();
    assert_no_secret_and_seeded(&image, "comosix-head");

    let fstab = cat(&image, "/etc/fstab");
    assert_eq!(fstab_entry(&fstab, "/")[0], "/dev/cobd0");
    let wants = ls(&image, "/etc/systemd/system/multi-user.target.wants");
    for unit in [
        "slurmctld.service",
        "dnsmasq.service",
        "nfs-server.service",
        "srv-comosix-node.mount",
        "systemd-networkd.service",
    ] {
        assert!(wants.contains(unit), "{unit} is not enabled: {wants}");
    }
    assert!(ls(&image, "/etc/systemd/system/sysinit.target.wants")
        .contains("comosix-head-config.service"));
    let mount = cat(&image, "/etc/systemd/system/srv-comosix-node.mount");
    assert!(
        mount.contains("What=/dev/cobd1") && mount.contains("Options=ro,noload"),
        "{mount}"
    );
    let cgroup = cat(&image, "/etc/slurm/cgroup.conf");
    assert!(cgroup.contains("CgroupPlugin=disabled"), "{cgroup}");
    // Generated at boot from the seed disk, so not in the image.
    assert_missing(&image, "/etc/slurm/slurm.conf");
    assert_missing(&image, "/etc/systemd/network/20-eth0.network");
    let config = cat(&image, "/usr/lib/comosix/head-config");
    for want in [
        "SlurmctldParameters=enable_configless",
        "MaxNodeCount=",
        "PartitionName=main Nodes=ALL Default=YES",
        "SlurmdTimeout=30",
        "no_root_squash",
        "dhcp-range=",
    ] {
        assert!(config.contains(want), "{want} not in head-config");
    }
    for unit in ["slurmctld", "dnsmasq", "nfs-server"] {
        let dropin = cat(
            &image,
            &format!("/etc/systemd/system/{unit}.service.d/comosix.conf"),
        );
        assert!(
            dropin.contains("Requires=comosix-head-config.service"),
            "{unit}: {dropin}"
        );
    }
}
