//! Compares the parameters and embedding tables of two plans by name and
//! shape: what `plec diff` shows and what `plec run --init-from` copies or
//! reports. Names are the plan's own (tables as the feature configs name
//! them, layers by their path in the model), so the same name in two plans
//! is the same piece of the model.

use std::collections::BTreeMap;

use super::Plan;

/// A parameter (dense layer weight, bias, norm) or an embedding table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Table,
    Param,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Table => "table",
            Kind::Param => "param",
        }
    }
}

/// One name present in either plan, with its shape in each (None: absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub name: String,
    pub a: Option<Vec<u64>>,
    pub b: Option<Vec<u64>>,
}

impl Entry {
    /// Present in both with the same shape.
    pub fn matches(&self) -> bool {
        self.a.is_some() && self.a == self.b
    }
}

/// Shapes by (kind, name) of a plan's tables and parameters.
fn shapes(plan: &Plan) -> BTreeMap<(Kind, String), Vec<u64>> {
    let tables = plan.tables.iter().map(|t| {
        (
            (Kind::Table, t.name.clone()),
            vec![t.num_rows, t.dim as u64],
        )
    });
    let params = plan
        .params
        .iter()
        .map(|p| ((Kind::Param, p.name.clone()), p.shape.clone()));
    tables.chain(params).collect()
}

/// Every table and parameter of `a` and `b`, tables first, then by name.
pub fn compare(a: &Plan, b: &Plan) -> Vec<Entry> {
    let (sa, mut sb) = (shapes(a), shapes(b));
    let mut out: Vec<Entry> = sa
        .into_iter()
        .map(|(key, shape)| {
            let other = sb.remove(&key);
            Entry {
                kind: key.0,
                name: key.1,
                a: Some(shape),
                b: other,
            }
        })
        .collect();
    out.extend(sb.into_iter().map(|(key, shape)| Entry {
        kind: key.0,
        name: key.1,
        a: None,
        b: Some(shape),
    }));
    out.sort_by(|x, y| (x.kind, &x.name).cmp(&(y.kind, &y.name)));
    out
}

/// A shape as `8x16` (a scalar as `1`), or `-` when absent.
pub fn shape_text(s: &Option<Vec<u64>>) -> String {
    match s {
        None => "-".to_string(),
        Some(d) if d.is_empty() => "1".to_string(),
        Some(d) => d.iter().map(u64::to_string).collect::<Vec<_>>().join("x"),
    }
}

/// The entries that differ as table rows: name, kind, shape in `a`, shape
/// in `b` (headers named `a_name` and `b_name`).
pub fn difference_rows(entries: &[Entry], a_name: &str, b_name: &str) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        "name".to_string(),
        "kind".to_string(),
        a_name.to_string(),
        b_name.to_string(),
    ]];
    for e in entries.iter().filter(|e| !e.matches()) {
        rows.push(vec![
            e.name.clone(),
            e.kind.as_str().to_string(),
            shape_text(&e.a),
            shape_text(&e.b),
        ]);
    }
    rows
}
