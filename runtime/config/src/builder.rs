//! Collects values from every source (command line, config files, ini
//! files) into one [`Settings`], applying the rules the old coLinux got
//! wrong: the last single value wins, a device index defined twice is an
//! error naming both places, and the kernel command line is never cut.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::cluster::{Cluster, ClusterRole, Ipv4Net};
use crate::error::{Error, ErrorKind, Origin, MAX_KERNEL_CMDLINE};
use crate::net::{MacAddr, Net, NetKind};
use crate::settings::{
    Accel, Alias, Arch, Cocon, Color, Disk, Exec, GuestRequest, Ignored, Located, NfsRoot, Scsi,
    ScsiKind, Serial, SerialOptions, Settings, Share, MAX_COBD,
};
use crate::CmdlineTooLong;

/// One parsed `name=value`, from either parser.
#[derive(Debug)]
pub(crate) enum Value {
    Kernel(PathBuf),
    Initrd(PathBuf),
    Mem(u32),
    Smp(u8),
    Arch(Arch),
    Accel(Accel),
    Qemu(PathBuf),
    Cocon(Cocon),
    Color(Color),
    Cursor(u8),
    Cobd(u8, PathBuf),
    Scsi {
        index: u8,
        kind: ScsiKind,
        path: PathBuf,
        size_mb: Option<u32>,
        grow: bool,
    },
    /// A key kept for old configs that drives nothing here, and why.
    Ignored(&'static str),
    Alias(String, AliasTarget),
    Eth(u8, NetKind, Option<MacAddr>),
    Cofs(u8, PathBuf),
    Ttys(u8, String, SerialOptions),
    Exec(u8, PathBuf, Option<String>),
    Nfs(NfsRoot),
    /// An ini file's `[service]` request, for the installer.
    Service(String),
    /// An ini file's `[guest]`, likewise.
    Guest(GuestRequest),
    /// A token for the guest kernel, as it goes on its command line.
    KernelArg(String),
    Cluster(ClusterValue),
    RootKey(PathBuf),
    RootPasswordHash(String),
}

/// One cluster setting (`cluster=`, `cluster_head=`…, or the ini's `[cluster]`).
#[derive(Debug)]
pub(crate) enum ClusterValue {
    Role(ClusterRole),
    Hostname(String),
    Head(std::net::Ipv4Addr),
    Network(Ipv4Net),
    MungeKey(PathBuf),
    SshHostKey(PathBuf),
    RootKey(PathBuf),
}

/// The cluster settings seen so far; each single-valued, the last wins.
#[derive(Debug, Default)]
struct ClusterParts {
    role: Option<Located<ClusterRole>>,
    hostname: Option<Located<String>>,
    head: Option<Located<std::net::Ipv4Addr>>,
    network: Option<Located<Ipv4Net>>,
    munge_key: Option<Located<PathBuf>>,
    ssh_host_key: Option<Located<PathBuf>>,
    root_key: Option<Located<PathBuf>>,
}

/// What `hdXN=` names.
#[derive(Debug)]
pub(crate) enum AliasTarget {
    /// A file, which gets the lowest free cobd index.
    File(PathBuf),
    /// `:cobdN`, which must be defined somewhere.
    Cobd(u8),
}

#[derive(Debug, Default)]
pub(crate) struct Builder {
    settings: Settings,
    /// Aliases wait for `finish`, so that `hda1=file` takes an index that no
    /// explicit `cobdN` uses, wherever that `cobdN` is written.
    aliases: Vec<(String, AliasTarget, Origin)>,
    alias_origins: BTreeMap<String, Origin>,
    /// Bytes of the pass-through tokens joined by spaces.
    kernel_args_len: usize,
    cluster: ClusterParts,
}

impl Builder {
    pub fn add(&mut self, value: Value, origin: Origin) -> Result<(), Error> {
        let s = &mut self.settings;
        fn at<T>(value: T, origin: &Origin) -> Option<Located<T>> {
            Some(Located {
                value,
                origin: origin.clone(),
            })
        }
        match value {
            // Single values: the last one wins, as the coLinux docs promised.
            Value::Kernel(path) => s.kernel = at(path, &origin),
            Value::Initrd(path) => s.initrd = at(path, &origin),
            Value::Mem(mb) => s.mem_mb = at(mb, &origin),
            Value::Smp(cpus) => s.smp = at(cpus, &origin),
            Value::Arch(arch) => s.arch = at(arch, &origin),
            Value::Accel(accel) => s.accel = at(accel, &origin),
            Value::Qemu(path) => s.qemu = at(path, &origin),
            Value::Cocon(cocon) => s.cocon = at(cocon, &origin),
            Value::Color(color) => s.color = at(color, &origin),
            Value::Cursor(percent) => s.cursor = at(percent, &origin),
            Value::Ignored(reason) => s.ignored.push(Ignored { reason, origin }),
            Value::Nfs(nfs) => s.nfs_root = at(nfs, &origin),
            Value::Service(name) => s.service = at(name, &origin),
            Value::Guest(request) => s.guest = at(request, &origin),
            Value::RootKey(path) => s.root_key = at(path, &origin),
            Value::RootPasswordHash(hash) => s.root_password_hash = at(hash, &origin),
            Value::Cluster(value) => {
                let c = &mut self.cluster;
                match value {
                    ClusterValue::Role(role) => c.role = at(role, &origin),
                    ClusterValue::Hostname(name) => c.hostname = at(name, &origin),
                    ClusterValue::Head(addr) => c.head = at(addr, &origin),
                    ClusterValue::Network(net) => c.network = at(net, &origin),
                    ClusterValue::MungeKey(path) => c.munge_key = at(path, &origin),
                    ClusterValue::SshHostKey(path) => c.ssh_host_key = at(path, &origin),
                    ClusterValue::RootKey(path) => c.root_key = at(path, &origin),
                }
            }
            // Devices: one definition per index.
            Value::Cobd(index, path) => {
                insert_once(&mut s.cobd, "cobd", index, Disk { path, origin })?
            }
            Value::Scsi {
                index,
                kind,
                path,
                size_mb,
                grow,
            } => insert_once(
                &mut s.scsi,
                "scsi",
                index,
                Scsi {
                    kind,
                    path,
                    size_mb,
                    grow,
                    origin,
                },
            )?,
            Value::Cofs(index, dir) => {
                insert_once(&mut s.cofs, "cofs", index, Share { dir, origin })?
            }
            Value::Ttys(index, device, options) => insert_once(
                &mut s.ttys,
                "ttys",
                index,
                Serial {
                    device,
                    options,
                    origin,
                },
            )?,
            Value::Exec(index, program, args) => insert_once(
                &mut s.exec,
                "exec",
                index,
                Exec {
                    program,
                    args,
                    origin,
                },
            )?,
            Value::Eth(index, kind, mac) => {
                let net = Net { kind, mac, origin };
                check_port_overlap(&s.eth, &net)?;
                insert_once(&mut s.eth, "eth", index, net)?;
            }
            Value::Alias(name, target) => {
                if let Some(first) = self.alias_origins.get(&name) {
                    return Err(Error::new(
                        origin,
                        ErrorKind::Duplicate {
                            name,
                            first: first.clone(),
                        },
                    ));
                }
                self.alias_origins.insert(name.clone(), origin.clone());
                self.aliases.push((name, target, origin));
            }
            Value::KernelArg(arg) => {
                // Refuse at the token that crosses the limit, so the error
                // says which file and line made the command line too long.
                let separator = usize::from(!s.kernel_args.is_empty());
                let len = self.kernel_args_len + separator + arg.len();
                if len > MAX_KERNEL_CMDLINE {
                    return Err(Error::new(origin, CmdlineTooLong { len }.into()));
                }
                self.kernel_args_len = len;
                s.kernel_args.push(arg);
            }
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<Settings, Error> {
        let s = &mut self.settings;
        // Files first, so that `:cobdN` may name a disk another alias brought.
        let (files, names): (Vec<_>, Vec<_>) = self
            .aliases
            .into_iter()
            .partition(|(_, target, _)| matches!(target, AliasTarget::File(_)));
        for (name, target, origin) in files.into_iter().chain(names) {
            let cobd = match target {
                AliasTarget::Cobd(cobd) if s.cobd.contains_key(&cobd) => cobd,
                AliasTarget::Cobd(cobd) => {
                    return Err(Error::new(
                        origin,
                        ErrorKind::AliasTargetUndefined { alias: name, cobd },
                    ))
                }
                AliasTarget::File(path) => {
                    let Some(free) = (0..=MAX_COBD).find(|i| !s.cobd.contains_key(i)) else {
                        return Err(Error::new(origin, ErrorKind::NoFreeCobd { alias: name }));
                    };
                    let disk = Disk {
                        path,
                        origin: origin.clone(),
                    };
                    s.cobd.insert(free, disk);
                    free
                }
            };
            s.aliases.insert(name, Alias { cobd, origin });
        }

        // Checked at the end because arch= may come after mem=.
        let arch = s.arch();
        if let Some(mem) = &s.mem_mb {
            if mem.value > arch.max_mem_mb() {
                return Err(Error::new(
                    mem.origin.clone(),
                    ErrorKind::BadValue {
                        what: "memory size",
                        value: mem.value.to_string(),
                        expected: format!(
                            "at most {} MB for an {} guest{}",
                            arch.max_mem_mb(),
                            arch.as_str(),
                            if arch == Arch::I386 {
                                " (64 GB with PAE); use arch=x86_64 for more"
                            } else {
                                ""
                            }
                        ),
                    },
                ));
            }
        }

        s.cluster = self.cluster.finish()?;

        if let Some(nfs) = &s.nfs_root {
            // The NFS root adds its own parameters to the pass-through ones.
            if let Err(too_long) = s.kernel_cmdline(&[]) {
                return Err(Error::new(nfs.origin.clone(), too_long.into()));
            }
        }
        Ok(self.settings)
    }
}

impl ClusterParts {
    /// No cluster setting at all is no cluster; otherwise the role defaults
    /// to node and the network to the head's /24, and the rest must be
    /// there. A missing one is reported where the cluster was first named.
    fn finish(self) -> Result<Option<Cluster>, Error> {
        let first = [
            self.role.as_ref().map(|l| &l.origin),
            self.hostname.as_ref().map(|l| &l.origin),
            self.head.as_ref().map(|l| &l.origin),
            self.network.as_ref().map(|l| &l.origin),
            self.munge_key.as_ref().map(|l| &l.origin),
            self.ssh_host_key.as_ref().map(|l| &l.origin),
            self.root_key.as_ref().map(|l| &l.origin),
        ]
        .into_iter()
        .flatten()
        .min_by(|a, b| a.place.cmp(&b.place))
        .cloned();
        let Some(first) = first else {
            return Ok(None);
        };
        let missing = |key: &'static str| {
            Error::new(first.clone(), ErrorKind::ClusterIncomplete { missing: key })
        };
        let role = self.role.unwrap_or_else(|| Located {
            value: ClusterRole::Node,
            origin: first.clone(),
        });
        let hostname = self.hostname.ok_or_else(|| missing("cluster_hostname="))?;
        let head = self.head.ok_or_else(|| missing("cluster_head="))?;
        let munge_key = self
            .munge_key
            .ok_or_else(|| missing("cluster_munge_key="))?;
        let ssh_host_key = self
            .ssh_host_key
            .ok_or_else(|| missing("cluster_ssh_host_key="))?;
        let network = self
            .network
            .as_ref()
            .map_or_else(|| Ipv4Net::around(head.value), |n| n.value);
        if !network.has_host(head.value) {
            let origin = self.network.as_ref().map_or(&head.origin, |n| &n.origin);
            return Err(Error::new(
                origin.clone(),
                ErrorKind::BadValue {
                    what: "cluster head",
                    value: head.value.to_string(),
                    expected: format!("a host address in the cluster network {network}"),
                },
            ));
        }
        Ok(Some(Cluster {
            role,
            hostname,
            head,
            network: self.network,
            munge_key,
            ssh_host_key,
            root_key: self.root_key,
        }))
    }
}

/// The origin of a device, for the duplicate-index message.
trait Defined {
    fn origin(&self) -> &Origin;
}

macro_rules! defined {
    ($($t:ty),*) => {$(
        impl Defined for $t {
            fn origin(&self) -> &Origin {
                &self.origin
            }
        }
    )*};
}
defined!(Disk, Scsi, Share, Serial, Exec, Net);

fn insert_once<T: Defined>(
    map: &mut BTreeMap<u8, T>,
    family: &str,
    index: u8,
    item: T,
) -> Result<(), Error> {
    if let Some(first) = map.get(&index) {
        return Err(Error::new(
            item.origin().clone(),
            ErrorKind::Duplicate {
                name: format!("{family}{index}"),
                first: first.origin().clone(),
            },
        ));
    }
    map.insert(index, item);
    Ok(())
}

/// Two slirp redirects of one host port cannot both bind it.
fn check_port_overlap(existing: &BTreeMap<u8, Net>, new: &Net) -> Result<(), Error> {
    let NetKind::Slirp { redirects } = &new.kind else {
        return Ok(());
    };
    let earlier = existing
        .values()
        .filter_map(|net| match &net.kind {
            NetKind::Slirp { redirects } => Some(redirects.iter().map(move |r| (r, &net.origin))),
            _ => None,
        })
        .flatten();
    let mut seen: Vec<_> = earlier.collect();
    for redirect in redirects {
        let (start, end) = redirect.host_ports();
        for (other, first) in &seen {
            let (other_start, other_end) = other.host_ports();
            if other.protocol == redirect.protocol && start <= other_end && other_start <= end {
                return Err(Error::new(
                    new.origin.clone(),
                    ErrorKind::PortOverlap {
                        protocol: redirect.protocol.as_str(),
                        port: start.max(other_start),
                        first: (*first).clone(),
                    },
                ));
            }
        }
        seen.push((redirect, &new.origin));
    }
    Ok(())
}
