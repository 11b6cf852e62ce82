//! `cargo xtask dist`, built for real from the pipeline's stages with the
//! development keys, and checked with tools we did not write: sha256sum,
//! minisign, osslsigncode and lintian (ci/verify-dist.sh, which the release
//! workflow runs too). The packaging modules' own tests go deeper into each
//! format (runtime/packaging/tests): the installer under Wine, the .deb
//! installed with dpkg.

use harness::workspace_root;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn xtask(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn xtask_ok(args: &[&str]) -> String {
    let out = xtask(args, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "cargo xtask {} failed:\n{stderr}",
        args.join(" ")
    );
    stderr
}

/// The error line of a run that must fail.
fn xtask_err(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = xtask(args, env);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "cargo xtask {} succeeded",
        args.join(" ")
    );
    stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in:\n{stderr}"))
        .to_string()
}

/// The bundle, built once for every test of this binary.
fn dist() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            xtask_ok(&["dist"]);
            workspace_root().join("target/dist")
        })
        .clone()
}

fn dev_ca() -> PathBuf {
    workspace_root().join("target/cache/dist/dev-keys/authenticode-ca.pem")
}

fn verify_dist(dir: &Path) -> Output {
    Command::new("bash")
        .arg(workspace_root().join("ci/verify-dist.sh"))
        .arg(dir)
        .arg(dev_ca())
        .output()
        .unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn the_bundle_holds_every_artifact_each_signed_and_foreign_tools_verify_it() {
    let dir = dist();
    let v = env!("CARGO_PKG_VERSION");
    let names = names(&dir);
    for expected in [
        format!("colinux-{v}-windows-x86_64-setup.exe"),
        format!("colinux_{v}_amd64.deb"),
        format!("colinux-image-debian_{v}_all.deb"),
        format!("colinux-{v}-linux-x86_64.tar.gz"),
        format!("colinux-{v}.cdx.json"),
        "colinux-release.pub".to_string(),
        "SHA256SUMS".to_string(),
        "manifest.json".to_string(),
    ] {
        assert!(names.contains(&expected), "{expected} missing: {names:?}");
    }
    for suffix in [".ext4.zst", ".tar.gz", ".packages"] {
        assert!(
            names
                .iter()
                .any(|n| n.starts_with(&format!("colinux-{v}-debian-")) && n.ends_with(suffix)),
            "no debian image {suffix}: {names:?}"
        );
    }
    // Every file but the public key carries a signature, made last.
    for name in names.iter().filter(|n| !n.ends_with(".minisig")) {
        if name != "colinux-release.pub" {
            assert!(
                names.contains(&format!("{name}.minisig")),
                "{name} is not signed: {names:?}"
            );
        }
    }

    let out = verify_dist(&dir);
    assert!(
        out.status.success(),
        "ci/verify-dist.sh: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The SBOM names what ships: the daemon's crates, with their targets.
    let sbom: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("colinux-{v}.cdx.json"))).unwrap(),
    )
    .unwrap();
    let components = sbom["components"].as_array().unwrap();
    let targets_of = |name: &str| -> Vec<String> {
        let found = components.iter().find(|c| c["name"] == name);
        let properties = found.and_then(|c| c["properties"].as_array());
        properties
            .into_iter()
            .flatten()
            .filter(|p| p["name"] == "colinux:target")
            .map(|p| p["value"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        targets_of("ruzstd"),
        ["x86_64-pc-windows-gnu", "x86_64-unknown-linux-gnu"]
    );
    assert!(targets_of("indicatif").is_empty(), "a tool's crate ships");
    assert!(components.iter().any(|c| c["purl"]
        .as_str()
        .unwrap()
        .starts_with("pkg:deb/debian/systemd@")));

    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["version"], v);
    assert!(
        manifest["signed_with"]
            .as_str()
            .unwrap()
            .contains("DEVELOPMENT"),
        "{manifest}"
    );
    assert!(manifest["stages"]["target/kernel/x86_64"]["outputs"].is_array());
    assert!(manifest["stages"]["target/images/debian"]["suite"].is_string());
    let sig = std::fs::read_to_string(dir.join("SHA256SUMS.minisig")).unwrap();
    assert!(sig.contains("file:SHA256SUMS"), "{sig}");
    assert!(sig.contains("DEVELOPMENT KEY"), "{sig}");
}

#[test]
fn a_changed_byte_fails_the_signature_checks() {
    let dir = dist();
    let copy = tempfile::tempdir().unwrap();
    for name in names(&dir) {
        std::fs::copy(dir.join(&name), copy.path().join(&name)).unwrap();
    }
    let setup = names(copy.path())
        .into_iter()
        .find(|n| n.ends_with("-setup.exe"))
        .unwrap();
    let path = copy.path().join(&setup);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();

    let minisign = Command::new("minisign")
        .args(["-Vq", "-p"])
        .arg(copy.path().join("colinux-release.pub"))
        .arg("-m")
        .arg(&path)
        .status()
        .unwrap();
    assert!(!minisign.success(), "minisign accepted a changed {setup}");
    let authenticode = Command::new("osslsigncode")
        .args(["verify", "-CAfile"])
        .arg(dev_ca())
        .arg("-in")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        !authenticode.status.success(),
        "osslsigncode accepted a changed {setup}"
    );
    assert!(!verify_dist(copy.path()).status.success());
}

#[test]
fn an_unchanged_dist_is_a_no_op_and_a_clean_rebuild_is_bit_identical() {
    let dir = dist();
    let before = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    let again = xtask_ok(&["dist"]);
    assert!(again.contains("is up to date"), "{again}");
    let verified = xtask_ok(&["dist", "--verify-reproducible"]);
    assert!(verified.contains("reproducible"), "{verified}");
    assert_eq!(
        std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap(),
        before
    );
}

#[test]
fn release_keys_are_required_checked_and_never_half_published() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("dist");
    let out_arg = out.to_str().unwrap();
    let no_env = [
        ("COLINUX_MINISIGN_KEY", ""),
        ("COLINUX_AUTHENTICODE_CERT", ""),
        ("COLINUX_AUTHENTICODE_KEY", ""),
    ];
    let missing = xtask_err(&["dist", "--release", "--out", out_arg], &[]);
    assert!(
        missing.contains("--minisign-key") && missing.contains("COLINUX_MINISIGN_KEY"),
        "{missing}"
    );

    let key = t.path().join("release.key");
    std::fs::write(&key, "untrusted comment: x\nAAAA\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Every key given, by option, so only the key file's own faults show.
    let with_key = || {
        let key_arg = key.to_str().unwrap();
        let keys = [
            "--minisign-key",
            key_arg,
            "--authenticode-cert",
            key_arg,
            "--authenticode-key",
            key_arg,
        ];
        let args: Vec<&str> = ["dist", "--release", "--out", out_arg]
            .into_iter()
            .chain(keys)
            .collect();
        xtask_err(&args, &no_env)
    };
    let readable = with_key();
    assert!(
        readable.contains("release.key") && readable.contains("chmod 600"),
        "{readable}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let garbage = with_key();
    assert!(
        garbage.contains("release.key") && garbage.contains("not a minisign secret key"),
        "{garbage}"
    );
    assert!(!out.exists(), "a failed dist left {}", out.display());
}
