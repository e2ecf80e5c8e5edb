//! A tiny model computed by hand: one embedded feature (dim 2) -> LINEAR ->
//! logits, BCE; forward, loss and one optimizer step compared for dense and
//! sparse SGD, Adagrad, rowwise Adagrad and Adam.
#![allow(clippy::needless_range_loop)] // indices mirror the hand formulas

use candle_core::Device;

use super::*;
use crate::runtime::{predict_batch, Trainer};

const TABLE: [[f64; 2]; 3] = [[0.1, 0.2], [0.3, -0.1], [-0.2, 0.4]];
const W: [f64; 2] = [0.5, -0.3];
const B: f64 = 0.1;

fn tiny_plan(dense: Optimizer, sparse: Optimizer, pooling: Pooling) -> Plan {
    let table: Vec<f32> = TABLE.iter().flatten().map(|&v| v as f32).collect();
    let w: Vec<f32> = W.iter().map(|&v| v as f32).collect();
    let mut group = op("group", OpKind::FeatureGroup, &[], 0, &[]);
    group.features = vec![0];
    Plan {
        format_version: 1,
        data: Some(DataSpec {
            label_fields: vec!["y".into()],
            ..Default::default()
        }),
        features: vec![id_feature("f", 0, 2, pooling)],
        tables: vec![EmbeddingTable {
            name: "t".into(),
            num_rows: 3,
            dim: 2,
            data: bytes(&table),
            ..Default::default()
        }],
        values: vec![value("group", &[-1, 2]), value("logits", &[-1, 1])],
        ops: vec![group, op("out", OpKind::Linear, &[0], 1, &[0, 1])],
        params: vec![
            param("w", &[1, 2], &w, true),
            param("b", &[1], &[B as f32], true),
        ],
        tasks: vec![bce_task("ctr", "y", 1)],
        train: Some(train_settings(dense, sparse, 1)),
        ..Default::default()
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Embeddings of the rows, the logits, loss and gradients, by hand.
struct Hand {
    emb: Vec<[f64; 2]>,
    loss: f64,
    dw: [f64; 2],
    db: f64,
    /// Gradient per table row.
    drow: [[f64; 2]; 3],
}

fn by_hand(bags: &[&[usize]], labels: &[f64], mean: bool) -> Hand {
    let n = labels.len() as f64;
    let emb: Vec<[f64; 2]> = bags
        .iter()
        .map(|bag| {
            let mut e = [0.0; 2];
            for &id in bag.iter() {
                e[0] += TABLE[id][0];
                e[1] += TABLE[id][1];
            }
            if mean && !bag.is_empty() {
                e[0] /= bag.len() as f64;
                e[1] /= bag.len() as f64;
            }
            e
        })
        .collect();
    let mut h = Hand {
        emb: emb.clone(),
        loss: 0.0,
        dw: [0.0; 2],
        db: 0.0,
        drow: [[0.0; 2]; 3],
    };
    for (i, e) in emb.iter().enumerate() {
        let z = W[0] * e[0] + W[1] * e[1] + B;
        let p = sigmoid(z);
        let y = labels[i];
        h.loss += -(y * p.ln() + (1.0 - y) * (1.0 - p).ln()) / n;
        let dz = (p - y) / n;
        h.dw[0] += dz * e[0];
        h.dw[1] += dz * e[1];
        h.db += dz;
        let scale = if mean && !bags[i].is_empty() {
            1.0 / bags[i].len() as f64
        } else {
            1.0
        };
        for &id in bags[i].iter() {
            h.drow[id][0] += dz * W[0] * scale;
            h.drow[id][1] += dz * W[1] * scale;
        }
    }
    h
}

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() < 2e-6 * (1.0 + b.abs()),
        "{what}: got {a}, expected {b}"
    );
}

struct After {
    w: Vec<f32>,
    b: f32,
    table: Vec<f32>,
    loss: f32,
    preds: Vec<f32>,
}

fn run(plan: &Plan, bags: &[&[u32]], labels: &[f32]) -> After {
    let mut tr = Trainer::new(plan, 1, &Device::Cpu).unwrap();
    let b = batch(labels.len(), vec![ids(bags)], vec![labels.to_vec()]);
    let preds = predict_batch(&mut tr.model, &b).unwrap().remove(0);
    let loss = tr.step(&b, 0).unwrap().total;
    let p = tr.to_plan().unwrap();
    assert_eq!(p.trained_steps, 1);
    let f = |bytes: &[u8]| crate::runtime::embedding::f32s_from_le(bytes);
    After {
        w: f(&p.params[0].data),
        b: f(&p.params[1].data)[0],
        table: f(&p.tables[0].data),
        loss,
        preds,
    }
}

#[test]
fn forward_loss_and_sgd_step() {
    let lr = 0.5;
    let plan = tiny_plan(
        optimizer(OptimizerKind::Sgd, lr),
        optimizer(OptimizerKind::Sgd, lr),
        Pooling::Sum,
    );
    let bags: [&[u32]; 2] = [&[0], &[2]];
    let a = run(&plan, &bags, &[1.0, 0.0]);
    let h = by_hand(&[&[0], &[2]], &[1.0, 0.0], false);
    for (i, e) in h.emb.iter().enumerate() {
        close(
            a.preds[i] as f64,
            sigmoid(W[0] * e[0] + W[1] * e[1] + B),
            "prediction",
        );
    }
    close(a.loss as f64, h.loss, "loss");
    let lr = lr as f64;
    close(a.w[0] as f64, W[0] - lr * h.dw[0], "w0");
    close(a.w[1] as f64, W[1] - lr * h.dw[1], "w1");
    close(a.b as f64, B - lr * h.db, "b");
    for row in [0usize, 2] {
        for d in 0..2 {
            close(
                a.table[row * 2 + d] as f64,
                TABLE[row][d] - lr * h.drow[row][d],
                "row",
            );
        }
    }
    // Row 1 was not in the batch: bit-identical.
    assert_eq!(a.table[2], TABLE[1][0] as f32);
    assert_eq!(a.table[3], TABLE[1][1] as f32);
}

#[test]
fn adagrad_step_with_mean_bags() {
    let lr = 0.3;
    let acc0 = 0.1;
    let mut dense = optimizer(OptimizerKind::Adagrad, lr);
    dense.initial_accumulator_value = acc0;
    let sparse = dense.clone();
    let plan = tiny_plan(dense, sparse, Pooling::Mean);
    // Row 0 is in two bags, row 1 twice in one bag, the last bag is empty.
    let a = run(&plan, &[&[0, 1, 1], &[0], &[]], &[1.0, 0.0, 1.0]);
    let h = by_hand(&[&[0, 1, 1], &[0], &[]], &[1.0, 0.0, 1.0], true);
    close(a.loss as f64, h.loss, "loss");
    let (lr, acc0) = (lr as f64, acc0 as f64);
    let eps = 1e-10;
    let upd = |p: f64, g: f64| p - lr * g / ((acc0 + g * g).sqrt() + eps);
    close(a.w[0] as f64, upd(W[0], h.dw[0]), "w0");
    close(a.w[1] as f64, upd(W[1], h.dw[1]), "w1");
    close(a.b as f64, upd(B, h.db), "b");
    for row in [0usize, 1] {
        for d in 0..2 {
            close(
                a.table[row * 2 + d] as f64,
                upd(TABLE[row][d], h.drow[row][d]),
                "row",
            );
        }
    }
    assert_eq!(a.table[4], TABLE[2][0] as f32);
    assert_eq!(a.table[5], TABLE[2][1] as f32);
}

#[test]
fn rowwise_adagrad_and_adam_sparse_steps() {
    let lr = 0.2;
    let bags: [&[u32]; 2] = [&[1], &[2]];
    let hb: [&[usize]; 2] = [&[1], &[2]];
    let h = by_hand(&hb, &[0.0, 1.0], false);
    let mut rw = optimizer(OptimizerKind::RowwiseAdagrad, lr);
    rw.initial_accumulator_value = 0.05;
    let a = run(
        &tiny_plan(optimizer(OptimizerKind::Sgd, 0.0), rw, Pooling::Sum),
        &bags,
        &[0.0, 1.0],
    );
    for row in [1usize, 2] {
        let g = h.drow[row];
        let s = 0.05 + (g[0] * g[0] + g[1] * g[1]) / 2.0;
        for d in 0..2 {
            let want = TABLE[row][d] - lr as f64 * g[d] / (s.sqrt() + 1e-10);
            close(a.table[row * 2 + d] as f64, want, "rowwise adagrad");
        }
    }
    // Dense lr 0: dense parameters unchanged.
    assert_eq!(a.w, vec![W[0] as f32, W[1] as f32]);
    let a = run(
        &tiny_plan(
            optimizer(OptimizerKind::Sgd, 0.0),
            optimizer(OptimizerKind::Adam, lr),
            Pooling::Sum,
        ),
        &bags,
        &[0.0, 1.0],
    );
    for row in [1usize, 2] {
        for d in 0..2 {
            let g = h.drow[row][d];
            // First Adam step: mhat = g, vhat = g^2.
            let want = TABLE[row][d] - lr as f64 * g / (g.abs() + 1e-8);
            close(a.table[row * 2 + d] as f64, want, "adam");
        }
    }
    assert_eq!(a.table[0], TABLE[0][0] as f32);
}

#[test]
fn dense_momentum_nesterov_adam_adamw() {
    let bags: [&[u32]; 2] = [&[0], &[2]];
    let hb: [&[usize]; 2] = [&[0], &[2]];
    let h = by_hand(&hb, &[1.0, 0.0], false);
    let lr = 0.1f64;
    let sgd0 = optimizer(OptimizerKind::Sgd, 0.0);
    // One momentum step equals plain SGD; Nesterov adds momentum * g.
    let mut m = optimizer(OptimizerKind::Sgd, lr as f32);
    m.momentum = 0.9;
    m.nesterov = true;
    let a = run(
        &tiny_plan(m, sgd0.clone(), Pooling::Sum),
        &bags,
        &[1.0, 0.0],
    );
    close(a.w[0] as f64, W[0] - lr * 1.9 * h.dw[0], "nesterov");
    let mut ad = optimizer(OptimizerKind::Adamw, lr as f32);
    ad.weight_decay = 0.5;
    let mut plan = tiny_plan(ad, sgd0, Pooling::Sum);
    plan.params[1].no_decay = true;
    let a = run(&plan, &bags, &[1.0, 0.0]);
    let step = |g: f64| g / (g.abs() + 1e-8);
    close(
        a.w[0] as f64,
        W[0] * (1.0 - lr * 0.5) - lr * step(h.dw[0]),
        "adamw decayed",
    );
    close(a.b as f64, B - lr * step(h.db), "adamw no_decay");
}

#[test]
fn sparse_step_touches_only_batch_rows() {
    for kind in [
        OptimizerKind::Sgd,
        OptimizerKind::Adagrad,
        OptimizerKind::RowwiseAdagrad,
        OptimizerKind::Adam,
        OptimizerKind::Adamw,
    ] {
        let mut sparse = optimizer(kind, 0.1);
        sparse.weight_decay = 0.01;
        let mut plan = tiny_plan(optimizer(OptimizerKind::Sgd, 0.1), sparse, Pooling::Sum);
        plan.tables[0].num_rows = 1000;
        plan.tables[0].data.clear();
        plan.tables[0].init = InitKind::InitNormal as i32;
        plan.tables[0].init_scale = 0.1;
        let before = crate::runtime::Model::from_plan(&plan, &Device::Cpu)
            .unwrap()
            .to_plan()
            .unwrap()
            .tables[0]
            .data
            .clone();
        let touched = [3u32, 500, 999, 3];
        let mut tr = Trainer::new(&plan, 1, &Device::Cpu).unwrap();
        let b = batch(
            2,
            vec![ids(&[&touched[..2], &touched[2..]])],
            vec![vec![1.0, 0.0]],
        );
        tr.step(&b, 0).unwrap();
        tr.step(&b, 0).unwrap();
        let after = tr.to_plan().unwrap().tables[0].data.clone();
        for row in 0..1000u32 {
            let r = row as usize * 8..row as usize * 8 + 8;
            if touched.contains(&row) {
                assert_ne!(
                    before[r.clone()],
                    after[r],
                    "{kind:?}: row {row} was not updated"
                );
            } else {
                assert_eq!(before[r.clone()], after[r], "{kind:?}: row {row} changed");
            }
        }
    }
}
