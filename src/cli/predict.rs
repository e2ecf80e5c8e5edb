//! `plec predict`: run a plan over parquet data and write one prediction
//! column per task to a parquet file, with chosen input columns (ids)
//! copied through.
//!
//! Output columns: the `--keep` columns first, as they are in the input,
//! then per task `probs_<tower>` (float: the sigmoid probability) for a
//! binary task, `probs_<tower>_<k>` for each class `k` of a multi-class
//! task, and `y_<tower>` for a regression task. Rows stay in input order.
//! The file is written to a temporary sibling and renamed into place, so a
//! failed run leaves no partial output.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{ArrayRef, Float32Array, RecordBatch};
use arrow_schema::{Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::data::{DataSource, ReadOptions};
use crate::proto::plan::{Plan, Task};
use crate::runtime::{self, loss, Model};

use super::run::{self, ExecArgs};
use super::{Outcome, RunError};

#[derive(Debug, clap::Args)]
pub struct PredictArgs {
    /// A plan file (a trained one from `plec run --out`).
    pub plan: PathBuf,
    /// Input data: parquet files, directories or globs.
    #[arg(long, required = true, num_args = 1..)]
    pub data: Vec<String>,
    /// Output parquet file.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Input columns to copy into the output (ids to join on); repeatable.
    #[arg(long, num_args = 1..)]
    pub keep: Vec<String>,
    /// Batch size (default: the plan's `eval_batch_size`, else `batch_size`).
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[command(flatten)]
    pub exec: ExecArgs,
}

/// Output column names of a task's predictions.
pub(crate) fn prediction_columns(task: &Task) -> Vec<String> {
    let t = &task.tower_name;
    if loss::is_regression(task) {
        vec![format!("y_{t}")]
    } else if task.num_class <= 1 {
        vec![format!("probs_{t}")]
    } else {
        (0..task.num_class)
            .map(|k| format!("probs_{t}_{k}"))
            .collect()
    }
}

fn write_error(path: &Path, detail: impl std::fmt::Display) -> RunError {
    RunError::new(format!("cannot write {}: {detail}", path.display()))
}

/// Streams predictions of `plan` over `source` into `output`; returns rows.
fn write_predictions(
    plan: &Plan,
    model: &mut Model,
    source: &DataSource,
    batch_size: usize,
    output: &Path,
) -> Result<u64, RunError> {
    let pred_names: Vec<Vec<String>> = plan.tasks.iter().map(prediction_columns).collect();
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".plec-predict-")
        .suffix(".parquet.tmp")
        .tempfile_in(dir)
        .map_err(|e| write_error(output, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer: Option<(ArrowWriter<std::fs::File>, SchemaRef)> = None;
    let mut rows = 0u64;
    for item in source.batches_with_kept(&ReadOptions::eval(batch_size)) {
        let (batch, kept) = item.map_err(|e| run::data_error(&e))?;
        let preds = runtime::predict_batch(model, &batch).map_err(run::runtime_error)?;
        let mut fields = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for (name, arr) in &kept {
            fields.push(Field::new(name, arr.data_type().clone(), true));
            arrays.push(arr.clone());
        }
        for (names, values) in pred_names.iter().zip(&preds) {
            let k = names.len();
            for (c, name) in names.iter().enumerate() {
                let col: Vec<f32> = if k == 1 {
                    values.clone()
                } else {
                    values.iter().skip(c).step_by(k).copied().collect()
                };
                fields.push(Field::new(name, arrow_schema::DataType::Float32, false));
                arrays.push(Arc::new(Float32Array::from(col)));
            }
        }
        if writer.is_none() {
            let schema: SchemaRef = Arc::new(Schema::new(fields));
            let file = tmp.reopen().map_err(|e| write_error(output, e))?;
            let w = ArrowWriter::try_new(file, schema.clone(), Some(props.clone()))
                .map_err(|e| write_error(output, e))?;
            writer = Some((w, schema));
        }
        if let Some((w, schema)) = writer.as_mut() {
            let rb =
                RecordBatch::try_new(schema.clone(), arrays).map_err(|e| write_error(output, e))?;
            w.write(&rb).map_err(|e| write_error(output, e))?;
        }
        rows += batch.rows as u64;
    }
    let Some((w, _)) = writer else {
        return Err(RunError::new(format!(
            "the input {} has no rows; nothing to predict",
            source
                .files()
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    w.close().map_err(|e| write_error(output, e))?;
    tmp.persist(output)
        .map_err(|e| write_error(output, e.error))?;
    Ok(rows)
}

pub(crate) fn execute(args: &PredictArgs) -> Result<Outcome, RunError> {
    let (device, _) = args.exec.setup()?;
    let plan = match run::load_plan(&args.plan, 0)? {
        Ok(p) => p,
        Err(outcome) => return Ok(outcome),
    };
    let outputs: Vec<String> = plan.tasks.iter().flat_map(prediction_columns).collect();
    if let Some(clash) = args.keep.iter().find(|k| outputs.contains(k)) {
        return Err(RunError::new(format!(
            "--keep column `{clash}` has the name of a prediction column"
        ))
        .with_help("rename the input column, or leave it out of --keep"));
    }
    for (i, k) in args.keep.iter().enumerate() {
        if args.keep[..i].contains(k) {
            return Err(RunError::new(format!("--keep names column `{k}` twice")));
        }
    }
    let batch = run::eval_batch_size(&plan, args.batch_size, None)?;
    args.exec.check_memory(&plan, batch, false)?;
    let source = DataSource::open_with_keep(&plan, &args.data, &args.keep)
        .map_err(|e| run::data_error(&e))?;
    let mut model = Model::from_plan(&plan, &device).map_err(run::runtime_error)?;
    model.freeze();
    let t0 = Instant::now();
    let rows = write_predictions(&plan, &mut model, &source, batch, &args.output)?;
    let seconds = t0.elapsed().as_secs_f64();
    println!(
        "plec predict: {rows} rows in {seconds:.1}s ({:.0} samples/s) -> {}: {}",
        rows as f64 / seconds.max(1e-9),
        args.output.display(),
        args.keep
            .iter()
            .cloned()
            .chain(outputs)
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(Outcome::Clean)
}
