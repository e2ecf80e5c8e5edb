//! Semantic-ID models (`sid_rqvae`, `sid_rqkmeans`): the codebook settings
//! and the rest of what `tzrec/models/sid_*.py`, `tzrec/modules/sid/` and
//! the SID losses check when TorchEasyRec builds the model.

use super::context::Ctx;
use super::widths::{feature_widths, group_width};
use super::{LabelAt, Rule};
use crate::diag::{one_of, Diagnostic, Severity};
use crate::proto::tzrec::protos::{
    loss_config::SidLoss, model_config::Model, LossConfig, SidCandidateOutputConfig,
};

pub(super) const RULES: &[Rule] = &[
    Rule {
        code: "plec::sid-codebook",
        severity: Severity::Error,
        summary: "a semantic-ID model's codebook settings that TorchEasyRec refuses",
        explain: "\
`codebook` lists the number of codes of each residual quantization layer
(its length is the number of layers). TorchEasyRec stops when:
- `codebook` is empty (\"codebook must be set\") or an entry is 0;
- `candidate_output_config` is enabled with a `topk` outside 1 to the last
  layer's codebook size;
- SidRqkmeans keeps fewer training samples than its largest codebook has
  codes (`train_sample_size`, or the largest codebook times faiss's
  `max_points_per_centroid` when it is 0): K-Means cannot fit K centroids to
  fewer than K points;
- SidRqvae with `kmeans_init` seeds the codebooks from the first batch, which
  must hold at least as many rows as the largest codebook.

Example:
    sid_rqkmeans { codebook: [256, 256, 256] train_sample_size: 100 }

Fix: give every layer a positive size, and enough samples (or a larger
`batch_size`) for the largest one.",
        check: sid_codebook,
    },
    Rule {
        code: "plec::sid-model",
        severity: Severity::Error,
        summary: "a semantic-ID model setting that TorchEasyRec refuses",
        explain: "\
TorchEasyRec's SidRqvae and SidRqkmeans check, when they are built:
- the main input is the first feature group, and it must be at least 1 wide;
- SidRqvae: `embed_dim` and every `hidden_dims` entry at least 1;
  `forward_mode` is \"ste\" or \"gumbel_softmax\"; `distance_type` \"l2\" or
  \"cosine\"; Sinkhorn (on by default) needs `epsilon` above 0;
  `contrastive_config` and a `contrastive_loss` go together, the pair group
  is as wide as the main group (one encoder reads both) and the pair-flag
  group is one value wide;
- every entry of `model_config.losses` is a SID loss (`recon_loss`,
  `commitment_loss`, `contrastive_loss`); their `recon_type` /
  `commitment_type` is \"l2\", \"l1\" or \"cos\", and `latent_weight` has two
  values when given;
- `candidate_output_config.strategy` is \"last_layer_knn\".

Example:
    sid_rqvae { codebook: [16, 16] forward_mode: \"gumbel\" }

Fix: use one of the listed values.",
        check: sid_model,
    },
];

/// The model's kind, codebook and candidate output settings.
struct Sid<'a> {
    kind: &'static str,
    codebook: &'a [u32],
    candidate: Option<&'a SidCandidateOutputConfig>,
}

fn sid<'a>(cx: &Ctx<'a>) -> Option<Sid<'a>> {
    match cx.config.model_config.as_ref()?.model.as_ref()? {
        Model::SidRqvae(m) => Some(Sid {
            kind: "sid_rqvae",
            codebook: &m.codebook,
            candidate: m.candidate_output_config.as_ref(),
        }),
        Model::SidRqkmeans(m) => Some(Sid {
            kind: "sid_rqkmeans",
            codebook: &m.codebook,
            candidate: m.candidate_output_config.as_ref(),
        }),
        _ => None,
    }
}

fn sid_codebook(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let Some(s) = sid(cx) else { return };
    let base = format!("model_config.{}", s.kind);
    if s.codebook.is_empty() {
        out.push(
            rule.diag(format!("{} has no codebook", s.kind))
                .primary_at(cx.name(&base), "no `codebook`")
                .with_help("TorchEasyRec raises \"codebook must be set\"; list the codes per layer, e.g. `codebook: [256, 256, 256]`"),
        );
        return;
    }
    for (i, k) in s.codebook.iter().enumerate() {
        if *k == 0 {
            out.push(
                rule.diag(format!("codebook layer {i} has 0 codes"))
                    .primary_at(cx.value(&format!("{base}.codebook[{i}]")), "needs at least 1")
                    .with_help("every codebook entry is a layer's number of codes and must be at least 1 (256 is usual)"),
            );
        }
    }
    let last = s.codebook.last().copied().unwrap_or(0);
    let max = s.codebook.iter().copied().max().unwrap_or(0);
    if let Some(c) = s.candidate.filter(|c| c.enabled()) {
        let topk = c.topk();
        if last > 0 && (topk < 1 || topk > last) {
            let cp = format!("{base}.candidate_output_config");
            out.push(
                rule.diag(format!("candidate topk {topk} is outside 1..={last}"))
                    .primary_at(cx.value(&format!("{cp}.topk")).or_else(|| cx.name(&cp)), format!("the last layer has {last} codes"))
                    .with_help(format!("the candidates are the top-k codes of the last layer; set `topk` between 1 and {last}")),
            );
        }
    }
    match cx
        .config
        .model_config
        .as_ref()
        .and_then(|m| m.model.as_ref())
    {
        Some(Model::SidRqkmeans(m)) if max > 0 => {
            let target = m.train_sample_size();
            let ppc = m
                .faiss_kmeans_kwargs
                .as_ref()
                .and_then(|f| f.max_points_per_centroid)
                .unwrap_or(256);
            let (cap, at, what) = if target > 0 {
                (
                    u64::from(target),
                    format!("{base}.train_sample_size"),
                    "train_sample_size",
                )
            } else {
                (
                    u64::from(max) * u64::from(ppc),
                    format!("{base}.faiss_kmeans_kwargs.max_points_per_centroid"),
                    "max_points_per_centroid",
                )
            };
            if cap < u64::from(max) {
                out.push(
                    rule.diag(format!("sid_rqkmeans keeps {cap} training samples, fewer than its largest codebook ({max} codes)"))
                        .primary_at(cx.value(&at), format!("{what} gives {cap} samples"))
                        .with_help(format!("K-Means cannot fit {max} centroids to fewer points; TorchEasyRec raises at build: set `train_sample_size` to at least {max}, or 0 for the default")),
                );
            }
        }
        Some(Model::SidRqvae(m)) if m.kmeans_init() && max > 0 => {
            let Some(data) = cx.data else { return };
            let batch = data.batch_size();
            if batch < max {
                out.push(
                    rule.diag(format!("kmeans_init seeds a {max}-code codebook from the first batch of {batch} rows"))
                        .primary_at(cx.value(&format!("{base}.kmeans_init")), format!("needs at least {max} rows"))
                        .secondary_at(cx.value("data_config.batch_size"), format!("{batch} rows"))
                        .with_help(format!("TorchEasyRec raises at the first batch when it has fewer rows than the largest codebook; raise `batch_size` to {max} or more, or drop `kmeans_init`")),
                );
            }
        }
        _ => {}
    }
}

fn sid_model(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let Some(s) = sid(cx) else { return };
    let base = format!("model_config.{}", s.kind);
    main_group(rule, cx, s.kind, out);
    if let Some(c) = s.candidate.filter(|c| c.enabled()) {
        let strategy = c.strategy();
        if strategy != "last_layer_knn" {
            out.push(
                rule.diag(format!("unknown candidate strategy \"{strategy}\""))
                    .primary_at(
                        cx.value(&format!("{base}.candidate_output_config.strategy")),
                        "not supported",
                    )
                    .with_help("TorchEasyRec supports only `strategy: \"last_layer_knn\"`"),
            );
        }
    }
    let losses = cx
        .config
        .model_config
        .as_ref()
        .map_or(&[][..], |m| m.losses.as_slice());
    sid_losses(rule, cx, s.kind, losses, out);
    let Some(Model::SidRqvae(m)) = cx
        .config
        .model_config
        .as_ref()
        .and_then(|c| c.model.as_ref())
    else {
        return;
    };
    if m.embed_dim() == 0 {
        out.push(
            rule.diag("sid_rqvae's embed_dim is 0")
                .primary_at(cx.value(&format!("{base}.embed_dim")), "needs at least 1")
                .with_help("the encoder maps each item to an `embed_dim`-wide latent; use a positive width such as 64"),
        );
    }
    for (i, h) in m.hidden_dims.iter().enumerate() {
        if *h == 0 {
            out.push(
                rule.diag(format!("hidden_dims entry {i} is 0"))
                    .primary_at(
                        cx.value(&format!("{base}.hidden_dims[{i}]")),
                        "needs at least 1",
                    )
                    .with_help("every encoder layer needs a positive width"),
            );
        }
    }
    let choices = [
        (
            "forward_mode",
            m.forward_mode(),
            &["ste", "gumbel_softmax"][..],
        ),
        ("distance_type", m.distance_type(), &["l2", "cosine"][..]),
    ];
    for (field, value, known) in choices {
        if known.contains(&value) {
            continue;
        }
        let list: Vec<String> = known.iter().map(|k| format!("\"{k}\"")).collect();
        out.push(
            rule.diag(format!("unknown {field} \"{value}\""))
                .primary_at(cx.value(&format!("{base}.{field}")), "not supported")
                .with_help(format!("TorchEasyRec accepts {}", list.join(" or "))),
        );
    }
    if let Some(sk) = &m.sinkhorn_config {
        if sk.enabled() && sk.epsilon() <= 0.0 && m.forward_mode() != "gumbel_softmax" {
            out.push(
                rule.diag(format!("sinkhorn epsilon {} is not above 0", sk.epsilon()))
                    .primary_at(cx.value(&format!("{base}.sinkhorn_config.epsilon")), "must be > 0")
                    .with_help("Sinkhorn computes exp(-cost * epsilon), which overflows for epsilon <= 0; TorchEasyRec raises at build. Use a positive epsilon (10 is the default) or `enabled: false`"),
            );
        }
    }
    contrastive(rule, cx, m.contrastive_config.as_ref(), losses, out);
}

/// The first feature group is the main input; it must be at least 1 wide.
fn main_group(rule: &Rule, cx: &Ctx, kind: &str, out: &mut Vec<Diagnostic>) {
    let Some(g) = cx.groups.first() else {
        out.push(
            rule.diag(format!("{kind} has no feature group to quantize"))
                .primary_at(cx.name(&format!("model_config.{kind}")), "reads the first feature group")
                .with_help("add a feature group with the item embedding features; the model quantizes its first group"),
        );
        return;
    };
    let widths = feature_widths(cx);
    if group_width(&widths, g).total() == Some(0) {
        out.push(
            rule.diag(format!("{kind}'s input group \"{}\" is 0 wide", g.group_name))
                .primary_at(cx.value("model_config.feature_groups[0].group_name"), "no features")
                .with_help("TorchEasyRec raises \"it must be >= 1\"; list the item embedding features in the first group"),
        );
    }
}

fn sid_losses(rule: &Rule, cx: &Ctx, kind: &str, losses: &[LossConfig], out: &mut Vec<Diagnostic>) {
    const TYPES: &[&str] = &["l2", "l1", "cos"];
    for (k, l) in losses.iter().enumerate() {
        let lp = format!("model_config.losses[{k}]");
        match &l.sid_loss {
            None => {
                out.push(
                    rule.diag(format!("{kind} trains only on SID losses"))
                        .primary_at(cx.name(&lp), "not a SID loss")
                        .with_help("TorchEasyRec raises \"LossConfig for a SID model must set a sid_loss variant\"; use `recon_loss`, `commitment_loss` or `contrastive_loss`"),
                );
            }
            Some(SidLoss::ReconLoss(r)) if !TYPES.contains(&r.recon_type()) => {
                out.push(
                    rule.diag(format!("unknown recon_type \"{}\"", r.recon_type()))
                        .primary_at(
                            cx.value(&format!("{lp}.recon_loss.recon_type")),
                            "not supported",
                        )
                        .with_help(format!("TorchEasyRec accepts {}", quoted(TYPES))),
                );
            }
            Some(SidLoss::CommitmentLoss(c)) => {
                let cp = format!("{lp}.commitment_loss");
                if !TYPES.contains(&c.commitment_type()) {
                    out.push(
                        rule.diag(format!(
                            "unknown commitment_type \"{}\"",
                            c.commitment_type()
                        ))
                        .primary_at(cx.value(&format!("{cp}.commitment_type")), "not supported")
                        .with_help(format!("TorchEasyRec accepts {}", quoted(TYPES))),
                    );
                }
                let n = c.latent_weight.len();
                if n != 0 && n != 2 {
                    out.push(
                        rule.diag(format!("latent_weight has {n} values"))
                            .primary_at(cx.name(&format!("{cp}.latent_weight")), "needs exactly 2")
                            .with_help("the commitment loss weighs its two terms [encoder toward codes, codes toward encoder]; give two values, e.g. [1.0, 0.5], or none for that default"),
                    );
                }
            }
            Some(_) => {}
        }
    }
}

fn quoted(items: &[&str]) -> String {
    let list: Vec<String> = items.iter().map(|k| k.to_string()).collect();
    one_of(&list)
}

fn contrastive(
    rule: &Rule,
    cx: &Ctx,
    config: Option<&crate::proto::tzrec::protos::ContrastiveConfig>,
    losses: &[LossConfig],
    out: &mut Vec<Diagnostic>,
) {
    let base = "model_config.sid_rqvae.contrastive_config";
    let loss = losses
        .iter()
        .position(|l| matches!(l.sid_loss, Some(SidLoss::ContrastiveLoss(_))));
    match (config, loss) {
        (Some(_), None) => out.push(
            rule.diag("contrastive_config is set but no contrastive_loss trains it")
                .primary_at(cx.name(base), "structure without objective")
                .with_help("TorchEasyRec requires both or neither; add `losses { contrastive_loss {} }` to model_config, or remove `contrastive_config`"),
        ),
        (None, Some(k)) => out.push(
            rule.diag("a contrastive_loss is listed but sid_rqvae has no contrastive_config")
                .primary_at(cx.name(&format!("model_config.losses[{k}].contrastive_loss")), "objective without structure")
                .with_help("TorchEasyRec requires both or neither; add `contrastive_config { pair_feature_group: ... pair_flag_feature_group: ... }`, or remove the loss"),
        ),
        _ => {}
    }
    let Some(c) = config else { return };
    let widths = feature_widths(cx);
    let width = |name: &str| {
        cx.groups
            .iter()
            .find(|g| g.group_name == name)
            .and_then(|g| group_width(&widths, g).total())
    };
    let Some(main) = cx
        .groups
        .first()
        .and_then(|g| group_width(&widths, g).total())
    else {
        return;
    };
    if let Some(pair) = width(&c.pair_feature_group) {
        if pair != main && c.pair_feature_group != cx.groups[0].group_name {
            out.push(
                rule.diag(format!(
                    "pair group \"{}\" is {pair} wide, the main group \"{}\" {main}",
                    c.pair_feature_group, cx.groups[0].group_name
                ))
                .primary_at(
                    cx.value(&format!("{base}.pair_feature_group")),
                    format!("{pair} wide"),
                )
                .with_help(
                    "one encoder reads both groups; give the pair group the main group's width",
                ),
            );
        }
    }
    if let Some(flag) = width(&c.pair_flag_feature_group) {
        if flag != 1 {
            out.push(
                rule.diag(format!(
                    "pair-flag group \"{}\" is {flag} wide",
                    c.pair_flag_feature_group
                ))
                .primary_at(cx.value(&format!("{base}.pair_flag_feature_group")), "must be 1 wide")
                .with_help("the flag group holds one raw value per row (> 0.5 marks a pair); list a single raw feature with `value_dim: 1`"),
            );
        }
    }
}
