//! The real KVM probe on this host. Where KVM works it must say so; where a
//! KVM guest hangs (as on the project's build machines) it must time out,
//! say why, and pick TCG. Either way it must stay within its time bound and
//! leave no process behind.
#![cfg(target_os = "linux")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use colinux_driver::{detect, Accel, BackendState, ProbeOptions};

/// The tests look for leftover children of this process, so they must not
/// overlap.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Slack on top of the timeout: fork, SIGKILL grace, reaping.
const SLACK: Duration = Duration::from_secs(2);

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("colinux-driver-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Our children that are still around, zombies included (the probe's child
/// is forked from this process, so it would show up here).
fn children() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...; comm may contain spaces, so split after ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if rest.split_whitespace().nth(1) == Some(me.as_str()) {
            found.push(stat);
        }
    }
    found
}

fn has_kvm_device() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

#[test]
fn probe_is_bounded_and_honest() {
    let _serial = serial();
    let timeout = Duration::from_secs(1);
    let opts = ProbeOptions {
        timeout,
        use_cache: false,
        cache_dir: None,
    };
    let start = Instant::now();
    let report = detect(&opts);
    let elapsed = start.elapsed();
    eprintln!("{report}\n(elapsed {elapsed:?})");

    assert!(elapsed < timeout + SLACK, "detect took {elapsed:?}");
    assert!(!report.from_cache);
    assert!(report.probe_time <= elapsed);
    assert!(
        children().is_empty(),
        "probe left children: {:?}",
        children()
    );
    assert!(report.backend(Accel::Whpx).is_none());
    let tcg = report.backend(Accel::Tcg).expect("TCG listed");
    assert_eq!(tcg.state, BackendState::Usable);

    let kvm = report.backend(Accel::Kvm).expect("KVM listed on Linux");
    let text = report.to_string();
    match kvm.state {
        BackendState::Usable => {
            assert_eq!(report.best(), Accel::Kvm);
            let c = report.choose(Accel::Auto).unwrap();
            assert_eq!((c.accel, c.warning), (Accel::Kvm, None));
            assert_eq!(report.choose(Accel::Kvm).unwrap().accel, Accel::Kvm);
            assert!(text.ends_with("will use: kvm"), "{text}");
        }
        BackendState::NotUsable => {
            assert!(has_kvm_device());
            assert_eq!(report.best(), Accel::Tcg);
            let c = report.choose(Accel::Auto).unwrap();
            assert_eq!(c.accel, Accel::Tcg);
            let warning = c.warning.expect("a warning when falling back");
            let err = report.choose(Accel::Kvm).unwrap_err().to_string();
            assert!(err.contains("accel=auto or accel=tcg"), "{err}");
            // On a host where guests hang, the reason must be the timeout.
            if kvm.detail.contains("timed out") {
                assert!(
                    kvm.detail
                        .contains("KVM present but not usable (probe timed out after 1.0 s)"),
                    "{}",
                    kvm.detail
                );
                assert!(warning.contains("probe timed out"), "{warning}");
                assert!(elapsed >= timeout, "timed out early: {elapsed:?}");
                assert!(
                    text.starts_with("KVM: present but not usable (probe timed out after 1.0 s)\n"),
                    "{text}"
                );
            }
            assert!(text.ends_with("will use: tcg"), "{text}");
        }
        BackendState::Missing | BackendState::NoAccess => {
            assert!(!has_kvm_device());
            assert_eq!(report.best(), Accel::Tcg);
            assert!(report.choose(Accel::Kvm).is_err());
            assert_eq!(report.choose(Accel::Auto).unwrap().accel, Accel::Tcg);
        }
    }
}

#[test]
fn second_detect_hits_the_cache() {
    let _serial = serial();
    let dir = temp_dir("cache-hit");
    let opts = ProbeOptions {
        timeout: Duration::from_secs(1),
        use_cache: true,
        cache_dir: Some(dir.clone()),
    };
    let first = detect(&opts);
    assert!(!first.from_cache);
    let start = Instant::now();
    let second = detect(&opts);
    let hit = start.elapsed();
    eprintln!(
        "first: {:?}, second: {:?} (from_cache {})",
        first.probe_time, hit, second.from_cache
    );
    let kvm = first.backend(Accel::Kvm).unwrap();
    if matches!(kvm.state, BackendState::Usable | BackendState::NotUsable) {
        // A probe ran, so its verdict was cached.
        assert!(second.from_cache);
        assert!(dir.join("driver-probe").is_file());
        let again = second.backend(Accel::Kvm).unwrap();
        assert_eq!((again.state, &again.detail), (kvm.state, &kvm.detail));
        assert_eq!(second.best(), first.best());
        assert!(hit < Duration::from_millis(100), "cache hit took {hit:?}");
        assert!(
            hit * 2 < first.probe_time,
            "{hit:?} vs {:?}",
            first.probe_time
        );
        assert!(second.to_string().contains("from this boot's probe cache"));

        // A corrupt file is ignored (a fresh probe runs) and rewritten.
        std::fs::write(dir.join("driver-probe"), "not a cache\n").unwrap();
        let third = detect(&opts);
        assert!(!third.from_cache);
        assert!(detect(&opts).from_cache);

        // A more patient caller does not trust a timed-out verdict.
        if kvm.detail.contains("timed out") {
            let patient = ProbeOptions {
                timeout: Duration::from_millis(1500),
                ..opts.clone()
            };
            assert!(!detect(&patient).from_cache);
        }

        colinux_driver::clear_cache(&opts).unwrap();
        assert!(!dir.join("driver-probe").exists());
        assert!(
            !detect(&ProbeOptions {
                use_cache: true,
                ..opts.clone()
            })
            .from_cache
        );
    } else {
        // Missing or no access: nothing is probed, so nothing is cached.
        assert!(!second.from_cache);
    }
    assert!(children().is_empty(), "{:?}", children());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unwritable_cache_dir_is_not_fatal() {
    let _serial = serial();
    let dir = temp_dir("cache-blocked");
    std::fs::create_dir_all(&dir).unwrap();
    // A file where the cache directory should be: no one can write there.
    let blocked = dir.join("file");
    std::fs::write(&blocked, "").unwrap();
    let opts = ProbeOptions {
        timeout: Duration::from_millis(300),
        use_cache: true,
        cache_dir: Some(blocked),
    };
    let start = Instant::now();
    let report = detect(&opts);
    assert!(start.elapsed() < opts.timeout + SLACK);
    assert!(!report.from_cache);
    assert!(!detect(&opts).from_cache);
    let _ = std::fs::remove_dir_all(&dir);
}
