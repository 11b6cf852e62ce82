//! A coMosix cluster guest (docs/design.md §12): its role, hostname, the head's
//! address, the cluster network and the key files its seed disk carries.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::settings::Located;

/// The longest hostname label (RFC 1123).
pub const MAX_HOSTNAME: usize = 63;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterRole {
    /// Serves the node root over NFS, DHCP, and runs the Slurm controller.
    Head,
    /// Boots from the head's NFS root and joins its Slurm cluster.
    Node,
}

impl ClusterRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterRole::Head => "head",
            ClusterRole::Node => "node",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<ClusterRole> {
        match text.to_ascii_lowercase().as_str() {
            "head" => Some(ClusterRole::Head),
            "node" => Some(ClusterRole::Node),
            _ => None,
        }
    }
}

/// An IPv4 network, `10.77.0.0/24`: its address has no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// Shortest and longest prefix a cluster network may have: a /31 or /32
/// has no room for a head and nodes, and below /8 is no LAN.
pub const MIN_PREFIX: u8 = 8;
pub const MAX_PREFIX: u8 = 30;

impl Ipv4Net {
    fn mask(prefix: u8) -> u32 {
        u32::MAX << (32 - u32::from(prefix))
    }

    /// The /24 around `addr`, the default cluster network.
    pub fn around(addr: Ipv4Addr) -> Ipv4Net {
        Ipv4Net {
            addr: Ipv4Addr::from(u32::from(addr) & Ipv4Net::mask(24)),
            prefix: 24,
        }
    }

    /// `A.B.C.D/N`, N from [`MIN_PREFIX`] to [`MAX_PREFIX`], host bits zero.
    pub(crate) fn parse(text: &str) -> Option<Ipv4Net> {
        let (addr, prefix) = text.split_once('/')?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        if !(MIN_PREFIX..=MAX_PREFIX).contains(&prefix)
            || u32::from(addr) & !Ipv4Net::mask(prefix) != 0
        {
            return None;
        }
        Some(Ipv4Net { addr, prefix })
    }

    /// Whether `addr` is a host of this network (not its network or
    /// broadcast address).
    pub fn has_host(&self, addr: Ipv4Addr) -> bool {
        let mask = Ipv4Net::mask(self.prefix);
        let addr = u32::from(addr);
        addr & mask == u32::from(self.addr)
            && addr != u32::from(self.addr)
            && addr | mask != u32::MAX
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Everything a cluster guest needs, resolved: the seed disk is made from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub role: Located<ClusterRole>,
    /// Final and valid: lower case, an RFC 1123 label.
    pub hostname: Located<String>,
    pub head: Located<Ipv4Addr>,
    /// `None`: the head's /24 (see [`Cluster::network`]).
    pub network: Option<Located<Ipv4Net>>,
    pub munge_key: Located<PathBuf>,
    /// The private key; its public half is beside it (see [`Cluster::ssh_host_key_pub`]).
    pub ssh_host_key: Located<PathBuf>,
    /// root's `authorized_keys`, if given.
    pub root_key: Option<Located<PathBuf>>,
}

impl Cluster {
    pub fn network(&self) -> Ipv4Net {
        self.network
            .as_ref()
            .map_or_else(|| Ipv4Net::around(self.head.value), |n| n.value)
    }

    /// `KEY.pub` beside the private key `KEY`.
    pub fn ssh_host_key_pub(&self) -> PathBuf {
        let mut name = self.ssh_host_key.value.as_os_str().to_owned();
        name.push(".pub");
        PathBuf::from(name)
    }
}

/// Whether `name` is a hostname label: 1 to 63 lower-case letters, digits
/// and `-`, not starting or ending with `-` (RFC 1123).
pub fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_HOSTNAME
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

pub(crate) const HOSTNAME_EXPECTED: &str =
    "1 to 63 letters, digits or '-', not starting or ending with '-' (RFC 1123)";

/// This machine's name, as coMosix took it for the node's hostname: the
/// Windows computer name, or the Linux hostname up to its first dot.
pub fn machine_name() -> Option<String> {
    #[cfg(windows)]
    let name = std::env::var("COMPUTERNAME").ok();
    #[cfg(not(windows))]
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok();
    let name = name?;
    let name = name.trim().split('.').next().unwrap_or("").to_string();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let net = Ipv4Net::parse("10.77.0.0/24").unwrap();
        assert_eq!(net.to_string(), "10.77.0.0/24");
        assert!(net.has_host("10.77.0.1".parse().unwrap()));
        assert!(!net.has_host("10.77.0.0".parse().unwrap()));
        assert!(!net.has_host("10.77.0.255".parse().unwrap()));
        assert!(!net.has_host("10.77.1.1".parse().unwrap()));
        for bad in [
            "10.77.0.1/24",
            "10.77.0.0",
            "10.77.0.0/31",
            "10.0.0.0/7",
            "x/24",
        ] {
            assert_eq!(Ipv4Net::parse(bad), None, "{bad}");
        }
        assert_eq!(
            Ipv4Net::around("10.77.0.1".parse().unwrap()).to_string(),
            "10.77.0.0/24"
        );
    }

    #[test]
    fn hostnames() {
        assert!(is_hostname("node-pc17"));
        assert!(is_hostname(&"a".repeat(63)));
        for bad in ["", "-a", "a-", "Node", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_hostname(bad), "{bad}");
        }
    }
}
