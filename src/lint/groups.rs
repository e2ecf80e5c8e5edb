//! Feature groups that towers and models read: names that match no group
//! (`input` of towers and the other `(plec.group_ref)` fields), groups a
//! model reads by a fixed name, the group type each reader needs
//! (`(plec.group_types)`), and MultiTower towers that share a group.

use prost_reflect::ReflectMessage;

use super::context::Ctx;
use super::hstu;
use super::{LabelAt, Rule};
use crate::diag::{closest_names, one_of, Diagnostic, Severity};
use crate::proto::tzrec::protos::{model_config::Model, FeatureGroupConfig, FeatureGroupType};

pub(super) const RULES: &[Rule] = &[
    Rule {
        code: "plec::unknown-group",
        severity: Severity::Error,
        summary: "a tower or model names a feature group that does not exist",
        explain: "\
Towers (`input`, `augment_input`, `history_input`) and some models name the
feature group they read (the schema marks these fields `(plec.group_ref)`).
The name must be the `group_name` of one of `model_config.feature_groups`:
TorchEasyRec looks it up there and fails with a KeyError when it builds the
model. A sequence group inside a DEEP group is not a feature group: only
that group's sequence encoders read it.

Example:
    user_tower { input: \"usr\" mlp { hidden_units: [64] } }

Fix: use the group's exact name (the help names the closest ones).",
        check: unknown_group,
    },
    Rule {
        code: "plec::group-type",
        severity: Severity::Error,
        summary: "a tower or model reads a feature group whose group_type it cannot use",
        explain: "\
Each reader needs a group of a given type (the schema says which with
`(plec.group_types)`): a plain tower (MultiTower, MultiTowerDIN's `towers`,
DSSM, DSSMV2, DAT, MIND's item tower) reads the pooled vector of a DEEP or
WIDE group; a DIN tower and MIND's `history_input` read `<group>.sequence`
and `<group>.query` of a SEQUENCE group; HSTU models read JAGGED_SEQUENCE
groups (`user_tower.input` and `item_tower.input` of HSTUMatch, and the
history, candidate, timestamp and action groups of DlrmHSTU and
UltraHSTU), and DlrmHSTU's \"contextual\" group must be DEEP or SEQUENCE.
A group of another type has no such output, and TorchEasyRec fails with a
KeyError or ValueError at model build or at the first batch.

Example:
    feature_groups { group_name: \"seq\" group_type: DEEP ... }
    din_towers { input: \"seq\" attn_mlp { hidden_units: [32] } }

Fix: set the group's `group_type`, or point the reader at a group of the
right type.",
        check: group_type,
    },
    Rule {
        code: "plec::missing-group",
        severity: Severity::Error,
        summary: "the model reads a feature group by a fixed name and there is none",
        explain: "\
Several TorchEasyRec models read feature groups by fixed names: WideAndDeep,
DeepFM and xDeepFM read \"wide\" and \"deep\"; PEPNet reads \"all\"; DLRM and
WuKong with more than one group read \"sparse\" (and \"dense\" when present);
TDM reads a SEQUENCE group. DlrmHSTU and UltraHSTU read \"contextual\",
\"candidate\", \"candidate_timestamp\" and, for each HSTU channel (named
\"uih\" unless `hstu.name` says otherwise), the history group and its
\"_timestamp\" group; with an action encoder also \"<uih>_action\", and with
watch-time thresholds \"<uih>_watchtime\". HSTUMatch reads the \"_timestamp\",
\"_action\" and \"_watchtime\" groups of its history the same way. The schema
lists the fixed names of the simpler models with `(plec.groups)`. Without
such a group the model fails at build time, or at the first batch.

Example:
    deepfm { deep { hidden_units: [64] } }  # groups named \"all\" only

Fix: name the groups as the model expects.",
        check: missing_group,
    },
    Rule {
        code: "plec::duplicate-tower-input",
        severity: Severity::Error,
        summary: "two MultiTower towers read the same feature group",
        explain: "\
MultiTower and MultiTowerDIN key their plain towers by the group they read:
a second tower on the same group replaces the first, but both towers' widths
are still added up for the final MLP, so its input width does not fit and
TorchEasyRec fails at the first batch.

Example:
    towers { input: \"user\" mlp { hidden_units: [64] } }
    towers { input: \"user\" mlp { hidden_units: [32] } }

Fix: merge the two towers into one, or give each its own group.",
        check: duplicate_tower_input,
    },
];

/// The top-level feature group with this name.
fn find<'a>(cx: &Ctx<'a>, name: &str) -> Option<(usize, &'a FeatureGroupConfig)> {
    cx.groups
        .iter()
        .enumerate()
        .find(|(_, g)| g.group_name == name)
}

/// The feature group holding a sequence group of this name.
fn holder<'a>(cx: &Ctx<'a>, name: &str) -> Option<&'a FeatureGroupConfig> {
    cx.groups.iter().find(|g| {
        g.sequence_groups
            .iter()
            .any(|s| s.group_name.as_deref() == Some(name))
    })
}

/// Every `(plec.group_ref)` value of the config: (path of the message,
/// field name, value).
fn group_refs(cx: &Ctx) -> Vec<(String, prost_reflect::FieldDescriptor, String)> {
    let mut out = Vec::new();
    for (path, msg) in &cx.nodes {
        for fd in msg.descriptor().fields() {
            if !cx.facts.is_group_ref(&fd) || !msg.has_field(&fd) {
                continue;
            }
            let value = msg.get_field(&fd);
            let Some(v) = value.as_str() else { continue };
            if v.trim().is_empty() {
                continue;
            }
            out.push((path.clone(), fd.clone(), v.to_string()));
        }
    }
    out
}

/// The block a path ends in, without its index: `din_towers`.
fn block(path: &str) -> &str {
    let last = path.rsplit('.').next().unwrap_or(path);
    last.split('[').next().unwrap_or(last)
}

fn unknown_group(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    if cx.groups.is_empty() {
        return;
    }
    let names: Vec<String> = cx.groups.iter().map(|g| g.group_name.clone()).collect();
    for (path, fd, v) in group_refs(cx) {
        if find(cx, &v).is_some() {
            continue;
        }
        let at = cx.value(&format!("{path}.{}", fd.name()));
        if let Some(h) = holder(cx, &v) {
            out.push(
                rule.diag(format!(
                    "\"{v}\" is a sequence group inside group \"{}\", not a feature group",
                    h.group_name
                ))
                .primary_at(at, "not one of `feature_groups`")
                .with_help(format!(
                    "`{}` names one of `model_config.feature_groups` (TorchEasyRec looks it up there); make \"{v}\" a feature group of its own, or name one of {}",
                    fd.name(),
                    one_of(&names)
                )),
            );
            continue;
        }
        let close = closest_names(&v, names.iter().map(String::as_str), 3);
        let help = if close.is_empty() {
            format!("the feature groups are {}", one_of(&names))
        } else {
            format!("did you mean {}?", one_of(&close))
        };
        out.push(
            rule.diag(format!("unknown feature group \"{v}\""))
                .primary_at(at, "no feature group has this name")
                .with_help(help),
        );
    }
}

fn type_name(t: FeatureGroupType) -> &'static str {
    t.as_str_name()
}

/// Where a group's type is decided: its `group_type`, else its block.
fn type_span(cx: &Ctx, gi: usize) -> Option<std::ops::Range<usize>> {
    let gp = format!("model_config.feature_groups[{gi}]");
    cx.value(&format!("{gp}.group_type"))
        .or_else(|| cx.value(&format!("{gp}.group_name")))
}

/// Why a reader needs a group of these types.
fn type_reason(types: &[String], v: &str) -> String {
    let has = |t: &str| types.iter().any(|x| x == t);
    if has("SEQUENCE") && !has("DEEP") {
        format!("it reads `{v}.sequence` and `{v}.query`, padded per user, which only a SEQUENCE group provides")
    } else if has("JAGGED_SEQUENCE") {
        format!("it reads `{v}.sequence` as a jagged sequence, which only a JAGGED_SEQUENCE group provides")
    } else {
        format!("it reads the group's pooled vector `{v}`, which sequence groups do not provide")
    }
}

fn group_type(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    for (path, fd, v) in group_refs(cx) {
        let Some((_, g)) = find(cx, &v) else { continue };
        let types = cx.facts.group_types(&cx.nodes, &path, &fd);
        if types.is_empty() {
            continue;
        }
        let t = type_name(g.group_type());
        if types.iter().any(|x| x == t) {
            continue;
        }
        let fitting: Vec<String> = cx
            .groups
            .iter()
            .filter(|o| types.iter().any(|x| x == type_name(o.group_type())))
            .map(|o| o.group_name.clone())
            .collect();
        let instead = if fitting.is_empty() {
            String::new()
        } else {
            format!(", or read {}", one_of(&fitting))
        };
        out.push(
            rule.diag(format!(
                "`{}` reads group \"{v}\", a {t} group, but needs a {} group",
                block(&path),
                types.join(" or ")
            ))
            .primary_at(
                cx.value(&format!("{path}.{}", fd.name())),
                format!("a {t} group"),
            )
            .with_help(format!(
                "{}; set `group_type: {}` on \"{v}\"{instead}",
                type_reason(&types, &v),
                types[0]
            )),
        );
    }
    for n in hstu::needed_groups(cx) {
        let Some((gi, g)) = find(cx, &n.name) else {
            continue;
        };
        if n.types.contains(&g.group_type()) {
            continue;
        }
        let want: Vec<&str> = n.types.iter().map(|t| type_name(*t)).collect();
        let t = type_name(g.group_type());
        let when = if n.type_at_build {
            "TorchEasyRec fails when it builds the model"
        } else {
            "TorchEasyRec fails at the first batch"
        };
        out.push(
            rule.diag(format!(
                "{} reads group \"{}\" as a {} group, but it is {t}",
                n.kind,
                n.name,
                want.join(" or ")
            ))
            .primary_at(type_span(cx, gi), format!("a {t} group"))
            .with_help(format!("{}; {when}; set `group_type: {}`", n.why, want[0])),
        );
    }
}

fn missing_group(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let Some((kind, desc)) = &cx.model_kind else {
        return;
    };
    let mut needed = cx.facts.required_groups(desc);
    // TorchEasyRec keys groups by name: two groups of one name count once.
    let distinct: std::collections::BTreeSet<&str> =
        cx.groups.iter().map(|g| g.group_name.as_str()).collect();
    if matches!(kind.as_str(), "dlrm" | "wukong") && distinct.len() > 1 {
        needed.push("sparse".to_string());
    }
    let hstu_needed = hstu::needed_groups(cx);
    let have: Vec<&str> = cx.groups.iter().map(|g| g.group_name.as_str()).collect();
    // A group the model reads under its own name is no candidate for a
    // rename.
    let spare: Vec<&str> = have
        .iter()
        .copied()
        .filter(|h| !needed.iter().any(|n| n == h) && !hstu_needed.iter().any(|n| n.name == *h))
        .collect();
    let model_at = cx.name(&format!("model_config.{kind}"));
    let rename = |g: &str| match closest_names(g, spare.iter().copied(), 1).first() {
        Some(c) => format!("rename the group \"{c}\" to \"{g}\", or add a group named \"{g}\""),
        None => format!("add a feature group named \"{g}\""),
    };
    for g in needed {
        if have.contains(&g.as_str()) {
            continue;
        }
        out.push(
            rule.diag(format!(
                "{kind} reads a feature group named \"{g}\", and there is none"
            ))
            .primary_at(model_at.clone(), format!("{kind} needs group \"{g}\""))
            .with_help(rename(&g)),
        );
    }
    for n in &hstu_needed {
        if have.contains(&n.name.as_str()) {
            continue;
        }
        let when = if n.at_build {
            "TorchEasyRec fails when it builds the model"
        } else {
            "TorchEasyRec fails at the first batch"
        };
        let types: Vec<&str> = n.types.iter().map(|t| type_name(*t)).collect();
        out.push(
            rule.diag(format!(
                "{} reads a feature group named \"{}\", and there is none",
                n.kind, n.name
            ))
            .primary_at(
                cx.name(&n.at).or_else(|| model_at.clone()),
                format!("needs group \"{}\"", n.name),
            )
            .with_help(format!(
                "{}; {when}; {} (`group_type: {}`)",
                n.why,
                rename(&n.name),
                types.join("` or `")
            )),
        );
    }
    if kind == "tdm"
        && !cx.groups.is_empty()
        && !cx
            .groups
            .iter()
            .any(|g| g.group_type() == FeatureGroupType::Sequence)
    {
        out.push(
            rule.diag("tdm reads a SEQUENCE group (the behaviour sequence), and there is none")
                .primary_at(model_at, "tdm needs a SEQUENCE group")
                .with_help("TorchEasyRec's TDM attends over `<group>.sequence` of the SEQUENCE group; set `group_type: SEQUENCE` on the group holding the sequence features"),
        );
    }
}

fn duplicate_tower_input(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let Some(model) = cx
        .config
        .model_config
        .as_ref()
        .and_then(|m| m.model.as_ref())
    else {
        return;
    };
    let (kind, towers) = match model {
        Model::MultiTower(m) => ("multi_tower", &m.towers),
        Model::MultiTowerDin(m) => ("multi_tower_din", &m.towers),
        _ => return,
    };
    let base = format!("model_config.{kind}.towers");
    for (i, t) in towers.iter().enumerate() {
        if t.input.is_empty() {
            continue;
        }
        let Some(j) = towers[..i].iter().position(|o| o.input == t.input) else {
            continue;
        };
        out.push(
            rule.diag(format!("two towers read group \"{}\"", t.input))
                .primary_at(cx.value(&format!("{base}[{i}].input")), "second tower on this group")
                .secondary_at(cx.value(&format!("{base}[{j}].input")), "first tower on it")
                .with_help("TorchEasyRec keys towers by group: the second replaces the first while both widths are counted for `final`, which then does not fit; merge the towers, or give each its own group"),
        );
    }
}
