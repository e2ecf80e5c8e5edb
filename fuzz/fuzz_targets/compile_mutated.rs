//! Mutated configs through check, lower, optimize and emit under a small
//! memory allowance: an error or a plan that validates, never a panic.
//! The body is `plec::fuzzing::compile_mutated`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| plec::fuzzing::compile_mutated(data));
