//! `plec compile`: check, lower, optimize and emit a config as a plan file.
//!
//! The pipeline itself is `crate::pipeline`; this module adds the command's
//! arguments, its report and its summary line.

use std::path::{Path, PathBuf};

use crate::diag;
use crate::ir;
use crate::pipeline::{build, BuildError, BuildOptions};
use crate::plan;

use super::{Outcome, RunError};

#[derive(Debug, clap::Args)]
pub struct CompileArgs {
    /// Config file in protobuf text format.
    pub file: PathBuf,
    /// Where to write the plan.
    #[arg(short = 'o', long = "output", default_value = "plan.bin")]
    pub output: PathBuf,
    /// Seed of the initial parameters (also the default run seed).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Do not fuse parallel experts (one op chain per expert).
    #[arg(long)]
    pub no_fuse: bool,
    /// Stop after this many graph rewrites (to bisect a bad rewrite).
    #[arg(long)]
    pub max_patches: Option<usize>,
    /// Memory the compiler may use (e.g. `8G`); the default is what the
    /// machine has available. Parameters that would not fit stop the build
    /// with an estimate by part before anything is allocated.
    #[arg(long, value_parser = crate::plan::memory::parse_bytes)]
    pub max_memory: Option<u64>,
    /// Print every rewrite the passes applied.
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

/// Reports a build error the way `check` would; returns the outcome.
pub(crate) fn report(path: &Path, source: &str, err: BuildError) -> Result<Outcome, RunError> {
    let color = super::stdout_is_terminal() && std::env::var_os("NO_COLOR").is_none();
    match err {
        BuildError::Diagnostics(d) => {
            let name = path.display().to_string();
            print!("{}", diag::render_human(&name, source, &d, color));
            let errors = d.iter().filter(|d| d.is_error()).count();
            eprintln!(
                "plec: {} has {errors} error{}; fix them and compile again",
                path.display(),
                if errors == 1 { "" } else { "s" }
            );
            Ok(Outcome::Problems)
        }
        BuildError::TooBig(e) => Err(RunError::from_error(e).with_help(
            "make the largest layers or tables smaller, or raise the limit with --max-memory",
        )),
        e @ (BuildError::Pass(_)
        | BuildError::Emit(_)
        | BuildError::Schema(_)
        | BuildError::Invalid(_)) => Err(RunError::new(e.to_string())),
    }
}

/// Writes to stdout, ignoring a closed pipe (`plec inspect x | head`).
pub(super) fn print_out(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

pub(super) fn read(path: &Path) -> Result<String, RunError> {
    std::fs::read_to_string(path)
        .map_err(|e| RunError::new(format!("cannot read {}: {e}", path.display())))
}

/// `1.23M`-style counts.
pub(crate) fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}G", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2}M", n as f64 / 1e6),
        n if n >= 10_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

pub(crate) fn execute(args: &CompileArgs) -> Result<Outcome, RunError> {
    let source = read(&args.file)?;
    let opts = BuildOptions {
        seed: args.seed,
        fuse: !args.no_fuse,
        max_patches: args.max_patches,
        max_memory: args.max_memory,
    };
    let mut built = match build(&source, opts) {
        Ok(b) => b,
        Err(e) => return report(&args.file, &source, e),
    };
    if args.verbose {
        for a in &built.applied {
            eprintln!("{}: {}", a.pass, a.description);
        }
    }
    built.plan.source_path = args.file.display().to_string();
    plan::file::save(&built.plan, &args.output).map_err(|e| RunError::new(e.to_string()))?;
    let s = ir::summarize(&built.graph, &built.plan);
    let fused = built
        .applied
        .iter()
        .filter(|a| a.pass == "FuseParallelExperts")
        .count();
    println!(
        "plec compile: {} -> {}: {} {} features, {} experts, {} gates, {} towers, {} ops, {} dense params, {} embedding params, {} FLOP/sample{}",
        args.file.display(),
        args.output.display(),
        s.model_kind,
        s.features,
        s.experts,
        s.gates,
        s.towers,
        s.ops,
        human_count(s.dense_params),
        human_count(s.embedding_params),
        human_count(s.forward_flops_per_sample),
        if fused > 0 {
            format!(", {fused} fused expert groups")
        } else {
            String::new()
        },
    );
    Ok(Outcome::Clean)
}
