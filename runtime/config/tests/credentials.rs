//! `root_key=` and `root_password_hash=` (and the ini's `[credentials]`):
//! root's login for a guest's first start. A private key or a plain
//! password is refused, and no message ever shows the hash's value.

use std::path::Path;

use colinux_config::{parse_args, parse_ini_str, parse_str};

const HASH: &str = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7";

fn keys(dir: &Path) {
    std::fs::write(
        dir.join("id.pub"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI me@desk\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("id"),
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----\n",
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "my key is on the other laptop\n").unwrap();
    std::fs::write(dir.join("k"), "a kernel").unwrap();
}

#[test]
fn both_keys_parse_and_the_hash_is_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    keys(dir.path());
    let s = parse_args(
        [
            "kernel=k",
            "root_key=id.pub",
            &format!("root_password_hash={HASH}"),
        ],
        dir.path(),
    )
    .unwrap();
    assert_eq!(
        s.root_key.as_ref().unwrap().value,
        dir.path().join("id.pub")
    );
    assert_eq!(s.root_password_hash.as_ref().unwrap().value, HASH);
    let shown = s.describe(None);
    assert!(!shown.contains(HASH), "{shown}");
    assert!(
        shown.contains("root_password_hash=(given, not shown)"),
        "{shown}"
    );
    assert!(
        !s.root_password_hash
            .as_ref()
            .unwrap()
            .origin
            .to_string()
            .contains("$y$"),
        "the origin quotes the hash"
    );
    // The config written for the installer keeps it, and reads back.
    let written = s.to_config();
    let again = parse_str(&written, &dir.path().join("colinux.conf")).unwrap();
    assert_eq!(again.root_password_hash.unwrap().value, HASH);
    assert_eq!(again.root_key.unwrap().value, dir.path().join("id.pub"));
}

#[test]
fn a_plain_password_is_refused_without_being_printed() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["hunter2", "$6$", "$6$salt$", "$6$a b$c"] {
        let token = format!("root_password_hash={bad}");
        let err = parse_args(["kernel=k", token.as_str()], dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("give the hash, not the password"), "{err}");
        assert!(
            err.starts_with("command line argument 2: root_password_hash=(not shown):"),
            "{err}"
        );
        if bad.len() > 3 {
            assert!(!err.contains(bad), "the error shows the value: {err}");
        }
    }
    let ini = parse_ini_str(
        "[credentials]\nroot_password_hash = hunter2\n",
        &dir.path().join("desk.ini"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        !ini.contains("hunter2") && ini.contains("desk.ini:2"),
        "{ini}"
    );
}

#[test]
fn the_key_file_must_be_a_public_key() {
    let dir = tempfile::tempdir().unwrap();
    keys(dir.path());
    let check = |name: &str| {
        let token = format!("root_key={name}");
        parse_args(["kernel=k", token.as_str()], dir.path())
            .unwrap()
            .check_files()
            .map_err(|e| e.to_string())
    };
    assert_eq!(check("id.pub"), Ok(()));
    let private = check("id").unwrap_err();
    assert!(
        private.contains("root_key=id:")
            && private.contains("private key, which never goes into a guest"),
        "{private}"
    );
    let notes = check("notes.txt").unwrap_err();
    assert!(notes.contains("not an OpenSSH public key line"), "{notes}");
    let missing = check("none.pub").unwrap_err();
    assert!(missing.contains("does not exist"), "{missing}");
}

#[test]
fn the_ini_has_a_credentials_section() {
    let dir = tempfile::tempdir().unwrap();
    keys(dir.path());
    let s = parse_ini_str(
        &format!("[credentials]\nroot_key = id.pub\nroot_password_hash = \"{HASH}\"\n"),
        &dir.path().join("desk.ini"),
    )
    .unwrap();
    assert_eq!(s.root_key.unwrap().value, dir.path().join("id.pub"));
    assert_eq!(s.root_password_hash.unwrap().value, HASH);
    // Left empty by an installer's template: no credential.
    let empty = parse_ini_str(
        "[credentials]\nroot_key =\nroot_password_hash =\n",
        &dir.path().join("desk.ini"),
    )
    .unwrap();
    assert!(empty.root_key.is_none() && empty.root_password_hash.is_none());
    let unknown = parse_ini_str(
        "[credentials]\npassword = x\n",
        &dir.path().join("desk.ini"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        unknown.contains("root_key or root_password_hash"),
        "{unknown}"
    );
}
