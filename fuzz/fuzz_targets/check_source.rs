//! Any text through parse, bind, lint, shape checks and rendering: must
//! never panic. The body is `plec::fuzzing::check_source`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| plec::fuzzing::check_source(data));
