//! The GPT parser, with both sector sizes and the backup fallback, on arbitrary bytes.
//! The check itself is `colinux_fuzz::gpt`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| colinux_fuzz::gpt(data));
