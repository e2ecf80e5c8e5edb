//! `plec run`: train a plan (or a config, compiled on the fly) on parquet
//! data (on the native CPU engine, or candle: `--engine`), evaluate it, and
//! write the trained plan and metrics.
//!
//! Also the pieces `eval`, `predict`, `gen-data`, `demo` and `bench`
//! share: loading a plan or compiling a config ([`load_plan`]), the device
//! and thread flags ([`ExecArgs`]), parquet batch sources, error texts for
//! data and runtime errors, and the per-task metrics table.
//!
//! Outputs are all-or-nothing: training writes into a hidden staging
//! directory inside `--out` (`.plec-run-*`), and only a run that finished
//! moves `plan.bin` and `metrics.json` into `--out`. A run that fails (bad
//! data, divergence) or is interrupted leaves no `plan.bin` or
//! `metrics.json` behind, only its checkpoints.
//!
//! Checkpoints go to `--out/checkpoints` (see `runtime::checkpoint`), every
//! `save_checkpoints_steps` (`--checkpoint-every`) and on Ctrl-C or
//! SIGTERM; `--resume DIR` continues from the newest (see `resume`).

mod resume;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::Device;

use crate::data::{DataError, DataSource, ReadOptions, SeekPoint};
use crate::plan::file as plan_file;
use crate::proto::plan::Plan;
use crate::runtime::{self, BatchIter, BatchSource, BoxError, Progress, RuntimeError};

use super::compile;
use super::{Outcome, RunError};
use crate::pipeline::{self, BuildOptions};

/// Default batch size when the plan leaves it 0 (TorchEasyRec's default).
pub(crate) const DEFAULT_BATCH_SIZE: usize = 1024;

/// Device and thread flags shared by the commands that run a model.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {
    /// Matrix-multiply threads (default: the number of CPU cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Threads of candle's element-wise pool. Its workers spin while they
    /// wait, so more than one slows training down on a busy machine.
    #[arg(long, default_value_t = 1)]
    pub elementwise_threads: usize,
    /// Device to run on: `cpu`, `cuda` or `cuda:N` (needs a build with
    /// `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Matrix-multiply precision on the CPU: `fp32`, or `bf16` (inputs
    /// rounded to bf16 on the CPU's AMX tiles or AVX512-BF16 dot products, f32
    /// accumulation, f32 master weights and optimizer state). Without either, bf16 runs in
    /// fp32.
    #[arg(long, default_value = "fp32")]
    pub precision: runtime::exec::native::Precision,
    /// Executor on the CPU: `auto` (the native engine; candle, with a
    /// notice, for a plan with an op it cannot run), `native` (an op it
    /// cannot run is an error) or `candle` (the reference engine). The
    /// default reads `PLEC_ENGINE`, else `auto`.
    #[arg(long)]
    pub engine: Option<runtime::EngineChoice>,
    /// Memory the run may use (e.g. `8G`, `512M`); the default is what the
    /// machine (or its cgroup) has available. A model whose estimate is
    /// larger stops before anything is allocated, with the estimate by part.
    #[arg(long, value_parser = crate::plan::memory::parse_bytes)]
    pub max_memory: Option<u64>,
}

impl Default for ExecArgs {
    fn default() -> Self {
        ExecArgs {
            threads: None,
            elementwise_threads: 1,
            device: "cpu".to_string(),
            precision: runtime::exec::native::Precision::F32,
            engine: None,
            max_memory: None,
        }
    }
}

impl ExecArgs {
    /// Stops with the estimate by part when `plan` at `batch` rows would
    /// not fit in the memory allowed (`--max-memory`, else available).
    pub fn check_memory(&self, plan: &Plan, batch: usize, training: bool) -> Result<(), RunError> {
        self.check_run_memory(plan, batch, training, false)
    }

    /// As [`Self::check_memory`], for a training run that writes
    /// `checkpoints` (one snapshot more while a checkpoint is written).
    pub fn check_run_memory(
        &self,
        plan: &Plan,
        batch: usize,
        training: bool,
        checkpoints: bool,
    ) -> Result<(), RunError> {
        let estimate =
            crate::plan::memory::Estimate::of_run(plan, batch as u64, training, checkpoints);
        let what = match training {
            true => format!("train at batch {batch}"),
            false => format!("evaluate at batch {batch}"),
        };
        crate::plan::memory::fits(&what, estimate.total(), &estimate, self.max_memory).map_err(
            |e| {
                RunError::from_error(e).with_help(
                    "lower --batch-size, make the largest layers or tables smaller, or raise --max-memory",
                )
            },
        )
    }
}

impl ExecArgs {
    /// Sets candle's thread counts (before any tensor work) and opens the
    /// device. Returns the device and the matmul thread count.
    pub fn setup(&self) -> Result<(Device, usize), RunError> {
        let threads = match self.threads {
            Some(0) => return Err(RunError::new("--threads must be at least 1")),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        if self.elementwise_threads == 0 {
            return Err(RunError::new("--elementwise-threads must be at least 1"));
        }
        // A bad PLEC_ISA is the user's error, reported before any work.
        runtime::exec::native::isa::init().map_err(RunError::new)?;
        runtime::set_threads(threads, self.elementwise_threads);
        let device = parse_device(&self.device)?;
        if self.precision == runtime::exec::native::Precision::Bf16 {
            if !device.is_cpu() {
                return Err(RunError::new(
                    "--precision bf16 is for the CPU (AMX or AVX512-BF16); on CUDA use fp32",
                ));
            }
            if !self.precision.runs_bf16() {
                eprintln!(
                    "note: this CPU has neither AMX-BF16 tiles nor AVX512-BF16 (or PLEC_ISA caps them); --precision bf16 runs in fp32"
                );
            }
        }
        runtime::exec::native::set_default_precision(self.precision);
        if let Some(e) = self.engine {
            runtime::set_engine_choice(e);
        }
        Ok((device, threads))
    }
}

/// Parses `cpu`, `cuda` or `cuda:N` and opens that device.
pub(crate) fn parse_device(name: &str) -> Result<Device, RunError> {
    let lower = name.trim().to_ascii_lowercase();
    if lower == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = if lower == "cuda" {
        0
    } else if let Some(n) = lower.strip_prefix("cuda:") {
        n.parse::<usize>().map_err(|_| {
            RunError::new(format!(
                "bad device `{name}`: the CUDA device number must be a whole number, as in `cuda:0`"
            ))
        })?
    } else {
        return Err(RunError::new(format!(
            "unknown device `{name}`: use `cpu`, `cuda` or `cuda:N`"
        )));
    };
    cuda_device(ordinal)
}

#[cfg(feature = "cuda")]
fn cuda_device(ordinal: usize) -> Result<Device, RunError> {
    Device::new_cuda(ordinal)
        .map_err(|e| RunError::new(format!("cannot open CUDA device {ordinal}: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(ordinal: usize) -> Result<Device, RunError> {
    Err(RunError::new(format!(
        "cannot use cuda:{ordinal}: this plec was built without CUDA support\n  \
         help: rebuild with `cargo build --release --features cuda` (needs the CUDA toolkit's nvcc; \
         `scripts/build-cuda.sh` installs it from PyPI and builds, see the README's CUDA section), \
         or run with `--device cpu`"
    )))
}

/// A plan read from a plan file, or compiled from a config file.
pub(crate) fn load_plan(path: &Path, seed: u64) -> Result<Result<Plan, Outcome>, RunError> {
    let bytes = std::fs::read(path)
        .map_err(|e| RunError::new(format!("cannot read {}: {e}", path.display())))?;
    if bytes.starts_with(plan_file::MAGIC) {
        return plan_file::decode(&bytes, path)
            .map(Ok)
            .map_err(|e| RunError::new(e.to_string()));
    }
    let source = String::from_utf8(bytes).map_err(|_| {
        RunError::new(format!(
            "{} is neither a plec plan nor a text config (it is not UTF-8)",
            path.display()
        ))
    })?;
    compile_source(path, &source, seed)
}

/// Compiles a config text to a plan; errors are reported as `compile` does
/// (`Err(Outcome::Problems)`: exit 1).
pub(crate) fn compile_source(
    path: &Path,
    source: &str,
    seed: u64,
) -> Result<Result<Plan, Outcome>, RunError> {
    let opts = BuildOptions {
        seed,
        ..BuildOptions::default()
    };
    match pipeline::build(source, opts) {
        Ok(mut built) => {
            built.plan.source_path = path.display().to_string();
            Ok(Ok(built.plan))
        }
        Err(e) => compile::report(path, source, e).map(Err),
    }
}

/// The batch size of a training pass: the flag, else the plan's.
pub(crate) fn train_batch_size(plan: &Plan, flag: Option<usize>) -> Result<usize, RunError> {
    let data = plan.data.clone().unwrap_or_default();
    match flag {
        Some(0) => Err(RunError::new("--batch-size must be at least 1")),
        Some(n) => Ok(n),
        None if data.batch_size > 0 => Ok(data.batch_size as usize),
        None => Ok(DEFAULT_BATCH_SIZE),
    }
}

/// The batch size of an evaluation pass: `flag`, else the plan's
/// `eval_batch_size`, else the training batch size (`train_flag`, else the
/// plan's `batch_size`).
pub(crate) fn eval_batch_size(
    plan: &Plan,
    flag: Option<usize>,
    train_flag: Option<usize>,
) -> Result<usize, RunError> {
    let data = plan.data.clone().unwrap_or_default();
    match flag {
        Some(0) => Err(RunError::new("--eval-batch-size must be at least 1")),
        Some(n) => Ok(n),
        None if data.eval_batch_size > 0 => Ok(data.eval_batch_size as usize),
        None => train_batch_size(plan, train_flag),
    }
}

/// Opens (and checks the columns of) the parquet inputs for `plan`.
pub(crate) fn open_data(plan: &Plan, inputs: &[String]) -> Result<DataSource, RunError> {
    DataSource::open(plan, inputs).map_err(|e| data_error(&e))
}

/// A training source: shuffled per epoch as the plan says.
pub(crate) fn train_source(
    source: DataSource,
    plan: &Plan,
    batch_size: usize,
    seed: u64,
) -> TrainSource {
    TrainSource {
        source,
        opts: ReadOptions::train(plan, batch_size, seed, 0),
        position: Arc::default(),
    }
}

/// A pass-per-epoch reader over parquet files for training.
#[derive(Debug, Clone)]
pub(crate) struct TrainSource {
    source: DataSource,
    opts: ReadOptions,
    /// The point of the open pass after its last batch handed out (set by
    /// the pass's iterator, read when a checkpoint is written).
    position: Arc<Mutex<Option<SeekPoint>>>,
}

impl TrainSource {
    fn tracked(&self, batches: crate::data::Batches) -> BatchIter {
        let position = Arc::clone(&self.position);
        if let Ok(mut p) = position.lock() {
            *p = None;
        }
        let mut batches = batches;
        Box::new(std::iter::from_fn(move || {
            let next = batches.next()?;
            if let (Some(at), Ok(mut p)) = (batches.position(), position.lock()) {
                *p = Some(at.clone());
            }
            Some(next.map_err(|e| Box::new(e) as BoxError))
        }))
    }
}

impl BatchSource for TrainSource {
    fn open(&mut self, epoch: u64) -> Result<BatchIter, BoxError> {
        let mut opts = self.opts.clone();
        opts.epoch = epoch;
        Ok(self.tracked(self.source.batches(&opts)))
    }

    fn position(&self) -> Option<SeekPoint> {
        self.position.lock().ok().and_then(|p| p.clone())
    }

    fn open_at(&mut self, epoch: u64, at: &SeekPoint) -> Result<Option<BatchIter>, BoxError> {
        let mut opts = self.opts.clone();
        opts.epoch = epoch;
        Ok(Some(self.tracked(self.source.batches_from(&opts, at))))
    }
}

/// An evaluation source: every row, in file order.
#[derive(Debug, Clone)]
pub(crate) struct EvalSource {
    source: DataSource,
    opts: ReadOptions,
}

impl EvalSource {
    pub(crate) fn new(source: DataSource, batch_size: usize) -> Self {
        EvalSource {
            source,
            opts: ReadOptions::eval(batch_size),
        }
    }

    /// Rows in the evaluation files.
    pub(crate) fn num_rows(&self) -> u64 {
        self.source.num_rows()
    }
}

impl BatchSource for EvalSource {
    fn open(&mut self, _epoch: u64) -> Result<BatchIter, BoxError> {
        Ok(Box::new(
            self.source
                .batches(&self.opts)
                .map(|r| r.map_err(|e| Box::new(e) as BoxError)),
        ))
    }
}

/// A data error as a run error (message and help).
pub(crate) fn data_error(e: &DataError) -> RunError {
    let err = RunError::new(e.to_string());
    match miette::Diagnostic::help(e) {
        Some(h) => err.with_help(h.to_string()),
        None => err,
    }
}

/// A runtime error as a run error; data errors keep their file, row and help.
pub(crate) fn runtime_error(e: RuntimeError) -> RunError {
    if let RuntimeError::Data(inner) = &e {
        if let Some(d) = inner.downcast_ref::<DataError>() {
            return data_error(d);
        }
    }
    let help = match &e {
        RuntimeError::Diverged { .. } => {
            Some("lower the learning rate, or check the labels and features for extreme values")
        }
        RuntimeError::InvalidPlan(_) => {
            Some("recompile the plan from its config with `plec compile`")
        }
        RuntimeError::Unsupported { .. } => Some(
            "run it with `--engine auto` (the default: the model runs on the slower candle path) \
             or `--engine candle`",
        ),
        _ => None,
    };
    let err = RunError::from_error(e);
    match help {
        Some(h) => err.with_help(h),
        None => err,
    }
}

/// Splits `<metric>_<tower>` into (metric, tower index), matching the
/// longest tower name.
fn split_metric<'a>(name: &'a str, towers: &[String]) -> Option<(&'a str, usize)> {
    towers
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let prefix = name.strip_suffix(t.as_str())?.strip_suffix('_')?;
            (!prefix.is_empty()).then_some((prefix, i, t.len()))
        })
        .max_by_key(|&(_, _, len)| len)
        .map(|(p, i, _)| (p, i))
}

/// Formats a metric value: NaN as `-`, otherwise six decimals.
fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "-".to_string()
    } else {
        format!("{v:.6}")
    }
}

/// The per-task metrics table: one row per task, one column per metric
/// (`loss`, `auc`, `exact_auc`, `logloss`...); names that name no task are
/// listed below it.
pub(crate) fn metrics_table(plan: &Plan, metrics: &[(String, f64)]) -> String {
    let towers: Vec<String> = plan.tasks.iter().map(|t| t.tower_name.clone()).collect();
    let mut columns: Vec<&str> = Vec::new();
    let mut cells: Vec<Vec<Option<f64>>> = vec![Vec::new(); towers.len()];
    let mut other: Vec<(&str, f64)> = Vec::new();
    for (name, v) in metrics {
        match split_metric(name, &towers) {
            Some((metric, ti)) => {
                let ci = match columns.iter().position(|c| *c == metric) {
                    Some(ci) => ci,
                    None => {
                        columns.push(metric);
                        columns.len() - 1
                    }
                };
                if cells[ti].len() <= ci {
                    cells[ti].resize(ci + 1, None);
                }
                cells[ti][ci] = Some(*v);
            }
            None => other.push((name, *v)),
        }
    }
    let mut rows: Vec<Vec<String>> = vec![std::iter::once("task")
        .chain(columns.iter().copied())
        .map(str::to_string)
        .collect()];
    for (ti, tower) in towers.iter().enumerate() {
        let mut row = vec![tower.clone()];
        for ci in 0..columns.len() {
            row.push(
                cells[ti]
                    .get(ci)
                    .copied()
                    .flatten()
                    .map_or_else(|| "-".to_string(), fmt_value),
            );
        }
        rows.push(row);
    }
    let mut out = render_table(&rows);
    for (name, v) in other {
        out.push_str(&format!("{name}: {}\n", fmt_value(v)));
    }
    out
}

/// Left-aligned first column, right-aligned others, two spaces apart.
pub(crate) fn render_table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c == 0 {
                line.push_str(&format!("{cell:<w$}", w = widths[c]));
            } else {
                line.push_str(&format!("  {cell:>w$}", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A plan file (from `plec compile` or an earlier run) or a config file
    /// (compiled on the fly). Not needed with --resume.
    #[arg(required_unless_present = "resume")]
    pub input: Option<PathBuf>,
    /// Training data: parquet files, directories of `*.parquet` files, or
    /// globs. With --resume, the data the run started with.
    #[arg(long, required_unless_present = "resume", num_args = 1..)]
    pub data: Vec<String>,
    /// Evaluation data (files, directories or globs), evaluated at the end
    /// and every `save_checkpoints_steps`.
    #[arg(long, num_args = 1..)]
    pub eval: Vec<String>,
    /// Passes over the training data (overrides the plan's).
    #[arg(long, conflicts_with = "steps")]
    pub epochs: Option<u64>,
    /// Optimizer steps (overrides the plan's).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Training batch size (default: the plan's `batch_size`).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Evaluation batch size (default: the plan's `eval_batch_size`, else
    /// the training batch size).
    #[arg(long)]
    pub eval_batch_size: Option<usize>,
    /// Run seed (shuffling, dropout; for a config also the initial
    /// parameters). Default: the plan's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Directory for `plan.bin` (the trained plan) and `metrics.json`.
    /// Without it nothing is written.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// Evaluate every this many steps (default: `save_checkpoints_steps`;
    /// 0: only at the end).
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Log a line every this many steps (default: `log_step_count_steps`).
    #[arg(long)]
    pub log_every: Option<u64>,
    /// Write a checkpoint into `--out/checkpoints` every this many steps
    /// (default: `save_checkpoints_steps`; 0: only on Ctrl-C or SIGTERM).
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Checkpoints to keep, the newest (default: `keep_checkpoint_max`;
    /// 0 keeps all).
    #[arg(long)]
    pub keep_checkpoints: Option<u64>,
    /// Continue the run whose `--out` (or checkpoints folder) is DIR from
    /// its newest complete checkpoint: parameters, optimizer state, data
    /// position and metrics so far. Data, batch size and seed are the
    /// run's; steps, epochs and the output directory may be given again.
    #[arg(long, value_name = "DIR", conflicts_with = "init_from")]
    pub resume: Option<PathBuf>,
    /// Warm start: take the values of every table and parameter of PLAN
    /// (an earlier run's plan.bin) whose name and shape match; steps,
    /// optimizer state and metrics start fresh. Ones that do not match are
    /// listed, and the run stops unless --allow-partial.
    #[arg(long, value_name = "PLAN")]
    pub init_from: Option<PathBuf>,
    /// With --init-from: train even when some tables or parameters do not
    /// match (they start from their initial values).
    #[arg(long, requires = "init_from")]
    pub allow_partial: bool,
    /// Log lines instead of a progress bar, even on a terminal.
    #[arg(long, conflicts_with = "quiet")]
    pub no_progress: bool,
    /// No progress output at all.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub exec: ExecArgs,
}

/// What `run_training` did, for `run` and `demo`.
#[derive(Debug)]
pub(crate) struct RunResult {
    pub report: runtime::TrainReport,
    /// Files written into `--out`.
    pub written: Vec<PathBuf>,
}

/// Settings of one training run.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunSettings {
    pub epochs: Option<u64>,
    pub steps: Option<u64>,
    pub batch_size: Option<usize>,
    pub eval_batch_size: Option<usize>,
    pub seed: Option<u64>,
    pub out: Option<PathBuf>,
    pub eval_every: Option<u64>,
    pub log_every: Option<u64>,
    pub progress: Progress,
    pub checkpoint_every: Option<u64>,
    pub keep_checkpoints: Option<u64>,
    /// Continue from this checkpoint (its plan taken out: the plan to train).
    pub resume: Option<crate::proto::checkpoint::Checkpoint>,
}

/// Trains `plan` on `data`, evaluating on `eval` (when not empty); writes
/// the outputs all-or-nothing (see the module doc).
pub(crate) fn run_training(
    plan: &Plan,
    data: &[String],
    eval: &[String],
    settings: &RunSettings,
    device: &Device,
) -> Result<RunResult, RunError> {
    let batch = train_batch_size(plan, settings.batch_size)?;
    let eval_batch = eval_batch_size(plan, settings.eval_batch_size, settings.batch_size)?;
    let seed = settings.seed.unwrap_or(plan.seed);
    // Open (and column-check) every input before any training starts.
    let train_data = open_data(plan, data)?;
    let eval_data = if eval.is_empty() {
        None
    } else {
        Some(EvalSource::new(open_data(plan, eval)?, eval_batch))
    };
    let mut train_src = train_source(train_data, plan, batch, seed);
    let staging = match &settings.out {
        Some(dir) => Some(Staging::new(dir)?),
        None => None,
    };
    let train_settings = plan.train.clone().unwrap_or_default();
    let checkpoint_every = settings
        .checkpoint_every
        .unwrap_or(train_settings.save_checkpoints_steps);
    let keep_checkpoints = settings
        .keep_checkpoints
        .unwrap_or(train_settings.keep_checkpoint_max);
    let out_abs = settings
        .out
        .as_ref()
        .map(|o| std::path::absolute(o).unwrap_or_else(|_| o.clone()));
    let run_record = crate::proto::checkpoint::RunRecord {
        data: resume::absolute(data),
        eval: resume::absolute(eval),
        batch_size: batch as u64,
        eval_batch_size: eval_batch as u64,
        seed,
        epochs: settings.epochs.unwrap_or(0),
        steps: settings.steps.unwrap_or(0),
        has_eval_every: settings.eval_every.is_some(),
        eval_every: settings.eval_every.unwrap_or(0),
        checkpoint_every,
        keep_checkpoints,
        out: out_abs
            .as_ref()
            .map(|o| o.display().to_string())
            .unwrap_or_default(),
        engine: String::new(),
    };
    let opts = runtime::TrainOptions {
        out_dir: staging.as_ref().map(|s| s.path().to_path_buf()),
        num_epochs: settings.epochs,
        num_steps: settings.steps,
        seed: Some(seed),
        log_every: settings.log_every,
        eval_every: settings.eval_every,
        progress: settings.progress,
        checkpoint_dir: out_abs
            .as_ref()
            .map(|o| o.join(runtime::checkpoint::dir::DIR_NAME)),
        checkpoint_every: Some(checkpoint_every),
        keep_checkpoints: Some(keep_checkpoints),
        run_record,
        resume: settings.resume.clone(),
    };
    let mut eval_src = eval_data;
    let report = runtime::train(
        plan,
        &mut train_src,
        eval_src.as_mut().map(|e| e as &mut dyn BatchSource),
        &opts,
        device,
    )
    .map_err(runtime_error)?;
    // An interrupted run has no final outputs, only its checkpoint (the
    // staging directory is dropped).
    let written = match staging {
        Some(s) if !report.interrupted => s.commit(&["plan.bin", "metrics.json"])?,
        _ => Vec::new(),
    };
    Ok(RunResult { report, written })
}

/// A hidden directory inside the output directory that training writes
/// into; [`Staging::commit`] moves its files out, dropping it removes it.
struct Staging {
    dir: PathBuf,
    /// Set when this run created `dir` (removed again on failure if empty).
    created: bool,
    tmp: Option<tempfile::TempDir>,
}

impl Staging {
    fn new(dir: &Path) -> Result<Self, RunError> {
        let created = !dir.exists();
        std::fs::create_dir_all(dir).map_err(|e| {
            RunError::new(format!(
                "cannot create output directory {}: {e}",
                dir.display()
            ))
        })?;
        let tmp = tempfile::Builder::new()
            .prefix(".plec-run-")
            .tempdir_in(dir)
            .map_err(|e| {
                RunError::new(format!(
                    "cannot write into output directory {}: {e}",
                    dir.display()
                ))
            })?;
        Ok(Staging {
            dir: dir.to_path_buf(),
            created,
            tmp: Some(tmp),
        })
    }

    fn path(&self) -> &Path {
        self.tmp.as_ref().map_or(self.dir.as_path(), |t| t.path())
    }

    /// Moves `names` from the staging directory into the output directory
    /// (each a rename: atomic on one file system).
    fn commit(mut self, names: &[&str]) -> Result<Vec<PathBuf>, RunError> {
        let mut written = Vec::new();
        for name in names {
            let from = self.path().join(name);
            let to = self.dir.join(name);
            std::fs::rename(&from, &to).map_err(|e| {
                RunError::new(format!(
                    "cannot move {} to {}: {e}",
                    from.display(),
                    to.display()
                ))
            })?;
            written.push(to);
        }
        self.created = false;
        Ok(written)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        drop(self.tmp.take());
        if self.created {
            // Only removes the directory when it is empty.
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// `--init-from`: copies the matching values of the plan at `from` into
/// `plan`; lists the ones that do not match and fails unless `partial`.
fn init_from(plan: &mut Plan, from: &Path, partial: bool) -> Result<(), RunError> {
    let source = plan_file::load(from).map_err(|e| {
        RunError::from_error(e)
            .with_help("--init-from takes a plan file: an earlier run's plan.bin")
    })?;
    let warm = crate::plan::warm::warm_start(plan, &source);
    report_warm_start(
        &warm,
        plan.tables.len() + plan.params.len(),
        &WarmLabels {
            from,
            ours: "this run",
            theirs: "--init-from",
            units: "tables and parameters",
            flag: "--allow-partial",
        },
        partial,
    )
}

/// How a warm start's report names its two sides.
pub(crate) struct WarmLabels<'a> {
    /// The file the values came from.
    pub from: &'a Path,
    /// Column header of the plan being filled (`this run`).
    pub ours: &'a str,
    /// Column header of the source (`--init-from`).
    pub theirs: &'a str,
    /// What was counted (`tables and parameters`).
    pub units: &'a str,
    /// The flag that accepts a partial copy.
    pub flag: &'a str,
}

/// Reports a warm start (`--init-from`, `plec import`): how much was
/// copied, and the table of names that are not in both with one shape,
/// which is an error unless `partial`.
pub(crate) fn report_warm_start(
    warm: &crate::plan::warm::WarmStart,
    total: usize,
    labels: &WarmLabels<'_>,
    partial: bool,
) -> Result<(), RunError> {
    eprintln!(
        "init from {}: copied {} of {} {}",
        labels.from.display(),
        warm.copied,
        total,
        labels.units
    );
    if warm.mismatched.is_empty() {
        return Ok(());
    }
    let rows = crate::plan::compare::difference_rows(&warm.mismatched, labels.ours, labels.theirs);
    let table = render_table(&rows);
    if partial {
        eprintln!(
            "{} not copied (they start from their initial values):\n{table}",
            warm.mismatched.len()
        );
        return Ok(());
    }
    Err(RunError::new(format!(
        "{} tables or parameters of {} do not match {}'s by name and shape:\n{}",
        warm.mismatched.len(),
        labels.from.display(),
        labels.ours,
        table.trim_end()
    ))
    .with_help(format!(
        "pass {} to go on with these starting from their initial values, \
         or change the config back (embedding_dim, hash_bucket_size, hidden_units); \
         `plec diff` compares two plans",
        labels.flag
    )))
}

/// Progress mode from the flags.
fn progress_of(no_progress: bool, quiet: bool) -> Progress {
    if quiet {
        Progress::Silent
    } else if no_progress {
        Progress::Lines
    } else {
        Progress::Auto
    }
}

pub(crate) fn execute(args: &RunArgs) -> Result<Outcome, RunError> {
    let (device, threads) = args.exec.setup()?;
    let resumed = match &args.resume {
        Some(dir) => Some(resume::load(dir)?),
        None => None,
    };
    let plan = match (&resumed, &args.input) {
        (Some(r), input) => {
            if let Some(i) = input {
                eprintln!(
                    "note: resuming from {}: the plan comes from the checkpoint, {} is not read",
                    r.path.display(),
                    i.display()
                );
            }
            r.plan.clone()
        }
        (None, Some(input)) => match load_plan(input, args.seed.unwrap_or(0))? {
            Ok(mut p) => {
                if let Some(from) = &args.init_from {
                    init_from(&mut p, from, args.allow_partial)?;
                }
                p
            }
            Err(outcome) => return Ok(outcome),
        },
        (None, None) => return Err(RunError::new("give a plan or config, or --resume DIR")),
    };
    let input_name = match (&args.input, &resumed) {
        (Some(i), _) => i.display().to_string(),
        (None, Some(r)) => r.path.display().to_string(),
        (None, None) => String::new(),
    };
    let settings = RunSettings {
        epochs: args.epochs,
        steps: args.steps,
        batch_size: args.batch_size,
        eval_batch_size: args.eval_batch_size,
        seed: args.seed,
        out: args.out.clone(),
        eval_every: args.eval_every,
        log_every: args.log_every,
        progress: progress_of(args.no_progress, args.quiet),
        checkpoint_every: args.checkpoint_every,
        keep_checkpoints: args.keep_checkpoints,
        resume: None,
    };
    let (data, eval, settings) = match resumed {
        Some(r) => {
            let (data, eval, mut settings) = resume::settings(args, &r, settings)?;
            let p = r.checkpoint.progress.clone().unwrap_or_default();
            let reading = match &p.data {
                Some(d) => format!(
                    "; reading on from file {}, row group {}, row {} of the epoch's order",
                    d.file, d.row_group, d.row
                ),
                None => "; re-reading the epoch up to there".to_string(),
            };
            eprintln!(
                "resuming from {} (step {} of the run, epoch {}, batch {}{reading})",
                r.path.display(),
                p.run_steps,
                p.epoch,
                p.batches_in_epoch
            );
            settings.resume = Some(r.checkpoint);
            (data, eval, settings)
        }
        None => (args.data.clone(), args.eval.clone(), settings),
    };
    // A run with an output directory writes checkpoints (every
    // `--checkpoint-every` steps, and when it is stopped).
    args.exec.check_run_memory(
        &plan,
        train_batch_size(&plan, settings.batch_size)?,
        true,
        settings.out.is_some(),
    )?;
    let started = Instant::now();
    runtime::interrupt::install();
    let result = run_training(&plan, &data, &eval, &settings, &device)?;
    let r = &result.report;
    if r.interrupted {
        match &r.last_checkpoint {
            Some(c) => {
                let out = settings.out.as_deref().unwrap_or(Path::new("."));
                eprintln!(
                    "interrupted after step {}: wrote checkpoint {}\n  continue with: plec run --resume {}",
                    r.steps,
                    c.display(),
                    out.display()
                );
            }
            None => eprintln!(
                "interrupted after step {}: no --out directory given, nothing was saved",
                r.steps
            ),
        }
        return Ok(Outcome::Interrupted);
    }
    let final_loss = r.losses.last().copied().unwrap_or(f32::NAN);
    if device.is_cpu() {
        println!("plec run: {}", runtime::exec::native::isa::describe());
    }
    println!(
        "plec run: {}: {} steps, {} epoch{}, {} samples in {:.1}s ({:.0} samples/s on {threads} thread{}), final loss {final_loss:.6}",
        input_name,
        r.steps,
        r.epochs,
        if r.epochs == 1 { "" } else { "s" },
        r.samples,
        r.train_seconds,
        r.samples_per_sec(),
        if threads == 1 { "" } else { "s" },
    );
    match &r.eval {
        Some(m) => {
            println!("evaluation:");
            print!("{}", metrics_table(&plan, m));
        }
        None => {
            let losses: Vec<(String, f64)> = r
                .task_losses
                .iter()
                .map(|(t, l)| (format!("train_loss_{t}"), *l as f64))
                .collect();
            println!("last training step (no --eval data given):");
            print!("{}", metrics_table(&plan, &losses));
        }
    }
    if result.written.is_empty() {
        eprintln!("note: no --out directory given, the trained plan was not saved");
    } else {
        let names: Vec<String> = result
            .written
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        println!("wrote {}", names.join(", "));
    }
    eprintln!("done in {:.1}s", started.elapsed().as_secs_f64());
    Ok(Outcome::Clean)
}
