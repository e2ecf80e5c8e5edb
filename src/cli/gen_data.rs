//! `plec gen-data`: synthetic parquet data for a config (or plan): exactly
//! the columns and types it reads, skewed id frequencies, and labels from a
//! planted ground-truth model (see `data::synth`). Prints the Bayes-optimal
//! AUC of each binary task on the eval split: the best AUC any model can
//! reach on that data.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::data::{self, SynthReport};
use crate::proto::plan::Plan;

use super::run::{self, render_table};
use super::{Outcome, RunError};

#[derive(Debug, clap::Args)]
pub struct GenDataArgs {
    /// Config file (or plan file) whose features and labels the data serves.
    pub config: PathBuf,
    /// Training rows (`DIR/train.parquet`).
    #[arg(long)]
    pub rows: usize,
    /// Evaluation rows (`DIR/eval.parquet`); default: a quarter of --rows.
    #[arg(long)]
    pub eval_rows: Option<usize>,
    /// Output directory.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Seed of the planted model and the drawn values.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Generates the data and returns the report.
pub(crate) fn generate(
    plan: &Plan,
    rows: usize,
    eval_rows: usize,
    seed: u64,
    out: &Path,
) -> Result<SynthReport, RunError> {
    if rows == 0 {
        return Err(RunError::new("--rows must be at least 1"));
    }
    data::generate(plan, rows, eval_rows, seed, out).map_err(|e| run::data_error(&e))
}

/// Bayes AUC per binary task, as a table.
pub(crate) fn truth_table(report: &SynthReport) -> String {
    let mut rows = vec![vec![
        "task".to_string(),
        "label".to_string(),
        "train mean".to_string(),
        "eval mean".to_string(),
        "bayes auc (eval)".to_string(),
    ]];
    for t in &report.tasks {
        rows.push(vec![
            t.tower_name.clone(),
            t.label.clone(),
            format!("{:.4}", t.train_label_mean),
            format!("{:.4}", t.eval_label_mean),
            if t.binary {
                format!("{:.4}", t.bayes_auc_eval)
            } else {
                format!("- (regression, noise mse {:.4})", t.bayes_mse_eval)
            },
        ]);
    }
    render_table(&rows)
}

pub(crate) fn execute(args: &GenDataArgs) -> Result<Outcome, RunError> {
    let plan = match run::load_plan(&args.config, 0)? {
        Ok(p) => p,
        Err(outcome) => return Ok(outcome),
    };
    let eval_rows = args.eval_rows.unwrap_or((args.rows / 4).max(1));
    let t0 = Instant::now();
    let report = generate(&plan, args.rows, eval_rows, args.seed, &args.output)?;
    println!(
        "plec gen-data: {} ({} rows), {} ({} rows), {} columns, seed {}, in {:.1}s",
        report.train_path.display(),
        report.train_rows,
        report.eval_path.display(),
        report.eval_rows,
        report.columns.len(),
        args.seed,
        t0.elapsed().as_secs_f64()
    );
    print!("{}", truth_table(&report));
    Ok(Outcome::Clean)
}
