//! Dialect detection: is a file that fails TorchEasyRec's schema an EasyRec
//! (TensorFlow) config? Both schemas are bound to the same syntax tree; the
//! file is EasyRec's when EasyRec's schema explains it much better (fewer
//! than half the schema errors) and some of the fields TorchEasyRec does not
//! know are fields of EasyRec's (`feature_config`, `data_config.input_fields`,
//! `train_config.optimizer_config`, `model_config.model_class`, ...). Those
//! fields are the evidence the diagnostic names.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::Range;

use super::{Bound, Schema};
use crate::diag::Diagnostic;

/// Code of the diagnostic that says a file is an EasyRec config.
pub const CODE: &str = "plec::easyrec-dialect";

/// How many give-away fields the diagnostic names at most.
const NAMED: usize = 4;
/// How many of them it labels in the source (miette shows every line
/// between two labels of one snippet, so fewer keep the report short).
const LABELLED: usize = 3;

/// One field unknown to TorchEasyRec's schema and known to EasyRec's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiveAway {
    /// Its path in EasyRec's schema, without list indices
    /// (`feature_config.features.input_names`).
    pub path: String,
    /// Its name in the source (first occurrence).
    pub span: Range<usize>,
}

/// Why a file was taken for an EasyRec config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// Distinct give-away fields, in source order.
    pub give_aways: Vec<GiveAway>,
    /// Schema errors under TorchEasyRec's schema.
    pub errors_tzrec: usize,
    /// Schema errors under EasyRec's schema.
    pub errors_easyrec: usize,
}

fn schema_errors(bound: &Bound) -> usize {
    bound.diagnostics.iter().filter(|d| d.is_error()).count()
}

/// `feature_configs[3].input_names[0]` -> `feature_configs.input_names`.
pub(crate) fn without_indices(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut depth = 0usize;
    for c in path.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Whether `easyrec` (the same file bound to EasyRec's schema) explains the
/// file much better than `tzrec` (bound to `tzrec_schema`), and by which
/// fields. The most telling come first: names TorchEasyRec's schema has
/// nowhere (`model_class`, unlike `num_epochs`, which is only misplaced),
/// outer before inner, blocks before scalars (`optimizer_config { ... }`
/// says more than `sync_replicas: true`), then in source order.
pub fn detect(
    tzrec_schema: &Schema,
    tzrec: &Bound,
    easyrec: &Bound,
    source: &str,
) -> Option<Evidence> {
    let errors_tzrec = schema_errors(tzrec);
    let errors_easyrec = schema_errors(easyrec);
    if errors_tzrec == 0 || errors_easyrec * 2 >= errors_tzrec {
        return None;
    }
    // Name span start -> EasyRec path (the shortest: a list field's path
    // without index rather than its first element's).
    let mut by_start: BTreeMap<usize, &str> = BTreeMap::new();
    for (path, span) in easyrec.spans.iter() {
        let entry = by_start.entry(span.name.start).or_insert(path.as_str());
        if path.len() < entry.len() {
            *entry = path.as_str();
        }
    }
    let mut seen = BTreeSet::new();
    let mut give_aways = Vec::new();
    let mut unknown: Vec<Range<usize>> = tzrec
        .diagnostics
        .iter()
        .filter(|d| d.code == "plec::unknown-field")
        .filter_map(Diagnostic::primary_span)
        .collect();
    unknown.sort_by_key(|s| s.start);
    for span in unknown {
        let Some(path) = by_start.get(&span.start) else {
            continue;
        };
        let path = without_indices(path);
        if seen.insert(path.clone()) {
            give_aways.push(GiveAway { path, span });
        }
    }
    if give_aways.is_empty() {
        return None;
    }
    let is_block = |g: &GiveAway| {
        easyrec
            .spans
            .get(&g.path)
            .or_else(|| {
                by_start
                    .get(&g.span.start)
                    .and_then(|p| easyrec.spans.get(p))
            })
            .and_then(|s| source.get(s.value.clone()))
            .is_some_and(|v| v.starts_with('{') || v.starts_with('<'))
    };
    let tzrec_names: HashSet<String> = tzrec_schema
        .pool
        .all_messages()
        .flat_map(|m| m.fields().map(|f| f.name().to_string()).collect::<Vec<_>>())
        .collect();
    let known_to_tzrec = |g: &GiveAway| {
        let name = g.path.rsplit('.').next().unwrap_or(&g.path);
        tzrec_names.contains(name)
    };
    give_aways.sort_by_key(|g| {
        (
            known_to_tzrec(g),
            g.path.matches('.').count(),
            !is_block(g),
            g.span.start,
        )
    });
    Some(Evidence {
        give_aways,
        errors_tzrec,
        errors_easyrec,
    })
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// "`a`, `b`, `c`, `d` and 9 more are fields of": the give-aways, named.
fn fields_phrase(evidence: &Evidence) -> String {
    let named: Vec<String> = evidence
        .give_aways
        .iter()
        .take(NAMED)
        .map(|g| format!("`{}`", g.path))
        .collect();
    let more = evidence.give_aways.len().saturating_sub(NAMED);
    let fields = if more > 0 {
        format!("{} and {more} more", named.join(", "))
    } else {
        named.join(", ")
    };
    let verb = if evidence.give_aways.len() == 1 {
        "is a field of"
    } else {
        "are fields of"
    };
    format!("{fields} {verb}")
}

/// Where TorchEasyRec conversion stands, for the help texts.
const CONVERT: &str = "Converting it to TorchEasyRec will be `plec convert`, which is not \
built yet; until then TorchEasyRec's `tzrec/tools/convert_easyrec_config_to_tzrec_config.py` \
converts it";

fn labelled(mut d: Diagnostic, evidence: &Evidence) -> Diagnostic {
    for (i, g) in evidence.give_aways.iter().take(LABELLED).enumerate() {
        let label = "a field of EasyRec's schema only";
        d = if i == 0 {
            d.with_primary(g.span.clone(), label)
        } else {
            d.with_secondary(g.span.clone(), label)
        };
    }
    d
}

/// The diagnostic that opens `plec check`'s report of a detected EasyRec
/// config (a warning: the file is then checked under EasyRec's schema).
pub fn diagnostic(evidence: &Evidence) -> Diagnostic {
    let help = format!(
        "{} EasyRec's schema but not TorchEasyRec's ({} under TorchEasyRec's \
         schema, {} under EasyRec's). The findings below are EasyRec's schema checks \
         (syntax and schema only: plec's semantic rules read TorchEasyRec configs). \
         `plec check --schema easyrec` checks it as EasyRec without this warning. {CONVERT}",
        fields_phrase(evidence),
        plural(evidence.errors_tzrec, "error"),
        plural(evidence.errors_easyrec, "error"),
    );
    let d = Diagnostic::warning(
        CODE,
        "this is an EasyRec (TensorFlow) config, not a TorchEasyRec one: checked under \
         EasyRec's schema",
    )
    .with_help(help);
    labelled(d, evidence)
}

/// The error that stops `plec compile` (and `run`, `graph`, `inspect`) on
/// an EasyRec config, in place of TorchEasyRec's unknown-field errors.
pub fn refusal(evidence: &Evidence) -> Diagnostic {
    let help = format!(
        "{} EasyRec's schema but not TorchEasyRec's. `plec check` checks it under \
         EasyRec's schema. {CONVERT}; then compile the result",
        fields_phrase(evidence),
    );
    let d = Diagnostic::error(
        CODE,
        "this is an EasyRec (TensorFlow) config: plec compiles and runs TorchEasyRec \
         configs only",
    )
    .with_help(help);
    labelled(d, evidence)
}

/// Explanation for `plec explain`.
pub const EXPLAIN: &str = "The file is a config of EasyRec, TorchEasyRec's TensorFlow \
predecessor: its text looks like a TorchEasyRec config, but it uses fields that only \
EasyRec's schema has (`feature_config { features { ... } }`, `data_config.input_fields`, \
`train_config.optimizer_config`, `model_config.model_class`, `eval_config.metrics_set`). \
plec binds a file that fails TorchEasyRec's schema to EasyRec's as well; when EasyRec's \
schema explains it much better (fewer than half the schema errors), plec reports this \
warning first, naming the fields that gave it away, and then reports the file's findings \
under EasyRec's schema instead of a wall of unknown-field errors. Only syntax and schema \
checks run for EasyRec configs: plec's semantic rules, `plec compile` and `plec run` take \
TorchEasyRec configs (they stop on this code, as an error, instead). Run \
`plec check --schema easyrec FILE` to check an EasyRec config without this warning. Conversion to TorchEasyRec (`plec convert`) is not built yet; \
TorchEasyRec's own `tzrec/tools/convert_easyrec_config_to_tzrec_config.py` converts \
configs today.";

#[cfg(test)]
mod tests {
    use super::without_indices;

    #[test]
    fn indices_are_dropped() {
        assert_eq!(
            without_indices("feature_config.features[3].input_names[0]"),
            "feature_config.features.input_names"
        );
        assert_eq!(without_indices("model_dir"), "model_dir");
    }
}
