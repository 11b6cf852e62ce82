//! The quilt `series` file: one patch per line, `#` comments, blank lines,
//! and an optional `-pN` strip level after the name.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    /// The patch file, relative to the series file's directory.
    pub name: String,
    pub strip: u32,
}

pub fn parse(text: &str, origin: &Path) -> Result<Vec<Patch>> {
    let mut patches = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let name = words
            .next()
            .expect("a non-empty line has a word")
            .to_string();
        let mut strip = 1;
        for option in words {
            match option.strip_prefix("-p").map(str::parse::<u32>) {
                Some(Ok(n)) => strip = n,
                _ => bail!(
                    "{}:{}: unknown option {option:?} after {name} (only -pN is allowed)",
                    origin.display(),
                    i + 1
                ),
            }
        }
        if patches.iter().any(|p: &Patch| p.name == name) {
            bail!("{}:{}: {name} is listed twice", origin.display(), i + 1);
        }
        patches.push(Patch { name, strip });
    }
    Ok(patches)
}

/// Reads `dir/series` and checks that every patch it names exists.
pub fn load(dir: &Path) -> Result<Vec<(Patch, PathBuf)>> {
    let series = dir.join("series");
    let text = std::fs::read_to_string(&series)
        .with_context(|| format!("cannot read {}", series.display()))?;
    parse(&text, &series)?
        .into_iter()
        .map(|p| {
            let path = dir.join(&p.name);
            if !path.is_file() {
                bail!(
                    "{}: names {}, which does not exist",
                    series.display(),
                    path.display()
                );
            }
            Ok((p, path))
        })
        .collect()
}

/// The files a unified diff changes, with `strip` leading components removed.
pub fn touched_files(diff: &str, strip: u32) -> Vec<String> {
    let mut files = Vec::new();
    let mut lines = diff.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(old) = line.strip_prefix("--- ") else {
            continue;
        };
        let Some(new) = lines.peek().and_then(|l| l.strip_prefix("+++ ")) else {
            continue;
        };
        // A created file has /dev/null as its old side, a deleted one as its new side.
        let side = if new.starts_with("/dev/null") {
            old
        } else {
            new
        };
        let path = side.split('\t').next().unwrap_or(side).trim();
        let stripped: Vec<&str> = path.split('/').skip(strip as usize).collect();
        if !stripped.is_empty() {
            let file = stripped.join("/");
            if !files.contains(&file) {
                files.push(file);
            }
        }
        lines.next();
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_lines() {
        let text = "# our patches\n\ncobd.patch\ncofs.patch -p0  # comment\n  localversion.patch\n";
        let got = parse(text, Path::new("series")).unwrap();
        assert_eq!(
            got,
            vec![
                Patch {
                    name: "cobd.patch".into(),
                    strip: 1
                },
                Patch {
                    name: "cofs.patch".into(),
                    strip: 0
                },
                Patch {
                    name: "localversion.patch".into(),
                    strip: 1
                },
            ]
        );
    }

    #[test]
    fn series_errors_name_the_line() {
        let err = parse("a.patch\nb.patch -R\n", Path::new("x/series")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "x/series:2: unknown option \"-R\" after b.patch (only -pN is allowed)"
        );
        let err = parse("a.patch\na.patch\n", Path::new("series")).unwrap_err();
        assert!(err.to_string().contains("listed twice"));
    }

    #[test]
    fn touched_files_of_a_diff() {
        let diff = "From: x\n--- a/drivers/block/virtio_blk.c\n+++ b/drivers/block/virtio_blk.c\n@@ -1 +1 @@\n-a\n+b\n\
                    --- /dev/null\n+++ b/fs/9p/cofs.c\t2024-01-01\n@@ -0,0 +1 @@\n+x\n";
        assert_eq!(
            touched_files(diff, 1),
            vec!["drivers/block/virtio_blk.c", "fs/9p/cofs.c"]
        );
    }
}
