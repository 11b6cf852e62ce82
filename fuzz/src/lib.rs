//! What each fuzz target checks, as a plain function of the input bytes.
//! `fuzz_targets/<name>.rs` hands libFuzzer's inputs to it (`cargo xtask
//! fuzz`), and `tests/seeds.rs` replays every committed seed of
//! `seeds/<name>/` through it on stable Rust (`cargo test`). A broken
//! promise panics; anything else returns.
//!
//! Inputs that carry several texts separate them with NUL bytes.

use std::io;
use std::path::Path;

use colinux_config::{Parser, Settings};

/// The MBR parser, logical-partition chains included.
pub fn mbr(data: &[u8]) {
    let _ = images::mbr::parse(&data);
}

/// The GPT parser, with both sector sizes and the backup fallback.
pub fn gpt(data: &[u8]) {
    let _ = images::gpt::parse(&data);
}

/// The whole layout reader (MBR, GPT, filesystem probes, selection).
pub fn table(data: &[u8]) {
    if let Ok(table) = images::table::read(&data) {
        let _ = table.select(None);
        let _ = table.render();
    }
}

/// The coLinux config language: a config file, the file every `@include`
/// reads (served from memory, so nothing touches the disk), then
/// command-line arguments.
pub fn colinux(data: &[u8]) {
    let mut parts = data.split(|&b| b == 0);
    let Ok(config) = std::str::from_utf8(parts.next().unwrap_or_default()) else {
        return;
    };
    let included = parts.next().unwrap_or_default().to_vec();
    let args: Vec<String> = parts
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    let mut parser = Parser::with_reader("/fuzz", move |_: &Path| Ok(included.clone()));
    let outcome = parser
        .config_text(config, Path::new("/fuzz/colinux.conf"))
        .and_then(|()| args.iter().try_for_each(|arg| parser.arg(arg)))
        .and_then(|()| parser.finish());
    if let Ok(settings) = checked(outcome) {
        assert!(settings.kernel_cmdline(&[]).is_ok());
        let _ = settings.describe(Some(4096));
    }
}

/// The coMosix ini parser.
pub fn ini(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let outcome = colinux_config::parse_ini_str(text, Path::new("/fuzz/node.ini"));
    if let Ok(settings) = checked(outcome) {
        let _ = settings.describe(None);
    }
}

/// The Windows installer's ini, read as `colinux-daemon --from-ini` reads
/// it (the installer's `kernel=` default, then `@colinux.ini`): whatever
/// it accepts, the config file it writes from the settings (`describe`)
/// must read back, or the installer would install a config the daemon
/// refuses.
pub fn dist_ini(data: &[u8]) {
    let ini = data.to_vec();
    let mut parser = Parser::with_reader("/fuzz", move |_: &Path| Ok(ini.clone()));
    let outcome = parser
        .arg("kernel=/fuzz/vmlinux")
        .and_then(|()| parser.arg("@/fuzz/colinux.ini"))
        .and_then(|()| parser.finish());
    if let Ok(settings) = checked(outcome) {
        let text = settings.describe(None);
        if let Err(e) = colinux_config::parse_str(&text, Path::new("/fuzz/colinux.conf")) {
            panic!("the config written from the ini does not read back: {e}\n{text}");
        }
    }
}

/// An image recipe, then the base recipe that every `extends` finds
/// (served from memory).
pub fn recipe(data: &[u8]) {
    let mut parts = data.splitn(2, |&b| b == 0);
    let text = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let base = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let path = Path::new("/fuzz/recipes/node.toml");
    let read = |p: &Path| -> io::Result<String> {
        if p == path {
            Ok(text.clone())
        } else {
            Ok(base.clone())
        }
    };
    match recipe::load_file_with(path, Path::new("/fuzz/recipes"), &read) {
        Err(error) => assert_one_line(&format!("{error:#}")),
        Ok(recipe) => {
            let _ = recipe.sources(recipe.distro.default_mirror());
        }
    }
}

/// Errors are one line, never empty.
fn checked(outcome: Result<Settings, colinux_config::Error>) -> Result<Settings, ()> {
    outcome.map_err(|error| assert_one_line(&error.to_string()))
}

fn assert_one_line(message: &str) {
    assert!(
        !message.is_empty() && !message.contains('\n'),
        "not one line: {message:?}"
    );
}
