//! minisign signatures over the release artifacts.
//!
//! Keys are minisign's own files, read and written with the `minisign`
//! crate, so `minisign -V` (and any other implementation) checks what we
//! sign. The signing itself is done here: the crate's `sign` mixes random
//! noise into Ed25519, while a release must be bit-identical when rebuilt,
//! and plain Ed25519 (RFC 8032) is deterministic. The format is minisign's
//! prehashed one ("ED"): the file's BLAKE2b-512 is signed, then the
//! signature together with the trusted comment.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use blake2::{Blake2b512, Digest};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {message}", path.display())]
    Key { path: PathBuf, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A minisign secret key, ready to sign.
pub struct SigningKey {
    keynum: [u8; 8],
    secret: ed25519_compact::SecretKey,
    /// minisign's public key file, for publishing beside the artifacts.
    public_file: String,
}

impl SigningKey {
    /// Reads a minisign secret key file. `password` is None for a key
    /// stored without one.
    pub fn from_file(path: &Path, password: Option<&str>) -> Result<SigningKey, Error> {
        let key_error = |message: String| Error::Key {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let mut lines = text.lines();
        let shaped = lines
            .next()
            .is_some_and(|l| l.starts_with("untrusted comment:"))
            && lines.next().is_some_and(|l| !l.trim().is_empty());
        if !shaped {
            return Err(key_error("not a minisign secret key".into()));
        }
        let boxed = minisign::SecretKeyBox::from_string(&text)
            .map_err(|e| key_error(format!("not a minisign secret key ({e})")))?;
        // An empty password means "not encrypted" to the crate, and None
        // would make it prompt on the terminal.
        let sk = boxed
            .into_secret_key(Some(password.unwrap_or_default().to_string()))
            .map_err(|e| {
                // The crate tells a bad password only by its message.
                if !e.to_string().contains("Wrong password") {
                    return key_error(format!("not a minisign secret key ({e})"));
                }
                key_error(match password {
                    Some(_) => "wrong password for this minisign key".into(),
                    None => "this minisign key is encrypted and no password was given".into(),
                })
            })?;
        let public = minisign::PublicKey::from_secret_key(&sk)
            .and_then(|pk| pk.to_box())
            .map_err(|e| key_error(format!("cannot derive the public key ({e})")))?;
        // SecretKey's bytes: algorithms (6), KDF salt (32) and limits (16),
        // then key number (8), Ed25519 secret key (64) and checksum (32).
        let bytes = sk.to_bytes();
        let (keynum, secret) = (&bytes[54..62], &bytes[62..126]);
        Ok(SigningKey {
            keynum: keynum.try_into().expect("8 bytes"),
            secret: ed25519_compact::SecretKey::from_slice(secret)
                .map_err(|e| key_error(format!("not an Ed25519 key ({e})")))?,
            public_file: public.into_string(),
        })
    }

    /// Makes a key pair without a password into `dir` (minisign.key, mode
    /// 0600, and minisign.pub) unless one is there, and reads it.
    pub fn development(dir: &Path) -> Result<SigningKey, Error> {
        let secret = dir.join("minisign.key");
        if !secret.exists() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            // An empty password: stored unencrypted, with its checksum.
            let pair = minisign::KeyPair::generate_encrypted_keypair(Some(String::new())).map_err(
                |e| Error::Key {
                    path: secret.clone(),
                    message: e.to_string(),
                },
            )?;
            let comment = "coLinux DEVELOPMENT key, not for releases";
            let boxed = pair.sk.to_box(Some(comment)).map_err(|e| Error::Key {
                path: secret.clone(),
                message: e.to_string(),
            })?;
            let public = pair.pk.to_box().map_err(|e| Error::Key {
                path: secret.clone(),
                message: e.to_string(),
            })?;
            write_atomically(
                &dir.join("minisign.pub"),
                public.to_string().as_bytes(),
                0o644,
            )?;
            write_atomically(&secret, boxed.to_string().as_bytes(), 0o600)?;
        }
        SigningKey::from_file(&secret, None)
    }

    /// The public key file (`colinux-release.pub` beside the artifacts).
    pub fn public_file(&self) -> &str {
        &self.public_file
    }

    /// The `.minisig` file for `data`, whose trusted comment (signed too)
    /// says what was signed. Equal inputs give equal bytes.
    pub fn sign(&self, mut data: impl Read, trusted_comment: &str) -> std::io::Result<String> {
        let mut hasher = Blake2b512::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = data.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let signature = self.secret.sign(hasher.finalize(), None);
        let mut line = b"ED".to_vec();
        line.extend(self.keynum);
        line.extend(signature.as_ref());
        let mut global = signature.to_vec();
        global.extend(trusted_comment.as_bytes());
        let global = self.secret.sign(global, None);
        Ok(format!(
            "untrusted comment: signature from the coLinux release key\n{}\ntrusted comment: {trusted_comment}\n{}\n",
            base64(&line),
            base64(global.as_ref())
        ))
    }

    /// Signs a file into `<file>.minisig`.
    pub fn sign_file(&self, file: &Path, trusted_comment: &str) -> Result<PathBuf, Error> {
        let data = File::open(file).map_err(io(file))?;
        let text = self.sign(data, trusted_comment).map_err(io(file))?;
        let mut name = file.as_os_str().to_owned();
        name.push(".minisig");
        let out = PathBuf::from(name);
        write_atomically(&out, text.as_bytes(), 0o644)?;
        Ok(out)
    }
}

/// Standard base64 with padding, as minisign writes it.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&partial)
        .map_err(io(&partial))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io(&partial))?;
    std::fs::rename(&partial, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn signatures_are_deterministic_and_verify_with_the_minisign_crate() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::development(dir.path()).unwrap();
        let comment = "timestamp:1700000000\tfile:a.bin\tversion:0.1.0";
        let one = key.sign(&b"hello"[..], comment).unwrap();
        let two = key.sign(&b"hello"[..], comment).unwrap();
        assert_eq!(one, two);
        // A second read of the same key files signs the same way.
        let again = SigningKey::from_file(&dir.path().join("minisign.key"), None).unwrap();
        assert_eq!(again.sign(&b"hello"[..], comment).unwrap(), one);

        let pk = minisign::PublicKeyBox::from_string(key.public_file())
            .unwrap()
            .into_public_key()
            .unwrap();
        let sig = minisign::SignatureBox::from_string(&one).unwrap();
        assert_eq!(sig.trusted_comment().unwrap(), comment);
        minisign::verify(
            &pk,
            &sig,
            std::io::Cursor::new(b"hello"),
            true,
            false,
            false,
        )
        .unwrap();
        let sig = minisign::SignatureBox::from_string(&one).unwrap();
        assert!(minisign::verify(
            &pk,
            &sig,
            std::io::Cursor::new(b"hellO"),
            true,
            false,
            false
        )
        .is_err());
    }

    #[test]
    fn a_password_protected_key_needs_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("release.key");
        let pair = minisign::KeyPair::generate_encrypted_keypair(Some("sesame".into())).unwrap();
        std::fs::write(&path, pair.sk.to_box(None).unwrap().to_string()).unwrap();
        assert!(SigningKey::from_file(&path, Some("sesame")).is_ok());
        let wrong = SigningKey::from_file(&path, Some("open"))
            .err()
            .unwrap()
            .to_string();
        assert!(wrong.contains("wrong password"), "{wrong}");
        assert!(wrong.contains("release.key"), "{wrong}");
        let none = SigningKey::from_file(&path, None)
            .err()
            .unwrap()
            .to_string();
        assert!(none.contains("encrypted and no password"), "{none}");
    }

    #[test]
    fn a_file_that_is_no_key_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id_rsa");
        std::fs::write(&path, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
        let err = SigningKey::from_file(&path, None)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("id_rsa") && err.contains("not a minisign secret key"),
            "{err}"
        );
    }

    #[test]
    fn debian_minisign_verifies_our_signatures_and_rejects_a_changed_byte() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::development(&dir.path().join("keys")).unwrap();
        let public = dir.path().join("colinux-release.pub");
        std::fs::write(&public, key.public_file()).unwrap();
        let file = dir.path().join("artifact.bin");
        std::fs::write(&file, vec![7u8; 300_000]).unwrap();
        let comment = "timestamp:1700000000\tfile:artifact.bin\tversion:0.1.0\tcommit:abc";
        key.sign_file(&file, comment).unwrap();
        let verify = || {
            std::process::Command::new("minisign")
                .args(["-V", "-p"])
                .arg(&public)
                .arg("-m")
                .arg(&file)
                .output()
                .expect("minisign runs (cargo xtask setup installs it)")
        };
        let out = verify();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(comment), "{stdout}");
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[1234] ^= 1;
        std::fs::write(&file, bytes).unwrap();
        assert!(!verify().status.success());
    }
}
