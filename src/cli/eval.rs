//! `plec eval`: evaluate a plan (usually a trained one from `plec run`) on
//! parquet data and print each task's metrics, as a table or as JSON.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;

use crate::runtime::{self, Model};

use super::run::{self, EvalSource, ExecArgs};
use super::{Outcome, RunError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// A plan file (a trained one from `plec run --out`), or a config
    /// (evaluated with freshly initialized parameters).
    pub plan: PathBuf,
    /// Evaluation data: parquet files, directories or globs.
    #[arg(long, required = true, num_args = 1..)]
    pub data: Vec<String>,
    /// Batch size (default: the plan's `eval_batch_size`, else `batch_size`).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,
    #[command(flatten)]
    pub exec: ExecArgs,
}

pub(crate) fn execute(args: &EvalArgs) -> Result<Outcome, RunError> {
    let (device, _) = args.exec.setup()?;
    let plan = match run::load_plan(&args.plan, 0)? {
        Ok(p) => p,
        Err(outcome) => return Ok(outcome),
    };
    let batch = run::eval_batch_size(&plan, args.batch_size, None)?;
    args.exec.check_memory(&plan, batch, false)?;
    let mut source = EvalSource::new(run::open_data(&plan, &args.data)?, batch);
    let rows = source.num_rows();
    let mut model = Model::from_plan(&plan, &device).map_err(run::runtime_error)?;
    model.freeze();
    let t0 = Instant::now();
    let metrics = runtime::evaluate(&mut model, &mut source).map_err(run::runtime_error)?;
    let seconds = t0.elapsed().as_secs_f64();
    if crate::runtime::profile::enabled() {
        // Per-op times of the evaluation passes (`PLEC_PROFILE`), as `plec run` prints
        // them for training; on stderr, so `--format json` stays one object.
        if let Some(table) = model.native_profile() {
            eprint!("{table}");
        }
    }
    match args.format {
        Format::Json => {
            let obj: serde_json::Map<String, serde_json::Value> =
                metrics.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            let out = json!({
                "plan": args.plan.display().to_string(),
                "trained_steps": plan.trained_steps,
                "rows": rows,
                "seconds": seconds,
                "forward_seconds": model.forward_seconds(),
                "metrics": obj,
            });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
        Format::Human => {
            println!(
                "plec eval: {} ({} trained steps) on {rows} rows in {seconds:.1}s ({:.0} samples/s)",
                args.plan.display(),
                plan.trained_steps,
                rows as f64 / seconds.max(1e-9),
            );
            print!("{}", run::metrics_table(&plan, &metrics));
        }
    }
    Ok(Outcome::Clean)
}
