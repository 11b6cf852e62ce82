//! `colinux-daemon --create NAME`: a guest from the shipped image (or
//! `--image`), ready to start: its own disk, unpacked from the image's
//! zstd copy in Rust and as large as asked, and its config, with slirp
//! forwarding SSH from a free port on 127.0.0.1 and the CONFIG tokens
//! given (root's credentials, memory…). Both are written beside their
//! place and renamed into it, and an existing guest is replaced only with
//! `--force`.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::supervise::{exit, StartError};

/// The kernel and image a guest gets unless its CONFIG tokens or
/// `--image` say otherwise, and where its files go.
pub struct Places {
    pub disks: PathBuf,
    pub configs: PathBuf,
    pub kernel: PathBuf,
    pub image: PathBuf,
}

impl Places {
    /// The installed layout: on Linux the packages' (`/usr/bin`,
    /// `/usr/lib/colinux/vmlinuz-i386`, `/usr/share/colinux/debian.ext4.zst`;
    /// as root the disks in `/var/lib/colinux` and the configs in
    /// `/etc/colinux`, where `colinux@NAME.service` reads them; otherwise both
    /// in `~/.local/share/colinux`), on Windows the installer's (everything
    /// in the install directory, the guests in `%ProgramData%\coLinux`).
    /// `data_dir` puts the disk and config there instead.
    pub fn here(data_dir: Option<&Path>) -> Result<Places, StartError> {
        let exe = std::env::current_exe()
            .map_err(|e| config_error(format!("cannot find this program: {e}")))?;
        let bin = exe.parent().unwrap_or(Path::new("."));
        let (kernel, image) = if cfg!(windows) {
            (bin.join("bzImage-i386"), bin.join("images/debian.ext4.zst"))
        } else {
            (
                bin.join("../lib/colinux/vmlinuz-i386"),
                bin.join("../share/colinux/debian.ext4.zst"),
            )
        };
        let (disks, configs) = match data_dir {
            Some(dir) => (dir.to_path_buf(), dir.to_path_buf()),
            None => default_dirs()?,
        };
        // `/usr/lib/colinux/…`, not `/usr/bin/../lib/colinux/…`, in configs
        // (Windows' canonical form is a `\\?\` path: left as it is there).
        let tidy = |path: PathBuf| {
            if cfg!(windows) {
                path
            } else {
                path.canonicalize().unwrap_or(path)
            }
        };
        Ok(Places {
            disks,
            configs,
            kernel: tidy(kernel),
            image: tidy(image),
        })
    }
}

fn default_dirs() -> Result<(PathBuf, PathBuf), StartError> {
    #[cfg(windows)]
    {
        let data = std::env::var_os("ProgramData")
            .map(PathBuf::from)
            .ok_or_else(|| config_error("%ProgramData% is not set: give --data-dir DIR"))?
            .join("coLinux");
        Ok((data.clone(), data))
    }
    #[cfg(unix)]
    {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return Ok(("/var/lib/colinux".into(), "/etc/colinux".into()));
        }
        let data = std::env::var_os("XDG_DATA_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .ok_or_else(|| {
                config_error("neither XDG_DATA_HOME nor HOME is set: give --data-dir DIR")
            })?
            .join("colinux");
        Ok((data.clone(), data))
    }
}

/// What `--create` was asked.
pub struct Request<'a> {
    pub name: &'a str,
    pub image: Option<&'a Path>,
    pub size: Option<&'a str>,
    pub data_dir: Option<&'a Path>,
    pub force: bool,
    /// CONFIG tokens for the guest's config: they win over the defaults.
    pub config: &'a [String],
}

/// Creates the guest; returns what to tell the user.
pub fn create(request: &Request) -> Result<String, StartError> {
    let places = Places::here(request.data_dir)?;
    let name = request.name;
    let image = request.image.unwrap_or(&places.image);
    if !image.is_file() {
        return Err(config_error(format!(
            "{}: no such image; give --image FILE (an .ext4 image, or its .ext4.zst copy, such as the release's colinux-<version>-debian-*.ext4.zst)",
            image.display()
        )));
    }
    let wanted = request.size.map(parse_size).transpose()?;
    let disk = places.disks.join(format!("{name}.ext4"));
    let conf = places.configs.join(format!("{name}.conf"));
    for existing in [&disk, &conf] {
        if existing.exists() && !request.force {
            return Err(config_error(format!(
                "{}: a guest named {name} exists already; choose another name, or give --force to replace it (its disk too)",
                existing.display()
            )));
        }
    }
    let cwd =
        std::env::current_dir().map_err(|e| config_error(format!("current directory: {e}")))?;
    let parse = |tokens: &[String]| {
        colinux_config::parse_args(tokens, &cwd).map_err(|e| config_error(e.to_string()))
    };
    // The defaults, for what the tokens leave unsaid.
    let given = parse(request.config)?;
    if given.cobd.contains_key(&0) {
        return Err(config_error(format!(
            "{}: cobd0 is the guest's own disk, made by --create; give other disks as cobd1= and up",
            given.cobd[&0].origin
        )));
    }
    let mut tokens = Vec::new();
    if given.kernel.is_none() {
        tokens.push(format!("kernel={}", quoted(&places.kernel)));
    }
    if given.mem_mb.is_none() {
        tokens.push("mem=512".into());
    }
    if given.eth.is_empty() {
        tokens.push(format!("eth0=slirp,,tcp:{}:22", free_port()));
    }
    tokens.extend(request.config.iter().cloned());
    tokens.extend(["root=/dev/cobd0".into(), "ro".into()]);
    // Everything the guest needs but its disk, which is made next.
    if let Err(e) = parse(&tokens)?.check_files() {
        let first = e.0.first().map(ToString::to_string).unwrap_or_default();
        return Err(config_error(first));
    }
    tokens.insert(0, format!("cobd0={}", quoted(&disk)));
    let settings = parse(&tokens)?;
    let port = ssh_port(&settings);

    for dir in [&places.disks, &places.configs] {
        fs::create_dir_all(dir).map_err(|e| {
            config_error(format!(
                "cannot create {}: {e}; give --data-dir DIR",
                dir.display()
            ))
        })?;
    }
    let size = unpack(image, &disk, wanted)?;
    let text = format!(
        "# The guest {name}, made by colinux-daemon --create from {}.\n\
         # Start it with: colinux-daemon @{}\n\n{}",
        image.display(),
        conf.display(),
        settings.to_config()
    );
    if let Err(e) = crate::host::write_private(&conf, text.as_bytes()) {
        let _ = fs::remove_file(&disk);
        return Err(config_error(format!("{}: {e}", conf.display())));
    }
    Ok(instructions(name, &disk, size, &conf, port))
}

fn instructions(name: &str, disk: &Path, size: u64, conf: &Path, port: Option<u16>) -> String {
    let service = if cfg!(windows) {
        format!(
            "colinux-daemon --install-service {name} @\"{}\", then: sc start colinux-{name}",
            conf.display()
        )
    } else if conf.starts_with("/etc/colinux") {
        format!("systemctl enable --now colinux@{name}")
    } else {
        format!(
            "colinux-daemon --install-service {name} @{}",
            conf.display()
        )
    };
    let login = match port {
        Some(port) => format!("ssh -p {port} root@127.0.0.1"),
        None => "through the network your ethN= tokens gave it".into(),
    };
    format!(
        "created guest {name}: disk {} ({} MiB), config {}\n\
         start it:      colinux-daemon @{}   (Ctrl-C powers it off)\n\
         detached:      colinux-daemon -d @{}, then: colinux-console {name}\n\
         as a service:  {service}\n\
         log in:        {login}\n",
        disk.display(),
        size >> 20,
        conf.display(),
        conf.display(),
        conf.display(),
    )
}

/// The host port slirp forwards to the guest's sshd, if one does.
fn ssh_port(settings: &colinux_config::Settings) -> Option<u16> {
    settings.eth.values().find_map(|net| match &net.kind {
        colinux_config::NetKind::Slirp { redirects } => redirects
            .iter()
            .find(|r| r.protocol == colinux_config::Protocol::Tcp && r.guest_port == 22)
            .map(|r| r.host_port),
        _ => None,
    })
}

fn config_error(message: impl Into<String>) -> StartError {
    StartError::new(exit::CONFIG, message)
}

/// A path as one config-language value.
fn quoted(path: &Path) -> String {
    format!("\"{}\"", path.display())
}

/// `--size`, in the config crate's units (the ini's `[guest] size` too).
fn parse_size(text: &str) -> Result<u64, StartError> {
    colinux_config::parse_size(text).ok_or_else(|| {
        config_error(format!(
            "--size {text}: give a size such as 20G, 512M or 1T"
        ))
    })
}

/// A free port on 127.0.0.1 for the SSH forward: from 2222 up, as users
/// expect, else any.
fn free_port() -> u16 {
    (2222..2300)
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .or_else(|| {
            std::net::TcpListener::bind(("127.0.0.1", 0))
                .and_then(|l| l.local_addr())
                .ok()
                .map(|a| a.port())
        })
        .unwrap_or(2222)
}

/// Unpacks `image` (zstd or raw) into a sparse `disk` of at least
/// `wanted` bytes, through a temporary file renamed into place. Returns
/// the disk's size.
fn unpack(image: &Path, disk: &Path, wanted: Option<u64>) -> Result<u64, StartError> {
    let failed = |what: String| config_error(what);
    let mut source = File::open(image).map_err(|e| failed(format!("{}: {e}", image.display())))?;
    let mut magic = [0u8; 4];
    let zstd = source.read_exact(&mut magic).is_ok() && magic == [0x28, 0xb5, 0x2f, 0xfd];
    source
        .seek(SeekFrom::Start(0))
        .map_err(|e| failed(format!("{}: {e}", image.display())))?;
    let partial = crate::host::partial_path(disk);
    let written = (|| -> io::Result<u64> {
        let mut out = File::create(&partial)?;
        let len = if zstd {
            let mut decoder = ruzstd::decoding::StreamingDecoder::new(&mut source)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            copy_sparse(&mut decoder, &mut out)?
        } else {
            copy_sparse(&mut source, &mut out)?
        };
        Ok(len)
    })();
    let result = written
        .map_err(|e| {
            failed(format!(
                "cannot unpack {} into {}: {e} (is there room in {}? --data-dir puts it elsewhere)",
                image.display(),
                disk.display(),
                disk.parent().unwrap_or(Path::new(".")).display()
            ))
        })
        .and_then(|len| {
            if wanted.is_some_and(|w| w < len) {
                return Err(failed(format!(
                    "--size {} MiB is smaller than the image ({} MiB): give at least {}M",
                    wanted.unwrap_or(0) >> 20,
                    len >> 20,
                    len.div_ceil(1 << 20)
                )));
            }
            let size = wanted.unwrap_or(len);
            File::options()
                .write(true)
                .open(&partial)
                .and_then(|f| {
                    f.set_len(size)?;
                    f.sync_all()
                })
                .and_then(|()| fs::rename(&partial, disk))
                .map(|()| size)
                .map_err(|e| failed(format!("{}: {e}", disk.display())))
        });
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result
}

/// Copies `from` into `to`, leaving holes where a whole 4 KiB block (the
/// guest's filesystem block) is zeros; returns the bytes copied. The
/// caller sets the final length.
fn copy_sparse(from: &mut impl Read, to: &mut File) -> io::Result<u64> {
    const BLOCK: usize = 4096;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match from.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            break;
        }
        // Runs of data blocks are written at once, runs of zero blocks skipped.
        let mut at = 0;
        while at < filled {
            let zero = |block: &[u8]| block.iter().all(|&b| b == 0);
            let kind = zero(&buf[at..filled.min(at + BLOCK)]);
            let mut end = at;
            while end < filled && zero(&buf[end..filled.min(end + BLOCK)]) == kind {
                end = filled.min(end + BLOCK);
            }
            if kind {
                to.seek(SeekFrom::Current((end - at) as i64))?;
            } else {
                to.write_all(&buf[at..end])?;
            }
            at = end;
        }
        total += filled as u64;
        if filled < buf.len() {
            break;
        }
    }
    to.set_len(total)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_binary_units() {
        assert_eq!(parse_size("20G").unwrap(), 20 << 30);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("1T").unwrap(), 1 << 40);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        for bad in ["", "G", "20 GB", "-1G", "0", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_raw_image_is_copied_sparse_and_grown() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("img.ext4");
        let mut data = vec![0u8; 3 << 20];
        data[..4].copy_from_slice(b"head");
        data[(2 << 20) + 5] = 7;
        fs::write(&image, &data).unwrap();
        let disk = dir.path().join("g.ext4");
        assert_eq!(unpack(&image, &disk, Some(8 << 20)).unwrap(), 8 << 20);
        let got = fs::read(&disk).unwrap();
        assert_eq!(&got[..data.len()], &data[..]);
        assert!(got[data.len()..].iter().all(|&b| b == 0));
        let small = unpack(&image, &dir.path().join("s.ext4"), Some(1 << 20))
            .unwrap_err()
            .message;
        assert!(small.contains("smaller than the image (3 MiB)"), "{small}");
        assert!(!dir.path().join("s.ext4").exists());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains("partial")), "{names:?}");
    }
}
