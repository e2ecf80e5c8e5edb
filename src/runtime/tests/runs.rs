//! Whole runs: plan round trip, determinism, bad inputs, and a throughput
//! benchmark (ignored by default; run with `--ignored --nocapture`).

use candle_core::Device;

use super::*;
use crate::runtime::{
    predict, predict_batch, train, vec_source, Model, Progress, TrainOptions, Trainer,
};

fn opts(steps: u64) -> TrainOptions {
    TrainOptions {
        num_steps: Some(steps),
        progress: Progress::Silent,
        ..Default::default()
    }
}

#[test]
fn plan_round_trip_gives_same_predictions() {
    let plan = complex_plan(1, 0.2);
    let b = complex_batch(16, 2);
    let mut tr = Trainer::new(&plan, 5, &Device::Cpu).unwrap();
    tr.step(&b, 0).unwrap();
    tr.step(&complex_batch(16, 3), 0).unwrap();
    let before = predict_batch(&mut tr.model, &b).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.bin");
    crate::plan::file::save(&tr.to_plan().unwrap(), &path).unwrap();
    let loaded = crate::plan::file::load(&path).unwrap();
    assert_eq!(loaded.trained_steps, 2);
    let mut m = Model::from_plan(&loaded, &Device::Cpu).unwrap();
    assert_eq!(predict_batch(&mut m, &b).unwrap(), before);
}

#[test]
fn train_writes_outputs_and_is_deterministic() {
    let mut plan = complex_plan(1, 0.3);
    plan.tasks[0].metrics = vec![Metric {
        kind: MetricKind::Auc as i32,
        ..Default::default()
    }];
    let batches: Vec<_> = (0..4).map(|i| complex_batch(12, 10 + i)).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(10);
    o.out_dir = Some(dir.path().to_path_buf());
    let mut src = vec_source(batches.clone());
    let mut ev = vec_source(batches[..2].to_vec());
    let r1 = train(&plan, &mut src, Some(&mut ev), &o, &Device::Cpu).unwrap();
    assert_eq!(r1.steps, 10);
    assert_eq!(r1.epochs, 3);
    assert_eq!(r1.losses.len(), 10);
    assert!(r1
        .eval
        .as_ref()
        .unwrap()
        .iter()
        .any(|(k, _)| k == "loss_ctr"));
    let written = crate::plan::file::load(&dir.path().join("plan.bin")).unwrap();
    assert_eq!(written.trained_steps, 10);
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["steps"], 10);
    // Same seed: identical losses and parameters.
    let r2 = train(
        &plan,
        &mut vec_source(batches.clone()),
        None,
        &opts(10),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(r1.losses, r2.losses);
    assert_eq!(r1.plan.params, r2.plan.params);
    assert_eq!(r1.plan.tables, r2.plan.tables);
    // Another seed changes the dropout masks.
    let mut o3 = opts(10);
    o3.seed = Some(77);
    let r3 = train(
        &plan,
        &mut vec_source(batches.clone()),
        None,
        &o3,
        &Device::Cpu,
    )
    .unwrap();
    assert_ne!(r1.losses, r3.losses);
    // Training lowers the loss on this data.
    let long = train(
        &plan,
        &mut vec_source(batches.clone()),
        None,
        &opts(200),
        &Device::Cpu,
    )
    .unwrap();
    let first: f32 = long.losses[..4].iter().sum();
    let last: f32 = long.losses[196..].iter().sum();
    assert!(last < first, "{first} -> {last}");
    // Continuing training from the written plan counts steps on.
    let r4 = train(
        &written,
        &mut vec_source(batches.clone()),
        None,
        &opts(2),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(r4.plan.trained_steps, 12);
    // Predictions over a source.
    let mut m = Model::from_plan(&r1.plan, &Device::Cpu).unwrap();
    let p = predict(&mut m, &mut vec_source(batches[..2].to_vec())).unwrap();
    assert_eq!(p[0].values.len(), 24);
    assert_eq!(p[1].num_class, 3);
    assert_eq!(p[1].values.len(), 72);
    for row in p[1].values.chunks(3) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
}

#[test]
fn bad_plans_and_batches_are_errors() {
    let plan = complex_plan(1, 0.0);
    let mut m = Model::from_plan(&plan, &Device::Cpu).unwrap();
    let mut b = complex_batch(4, 1);
    if let crate::data::batch::FeatureInput::Ids { ids, .. } = &mut b.features[0] {
        ids.push(0);
    }
    let e = m.forward(&b, crate::runtime::Mode::Eval).unwrap_err();
    assert!(e.to_string().contains("offsets"), "{e}");
    let mut b = complex_batch(4, 1);
    b.features[0] = ids(&[&[10], &[], &[], &[]]);
    let e = m.forward(&b, crate::runtime::Mode::Eval).unwrap_err();
    assert!(e.to_string().contains("id 10"), "{e}");
    let mut p = plan.clone();
    p.params[0].data.pop();
    assert!(Model::from_plan(&p, &Device::Cpu)
        .unwrap_err()
        .to_string()
        .contains("experts.w"));
    let mut p = plan.clone();
    p.ops.swap(0, 1);
    assert!(Model::from_plan(&p, &Device::Cpu).is_err());
    let mut p = plan.clone();
    p.ops[1].params.push(999);
    assert!(Model::from_plan(&p, &Device::Cpu).is_err());
    let mut p = plan.clone();
    p.tables[0].data = vec![0; 7];
    assert!(Model::from_plan(&p, &Device::Cpu).is_err());
}

/// A mid-size plan: dense input 256 wide plus two embedded features, three
/// linears (256+32 -> 512 -> 256 -> 128) with relu and batch norm, two
/// towers; batch 1024, Adam dense, Adagrad sparse.
fn mid_plan() -> Plan {
    let widths = [256 + 32, 512, 256, 128];
    let mut params = Vec::new();
    let mut values = vec![value("group", &[-1, widths[0] as i64])];
    let mut group = op("group", OpKind::FeatureGroup, &[], 0, &[]);
    group.features = vec![0, 1, 2];
    let mut ops = vec![group];
    let mut add_param =
        |name: String, shape: &[u64], trainable: bool, scale: f64, fill: Option<f32>| {
            let n: u64 = shape.iter().product();
            let data: Vec<f32> = match fill {
                Some(f) => vec![f; n as usize],
                None => randv(n as usize, params.len() as u64, 0.0)
                    .iter()
                    .map(|v| (v * scale) as f32)
                    .collect(),
            };
            params.push(param(&name, shape, &data, trainable));
            (params.len() - 1) as u32
        };
    let mut cur = 0u32;
    for l in 0..3 {
        let (i, o) = (widths[l] as u64, widths[l + 1] as u64);
        let s = (3.0 / i as f64).sqrt();
        let w = add_param(format!("l{l}.w"), &[o, i], true, s, None);
        values.push(value(&format!("l{l}"), &[-1, o as i64]));
        ops.push(op(
            &format!("l{l}"),
            OpKind::Linear,
            &[cur],
            values.len() as u32 - 1,
            &[w],
        ));
        cur = values.len() as u32 - 1;
        let g = add_param(format!("bn{l}.g"), &[o], true, 0.0, Some(1.0));
        let b = add_param(format!("bn{l}.b"), &[o], true, 0.0, Some(0.0));
        let m = add_param(format!("bn{l}.m"), &[o], false, 0.0, Some(0.0));
        let v = add_param(format!("bn{l}.v"), &[o], false, 0.0, Some(1.0));
        values.push(value(&format!("bn{l}"), &[-1, o as i64]));
        ops.push(op(
            &format!("bn{l}"),
            OpKind::BatchNorm,
            &[cur],
            values.len() as u32 - 1,
            &[g, b, m, v],
        ));
        cur = values.len() as u32 - 1;
        values.push(value(&format!("relu{l}"), &[-1, o as i64]));
        let mut a = op(
            &format!("relu{l}"),
            OpKind::Activation,
            &[cur],
            values.len() as u32 - 1,
            &[],
        );
        a.activation = Activation::Relu as i32;
        ops.push(a);
        cur = values.len() as u32 - 1;
    }
    let mut tasks = Vec::new();
    for name in ["ctr", "cvr"] {
        let w = add_param(format!("{name}.w"), &[1, 128], true, 0.1, None);
        let b = add_param(format!("{name}.b"), &[1], true, 0.0, Some(0.0));
        values.push(value(name, &[-1, 1]));
        ops.push(op(
            name,
            OpKind::Linear,
            &[cur],
            values.len() as u32 - 1,
            &[w, b],
        ));
        tasks.push(bce_task(name, name, values.len() as u32 - 1));
    }
    let table = |name: &str, rows: u64| EmbeddingTable {
        name: name.into(),
        num_rows: rows,
        dim: 16,
        init: InitKind::InitUniform as i32,
        init_scale: 0.05,
        init_seed: rows,
        data: vec![],
        torch_name: String::new(),
    };
    Plan {
        format_version: 1,
        data: Some(DataSpec {
            batch_size: 1024,
            label_fields: vec!["ctr".into(), "cvr".into()],
            ..Default::default()
        }),
        features: vec![
            dense_feature("dense", 256),
            id_feature("user", 0, 16, Pooling::Sum),
            id_feature("item", 1, 16, Pooling::Sum),
        ],
        tables: vec![table("user", 1_000_000), table("item", 100_000)],
        values,
        ops,
        params,
        tasks,
        train: Some(train_settings(
            optimizer(OptimizerKind::Adam, 0.001),
            optimizer(OptimizerKind::Adagrad, 0.01),
            50,
        )),
        ..Default::default()
    }
}

fn mid_batch(rows: usize, seed: u64) -> crate::data::batch::Batch {
    let mut r = crate::rng::SplitMix64::new(seed);
    let dense: Vec<f32> = (0..rows * 256).map(|_| r.next_f64() as f32).collect();
    let user: Vec<Vec<u32>> = (0..rows)
        .map(|_| vec![(r.next_u64() % 1_000_000) as u32])
        .collect();
    let item: Vec<Vec<u32>> = (0..rows)
        .map(|_| vec![(r.next_u64() % 100_000) as u32])
        .collect();
    let ur: Vec<&[u32]> = user.iter().map(|v| v.as_slice()).collect();
    let ir: Vec<&[u32]> = item.iter().map(|v| v.as_slice()).collect();
    let l1: Vec<f32> = (0..rows)
        .map(|_| (r.next_f64() < 0.3) as u8 as f32)
        .collect();
    let l2: Vec<f32> = (0..rows)
        .map(|_| (r.next_f64() < 0.1) as u8 as f32)
        .collect();
    batch(
        rows,
        vec![
            crate::data::batch::FeatureInput::Dense {
                values: dense,
                dim: 256,
            },
            ids(&ur),
            ids(&ir),
        ],
        vec![l1, l2],
    )
}

#[test]
#[ignore = "benchmark: cargo test --release --lib runtime::tests::runs::bench_mid_size -- --ignored --nocapture"]
fn bench_mid_size() {
    let plan = mid_plan();
    let batches: Vec<_> = (0..8).map(|i| mid_batch(1024, i)).collect();
    let mut tr = Trainer::new(&plan, 1, &Device::Cpu).unwrap();
    for b in &batches[..2] {
        tr.step(b, 0).unwrap();
    }
    let n = 40;
    let t0 = std::time::Instant::now();
    for i in 0..n {
        tr.step(&batches[i % batches.len()], 0).unwrap();
    }
    let s = t0.elapsed().as_secs_f64();
    eprintln!(
        "mid-size plan, batch 1024: {:.2} steps/s, {:.0} samples/s ({:.1} ms/step)",
        n as f64 / s,
        n as f64 * 1024.0 / s,
        s * 1000.0 / n as f64
    );
    // Phase breakdown of one step, for finding hot spots.
    let b = &batches[0];
    let data = plan.data.clone().unwrap();
    let mut phase = [0f64; 5];
    let mut dense = crate::runtime::optim::dense::DenseOptimizer::new(
        plan.train
            .as_ref()
            .unwrap()
            .dense_optimizer
            .as_ref()
            .unwrap(),
        plan.params.len(),
    )
    .unwrap();
    let mut sparse = crate::runtime::optim::sparse::SparseOptimizer::new(
        plan.train
            .as_ref()
            .unwrap()
            .sparse_optimizer
            .as_ref()
            .unwrap(),
        2,
    )
    .unwrap();
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let fwd = tr
            .model
            .forward(b, crate::runtime::Mode::Train { seed: 1, step: 0 })
            .unwrap();
        let t1 = t.elapsed().as_secs_f64();
        let mut total = None::<candle_core::Tensor>;
        for (task, l) in plan.tasks.iter().zip(&fwd.logits) {
            let tg = crate::runtime::loss::task_targets(
                &data,
                task,
                b,
                candle_core::DType::F32,
                &Device::Cpu,
            )
            .unwrap();
            let x = crate::runtime::loss::task_loss(task, l, &tg).unwrap();
            total = Some(match total {
                Some(a) => (a + x).unwrap(),
                None => x,
            });
        }
        let total = total.unwrap();
        total.to_scalar::<f32>().unwrap();
        let t2 = t.elapsed().as_secs_f64();
        let grads = total.backward().unwrap();
        let t3 = t.elapsed().as_secs_f64();
        dense.step(&tr.model.trainable(), &grads, 0.0).unwrap();
        let t4 = t.elapsed().as_secs_f64();
        sparse
            .step(tr.model.tables_mut(), &fwd.gathered, &grads, 0.0)
            .unwrap();
        let t5 = t.elapsed().as_secs_f64();
        for (p, v) in phase
            .iter_mut()
            .zip([t1, t2 - t1, t3 - t2, t4 - t3, t5 - t4])
        {
            *p += v * 1000.0 / 5.0;
        }
    }
    eprintln!(
        "ms per phase: forward {:.1}, loss {:.1}, backward {:.1}, dense {:.1}, sparse {:.1}",
        phase[0], phase[1], phase[2], phase[3], phase[4]
    );
    let t0 = std::time::Instant::now();
    for b in &batches {
        predict_batch(&mut tr.model, b).unwrap();
    }
    let s = t0.elapsed().as_secs_f64();
    eprintln!("eval forward: {:.0} samples/s", 8.0 * 1024.0 / s);
}

/// Random batch for any plan: ids below each table's rows (bags of 1-2),
/// dense values for raw features, 0/1 labels.
pub(super) fn random_batch(plan: &Plan, rows: usize, seed: u64) -> crate::data::batch::Batch {
    let mut r = crate::rng::SplitMix64::new(seed);
    let features = plan
        .features
        .iter()
        .map(|f| {
            let steps = f.sequence_length as usize;
            if steps > 0 {
                // Rows of 0..=L steps, so some are empty and some full.
                let lens: Vec<usize> = (0..rows)
                    .map(|_| (r.next_u64() % (steps as u64 + 1)) as usize)
                    .collect();
                let offsets: Vec<u32> = std::iter::once(0)
                    .chain(lens.iter().scan(0u32, |acc, &n| {
                        *acc += n as u32;
                        Some(*acc)
                    }))
                    .collect();
                let total = lens.iter().sum::<usize>();
                if FeatureKind::try_from(f.kind) == Ok(FeatureKind::RawDense) {
                    let dim = f.value_dim.max(1) as usize;
                    return crate::data::batch::FeatureInput::SeqDense {
                        values: (0..total * dim).map(|_| r.next_f64() as f32).collect(),
                        offsets,
                        dim,
                    };
                }
                let n = plan.tables[f.table as usize].num_rows;
                return crate::data::batch::FeatureInput::Ids {
                    ids: (0..total).map(|_| (r.next_u64() % n) as u32).collect(),
                    offsets,
                };
            }
            if FeatureKind::try_from(f.kind) == Ok(FeatureKind::RawDense) {
                let dim = f.value_dim.max(1) as usize;
                crate::data::batch::FeatureInput::Dense {
                    values: (0..rows * dim).map(|_| r.next_f64() as f32).collect(),
                    dim,
                }
            } else {
                let n = plan.tables[f.table as usize].num_rows;
                let bags: Vec<Vec<u32>> = (0..rows)
                    .map(|_| {
                        (0..1 + r.next_u64() % 2)
                            .map(|_| (r.next_u64() % n) as u32)
                            .collect()
                    })
                    .collect();
                let refs: Vec<&[u32]> = bags.iter().map(|b| b.as_slice()).collect();
                ids(&refs)
            }
        })
        .collect();
    let labels = plan
        .data
        .as_ref()
        .map(|d| d.label_fields.len())
        .unwrap_or(0);
    let labels = (0..labels)
        .map(|_| {
            (0..rows)
                .map(|_| (r.next_f64() < 0.3) as u8 as f32)
                .collect()
        })
        .collect();
    batch(rows, features, labels)
}

/// Runs plans written by `plec compile` (every `*.plan` in
/// `$PLEC_PLANS_DIR`): a few training steps, evaluation, prediction.
#[test]
#[ignore = "needs compiled plans: PLEC_PLANS_DIR=dir cargo test --release --lib compiled_plans -- --ignored --nocapture"]
fn compiled_plans() {
    let Ok(dir) = std::env::var("PLEC_PLANS_DIR") else {
        return;
    };
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "plan"))
        .collect();
    paths.sort();
    for path in paths {
        let plan = crate::plan::file::load(&path).unwrap();
        let batches: Vec<_> = (0..3).map(|i| random_batch(&plan, 512, i)).collect();
        let mut o = opts(6);
        o.eval_every = Some(3);
        let t = std::time::Instant::now();
        let r = train(
            &plan,
            &mut vec_source(batches.clone()),
            Some(&mut vec_source(batches[..1].to_vec())),
            &o,
            &Device::Cpu,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!(
            "{}: losses {:?}, {:.2} steps/s at batch 512 ({:.1}s in all), eval {:?}",
            path.display(),
            r.losses,
            r.steps_per_sec(),
            t.elapsed().as_secs_f64(),
            r.eval
        );
        assert!(r.losses.iter().all(|l| l.is_finite()));
    }
}
