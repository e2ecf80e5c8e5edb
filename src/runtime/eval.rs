//! Evaluation and prediction: forward passes in evaluation mode (running
//! batch-norm statistics, no dropout, nothing tracked).

use candle_core::DType;

use super::error::Result;
use super::loss;
use super::model::{Mode, Model};
use super::source::BatchSource;
use super::RuntimeError;
use crate::data::batch::Batch;
use crate::metrics::TaskMetrics;
use crate::proto::plan::Task;

/// Accumulates one task's metrics over batches. `probs` is row-major
/// `[rows, num_class]` (the prediction itself for regression tasks),
/// `labels` and `weights` are `rows` long, `group_keys` are the batch's
/// grouping-key columns by name.
pub trait TaskMetricSink {
    /// Adds one batch.
    fn update(
        &mut self,
        probs: &[f32],
        labels: &[f32],
        weights: Option<&[f32]>,
        group_keys: &[(String, Vec<String>)],
    );
    /// The metrics, named `<metric>_<tower_name>`.
    fn finish(self: Box<Self>) -> Vec<(String, f64)>;
}

/// Builds a metric accumulator for a task.
pub(crate) type MetricFactory<'a> = &'a dyn Fn(&Task) -> Box<dyn TaskMetricSink>;

/// A task's predictions over a whole data pass.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPredictions {
    /// The task's tower name.
    pub tower_name: String,
    /// Values per row (1 for binary and regression tasks).
    pub num_class: usize,
    /// Row-major `[rows, num_class]`: probabilities (sigmoid or softmax),
    /// or the raw value for regression tasks.
    pub values: Vec<f32>,
}

/// Predictions of every task for one batch, row-major `[rows, num_class]`.
pub fn predict_batch(model: &mut Model, batch: &Batch) -> Result<Vec<Vec<f32>>> {
    let fwd = model.forward(batch, Mode::Eval)?;
    let tasks = &model.structure().tasks;
    tasks
        .iter()
        .zip(&fwd.logits)
        .map(|(t, l)| {
            Ok(loss::predictions(t, l)?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?)
        })
        .collect()
}

/// Predictions of every task over one pass of `batches`.
pub fn predict(model: &mut Model, batches: &mut dyn BatchSource) -> Result<Vec<TaskPredictions>> {
    let mut out: Vec<TaskPredictions> = model
        .structure()
        .tasks
        .iter()
        .map(|t| TaskPredictions {
            tower_name: t.tower_name.clone(),
            num_class: t.num_class.max(1) as usize,
            values: Vec::new(),
        })
        .collect();
    for batch in batches.open(0).map_err(RuntimeError::Data)? {
        let batch = batch.map_err(RuntimeError::Data)?;
        for (o, p) in out.iter_mut().zip(predict_batch(model, &batch)?) {
            o.values.extend(p);
        }
    }
    Ok(out)
}

/// Evaluates over one pass of `batches`: each task's weighted mean loss
/// (`loss_<tower_name>`) and the metrics the factory's accumulators report
/// (binary and regression tasks only: the metrics read one number per row).
pub fn evaluate_with(
    model: &mut Model,
    batches: &mut dyn BatchSource,
    metrics: MetricFactory<'_>,
) -> Result<Vec<(String, f64)>> {
    let plan = model.structure().clone();
    let data = plan.data.clone().unwrap_or_default();
    let mut sinks: Vec<Box<dyn TaskMetricSink>> = plan.tasks.iter().map(metrics).collect();
    let mut loss_sum = vec![0f64; plan.tasks.len()];
    let mut rows = 0usize;
    for batch in batches.open(0).map_err(RuntimeError::Data)? {
        let batch = batch.map_err(RuntimeError::Data)?;
        let fwd = model.forward(&batch, Mode::Eval)?;
        for (ti, task) in plan.tasks.iter().enumerate() {
            let logits = &fwd.logits[ti];
            let mut targets =
                loss::task_targets(&data, task, &batch, model.dtype(), model.device())?;
            loss::attach_sessions(&mut targets, &plan.features, &data, task, &batch)?;
            let l = loss::task_loss(task, logits, &targets)?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            loss_sum[ti] += l * batch.rows as f64;
            let probs = loss::predictions(task, logits)?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let labels = loss::task_labels(&data, task, &batch)?;
            let weights = if task.sample_weight_name.is_empty() {
                None
            } else {
                data.sample_weight_fields
                    .iter()
                    .position(|n| *n == task.sample_weight_name)
                    .and_then(|i| batch.sample_weights.get(i))
                    .map(|c| c.as_slice())
            };
            // The metrics take one number per row: the probability for one
            // class, that of class 1 for two (tzrec's `probs1`, which its
            // AUCs read); tasks of more classes report their loss only.
            match task.num_class {
                0 | 1 => sinks[ti].update(&probs, labels, weights, &batch.group_keys),
                2 => {
                    let probs1: Vec<f32> = probs.iter().skip(1).step_by(2).copied().collect();
                    sinks[ti].update(&probs1, labels, weights, &batch.group_keys)
                }
                _ => {}
            }
        }
        rows += batch.rows;
    }
    let mut out = Vec::new();
    for (ti, task) in plan.tasks.iter().enumerate() {
        if rows > 0 {
            out.push((
                format!("loss_{}", task.tower_name),
                loss_sum[ti] / rows as f64,
            ));
        }
    }
    for s in sinks {
        out.extend(s.finish());
    }
    Ok(out)
}

impl TaskMetricSink for TaskMetrics {
    fn update(
        &mut self,
        probs: &[f32],
        labels: &[f32],
        weights: Option<&[f32]>,
        group_keys: &[(String, Vec<String>)],
    ) {
        self.update_batch(probs, labels, weights, group_keys);
    }
    fn finish(self: Box<Self>) -> Vec<(String, f64)> {
        TaskMetrics::finish(&self)
    }
}

/// The accumulators plec reports with by default: the task's configured
/// metrics (`crate::metrics::TaskMetrics`).
pub(crate) fn default_metrics(task: &Task) -> Box<dyn TaskMetricSink> {
    Box::new(TaskMetrics::new(task))
}

/// Evaluates with the default metrics (see `evaluate_with`).
pub fn evaluate(model: &mut Model, batches: &mut dyn BatchSource) -> Result<Vec<(String, f64)>> {
    evaluate_with(model, batches, &default_metrics)
}
