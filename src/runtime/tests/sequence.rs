//! Sequence encoders on candle: finite-difference gradients of every
//! sequence op and of a whole DIN model, a tiny DIN computed by hand, and
//! the native engine taking a DIN plan itself.

use candle_core::{DType, Device, Tensor};

use super::gradcheck::{check, r};
use super::*;
use crate::runtime::exec::candle::ops;
use crate::runtime::model::Mode;
use crate::runtime::{loss, Trainer};

/// A `[B, L]` mask of 0/1 from per-row lengths.
fn mask(lengths: &[usize], steps: usize) -> Tensor {
    let v: Vec<f64> = lengths
        .iter()
        .flat_map(|&n| (0..steps).map(move |l| if l < n { 1.0 } else { 0.0 }))
        .collect();
    t64(&v, &[lengths.len(), steps])
}

#[test]
fn sequence_op_gradients() {
    // Query narrower than the steps: DIN pads it with zeros.
    check("din input", &[r(&[2, 2], 1), r(&[2, 3, 3], 2)], &|x| {
        ops::din_input(&x[0], &x[1])
    });
    check("dot scores", &[r(&[2, 3], 3), r(&[2, 4, 3], 4)], &|x| {
        ops::dot_scores(&x[0], &x[1])
    });
    let m = mask(&[2, 4, 1], 4);
    check(
        "attention pool",
        &[r(&[3, 4, 1], 5), r(&[3, 4, 2], 6)],
        &|x| ops::attention_pool(&x[0], &x[1], &m),
    );
    for mean in [false, true] {
        check("sequence pool", &[r(&[3, 4, 2], 7)], &|x| {
            ops::sequence_pool(&x[0], &m, mean)
        });
    }
}

/// Multi-window DIN's ops: gradients, and the pooling by hand. Windows
/// [1, 2, 3] over 4 steps: the last window holds step 3 only (the rest is
/// past L, as tzrec's negative pad truncates), and a row of length 2
/// divides window 1 by min(2 - 1, 2) = 1 and the empty window 2 by
/// max(2 - 3, 1) = 1.
#[test]
fn multi_window_din_ops() {
    check("window input", &[r(&[2, 2], 1), r(&[2, 3, 3], 2)], &|x| {
        ops::window_input(&x[0], &x[1])
    });
    let m = mask(&[2, 4, 0], 4);
    check(
        "window pool",
        &[r(&[3, 4, 1], 5), r(&[3, 4, 2], 6), r(&[3, 1], 7)],
        &|x| ops::window_pool(&x[0], &x[1], &m, &x[2], &[1, 2, 3]),
    );
    let q = t64(&[7.0, 8.0], &[1, 2]);
    let s = t64(&[1.0, 0.0, 2.0, 0.0, 3.0, 0.0, 4.0, 0.0], &[1, 4, 2]);
    let scores = t64(&[1.0, 1.0, 1.0, 1.0], &[1, 4, 1]);
    let y = host(&ops::window_input(&t64(&[2.0], &[1, 1]), &s).unwrap());
    assert_eq!(&y[..6], &[1.0, 0.0, 2.0, 0.0, 2.0, 0.0]);
    let m = mask(&[2], 4);
    let y = host(&ops::window_pool(&scores, &s, &m, &q, &[1, 2, 3]).unwrap());
    // Window 0: step 0 = 1; window 1: step 1 (step 2 masked) = 2 / 1;
    // window 2: step 3 masked = 0; then the query.
    assert_eq!(y, vec![1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 7.0, 8.0]);
    let m = mask(&[4], 4);
    let y = host(&ops::window_pool(&scores, &s, &m, &q, &[1, 2, 3]).unwrap());
    // Full length: window 1 averages steps 1 and 2, window 2 holds step 3
    // and divides by min(4 - 3, 3) = 1.
    assert_eq!(y, vec![1.0, 0.0, 2.5, 0.0, 4.0, 0.0, 7.0, 8.0]);
}

/// DIN over two items and one padded step, by hand: q = [1, 0],
/// s1 = [1, 2], s2 = [0, 1]. The attention input of a step is
/// [q, s, q - s, q * s]; the one hidden unit reads s0 + s1 + (q*s)0, so it
/// is 4 for s1 and 1 for s2 (relu keeps both); the score linear is the
/// identity, the softmax weights sigmoid(3) and 1 - sigmoid(3), and the
/// output sigmoid(3) * s1 + (1 - sigmoid(3)) * s2 = [sig(3), 1 + sig(3)].
/// A second row with no step pools three zero steps to zero, as tzrec's
/// masked softmax does.
#[test]
fn tiny_din_by_hand() {
    let q = t64(&[1.0, 0.0, 1.0, 0.0], &[2, 2]);
    let s = t64(
        &[1.0, 2.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        &[2, 3, 2],
    );
    let m = mask(&[2, 0], 3);
    let x = ops::din_input(&q, &s).unwrap();
    assert_eq!(x.dims(), &[2, 3, 8]);
    let row0: Vec<f64> = host(&x.get(0).unwrap());
    assert_eq!(
        &row0[..16],
        &[
            1.0, 0.0, 1.0, 2.0, 0.0, -2.0, 1.0, 0.0, // step 1
            1.0, 0.0, 0.0, 1.0, 1.0, -1.0, 0.0, 0.0, // step 2
        ]
    );
    let w1 = t64(&[0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0], &[1, 8]);
    let b1 = t64(&[0.0], &[1]);
    let h = ops::linear(&x, &w1, Some(&b1)).unwrap().relu().unwrap();
    assert_eq!(&host(&h)[..3], &[4.0, 1.0, 0.0]);
    let w2 = t64(&[1.0], &[1, 1]);
    let b2 = t64(&[0.0], &[1]);
    let scores = ops::linear(&h, &w2, Some(&b2)).unwrap();
    let out = host(&ops::attention_pool(&scores, &s, &m).unwrap());
    let sig3 = 1.0 / (1.0 + (-3.0f64).exp());
    let want = [sig3, 1.0 + sig3, 0.0, 0.0];
    for (k, (a, b)) in out.iter().zip(want).enumerate() {
        assert!((a - b).abs() < 1e-12, "element {k}: {a} vs {b}");
    }
}

/// A DIN model of one query feature, one grouped sequence of two id
/// sub-features (one sharing the query's table by `embedding_name`) and
/// a plain feature, compiled from its config.
const DIN_CONFIG: &str = r#"
data_config { batch_size: 4 label_fields: "clk" }
feature_configs { id_feature { feature_name: "user" num_buckets: 5 embedding_dim: 2 } }
feature_configs { id_feature { feature_name: "cate" num_buckets: 6 embedding_dim: 3 embedding_name: "cate_emb" } }
feature_configs {
  sequence_feature {
    sequence_name: "seq"
    sequence_length: 3
    sequence_delim: ";"
    features { id_feature { feature_name: "cate" num_buckets: 6 embedding_dim: 3 embedding_name: "cate_emb" } }
    features { raw_feature { feature_name: "price" } }
  }
}
model_config {
  feature_groups {
    group_name: "all"
    feature_names: "user"
    group_type: DEEP
    sequence_groups {
      group_name: "seq"
      feature_names: "cate"
      feature_names: "seq__cate"
      feature_names: "seq__price"
    }
    sequence_encoders { din_encoder { attn_mlp { hidden_units: [4] activation: "nn.Tanh" } } }
    sequence_encoders { pooling_encoder { input: "seq" pooling_type: "mean" } }
  }
  simple_multi_task {
    task_towers { tower_name: "ctr" label_name: "clk" losses { binary_cross_entropy {} } }
  }
}
"#;

fn din_plan() -> Plan {
    crate::pipeline::build(DIN_CONFIG, Default::default())
        .unwrap()
        .plan
}

/// One input per plan feature: sequence rows of lengths 3, 1, 0 and 2.
fn din_batch(plan: &Plan) -> Batch {
    let lengths = [3usize, 1, 0, 2];
    let rows = lengths.len();
    let features = plan
        .features
        .iter()
        .enumerate()
        .map(|(f, spec)| {
            let n = spec.num_ids.max(1) as u32;
            let id = |r: usize, k: usize| ((r * 7 + k * 3 + f) as u32) % n;
            if spec.sequence_length == 0 {
                let bags: Vec<Vec<u32>> = (0..rows).map(|r| vec![id(r, 0)]).collect();
                let refs: Vec<&[u32]> = bags.iter().map(Vec::as_slice).collect();
                return ids(&refs);
            }
            let mut offsets = vec![0u32];
            let mut total = 0;
            for &l in &lengths {
                total += l as u32;
                offsets.push(total);
            }
            if spec.kind == FeatureKind::RawDense as i32 {
                let values = randv(total as usize, 40 + f as u64, 0.0)
                    .into_iter()
                    .map(|x| x as f32)
                    .collect();
                FeatureInput::SeqDense {
                    values,
                    offsets,
                    dim: 1,
                }
            } else {
                let ids = (0..rows)
                    .flat_map(|r| (0..lengths[r]).map(move |k| (r, k)))
                    .map(|(r, k)| id(r, k + 1))
                    .collect();
                FeatureInput::Ids { ids, offsets }
            }
        })
        .collect();
    batch(rows, features, vec![vec![1.0, 0.0, 1.0, 0.0]])
}

#[test]
fn din_plan_shape_and_tables() {
    let plan = din_plan();
    let kinds: Vec<OpKind> = plan
        .ops
        .iter()
        .filter_map(|o| OpKind::try_from(o.kind).ok())
        .collect();
    for k in [
        OpKind::SequenceEmbed,
        OpKind::SequenceMask,
        OpKind::DinInput,
        OpKind::AttentionPool,
        OpKind::SequencePool,
    ] {
        assert!(kinds.contains(&k), "{k:?} missing from {kinds:?}");
    }
    // The query and the sequence share `cate_emb`, apart from bag tables.
    let mut tables: Vec<&str> = plan.tables.iter().map(|t| t.name.as_str()).collect();
    tables.sort();
    assert_eq!(tables, ["seq:cate_emb", "user"]);
    // Group output: user (2), then DIN (3 + 1), then mean pooling (4).
    let tower_in = plan
        .ops
        .iter()
        .find(|o| o.name == "all.with_sequences")
        .map(|o| plan.values[o.output as usize].shape.clone());
    assert_eq!(tower_in, Some(vec![-1, 10]));
    // 2 FLOPs per weight: the attention MLP (16 -> 4 -> 1) runs on each of
    // the 3 steps, the tower's logits linear (10 -> 1) once.
    let attention = 2 * 3 * (16 * 4 + 4);
    let tower = 2 * 10;
    assert_eq!(plan.forward_flops_per_sample, attention + tower);
}

/// Whole-model gradients of the DIN plan: every trainable parameter and
/// the gathered rows of the shared query/sequence table, against central
/// differences of the loss.
#[test]
fn din_whole_model_gradients() {
    whole_model_gradients(din_plan());
}

/// The attention MLP with batch norm, as EasyRec writes DIN by default:
/// statistics per channel over the batch and the steps (tzrec's
/// `MLP(dim=3)`), gradients through them.
#[test]
fn din_with_batch_norm_over_steps_gradients() {
    let source = DIN_CONFIG.replace(
        "attn_mlp { hidden_units: [4] activation: \"nn.Tanh\" }",
        "attn_mlp { hidden_units: [4] activation: \"nn.Tanh\" use_bn: true }",
    );
    assert_ne!(source, DIN_CONFIG);
    let plan = crate::pipeline::build(&source, Default::default())
        .unwrap()
        .plan;
    let bn = plan
        .ops
        .iter()
        .find(|o| o.kind == crate::proto::plan::OpKind::BatchNorm as i32)
        .expect("a batch norm");
    assert!(bn.over_steps, "{}", bn.name);
    let gamma = &plan.params[bn.params[0] as usize];
    assert_eq!(gamma.shape, vec![4], "one statistic per channel");
    whole_model_gradients(plan);
}

fn whole_model_gradients(plan: Plan) {
    whole_model_gradients_of(plan, "seq:cate_emb", ".attn.");
}

/// Central differences of the loss against autograd for every trainable
/// parameter (one whose name holds `param_part` must exist) and the
/// gathered rows of `table`.
fn whole_model_gradients_of(plan: Plan, table: &str, param_part: &str) {
    let batch = din_batch(&plan);
    let dev = Device::Cpu;
    let mut tr = Trainer::with_dtype(&plan, 3, &dev, DType::F64).unwrap();
    assert!(!tr.model.uses_native());
    let data = plan.data.clone().unwrap();
    let mode = Mode::Train { seed: 3, step: 0 };
    let total = |m: &mut crate::runtime::Model| {
        let fwd = m.forward(&batch, mode).unwrap();
        let task = &plan.tasks[0];
        let t = loss::task_targets(&data, task, &batch, DType::F64, &dev).unwrap();
        (
            loss::task_loss(task, &fwd.logits[0], &t).unwrap(),
            fwd.gathered,
        )
    };
    let (l0, gathered) = total(&mut tr.model);
    let grads = l0.backward().unwrap();
    let h = 1e-5;
    let vars = super::trainable_vars(&tr.model);
    assert!(vars
        .iter()
        .any(|(i, _)| plan.params[*i].name.contains(param_part)));
    for (i, var) in &vars {
        let g = host(
            grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no grad for {}", plan.params[*i].name)),
        );
        let base = host(var.as_tensor());
        let dims = var.dims().to_vec();
        for k in (0..base.len()).step_by((base.len() / 5).max(1)) {
            let mut at = |delta: f64| {
                let mut v = base.clone();
                v[k] += delta;
                var.set(&t64(&v, &dims)).unwrap();
                let s = host(&total(&mut tr.model).0)[0];
                var.set(&t64(&base, &dims)).unwrap();
                s
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            assert!(
                (fd - g[k]).abs() <= 1e-6 * (1.0 + fd.abs()),
                "param {} element {k}: autograd {} vs finite difference {fd}",
                plan.params[*i].name,
                g[k]
            );
        }
    }
    let shared = plan.tables.iter().position(|t| t.name == table);
    let ga = gathered
        .iter()
        .find(|g| Some(g.table) == shared)
        .expect("the shared table was gathered");
    let gr = host(grads.get(ga.rows.as_tensor()).unwrap());
    let dim = tr.model.tables()[ga.table].dim;
    let base_t = tr.model.tables()[ga.table].weight.clone();
    let base = host(&base_t);
    for (u, &row) in ga.host_ids.iter().enumerate() {
        for d in 0..dim {
            let mut at = |delta: f64| {
                let mut v = base.clone();
                v[row as usize * dim + d] += delta;
                tr.model.tables_mut()[ga.table].weight = t64(&v, base_t.dims());
                let s = host(&total(&mut tr.model).0)[0];
                tr.model.tables_mut()[ga.table].weight = base_t.clone();
                s
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            assert!(
                (fd - gr[u * dim + d]).abs() <= 1e-6 * (1.0 + fd.abs()),
                "row {row} dim {d}: autograd {} vs finite difference {fd}",
                gr[u * dim + d]
            );
        }
    }
}

/// The native engine lays out a DIN plan itself (its sequence kernels are
/// held to candle's values and gradients in `runtime::tests::native`): no
/// `Unsupported`, so no fallback to candle.
#[test]
fn native_engine_runs_sequence_plans() {
    let plan = din_plan();
    let analysis = crate::plan::validate::analyze(&plan).unwrap();
    if let Err(e) = crate::runtime::exec::native::Engine::new(&plan, &analysis) {
        panic!("the native engine refused a DIN plan: {e}");
    }
}

/// The self-attention encoder's ops against central differences: the
/// attention with two heads over rows of every kind (full, padded, one
/// step, none), with and without a dropout mask, and the masked mean over
/// a length longer than the steps it sums (a `max_seq_length` cut).
#[test]
fn self_attention_op_gradients() {
    let m = mask(&[4, 2, 1, 0], 4);
    let inputs = [r(&[4, 4, 6], 11), r(&[4, 4, 6], 12), r(&[4, 4, 6], 13)];
    check("multi-head attention", &inputs, &|x| {
        ops::multi_head_attention(&x[0], &x[1], &x[2], &m, 2, None)
    });
    let keep: Vec<f64> = randv(4 * 2 * 4 * 4, 14, 0.0)
        .iter()
        .map(|&u| if u < 0.4 { 1.0 } else { 0.0 })
        .collect();
    let keep = t64(&keep, &[4, 2, 4, 4]);
    check("multi-head attention with dropout", &inputs, &|x| {
        ops::multi_head_attention(&x[0], &x[1], &x[2], &m, 2, Some((&keep, 0.3)))
    });
    let cut = mask(&[3, 2, 1, 0], 2);
    let whole = mask(&[3, 2, 1, 0], 5);
    check("masked mean", &[r(&[4, 2, 3], 15)], &|x| {
        ops::masked_mean(&x[0], &cut, &whole)
    });
}

/// Self-attention over three steps by hand, with identity projections
/// (heads of width 2 and then of width 1) and an out-projection bias
/// `b = [0.5, -1]`. Row 0 has two steps, s1 = [1, 0] and s2 = [0, 2], and
/// one padded step; row 1 one step [3, 4]; row 2 none.
///
/// One head (scale 1/sqrt(2)): s1 attends to (s1, s2) with scores (1, 0)
/// / sqrt(2), weights (a, 1 - a), a = sigmoid(1/sqrt(2)), giving
/// [a, 2 (1 - a)]; s2 with scores (0, 4) / sqrt(2), weights (1 - c, c),
/// c = sigmoid(2 sqrt(2)), giving [1 - c, 2c]. The padded step's row is
/// zero (torch's NaN row, zeroed by tzrec), so it gets no bias; the two
/// valid rows plus b each, over the length 2: [(a - c) / 2 + 1, c - a].
/// Row 1: its one step attends to itself, [3, 4] + b over 1. Row 2: 0.
///
/// Two heads (scale 1): head 0 sees column 0, scores (1, 0) for s1 and
/// (0, 0) for s2: [sigmoid(1)] and [1/2]; head 1 sees column 1, scores
/// (0, 0) and (0, 4): [1] and [2 sigmoid(4)]; row 0 is then
/// [(sigmoid(1) + 1/2) / 2 + 0.5, (1 + 2 sigmoid(4)) / 2 - 1].
#[test]
fn tiny_self_attention_by_hand() {
    let s = t64(
        &[
            1.0, 0.0, 0.0, 2.0, 0.0, 0.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            0.0,
        ],
        &[3, 3, 2],
    );
    let m = mask(&[2, 1, 0], 3);
    let eye = t64(&[1.0, 0.0, 0.0, 1.0], &[2, 2]);
    let zero = t64(&[0.0, 0.0], &[2]);
    let b = t64(&[0.5, -1.0], &[2]);
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let run = |heads: usize| -> Vec<f64> {
        // query/key/value, then the in-projections: all the identity.
        let project = |x: &Tensor| {
            let y = ops::linear(x, &eye, Some(&zero)).unwrap();
            ops::linear(&y, &eye, Some(&zero)).unwrap()
        };
        let (q, k, v) = (project(&s), project(&s), project(&s));
        let att = ops::multi_head_attention(&q, &k, &v, &m, heads, None).unwrap();
        let att_rows = host(&att);
        assert_eq!(&att_rows[4..6], &[0.0, 0.0], "the padded step's row");
        let y = ops::linear(&att, &eye, Some(&b)).unwrap();
        host(&ops::masked_mean(&y, &m, &m).unwrap())
    };
    let (a, c) = (sig(1.0 / 2f64.sqrt()), sig(2.0 * 2f64.sqrt()));
    let one_head = [(a - c) / 2.0 + 1.0, c - a, 3.5, 3.0, 0.0, 0.0];
    let two_heads = [
        (sig(1.0) + 0.5) / 2.0 + 0.5,
        (1.0 + 2.0 * sig(4.0)) / 2.0 - 1.0,
        3.5,
        3.0,
        0.0,
        0.0,
    ];
    for (heads, want) in [(1, one_head), (2, two_heads)] {
        let got = run(heads);
        for (k, (x, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (x - w).abs() < 1e-12,
                "{heads} head(s), element {k}: {x} vs {w}"
            );
        }
    }
}

/// A self-attention encoder over a grouped sequence of an id and a raw
/// sub-feature (4 wide), with dropout on its weights and a
/// `max_seq_length` cut below the sequence_length, beside a plain feature.
pub(super) const SELF_ATTENTION_CONFIG: &str = r#"
data_config { batch_size: 4 label_fields: "clk" }
feature_configs { id_feature { feature_name: "user" num_buckets: 5 embedding_dim: 2 } }
feature_configs {
  sequence_feature {
    sequence_name: "seq"
    sequence_length: 3
    sequence_delim: ";"
    features { id_feature { feature_name: "cate" num_buckets: 6 embedding_dim: 3 } }
    features { raw_feature { feature_name: "price" } }
  }
}
model_config {
  feature_groups {
    group_name: "all"
    feature_names: "user"
    group_type: DEEP
    sequence_groups {
      group_name: "seq"
      feature_names: "seq__cate"
      feature_names: "seq__price"
    }
    sequence_encoders {
      self_attention_encoder { input: "seq" multihead_attn_dim: 6 num_heads: 2 dropout: 0.25 max_seq_length: 2 }
    }
  }
  simple_multi_task {
    task_towers { tower_name: "ctr" label_name: "clk" losses { binary_cross_entropy {} } }
  }
}
"#;

/// The self-attention plan: its ops, parameters as torch lays them out
/// (shapes, the zeroed in- and out-projection biases) and its width.
#[test]
fn self_attention_plan_shape_and_params() {
    let plan = crate::pipeline::build(SELF_ATTENTION_CONFIG, Default::default())
        .unwrap()
        .plan;
    let att = plan
        .ops
        .iter()
        .find(|o| o.kind == OpKind::MultiHeadAttention as i32)
        .expect("an attention op");
    assert_eq!((att.heads, att.ratio), (2, 0.25));
    // The steps are cut to max_seq_length 2; the mean divides by the
    // whole length (the uncut mask of 3 steps).
    let mean = plan
        .ops
        .iter()
        .find(|o| o.kind == OpKind::MaskedMean as i32)
        .expect("a masked mean");
    let shape = |v: u32| plan.values[v as usize].shape.clone();
    assert_eq!(shape(mean.inputs[0]), vec![-1, 2, 6]);
    assert_eq!(shape(mean.inputs[1]), vec![-1, 2]);
    assert_eq!(shape(mean.inputs[2]), vec![-1, 3]);
    let param = |suffix: &str| {
        plan.params
            .iter()
            .find(|p| p.name.ends_with(suffix))
            .unwrap_or_else(|| panic!("no parameter {suffix}"))
    };
    assert_eq!(param(".query.weight").shape, vec![6, 4]);
    assert_eq!(param(".multihead_attn.in_proj_k.weight").shape, vec![6, 6]);
    for zero in [
        ".multihead_attn.in_proj_q.bias",
        ".multihead_attn.in_proj_v.bias",
        ".multihead_attn.out_proj.bias",
    ] {
        let p = param(zero);
        assert!(p.data.iter().all(|&b| b == 0), "{zero} starts at zero");
    }
    // Xavier bound of the packed [18, 6] matrix: sqrt(6 / 24) = 0.5.
    let w = crate::ir::init::from_le_bytes(&param(".in_proj_q.weight").data);
    assert!(w.iter().all(|x| x.abs() <= 0.5) && w.iter().any(|x| x.abs() > 0.3));
    let tower_in = plan
        .ops
        .iter()
        .find(|o| o.name == "all.with_sequences")
        .map(|o| plan.values[o.output as usize].shape.clone());
    assert_eq!(tower_in, Some(vec![-1, 2 + 6]), "user, then the encoder");
}

/// Whole-model gradients of the self-attention plan (dropout on, one
/// fixed mask): every parameter and the gathered embedding rows against
/// central differences of the loss, over rows of 3, 1, 0 and 2 steps.
#[test]
fn self_attention_whole_model_gradients() {
    let plan = crate::pipeline::build(SELF_ATTENTION_CONFIG, Default::default())
        .unwrap()
        .plan;
    whole_model_gradients_of(plan, "seq:seq__cate", ".multihead_attn.");
}
