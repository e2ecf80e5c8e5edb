//! `plec check`: parse, bind and lint config files, reporting every problem.

use std::path::PathBuf;

use crate::diag::{self, Diagnostic, Severity};
use crate::schema::{self, Schema};
use crate::syntax;

use super::{Outcome, RunError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Config files in protobuf text format.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,
    /// Treat warnings as errors (exit 1).
    #[arg(long)]
    pub deny_warnings: bool,
    /// Check against the .proto files under this directory instead of the
    /// built-in TorchEasyRec schema.
    #[arg(long)]
    pub proto_path: Option<PathBuf>,
    /// Root message of the config (full name) with --proto-path.
    #[arg(long, requires = "proto_path")]
    pub root_message: Option<String>,
}

/// Everything `check` learned about one source text.
#[derive(Debug)]
pub struct Checked {
    pub diagnostics: Vec<Diagnostic>,
    pub bound: Option<schema::Bound>,
}

impl Checked {
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

pub fn execute(args: &CheckArgs) -> Result<Outcome, RunError> {
    let schema = match &args.proto_path {
        Some(dir) => Schema::from_proto_path(dir, args.root_message.as_deref()),
        None => Schema::builtin(),
    }
    .map_err(|e| RunError::new(e.to_string()))?;
    let color = super::stdout_is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut sources = Vec::new();
    for path in &args.files {
        let source = std::fs::read_to_string(path)
            .map_err(|e| RunError::new(format!("cannot read {}: {e}", path.display())))?;
        sources.push((path, source));
    }
    let mut errors = 0;
    let mut warnings = 0;
    let mut out = String::new();
    for (path, source) in &sources {
        let checked = check_source(&schema, source);
        let name = path.display().to_string();
        for d in &checked.diagnostics {
            match d.severity {
                Severity::Error => errors += 1,
                Severity::Warning => warnings += 1,
                Severity::Advice => {}
            }
        }
        match args.format {
            Format::Human => out.push_str(&diag::render_human(
                &name,
                source,
                &checked.diagnostics,
                color,
            )),
            Format::Json => out.push_str(&diag::render_json(&name, source, &checked.diagnostics)),
        }
    }
    if args.format == Format::Human {
        let files = sources.len();
        let noun = if files == 1 { "file" } else { "files" };
        out.push_str(&format!(
            "plec check: {files} {noun}, {errors} error{}, {warnings} warning{}\n",
            if errors == 1 { "" } else { "s" },
            if warnings == 1 { "" } else { "s" },
        ));
    }
    print!("{out}");
    if errors > 0 || (args.deny_warnings && warnings > 0) {
        Ok(Outcome::Problems)
    } else {
        Ok(Outcome::Clean)
    }
}
