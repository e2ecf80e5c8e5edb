//! Fields of the EasyRec config that the mapping never read: each one is a
//! diagnostic at its line, a warning where dropping it cannot change the
//! model (checkpointing, logging, evaluation, input pipeline tuning), an
//! error otherwise, so that nothing is lost silently.

use std::collections::BTreeSet;

use crate::diag::Diagnostic;
use crate::schema::SpanMap;

/// Code of a dropped field.
pub(crate) const CODE: &str = "plec::convert-lossy";

/// Paths (without list indices) whose loss cannot change the model.
const HARMLESS: &[&str] = &[
    "eval_config",
    "export_config",
    "model_config.model_name",
    "feature_config.embedding_on_cpu",
    "data_config.prefetch_size",
    "data_config.shuffle",
    "data_config.shuffle_buffer_size",
    "data_config.num_parallel_calls",
    "data_config.input_type",
    "data_config.input_fields",
    "data_config.separator",
    "data_config.rtp_separator",
    "data_config.chief_redundant",
    "data_config.pai_worker_queue",
    "data_config.pai_worker_slice_num",
    "data_config.ignore_error",
    "data_config.selected_cols",
    "data_config.selected_col_types",
    "data_config.shard",
    "data_config.file_shard",
    "data_config.auto_expand_input_fields",
    "train_config.save_checkpoints_secs",
    "train_config.save_summary_steps",
    "train_config.keep_checkpoint_max",
    "train_config.keep_checkpoint_every_n_hours",
    "train_config.sync_replicas",
    "train_config.is_profiling",
    "train_config.train_distribute",
    "train_config.num_gpus_per_worker",
    "train_config.inter_op_parallelism_threads",
    "train_config.intra_op_parallelism_threads",
    "train_config.summary_model_vars",
    "train_config.startup_delay_steps",
    "train_config.protocol",
];

/// `a.b[3].c[0]` -> `a.b.c`.
pub(crate) fn without_indices(path: &str) -> String {
    crate::schema::dialect::without_indices(path)
}

fn harmless(path: &str) -> bool {
    let plain = without_indices(path);
    HARMLESS
        .iter()
        .any(|h| plain == *h || plain.starts_with(&format!("{h}.")))
}

/// The message that holds `path`'s field: `a.b[2].c` -> `a.b[2]`,
/// `a.b[2]` -> `a`; the root is "".
fn holder(path: &str) -> &str {
    let p = if path.ends_with(']') {
        path.rfind('[').map_or(path, |i| &path[..i])
    } else {
        path
    };
    p.rfind('.').map_or("", |i| &p[..i])
}

/// Whether the mapping read `path` or something inside it.
fn touched(used: &BTreeSet<String>, path: &str) -> bool {
    if path.is_empty() {
        return true;
    }
    used.range(path.to_string()..)
        .take_while(|u| u.starts_with(path))
        .any(|u| u.len() == path.len() || u[path.len()..].starts_with(['.', '[']))
}

/// Whether `path` was read, or is an element of a list read as a whole.
fn read(used: &BTreeSet<String>, path: &str) -> bool {
    if used.contains(path) {
        return true;
    }
    path.ends_with(']') && path.rfind('[').is_some_and(|i| used.contains(&path[..i]))
}

/// One diagnostic per outermost unread field.
pub(crate) fn report(
    spans: &SpanMap,
    used: &BTreeSet<String>,
    reported: &[String],
    source: &str,
) -> Vec<Diagnostic> {
    let is_block = |path: &str| {
        spans
            .value(path)
            .and_then(|v| source.get(v))
            .is_some_and(|t| t.starts_with('{') || t.starts_with('<'))
    };
    let mut out = Vec::new();
    for (path, span) in spans.iter() {
        let indexed = format!("{path}[0]");
        let element = path.ends_with(']');
        if spans.contains(&indexed) && is_block(&indexed) {
            continue; // a list of blocks: its elements are reported
        }
        if element && !is_block(path) {
            continue; // a list of scalars: reported as a whole
        }
        if read(used, path) || touched(used, path) || !touched(used, holder(path)) {
            continue;
        }
        let inside = |r: &String| {
            !r.is_empty()
                && (path == r.as_str()
                    || path
                        .strip_prefix(r.as_str())
                        .is_some_and(|t| t.starts_with(['.', '['])))
        };
        if reported.iter().any(inside) {
            continue; // reported as not converted already
        }
        let plain = without_indices(path);
        let d = if harmless(path) {
            Diagnostic::warning(
                CODE,
                format!("`{plain}` is dropped: TorchEasyRec has no counterpart"),
            )
            .with_help(
                "dropping it does not change the model (it tunes checkpoints, logging, \
                     evaluation or the input pipeline); set its TorchEasyRec equivalent by \
                     hand if you need one",
            )
        } else {
            Diagnostic::error(
                CODE,
                format!(
                    "`{plain}` is dropped: plec convert has no TorchEasyRec counterpart for it"
                ),
            )
            .with_help(
                "dropping it can change the model or how it trains: set its equivalent in \
                 the TorchEasyRec config by hand, or pass --allow-lossy to write the output \
                 without it",
            )
        };
        out.push((plain, d.with_primary(span.name.clone(), "not converted")));
    }
    collapse(out)
}

/// One warning for all the elements of a harmless list (such as the
/// `input_fields` of an ODPS table) instead of one per element.
fn collapse(found: Vec<(String, Diagnostic)>) -> Vec<Diagnostic> {
    let mut out: Vec<Diagnostic> = Vec::new();
    let mut counts: Vec<(String, usize, usize)> = Vec::new();
    for (plain, d) in found {
        let seen = counts.iter_mut().find(|(p, _, _)| *p == plain);
        match seen {
            Some((_, _, n)) if !d.is_error() => *n += 1,
            _ => {
                if !d.is_error() {
                    counts.push((plain, out.len(), 1));
                }
                out.push(d);
            }
        }
    }
    for (_, at, n) in counts {
        if n > 1 {
            if let Some(d) = out.get_mut(at) {
                d.message = format!("{} ({n} times)", d.message);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{holder, touched};
    use std::collections::BTreeSet;

    #[test]
    fn holders() {
        assert_eq!(holder("a.b[2].c"), "a.b[2]");
        assert_eq!(holder("a.b[2]"), "a");
        assert_eq!(holder("a"), "");
    }

    #[test]
    fn touched_needs_a_path_boundary() {
        let used: BTreeSet<String> = ["a.bc".to_string(), "x.y[0].z".to_string()].into();
        assert!(!touched(&used, "a.b"));
        assert!(touched(&used, "x.y"));
        assert!(touched(&used, "x.y[0]"));
        assert!(touched(&used, ""));
    }
}
