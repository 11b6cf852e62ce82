//! coMosix cluster guests: the ini's `[cluster]` and the `cluster_*` keys.

mod common;

use std::fs;
use std::path::Path;

use colinux_config::{machine_name, parse_args, parse_ini_str, parse_str, ClusterRole, Settings};

const INI: &str = "/cluster/node.ini";

fn ini(text: &str) -> Result<Settings, String> {
    parse_ini_str(text, Path::new(INI)).map_err(|e| {
        let message = e.to_string();
        assert!(!message.contains('\n'), "one line: {message}");
        message
    })
}

const NODE: &str = "[NFS]\nserver = 10.77.0.1\npath = /srv/comosix/node\noptions = vers=3,nolock,tcp\n\
[cluster]\nrole = node\nhostname_prefix = Node-\nhost_name = PC17\nhead = 10.77.0.1\n\
munge_key = munge.key\nssh_host_key = keys/node-pc17/ssh_host_ed25519_key\nroot_key = id_ed25519.pub\n";

#[test]
fn a_node_ini_resolves_everything_the_guest_needs() {
    let s = ini(NODE).unwrap();
    let c = s.cluster.as_ref().expect("cluster");
    assert_eq!(c.role.value, ClusterRole::Node);
    assert_eq!(
        c.hostname.value, "node-pc17",
        "prefix + host name, lower case"
    );
    assert_eq!(
        c.hostname.origin.to_string(),
        "/cluster/node.ini:8: host_name = PC17"
    );
    assert_eq!(c.head.value.to_string(), "10.77.0.1");
    assert_eq!(c.network().to_string(), "10.77.0.0/24", "the head's /24");
    assert_eq!(c.munge_key.value, Path::new("/cluster/munge.key"));
    assert_eq!(
        c.ssh_host_key_pub(),
        Path::new("/cluster/keys/node-pc17/ssh_host_ed25519_key.pub")
    );
    assert_eq!(
        c.root_key.as_ref().unwrap().value,
        Path::new("/cluster/id_ed25519.pub")
    );
    assert_eq!(
        s.kernel_cmdline(&["console=ttyS0"]).unwrap(),
        "console=ttyS0 root=/dev/nfs nfsroot=10.77.0.1:/srv/comosix/node,vers=3,nolock,tcp \
         ip=::::node-pc17:eth0:dhcp"
    );
}

#[test]
fn the_config_language_says_the_same_and_reads_back() {
    let s = ini(NODE).unwrap();
    let text = s.describe(None);
    assert!(
        text.contains("cluster=node") && text.contains("cluster_network=10.77.0.0/24"),
        "{text}"
    );
    let again = parse_str(&text, Path::new("/cluster/colinux.conf")).unwrap();
    let (a, b) = (s.cluster.clone().unwrap(), again.cluster.clone().unwrap());
    assert_eq!(
        (a.role.value, &a.hostname.value, a.head.value, a.network()),
        (b.role.value, &b.hostname.value, b.head.value, b.network())
    );
    assert_eq!(a.munge_key.value, b.munge_key.value);
    assert_eq!(a.ssh_host_key.value, b.ssh_host_key.value);
    assert_eq!(a.root_key.unwrap().value, b.root_key.unwrap().value);
    assert_eq!(s.kernel_cmdline(&[]), again.kernel_cmdline(&[]));

    let head = common::parse(
        "cluster=head cluster_hostname=head cluster_head=10.9.8.1 cluster_network=10.9.0.0/16 \
         cluster_munge_key=m.key cluster_ssh_host_key=k",
    );
    let c = head.cluster.unwrap();
    assert_eq!(c.role.value, ClusterRole::Head);
    assert_eq!(c.network().to_string(), "10.9.0.0/16");
    assert_eq!(c.munge_key.value, Path::new("/etc/colinux/m.key"));
    assert!(c.root_key.is_none());
}

#[test]
fn the_host_machine_name_is_the_default() {
    let s = ini(
        "[cluster]\nhostname_prefix = cn-\nhead = 10.77.0.1\nmunge_key = m\nssh_host_key = k\n",
    )
    .unwrap();
    let c = s.cluster.unwrap();
    let expected = format!("cn-{}", machine_name().unwrap().to_ascii_lowercase());
    assert_eq!(c.hostname.value, expected);
    assert_eq!(c.role.value, ClusterRole::Node, "node by default");
    // A head is not a node: its NFS root, if any, keeps plain ip=dhcp.
    let s = ini(&NODE.replace("role = node", "role = head")).unwrap();
    assert!(s.kernel_cmdline(&[]).unwrap().ends_with(" ip=dhcp"));
}

#[test]
fn bad_cluster_settings_name_file_line_and_key() {
    let err = ini(&NODE.replace("head = 10.77.0.1\n", "")).unwrap_err();
    assert_eq!(
        err,
        "/cluster/node.ini:5: [cluster]: [cluster] needs `head`"
    );
    let err = ini(&NODE.replace("munge_key = munge.key\n", "")).unwrap_err();
    assert!(err.contains("needs `munge_key`"), "{err}");
    let err = ini(&NODE.replace("role = node", "role = worker")).unwrap_err();
    assert!(
        err.starts_with("/cluster/node.ini:6: role = worker: bad cluster role \"worker\": expected head or node"),
        "{err}"
    );
    let err = ini(&NODE.replace("Node-", "node_")).unwrap_err();
    assert!(
        err.starts_with("/cluster/node.ini:7: hostname_prefix = node_: bad hostname (hostname_prefix + host name) \"node_pc17\""),
        "{err}"
    );
    let err = ini(&NODE.replace("PC17", &"x".repeat(60))).unwrap_err();
    assert!(
        err.starts_with("/cluster/node.ini:8: host_name = "),
        "{err}"
    );
    assert!(err.contains("1 to 63"), "{err}");
    let err = ini(&NODE.replace("head = 10.77.0.1", "head = 10.77.0")).unwrap_err();
    assert!(
        err.starts_with("/cluster/node.ini:9: head = 10.77.0: bad head address"),
        "{err}"
    );
    let err = ini(&format!("{NODE}network = 10.78.0.0/24\n")).unwrap_err();
    assert!(
        err.starts_with(
            "/cluster/node.ini:13: network = 10.78.0.0/24: bad cluster head \"10.77.0.1\""
        ),
        "{err}"
    );
    let err = ini(&format!("{NODE}network = 10.77.0.1/24\n")).unwrap_err();
    assert!(err.contains("bad cluster network"), "{err}");
    let err = ini(&format!("{NODE}hostname = x\n")).unwrap_err();
    assert!(
        err.contains("unknown key \"hostname\" in [cluster]"),
        "{err}"
    );

    let err = common::error(
        "cluster=node cluster_hostname=n1 cluster_munge_key=m cluster_ssh_host_key=k",
    );
    assert!(
        err.contains("cluster=node: a cluster guest needs cluster_head= as well"),
        "{err}"
    );
    let err = common::error("cluster_hostname=Node1");
    assert!(err.contains("bad hostname \"Node1\""), "{err}");
    let err = common::error("cluster_hed=10.0.0.1");
    assert!(err.contains("`cluster_hed` is not a cluster key"), "{err}");
    let err = common::error("Cluster_head=10.0.0.1");
    assert!(err.contains("keys are lower case"), "{err}");
}

#[test]
fn key_files_are_checked_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::write(root.join("munge.key"), [7u8; 1024]).unwrap();
    fs::write(root.join("host_key"), "private").unwrap();
    fs::write(root.join("host_key.pub"), "public").unwrap();
    let args = |extra: &[&str]| {
        let mut args = vec![
            "cluster_hostname=n1",
            "cluster_head=10.77.0.1",
            "cluster_munge_key=munge.key",
            "cluster_ssh_host_key=host_key",
        ];
        args.extend_from_slice(extra);
        parse_args(args, root).unwrap()
    };
    args(&[]).check_files().expect("all there");

    let errors = args(&["cluster_root_key=no-such.pub"])
        .check_files()
        .unwrap_err();
    assert_eq!(errors.0.len(), 1);
    assert!(
        errors
            .to_string()
            .starts_with("command line argument 5: cluster_root_key=no-such.pub: ")
            && errors.to_string().contains("no-such.pub does not exist"),
        "{errors}"
    );

    fs::remove_file(root.join("host_key.pub")).unwrap();
    let errors = args(&[]).check_files().unwrap_err().to_string();
    assert!(
        errors.starts_with("command line argument 4: cluster_ssh_host_key=host_key: ")
            && errors.contains("host_key.pub does not exist"),
        "{errors}"
    );

    fs::create_dir(root.join("a-dir")).unwrap();
    let errors = args(&["cluster_munge_key=a-dir"])
        .check_files()
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("a-dir is a directory, not a file"),
        "{errors}"
    );
}
