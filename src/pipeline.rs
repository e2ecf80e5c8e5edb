//! The compiler pipeline as a library: check a source text, lower it to an
//! optimized model graph, emit a plan. The CLI's commands and every test
//! call these functions; nothing below `cli` needs to know the commands.
//!
//! Each step returns a struct naming what it produced, and stops with a
//! [`BuildError`] whose config problems are diagnostics with spans (lowering
//! failures included), rendered like every other finding of `plec check`.

use crate::diag::{self, Diagnostic};
use crate::ir::{self, IrError, ModelGraph};
use crate::passes::{self, Applied, PassError};
use crate::plan::{self, emit::EmitError, Plan};
use crate::proto::tzrec::protos::EasyRecConfig;
use crate::schema::{self, Schema, SpanMap};
use crate::syntax;

/// Everything the front end learned about one source text.
#[derive(Debug)]
pub struct Checked {
    /// Syntax, schema and semantic findings, sorted by position.
    pub diagnostics: Vec<Diagnostic>,
    /// The bound config, when the text parsed.
    pub bound: Option<schema::Bound>,
}

impl Checked {
    /// Whether any finding is an error (a build stops there).
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Runs the front end on one source text: syntax, schema, lint.
pub fn check_source(schema: &Schema, source: &str) -> Checked {
    let parsed = syntax::parse(source);
    let mut diagnostics = parsed.diagnostics;
    let Some(document) = parsed.document else {
        return Checked {
            diagnostics,
            bound: None,
        };
    };
    let syntax_ok = !diagnostics.iter().any(Diagnostic::is_error);
    let bound = schema::bind(schema, &document, source);
    diagnostics.extend(bound.diagnostics.iter().cloned());
    // Lint needs a well-formed tree; its rules tolerate fields that schema
    // errors left out.
    if syntax_ok && schema.is_tzrec() {
        if let Some(config) = schema::typed_config(&bound) {
            let mut semantic = crate::lint::run(&config, &bound.spans);
            semantic.extend(crate::ir::shape_diagnostics(&config, &bound.spans));
            let broken = blocks_with_schema_errors(&bound);
            semantic.retain(|d| {
                let Some(span) = d.primary_span() else {
                    return true;
                };
                !broken
                    .iter()
                    .any(|b| span.start < b.end && b.start < span.end.max(span.start + 1))
            });
            diagnostics.extend(semantic);
        }
    }
    diag::sort_by_position(&mut diagnostics);
    Checked {
        diagnostics,
        bound: Some(bound),
    }
}

/// Whole spans (name to closing brace) of the innermost blocks that hold a
/// schema error. Semantic findings inside them are dropped: they are usually
/// consequences of the schema error (a misspelled `num_buckets` also leaves
/// the feature without a bucket setting), and reappear once it is fixed.
fn blocks_with_schema_errors(bound: &schema::Bound) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    for d in bound.diagnostics.iter().filter(|d| d.is_error()) {
        let Some(err) = d.primary_span() else {
            continue;
        };
        let innermost = bound
            .spans
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.value.start < err.start && err.end <= s.value.end && s.value.len() > 1)
            .min_by_key(|s| s.value.len());
        if let Some(block) = innermost {
            out.push(block.whole());
        }
    }
    out
}

/// Options of the compiler pipeline.
#[derive(Debug, Clone, Copy)]
pub struct BuildOptions {
    /// Seed of the initial parameters.
    pub seed: u64,
    /// Fuse parallel experts into grouped multiplies.
    pub fuse: bool,
    /// Stop after this many graph rewrites (to bisect a bad rewrite).
    pub max_patches: Option<usize>,
    /// Memory the build may use (`--max-memory`); `None`: what the machine
    /// has available.
    pub max_memory: Option<u64>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            seed: 0,
            fuse: true,
            max_patches: None,
            max_memory: None,
        }
    }
}

/// A checked config lowered to its optimized model graph.
#[derive(Debug)]
pub struct Lowered {
    pub graph: ModelGraph,
    /// The rewrites the passes applied, in order.
    pub applied: Vec<Applied>,
    /// Warnings from check (errors stop the build).
    pub warnings: Vec<Diagnostic>,
    /// The typed config the graph came from.
    pub config: EasyRecConfig,
}

/// Everything the compiler produced for one config.
#[derive(Debug)]
pub struct Built {
    pub graph: ModelGraph,
    pub plan: Plan,
    /// The rewrites the passes applied, in order.
    pub applied: Vec<Applied>,
    /// Warnings from check (errors stop the build).
    pub warnings: Vec<Diagnostic>,
}

/// Why a build stopped.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Problems in the config: check's errors, or parts that could not be
    /// lowered (with spans); warnings ride along.
    #[error("the config has errors")]
    Diagnostics(Vec<Diagnostic>),
    /// A graph rewrite broke the graph: a bug in plec, not in the config.
    #[error("{0}")]
    Pass(#[from] PassError),
    /// The graph could not be written as a plan.
    #[error("{0}")]
    Emit(#[from] EmitError),
    /// The builtin schema failed to load, or the file is no TorchEasyRec
    /// config.
    #[error("{0}")]
    Schema(String),
    /// The model's parameters would not fit in memory.
    #[error("{0}")]
    TooBig(#[from] plan::memory::TooBig),
    /// The plan fails the checks every engine makes when it loads one
    /// (e.g. a jrc_loss session feature outside the feature groups).
    #[error("the plan cannot run: {0}")]
    Invalid(String),
}

/// A lowering failure as a diagnostic, its span taken from the span map
/// (the field it names, or its nearest written ancestor).
pub fn lowering_diagnostic(err: &IrError, spans: &SpanMap) -> Diagnostic {
    let at = |path: &str| {
        spans
            .best(path)
            .or_else(|| spans.nearest_ancestor(path).map(|s| s.name.clone()))
    };
    let (d, path) = match err {
        IrError::Shape(e) => return e.to_diagnostic(spans),
        IrError::Unsupported { what, path } => (
            Diagnostic::error(
                "plec::unsupported",
                format!("{what} is not supported by plec compile yet"),
            )
            .with_help(
                "plec compiles only what it can run faithfully; `plec check` still checks \
                 this config, and TorchEasyRec can train it",
            ),
            path,
        ),
        IrError::Invalid { message, path } => (
            Diagnostic::error("plec::cannot-lower", message.clone()),
            path,
        ),
        IrError::Inconsistent(_) => {
            return Diagnostic::error("plec::internal", err.to_string()).with_help(
                "this is a bug in plec, not in the config: please report it with the config",
            )
        }
    };
    match at(path) {
        Some(span) => d.with_primary(span, "here"),
        None => d,
    }
}

/// Checks `source` with the builtin schema and lowers it to its optimized
/// model graph.
pub fn lower(source: &str, opts: BuildOptions) -> Result<Lowered, BuildError> {
    let schema = Schema::builtin().map_err(|e| BuildError::Schema(e.to_string()))?;
    let checked = check_source(&schema, source);
    if checked.has_errors() {
        return Err(BuildError::Diagnostics(checked.diagnostics));
    }
    let Some(bound) = checked.bound.as_ref() else {
        return Err(BuildError::Schema("the file holds no config".into()));
    };
    let config = schema::typed_config(bound)
        .ok_or_else(|| BuildError::Schema("the file is not a TorchEasyRec config".into()))?;
    let mut graph = match ir::lower_faithfully(&config) {
        Ok(g) => g,
        Err(errors) => {
            let mut all = checked.diagnostics.clone();
            all.extend(errors.iter().map(|e| lowering_diagnostic(e, &bound.spans)));
            diag::sort_by_position(&mut all);
            return Err(BuildError::Diagnostics(all));
        }
    };
    let applied = passes::optimize(&mut graph, &passes::pipeline(opts.fuse), opts.max_patches)?;
    Ok(Lowered {
        graph,
        applied,
        warnings: checked.diagnostics,
        config,
    })
}

/// The whole pipeline: check, lower, optimize, emit.
pub fn build(source: &str, opts: BuildOptions) -> Result<Built, BuildError> {
    let Lowered {
        graph,
        applied,
        warnings,
        config,
    } = lower(source, opts)?;
    // Initial values are drawn as f32s, copied into little-endian bytes,
    // and the plan is copied once more when it is saved: about three copies
    // of the parameters at the peak.
    let structure = plan::emit::emit_structure(&graph, &config, source, opts.seed)?;
    plan::validate::analyze(&structure).map_err(|e| BuildError::Invalid(e.0))?;
    let estimate = plan::memory::Estimate::of_plan(&structure, 0, false);
    plan::memory::fits(
        "compile (three copies of the dense parameters while they are initialized and written)",
        estimate.params.saturating_mul(3),
        &estimate,
        opts.max_memory,
    )?;
    let plan = plan::emit::emit(&graph, &config, source, opts.seed)?;
    Ok(Built {
        graph,
        plan,
        applied,
        warnings,
    })
}

/// The codes of lowering failures, for `plec explain`.
pub const CODES: &[(&str, &str)] = &[
    (
        "plec::unsupported",
        "The config is valid TorchEasyRec, but it uses a part (a model kind, a \
feature kind, a loss, an encoder) that plec cannot compile and run yet. plec \
stops rather than train a different model than the config describes. `plec \
check` still checks the whole file; train this config with TorchEasyRec, or \
remove the part if the model should not have it.",
    ),
    (
        "plec::cannot-lower",
        "The config passed check, but a part of it cannot be turned into a model \
graph: a group that names no feature plec can embed, a tower with no input. \
The message says what is missing at the place it points to; fix that field.",
    ),
    (
        "plec::internal",
        "plec built an inconsistent model graph from a valid config. This is a bug \
in plec, not in the config: please report it with the config attached.",
    ),
];
