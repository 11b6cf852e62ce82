//! Every committed seed (`seeds/<target>/`), and every crash `cargo xtask
//! fuzz` added there, replayed through its target's check on stable Rust:
//! the corpus is a regression test where nobody runs a fuzzer.

use std::path::{Path, PathBuf};

/// A `#[test]` per target, and the list of them.
macro_rules! targets {
    ($($target:ident),*) => {
        const TARGETS: &[&str] = &[$(stringify!($target)),*];
        $(
            #[test]
            fn $target() {
                replay(stringify!($target), colinux_fuzz::$target);
            }
        )*
    };
}

targets!(mbr, gpt, table, colinux, ini, dist_ini, recipe);

fn fuzz_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

fn replay(target: &str, check: fn(&[u8])) {
    let seeds = files(&fuzz_dir().join("seeds").join(target));
    assert!(!seeds.is_empty(), "no seeds for {target}");
    let failed: Vec<String> = seeds
        .iter()
        .filter(|seed| {
            let data = std::fs::read(seed).unwrap();
            std::panic::catch_unwind(|| check(&data)).is_err()
        })
        .map(|seed| seed.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target} fails on {failed:?}");
}

/// A target added without seeds or a test here would go unreplayed.
#[test]
fn every_fuzz_target_has_seeds_and_a_test() {
    let names = |dir: &str| -> Vec<String> {
        let mut names: Vec<String> = files(&fuzz_dir().join(dir))
            .iter()
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let mut tested: Vec<String> = TARGETS.iter().map(|t| t.to_string()).collect();
    tested.sort();
    assert_eq!(names("fuzz_targets"), tested);
    assert_eq!(names("seeds"), tested);
}
