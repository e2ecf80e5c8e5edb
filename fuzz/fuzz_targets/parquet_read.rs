//! Any bytes as a parquet file, read for a fixed plan as `plec run` and
//! `plec eval` read: an error, never a panic, hang or runaway allocation.
//! The body is `plec::fuzzing::parquet_read`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| plec::fuzzing::parquet_read(data));
