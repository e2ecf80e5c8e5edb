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
use super::graph::ModelGraph;
use crate::proto::tzrec::protos::{
    feature_config::Feature, seq_encoder_config::SeqModule,
    seq_feature_config::Feature as SeqFeature, EasyRecConfig, FeatureGroupConfig,
};

/// Every block of `config` that would change the model and that plec
/// cannot run: sub-features of a grouped sequence whose kind plec has no
/// sequence form of (when the model reads them), variational dropout and
/// Pareto loss weighting.
pub(crate) fn audit(config: &EasyRecConfig) -> Vec<IrError> {
    let mut out = Vec::new();
    let Some(mc) = &config.model_config else {
        return out;
    };
    if let Some(group) = mc.feature_groups.first() {
        let read = names_read(group);
        for (i, fc) in config.feature_configs.iter().enumerate() {
            let Some(Feature::SequenceFeature(s)) = &fc.feature else {
                continue;
            };
            let prefix = format!("{}__", s.sequence_name);
            for (k, sub) in s.features.iter().enumerate() {
                let Some(kind) = unsupported_seq_sub(sub.feature.as_ref()) else {
                    continue;
                };
                // Kinds plec knows by name only have no name to match: any
                // such sub-feature counts once the group reads the sequence.
                let used = match seq_sub_name(sub.feature.as_ref()) {
                    Some(name) => read.contains(format!("{prefix}{name}").as_str()),
                    None => read.iter().any(|n| n.starts_with(&prefix)),
                };
                if used {
                    out.push(IrError::unsupported(
                        format!("`{kind}` inside a sequence feature"),
                        format!("feature_configs[{i}].sequence_feature.features[{k}].{kind}"),
                    ));
                }
            }
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

/// Sub-feature kinds plec has no sequence form of, by field name.
fn unsupported_seq_sub(f: Option<&SeqFeature>) -> Option<&'static str> {
    Some(match f? {
        SeqFeature::IdFeature(_) | SeqFeature::RawFeature(_) => return None,
        SeqFeature::ComboFeature(_) => "combo_feature",
        SeqFeature::LookupFeature(_) => "lookup_feature",
        SeqFeature::MatchFeature(_) => "match_feature",
        SeqFeature::ExprFeature(_) => "expr_feature",
        SeqFeature::OverlapFeature(_) => "overlap_feature",
        SeqFeature::TokenizeFeature(_) => "tokenize_feature",
        SeqFeature::CustomFeature(_) => "custom_feature",
        SeqFeature::KvDotProduct(_) => "kv_dot_product",
        SeqFeature::BoolMaskFeature(_) => "bool_mask_feature",
        SeqFeature::CombineFeature(_) => "combine_feature",
    })
}

/// The field name of an encoder kind, as written in the config.
pub(crate) fn encoder_kind(m: &SeqModule) -> &'static str {
    match m {
        SeqModule::DinEncoder(_) => "din_encoder",
        SeqModule::SimpleAttention(_) => "simple_attention",
        SeqModule::PoolingEncoder(_) => "pooling_encoder",
        SeqModule::MultiWindowDinEncoder(_) => "multi_window_din_encoder",
        SeqModule::SelfAttentionEncoder(_) => "self_attention_encoder",
    }
}

/// Lowers the config, or every reason it cannot be run as written: the
/// blocks [`audit`] finds plus the lowering's own errors (an unsupported
/// block named by both is reported once).
pub(crate) fn lower_faithfully(config: &EasyRecConfig) -> Result<ModelGraph, Vec<IrError>> {
    let mut errors = audit(config);
    match super::lower(config) {
        Ok(graph) if errors.is_empty() => return Ok(graph),
        Ok(_) => {}
        Err(lowered) => {
            let audited = !errors.is_empty();
            for e in lowered {
                let seen = e
                    .path()
                    .is_some_and(|p| errors.iter().any(|x| x.path() == Some(p)));
                // With blocks already refused, "not defined" findings about
                // the names they define are consequences, not causes.
                if seen || (audited && matches!(e, IrError::Invalid { .. })) {
                    continue;
                }
                errors.push(e);
            }
        }
    }
    Err(errors)
}
