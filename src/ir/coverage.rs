//! What plec cannot run faithfully: blocks of a valid config that would
//! change the trained model but that the lowering does not implement.
//!
//! [`audit`] reads the typed config before lowering and returns one
//! [`IrError::Unsupported`] per such block, all at once, so `compile` and
//! `run` stop naming every one of them instead of training a different
//! model than the config describes. Blocks that cannot change the model
//! (export settings, metrics of the training log, features no group reads)
//! are not listed here; `check` warns about the ones it skips.

use std::collections::HashSet;

use super::error::IrError;
use crate::proto::tzrec::protos::{
    feature_config::Feature, seq_encoder_config::SeqModule,
    seq_feature_config::Feature as SeqFeature, EasyRecConfig, FeatureGroupConfig,
};

/// Whether the sequence features and encoders of a group are lowered; the
/// audit reports them until they are.
pub const SEQUENCES_LOWERED: bool = false;

/// Every block of `config` that would change the model and that plec
/// cannot run, in source order of their kinds.
pub fn audit(config: &EasyRecConfig) -> Vec<IrError> {
    let mut out = Vec::new();
    let Some(mc) = &config.model_config else {
        return out;
    };
    // The multi-task families read the first feature group only.
    let Some(group) = mc.feature_groups.first() else {
        return out;
    };
    let gpath = "model_config.feature_groups[0]";
    let read = names_read(group);
    for (i, fc) in config.feature_configs.iter().enumerate() {
        let path = format!("feature_configs[{i}]");
        match &fc.feature {
            Some(Feature::SequenceFeature(s)) => {
                let prefix = format!("{}__", s.sequence_name);
                let used: Vec<&str> = s
                    .features
                    .iter()
                    .filter_map(|f| seq_sub_name(f.feature.as_ref()))
                    .filter(|n| read.contains(format!("{prefix}{n}").as_str()))
                    .collect();
                if !used.is_empty() && !SEQUENCES_LOWERED {
                    out.push(IrError::unsupported(
                        format!("sequence feature \"{}\"", s.sequence_name),
                        format!("{path}.sequence_feature"),
                    ));
                }
                for (k, sub) in s.features.iter().enumerate() {
                    let Some(name) = seq_sub_name(sub.feature.as_ref()) else {
                        continue;
                    };
                    if !read.contains(format!("{prefix}{name}").as_str()) {
                        continue;
                    }
                    if let Some(kind) = unsupported_seq_sub(sub.feature.as_ref()) {
                        out.push(IrError::unsupported(
                            format!("`{kind}` inside a sequence feature"),
                            format!("{path}.sequence_feature.features[{k}].{kind}"),
                        ));
                    }
                }
            }
            Some(f @ (Feature::SequenceIdFeature(_) | Feature::SequenceRawFeature(_)))
                if !SEQUENCES_LOWERED =>
            {
                let (kind, name) = match f {
                    Feature::SequenceIdFeature(x) => ("sequence_id_feature", &x.feature_name),
                    Feature::SequenceRawFeature(x) => ("sequence_raw_feature", &x.feature_name),
                    _ => continue,
                };
                if read.contains(name.as_str()) {
                    out.push(IrError::unsupported(
                        format!("{kind} \"{name}\""),
                        format!("{path}.{kind}"),
                    ));
                }
            }
            _ => {}
        }
    }
    if !SEQUENCES_LOWERED {
        for (s, sg) in group.sequence_groups.iter().enumerate() {
            let name = sg.group_name.as_deref().unwrap_or(&group.group_name);
            out.push(IrError::unsupported(
                format!("sequence group \"{name}\""),
                format!("{gpath}.sequence_groups[{s}]"),
            ));
        }
        for (e, enc) in group.sequence_encoders.iter().enumerate() {
            let kind = enc
                .seq_module
                .as_ref()
                .map_or("sequence encoder", encoder_kind);
            out.push(IrError::unsupported(
                format!("sequence encoder `{kind}`"),
                format!("{gpath}.sequence_encoders[{e}]"),
            ));
        }
    }
    if mc.variational_dropout.is_some() {
        out.push(IrError::unsupported(
            "variational dropout",
            "model_config.variational_dropout",
        ));
    }
    if mc.use_pareto_loss_weight == Some(true) {
        out.push(IrError::unsupported(
            "Pareto loss weighting",
            "model_config.use_pareto_loss_weight",
        ));
    }
    out
}

/// Feature names the group reads, plainly or through its sequence groups.
fn names_read(group: &FeatureGroupConfig) -> HashSet<&str> {
    group
        .feature_names
        .iter()
        .chain(
            group
                .sequence_groups
                .iter()
                .flat_map(|s| s.feature_names.iter()),
        )
        .map(String::as_str)
        .collect()
}

/// The name of a sub-feature of a sequence feature (before the prefix).
fn seq_sub_name(f: Option<&SeqFeature>) -> Option<&str> {
    Some(match f? {
        SeqFeature::IdFeature(x) => &x.feature_name,
        SeqFeature::RawFeature(x) => &x.feature_name,
        SeqFeature::ComboFeature(x) => &x.feature_name,
        _ => return None,
    })
}

/// Sub-feature kinds plec has no sequence form of.
fn unsupported_seq_sub(f: Option<&SeqFeature>) -> Option<&'static str> {
    match f? {
        SeqFeature::IdFeature(_) | SeqFeature::RawFeature(_) => None,
        SeqFeature::ComboFeature(_) => Some("combo_feature"),
        _ => None,
    }
}

/// The field name of an encoder kind, as written in the config.
pub fn encoder_kind(m: &SeqModule) -> &'static str {
    match m {
        SeqModule::DinEncoder(_) => "din_encoder",
        SeqModule::SimpleAttention(_) => "simple_attention",
        SeqModule::PoolingEncoder(_) => "pooling_encoder",
        SeqModule::MultiWindowDinEncoder(_) => "multi_window_din_encoder",
        SeqModule::SelfAttentionEncoder(_) => "self_attention_encoder",
    }
}
