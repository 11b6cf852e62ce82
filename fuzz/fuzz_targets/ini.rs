//! The coMosix ini parser on arbitrary text.
//! The check itself is `colinux_fuzz::ini`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| colinux_fuzz::ini(data));
