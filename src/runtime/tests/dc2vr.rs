//! DC2VR: the intervention op against central differences, the whole
//! model's gradients (every parameter, the trained matrices of the
//! orthogonal parametrizations included) against central differences of
//! the loss, and the native engine against the candle path.

use candle_core::{DType, Device, Tensor};

use super::gradcheck::{check, r};
use super::*;
use crate::runtime::exec::candle::ops;
use crate::runtime::model::Mode;
use crate::runtime::{loss, Trainer};

/// Three towers: "ctr" without an intervention, "cvr" intervened by
/// "ctr" (rank 3, the default dropout 0.1), "ctcvr" by both "ctr" and
/// "cvr" (the latter's intervened output), over a bottom MLP and MMoE.
pub(super) const DC2VR_CONFIG: &str = r#"
data_config { batch_size: 32 label_fields: "clk" label_fields: "buy" label_fields: "pay" }
feature_configs { id_feature { feature_name: "user" num_buckets: 40 embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "item" num_buckets: 60 embedding_dim: 6 } }
model_config {
  feature_groups { group_name: "all" feature_names: "user" feature_names: "item" group_type: DEEP }
  dc2vr {
    bottom_mlp { hidden_units: [12] }
    expert_mlp { hidden_units: [8] }
    num_expert: 2
    task_towers { tower_name: "ctr" label_name: "clk" mlp { hidden_units: [6] } losses { binary_cross_entropy {} } }
    task_towers {
      tower_name: "cvr" label_name: "buy" mlp { hidden_units: [5] }
      intervention_tower_names: "ctr" low_rank_dim: 3
      losses { binary_cross_entropy {} }
    }
    task_towers {
      tower_name: "ctcvr" label_name: "pay" mlp { hidden_units: [7] }
      intervention_tower_names: ["ctr", "cvr"] low_rank_dim: 4 dropout_ratio: 0.0
      losses { binary_cross_entropy {} }
    }
  }
}
"#;

fn dc2vr_plan() -> Plan {
    crate::pipeline::build(DC2VR_CONFIG, Default::default())
        .unwrap_or_else(|e| panic!("dc2vr compiles: {e:?}"))
        .plan
}

/// An orthogonal `[n, n]` base and a trained matrix near minus the
/// identity with a random strictly lower part.
fn parametrization(n: usize, rank: usize, seed: u64) -> (Tensor, Tensor) {
    let spec = crate::ir::graph::ParamSpec {
        name: format!("base{seed}"),
        shape: vec![n as u64, n as u64],
        init: crate::ir::graph::Init::Orthogonal,
        trainable: false,
        no_decay: true,
    };
    let q: Vec<f64> = crate::ir::init::materialize(&spec, seed)
        .into_iter()
        .map(f64::from)
        .collect();
    let mut x = randv(n * rank, seed, 0.0);
    for i in 0..rank {
        x[i * rank + i] = -1.3;
    }
    (t64(&x, &[n, rank]), t64(&q, &[n, n]))
}

/// The intervention against central differences in its input and both
/// trained matrices (the bases are fixed buffers; the source gets no
/// gradient, which the check sees as zero).
#[test]
fn intervention_op_gradients() {
    let (xb, qb) = parametrization(5, 2, 1);
    let (xs, qs) = parametrization(4, 2, 2);
    check("intervention", &[r(&[3, 5], 3), xb, xs], &|v| {
        ops::intervention(&v[0], &r(&[3, 4], 4), (&v[1], &qb), (&v[2], &qs))
    });
}

/// Whole-model gradients of the DC2VR plan against central differences,
/// one tower's loss at a time (dropout on, one fixed mask). An
/// intervention's source is detached, so the gradient tzrec trains with is
/// not the derivative of a loss through the source towers; each loss is
/// checked for the parameters its sources do not depend on: the "ctr"
/// loss (no intervention) for every parameter, the "cvr" and "ctcvr"
/// losses for their own towers' parameters (task MLP, gate, both trained
/// matrices of the intervention, logits).
#[test]
fn dc2vr_whole_model_gradients() {
    let plan = dc2vr_plan();
    let batch = super::runs::random_batch(&plan, 6, 3);
    let dev = Device::Cpu;
    let mut tr = Trainer::with_dtype(&plan, 3, &dev, DType::F64).unwrap();
    assert!(!tr.model.uses_native());
    let data = plan.data.clone().unwrap();
    let mode = Mode::Train { seed: 3, step: 0 };
    let vars = super::trainable_vars(&tr.model);
    let h = 1e-5;
    let mut checked = 0;
    for (k, task) in plan.tasks.iter().enumerate() {
        let own = format!("{}.", task.tower_name);
        let loss = |m: &mut crate::runtime::Model| -> Tensor {
            let fwd = m.forward(&batch, mode).unwrap();
            let t = loss::task_targets(&data, task, &batch, DType::F64, &dev).unwrap();
            loss::task_loss(task, &fwd.logits[k], &t).unwrap()
        };
        let grads = loss(&mut tr.model).backward().unwrap();
        for (i, var) in &vars {
            let name = &plan.params[*i].name;
            if k > 0 && !name.starts_with(&own) {
                continue;
            }
            let base = host(var.as_tensor());
            let g = grads
                .get(var.as_tensor())
                .map_or_else(|| vec![0.0; base.len()], host);
            let dims = var.dims().to_vec();
            let original = name.ends_with(".original");
            let every = if original { 1 } else { (base.len() / 5).max(1) };
            for e in (0..base.len()).step_by(every) {
                // A trained matrix's diagonal enters only truncated (a
                // step function at -1, where it starts): no gradient.
                if original && e / dims[1] == e % dims[1] {
                    continue;
                }
                let mut at = |delta: f64| {
                    let mut v = base.clone();
                    v[e] += delta;
                    var.set(&t64(&v, &dims)).unwrap();
                    let s = host(&loss(&mut tr.model))[0];
                    var.set(&t64(&base, &dims)).unwrap();
                    s
                };
                let fd = (at(h) - at(-h)) / (2.0 * h);
                assert!(
                    (fd - g[e]).abs() <= 1e-6 * (1.0 + fd.abs()),
                    "{} loss, param {name} element {e}: autograd {} vs finite difference {fd}",
                    task.tower_name,
                    g[e]
                );
                if original && k > 0 {
                    checked += 1;
                }
            }
        }
    }
    // Every off-diagonal element of cvr's (5 x 3, 6 x 3) and ctcvr's
    // (7 x 4, 11 x 4) trained matrices.
    let want: usize = [(5, 3), (6, 3), (7, 4), (11, 4)]
        .iter()
        .map(|&(n, r)| n * r - r)
        .sum();
    assert_eq!(
        checked, want,
        "every off-diagonal element of the 4 trained matrices"
    );
}

/// No gradient reaches an intervention's source (tzrec detaches it),
/// while its input and both trained matrices get theirs.
#[test]
fn intervention_source_gets_no_gradient() {
    let (xb, qb) = parametrization(5, 2, 1);
    let (xs, qs) = parametrization(4, 2, 2);
    let vars: Vec<candle_core::Var> = [r(&[3, 5], 3), r(&[3, 4], 4), xb, xs]
        .iter()
        .map(|t| candle_core::Var::from_tensor(t).unwrap())
        .collect();
    let y = ops::intervention(
        vars[0].as_tensor(),
        vars[1].as_tensor(),
        (vars[2].as_tensor(), &qb),
        (vars[3].as_tensor(), &qs),
    )
    .unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    let nonzero = |v: &candle_core::Var| {
        grads
            .get(v.as_tensor())
            .is_some_and(|g| host(g).iter().any(|&x| x != 0.0))
    };
    assert!(!nonzero(&vars[1]), "the source is detached");
    for (k, v) in vars.iter().enumerate().filter(|(k, _)| *k != 1) {
        assert!(nonzero(v), "input {k} has a gradient");
    }
}

/// The plan's parameters as torch registers them: each trained matrix
/// is minus the identity, each base a fixed orthogonal buffer, so the
/// weights start as the bases' first columns; "ctcvr" reads 6 + 5
/// source columns.
#[test]
fn dc2vr_plan_parameters() {
    let plan = dc2vr_plan();
    let find = |name: &str| {
        plan.params
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no parameter {name}"))
    };
    let x = find("ctcvr.intervention.source_rotate_layer.original");
    assert_eq!(x.shape, vec![11, 4]);
    assert!(x.trainable);
    let v = crate::ir::init::from_le_bytes(&x.data);
    for (e, &a) in v.iter().enumerate() {
        let want = if e / 4 == e % 4 { -1.0 } else { 0.0 };
        assert_eq!(a, want, "element {e}");
    }
    let q = find("ctcvr.intervention.source_rotate_layer.base");
    assert_eq!(q.shape, vec![11, 11]);
    assert!(!q.trainable);
    let q = crate::ir::init::from_le_bytes(&q.data);
    for a in 0..11 {
        for b in 0..11 {
            let dot: f32 = (0..11).map(|j| q[j * 11 + a] * q[j * 11 + b]).sum();
            let want = if a == b { 1.0 } else { 0.0 };
            assert!((dot - want).abs() < 1e-5, "base columns {a}, {b}: {dot}");
        }
    }
    let kinds: Vec<i32> = plan.ops.iter().map(|o| o.kind).collect();
    let interventions = kinds
        .iter()
        .filter(|&&k| k == OpKind::Intervention as i32)
        .count();
    assert_eq!(interventions, 2, "ctr has no low_rank_dim");
    // cvr's default dropout_ratio 0.1 follows its intervention.
    let drop = plan
        .ops
        .iter()
        .find(|o| o.kind == OpKind::Dropout as i32 && o.name.starts_with("cvr.intervention"));
    assert_eq!(drop.map(|o| o.ratio), Some(0.1));
}
