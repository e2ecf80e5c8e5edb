use std::path::Path;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, Float32Array, Float64Array, Int32Array, Int64Array, StringArray};
use xxhash_rust::xxh3::xxh3_64;

use super::{arr, spec};
use crate::data::batch::FeatureInput;
use crate::data::encode::{hash_id, BatchLoc, FeatureEncoder};
use crate::data::error::DataError;
use crate::proto::plan::{FeatureKind, Normalizer, NormalizerKind};

/// xxh3_64 (seed 0) of "u1", as plec has always computed it.
const PINNED_U1: u64 = 11_367_126_444_297_510_385;

fn loc() -> BatchLoc<'static> {
    BatchLoc {
        file: Path::new("f.parquet"),
        first_row: 100,
        row_group: 3,
    }
}

fn ids(enc: &FeatureEncoder, cols: &[&ArrayRef]) -> (Vec<u32>, Vec<u32>) {
    match enc.encode(cols, &loc()).unwrap() {
        FeatureInput::Ids { ids, offsets } => (ids, offsets),
        other => panic!("expected ids, got {other:?}"),
    }
}

fn dense(enc: &FeatureEncoder, col: &ArrayRef) -> (Vec<f32>, usize) {
    match enc.encode(&[col], &loc()).unwrap() {
        FeatureInput::Dense { values, dim } => (values, dim),
        other => panic!("expected dense, got {other:?}"),
    }
}

#[test]
fn hash_contract_is_pinned() {
    // The hash decides embedding rows of trained tables: never change it.
    // Published XXH3_64bits test vector: empty input, seed 0.
    assert_eq!(xxh3_64(b""), 0x2D06_8005_38D3_94C2);
    assert_eq!(xxh3_64(b"u1"), PINNED_U1);
    assert_eq!(hash_id("u1", 1000), (PINNED_U1 % 1000) as u32);
    assert_eq!(hash_id("7", 1000), (xxh3_64(b"7") % 1000) as u32);
    assert_eq!(
        hash_id("abc", 1 << 20),
        (xxh3_64(b"abc") % (1 << 20)) as u32
    );
}

#[test]
fn id_hash_ints_and_strings_agree() {
    let enc = FeatureEncoder::new(&spec("f", FeatureKind::IdHash, &["c"], 1000)).unwrap();
    let ints = arr(Int64Array::from(vec![Some(7), Some(-12), None]));
    let strs = arr(StringArray::from(vec![Some("7"), Some("-12"), Some("")]));
    let small = arr(Int32Array::from(vec![Some(7), Some(-12), None]));
    let want = (
        vec![hash_id("7", 1000), hash_id("-12", 1000)],
        vec![0, 1, 2, 2],
    );
    assert_eq!(ids(&enc, &[&ints]), want);
    assert_eq!(ids(&enc, &[&strs]), want);
    assert_eq!(ids(&enc, &[&small]), want);
}

#[test]
fn id_hash_multi_value_and_default() {
    let mut s = spec("f", FeatureKind::IdHash, &["c"], 1 << 20);
    s.default_value = "none".into();
    s.separator = "|".into();
    let enc = FeatureEncoder::new(&s).unwrap();
    let col = arr(StringArray::from(vec![
        Some("a|b"),
        None,
        Some("c||"),
        Some(""),
    ]));
    let h = |x: &str| hash_id(x, 1 << 20);
    assert_eq!(
        ids(&enc, &[&col]),
        (
            vec![h("a"), h("b"), h("none"), h("c"), h("none")],
            vec![0, 2, 3, 4, 5]
        )
    );
    // List column: items are not split.
    let mut b = ListBuilder::new(StringBuilder::new());
    b.values().append_value("x|y");
    b.values().append_value("z");
    b.append(true);
    b.append(true);
    b.append_null();
    let list = arr(b.finish());
    assert_eq!(
        ids(&enc, &[&list]),
        (
            vec![h("x|y"), h("z"), h("none"), h("none")],
            vec![0, 2, 3, 4]
        )
    );
}

#[test]
fn num_buckets_range_checked() {
    let enc =
        FeatureEncoder::new(&spec("item", FeatureKind::IdNumBuckets, &["item_id"], 10)).unwrap();
    let ok = arr(Int64Array::from(vec![0, 5, 9]));
    assert_eq!(ids(&enc, &[&ok]), (vec![0, 5, 9], vec![0, 1, 2, 3]));
    let strs = arr(StringArray::from(vec!["3\u{1d}4"]));
    assert_eq!(ids(&enc, &[&strs]), (vec![3, 4], vec![0, 2]));
    for (bad, value) in [
        (arr(Int64Array::from(vec![1, 2, 10])), 10),
        (arr(Int64Array::from(vec![1, 2, -1])), -1),
    ] {
        let err = enc.encode(&[&bad], &loc()).unwrap_err();
        match &err {
            DataError::IdOutOfRange {
                at,
                column,
                value: v,
                num_ids,
                ..
            } => {
                assert_eq!(
                    (at.row, at.row_group, column.as_str(), *v, *num_ids),
                    (102, 3, "item_id", value, 10)
                );
            }
            other => panic!("{other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("f.parquet") && msg.contains("item_id") && msg.contains("row 102"),
            "{msg}"
        );
    }
    let not_int = arr(StringArray::from(vec!["x"]));
    assert!(matches!(
        enc.encode(&[&not_int], &loc()),
        Err(DataError::BadValue { .. })
    ));
}

#[test]
fn vocab_list_dict_and_oov() {
    let mut s = spec("v", FeatureKind::IdVocab, &["c"], 4);
    s.vocab = vec!["x".into(), "y".into()];
    let enc = FeatureEncoder::new(&s).unwrap();
    let col = arr(StringArray::from(vec![
        Some("x"),
        Some("y"),
        Some("z"),
        None,
    ]));
    assert_eq!(ids(&enc, &[&col]), (vec![2, 3, 1], vec![0, 1, 2, 3, 3]));
    s.default_bucketize_value = Some(0);
    s.default_value = "missing".into();
    let enc = FeatureEncoder::new(&s).unwrap();
    assert_eq!(ids(&enc, &[&col]), (vec![2, 3, 0, 0], vec![0, 1, 2, 3, 4]));
    let mut d = spec("v", FeatureKind::IdVocab, &["c"], 8);
    d.vocab_dict = [("x".to_string(), 5u64), ("7".to_string(), 7)]
        .into_iter()
        .collect();
    let enc = FeatureEncoder::new(&d).unwrap();
    let ints = arr(Int64Array::from(vec![7, 8]));
    assert_eq!(ids(&enc, &[&ints]), (vec![7, 1], vec![0, 1, 2]));
    assert_eq!(ids(&enc, &[&col]), (vec![5, 1, 1], vec![0, 1, 2, 3, 3]));
    d.num_ids = 7;
    assert!(matches!(
        FeatureEncoder::new(&d),
        Err(DataError::BadSpec { .. })
    ));
}

#[test]
fn raw_dense_normalizers() {
    let norm = |kind: NormalizerKind, a: f64, b: f64| {
        let mut s = spec("p", FeatureKind::RawDense, &["c"], 0);
        s.normalizer = Some(Normalizer {
            kind: kind as i32,
            a,
            b,
            c: 0.0,
        });
        s.default_value = "1000".into();
        FeatureEncoder::new(&s).unwrap()
    };
    let col = arr(Float64Array::from(vec![
        Some(10.0),
        Some(0.0),
        None,
        Some(f64::NAN),
    ]));
    assert_eq!(
        dense(&norm(NormalizerKind::Log10, 1e-3, -10.0), &col),
        (vec![1.0, -3.0, 3.0, 3.0], 1)
    );
    let f32col = arr(Float32Array::from(vec![4.0f32, 0.0]));
    assert_eq!(
        dense(&norm(NormalizerKind::Zscore, 2.0, 2.0), &f32col),
        (vec![1.0, -1.0], 1)
    );
    let ints = arr(Int64Array::from(vec![5, 10]));
    assert_eq!(
        dense(&norm(NormalizerKind::Minmax, 0.0, 10.0), &ints),
        (vec![0.5, 1.0], 1)
    );
    let inf = arr(Float64Array::from(vec![1.0, f64::INFINITY]));
    match norm(NormalizerKind::NormalizerNone, 0.0, 0.0).encode(&[&inf], &loc()) {
        Err(DataError::NonFinite { at, column, .. }) => {
            assert_eq!((at.row, column.as_str()), (101, "c"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn raw_dense_lists_and_width() {
    let mut s = spec("emb", FeatureKind::RawDense, &["c"], 0);
    s.value_dim = 2;
    let enc = FeatureEncoder::new(&s).unwrap();
    let mut b = ListBuilder::new(arrow_array::builder::Float64Builder::new());
    b.values().append_slice(&[1.0, 2.0]);
    b.append(true);
    b.append_null();
    b.values().append_slice(&[3.0, 4.0]);
    b.append(true);
    let list = arr(b.finish());
    assert_eq!(dense(&enc, &list), (vec![1.0, 2.0, 0.0, 0.0, 3.0, 4.0], 2));
    let joined = arr(StringArray::from(vec!["5\u{1d}6"]));
    assert_eq!(dense(&enc, &joined), (vec![5.0, 6.0], 2));
    let mut b = ListBuilder::new(arrow_array::builder::Float64Builder::new());
    b.values().append_slice(&[1.0, 2.0, 3.0]);
    b.append(true);
    let bad = arr(b.finish());
    assert!(matches!(
        enc.encode(&[&bad], &loc()),
        Err(DataError::WrongWidth {
            found: 3,
            expected: 2,
            ..
        })
    ));
}

#[test]
fn raw_bucketized_boundaries() {
    let mut s = spec("b", FeatureKind::RawBucketized, &["c"], 3);
    s.boundaries = vec![0.0, 10.0];
    let enc = FeatureEncoder::new(&s).unwrap();
    let col = arr(Float64Array::from(vec![
        Some(-1.0),
        Some(0.0),
        Some(5.0),
        Some(10.0),
        Some(11.0),
        None,
    ]));
    assert_eq!(
        ids(&enc, &[&col]),
        (vec![0, 1, 1, 2, 2], vec![0, 1, 2, 3, 4, 5, 5])
    );
    s.num_ids = 4;
    assert!(matches!(
        FeatureEncoder::new(&s),
        Err(DataError::BadSpec { .. })
    ));
}

#[test]
fn combo_cross_product() {
    let enc =
        FeatureEncoder::new(&spec("x", FeatureKind::ComboHash, &["a", "b"], 1 << 30)).unwrap();
    let a = arr(StringArray::from(vec![Some("u"), Some("p\u{1d}q"), None]));
    let b = arr(Int64Array::from(vec![1, 2, 3]));
    let h = |x: &str| hash_id(x, 1 << 30);
    assert_eq!(
        ids(&enc, &[&a, &b]),
        (vec![h("u_1"), h("p_2"), h("q_2")], vec![0, 1, 3, 3])
    );
}

#[test]
fn wrong_type_is_reported() {
    let enc = FeatureEncoder::new(&spec("f", FeatureKind::IdHash, &["c"], 10)).unwrap();
    let floats = arr(Float64Array::from(vec![1.0]));
    match enc.encode(&[&floats], &loc()) {
        Err(DataError::WrongType { column, found, .. }) => {
            assert_eq!((column.as_str(), found.as_str()), ("c", "Float64"))
        }
        other => panic!("{other:?}"),
    }
}
