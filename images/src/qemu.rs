//! `qemu-img`, for every container format other than raw.
//!
//! Reads go through qemu's own `raw` driver with `offset` and `size`, which
//! turns any byte range of any image into a plain file of its own:
//! `json:{"driver":"raw","offset":…,"size":…,"file":{"driver":"qcow2",…}}`.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;

use crate::error::{Error, ErrorKind, Result};
use crate::Progress;

const QEMU_IMG: &str = "qemu-img";

/// The `json:` filename that exposes bytes `offset..offset+size` of `path`.
pub fn range_source(path: &Path, driver: &str, offset: u64, size: u64) -> String {
    let file = json!({ "driver": "file", "filename": path });
    let image = if driver == "raw" {
        file
    } else {
        json!({ "driver": driver, "file": file })
    };
    let spec = json!({ "driver": "raw", "offset": offset, "size": size, "file": image });
    format!("json:{spec}")
}

fn command_line(args: &[&str]) -> String {
    std::iter::once(QEMU_IMG)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

fn spawn_error(path: &Path, args: &[&str], e: io::Error) -> Error {
    let message = if e.kind() == io::ErrorKind::NotFound {
        "qemu-img is not installed; install Debian's qemu-utils (`cargo xtask setup` does)"
            .to_string()
    } else {
        e.to_string()
    };
    Error::new(
        path,
        ErrorKind::Tool {
            command: command_line(args),
            message,
        },
    )
}

/// Runs qemu-img to completion, returning its stdout; a failure carries the
/// last line qemu-img wrote to stderr, which is where it explains itself.
fn run(path: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new(QEMU_IMG)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(path, args, e))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    Err(tool_failure(path, args, &out.stderr))
}

fn tool_failure(path: &Path, args: &[&str], stderr: &[u8]) -> Error {
    let stderr = String::from_utf8_lossy(stderr);
    let message = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no error message")
        .trim()
        .to_string();
    Error::new(
        path,
        ErrorKind::Tool {
            command: command_line(args),
            message,
        },
    )
}

/// `qemu-img info --output=json` (with `extra` arguments), parsed.
fn info(path: &Path, driver: &str, extra: &[&str]) -> Result<serde_json::Value> {
    let path_str = path.to_string_lossy();
    let mut args = vec!["info", "--output=json", "-f", driver];
    args.extend_from_slice(extra);
    args.push(&path_str);
    let stdout = run(path, &args)?;
    serde_json::from_slice(&stdout)
        .map_err(|e| tool_failure(path, &args, format!("unreadable JSON: {e}").as_bytes()))
}

/// The virtual disk size of an image in the given qemu format.
pub fn virtual_size(path: &Path, driver: &str) -> Result<u64> {
    info(path, driver, &[])?["virtual-size"]
        .as_u64()
        .ok_or_else(|| {
            tool_failure(
                path,
                &["info", "--output=json"],
                b"no virtual-size in its answer",
            )
        })
}

/// `qemu-img info --backing-chain` of the image, one entry per file:
/// qemu-img prints a single object for an image without a backing file.
fn chain_info(path: &Path, driver: &str) -> Result<Vec<serde_json::Value>> {
    Ok(match info(path, driver, &["--backing-chain"])? {
        serde_json::Value::Array(images) => images,
        one => vec![one],
    })
}

/// The bytes the image and its backing chain take on disk: no extraction
/// writes more data than they hold, unless their clusters are compressed.
pub fn allocated(path: &Path, driver: &str) -> Result<u64> {
    Ok(chain_info(path, driver)?
        .iter()
        .filter_map(|i| i["actual-size"].as_u64())
        .sum())
}

/// The image and every file of its backing chain, in order, as qemu-img
/// resolves them. A backing file given as a `json:{…}` specification names
/// no single file and is left out.
pub fn backing_chain(path: &Path, driver: &str) -> Result<Vec<PathBuf>> {
    Ok(chain_info(path, driver)?
        .iter()
        .filter_map(|image| image["filename"].as_str())
        .filter(|name| !name.starts_with("json:"))
        .map(PathBuf::from)
        .collect())
}

/// Copies bytes `offset..offset+size` of the image into `out`, a file or
/// block device already `size` bytes long and reading as zeros there:
/// qemu-img writes only the data, so a file stays sparse.
pub fn extract(
    path: &Path,
    driver: &str,
    offset: u64,
    size: u64,
    out: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    let source = range_source(path, driver, offset, size);
    let out_str = out.to_string_lossy();
    let args = [
        "convert",
        "-p",
        "-n",
        "--target-is-zero",
        "-O",
        "raw",
        &source,
        &out_str,
    ];
    convert_with_progress(path, &args, size, progress)
}

/// Converts a raw disk image into qcow2.
pub fn raw_to_qcow2(raw: &Path, out: &Path, size: u64, progress: &dyn Progress) -> Result<()> {
    let raw_str = raw.to_string_lossy();
    let out_str = out.to_string_lossy();
    let args = [
        "convert", "-p", "-f", "raw", "-O", "qcow2", &raw_str, &out_str,
    ];
    convert_with_progress(raw, &args, size, progress)
}

/// Runs `qemu-img convert -p`, translating its "(12.34/100%)" lines.
fn convert_with_progress(
    path: &Path,
    args: &[&str],
    size: u64,
    progress: &dyn Progress,
) -> Result<()> {
    let mut child = Command::new(QEMU_IMG)
        .args(args)
        // Its errors in English: a full disk is recognised by its message.
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(path, args, e))?;
    // stderr is drained on a thread so a chatty qemu-img can never block.
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let stderr_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    progress.start(size);
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut pending = Vec::new();
    let mut chunk = [0u8; 256];
    loop {
        let n = stdout.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            break;
        }
        pending.extend_from_slice(&chunk[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\r' || b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if let Some(percent) = parse_percent(&line) {
                progress.update((size as f64 * percent / 100.0) as u64);
            }
        }
    }
    // qemu-img shares our process group, so Ctrl-C stops it too; its
    // failure then removes our temporary file like any other.
    let status = child.wait().map_err(|e| spawn_error(path, args, e))?;
    if progress.cancelled() {
        let interrupted = std::io::Error::new(std::io::ErrorKind::Interrupted, "interrupted");
        return Err(Error::io(path, "finish", interrupted));
    }
    let stderr = stderr_reader.join().unwrap_or_default();
    if !status.success() {
        return Err(tool_failure(path, args, &stderr));
    }
    progress.update(size);
    Ok(())
}

fn parse_percent(line: &[u8]) -> Option<f64> {
    let line = std::str::from_utf8(line).ok()?.trim();
    let inner = line.strip_prefix('(')?.split('/').next()?;
    inner.trim().parse().ok()
}

/// Reads bytes `offset..offset+size` of the image into memory.
pub fn read_range(path: &Path, driver: &str, offset: u64, size: u64) -> Result<Vec<u8>> {
    let dir =
        tempfile::tempdir().map_err(|e| Error::io(path, "create a temporary directory", e))?;
    let out = dir.path().join("range.raw");
    let source = range_source(path, driver, offset, size);
    let out_str = out.to_string_lossy();
    run(path, &["convert", "-O", "raw", &source, &out_str])?;
    let bytes = std::fs::read(&out).map_err(|e| Error::io(&out, "read it", e))?;
    if bytes.len() as u64 != size {
        return Err(tool_failure(
            path,
            &["convert", &source],
            format!("returned {} bytes instead of {size}", bytes.len()).as_bytes(),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_parse() {
        assert_eq!(parse_percent(b"    (12.50/100%)\r"), Some(12.5));
        assert_eq!(parse_percent(b"(100.00/100%)\n"), Some(100.0));
        assert_eq!(parse_percent(b"garbage"), None);
    }

    #[test]
    fn range_source_escapes_the_path() {
        let s = range_source(Path::new("/tmp/a \"b\".qcow2"), "qcow2", 32256, 1024);
        assert!(s.starts_with("json:{"));
        let v: serde_json::Value = serde_json::from_str(&s[5..]).unwrap();
        assert_eq!(v["offset"], 32256);
        assert_eq!(v["file"]["file"]["filename"], "/tmp/a \"b\".qcow2");
    }
}
