//! Values of the model section that TorchEasyRec would only reject at run
//! time: MLP settings (dropout ratios, norms, activations) and each tower's
//! losses against its `num_class`.

use super::context::{Ctx, Tower};
use super::{LabelAt, Rule};
use crate::diag::{Diagnostic, Severity};
use crate::proto::tzrec::protos::loss_config::Loss;

pub(super) const RULES: &[Rule] = &[
    Rule {
        code: "plec::dropout-ratio",
        severity: Severity::Error,
        summary: "an MLP's dropout_ratio has the wrong length or a value outside [0, 1)",
        explain: "\
`dropout_ratio` may be empty (no dropout), one value (for every layer) or one
value per entry of `hidden_units`; any other length makes TorchEasyRec stop
when it builds the MLP. Each ratio is a probability of dropping a unit and must
lie in [0, 1): a ratio of 1 drops everything.

Example:
    mlp { hidden_units: [256, 128] dropout_ratio: [0.1, 0.1, 0.1] }

Fix: give one ratio (`dropout_ratio: 0.1`) or one per layer
(`dropout_ratio: [0.2, 0.1]`).",
        check: dropout_ratio,
    },
    Rule {
        code: "plec::bn-and-ln",
        severity: Severity::Error,
        summary: "an MLP asks for both batch norm and layer norm",
        explain: "\
Each MLP layer may normalize with BatchNorm (`use_bn`) or LayerNorm
(`use_ln`), not both: TorchEasyRec raises \"Could not use_bn and use_ln at the
same time\" when it builds the layer.

Example:
    mlp { hidden_units: [256, 128] use_bn: true use_ln: true }

Fix: keep one of the two.",
        check: bn_and_ln,
    },
    Rule {
        code: "plec::unknown-activation",
        severity: Severity::Error,
        summary: "an MLP's activation is not a known torch activation",
        explain: "\
`activation` names a torch module class: `nn.ReLU` (the default), `nn.Sigmoid`,
`nn.Tanh`, `nn.LeakyReLU`, `nn.GELU`, `nn.SiLU`, `nn.PReLU`, `nn.ELU`,
`nn.SELU`, `nn.Mish`... or `Dice`; constructor arguments may follow in
parentheses (`nn.LeakyReLU(negative_slope=0.1)`). The names are case-sensitive:
`nn.Relu` is not a torch class, and TorchEasyRec stops with \"Unknown
activation method\" when it builds the MLP. An empty string means no
activation.

Example:
    mlp { hidden_units: [64] activation: \"nn.Relu\" }

Fix: use the exact torch name (`nn.ReLU`).",
        check: unknown_activation,
    },
    Rule {
        code: "plec::loss-num-class",
        severity: Severity::Error,
        summary: "a tower's loss does not fit its num_class",
        explain: "\
A tower ends in Linear(-> num_class) logits, and each loss expects a number of
logits: `binary_cross_entropy`, `binary_focal_loss` and `l2_loss` need
`num_class: 1` (the default); `softmax_cross_entropy` needs `num_class` of 2 or
more; `jrc_loss` needs exactly 2. This holds for single-task models
(`model_config.num_class`), task towers and HSTU fusion tasks. A mismatch fails inside the loss at the first training step.

Example:
    task_towers { tower_name: \"ctr\" num_class: 2
                  losses { binary_cross_entropy {} } }

Fix: drop `num_class` for a binary task, or switch to
`softmax_cross_entropy` for a multi-class one.",
        check: loss_num_class,
    },
    Rule {
        code: "plec::tower-without-loss",
        severity: Severity::Warning,
        summary: "a task tower has no loss, so it is never trained",
        explain: "\
A tower's parameters only learn through its `losses`. Without any loss the
tower still predicts and reports metrics, but from random weights.

Example:
    task_towers { tower_name: \"cvr\" label_name: \"buy\" metrics { auc {} } }

Fix: add a loss, e.g. `losses { binary_cross_entropy {} }`.",
        check: tower_without_loss,
    },
];

fn dropout_ratio(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    for (path, mlp) in &cx.mlps {
        let ratios = &mlp.dropout_ratio;
        let layers = mlp.hidden_units.len();
        if ratios.len() > 1 && ratios.len() != layers {
            out.push(
                rule.diag(format!(
                    "{} dropout ratios for {layers} layer{}",
                    ratios.len(),
                    if layers == 1 { "" } else { "s" }
                ))
                .primary_at(
                    cx.name(&format!("{path}.dropout_ratio")),
                    format!("{} ratios", ratios.len()),
                )
                .secondary_at(
                    cx.name(&format!("{path}.hidden_units")),
                    format!("{layers} layer{}", if layers == 1 { "" } else { "s" }),
                )
                .with_help(format!(
                    "give no ratio, one ratio for every layer, or exactly one per layer ({layers})"
                )),
            );
        }
        for (i, r) in ratios.iter().enumerate() {
            if (0.0..1.0).contains(r) {
                continue;
            }
            out.push(
                rule.diag(format!("dropout ratio {r} is outside [0, 1)"))
                    .primary_at(cx.value(&format!("{path}.dropout_ratio[{i}]")), "not a valid ratio")
                    .with_help("a dropout ratio is the probability of zeroing a unit; typical values are 0.1 to 0.5"),
            );
        }
    }
}

fn bn_and_ln(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    for (path, mlp) in &cx.mlps {
        if mlp.use_bn() && mlp.use_ln() {
            out.push(
                rule.diag("an mlp cannot use both batch norm and layer norm")
                    .primary_at(cx.value(&format!("{path}.use_ln")), "layer norm here")
                    .secondary_at(cx.value(&format!("{path}.use_bn")), "batch norm here")
                    .with_help(
                        "TorchEasyRec refuses `use_bn` together with `use_ln`; keep one of them",
                    ),
            );
        }
    }
}

fn unknown_activation(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    for (path, mlp) in &cx.mlps {
        let Some(act) = mlp.activation.as_deref() else {
            continue;
        };
        let Err(problem) = crate::lang::activation::parse(act) else {
            continue;
        };
        out.push(
            rule.diag(problem.message)
                .primary_at(
                    cx.value(&format!("{path}.activation")),
                    "not a torch activation",
                )
                .with_help(problem.help),
        );
    }
}

const JRC_HELP: &str = "TorchEasyRec asserts \"num_class must be 2 when loss type is jrc_loss\" (a click and a non-click logit); set `num_class: 2`";

fn loss_name(loss: &Loss) -> &'static str {
    match loss {
        Loss::BinaryCrossEntropy(_) => "binary_cross_entropy",
        Loss::SoftmaxCrossEntropy(_) => "softmax_cross_entropy",
        Loss::L2Loss(_) => "l2_loss",
        Loss::JrcLoss(_) => "jrc_loss",
        Loss::BinaryFocalLoss(_) => "binary_focal_loss",
    }
}

fn num_class_label(cx: &Ctx, t: &Tower, n: u32) -> (Option<std::ops::Range<usize>>, String) {
    let path = t.field("num_class");
    if cx.written(&path) {
        (cx.value(&path), format!("num_class is {n}"))
    } else {
        (
            cx.value(&t.name_path()),
            "num_class defaults to 1".to_string(),
        )
    }
}

fn loss_num_class(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    rank_loss_num_class(rule, cx, out);
    let Some(model) = &cx.model else { return };
    for t in &model.towers {
        let n = t.num_class.unwrap_or(1);
        for (k, lc) in t.losses.iter().enumerate() {
            let Some(loss) = &lc.loss else { continue };
            let name = loss_name(loss);
            let (wanted, ok) = match loss {
                Loss::BinaryCrossEntropy(_) | Loss::BinaryFocalLoss(_) | Loss::L2Loss(_) => {
                    ("1", n == 1)
                }
                Loss::SoftmaxCrossEntropy(_) => ("2 or more", n >= 2),
                Loss::JrcLoss(_) => ("2", n == 2),
            };
            if ok {
                continue;
            }
            let (span, text) = num_class_label(cx, t, n);
            let help = match loss {
                Loss::SoftmaxCrossEntropy(_) => "set `num_class` to the number of classes, or use `binary_cross_entropy` for a binary label".to_string(),
                Loss::JrcLoss(_) => JRC_HELP.to_string(),
                _ => format!(
                    "`{name}` reads one logit per sample; remove `num_class: {n}`, or use `softmax_cross_entropy` for {n} classes"
                ),
            };
            out.push(
                rule.diag(format!(
                    "{name} needs num_class {wanted}, but {} \"{}\" has num_class {n}",
                    if t.fusion { "task" } else { "tower" },
                    t.name
                ))
                .primary_at(
                    cx.name(&format!("{}.losses[{k}].{name}", t.path)),
                    format!("needs num_class {wanted}"),
                )
                .secondary_at(span, text)
                .with_help(help),
            );
        }
    }
}

/// Single-task ranking models (DeepFM, DLRM, MultiTowerDIN...) train
/// `model_config.losses` against `model_config.num_class`, with the same
/// assertions as a task tower. Retrieval models ignore `num_class`.
fn rank_loss_num_class(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let (Some(mc), Some((kind, desc))) = (&cx.config.model_config, &cx.model_kind) else {
        return;
    };
    // Single-task ranking models train on the first label with
    // `model_config.num_class`; retrieval models ignore it.
    if !cx.facts.first_label(desc) || cx.facts.retrieval(desc) {
        return;
    }
    let n = mc.num_class.unwrap_or(1);
    for (k, lc) in mc.losses.iter().enumerate() {
        let Some(loss) = &lc.loss else { continue };
        let name = loss_name(loss);
        let (wanted, ok) = match loss {
            Loss::BinaryCrossEntropy(_) | Loss::BinaryFocalLoss(_) | Loss::L2Loss(_) => {
                ("1", n == 1)
            }
            Loss::SoftmaxCrossEntropy(_) => ("2 or more", n >= 2),
            Loss::JrcLoss(_) => ("2", n == 2),
        };
        if ok {
            continue;
        }
        out.push(
            rule.diag(format!("{name} needs num_class {wanted}, but the {kind} model has num_class {n}"))
                .primary_at(cx.name(&format!("model_config.losses[{k}].{name}")), format!("needs num_class {wanted}"))
                .secondary_at(cx.value("model_config.num_class"), format!("num_class {n}"))
                .with_help(match loss {
                    Loss::SoftmaxCrossEntropy(_) => "set `num_class` to the number of classes, or use `binary_cross_entropy` for a binary label".to_string(),
                    Loss::JrcLoss(_) => JRC_HELP.to_string(),
                    _ => format!("`{name}` reads one logit per sample; remove `num_class: {n}`, or use `softmax_cross_entropy` for {n} classes"),
                }),
        );
    }
}

fn tower_without_loss(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let Some(model) = &cx.model else { return };
    for t in &model.towers {
        if t.losses.iter().any(|l| l.loss.is_some()) {
            continue;
        }
        out.push(
            rule.diag(format!("tower \"{}\" has no loss", t.name))
                .primary_at(cx.best(&t.name_path()), "this tower is never trained")
                .with_help("add a loss such as `losses { binary_cross_entropy {} }`"),
        );
    }
}
