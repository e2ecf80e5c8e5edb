//! Runtime tests: gradient checks, hand-computed steps, sparse updates,
//! loss values, plan round trips, determinism, and a throughput benchmark.

mod dc2vr;
mod gradcheck;
mod hand;
mod kernels;
mod losses;
mod native;
mod pinned;
mod runs;
mod sequence;

use candle_core::{DType, Device, Tensor};

use crate::data::batch::{Batch, FeatureInput};
use crate::proto::plan::*;

pub(crate) fn bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn param(name: &str, shape: &[u64], data: &[f32], trainable: bool) -> Parameter {
    Parameter {
        name: name.into(),
        shape: shape.to_vec(),
        data: bytes(data),
        trainable,
        no_decay: false,
        torch: Vec::new(),
        torch_absent: false,
    }
}

pub(crate) fn value(name: &str, shape: &[i64]) -> Value {
    Value {
        name: name.into(),
        shape: shape.to_vec(),
    }
}

pub(crate) fn op(name: &str, kind: OpKind, inputs: &[u32], output: u32, params: &[u32]) -> Op {
    Op {
        name: name.into(),
        kind: kind as i32,
        inputs: inputs.to_vec(),
        output,
        params: params.to_vec(),
        ..Default::default()
    }
}

pub(crate) fn id_feature(name: &str, table: u32, dim: u32, pooling: Pooling) -> FeatureSpec {
    FeatureSpec {
        name: name.into(),
        kind: FeatureKind::IdNumBuckets as i32,
        input_columns: vec![name.into()],
        embedding_dim: dim,
        table,
        pooling: pooling as i32,
        ..Default::default()
    }
}

pub(crate) fn dense_feature(name: &str, dim: u32) -> FeatureSpec {
    FeatureSpec {
        name: name.into(),
        kind: FeatureKind::RawDense as i32,
        input_columns: vec![name.into()],
        value_dim: dim,
        ..Default::default()
    }
}

pub(crate) fn bce_task(name: &str, label: &str, logits: u32) -> Task {
    Task {
        tower_name: name.into(),
        label_name: label.into(),
        num_class: 1,
        logits,
        losses: vec![Loss {
            kind: LossKind::BinaryCrossEntropy as i32,
            ..Default::default()
        }],
        weight: 1.0,
        ..Default::default()
    }
}

pub(crate) fn optimizer(kind: OptimizerKind, lr: f32) -> Optimizer {
    Optimizer {
        kind: kind as i32,
        lr,
        beta1: 0.9,
        beta2: 0.999,
        ..Default::default()
    }
}

pub(crate) fn train_settings(dense: Optimizer, sparse: Optimizer, steps: u64) -> TrainSettings {
    TrainSettings {
        dense_optimizer: Some(dense),
        sparse_optimizer: Some(sparse),
        num_steps: steps,
        log_step_count_steps: 1000,
        ..Default::default()
    }
}

pub(crate) fn ids(bags: &[&[u32]]) -> FeatureInput {
    let mut ids = Vec::new();
    let mut offsets = vec![0u32];
    for b in bags {
        ids.extend_from_slice(b);
        offsets.push(ids.len() as u32);
    }
    FeatureInput::Ids { ids, offsets }
}

pub(crate) fn batch(rows: usize, features: Vec<FeatureInput>, labels: Vec<Vec<f32>>) -> Batch {
    Batch {
        rows,
        features,
        labels,
        sample_weights: vec![],
        group_keys: vec![],
    }
}

/// f64 tensor from values.
pub(crate) fn t64(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape, &Device::Cpu).unwrap()
}

/// The model's trainable parameters with their indices (buffers skipped),
/// for finite-difference checks.
pub(crate) fn trainable_vars(
    model: &crate::runtime::model::Model,
) -> Vec<(usize, candle_core::Var)> {
    model
        .params()
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p {
            crate::runtime::model::ParamSlot::Trainable(v) => Some((i, v.clone())),
            crate::runtime::model::ParamSlot::Buffer(_) => None,
        })
        .collect()
}

pub(crate) fn host(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// Deterministic pseudo-random values in [-1, 1] kept at least `gap` away
/// from 0 (away from the kinks of relu-like functions).
pub(crate) fn randv(n: usize, seed: u64, gap: f64) -> Vec<f64> {
    let mut r = crate::rng::SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            let u = r.next_f64() * 2.0 - 1.0;
            if u.abs() < gap {
                u.signum() * gap + u
            } else {
                u
            }
        })
        .collect()
}

/// A small plan that uses every op kind, two tasks (binary and 3-class),
/// two tables (sum and mean pooling) and a dense feature.
pub(crate) fn complex_plan(seed: u64, dropout: f32) -> Plan {
    let mut params = Vec::new();
    let mut next = 0u64;
    let mut add = |name: &str, shape: &[u64], trainable: bool, fill: Option<f32>| -> u32 {
        let n: u64 = shape.iter().product();
        next += 1;
        let data: Vec<f32> = match fill {
            Some(f) => vec![f; n as usize],
            None => randv(n as usize, seed * 1000 + next, 0.0)
                .iter()
                .map(|v| (*v * 0.5) as f32)
                .collect(),
        };
        params.push(param(name, shape, &data, trainable));
        (params.len() - 1) as u32
    };
    let bl_w = add("experts.w", &[3, 6, 9], true, None);
    let bl_b = add("experts.b", &[3, 6], true, None);
    let bn_g = add("bn.gamma", &[3, 6], true, None);
    let bn_b = add("bn.beta", &[3, 6], true, None);
    let bn_m = add("bn.mean", &[3, 6], false, Some(0.0));
    let bn_v = add("bn.var", &[3, 6], false, Some(1.0));
    let g1_w = add("gate1.w", &[3, 9], true, None);
    let g1_b = add("gate1.b", &[3], true, None);
    let ln_g = add("ln.gamma", &[6], true, None);
    let ln_b = add("ln.beta", &[6], true, None);
    let t1_w = add("ctr.w", &[1, 10], true, None);
    let t1_b = add("ctr.b", &[1], true, None);
    let g2_w = add("gate2.w", &[2, 9], true, None);
    let prelu = add("prelu.slope", &[6], true, None);
    let t2_w = add("cls.w", &[3, 6], true, None);
    let t2_b = add("cls.b", &[3], true, None);
    let values = vec![
        value("group", &[-1, 9]),      // 0
        value("experts", &[3, -1, 6]), // 1
        value("bn", &[3, -1, 6]),      // 2
        value("act", &[3, -1, 6]),     // 3
        value("drop", &[3, -1, 6]),    // 4
        value("gate1", &[-1, 3]),      // 5
        value("gate1.sm", &[-1, 3]),   // 6
        value("mix1", &[-1, 6]),       // 7
        value("ln", &[-1, 6]),         // 8
        value("slice", &[-1, 4]),      // 9
        value("cat", &[-1, 10]),       // 10
        value("ctr.logits", &[-1, 1]), // 11
        value("stack", &[2, -1, 6]),   // 12
        value("gate2", &[-1, 2]),      // 13
        value("gate2.sm", &[-1, 2]),   // 14
        value("mix2", &[-1, 6]),       // 15
        value("prelu", &[-1, 6]),      // 16
        value("cls.logits", &[-1, 3]), // 17
    ];
    let mut group = op("group", OpKind::FeatureGroup, &[], 0, &[]);
    group.features = vec![0, 1, 2];
    let mut act = op("act", OpKind::Activation, &[2], 3, &[]);
    act.activation = Activation::Gelu as i32;
    let mut drop = op("drop", OpKind::Dropout, &[3], 4, &[]);
    drop.ratio = dropout;
    let mut sm1 = op("gate1.sm", OpKind::Softmax, &[5], 6, &[]);
    sm1.axis = 1;
    let mut slice = op("slice", OpKind::Slice, &[8], 9, &[]);
    slice.axis = 1;
    slice.start = 1;
    slice.length = 4;
    let mut cat = op("cat", OpKind::Concat, &[9, 7], 10, &[]);
    cat.axis = -1;
    let mut sm2 = op("gate2.sm", OpKind::Softmax, &[13], 14, &[]);
    sm2.axis = -1;
    let mut prelu_op = op("prelu", OpKind::Activation, &[15], 16, &[prelu]);
    prelu_op.activation = Activation::Prelu as i32;
    let mut bn = op("bn", OpKind::BatchNorm, &[1], 2, &[bn_g, bn_b, bn_m, bn_v]);
    bn.eps = 1e-3;
    bn.momentum = 0.1;
    let ops = vec![
        group,
        op("experts", OpKind::BatchedLinear, &[0], 1, &[bl_w, bl_b]),
        bn,
        act,
        drop,
        op("gate1", OpKind::Linear, &[0], 5, &[g1_w, g1_b]),
        sm1,
        op("mix1", OpKind::GateMix, &[6, 4], 7, &[]),
        op("ln", OpKind::LayerNorm, &[7], 8, &[ln_g, ln_b]),
        slice,
        cat,
        op("ctr", OpKind::Linear, &[10], 11, &[t1_w, t1_b]),
        op("stack", OpKind::Stack, &[8, 7], 12, &[]),
        op("gate2", OpKind::Linear, &[0], 13, &[g2_w]),
        sm2,
        op("mix2", OpKind::GateMix, &[14, 12], 15, &[]),
        prelu_op,
        op("cls", OpKind::Linear, &[16], 17, &[t2_w, t2_b]),
    ];
    let tables = vec![
        EmbeddingTable {
            name: "t0".into(),
            num_rows: 10,
            dim: 3,
            init: InitKind::InitNormal as i32,
            init_scale: 0.5,
            init_seed: seed,
            data: vec![],
            torch_name: String::new(),
        },
        EmbeddingTable {
            name: "t1".into(),
            num_rows: 8,
            dim: 2,
            init: InitKind::InitUniform as i32,
            init_scale: 0.5,
            init_seed: seed + 1,
            data: vec![],
            torch_name: String::new(),
        },
    ];
    let mut cls = bce_task("cls", "cls", 17);
    cls.num_class = 3;
    cls.losses = vec![Loss {
        kind: LossKind::SoftmaxCrossEntropy as i32,
        ..Default::default()
    }];
    Plan {
        format_version: 1,
        seed,
        model_kind: "mmoe".into(),
        data: Some(DataSpec {
            batch_size: 8,
            label_fields: vec!["click".into(), "cls".into()],
            ..Default::default()
        }),
        features: vec![
            id_feature("f0", 0, 3, Pooling::Sum),
            id_feature("f1", 1, 2, Pooling::Mean),
            dense_feature("d", 4),
        ],
        tables,
        values,
        ops,
        params,
        tasks: vec![bce_task("ctr", "click", 11), cls],
        train: Some(train_settings(
            optimizer(OptimizerKind::Adam, 0.01),
            optimizer(OptimizerKind::Adagrad, 0.05),
            10,
        )),
        ..Default::default()
    }
}

/// A batch for `complex_plan`: bags of 0-3 ids, dense values, labels.
pub(crate) fn complex_batch(rows: usize, seed: u64) -> Batch {
    let mut r = crate::rng::SplitMix64::new(seed);
    let mut bag = |max_len: u64, num: u64| -> Vec<u32> {
        let n = r.next_u64() % (max_len + 1);
        (0..n).map(|_| (r.next_u64() % num) as u32).collect()
    };
    let b0: Vec<Vec<u32>> = (0..rows).map(|_| bag(3, 10)).collect();
    let b1: Vec<Vec<u32>> = (0..rows).map(|_| bag(2, 8)).collect();
    let dense: Vec<f32> = randv(rows * 4, seed + 7, 0.0)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let click: Vec<f32> = (0..rows)
        .map(|i| (i * 7 + seed as usize).is_multiple_of(3) as u8 as f32)
        .collect();
    let cls: Vec<f32> = (0..rows)
        .map(|i| ((i + seed as usize) % 3) as f32)
        .collect();
    let refs0: Vec<&[u32]> = b0.iter().map(|b| b.as_slice()).collect();
    let refs1: Vec<&[u32]> = b1.iter().map(|b| b.as_slice()).collect();
    batch(
        rows,
        vec![
            ids(&refs0),
            ids(&refs1),
            FeatureInput::Dense {
                values: dense,
                dim: 4,
            },
        ],
        vec![click, cls],
    )
}
