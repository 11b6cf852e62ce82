//! Prints what `colinux-daemon --status-driver` would, with timings:
//! `cargo run -p colinux-driver --example status [--no-cache]`.
use colinux_driver::{detect, Accel, ProbeOptions};

fn main() {
    let opts = ProbeOptions {
        use_cache: !std::env::args().any(|a| a == "--no-cache"),
        ..ProbeOptions::default()
    };
    let report = detect(&opts);
    println!("{report}");
    match report.choose(Accel::Auto) {
        Ok(c) => println!("accel=auto -> -accel {} {:?}", c.qemu_accel(), c.warning),
        Err(e) => println!("accel=auto -> error: {e}"),
    }
}
