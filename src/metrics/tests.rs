use super::auc::{exact_auc, exact_auc_of, BinnedAuc, GroupedAuc};
use super::*;
use crate::proto::plan::{Loss, Metric};
use crate::rng::SplitMix64;

/// Independent O(n^2) AUC: weighted pairs, ties count one half.
fn pairwise_auc(ex: &[(f32, f32, bool)]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for &(sp, wp, p) in ex.iter().filter(|e| e.2) {
        for &(sn, wn, _) in ex.iter().filter(|e| !e.2) {
            let _ = p;
            let w = wp as f64 * wn as f64;
            den += w;
            if sp > sn {
                num += w;
            } else if sp == sn {
                num += 0.5 * w;
            }
        }
    }
    num / den
}

fn random_examples(n: usize, seed: u64, quantize: bool, weighted: bool) -> Vec<(f32, f32, bool)> {
    let mut rng = SplitMix64::from_words(&[seed]);
    (0..n)
        .map(|_| {
            let pos = rng.next_f64() < 0.3;
            let mut s = (rng.next_f64() * 0.7 + if pos { 0.25 } else { 0.0 }) as f32;
            if quantize {
                s = (s * 20.0).round() / 20.0;
            }
            let w = if weighted {
                (0.1 + rng.next_f64() * 2.0) as f32
            } else {
                1.0
            };
            (s, w, pos)
        })
        .collect()
}

#[test]
fn exact_auc_matches_pairwise() {
    for (seed, quantize, weighted) in [
        (1, false, false),
        (2, true, false),
        (3, true, true),
        (4, false, true),
    ] {
        let mut ex = random_examples(700, seed, quantize, weighted);
        let want = pairwise_auc(&ex);
        let got = exact_auc_of(&mut ex);
        assert!((got - want).abs() < 1e-9, "seed {seed}: {got} vs {want}");
    }
}

#[test]
fn exact_auc_hand_case_and_degenerate() {
    assert_eq!(
        exact_auc(&[0.1, 0.4, 0.35, 0.8], &[0.0, 0.0, 1.0, 1.0]),
        0.75
    );
    assert_eq!(exact_auc(&[0.5, 0.5], &[0.0, 1.0]), 0.5);
    assert!(exact_auc(&[0.1, 0.2], &[1.0, 1.0]).is_nan());
}

#[test]
fn binned_auc_close_to_exact() {
    let ex = random_examples(20_000, 7, false, false);
    let mut binned = BinnedAuc::new(200);
    for &(s, w, p) in &ex {
        binned.push(s, w, p);
    }
    let exact = exact_auc_of(&mut ex.clone());
    let b = binned.value();
    assert!((b - exact).abs() < 0.005, "binned {b} exact {exact}");
    // Scores in distinct bins: binned equals exact.
    let mut small = BinnedAuc::new(200);
    for (s, l) in [(0.1, false), (0.4, false), (0.35, true), (0.8, true)] {
        small.push(s, 1.0, l);
    }
    assert!((small.value() - 0.75).abs() < 1e-12);
}

#[test]
fn binned_auc_coarse_bins_follow_torchmetrics() {
    // thresholds linspace(0,1,3) = [0, .5, 1]; points (high to low):
    // t=1: (0, 0); t=.5: fpr 1/2, tpr 1; t=0: (1, 1). Area: .25 + .5 = .75.
    let mut b = BinnedAuc::new(3);
    for (s, l) in [(0.2f32, false), (0.6, false), (0.7, true), (0.9, true)] {
        b.push(s, 1.0, l);
    }
    assert!((b.value() - 0.75).abs() < 1e-12);
}

#[test]
fn grouped_auc_skips_one_class_groups() {
    let mut g = GroupedAuc::default();
    // Group a: perfect; group b: inverted; group c: positives only.
    for (k, s, l) in [
        ("a", 0.9, true),
        ("a", 0.1, false),
        ("b", 0.2, true),
        ("b", 0.8, false),
        ("c", 0.5, true),
    ] {
        g.push(k, s, 1.0, l);
    }
    assert_eq!(g.groups_counted(), 2);
    assert!((g.value() - 0.5).abs() < 1e-12);
}

fn task(metrics: Vec<Metric>) -> Task {
    Task {
        tower_name: "ctr".into(),
        label_name: "clk".into(),
        num_class: 1,
        losses: vec![Loss {
            kind: LossKind::BinaryCrossEntropy as i32,
            ..Default::default()
        }],
        metrics,
        ..Default::default()
    }
}

fn metric(kind: MetricKind) -> Metric {
    Metric {
        kind: kind as i32,
        ..Default::default()
    }
}

#[test]
fn task_metrics_names_and_values() {
    let mut m = TaskMetrics::new(&task(vec![
        metric(MetricKind::Auc),
        Metric {
            kind: MetricKind::GroupedAuc as i32,
            grouping_key: "user".into(),
            ..Default::default()
        },
        metric(MetricKind::MeanSquaredError),
        metric(MetricKind::MeanAbsoluteError),
        metric(MetricKind::Accuracy),
        metric(MetricKind::NormalizedEntropy),
    ]));
    assert_eq!(m.grouping_keys(), vec!["user"]);
    let keys: Vec<String> = ["u1", "u1", "u2", "u2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    m.update(&[0.1, 0.4], &[0.0, 0.0], None, Some(&keys[..2]));
    m.update_batch(
        &[0.35, 0.8],
        &[1.0, 1.0],
        None,
        &[("user".to_string(), keys[2..].to_vec())],
    );
    let out: std::collections::HashMap<String, f64> = m.finish().into_iter().collect();
    let names: Vec<String> = m.finish().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "auc_ctr",
            "exact_auc_ctr",
            "grouped_auc_ctr",
            "mean_squared_error_ctr",
            "mean_absolute_error_ctr",
            "accuracy_ctr",
            "normalized_entropy_ctr",
            "logloss_ctr"
        ]
    );
    assert!((out["auc_ctr"] - 0.75).abs() < 1e-9);
    assert!((out["exact_auc_ctr"] - 0.75).abs() < 1e-12);
    // Each user has one class only.
    assert!(out["grouped_auc_ctr"].is_nan());
    let mse = (0.01 + 0.16 + 0.65f64 * 0.65 + 0.04) / 4.0;
    assert!((out["mean_squared_error_ctr"] - mse).abs() < 1e-6);
    assert!((out["mean_absolute_error_ctr"] - (0.1 + 0.4 + 0.65 + 0.2) / 4.0).abs() < 1e-6);
    assert!((out["accuracy_ctr"] - 0.75).abs() < 1e-12);
    let ll = -((0.9f64).ln() + (0.6f64).ln() + (0.35f64).ln() + (0.8f64).ln()) / 4.0;
    assert!((out["logloss_ctr"] - ll).abs() < 1e-6);
    assert!((out["normalized_entropy_ctr"] - ll / (2f64).ln()).abs() < 1e-6);
}

#[test]
fn weights_zero_exclude_examples() {
    let mut m = TaskMetrics::new(&task(vec![
        metric(MetricKind::Auc),
        metric(MetricKind::MeanAbsoluteError),
    ]));
    m.update(
        &[0.9, 0.1, 0.2, 0.95],
        &[0.0, 1.0, 1.0, 0.0],
        Some(&[0.0, 1.0, 1.0, 0.0]),
        None,
    );
    m.update(&[0.3], &[0.0], Some(&[1.0]), None);
    let out: std::collections::HashMap<String, f64> = m.finish().into_iter().collect();
    assert_eq!(out["exact_auc_ctr"], 0.0);
    assert!((out["mean_absolute_error_ctr"] - (0.9 + 0.8 + 0.3) / 3.0).abs() < 1e-6);
}
