//! Losses and metrics a model family supports: retrieval models train with
//! one softmax cross entropy and report recall@k; ranking models (single-
//! and multi-task) take the ranking losses and metrics
//! (`tzrec/models/match_model.py`, `tzrec/models/rank_model.py`).

use prost_reflect::{DynamicMessage, ReflectMessage};

use super::context::Ctx;
use super::{LabelAt, Rule};
use crate::diag::{Diagnostic, Severity};

pub(super) const RULES: &[Rule] = &[Rule {
    code: "plec::model-loss",
    severity: Severity::Error,
    summary: "a loss or metric the model's family does not support",
    explain: "\
TorchEasyRec builds losses and metrics per model family and stops on others:
- a retrieval model (DSSM, DSSMV2, DAT, MIND, HSTUMatch) trains with exactly
  one loss, `softmax_cross_entropy` over the similarity of a user to its
  item and the sampled negatives (\"match model only support
  softmax_cross_entropy loss now\", \"only support single loss\"), and
  reports only `recall_at_k`;
- a ranking model (single-task, multi-task towers, HSTU fusion tasks) has
  no `recall_at_k` (\"recall_at_k is not supported for this model\"), and
  its losses are ranking losses (`binary_cross_entropy`,
  `softmax_cross_entropy`, `l2_loss`, `jrc_loss`, `binary_focal_loss`), not
  the semantic-ID losses.

Example:
    dssm { ... }
    losses { binary_cross_entropy {} }

Fix: use `losses { softmax_cross_entropy {} }` and `metrics { recall_at_k {
top_k: 5 } }` for a retrieval model; `auc` and the other ranking metrics
otherwise.",
    check: model_loss,
}];

/// The chosen member of a message's `oneof <name>`.
fn chosen(msg: &DynamicMessage, oneof: &str) -> Option<String> {
    let desc = msg.descriptor();
    let o = desc.oneofs().find(|o| o.name() == oneof)?;
    let f = o.fields().find(|f| msg.has_field(f))?;
    Some(f.name().to_string())
}

fn model_loss(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let Some((kind, desc)) = &cx.model_kind else {
        return;
    };
    if kind.starts_with("sid_") {
        return; // plec::sid-model
    }
    let retrieval = cx.facts.retrieval(desc);
    let mut top_losses = 0;
    for (path, msg) in &cx.nodes {
        if !path.starts_with("model_config.") {
            continue;
        }
        match msg.descriptor().full_name() {
            "tzrec.protos.LossConfig" => {
                let loss = chosen(msg, "loss");
                if retrieval && path.starts_with("model_config.losses[") {
                    top_losses += 1;
                    if top_losses == 2 {
                        out.push(
                            rule.diag(format!("{kind} trains with a single loss"))
                                .primary_at(cx.name(path), "a second loss")
                                .with_help("TorchEasyRec asserts \"match model only support single loss now\"; keep one `softmax_cross_entropy`"),
                        );
                    }
                }
                match (retrieval, loss.as_deref()) {
                    (true, Some("softmax_cross_entropy")) | (false, Some(_)) => {}
                    (true, other) => {
                        let at = other.map(|o| format!("{path}.{o}"));
                        out.push(
                            rule.diag(format!(
                                "{kind} trains only with softmax_cross_entropy{}",
                                other.map(|o| format!(", not {o}")).unwrap_or_default()
                            ))
                            .primary_at(at.and_then(|a| cx.name(&a)).or_else(|| cx.name(path)), "not supported by retrieval models")
                            .with_help("a retrieval model scores each user against its item and the sampled negatives, a softmax over them; use `softmax_cross_entropy {}`"),
                        );
                    }
                    (false, None) => {
                        let sid = chosen(msg, "sid_loss");
                        let at = sid.as_ref().map(|s| format!("{path}.{s}"));
                        out.push(
                            rule.diag(format!("{kind} has no ranking loss here"))
                                .primary_at(at.and_then(|a| cx.name(&a)).or_else(|| cx.name(path)), "only semantic-ID models train on this")
                                .with_help("use a ranking loss: `binary_cross_entropy`, `softmax_cross_entropy`, `l2_loss`, `jrc_loss` or `binary_focal_loss`"),
                        );
                    }
                }
            }
            "tzrec.protos.MetricConfig" | "tzrec.protos.TrainMetricConfig" => {
                let Some(metric) = chosen(msg, "metric") else {
                    continue;
                };
                let recall = metric == "recall_at_k";
                if recall == retrieval {
                    continue;
                }
                let (text, help) = if retrieval {
                    (
                        format!("{kind} reports only recall_at_k, not {metric}"),
                        "TorchEasyRec raises \"is not supported for this model\"; use `recall_at_k { top_k: 5 }`",
                    )
                } else {
                    (
                        format!("{kind} is a ranking model and has no recall_at_k"),
                        "TorchEasyRec raises \"recall_at_k is not supported for this model\"; use `auc`, `grouped_auc` or another ranking metric",
                    )
                };
                out.push(
                    rule.diag(text)
                        .primary_at(cx.name(&format!("{path}.{metric}")), "not supported here")
                        .with_help(help),
                );
            }
            _ => {}
        }
    }
}
