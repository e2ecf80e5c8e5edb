//! Any bytes as a plan file: rejected or decoded, validated and inspected,
//! never a panic. The body is `plec::fuzzing::plan_decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| plec::fuzzing::plan_decode(data));
