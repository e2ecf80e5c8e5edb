//! Any bytes as a plan file: must be rejected or decoded, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = plec::plan::file::decode(data, std::path::Path::new("fuzz.plan"));
});
