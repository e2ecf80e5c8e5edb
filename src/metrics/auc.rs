//! Streaming AUC accumulators: exact (sort-based, ties count one half),
//! binned like torchmetrics' `BinaryAUROC(thresholds=N)` (which TorchEasyRec
//! uses), and grouped (mean of per-group exact AUCs).

use std::collections::HashMap;

/// Number of AUC thresholds when a metric gives none (TorchEasyRec's default).
pub(crate) const DEFAULT_THRESHOLDS: usize = 200;

/// Exact AUC of scored examples: the weighted probability that a random
/// positive scores above a random negative, ties counting one half (the
/// average-rank Mann-Whitney statistic). NaN without both classes.
///
/// `examples` are `(score, weight, positive)`; it is sorted in place.
pub(crate) fn exact_auc_of(examples: &mut [(f32, f32, bool)]) -> f64 {
    examples.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let (mut neg_below, mut num, mut pos_total) = (0.0f64, 0.0f64, 0.0f64);
    let mut i = 0;
    while i < examples.len() {
        let mut j = i;
        let (mut pos, mut neg) = (0.0f64, 0.0f64);
        while j < examples.len() && examples[j].0 == examples[i].0 {
            let (_, w, p) = examples[j];
            if p {
                pos += w as f64;
            } else {
                neg += w as f64;
            }
            j += 1;
        }
        num += pos * (neg_below + 0.5 * neg);
        neg_below += neg;
        pos_total += pos;
        i = j;
    }
    let denom = pos_total * neg_below;
    if denom > 0.0 {
        num / denom
    } else {
        f64::NAN
    }
}

/// Exact AUC of plain slices (`labels > 0.5` are positive), unit weights.
pub(crate) fn exact_auc(scores: &[f32], labels: &[f32]) -> f64 {
    let mut ex: Vec<(f32, f32, bool)> = scores
        .iter()
        .zip(labels)
        .map(|(&s, &l)| (s, 1.0, l > 0.5))
        .collect();
    exact_auc_of(&mut ex)
}

/// Exact AUC over everything seen; keeps every example (12 bytes each).
#[derive(Debug, Clone, Default)]
pub(crate) struct ExactAuc {
    examples: Vec<(f32, f32, bool)>,
}

impl ExactAuc {
    /// Adds one example.
    #[inline]
    pub(crate) fn push(&mut self, score: f32, weight: f32, positive: bool) {
        self.examples.push((score, weight, positive));
    }

    /// The AUC so far (NaN without both classes).
    pub(crate) fn value(&self) -> f64 {
        exact_auc_of(&mut self.examples.clone())
    }
}

/// Binned AUC as torchmetrics computes it with `thresholds = N`: the N
/// thresholds are `linspace(0, 1, N)`, an example counts as predicted
/// positive at threshold t when `score >= t`, and the area is the
/// trapezoid rule over the N (FPR, TPR) points (no extra (0, 0) point).
#[derive(Debug, Clone)]
pub(crate) struct BinnedAuc {
    /// `pos[j]` / `neg[j]`: weight of examples whose highest threshold
    /// reached is `j`; scores below 0 reach none and are not stored.
    pos: Vec<f64>,
    neg: Vec<f64>,
    pos_total: f64,
    neg_total: f64,
}

impl BinnedAuc {
    /// `thresholds` >= 2 (smaller values are raised to 2).
    pub(crate) fn new(thresholds: usize) -> Self {
        let n = thresholds.max(2);
        BinnedAuc {
            pos: vec![0.0; n],
            neg: vec![0.0; n],
            pos_total: 0.0,
            neg_total: 0.0,
        }
    }

    #[inline]
    fn threshold(&self, j: usize) -> f32 {
        j as f32 / (self.pos.len() - 1) as f32
    }

    /// Adds one example.
    #[inline]
    pub(crate) fn push(&mut self, score: f32, weight: f32, positive: bool) {
        let w = weight as f64;
        if positive {
            self.pos_total += w;
        } else {
            self.neg_total += w;
        }
        if score.is_nan() || score < 0.0 {
            return;
        }
        let last = self.pos.len() - 1;
        let mut j = ((score * last as f32).floor() as usize).min(last);
        // Correct float rounding so that j is the largest threshold <= score.
        while j < last && score >= self.threshold(j + 1) {
            j += 1;
        }
        while j > 0 && score < self.threshold(j) {
            j -= 1;
        }
        if positive {
            self.pos[j] += w;
        } else {
            self.neg[j] += w;
        }
    }

    /// The AUC so far (NaN without both classes).
    pub(crate) fn value(&self) -> f64 {
        if self.pos_total <= 0.0 || self.neg_total <= 0.0 {
            return f64::NAN;
        }
        // Walk thresholds from high to low: FPR and TPR grow.
        let (mut tp, mut fp) = (0.0f64, 0.0f64);
        let mut prev: Option<(f64, f64)> = None;
        let mut area = 0.0;
        for j in (0..self.pos.len()).rev() {
            tp += self.pos[j];
            fp += self.neg[j];
            let point = (fp / self.neg_total, tp / self.pos_total);
            if let Some((x0, y0)) = prev {
                area += (point.0 - x0) * (point.1 + y0) / 2.0;
            }
            prev = Some(point);
        }
        area
    }
}

/// Grouped AUC: the exact AUC within each group (e.g. per user), averaged
/// with equal weight over the groups that have both a positive and a
/// negative example; other groups are skipped. NaN if no group qualifies.
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupedAuc {
    ids: HashMap<String, u32>,
    /// `(group, score, weight, positive)`.
    examples: Vec<(u32, f32, f32, bool)>,
}

impl GroupedAuc {
    /// Adds one example of group `key`.
    #[inline]
    pub(crate) fn push(&mut self, key: &str, score: f32, weight: f32, positive: bool) {
        let next = self.ids.len() as u32;
        let g = match self.ids.get(key) {
            Some(&g) => g,
            None => {
                self.ids.insert(key.to_string(), next);
                next
            }
        };
        self.examples.push((g, score, weight, positive));
    }

    /// Number of groups with both classes.
    #[cfg(test)]
    pub(crate) fn groups_counted(&self) -> usize {
        self.per_group().len()
    }

    fn per_group(&self) -> Vec<f64> {
        let mut ex = self.examples.clone();
        ex.sort_unstable_by_key(|e| e.0);
        let mut out = Vec::new();
        let mut buf = Vec::new();
        for group in ex.chunk_by(|a, b| a.0 == b.0) {
            buf.clear();
            buf.extend(group.iter().map(|&(_, s, w, p)| (s, w, p)));
            let auc = exact_auc_of(&mut buf);
            if auc.is_finite() {
                out.push(auc);
            }
        }
        out
    }

    /// The grouped AUC so far.
    pub(crate) fn value(&self) -> f64 {
        let aucs = self.per_group();
        if aucs.is_empty() {
            return f64::NAN;
        }
        aucs.iter().sum::<f64>() / aucs.len() as f64
    }
}
