//! The installer's ini as `colinux-daemon --from-ini` reads it; what it
//! accepts must read back as a config file.
//! The check itself is `colinux_fuzz::dist_ini`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| colinux_fuzz::dist_ini(data));
