//! The training loop: steps over a batch source for the plan's epochs or
//! steps, logs, evaluates, checkpoints, and writes the trained plan and the
//! metrics.
//!
//! Checkpoints (see `checkpoint`) are written every `checkpoint_every`
//! steps and when a stop is requested (Ctrl-C, SIGTERM: `interrupt`), after
//! the step in progress. A run resumed from one replays nothing it does
//! not have to: the parameters, optimizer state, counters and metrics come
//! from the checkpoint; the data reader continues the epoch from the
//! position the checkpoint recorded (`data::seek`: file, row group, row,
//! the rows held for shuffling and the shuffle's state), or, for a source
//! that cannot seek, reopens the epoch (its order is a function of the seed
//! and the epoch) and skips the batches already trained; dropout's stream
//! is a function of the seed and the global step. So on the same engine the resumed run computes exactly what the
//! uninterrupted run would have.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::checkpoint::{file as ckpt_file, writer as ckpt_writer, CheckpointError};
use super::error::{invalid_plan, Result, RuntimeError};
use super::eval::{self, MetricFactory};
use super::loss;
use super::model::{Mode, Model};
use super::optim::{dense::DenseOptimizer, schedule, sparse::SparseOptimizer};
use super::profile::{self, Phase, Phases};
use super::source::BatchSource;
use crate::data::batch::Batch;
use crate::plan::file;
use crate::proto::checkpoint::{self as ckpt, Checkpoint};
use crate::proto::plan::Plan;

/// Logging interval when the plan leaves `log_step_count_steps` at 0.
pub(crate) const DEFAULT_LOG_STEPS: u64 = 100;

/// How progress is shown on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// A progress bar when stderr is a terminal, log lines otherwise.
    #[default]
    Auto,
    /// Log lines only.
    Lines,
    /// Nothing.
    Silent,
}

/// Overrides and outputs of a training run.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Where `plan.bin` and `metrics.json` go; nothing is written when None.
    pub out_dir: Option<PathBuf>,
    /// Overrides the plan's epochs (and clears its steps).
    pub num_epochs: Option<u64>,
    /// Overrides the plan's steps (and clears its epochs).
    pub num_steps: Option<u64>,
    /// Run seed (dropout); defaults to the plan's seed.
    pub seed: Option<u64>,
    /// Overrides `log_step_count_steps`.
    pub log_every: Option<u64>,
    /// Evaluate (and checkpoint) every this many steps when an eval source
    /// is given; defaults to `save_checkpoints_steps` (0: only at the end).
    pub eval_every: Option<u64>,
    /// How progress is shown.
    pub progress: Progress,
    /// Where checkpoints go; none are written when None.
    pub checkpoint_dir: Option<PathBuf>,
    /// Write a checkpoint every this many steps; defaults to
    /// `save_checkpoints_steps` (0: only when interrupted).
    pub checkpoint_every: Option<u64>,
    /// Checkpoints kept (the newest); defaults to `keep_checkpoint_max`
    /// (0: all).
    pub keep_checkpoints: Option<u64>,
    /// Run settings stored in every checkpoint (for a later resume).
    pub run_record: ckpt::RunRecord,
    /// Continue from this checkpoint (its `plan` already taken out and
    /// passed as the plan to train).
    pub resume: Option<Checkpoint>,
}

/// What a training run did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// Optimizer steps taken in this run.
    pub steps: u64,
    /// Passes over the data started.
    pub epochs: u64,
    /// Samples trained on.
    pub samples: u64,
    /// Total loss (sum over tasks) of every step.
    pub losses: Vec<f32>,
    /// Each task's loss at the last step.
    pub task_losses: Vec<(String, f32)>,
    /// Evaluations during training: (step, metrics).
    pub evals: Vec<(u64, Vec<(String, f64)>)>,
    /// The final evaluation, when an eval source was given.
    pub eval: Option<Vec<(String, f64)>>,
    /// Wall time of the training steps (evaluation excluded).
    pub train_seconds: f64,
    /// The trained plan (`trained_steps` updated).
    pub plan: Plan,
    /// The run stopped early on request (Ctrl-C, SIGTERM): no final
    /// evaluation and no outputs, only a checkpoint.
    pub interrupted: bool,
    /// The newest checkpoint this run wrote.
    pub last_checkpoint: Option<PathBuf>,
    /// Checkpoints written.
    pub checkpoints_written: u64,
    /// Time training stood still for the snapshots.
    pub checkpoint_seconds: f64,
    /// Time training waited for the previous write to finish (checkpoints
    /// closer together than one write takes).
    pub checkpoint_wait_seconds: f64,
    /// Time the background writer spent on them (encode, write, fsync).
    pub checkpoint_write_seconds: f64,
}

impl TrainReport {
    /// Optimizer steps per second.
    pub fn steps_per_sec(&self) -> f64 {
        self.steps as f64 / self.train_seconds.max(1e-9)
    }

    /// Samples per second.
    pub fn samples_per_sec(&self) -> f64 {
        self.samples as f64 / self.train_seconds.max(1e-9)
    }

    /// The report as the JSON written to `metrics.json`.
    pub fn to_json(&self) -> serde_json::Value {
        let obj = |m: &[(String, f64)]| {
            serde_json::Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), serde_json::json!(v)))
                    .collect(),
            )
        };
        serde_json::json!({
            "steps": self.steps,
            "trained_steps": self.plan.trained_steps,
            "epochs": self.epochs,
            "samples": self.samples,
            "train_seconds": self.train_seconds,
            "steps_per_sec": self.steps_per_sec(),
            "samples_per_sec": self.samples_per_sec(),
            "final_loss": self.losses.last(),
            "task_losses": self.task_losses.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            "evals": self.evals.iter().map(|(s, m)| serde_json::json!({"step": s, "metrics": obj(m)})).collect::<Vec<_>>(),
            "eval": self.eval.as_deref().map(obj),
            "cpu": crate::runtime::exec::native::isa::cpu_model(),
            "isa": crate::runtime::exec::native::isa::chosen().name(),
            "f32_gemm": crate::runtime::exec::native::isa::chosen().f32_kernel_name(),
            "bf16_gemm": crate::runtime::exec::native::isa::chosen().bf16_kernel_name(),
            "variational_dropout": crate::runtime::feature_importance::drop_probabilities(&self.plan),
        })
    }
}

/// The model and optimizers of a run, stepping one batch at a time.
#[derive(Debug)]
pub struct Trainer {
    /// The model being trained.
    pub model: Model,
    dense: DenseOptimizer,
    sparse: SparseOptimizer,
    seed: u64,
    /// The plan's tasks and data spec, kept apart from the model so a step
    /// borrows them while the model runs.
    tasks: Vec<crate::proto::plan::Task>,
    data: crate::proto::plan::DataSpec,
    /// Global step (the plan's `trained_steps` plus steps of this run).
    pub global_step: u64,
    /// Phase times when `PLEC_PROFILE` is set (see `profile`).
    pub phases: Option<Phases>,
}

/// The loss of one step.
#[derive(Debug, Clone)]
pub struct StepLoss {
    /// Sum over tasks.
    pub total: f32,
    /// Per task, in plan order.
    pub tasks: Vec<f32>,
}

impl Trainer {
    /// Loads the plan onto `device` and sets up its optimizers.
    pub fn new(plan: &Plan, seed: u64, device: &Device) -> Result<Self> {
        Self::with_dtype(plan, seed, device, DType::F32)
    }

    /// As `new`, with the model in `dtype`.
    pub fn with_dtype(plan: &Plan, seed: u64, device: &Device, dtype: DType) -> Result<Self> {
        let model = Model::from_plan_with_dtype(plan, device, dtype)?;
        let train = plan
            .train
            .as_ref()
            .ok_or_else(|| invalid_plan!("the plan has no training settings"))?;
        let dense_cfg = train
            .dense_optimizer
            .as_ref()
            .ok_or_else(|| invalid_plan!("the plan has no dense optimizer"))?;
        let dense = DenseOptimizer::new(dense_cfg, plan.params.len())?;
        let sparse = match &train.sparse_optimizer {
            Some(s) => SparseOptimizer::new(s, plan.tables.len())?,
            None if plan.tables.is_empty() => SparseOptimizer::new(dense_cfg, 0)?,
            None => return Err(invalid_plan!("the plan has tables but no sparse optimizer")),
        };
        Ok(Self {
            model,
            dense,
            sparse,
            seed,
            tasks: plan.tasks.clone(),
            data: plan.data.clone().unwrap_or_default(),
            global_step: plan.trained_steps,
            phases: profile::enabled().then(Phases::default),
        })
    }

    /// Allocates the optimizers' state that does not depend on the data
    /// before the first step (see `SparseOptimizer::allocate_state`); state
    /// restored from a checkpoint is kept.
    pub fn allocate_optimizer_state(&mut self) {
        self.sparse.allocate_state(self.model.tables());
    }

    /// One optimizer step on `batch` during epoch `epoch`.
    pub fn step(&mut self, batch: &Batch, epoch: u64) -> Result<StepLoss> {
        let step = self.global_step;
        self.mark(Phase::Data);
        let fwd = self.model.forward(
            batch,
            Mode::Train {
                seed: self.seed,
                step,
            },
        )?;
        let mut total: Option<Tensor> = None;
        let mut task_losses = Vec::with_capacity(self.tasks.len());
        for (task, logits) in self.tasks.iter().zip(&fwd.logits) {
            let mut targets = loss::task_targets(
                &self.data,
                task,
                batch,
                self.model.dtype(),
                self.model.device(),
            )?;
            let features = &self.model.structure().features;
            loss::attach_sessions(&mut targets, features, &self.data, task, batch)?;
            let logits = loss::task_logits(&self.data, task, logits, batch)?;
            let l = loss::task_loss(task, &logits, &targets)?;
            task_losses.push(l.clone());
            total = Some(match total {
                Some(t) => (t + l)?,
                None => l,
            });
        }
        self.mark(Phase::Forward);
        let mut total = total.ok_or_else(|| invalid_plan!("the plan has no tasks"))?;
        for p in &fwd.penalties {
            total = (total + p)?;
        }
        let host: Vec<f32> = task_losses
            .iter()
            .map(|l| l.to_dtype(DType::F32)?.to_scalar::<f32>())
            .collect::<candle_core::Result<_>>()?;
        for (task, &v) in self.tasks.iter().zip(&host) {
            if !v.is_finite() {
                return Err(RuntimeError::Diverged {
                    task: task.tower_name.clone(),
                    step,
                    value: v,
                });
            }
        }
        self.mark(Phase::Loss);
        let mut grads = total.backward()?;
        self.model.backward_native(&fwd, &mut grads)?;
        self.mark(Phase::Backward);
        let dense_lr = schedule::learning_rate(self.dense.config(), step, epoch);
        let sparse_lr = schedule::learning_rate(self.sparse.config(), step, epoch);
        let params = self.model.trainable();
        self.dense.step(&params, &grads, dense_lr)?;
        self.mark(Phase::Dense);
        self.sparse
            .step(self.model.tables_mut(), &fwd.gathered, &grads, sparse_lr)?;
        self.mark(Phase::Sparse);
        if let Some(p) = &mut self.phases {
            p.step_done();
        }
        self.global_step += 1;
        Ok(StepLoss {
            total: host.iter().sum(),
            tasks: host,
        })
    }

    /// Charges the time since the last mark to `phase` when profiling.
    fn mark(&mut self, phase: Phase) {
        if let Some(p) = &mut self.phases {
            p.mark(phase);
        }
    }

    /// Restarts the profile clock (after an evaluation, before a batch
    /// is awaited) when profiling.
    pub fn restart_clock(&mut self) {
        if let Some(p) = &mut self.phases {
            p.start();
        }
    }

    /// The plan with trained values and `trained_steps` written back.
    pub fn to_plan(&self) -> Result<Plan> {
        let mut plan = self.model.to_plan()?;
        plan.trained_steps = self.global_step;
        Ok(plan)
    }

    /// The model and optimizer part of a checkpoint (the caller adds
    /// progress, history and the run record).
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        Ok(Checkpoint {
            format_version: ckpt_file::FORMAT_VERSION,
            plan: Some(self.to_plan()?),
            dense: Some(self.dense.export()?),
            sparse: Some(self.sparse.export()?),
            ..Default::default()
        })
    }

    /// Restores the optimizer state of a checkpoint (the model itself was
    /// loaded from its plan).
    pub fn restore_optimizers(&mut self, c: &Checkpoint) -> Result<()> {
        let sizes: Vec<usize> = self
            .model
            .params()
            .iter()
            .map(|p| p.tensor().elem_count())
            .collect();
        let empty = ckpt::OptimizerState::default();
        let (dtype, device) = (self.model.dtype(), self.model.device().clone());
        self.dense
            .import(c.dense.as_ref().unwrap_or(&empty), &sizes, dtype, &device)?;
        self.sparse
            .import(c.sparse.as_ref().unwrap_or(&empty), self.model.tables())?;
        Ok(())
    }
}

/// Shows progress as a bar or log lines.
struct Reporter {
    bar: Option<indicatif::ProgressBar>,
    lines: bool,
    every: u64,
}

impl Reporter {
    fn new(mode: Progress, total_steps: Option<u64>, every: u64) -> Self {
        let tty = std::io::stderr().is_terminal();
        let bar = (mode == Progress::Auto && tty).then(|| {
            let bar = match total_steps {
                Some(n) => indicatif::ProgressBar::new(n),
                None => indicatif::ProgressBar::new_spinner(),
            };
            let style = indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar}] {pos}/{len} steps, {msg}, ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        Self {
            lines: bar.is_none() && mode != Progress::Silent,
            bar,
            every,
        }
    }

    fn step(&self, step: u64, loss: f32, samples_per_sec: f64) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            if step.is_multiple_of(10) || step == 1 {
                bar.set_message(format!("loss {loss:.5}, {samples_per_sec:.0} samples/s"));
            }
        } else if self.lines && step.is_multiple_of(self.every) {
            eprintln!("step {step}: loss {loss:.6}, {samples_per_sec:.0} samples/s");
        }
    }

    fn line(&self, msg: &str) {
        if let Some(bar) = &self.bar {
            bar.println(msg);
        } else if self.lines {
            eprintln!("{msg}");
        }
    }

    fn resume_at(&self, step: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(step);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn format_metrics(step: u64, m: &[(String, f64)]) -> String {
    let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v:.6}")).collect();
    format!("eval at step {step}: {}", parts.join(", "))
}

/// Writes the trained plan and the metrics into `dir`, atomically.
fn write_outputs(dir: &Path, report: &TrainReport) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| RuntimeError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    file::save(&report.plan, &dir.join("plan.bin"))?;
    let path = dir.join("metrics.json");
    let text = serde_json::to_string_pretty(&report.to_json()).unwrap_or_default();
    file::write_atomic(&path, text.as_bytes())
        .map_err(|source| RuntimeError::Write { path, source })
}

/// Trains `plan` on `train_data` (see `TrainOptions`), evaluating on
/// `eval_data` when given, with the default metrics.
pub fn train(
    plan: &Plan,
    train_data: &mut dyn BatchSource,
    eval_data: Option<&mut dyn BatchSource>,
    opts: &TrainOptions,
    device: &Device,
) -> Result<TrainReport> {
    train_with(
        plan,
        train_data,
        eval_data,
        opts,
        device,
        &eval::default_metrics,
    )
}

/// Where the loop stands, as a checkpoint records it.
struct Position {
    epoch: u64,
    batches_in_epoch: u64,
    seed: u64,
    /// The data reader's point after those batches, when it can tell.
    data: Option<crate::data::SeekPoint>,
}

/// The checkpoint of the run now: the trainer's state plus progress,
/// history and the run record.
fn snapshot(
    trainer: &Trainer,
    report: &TrainReport,
    pos: &Position,
    train_time: f64,
    record: &ckpt::RunRecord,
) -> Result<Checkpoint> {
    let metrics = |m: &[(String, f64)]| -> Vec<ckpt::Metric> {
        m.iter()
            .map(|(name, value)| ckpt::Metric {
                name: name.clone(),
                value: *value,
            })
            .collect()
    };
    let mut c = trainer.checkpoint()?;
    c.progress = Some(ckpt::Progress {
        epoch: pos.epoch,
        batches_in_epoch: pos.batches_in_epoch,
        run_steps: report.steps,
        samples: report.samples,
        epochs_started: report.epochs,
        seed: pos.seed,
        train_seconds: train_time,
        data: pos.data.as_ref().map(super::checkpoint::data_position),
    });
    c.history = Some(ckpt::History {
        losses: report.losses.clone(),
        task_losses: report
            .task_losses
            .iter()
            .map(|(name, v)| ckpt::Metric {
                name: name.clone(),
                value: *v as f64,
            })
            .collect(),
        evals: report
            .evals
            .iter()
            .map(|(step, m)| ckpt::Eval {
                step: *step,
                metrics: metrics(m),
            })
            .collect(),
    });
    let mut record = record.clone();
    record.engine = trainer.model.engine_name().to_string();
    c.run = Some(record);
    Ok(c)
}

/// Puts a checkpoint's counters and metrics back into `report`; the
/// position to continue from.
fn restore_report(c: &Checkpoint, report: &mut TrainReport, seed: u64) -> Result<(Position, f64)> {
    let p = c.progress.clone().unwrap_or_default();
    if p.seed != seed {
        return Err(CheckpointError::Mismatch {
            path: PathBuf::from("(resume)"),
            why: format!(
                "it was written by a run with seed {}, this run has seed {seed}",
                p.seed
            ),
        }
        .into());
    }
    let h = c.history.clone().unwrap_or_default();
    report.steps = p.run_steps;
    report.samples = p.samples;
    report.epochs = p.epochs_started;
    report.losses = h.losses;
    report.task_losses = h
        .task_losses
        .into_iter()
        .map(|m| (m.name, m.value as f32))
        .collect();
    report.evals = h
        .evals
        .into_iter()
        .map(|e| {
            let m = e.metrics.into_iter().map(|m| (m.name, m.value)).collect();
            (e.step, m)
        })
        .collect();
    Ok((
        Position {
            epoch: p.epoch,
            batches_in_epoch: p.batches_in_epoch,
            seed,
            data: p.data.as_ref().and_then(super::checkpoint::seek_point),
        },
        p.train_seconds,
    ))
}

/// As `train`, with the metric accumulators built by `metrics`.
pub fn train_with(
    plan: &Plan,
    train_data: &mut dyn BatchSource,
    mut eval_data: Option<&mut dyn BatchSource>,
    opts: &TrainOptions,
    device: &Device,
    metrics: MetricFactory<'_>,
) -> Result<TrainReport> {
    let settings = plan.train.clone().unwrap_or_default();
    let (epochs, steps) = match (opts.num_epochs, opts.num_steps) {
        (_, Some(s)) => (None, Some(s)),
        (Some(e), None) => (Some(e), None),
        (None, None) if settings.num_steps > 0 => (None, Some(settings.num_steps)),
        (None, None) if settings.num_epochs > 0 => (Some(settings.num_epochs), None),
        (None, None) => {
            return Err(invalid_plan!(
                "the plan sets neither num_epochs nor num_steps"
            ))
        }
    };
    let seed = opts.seed.unwrap_or(plan.seed);
    let every = opts
        .log_every
        .or((settings.log_step_count_steps > 0).then_some(settings.log_step_count_steps))
        .unwrap_or(DEFAULT_LOG_STEPS)
        .max(1);
    let eval_every = opts.eval_every.unwrap_or(settings.save_checkpoints_steps);
    let ckpt_every = opts
        .checkpoint_every
        .unwrap_or(settings.save_checkpoints_steps);
    let keep = opts
        .keep_checkpoints
        .unwrap_or(settings.keep_checkpoint_max);
    let mut trainer = Trainer::new(plan, seed, device)?;
    let reporter = Reporter::new(opts.progress, steps, every);
    for t in &plan.tasks {
        if t.weight == 0.0 {
            reporter.line(&format!(
                "warning: task \"{}\" has weight 0, its loss is not trained",
                t.tower_name
            ));
        }
    }
    let mut report = TrainReport {
        steps: 0,
        epochs: 0,
        samples: 0,
        losses: Vec::new(),
        task_losses: Vec::new(),
        evals: Vec::new(),
        eval: None,
        train_seconds: 0.0,
        plan: Plan::default(),
        interrupted: false,
        last_checkpoint: None,
        checkpoints_written: 0,
        checkpoint_seconds: 0.0,
        checkpoint_wait_seconds: 0.0,
        checkpoint_write_seconds: 0.0,
    };
    let mut train_time = 0.0f64;
    let mut pos = Position {
        epoch: 0,
        batches_in_epoch: 0,
        seed,
        data: None,
    };
    // Batches of the first epoch opened that were trained before the
    // checkpoint this run resumes from, and where the reader stood then.
    let mut skip = 0u64;
    let mut seek_to = None;
    if let Some(c) = &opts.resume {
        let before = c.run.as_ref().map_or("", |r| r.engine.as_str());
        let now = trainer.model.engine_name();
        if !before.is_empty() && before != now {
            reporter.line(&format!(
                "warning: the run was trained on the {before} engine and resumes on {now}: \
                 it will not be bit-identical to an uninterrupted run"
            ));
        }
        trainer.restore_optimizers(c)?;
        let (p, t) = restore_report(c, &mut report, seed)?;
        skip = p.batches_in_epoch;
        seek_to = p.data.clone();
        pos = p;
        train_time = t;
        reporter.resume_at(report.steps);
    }
    trainer.allocate_optimizer_state();
    let mut writer = opts
        .checkpoint_dir
        .as_ref()
        .map(|d| ckpt_writer::Writer::new(d.clone(), keep));
    let note_written = |report: &mut TrainReport, done: Option<(PathBuf, f64)>| {
        if let Some((path, secs)) = done {
            report.checkpoints_written += 1;
            report.checkpoint_write_seconds += secs;
            report.last_checkpoint = Some(path);
        }
    };
    let mut checkpoint = |trainer: &Trainer,
                          report: &mut TrainReport,
                          pos: &Position,
                          train_time: f64|
     -> Result<()> {
        let Some(w) = writer.as_mut() else {
            return Ok(());
        };
        // The previous write finishes before the next snapshot is taken, so
        // one snapshot at most is alive beside the model (what the memory
        // estimate counts for checkpoints).
        let t1 = Instant::now();
        let previous = w.wait()?;
        report.checkpoint_wait_seconds += t1.elapsed().as_secs_f64();
        note_written(report, previous);
        let t0 = Instant::now();
        let c = snapshot(trainer, report, pos, train_time, &opts.run_record)?;
        report.checkpoint_seconds += t0.elapsed().as_secs_f64();
        let previous = w.submit(c, trainer.global_step)?;
        note_written(report, previous);
        Ok(())
    };
    'epochs: loop {
        if epochs.is_some_and(|e| pos.epoch >= e) || steps.is_some_and(|s| report.steps >= s) {
            break;
        }
        // A reader that seeks to the checkpoint's position yields only the
        // batches not trained yet; any other reopens the epoch, and the
        // loop skips the first `skip` batches.
        let seeked = match seek_to.take() {
            Some(at) => train_data
                .open_at(pos.epoch, &at)
                .map_err(RuntimeError::Data)?,
            None => None,
        };
        pos.batches_in_epoch = if seeked.is_some() { skip } else { 0 };
        let iter = match seeked {
            Some(iter) => iter,
            None => train_data.open(pos.epoch).map_err(RuntimeError::Data)?,
        };
        if skip == 0 {
            // A resumed epoch was counted when it was first opened.
            report.epochs += 1;
        }
        let mut t0 = Instant::now();
        trainer.restart_clock();
        for batch in iter {
            let batch = batch.map_err(RuntimeError::Data)?;
            if pos.batches_in_epoch < skip {
                pos.batches_in_epoch += 1;
                t0 = Instant::now();
                continue;
            }
            let loss = trainer.step(&batch, pos.epoch)?;
            pos.batches_in_epoch += 1;
            report.steps += 1;
            report.samples += batch.rows as u64;
            report.losses.push(loss.total);
            report.task_losses = plan
                .tasks
                .iter()
                .zip(&loss.tasks)
                .map(|(t, &l)| (t.tower_name.clone(), l))
                .collect();
            let now = Instant::now();
            train_time += now.duration_since(t0).as_secs_f64();
            t0 = now;
            reporter.step(
                report.steps,
                loss.total,
                report.samples as f64 / train_time.max(1e-9),
            );
            let mut paused = false;
            if eval_every > 0 && report.steps.is_multiple_of(eval_every) {
                if let Some(ev) = eval_data.as_deref_mut() {
                    let m = eval::evaluate_with(&mut trainer.model, ev, metrics)?;
                    reporter.line(&format_metrics(trainer.global_step, &m));
                    report.evals.push((trainer.global_step, m));
                    paused = true;
                }
            }
            let stop = super::interrupt::requested();
            if stop || (ckpt_every > 0 && report.steps.is_multiple_of(ckpt_every)) {
                pos.data = train_data.position();
                checkpoint(&trainer, &mut report, &pos, train_time)?;
                paused = true;
            }
            if stop {
                report.interrupted = true;
                break 'epochs;
            }
            if paused {
                t0 = Instant::now();
                trainer.restart_clock();
            }
            if steps.is_some_and(|s| report.steps >= s) {
                break 'epochs;
            }
        }
        if pos.batches_in_epoch == 0 {
            return Err(RuntimeError::Data(
                format!(
                    "the training data yielded no batches in epoch {}",
                    pos.epoch
                )
                .into(),
            ));
        }
        if pos.batches_in_epoch < skip {
            return Err(RuntimeError::Data(
                format!(
                    "the training data yielded {} batches in epoch {}, fewer than the {skip} \
                     the checkpoint had already trained: it is not the data the run started with",
                    pos.batches_in_epoch, pos.epoch
                )
                .into(),
            ));
        }
        skip = 0;
        pos.epoch += 1;
    }
    // The closure's borrow of `writer` ends with its last use above.
    if let Some(w) = writer.as_mut() {
        let last = w.wait()?;
        note_written(&mut report, last);
    }
    reporter.finish();
    report.train_seconds = train_time;
    if report.interrupted {
        report.plan = trainer.to_plan()?;
        return Ok(report);
    }
    if let Some(p) = &trainer.phases {
        eprintln!("{}", p.summary());
        if let Some(n) = trainer.model.native_profile() {
            eprint!("{n}");
        }
    }
    // The training program's activations and gradients are not needed
    // any more; evaluation and saving then peak well below training.
    crate::alloc::returning_freed_memory(|| trainer.model.release_buffers());
    if let Some(ev) = eval_data {
        let m = eval::evaluate_with(&mut trainer.model, ev, metrics)?;
        reporter.line(&format_metrics(trainer.global_step, &m));
        report.eval = Some(m);
        crate::alloc::returning_freed_memory(|| trainer.model.release_buffers());
    }
    report.plan = trainer.to_plan()?;
    reporter.line(&format!(
        "trained {} steps ({} samples) in {:.1}s: {:.1} steps/s, {:.0} samples/s",
        report.steps,
        report.samples,
        report.train_seconds,
        report.steps_per_sec(),
        report.samples_per_sec()
    ));
    if report.checkpoints_written > 0 {
        let n = report.checkpoints_written as f64;
        reporter.line(&format!(
            "wrote {} checkpoint(s): training paused {:.0} ms for each snapshot (and waited {:.0} ms for the previous write), written in the background in {:.0} ms",
            report.checkpoints_written,
            report.checkpoint_seconds * 1e3 / n,
            report.checkpoint_wait_seconds * 1e3 / n,
            report.checkpoint_write_seconds * 1e3 / n
        ));
    }
    if let Some(dir) = &opts.out_dir {
        write_outputs(dir, &report)?;
    }
    Ok(report)
}
