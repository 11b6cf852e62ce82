//! The Linux packages end to end: the .deb and the tarball built from the
//! runtime stage's real binaries (`cargo xtask runtime`, cached), checked
//! with Debian's own tools: lintian, dpkg-deb, and dpkg installing into and
//! removing from a scratch root, where the installed daemon then runs.
#![cfg(target_os = "linux")]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use colinux_packaging::deb::{self, DebSpec};
use colinux_packaging::linux::{self, LinuxInputs};
use colinux_packaging::tarball;

const SDE: u64 = 1_700_000_000;
/// The address `cargo xtask dist` puts in the package, so lintian sees it.
const MAINTAINER: &str = "coLinux developers <colinux@users.noreply.github.com>";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (run `cargo xtask setup`)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).unwrap()
}

struct Built {
    inputs: LinuxInputs,
    deb: PathBuf,
    tarball: PathBuf,
    /// The layout's paths as dpkg-deb and tar show them: directories with
    /// a trailing `/`.
    layout: BTreeSet<String>,
}

/// The runtime binaries from the repository's own stage; the guest kernels
/// from the kernel stage when it has run, else small stand-ins (a real
/// bzImage's boot-sector and header magic, for `file` and lintian): the
/// kernel stage takes minutes, and `cargo xtask dist`'s test packs the
/// real ones.
fn inputs(dir: &Path) -> LinuxInputs {
    run(Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["run", "--quiet", "--package", "xtask", "--"])
        .args(["runtime", "--target", "x86_64-unknown-linux-gnu"]));
    let kernel = |arch: &str| {
        let real = root().join(format!("target/kernel/{arch}/bzImage"));
        if real.is_file() {
            return real;
        }
        let mut image = vec![0u8; 8192];
        image[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        let path = dir.join(format!("bzImage-{arch}"));
        std::fs::write(&path, image).unwrap();
        path
    };
    LinuxInputs {
        runtime_dir: root().join("target/runtime/x86_64-unknown-linux-gnu"),
        kernel_i386: kernel("i386"),
        kernel_x86_64: kernel("x86_64"),
        repo_root: root(),
        version: deb::deb_version(env!("CARGO_PKG_VERSION")),
        maintainer: MAINTAINER.into(),
        source_date_epoch: SDE,
    }
}

fn build(inputs: &LinuxInputs, out: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(out).unwrap();
    let entries = linux::linux_layout(inputs).unwrap();
    let tarball = out.join("colinux-linux-x86_64.tar.gz");
    tarball::write_tar_gz(&entries, &tarball, SDE).unwrap();
    let deb = deb::build_deb(
        &DebSpec {
            version: inputs.version.clone(),
            source_date_epoch: SDE,
            maintainer: inputs.maintainer.clone(),
            entries,
        },
        out,
    )
    .unwrap();
    (deb, tarball)
}

/// Built once for every test, under cargo's scratch directory for
/// integration tests (kept after a failure, for a look).
fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("packaging-linux");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let inputs = inputs(&dir);
        let (deb, tarball) = build(&inputs, &dir.join("first"));
        let entries = linux::linux_layout(&inputs).unwrap();
        let layout = tarball::normalize(&entries)
            .unwrap()
            .into_iter()
            .map(|e| match e.content {
                tarball::Content::Dir => format!("{}/", e.path),
                _ => e.path,
            })
            .collect();
        Built {
            inputs,
            deb,
            tarball,
            layout,
        }
    })
}

#[test]
fn lintian_reports_no_errors() {
    let report = deb::lintian(&built().deb).unwrap_or_else(|e| panic!("{e}"));
    // Everything lintian says, for the log; warnings must be known ones.
    for line in &report.lines {
        eprintln!("{line}");
    }
    assert!(report.warnings().is_empty(), "{:#?}", report.warnings());
}

#[test]
fn the_deb_holds_the_layout_owned_by_root_and_the_tarball_the_same() {
    let b = built();
    let listing = stdout(Command::new("dpkg-deb").arg("-c").arg(&b.deb));
    let mut in_deb = BTreeSet::new();
    for line in listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[1], "root/root", "{line}");
        let path = fields[5].trim_start_matches("./");
        if !path.is_empty() {
            in_deb.insert(path.to_string());
        }
    }
    let layout = &b.layout;
    assert_eq!(&in_deb, layout);
    for expected in [
        "usr/bin/colinux-daemon",
        "usr/bin/colinux-console",
        "usr/lib/colinux/vmlinuz-i386",
        "usr/lib/colinux/vmlinuz-x86_64",
        "usr/lib/systemd/system/colinux@.service",
        "usr/share/man/man1/colinux-daemon.1.gz",
        "usr/share/doc/colinux/copyright",
        "etc/colinux/",
    ] {
        assert!(layout.contains(expected), "{expected} missing: {layout:#?}");
    }
    let in_tarball: BTreeSet<String> = stdout(Command::new("tar").arg("-tzf").arg(&b.tarball))
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(&in_tarball, layout);

    let fields = stdout(Command::new("dpkg-deb").arg("-f").arg(&b.deb));
    for field in [
        "Package: colinux\n",
        "Architecture: amd64\n",
        "Priority: optional\n",
    ] {
        assert!(fields.contains(field), "{field}: {fields}");
    }
    let depends = fields
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .unwrap();
    assert!(
        depends.contains("libc6 (>= ") && depends.ends_with("qemu-system-x86"),
        "{depends}"
    );
}

#[test]
fn dpkg_installs_it_into_a_scratch_root_and_removes_it() {
    let b = built();
    let scratch = tempfile::tempdir().unwrap();
    let target = scratch.path();
    let admin = target.join("var/lib/dpkg");
    for dir in ["updates", "info", "triggers"] {
        std::fs::create_dir_all(admin.join(dir)).unwrap();
    }
    std::fs::write(admin.join("status"), "").unwrap();
    std::fs::write(admin.join("available"), "").unwrap();
    let dpkg = |args: &[&str]| {
        let mut cmd = Command::new("dpkg");
        cmd.arg(format!("--root={}", target.display()))
            // No maintainer scripts, but dpkg wants the permission anyway;
            // the dependencies (libc6, qemu) live on the host, not here.
            .args([
                "--force-script-chrootless",
                "--force-depends",
                "--log=/dev/null",
            ])
            .args(args);
        cmd
    };
    run(dpkg(&["--install"]).arg(&b.deb));
    let status = stdout(&mut dpkg(&["--status", "colinux"]));
    assert!(status.contains("Status: install ok installed"), "{status}");

    let daemon = target.join("usr/bin/colinux-daemon");
    let version = stdout(Command::new(&daemon).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("colinux-daemon {}", env!("CARGO_PKG_VERSION"))
    );
    let unit =
        std::fs::read_to_string(target.join("usr/lib/systemd/system/colinux@.service")).unwrap();
    assert!(
        unit.contains("\nExecStart=/usr/bin/colinux-daemon -d --name %i @/etc/colinux/%i.conf\n"),
        "{unit}"
    );

    run(&mut dpkg(&["--purge", "colinux"]));
    for path in &b.layout {
        let gone = target.join(path);
        // dpkg keeps directories that other packages (none here) might share;
        // what is ours must be gone.
        if !path.ends_with('/') {
            assert!(
                std::fs::symlink_metadata(&gone).is_err(),
                "{path} left after purge"
            );
        }
    }
    for dir in ["usr/lib/colinux", "usr/share/doc/colinux", "etc/colinux"] {
        assert!(!target.join(dir).exists(), "{dir} left after purge");
    }
}

#[test]
fn rebuilds_are_bit_identical() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let (deb, tarball) = build(&b.inputs, dir.path());
    for (first, again) in [(&b.deb, &deb), (&b.tarball, &tarball)] {
        run(Command::new("cmp").arg(first).arg(again));
    }
    // The name dist publishes.
    assert_eq!(
        deb.file_name().unwrap().to_str().unwrap(),
        format!("colinux_{}_amd64.deb", b.inputs.version)
    );
}
