//! The files a recipe generates in the root: hostname, fstab, the network,
//! the first-boot unit and root's credentials. Pure functions from the
//! recipe to text, so the tests can read exactly what an image gets.

use anyhow::{bail, Result};

use recipe::Recipe;

/// A file to write into the root, with its mode.
#[derive(Debug, PartialEq)]
pub struct File {
    pub path: String,
    pub text: String,
    pub mode: u32,
}

fn file(path: impl Into<String>, text: String) -> File {
    File {
        path: path.into(),
        text,
        mode: 0o644,
    }
}

/// The unit that gives each machine its own identity on its first boot.
pub const FIRSTBOOT_UNIT: &str = "colinux-firstboot.service";

/// The unit that applies root's credentials from the daemon's seed disk at
/// the first start, or asks for a password on the console (docs/design.md §13).
pub const CREDENTIALS_UNIT: &str = "colinux-credentials.service";

/// The script it runs, where it runs it.
const CREDENTIALS_SCRIPT: &str = "usr/lib/colinux/credentials";

/// Every file the recipe generates; `mirror` is the archive it was built from.
pub fn files(name: &str, recipe: &Recipe, mirror: &str) -> Vec<File> {
    let mut files = vec![
        file(
            APT_SOURCES.replace("{distro}", recipe.distro.name()),
            apt_sources(name, recipe, mirror),
        ),
        file("etc/hostname", format!("{}\n", recipe.hostname)),
        file("etc/hosts", hosts(&recipe.hostname)),
        file("etc/fstab", fstab(name)),
        file(
            format!("etc/systemd/system/{FIRSTBOOT_UNIT}"),
            FIRSTBOOT.to_string(),
        ),
        file(
            format!("etc/systemd/system/{CREDENTIALS_UNIT}"),
            include_str!("firstboot/colinux-credentials.service").to_string(),
        ),
        File {
            path: CREDENTIALS_SCRIPT.into(),
            text: include_str!("firstboot/credentials").to_string(),
            mode: 0o755,
        },
    ];
    for iface in recipe.network.keys() {
        files.push(file(
            format!("etc/systemd/network/20-{iface}.network"),
            network(recipe, iface),
        ));
    }
    files
}

/// The units `systemctl enable` turns on: the network, one getty per
/// console, and the first-boot units.
pub fn units_to_enable(recipe: &Recipe) -> Vec<String> {
    let mut units = vec![FIRSTBOOT_UNIT.to_string(), CREDENTIALS_UNIT.to_string()];
    if !recipe.network.is_empty() {
        units.push("systemd-networkd.service".into());
    }
    units.extend(recipe.console.getty.iter().map(|tty| getty_unit(tty)));
    units
}

/// Serial and hypervisor consoles get serial-getty (which keeps the line
/// settings the kernel console set); virtual terminals get getty.
fn getty_unit(tty: &str) -> String {
    if tty.starts_with("tty") && tty[3..].chars().all(|c| c.is_ascii_digit()) {
        format!("getty@{tty}.service")
    } else {
        format!("serial-getty@{tty}.service")
    }
}

/// The image's apt sources, in the deb822 format (apt 3.0 in trixie asks
/// one-line sources.list files to be converted; bookworm and noble read it
/// too); they replace the sources.list mmdebstrap writes.
pub const APT_SOURCES: &str = "etc/apt/sources.list.d/{distro}.sources";

pub fn apt_sources(name: &str, recipe: &Recipe, mirror: &str) -> String {
    let mut text = format!("# The apt sources of the {name} image, made by cargo xtask image.\n");
    let release = std::iter::once(&recipe.suite).chain(&recipe.extra_suites);
    let mut archives = vec![(mirror.to_string(), release.cloned().collect::<Vec<_>>())];
    if let Some((url, suite)) = recipe.security.split_once(' ') {
        archives.push((url.to_string(), vec![suite.trim().to_string()]));
    }
    for (url, suites) in archives {
        text.push_str(&format!(
            "\nTypes: deb\nURIs: {url}\nSuites: {}\nComponents: {}\nSigned-By: {}\n",
            suites.join(" "),
            recipe.components.join(" "),
            recipe.keyring.display()
        ));
    }
    text
}

fn hosts(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n"
    )
}

pub fn fstab(name: &str) -> String {
    format!(
        "# /etc/fstab of the {name} image, made by cargo xtask image.
# coLinux disks are /dev/cobd0 … /dev/cobd31 (cobdN=FILE in the daemon's
# config); shared host folders are cofs0 … cofs31 (cofsN=DIR).
# The root grows to fill a larger cobd0 at boot (x-systemd.growfs), and
# what the guest frees goes back to the host's sparse file at once
# (discard: QEMU punches a hole in the file).
#
# <device>     <mount point>  <type>  <options>                                           <dump> <pass>
/dev/cobd0     /              ext4    defaults,errors=remount-ro,discard,x-systemd.growfs  0      1
# A swap file given as cobd1=swap.img (make it with mkswap /dev/cobd1):
#/dev/cobd1    none           swap    sw                          0      0
# A host folder given as cofs0=C:\\shared or cofs0=/srv/shared:
#cofs0         /mnt/host      cofs    defaults,nofail             0      0
"
    )
}

pub fn network(recipe: &Recipe, iface: &str) -> String {
    let conf = &recipe.network[iface];
    let mut text = format!(
        "# {iface}, made by cargo xtask image. With the daemon's default slirp network\n# DHCP gives 10.0.2.15/24, gateway 10.0.2.2 and DNS 10.0.2.3.\n[Match]\nName={iface}\n\n[Network]\n"
    );
    if conf.dhcp {
        text.push_str("DHCP=ipv4\n");
    }
    if let Some(address) = &conf.address {
        text.push_str(&format!("Address={address}\n"));
    }
    if let Some(gateway) = &conf.gateway {
        text.push_str(&format!("Gateway={gateway}\n"));
    }
    for dns in &conf.dns {
        text.push_str(&format!("DNS={dns}\n"));
    }
    text
}

/// SSH host keys and the machine-id are made on the machine, never shipped:
/// systemd makes the machine-id itself when /etc/machine-id is empty (and
/// commits it once the root is writable); this unit makes the host keys
/// before sshd needs them, and a machine-id if none came. Ed25519 and ECDSA
/// only: a 3072-bit RSA key takes most of a minute under TCG (measured),
/// and every current client speaks Ed25519.
const FIRSTBOOT: &str = "\
[Unit]
Description=coLinux first boot: SSH host keys and machine-id for this machine
ConditionFirstBoot=|yes
ConditionPathExists=|!/etc/ssh/ssh_host_ed25519_key
After=local-fs.target systemd-machine-id-commit.service
# Not before ssh.socket: sockets start before basic.target, which this unit
# follows, and systemd breaks that cycle by dropping a job of its choice
# (on Ubuntu, whose sshd is socket-activated, sometimes this one: no host
# keys). The ssh.service a connection starts still waits for it.
Before=ssh.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'test -s /etc/machine-id || systemd-machine-id-setup'
ExecStart=/bin/sh -c 'for t in ed25519 ecdsa; do k=/etc/ssh/ssh_host_$${t}_key; test -f $$k || ssh-keygen -q -t $$t -N \"\" -f $$k; done'

[Install]
WantedBy=multi-user.target
";

/// /etc/shadow with root's password field replaced: the given hash, else
/// locked ("!" before whatever was there, so "*" becomes "!*").
pub fn shadow_with_root(shadow: &str, hash: Option<&str>) -> Result<String> {
    let mut found = false;
    let lines: Vec<String> = shadow
        .lines()
        .map(|line| {
            let mut fields: Vec<&str> = line.split(':').collect();
            if fields.first() != Some(&"root") || fields.len() < 2 {
                return line.to_string();
            }
            found = true;
            let locked;
            fields[1] = match hash {
                Some(hash) => hash,
                None if fields[1].starts_with('!') => fields[1],
                None => {
                    locked = format!("!{}", fields[1]);
                    &locked
                }
            };
            fields.join(":")
        })
        .collect();
    if !found {
        bail!("the image's /etc/shadow has no root entry");
    }
    Ok(lines.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debian() -> Recipe {
        recipe::load(&crate::stage::root().join("recipes"), "debian").unwrap()
    }

    #[test]
    fn fstab_mounts_cobd0_as_root_and_shows_the_examples() {
        let text = fstab("debian");
        let active: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .collect();
        assert_eq!(active.len(), 1);
        let fields: Vec<&str> = active[0].split_whitespace().collect();
        assert_eq!(
            fields,
            [
                "/dev/cobd0",
                "/",
                "ext4",
                "defaults,errors=remount-ro,discard,x-systemd.growfs",
                "0",
                "1"
            ]
        );
        assert!(text.contains("#/dev/cobd1    none           swap"));
        assert!(text.contains("#cofs0         /mnt/host      cofs"));
    }

    #[test]
    fn network_by_dhcp_or_static() {
        let mut recipe = debian();
        let dhcp = network(&recipe, "eth0");
        assert!(dhcp.contains("[Match]\nName=eth0\n") && dhcp.contains("DHCP=ipv4\n"));
        recipe.network.get_mut("eth0").unwrap().dhcp = false;
        recipe.network.get_mut("eth0").unwrap().address = Some("10.0.2.15/24".into());
        recipe.network.get_mut("eth0").unwrap().gateway = Some("10.0.2.2".into());
        recipe.network.get_mut("eth0").unwrap().dns = vec!["10.0.2.3".into()];
        let fixed = network(&recipe, "eth0");
        assert!(!fixed.contains("DHCP="));
        assert!(fixed.contains("Address=10.0.2.15/24\nGateway=10.0.2.2\nDNS=10.0.2.3\n"));
    }

    #[test]
    fn gettys_and_units() {
        let mut recipe = debian();
        recipe.console.getty = vec!["ttyS0".into(), "hvc0".into(), "tty1".into()];
        assert_eq!(
            units_to_enable(&recipe),
            [
                FIRSTBOOT_UNIT,
                CREDENTIALS_UNIT,
                "systemd-networkd.service",
                "serial-getty@ttyS0.service",
                "serial-getty@hvc0.service",
                "getty@tty1.service"
            ]
        );
        recipe.network.clear();
        assert!(!units_to_enable(&recipe).contains(&"systemd-networkd.service".to_string()));
    }

    #[test]
    fn apt_sources_are_deb822_with_the_archive_key() {
        let text = apt_sources("debian", &debian(), "http://m/debian");
        let stanzas: Vec<&str> = text.split("\n\n").skip(1).collect();
        assert_eq!(
            stanzas,
            [
                "Types: deb\nURIs: http://m/debian\nSuites: trixie trixie-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg",
                "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: trixie-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
            ]
        );
    }

    #[test]
    fn files_cover_the_recipe() {
        let paths: Vec<String> = files("debian", &debian(), "http://m/debian")
            .into_iter()
            .map(|f| f.path)
            .collect();
        for want in [
            "etc/apt/sources.list.d/debian.sources",
            "etc/hostname",
            "etc/hosts",
            "etc/fstab",
            "etc/systemd/network/20-eth0.network",
            "etc/systemd/system/colinux-firstboot.service",
        ] {
            assert!(paths.iter().any(|p| p == want), "{want} in {paths:?}");
        }
    }

    #[test]
    fn root_is_locked_unless_a_hash_is_given() {
        let shadow = "root:*:20413:0:99999:7:::\ndaemon:*:20413:0:99999:7:::\n";
        let locked = shadow_with_root(shadow, None).unwrap();
        assert_eq!(
            locked,
            "root:!*:20413:0:99999:7:::\ndaemon:*:20413:0:99999:7:::\n"
        );
        assert_eq!(
            shadow_with_root(&locked, None).unwrap(),
            locked,
            "idempotent"
        );
        let set = shadow_with_root(shadow, Some("$6$salt$hash")).unwrap();
        assert!(set.starts_with("root:$6$salt$hash:20413:"));
        assert!(shadow_with_root("daemon:*:1::::::\n", None).is_err());
    }
}
