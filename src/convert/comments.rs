//! The input's comments, carried to the output where they attach to a
//! converted field: the `#` lines right above a field (no blank line
//! between) and a `#` comment at the end of its line. The file's opening
//! comment block (before the first field, ended by a blank line) is the
//! header. An output field finds its input field through [`Origins`]:
//! features by the block they came from, renamed blocks and fields by
//! EasyRec's name (`mlp` was `dnn`), everything else by the same path.

use std::collections::HashMap;

use crate::schema::SpanMap;

/// Comments of one field.
#[derive(Debug, Default, Clone)]
pub(crate) struct Attached {
    /// Whole lines above the field, without indentation.
    pub(crate) above: Vec<String>,
    /// The comment after the field on its line.
    pub(crate) trailing: Option<String>,
}

/// The input's comments by field path, and its header.
#[derive(Debug, Default)]
pub(crate) struct Comments {
    by_path: HashMap<String, Attached>,
    pub(crate) header: Vec<String>,
}

/// Where the output's blocks came from, when not from the same path.
#[derive(Debug, Default)]
pub(crate) struct Origins {
    /// (output block path, input block path), such as
    /// (`feature_configs[2]`, `feature_config.features[5]`).
    blocks: Vec<(String, String)>,
}

/// Output names of fields and blocks whose EasyRec name differs.
const RENAMED: &[(&str, &str)] = &[
    // EasyRec's first optimizer is the sparse one (or both).
    ("sparse_optimizer", "optimizer_config[0]"),
    ("mlp", "dnn"),
    ("bottom_mlp", "bottom_dnn"),
    ("expert_mlp", "expert_dnn"),
    ("relation_mlp", "relation_dnn"),
    ("metrics", "metrics_set"),
    ("expression", "input_names"),
    ("pooling", "combiner"),
    ("sequence_delim", "separator"),
    ("value_dim", "raw_input_dim"),
    ("sample_weight_fields", "sample_weight"),
    ("delimiter", "separator"),
];

impl Origins {
    pub(crate) fn record(&mut self, output: String, input: String) {
        self.blocks.push((output, input));
    }

    /// Drops what was recorded for the output blocks `keep` rejects (a
    /// block that moved).
    pub(crate) fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.blocks.retain(|(o, _)| keep(o));
    }

    /// The input path an output path came from.
    fn input(&self, output: &str) -> String {
        let recorded = self
            .blocks
            .iter()
            .filter(|(o, _)| {
                output == o
                    || output
                        .strip_prefix(o.as_str())
                        .is_some_and(|t| t.starts_with('.'))
            })
            .max_by_key(|(o, _)| o.len());
        let (mut path, rest) = match recorded {
            Some((o, i)) => {
                // A feature's oneof member (`id_feature`) has no block of
                // its own in EasyRec.
                let rest = output[o.len()..].trim_start_matches('.');
                let rest = match rest.split_once('.') {
                    Some((first, tail)) if first.ends_with("feature") => tail,
                    // The member itself: its comments are the block's,
                    // written above the block already.
                    None if rest.ends_with("feature") => return String::new(),
                    _ => rest,
                };
                (i.clone(), rest.to_string())
            }
            None => (String::new(), output.to_string()),
        };
        for seg in rest.split('.').filter(|s| !s.is_empty()) {
            let (name, index) = match seg.find('[') {
                Some(i) => (&seg[..i], &seg[i..]),
                None => (seg, ""),
            };
            let name = RENAMED
                .iter()
                .find(|(o, _)| *o == name)
                .map_or(name, |(_, i)| i);
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(name);
            path.push_str(index);
        }
        path
    }
}

fn line_start(source: &str, at: usize) -> usize {
    source[..at].rfind('\n').map_or(0, |i| i + 1)
}

/// A `#` comment on the rest of the line from `at`, outside strings.
fn trailing(source: &str, at: usize) -> Option<String> {
    let end = source[at..].find('\n').map_or(source.len(), |i| at + i);
    let rest = &source[at..end];
    let mut quote = None;
    let mut escaped = false;
    for (i, c) in rest.char_indices() {
        match (quote, c) {
            (Some(_), '\\') if !escaped => {
                escaped = true;
                continue;
            }
            (Some(q), c) if c == q && !escaped => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') => return Some(rest[i..].trim_end().to_string()),
            _ => {}
        }
        escaped = false;
    }
    None
}

impl Comments {
    /// Collects the comments of every field of the input.
    pub(crate) fn collect(source: &str, spans: &SpanMap) -> Self {
        let lines: Vec<&str> = source.lines().collect();
        // The header: the leading comment lines, when a blank line ends them.
        let leading = lines
            .iter()
            .take_while(|l| l.trim_start().starts_with('#'))
            .count();
        let header_ends = leading > 0 && lines.get(leading).is_some_and(|l| l.trim().is_empty());
        let header: Vec<String> = if header_ends {
            lines[..leading]
                .iter()
                .map(|l| l.trim().to_string())
                .collect()
        } else {
            Vec::new()
        };
        let mut by_path = HashMap::new();
        for (path, span) in spans.iter() {
            let start = line_start(source, span.name.start);
            // Only a field that opens its line owns the comments above it.
            if !source[start..span.name.start].trim().is_empty() {
                continue;
            }
            let line = source[..start].matches('\n').count();
            let mut above = Vec::new();
            let mut l = line;
            while l > 0 {
                let text = lines.get(l - 1).map_or("", |t| t.trim());
                if !text.starts_with('#') || (header_ends && l <= leading) {
                    break;
                }
                above.push(text.to_string());
                l -= 1;
            }
            above.reverse();
            let value_end = span.value.end.max(span.name.end);
            let after = source[value_end..].starts_with(['{', '<']);
            let tail = if after {
                None
            } else {
                trailing(source, value_end.min(source.len()))
            };
            // A block's trailing comment sits after its `{`.
            let tail = tail.or_else(|| {
                let brace = source[span.name.end..span.value.end.max(span.name.end)]
                    .find('{')
                    .map(|i| span.name.end + i + 1)?;
                trailing(source, brace)
            });
            if !above.is_empty() || tail.is_some() {
                by_path.insert(
                    path.clone(),
                    Attached {
                        above,
                        trailing: tail,
                    },
                );
            }
        }
        Comments { by_path, header }
    }

    /// The comments for an output field, through `origins`.
    pub(crate) fn for_output(&self, origins: &Origins, output: &str) -> Option<&Attached> {
        self.by_path.get(&origins.input(output))
    }
}

#[cfg(test)]
mod tests {
    use super::{trailing, Origins};

    #[test]
    fn trailing_comments_skip_strings() {
        assert_eq!(trailing("x: \"a#b\" # c\n", 0), Some("# c".to_string()));
        assert_eq!(trailing("x: 'a#b'\n# next", 0), None);
    }

    #[test]
    fn origins_follow_features_and_renames() {
        let mut o = Origins::default();
        o.record(
            "feature_configs[1]".into(),
            "feature_config.features[3]".into(),
        );
        assert_eq!(
            o.input("feature_configs[1].id_feature.expression"),
            "feature_config.features[3].input_names"
        );
        assert_eq!(o.input("feature_configs[1]"), "feature_config.features[3]");
        assert_eq!(
            o.input("model_config.ple.task_towers[0].mlp.hidden_units"),
            "model_config.ple.task_towers[0].dnn.hidden_units"
        );
    }
}
