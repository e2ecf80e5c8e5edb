//! Evaluation metrics per task, accumulated batch by batch and reported as
//! `(name, value)` pairs named `<metric>_<tower_name>`.
//!
//! What each name means (all use the sample weights passed to `update`,
//! or 1 per example; a weight of 0 leaves an example out):
//! - `auc_<tower>`: binned AUC with the metric's `thresholds` (200 when 0),
//!   as torchmetrics / TorchEasyRec compute it ([`auc::BinnedAuc`]).
//! - `exact_auc_<tower>`: exact AUC, ties counting one half, emitted next
//!   to every `auc_` ([`auc::exact_auc_of`]).
//! - `grouped_auc_<tower>`: mean over groups (rows sharing the
//!   `grouping_key` value) of each group's exact AUC, counting only groups
//!   with both classes ([`auc::GroupedAuc`]). A second grouped AUC on
//!   another key is named `grouped_auc_<key>_<tower>`.
//! - `mean_squared_error_`, `mean_absolute_error_`, `accuracy_`
//!   (prob > 0.5 against label > 0.5), `normalized_entropy_`.
//! - `logloss_<tower>`: emitted for every binary-classification task
//!   (binary cross-entropy or focal loss), whatever its metrics list.
//!
//! A metric without both classes (AUC) or without examples is NaN.
//! `probs` are one number per row: the sigmoid probability for binary
//! tasks, the prediction for regression ones.

pub(crate) mod auc;
pub(crate) mod pointwise;

use crate::proto::plan::{LossKind, MetricKind, Task};
use auc::{BinnedAuc, ExactAuc, GroupedAuc, DEFAULT_THRESHOLDS};
use pointwise::Pointwise;

#[derive(Debug, Clone)]
enum State {
    Auc { binned: BinnedAuc, exact: ExactAuc },
    Grouped { key: String, acc: GroupedAuc },
    Mse,
    Mae,
    Accuracy,
    NormalizedEntropy,
    LogLoss,
}

/// Streaming metrics of one task.
#[derive(Debug, Clone)]
pub(crate) struct TaskMetrics {
    /// `(output name, state)`, in the plan's metric order.
    states: Vec<(String, State)>,
    pointwise: Pointwise,
}

impl TaskMetrics {
    /// Accumulators for every metric of `task` (see the module doc).
    pub(crate) fn new(task: &Task) -> Self {
        let tower = task.tower_name.clone();
        let mut states: Vec<(String, State)> = Vec::new();
        let mut add = |name: String, state: State| {
            if !states.iter().any(|(n, _)| *n == name) {
                states.push((name, state));
            }
        };
        let mut grouped_seen = 0usize;
        for m in &task.metrics {
            match MetricKind::try_from(m.kind).unwrap_or(MetricKind::MetricUnspecified) {
                MetricKind::Auc => {
                    let n = if m.thresholds == 0 {
                        DEFAULT_THRESHOLDS
                    } else {
                        m.thresholds as usize
                    };
                    add(
                        format!("auc_{tower}"),
                        State::Auc {
                            binned: BinnedAuc::new(n),
                            exact: ExactAuc::default(),
                        },
                    );
                }
                MetricKind::GroupedAuc => {
                    let name = if grouped_seen == 0 {
                        format!("grouped_auc_{tower}")
                    } else {
                        format!("grouped_auc_{}_{tower}", m.grouping_key)
                    };
                    grouped_seen += 1;
                    add(
                        name,
                        State::Grouped {
                            key: m.grouping_key.clone(),
                            acc: GroupedAuc::default(),
                        },
                    );
                }
                MetricKind::MeanSquaredError => {
                    add(format!("mean_squared_error_{tower}"), State::Mse)
                }
                MetricKind::MeanAbsoluteError => {
                    add(format!("mean_absolute_error_{tower}"), State::Mae)
                }
                MetricKind::Accuracy => add(format!("accuracy_{tower}"), State::Accuracy),
                MetricKind::NormalizedEntropy => add(
                    format!("normalized_entropy_{tower}"),
                    State::NormalizedEntropy,
                ),
                MetricKind::MetricUnspecified => {}
            }
        }
        let binary = task.num_class <= 1
            && task.losses.iter().any(|l| {
                l.kind == LossKind::BinaryCrossEntropy as i32
                    || l.kind == LossKind::BinaryFocalLoss as i32
            });
        if binary {
            add(format!("logloss_{tower}"), State::LogLoss);
        }
        TaskMetrics {
            states,
            pointwise: Pointwise::default(),
        }
    }

    /// Grouping-key columns this task's grouped AUCs need.
    #[cfg(test)]
    pub(crate) fn grouping_keys(&self) -> Vec<&str> {
        self.states
            .iter()
            .filter_map(|(_, s)| match s {
                State::Grouped { key, .. } => Some(key.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Adds one batch. `group_keys` (the string keys of each row) feeds
    /// every grouped AUC of the task; with several grouped AUCs on
    /// different keys use [`Self::update_batch`]. Rows beyond the shortest
    /// slice are ignored.
    #[cfg(test)]
    pub(crate) fn update(
        &mut self,
        probs: &[f32],
        labels: &[f32],
        weights: Option<&[f32]>,
        group_keys: Option<&[String]>,
    ) {
        let keys: Vec<Option<&[String]>> = self.states.iter().map(|_| group_keys).collect();
        self.update_inner(probs, labels, weights, &keys);
    }

    /// Adds one batch, taking each grouped AUC's keys from
    /// `batch_group_keys` (as in [`crate::data::Batch::group_keys`]) by
    /// column name.
    pub(crate) fn update_batch(
        &mut self,
        probs: &[f32],
        labels: &[f32],
        weights: Option<&[f32]>,
        batch_group_keys: &[(String, Vec<String>)],
    ) {
        let keys: Vec<Option<&[String]>> = self
            .states
            .iter()
            .map(|(_, s)| match s {
                State::Grouped { key, .. } => batch_group_keys
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.as_slice()),
                _ => None,
            })
            .collect();
        self.update_inner(probs, labels, weights, &keys);
    }

    fn update_inner(
        &mut self,
        probs: &[f32],
        labels: &[f32],
        weights: Option<&[f32]>,
        keys: &[Option<&[String]>],
    ) {
        let n = probs
            .len()
            .min(labels.len())
            .min(weights.map_or(usize::MAX, |w| w.len()));
        let weight = |i: usize| weights.map_or(1.0, |w| w[i]);
        for i in 0..n {
            self.pointwise.push(probs[i], labels[i], weight(i));
        }
        for ((_, state), keys) in self.states.iter_mut().zip(keys) {
            match state {
                State::Auc { binned, exact } => {
                    for i in 0..n {
                        let pos = labels[i] > 0.5;
                        binned.push(probs[i], weight(i), pos);
                        exact.push(probs[i], weight(i), pos);
                    }
                }
                State::Grouped { acc, .. } => {
                    if let Some(keys) = keys {
                        for i in 0..n.min(keys.len()) {
                            acc.push(&keys[i], probs[i], weight(i), labels[i] > 0.5);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Current values, `(name, value)` in the plan's metric order; each
    /// `auc_` is followed by its `exact_auc_`.
    pub(crate) fn finish(&self) -> Vec<(String, f64)> {
        let p = &self.pointwise;
        let mut out = Vec::new();
        for (name, state) in &self.states {
            match state {
                State::Auc { binned, exact } => {
                    out.push((name.clone(), binned.value()));
                    out.push((format!("exact_{name}"), exact.value()));
                }
                State::Grouped { acc, .. } => out.push((name.clone(), acc.value())),
                State::Mse => out.push((name.clone(), p.mse())),
                State::Mae => out.push((name.clone(), p.mae())),
                State::Accuracy => out.push((name.clone(), p.accuracy())),
                State::NormalizedEntropy => out.push((name.clone(), p.normalized_entropy())),
                State::LogLoss => out.push((name.clone(), p.logloss())),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
