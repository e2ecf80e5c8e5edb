//! CPU against CUDA on the same plan and batches. Needs a build with
//! `--features cuda` and a GPU, so every test is ignored by default and
//! the whole file is compiled only with the feature:
//!
//! ```text
//! scripts/build-cuda.sh --tests        # builds this test binary too
//! cargo test --release --features cuda --test cuda -- --ignored --nocapture cuda_
//! ```
//!
//! `scripts/gpu-check.sh` runs them on the GPU machine. Each test prints a
//! `CHECK <name> <value> <limit> <ok|FAIL>` line that the script collects.

#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Tensor};

use plec::data::batch::{Batch, FeatureInput};
use plec::pipeline::{build, BuildOptions};
use plec::proto::plan::{FeatureKind, Plan};
use plec::rng::SplitMix64;
use plec::runtime::exec::candle::ops;
use plec::runtime::{Mode, Model, Trainer};

/// Relative tolerance of the issue: forward outputs within 1e-4.
const FORWARD_TOL: f64 = 1e-4;

fn cuda() -> Device {
    match Device::new_cuda(0) {
        Ok(d) => d,
        Err(e) => panic!("no CUDA device 0: {e}"),
    }
}

fn ple_plan() -> Plan {
    let source = include_str!("../examples/ple_taobao.config");
    match build(source, BuildOptions::default()) {
        Ok(b) => b.plan,
        Err(e) => panic!("the PLE example does not compile: {e:?}"),
    }
}

/// A batch for any plan: ids below each table's rows (bags of 1-3), dense
/// values in [0, 1), 0/1 labels. The same seed gives the same batch.
fn random_batch(plan: &Plan, rows: usize, seed: u64) -> Batch {
    let mut r = SplitMix64::new(seed);
    let features = plan
        .features
        .iter()
        .map(|f| {
            if FeatureKind::try_from(f.kind) == Ok(FeatureKind::RawDense) {
                let dim = f.value_dim.max(1) as usize;
                FeatureInput::Dense {
                    values: (0..rows * dim).map(|_| r.next_f64() as f32).collect(),
                    dim,
                }
            } else {
                let n = plan.tables[f.table as usize].num_rows.max(1);
                let mut ids = Vec::new();
                let mut offsets = vec![0u32];
                for _ in 0..rows {
                    for _ in 0..1 + r.next_u64() % 3 {
                        ids.push((r.next_u64() % n) as u32);
                    }
                    offsets.push(ids.len() as u32);
                }
                FeatureInput::Ids { ids, offsets }
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
    Batch {
        rows,
        features,
        labels,
        sample_weights: vec![],
        group_keys: vec![],
    }
}

fn host(t: &Tensor) -> Vec<f64> {
    let flat = t
        .to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f64>());
    match flat {
        Ok(v) => v,
        Err(e) => panic!("cannot read a tensor back: {e}"),
    }
}

/// `max |a - b| / max |b|` (relative to the scale of the CPU output), and
/// whether any value is not finite.
fn rel_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    if a.iter().chain(b).any(|x| !x.is_finite()) {
        return f64::INFINITY;
    }
    let scale = b.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-12);
    let diff = a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

fn check(name: &str, value: f64, limit: f64) {
    let ok = value <= limit;
    println!(
        "CHECK {name} {value:.3e} {limit:.0e} {}",
        if ok { "ok" } else { "FAIL" }
    );
    assert!(ok, "{name}: {value:e} > {limit:e}");
}

fn logits(model: &mut Model, batch: &Batch) -> Vec<Vec<f64>> {
    match model.forward(batch, Mode::Eval) {
        Ok(f) => f.logits.iter().map(host).collect(),
        Err(e) => panic!("forward failed on {:?}: {e}", model.device()),
    }
}

/// Check (1): forward outputs of the PLE example, same plan and batch.
#[test]
#[ignore = "needs a GPU"]
fn cuda_forward_matches_cpu() {
    let plan = ple_plan();
    let gpu = cuda();
    let load = |d: &Device| match Model::from_plan(&plan, d) {
        Ok(m) => m,
        Err(e) => panic!("cannot load the plan on {d:?}: {e}"),
    };
    let (mut on_cpu, mut on_gpu) = (load(&Device::Cpu), load(&gpu));
    let mut worst = 0f64;
    for (rows, seed) in [(1024, 1), (4096, 2)] {
        let batch = random_batch(&plan, rows, seed);
        let a = logits(&mut on_gpu, &batch);
        let b = logits(&mut on_cpu, &batch);
        for (ti, (x, y)) in a.iter().zip(&b).enumerate() {
            let d = rel_diff(x, y);
            println!(
                "forward batch {rows}, task {}: max rel diff {d:.3e}",
                plan.tasks[ti].tower_name
            );
            worst = worst.max(d);
        }
    }
    check("forward_rel_diff", worst, FORWARD_TOL);
}

/// Dropout masks drawn on the device equal the host's, bit for bit.
#[test]
#[ignore = "needs a GPU"]
fn cuda_dropout_mask_matches_cpu() {
    let gpu = cuda();
    let mut mismatches = 0usize;
    for (shape, ratio, parts) in [
        (vec![1024usize, 256], 0.1f32, [0u64, 3]),
        (vec![4096, 64], 0.5, [17, 2]),
        (vec![3, 5, 7], 0.3, [1, 1]),
        (vec![0, 8], 0.2, [2, 0]),
    ] {
        let mut r_cpu = SplitMix64::derive(42, &parts);
        let mut r_gpu = r_cpu.clone();
        let m = |r: &mut SplitMix64, d: &Device| match ops::dropout_mask(
            &shape,
            ratio,
            r,
            DType::F32,
            d,
        ) {
            Ok(t) => host(&t),
            Err(e) => panic!("dropout mask on {d:?}: {e}"),
        };
        let a = m(&mut r_gpu, &gpu);
        let b = m(&mut r_cpu, &Device::Cpu);
        assert_eq!(a.len(), b.len());
        assert_eq!(
            r_cpu.state(),
            r_gpu.state(),
            "generator advanced differently"
        );
        mismatches += a.iter().zip(&b).filter(|(x, y)| x != y).count();
    }
    check("dropout_mask_mismatches", mismatches as f64, 0.0);
}

/// Training on the device: a few steps of the PLE example (dense and sparse
/// optimizers, losses) give the CPU's losses, and the tables stay on the
/// device.
#[test]
#[ignore = "needs a GPU"]
fn cuda_train_steps_match_cpu() {
    let plan = ple_plan();
    let gpu = cuda();
    let batches: Vec<Batch> = (0..4).map(|i| random_batch(&plan, 2048, 10 + i)).collect();
    let run = |d: &Device| {
        let mut tr = match Trainer::new(&plan, 7, d) {
            Ok(t) => t,
            Err(e) => panic!("trainer on {d:?}: {e}"),
        };
        let mut losses = Vec::new();
        for b in &batches {
            match tr.step(b, 0) {
                Ok(l) => losses.push(l.total as f64),
                Err(e) => panic!("train step on {d:?}: {e}"),
            }
        }
        for t in tr.model.tables() {
            assert_eq!(
                t.weight.device().is_cuda(),
                d.is_cuda(),
                "table {} left the device",
                t.name
            );
        }
        let out = logits(&mut tr.model, &batches[0]);
        (losses, out)
    };
    let (lg, og) = run(&gpu);
    let (lc, oc) = run(&Device::Cpu);
    println!("losses cpu {lc:?}\nlosses gpu {lg:?}");
    let loss_diff = rel_diff(&lg, &lc);
    let out_diff = og
        .iter()
        .zip(&oc)
        .map(|(a, b)| rel_diff(a, b))
        .fold(0f64, f64::max);
    // Four optimizer steps amplify rounding differences (cuBLAS sums in
    // another order), so the bound is looser than the forward check's.
    check("train_loss_rel_diff", loss_diff, 1e-3);
    check("trained_forward_rel_diff", out_diff, 1e-2);
}
