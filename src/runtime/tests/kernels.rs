//! Kernel-level benchmarks on the PLE example's shapes (ignored by default:
//! `cargo test --release --lib runtime::tests::kernels -- --ignored
//! --nocapture`), and tests of the fast kernels against the plain candle
//! path on random inputs.

use candle_core::{Device, Tensor};

use crate::runtime::exec::candle::ops;

/// GFLOP/s of `f` doing `flops` per call: best of 5 rounds of `reps` calls.
fn gflops(flops: f64, reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        for _ in 0..reps {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    flops / best / 1e9
}

#[test]
#[ignore = "benchmark: cargo test --release --lib runtime::tests::kernels::bench_gemm_shapes -- --ignored --nocapture"]
fn bench_gemm_shapes() {
    let dev = Device::Cpu;
    for b in [1024usize, 8192] {
        let x = Tensor::randn(0f32, 1.0, (b, 256), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (6158, 256), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 6158, &dev).unwrap();
        let f = 2.0 * (b * 256 * 6158) as f64;
        let g = gflops(f, 3, || {
            ops::linear(&x, &w, Some(&bias)).unwrap();
        });
        eprintln!("batch {b}: wide linear 256->6158: {g:.1} GFLOP/s");
        let x = Tensor::randn(0f32, 1.0, (6, b, 1024), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (6, 512, 1024), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, (6, 512), &dev).unwrap();
        let f = 2.0 * (6 * b * 1024 * 512) as f64;
        let g = gflops(f, 3, || {
            ops::batched_linear(&x, &w, Some(&bias)).unwrap();
        });
        eprintln!("batch {b}: batched linear 6x 1024->512: {g:.1} GFLOP/s");
        // The backward of the wide layer: dW = dY^T X.
        let dy = Tensor::randn(0f32, 1.0, (b, 6158), &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (b, 256), &dev).unwrap();
        let f = 2.0 * (b * 256 * 6158) as f64;
        let g = gflops(f, 3, || {
            dy.t().unwrap().matmul(&x).unwrap();
        });
        eprintln!("batch {b}: dW = dY^T X (6158x{b}x256): {g:.1} GFLOP/s");
    }
}

/// The fused CPU Adam/AdamW kernel agrees with the tensor formulation on
/// random parameters and gradients over several steps (relative 1e-5: the
/// same f32 arithmetic, in a different association order).
#[test]
fn fused_adam_matches_tensor_path() {
    use crate::proto::plan::{Optimizer, OptimizerKind};
    use crate::runtime::optim::dense::DenseOptimizer;
    use candle_core::Var;

    let dev = Device::Cpu;
    for (kind, wd) in [
        (OptimizerKind::Adam, 0.0),
        (OptimizerKind::Adam, 0.01),
        (OptimizerKind::Adamw, 0.01),
    ] {
        let cfg = Optimizer {
            kind: kind as i32,
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: wd,
            ..Default::default()
        };
        // 40 000 elements: several parallel chunks and a ragged last one.
        let init = Tensor::randn(0f32, 1.0, (200, 200), &dev).unwrap();
        let a = Var::from_tensor(&init.copy().unwrap()).unwrap();
        let b = Var::from_tensor(&init.copy().unwrap()).unwrap();
        let mut fused = DenseOptimizer::new(&cfg, 1).unwrap();
        let mut plain = DenseOptimizer::new(&cfg, 1).unwrap();
        plain.set_fused(false);
        for step in 0..4 {
            let g = Tensor::randn(0f32, 1.0, (200, 200), &dev).unwrap();
            let lr = 0.01 * (step + 1) as f64;
            for (opt, var) in [(&mut fused, &a), (&mut plain, &b)] {
                // d/dp sum(p * g) = g.
                let grads = (var.as_tensor() * &g)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                opt.step(&[(0, var, false)], &grads, lr).unwrap();
            }
        }
        let diff = (a.as_tensor() - b.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let moved = (a.as_tensor() - &init)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(moved > 0.01, "{kind:?}: the parameters did not move");
        assert!(
            diff <= 1e-5,
            "{kind:?} wd {wd}: fused and tensor Adam differ by {diff}"
        );
    }
}

/// The strided view that replaces a STACK of consecutive slices (see
/// `model::StackOfSlices`) equals `Tensor::stack` of the slices, values and
/// gradients, exactly (both only move numbers).
#[test]
fn stack_of_slices_view_matches_stack() {
    use candle_core::Var;

    let dev = Device::Cpu;
    let (b, k, len, start) = (5usize, 3usize, 4usize, 2usize);
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, start + k * len + 1), &dev).unwrap())
        .unwrap();
    let r = Tensor::randn(0f32, 1.0, (k, b, len), &dev).unwrap();
    let slices: Vec<Tensor> = (0..k)
        .map(|i| x.as_tensor().narrow(1, start + i * len, len).unwrap())
        .collect();
    let plain = Tensor::stack(&slices, 0).unwrap();
    let view = x
        .as_tensor()
        .narrow(1, start, k * len)
        .unwrap()
        .reshape((b, k, len))
        .unwrap()
        .transpose(0, 1)
        .unwrap()
        .contiguous()
        .unwrap();
    let max_diff = |a: &Tensor, b: &Tensor| {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert_eq!(max_diff(&plain, &view), 0.0);
    let g1 = (&plain * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g2 = (&view * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let (g1, g2) = (
        g1.get(x.as_tensor()).unwrap().clone(),
        g2.get(x.as_tensor()).unwrap().clone(),
    );
    assert_eq!(max_diff(&g1, &g2), 0.0);
}

/// The fused bias+relu kernel equals broadcast add + relu on random inputs,
/// plain and batched: the output and the input gradient exactly, the bias
/// gradient within 1e-4 relative (a column sum in a different order).
#[test]
fn bias_relu_matches_plain_ops() {
    use crate::runtime::exec::candle::fused::{bias_relu, fusable, plain_bias_relu};
    use candle_core::Var;

    let dev = Device::Cpu;
    // Rows not a multiple of the kernel's rows per task, and groups.
    for (ydims, bdims) in [
        (vec![300usize, 37], vec![37usize]),
        (vec![3, 130, 20], vec![3, 20]),
    ] {
        let y =
            Var::from_tensor(&Tensor::randn(0f32, 1.0, ydims.as_slice(), &dev).unwrap()).unwrap();
        let b =
            Var::from_tensor(&Tensor::randn(0f32, 1.0, bdims.as_slice(), &dev).unwrap()).unwrap();
        assert!(fusable(y.as_tensor(), b.as_tensor()));
        let r = Tensor::randn(0f32, 1.0, ydims.as_slice(), &dev).unwrap();
        let fused = bias_relu(y.as_tensor(), b.as_tensor()).unwrap();
        let plain = plain_bias_relu(y.as_tensor(), b.as_tensor()).unwrap();
        let diff = |a: &Tensor, c: &Tensor| {
            (a - c)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert_eq!(diff(&fused, &plain), 0.0);
        let gf = (&fused * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gp = (&plain * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let dy = diff(
            gf.get(y.as_tensor()).unwrap(),
            gp.get(y.as_tensor()).unwrap(),
        );
        assert_eq!(dy, 0.0, "input gradients differ");
        let (bf, bp) = (
            gf.get(b.as_tensor()).unwrap(),
            gp.get(b.as_tensor()).unwrap(),
        );
        let scale = bp
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .max(1.0);
        assert!(diff(bf, bp) <= 1e-4 * scale, "bias gradients differ");
    }
}

/// The fused CPU sparse kernel agrees with the tensor formulation for every
/// sparse rule, with and without weight decay, over several steps that
/// revisit rows, and leaves untouched rows as they were.
#[test]
fn fused_sparse_step_matches_tensor_path() {
    use crate::proto::plan::{EmbeddingTable, Optimizer, OptimizerKind};
    use crate::runtime::embedding::{Gathered, Table};
    use crate::runtime::optim::sparse::SparseOptimizer;
    use candle_core::Var;

    let dev = Device::Cpu;
    let table_plan = EmbeddingTable {
        name: "t".into(),
        num_rows: 50,
        dim: 4,
        init_seed: 3,
        ..Default::default()
    };
    for kind in [
        OptimizerKind::Sgd,
        OptimizerKind::Adagrad,
        OptimizerKind::RowwiseAdagrad,
        OptimizerKind::Adam,
        OptimizerKind::Adamw,
    ] {
        for wd in [0.0, 0.05] {
            let cfg = Optimizer {
                kind: kind as i32,
                lr: 0.1,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: wd,
                initial_accumulator_value: 0.1,
                ..Default::default()
            };
            let mut tables: Vec<Vec<Table>> = (0..3)
                .map(
                    |_| vec![Table::from_plan(&table_plan, candle_core::DType::F32, &dev).unwrap()],
                )
                .collect();
            let mut fused = SparseOptimizer::new(&cfg, 1).unwrap();
            let mut plain = SparseOptimizer::new(&cfg, 1).unwrap();
            plain.set_fused(false);
            // The fused kernel's state allocated before the first step (as a
            // training run does) rather than at it.
            let mut ahead = SparseOptimizer::new(&cfg, 1).unwrap();
            ahead.allocate_state(&tables[2]);
            for step in 0..4u32 {
                let ids: Vec<u32> = vec![step, 7, 20 + step, 49];
                let g = Tensor::randn(0f32, 1.0, (4, 4), &dev).unwrap();
                for (opt, t) in [(&mut fused, 0), (&mut plain, 1), (&mut ahead, 2)] {
                    let ts = &mut tables[t];
                    let idx = Tensor::from_slice(&ids, 4, &dev).unwrap();
                    let rows =
                        Var::from_tensor(&ts[0].weight.index_select(&idx, 0).unwrap()).unwrap();
                    let grads = (rows.as_tensor() * &g)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .backward()
                        .unwrap();
                    let gathered = [Gathered {
                        table: 0,
                        ids: idx,
                        host_ids: ids.clone(),
                        rows,
                    }];
                    opt.step(ts, &gathered, &grads, 0.1).unwrap();
                }
            }
            let values = |t: &Table| t.weight.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let (a, b, c) = (
                values(&tables[0][0]),
                values(&tables[1][0]),
                values(&tables[2][0]),
            );
            assert_eq!(
                a, c,
                "{kind:?} wd {wd}: state allocated ahead changed the update"
            );
            assert_eq!(
                fused.export().unwrap(),
                ahead.export().unwrap(),
                "{kind:?} wd {wd}: state allocated ahead differs after the steps"
            );
            let diff = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(
                diff <= 1e-5,
                "{kind:?} wd {wd}: fused and tensor paths differ by {diff}"
            );
            let init =
                values(&Table::from_plan(&table_plan, candle_core::DType::F32, &dev).unwrap());
            assert_eq!(
                a[10 * 4..11 * 4],
                init[10 * 4..11 * 4],
                "{kind:?}: untouched row moved"
            );
            assert_ne!(
                a[7 * 4..8 * 4],
                init[7 * 4..8 * 4],
                "{kind:?}: row 7 did not move"
            );
        }
    }
}
