//! The whole layout reader (MBR, GPT, filesystem probes, selection) on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(table) = images::table::read(&data) {
        let _ = table.select(None);
        let _ = table.render();
    }
});
