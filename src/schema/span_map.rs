//! Where each bound field came from: field paths such as
//! `model_config.ple.extraction_networks[1].task_expert_net.hidden_units[2]`
//! mapped to byte ranges of the source. Lint rules see only the typed config
//! and this map, never the syntax tree.

use std::collections::BTreeMap;
use std::ops::Range;

/// Spans of one path: the field's name and its value (for list elements,
/// the name is the list field's name and the value is the element).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpan {
    pub name: Range<usize>,
    pub value: Range<usize>,
}

impl FieldSpan {
    /// From the name to the end of the value.
    pub fn whole(&self) -> Range<usize> {
        self.name.start.min(self.value.start)..self.name.end.max(self.value.end)
    }
}

/// Field path to spans. Repeated elements are indexed (`losses[0]`); the
/// path of a repeated field without index points at its first occurrence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpanMap {
    spans: BTreeMap<String, FieldSpan>,
}

impl SpanMap {
    /// Records a path; `overwrite` makes a later occurrence win (singular
    /// scalars given twice: the last value is the one kept).
    pub fn insert(&mut self, path: String, span: FieldSpan, overwrite: bool) {
        if overwrite {
            self.spans.insert(path, span);
        } else {
            self.spans.entry(path).or_insert(span);
        }
    }

    pub fn get(&self, path: &str) -> Option<&FieldSpan> {
        self.spans.get(path)
    }

    /// Span of the value at `path`.
    pub fn value(&self, path: &str) -> Option<Range<usize>> {
        self.get(path).map(|s| s.value.clone())
    }

    /// Span of the field name at `path`.
    pub fn name(&self, path: &str) -> Option<Range<usize>> {
        self.get(path).map(|s| s.name.clone())
    }

    /// The best span for `path`: its value if present, else the span of the
    /// nearest recorded ancestor's name (a missing field is reported on the
    /// block that should hold it).
    pub fn best(&self, path: &str) -> Option<Range<usize>> {
        if let Some(s) = self.value(path) {
            return Some(s);
        }
        self.nearest_ancestor(path).map(|s| s.name.clone())
    }

    /// The nearest recorded ancestor of `path` (not `path` itself).
    pub fn nearest_ancestor(&self, path: &str) -> Option<&FieldSpan> {
        let mut p = path;
        loop {
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
            if let Some(s) = self.get(p) {
                return Some(s);
            }
        }
    }

    pub fn contains(&self, path: &str) -> bool {
        self.spans.contains_key(path)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &FieldSpan)> {
        self.spans.iter()
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}
