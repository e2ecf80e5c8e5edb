//! Values of the model section that TorchEasyRec would only reject at run
//! time: MLP settings (dropout ratios, norms, activations) and each tower's
//! losses against its `num_class`.

use super::context::{Ctx, Tower};
use super::{LabelAt, Rule};
use crate::diag::{closest_names, one_of, Diagnostic, Severity};
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
more. A mismatch fails inside the loss at the first training step.

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

/// Activation classes of `torch.nn` (written `nn.X` or `torch.nn.X`).
const TORCH_ACTIVATIONS: &[&str] = &[
    "ReLU",
    "ReLU6",
    "LeakyReLU",
    "PReLU",
    "RReLU",
    "ELU",
    "SELU",
    "CELU",
    "GELU",
    "SiLU",
    "Mish",
    "Sigmoid",
    "Hardsigmoid",
    "LogSigmoid",
    "Tanh",
    "Hardtanh",
    "Tanhshrink",
    "Hardswish",
    "Hardshrink",
    "Softshrink",
    "Softplus",
    "Softsign",
    "Softmax",
    "Softmin",
    "LogSoftmax",
    "GLU",
    "Threshold",
    "Identity",
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

/// Whether TorchEasyRec can build this activation; `None` when plec cannot
/// tell (a custom class outside torch.nn).
fn activation_known(act: &str) -> Option<bool> {
    let act = act.trim();
    if act.is_empty() || act == "Dice" {
        return Some(true);
    }
    let base = match act.split_once('(') {
        Some((base, rest)) => {
            if !rest.ends_with(')') {
                return Some(false);
            }
            base.trim()
        }
        None => act,
    };
    let class = base
        .strip_prefix("torch.nn.")
        .or_else(|| base.strip_prefix("nn."));
    match class {
        Some(c) => Some(TORCH_ACTIVATIONS.contains(&c)),
        // A dotted path outside torch.nn is a custom class TorchEasyRec
        // imports at run time; plec cannot check it.
        None if base.contains('.') => None,
        None => Some(false),
    }
}

fn unknown_activation(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let known: Vec<String> = TORCH_ACTIVATIONS
        .iter()
        .map(|a| format!("nn.{a}"))
        .chain(std::iter::once("Dice".to_string()))
        .collect();
    for (path, mlp) in &cx.mlps {
        let Some(act) = mlp.activation.as_deref() else {
            continue;
        };
        if activation_known(act) != Some(false) {
            continue;
        }
        let base = act.split('(').next().unwrap_or(act).trim();
        let bare = base.rsplit('.').next().unwrap_or(base);
        let mut close = closest_names(base, known.iter().map(String::as_str), 3);
        if close.is_empty() {
            // `Relu`, `relu`, `torch.relu`: match on the class name alone.
            close = known
                .iter()
                .filter(|k| {
                    k.rsplit('.')
                        .next()
                        .is_some_and(|c| c.eq_ignore_ascii_case(bare))
                })
                .cloned()
                .collect();
        }
        let help = if close.is_empty() {
            "use a torch.nn activation such as `nn.ReLU`, `nn.GELU` or `nn.Sigmoid` (names are case-sensitive), or `Dice`".to_string()
        } else {
            format!(
                "did you mean {}? activation names are case-sensitive torch.nn classes",
                one_of(&close)
            )
        };
        out.push(
            rule.diag(format!("unknown activation \"{act}\""))
                .primary_at(
                    cx.value(&format!("{path}.activation")),
                    "not a torch activation",
                )
                .with_help(help),
        );
    }
}

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
            cx.value(&t.field("tower_name")),
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
                Loss::JrcLoss(_) => continue,
            };
            if ok {
                continue;
            }
            let (span, text) = num_class_label(cx, t, n);
            let help = match loss {
                Loss::SoftmaxCrossEntropy(_) => "set `num_class` to the number of classes, or use `binary_cross_entropy` for a binary label".to_string(),
                _ => format!(
                    "`{name}` reads one logit per sample; remove `num_class: {n}`, or use `softmax_cross_entropy` for {n} classes"
                ),
            };
            out.push(
                rule.diag(format!(
                    "{name} needs num_class {wanted}, but tower \"{}\" has num_class {n}",
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
    let file = desc.parent_file();
    if !matches!(
        file.name(),
        "tzrec/protos/models/rank_model.proto" | "tzrec/protos/models/general_rank_model.proto"
    ) {
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
            Loss::JrcLoss(_) => continue,
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
                .primary_at(
                    cx.best(&t.field("tower_name")),
                    "this tower is never trained",
                )
                .with_help("add a loss such as `losses { binary_cross_entropy {} }`"),
        );
    }
}
