//! `cargo xtask test`: every test of the project, after installing what they need.

use anyhow::Result;
use xshell::{cmd, Shell};

use crate::runtime::Target;
use harness::wine::Wine;

/// Install the host dependencies (as `cargo xtask setup` does), run clippy
/// with warnings denied, then every test in the workspace (unit tests, the
/// fuzz targets' seeds, and the integration tests that drive the real
/// tools, build the kernel and boot it under QEMU), then the runtime's
/// tests built for Windows and run under Wine, then check that clean
/// rebuilds of the runtime, the i386 smoke-test initramfs, the debian and
/// ubuntu images and the i386 kernel are bit-identical to what the tests
/// built (`--verify-reproducible`). This is what CI runs.
#[derive(clap::Args)]
pub struct Args {
    /// Only the runtime's tests built for Windows, under Wine (after setup).
    #[arg(long)]
    windows_only: bool,
    /// Extra arguments for every `cargo test` run, such as a test name
    /// filter. With these, the reproducibility checks are skipped.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cargo_args: Vec<String>,
}

/// The packages whose tests also run as Windows binaries under Wine.
const WINDOWS_TESTED: [&str; 3] = ["colinux-config", "colinux-driver", "colinux-daemon"];

pub fn run(args: Args) -> Result<()> {
    // Now, while it is still ours: tests that `cargo run` xtask with other
    // feature unification replace the file, and /proc/self/exe then reads
    // "… (deleted)".
    let xtask = std::env::current_exe()?;
    crate::setup::run(crate::setup::Args::default())?;
    let sh = Shell::new()?;
    sh.change_dir(crate::stage::root());
    let cargo_args = &args.cargo_args;
    if !args.windows_only {
        lint_ci(&sh)?;
        clippy(&sh)?;
        cmd!(sh, "cargo test --workspace --locked {cargo_args...}").run()?;
    }
    windows_tests(&sh, cargo_args)?;
    if !args.windows_only && cargo_args.is_empty() {
        // Each stage rebuilds from scratch what the tests built and
        // published; the kernel, a full build without ccache, is slowest.
        cmd!(sh, "{xtask} runtime --verify-reproducible").run()?;
        cmd!(sh, "{xtask} initramfs --arch i386 --verify-reproducible").run()?;
        cmd!(sh, "{xtask} image --distro debian --verify-reproducible").run()?;
        cmd!(sh, "{xtask} image --distro ubuntu --verify-reproducible").run()?;
        cmd!(sh, "{xtask} kernel --arch i386 --verify-reproducible").run()?;
    }
    Ok(())
}

/// The workflows (actionlint, which runs shellcheck on their scripts), the
/// CI scripts and the scripts the images run (shellcheck): a broken release
/// workflow is only found on a tag otherwise, a broken guest script only at
/// a guest's boot.
fn lint_ci(sh: &Shell) -> Result<()> {
    let actionlint = crate::setup::pypi_program("actionlint");
    cmd!(sh, "{actionlint} -no-color -oneline").run()?;
    cmd!(sh, "shellcheck .ci/run ci/test.sh ci/verify-dist.sh").run()?;
    cmd!(
        sh,
        "shellcheck -s sh recipes/hooks/comosix.sh recipes/hooks/comosix-head.sh recipes/hooks/comosix-node.sh recipes/hooks/slim.sh recipes/overlays/comosix/usr/lib/comosix/seed xtask/src/image/firstboot/credentials"
    )
    .run()?;
    Ok(())
}

/// Clippy with warnings denied (the workspace's `[lints]` among them): the
/// whole workspace for Linux, and the runtime's crates for Windows, whose
/// `cfg(windows)` code only that build sees.
fn clippy(sh: &Shell) -> Result<()> {
    cmd!(
        sh,
        "cargo clippy --workspace --all-targets --locked -- -D warnings"
    )
    .run()?;
    let target = Target::Windows.triple();
    let packages = WINDOWS_TESTED.iter().flat_map(|p| ["--package", p]);
    cmd!(
        sh,
        "cargo clippy --all-targets --locked --target {target} {packages...} -- -D warnings"
    )
    .run()?;
    Ok(())
}

/// cargo runs cross-compiled tests, doc tests included, through the
/// target's runner: here Wine.
fn windows_tests(sh: &Shell, cargo_args: &[String]) -> Result<()> {
    let wine = Wine::prepare(&crate::stage::cache_dir())?;
    let target = Target::Windows.triple();
    let packages = WINDOWS_TESTED.iter().flat_map(|p| ["--package", p]);
    let mut test = cmd!(
        sh,
        "cargo test --locked --target {target} {packages...} {cargo_args...}"
    );
    for (var, value) in wine.env() {
        test = test.env(var, value);
    }
    test.run()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    /// Folders whose tracked files may be binary: the fuzzers' seed disks.
    const FIXTURES: &[&str] = &["fuzz/seeds/"];
    /// The largest tracked source is about 40 KiB; a file past this is an
    /// accident (a build output, a download).
    const MAX_BYTES: usize = 128 << 10;
    /// Seeds stay small: libFuzzer mutates them, and git keeps every one.
    const MAX_FIXTURE_BYTES: usize = 64 << 10;

    /// Why a tracked file does not belong in the tree, if it does not.
    fn refusal(path: &str, bytes: &[u8]) -> Option<String> {
        let fixture = FIXTURES.iter().any(|f| path.starts_with(f));
        let limit = if fixture {
            MAX_FIXTURE_BYTES
        } else {
            MAX_BYTES
        };
        if bytes.len() > limit {
            return Some(format!(
                "{path}: {} KiB, above the {} KiB limit",
                bytes.len() >> 10,
                limit >> 10
            ));
        }
        let text = !bytes.contains(&0) && std::str::from_utf8(bytes).is_ok();
        (!fixture && !text)
            .then(|| format!("{path}: not text (binaries belong only in {FIXTURES:?})"))
    }

    #[test]
    fn no_binaries_or_large_files_are_tracked() {
        let root = crate::stage::root();
        let out = Command::new("git")
            .args(["ls-files", "-z"])
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(out.status.success(), "git ls-files failed");
        let listed = String::from_utf8(out.stdout).unwrap();
        let refused: Vec<String> = listed
            .split('\0')
            .filter(|p| !p.is_empty())
            // A file deleted in the work tree but not yet in the index.
            .filter_map(|p| Some((p, std::fs::read(root.join(p)).ok()?)))
            .filter_map(|(p, bytes)| refusal(p, &bytes))
            .collect();
        assert!(refused.is_empty(), "{}", refused.join("\n"));
    }

    #[test]
    fn binaries_and_large_files_are_refused_outside_the_fixtures() {
        assert_eq!(refusal("src/main.rs", b"fn main() {}\n"), None);
        assert_eq!(refusal("fuzz/seeds/gpt/gpt.img", &[0; 512]), None);
        let binary = refusal("ci/tool", b"\x7fELF\0\x01").unwrap();
        assert!(binary.contains("not text"), "{binary}");
        assert!(
            refusal("notes.txt", b"caf\xe9").is_some(),
            "Latin-1 is not UTF-8"
        );
        let big = refusal("Cargo.lock", &vec![b'a'; MAX_BYTES + 1]).unwrap();
        assert!(big.contains("limit"), "{big}");
        assert!(refusal("fuzz/seeds/gpt/big.img", &vec![0; MAX_FIXTURE_BYTES + 1]).is_some());
    }

    /// Every dependency a crate declares is used by its code: the name (as
    /// Rust spells it) appears in a `.rs` file of that crate, followed by
    /// `::`, or after `use`. A dependency left behind costs compile time
    /// and is in the SBOM's resolve for nothing.
    #[test]
    fn every_declared_dependency_is_used() {
        let metadata = cargo_metadata::MetadataCommand::new()
            .current_dir(crate::stage::root())
            .no_deps()
            .exec()
            .unwrap();
        let mut unused = Vec::new();
        for package in metadata.workspace_packages() {
            let dir = package.manifest_path.parent().unwrap();
            let mut code = String::new();
            let mut todo = vec![dir.as_std_path().to_path_buf()];
            while let Some(next) = todo.pop() {
                for entry in std::fs::read_dir(&next).unwrap().map(Result::unwrap) {
                    let path = entry.path();
                    let name = entry.file_name();
                    if path.is_dir() && name != "target" && name != "corpus" && name != "artifacts"
                    {
                        todo.push(path);
                    } else if path.extension().is_some_and(|e| e == "rs") {
                        code.push_str(&std::fs::read_to_string(&path).unwrap());
                    }
                }
            }
            for dep in &package.dependencies {
                let ident = dep.rename.as_deref().unwrap_or(&dep.name).replace('-', "_");
                let used = code.contains(&format!("{ident}::"))
                    || code.contains(&format!("use {ident}"))
                    || code.contains(&format!("{ident}!"));
                if !used {
                    unused.push(format!("{}: {}", package.name, dep.name));
                }
            }
        }
        assert!(unused.is_empty(), "declared but not used: {unused:?}");
    }
}
