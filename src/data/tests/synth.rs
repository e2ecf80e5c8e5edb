use super::{plan, spec};
use crate::data::reader::{DataSource, ReadOptions};
use crate::data::synth::generate;
use crate::metrics::TaskMetrics;
use crate::proto::plan::{
    FeatureKind, Loss, LossKind, Metric, MetricKind, Normalizer, NormalizerKind, Plan, Task,
};

fn binary_task(tower: &str, label: &str) -> Task {
    Task {
        tower_name: tower.into(),
        label_name: label.into(),
        num_class: 1,
        losses: vec![Loss {
            kind: LossKind::BinaryCrossEntropy as i32,
            ..Default::default()
        }],
        metrics: vec![Metric {
            kind: MetricKind::Auc as i32,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A plan using every feature kind, two funnel tasks and a grouped AUC.
pub(super) fn full_plan() -> Plan {
    let mut vocab = spec("cat", FeatureKind::IdVocab, &["cat"], 12);
    vocab.vocab = (0..10).map(|i| format!("c{i}")).collect();
    let mut bucket = spec("age", FeatureKind::RawBucketized, &["age"], 4);
    bucket.boundaries = vec![18.0, 30.0, 50.0];
    let mut price = spec("price", FeatureKind::RawDense, &["price"], 0);
    price.normalizer = Some(Normalizer {
        kind: NormalizerKind::Log10 as i32,
        a: 1e-3,
        b: -3.0,
        c: 0.0,
    });
    let mut emb = spec("pre_emb", FeatureKind::RawDense, &["pre_emb"], 0);
    emb.value_dim = 4;
    let mut p = plan(
        vec![
            spec("user_id", FeatureKind::IdHash, &["user_id"], 100_000),
            spec("item_id", FeatureKind::IdNumBuckets, &["item_id"], 50_000),
            vocab,
            bucket,
            price,
            emb,
            spec(
                "user_x_cat",
                FeatureKind::ComboHash,
                &["city", "cat"],
                10_000,
            ),
        ],
        &["clk", "buy"],
        &["w"],
    );
    let mut ctr = binary_task("ctr", "clk");
    ctr.metrics.push(Metric {
        kind: MetricKind::GroupedAuc as i32,
        grouping_key: "user_id".into(),
        ..Default::default()
    });
    p.tasks = vec![ctr, binary_task("cvr", "buy")];
    p
}

#[test]
fn same_seed_same_bytes_and_sane_bayes_auc() {
    let p = full_plan();
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let t = std::time::Instant::now();
    let ra = generate(&p, 100_000, 20_000, 42, a.path()).unwrap();
    let took = t.elapsed().as_secs_f64();
    assert!(took < 5.0, "120k rows took {took:.2}s");
    let rb = generate(&p, 100_000, 20_000, 42, b.path()).unwrap();
    generate(&p, 100_000, 20_000, 43, c.path()).unwrap();
    let bytes = |d: &std::path::Path, f: &str| std::fs::read(d.join(f)).unwrap();
    assert_eq!(
        bytes(a.path(), "train.parquet"),
        bytes(b.path(), "train.parquet")
    );
    assert_eq!(
        bytes(a.path(), "eval.parquet"),
        bytes(b.path(), "eval.parquet")
    );
    assert_ne!(
        bytes(a.path(), "train.parquet"),
        bytes(c.path(), "train.parquet")
    );
    assert_eq!(ra.tasks, rb.tasks);
    eprintln!("{ra:#?}");
    let ctr = &ra.tasks[0];
    let cvr = &ra.tasks[1];
    assert!((0.2..0.4).contains(&ctr.train_label_mean), "{ctr:?}");
    assert!(
        cvr.train_label_mean < ctr.train_label_mean && cvr.train_label_mean > 0.02,
        "{cvr:?}"
    );
    for t in &ra.tasks {
        assert!((0.68..0.9).contains(&t.bayes_auc_eval), "{t:?}");
    }

    // Every column the plan reads is there with a readable type, and the
    // funnel holds: buy only where clk.
    let src = DataSource::open(&p, &[ra.train_path.to_str().unwrap()]).unwrap();
    let mut m = TaskMetrics::new(&p.tasks[0]);
    let mut rows = 0;
    for b in src.batches(&ReadOptions::eval(8192)) {
        let b = b.unwrap();
        rows += b.rows;
        for (c, y) in b.labels[0].iter().zip(&b.labels[1]) {
            assert!(*y <= *c);
        }
        m.update_batch(&b.labels[0], &b.labels[0], None, &b.group_keys);
    }
    assert_eq!(rows, 100_000);
    let out = m.finish();
    assert_eq!(out[0].0, "auc_ctr");
}
