//! `ethN=pcap-bridge,BRIDGE` on a Linux host: a tap device, made by the
//! daemon and added to the existing host bridge, handed to QEMU as an open
//! file descriptor.
//!
//! The tap is not persistent: it lives while a descriptor to it is open
//! (the daemon's and QEMU's copy). So it goes when the guest ends, also
//! when QEMU dies or the daemon is killed (QEMU then gets SIGTERM from
//! the kernel), and nothing stale can block the next start. The kernel
//! names it (`cotap0`, `cotap1`, …): a guest's name is too long for
//! an interface name, and two guests never race for one.

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

/// The kernel picks the number.
const NAME_TEMPLATE: &[u8] = b"cotap%d";

/// `SIOCBRADDIF` from linux/sockios.h (not in the libc crate).
const SIOCBRADDIF: libc::c_ulong = 0x89a2;

/// What goes wrong, each said as the host's problem.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("the host has no bridge {0}")]
    NoBridge(String),
    #[error("{0} is a network interface but not a bridge")]
    NotABridge(String),
    #[error(
        "making a tap on bridge {bridge} needs CAP_NET_ADMIN: run the daemon as root, \
         or give it the capability (setcap cap_net_admin+ep colinux-daemon)"
    )]
    NoPrivilege { bridge: String },
    #[error("cannot {what} for bridge {bridge}: {source}")]
    Failed {
        what: &'static str,
        bridge: String,
        #[source]
        source: io::Error,
    },
}

/// Checks that `bridge` is a bridge on this host (in the daemon's network
/// namespace), so that a wrong name stops a dry run too.
pub fn check_bridge(bridge: &str) -> Result<(), TapError> {
    let valid = !bridge.is_empty()
        && bridge.len() < libc::IFNAMSIZ
        && !bridge.contains(['/', '\0'])
        && bridge != "."
        && bridge != "..";
    let dir = Path::new("/sys/class/net").join(bridge);
    if !valid || !dir.exists() {
        return Err(TapError::NoBridge(bridge.to_string()));
    }
    if !dir.join("bridge").is_dir() {
        return Err(TapError::NotABridge(bridge.to_string()));
    }
    Ok(())
}

/// A tap on a bridge, up; gone when the last descriptor to it closes.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Makes a tap, adds it to `bridge` and brings it up.
    pub fn on_bridge(bridge: &str) -> Result<Tap, TapError> {
        check_bridge(bridge)?;
        let failed = |what, source: io::Error| {
            if source.raw_os_error() == Some(libc::EPERM) {
                TapError::NoPrivilege {
                    bridge: bridge.to_string(),
                }
            } else {
                TapError::Failed {
                    what,
                    bridge: bridge.to_string(),
                    source,
                }
            }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .map_err(|e| failed("open /dev/net/tun", e))?;
        let mut req = ifreq(NAME_TEMPLATE);
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which lives on our stack.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
            return Err(failed("make a tap", io::Error::last_os_error()));
        }
        // SAFETY: the kernel wrote a NUL-terminated name into ifr_name.
        let name = unsafe { CStr::from_ptr(req.ifr_name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        let tap = Tap { file, name };

        let socket = Socket::new().map_err(|e| failed("open a socket", e))?;
        let index = tap.index().map_err(|e| failed("find the tap", e))?;
        let mut req = ifreq(bridge.as_bytes());
        req.ifr_ifru.ifru_ifindex = index;
        socket
            .ioctl(SIOCBRADDIF, &mut req)
            .map_err(|e| failed("add the tap to the bridge", e))?;
        let mut req = ifreq(tap.name.as_bytes());
        socket
            .ioctl(libc::SIOCGIFFLAGS, &mut req)
            .map_err(|e| failed("read the tap's flags", e))?;
        // SAFETY: SIOCGIFFLAGS filled in the flags member.
        unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        socket
            .ioctl(libc::SIOCSIFFLAGS, &mut req)
            .map_err(|e| failed("bring the tap up", e))?;
        Ok(tap)
    }

    /// The interface name the kernel gave it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The descriptor QEMU inherits (`-netdev tap,fd=N`).
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn index(&self) -> io::Result<libc::c_int> {
        let name = std::ffi::CString::new(self.name.as_str())?;
        // SAFETY: a valid C string.
        match unsafe { libc::if_nametoindex(name.as_ptr()) } {
            0 => Err(io::Error::last_os_error()),
            index => Ok(index as libc::c_int),
        }
    }
}

/// An ifreq with `name` (truncated to fit, NUL-terminated) and zeros.
fn ifreq(name: &[u8]) -> libc::ifreq {
    // SAFETY: ifreq is plain data; all zeros is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, &byte) in req
        .ifr_name
        .iter_mut()
        .zip(name.iter().take(libc::IFNAMSIZ - 1))
    {
        *slot = byte as libc::c_char;
    }
    req
}

/// A socket for interface ioctls.
struct Socket(File);

impl Socket {
    fn new() -> io::Result<Socket> {
        // SAFETY: socket has no memory effects; the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        Ok(Socket(unsafe {
            <File as std::os::fd::FromRawFd>::from_raw_fd(fd)
        }))
    }

    fn ioctl(&self, request: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
        // SAFETY: the interface ioctls read and write one ifreq.
        if unsafe { libc::ioctl(self.0.as_raw_fd(), request as _, req as *mut libc::ifreq) } < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_odd_bridge_name_is_no_bridge() {
        for name in [
            "no-such-bridge0",
            "",
            "../lo",
            "a-name-far-too-long-for-linux",
        ] {
            let err = check_bridge(name).unwrap_err().to_string();
            assert_eq!(err, format!("the host has no bridge {name}"));
        }
        // Every Linux host has lo, which is no bridge.
        assert_eq!(
            check_bridge("lo").unwrap_err().to_string(),
            "lo is a network interface but not a bridge"
        );
    }
}
