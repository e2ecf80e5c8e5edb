//! `plec check --data` on a config with a grouped sequence: findings point
//! at the sub-feature's `feature_name`, and a history written with another
//! delimiter than the config's `sequence_delim` is found (as a separator
//! warning and as unequal step counts in the group). The bad-data cases of
//! `plec run` are checked in `tests/cli_run.rs`.

mod common;

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use common::*;
use parquet::arrow::ArrowWriter;

const CONFIG: &str = "examples/ple_has_sequence.config";

fn json_lines(o: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// 1-based line of the first line of `CONFIG` holding `needle` inside the
/// sequence feature (the top-level feature of the same name comes first).
fn sequence_line(needle: &str) -> u64 {
    let text = std::fs::read_to_string(CONFIG).expect("config");
    let lines: Vec<&str> = text.lines().collect();
    let seq = lines
        .iter()
        .position(|l| l.contains("sequence_name: \"click_50_seq\""))
        .expect("sequence");
    let i = lines[seq..]
        .iter()
        .position(|l| l.contains(needle))
        .expect("needle");
    (seq + i) as u64 + 1
}

#[test]
fn sequences_and_their_delimiters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    ok(&[
        "gen-data",
        CONFIG,
        "--rows",
        "2000",
        "--eval-rows",
        "10",
        "-o",
        s(&data),
        "--seed",
        "5",
    ]);
    let train = data.join("train.parquet");

    // Clean data: no errors; each sub-feature's steps are measured at its line.
    let o = plec(&["check", CONFIG, "--data", s(&train), "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let found = json_lines(&o);
    let seq = found
        .iter()
        .find(|d| {
            d["code"] == "plec::data::sequence_length"
                && d["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("adgroup_id")
        })
        .unwrap_or_else(|| panic!("no sequence_length finding: {found:?}"));
    assert_eq!(
        seq["line"],
        sequence_line("feature_name: \"adgroup_id\""),
        "{seq}"
    );
    assert!(
        seq["message"]
            .as_str()
            .unwrap_or_default()
            .contains("0 of 2000 rows empty"),
        "{seq}"
    );

    // The adgroup history written with `;` instead of the config's `|`.
    let rb = read_parquet(&train);
    let schema = rb.schema();
    let (idx, _) = schema
        .fields()
        .iter()
        .enumerate()
        .find(|(_, f)| f.name().contains("adgroup_id") && f.name() != "adgroup_id")
        .expect("adgroup history column");
    let name = schema.field(idx).name().clone();
    let col = rb.column(idx);
    let strings = col
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("string history");
    let replaced: StringArray = strings
        .iter()
        .map(|v| v.map(|s| s.replace('|', ";")))
        .collect();
    let mut cols: Vec<ArrayRef> = rb.columns().to_vec();
    cols[idx] = Arc::new(replaced);
    let bad_rb = RecordBatch::try_new(schema.clone(), cols).expect("batch");
    let bad = dir.path().join("bad.parquet");
    let f = std::fs::File::create(&bad).expect("create");
    let mut w = ArrowWriter::try_new(f, schema, None).expect("writer");
    w.write(&bad_rb).expect("write");
    w.close().expect("close");

    let o = plec(&["check", CONFIG, "--data", s(&bad), "--format", "json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let found = json_lines(&o);
    let sep = found
        .iter()
        .find(|d| d["code"] == "plec::data::separator")
        .unwrap_or_else(|| panic!("no separator finding: {found:?}"));
    let message = sep["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&name) && message.contains("\";\""),
        "{sep}"
    );
    assert_eq!(sep["severity"], "warning");
    assert_eq!(
        sep["line"],
        sequence_line("feature_name: \"adgroup_id\""),
        "{sep}"
    );
    assert!(
        found
            .iter()
            .any(|d| d["code"] == "plec::data::step_count" && d["severity"] == "error"),
        "{found:?}"
    );
}
