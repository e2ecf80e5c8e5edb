//! Loss values against hand computations, BCE stability, and the
//! per-sample weights of semantics.md.

use candle_core::{DType, Device, Var};

use super::*;
use crate::runtime::loss;

#[test]
fn bce_is_stable_at_extreme_logits() {
    let x = Var::from_tensor(
        &t64(&[100.0, 100.0, -100.0, -100.0, 0.0], &[5])
            .to_dtype(DType::F32)
            .unwrap(),
    )
    .unwrap();
    let y = t64(&[1.0, 0.0, 1.0, 0.0, 1.0], &[5])
        .to_dtype(DType::F32)
        .unwrap();
    let l = loss::bce_with_logits(x.as_tensor(), &y).unwrap();
    let v = host(&l);
    let want = [0.0, 100.0, 100.0, 0.0, std::f64::consts::LN_2];
    for (a, b) in v.iter().zip(want) {
        assert!((a - b).abs() < 1e-5, "{v:?}");
    }
    let g = l.sum_all().unwrap().backward().unwrap();
    let g = host(g.get(x.as_tensor()).unwrap());
    let want = [0.0, 1.0, -1.0, 0.0, -0.5];
    for (a, b) in g.iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{g:?}");
    }
    let f = loss::binary_focal(x.as_tensor(), &y, 2.0, 0.25).unwrap();
    assert!(host(&f).iter().all(|v| v.is_finite()));
}

#[test]
fn focal_softmax_l2_values() {
    let x = t64(&[0.7, -1.2], &[2]);
    let y = t64(&[1.0, 1.0], &[2]);
    let (gamma, alpha) = (2.0, 0.25);
    let v = host(&loss::binary_focal(&x, &y, gamma as f32, alpha as f32).unwrap());
    for (i, &xi) in [0.7f64, -1.2].iter().enumerate() {
        let p = 1.0 / (1.0 + (-xi).exp());
        let want = alpha * (1.0 - p).powf(gamma) * -p.ln();
        assert!((v[i] - want).abs() < 1e-12, "{} vs {want}", v[i]);
    }
    let y0 = t64(&[0.0, 0.0], &[2]);
    let v = host(&loss::binary_focal(&x, &y0, gamma as f32, alpha as f32).unwrap());
    let p: f64 = 1.0 / (1.0 + (-0.7f64).exp());
    assert!((v[0] - (1.0 - alpha) * p.powf(gamma) * -(1.0 - p).ln()).abs() < 1e-12);

    let logits = t64(&[1.0, 2.0, 3.0, 0.5, 0.5, -1.0], &[2, 3]);
    let onehot = t64(&[0.0, 0.0, 1.0, 1.0, 0.0, 0.0], &[2, 3]);
    let v = host(&loss::softmax_cross_entropy(&logits, &onehot).unwrap());
    let lse0 = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
    let lse1 = (2.0 * 0.5f64.exp() + (-1f64).exp()).ln();
    assert!((v[0] - (lse0 - 3.0)).abs() < 1e-12);
    assert!((v[1] - (lse1 - 0.5)).abs() < 1e-12);

    let v = host(&loss::l2(&t64(&[1.5, -2.0], &[2]), &t64(&[1.0, 1.0], &[2])).unwrap());
    assert_eq!(v, vec![0.25, 9.0]);
}

#[test]
fn sample_weights_follow_semantics() {
    let data = DataSpec {
        label_fields: vec!["cvr".into(), "click".into()],
        sample_weight_fields: vec!["w".into()],
        ..Default::default()
    };
    let mut task = bce_task("cvr", "cvr", 0);
    task.sample_weight_name = "w".into();
    task.task_space_indicator_label = "click".into();
    task.in_task_space_weight = 1.0;
    task.out_task_space_weight = 0.5;
    task.weight = 2.0;
    let mut b = batch(
        4,
        vec![],
        vec![vec![1.0, 0.0, 0.0, 1.0], vec![1.0, 0.0, 1.0, 0.0]],
    );
    b.sample_weights = vec![vec![1.0, 2.0, 3.0, 4.0]];
    let w = loss::sample_weights(&data, &task, &b).unwrap();
    let raw = [1.0, 2.0 * 0.5, 3.0, 4.0 * 0.5];
    let mean: f64 = raw.iter().sum::<f64>() / 4.0;
    for (a, r) in w.iter().zip(raw) {
        assert!((*a as f64 - r / mean * 2.0).abs() < 1e-6);
    }
    // Weighted task loss = sum(l_i w_i) / B.
    let logits = t64(&[0.3, -0.2, 0.1, 0.9], &[4, 1]);
    let t = loss::task_targets(&data, &task, &b, DType::F64, &Device::Cpu).unwrap();
    let got = host(&loss::task_loss(&task, &logits, &t).unwrap())[0];
    let per = host(&loss::bce_with_logits(&logits.squeeze(1).unwrap(), &t.labels).unwrap());
    let want: f64 = per.iter().zip(&w).map(|(l, w)| l * *w as f64).sum::<f64>() / 4.0;
    assert!((got - want).abs() < 1e-6);
    // A missing label column is a clear error, not a panic.
    let mut bad = task.clone();
    bad.label_name = "nope".into();
    let err = loss::task_targets(&data, &bad, &b, DType::F64, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("\"nope\""), "{err}");
    // Softmax labels out of range are reported.
    let mut cls = task.clone();
    cls.num_class = 2;
    cls.label_name = "click".into();
    cls.losses = vec![Loss {
        kind: LossKind::SoftmaxCrossEntropy as i32,
        ..Default::default()
    }];
    let mut b3 = b.clone();
    b3.labels[1][0] = 5.0;
    assert!(loss::task_targets(&data, &cls, &b3, DType::F64, &Device::Cpu).is_err());
}

/// tzrec's JRC loss, transcribed literally in f64 (mean reduction): the
/// batch cross-entropy, then for positives a softmax of their click
/// logits against the session's negatives, for negatives of their
/// non-click logits against the session's positives.
fn jrc_reference(z: &[[f64; 2]], y: &[f64], s: &[u32], alpha: f64) -> f64 {
    let b = y.len();
    let lse = |v: &[f64]| {
        let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
    };
    let ce: f64 = (0..b)
        .map(|i| lse(&z[i]) - z[i][y[i] as usize])
        .sum::<f64>()
        / b as f64;
    let side = |label: f64, col: usize| -> (f64, usize) {
        let rows: Vec<usize> = (0..b).filter(|&i| y[i] == label).collect();
        let mut sum = 0.0;
        for &i in &rows {
            let row: Vec<f64> = (0..b)
                .map(|j| {
                    let masked = s[i] != s[j] || (j != i && y[j] == label);
                    z[j][col] + if masked { -1e9 } else { 0.0 }
                })
                .collect();
            sum += lse(&row) - z[i][col];
        }
        (sum / rows.len() as f64, rows.len())
    };
    let (loss_pos, pos) = side(1.0, 1);
    let (loss_neg, neg) = side(0.0, 0);
    let ge = (loss_pos * pos as f64 + loss_neg * neg as f64) / b as f64;
    alpha * ce + (1.0 - alpha) * ge
}

#[test]
fn jrc_loss_matches_a_transcription_of_torcheasyrec_and_its_gradient() {
    let z = [
        [0.3, -0.2],
        [-1.1, 0.8],
        [0.5, 0.5],
        [2.0, -0.7],
        [-0.4, 1.9],
        [0.9, 0.1],
        [-0.6, -1.3],
    ];
    let y = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0];
    // Three sessions; session 9 has one row, which competes only with itself.
    let s = [4u32, 4, 7, 7, 7, 9, 4];
    // The config's alpha is a proto float, in tzrec as here.
    let alpha = 0.3f32 as f64;
    let flat: Vec<f64> = z.iter().flatten().copied().collect();
    let x = Var::from_tensor(&t64(&flat, &[7, 2])).unwrap();
    let onehot: Vec<f64> = y
        .iter()
        .flat_map(|&l| if l == 1.0 { [0.0, 1.0] } else { [1.0, 0.0] })
        .collect();
    let onehot = t64(&onehot, &[7, 2]);
    let labels: Vec<f32> = y.iter().map(|&l| l as f32).collect();
    let sessions = loss::Sessions::new(&s, &labels, DType::F64, &Device::Cpu).unwrap();
    let per = loss::jrc(x.as_tensor(), &onehot, &sessions, alpha as f32).unwrap();
    let mean = (per.sum_all().unwrap() / 7.0).unwrap();
    let got = host(&mean)[0];
    let want = jrc_reference(&z, &y, &s, alpha);
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    // tzrec's own JRCLoss (torch, f64 logits, alpha = 0.3 as a float32)
    // on these inputs gave 0.7200525999623023.
    assert!((got - 0.7200525999623023).abs() < 1e-12, "{got}");
    // Gradient against central differences of the reference.
    let g = mean.backward().unwrap();
    let g = host(g.get(x.as_tensor()).unwrap());
    let h = 1e-6;
    for (k, gk) in g.iter().enumerate() {
        let (i, c) = (k / 2, k % 2);
        let (mut up, mut down) = (z, z);
        up[i][c] += h;
        down[i][c] -= h;
        let num =
            (jrc_reference(&up, &y, &s, alpha) - jrc_reference(&down, &y, &s, alpha)) / (2.0 * h);
        assert!((gk - num).abs() < 1e-6, "d/dz[{i}][{c}]: {gk} vs {num}");
    }
}
