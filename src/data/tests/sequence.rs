//! Sequence feature encoding: delimited strings and list columns, truncation
//! to `sequence_length`, empty and null rows, and bad data that stops the
//! read naming file, column and row.

use std::path::Path;

use arrow_array::builder::{Int64Builder, ListBuilder};
use arrow_array::{ArrayRef, Int64Array, StringArray};

use super::{arr, plan, spec, write_parquet};
use crate::data::batch::FeatureInput;
use crate::data::encode::{BatchLoc, FeatureEncoder};
use crate::data::error::DataError;
use crate::data::reader::{DataSource, ReadOptions};
use crate::proto::plan::{FeatureKind, FeatureSpec};

fn loc() -> BatchLoc<'static> {
    BatchLoc {
        file: Path::new("f.parquet"),
        first_row: 10,
        row_group: 0,
    }
}

fn seq(name: &str, kind: FeatureKind, col: &str, num_ids: u64, len: u32) -> FeatureSpec {
    FeatureSpec {
        sequence_length: len,
        sequence_delim: "|".into(),
        default_value: "0".into(),
        value_dim: 1,
        ..spec(name, kind, &[col], num_ids)
    }
}

fn encode(enc: &FeatureEncoder, col: &ArrayRef) -> FeatureInput {
    enc.encode(&[col], &loc()).unwrap()
}

#[test]
fn delimited_strings_truncate_and_default() {
    let enc = FeatureEncoder::new(&seq("s", FeatureKind::IdNumBuckets, "c", 10, 3)).unwrap();
    let col = arr(StringArray::from(vec![
        Some("1|2|3|4|5"), // truncated to the first 3 steps
        Some("7"),
        Some(""), // empty: one default step
        None,     // null: one default step
    ]));
    assert_eq!(
        encode(&enc, &col),
        FeatureInput::Ids {
            ids: vec![1, 2, 3, 7, 0, 0],
            offsets: vec![0, 3, 4, 5, 6],
        }
    );
}

#[test]
fn list_columns_one_step_per_item() {
    let enc = FeatureEncoder::new(&seq("s", FeatureKind::IdNumBuckets, "c", 10, 2)).unwrap();
    let mut b = ListBuilder::new(Int64Builder::new());
    b.values().append_value(4);
    b.values().append_value(5);
    b.values().append_value(6);
    b.append(true);
    b.append(true); // empty list: the default step
    b.values().append_value(9);
    b.append(true);
    let col = arr(b.finish());
    assert_eq!(
        encode(&enc, &col),
        FeatureInput::Ids {
            ids: vec![4, 5, 0, 9],
            offsets: vec![0, 2, 3, 4],
        }
    );
}

#[test]
fn dense_and_bucketized_steps() {
    let dense = FeatureEncoder::new(&seq("p", FeatureKind::RawDense, "c", 0, 4)).unwrap();
    let col = arr(StringArray::from(vec![Some("0.5|2"), None]));
    assert_eq!(
        encode(&dense, &col),
        FeatureInput::SeqDense {
            values: vec![0.5, 2.0, 0.0],
            offsets: vec![0, 2, 3],
            dim: 1,
        }
    );
    let mut b = seq("b", FeatureKind::RawBucketized, "c", 3, 4);
    b.boundaries = vec![1.0, 2.0];
    let bucket = FeatureEncoder::new(&b).unwrap();
    assert_eq!(
        encode(&bucket, &col),
        FeatureInput::Ids {
            ids: vec![0, 2, 0],
            offsets: vec![0, 2, 3],
        }
    );
}

#[test]
fn bad_steps_name_the_row_and_column() {
    let enc = FeatureEncoder::new(&seq("s", FeatureKind::IdNumBuckets, "clicks", 10, 5)).unwrap();
    for (value, what) in [
        ("1|12|3", "out of range"),
        ("1||3", "empty step"),
        ("1|x|3", "not a number"),
    ] {
        let col = arr(StringArray::from(vec![Some("1"), Some(value)]));
        let e = enc.encode(&[&col], &loc()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("f.parquet") && msg.contains("`clicks`") && msg.contains("row 11"),
            "{what}: {msg}"
        );
    }
    let dense = FeatureEncoder::new(&seq("p", FeatureKind::RawDense, "prices", 0, 5)).unwrap();
    let col = arr(StringArray::from(vec![Some("1.5|abc")]));
    let e = dense.encode(&[&col], &loc()).unwrap_err();
    assert!(matches!(e, DataError::BadValue { .. }), "{e}");
    assert!(e.to_string().contains("`prices`"), "{e}");
}

/// Two sub-sequences of one group with different step counts in a row
/// stop the read naming the file, the row and both columns.
#[test]
fn grouped_step_counts_must_agree() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("seq.parquet");
    write_parquet(
        &f,
        vec![
            ("a", arr(StringArray::from(vec!["1|2", "3|4|5", "6"]))),
            ("b", arr(StringArray::from(vec!["1|2", "3|4", "6"]))),
            ("clk", arr(Int64Array::from(vec![0i64, 1, 0]))),
        ],
        8,
    );
    let mut fa = seq("g.a", FeatureKind::IdNumBuckets, "a", 10, 5);
    let mut fb = seq("g.b", FeatureKind::IdNumBuckets, "b", 10, 5);
    fa.sequence_group = "g".into();
    fb.sequence_group = "g".into();
    let p = plan(vec![fa, fb], &["clk"], &[]);
    let src = DataSource::open(&p, &[f.to_str().unwrap()]).unwrap();
    let e = src
        .batches(&ReadOptions::eval(8))
        .find_map(|r| r.err())
        .expect("a step-count error");
    assert!(matches!(e, DataError::StepCount { .. }), "{e}");
    let msg = e.to_string();
    for part in ["seq.parquet", "row 1", "`a`", "`b`", "`g`"] {
        assert!(msg.contains(part), "{part} missing: {msg}");
    }
}
