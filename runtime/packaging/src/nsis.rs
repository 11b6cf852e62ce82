//! The Windows installer, built with Debian's native makensis.
//!
//! The script is `windows/colinux.nsi` (its header lists the defines);
//! every input path and the version reach it as `-D` defines, so the same
//! inputs build the same bytes. With keys, the uninstaller is signed while
//! makensis builds it (`!uninstfinalize`) and the installer right after.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::authenticode::{self, AuthenticodeKeys};

/// The script and the default config beside it, in this source tree.
pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/windows/colinux.nsi");
pub const DEFAULT_CONF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/windows/colinux.conf");

/// How many `docs` the script takes (`DOC_1` … `DOC_16`).
pub const MAX_DOCS: usize = 16;

/// The kernel architectures, and the name each kernel gets when installed.
pub const KERNELS: [(&str, &str, &str); 2] = [
    ("i386", "KERNEL_I386", "bzImage-i386"),
    ("x86_64", "KERNEL_X86_64", "bzImage-x86_64"),
];

/// What goes into the installer.
#[derive(Debug, Clone)]
pub struct InstallerSpec {
    /// The release version, e.g. `0.1.0` or `0.2.0-rc1`.
    pub version: String,
    /// colinux-daemon.exe and colinux-console.exe, already signed if they are to be.
    pub daemon_exe: PathBuf,
    pub console_exe: PathBuf,
    /// `("i386" | "x86_64", bzImage)`. The i386 one is required: the default
    /// config boots it.
    pub kernels: Vec<(String, PathBuf)>,
    /// The stock image (`debian.ext4.zst`): installed as a component, on by
    /// default, and a guest is created from it.
    pub image: Option<PathBuf>,
    /// Installed beside the programs under their own names (README.md, COPYING…).
    pub docs: Vec<PathBuf>,
    /// Sign the uninstaller and the installer with these keys at this time
    /// (`SOURCE_DATE_EPOCH`).
    pub sign: Option<(AuthenticodeKeys, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("installer input {}: {problem}", path.display())]
    Input { path: PathBuf, problem: String },

    #[error("installer: {0}")]
    Spec(String),

    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    #[error(transparent)]
    Tool(#[from] authenticode::Error),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |error| Error::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Builds the installer into `out` (replaced atomically), signed if
/// `spec.sign` says so.
pub fn build(spec: &InstallerSpec, out: &Path) -> Result<(), Error> {
    check_inputs(spec)?;
    if let Some((keys, _)) = &spec.sign {
        authenticode::check_keys(keys)?;
        // makensis would only say that its !uninstfinalize command failed.
        let mut version = Command::new("osslsigncode");
        version.arg("--version");
        authenticode::run_tool(
            &mut version,
            "osslsigncode",
            "osslsigncode",
            Path::new(SCRIPT),
            None,
        )?;
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .ok_or_else(|| Error::Spec(format!("{}: not a file name", out.display())))?;
    std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    // Beside the output, so that the last step is a rename.
    let mut work_name = OsString::from(".");
    work_name.push(name);
    work_name.push(format!(".partial-{}", std::process::id()));
    let work = parent.join(work_name);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir(&work).map_err(io_error(&work))?;
    let result = build_in(spec, &work, out);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn build_in(spec: &InstallerSpec, work: &Path, out: &Path) -> Result<(), Error> {
    let sign_script = match &spec.sign {
        Some((keys, time)) => Some(write_sign_script(work, keys, *time)?),
        None => None,
    };
    let unsigned = work.join("installer.exe");
    let args = makensis_args(spec, Path::new(SCRIPT), &unsigned, sign_script.as_deref())?;
    let mut cmd = Command::new("makensis");
    cmd.args(&args).current_dir(work);
    authenticode::run_tool(&mut cmd, "makensis", "nsis", Path::new(SCRIPT), None)?;
    match &spec.sign {
        Some((keys, time)) => authenticode::sign(&unsigned, out, keys, *time)?,
        None => std::fs::rename(&unsigned, out).map_err(io_error(out))?,
    }
    Ok(())
}

/// The makensis command line: quiet but for warnings, and every input a define.
pub fn makensis_args(
    spec: &InstallerSpec,
    script: &Path,
    outfile: &Path,
    sign_script: Option<&Path>,
) -> Result<Vec<OsString>, Error> {
    let mut args: Vec<OsString> = vec!["-V2".into(), "-INPUTCHARSET".into(), "UTF8".into()];
    let mut define = |name: &str, value: &str| args.push(format!("-D{name}={value}").into());
    define("VERSION", &spec.version);
    define("VERSION_QUAD", &version_quad(&spec.version)?);
    define("OUTFILE", &nsis_path(outfile)?);
    define("DAEMON_EXE", &nsis_path(&spec.daemon_exe)?);
    define("CONSOLE_EXE", &nsis_path(&spec.console_exe)?);
    define("DEFAULT_CONF", &nsis_path(Path::new(DEFAULT_CONF))?);
    for (arch, path) in &spec.kernels {
        let Some((_, def, _)) = KERNELS.iter().find(|(a, _, _)| a == arch) else {
            return Err(Error::Spec(format!(
                "kernel architecture {arch:?}: expected i386 or x86_64"
            )));
        };
        define(def, &nsis_path(path)?);
    }
    if let Some(image) = &spec.image {
        define("IMAGE_DEBIAN", &nsis_path(image)?);
    }
    for (i, doc) in spec.docs.iter().enumerate() {
        define(&format!("DOC_{}", i + 1), &nsis_path(doc)?);
        define(&format!("DOC_{}_NAME", i + 1), &doc_name(doc)?);
    }
    if let Some(script) = sign_script {
        define("UNINSTALLER_SIGN_SCRIPT", &nsis_path(script)?);
    }
    args.push(script.into());
    Ok(args)
}

/// Every input exists, once; the kernels and docs fit the script.
fn check_inputs(spec: &InstallerSpec) -> Result<(), Error> {
    if spec.version.is_empty() || spec.version.contains(['"', '$', '\n', '\r']) {
        return Err(Error::Spec(format!(
            "version {:?}: expected something like 0.1.0",
            spec.version
        )));
    }
    let kernels = spec.kernels.iter().map(|(_, p)| p);
    for path in [&spec.daemon_exe, &spec.console_exe]
        .into_iter()
        .chain(kernels)
        .chain(&spec.image)
        .chain(&spec.docs)
    {
        if !path.is_file() {
            return Err(Error::Input {
                path: path.clone(),
                problem: "is not a file (build it first, or check the path)".into(),
            });
        }
    }
    for (arch, _, _) in KERNELS {
        if spec.kernels.iter().filter(|(a, _)| a == arch).count() > 1 {
            return Err(Error::Spec(format!("two {arch} kernels")));
        }
    }
    if !spec.kernels.iter().any(|(a, _)| a == "i386") {
        return Err(Error::Spec(
            "no i386 kernel: the installer's default colinux.conf boots bzImage-i386".into(),
        ));
    }
    if spec.docs.len() > MAX_DOCS {
        return Err(Error::Spec(format!(
            "{} docs; the script takes at most {MAX_DOCS}",
            spec.docs.len()
        )));
    }
    let mut names = Vec::new();
    for doc in &spec.docs {
        let name = doc_name(doc)?;
        let taken = [
            "colinux-daemon.exe",
            "colinux-console.exe",
            "colinux.conf",
            "uninstall.exe",
        ]
        .iter()
        .chain(KERNELS.iter().map(|(_, _, n)| n))
        .any(|n| n.eq_ignore_ascii_case(&name));
        if taken || names.iter().any(|n: &String| n.eq_ignore_ascii_case(&name)) {
            return Err(Error::Input {
                path: doc.clone(),
                problem: format!("another installed file is already named {name}"),
            });
        }
        names.push(name);
    }
    Ok(())
}

/// Windows wants four numbers in VIProductVersion: `0.2.0-rc1` → `0.2.0.0`.
fn version_quad(version: &str) -> Result<String, Error> {
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let mut parts: Vec<u16> = Vec::new();
    for part in core.split('.') {
        let number = part.parse().map_err(|_| {
            Error::Spec(format!(
                "version {version:?}: expected numbers like 0.1.0 (up to four, each at most 65535)"
            ))
        })?;
        parts.push(number);
    }
    if parts.len() > 4 {
        return Err(Error::Spec(format!(
            "version {version:?}: more than four numbers"
        )));
    }
    parts.resize(4, 0);
    Ok(parts
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join("."))
}

/// A path as it goes between NSIS's double quotes: UTF-8, and without the
/// characters NSIS would read as the end of the string or a variable.
fn nsis_path(path: &Path) -> Result<String, Error> {
    match path.to_str() {
        Some(text) if !text.contains(['"', '$', '`', '\n', '\r']) => Ok(text.to_string()),
        _ => Err(Error::Input {
            path: path.to_path_buf(),
            problem:
                "the installer script cannot name this path (not UTF-8, or it holds \", $ or `); \
                      move the file"
                    .into(),
        }),
    }
}

fn doc_name(doc: &Path) -> Result<String, Error> {
    doc.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| Error::Input {
            path: doc.to_path_buf(),
            problem: "has no UTF-8 file name".into(),
        })
        .and_then(|name| nsis_path(Path::new(&name)).map(|_| name))
}

/// The `!uninstfinalize` command: osslsigncode on the uninstaller makensis
/// hands over as `$1`, in place. The password, if any, sits in a 0600 file
/// in `work`, which is removed after the build.
fn write_sign_script(work: &Path, keys: &AuthenticodeKeys, time: u64) -> Result<PathBuf, Error> {
    const IN: &str = "\u{1}in";
    const OUT: &str = "\u{1}out";
    let passfile = work.join("password");
    if let Some(password) = &keys.password {
        authenticode::create_private(&passfile)?;
        std::fs::write(&passfile, password).map_err(io_error(&passfile))?;
    }
    let args = authenticode::sign_args_with(Path::new(IN), Path::new(OUT), keys, time, &passfile);
    let words: Vec<String> = args
        .iter()
        .map(|a| match a.as_str() {
            IN => "\"$1\"".to_string(),
            OUT => "\"$1.signed\"".to_string(),
            other => sh_quote(other),
        })
        .collect();
    let script = format!(
        "#!/bin/sh\n# Signs the uninstaller makensis hands over, in place (!uninstfinalize).\nset -e\n\
         osslsigncode {} >&2\nmv -f \"$1.signed\" \"$1\"\n",
        words.join(" ")
    );
    let path = work.join("sign-uninstaller.sh");
    std::fs::write(&path, script).map_err(io_error(&path))?;
    Ok(path)
}

fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path) -> InstallerSpec {
        let file = |name: &str| {
            let path = dir.join(name);
            std::fs::write(&path, name).unwrap();
            path
        };
        InstallerSpec {
            version: "0.2.0-rc1".into(),
            daemon_exe: file("colinux-daemon.exe"),
            console_exe: file("colinux-console.exe"),
            kernels: vec![
                ("i386".into(), file("bzImage")),
                ("x86_64".into(), file("bzImage64")),
            ],
            image: Some(file("debian.ext4.zst")),
            docs: vec![file("README.md"), file("COPYING")],
            sign: None,
        }
    }

    #[test]
    fn every_input_is_a_define() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path());
        let args = makensis_args(
            &spec,
            Path::new("/s/colinux.nsi"),
            Path::new("/o/i.exe"),
            None,
        )
        .unwrap();
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let d = dir.path().display();
        for expected in [
            "-DVERSION=0.2.0-rc1".to_string(),
            "-DVERSION_QUAD=0.2.0.0".into(),
            "-DOUTFILE=/o/i.exe".into(),
            format!("-DDAEMON_EXE={d}/colinux-daemon.exe"),
            format!("-DCONSOLE_EXE={d}/colinux-console.exe"),
            format!("-DKERNEL_I386={d}/bzImage"),
            format!("-DKERNEL_X86_64={d}/bzImage64"),
            format!("-DIMAGE_DEBIAN={d}/debian.ext4.zst"),
            format!("-DDOC_2={d}/COPYING"),
            "-DDOC_2_NAME=COPYING".into(),
            format!("-DDEFAULT_CONF={DEFAULT_CONF}"),
        ] {
            assert!(args.contains(&expected), "{expected} missing from {args:?}");
        }
        assert_eq!(args.last().unwrap(), "/s/colinux.nsi");
        assert!(!args.iter().any(|a| a.contains("UNINSTALLER_SIGN")));
    }

    #[test]
    fn versions_become_four_numbers() {
        assert_eq!(version_quad("0.1.0").unwrap(), "0.1.0.0");
        assert_eq!(version_quad("1.2.3.4").unwrap(), "1.2.3.4");
        assert_eq!(version_quad("2+git.5").unwrap(), "2.0.0.0");
        assert!(version_quad("1.2.3.4.5").is_err());
        assert!(version_quad("one").is_err());
        assert!(version_quad("70000.0").is_err());
    }

    #[test]
    fn bad_inputs_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path());
        s.kernels.retain(|(a, _)| a == "x86_64");
        let e = check_inputs(&s).unwrap_err().to_string();
        assert!(e.contains("no i386 kernel"), "{e}");

        let mut s = spec(dir.path());
        s.docs.push(dir.path().join("missing.txt"));
        let e = check_inputs(&s).unwrap_err().to_string();
        assert!(e.contains("missing.txt: is not a file"), "{e}");

        let mut s = spec(dir.path());
        let other = dir.path().join("sub");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("readme.md"), "x").unwrap();
        s.docs.push(other.join("readme.md"));
        let e = check_inputs(&s).unwrap_err().to_string();
        assert!(e.contains("already named readme.md"), "{e}");

        let mut s = spec(dir.path());
        s.kernels[1].0 = "arm64".into();
        let e = makensis_args(&s, Path::new("x.nsi"), Path::new("o.exe"), None).unwrap_err();
        assert!(e.to_string().contains("\"arm64\""), "{e}");
        assert!(nsis_path(Path::new("/a/$x")).is_err());
        assert!(nsis_path(Path::new("/a/\"x")).is_err());
    }

    #[test]
    fn the_uninstaller_signing_script_quotes_and_hides_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let keys = AuthenticodeKeys {
            cert: "/k/it's.pem".into(),
            key: "/k/a.key".into(),
            password: Some("pa ss".into()),
        };
        let script = write_sign_script(dir.path(), &keys, 42).unwrap();
        let text = std::fs::read_to_string(script).unwrap();
        assert!(
            text.contains(r"'-certs' '/k/it'\''s.pem'") && text.contains("'-time' '42'"),
            "{text}"
        );
        assert!(text.contains(r#"'-in' "$1" '-out' "$1.signed""#), "{text}");
        assert!(!text.contains("pa ss"), "{text}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("password")).unwrap(),
            "pa ss"
        );
    }
}
