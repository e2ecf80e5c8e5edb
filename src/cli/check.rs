//! `plec check`: parse, bind and lint config files, reporting every problem.

use std::path::PathBuf;

use crate::diag::{self, Severity};
use crate::pipeline::check_source;
use crate::schema::Schema;

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

pub(crate) fn execute(args: &CheckArgs) -> Result<Outcome, RunError> {
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
