//! An image recipe and the base it extends, separated by a NUL.
//! The check itself is `colinux_fuzz::recipe`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| colinux_fuzz::recipe(data));
