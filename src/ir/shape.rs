//! Shape inference and checking on the typed config: the one place that
//! decides how wide every feature, MLP, expert, gate and tower is, and the
//! shape rules that a config must satisfy before it can be lowered.
//!
//! Errors carry config paths (`model_config.ple.extraction_networks[1]
//! .task_expert_net.hidden_units[2]`), not spans: [`shape_diagnostics`]
//! maps them through the span map only when reporting.

use crate::diag::Diagnostic;
use crate::proto::tzrec::protos::{
    feature_config::Feature, model_config::Model, EasyRecConfig, FeatureConfig, Mlp,
};
use crate::schema::SpanMap;

/// A shape mistake in the config: stable code, message, labelled config
/// paths and help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError {
    pub code: &'static str,
    pub message: String,
    pub labels: Vec<PathLabel>,
    pub help: String,
}

/// A label on a config path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathLabel {
    pub path: String,
    pub text: String,
    pub primary: bool,
}

impl ShapeError {
    fn new(code: &'static str, message: impl Into<String>, help: impl Into<String>) -> Self {
        ShapeError {
            code,
            message: message.into(),
            labels: Vec::new(),
            help: help.into(),
        }
    }

    fn primary(mut self, path: impl Into<String>, text: impl Into<String>) -> Self {
        self.labels.push(PathLabel {
            path: path.into(),
            text: text.into(),
            primary: true,
        });
        self
    }

    fn secondary(mut self, path: impl Into<String>, text: impl Into<String>) -> Self {
        self.labels.push(PathLabel {
            path: path.into(),
            text: text.into(),
            primary: false,
        });
        self
    }

    /// The diagnostic, with labels resolved through `spans` (labels whose
    /// path has no span, nor any recorded ancestor, are dropped).
    pub fn to_diagnostic(&self, spans: &SpanMap) -> Diagnostic {
        let mut d = Diagnostic::error(self.code, self.message.clone()).with_help(self.help.clone());
        for l in &self.labels {
            if let Some(span) = spans.best(&l.path) {
                d = if l.primary {
                    d.with_primary(span, l.text.clone())
                } else {
                    d.with_secondary(span, l.text.clone())
                };
            }
        }
        d
    }
}

/// Every shape code with its long explanation, for `plec explain`.
pub(crate) const SHAPE_CODES: &[(&str, &str)] = &[
    (
        "plec::expert-width",
        "In a PLE extraction layer, each task gate mixes the task's own experts \
with the shared experts, and the shared gate mixes all of them. A gate's \
weighted sum needs every expert it mixes to have the same output width, so \
the last entry of `task_expert_net.hidden_units` must equal the last entry \
of `share_expert_net.hidden_units` in every layer. Make the two last widths \
equal (the hidden layers before it may differ).",
    ),
    (
        "plec::missing-share-expert-net",
        "`share_num` asks for shared experts in a PLE extraction layer, but the \
layer has no `share_expert_net` saying what a shared expert is. Add a \
`share_expert_net { hidden_units: [...] }` block (usually the same as \
`task_expert_net`), or set `share_num: 0`.",
    ),
    (
        "plec::zero-experts",
        "A gate computes a softmax over its experts; with no experts there is \
nothing to mix and the layer has no output. PLE needs `expert_num_per_task` \
or `share_num` above zero in every extraction layer; MMoE and DBMTL (with \
`expert_mlp`) need `num_expert` above zero.",
    ),
    (
        "plec::empty-hidden-units",
        "An MLP block is a stack of Linear layers, one per entry of \
`hidden_units`; its output width is the last entry. An MLP without \
`hidden_units` has no layers and no width. List at least one width, or \
remove the block where it is optional (a tower's `mlp`, `bottom_mlp`, \
`gate_mlp`, `relation_mlp`).",
    ),
    (
        "plec::zero-width",
        "A tensor width of zero (a hidden unit, a raw feature's `value_dim`, a \
tower's `num_class`) makes a layer with no outputs; every layer after it \
reads nothing. Use a positive width.",
    ),
    (
        "plec::embedding-dim",
        "An id feature, a combo feature and a raw feature with `boundaries` \
are looked up in an embedding table, and the table's width is \
`embedding_dim`; the feature contributes that many columns to its feature \
group. `embedding_dim` must be set and positive for these features.",
    ),
    (
        "plec::gate-width",
        "A gate's output is the weighted sum of its experts' outputs, so every \
expert a gate mixes must have the same output width.",
    ),
];

/// The long explanation of a shape code (`plec explain plec::expert-width`).
pub(crate) fn explain(code: &str) -> Option<&'static str> {
    let code = if code.starts_with("plec::") {
        code.to_string()
    } else {
        format!("plec::{code}")
    };
    SHAPE_CODES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, t)| *t)
}

/// Shape diagnostics of a typed config, labelled through `spans`.
pub(crate) fn shape_diagnostics(config: &EasyRecConfig, spans: &SpanMap) -> Vec<Diagnostic> {
    check_config(config)
        .iter()
        .map(|e| e.to_diagnostic(spans))
        .collect()
}

/// Output width of a feature in its group, when it can be computed: id and
/// combo features are `embedding_dim` wide; raw features `value_dim` wide
/// (default 1), or `embedding_dim` with boundaries. `None` for unsupported
/// kinds and missing dims.
pub(crate) fn feature_width(fc: &FeatureConfig) -> Option<u64> {
    let w = match fc.feature.as_ref()? {
        Feature::IdFeature(f) | Feature::SequenceIdFeature(f) => f.embedding_dim as u64,
        Feature::RawFeature(f) if !f.boundaries.is_empty() => f.embedding_dim? as u64,
        Feature::RawFeature(f) => f.value_dim() as u64,
        Feature::ComboFeature(f) => f.embedding_dim? as u64,
        _ => return None,
    };
    (w > 0).then_some(w)
}

/// The name of a plain id, raw or combo feature.
fn feature_name(fc: &FeatureConfig) -> Option<&str> {
    match fc.feature.as_ref()? {
        Feature::IdFeature(f) => Some(&f.feature_name),
        Feature::RawFeature(f) => Some(&f.feature_name),
        Feature::ComboFeature(f) => Some(&f.feature_name),
        _ => None,
    }
}

/// Dropout ratio of layer `i`.
pub(crate) fn dropout_of(mlp: &Mlp, i: usize) -> f32 {
    match mlp.dropout_ratio.as_slice() {
        [] => 0.0,
        [r] => *r,
        rs => rs.get(i).copied().unwrap_or(0.0),
    }
}

/// Checks every shape rule on a config and returns all the mistakes.
pub(crate) fn check_config(config: &EasyRecConfig) -> Vec<ShapeError> {
    let mut out = Vec::new();
    // TorchEasyRec builds embedding tables only for features some group
    // reads; an unused feature's missing dim is never asserted.
    let groups = config
        .model_config
        .as_ref()
        .map_or(&[][..], |m| m.feature_groups.as_slice());
    let used: std::collections::HashSet<&str> = groups
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
    for (i, fc) in config.feature_configs.iter().enumerate() {
        let name = feature_name(fc);
        if !groups.is_empty() && !name.is_some_and(|n| used.contains(n)) {
            continue;
        }
        check_feature(&mut out, &format!("feature_configs[{i}]"), fc);
    }
    let Some(mc) = &config.model_config else {
        return out;
    };
    match &mc.model {
        Some(Model::Ple(ple)) => {
            let base = "model_config.ple";
            for (i, net) in ple.extraction_networks.iter().enumerate() {
                let p = format!("{base}.extraction_networks[{i}]");
                let task_ok = check_mlp(
                    &mut out,
                    &format!("{p}.task_expert_net"),
                    &net.task_expert_net,
                );
                let share_num = net.share_num();
                if net.expert_num_per_task == 0 && share_num == 0 {
                    out.push(
                        ShapeError::new(
                            "plec::zero-experts",
                            format!("extraction layer \"{}\" has no experts", net.network_name),
                            "set `expert_num_per_task` or `share_num` above zero",
                        )
                        .primary(format!("{p}.expert_num_per_task"), "no task experts")
                        .secondary(format!("{p}.share_num"), "and no shared experts"),
                    );
                }
                match &net.share_expert_net {
                    None if share_num > 0 => out.push(
                        ShapeError::new(
                            "plec::missing-share-expert-net",
                            format!(
                                "extraction layer \"{}\" asks for {share_num} shared experts but has no `share_expert_net`",
                                net.network_name
                            ),
                            "add a `share_expert_net { hidden_units: [...] }` block, or set `share_num: 0`",
                        )
                        .primary(format!("{p}.share_num"), format!("{share_num} shared experts"))
                        .secondary(p.clone(), "this layer has no `share_expert_net`"),
                    ),
                    None => {}
                    Some(share) => {
                        let share_ok = check_mlp(&mut out, &format!("{p}.share_expert_net"), share);
                        let used = share_num > 0 && net.expert_num_per_task > 0;
                        if task_ok && share_ok && used {
                            let (t, s) = (
                                net.task_expert_net.hidden_units.len() - 1,
                                share.hidden_units.len() - 1,
                            );
                            let (tw, sw) = (net.task_expert_net.hidden_units[t], share.hidden_units[s]);
                            if tw != sw {
                                out.push(
                                    ShapeError::new(
                                        "plec::expert-width",
                                        format!(
                                            "task experts and shared experts of extraction layer \"{}\" have different output widths ({tw} and {sw})",
                                            net.network_name
                                        ),
                                        format!(
                                            "the gates of a layer mix task and shared experts, so their last widths must be equal: make both {tw} or both {sw}"
                                        ),
                                    )
                                    .secondary(
                                        format!("{p}.task_expert_net.hidden_units[{t}]"),
                                        format!("declared {tw} wide here"),
                                    )
                                    .primary(
                                        format!("{p}.share_expert_net.hidden_units[{s}]"),
                                        format!("but {sw} here"),
                                    ),
                                );
                            }
                        }
                    }
                }
            }
            for (t, tower) in ple.task_towers.iter().enumerate() {
                let p = format!("{base}.task_towers[{t}]");
                check_tower(&mut out, &p, tower.mlp.as_ref(), tower.num_class);
            }
        }
        Some(Model::Mmoe(m)) => {
            let base = "model_config.mmoe";
            check_mlp(&mut out, &format!("{base}.expert_mlp"), &m.expert_mlp);
            if let Some(g) = &m.gate_mlp {
                check_mlp(&mut out, &format!("{base}.gate_mlp"), g);
            }
            if m.num_expert == 0 {
                out.push(zero_experts(&format!("{base}.num_expert")));
            }
            for (t, tower) in m.task_towers.iter().enumerate() {
                let p = format!("{base}.task_towers[{t}]");
                check_tower(&mut out, &p, tower.mlp.as_ref(), tower.num_class);
            }
        }
        Some(Model::Dbmtl(m)) => {
            let base = "model_config.dbmtl";
            if let Some(b) = &m.bottom_mlp {
                check_mlp(&mut out, &format!("{base}.bottom_mlp"), b);
            }
            if let Some(e) = &m.expert_mlp {
                check_mlp(&mut out, &format!("{base}.expert_mlp"), e);
                if m.num_expert == Some(0) {
                    out.push(zero_experts(&format!("{base}.num_expert")));
                }
                if let Some(g) = &m.gate_mlp {
                    check_mlp(&mut out, &format!("{base}.gate_mlp"), g);
                }
            }
            for (t, tower) in m.task_towers.iter().enumerate() {
                let p = format!("{base}.task_towers[{t}]");
                check_tower(&mut out, &p, tower.mlp.as_ref(), tower.num_class);
                if let Some(r) = &tower.relation_mlp {
                    check_mlp(&mut out, &format!("{p}.relation_mlp"), r);
                }
            }
        }
        Some(Model::SimpleMultiTask(m)) => {
            for (t, tower) in m.task_towers.iter().enumerate() {
                let p = format!("model_config.simple_multi_task.task_towers[{t}]");
                check_tower(&mut out, &p, tower.mlp.as_ref(), tower.num_class);
            }
        }
        _ => {}
    }
    out
}

fn zero_experts(path: &str) -> ShapeError {
    ShapeError::new(
        "plec::zero-experts",
        "the model has no experts",
        "set `num_expert` above zero (TorchEasyRec's default is 3)",
    )
    .primary(path, "zero experts: the gates have nothing to mix")
}

fn check_feature(out: &mut Vec<ShapeError>, base: &str, fc: &FeatureConfig) {
    let (kind, name, dim, needs) = match &fc.feature {
        Some(Feature::IdFeature(f)) => ("id_feature", &f.feature_name, Some(f.embedding_dim), true),
        Some(Feature::RawFeature(f)) => {
            if f.boundaries.is_empty() {
                if f.value_dim == Some(0) {
                    out.push(
                        ShapeError::new(
                            "plec::zero-width",
                            format!("raw feature \"{}\" is zero wide", f.feature_name),
                            "a dense raw feature enters its group `value_dim` wide; use 1 or more",
                        )
                        .primary(format!("{base}.raw_feature.value_dim"), "zero width"),
                    );
                }
                return;
            }
            ("raw_feature", &f.feature_name, f.embedding_dim, true)
        }
        Some(Feature::ComboFeature(f)) => ("combo_feature", &f.feature_name, f.embedding_dim, true),
        _ => return,
    };
    if needs && dim.unwrap_or(0) == 0 {
        let what = if kind == "raw_feature" {
            "a bucketized raw feature"
        } else {
            "this feature"
        };
        out.push(
            ShapeError::new(
                "plec::embedding-dim",
                format!("feature \"{name}\" needs a positive `embedding_dim`"),
                format!("{what} is embedded; set `embedding_dim` (for example 16)"),
            )
            .primary(
                format!("{base}.{kind}.embedding_dim"),
                if dim.is_some() {
                    "zero-wide embedding"
                } else {
                    "no `embedding_dim` in this feature"
                },
            ),
        );
    }
}

/// Checks one MLP block; returns whether its widths are usable.
fn check_mlp(out: &mut Vec<ShapeError>, path: &str, mlp: &Mlp) -> bool {
    let mut ok = true;
    if mlp.hidden_units.is_empty() {
        out.push(
            ShapeError::new(
                "plec::empty-hidden-units",
                "this MLP has no `hidden_units`",
                "list the layer widths, for example `hidden_units: [256, 128]`",
            )
            .primary(path, "no layers here"),
        );
        return false;
    }
    for (k, &u) in mlp.hidden_units.iter().enumerate() {
        if u == 0 {
            ok = false;
            out.push(
                ShapeError::new(
                    "plec::zero-width",
                    format!("layer {} of this MLP is zero wide", k + 1),
                    "every entry of `hidden_units` must be positive",
                )
                .primary(format!("{path}.hidden_units[{k}]"), "zero width"),
            );
        }
    }
    ok
}

fn check_tower(out: &mut Vec<ShapeError>, path: &str, mlp: Option<&Mlp>, num_class: Option<u32>) {
    if let Some(m) = mlp {
        check_mlp(out, &format!("{path}.mlp"), m);
    }
    let nc = num_class.unwrap_or(1);
    if nc == 0 {
        out.push(
            ShapeError::new(
                "plec::zero-width",
                "this tower has zero classes",
                "use `num_class: 1` for binary or regression tasks, 2 or more for softmax",
            )
            .primary(format!("{path}.num_class"), "zero-wide logits"),
        );
    }
}
