//! The MBR parser, logical-partition chains included, on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = images::mbr::parse(&data);
});
