//! The native CPU engine against the candle path (the reference): on the
//! plan that uses every op kind and on every example config, compiled with
//! and without expert fusion, evaluation logits, training logits (dropout
//! included), every parameter's and embedding row's gradient, and
//! batch-norm statistics agree; so do whole training runs.

use candle_core::{Device, Tensor};

use super::*;
use crate::pipeline::{build, BuildOptions};
use crate::runtime::model::{Mode, Model, ParamSlot};
use crate::runtime::precision::Precision;
use crate::runtime::Trainer;

fn host32(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// `|a - b| <= tol * max(1, max |b|)` element-wise.
fn assert_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * scale,
            "{what}[{i}]: native {x} vs candle {y} (scale {scale})"
        );
    }
}

fn models(plan: &Plan) -> (Model, Model) {
    let native = Model::from_plan(plan, &Device::Cpu).unwrap();
    assert!(native.uses_native(), "the native engine refused the plan");
    let mut candle = Model::from_plan(plan, &Device::Cpu).unwrap();
    candle.set_native(false).unwrap();
    (native, candle)
}

/// The test loss `sum_t sum(logits_t * P_t)` with fixed random `P_t`.
fn loss_of(logits: &[Tensor]) -> Tensor {
    let mut total: Option<Tensor> = None;
    for (k, l) in logits.iter().enumerate() {
        let p: Vec<f32> = randv(l.elem_count(), 500 + k as u64, 0.0)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let p = Tensor::from_vec(p, l.dims(), &Device::Cpu).unwrap();
        let s = (l * p).unwrap().sum_all().unwrap();
        total = Some(match total {
            Some(t) => (t + s).unwrap(),
            None => s,
        });
    }
    total.unwrap()
}

/// One training forward/backward on both paths with the loss
/// `sum_t sum(logits_t * P_t)`, comparing everything a step produces.
fn compare(name: &str, plan: &Plan, batch: &Batch, tol: f32) {
    let (mut n, mut c) = models(plan);
    let (en, ec) = (
        n.forward(batch, Mode::Eval).unwrap(),
        c.forward(batch, Mode::Eval).unwrap(),
    );
    for (k, (a, b)) in en.logits.iter().zip(&ec.logits).enumerate() {
        assert_close(
            &format!("{name}: eval logits {k}"),
            &host32(a),
            &host32(b),
            tol,
        );
    }
    // A first step on both, so the compared one runs on buffers and
    // gradient slots that already hold the previous step's values.
    for m in [&mut n, &mut c] {
        let f = m.forward(batch, Mode::Train { seed: 10, step: 2 }).unwrap();
        let mut g = loss_of(&f.logits).backward().unwrap();
        m.backward_native(&f, &mut g).unwrap();
    }
    let mode = Mode::Train { seed: 11, step: 3 };
    let (fnat, fcan) = (
        n.forward(batch, mode).unwrap(),
        c.forward(batch, mode).unwrap(),
    );
    let loss = loss_of;
    for (k, (a, b)) in fnat.logits.iter().zip(&fcan.logits).enumerate() {
        assert_close(
            &format!("{name}: train logits {k}"),
            &host32(a),
            &host32(b),
            tol,
        );
    }
    let mut gn = loss(&fnat.logits).backward().unwrap();
    n.backward_native(&fnat, &mut gn).unwrap();
    let gc = loss(&fcan.logits).backward().unwrap();
    for (i, ((pn, pc), spec)) in n
        .params()
        .iter()
        .zip(c.params())
        .zip(&plan.params)
        .enumerate()
    {
        match (pn, pc) {
            (ParamSlot::Trainable(vn), ParamSlot::Trainable(vc)) => {
                let a = gn.get(vn.as_tensor()).map(host32);
                let b = gc.get(vc.as_tensor()).map(host32);
                let zeros = vec![0.0; vn.as_tensor().elem_count()];
                assert_close(
                    &format!("{name}: gradient of {} ({i})", spec.name),
                    a.as_deref().unwrap_or(&zeros),
                    b.as_deref().unwrap_or(&zeros),
                    tol,
                );
            }
            (ParamSlot::Buffer(a), ParamSlot::Buffer(b)) => assert_close(
                &format!("{name}: buffer {}", spec.name),
                &host32(a),
                &host32(b),
                tol,
            ),
            _ => panic!("{name}: parameter {i} differs in kind"),
        }
    }
    assert_eq!(
        fnat.gathered.len(),
        fcan.gathered.len(),
        "{name}: gathered tables"
    );
    for (a, b) in fnat.gathered.iter().zip(&fcan.gathered) {
        assert_eq!(
            (a.table, &a.host_ids),
            (b.table, &b.host_ids),
            "{name}: gathered ids"
        );
        // A table whose bags are all empty gathers no rows: no gradient.
        let zeros = vec![0.0; a.rows.as_tensor().elem_count()];
        let ga = gn.get(a.rows.as_tensor()).map_or(zeros.clone(), host32);
        let gb = gc.get(b.rows.as_tensor()).map_or(zeros, host32);
        assert_close(&format!("{name}: rows of table {}", a.table), &ga, &gb, tol);
    }
}

#[test]
fn every_op_kind_matches_the_candle_path() {
    for (seed, dropout, rows) in [(1, 0.0, 37), (2, 0.3, 64), (3, 0.5, 1)] {
        let plan = complex_plan(seed, dropout);
        let batch = complex_batch(rows, seed);
        compare(&format!("complex plan seed {seed}"), &plan, &batch, 1e-4);
    }
}

/// Two relus in place over column slices of one linear: only the first
/// can be the multiply's epilogue. The second runs on its own, yet its
/// gradient's only writer is a multiply, which masks it by the relu's
/// output as it stores (see `relu_masks`).
#[test]
fn relu_outside_its_multiply_matches_the_candle_path() {
    let mut plan = complex_plan(4, 0.0);
    let param_of = |plan: &mut Plan, name: &str, shape: &[u64], seed: u64| -> u32 {
        let n: u64 = shape.iter().product();
        let data: Vec<f32> = randv(n as usize, seed, 0.0)
            .iter()
            .map(|v| (*v * 0.5) as f32)
            .collect();
        plan.params.push(param(name, shape, &data, true));
        plan.params.len() as u32 - 1
    };
    let side_w = param_of(&mut plan, "side.w", &[4, 9], 51);
    let side_b = param_of(&mut plan, "side.b", &[4], 52);
    let la_w = param_of(&mut plan, "side.la.w", &[1, 2], 53);
    let lb_w = param_of(&mut plan, "side.lb.w", &[1, 2], 54);
    let value_of = |plan: &mut Plan, name: &str, shape: &[i64]| -> u32 {
        plan.values.push(value(name, shape));
        plan.values.len() as u32 - 1
    };
    let side = value_of(&mut plan, "side", &[-1, 4]);
    let (sa, sb) = (
        value_of(&mut plan, "side.a", &[-1, 2]),
        value_of(&mut plan, "side.b", &[-1, 2]),
    );
    let (ra, rb) = (
        value_of(&mut plan, "side.ra", &[-1, 2]),
        value_of(&mut plan, "side.rb", &[-1, 2]),
    );
    let (la, lb) = (
        value_of(&mut plan, "side.la", &[-1, 1]),
        value_of(&mut plan, "side.lb", &[-1, 1]),
    );
    let slice = |name: &str, out: u32, start: i64| {
        let mut o = op(name, OpKind::Slice, &[side], out, &[]);
        o.axis = 1;
        o.start = start;
        o.length = 2;
        o
    };
    let relu = |name: &str, x: u32, out: u32| {
        let mut o = op(name, OpKind::Activation, &[x], out, &[]);
        o.activation = Activation::Relu as i32;
        o
    };
    let Some(cat) = plan.ops.iter().position(|o| o.name == "cat") else {
        panic!("complex_plan has no cat op");
    };
    let side_ops = [
        op("side", OpKind::Linear, &[0], side, &[side_w, side_b]),
        slice("side.a", sa, 0),
        slice("side.b", sb, 2),
        relu("side.ra", sa, ra),
        relu("side.rb", sb, rb),
        op("side.la", OpKind::Linear, &[ra], la, &[la_w]),
        op("side.lb", OpKind::Linear, &[rb], lb, &[lb_w]),
    ];
    for (k, o) in side_ops.into_iter().enumerate() {
        plan.ops.insert(cat + k, o);
    }
    // The ctr tower reads both: its input grows from 10 to 12 columns.
    let cat = cat + 7;
    plan.ops[cat].inputs.extend([la, lb]);
    if let Some(v) = plan.values.get_mut(plan.ops[cat].output as usize) {
        v.shape = vec![-1, 12];
    }
    let Some(ctr_w) = plan.params.iter().position(|p| p.name == "ctr.w") else {
        panic!("complex_plan has no ctr.w");
    };
    // The new one takes the old one's place (and index).
    param_of(&mut plan, "ctr.w", &[1, 12], 55);
    plan.params.swap_remove(ctr_w);
    for (rows, seed) in [(37, 4), (64, 5)] {
        let batch = complex_batch(rows, seed);
        compare("relus over slices of one linear", &plan, &batch, 1e-4);
    }
}

fn example_plans() -> Vec<(String, Plan)> {
    let mut out = Vec::new();
    for name in [
        "ple_demo",
        "ple_taobao",
        "mmoe_taobao",
        "dbmtl_taobao",
        "simple_multi_task_taobao",
        "pepnet_taobao",
        "ple_has_sequence",
        "mmoe_self_attention",
        "dc2vr_taobao",
    ] {
        let path = format!("{}/examples/{name}.config", env!("CARGO_MANIFEST_DIR"));
        let source = std::fs::read_to_string(&path).unwrap();
        for fuse in [true, false] {
            let opts = BuildOptions {
                seed: 5,
                fuse,
                ..BuildOptions::default()
            };
            let plan = build(&source, opts)
                .unwrap_or_else(|_| panic!("{name} compiles"))
                .plan;
            out.push((format!("{name} (fused: {fuse})"), plan));
        }
    }
    out
}

#[test]
fn example_models_match_the_candle_path() {
    for (name, plan) in example_plans() {
        let batch = super::runs::random_batch(&plan, 96, 7);
        compare(&name, &plan, &batch, 2e-4);
    }
}

/// Every sequence encoder the native engine runs (DIN, with and without
/// batch norm over the steps in its attention MLP, multi-window DIN with
/// windows running past the sequence, simple attention, sum and mean
/// pooling) over embedded and dense steps, with rows longer
/// and shorter than others and empty ones: logits, parameter gradients and
/// the gathered embedding rows' gradients agree with the candle path.
#[test]
fn sequence_encoders_match_the_candle_path() {
    let source = r#"
data_config { batch_size: 32 label_fields: "clk" }
feature_configs { id_feature { feature_name: "item_id" num_buckets: 60 embedding_dim: 6 } }
feature_configs { id_feature { feature_name: "user" num_buckets: 40 embedding_dim: 4 } }
feature_configs { sequence_id_feature { feature_name: "click_items" num_buckets: 60 embedding_dim: 6 sequence_length: 7 } }
feature_configs { sequence_raw_feature { feature_name: "click_prices" sequence_length: 5 } }
model_config {
  feature_groups {
    group_name: "all"
    feature_names: "item_id"
    feature_names: "user"
    group_type: DEEP
    sequence_groups { group_name: "clicks" feature_names: "item_id" feature_names: "click_items" }
    sequence_groups { group_name: "prices" feature_names: "click_prices" }
    sequence_encoders { din_encoder { input: "clicks" attn_mlp { hidden_units: [8, 4] } } }
    sequence_encoders { din_encoder { input: "clicks" attn_mlp { hidden_units: [5] use_bn: true } } }
    sequence_encoders { simple_attention { input: "clicks" } }
    sequence_encoders { multi_window_din_encoder { input: "clicks" attn_mlp { hidden_units: [6] } windows_len: [2, 3, 4] } }
    sequence_encoders { pooling_encoder { input: "prices" pooling_type: "sum" } }
    sequence_encoders { pooling_encoder { input: "clicks" pooling_type: "mean" } }
  }
  mmoe {
    expert_mlp { hidden_units: [16] }
    num_expert: 2
    task_towers { tower_name: "ctr" label_name: "clk" losses { binary_cross_entropy {} } }
  }
}
"#;
    let plan = build(source, BuildOptions::default())
        .unwrap_or_else(|e| panic!("sequence encoders compile: {e:?}"))
        .plan;
    let batch = super::runs::random_batch(&plan, 37, 9);
    compare("sequence encoders", &plan, &batch, 2e-4);
}

/// Self-attention encoders on the native engine: two heads with dropout
/// on the weights (the candle path's mask, bit for bit) over embedded
/// steps cut to `max_seq_length`, and one head over dense steps, with rows
/// longer and shorter than others and empty ones: logits, parameter
/// gradients (both projections, the attention's and the out-projection's)
/// and the gathered rows' gradients agree with the candle path.
#[test]
fn self_attention_encoders_match_the_candle_path() {
    let source = r#"
data_config { batch_size: 32 label_fields: "clk" }
feature_configs { id_feature { feature_name: "user" num_buckets: 40 embedding_dim: 4 } }
feature_configs { sequence_id_feature { feature_name: "click_items" num_buckets: 60 embedding_dim: 6 sequence_length: 7 } }
feature_configs { sequence_raw_feature { feature_name: "click_prices" sequence_length: 5 } }
model_config {
  feature_groups {
    group_name: "all"
    feature_names: "user"
    group_type: DEEP
    sequence_groups { group_name: "clicks" feature_names: "user" feature_names: "click_items" }
    sequence_groups { group_name: "prices" feature_names: "click_prices" }
    sequence_encoders { self_attention_encoder { input: "clicks" multihead_attn_dim: 8 num_heads: 2 dropout: 0.3 max_seq_length: 5 } }
    sequence_encoders { self_attention_encoder { input: "prices" multihead_attn_dim: 4 num_heads: 1 } }
  }
  mmoe {
    expert_mlp { hidden_units: [16] }
    num_expert: 2
    task_towers { tower_name: "ctr" label_name: "clk" losses { binary_cross_entropy {} } }
  }
}
"#;
    let plan = build(source, BuildOptions::default())
        .unwrap_or_else(|e| panic!("self-attention encoders compile: {e:?}"))
        .plan;
    for rows in [37, 1] {
        let batch = super::runs::random_batch(&plan, rows, 9);
        compare("self-attention encoders", &plan, &batch, 2e-4);
    }
}

/// DC2VR on the native engine: the interventions (their orthogonal
/// weights made from the trained matrices each pass, the detached
/// sources, the dropout after them), the bottom MLP, MMoE and the towers:
/// logits and every gradient, the trained matrices' included, agree with
/// the candle path, before and after the trained matrices move off their
/// start.
#[test]
fn dc2vr_matches_the_candle_path() {
    let mut plan = build(super::dc2vr::DC2VR_CONFIG, BuildOptions::default())
        .unwrap_or_else(|e| panic!("dc2vr compiles: {e:?}"))
        .plan;
    let batch = super::runs::random_batch(&plan, 37, 9);
    compare("dc2vr", &plan, &batch, 2e-4);
    // Off minus the identity: random strictly lower parts, diagonals that
    // truncate to -1 and to -2.
    for (k, p) in plan.params.iter_mut().enumerate() {
        if !p.name.ends_with(".original") {
            continue;
        }
        let r = p.shape[1] as usize;
        let noise = randv(p.data.len() / 4, 70 + k as u64, 0.0);
        let v: Vec<f32> = noise
            .iter()
            .enumerate()
            .map(|(e, &u)| match (e / r, e % r) {
                (i, j) if i == j => {
                    if j == 0 {
                        -2.5
                    } else {
                        -1.2
                    }
                }
                (i, j) if i > j => (0.5 * u) as f32,
                _ => u as f32,
            })
            .collect();
        p.data = crate::ir::init::to_le_bytes(&v);
    }
    compare("dc2vr, trained matrices moved", &plan, &batch, 2e-4);
}

/// An MMoE with variational dropout over its features and dropout in its
/// experts.
const VARIATIONAL_DROPOUT: &str = r#"
data_config { batch_size: 32 label_fields: "clk" label_fields: "buy" }
feature_configs { id_feature { feature_name: "u" num_buckets: 50 embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "i" num_buckets: 50 embedding_dim: 3 } }
feature_configs { raw_feature { feature_name: "p" } }
model_config {
  feature_groups { group_name: "all" feature_names: "u" feature_names: "i" feature_names: "p" group_type: DEEP }
  variational_dropout { regularization_lambda: 20.0 }
  mmoe {
    expert_mlp { hidden_units: [8] dropout_ratio: [0.3] }
    num_expert: 2
    task_towers { tower_name: "ctr" label_name: "clk" losses { binary_cross_entropy {} } }
    task_towers { tower_name: "cvr" label_name: "buy" losses { binary_cross_entropy {} } }
  }
}
"#;

/// Variational dropout on the native engine: its keep factors (the candle
/// path's noise, bit for bit), its input and drop-logit gradients, and in
/// training its penalty, whose gradient candle's autograd adds to the
/// engine's: logits, gradients, losses and trained parameters agree.
#[test]
fn variational_dropout_matches_the_candle_path() {
    let mut plan = build(VARIATIONAL_DROPOUT, BuildOptions::default())
        .unwrap_or_else(|e| panic!("variational dropout compiles: {e:?}"))
        .plan;
    let batch = super::runs::random_batch(&plan, 33, 5);
    compare("variational dropout", &plan, &batch, 2e-4);
    // SGD moves the drop logits by their gradient, the penalty's share
    // included (a large lambda makes that share count).
    sgd_on_both_engines("variational dropout", &mut plan, &batch);
}

/// Four SGD steps (rate 0.5) of `plan` on `batch` on each engine: the
/// losses and every trained parameter agree; returns the native engine's
/// trained plan.
fn sgd_on_both_engines(name: &str, plan: &mut Plan, batch: &Batch) -> Plan {
    let train = plan.train.as_mut().unwrap();
    train.dense_optimizer = Some(optimizer(OptimizerKind::Sgd, 0.5));
    train.sparse_optimizer = Some(optimizer(OptimizerKind::Sgd, 0.5));
    let run = |native: bool| {
        let mut t = Trainer::new(plan, 3, &Device::Cpu).unwrap();
        t.model.set_native(native).unwrap();
        assert_eq!(t.model.uses_native(), native);
        let losses: Vec<f32> = (0..4).map(|_| t.step(batch, 0).unwrap().total).collect();
        (losses, t.to_plan().unwrap())
    };
    let ((ln, pn), (lc, pc)) = (run(true), run(false));
    assert_close(&format!("{name} losses"), &ln, &lc, 1e-4);
    for (a, b) in pn.params.iter().zip(&pc.params) {
        assert_close(
            &format!("{name}: trained {}", a.name),
            &f32s(&a.data),
            &f32s(&b.data),
            1e-4,
        );
    }
    pn
}

/// Dice (TorchEasyRec's `activation: "Dice"`) in a DIN attention MLP (its
/// batch norm over the steps), in unfused experts and in a tower: logits
/// and gradients agree between the engines, and so do four SGD steps'
/// losses, trained alphas and batch-norm running statistics.
#[test]
fn dice_matches_the_candle_path() {
    let source = r#"
data_config { batch_size: 32 label_fields: "clk" label_fields: "buy" }
feature_configs { id_feature { feature_name: "item_id" num_buckets: 60 embedding_dim: 6 } }
feature_configs { id_feature { feature_name: "user" num_buckets: 40 embedding_dim: 4 } }
feature_configs { sequence_id_feature { feature_name: "click_items" num_buckets: 60 embedding_dim: 6 sequence_length: 7 } }
model_config {
  feature_groups {
    group_name: "all"
    feature_names: "item_id"
    feature_names: "user"
    group_type: DEEP
    sequence_groups { group_name: "clicks" feature_names: "item_id" feature_names: "click_items" }
    sequence_encoders { din_encoder { input: "clicks" attn_mlp { hidden_units: [8, 4] activation: "Dice" } } }
  }
  mmoe {
    expert_mlp { hidden_units: [16, 8] activation: "Dice" }
    num_expert: 2
    task_towers { tower_name: "ctr" label_name: "clk" mlp { hidden_units: [6] activation: "Dice" } losses { binary_cross_entropy {} } }
    task_towers { tower_name: "cvr" label_name: "buy" losses { binary_cross_entropy {} } }
  }
}
"#;
    let mut plan = build(source, BuildOptions::default())
        .unwrap_or_else(|e| panic!("dice compiles: {e:?}"))
        .plan;
    let dice_ops = plan
        .ops
        .iter()
        .filter(|o| o.kind == OpKind::Dice as i32)
        .count();
    // attention MLP 2 + experts 2 x 2 + tower 1.
    assert_eq!(dice_ops, 7, "one DICE op per Dice layer");
    let batch = super::runs::random_batch(&plan, 37, 9);
    compare("dice", &plan, &batch, 2e-4);
    let trained = sgd_on_both_engines("dice", &mut plan, &batch);
    let moved = trained
        .params
        .iter()
        .zip(&plan.params)
        .filter(|(a, init)| a.name.contains(".dice.") && f32s(&a.data) != f32s(&init.data))
        .count();
    // Every alpha trains and every running statistic moves; gamma and
    // beta stay frozen at 1 and 0 (affine=False).
    let frozen = trained
        .params
        .iter()
        .filter(|p| p.name.ends_with(".dice.bn.gamma") || p.name.ends_with(".dice.bn.beta"));
    for p in frozen {
        let want = if p.name.ends_with("gamma") { 1.0 } else { 0.0 };
        assert!(f32s(&p.data).iter().all(|&v| v == want), "{} moved", p.name);
    }
    assert_eq!(
        moved,
        7 * 3,
        "alpha, running mean and variance of each Dice"
    );
}

/// DBMTL's mask net, parallel and serial blocks with a top MLP: the
/// standalone layer norm, the mask products and the block layers agree
/// between the engines.
#[test]
fn mask_net_matches_the_candle_path() {
    for (parallel, ratio) in [
        (true, "reduction_ratio: 0.5"),
        (false, "reduction_ratio: 0 aggregation_dim: 6"),
    ] {
        let source = format!(
            r#"
data_config {{ batch_size: 32 label_fields: "clk" label_fields: "buy" }}
feature_configs {{ id_feature {{ feature_name: "u" num_buckets: 50 embedding_dim: 4 }} }}
feature_configs {{ id_feature {{ feature_name: "i" num_buckets: 50 embedding_dim: 4 }} }}
feature_configs {{ raw_feature {{ feature_name: "p" }} }}
model_config {{
  feature_groups {{ group_name: "all" feature_names: "u" feature_names: "i" feature_names: "p" group_type: DEEP }}
  dbmtl {{
    mask_net {{ n_mask_blocks: 2 mask_block {{ {ratio} hidden_dim: 8 }} top_mlp {{ hidden_units: [8] }} use_parallel: {parallel} }}
    bottom_mlp {{ hidden_units: [8] }}
    task_towers {{ tower_name: "ctr" label_name: "clk" mlp {{ hidden_units: [4] }} losses {{ binary_cross_entropy {{}} }} }}
    task_towers {{ tower_name: "cvr" label_name: "buy" losses {{ binary_cross_entropy {{}} }} relation_tower_names: "ctr" relation_mlp {{ hidden_units: [4] }} }}
  }}
}}
"#
        );
        let plan = build(&source, BuildOptions::default())
            .unwrap_or_else(|e| panic!("mask net compiles: {e:?}"))
            .plan;
        let batch = super::runs::random_batch(&plan, 40, 3);
        compare(
            &format!("mask net (parallel: {parallel})"),
            &plan,
            &batch,
            2e-4,
        );
    }
}

#[test]
fn training_runs_match_the_candle_path() {
    // SGD: Adam and Adagrad divide by the gradient's own size, so rounding
    // noise in near-zero gradients becomes full-size steps; SGD keeps the
    // comparison well conditioned. The losses compare under Adam too.
    let mut plan = complex_plan(4, 0.2);
    let adam_losses = |native: bool| {
        let mut t = Trainer::new(&plan, 9, &Device::Cpu).unwrap();
        t.model.set_native(native).unwrap();
        (0..4)
            .map(|s| t.step(&complex_batch(33, 40 + s), 0).unwrap().total)
            .collect::<Vec<f32>>()
    };
    assert_close("adam losses", &adam_losses(true), &adam_losses(false), 1e-4);
    let train = plan.train.as_mut().unwrap();
    train.dense_optimizer = Some(optimizer(OptimizerKind::Sgd, 0.05));
    train.sparse_optimizer = Some(optimizer(OptimizerKind::Sgd, 0.05));
    let batches: Vec<_> = (0..4).map(|i| complex_batch(33, 40 + i)).collect();
    let run = |native: bool| {
        let mut t = Trainer::new(&plan, 9, &Device::Cpu).unwrap();
        t.model.set_native(native).unwrap();
        let losses: Vec<f32> = (0..8)
            .map(|s| t.step(&batches[s % batches.len()], 0).unwrap().total)
            .collect();
        (losses, t.to_plan().unwrap())
    };
    let ((ln, pn), (lc, pc)) = (run(true), run(false));
    assert_close("losses", &ln, &lc, 1e-4);
    for (a, b) in pn.params.iter().zip(&pc.params) {
        let (a, b) = (f32s(&a.data), f32s(&b.data));
        assert_close("trained parameters", &a, &b, 1e-4);
    }
    for (a, b) in pn.tables.iter().zip(&pc.tables) {
        assert_close("trained tables", &f32s(&a.data), &f32s(&b.data), 1e-4);
    }
}

fn f32s(b: &[u8]) -> Vec<f32> {
    crate::runtime::embedding::f32s_from_le(b)
}

/// bf16 matrix multiplies (AMX where present, f32 elsewhere) stay close to
/// the f32 candle path: bf16 keeps 8 bits of mantissa, so logits and
/// gradients agree to a few 1e-2 of their scale. Runs the fused bias+relu
/// epilogues of the expert and tower layers.
#[test]
fn bf16_engine_stays_close_to_f32() {
    let path = format!("{}/examples/ple_demo.config", env!("CARGO_MANIFEST_DIR"));
    let source = std::fs::read_to_string(path).unwrap();
    let plan = build(&source, BuildOptions::default()).unwrap().plan;
    let batch = super::runs::random_batch(&plan, 256, 3);
    let (mut n, mut c) = models(&plan);
    n.set_precision(crate::runtime::exec::native::Precision::Bf16)
        .unwrap();
    for mode in [Mode::Eval, Mode::Train { seed: 1, step: 1 }] {
        let (a, b) = (
            n.forward(&batch, mode).unwrap(),
            c.forward(&batch, mode).unwrap(),
        );
        for (x, y) in a.logits.iter().zip(&b.logits) {
            let (x, y) = (host32(x), host32(y));
            assert_close("bf16 logits", &x, &y, 3e-2);
            if crate::runtime::exec::native::Precision::Bf16.runs_bf16() {
                assert!(x != y, "bf16 multiplies should round");
            }
        }
        if mode == Mode::Eval {
            continue;
        }
        let mut ga = loss_of(&a.logits).backward().unwrap();
        n.backward_native(&a, &mut ga).unwrap();
        let gb = loss_of(&b.logits).backward().unwrap();
        for (pa, pb) in n.params().iter().zip(c.params()) {
            if let (ParamSlot::Trainable(va), ParamSlot::Trainable(vb)) = (pa, pb) {
                let x = host32(ga.get(va.as_tensor()).unwrap());
                let y = host32(gb.get(vb.as_tensor()).unwrap());
                assert_close("bf16 gradients", &x, &y, 6e-2);
            }
        }
    }
}

/// Training with bf16 multiplies follows the f32 run, on each bf16 kernel this CPU has
/// (AVX512-BF16 dot products, AMX tiles; the others are named as skipped), forced in turn
/// on the test's thread. Tolerance: bf16 keeps 8 mantissa bits, so each multiply input is
/// off by at most 2^-9 (0.2%) relative; the logits' error is of that order, and a batch's
/// mean cross-entropy moves by less than the logits' error times its slope (at most 1).
/// Over a dozen Adam steps the two runs' parameters drift apart by a few such errors, so
/// the losses stay within 2% of each other (measured: under 0.5%); a kernel that dropped
/// k terms, a column or the bias would be far outside it.
#[test]
fn bf16_training_follows_the_f32_losses() {
    use crate::runtime::exec::native::isa::{self, Isa};
    use crate::runtime::exec::native::Precision;
    let path = format!("{}/examples/ple_demo.config", env!("CARGO_MANIFEST_DIR"));
    let source = std::fs::read_to_string(path).unwrap();
    let plan = build(&source, BuildOptions::default()).unwrap().plan;
    let batches: Vec<_> = (0..3)
        .map(|s| super::runs::random_batch(&plan, 256, 20 + s))
        .collect();
    let losses = |p: Precision| {
        let mut t = Trainer::new(&plan, 5, &Device::Cpu).unwrap();
        t.model.set_native(true).unwrap();
        t.model.set_precision(p).unwrap();
        (0..12)
            .map(|s| t.step(&batches[s % batches.len()], 0).unwrap().total)
            .collect::<Vec<f32>>()
    };
    isa::set_forced(Some(Isa::Avx512.min(Isa::detected())));
    let f32_losses = losses(Precision::F32);
    let mut ran = 0;
    for level in [Isa::Avx512Bf16, Isa::Amx] {
        if level > Isa::detected() {
            eprintln!(
                "skipped: bf16 training on {level} (this CPU supports up to {})",
                Isa::detected()
            );
            continue;
        }
        isa::set_forced(Some(level));
        let bf16_losses = losses(Precision::Bf16);
        assert_ne!(
            bf16_losses, f32_losses,
            "{level}: bf16 multiplies should round"
        );
        let worst = bf16_losses
            .iter()
            .zip(&f32_losses)
            .map(|(a, b)| (a - b).abs() / b.abs())
            .fold(0f32, f32::max);
        eprintln!("bf16 training on {level}: losses within {worst:.2e} of f32 (relative)");
        for (step, (a, b)) in bf16_losses.iter().zip(&f32_losses).enumerate() {
            assert!(
                (a - b).abs() <= 2e-2 * b.abs(),
                "{level} step {step}: bf16 loss {a} vs f32 {b}"
            );
        }
        ran += 1;
    }
    isa::set_forced(None);
    if ran == 0 {
        eprintln!("skipped: every bf16 kernel (bf16 runs in f32 on this CPU)");
    }
}

/// An evaluation batch larger than the native engine's chunk (256 rows on one thread) runs in
/// chunks, the last one shorter; the joined logits are those of the candle path's
/// single pass, row for row, on every task.
#[test]
fn evaluation_in_chunks_matches_one_pass() {
    let path = format!("{}/examples/ple_demo.config", env!("CARGO_MANIFEST_DIR"));
    let source = std::fs::read_to_string(path).unwrap();
    let plan = build(&source, BuildOptions::default()).unwrap().plan;
    let batch = super::runs::random_batch(&plan, 2500, 4);
    let (mut n, mut c) = models(&plan);
    let (a, b) = (
        n.forward(&batch, Mode::Eval).unwrap(),
        c.forward(&batch, Mode::Eval).unwrap(),
    );
    assert_eq!(a.logits.len(), b.logits.len());
    for (x, y) in a.logits.iter().zip(&b.logits) {
        assert_eq!(x.dims(), y.dims());
        assert_eq!(x.dims()[0], 2500);
        assert_close("chunked logits", &host32(x), &host32(y), 1e-4);
    }
}

/// Evaluation with the batch's rows spread over the threads (one engine per
/// thread, `runtime::row_parallel`) gives the logits of the one-thread pass,
/// in row order, for every thread count and chunking, in f32 and (where the
/// CPU has a bf16 kernel) bf16; the per-row arithmetic is the same, so the
/// values agree to f32 rounding.
#[test]
fn evaluation_with_rows_side_by_side_matches_one_thread() {
    let path = format!("{}/examples/ple_demo.config", env!("CARGO_MANIFEST_DIR"));
    let source = std::fs::read_to_string(path).unwrap();
    let plan = build(&source, BuildOptions::default()).unwrap().plan;
    let mut precisions = vec![Precision::F32];
    if Precision::Bf16.runs_bf16() {
        precisions.push(Precision::Bf16);
    }
    for precision in precisions {
        for rows in [300, 2500] {
            let batch = super::runs::random_batch(&plan, rows, 4);
            let logits = |threads: usize| -> Vec<Vec<f32>> {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let (mut n, _) = models(&plan);
                n.set_precision(precision).unwrap();
                let out = pool.install(|| n.forward(&batch, Mode::Eval)).unwrap();
                out.logits.iter().map(host32).collect()
            };
            let one = logits(1);
            assert_eq!(one[0].len(), rows);
            for threads in [2, 3] {
                assert!(
                    crate::runtime::row_parallel::chunk_rows(rows, threads).is_some(),
                    "{rows} rows on {threads} threads should run side by side"
                );
                let many = logits(threads);
                assert_eq!(many.len(), one.len());
                for (a, b) in many.iter().zip(&one) {
                    assert_close(
                        &format!("{precision:?} logits, {rows} rows on {threads} threads"),
                        a,
                        b,
                        1e-5,
                    );
                }
            }
        }
    }
}

/// A frozen model (one loaded only to evaluate) keeps each weight packed
/// on each evaluation thread from batch to batch: over batches of several
/// chunks per thread and of one, its logits are an unfrozen model's to the
/// bit, in f32 and (where the CPU has a bf16 kernel) bf16; and it refuses to
/// train.
#[test]
fn frozen_model_evaluates_as_an_unfrozen_one_and_refuses_to_train() {
    let path = format!("{}/examples/ple_demo.config", env!("CARGO_MANIFEST_DIR"));
    let source = std::fs::read_to_string(path).unwrap();
    let plan = build(&source, BuildOptions::default()).unwrap().plan;
    let batches =
        [2500, 600, 2500, 700].map(|rows| super::runs::random_batch(&plan, rows, rows as u64));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let mut precisions = vec![Precision::F32];
    if Precision::Bf16.runs_bf16() {
        precisions.push(Precision::Bf16);
    }
    for precision in precisions {
        let (mut frozen, _) = models(&plan);
        let (mut open, _) = models(&plan);
        frozen.freeze();
        for m in [&mut frozen, &mut open] {
            m.set_precision(precision).unwrap();
        }
        for (i, batch) in batches.iter().enumerate() {
            let logits = |m: &mut Model| -> Vec<Vec<u32>> {
                let out = pool.install(|| m.forward(batch, Mode::Eval)).unwrap();
                out.logits
                    .iter()
                    .map(|t| host32(t).into_iter().map(f32::to_bits).collect())
                    .collect()
            };
            assert_eq!(
                logits(&mut frozen),
                logits(&mut open),
                "{precision:?}: batch {i} of {} rows",
                batch.rows
            );
        }
        let train = frozen.forward(&batches[1], Mode::Train { seed: 1, step: 0 });
        assert!(train.is_err(), "a frozen model trained");
    }
}

/// A training step on a program rebuilt over an earlier program's memory
/// (a shorter batch after a longer one and the longer one again: the end
/// of an epoch and the start of the next) gives the step of a fresh model:
/// the same logits and gradients to the bit, on one thread and with rows
/// side by side on two.
#[test]
fn programs_built_on_old_memory_compute_as_fresh_ones() {
    let path = format!("{}/examples/ple_demo.config", env!("CARGO_MANIFEST_DIR"));
    let source = std::fs::read_to_string(path).unwrap();
    let plan = build(&source, BuildOptions::default()).unwrap().plan;
    let long = super::runs::random_batch(&plan, 700, 3);
    let short = super::runs::random_batch(&plan, 530, 4);
    let step = |m: &mut Model, batch: &Batch| -> Vec<Vec<u32>> {
        let f = m.forward(batch, Mode::Train { seed: 5, step: 1 }).unwrap();
        let mut g = loss_of(&f.logits).backward().unwrap();
        m.backward_native(&f, &mut g).unwrap();
        let bits = |t: &Tensor| host32(t).into_iter().map(f32::to_bits).collect();
        let mut out: Vec<Vec<u32>> = f.logits.iter().map(bits).collect();
        for p in m.params() {
            if let ParamSlot::Trainable(v) = p {
                out.push(g.get(v.as_tensor()).map(bits).unwrap_or_default());
            }
        }
        for r in &f.gathered {
            out.push(g.get(r.rows.as_tensor()).map(bits).unwrap_or_default());
        }
        out
    };
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let (mut reused, _) = models(&plan);
            let first = step(&mut reused, &long);
            let after_short = step(&mut reused, &short);
            let again = step(&mut reused, &long);
            let (mut fresh, _) = models(&plan);
            assert_eq!(
                after_short,
                step(&mut fresh, &short),
                "{threads} threads: short"
            );
            let (mut fresh, _) = models(&plan);
            let want = step(&mut fresh, &long);
            assert_eq!(first, want, "{threads} threads: first");
            assert_eq!(again, want, "{threads} threads: long again");
        });
    }
}

/// One training step's results on `threads` threads: the logits, each
/// parameter's gradient and each gathered table's (ids, rows' gradient),
/// under the loss `loss_of`.
type StepResult = (
    Vec<Vec<f32>>,
    Vec<Option<Vec<f32>>>,
    Vec<(usize, Vec<u32>, Vec<f32>)>,
);

fn train_step_on(plan: &Plan, batch: &Batch, threads: usize, precision: Precision) -> StepResult {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let (mut n, _) = models(plan);
    n.set_precision(precision).unwrap();
    pool.install(|| {
        // A first step, so the compared one reuses the buffers and the
        // gathered-row merge of a step before it.
        for step in [2, 3] {
            let f = n.forward(batch, Mode::Train { seed: 11, step }).unwrap();
            let mut g = loss_of(&f.logits).backward().unwrap();
            n.backward_native(&f, &mut g).unwrap();
            if step < 3 {
                continue;
            }
            let params = n
                .params()
                .iter()
                .map(|p| match p {
                    ParamSlot::Trainable(v) => g.get(v.as_tensor()).map(host32),
                    ParamSlot::Buffer(_) => None,
                })
                .collect();
            let rows = f
                .gathered
                .iter()
                .map(|r| {
                    let zeros = vec![0.0; r.rows.as_tensor().elem_count()];
                    let d = g.get(r.rows.as_tensor()).map_or(zeros, host32);
                    (r.table, r.host_ids.clone(), d)
                })
                .collect();
            return (f.logits.iter().map(host32).collect(), params, rows);
        }
        unreachable!()
    })
}

/// Training with a batch's rows side by side (one part per thread on its
/// own engine, `runtime::row_parallel::train`) gives the one-thread pass's
/// step: the same logits (dropout, attention dropout and variational
/// dropout draw the one pass's masks), the same gathered rows in the same
/// order, and the same gradients up to the order of f32 sums, on every
/// example plan without batch norm (those train as one pass), in f32 and
/// (where the CPU has a bf16 kernel that trains in parts) bf16.
#[test]
fn training_with_rows_side_by_side_matches_one_pass() {
    let mut plans = example_plans();
    plans.push((
        "variational dropout".into(),
        build(VARIATIONAL_DROPOUT, BuildOptions::default())
            .unwrap()
            .plan,
    ));
    let rows = 800;
    let mut in_parts = 0;
    for (name, plan) in &plans {
        if !crate::runtime::row_parallel::rows_apart_in_training(plan) {
            continue;
        }
        in_parts += 1;
        let batch = super::runs::random_batch(plan, rows, 9);
        let mut precisions = vec![Precision::F32];
        let bf16_parts = crate::runtime::exec::native::trains_in_parts(Some(Precision::Bf16));
        if Precision::Bf16.runs_bf16() && bf16_parts && name.starts_with("ple_demo") {
            precisions.push(Precision::Bf16);
        }
        for precision in precisions {
            let (logits, params, gathered) = train_step_on(plan, &batch, 1, precision);
            for threads in [2, 3] {
                assert_eq!(
                    crate::runtime::row_parallel::train_parts(rows, threads),
                    Some(threads)
                );
                let what = format!("{name}, {precision:?}, {threads} threads");
                let (l, p, g) = train_step_on(plan, &batch, threads, precision);
                for (k, (a, b)) in l.iter().zip(&logits).enumerate() {
                    assert_close(&format!("{what}: logits {k}"), a, b, 1e-5);
                }
                assert_eq!(p.len(), params.len());
                for (i, (a, b)) in p.iter().zip(&params).enumerate() {
                    match (a, b) {
                        (Some(a), Some(b)) => {
                            assert_close(&format!("{what}: gradient of param {i}"), a, b, 1e-4)
                        }
                        (a, b) => assert_eq!(a.is_some(), b.is_some(), "{what}: param {i}"),
                    }
                }
                assert_eq!(g.len(), gathered.len(), "{what}: gathered tables");
                for ((ta, ia, da), (tb, ib, db)) in g.iter().zip(&gathered) {
                    assert_eq!((ta, ia), (tb, ib), "{what}: gathered ids of table {tb}");
                    assert_close(&format!("{what}: rows of table {tb}"), da, db, 1e-4);
                }
            }
        }
    }
    assert!(in_parts >= 10, "only {in_parts} plans trained in parts");
}

/// A valid plan with an op the native engine cannot run: a linear over a
/// stack of column slices (candle multiplies it as a rank-3 tensor; the
/// native engine would need its rows as one strided matrix).
fn plan_with_unsupported_op() -> Plan {
    let w = randv(4 * 3 + 2 * 6 + 4, 77, 0.0);
    let f = |r: std::ops::Range<usize>| -> Vec<f32> { w[r].iter().map(|&v| v as f32).collect() };
    let params = vec![
        param("shared.w", &[4, 3], &f(0..12), true),
        param("gate.w", &[2, 6], &f(12..24), true),
        param("tower.w", &[1, 4], &f(24..28), true),
    ];
    let values = vec![
        value("group", &[-1, 6]),     // 0
        value("left", &[-1, 3]),      // 1
        value("right", &[-1, 3]),     // 2
        value("stack", &[2, -1, 3]),  // 3
        value("shared", &[2, -1, 4]), // 4
        value("gate", &[-1, 2]),      // 5
        value("gate.sm", &[-1, 2]),   // 6
        value("mix", &[-1, 4]),       // 7
        value("logits", &[-1, 1]),    // 8
    ];
    let mut group = op("group", OpKind::FeatureGroup, &[], 0, &[]);
    group.features = vec![0];
    let slice = |name: &str, out: u32, start: i64| {
        let mut s = op(name, OpKind::Slice, &[0], out, &[]);
        s.axis = 1;
        s.start = start;
        s.length = 3;
        s
    };
    let mut sm = op("gate.sm", OpKind::Softmax, &[5], 6, &[]);
    sm.axis = -1;
    let ops = vec![
        group,
        slice("left", 1, 0),
        slice("right", 2, 3),
        op("stack", OpKind::Stack, &[1, 2], 3, &[]),
        op("shared", OpKind::Linear, &[3], 4, &[0]),
        op("gate", OpKind::Linear, &[0], 5, &[1]),
        sm,
        op("mix", OpKind::GateMix, &[6, 4], 7, &[]),
        op("tower", OpKind::Linear, &[7], 8, &[2]),
    ];
    Plan {
        format_version: 1,
        model_kind: "mmoe".into(),
        data: Some(DataSpec {
            batch_size: 8,
            label_fields: vec!["click".into()],
            ..Default::default()
        }),
        features: vec![dense_feature("d", 6)],
        values,
        ops,
        params,
        tasks: vec![bce_task("ctr", "click", 8)],
        train: Some(train_settings(
            optimizer(OptimizerKind::Adam, 0.01),
            optimizer(OptimizerKind::Adagrad, 0.05),
            4,
        )),
        ..Default::default()
    }
}

#[test]
fn an_op_the_native_engine_refuses_runs_on_candle_or_stops_when_native_is_forced() {
    use crate::runtime::{EngineChoice, RuntimeError};
    let plan = plan_with_unsupported_op();
    let batch = random_batch_for_dense(&plan, 16);
    // auto: the model runs, on candle, and trains.
    let mut auto = Model::from_plan_on(
        &plan,
        &Device::Cpu,
        candle_core::DType::F32,
        EngineChoice::Auto,
    )
    .expect("auto falls back to candle");
    assert!(!auto.uses_native());
    let f = auto.forward(&batch, Mode::Eval).unwrap();
    assert_eq!(f.logits[0].dims(), &[16, 1]);
    // native: an error naming the op.
    match Model::from_plan_on(
        &plan,
        &Device::Cpu,
        candle_core::DType::F32,
        EngineChoice::Native,
    ) {
        Err(RuntimeError::Unsupported { op, why }) => {
            assert_eq!(op, "shared");
            assert!(why.contains("one strided matrix"), "{why}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    // An inconsistent plan is an error on every engine, never a fallback.
    let mut broken = plan.clone();
    broken.ops[4].inputs = vec![99];
    for choice in [
        EngineChoice::Auto,
        EngineChoice::Native,
        EngineChoice::Candle,
    ] {
        match Model::from_plan_on(&broken, &Device::Cpu, candle_core::DType::F32, choice) {
            Err(RuntimeError::InvalidPlan(m)) => assert!(m.contains("shared"), "{m}"),
            other => panic!("{choice}: expected InvalidPlan, got {other:?}"),
        }
    }
    // And it trains (on candle) to lower loss.
    let mut t = Trainer::new(&plan, 9, &Device::Cpu).unwrap();
    let first = t.step(&batch, 0).unwrap().total;
    let mut last = first;
    for _ in 0..20 {
        last = t.step(&batch, 0).unwrap().total;
    }
    assert!(last < first, "loss {first} -> {last}");
}

/// A batch of `rows` rows for a plan of dense features only.
fn random_batch_for_dense(plan: &Plan, rows: usize) -> Batch {
    let mut r = crate::rng::SplitMix64::new(5);
    let features = plan
        .features
        .iter()
        .map(|f| {
            let dim = f.value_dim.max(1) as usize;
            FeatureInput::Dense {
                values: (0..rows * dim).map(|_| r.next_f64() as f32 - 0.5).collect(),
                dim,
            }
        })
        .collect();
    let labels = vec![(0..rows).map(|i| (i % 2) as f32).collect()];
    batch(rows, features, labels)
}
