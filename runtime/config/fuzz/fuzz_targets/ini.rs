//! The coMosix ini parser on arbitrary text.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match colinux_config::parse_ini_str(text, Path::new("/fuzz/node.ini")) {
        Err(error) => assert!(!error.to_string().contains('\n')),
        Ok(settings) => {
            let _ = settings.describe(None);
        }
    }
});
