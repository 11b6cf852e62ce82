//! The whole layout reader (MBR, GPT, filesystem probes, selection) on arbitrary bytes.
//! The check itself is `colinux_fuzz::table`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| colinux_fuzz::table(data));
