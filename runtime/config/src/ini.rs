//! coMosix ini files: the file its installer read beside it.
//!
//! ```ini
//! ; a coMosix node
//! [comosix]
//! memory_size = 256
//! [NFS]
//! server = 192.168.0.1
//! path = /srv/comosix
//! options = ro,nolock
//! [cobd]
//! path_0 = root.img
//! path_1 = swap.img
//! [engine]
//! qemu = C:\Program Files\qemu\qemu-system-x86_64.exe
//! [service]
//! install = yes
//! name = node
//! [guest]
//! size = 20G
//! ```
//!
//! `[guest]` is the Windows installer's: the guest it creates from the
//! shipped image (or `image`), unless the ini names its own disks or root.
//!
//! Section and key names are case-insensitive, as Windows ini files are.
//! Comments are whole lines starting with `;` or `#`, so a value may hold
//! either character. A value may be wrapped in double quotes.

use std::collections::BTreeMap;
use std::path::Path;

use crate::builder::{Builder, ClusterValue, Value};
use crate::cluster::{is_hostname, machine_name, MAX_HOSTNAME};
use crate::colinux::{host_path, parse_head, parse_mem, parse_network, parse_role, program_path};
use crate::error::{Error, ErrorKind, Origin, Place};
use crate::settings::{GuestRequest, NfsRoot};

/// coMosix read `path_0` to `path_9`.
const MAX_INI_COBD: u8 = 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Comosix,
    Nfs,
    Cobd,
    Engine,
    Service,
    Cluster,
    Credentials,
    Guest,
}

/// The service a guest gets when `[service]` has no `name`.
const DEFAULT_SERVICE_NAME: &str = "colinux";

/// The `[NFS]` keys seen so far, and where the section started.
#[derive(Default)]
struct NfsKeys {
    header: Option<Origin>,
    server: Option<String>,
    path: Option<String>,
    options: Option<String>,
}

/// Parses ini `text` (shown as `display` in messages; relative paths
/// resolve against `dir`) into `builder`.
pub(crate) fn parse(
    text: &str,
    display: &Path,
    dir: &Path,
    builder: &mut Builder,
) -> Result<(), Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut section = None;
    let mut nfs = NfsKeys::default();
    let mut disks: BTreeMap<u8, (String, Origin)> = BTreeMap::new();
    let mut service = ServiceKeys::default();
    let mut cluster = ClusterKeys::default();
    let mut guest: Option<(GuestRequest, Origin)> = None;

    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with([';', '#']) {
            continue;
        }
        let place = Place::Line {
            file: display.to_path_buf(),
            line: number + 1,
        };
        let origin = Origin::new(place, line);
        let fail = |kind| Err(Error::new(origin.clone(), kind));

        if let Some(header) = line.strip_prefix('[') {
            let Some(name) = header.strip_suffix(']') else {
                return fail(ErrorKind::IniSyntax);
            };
            let name = name.trim();
            section = Some(match name.to_ascii_lowercase().as_str() {
                "comosix" => Section::Comosix,
                "nfs" => {
                    nfs.header.get_or_insert_with(|| origin.clone());
                    Section::Nfs
                }
                "cobd" => Section::Cobd,
                "engine" => Section::Engine,
                "service" => {
                    service.header.get_or_insert_with(|| origin.clone());
                    Section::Service
                }
                "cluster" => {
                    cluster.header.get_or_insert_with(|| origin.clone());
                    Section::Cluster
                }
                "credentials" => Section::Credentials,
                "guest" => {
                    guest.get_or_insert_with(|| (GuestRequest::default(), origin.clone()));
                    Section::Guest
                }
                _ => {
                    return fail(ErrorKind::IniUnknownSection {
                        name: name.to_string(),
                    })
                }
            });
            continue;
        }

        let Some((key, value)) = line.split_once('=') else {
            return fail(ErrorKind::IniSyntax);
        };
        let key = key.trim().to_ascii_lowercase();
        let value = unquote_value(value.trim()).to_string();
        // The config the installer writes from the ini (`--from-ini`) could
        // not say it: a quote there opens a quoted word.
        if value.contains('"') {
            return fail(ErrorKind::BadValue {
                what: "value",
                value,
                expected: "no `\"` inside; a whole value may be wrapped in double quotes".into(),
            });
        }
        let unknown = |section, expected| {
            let key = key.clone();
            Err(Error::new(
                origin.clone(),
                ErrorKind::IniUnknownKey {
                    section,
                    key,
                    expected,
                },
            ))
        };
        match section {
            None => return fail(ErrorKind::IniKeyOutsideSection),
            Some(Section::Comosix) => match key.as_str() {
                "memory_size" => match parse_mem("memory_size", &value) {
                    Ok(mb) => builder.add(Value::Mem(mb), origin)?,
                    Err(kind) => return fail(kind),
                },
                _ => return unknown("comosix", "memory_size"),
            },
            // A repeated key: the last one wins, as everywhere else here.
            Some(Section::Nfs) => {
                let slot = match key.as_str() {
                    "server" => &mut nfs.server,
                    "path" => &mut nfs.path,
                    "options" => &mut nfs.options,
                    _ => return unknown("NFS", "server, path or options"),
                };
                *slot = Some(value).filter(|v| !v.is_empty());
            }
            Some(Section::Cobd) => {
                let index = key
                    .strip_prefix("path_")
                    .filter(|d| d.len() == 1)
                    .and_then(|d| d.parse::<u8>().ok())
                    .filter(|&i| i <= MAX_INI_COBD);
                let Some(index) = index else {
                    return unknown("cobd", "path_0 to path_9");
                };
                if let Some((_, first)) = disks.get(&index) {
                    return fail(ErrorKind::Duplicate {
                        name: format!("path_{index}"),
                        first: first.clone(),
                    });
                }
                // An empty path_N is an unused slot, as coMosix wrote them.
                if !value.is_empty() {
                    disks.insert(index, (value, origin));
                }
            }
            Some(Section::Engine) => match key.as_str() {
                "qemu" if value.is_empty() => {
                    return fail(ErrorKind::MissingValue {
                        key: "qemu".into(),
                        example: r"C:\Program Files\qemu\qemu-system-x86_64.exe",
                    })
                }
                "qemu" => match program_path(dir, &value) {
                    Ok(program) => builder.add(Value::Qemu(program), origin)?,
                    Err(kind) => return fail(kind),
                },
                _ => return unknown("engine", "qemu"),
            },
            // Read whole at the end: `name` alone installs nothing.
            Some(Section::Service) => match key.as_str() {
                "install" => match parse_yes_no(&value) {
                    Some(yes) => service.install = Some((yes, origin)),
                    None => {
                        return fail(ErrorKind::BadValue {
                            what: "[service] install",
                            value,
                            expected: "yes or no".into(),
                        })
                    }
                },
                "name" if check_service_name(&value) => service.name = Some(value),
                "name" => {
                    return fail(ErrorKind::BadValue {
                        what: "[service] name",
                        value,
                        expected: "1-64 letters, digits, '-', '_' or '.', not starting with '.'"
                            .into(),
                    })
                }
                _ => return unknown("service", "install or name"),
            },
            // Values are checked here, where their line is known; whether
            // they are all there, at the end.
            Some(Section::Credentials) => match key.as_str() {
                "root_key" if !value.is_empty() => match host_path(dir, &value) {
                    Ok(key) => builder.add(Value::RootKey(key), origin)?,
                    Err(kind) => return fail(kind),
                },
                "root_password_hash" if !value.is_empty() => {
                    match crate::credentials::check_password_hash(&value) {
                        Ok(()) => builder.add(Value::RootPasswordHash(value), origin)?,
                        Err(reason) => return fail(ErrorKind::BadPasswordHash { reason }),
                    }
                }
                // An installer's ini may leave a key empty: no credential.
                "root_key" | "root_password_hash" => {}
                _ => return unknown("credentials", "root_key or root_password_hash"),
            },
            Some(Section::Guest) => {
                let Some((request, _)) = guest.as_mut() else {
                    unreachable!("[guest] sets it");
                };
                match key.as_str() {
                    "create" => match parse_yes_no(&value) {
                        Some(yes) => request.create = yes,
                        None => {
                            return fail(ErrorKind::BadValue {
                                what: "[guest] create",
                                value,
                                expected: "yes or no".into(),
                            })
                        }
                    },
                    "name" if check_service_name(&value) => request.name = value,
                    "name" => {
                        return fail(ErrorKind::BadValue {
                            what: "[guest] name",
                            value,
                            expected:
                                "1-64 letters, digits, '-', '_' or '.', not starting with '.'"
                                    .into(),
                        })
                    }
                    "size" if value.is_empty() => request.size = None,
                    "size" if parse_size(&value).is_some() => request.size = Some(value),
                    "size" => {
                        return fail(ErrorKind::BadValue {
                            what: "[guest] size",
                            value,
                            expected: "a size such as 20G, 512M or 1T".into(),
                        })
                    }
                    "image" if value.is_empty() => request.image = None,
                    "image" => match host_path(dir, &value) {
                        Ok(image) if image.is_file() => request.image = Some(image),
                        Err(kind) => return fail(kind),
                        Ok(_) => {
                            return fail(ErrorKind::BadValue {
                                what: "[guest] image",
                                value,
                                expected: "an existing .ext4 image, or its .ext4.zst copy".into(),
                            })
                        }
                    },
                    _ => return unknown("guest", "create, name, size or image"),
                }
            }
            Some(Section::Cluster) => {
                let located = Some((value.clone(), origin.clone()));
                let checked = match key.as_str() {
                    "role" => parse_role(&value).map(|_| &mut cluster.role),
                    "hostname_prefix" => Ok(&mut cluster.hostname_prefix),
                    "host_name" => Ok(&mut cluster.host_name),
                    "head" => parse_head(&value).map(|_| &mut cluster.head),
                    "network" => parse_network(&value).map(|_| &mut cluster.network),
                    "munge_key" => Ok(&mut cluster.munge_key),
                    "ssh_host_key" => Ok(&mut cluster.ssh_host_key),
                    "root_key" => Ok(&mut cluster.root_key),
                    _ => {
                        return unknown(
                            "cluster",
                            "role, hostname_prefix, host_name, head, network, munge_key, ssh_host_key or root_key",
                        )
                    }
                };
                match checked {
                    Ok(slot) => *slot = located.filter(|(v, _)| !v.is_empty()),
                    Err(kind) => return fail(kind),
                }
            }
        }
    }

    // coMosix stopped at the first missing path_N and silently dropped the
    // rest; refuse instead, naming the gap.
    for (expected, (&index, (_, origin))) in (0u8..).zip(&disks) {
        if index != expected {
            let kind = ErrorKind::IniGap {
                missing: expected,
                dropped: index,
            };
            return Err(Error::new(origin.clone(), kind));
        }
    }
    for (index, (path, origin)) in disks {
        let path = host_path(dir, &path).map_err(|kind| Error::new(origin.clone(), kind))?;
        builder.add(Value::Cobd(index, path), origin)?;
    }

    if let Some((true, origin)) = service.install {
        let name = service
            .name
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string());
        builder.add(Value::Service(name), origin)?;
    }

    if let Some((request, origin)) = guest {
        builder.add(Value::Guest(request), origin)?;
    }

    if let Some(header) = cluster.header.clone() {
        cluster.add_to(builder, &header, dir)?;
    }

    if let Some(header) = nfs.header {
        if let Some(root) = nfs_root(nfs.server, nfs.path, nfs.options, &header)? {
            builder.add(Value::Nfs(root), header)?;
        }
    }
    Ok(())
}

/// The `[service]` keys seen so far (the last of each wins).
#[derive(Default)]
struct ServiceKeys {
    header: Option<Origin>,
    install: Option<(bool, Origin)>,
    name: Option<String>,
}

/// The `[cluster]` keys seen so far (the last of each wins), with their lines.
#[derive(Default)]
struct ClusterKeys {
    header: Option<Origin>,
    role: Option<(String, Origin)>,
    hostname_prefix: Option<(String, Origin)>,
    host_name: Option<(String, Origin)>,
    head: Option<(String, Origin)>,
    network: Option<(String, Origin)>,
    munge_key: Option<(String, Origin)>,
    ssh_host_key: Option<(String, Origin)>,
    root_key: Option<(String, Origin)>,
}

impl ClusterKeys {
    /// Resolves the hostname (prefix + this machine's name, lower case)
    /// and hands every value to the builder, each with its own line.
    fn add_to(self, builder: &mut Builder, header: &Origin, dir: &Path) -> Result<(), Error> {
        let missing = |key| {
            Error::new(
                header.clone(),
                ErrorKind::IniClusterIncomplete { missing: key },
            )
        };
        let head = self.head.ok_or_else(|| missing("head"))?;
        let munge_key = self.munge_key.ok_or_else(|| missing("munge_key"))?;
        let ssh_host_key = self.ssh_host_key.ok_or_else(|| missing("ssh_host_key"))?;

        let (name, name_origin) = match self.host_name {
            Some((name, origin)) => (name, Some(origin)),
            None => match machine_name() {
                Some(name) => (name, None),
                None => return Err(missing("host_name (this machine's name cannot be read)")),
            },
        };
        let (prefix, prefix_origin) = self
            .hostname_prefix
            .map_or((String::new(), None), |(p, o)| (p, Some(o)));
        let hostname = format!("{prefix}{name}").to_ascii_lowercase();
        // Where the hostname was written: host_name, else the prefix.
        let hostname_origin = name_origin
            .or_else(|| prefix_origin.clone())
            .unwrap_or_else(|| header.clone());
        if !is_hostname(&hostname) {
            // Blame the prefix if it alone cannot start a hostname.
            let prefix_bad = !prefix.is_empty()
                && (!is_hostname(&format!("{}a", prefix.to_ascii_lowercase()))
                    || prefix.len() >= MAX_HOSTNAME);
            let origin = match prefix_origin {
                Some(origin) if prefix_bad => origin,
                _ => hostname_origin,
            };
            return Err(Error::new(
                origin,
                ErrorKind::BadValue {
                    what: "hostname (hostname_prefix + host name)",
                    value: hostname,
                    expected: crate::cluster::HOSTNAME_EXPECTED.into(),
                },
            ));
        }

        let mut add = |value, origin: Origin| builder.add(Value::Cluster(value), origin);
        let (role, origin) = self
            .role
            .unwrap_or_else(|| ("node".to_string(), header.clone()));
        let role = parse_role(&role).map_err(|kind| Error::new(origin.clone(), kind))?;
        add(ClusterValue::Role(role), origin)?;
        add(ClusterValue::Hostname(hostname), hostname_origin)?;
        let (head, origin) = head;
        let head = parse_head(&head).map_err(|kind| Error::new(origin.clone(), kind))?;
        add(ClusterValue::Head(head), origin)?;
        if let Some((network, origin)) = self.network {
            let network =
                parse_network(&network).map_err(|kind| Error::new(origin.clone(), kind))?;
            add(ClusterValue::Network(network), origin)?;
        }
        let file = |(text, origin): (String, Origin)| match host_path(dir, &text) {
            Ok(path) => Ok((path, origin)),
            Err(kind) => Err(Error::new(origin, kind)),
        };
        let (path, origin) = file(munge_key)?;
        add(ClusterValue::MungeKey(path), origin)?;
        let (path, origin) = file(ssh_host_key)?;
        add(ClusterValue::SshHostKey(path), origin)?;
        if let Some(root_key) = self.root_key {
            let (path, origin) = file(root_key)?;
            add(ClusterValue::RootKey(path), origin)?;
        }
        Ok(())
    }
}

/// Windows ini habits: yes/no, true/false, 1/0, in any case.
fn parse_yes_no(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" => Some(true),
        "no" | "false" | "0" => Some(false),
        _ => None,
    }
}

/// `20G`, `512M`, `1T`, `4096K` or bytes, in binary units; `None` for
/// anything else, zero, or more than 64 bits hold.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_uppercase();
    let (digits, shift) = match text.as_bytes().last()? {
        b'T' => (&text[..text.len() - 1], 40),
        b'G' => (&text[..text.len() - 1], 30),
        b'M' => (&text[..text.len() - 1], 20),
        b'K' => (&text[..text.len() - 1], 10),
        _ => (&text[..], 0),
    };
    let number: u64 = digits.parse().ok()?;
    number.checked_mul(1 << shift).filter(|&n| n > 0)
}

/// The names colinux-daemon accepts for a guest and its service
/// (`colinux-NAME`): they become file, pipe and service names.
fn check_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// An `[NFS]` section with nothing in it means no NFS root; otherwise both
/// the server and the path must be there, and nothing may hold a space
/// (each ends up in one kernel parameter).
fn nfs_root(
    server: Option<String>,
    path: Option<String>,
    options: Option<String>,
    header: &Origin,
) -> Result<Option<NfsRoot>, Error> {
    let fail = |kind| Err(Error::new(header.clone(), kind));
    let (server, path) = match (server, path) {
        (None, None) if options.is_none() => return Ok(None),
        (Some(server), Some(path)) => (server, path),
        (None, _) => return fail(ErrorKind::NfsIncomplete { missing: "server" }),
        (_, None) => return fail(ErrorKind::NfsIncomplete { missing: "path" }),
    };
    let bad = |what, value: &str, expected: &str| {
        fail(ErrorKind::BadValue {
            what,
            value: value.to_string(),
            expected: expected.to_string(),
        })
    };
    let no_space = |text: &str| !text.contains(char::is_whitespace);
    if !no_space(&server) || server.contains([':', ',']) {
        return bad("NFS server", &server, "a host name or IPv4 address");
    }
    if !path.starts_with('/') || !no_space(&path) || path.contains(',') {
        return bad(
            "NFS path",
            &path,
            "an absolute export path without spaces or commas, like /srv/root",
        );
    }
    if let Some(options) = &options {
        if !no_space(options) {
            return bad(
                "NFS options",
                options,
                "comma-separated mount options without spaces, like ro,nolock",
            );
        }
    }
    Ok(Some(NfsRoot {
        server,
        path,
        options,
    }))
}

/// `"C:\My Disks\root.img"` → `C:\My Disks\root.img`.
fn unquote_value(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}
