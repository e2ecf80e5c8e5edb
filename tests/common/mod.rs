//! Helpers shared by the tests that drive the built `plec` binary
//! (`cli_run`, `cli_resume`, `sequences`). Each test crate uses a subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow_array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub const PLEC: &str = env!("CARGO_BIN_EXE_plec");

/// Runs `plec` with `args` (no color) and returns what it printed.
pub fn plec(args: &[&str]) -> Output {
    Command::new(PLEC)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("the plec binary runs")
}

/// Both streams, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `plec`, asserts exit 0, returns stdout.
pub fn ok(args: &[&str]) -> String {
    let o = plec(args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "plec {args:?} failed\n{}",
        text(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Writes `body` to `dir/name`.
pub fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write config");
    p
}

/// A parquet file as one record batch.
pub fn read_parquet(p: &Path) -> RecordBatch {
    let f = std::fs::File::open(p).expect("open parquet");
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .expect("parquet footer")
        .build()
        .expect("reader");
    let batches: Vec<RecordBatch> = reader.map(|b| b.expect("batch")).collect();
    arrow_select::concat::concat_batches(&batches[0].schema(), &batches).expect("concat")
}
