//! The MBR parser, logical-partition chains included, on arbitrary bytes.
//! The check itself is `colinux_fuzz::mbr`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| colinux_fuzz::mbr(data));
