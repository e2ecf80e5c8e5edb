//! Sequence groups and their encoders: an attention encoder's query fits
//! its steps, a self-attention encoder's heads divide its width. (Encoder
//! inputs are `plec::sequence-encoder`'s.)

use std::collections::HashMap;

use super::context::Ctx;
use super::{LabelAt, Rule};
use crate::diag::{Diagnostic, Severity};
use crate::proto::tzrec::protos::{
    feature_config::Feature, seq_encoder_config::SeqModule,
    seq_feature_config::Feature as SeqFeature, FeatureConfig,
};

pub(super) const RULES: &[Rule] = &[
    Rule {
        code: "plec::sequence-query-width",
        severity: Severity::Error,
        summary: "an attention encoder's query does not fit the width of its sequence",
        explain: "\
DIN compares the query (the sequence group's plain features, concatenated)
with every step (its sequence features, concatenated): the query may be
narrower (it is padded with zeros) but not wider, and not empty. Simple
attention takes the dot product of the two, so their widths must be equal.
TorchEasyRec stops with `query_dim > sequence_dim not supported yet` or a
shape error.

Example:
    sequence_groups { feature_names: \"cate_id\" (16 wide)
                      feature_names: \"click_seq__cate_id\" (8 wide) }

Fix: give the query features and the sequence features matching
`embedding_dim`s, or list the query's features in the same order as the
steps'.",
        check: sequence_query_width,
    },
    Rule {
        code: "plec::attention-heads",
        severity: Severity::Error,
        summary: "a self-attention encoder's width is not a positive multiple of its heads",
        explain: "\
`self_attention_encoder` projects every step to `multihead_attn_dim`
columns (default 512) and splits them into `num_heads` heads (default 8)
of equal width, so the width must be a positive multiple of the heads.
TorchEasyRec stops with `multihead_attn_dim must be divisible by num_heads`
when it builds the model.

Example:
    self_attention_encoder { input: \"click_seq\" multihead_attn_dim: 30 num_heads: 8 }

Fix: pick a width the heads divide (`multihead_attn_dim: 32`), or fewer
heads.",
        check: attention_heads,
    },
];

/// Output width of every feature by the name a group uses for it,
/// including the sub-features of grouped sequences (`seq__name`).
fn widths(cx: &Ctx) -> HashMap<String, (Option<u64>, bool)> {
    let mut out = HashMap::new();
    for fc in &cx.config.feature_configs {
        match &fc.feature {
            Some(Feature::SequenceFeature(s)) => {
                for sub in &s.features {
                    let (name, feature) = match &sub.feature {
                        Some(SeqFeature::IdFeature(f)) => {
                            (&f.feature_name, Feature::IdFeature(f.clone()))
                        }
                        Some(SeqFeature::RawFeature(f)) => {
                            (&f.feature_name, Feature::RawFeature(f.clone()))
                        }
                        _ => continue,
                    };
                    let w = feature_width(&FeatureConfig {
                        feature: Some(feature),
                    });
                    out.insert(format!("{}__{name}", s.sequence_name), (w, true));
                }
            }
            Some(Feature::SequenceIdFeature(f)) => {
                out.insert(f.feature_name.clone(), (feature_width(fc), true));
            }
            Some(Feature::SequenceRawFeature(f)) => {
                let raw = FeatureConfig {
                    feature: Some(Feature::RawFeature(f.clone())),
                };
                out.insert(f.feature_name.clone(), (feature_width(&raw), true));
            }
            Some(Feature::IdFeature(f)) => {
                out.insert(f.feature_name.clone(), (feature_width(fc), false));
            }
            Some(Feature::RawFeature(f)) => {
                out.insert(f.feature_name.clone(), (feature_width(fc), false));
            }
            Some(Feature::ComboFeature(f)) => {
                out.insert(f.feature_name.clone(), (feature_width(fc), false));
            }
            _ => {}
        }
    }
    out
}

/// Output width of a feature in a group (`None` for kinds without one or a
/// missing `embedding_dim`; the shape rules report those).
fn feature_width(fc: &FeatureConfig) -> Option<u64> {
    let w = match fc.feature.as_ref()? {
        Feature::IdFeature(f) | Feature::SequenceIdFeature(f) => f.embedding_dim as u64,
        Feature::RawFeature(f) if !f.boundaries.is_empty() => f.embedding_dim? as u64,
        Feature::RawFeature(f) => f.value_dim() as u64,
        Feature::ComboFeature(f) => f.embedding_dim? as u64,
        _ => return None,
    };
    (w > 0).then_some(w)
}

/// The field name of an encoder kind.
fn encoder_kind(m: &SeqModule) -> &'static str {
    match m {
        SeqModule::DinEncoder(_) => "din_encoder",
        SeqModule::SimpleAttention(_) => "simple_attention",
        SeqModule::PoolingEncoder(_) => "pooling_encoder",
        SeqModule::MultiWindowDinEncoder(_) => "multi_window_din_encoder",
        SeqModule::SelfAttentionEncoder(_) => "self_attention_encoder",
    }
}

fn encoder_input(m: &SeqModule) -> &str {
    match m {
        SeqModule::DinEncoder(e) => &e.input,
        SeqModule::SimpleAttention(e) => &e.input,
        SeqModule::PoolingEncoder(e) => &e.input,
        SeqModule::SelfAttentionEncoder(e) => &e.input,
        SeqModule::MultiWindowDinEncoder(e) => &e.input,
    }
}

/// The sequence group names of group `g` (a single unnamed one takes the
/// feature group's name, as tzrec does).
fn seq_group_names(cx: &Ctx, g: usize) -> Vec<String> {
    let group = &cx.groups[g];
    let single = group.sequence_groups.len() == 1;
    group
        .sequence_groups
        .iter()
        .filter_map(|s| match &s.group_name {
            Some(n) => Some(n.clone()),
            None if single => Some(group.group_name.clone()),
            None => None,
        })
        .collect()
}

fn sequence_query_width(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let widths = widths(cx);
    for (g, group) in cx.groups.iter().enumerate() {
        let names = seq_group_names(cx, g);
        let single = group.sequence_groups.len() == 1;
        for (e, enc) in group.sequence_encoders.iter().enumerate() {
            let Some(m) = &enc.seq_module else { continue };
            let equal = match m {
                SeqModule::DinEncoder(_) => false,
                SeqModule::SimpleAttention(_) => true,
                _ => continue,
            };
            let input = encoder_input(m);
            let s = match names.iter().position(|n| n == input) {
                Some(s) => s,
                None if input.is_empty() && single => 0,
                None => continue,
            };
            let (mut q, mut d) = (0u64, 0u64);
            for name in &group.sequence_groups[s].feature_names {
                match widths.get(name) {
                    Some((Some(w), true)) => d += w,
                    Some((Some(w), false)) => q += w,
                    // Unknown names and widths are other rules' findings.
                    _ => return,
                }
            }
            let bad = if equal { q != d } else { q > d || q == 0 };
            if !bad {
                continue;
            }
            let kind = encoder_kind(m);
            let path = format!("model_config.feature_groups[{g}].sequence_encoders[{e}].{kind}");
            let need = if equal {
                "as wide as"
            } else {
                "not empty and no wider than"
            };
            out.push(
                rule.diag(format!(
                    "`{kind}` needs a query {need} the sequence; the query is {q} wide, the sequence {d}"
                ))
                .primary_at(cx.name(&path), "reads this sequence group")
                .secondary_at(
                    cx.name(&format!(
                        "model_config.feature_groups[{g}].sequence_groups[{s}]"
                    )),
                    format!("query {q} wide, steps {d} wide"),
                )
                .with_help(
                    "make the embedding_dims of the query features and the sequence features match",
                ),
            );
        }
    }
}

fn attention_heads(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    for (g, group) in cx.groups.iter().enumerate() {
        for (e, enc) in group.sequence_encoders.iter().enumerate() {
            let Some(SeqModule::SelfAttentionEncoder(m)) = &enc.seq_module else {
                continue;
            };
            let (dim, heads) = (m.multihead_attn_dim(), m.num_heads());
            if dim > 0 && heads > 0 && dim % heads == 0 {
                continue;
            }
            let path = format!(
                "model_config.feature_groups[{g}].sequence_encoders[{e}].self_attention_encoder"
            );
            let at = |field: &str| {
                cx.value(&format!("{path}.{field}"))
                    .or_else(|| cx.name(&path))
            };
            out.push(
                rule.diag(format!(
                    "multihead_attn_dim {dim} is not a positive multiple of num_heads {heads}"
                ))
                .primary_at(at("multihead_attn_dim"), format!("{dim} columns"))
                .secondary_at(at("num_heads"), format!("{heads} heads"))
                .with_help("pick a multihead_attn_dim that num_heads divides"),
            );
        }
    }
}
