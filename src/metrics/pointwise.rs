//! Metrics that are weighted means over examples: log loss, normalized
//! entropy, mean squared / absolute error and accuracy.

/// Probabilities are clamped to `[EPS, 1 - EPS]` in log loss, so a
/// saturated sigmoid gives a large but finite loss.
pub(crate) const EPS: f64 = 1e-7;

/// Accuracy threshold: predicted positive when `prob > 0.5` (as
/// torchmetrics' `BinaryAccuracy`); labels are positive when `> 0.5`.
pub(crate) const ACCURACY_THRESHOLD: f32 = 0.5;

/// Weighted sums behind every pointwise metric.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pointwise {
    weight: f64,
    label: f64,
    logloss: f64,
    squared: f64,
    absolute: f64,
    correct: f64,
}

fn binary_entropy(p: f64) -> f64 {
    let p = p.clamp(EPS, 1.0 - EPS);
    -(p * p.ln() + (1.0 - p) * (1.0 - p).ln())
}

impl Pointwise {
    /// Adds one example.
    #[inline]
    pub(crate) fn push(&mut self, prob: f32, label: f32, weight: f32) {
        let (p, y, w) = (prob as f64, label as f64, weight as f64);
        let pc = p.clamp(EPS, 1.0 - EPS);
        self.weight += w;
        self.label += w * y;
        self.logloss -= w * (y * pc.ln() + (1.0 - y) * (1.0 - pc).ln());
        self.squared += w * (p - y) * (p - y);
        self.absolute += w * (p - y).abs();
        if (prob > ACCURACY_THRESHOLD) == (label > ACCURACY_THRESHOLD) {
            self.correct += w;
        }
    }

    fn mean(&self, sum: f64) -> f64 {
        if self.weight > 0.0 {
            sum / self.weight
        } else {
            f64::NAN
        }
    }

    /// Weighted mean binary cross-entropy (natural log).
    pub(crate) fn logloss(&self) -> f64 {
        self.mean(self.logloss)
    }

    /// Log loss divided by the entropy of the weighted base rate: below 1
    /// means better than always predicting the base rate.
    pub(crate) fn normalized_entropy(&self) -> f64 {
        self.logloss() / binary_entropy(self.mean(self.label))
    }

    pub(crate) fn mse(&self) -> f64 {
        self.mean(self.squared)
    }

    pub(crate) fn mae(&self) -> f64 {
        self.mean(self.absolute)
    }

    pub(crate) fn accuracy(&self) -> f64 {
        self.mean(self.correct)
    }
}
