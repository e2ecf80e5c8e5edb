//! `plec check`: parse, bind and lint config files, reporting every problem;
//! with `--data`, also the parquet files the config will read.

use std::path::PathBuf;

use crate::diag::{self, Severity};
use crate::pipeline::{check_source, check_source_detecting};
use crate::schema::{Dialect, Schema};

use super::check_data::check_data;

use super::{Outcome, RunError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// rustc-like text with the source.
    Human,
    /// One JSON object per diagnostic per line.
    Json,
    /// One SARIF 2.1.0 log for all files (code scanning).
    Sarif,
    /// GitHub Actions workflow commands (`::error file=..::`), which become
    /// annotations on a pull request.
    Github,
}

/// A built-in schema, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemaName {
    /// TorchEasyRec's (`tzrec.protos`): the default.
    Tzrec,
    /// EasyRec's (`protos`, TorchEasyRec's TensorFlow predecessor): syntax
    /// and schema checks only.
    Easyrec,
}

impl SchemaName {
    pub(crate) fn dialect(self) -> Dialect {
        match self {
            SchemaName::Tzrec => Dialect::TorchEasyRec,
            SchemaName::Easyrec => Dialect::EasyRec,
        }
    }
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
    /// Also check parquet data (files, directories or globs) against what
    /// the config reads: columns, types, ids, labels, vocabularies,
    /// sequences and separators.
    #[arg(long, num_args = 1.., conflicts_with = "proto_path")]
    pub data: Vec<String>,
    /// With --data: rows read from the start of each file.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub rows: u64,
    /// With --data: read every row (overrides --rows).
    #[arg(long)]
    pub all: bool,
    /// Check against this built-in schema. Without it (and without
    /// --proto-path) files are checked as TorchEasyRec configs, and a file
    /// that is an EasyRec config is detected and checked as one.
    #[arg(long, value_enum, conflicts_with = "proto_path")]
    pub schema: Option<SchemaName>,
}

pub(crate) fn execute(args: &CheckArgs) -> Result<Outcome, RunError> {
    let to_run_error = |e: crate::schema::SchemaError| RunError::new(e.to_string());
    let schema = match (&args.proto_path, args.schema) {
        (Some(dir), _) => Schema::from_proto_path(dir, args.root_message.as_deref()),
        (None, Some(name)) => Schema::builtin_for(name.dialect()),
        (None, None) => Schema::builtin(),
    }
    .map_err(to_run_error)?;
    // Dialect detection: only when no schema was asked for.
    let easyrec = if args.proto_path.is_none() && args.schema.is_none() {
        Some(Schema::builtin_easyrec().map_err(to_run_error)?)
    } else {
        None
    };
    let color = super::stdout_is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut sources = Vec::new();
    for path in &args.files {
        let source = std::fs::read_to_string(path)
            .map_err(|e| RunError::new(format!("cannot read {}: {e}", path.display())))?;
        sources.push((path, source));
    }
    let mut errors = 0;
    let mut warnings = 0;
    let mut detected = 0;
    let mut out = String::new();
    let mut checked_all = Vec::new();
    let mut data_summaries = Vec::new();
    for (path, source) in &sources {
        let mut checked = match &easyrec {
            Some(easyrec) => check_source_detecting(&schema, easyrec, source),
            None => check_source(&schema, source),
        };
        if checked.detected.is_some() {
            detected += 1;
        }
        if !args.data.is_empty() {
            let max_rows = (!args.all).then_some(args.rows);
            let (found, summary) = check_data(source, &checked, &args.data, max_rows);
            checked.diagnostics.extend(found);
            diag::sort_by_position(&mut checked.diagnostics);
            data_summaries.extend(summary);
        }
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
            Format::Github => {
                out.push_str(&diag::render_github(&name, source, &checked.diagnostics))
            }
            Format::Sarif => {}
        }
        checked_all.push((name, checked.diagnostics));
    }
    if args.format == Format::Sarif {
        let files: Vec<diag::SarifFile<'_>> = checked_all
            .iter()
            .zip(&sources)
            .map(|((name, diagnostics), (_, source))| diag::SarifFile {
                name,
                source,
                diagnostics,
            })
            .collect();
        out.push_str(&diag::render_sarif(&files, &super::explain::summary));
    }
    if args.format == Format::Human {
        let files = sources.len();
        let noun = if files == 1 { "file" } else { "files" };
        let note = if schema.is_easyrec() {
            " (EasyRec's schema: syntax and schema checks only)".to_string()
        } else if detected > 0 {
            let which = if files == 1 {
                "an EasyRec config".to_string()
            } else if detected == 1 {
                "1 EasyRec config".to_string()
            } else {
                format!("{detected} EasyRec configs")
            };
            format!(" ({which}, checked under EasyRec's schema: syntax and schema checks only)")
        } else {
            String::new()
        };
        out.push_str(&format!(
            "plec check: {files} {noun}, {errors} error{}, {warnings} warning{}{note}\n",
            if errors == 1 { "" } else { "s" },
            if warnings == 1 { "" } else { "s" },
        ));

        for d in &data_summaries {
            out.push_str(&format!(
                "plec check: data: {} file{}, {} of {} rows scanned in {:.2} s\n",
                d.files,
                if d.files == 1 { "" } else { "s" },
                d.rows_scanned,
                d.rows_total,
                d.seconds
            ));
        }
    }
    print!("{out}");
    if errors > 0 || (args.deny_warnings && warnings > 0) {
        Ok(Outcome::Problems)
    } else {
        Ok(Outcome::Clean)
    }
}
