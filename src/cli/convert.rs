//! `plec convert`: an EasyRec config to a TorchEasyRec config. Reports
//! every field it drops at its line in the input; writes nothing when a
//! dropped field can change the model, unless `--allow-lossy`; then checks
//! what it wrote under the TorchEasyRec schema.

use std::path::PathBuf;

use crate::convert::{easyrec_to_tzrec_with, FgJson};
use crate::diag::{self, Diagnostic, Severity};
use crate::pipeline::check_source;
use crate::schema::Schema;

use super::check::Format;
use super::{Outcome, RunError};

#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// The EasyRec config (protobuf text format) to convert.
    pub input: PathBuf,
    /// Where to write the TorchEasyRec config.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// Write the output even when a dropped field can change the model.
    #[arg(long)]
    pub allow_lossy: bool,
    /// EasyRec's fg.json: the features' expressions (`user:age`, lookups'
    /// map and key); without it each feature reads its input column.
    #[arg(long)]
    pub fg_json: Option<PathBuf>,
    /// Output format of the diagnostics.
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,
}

fn render(format: Format, name: &str, source: &str, diags: &[Diagnostic]) -> String {
    let color = super::stdout_is_terminal() && std::env::var_os("NO_COLOR").is_none();
    match format {
        Format::Human => diag::render_human(name, source, diags, color),
        Format::Json => diag::render_json(name, source, diags),
        Format::Github => diag::render_github(name, source, diags),
        // One log per file: the input's findings, then the output's.
        Format::Sarif => diag::render_sarif(
            &[diag::SarifFile {
                name,
                source,
                diagnostics: diags,
            }],
            &super::explain::summary,
        ),
    }
}

fn count(diags: &[Diagnostic], severity: Severity) -> usize {
    diags.iter().filter(|d| d.severity == severity).count()
}

pub(crate) fn execute(args: &ConvertArgs) -> Result<Outcome, RunError> {
    let input = args.input.display().to_string();
    let source = std::fs::read_to_string(&args.input)
        .map_err(|e| RunError::new(format!("cannot read {input}: {e}")))?;
    let fg = match &args.fg_json {
        Some(path) => {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| RunError::new(format!("cannot read {name}: {e}")))?;
            let fg = FgJson::parse(&text).map_err(|e| {
                RunError::new(format!("{name} is not an EasyRec fg.json: {e}")).with_help(
                    "give the fg.json EasyRec trains with: {\"features\": [{\"feature_name\": \
                     ..., \"expression\": ...}, ...]}",
                )
            })?;
            Some(fg)
        }
        None => None,
    };
    let converted = easyrec_to_tzrec_with(&source, fg.as_ref());
    print!(
        "{}",
        render(args.format, &input, &source, &converted.diagnostics)
    );
    let Some(text) = converted.text.as_deref() else {
        let tzrec = Schema::builtin().map_err(|e| RunError::new(e.to_string()))?;
        if !check_source(&tzrec, &source).has_errors() {
            return Err(RunError::new(format!(
                "{input} is a TorchEasyRec config already; nothing to convert"
            )));
        }
        eprintln!("plec convert: {input} has errors under EasyRec's schema; nothing written");
        return Ok(Outcome::Problems);
    };
    let lossy = count(&converted.diagnostics, Severity::Error);
    let dropped = count(&converted.diagnostics, Severity::Warning);
    if lossy > 0 && !args.allow_lossy {
        eprintln!(
            "plec convert: {lossy} part{} of {input} cannot be converted without changing the \
             model; nothing written (--allow-lossy writes the output without them)",
            if lossy == 1 { "" } else { "s" }
        );
        return Ok(Outcome::Problems);
    }
    let output = args.output.display().to_string();
    let written =
        format!("# Converted from {input} by plec convert (EasyRec to TorchEasyRec).\n{text}");
    crate::plan::file::write_atomic(&args.output, written.as_bytes())
        .map_err(|e| RunError::new(format!("cannot write {output}: {e}")))?;
    // What was written must check clean as TorchEasyRec.
    let tzrec = Schema::builtin().map_err(|e| RunError::new(e.to_string()))?;
    let checked = check_source(&tzrec, &written);
    let errors = count(&checked.diagnostics, Severity::Error);
    let warnings = count(&checked.diagnostics, Severity::Warning);
    if errors + warnings > 0 {
        print!(
            "{}",
            render(args.format, &output, &written, &checked.diagnostics)
        );
    }
    eprintln!(
        "plec convert: wrote {output} ({lossy} lossy, {dropped} harmless dropped); \
         plec check on it: {errors} error{}, {warnings} warning{}",
        if errors == 1 { "" } else { "s" },
        if warnings == 1 { "" } else { "s" },
    );
    Ok(if errors > 0 {
        Outcome::Problems
    } else {
        Outcome::Clean
    })
}
