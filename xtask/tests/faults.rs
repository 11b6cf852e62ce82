//! Stages under faults (issue 14): each stage killed with SIGKILL, its
//! whole process group, at points spread over the time of an uninterrupted
//! run, then run again. After every kill the published output is absent or
//! whole (every file its SHA256SUMS lists, with that sha256), never half
//! written; the rerun publishes exactly the uninterrupted run's files; and
//! no staging directory or temporary file of the killed run is left.
//! Plus the image stage on a disk too small for it.
//!
//! The suite kills each stage at a few points; `cargo xtask bench kill`
//! sweeps more (it sets COLINUX_KILL_POINTS).

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use harness::{assert_one_line_error, workspace_root, Tmpfs};

const MIB: u64 = 1 << 20;

/// The tests that change a stage's published outputs or its sources hold
/// this for reading; dist, which reads every stage's, holds it alone.
static STAGE_OUTPUTS: RwLock<()> = RwLock::new(());

fn stage_outputs_changing() -> RwLockReadGuard<'static, ()> {
    STAGE_OUTPUTS.read().unwrap_or_else(|e| e.into_inner())
}

fn xtask<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(args: I) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args).stdin(Stdio::null());
    cmd
}

/// Runs to the end, which must be a success; returns how long it took.
fn run_whole(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    start.elapsed()
}

/// Starts `cmd` in a process group of its own and kills the whole group
/// with SIGKILL after `after`. `Some(time it took)` if it ended before that.
fn run_killed(cmd: &mut Command, after: Duration) -> Option<Duration> {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < after {
        if child.try_wait().unwrap().is_some() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: a signal to the group our own child leads.
    unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
    child.wait().unwrap();
    None
}

/// Where to kill, as fractions of the uninterrupted run's time: `ci`
/// points, or COLINUX_KILL_POINTS for the sweep, spread evenly.
fn kill_points(ci: usize) -> Vec<f64> {
    let n = std::env::var("COLINUX_KILL_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ci);
    (1..=n).map(|i| i as f64 / (n + 1) as f64).collect()
}

/// A stage's published directory, checked whole: its SHA256SUMS, if it
/// is there at all, after `sha256sum --check` passed on every file.
fn published(dest: &Path) -> Option<String> {
    if !dest.exists() {
        return None;
    }
    let check = Command::new("sha256sum")
        .args(["--check", "--quiet", "SHA256SUMS"])
        .current_dir(dest)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{} is published half-written: {}{}",
        dest.display(),
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    Some(std::fs::read_to_string(dest.join("SHA256SUMS")).unwrap())
}

/// Entries of `dir` a killed run may leave: `.NAME.…` staging directories
/// and temporary files.
fn leftovers(dir: &Path, name: &str) -> Vec<PathBuf> {
    let prefix = format!(".{name}.");
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect()
}

/// What a run publishes at `dest`: a stage's directory (checked whole,
/// its SHA256SUMS) or convert's file (its sha256); `None` if absent.
fn snapshot(dest: &Path) -> Option<String> {
    if dest.is_dir() {
        return published(dest);
    }
    dest.exists().then(|| {
        let out = Command::new("sha256sum").arg(dest).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
}

/// The kill-and-rerun check for a command publishing `dest`. `prepare`
/// readies a run that does real work (removes the output, or marks
/// sources changed); `stage` makes the command.
fn kill_and_rerun(
    what: &str,
    dest: &Path,
    points: &[f64],
    prepare: &dyn Fn(),
    stage: &dyn Fn() -> Command,
) {
    // The first run may find colder caches than the reruns will; the
    // second, prepared alike, is the one whose time the kills divide.
    prepare();
    run_whole(&mut stage());
    let reference = snapshot(dest).expect("the uninterrupted run publishes");
    prepare();
    let mut whole = run_whole(&mut stage());
    assert_eq!(snapshot(dest).as_deref(), Some(reference.as_str()));
    let mut kills = 0;
    let name = dest.file_name().unwrap().to_string_lossy().into_owned();
    let parent = dest.parent().unwrap();
    for &point in points {
        prepare();
        let after = whole.mul_f64(point);
        let finished = run_killed(&mut stage(), after);
        let killed = finished.is_none();
        kills += usize::from(killed);
        // The machine's load changes: a run that ended before its kill sets
        // the time the next points divide, so they land while it works.
        if let Some(took) = finished {
            whole = whole.min(took);
        }
        if let Some(left) = snapshot(dest) {
            assert_eq!(
                left, reference,
                "{what}: killed at {after:?}, something else was published"
            );
        }
        run_whole(&mut stage());
        assert_eq!(
            snapshot(dest).as_deref(),
            Some(reference.as_str()),
            "{what}: the run after a kill at {after:?} published something else"
        );
        let left = leftovers(parent, &name);
        assert!(
            left.is_empty(),
            "{what}: the kill at {after:?} left {left:?}"
        );
        eprintln!(
            "{what}: killed at {:.0}% ({after:.1?} of {whole:.1?}){}: rerun identical",
            point * 100.0,
            if killed { "" } else { ", it had finished" }
        );
    }
    assert!(
        kills * 2 >= points.len(),
        "{what}: only {kills} of {} runs were still going when killed",
        points.len()
    );
}

/// convert: the output file is what it publishes. A bare ext4 image
/// followed by 256 MiB of data, so the copy takes a while.
#[test]
fn convert_killed_anywhere_then_rerun_gives_the_same_output() {
    use std::io::Write;
    let t = tempfile::TempDir::new().unwrap();
    let input = t.path().join("root.img");
    std::fs::File::create(&input)
        .unwrap()
        .set_len(8 * MIB)
        .unwrap();
    let mke2fs = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4"])
        .arg(&input)
        .status()
        .unwrap();
    assert!(mke2fs.success());
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap();
    for i in 0..=255u8 {
        file.write_all(&vec![i | 1; MIB as usize]).unwrap();
    }
    let dir = t.path().join("out");
    std::fs::create_dir(&dir).unwrap();
    let output = dir.join("root.ext4");
    kill_and_rerun(
        "convert",
        &output,
        &kill_points(4),
        &|| {
            let _ = std::fs::remove_file(&output);
        },
        &|| {
            let mut cmd = xtask(["convert", "--force"]);
            cmd.arg(&input).arg(&output);
            cmd
        },
    );
}

/// runtime: a source file touched (same content, so the same cache key
/// and outputs) makes cargo rebuild that crate, and the published
/// directory removed makes the stage run: kills land in cargo's build and
/// in the stage's own copying and hashing.
#[test]
fn runtime_killed_anywhere_then_rerun_gives_the_same_binaries() {
    let _changing = stage_outputs_changing();
    let target = "x86_64-unknown-linux-gnu";
    let dest = workspace_root().join("target/runtime").join(target);
    let touched = workspace_root().join("runtime/daemon/src/lib.rs");
    let prepare = || remove_and_touch(&dest, &touched);
    kill_and_rerun("runtime", &dest, &kill_points(3), &prepare, &|| {
        xtask(["runtime", "--target", target])
    });
}

/// Builds the stock debian image once (a no-op when it is current): its
/// cached bootstrap is what the image tests here start from. Holds the
/// image tests apart, so a kill test never times a run that waits for
/// the other test's lock, and dist's test out (`STAGE_OUTPUTS`). `None` where the stage cannot run (not root).
fn debian_bootstrap_cached() -> Option<(
    RwLockReadGuard<'static, ()>,
    std::sync::MutexGuard<'static, ()>,
)> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if !harness::as_root("the image stage (its fault checks)") {
        return None;
    }
    let changing = stage_outputs_changing();
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    run_whole(&mut xtask(["image", "--distro", "debian"]));
    Some((changing, guard))
}

/// image, from its cached bootstrap (`--output` elsewhere, so every run
/// customizes, packs, makes the filesystem and compresses).
#[test]
fn image_killed_anywhere_then_rerun_gives_the_same_image() {
    let Some(_one_at_a_time) = debian_bootstrap_cached() else {
        return;
    };
    let t = tempfile::TempDir::new_in(workspace_root().join("target")).unwrap();
    let dest = t.path().join("debian");
    kill_and_rerun(
        "image",
        &dest,
        &kill_points(2),
        &|| {
            let _ = std::fs::remove_dir_all(&dest);
        },
        &|| {
            let mut cmd = xtask(["image", "--distro", "debian", "--output"]);
            cmd.arg(&dest);
            cmd
        },
    );
}

/// image onto a disk too small for it: refused before the outputs are
/// written, in one line with both numbers; what was there stays.
#[test]
fn image_on_a_full_disk_fails_cleanly_and_keeps_the_old_output() {
    let Some(_one_at_a_time) = debian_bootstrap_cached() else {
        return;
    };
    let t = tempfile::TempDir::new().unwrap();
    let Some(small) = Tmpfs::mount(&t.path().join("small"), 32 * MIB) else {
        return;
    };
    let dest = small.path().join("debian");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("debian.ext4"), "the user's old image").unwrap();
    let out = xtask(["image", "--distro", "debian", "--output"])
        .arg(&dest)
        .output()
        .unwrap();
    assert_one_line_error(
        &out,
        &format!("no space left on {} (needed about ", small.path().display()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(", free 32.0 MiB)"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dest.join("debian.ext4")).unwrap(),
        "the user's old image"
    );
    assert!(leftovers(small.path(), "debian").is_empty());
}

/// kernel, with a small change: the stock series plus one patch adding a
/// string to a C file the series leaves alone, published with `--output`
/// so the stock kernel in target/kernel stays. Each point touches that
/// file in the shared tree (same content, so the same key and outputs):
/// make compiles it again and relinks, and the kills land in make (whose
/// half-written objects the next run must not trust), in
/// modules_install and in packing. Then the stock series, built again in
/// the same build directory, gives exactly the stock kernel.
#[test]
fn kernel_killed_anywhere_then_rerun_gives_the_same_kernel() {
    let _changing = stage_outputs_changing();
    let arch = "i386";
    run_whole(&mut xtask(["kernel", "--arch", arch]));
    let stock_dest = workspace_root().join("target/kernel").join(arch);
    let stock = published(&stock_dest).unwrap();
    let manifest = std::fs::read_to_string(stock_dest.join("manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    // The stock kernel's, so the change is the patch alone (a series
    // outside the repository would take the last commit's time).
    let sde = manifest["SOURCE_DATE_EPOCH"].to_string();

    let t = tempfile::TempDir::new_in(workspace_root().join("target")).unwrap();
    let patches = t.path().join("linux-6.1");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(workspace_root().join("kernel-patches/linux-6.1"))
        .arg(&patches)
        .status()
        .unwrap();
    assert!(copied.success());
    let file = "init/calibrate.c";
    let touched = workspace_root().join("target/cache/kernel/tree").join(file);
    let text = std::fs::read_to_string(&touched).unwrap();
    let first: Vec<&str> = text.lines().take(3).collect();
    std::fs::write(
        patches.join("zz-kill-test.patch"),
        format!(
            "Kill test only: a string the kernel keeps.\n--- a/{file}\n+++ b/{file}\n@@ -1,3 +1,4 @@\n {}\n+static const char colinux_kill_test[] __attribute__((used)) = \"killed and rerun\";\n {}\n {}\n",
            first[0], first[1], first[2]
        ),
    )
    .unwrap();
    let mut series = std::fs::read_to_string(patches.join("series")).unwrap();
    series.push_str("zz-kill-test.patch\n");
    std::fs::write(patches.join("series"), series).unwrap();

    let dest = t.path().join(arch);
    let prepare = || remove_and_touch(&dest, &touched);
    let changed = || {
        let mut cmd = xtask(["kernel", "--arch", arch, "--patches"]);
        cmd.arg(&patches)
            .arg("--output")
            .arg(&dest)
            .env("SOURCE_DATE_EPOCH", &sde);
        cmd
    };
    kill_and_rerun("kernel", &dest, &kill_points(3), &prepare, &changed);
    assert_ne!(
        published(&dest).unwrap(),
        stock,
        "the patch changed nothing"
    );

    let again = t.path().join("stock");
    let mut cmd = xtask(["kernel", "--arch", arch, "--output"]);
    run_whole(cmd.arg(&again));
    assert_eq!(
        published(&again).unwrap(),
        stock,
        "after the kills, the stock series built something else"
    );
}

/// dist, its stages current: into a directory of its own (`--out`),
/// removed before each run, so every run packages and signs again.
#[test]
fn dist_killed_anywhere_then_rerun_gives_the_same_bundle() {
    let _alone = STAGE_OUTPUTS.write().unwrap_or_else(|e| e.into_inner());
    let t = tempfile::TempDir::new_in(workspace_root().join("target")).unwrap();
    let dest = t.path().join("dist");
    kill_and_rerun(
        "dist",
        &dest,
        &kill_points(2),
        &|| {
            let _ = std::fs::remove_dir_all(&dest);
        },
        &|| {
            let mut cmd = xtask(["dist", "--out"]);
            cmd.arg(&dest);
            cmd
        },
    );
}

/// Before each run: no published output, and `touched` newer than the last
/// build, so that the stage has real work to be killed in.
fn remove_and_touch(dest: &Path, touched: &Path) {
    let _ = std::fs::remove_dir_all(dest);
    let file = std::fs::File::options().append(true).open(touched).unwrap();
    file.set_modified(std::time::SystemTime::now()).unwrap();
}
