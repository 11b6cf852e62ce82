use super::*;

fn backend(accel: Accel, state: BackendState, detail: &str) -> Backend {
    Backend {
        accel,
        state,
        detail: detail.into(),
    }
}

fn report(hw: &[Backend]) -> HostReport {
    let mut backends = hw.to_vec();
    backends.push(tcg_backend());
    HostReport {
        backends,
        from_cache: false,
        probe_time: Duration::from_millis(1234),
    }
}

const HUNG: &str = "KVM present but not usable (probe timed out after 3.0 s)";

#[test]
fn best_prefers_usable_hardware() {
    assert_eq!(report(&[]).best(), Accel::Tcg);
    let kvm = backend(Accel::Kvm, BackendState::Usable, "ran");
    assert_eq!(report(&[kvm]).best(), Accel::Kvm);
    for state in [
        BackendState::Missing,
        BackendState::NoAccess,
        BackendState::NotUsable,
    ] {
        assert_eq!(
            report(&[backend(Accel::Kvm, state, "x")]).best(),
            Accel::Tcg
        );
    }
    // The first usable one wins.
    let r = report(&[
        backend(Accel::Kvm, BackendState::NotUsable, "x"),
        backend(Accel::Whpx, BackendState::Usable, "y"),
    ]);
    assert_eq!(r.best(), Accel::Whpx);
}

#[test]
fn choose_auto() {
    let usable = report(&[backend(Accel::Kvm, BackendState::Usable, "ran")]);
    let c = usable.choose(Accel::Auto).unwrap();
    assert_eq!((c.accel, c.warning), (Accel::Kvm, None));

    // No hardware at all: TCG is simply what this host has.
    let missing = report(&[backend(Accel::Kvm, BackendState::Missing, "no /dev/kvm")]);
    let c = missing.choose(Accel::Auto).unwrap();
    assert_eq!((c.accel, c.warning), (Accel::Tcg, None));

    let hung = report(&[backend(Accel::Kvm, BackendState::NotUsable, HUNG)]);
    let c = hung.choose(Accel::Auto).unwrap();
    assert_eq!(c.accel, Accel::Tcg);
    assert_eq!(
        c.warning.as_deref(),
        Some(
            "KVM present but not usable (probe timed out after 3.0 s): \
             falling back to TCG (software emulation, much slower)"
        )
    );

    let denied = report(&[backend(
        Accel::Kvm,
        BackendState::NoAccess,
        "permission denied",
    )]);
    let c = denied.choose(Accel::Auto).unwrap();
    assert_eq!(c.accel, Accel::Tcg);
    let w = c.warning.unwrap();
    assert_eq!(
        w,
        "KVM is not accessible (permission denied): falling back to TCG (software emulation, much slower)"
    );
}

#[test]
fn choose_tcg_always_works() {
    for hw in [
        vec![],
        vec![backend(Accel::Kvm, BackendState::Usable, "ran")],
        vec![backend(Accel::Kvm, BackendState::NotUsable, HUNG)],
    ] {
        let c = report(&hw).choose(Accel::Tcg).unwrap();
        assert_eq!((c.accel, c.warning.as_deref()), (Accel::Tcg, None));
        assert_eq!(c.qemu_accel(), "tcg");
    }
}

#[test]
fn choose_hardware_explicitly() {
    let usable = report(&[backend(Accel::Kvm, BackendState::Usable, "ran")]);
    let c = usable.choose(Accel::Kvm).unwrap();
    assert_eq!((c.accel, c.warning.is_none()), (Accel::Kvm, true));
    assert_eq!(c.qemu_accel(), "kvm");

    let hung = report(&[backend(Accel::Kvm, BackendState::NotUsable, HUNG)]);
    let err = hung.choose(Accel::Kvm).unwrap_err().to_string();
    assert_eq!(
        err,
        "accel=kvm requested, but KVM present but not usable \
         (probe timed out after 3.0 s); use accel=auto or accel=tcg"
    );

    let missing = report(&[backend(Accel::Kvm, BackendState::Missing, "no /dev/kvm: x")]);
    let err = missing.choose(Accel::Kvm).unwrap_err().to_string();
    assert_eq!(
        err,
        "accel=kvm requested, but KVM is missing (no /dev/kvm: x); use accel=auto or accel=tcg"
    );

    let denied = report(&[backend(Accel::Kvm, BackendState::NoAccess, "add yourself")]);
    let err = denied.choose(Accel::Kvm).unwrap_err().to_string();
    assert!(
        err.contains("KVM is not accessible (add yourself)"),
        "{err}"
    );

    // WHPX is not listed on a KVM host, and the reverse.
    let err = usable.choose(Accel::Whpx).unwrap_err().to_string();
    assert!(err.starts_with("accel=whpx is not available on "), "{err}");
    assert!(err.ends_with("; use accel=auto or accel=tcg"), "{err}");
    let whpx = report(&[backend(Accel::Whpx, BackendState::Usable, "ok")]);
    assert_eq!(whpx.choose(Accel::Whpx).unwrap().qemu_accel(), "whpx");
    assert!(whpx.choose(Accel::Kvm).is_err());
}

#[test]
fn errors_are_one_line() {
    let hung = report(&[backend(Accel::Kvm, BackendState::NotUsable, HUNG)]);
    let err = hung.choose(Accel::Kvm).unwrap_err().to_string();
    assert!(!err.contains('\n'));
}

#[test]
fn display_text() {
    let mut r = report(&[backend(Accel::Kvm, BackendState::NotUsable, HUNG)]);
    assert_eq!(
        r.to_string(),
        "KVM: present but not usable (probe timed out after 3.0 s)\n\
         TCG: usable (software emulation, always available)\n\
         result: probed now\n\
         probe time: 1.234 s\n\
         will use: tcg"
    );
    r.from_cache = true;
    r.backends[0] = backend(Accel::Kvm, BackendState::Missing, "no /dev/kvm: why");
    let text = r.to_string();
    assert!(
        text.starts_with("KVM: missing (no /dev/kvm: why)\n"),
        "{text}"
    );
    assert!(
        text.contains("result: from this boot's probe cache"),
        "{text}"
    );

    r.backends[0] = backend(Accel::Kvm, BackendState::Usable, "test guest ran in 5 ms");
    let text = r.to_string();
    assert!(
        text.starts_with("KVM: usable (test guest ran in 5 ms)\n"),
        "{text}"
    );
    assert!(text.ends_with("will use: kvm"), "{text}");
}

#[test]
fn timeout_env_values() {
    assert_eq!(timeout_from_env(None), DEFAULT_PROBE_TIMEOUT);
    assert_eq!(timeout_from_env(Some("1500")), Duration::from_millis(1500));
    assert_eq!(timeout_from_env(Some(" 250 ")), Duration::from_millis(250));
    assert_eq!(timeout_from_env(Some("0")), DEFAULT_PROBE_TIMEOUT);
    assert_eq!(timeout_from_env(Some("3s")), DEFAULT_PROBE_TIMEOUT);
    assert_eq!(timeout_from_env(Some("")), DEFAULT_PROBE_TIMEOUT);
}

#[test]
fn default_options() {
    let o = ProbeOptions::default();
    assert!(o.use_cache);
    assert_eq!(o.cache_dir, None);
    assert!(o.timeout > Duration::ZERO);
}

#[test]
fn state_words_round_trip() {
    for s in [
        BackendState::Usable,
        BackendState::Missing,
        BackendState::NoAccess,
        BackendState::NotUsable,
    ] {
        assert_eq!(BackendState::parse(s.as_str()), Some(s));
    }
    assert_eq!(BackendState::parse("fine"), None);
}

#[test]
fn clear_cache_of_nothing_is_ok() {
    let dir = std::env::temp_dir().join(format!("colinux-driver-clear-{}", std::process::id()));
    let opts = ProbeOptions {
        cache_dir: Some(dir.clone()),
        ..ProbeOptions::default()
    };
    clear_cache(&opts).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(cache::FILE_NAME), "x").unwrap();
    clear_cache(&opts).unwrap();
    assert!(!dir.join(cache::FILE_NAME).exists());
    let _ = std::fs::remove_dir_all(&dir);
}
