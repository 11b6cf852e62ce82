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
//! ```
//!
//! Section and key names are case-insensitive, as Windows ini files are.
//! Comments are whole lines starting with `;` or `#`, so a value may hold
//! either character. A value may be wrapped in double quotes.

use std::collections::BTreeMap;
use std::path::Path;

use crate::builder::{Builder, Value};
use crate::colinux::{parse_mem, program_path};
use crate::error::{Error, ErrorKind, Origin, Place};
use crate::settings::NfsRoot;

/// coMosix read `path_0` to `path_9`.
const MAX_INI_COBD: u8 = 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Comosix,
    Nfs,
    Cobd,
    Engine,
    Service,
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
                "qemu" => builder.add(Value::Qemu(program_path(dir, &value)), origin)?,
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
        builder.add(Value::Cobd(index, dir.join(path)), origin)?;
    }

    if let Some((true, origin)) = service.install {
        let name = service
            .name
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string());
        builder.add(Value::Service(name), origin)?;
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

/// Windows ini habits: yes/no, true/false, 1/0, in any case.
fn parse_yes_no(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" => Some(true),
        "no" | "false" | "0" => Some(false),
        _ => None,
    }
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
