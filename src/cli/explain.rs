//! `plec explain CODE`: what a diagnostic code means, an example, and how
//! to fix it, for the lint rules and the IR's shape rules. Without a code,
//! lists every code with its severity and summary.

use crate::diag::{closest_names, one_of};
use crate::{ir, lint, schema, syntax};

use super::{Outcome, RunError};

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// A diagnostic code, such as `plec::unknown-feature` (the `plec::`
    /// prefix may be left out). Without one, every code is listed.
    pub code: Option<String>,
}

/// The first sentence of an explanation, on one line.
fn first_sentence(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.find(". ") {
        Some(i) => flat[..i].to_string(),
        None => flat.trim_end_matches('.').to_string(),
    }
}

pub(crate) fn execute(args: &ExplainArgs) -> Result<Outcome, RunError> {
    let Some(code) = &args.code else {
        let mut out = String::new();
        for rule in lint::rules() {
            out.push_str(&format!(
                "{:<34} {:<8} {}\n",
                rule.code,
                rule.severity.as_str(),
                rule.summary
            ));
        }
        for (kind, codes) in [
            ("syntax", syntax::explain::CODES),
            ("schema", schema::explain::CODES),
            ("compile", crate::pipeline::CODES),
        ] {
            for (code, text) in codes {
                out.push_str(&format!("{code:<34} {kind:<8} {}\n", first_sentence(text)));
            }
        }
        for (code, text) in ir::SHAPE_CODES {
            out.push_str(&format!(
                "{code:<34} {:<8} {}\n",
                "shape",
                first_sentence(text)
            ));
        }
        print!("{out}");
        return Ok(Outcome::Clean);
    };
    if let Some(rule) = lint::rule(code) {
        println!(
            "{} ({})\n\n{}\n\n{}",
            rule.code,
            rule.severity.as_str(),
            rule.summary,
            rule.explain
        );
        return Ok(Outcome::Clean);
    }
    let full = format!("plec::{}", code.trim().trim_start_matches("plec::"));
    if let Some((c, text)) = syntax::explain::CODES
        .iter()
        .chain(schema::explain::CODES)
        .chain(crate::pipeline::CODES)
        .find(|(c, _)| *c == full)
    {
        println!("{c}\n\n{text}");
        return Ok(Outcome::Clean);
    }
    if let Some(text) = ir::explain(code.trim()) {
        let bare = code.trim().trim_start_matches("plec::");
        println!("plec::{bare}\n\n{text}");
        return Ok(Outcome::Clean);
    }
    // Compare without the common `plec::` prefix, which would make every
    // code look close.
    let known: Vec<&str> = lint::all_codes()
        .into_iter()
        .chain(ir::SHAPE_CODES.iter().map(|(c, _)| *c))
        .chain(syntax::explain::CODES.iter().map(|(c, _)| *c))
        .chain(schema::explain::CODES.iter().map(|(c, _)| *c))
        .map(|c| c.trim_start_matches("plec::"))
        .collect();
    let bare = code.trim().trim_start_matches("plec::");
    let mut close = closest_names(bare, known.iter().copied(), 3);
    if close.is_empty() && bare.len() >= 3 {
        close = known
            .iter()
            .filter(|c| c.contains(bare))
            .take(3)
            .map(|c| c.to_string())
            .collect();
    }
    let close: Vec<String> = close.into_iter().map(|c| format!("plec::{c}")).collect();
    let hint = if close.is_empty() {
        "run `plec explain` to list every code".to_string()
    } else {
        format!("did you mean {}?", one_of(&close))
    };
    Err(RunError::new(format!("unknown code `{code}`; {hint}")))
}
