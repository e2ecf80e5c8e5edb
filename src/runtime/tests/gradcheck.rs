//! Finite-difference gradient checks, in f64, for every op kind, the
//! embedding lookup, every loss, and a whole model that uses them all.

use candle_core::{DType, Device, Tensor, Var};

use super::*;
use crate::runtime::embedding::{lookup, Table};
use crate::runtime::exec::candle::ops;
use crate::runtime::model::Mode;
use crate::runtime::{loss, Trainer};

type F<'a> = &'a dyn Fn(&[Tensor]) -> candle_core::Result<Tensor>;

/// Compares autograd against central differences of `sum(f(inputs) * P)`
/// for a fixed random projection `P`.
pub(super) fn check(name: &str, inputs: &[Tensor], f: F<'_>) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let vt: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&vt).unwrap();
    let proj = t64(&randv(y.elem_count(), 99, 0.0), y.dims());
    let scalar = |xs: &[Tensor]| -> f64 {
        (f(xs).unwrap() * &proj)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let grads = (y * &proj).unwrap().sum_all().unwrap().backward().unwrap();
    let h = 1e-5;
    for (k, input) in inputs.iter().enumerate() {
        let g = grads
            .get(vars[k].as_tensor())
            .map(host)
            .unwrap_or_else(|| vec![0.0; input.elem_count()]);
        let base = host(input);
        let stride = (base.len() / 40).max(1);
        for i in (0..base.len()).step_by(stride) {
            let eval = |delta: f64| {
                let mut v = base.clone();
                v[i] += delta;
                let mut xs: Vec<Tensor> = inputs.to_vec();
                xs[k] = t64(&v, input.dims());
                scalar(&xs)
            };
            let fd = (eval(h) - eval(-h)) / (2.0 * h);
            assert!(
                (fd - g[i]).abs() <= 1e-6 * (1.0 + fd.abs()),
                "{name}: input {k} element {i}: autograd {} vs finite difference {fd}",
                g[i]
            );
        }
    }
}

pub(super) fn r(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    t64(&randv(n, seed, 0.05), shape)
}

#[test]
fn linear_and_batched_linear() {
    check(
        "linear",
        &[r(&[4, 3], 1), r(&[5, 3], 2), r(&[5], 3)],
        &|x| ops::linear(&x[0], &x[1], Some(&x[2])),
    );
    check("linear 3d", &[r(&[2, 4, 3], 1), r(&[5, 3], 2)], &|x| {
        ops::linear(&x[0], &x[1], None)
    });
    check(
        "batched linear shared input",
        &[r(&[4, 3], 4), r(&[2, 5, 3], 5), r(&[2, 5], 6)],
        &|x| ops::batched_linear(&x[0], &x[1], Some(&x[2])),
    );
    check(
        "batched linear per expert",
        &[r(&[2, 4, 3], 7), r(&[2, 5, 3], 8), r(&[2, 5], 9)],
        &|x| ops::batched_linear(&x[0], &x[1], Some(&x[2])),
    );
    // Batched equals per-expert linears.
    let (x, w, b) = (r(&[4, 3], 1), r(&[2, 5, 3], 2), r(&[2, 5], 3));
    let y = ops::batched_linear(&x, &w, Some(&b)).unwrap();
    for e in 0..2 {
        let ye = ops::linear(&x, &w.get(e).unwrap(), Some(&b.get(e).unwrap())).unwrap();
        let d = (y.get(e).unwrap() - ye)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(d.to_scalar::<f64>().unwrap() < 1e-12);
    }
}

#[test]
fn norms() {
    for (shape, pshape, axis) in [
        (&[6usize, 3][..], &[3usize][..], 0usize),
        (&[2, 6, 3], &[2, 3], 1),
    ] {
        check(
            "batch norm train",
            &[r(shape, 1), r(pshape, 2), r(pshape, 3)],
            &|x| {
                let (m, v) = ops::batch_moments(&x[0], axis)?;
                ops::batch_norm_apply(&x[0], &m, &v, &x[1], &x[2], axis, 1e-3)
            },
        );
        let rm = r(pshape, 4).unsqueeze(axis).unwrap();
        let rv = (r(pshape, 5).abs().unwrap() + 0.5)
            .unwrap()
            .unsqueeze(axis)
            .unwrap();
        check(
            "batch norm eval",
            &[r(shape, 1), r(pshape, 2), r(pshape, 3)],
            &|x| ops::batch_norm_apply(&x[0], &rm, &rv, &x[1], &x[2], axis, 1e-3),
        );
    }
    check(
        "layer norm",
        &[r(&[4, 5], 1), r(&[5], 2), r(&[5], 3)],
        &|x| ops::layer_norm(&x[0], &x[1], &x[2], 1e-5),
    );
    check(
        "layer norm 3d",
        &[r(&[2, 4, 5], 1), r(&[5], 2), r(&[5], 3)],
        &|x| ops::layer_norm(&x[0], &x[1], &x[2], 1e-5),
    );
}

#[test]
fn activations() {
    use crate::proto::plan::Activation as A;
    for act in [
        A::ActNone,
        A::Relu,
        A::Sigmoid,
        A::Tanh,
        A::LeakyRelu,
        A::Gelu,
        A::Silu,
        A::Elu,
    ] {
        check(
            &format!("{act:?}"),
            &[(r(&[4, 5], 11) * 3.0).unwrap()],
            &|x| ops::activation(&x[0], act, 0.0, None),
        );
        check(&format!("{act:?} alpha"), &[r(&[4, 5], 12)], &|x| {
            ops::activation(&x[0], act, 0.2, None)
        });
    }
    check("prelu", &[r(&[4, 5], 13), r(&[5], 14)], &|x| {
        ops::activation(&x[0], A::Prelu, 0.0, Some(&x[1]))
    });
    check("prelu shared", &[r(&[4, 5], 13), r(&[1], 14)], &|x| {
        ops::activation(&x[0], A::Prelu, 0.0, Some(&x[1]))
    });
    // Values against the definitions.
    let x = t64(&[-2.0, -0.5, 0.5, 3.0], &[4]);
    let check_vals = |act: A, alpha: f32, want: &[f64]| {
        let y = host(&ops::activation(&x, act, alpha, None).unwrap());
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{act:?}: {y:?} vs {want:?}");
        }
    };
    check_vals(A::LeakyRelu, 0.0, &[-0.02, -0.005, 0.5, 3.0]);
    check_vals(
        A::Elu,
        0.0,
        &[(-2f64).exp() - 1.0, (-0.5f64).exp() - 1.0, 0.5, 3.0],
    );
    check_vals(
        A::Sigmoid,
        0.0,
        &[
            1.0 / (1.0 + 2f64.exp()),
            1.0 / (1.0 + 0.5f64.exp()),
            1.0 / (1.0 + (-0.5f64).exp()),
            1.0 / (1.0 + (-3f64).exp()),
        ],
    );
    check_vals(
        A::Gelu,
        0.0,
        &[
            -0.04550026389635842,
            -0.15426876936299347,
            0.34573123063700656,
            2.9959502,
        ],
    );
}

/// TorchEasyRec's Dice: the gate alone, and the whole activation as plec
/// lowers it (affine-free batch norm in training, sigmoid, gate), then its
/// values against the formula computed here by hand.
#[test]
fn dice() {
    check(
        "dice gate",
        &[r(&[4, 5], 21), r(&[4, 5], 22), r(&[5], 23)],
        &|x| ops::dice_gate(&x[0], &x[1], &x[2]),
    );
    let (ones, zeros) = (t64(&[1.0; 5], &[5]), t64(&[0.0; 5], &[5]));
    check(
        "dice",
        &[(r(&[6, 5], 24) * 4.0).unwrap(), r(&[5], 25)],
        &|x| {
            let (m, v) = ops::batch_moments(&x[0], 0)?;
            let normed = ops::batch_norm_apply(&x[0], &m, &v, &ones, &zeros, 0, 1e-5)?;
            let p = ops::activation(&normed, crate::proto::plan::Activation::Sigmoid, 0.0, None)?;
            ops::dice_gate(&x[0], &p, &x[1])
        },
    );
    // Two rows, one channel: mean 1, biased variance 1, so the normed
    // values are -1 and 1 (eps aside) and p = sigmoid(-1), sigmoid(1).
    let x = t64(&[0.0, 2.0], &[2, 1]);
    let (m, v) = ops::batch_moments(&x, 0).unwrap();
    let one = t64(&[1.0], &[1]);
    let normed = ops::batch_norm_apply(&x, &m, &v, &one, &t64(&[0.0], &[1]), 0, 0.0).unwrap();
    let p = ops::activation(&normed, crate::proto::plan::Activation::Sigmoid, 0.0, None).unwrap();
    let y = host(&ops::dice_gate(&x, &p, &t64(&[0.25], &[1])).unwrap());
    let s = 1.0 / (1.0 + (-1.0f64).exp());
    // Row 0 is 0 whatever the gate; row 1: 2 * (s + 0.25 * (1 - s)).
    assert!(y[0].abs() < 1e-12, "{y:?}");
    assert!((y[1] - 2.0 * (s + 0.25 * (1.0 - s))).abs() < 1e-12, "{y:?}");
}

#[test]
fn dropout_shape_ops_softmax_gate() {
    let mask = t64(&[1.0, 0.0, 1.0, 1.0, 0.0, 1.0], &[2, 3]);
    check("dropout", &[r(&[2, 3], 1)], &|x| {
        ops::dropout_with_mask(&x[0], &mask, 0.25)
    });
    let y = host(&ops::dropout_with_mask(&t64(&[1.0; 6], &[2, 3]), &mask, 0.25).unwrap());
    assert!((y[0] - 4.0 / 3.0).abs() < 1e-12 && y[1] == 0.0);
    check("concat", &[r(&[2, 3], 1), r(&[2, 2], 2)], &|x| {
        Tensor::cat(&[&x[0], &x[1]], 1)
    });
    check("slice", &[r(&[2, 5], 1)], &|x| x[0].narrow(1, 1, 3));
    check("stack", &[r(&[2, 3], 1), r(&[2, 3], 2)], &|x| {
        Tensor::stack(&[&x[0], &x[1]], 0)
    });
    check("softmax last", &[r(&[3, 4], 1)], &|x| {
        ops::softmax(&x[0], 1)
    });
    check("softmax first", &[r(&[3, 4], 2)], &|x| {
        ops::softmax(&x[0], 0)
    });
    check("gate mix", &[r(&[4, 3], 1), r(&[3, 4, 2], 2)], &|x| {
        ops::gate_mix(&x[0], &x[1])
    });
    // gate_mix against its definition.
    let (w, e) = (r(&[4, 3], 1), r(&[3, 4, 2], 2));
    let y = host(&ops::gate_mix(&w, &e).unwrap());
    let (hw, he) = (host(&w), host(&e));
    for b in 0..4 {
        for d in 0..2 {
            let want: f64 = (0..3).map(|k| hw[b * 3 + k] * he[k * 8 + b * 2 + d]).sum();
            assert!((y[b * 2 + d] - want).abs() < 1e-12);
        }
    }
    // Softmax of huge values stays finite.
    let big = host(&ops::softmax(&t64(&[1000.0, 0.0, -1000.0], &[1, 3]), 1).unwrap());
    assert_eq!(big, vec![1.0, 0.0, 0.0]);
}

#[test]
fn pepnet_ops() {
    check("mul", &[r(&[3, 4], 1), r(&[3, 4], 2)], &|x| {
        ops::mul(&x[0], &x[1], 2.0)
    });
    let (a, b) = (r(&[3, 4], 1), r(&[3, 4], 2));
    let y = host(&ops::mul(&a, &b, 2.0).unwrap());
    for ((y, a), b) in y.iter().zip(host(&a)).zip(host(&b)) {
        assert!((y - 2.0 * a * b).abs() < 1e-15);
    }
    // STOP_GRADIENT is candle's detach: the value passes, the gradient
    // does not (only the second term of 2 * detach(x) + x trains x).
    let v = Var::from_tensor(&r(&[2, 3], 3)).unwrap();
    let x = v.as_tensor();
    let y = ((x.detach() * 2.0).unwrap() + x).unwrap();
    assert_eq!(host(&y), host(&(x * 3.0).unwrap()));
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(host(g.get(x).unwrap()), vec![1.0; 6]);
}

/// Variational dropout against a literal transcription of tzrec's
/// `VariationalDropout` in f64, and its gradients.
#[test]
fn variational_dropout() {
    let widths = [2usize, 1, 3];
    let columns: Vec<u32> = widths
        .iter()
        .enumerate()
        .flat_map(|(f, &w)| std::iter::repeat_n(f as u32, w))
        .collect();
    let columns = Tensor::from_vec(columns, 6, &Device::Cpu).unwrap();
    let noise: Vec<f64> = randv(9, 7, 0.0).iter().map(|u| (u + 1.0) / 2.0).collect();
    let u = t64(&noise, &[3, 3]);
    let (x, p) = (r(&[3, 6], 4), r(&[3], 5));
    check(
        "variational dropout, training",
        &[x.clone(), p.clone()],
        &|t| ops::variational_dropout(&t[0], &t[1], &columns, Some(&u)),
    );
    check(
        "variational dropout, evaluation",
        &[x.clone(), p.clone()],
        &|t| ops::variational_dropout(&t[0], &t[1], &columns, None),
    );
    check(
        "variational dropout penalty",
        std::slice::from_ref(&p),
        &|t| ops::variational_dropout_penalty(&t[0], 0.01, 4),
    );
    let eps = f64::from(f32::EPSILON);
    let sig = |z: f64| 1.0 / (1.0 + (-z).exp());
    let (hx, hp) = (host(&x), host(&p));
    let train = host(&ops::variational_dropout(&x, &p, &columns, Some(&u)).unwrap());
    let eval = host(&ops::variational_dropout(&x, &p, &columns, None).unwrap());
    let feature_of = [0, 0, 1, 2, 2, 2];
    for row in 0..3 {
        for col in 0..6 {
            let f = feature_of[col];
            let (dp, un) = (sig(hp[f]), noise[row * 3 + f]);
            let approx =
                (dp + eps).ln() - (1.0 - dp + eps).ln() + (un + eps).ln() - (1.0 - un + eps).ln();
            let want = hx[row * 6 + col] * (1.0 - sig(approx / 0.1));
            assert!((train[row * 6 + col] - want).abs() < 1e-12, "{row},{col}");
            let want = hx[row * 6 + col] * (1.0 - dp);
            assert!((eval[row * 6 + col] - want).abs() < 1e-12, "{row},{col}");
        }
    }
    let pen = host(&ops::variational_dropout_penalty(&p, 0.01, 4).unwrap())[0];
    let want: f64 = hp.iter().map(|&l| 0.01 / 4.0 * (1.0 - sig(l))).sum();
    assert!((pen - want).abs() < 1e-9, "{pen} vs {want}");
}

#[test]
fn losses() {
    let y = t64(&[1.0, 0.0, 1.0, 0.0], &[4]);
    let logits = || r(&[4], 21);
    check("bce", &[logits()], &|x| loss::bce_with_logits(&x[0], &y));
    check("focal", &[logits()], &|x| {
        loss::binary_focal(&x[0], &y, 2.0, 0.25)
    });
    check("focal gamma .5", &[logits()], &|x| {
        loss::binary_focal(&x[0], &y, 0.5, -1.0)
    });
    check("l2", &[logits()], &|x| loss::l2(&x[0], &y));
    let onehot = t64(&[1., 0., 0., 0., 0., 1., 0., 1., 0.], &[3, 3]);
    check("softmax ce", &[r(&[3, 3], 22)], &|x| {
        loss::softmax_cross_entropy(&x[0], &onehot)
    });
    check("bce at 0", &[t64(&[0.0, 0.0, 0.0, 0.0], &[4])], &|x| {
        loss::bce_with_logits(&x[0], &y)
    });
}

#[test]
fn embedding_lookup() {
    let dev = Device::Cpu;
    let specs = vec![
        id_feature("a", 0, 3, Pooling::Sum),
        id_feature("b", 0, 3, Pooling::Mean),
    ];
    let inputs = vec![ids(&[&[1, 2, 1], &[], &[4]]), ids(&[&[2, 0], &[3], &[]])];
    let table0 = r(&[5, 3], 31);
    let pooled = |table: &Tensor, train: bool| {
        let t = Table {
            name: "t".into(),
            num_rows: 5,
            dim: 3,
            weight: table.clone(),
        };
        lookup(&[t], &specs, &[0, 1], &inputs, 3, train, &dev).unwrap()
    };
    let proj = t64(&randv(18, 5, 0.0), &[3, 6]);
    let scalar = |l: &crate::runtime::embedding::Lookup| -> Tensor {
        let cat = Tensor::cat(
            &[l.pooled[0].as_ref().unwrap(), l.pooled[1].as_ref().unwrap()],
            1,
        )
        .unwrap();
        (cat * &proj).unwrap().sum_all().unwrap()
    };
    let l = pooled(&table0, true);
    assert_eq!(l.gathered.len(), 1);
    assert_eq!(l.gathered[0].host_ids, vec![1, 2, 4, 0, 3]);
    let grads = scalar(&l).backward().unwrap();
    let g = host(grads.get(l.gathered[0].rows.as_tensor()).unwrap());
    // Train and eval lookups agree.
    let e = pooled(&table0, false);
    assert_eq!(host(&scalar(&l)), host(&scalar(&e)));
    // Empty bags pool to zeros.
    assert_eq!(
        host(&e.pooled[0].as_ref().unwrap().get(1).unwrap()),
        vec![0.0; 3]
    );
    let base = host(&table0);
    let h = 1e-5;
    for (u, &row) in l.gathered[0].host_ids.iter().enumerate() {
        for d in 0..3 {
            let at = |delta: f64| {
                let mut v = base.clone();
                v[row as usize * 3 + d] += delta;
                host(&scalar(&pooled(&t64(&v, &[5, 3]), false)))[0]
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            assert!(
                (fd - g[u * 3 + d]).abs() < 1e-7,
                "row {row} dim {d}: {fd} vs {}",
                g[u * 3 + d]
            );
        }
    }
}

/// Whole-model check: every trainable parameter and the gathered embedding
/// rows of `complex_plan`, through the executor and both task losses.
#[test]
fn whole_model() {
    let plan = complex_plan(3, 0.3);
    let batch = complex_batch(6, 4);
    let dev = Device::Cpu;
    let mut tr = Trainer::with_dtype(&plan, 9, &dev, DType::F64).unwrap();
    let data = plan.data.clone().unwrap();
    let mode = Mode::Train { seed: 9, step: 0 };
    let total =
        |m: &mut crate::runtime::Model| -> (Tensor, Vec<crate::runtime::embedding::Gathered>) {
            let fwd = m.forward(&batch, mode).unwrap();
            let mut tot: Option<Tensor> = None;
            for (task, logits) in plan.tasks.iter().zip(&fwd.logits) {
                let t = loss::task_targets(&data, task, &batch, DType::F64, &dev).unwrap();
                let l = loss::task_loss(task, logits, &t).unwrap();
                tot = Some(match tot {
                    Some(a) => (a + l).unwrap(),
                    None => l,
                });
            }
            (tot.unwrap(), fwd.gathered)
        };
    let (l0, gathered) = total(&mut tr.model);
    let grads = l0.backward().unwrap();
    let h = 1e-5;
    let vars = super::trainable_vars(&tr.model);
    for (i, var) in &vars {
        let g = host(
            grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no grad for {}", plan.params[*i].name)),
        );
        let base = host(var.as_tensor());
        let dims = var.dims().to_vec();
        for k in (0..base.len()).step_by((base.len() / 6).max(1)) {
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
    for ga in &gathered {
        let g = host(grads.get(ga.rows.as_tensor()).unwrap());
        let dim = tr.model.tables()[ga.table].dim;
        let base_t = tr.model.tables()[ga.table].weight.clone();
        let base = host(&base_t);
        for (u, &row) in ga.host_ids.iter().enumerate().take(4) {
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
                    (fd - g[u * dim + d]).abs() <= 1e-6 * (1.0 + fd.abs()),
                    "table {} row {row} dim {d}: autograd {} vs finite difference {fd}",
                    ga.table,
                    g[u * dim + d]
                );
            }
        }
    }
}
