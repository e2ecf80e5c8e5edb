//! `plec compile`: check, lower, optimize and emit a config as a plan file.
//!
//! [`build`] is the whole compiler pipeline on one source text; `graph` and
//! `inspect` reuse it.

use std::path::{Path, PathBuf};

use crate::diag::{self, Diagnostic};
use crate::ir::{self, IrError, ModelGraph};
use crate::passes::{self, Applied, PassError};
use crate::plan::{self, emit::EmitError, Plan};
use crate::schema::{self, Schema};

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
    /// Print every rewrite the passes applied.
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

/// Options of the compiler pipeline.
#[derive(Debug, Clone, Copy)]
pub struct BuildOptions {
    pub seed: u64,
    pub fuse: bool,
    pub max_patches: Option<usize>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            seed: 0,
            fuse: true,
            max_patches: None,
        }
    }
}

/// Everything the compiler produced for one config.
#[derive(Debug)]
pub struct Built {
    pub graph: ModelGraph,
    pub plan: Plan,
    pub applied: Vec<Applied>,
    /// Warnings from check (errors stop the build).
    pub warnings: Vec<Diagnostic>,
}

/// Why a build stopped.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the config has errors")]
    Diagnostics(Vec<Diagnostic>),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Lower(Vec<IrError>),
    #[error("{0}")]
    Pass(#[from] PassError),
    #[error("{0}")]
    Emit(#[from] EmitError),
    #[error("{0}")]
    Schema(String),
}

/// Lowers a checked source to its (optimized) model graph.
pub fn build_graph(
    source: &str,
    opts: BuildOptions,
) -> Result<
    (
        ModelGraph,
        Vec<Applied>,
        Vec<Diagnostic>,
        crate::proto::tzrec::protos::EasyRecConfig,
    ),
    BuildError,
> {
    let schema = Schema::builtin().map_err(|e| BuildError::Schema(e.to_string()))?;
    let checked = super::check::check_source(&schema, source);
    if checked.has_errors() {
        return Err(BuildError::Diagnostics(checked.diagnostics));
    }
    let config = checked
        .bound
        .as_ref()
        .and_then(schema::typed_config)
        .ok_or_else(|| BuildError::Schema("the file is not a TorchEasyRec config".into()))?;
    let spans = checked.bound.as_ref().map(|b| &b.spans);
    let mut graph = lower_faithfully(&config).map_err(|errors| match spans {
        Some(spans) => {
            let mut d = checked.diagnostics.clone();
            d.extend(errors.iter().map(|e| e.to_diagnostic(spans)));
            diag::sort_by_position(&mut d);
            BuildError::Diagnostics(d)
        }
        None => BuildError::Lower(errors),
    })?;
    let applied = passes::optimize(&mut graph, &passes::pipeline(opts.fuse), opts.max_patches)?;
    Ok((graph, applied, checked.diagnostics, config))
}

/// Lowers the config, or every reason it cannot be run as written: the
/// blocks the audit finds plec would drop, plus the lowering's own errors
/// (an unsupported block named by both is reported once).
fn lower_faithfully(
    config: &crate::proto::tzrec::protos::EasyRecConfig,
) -> Result<ModelGraph, Vec<IrError>> {
    let mut errors = ir::coverage::audit(config);
    match ir::lower(config) {
        Ok(graph) if errors.is_empty() => return Ok(graph),
        Ok(_) => {}
        Err(lowered) => {
            let audited = !errors.is_empty();
            for e in lowered {
                let seen = e
                    .path()
                    .is_some_and(|p| errors.iter().any(|x| x.path() == Some(p)));
                // With blocks already dropped, "not defined" findings about
                // the names they define are consequences, not causes.
                if seen || (audited && matches!(e, IrError::Invalid { .. })) {
                    continue;
                }
                errors.push(e);
            }
        }
    }
    Err(errors)
}

/// The whole pipeline: check, lower, optimize, emit.
pub fn build(source: &str, opts: BuildOptions) -> Result<Built, BuildError> {
    let (graph, applied, warnings, config) = build_graph(source, opts)?;
    let plan = plan::emit::emit(&graph, &config, source, opts.seed)?;
    Ok(Built {
        graph,
        plan,
        applied,
        warnings,
    })
}

/// Reports a build error the way `check` would; returns the outcome.
pub fn report(path: &Path, source: &str, err: BuildError) -> Result<Outcome, RunError> {
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
        BuildError::Lower(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            Ok(Outcome::Problems)
        }
        e @ (BuildError::Pass(_) | BuildError::Emit(_) | BuildError::Schema(_)) => {
            Err(RunError::new(e.to_string()))
        }
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
pub fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}G", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2}M", n as f64 / 1e6),
        n if n >= 10_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

pub fn execute(args: &CompileArgs) -> Result<Outcome, RunError> {
    let source = read(&args.file)?;
    let opts = BuildOptions {
        seed: args.seed,
        fuse: !args.no_fuse,
        max_patches: args.max_patches,
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
