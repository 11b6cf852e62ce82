//! `ethN=` network interfaces: slirp with port redirects, tuntap, and the
//! two bridge modes, each with an optional MAC address.

use std::fmt;
use std::str::FromStr;

use crate::error::{ErrorKind, Origin};

/// A unicast Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = ErrorKind;

    /// Six hex pairs separated by `:` or `-` (one kind throughout).
    /// Multicast and all-zero addresses are refused: a NIC with one of
    /// those gets no traffic, and the old coLinux let them through.
    fn from_str(text: &str) -> Result<Self, ErrorKind> {
        let bad = |reason: &str| ErrorKind::BadMac {
            mac: text.to_string(),
            reason: reason.to_string(),
        };
        let separator = if text.contains(':') { ':' } else { '-' };
        let parts: Vec<&str> = text.split(separator).collect();
        if parts.len() != 6 || parts.iter().any(|p| p.contains([':', '-'])) {
            return Err(bad(
                "expected six hex pairs separated by `:` or `-`, like 02:00:00:12:34:56",
            ));
        }
        let mut bytes = [0u8; 6];
        for (byte, part) in bytes.iter_mut().zip(&parts) {
            if part.len() != 2 || !part.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad(&format!(
                    "{part:?} is not a hex pair; expected six like 02:00:00:12:34:56"
                )));
            }
            *byte = u8::from_str_radix(part, 16)
                .map_err(|_| bad("expected six hex pairs like 02:00:00:12:34:56"))?;
        }
        if bytes[0] & 1 == 1 {
            return Err(bad(&format!(
                "the multicast bit is set (the first octet, {:02x}, is odd); \
                 a network card needs a unicast address, e.g. {:02x}{}",
                bytes[0],
                bytes[0] & !1,
                &text[2..]
            )));
        }
        if bytes == [0; 6] {
            return Err(bad("the all-zero address is not a valid card address"));
        }
        Ok(MacAddr(bytes))
    }
}

/// One `ethN=` interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Net {
    pub kind: NetKind,
    /// `None` when the MAC field is absent or empty: the daemon generates one.
    pub mac: Option<MacAddr>,
    pub origin: Origin,
}

/// The host side of an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetKind {
    /// User-mode NAT (QEMU `-netdev user`), with host ports forwarded into the guest.
    Slirp { redirects: Vec<PortRedirect> },
    /// A tap device; `None` lets the daemon pick or create one.
    Tuntap { name: Option<String> },
    /// Bridged onto a host adapter, named as the host calls it.
    Bridge {
        backend: BridgeBackend,
        name: Option<String>,
        promisc: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeBackend {
    /// `pcap-bridge`: WinPcap/libpcap.
    Pcap,
    /// `ndis-bridge`: the coLinux NDIS driver.
    Ndis,
}

impl BridgeBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            BridgeBackend::Pcap => "pcap-bridge",
            BridgeBackend::Ndis => "ndis-bridge",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// `tcp:hostport:guestport[:count]`: `count` consecutive ports from each start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRedirect {
    pub protocol: Protocol,
    pub host_port: u16,
    pub guest_port: u16,
    pub count: u16,
}

impl PortRedirect {
    /// The host ports taken, inclusive.
    pub fn host_ports(&self) -> (u32, u32) {
        let first = u32::from(self.host_port);
        (first, first + u32::from(self.count) - 1)
    }
}

impl fmt::Display for PortRedirect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.protocol.as_str(),
            self.host_port,
            self.guest_port
        )?;
        if self.count != 1 {
            write!(f, ":{}", self.count)?;
        }
        Ok(())
    }
}

const SLIRP_FORM: &str = "slirp[,MAC[,tcp|udp:hostport:guestport[:count][/…]]]";
const TUNTAP_FORM: &str = "tuntap[,\"name\"[,MAC]]";
const BRIDGE_FORM: &str = "pcap-bridge|ndis-bridge[,\"name\"[,MAC[,promisc|nopromisc]]]";

/// Parses the fields of an `ethN=` value (already split at commas and unquoted).
pub(crate) fn parse_net(fields: &[String]) -> Result<(NetKind, Option<MacAddr>), ErrorKind> {
    let mode = fields.first().map(String::as_str).unwrap_or_default();
    let field = |i: usize| fields.get(i).map(|f| f.trim()).filter(|f| !f.is_empty());
    let mac = |i: usize| field(i).map(str::parse::<MacAddr>).transpose();
    let at_most = |n: usize, form| {
        if fields.len() > n {
            Err(ErrorKind::TooManyFields { form })
        } else {
            Ok(())
        }
    };

    match mode.trim().to_ascii_lowercase().as_str() {
        "slirp" => {
            at_most(3, SLIRP_FORM)?;
            let redirects = match field(2) {
                Some(text) => parse_redirects(text)?,
                None => Vec::new(),
            };
            Ok((NetKind::Slirp { redirects }, mac(1)?))
        }
        "tuntap" => {
            at_most(3, TUNTAP_FORM)?;
            let name = field(1).map(str::to_string);
            Ok((NetKind::Tuntap { name }, mac(2)?))
        }
        bridge @ ("pcap-bridge" | "ndis-bridge") => {
            at_most(4, BRIDGE_FORM)?;
            let backend = if bridge == "pcap-bridge" {
                BridgeBackend::Pcap
            } else {
                BridgeBackend::Ndis
            };
            let promisc = match field(3).map(str::to_ascii_lowercase).as_deref() {
                None | Some("promisc") => true,
                Some("nopromisc") => false,
                Some(_) => {
                    return Err(ErrorKind::BadValue {
                        what: "bridge mode",
                        value: fields[3].clone(),
                        expected: "promisc or nopromisc".into(),
                    })
                }
            };
            let name = field(1).map(str::to_string);
            Ok((
                NetKind::Bridge {
                    backend,
                    name,
                    promisc,
                },
                mac(2)?,
            ))
        }
        _ => Err(ErrorKind::BadValue {
            what: "network mode",
            value: mode.to_string(),
            expected: "slirp, tuntap, pcap-bridge or ndis-bridge".into(),
        }),
    }
}

/// `tcp:2222:22/udp:5000:5000:10`.
fn parse_redirects(text: &str) -> Result<Vec<PortRedirect>, ErrorKind> {
    text.split('/').map(parse_redirect).collect()
}

fn parse_redirect(text: &str) -> Result<PortRedirect, ErrorKind> {
    let bad = |expected: &str| ErrorKind::BadValue {
        what: "port redirect",
        value: text.to_string(),
        expected: expected.to_string(),
    };
    let form = "tcp|udp:hostport:guestport[:count], several separated by `/`";
    let parts: Vec<&str> = text.trim().split(':').collect();
    if !(3..=4).contains(&parts.len()) {
        return Err(bad(form));
    }
    let protocol = match parts[0].to_ascii_lowercase().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return Err(bad(&format!("tcp or udp first; the form is {form}"))),
    };
    let port = |part: &str| match part.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(bad(&format!("{part:?} to be a port, 1 to 65535"))),
    };
    let host_port = port(parts[1])?;
    let guest_port = port(parts[2])?;
    let count = match parts.get(3) {
        Some(part) => match part.parse::<u16>() {
            Ok(count) if count > 0 => count,
            _ => return Err(bad(&format!("{part:?} to be a port count, 1 or more"))),
        },
        None => 1,
    };
    let last = u32::from(host_port.max(guest_port)) + u32::from(count) - 1;
    if last > 65535 {
        return Err(bad(&format!(
            "the {count} ports to end at 65535 or below, not {last}"
        )));
    }
    Ok(PortRedirect {
        protocol,
        host_port,
        guest_port,
        count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(text: &str) -> Vec<String> {
        crate::lexer::split_fields(text)
    }

    fn mac(text: &str) -> MacAddr {
        text.parse().expect("valid MAC")
    }

    #[test]
    fn macs_take_colons_or_dashes() {
        assert_eq!(
            mac("00:11:22:aa:BB:cc").0,
            [0, 0x11, 0x22, 0xaa, 0xbb, 0xcc]
        );
        assert_eq!(mac("02-11-22-33-44-55").to_string(), "02:11:22:33:44:55");
    }

    #[test]
    fn bad_macs_say_why() {
        let message = |text: &str| {
            text.parse::<MacAddr>()
                .expect_err("invalid MAC")
                .to_string()
        };
        assert!(message("zz:11").contains("bad MAC address \"zz:11\": expected six hex pairs"));
        assert!(message("00:11:22:33:44:5g").contains("\"5g\" is not a hex pair"));
        assert!(message("0:11:22:33:44:55").contains("\"0\" is not a hex pair"));
        assert!(message("00:11-22:33:44:55").contains("expected six hex pairs"));
        assert!(message("00:11:22:33:44:55:66").contains("expected six hex pairs"));
        assert_eq!(
            message("01:00:5e:00:00:01"),
            "bad MAC address \"01:00:5e:00:00:01\": the multicast bit is set (the first \
             octet, 01, is odd); a network card needs a unicast address, e.g. 00:00:5e:00:00:01"
        );
        assert!(message("00:00:00:00:00:00").contains("all-zero"));
    }

    #[test]
    fn slirp_with_redirects() {
        let (kind, mac) = parse_net(&fields("slirp,,tcp:2222:22/udp:5000:6000:10")).expect("ok");
        assert_eq!(mac, None);
        assert_eq!(
            kind,
            NetKind::Slirp {
                redirects: vec![
                    PortRedirect {
                        protocol: Protocol::Tcp,
                        host_port: 2222,
                        guest_port: 22,
                        count: 1
                    },
                    PortRedirect {
                        protocol: Protocol::Udp,
                        host_port: 5000,
                        guest_port: 6000,
                        count: 10
                    },
                ]
            }
        );
        let (kind, mac) = parse_net(&fields("slirp,02:00:00:00:00:01")).expect("ok");
        assert_eq!(kind, NetKind::Slirp { redirects: vec![] });
        assert_eq!(mac, Some(MacAddr([2, 0, 0, 0, 0, 1])));
    }

    #[test]
    fn tuntap_and_bridges() {
        assert_eq!(
            parse_net(&fields(r#"tuntap,"my tap",00:11:22:33:44:55"#)).expect("ok"),
            (
                NetKind::Tuntap {
                    name: Some("my tap".into())
                },
                Some(MacAddr([0, 0x11, 0x22, 0x33, 0x44, 0x55]))
            )
        );
        assert_eq!(
            parse_net(&fields("tuntap")).expect("ok"),
            (NetKind::Tuntap { name: None }, None)
        );
        assert_eq!(
            parse_net(&fields(r#"ndis-bridge,"Local Area Connection",,nopromisc"#)).expect("ok"),
            (
                NetKind::Bridge {
                    backend: BridgeBackend::Ndis,
                    name: Some("Local Area Connection".into()),
                    promisc: false
                },
                None
            )
        );
        assert_eq!(
            parse_net(&fields("pcap-bridge,eth1")).expect("ok").0,
            NetKind::Bridge {
                backend: BridgeBackend::Pcap,
                name: Some("eth1".into()),
                promisc: true
            }
        );
    }

    #[test]
    fn bad_net_values_say_what_was_expected() {
        let message = |text: &str| parse_net(&fields(text)).expect_err("invalid").to_string();
        assert!(message("vde").contains("bad network mode \"vde\": expected slirp, tuntap"));
        assert!(message("tuntap,a,,x").contains("too many fields: the form is tuntap"));
        assert!(message("slirp,,tcp:22").contains("bad port redirect \"tcp:22\""));
        assert!(message("slirp,,sctp:1:2").contains("tcp or udp first"));
        assert!(message("slirp,,tcp:0:22").contains("\"0\" to be a port"));
        assert!(message("slirp,,tcp:70000:22").contains("\"70000\" to be a port"));
        assert!(message("slirp,,tcp:65530:22:10").contains("not 65539"));
        assert!(message("slirp,,tcp:1:22:0").contains("port count"));
        assert!(message("slirp,,tcp:1:2/").contains("bad port redirect \"\""));
        assert!(message("pcap-bridge,x,,promiscuous").contains("promisc or nopromisc"));
    }
}
