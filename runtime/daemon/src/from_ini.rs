//! `colinux-daemon --from-ini FILE --write-config OUT`: the Windows
//! installer's ini (coMosix's `comosix.ini`, grown up) turned into a
//! colinux.conf by the config crate itself, so the installer applies
//! exactly the rules the daemon does and never re-implements them.

use std::fmt::Write as _;
use std::path::Path;

use colinux_config::Settings;

use crate::engine::{self, EngineError};
use crate::supervise::{exit, StartError};

/// Where the installer tells users to get QEMU for Windows.
pub const QEMU_DOWNLOAD: &str = "https://www.qemu.org/download/#windows";

/// Parses `defaults` (config tokens, e.g. the installed `kernel=`), then
/// the ini `ini`, whose values win, and writes the result to `out`
/// atomically. Returns what the installer reads from stdout: `service=NAME`
/// when the ini's `[service]` asks for one, and the guest to create
/// ([`guest_lines`]).
pub fn write_config(defaults: &[String], ini: &Path, out: &Path) -> Result<String, StartError> {
    let config = |message: String| StartError::new(exit::CONFIG, message);
    let named = ini.file_name().map(|n| n.to_string_lossy().to_lowercase());
    if !named.is_some_and(|n| n.ends_with(".ini")) {
        return Err(config(format!(
            "--from-ini {}: the file name must end in .ini",
            ini.display()
        )));
    }
    let cwd = std::env::current_dir().map_err(|e| config(format!("current directory: {e}")))?;
    let mut parser = colinux_config::Parser::new(&cwd);
    for token in defaults {
        parser.arg(token).map_err(|e| config(e.to_string()))?;
    }
    parser
        .arg(&format!("@{}", ini.display()))
        .map_err(|e| config(e.to_string()))?;
    let settings = parser.finish().map_err(|e| config(e.to_string()))?;
    if settings.kernel.is_none() {
        return Err(config(EngineError::NoKernel.to_string()));
    }
    let text = config_text(&settings, ini);
    // What we write must read back: a failure here is our bug, and the
    // installer must not install a config the daemon would refuse.
    colinux_config::parse_str(&text, out).map_err(|e| {
        config(format!(
            "the config written from {} does not parse back: {e}",
            ini.display()
        ))
    })?;
    let guest = guest_lines(&settings).map_err(config)?;
    write_atomically(out, &text).map_err(|e| config(format!("{}: {e}", out.display())))?;
    let service = settings
        .service
        .map(|s| format!("service={}\n", s.value))
        .unwrap_or_default();
    Ok(service + &guest)
}

/// What the installer needs to create the guest of the ini's `[guest]`
/// (by default one called `debian`, from the shipped image): `guest=NAME`,
/// and `guest_options=` with the `--create` options, quoted for a Windows
/// command line. Nothing when the ini says `create = no`, or boots a root
/// of its own (a `[cobd]` path_0, an `[NFS]` root, a `[cluster]`).
fn guest_lines(settings: &Settings) -> Result<String, String> {
    let asked = settings.guest.as_ref();
    let request = asked.map(|g| g.value.clone()).unwrap_or_default();
    let own_root = if settings.cobd.contains_key(&0) {
        Some("[cobd] path_0")
    } else if settings.nfs_root.is_some() {
        Some("an [NFS] root")
    } else if settings.cluster.is_some() {
        Some("a [cluster] role")
    } else {
        None
    };
    match (own_root, asked) {
        _ if !request.create => return Ok(String::new()),
        (Some(root), Some(guest)) => {
            return Err(format!(
                "{}: the ini boots {root}, so there is no guest to create; remove [guest] or set create = no",
                guest.origin
            ))
        }
        (Some(_), None) => return Ok(String::new()),
        (None, _) => {}
    }
    let mut options = Vec::new();
    if let Some(size) = &request.size {
        options.push(format!("--size {size}"));
    }
    if let Some(image) = &request.image {
        options.push(format!("--image \"{}\"", image.display()));
    }
    let mut lines = format!("guest={}\n", request.name);
    if !options.is_empty() {
        lines.push_str(&format!("guest_options={}\n", options.join(" ")));
    }
    Ok(lines)
}

/// The config file: a header, a warning when QEMU cannot be found, then
/// the resolved settings, each with where it came from.
fn config_text(settings: &Settings, ini: &Path) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "# coLinux configuration, written by the installer from {}\n\
         # (`colinux-daemon --from-ini`; relative paths there are resolved against\n\
         # its folder; \"command line argument\" means the installer's defaults).\n\
         # Edit freely; `colinux-daemon --dry-run @colinux.conf` checks it.",
        ini.display()
    );
    // Only in the file: the installer reads this command's output for the
    // service line, and logs the QEMU warning itself.
    if let Err(e) = engine::find_engine(settings) {
        let _ = writeln!(
            text,
            "#\n# WARNING: QEMU was not found ({e}).\n\
             # Install QEMU for Windows from {QEMU_DOWNLOAD}\n\
             # and set qemu= to its {program}.exe, for example\n\
             # qemu=\"C:\\Program Files\\qemu\\{program}.exe\"",
            program = engine::default_engine(settings.arch()),
        );
    }
    text.push('\n');
    text.push_str(&settings.to_config());
    text
}

fn write_atomically(out: &Path, text: &str) -> std::io::Result<()> {
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, out).inspect_err(|_| {
        let _ = std::fs::remove_file(&partial);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(dir: &Path, ini: &str) -> Result<(String, String), StartError> {
        let file = dir.join("colinux.ini");
        std::fs::write(&file, ini).unwrap();
        let out = dir.join("colinux.conf");
        let kernel = format!("kernel={}", dir.join("bzImage").display());
        let stdout = write_config(&[kernel, "eth0=slirp".into()], &file, &out)?;
        Ok((stdout, std::fs::read_to_string(out).unwrap()))
    }

    #[test]
    fn ini_becomes_a_config_that_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let (stdout, text) = convert(
            dir.path(),
            "[comosix]\nmemory_size = 384\n[NFS]\nserver = 10.0.0.1\npath = /srv/node\n\
             [cobd]\npath_0 = swap.img\npath_1 = data.img\n[service]\ninstall = yes\nname = node\n\
             [engine]\nqemu = /nonexistent/qemu-system-x86_64\n",
        )
        .unwrap();
        // Its own disks: no guest to create.
        assert_eq!(stdout, "service=node\n");
        let settings = colinux_config::parse_str(&text, &dir.path().join("colinux.conf")).unwrap();
        assert_eq!(settings.mem_mb.unwrap().value, 384);
        assert_eq!(settings.cobd[&0].path, dir.path().join("swap.img"));
        assert_eq!(settings.cobd[&1].path, dir.path().join("data.img"));
        assert!(settings.eth.contains_key(&0), "defaults kept:\n{text}");
        assert!(
            text.contains("nfsroot=10.0.0.1:/srv/node") && text.contains("WARNING: QEMU"),
            "{text}"
        );
        assert!(text.contains(QEMU_DOWNLOAD), "{text}");
    }

    #[test]
    fn a_cluster_node_keeps_everything_it_needs() {
        let dir = tempfile::tempdir().unwrap();
        let (_, text) = convert(
            dir.path(),
            "[NFS]\nserver = 10.77.0.1\npath = /srv/comosix/node\n[cluster]\nrole = node\n\
             hostname_prefix = node-\nhost_name = PC17\nhead = 10.77.0.1\nmunge_key = munge.key\n\
             ssh_host_key = keys/ssh_host_ed25519_key\nroot_key = root.pub\n",
        )
        .unwrap();
        let settings = colinux_config::parse_str(&text, &dir.path().join("colinux.conf")).unwrap();
        let cluster = settings.cluster.as_ref().expect("cluster keys written");
        assert_eq!(cluster.hostname.value, "node-pc17");
        assert_eq!(cluster.network().to_string(), "10.77.0.0/24");
        assert_eq!(
            cluster.ssh_host_key.value,
            dir.path().join("keys/ssh_host_ed25519_key")
        );
        assert!(cluster.root_key.is_some());
        assert!(
            settings
                .kernel_cmdline(&[])
                .unwrap()
                .ends_with("ip=::::node-pc17:eth0:dhcp"),
            "{text}"
        );
        let err = convert(dir.path(), "[cluster]\nmunge_key = m\nssh_host_key = k\n").unwrap_err();
        assert!(
            err.message
                .ends_with("colinux.ini:1: [cluster]: [cluster] needs `head`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_gap_fails_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let err = convert(dir.path(), "[cobd]\npath_0 = a.img\npath_2 = c.img\n").unwrap_err();
        assert_eq!(err.code, exit::CONFIG);
        assert!(
            err.message.contains("colinux.ini:3") && err.message.contains("path_1 is missing"),
            "{}",
            err.message
        );
        assert!(!err.message.contains('\n'));
        assert!(!dir.path().join("colinux.conf").exists());
        assert!(!dir.path().join("colinux.conf.partial").exists());
    }

    #[test]
    fn no_service_and_no_disks_print_the_default_guest_and_names_must_be_ini() {
        let dir = tempfile::tempdir().unwrap();
        let (stdout, _) = convert(dir.path(), "[comosix]\nmemory_size = 64\n").unwrap();
        assert_eq!(stdout, "guest=debian\n");
        let out = dir.path().join("x.conf");
        let err = write_config(&[], &dir.path().join("x.conf"), &out).unwrap_err();
        assert!(err.message.contains("must end in .ini"), "{}", err.message);
        let missing = dir.path().join("missing.ini");
        let err = write_config(&[], &missing, &out).unwrap_err();
        assert!(err.message.contains("missing.ini"), "{}", err.message);
    }

    #[test]
    fn the_guest_section_names_size_image_or_none() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mine.ext4"), "").unwrap();
        let (stdout, _) = convert(
            dir.path(),
            "[guest]\nname = lab\nsize = 20G\nimage = mine.ext4\n[service]\ninstall = yes\n",
        )
        .unwrap();
        let image = dir.path().join("mine.ext4");
        assert_eq!(
            stdout,
            format!(
                "service=colinux\nguest=lab\nguest_options=--size 20G --image \"{}\"\n",
                image.display()
            )
        );
        let (stdout, _) = convert(dir.path(), "[guest]\ncreate = no\n").unwrap();
        assert_eq!(stdout, "");

        for (ini, expected) in [
            (
                "[guest]\nsize = 20 gigs\n",
                "colinux.ini:2: size = 20 gigs: bad [guest] size",
            ),
            ("[guest]\nname = a b\n", "[guest] name \"a b\""),
            (
                "[guest]\nimage = gone.ext4\n",
                "colinux.ini:2: image = gone.ext4: bad [guest] image",
            ),
            (
                "[guest]\ncolour = red\n",
                "unknown key \"colour\" in [guest]",
            ),
            (
                "[cobd]\npath_0 = root.img\n[guest]\nsize = 2G\n",
                "the ini boots [cobd] path_0, so there is no guest to create",
            ),
        ] {
            let err = convert(dir.path(), ini).unwrap_err();
            assert_eq!(err.code, exit::CONFIG);
            assert!(err.message.contains(expected), "{ini}: {}", err.message);
            assert!(!err.message.contains('\n'), "{}", err.message);
        }
    }
}
