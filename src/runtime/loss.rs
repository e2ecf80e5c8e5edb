//! Task losses, per-sample loss weights and predictions.
//!
//! Every loss is computed per sample (`[B]`) and reduced as
//! `sum_i(loss_i * w_i) / B`, where the weights follow semantics.md: the
//! sample weight (or 1), times `in_task_space_weight` where the indicator
//! label is > 0 and `out_task_space_weight` elsewhere, divided by their
//! batch mean, times the tower `weight`. A task with several losses sums
//! them; the total loss is the sum over tasks.

use candle_core::{DType, Device, Tensor};

use super::error::{bad_batch, invalid_plan, Result};
use super::exec::candle::ops;
use crate::data::batch::{Batch, FeatureInput};
use crate::proto::plan::{DataSpec, FeatureSpec, Loss, LossKind, Task};

/// Binary cross-entropy on logits, `max(x, 0) - x y + log(1 + e^-|x|)`:
/// finite for any logit (candle-nn's overflows near +-30).
pub(crate) fn bce_with_logits(x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    let softplus = (x.relu()? + ((x.abs()?.neg()?.exp()? + 1.0)?.log()?))?;
    softplus - (x * y)?
}

/// Binary focal loss (torchvision's `sigmoid_focal_loss`, as TorchEasyRec):
/// `alpha_t (1 - p_t)^gamma bce`, with `p_t = p y + (1 - p)(1 - y)` and
/// `alpha_t = alpha y + (1 - alpha)(1 - y)` (no alpha factor when alpha < 0).
pub(crate) fn binary_focal(
    x: &Tensor,
    y: &Tensor,
    gamma: f32,
    alpha: f32,
) -> candle_core::Result<Tensor> {
    let bce = bce_with_logits(x, y)?;
    let p = ops::sigmoid(x)?;
    let one_minus_y = (y.neg()? + 1.0)?;
    let p_t = ((&p * y)? + ((p.neg()? + 1.0)? * &one_minus_y)?)?;
    let base = (p_t.neg()? + 1.0)?;
    let modulating = if gamma == 0.0 {
        base.ones_like()?
    } else {
        // Clamped so the gradient of base^gamma stays finite for gamma < 1.
        base.maximum(&(base.ones_like()? * 1e-12)?)?
            .powf(gamma as f64)?
    };
    let loss = (bce * modulating)?;
    if alpha >= 0.0 {
        let alpha_t = ((y * alpha as f64)? + (one_minus_y * (1.0 - alpha as f64))?)?;
        loss * alpha_t
    } else {
        Ok(loss)
    }
}

/// Softmax cross-entropy: `logsumexp(x) - x[label]`, with the label given
/// as a one-hot `[B, C]`.
pub(crate) fn softmax_cross_entropy(x: &Tensor, onehot: &Tensor) -> candle_core::Result<Tensor> {
    let lse = ops::log_sum_exp(x)?.squeeze(1)?;
    lse - (x * onehot)?.sum(1)?
}

/// TorchEasyRec's JRC loss per sample (Sheng et al. 2022, arXiv
/// 2208.06164), for two-class logits `x` `[B, 2]`:
/// `alpha * ce_i + (1 - alpha) * ge_i`, where `ce_i` is the cross-entropy
/// of row i and `ge_i` the cross-entropy of a softmax over the rows of i's
/// session that could compete with it: i itself and the rows of the other
/// label, each scored by its logit of i's label. `s.mask` is 0 for those
/// rows and -1e9 for every other (`Sessions::new`). Averaged over the
/// batch this is tzrec's `alpha * mean(ce) + (1 - alpha) * (pos_num *
/// loss_pos + neg_num * loss_neg) / B`. (tzrec's loss is NaN on a batch
/// with no positive or no negative row, from a mean over nothing; here
/// those rows simply have no such term to miss.)
pub(crate) fn jrc(
    x: &Tensor,
    onehot: &Tensor,
    s: &Sessions,
    alpha: f32,
) -> candle_core::Result<Tensor> {
    let own = (x * onehot)?.sum(1)?;
    let ce = (ops::log_sum_exp(x)?.squeeze(1)? - &own)?;
    let z0 = x.narrow(1, 0, 1)?.t()?;
    let z1 = x.narrow(1, 1, 1)?.t()?;
    // scores[i, j]: row j's logit of row i's label.
    let scores = (s.label.matmul(&z1)? + s.not_label.matmul(&z0)?)?;
    let ge = (ops::log_sum_exp(&(scores + &s.mask)?)?.squeeze(1)? - own)?;
    (ce * alpha as f64)? + (ge * (1.0 - alpha as f64))?
}

/// What the JRC loss needs of a batch's sessions, on the device.
#[derive(Debug)]
pub(crate) struct Sessions {
    /// `[B, B]`: 0 where row j competes with row i (same session, and j is
    /// i or has the other label), -1e9 elsewhere.
    pub mask: Tensor,
    /// Labels `[B, 1]` and `1 - label`.
    pub label: Tensor,
    pub not_label: Tensor,
}

impl Sessions {
    /// From each row's session id and 0/1 label.
    pub(crate) fn new(
        sessions: &[u32],
        labels: &[f32],
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let b = labels.len();
        let mut mask = vec![-1e9f32; b * b];
        for i in 0..b {
            for j in 0..b {
                if sessions[i] == sessions[j] && (i == j || labels[i] != labels[j]) {
                    mask[i * b + j] = 0.0;
                }
            }
        }
        let not: Vec<f32> = labels.iter().map(|l| 1.0 - l).collect();
        Ok(Sessions {
            mask: Tensor::from_vec(mask, (b, b), device)?.to_dtype(dtype)?,
            label: Tensor::from_slice(labels, (b, 1), device)?.to_dtype(dtype)?,
            not_label: Tensor::from_vec(not, (b, 1), device)?.to_dtype(dtype)?,
        })
    }
}

/// Each row's session for a JRC loss: the first id of its session
/// feature, 0 for a row without one (tzrec pads with 0).
pub(crate) fn session_ids(features: &[FeatureSpec], batch: &Batch, name: &str) -> Result<Vec<u32>> {
    let at = features
        .iter()
        .position(|f| f.name == name)
        .ok_or_else(|| {
            invalid_plan!("jrc_loss reads session feature \"{name}\", which the plan does not have")
        })?;
    match batch.features.get(at) {
        Some(FeatureInput::Ids { ids, offsets }) => Ok((0..batch.rows)
            .map(|r| {
                let (a, b) = (offsets[r] as usize, offsets[r + 1] as usize);
                if a < b {
                    ids[a]
                } else {
                    0
                }
            })
            .collect()),
        _ => Err(invalid_plan!(
            "jrc_loss session feature \"{name}\" is not an id feature"
        )),
    }
}

/// Squared error `(x - y)^2`.
pub(crate) fn l2(x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    (x - y)?.sqr()
}

/// What one task's loss needs from a batch, on the device.
#[derive(Debug)]
pub(crate) struct TaskTargets {
    /// Labels `[B]`.
    pub labels: Tensor,
    /// One-hot labels `[B, C]` for softmax cross-entropy.
    pub onehot: Option<Tensor>,
    /// Final per-sample weights `[B]` (normalized, times the tower weight).
    pub weights: Tensor,
    /// A JRC loss's sessions (`attach_sessions`).
    pub sessions: Option<Sessions>,
}

fn column<'a>(names: &[String], cols: &'a [Vec<f32>], name: &str, what: &str) -> Result<&'a [f32]> {
    let i = names
        .iter()
        .position(|n| n == name)
        .ok_or_else(|| invalid_plan!("{what} \"{name}\" is not among the plan's data fields"))?;
    cols.get(i)
        .map(|c| c.as_slice())
        .ok_or_else(|| bad_batch!("the batch lacks the {what} column \"{name}\""))
}

/// The label column of a task.
pub(crate) fn task_labels<'a>(data: &DataSpec, task: &Task, batch: &'a Batch) -> Result<&'a [f32]> {
    let labels = column(&data.label_fields, &batch.labels, &task.label_name, "label")?;
    if labels.len() != batch.rows {
        return Err(bad_batch!(
            "label \"{}\" has {} values for {} rows",
            task.label_name,
            labels.len(),
            batch.rows
        ));
    }
    Ok(labels)
}

/// The per-sample weights of a task, on the host, as the module doc says.
pub(crate) fn sample_weights(data: &DataSpec, task: &Task, batch: &Batch) -> Result<Vec<f32>> {
    let rows = batch.rows;
    let mut w = vec![1.0f32; rows];
    let mut weighted = false;
    if !task.sample_weight_name.is_empty() {
        let sw = column(
            &data.sample_weight_fields,
            &batch.sample_weights,
            &task.sample_weight_name,
            "sample weight",
        )?;
        if sw.len() != rows {
            return Err(bad_batch!(
                "sample weight \"{}\" has {} values for {} rows",
                task.sample_weight_name,
                sw.len(),
                rows
            ));
        }
        w.copy_from_slice(sw);
        weighted = true;
    }
    if !task.task_space_indicator_label.is_empty() {
        let ind = column(
            &data.label_fields,
            &batch.labels,
            &task.task_space_indicator_label,
            "task space indicator label",
        )?;
        if ind.len() != rows {
            return Err(bad_batch!(
                "label \"{}\" has {} values for {} rows",
                task.task_space_indicator_label,
                ind.len(),
                rows
            ));
        }
        for (wi, &l) in w.iter_mut().zip(ind) {
            *wi *= if l > 0.0 {
                task.in_task_space_weight
            } else {
                task.out_task_space_weight
            };
        }
        weighted = true;
    }
    if weighted {
        let mean = w.iter().map(|&x| x as f64).sum::<f64>() / rows as f64;
        // A batch whose weights are all zero contributes no loss.
        let inv = if mean > 0.0 { 1.0 / mean } else { 0.0 };
        for wi in &mut w {
            *wi = (*wi as f64 * inv) as f32;
        }
    }
    for wi in &mut w {
        *wi *= task.weight;
    }
    Ok(w)
}

/// Uploads a task's labels and weights for one batch.
pub(crate) fn task_targets(
    data: &DataSpec,
    task: &Task,
    batch: &Batch,
    dtype: DType,
    device: &Device,
) -> Result<TaskTargets> {
    let labels = task_labels(data, task, batch)?;
    let weights = sample_weights(data, task, batch)?;
    let needs_onehot = task.losses.iter().any(|l| {
        matches!(
            LossKind::try_from(l.kind),
            Ok(LossKind::SoftmaxCrossEntropy | LossKind::JrcLoss)
        )
    });
    let onehot = if needs_onehot {
        let c = task.num_class as usize;
        let mut oh = vec![0f32; batch.rows * c];
        for (r, &l) in labels.iter().enumerate() {
            if !(l >= 0.0 && (l as usize) < c && l.fract() == 0.0) {
                return Err(bad_batch!(
                    "label \"{}\" is {} but task \"{}\" has {} classes",
                    task.label_name,
                    l,
                    task.tower_name,
                    c
                ));
            }
            oh[r * c + l as usize] = 1.0;
        }
        Some(Tensor::from_vec(oh, (batch.rows, c), device)?.to_dtype(dtype)?)
    } else {
        None
    };
    Ok(TaskTargets {
        labels: Tensor::from_slice(labels, batch.rows, device)?.to_dtype(dtype)?,
        onehot,
        weights: Tensor::from_vec(weights, batch.rows, device)?.to_dtype(dtype)?,
        sessions: None,
    })
}

/// Adds the sessions a task's JRC loss needs (nothing for other losses):
/// call after [`task_targets`] with the plan's features.
pub(crate) fn attach_sessions(
    targets: &mut TaskTargets,
    features: &[FeatureSpec],
    data: &DataSpec,
    task: &Task,
    batch: &Batch,
) -> Result<()> {
    let Some(jrc) = task
        .losses
        .iter()
        .find(|l| LossKind::try_from(l.kind) == Ok(LossKind::JrcLoss))
    else {
        return Ok(());
    };
    let labels = task_labels(data, task, batch)?;
    if let Some(l) = labels.iter().find(|&&l| l != 0.0 && l != 1.0) {
        return Err(bad_batch!(
            "label \"{}\" is {l} but task \"{}\" trains with jrc_loss, which needs 0/1 labels",
            task.label_name,
            task.tower_name
        ));
    }
    let sessions = session_ids(features, batch, &jrc.session_feature)?;
    let (dtype, device) = (targets.labels.dtype(), targets.labels.device().clone());
    targets.sessions = Some(Sessions::new(&sessions, labels, dtype, &device)?);
    Ok(())
}

/// Per-sample loss `[B]` of one configured loss.
pub(crate) fn per_sample_loss(
    loss: &Loss,
    task: &Task,
    logits: &Tensor,
    t: &TaskTargets,
) -> Result<Tensor> {
    let kind = LossKind::try_from(loss.kind).unwrap_or(LossKind::LossUnspecified);
    let binary = || -> Result<Tensor> {
        if logits.dim(1)? != 1 {
            return Err(invalid_plan!(
                "task \"{}\" uses {:?} but has {} logits per sample",
                task.tower_name,
                kind,
                logits.dim(1)?
            ));
        }
        Ok(logits.squeeze(1)?)
    };
    match kind {
        LossKind::BinaryCrossEntropy => Ok(bce_with_logits(&binary()?, &t.labels)?),
        LossKind::BinaryFocalLoss => {
            Ok(binary_focal(&binary()?, &t.labels, loss.gamma, loss.alpha)?)
        }
        LossKind::L2Loss => Ok(l2(&binary()?, &t.labels)?),
        LossKind::SoftmaxCrossEntropy => match &t.onehot {
            Some(oh) => Ok(softmax_cross_entropy(logits, oh)?),
            None => Err(invalid_plan!(
                "task \"{}\" lacks one-hot labels",
                task.tower_name
            )),
        },
        LossKind::JrcLoss => match (&t.onehot, &t.sessions) {
            (Some(oh), Some(s)) => Ok(jrc(logits, oh, s, loss.alpha)?),
            _ => Err(invalid_plan!(
                "task \"{}\" trains with jrc_loss but its batch has no sessions",
                task.tower_name
            )),
        },
        LossKind::LossUnspecified => Err(invalid_plan!(
            "task \"{}\" has a loss without a kind",
            task.tower_name
        )),
    }
}

/// A task's loss (scalar): every configured loss, weighted and averaged.
pub(crate) fn task_loss(task: &Task, logits: &Tensor, t: &TaskTargets) -> Result<Tensor> {
    let rows = logits.dim(0)? as f64;
    let mut total: Option<Tensor> = None;
    for l in &task.losses {
        let per = per_sample_loss(l, task, logits, t)?;
        let reduced = ((per * &t.weights)?.sum_all()? / rows)?;
        total = Some(match total {
            Some(acc) => (acc + reduced)?,
            None => reduced,
        });
    }
    total.ok_or_else(|| invalid_plan!("task \"{}\" has no loss", task.tower_name))
}

/// Whether a task is a regression (its first loss is L2): its prediction is
/// the logit itself, as in TorchEasyRec.
pub(crate) fn is_regression(task: &Task) -> bool {
    task.losses
        .first()
        .is_some_and(|l| LossKind::try_from(l.kind) == Ok(LossKind::L2Loss))
}

/// Predictions `[B, num_class]`: sigmoid for one class, softmax for more,
/// the raw logit for regression.
pub(crate) fn predictions(task: &Task, logits: &Tensor) -> Result<Tensor> {
    if is_regression(task) {
        Ok(logits.clone())
    } else if logits.dim(1)? == 1 {
        Ok(ops::sigmoid(logits)?)
    } else {
        Ok(ops::softmax(logits, 1)?)
    }
}
