//! Feature definitions: how each feature turns input into ids or values
//! (bucket settings, boundaries, expressions, normalizers, pooling) and
//! features that share one embedding table.

use std::collections::HashMap;
use std::ops::Range;

use super::context::{Ctx, Feature, FeatureKind};
use super::{LabelAt, Rule};
use crate::diag::{Diagnostic, Severity};
use crate::lang::expression;
use crate::proto::tzrec::protos::FgMode;

pub(super) const RULES: &[Rule] = &[
    Rule {
        code: "plec::boundaries-order",
        severity: Severity::Error,
        summary: "a raw feature's boundaries are not strictly increasing",
        explain: "\
`boundaries` bucketizes a number: bucket i holds boundaries[i-1] <= x <
boundaries[i]. The boundaries must therefore be strictly increasing; a value
equal to or below the one before it makes an empty or ill-defined bucket.

Example:
    raw_feature { feature_name: \"price\" boundaries: [1, 5, 20, 10] ... }

Fix: sort the boundaries and remove duplicates.",
        check: boundaries_order,
    },
    Rule {
        code: "plec::bad-expression",
        severity: Severity::Error,
        summary: "a feature expression is not `side:input_name` with a known side",
        explain: "\
When features are generated from raw columns (`data_config.fg_mode` other than
FG_NONE), `expression` says which input a feature reads: `side:input_name`,
where side is one of `user`, `item`, `context`, `feature` or `const`.

Example:
    id_feature { feature_name: \"age_level\" expression: \"usr:age_level\" ... }

Fix: write the side and the column, e.g. `expression: \"user:age_level\"`.
(Under FG_NONE the expression is not read and is not checked.)",
        check: bad_expression,
    },
    Rule {
        code: "plec::missing-expression",
        severity: Severity::Error,
        summary: "a feature has no expression although fg_mode generates features from raw input",
        explain: "\
With `data_config.fg_mode` FG_NORMAL, FG_DAG or FG_BUCKETIZE, each feature is
computed from the raw input column its `expression` names, so every id, raw
and combo feature needs one. Under FG_NONE the input already holds encoded
features named by `feature_name`, and the expression may be left out.

Example:
    data_config { fg_mode: FG_NORMAL ... }
    id_feature { feature_name: \"user_id\" hash_bucket_size: 100000 ... }

Fix: add `expression: \"user:user_id\"`, or use `fg_mode: FG_NONE` if the
columns are already encoded.",
        check: missing_expression,
    },
    Rule {
        code: "plec::combo-expressions",
        severity: Severity::Error,
        summary: "a combo feature combines fewer than two expressions",
        explain: "\
A combo feature is the cross product of the values of several inputs, so it
needs at least two `expression` entries; with one it is just an id feature.

Example:
    combo_feature { feature_name: \"user_cate\" expression: \"user:user_id\" ... }

Fix: add the second input (`expression: \"item:cate_id\"`), or make it an
`id_feature`.",
        check: combo_expressions,
    },
    Rule {
        code: "plec::shared-embedding-mismatch",
        severity: Severity::Error,
        summary: "features sharing an embedding_name disagree on embedding_dim or table size",
        explain: "\
Features with the same `embedding_name` share one embedding table, so they
must agree on its shape: the same `embedding_dim` and the same number of rows
(`hash_bucket_size`, `num_buckets`, `zch` size, or number of boundaries + 1).

Example:
    id_feature { feature_name: \"item_id\" embedding_name: \"item_emb\"
                 hash_bucket_size: 100000 embedding_dim: 16 }
    id_feature { feature_name: \"click_item\" embedding_name: \"item_emb\"
                 hash_bucket_size: 100000 embedding_dim: 8 }

Fix: make the settings equal, or give the features different embedding
names.",
        check: shared_embedding_mismatch,
    },
    Rule {
        code: "plec::unknown-pooling",
        severity: Severity::Error,
        summary: "a feature's pooling is neither `sum` nor `mean`",
        explain: "\
`pooling` says how the embeddings of a multi-value input are combined into one
vector: `sum` (the default) or `mean`. Other words are not supported.

Example:
    id_feature { feature_name: \"tags\" pooling: \"max\" ... }

Fix: use `pooling: \"sum\"` or `pooling: \"mean\"`.",
        check: unknown_pooling,
    },
    Rule {
        code: "plec::normalizer",
        severity: Severity::Error,
        summary: "a raw feature's normalizer string is malformed",
        explain: "\
`normalizer` is a comma-separated list of `key=value` settings starting with a
method:
    method=log10,threshold=1e-10,default=-10   x > threshold ? log10(x) : default
    method=zscore,mean=0.0,standard_deviation=10.0
    method=minmax,min=2.1,max=2.2              (min below max)
    method=expression,expr=sign(x)
Unknown methods or keys, missing `=`, non-numeric values, a zero standard
deviation or min >= max are errors.

Example:
    raw_feature { feature_name: \"price\" normalizer: \"log10\" }

Fix: write `normalizer: \"method=log10\"`.",
        check: normalizer,
    },
];

fn boundaries_order(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    for f in &cx.features {
        let FeatureKind::Raw(raw) = f.kind else {
            continue;
        };
        let Some(i) = (1..raw.boundaries.len()).find(|&i| {
            raw.boundaries[i].partial_cmp(&raw.boundaries[i - 1])
                != Some(std::cmp::Ordering::Greater)
        }) else {
            continue;
        };
        let (prev, cur) = (raw.boundaries[i - 1], raw.boundaries[i]);
        out.push(
            rule.diag(format!(
                "boundaries of \"{}\" are not strictly increasing: {cur} comes after {prev}",
                f.name
            ))
            .primary_at(cx.value(&f.field(&format!("boundaries[{i}]"))), format!("not above {prev}"))
            .secondary_at(cx.value(&f.field(&format!("boundaries[{}]", i - 1))), "previous boundary")
            .with_help("bucket i holds boundaries[i-1] <= x < boundaries[i]; sort the boundaries and remove duplicates"),
        );
    }
}

/// Expressions of a feature with their paths (only those written).
fn expressions<'a>(cx: &Ctx, f: &'a Feature) -> Vec<(&'a str, String)> {
    match f.kind {
        FeatureKind::Id(x) => single_expression(cx, f, &x.expression),
        FeatureKind::Raw(x) => single_expression(cx, f, &x.expression),
        FeatureKind::Combo(x) => x
            .expression
            .iter()
            .enumerate()
            .map(|(i, e)| (e.as_str(), f.field(&format!("expression[{i}]"))))
            .collect(),
    }
}

fn single_expression<'a>(cx: &Ctx, f: &Feature, e: &'a str) -> Vec<(&'a str, String)> {
    let path = f.field("expression");
    if e.is_empty() && !cx.written(&path) {
        Vec::new()
    } else {
        vec![(e, path)]
    }
}

fn bad_expression(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    if cx.fg_mode() == FgMode::FgNone {
        return;
    }
    for f in &cx.features {
        for (expr, path) in expressions(cx, f) {
            let Err(problem) = expression::parse(expr) else {
                continue;
            };
            out.push(
                rule.diag(problem.message)
                    .primary_at(cx.value(&path), "expected `side:input_name`")
                    .with_help(problem.help),
            );
        }
    }
}

fn fg_mode_span(cx: &Ctx) -> Option<Range<usize>> {
    cx.value("data_config.fg_mode")
}

fn missing_expression(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let mode = cx.fg_mode();
    if mode == FgMode::FgNone {
        return;
    }
    for f in &cx.features {
        if !expressions(cx, f).is_empty() {
            continue;
        }
        out.push(
            rule.diag(format!("{} \"{}\" has no expression", f.kind_words(), f.name))
                .primary_at(cx.best(&f.field("feature_name")), "no `expression` for this feature")
                .secondary_at(fg_mode_span(cx), format!("{} generates features from raw input", mode.as_str_name()))
                .with_help(format!(
                    "add `expression: \"user:{}\"` naming the input column, or use `fg_mode: FG_NONE` if the input is already encoded",
                    f.name
                )),
        );
    }
}

fn combo_expressions(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    if cx.fg_mode() == FgMode::FgNone {
        return;
    }
    for f in &cx.features {
        let FeatureKind::Combo(c) = f.kind else {
            continue;
        };
        // None at all is `missing-expression`.
        if c.expression.len() != 1 {
            continue;
        }
        out.push(
            rule.diag(format!("combo feature \"{}\" combines only one expression", f.name))
                .primary_at(cx.value(&f.field("expression[0]")), "the only input")
                .with_help("a combo feature crosses two or more inputs; add another `expression`, or make it an `id_feature`"),
        );
    }
}

/// Embedding width and table rows of a feature, where written: each with
/// the path to point at.
type Shape = (Option<(u64, String)>, Option<(u64, String)>);

fn table_shape(cx: &Ctx, f: &Feature) -> Shape {
    let (dim, rows) = match f.kind {
        FeatureKind::Id(x) => {
            let rows = if let Some(z) = &x.zch {
                Some((z.zch_size, f.field("zch")))
            } else if let Some(h) = x.hash_bucket_size {
                Some((h, f.field("hash_bucket_size")))
            } else {
                x.num_buckets.map(|n| (n, f.field("num_buckets")))
            };
            (Some(u64::from(x.embedding_dim)), rows)
        }
        FeatureKind::Combo(x) => {
            let rows = if let Some(z) = &x.zch {
                Some((z.zch_size, f.field("zch")))
            } else {
                x.hash_bucket_size.map(|h| (h, f.field("hash_bucket_size")))
            };
            (x.embedding_dim.map(u64::from), rows)
        }
        FeatureKind::Raw(x) => {
            if x.boundaries.is_empty() {
                return (None, None);
            }
            let rows = Some((x.boundaries.len() as u64 + 1, f.field("boundaries")));
            (x.embedding_dim.map(u64::from), rows)
        }
    };
    let dim_path = f.field("embedding_dim");
    // A missing width is the shape checker's business, not a mismatch.
    let dim = dim.filter(|_| cx.written(&dim_path)).map(|d| (d, dim_path));
    (dim, rows)
}

fn shared_embedding_mismatch(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let mut first: HashMap<&str, &Feature> = HashMap::new();
    for f in &cx.features {
        let Some(emb) = f.embedding_name() else {
            continue;
        };
        let Some(g) = first.get(emb) else {
            first.insert(emb, f);
            continue;
        };
        let (dim_a, rows_a) = table_shape(cx, g);
        let (dim_b, rows_b) = table_shape(cx, f);
        if let (Some((a, pa)), Some((b, pb))) = (&dim_a, &dim_b) {
            if a != b {
                out.push(
                    rule.diag(format!(
                        "features sharing embedding \"{emb}\" have different embedding_dim ({a} and {b})"
                    ))
                    .primary_at(cx.best(pb), format!("{b} wide for \"{}\"", f.name))
                    .secondary_at(cx.best(pa), format!("{a} wide for \"{}\"", g.name))
                    .with_help("features with one embedding_name share one table; give them the same embedding_dim or different embedding names"),
                );
            }
        }
        if let (Some((a, pa)), Some((b, pb))) = (&rows_a, &rows_b) {
            if a != b {
                out.push(
                    rule.diag(format!(
                        "features sharing embedding \"{emb}\" have different table sizes ({a} and {b} rows)"
                    ))
                    .primary_at(cx.best(pb), format!("{b} rows for \"{}\"", f.name))
                    .secondary_at(cx.best(pa), format!("{a} rows for \"{}\"", g.name))
                    .with_help("features with one embedding_name share one table; give them the same bucket size or different embedding names"),
                );
            }
        }
    }
}

fn unknown_pooling(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    for f in &cx.features {
        let Some(p) = f.pooling() else { continue };
        if p == "sum" || p == "mean" {
            continue;
        }
        let help = if p.eq_ignore_ascii_case("sum") || p.eq_ignore_ascii_case("mean") {
            format!(
                "did you mean `{}`? pooling names are lowercase",
                p.to_ascii_lowercase()
            )
        } else {
            "pooling combines multi-value embeddings: use `sum` or `mean`".to_string()
        };
        out.push(
            rule.diag(format!("unknown pooling \"{p}\""))
                .primary_at(cx.value(&f.field("pooling")), "expected `sum` or `mean`")
                .with_help(help),
        );
    }
}

fn normalizer(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    for f in &cx.features {
        let FeatureKind::Raw(raw) = f.kind else {
            continue;
        };
        let Some(n) = raw.normalizer.as_deref() else {
            continue;
        };
        let Err(crate::lang::Problem { message, help }) = crate::lang::normalizer::parse(n) else {
            continue;
        };
        out.push(
            rule.diag(message)
                .primary_at(cx.value(&f.field("normalizer")), "malformed normalizer")
                .with_help(help),
        );
    }
}

#[cfg(test)]
pub(super) fn expression_ok(s: &str) -> bool {
    expression::parse(s).is_ok()
}
