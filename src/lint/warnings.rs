//! Legal but almost surely unintended settings (warnings), and the advice
//! that a fragment was checked only as far as it could be.

use std::collections::HashSet;

use super::context::{Ctx, FeatureKind, Tower};
use super::{LabelAt, Rule};
use crate::diag::{Diagnostic, Severity};
use crate::proto::tzrec::protos::FeatureGroupType;

pub(super) const RULES: &[Rule] = &[
    Rule {
        code: "plec::huge-model",
        severity: Severity::Warning,
        summary: "one layer or embedding table alone needs more than 2 GiB",
        explain: "\
A single MLP layer (the product of two consecutive widths) or a single
embedding table (ids times embedding_dim) holds more than 2 GiB of f32 values.
That is rarely intended: usually a width or a bucket count has a few digits too
many. Training needs two to four times the parameters' size again for
gradients and optimizer state. `plec compile` and `plec run` estimate the whole
model's memory before allocating anything and stop when it does not fit
(`--max-memory` sets the limit); `plec inspect` prints the estimate.

Example:
    mlp { hidden_units: [1000000000, 512, 256] }

Fix: check the widths and bucket counts; if the size is intended, make sure
the machine has the memory (see `plec inspect`).",
        check: huge_model,
    },
    Rule {
        code: "plec::unused-feature",
        severity: Severity::Warning,
        summary: "a feature is defined but no feature group uses it",
        explain: "\
A feature only reaches the model through a feature group. A defined feature
that no group lists is still read and transformed for every batch, but its
values are thrown away.

Example:
    feature_configs { id_feature { feature_name: \"brand\" ... } }
    feature_groups { group_name: \"all\" feature_names: \"user_id\" ... }

Fix: add it to a group (`feature_names: \"brand\"`), or delete it.",
        check: unused_feature,
    },
    Rule {
        code: "plec::ignored-group",
        severity: Severity::Warning,
        summary: "the model reads only its first feature group; later groups are ignored",
        explain: "\
PLE, MMoE, DBMTL, DC2VR, SimpleMultiTask, DCN (v1 and v2), MaskNet and
RocketLaunching build their input from the first feature group only (the
schema marks them `(plec.first_group_only)`). Any further group is computed
by nobody, so its features do not reach the model.

Example:
    feature_groups { group_name: \"user\" ... }
    feature_groups { group_name: \"item\" ... }
    ple { ... }

Fix: list all features in one DEEP group.",
        check: ignored_group,
    },
    Rule {
        code: "plec::dense-in-wide",
        severity: Severity::Error,
        summary: "a dense raw feature is listed in a WIDE group",
        explain: "\
A WIDE group is a sum of one-wide embeddings of sparse (bucketized) features.
A raw feature without `boundaries` is a dense value with no embedding:
TorchEasyRec raises \"dense feature [...] should not be configured in wide
group\" when it builds the model.

Example:
    raw_feature { feature_name: \"price\" expression: \"item:price\" }
    feature_groups { group_name: \"wide\" group_type: WIDE feature_names: \"price\" }

Fix: bucketize it (`boundaries: [1, 10, 100]` and an `embedding_dim`), or list
it in a DEEP group.",
        check: dense_in_wide,
    },
    Rule {
        code: "plec::cvr-without-task-space",
        // Advice, not a warning: the official PLE/MMoE examples train their
        // cvr tower on every impression on purpose.
        severity: Severity::Advice,
        summary: "a conversion-like tower has no task space although conversions depend on clicks",
        explain: "\
A conversion (buy, pay, order...) can only follow a click. A CVR tower trained
on every impression learns p(conversion | impression), i.e. CTCVR, not CVR. To
train it on the click space, point `task_space_indicator_label` at the click
label (with `in_task_space_weight` / `out_task_space_weight`), or in DBMTL
relate it to the click tower with `relation_tower_names`.

Example:
    task_towers { tower_name: \"ctr\" label_name: \"clk\" ... }
    task_towers { tower_name: \"cvr\" label_name: \"buy\" ... }

Fix: add `task_space_indicator_label: \"clk\"` to the cvr tower, or rename it
(e.g. `ctcvr`) if the impression space is what you mean. This is advice, not a
warning: TorchEasyRec's own PLE and MMoE examples train the cvr tower on all
impressions.",
        check: cvr_without_task_space,
    },
    Rule {
        code: "plec::unused-label",
        severity: Severity::Warning,
        summary: "a label field is read but no tower uses it",
        explain: "\
Every entry of `data_config.label_fields` is read from the input for every
batch. A label that no tower trains on (or uses as its task space indicator)
is read for nothing, which usually means a tower's `label_name` is wrong.

Example:
    data_config { label_fields: \"clk\" label_fields: \"buy\" }
    task_towers { tower_name: \"ctr\" label_name: \"clk\" ... }   # nobody uses buy

Fix: add the missing tower or fix its `label_name`, or drop the field.",
        check: unused_label,
    },
    Rule {
        code: "plec::duplicate-group-feature",
        severity: Severity::Warning,
        summary: "a feature is listed twice in one feature group",
        explain: "\
A group concatenates its features in the order listed; a feature listed twice
is concatenated twice, which only widens the input with a copy.

Example:
    feature_groups { feature_names: \"user_id\" feature_names: \"user_id\" ... }

Fix: remove the second entry.",
        check: duplicate_group_feature,
    },
    Rule {
        code: "plec::relation-without-mlp",
        severity: Severity::Warning,
        summary: "a DBMTL tower lists relation towers but has no relation_mlp",
        explain: "\
In DBMTL, the outputs of `relation_tower_names` are combined with a tower's own
output only by its `relation_mlp`. Without that MLP the related towers are
ignored.

Example:
    task_towers { tower_name: \"cvr\" relation_tower_names: \"ctr\" mlp { ... } }

Fix: add `relation_mlp { hidden_units: [32] }`, or remove the relation.",
        check: relation_without_mlp,
    },
    Rule {
        code: "plec::ignored-task-space-weight",
        severity: Severity::Warning,
        summary: "in_/out_task_space_weight is set without task_space_indicator_label",
        explain: "\
`in_task_space_weight` and `out_task_space_weight` weigh samples inside and
outside a tower's task space, which `task_space_indicator_label` defines.
Without that label there is no task space and the weights do nothing.

Example:
    task_towers { tower_name: \"cvr\" out_task_space_weight: 0.1 ... }

Fix: add `task_space_indicator_label: \"clk\"`, or remove the weights.",
        check: ignored_task_space_weight,
    },
    Rule {
        code: "plec::tower-weight",
        severity: Severity::Warning,
        summary: "a tower's loss weight is zero or negative",
        explain: "\
A tower's `weight` multiplies its loss in the total. Zero turns the task off
(its tower never learns); a negative weight makes training push the task's
loss up.

Example:
    task_towers { tower_name: \"cvr\" weight: 0 ... }

Fix: use a positive weight (the default is 1.0), or remove the tower.",
        check: tower_weight,
    },
    Rule {
        code: "plec::ignored-embedding-dim",
        severity: Severity::Warning,
        summary: "a raw feature without boundaries sets embedding_dim, which is ignored",
        explain: "\
A raw feature is embedded only when it is bucketized (`boundaries`) or has a
dense embedding (`autodis`, `mlp`). Otherwise its value enters the group as
is and `embedding_dim` does nothing.

Example:
    raw_feature { feature_name: \"price\" embedding_dim: 16 }

Fix: add `boundaries` to bucketize it, or remove `embedding_dim`.",
        check: ignored_embedding_dim,
    },
    Rule {
        code: "plec::fragment",
        severity: Severity::Advice,
        summary: "the file is a fragment; cross-checks that need absent sections were skipped",
        explain: "\
A file may hold only part of a config, e.g. just a `model_config { ... }` block
as in the TorchEasyRec model docs. plec checks everything it can, but
references into absent sections cannot be checked: without `feature_configs`
the features named by feature groups, without `data_config` the labels and
sample weights named by towers.

Example (the whole file):
    model_config {
      feature_groups { group_name: \"all\" feature_names: \"user_id\" }
      ple { ... }
    }

Fix: nothing, if the file is meant as a fragment; otherwise check the whole
config.",
        check: fragment,
    },
];

fn unused_feature(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    if cx.groups.is_empty() {
        return;
    }
    let used: HashSet<&str> = cx
        .groups
        .iter()
        .flat_map(|g| {
            g.feature_names.iter().chain(
                g.sequence_groups
                    .iter()
                    .flat_map(|s| s.feature_names.iter()),
            )
        })
        .map(String::as_str)
        .collect();
    for f in &cx.features {
        if f.name.is_empty() || used.contains(f.name) {
            continue;
        }
        out.push(
            rule.diag(format!(
                "feature \"{}\" is not used by any feature group",
                f.name
            ))
            .primary_at(cx.best(&f.field("feature_name")), "defined but never used")
            .with_help(format!(
                "add `feature_names: \"{}\"` to a feature group, or remove the feature",
                f.name
            )),
        );
    }
}

fn ignored_group(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let Some((kind, desc)) = &cx.model_kind else {
        return;
    };
    if !cx.facts.first_group_only(desc) {
        return;
    }
    let Some(first) = cx.groups.first() else {
        return;
    };
    for (i, g) in cx.groups.iter().enumerate().skip(1) {
        out.push(
            rule.diag(format!(
                "{kind} reads only the first feature group; \"{}\" is ignored",
                g.group_name
            ))
            .primary_at(
                cx.best(&format!("model_config.feature_groups[{i}].group_name")),
                "ignored group",
            )
            .secondary_at(
                cx.value("model_config.feature_groups[0].group_name"),
                format!("only \"{}\" is read", first.group_name),
            )
            .with_help("list all the model's features in one DEEP group"),
        );
    }
}

fn dense_in_wide(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    for (g, group) in cx.groups.iter().enumerate() {
        if group.group_type() != FeatureGroupType::Wide {
            continue;
        }
        for (i, name) in group.feature_names.iter().enumerate() {
            let Some(f) = cx.feature(name) else { continue };
            if !f.is_dense() {
                continue;
            }
            out.push(
                rule.diag(format!(
                    "dense raw feature \"{name}\" is in wide group \"{}\"",
                    group.group_name
                ))
                .primary_at(cx.value(&format!("model_config.feature_groups[{g}].feature_names[{i}]")), "dense feature in a WIDE group")
                .secondary_at(cx.best(&f.field("feature_name")), "defined here without `boundaries`")
                .with_help(format!(
                    "TorchEasyRec refuses dense features in a WIDE group when it builds the model; bucketize \"{name}\" with `boundaries`, or move it to a DEEP group"
                )),
            );
        }
    }
}

/// Whether a name reads like a click label or tower.
fn click_like(s: &str) -> bool {
    let s = s.to_ascii_lowercase();
    ["ctr", "clk", "click"].iter().any(|w| s.contains(w)) && !s.contains("cvr")
}

/// Whether a name reads like a post-click conversion label or tower.
fn conversion_like(s: &str) -> bool {
    let s = s.to_ascii_lowercase();
    if s.contains("ctcvr") || s.contains("ctr") || s.contains("clk") || s.contains("click") {
        return false;
    }
    ["cvr", "conv", "buy", "pay", "purchase", "order"]
        .iter()
        .any(|w| s.contains(w))
}

fn cvr_without_task_space(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let Some(model) = &cx.model else { return };
    // HSTU fusion tasks have no task space to set.
    if model.towers.iter().any(|t| t.fusion) {
        return;
    }
    let clicks: Vec<(&Tower, &str)> = model
        .towers
        .iter()
        .filter_map(|t| cx.tower_label(t).map(|l| (t, l)))
        .filter(|(t, l)| click_like(l) || click_like(t.name))
        .collect();
    let Some(&(click_tower, click_label)) = clicks.first() else {
        return;
    };
    for t in &model.towers {
        if t.task_space_label.is_some() || !t.relations.is_empty() {
            continue;
        }
        let label = cx.tower_label(t).unwrap_or("");
        if !(conversion_like(t.name) || conversion_like(label)) {
            continue;
        }
        out.push(
            rule.diag(format!("conversion tower \"{}\" has no task space", t.name))
                .primary_at(cx.best(&t.name_path()), "trained on every impression")
                .secondary_at(cx.best(&click_tower.name_path()), format!("clicks are labeled \"{click_label}\" here"))
                .with_help(format!(
                    "a conversion can only follow a click; set `task_space_indicator_label: \"{click_label}\"` to train on clicked samples{}, or ignore this if the tower is meant to predict conversions over all impressions",
                    if t.bayes { " or relate it to the click tower with `relation_tower_names`" } else { "" }
                )),
        );
    }
}

fn unused_label(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let (Some(data), Some(model)) = (cx.data, &cx.model) else {
        return;
    };
    if model.towers.is_empty() {
        return;
    }
    let used: HashSet<&str> = model
        .towers
        .iter()
        .filter_map(|t| cx.tower_label(t))
        .chain(model.towers.iter().filter_map(|t| t.task_space_label))
        .collect();
    for (i, label) in data.label_fields.iter().enumerate() {
        if used.contains(label.as_str()) {
            continue;
        }
        out.push(
            rule.diag(format!("label \"{label}\" is not used by any tower"))
                .primary_at(cx.value(&format!("data_config.label_fields[{i}]")), "read but never used")
                .with_help(format!(
                    "add a tower with `label_name: \"{label}\"`, fix a tower's `label_name`, or drop this label field"
                )),
        );
    }
}

fn duplicate_group_feature(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    for (g, group) in cx.groups.iter().enumerate() {
        for (i, name) in group.feature_names.iter().enumerate() {
            let Some(first) = group.feature_names[..i].iter().position(|n| n == name) else {
                continue;
            };
            let p = format!("model_config.feature_groups[{g}].feature_names");
            out.push(
                rule.diag(format!(
                    "feature \"{name}\" is listed twice in group \"{}\"",
                    group.group_name
                ))
                .primary_at(cx.value(&format!("{p}[{i}]")), "listed again here")
                .secondary_at(cx.value(&format!("{p}[{first}]")), "first listed here")
                .with_help("the group would concatenate the feature twice; remove one entry"),
            );
        }
    }
}

fn relation_without_mlp(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let Some(model) = &cx.model else { return };
    for t in &model.towers {
        if t.relations.is_empty() || t.relation_mlp.is_some() {
            continue;
        }
        out.push(
            rule.diag(format!("tower \"{}\" lists relation towers but has no relation_mlp", t.name))
                .primary_at(cx.name(&t.field("relation_tower_names")), "ignored without `relation_mlp`")
                .with_help("add `relation_mlp { hidden_units: [32] }` to combine the related towers, or remove `relation_tower_names`"),
        );
    }
}

fn ignored_task_space_weight(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let Some(model) = &cx.model else { return };
    for t in &model.towers {
        if t.task_space_label.is_some() {
            continue;
        }
        for (name, value) in [
            ("in_task_space_weight", t.in_task_space_weight),
            ("out_task_space_weight", t.out_task_space_weight),
        ] {
            if value.is_none() {
                continue;
            }
            out.push(
                rule.diag(format!("{name} of tower \"{}\" has no effect", t.name))
                    .primary_at(cx.best(&t.field(name)), "no task space is defined")
                    .with_help("add `task_space_indicator_label` naming the label that defines the task space, or remove the weight"),
            );
        }
    }
}

fn tower_weight(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let Some(model) = &cx.model else { return };
    for t in &model.towers {
        let Some(w) = t.weight else { continue };
        if w > 0.0 {
            continue;
        }
        let effect = if w == 0.0 {
            "the task is switched off"
        } else {
            "training pushes this task's loss up"
        };
        out.push(
            rule.diag(format!("tower \"{}\" has loss weight {w}", t.name))
                .primary_at(cx.value(&t.field("weight")), effect)
                .with_help("use a positive weight (the default is 1.0), or remove the tower"),
        );
    }
}

fn ignored_embedding_dim(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    for f in &cx.features {
        let FeatureKind::Raw(raw) = f.kind else {
            continue;
        };
        if !f.is_dense() || raw.embedding_dim.is_none() {
            continue;
        }
        out.push(
            rule.diag(format!("embedding_dim of raw feature \"{}\" is ignored", f.name))
                .primary_at(cx.value(&f.field("embedding_dim")), "no embedding without `boundaries`")
                .with_help("the value enters the group as is; add `boundaries` to bucketize and embed it, or remove `embedding_dim`"),
        );
    }
}

fn fragment(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    if cx.config.model_config.is_none() {
        return;
    }
    let mut skipped = Vec::new();
    if !cx.has_features() && !cx.groups.is_empty() {
        skipped.push("feature names (no `feature_configs`)");
    }
    if cx.data.is_none() && cx.model.as_ref().is_some_and(|m| !m.towers.is_empty()) {
        skipped.push("label and sample weight names (no `data_config`)");
    }
    if skipped.is_empty() {
        return;
    }
    out.push(
        rule.diag("partial config: some cross-checks were skipped")
            .primary_at(cx.name("model_config"), "checked on its own")
            .with_help(format!("not checked: {}", skipped.join("; "))),
    );
}

#[cfg(test)]
pub(super) fn names_read(s: &str) -> (bool, bool) {
    (click_like(s), conversion_like(s))
}

/// Bytes above which one layer or table is reported.
const HUGE_BYTES: u64 = 2 << 30;

fn huge_model(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let gib = |b: u64| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64);
    for (path, mlp) in &cx.mlps {
        // The first layer's input width is not known here; one input
        // column is the least it can have.
        let mut prev = 1u64;
        for (i, &units) in mlp.hidden_units.iter().enumerate() {
            let units = units as u64;
            let bytes = prev.saturating_mul(units).saturating_mul(4);
            if bytes > HUGE_BYTES {
                out.push(
                    rule.diag(format!(
                        "an MLP layer of {units} units needs at least {}",
                        gib(bytes)
                    ))
                    .primary_at(
                        cx.value(&format!("{path}.hidden_units[{i}]")),
                        format!("{prev} x {units} weights"),
                    )
                    .with_help(
                        "check the width; `plec inspect` shows the model's whole memory estimate",
                    ),
                );
                break;
            }
            prev = units.max(1);
        }
    }
    for f in &cx.features {
        let FeatureKind::Id(id) = f.kind else {
            continue;
        };
        let (rows, field) = match (id.hash_bucket_size, id.num_buckets) {
            (Some(h), _) => (h, "hash_bucket_size"),
            (None, Some(n)) => (n, "num_buckets"),
            _ => continue,
        };
        let dim = id.embedding_dim as u64;
        let bytes = rows.saturating_mul(dim).saturating_mul(4);
        if bytes > HUGE_BYTES {
            out.push(
                rule.diag(format!(
                    "the embedding table of \"{}\" needs {} ({rows} ids x {dim})",
                    f.name,
                    gib(bytes)
                ))
                .primary_at(cx.value(&f.field(field)), format!("{rows} ids"))
                .with_help("check the bucket count; `plec inspect` shows the model's whole memory estimate"),
            );
        }
    }
}
