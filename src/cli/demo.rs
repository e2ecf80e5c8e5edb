//! `plec demo`: the embedded PLE example (`examples/ple_demo.config`), end
//! to end in one command: check, compile, generate synthetic data, train
//! one epoch, evaluate, and compare each task's AUC with the Bayes limit
//! of the data. Sized to finish in under two minutes on 2 CPU cores.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::diag::Severity;
use crate::ir;
use crate::runtime::Progress;
use crate::schema::Schema;

use super::compile::{self, human_count};
use super::gen_data;
use super::run::{self, render_table, ExecArgs, RunSettings};
use super::{Outcome, RunError};
use crate::pipeline::{self, check_source, BuildOptions};

/// The demo's config: the PLE example with smaller hash buckets.
pub(crate) const DEMO_CONFIG: &str = include_str!("../../examples/ple_demo.config");

/// Default training rows: one epoch trains in about a minute on 2 cores.
pub(crate) const DEFAULT_ROWS: usize = 100_000;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Training rows to generate (evaluation rows: a quarter of this).
    #[arg(long, default_value_t = DEFAULT_ROWS)]
    pub rows: usize,
    /// Keep everything (config, data, trained plan, metrics) in this
    /// directory instead of a temporary one.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of the data, the initial parameters and the run.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub exec: ExecArgs,
}

fn step(n: usize, title: &str) {
    println!("\n[{n}/5] {title}");
}

pub(crate) fn execute(args: &DemoArgs) -> Result<Outcome, RunError> {
    let started = Instant::now();
    let (device, threads) = args.exec.setup()?;
    if args.rows < 100 {
        return Err(RunError::new("--rows must be at least 100"));
    }
    let tmp;
    let dir: &Path = match &args.out {
        Some(d) => {
            std::fs::create_dir_all(d)
                .map_err(|e| RunError::new(format!("cannot create {}: {e}", d.display())))?;
            d
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("plec-demo-")
                .tempdir()
                .map_err(|e| RunError::new(format!("cannot create a temporary directory: {e}")))?;
            tmp.path()
        }
    };
    let config_path = dir.join("ple_demo.config");
    std::fs::write(&config_path, DEMO_CONFIG)
        .map_err(|e| RunError::new(format!("cannot write {}: {e}", config_path.display())))?;
    println!(
        "plec demo: PLE (ctr, cvr) on synthetic data in {}, {threads} thread{}",
        dir.display(),
        if threads == 1 { "" } else { "s" }
    );

    step(1, "check");
    let t = Instant::now();
    let schema = Schema::builtin().map_err(|e| RunError::new(e.to_string()))?;
    let checked = check_source(&schema, DEMO_CONFIG);
    let count = |s: Severity| {
        checked
            .diagnostics
            .iter()
            .filter(|d| d.severity == s)
            .count()
    };
    println!(
        "  {}: {} diagnostics ({} errors, {} warnings) in {:.0} ms",
        config_path.display(),
        checked.diagnostics.len(),
        count(Severity::Error),
        count(Severity::Warning),
        t.elapsed().as_secs_f64() * 1e3
    );

    step(2, "compile");
    let t = Instant::now();
    let opts = BuildOptions {
        seed: args.seed,
        ..BuildOptions::default()
    };
    let mut built = match pipeline::build(DEMO_CONFIG, opts) {
        Ok(b) => b,
        Err(e) => return compile::report(&config_path, DEMO_CONFIG, e),
    };
    built.plan.source_path = config_path.display().to_string();
    let s = ir::summarize(&built.graph, &built.plan);
    println!(
        "  {} model: {} features, {} extraction layers, {} experts, {} gates, {} towers",
        s.model_kind, s.features, s.layers, s.experts, s.gates, s.towers
    );
    println!(
        "  {} dense params, {} embedding params, {} FLOP/sample forward, {} ops ({:.0} ms)",
        human_count(s.dense_params),
        human_count(s.embedding_params),
        human_count(s.forward_flops_per_sample),
        s.ops,
        t.elapsed().as_secs_f64() * 1e3
    );
    let plan = built.plan;

    step(3, "gen-data");
    let t = Instant::now();
    let data_dir = dir.join("data");
    let eval_rows = (args.rows / 4).max(1);
    let truth = gen_data::generate(&plan, args.rows, eval_rows, args.seed, &data_dir)?;
    println!(
        "  {} ({} rows), {} ({} rows) in {:.1}s",
        truth.train_path.display(),
        truth.train_rows,
        truth.eval_path.display(),
        truth.eval_rows,
        t.elapsed().as_secs_f64()
    );

    step(4, "train one epoch");
    let settings = RunSettings {
        epochs: Some(1),
        seed: Some(args.seed),
        out: Some(dir.join("run")),
        progress: Progress::Auto,
        ..RunSettings::default()
    };
    let train = vec![truth.train_path.display().to_string()];
    let eval = vec![truth.eval_path.display().to_string()];
    let result = run::run_training(&plan, &train, &eval, &settings, &device)?;
    let r = &result.report;
    println!(
        "  {} steps of batch {}, {} samples in {:.1}s ({:.0} samples/s, {:.1} GFLOP/s), final loss {:.4}",
        r.steps,
        run::train_batch_size(&plan, None)?,
        r.samples,
        r.train_seconds,
        r.samples_per_sec(),
        3.0 * plan.forward_flops_per_sample as f64 * r.samples_per_sec() / 1e9,
        r.losses.last().copied().unwrap_or(f32::NAN),
    );

    step(5, "evaluate");
    let metrics = r.eval.clone().unwrap_or_default();
    let get = |name: String| {
        metrics
            .iter()
            .find(|(k, _)| *k == name)
            .map_or(f64::NAN, |(_, v)| *v)
    };
    let mut rows = vec![vec![
        "task".to_string(),
        "auc".to_string(),
        "exact auc".to_string(),
        "bayes auc".to_string(),
        "gap".to_string(),
        "logloss".to_string(),
    ]];
    for task in &truth.tasks {
        let t = &task.tower_name;
        let exact = get(format!("exact_auc_{t}"));
        rows.push(vec![
            t.clone(),
            format!("{:.4}", get(format!("auc_{t}"))),
            format!("{exact:.4}"),
            format!("{:.4}", task.bayes_auc_eval),
            format!("{:+.4}", exact - task.bayes_auc_eval),
            format!("{:.4}", get(format!("logloss_{t}"))),
        ]);
    }
    print!("{}", indent(&render_table(&rows)));
    println!(
        "  (auc: binned with the config's thresholds; exact auc: sort based; bayes auc: the\n   planted probabilities' AUC, the best any model can reach on this eval split)"
    );
    for p in &result.written {
        println!("  wrote {}", p.display());
    }
    println!(
        "\nplec demo: done in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    if args.out.is_none() {
        println!("(temporary files removed; keep them with --out DIR)");
    }
    Ok(Outcome::Clean)
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}
