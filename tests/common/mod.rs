//! Helpers shared by the tests that drive the built `plec` binary
//! (`cli_run`, `cli_resume`, `sequences`, `export`, `state_dict`). Each
//! test crate uses a subset.
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

/// Whether python3 can import every module in `modules`.
pub fn python_has(modules: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Whether a check that needs the Python `modules` can run: skipped with a
/// notice when they are missing, except under CI (`CI` set), which installs
/// them from `tests/export/requirements.txt` and must run it.
pub fn python_available(modules: &str, what: &str) -> bool {
    if python_has(modules) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI needs python3 with {modules} for {what} (pip install -r tests/export/requirements.txt)"
    );
    eprintln!(
        "skipped: {what} needs python3 with {modules} (pip install -r tests/export/requirements.txt)"
    );
    false
}

/// A plan file, decoded.
pub fn read_plan(p: &Path) -> plec::proto::plan::Plan {
    let bytes = std::fs::read(p).expect("plan.bin");
    plec::plan::file::decode(&bytes, p).expect("a plan")
}

/// Trains `config` four steps on generated data (2,000 training rows,
/// `eval_rows` evaluation rows); returns the trained plan's path and the
/// eval data's.
pub fn train(dir: &Path, config: &Path, eval_rows: usize) -> (PathBuf, PathBuf) {
    let data = dir.join("data");
    ok(&[
        "gen-data",
        s(config),
        "--rows",
        "2000",
        "--eval-rows",
        &eval_rows.to_string(),
        "-o",
        s(&data),
        "--seed",
        "3",
    ]);
    let out = dir.join("out");
    ok(&[
        "run",
        s(config),
        "--data",
        s(&data.join("train.parquet")),
        "--steps",
        "4",
        "--threads",
        "1",
        "--out",
        s(&out),
        "-q",
    ]);
    (out.join("plan.bin"), data.join("eval.parquet"))
}

/// One float column of a predict file as f64.
pub fn column(rb: &RecordBatch, name: &str) -> Vec<f64> {
    rb.column_by_name(name)
        .unwrap_or_else(|| panic!("predict wrote no column {name}"))
        .as_any()
        .downcast_ref::<arrow_array::Float32Array>()
        .expect("float predictions")
        .values()
        .iter()
        .map(|&v| v as f64)
        .collect()
}
