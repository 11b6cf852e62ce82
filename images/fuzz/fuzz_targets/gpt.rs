//! The GPT parser, with both sector sizes and the backup fallback, on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = images::gpt::parse(&data);
});
