//! The coMosix cluster booted for real, as a user runs it: `cargo xtask
//! cluster --nodes 2 --fail-node` builds what is missing, boots a head and
//! two nodes (NFS root, Slurm) in a network namespace under TCG, runs a job
//! on both nodes, powers one node off in the middle of a job and runs the
//! next job on the other, then powers everything off. One boot of the
//! cluster carries every check.

use std::process::Command;

use harness::{assert_fsck_clean, workspace_root};

fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_head_and_two_nodes_run_jobs_and_survive_a_node_failure() {
    let dir = workspace_root().join("target/cluster-test");
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["cluster", "--nodes", "2", "--fail-node", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cargo xtask cluster failed ({}):\n{stdout}\n{stderr}",
        out.status
    );

    // Both prefixed names answer the first job, once each.
    let first: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("$ srun -N 2 hostname"))
        .skip(1)
        .take(2)
        .collect();
    assert_eq!(first, ["node-pc1", "node-pc2"], "{stdout}");
    // The head read its seed disk: every file the daemon put there (the
    // command also checks the munge key's bytes and pins the head's SSH
    // host key from it).
    assert!(
        stdout.contains(
            "the head's seed disk, as it sees it: authorized_keys comosix.env munge.key \
             ssh_host_ed25519_key ssh_host_ed25519_key.pub"
        ),
        "{stdout}"
    );
    // node-pc2 went down in the middle of a job; the next job ran on pc1.
    assert!(
        stdout.contains("node-pc2 powered off in the middle of job")
            && stdout.contains("Slurm marked it down"),
        "{stdout}"
    );
    let after: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("$ srun -N 1 hostname"))
        .skip(1)
        .take(1)
        .collect();
    assert_eq!(after, ["node-pc1"], "{stdout}");

    // Every guest powered off cleanly (the command checks exit code 0 and
    // runs e2fsck itself; checked again here, independently).
    for disk in ["comosix-head", "comosix-node"] {
        assert_fsck_clean(&dir.join("disks").join(format!("{disk}.ext4")));
    }
    assert!(
        !netns_list()
            .lines()
            .any(|l| l.split_whitespace().next() == Some("comosix")),
        "the namespace was left behind"
    );
    let pidfiles: Vec<_> = std::fs::read_dir(dir.join("run"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(pidfiles.is_empty(), "daemons' pidfiles left: {pidfiles:?}");
    // The keys are kept for the next run: the same hosts, the same keys.
    for kept in ["keys/munge.key", "keys/node-pc1/ssh_host_ed25519_key.pub"] {
        assert!(dir.join(kept).is_file(), "{kept} was not kept");
    }
}
