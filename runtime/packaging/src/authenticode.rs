//! Authenticode signatures on Windows executables, with osslsigncode.
//!
//! Signing is reproducible: the signing time is `SOURCE_DATE_EPOCH`, there
//! is no timestamp server, and RSA PKCS#1 v1.5 signatures are
//! deterministic, so the same input, keys and time give the same bytes.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The description osslsigncode writes into every signature (`-n`).
pub const DESCRIPTION: &str = "coLinux";

/// The development keys' names in the directory given to [`make_dev_keys`].
pub const DEV_CA: &str = "authenticode-ca.pem";
pub const DEV_CERT: &str = "authenticode.pem";
pub const DEV_KEY: &str = "authenticode.key";

/// Every development certificate says so in its subject.
pub const DEV_CA_SUBJECT: &str = "/CN=coLinux DEVELOPMENT CA, not for release";
pub const DEV_CERT_SUBJECT: &str =
    "/O=coLinux DEVELOPMENT/CN=coLinux DEVELOPMENT code signing, not for release";

/// A code-signing certificate and its key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticodeKeys {
    /// The signing certificate, then its chain, in PEM.
    pub cert: PathBuf,
    /// The private key in PEM, encrypted or not.
    pub key: PathBuf,
    /// The key's password, when it is encrypted. Given to osslsigncode on
    /// its stdin, never on a command line.
    pub password: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{tool} is not installed: `cargo xtask setup` installs {package}")]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
    },

    #[error("{}: {problem}; {fix}", path.display())]
    KeyFile {
        path: PathBuf,
        problem: String,
        fix: &'static str,
    },

    #[error("{}: wrong password for this private key (AuthenticodeKeys::password)", path.display())]
    WrongPassword { path: PathBuf },

    #[error("{}: {command} failed ({status}): {output}", file.display())]
    Tool {
        file: PathBuf,
        command: String,
        status: String,
        output: String,
    },

    #[error("{}: the Authenticode signature does not verify against {}: {output}", file.display(), ca.display())]
    Verify {
        file: PathBuf,
        ca: PathBuf,
        output: String,
    },

    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |error| Error::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Signs `input` into `output` (which may be the same file; it is replaced
/// atomically) with SHA-256 and the signing time `time`.
pub fn sign(input: &Path, output: &Path, keys: &AuthenticodeKeys, time: u64) -> Result<(), Error> {
    check_keys(keys)?;
    let partial = partial_path(output);
    let mut cmd = Command::new("osslsigncode");
    cmd.args(sign_args(input, &partial, keys, time));
    let stdin = keys.password.as_deref();
    let result = run_tool(&mut cmd, "osslsigncode", "osslsigncode", input, stdin);
    if let Err(Error::Tool { output: text, .. }) = &result {
        let _ = std::fs::remove_file(&partial);
        // OpenSSL's own words, whichever of them reach the last lines.
        let wrong = [
            "Wrong password",
            "bad decrypt",
            "bad password read",
            "problems getting password",
        ];
        if wrong.iter().any(|w| text.contains(w)) {
            return Err(Error::WrongPassword {
                path: keys.key.clone(),
            });
        }
    }
    result?;
    std::fs::rename(&partial, output).map_err(io_error(output))
}

/// The osslsigncode arguments for [`sign`]; the password, if any, is read
/// from stdin.
pub fn sign_args(input: &Path, output: &Path, keys: &AuthenticodeKeys, time: u64) -> Vec<String> {
    sign_args_with(input, output, keys, time, Path::new("-"))
}

/// [`sign_args`] with the password read from `readpass` (a file, or `-`).
pub(crate) fn sign_args_with(
    input: &Path,
    output: &Path,
    keys: &AuthenticodeKeys,
    time: u64,
    readpass: &Path,
) -> Vec<String> {
    let mut args: Vec<String> = ["sign", "-h", "sha256", "-time"].map(String::from).into();
    args.push(time.to_string());
    args.extend(["-n".into(), DESCRIPTION.into()]);
    args.extend(["-certs".into(), keys.cert.display().to_string()]);
    args.extend(["-key".into(), keys.key.display().to_string()]);
    if keys.password.is_some() {
        args.extend(["-readpass".into(), readpass.display().to_string()]);
    }
    args.extend(["-in".into(), input.display().to_string()]);
    args.extend(["-out".into(), output.display().to_string()]);
    args
}

/// Checks `file`'s Authenticode signature against the CA certificates in `ca`.
pub fn verify(file: &Path, ca: &Path) -> Result<(), Error> {
    let mut cmd = Command::new("osslsigncode");
    cmd.arg("verify")
        .arg("-CAfile")
        .arg(ca)
        .arg("-in")
        .arg(file);
    match run_tool(&mut cmd, "osslsigncode", "osslsigncode", file, None) {
        Err(Error::Tool { output, .. }) => Err(Error::Verify {
            file: file.to_path_buf(),
            ca: ca.to_path_buf(),
            output,
        }),
        other => other.map(drop),
    }
}

/// The development keys in `dir`: a CA (`authenticode-ca.pem`, for
/// [`verify`]) and a code-signing certificate signed by it with its chain
/// (`authenticode.pem`) and key (`authenticode.key`, mode 0600). Made with
/// the openssl CLI on first use, each published with a rename; reused after.
/// Two processes making them in the same `dir` at once could mix the two
/// sets: call it once, before parallel work (dist does).
pub fn make_dev_keys(dir: &Path) -> Result<AuthenticodeKeys, Error> {
    let keys = AuthenticodeKeys {
        cert: dir.join(DEV_CERT),
        key: dir.join(DEV_KEY),
        password: None,
    };
    if [DEV_CA, DEV_CERT, DEV_KEY]
        .iter()
        .all(|name| dir.join(name).is_file())
    {
        return Ok(keys);
    }
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let work = dir.join(format!(".authenticode.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir(&work).map_err(io_error(&work))?;
    let result = make_dev_keys_in(&work).and_then(|()| {
        // The CA last: its presence says the set is complete.
        for name in [DEV_KEY, DEV_CERT, DEV_CA] {
            let target = dir.join(name);
            std::fs::rename(work.join(name), &target).map_err(io_error(&target))?;
        }
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&work);
    result.map(|()| keys)
}

const EXTENSIONS: &str = "\
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = codeSigning
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

fn make_dev_keys_in(work: &Path) -> Result<(), Error> {
    let ext = work.join("extensions.cnf");
    std::fs::write(&ext, EXTENSIONS).map_err(io_error(&ext))?;
    let (ca_key, ca, key, csr, leaf) = (
        work.join("ca.key"),
        work.join(DEV_CA),
        work.join(DEV_KEY),
        work.join("leaf.csr"),
        work.join("leaf.pem"),
    );
    // The private key is 0600 from its first byte.
    for private in [&ca_key, &key] {
        create_private(private)?;
    }
    let openssl = |args: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut cmd = Command::new("openssl");
        cmd.args(args);
        run_tool(&mut cmd, "openssl", "openssl", work, None).map(drop)
    };
    let days = "3650";
    let rsa = "rsa:3072";
    openssl(&[
        &"req",
        &"-x509",
        &"-newkey",
        &rsa,
        &"-nodes",
        &"-keyout",
        &ca_key,
        &"-out",
        &ca,
        &"-days",
        &days,
        &"-subj",
        &DEV_CA_SUBJECT,
        &"-config",
        &ext,
        &"-extensions",
        &"ca",
    ])?;
    openssl(&[
        &"req",
        &"-new",
        &"-newkey",
        &rsa,
        &"-nodes",
        &"-keyout",
        &key,
        &"-out",
        &csr,
        &"-subj",
        &DEV_CERT_SUBJECT,
        &"-config",
        &ext,
    ])?;
    openssl(&[
        &"x509",
        &"-req",
        &"-in",
        &csr,
        &"-CA",
        &ca,
        &"-CAkey",
        &ca_key,
        &"-set_serial",
        &"2",
        &"-days",
        &days,
        &"-out",
        &leaf,
        &"-extfile",
        &ext,
        &"-extensions",
        &"leaf",
    ])?;
    // The chain osslsigncode embeds: the signing certificate, then the CA.
    let mut chain = std::fs::read(&leaf).map_err(io_error(&leaf))?;
    chain.extend(std::fs::read(&ca).map_err(io_error(&ca))?);
    let cert = work.join(DEV_CERT);
    std::fs::write(&cert, chain).map_err(io_error(&cert))
}

pub(crate) fn create_private(path: &Path) -> Result<(), Error> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop).map_err(io_error(path))
}

/// Problems osslsigncode would report less clearly: a missing or
/// unreadable file, an encrypted key without its password.
pub(crate) fn check_keys(keys: &AuthenticodeKeys) -> Result<(), Error> {
    const FIX: &str = "give the release key files, or make development keys with \
                       colinux_packaging::authenticode::make_dev_keys";
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|e| Error::KeyFile {
            path: path.to_path_buf(),
            problem: format!("cannot read it ({e})"),
            fix: FIX,
        })
    };
    let cert = read(&keys.cert)?;
    if !cert.contains("-----BEGIN CERTIFICATE-----") {
        return Err(Error::KeyFile {
            path: keys.cert.clone(),
            problem: "not a PEM certificate".into(),
            fix: FIX,
        });
    }
    let key = read(&keys.key)?;
    if !key.contains("PRIVATE KEY-----") {
        return Err(Error::KeyFile {
            path: keys.key.clone(),
            problem: "not a PEM private key".into(),
            fix: FIX,
        });
    }
    if key.contains("ENCRYPTED") && keys.password.is_none() {
        return Err(Error::KeyFile {
            path: keys.key.clone(),
            problem: "the key is encrypted and no password was given".into(),
            fix: "set AuthenticodeKeys::password",
        });
    }
    Ok(())
}

/// `path.partial`, beside it, for an atomic publish.
pub(crate) fn partial_path(path: &Path) -> PathBuf {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    PathBuf::from(partial)
}

/// Runs a tool about `file`; a failure names the tool, the command and the
/// last lines of its output, on one line. `stdin` is written to its input.
pub(crate) fn run_tool(
    cmd: &mut Command,
    tool: &'static str,
    package: &'static str,
    file: &Path,
    stdin: Option<&str>,
) -> Result<std::process::Output, Error> {
    let command = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::ToolMissing { tool, package },
        _ => Error::Tool {
            file: file.to_path_buf(),
            command: command.clone(),
            status: "not started".into(),
            output: e.to_string(),
        },
    })?;
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        // A tool that exits early closes its input; its status says why.
        let _ = input.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(io_error(file))?;
    if out.status.success() {
        return Ok(out);
    }
    Err(Error::Tool {
        file: file.to_path_buf(),
        command,
        status: out.status.to_string(),
        output: last_lines(&out),
    })
}

/// The last few non-empty lines of a tool's output, joined on one line.
fn last_lines(out: &std::process::Output) -> String {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(6)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(password: Option<&str>) -> AuthenticodeKeys {
        AuthenticodeKeys {
            cert: "/k/a.pem".into(),
            key: "/k/a.key".into(),
            password: password.map(String::from),
        }
    }

    #[test]
    fn sign_command_line_pins_hash_time_and_name() {
        let args = sign_args(
            Path::new("in.exe"),
            Path::new("out.exe"),
            &keys(None),
            1700000000,
        );
        assert_eq!(
            args.join(" "),
            "sign -h sha256 -time 1700000000 -n coLinux -certs /k/a.pem -key /k/a.key -in in.exe -out out.exe"
        );
        // The password goes to stdin, never on the command line.
        let args = sign_args(Path::new("i"), Path::new("o"), &keys(Some("s3cret")), 1);
        assert!(args.join(" ").contains("-readpass -"));
        assert!(!args.iter().any(|a| a.contains("s3cret")));
    }

    #[test]
    fn key_file_errors_name_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let mut k = keys(None);
        k.cert = dir.path().join("missing.pem");
        let e = sign(Path::new("x.exe"), Path::new("y.exe"), &k, 0).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("missing.pem: cannot read it"), "{text}");
        assert!(
            text.contains("make_dev_keys") && !text.contains('\n'),
            "{text}"
        );

        std::fs::write(dir.path().join("c.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
        std::fs::write(
            dir.path().join("k.key"),
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        k.cert = dir.path().join("c.pem");
        k.key = dir.path().join("k.key");
        let text = sign(Path::new("x.exe"), Path::new("y.exe"), &k, 0)
            .unwrap_err()
            .to_string();
        assert!(text.contains("k.key: the key is encrypted"), "{text}");
    }

    #[test]
    fn a_missing_tool_says_how_to_install_it() {
        let mut cmd = Command::new("/nonexistent/osslsigncode");
        let e = run_tool(
            &mut cmd,
            "osslsigncode",
            "osslsigncode",
            Path::new("f"),
            None,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "osslsigncode is not installed: `cargo xtask setup` installs osslsigncode"
        );
    }
}
