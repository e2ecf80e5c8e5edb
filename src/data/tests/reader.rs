use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow_array::{Array, BooleanArray, Float32Array, Float64Array, Int64Array, StringArray};

use super::{arr, plan, spec, write_parquet};
use crate::data::batch::{Batch, FeatureInput};
use crate::data::encode::hash_id;
use crate::data::error::DataError;
use crate::data::reader::{resolve_inputs, DataSource, ReadOptions};
use crate::proto::plan::{FeatureKind, Metric, MetricKind, Plan, Task};

/// 10 rows in row groups of 4: user "u0".."u9", item i, price i/2, label
/// i % 2 (int64), weight 1 + i (float).
pub(super) fn good_file(dir: &Path, name: &str, offset: i64) -> PathBuf {
    let p = dir.join(name);
    let n = 10;
    let user: Vec<String> = (0..n).map(|i| format!("u{}", i + offset)).collect();
    write_parquet(
        &p,
        vec![
            ("user", arr(StringArray::from(user))),
            (
                "item",
                arr(Int64Array::from(
                    (0..n).map(|i| i + offset).collect::<Vec<_>>(),
                )),
            ),
            (
                "price",
                arr(Float64Array::from(
                    (0..n)
                        .map(|i| (i + offset) as f64 / 2.0)
                        .collect::<Vec<_>>(),
                )),
            ),
            (
                "click",
                arr(Int64Array::from(
                    (0..n).map(|i| (i + offset) % 2).collect::<Vec<_>>(),
                )),
            ),
            (
                "buy",
                arr(BooleanArray::from(
                    (0..n).map(|i| i == 3).collect::<Vec<_>>(),
                )),
            ),
            (
                "w",
                arr(Float32Array::from(
                    (0..n)
                        .map(|i| 1.0 + (i + offset) as f32)
                        .collect::<Vec<_>>(),
                )),
            ),
        ],
        4,
    );
    p
}

pub(super) fn test_plan() -> Plan {
    let mut p = plan(
        vec![
            spec("user", FeatureKind::IdHash, &["user"], 1000),
            spec("item", FeatureKind::IdNumBuckets, &["item"], 100),
            spec("price", FeatureKind::RawDense, &["price"], 0),
        ],
        &["click", "buy"],
        &["w"],
    );
    p.tasks.push(Task {
        tower_name: "ctr".into(),
        label_name: "click".into(),
        metrics: vec![Metric {
            kind: MetricKind::GroupedAuc as i32,
            grouping_key: "user".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    p
}

fn collect(src: &DataSource, opts: &ReadOptions) -> Vec<Batch> {
    src.batches(opts).collect::<Result<Vec<_>, _>>().unwrap()
}

fn items(b: &Batch) -> Vec<i64> {
    match &b.features[1] {
        FeatureInput::Ids { ids, .. } => ids.iter().map(|&i| i as i64).collect(),
        _ => panic!(),
    }
}

#[test]
fn round_trip_values_and_batch_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let f = good_file(dir.path(), "a.parquet", 0);
    let src = DataSource::open(&test_plan(), &[f.to_str().unwrap()]).unwrap();
    assert_eq!(src.num_rows(), 10);
    let batches = collect(&src, &ReadOptions::eval(4));
    assert_eq!(
        batches.iter().map(|b| b.rows).collect::<Vec<_>>(),
        vec![4, 4, 2]
    );
    let b = &batches[0];
    match &b.features[0] {
        FeatureInput::Ids { ids, offsets } => {
            assert_eq!(
                ids,
                &(0..4)
                    .map(|i| hash_id(&format!("u{i}"), 1000))
                    .collect::<Vec<_>>()
            );
            assert_eq!(offsets, &vec![0, 1, 2, 3, 4]);
        }
        _ => panic!(),
    }
    assert_eq!(items(b), vec![0, 1, 2, 3]);
    assert_eq!(
        b.features[2],
        FeatureInput::Dense {
            values: vec![0.0, 0.5, 1.0, 1.5],
            dim: 1
        }
    );
    assert_eq!(
        b.labels,
        vec![vec![0.0, 1.0, 0.0, 1.0], vec![0.0, 0.0, 0.0, 1.0]]
    );
    assert_eq!(b.sample_weights, vec![vec![1.0, 2.0, 3.0, 4.0]]);
    assert_eq!(
        b.group_keys,
        vec![(
            "user".to_string(),
            vec!["u0".into(), "u1".into(), "u2".into(), "u3".into()]
        )]
    );
    // Batch size not aligned with row groups (4): rows re-cut exactly.
    let batches = collect(&src, &ReadOptions::eval(3));
    assert_eq!(
        batches.iter().map(|b| b.rows).collect::<Vec<_>>(),
        vec![3, 3, 3, 1]
    );
    assert_eq!(
        batches.iter().flat_map(items).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    let mut opts = ReadOptions::eval(3);
    opts.drop_remainder = true;
    assert_eq!(
        collect(&src, &opts)
            .iter()
            .map(|b| b.rows)
            .collect::<Vec<_>>(),
        vec![3, 3, 3]
    );
}

#[test]
fn inputs_dirs_globs_and_kept_columns() {
    let dir = tempfile::tempdir().unwrap();
    good_file(dir.path(), "b.parquet", 10);
    good_file(dir.path(), "a.parquet", 0);
    std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let files = resolve_inputs(std::slice::from_ref(&d)).unwrap();
    assert_eq!(
        files
            .iter()
            .map(|f| f.file_name().unwrap().to_str().unwrap())
            .collect::<Vec<_>>(),
        ["a.parquet", "b.parquet"]
    );
    assert_eq!(
        resolve_inputs(&[format!("{d}/b*.parquet")]).unwrap().len(),
        1
    );
    assert!(matches!(
        resolve_inputs(&[format!("{d}/zz*.parquet")]),
        Err(DataError::NoFiles { .. })
    ));
    let src = DataSource::open_with_keep(&test_plan(), &[d], &["item".to_string()]).unwrap();
    let mut all = Vec::new();
    for r in src.batches_with_kept(&ReadOptions::eval(6)) {
        let (b, kept) = r.unwrap();
        assert_eq!(kept[0].0, "item");
        assert_eq!(kept[0].1.len(), b.rows);
        let k = kept[0].1.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(k.values().to_vec(), items(&b));
        all.extend(items(&b));
    }
    assert_eq!(all, (0..20).collect::<Vec<_>>());
}

#[test]
fn shuffle_is_deterministic_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    good_file(dir.path(), "a.parquet", 0);
    good_file(dir.path(), "b.parquet", 10);
    good_file(dir.path(), "c.parquet", 20);
    let src = DataSource::open(&test_plan(), &[dir.path().to_str().unwrap()]).unwrap();
    let mut p = test_plan();
    p.data.as_mut().unwrap().shuffle = true;
    let run = |seed, epoch| {
        collect(&src, &ReadOptions::train(&p, 4, seed, epoch))
            .iter()
            .flat_map(items)
            .collect::<Vec<_>>()
    };
    let a = run(1, 0);
    assert_eq!(a, run(1, 0));
    assert_ne!(a, run(1, 1));
    assert_ne!(a, run(2, 0));
    assert_ne!(a, (0..30).collect::<Vec<_>>());
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, (0..30).collect::<Vec<_>>());
    // Any number of encoding threads gives the same batches.
    let with_threads = |n| {
        let mut o = ReadOptions::train(&p, 3, 5, 0);
        o.encode_threads = n;
        collect(&src, &o)
    };
    let one = with_threads(1);
    assert_eq!(one, with_threads(3));
    assert!(one.iter().all(|b| b.group_keys.is_empty()));
    // Labels travel with their rows.
    for b in collect(&src, &ReadOptions::train(&p, 4, 3, 0)) {
        let want: Vec<f32> = items(&b).iter().map(|i| (i % 2) as f32).collect();
        assert_eq!(b.labels[0], want);
    }
}

/// Opens and reads `file` with the test plan; returns the first error.
fn first_error(p: &Plan, file: &Path) -> DataError {
    let src = match DataSource::open(p, &[file.to_str().unwrap()]) {
        Ok(s) => s,
        Err(e) => return e,
    };
    match src.batches(&ReadOptions::eval(4)).find_map(|r| r.err()) {
        Some(e) => e,
        None => panic!("no error"),
    }
}

fn variant(
    cols: &mut BTreeMap<&'static str, arrow_array::ArrayRef>,
    dir: &Path,
    name: &str,
) -> PathBuf {
    let p = dir.join(name);
    write_parquet(&p, cols.iter().map(|(k, v)| (*k, v.clone())).collect(), 4);
    p
}

fn base_cols() -> BTreeMap<&'static str, arrow_array::ArrayRef> {
    let n = 10;
    let mut m = BTreeMap::new();
    m.insert(
        "user",
        arr(StringArray::from(
            (0..n).map(|i| format!("u{i}")).collect::<Vec<_>>(),
        )),
    );
    m.insert("item", arr(Int64Array::from((0..n).collect::<Vec<i64>>())));
    m.insert("price", arr(Float64Array::from(vec![1.0; 10])));
    m.insert("click", arr(Int64Array::from(vec![0i64; 10])));
    m.insert("buy", arr(Int64Array::from(vec![0i64; 10])));
    m.insert("w", arr(Float32Array::from(vec![1.0f32; 10])));
    m
}

fn assert_names(e: &DataError, file: &Path, column: Option<&str>, row: Option<&str>) {
    let msg = e.to_string();
    assert!(msg.contains(file.to_str().unwrap()), "{msg}");
    if let Some(c) = column {
        assert!(msg.contains(&format!("`{c}`")), "{msg}");
    }
    if let Some(r) = row {
        assert!(msg.contains(r), "{msg}");
    }
}

#[test]
fn bad_data_errors_name_file_column_row() {
    let dir = tempfile::tempdir().unwrap();
    let p = test_plan();
    let d = dir.path();

    let mut c = base_cols();
    c.remove("price");
    let f = variant(&mut c, d, "missing.parquet");
    let e = first_error(&p, &f);
    assert!(matches!(e, DataError::MissingColumn { .. }), "{e}");
    assert_names(&e, &f, Some("price"), None);

    let mut c = base_cols();
    c.insert("click", arr(StringArray::from(vec!["1"; 10])));
    let f = variant(&mut c, d, "type.parquet");
    let e = first_error(&p, &f);
    assert!(matches!(e, DataError::WrongType { .. }), "{e}");
    assert_names(&e, &f, Some("click"), None);

    let mut c = base_cols();
    let mut v: Vec<Option<i64>> = vec![Some(0); 10];
    v[6] = None;
    c.insert("click", arr(Int64Array::from(v)));
    let f = variant(&mut c, d, "null.parquet");
    let e = first_error(&p, &f);
    assert!(matches!(e, DataError::Null { .. }), "{e}");
    assert_names(&e, &f, Some("click"), Some("row 6 (row group 1)"));

    let mut c = base_cols();
    let mut v: Vec<f32> = vec![1.0; 10];
    v[9] = f32::NAN;
    c.insert("w", arr(Float32Array::from(v)));
    let f = variant(&mut c, d, "nan.parquet");
    let e = first_error(&p, &f);
    assert!(matches!(e, DataError::NonFinite { .. }), "{e}");
    assert_names(&e, &f, Some("w"), Some("row 9 (row group 2)"));

    let mut c = base_cols();
    let mut v: Vec<i64> = (0..10).collect();
    v[5] = 100;
    c.insert("item", arr(Int64Array::from(v)));
    let f = variant(&mut c, d, "range.parquet");
    let e = first_error(&p, &f);
    assert!(
        matches!(
            e,
            DataError::IdOutOfRange {
                value: 100,
                num_ids: 100,
                ..
            }
        ),
        "{e}"
    );
    assert_names(&e, &f, Some("item"), Some("row 5 (row group 1)"));

    let good = good_file(d, "good.parquet", 0);
    let bytes = std::fs::read(&good).unwrap();
    let f = d.join("truncated.parquet");
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let e = first_error(&p, &f);
    assert!(matches!(e, DataError::NotParquet { .. }), "{e}");
    assert_names(&e, &f, None, None);

    let f = d.join("text.parquet");
    std::fs::write(&f, "user,item\nu1,2\n").unwrap();
    let e = first_error(&p, &f);
    assert!(matches!(e, DataError::NotParquet { .. }), "{e}");
    assert_names(&e, &f, None, None);

    // Corrupt data pages behind an intact footer.
    let mut bad = bytes.clone();
    for b in bad.iter_mut().skip(8).take(200) {
        *b ^= 0x5a;
    }
    let f = d.join("pages.parquet");
    std::fs::write(&f, &bad).unwrap();
    let e = first_error(&p, &f);
    assert_names(&e, &f, None, None);
}

/// Reader throughput on a synthetic file; run with
/// `cargo test --release --lib data::tests::reader::throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput() {
    use crate::proto::plan::{Loss, LossKind};
    let mut p = super::synth::full_plan();
    p.tasks[0].losses = vec![Loss {
        kind: LossKind::BinaryCrossEntropy as i32,
        ..Default::default()
    }];
    let dir = tempfile::tempdir().unwrap();
    let rows = 1_000_000;
    let t = std::time::Instant::now();
    let rep = crate::data::synth::generate(&p, rows, 1000, 7, dir.path()).unwrap();
    println!("synth {rows} rows: {:.2}s", t.elapsed().as_secs_f64());
    let t = std::time::Instant::now();
    let file = std::fs::File::open(&rep.train_path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .with_batch_size(8192)
        .build()
        .unwrap();
    let n: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    let s = t.elapsed().as_secs_f64();
    println!(
        "arrow decode only, batch 8192: {:.2} M rows/s",
        n as f64 / s / 1e6
    );
    let mut no_keys = p.clone();
    no_keys.tasks[0]
        .metrics
        .retain(|m| m.kind != MetricKind::GroupedAuc as i32);
    let src = DataSource::open(&no_keys, &[rep.train_path.to_str().unwrap()]).unwrap();
    let t = std::time::Instant::now();
    let n: usize = src
        .batches(&ReadOptions::eval(8192))
        .map(|b| b.unwrap().rows)
        .sum();
    let s = t.elapsed().as_secs_f64();
    println!(
        "read+encode without group keys, batch 8192: {:.2} M rows/s",
        n as f64 / s / 1e6
    );
    let src = DataSource::open(&p, &[rep.train_path.to_str().unwrap()]).unwrap();
    for threads in [1, 2, 4] {
        let mut o = ReadOptions::train(&no_keys, 8192, 0, 0);
        o.encode_threads = threads;
        let t = std::time::Instant::now();
        let n: usize = src.batches(&o).map(|b| b.unwrap().rows).sum();
        let s = t.elapsed().as_secs_f64();
        println!(
            "train pass, {threads} encode threads, batch 8192: {:.2} M rows/s",
            n as f64 / s / 1e6
        );
    }
    for bs in [1024, 8192] {
        let t = std::time::Instant::now();
        let n: usize = src
            .batches(&ReadOptions::eval(bs))
            .map(|b| b.unwrap().rows)
            .sum();
        let s = t.elapsed().as_secs_f64();
        println!(
            "read+encode batch {bs}: {n} rows in {s:.2}s = {:.2} M rows/s",
            n as f64 / s / 1e6
        );
        let mut p2 = p.clone();
        p2.data.as_mut().unwrap().shuffle = true;
        let t = std::time::Instant::now();
        let n: usize = src
            .batches(&ReadOptions::train(&p2, bs, 1, 0))
            .map(|b| b.unwrap().rows)
            .sum();
        let s = t.elapsed().as_secs_f64();
        println!(
            "shuffled batch {bs}: {n} rows in {s:.2}s = {:.2} M rows/s",
            n as f64 / s / 1e6
        );
    }
}
