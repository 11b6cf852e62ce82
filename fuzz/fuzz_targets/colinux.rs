//! The coLinux config language on arbitrary text: a config file, the file
//! every `@include` reads, and command-line arguments, separated by NULs.
//! The check itself is `colinux_fuzz::colinux`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| colinux_fuzz::colinux(data));
