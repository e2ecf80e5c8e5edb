//! References between sections: feature groups to features, towers to
//! label and sample-weight columns, DBMTL relations to towers, and names
//! that must be unique (features, towers, groups, PLE layers).

use std::collections::HashMap;

use super::context::Ctx;
use super::{LabelAt, Rule};
use crate::diag::{closest_names, one_of, Diagnostic, Severity};
use crate::proto::tzrec::protos::loss_config::Loss;

pub(super) const RULES: &[Rule] = &[
    Rule {
        code: "plec::unknown-feature",
        severity: Severity::Error,
        summary: "a feature group names a feature that is not defined",
        explain: "\
A feature group lists features by name (`feature_names`); each name must be the
`feature_name` of one of the `feature_configs`. A name that matches none is
almost always a typo, and TorchEasyRec stops when it builds the model.

Example:
    feature_configs { id_feature { feature_name: \"user_id\" ... } }
    model_config { feature_groups { feature_names: \"user_idd\" ... } }

Fix: correct the name (the help lists the closest defined features), or add
the missing feature to `feature_configs`.",
        check: unknown_feature,
    },
    Rule {
        code: "plec::unknown-label",
        severity: Severity::Error,
        summary: "a tower trains on a label that is not in data_config.label_fields",
        explain: "\
A task tower's `label_name` (and the `label_name` of each task of an HSTU
model's `fusion_mtl_tower`) must be one of `data_config.label_fields`: only
those columns are read as labels. A DBMTL tower without `label_name` takes
`label_fields` at its position, so it needs as many label fields as towers.
(Models without towers train on `label_fields[0]`: `plec::no-label`.)

Example:
    data_config { label_fields: \"clk\" label_fields: \"buy\" }
    task_towers { tower_name: \"ctr\" label_name: \"click\" ... }

Fix: use a listed label (`label_name: \"clk\"`), or add the column to
`label_fields`.",
        check: unknown_label,
    },
    Rule {
        code: "plec::no-label",
        severity: Severity::Error,
        summary: "a single-task or retrieval model has no label field to train on",
        explain: "\
Single-task ranking models (DeepFM, DLRM, MultiTower, MultiTowerDIN, DCN,
MaskNet, WuKong, TDM...) and retrieval models (DSSM, DSSMV2, DAT, MIND,
HSTUMatch) have no `label_name`: TorchEasyRec trains them on the first entry
of `data_config.label_fields` (the schema marks them `(plec.first_label)`).
With no label field a retrieval model fails when it is built (`labels[0]`),
and a ranking model at its first loss (it looks up a label named \"\").

Example:
    data_config { batch_size: 1024 dataset_type: ParquetDataset }
    model_config { deepfm { ... } losses { binary_cross_entropy {} } }

Fix: list the label column: `label_fields: \"clk\"`.",
        check: no_label,
    },
    Rule {
        code: "plec::unknown-sample-weight",
        severity: Severity::Error,
        summary: "a tower's sample_weight_name is not in data_config.sample_weight_fields",
        explain: "\
`sample_weight_name` on a tower names the column that weighs each sample's
loss. Only columns listed in `data_config.sample_weight_fields` are read, so
the name must be one of them.

Example:
    data_config { sample_weight_fields: \"w\" }
    task_towers { tower_name: \"cvr\" sample_weight_name: \"weight\" ... }

Fix: use a listed field, or add the column to `sample_weight_fields`.",
        check: unknown_sample_weight,
    },
    Rule {
        code: "plec::unknown-task-space-label",
        severity: Severity::Error,
        summary: "a tower's task_space_indicator_label is not a label field",
        explain: "\
`task_space_indicator_label` names the label that says whether a sample is in
the tower's task space (for a CVR tower, usually the click label). It is read
like any label, so it must be one of `data_config.label_fields`.

Example:
    data_config { label_fields: \"clk\" label_fields: \"buy\" }
    task_towers { tower_name: \"cvr\" label_name: \"buy\"
                  task_space_indicator_label: \"click\" }

Fix: name a listed label (`task_space_indicator_label: \"clk\"`).",
        check: unknown_task_space_label,
    },
    Rule {
        code: "plec::duplicate-feature",
        severity: Severity::Error,
        summary: "two features have the same feature_name",
        explain: "\
Feature names identify features everywhere (groups, embedding tables, input
columns under FG_NONE). Two features with one name make every reference
ambiguous.

Example:
    feature_configs { id_feature { feature_name: \"cate_id\" ... } }
    feature_configs { id_feature { feature_name: \"cate_id\" ... } }

Fix: rename one of them (and update the groups that use it), or delete the
copy.",
        check: duplicate_feature,
    },
    Rule {
        code: "plec::duplicate-tower",
        severity: Severity::Error,
        summary: "two task towers have the same tower_name",
        explain: "\
Tower names key the losses, predictions and metrics (`auc_ctr`); two towers
with one name overwrite each other's outputs.

Example:
    task_towers { tower_name: \"ctr\" label_name: \"clk\" ... }
    task_towers { tower_name: \"ctr\" label_name: \"buy\" ... }

Fix: give every tower its own name (`cvr` for the second one).",
        check: duplicate_tower,
    },
    Rule {
        code: "plec::duplicate-group",
        severity: Severity::Error,
        summary: "two feature groups have the same group_name",
        explain: "\
Feature groups are looked up by name; two groups with one name collide.

Example:
    feature_groups { group_name: \"all\" ... }
    feature_groups { group_name: \"all\" ... }

Fix: rename one group, or merge their feature lists into one group.",
        check: duplicate_group,
    },
    Rule {
        code: "plec::duplicate-network",
        severity: Severity::Warning,
        summary: "two PLE extraction networks have the same network_name",
        explain: "\
PLE extraction layers are run in the order written; their names only label
them in logs and graphs. Two layers with one name still run, but the name no
longer tells them apart, which is almost always a copy-paste slip.

Example:
    extraction_networks { network_name: \"layer1\" ... }
    extraction_networks { network_name: \"layer1\" ... }

Fix: number the layers (`layer1`, `layer2`, ...).",
        check: duplicate_network,
    },
    Rule {
        code: "plec::unknown-relation-tower",
        severity: Severity::Error,
        summary: "a DBMTL tower relates to a tower that does not exist",
        explain: "\
In DBMTL, `relation_tower_names` lists the towers whose outputs feed this
tower's `relation_mlp`. Each name must be the `tower_name` of another tower.

Example:
    task_towers { tower_name: \"ctr\" ... }
    task_towers { tower_name: \"cvr\" relation_tower_names: \"click\" ... }

Fix: name an existing tower (`relation_tower_names: \"ctr\"`).",
        check: unknown_relation_tower,
    },
    Rule {
        code: "plec::relation-order",
        severity: Severity::Error,
        summary: "a DBMTL tower relates to itself or to a tower defined after it",
        explain: "\
DBMTL computes towers in the order written, and a tower's relation input is
the output of the towers it names. A tower can therefore only depend on
towers written before it, never on itself or a later one.

Example:
    task_towers { tower_name: \"cvr\" relation_tower_names: \"ctr\" ... }
    task_towers { tower_name: \"ctr\" ... }

Fix: move the towers so each comes after the towers it relates to.",
        check: relation_order,
    },
];

/// Help text naming the closest known names, or the known ones.
fn suggest(name: &str, known: &[&str], what: &str) -> String {
    let close = closest_names(name, known.iter().copied(), 3);
    if !close.is_empty() {
        return format!("did you mean {}?", one_of(&close));
    }
    let all: Vec<String> = known.iter().map(|s| s.to_string()).collect();
    match all.len() {
        0 => format!("no {what} is defined"),
        n if n <= 8 => format!("the known {what}s are {}", one_of(&all)),
        _ => format!("none of the {} known {what}s is close", all.len()),
    }
}

fn unknown_feature(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    // Without feature definitions (a fragment) an unknown name cannot be
    // confirmed.
    if !cx.has_features() {
        return;
    }
    for (g, group) in cx.groups.iter().enumerate() {
        let gp = format!("model_config.feature_groups[{g}]");
        let mut lists: Vec<(String, &[String])> =
            vec![(format!("{gp}.feature_names"), &group.feature_names)];
        for (s, seq) in group.sequence_groups.iter().enumerate() {
            lists.push((
                format!("{gp}.sequence_groups[{s}].feature_names"),
                &seq.feature_names,
            ));
        }
        for (path, names) in lists {
            for (i, name) in names.iter().enumerate() {
                if cx.has_feature(name) {
                    continue;
                }
                out.push(
                    rule.diag(format!("unknown feature \"{name}\""))
                        .primary_at(
                            cx.value(&format!("{path}[{i}]")),
                            "no feature has this name",
                        )
                        .with_help(suggest(
                            name,
                            &cx.feature_names().collect::<Vec<_>>(),
                            "feature",
                        )),
                );
            }
        }
    }
    // jrc_loss finds each row's session by a feature's name.
    let Some(model) = &cx.model else {
        return;
    };
    for t in &model.towers {
        for (k, l) in t.losses.iter().enumerate() {
            let Some(Loss::JrcLoss(j)) = &l.loss else {
                continue;
            };
            if cx.has_feature(&j.session_name) {
                continue;
            }
            out.push(
                rule.diag(format!("unknown feature \"{}\"", j.session_name))
                    .primary_at(
                        cx.value(&t.field(&format!("losses[{k}].jrc_loss.session_name"))),
                        "jrc_loss reads each row's session from this feature; none has this name",
                    )
                    .with_help(suggest(
                        &j.session_name,
                        &cx.feature_names().collect::<Vec<_>>(),
                        "feature",
                    )),
            );
        }
    }
}

fn label_fields<'a>(cx: &Ctx<'a>) -> Vec<&'a str> {
    cx.data
        .map(|d| d.label_fields.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

fn unknown_label(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let (Some(data), Some(model)) = (cx.data, &cx.model) else {
        return;
    };
    let labels = label_fields(cx);
    for t in &model.towers {
        match t.label {
            Some(label) if !labels.contains(&label) => {
                let help = if labels.is_empty() {
                    format!(
                        "`data_config` lists no `label_fields`; add `label_fields: \"{label}\"`"
                    )
                } else {
                    suggest(label, &labels, "label field")
                };
                out.push(
                    rule.diag(format!("unknown label \"{label}\""))
                        .primary_at(
                            cx.value(&t.field("label_name")),
                            "not in `data_config.label_fields`",
                        )
                        .with_help(help),
                );
            }
            Some(_) => {}
            None if t.bayes && data.label_fields.get(t.index).is_none() => {
                out.push(
                    rule.diag(format!("tower \"{}\" has no label", t.name))
                        .primary_at(cx.best(&t.name_path()), "no `label_name` here")
                        .with_help(format!(
                            "a DBMTL tower without `label_name` trains on `label_fields[{}]`, but only {} label field{} listed; set `label_name`",
                            t.index,
                            labels.len(),
                            if labels.len() == 1 { " is" } else { "s are" }
                        )),
                );
            }
            None => {}
        }
    }
}

fn no_label(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let (Some(data), Some((kind, desc))) = (cx.data, &cx.model_kind) else {
        return;
    };
    if !cx.facts.first_label(desc) || !data.label_fields.is_empty() {
        return;
    }
    out.push(
        rule.diag(format!(
            "{kind} trains on the first of `data_config.label_fields`, and there is none"
        ))
        .primary_at(cx.name("data_config"), "no `label_fields`")
        .secondary_at(
            cx.name(&format!("model_config.{kind}")),
            "takes its label from `label_fields[0]`",
        )
        .with_help("add the label column to `data_config`, e.g. `label_fields: \"clk\"`"),
    );
}

fn unknown_sample_weight(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let (Some(data), Some(model)) = (cx.data, &cx.model) else {
        return;
    };
    let fields: Vec<&str> = data
        .sample_weight_fields
        .iter()
        .map(String::as_str)
        .collect();
    for t in &model.towers {
        let Some(name) = t.sample_weight_name else {
            continue;
        };
        if fields.contains(&name) {
            continue;
        }
        let help = if fields.is_empty() {
            format!("`data_config` lists no `sample_weight_fields`; add `sample_weight_fields: \"{name}\"`")
        } else {
            suggest(name, &fields, "sample weight field")
        };
        out.push(
            rule.diag(format!("unknown sample weight \"{name}\""))
                .primary_at(
                    cx.value(&t.field("sample_weight_name")),
                    "not in `data_config.sample_weight_fields`",
                )
                .with_help(help),
        );
    }
}

fn unknown_task_space_label(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let (Some(_), Some(model)) = (cx.data, &cx.model) else {
        return;
    };
    let labels = label_fields(cx);
    for t in &model.towers {
        let Some(name) = t.task_space_label else {
            continue;
        };
        if labels.contains(&name) {
            continue;
        }
        out.push(
            rule.diag(format!("unknown task space label \"{name}\""))
                .primary_at(
                    cx.value(&t.field("task_space_indicator_label")),
                    "not in `data_config.label_fields`",
                )
                .with_help(suggest(name, &labels, "label field")),
        );
    }
}

/// Reports every name after its first use; `items` are (name, value path).
fn duplicates(
    rule: &Rule,
    cx: &Ctx,
    what: &str,
    items: Vec<(&str, String)>,
    out: &mut Vec<Diagnostic>,
) {
    let mut first: HashMap<&str, String> = HashMap::new();
    for (name, path) in items {
        if name.is_empty() {
            continue;
        }
        match first.get(name) {
            Some(first_path) => out.push(
                rule.diag(format!("duplicate {what} \"{name}\""))
                    .primary_at(cx.value(&path), "defined again here")
                    .secondary_at(cx.value(first_path), "first defined here")
                    .with_help(format!(
                        "every {what} needs its own name; rename or remove one of them"
                    )),
            ),
            None => {
                first.insert(name, path);
            }
        }
    }
}

fn duplicate_feature(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    // Features of every kind, once per block (a sequence sub-feature is
    // listed under two spellings; its first is the `__` one).
    let mut seen_paths = std::collections::HashSet::new();
    let items = cx
        .all_features
        .iter()
        .filter(|(_, p)| seen_paths.insert(p.as_str()))
        .map(|(n, p)| {
            let field = if p.ends_with(".sequence_feature") {
                "sequence_name"
            } else {
                "feature_name"
            };
            (n.as_str(), format!("{p}.{field}"))
        })
        .collect();
    duplicates(rule, cx, "feature name", items, out);
}

fn duplicate_tower(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let Some(model) = &cx.model else { return };
    let items = model
        .towers
        .iter()
        .map(|t| (t.name, t.name_path()))
        .collect();
    duplicates(rule, cx, "tower name", items, out);
}

fn duplicate_group(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let items = cx
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            (
                g.group_name.as_str(),
                format!("model_config.feature_groups[{i}].group_name"),
            )
        })
        .collect();
    duplicates(rule, cx, "group name", items, out);
}

fn duplicate_network(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    use crate::proto::tzrec::protos::model_config::Model;
    let Some(Model::Ple(ple)) = cx
        .config
        .model_config
        .as_ref()
        .and_then(|m| m.model.as_ref())
    else {
        return;
    };
    let items = ple
        .extraction_networks
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                n.network_name.as_str(),
                format!("model_config.ple.extraction_networks[{i}].network_name"),
            )
        })
        .collect();
    duplicates(rule, cx, "network name", items, out);
}

fn unknown_relation_tower(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let Some(model) = &cx.model else { return };
    let names: Vec<&str> = model.towers.iter().map(|t| t.name).collect();
    for t in &model.towers {
        for (i, r) in t.relations.iter().enumerate() {
            if names.contains(&r.as_str()) {
                continue;
            }
            out.push(
                rule.diag(format!("unknown tower \"{r}\""))
                    .primary_at(
                        cx.value(&format!("{}.relation_tower_names[{i}]", t.path)),
                        "no tower has this name",
                    )
                    .with_help(suggest(r, &names, "tower")),
            );
        }
    }
}

fn relation_order(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let Some(model) = &cx.model else { return };
    for t in &model.towers {
        for (i, r) in t.relations.iter().enumerate() {
            let here = cx.value(&format!("{}.relation_tower_names[{i}]", t.path));
            if r == t.name {
                out.push(
                    rule.diag(format!("tower \"{r}\" depends on itself"))
                        .primary_at(here, "its own name")
                        .with_help(
                            "a tower can only relate to towers written before it; remove this name",
                        ),
                );
                continue;
            }
            let Some(other) = model.towers.iter().find(|o| o.name == r.as_str()) else {
                continue;
            };
            if other.index > t.index {
                out.push(
                    rule.diag(format!(
                        "tower \"{}\" depends on \"{r}\", which is defined after it",
                        t.name
                    ))
                    .primary_at(here, "defined later")
                    .secondary_at(
                        cx.value(&other.name_path()),
                        format!("\"{r}\" is defined here"),
                    )
                    .with_help(format!(
                        "towers are computed in the order written; move \"{r}\" before \"{}\"",
                        t.name
                    )),
                );
            }
        }
    }
}
