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
use harness::workspace_root;

const SDE: u64 = 1_700_000_000;
/// The address `cargo xtask dist` puts in the package, so lintian sees it.
const MAINTAINER: &str = "coLinux developers <colinux@users.noreply.github.com>";

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
    image: Image,
    deb: PathBuf,
    image_deb: PathBuf,
    tarball: PathBuf,
    /// The layouts' paths as dpkg-deb and tar show them: directories with
    /// a trailing `/`.
    layout: BTreeSet<String>,
    image_layout: BTreeSet<String>,
}

/// The stock image's files: the image stage's when it has run, else a
/// small stand-in (a zstd frame of zeros; the dist test packs the real one).
struct Image {
    zst: PathBuf,
    packages: PathBuf,
}

fn image(dir: &Path) -> Image {
    let real = workspace_root().join("target/images/debian");
    if real.join("debian.ext4.zst").is_file() {
        return Image {
            zst: real.join("debian.ext4.zst"),
            packages: real.join("debian.packages"),
        };
    }
    let zst = dir.join("debian.ext4.zst");
    let raw = dir.join("debian.ext4");
    std::fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
    run(Command::new("zstd")
        .args(["-q", "-f", "-o"])
        .arg(&zst)
        .arg(&raw));
    let packages = dir.join("debian.packages");
    std::fs::write(&packages, "base-files\t13.8\n").unwrap();
    Image { zst, packages }
}

fn listed(entries: &[tarball::Entry]) -> BTreeSet<String> {
    tarball::normalize(entries)
        .unwrap()
        .into_iter()
        .map(|e| match e.content {
            tarball::Content::Dir => format!("{}/", e.path),
            _ => e.path,
        })
        .collect()
}

/// The runtime binaries from the repository's own stage; the guest kernels
/// from the kernel stage when it has run, else small stand-ins (a real
/// bzImage's boot-sector and header magic, for `file` and lintian): the
/// kernel stage takes minutes, and `cargo xtask dist`'s test packs the
/// real ones.
fn inputs(dir: &Path) -> LinuxInputs {
    run(Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args(["run", "--quiet", "--package", "xtask", "--"])
        .args(["runtime", "--target", "x86_64-unknown-linux-gnu"]));
    let kernel = |arch: &str| {
        let real = workspace_root().join(format!("target/kernel/{arch}/bzImage"));
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
        runtime_dir: workspace_root().join("target/runtime/x86_64-unknown-linux-gnu"),
        kernel_i386: kernel("i386"),
        kernel_x86_64: kernel("x86_64"),
        repo_root: workspace_root(),
        version: deb::deb_version(env!("CARGO_PKG_VERSION")),
        maintainer: MAINTAINER.into(),
        source_date_epoch: SDE,
    }
}

/// The two packages and the tarball, as `cargo xtask dist` builds them.
fn build(inputs: &LinuxInputs, image: &Image, out: &Path) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(out).unwrap();
    let runtime = linux::linux_layout(inputs).unwrap();
    let image = linux::image_layout(inputs, &image.zst, &image.packages).unwrap();
    let tarball = out.join("colinux-linux-x86_64.tar.gz");
    let both: Vec<_> = runtime.iter().chain(&image).cloned().collect();
    tarball::write_tar_gz(&both, &tarball, SDE).unwrap();
    let [deb, image_deb] =
        [(deb::RUNTIME, runtime), (deb::IMAGE_DEBIAN, image)].map(|(package, entries)| {
            deb::build_deb(
                &DebSpec {
                    package,
                    version: inputs.version.clone(),
                    source_date_epoch: SDE,
                    maintainer: inputs.maintainer.clone(),
                    entries,
                },
                out,
            )
            .unwrap()
        });
    (deb, image_deb, tarball)
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
        let image = image(&dir);
        let (deb, image_deb, tarball) = build(&inputs, &image, &dir.join("first"));
        let layout = listed(&linux::linux_layout(&inputs).unwrap());
        let image_layout =
            listed(&linux::image_layout(&inputs, &image.zst, &image.packages).unwrap());
        Built {
            inputs,
            image,
            deb,
            image_deb,
            tarball,
            layout,
            image_layout,
        }
    })
}

#[test]
fn lintian_reports_no_errors_or_warnings() {
    for deb in [&built().deb, &built().image_deb] {
        let report = deb::lintian(deb).unwrap_or_else(|e| panic!("{e}"));
        // Everything lintian says, for the log.
        for line in &report.lines {
            eprintln!("{line}");
        }
        assert!(report.warnings().is_empty(), "{:#?}", report.warnings());
    }
}

/// The paths in `deb`, each checked to be root's.
fn contents(deb: &Path) -> BTreeSet<String> {
    let listing = stdout(Command::new("dpkg-deb").arg("-c").arg(deb));
    let mut in_deb = BTreeSet::new();
    for line in listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[1], "root/root", "{line}");
        let path = fields[5].trim_start_matches("./");
        if !path.is_empty() {
            in_deb.insert(path.to_string());
        }
    }
    in_deb
}

#[test]
fn the_debs_hold_their_layouts_owned_by_root_and_the_tarball_both() {
    let b = built();
    let layout = &b.layout;
    assert_eq!(&contents(&b.deb), layout);
    assert_eq!(contents(&b.image_deb), b.image_layout);
    for expected in [
        linux::IMAGE,
        "usr/share/doc/colinux-image-debian/copyright",
        "usr/share/doc/colinux-image-debian/debian.packages",
    ] {
        assert!(b.image_layout.contains(expected), "{expected} missing");
    }
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
    let both: BTreeSet<String> = layout.union(&b.image_layout).cloned().collect();
    assert_eq!(in_tarball, both);

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
    let fields = stdout(Command::new("dpkg-deb").arg("-f").arg(&b.image_deb));
    for field in [
        "Package: colinux-image-debian\n",
        "Architecture: all\n",
        "Recommends: colinux\n",
    ] {
        assert!(fields.contains(field), "{field}: {fields}");
    }
}

/// Both packages in, a guest created from the installed image by the
/// installed daemon, both packages purged: the guest stays.
#[test]
fn dpkg_installs_them_into_a_scratch_root_and_removes_them_leaving_the_guests() {
    let b = built();
    let scratch = tempfile::tempdir().unwrap();
    let target = scratch.path();
    let machine = harness::DpkgRoot::new(target).unwrap();
    let dpkg = |args: &[&str]| machine.dpkg(args);
    run(dpkg(&["--install"]).arg(&b.deb).arg(&b.image_deb));
    for package in ["colinux", "colinux-image-debian"] {
        let status = stdout(&mut dpkg(&["--status", package]));
        assert!(status.contains("Status: install ok installed"), "{status}");
    }

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

    // The installed daemon finds the installed kernel and image itself.
    let guests = target.join("var/lib/colinux");
    let told = stdout(
        Command::new(&daemon)
            .args(["--create", "box", "--data-dir"])
            .arg(&guests),
    );
    assert!(told.contains("created guest box"), "{told}");
    let conf = std::fs::read_to_string(guests.join("box.conf")).unwrap();
    let kernel = target.join("usr/lib/colinux/vmlinuz-i386");
    assert!(
        conf.contains(&format!(
            "\nkernel={} ",
            kernel.canonicalize().unwrap().display()
        )),
        "{conf}"
    );
    let disk = guests.join("box.ext4");
    let unpacked = std::fs::metadata(&disk).unwrap().len();

    run(&mut dpkg(&["--purge", "colinux", "colinux-image-debian"]));
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), unpacked);
    assert!(guests.join("box.conf").is_file(), "the guest's config went");
    for path in b.layout.iter().chain(&b.image_layout) {
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
    for dir in [
        "usr/lib/colinux",
        "usr/share/colinux",
        "usr/share/doc/colinux",
        "usr/share/doc/colinux-image-debian",
        "etc/colinux",
    ] {
        assert!(!target.join(dir).exists(), "{dir} left after purge");
    }
}

#[test]
fn rebuilds_are_bit_identical() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let (deb, image_deb, tarball) = build(&b.inputs, &b.image, dir.path());
    for (first, again) in [
        (&b.deb, &deb),
        (&b.image_deb, &image_deb),
        (&b.tarball, &tarball),
    ] {
        run(Command::new("cmp").arg(first).arg(again));
    }
    // The name dist publishes.
    assert_eq!(
        deb.file_name().unwrap().to_str().unwrap(),
        format!("colinux_{}_amd64.deb", b.inputs.version)
    );
    assert_eq!(
        image_deb.file_name().unwrap().to_str().unwrap(),
        format!("colinux-image-debian_{}_all.deb", b.inputs.version)
    );
}
