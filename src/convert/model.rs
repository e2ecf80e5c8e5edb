//! `model_config`: feature groups and the multi-task models (PLE, MMoE,
//! DBMTL, SimpleMultiTask) with their towers, MLPs, losses and metrics.

use prost_reflect::{DynamicMessage, ReflectMessage, Value};

use super::dest::{child, copy, push_child, set, set_enum};
use super::source::Src;
use super::Ctx;

/// The models plec convert maps: (EasyRec oneof member, `model_class`).
/// TorchEasyRec's oneof member has the same name.
const MODELS: &[(&str, &str)] = &[
    ("ple", "PLE"),
    ("mmoe", "MMoE"),
    ("dbmtl", "DBMTL"),
    ("simple_multi_task", "SimpleMultiTask"),
];

/// Whether TorchEasyRec's `ModelConfig` has a model called `kind`.
fn tzrec_has_model(out: &DynamicMessage, kind: &str) -> bool {
    out.descriptor()
        .get_field_by_name("model_config")
        .and_then(|f| f.kind().as_message().cloned())
        .is_some_and(|mc| mc.get_field_by_name(kind).is_some())
}

pub(crate) fn model(ctx: &mut Ctx, src: &Src, out: &mut DynamicMessage) {
    let Some(m) = src.child("model_config") else {
        ctx.unsupported(
            "",
            "the config has no `model_config`".to_string(),
            "plec convert needs a model to convert",
        );
        return;
    };
    let data = src.child("data_config");
    let labels = data
        .as_ref()
        .map(|d| d.strs("label_fields"))
        .unwrap_or_default();
    let sample_weight = data
        .as_ref()
        .and_then(|d| d.peek("sample_weight"))
        .and_then(|v| v.as_str().map(str::to_string));
    let Some(dst) = child(ctx, out, "model_config") else {
        return;
    };
    zero_is_unset(&m, "embedding_regularization");
    // The same layer in both (TorchEasyRec's `VariationalDropout`).
    if let Some(v) = m.child("variational_dropout") {
        if let Some(d) = child(ctx, dst, "variational_dropout") {
            copy(
                ctx,
                &v,
                d,
                &[
                    "regularization_lambda",
                    "embedding_wise_variational_dropout",
                ],
            );
        }
    }
    for g in m.children("feature_groups") {
        group(ctx, &g, dst);
    }
    let Some(kind) = m.oneof("model") else {
        ctx.unsupported(
            m.path(),
            "`model_config` has no model block".to_string(),
            "add the model's block (`ple { ... }`, `mmoe { ... }`...)",
        );
        return;
    };
    let Some((_, class)) = MODELS.iter().find(|(k, _)| *k == kind) else {
        let written_class = m
            .peek("model_class")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        m.consume("model_class");
        let (message, help) = if kind == "model_params" {
            // EasyRec's component form: `backbone { blocks ... }` wires
            // the model, `model_params` configures its heads. Reported once,
            // here, not again as a dropped `backbone`.
            if m.peek("backbone").is_some() {
                ctx.reported.push(m.field_path("backbone"));
            }
            (
                format!(
                    "EasyRec's backbone model (`model_class: {written_class:?}` with `backbone` \
                     blocks) has no TorchEasyRec counterpart"
                ),
                "TorchEasyRec builds only its own model classes and has no backbone \
                 component graph (its own converter leaves this model out too); rewrite it by \
                 hand as one of them (`ple`, `mmoe`, `dbmtl`, `pepnet`...)"
                    .to_string(),
            )
        } else if !tzrec_has_model(out, &kind) {
            (
                format!("TorchEasyRec has no `{kind}` model"),
                format!(
                    "no TorchEasyRec config can describe EasyRec's `{kind}` (its own converter \
                     leaves it out too); rewrite the model by hand as one of TorchEasyRec's \
                     (`ple`, `mmoe`, `dbmtl`, `pepnet`...)"
                ),
            )
        } else {
            (
                format!("model `{kind}` has no converter in plec convert yet"),
                "plec convert maps the multi-task models PLE, MMoE, DBMTL and SimpleMultiTask"
                    .to_string(),
            )
        };
        ctx.unsupported(&m.field_path(&kind), message, &help);
        return;
    };
    let written_class = m
        .peek("model_class")
        .and_then(|v| v.as_str().map(str::to_string));
    if written_class.as_deref() == Some(class) {
        m.consume("model_class");
    } else {
        ctx.unsupported(
            &m.field_path("model_class"),
            format!(
                "`model_class: {:?}` does not name the model of the `{kind}` block ({class})",
                written_class.unwrap_or_default()
            ),
            "EasyRec builds the model that `model_class` names; make it agree with the block",
        );
    }
    let Some(body) = m.child(&kind) else {
        return;
    };
    let Some(dst) = child(ctx, dst, &kind) else {
        return;
    };
    zero_is_unset(&body, "l2_regularization");
    let towers = Towers {
        labels: &labels,
        sample_weight: sample_weight.as_deref(),
    };
    match kind.as_str() {
        "ple" => {
            for n in body.children("extraction_networks") {
                let Some(d) = push_child(ctx, dst, "extraction_networks") else {
                    continue;
                };
                copy(
                    ctx,
                    &n,
                    d,
                    &["network_name", "expert_num_per_task", "share_num"],
                );
                mlp(ctx, &n, "task_expert_net", d, "task_expert_net");
                mlp(ctx, &n, "share_expert_net", d, "share_expert_net");
            }
            towers.task_towers(ctx, &body, dst, false);
        }
        "mmoe" => {
            if body.is_set("expert_dnn") {
                mlp(ctx, &body, "expert_dnn", dst, "expert_mlp");
                copy(ctx, &body, dst, &["num_expert"]);
            } else {
                experts(ctx, &body, dst);
            }
            towers.task_towers(ctx, &body, dst, false);
        }
        "dbmtl" => {
            mlp(ctx, &body, "bottom_dnn", dst, "bottom_mlp");
            mlp(ctx, &body, "expert_dnn", dst, "expert_mlp");
            copy(ctx, &body, dst, &["num_expert"]);
            towers.task_towers(ctx, &body, dst, true);
        }
        _ => towers.task_towers(ctx, &body, dst, false),
    }
}

/// EasyRec's deprecated `experts` list: TorchEasyRec's MMoE has one expert
/// MLP repeated `num_expert` times, so the experts must agree.
fn experts(ctx: &mut Ctx, body: &Src, dst: &mut DynamicMessage) {
    let list = body.children("experts");
    let Some(first) = list.first() else {
        return;
    };
    let units = |e: &Src| {
        e.child("dnn")
            .and_then(|d| d.peek("hidden_units").map(|v| v.into_owned()))
    };
    let same = list.iter().all(|e| units(e) == units(first));
    if !same {
        ctx.unsupported(
            &body.field_path("experts"),
            "experts of different shapes have no TorchEasyRec counterpart".to_string(),
            "TorchEasyRec's MMoE repeats one `expert_mlp`: give all experts the same dnn",
        );
        return;
    }
    for e in &list {
        e.consume("expert_name");
        mlp(ctx, e, "dnn", dst, "expert_mlp");
    }
    let n = u32::try_from(list.len()).unwrap_or(u32::MAX);
    set(ctx, dst, "num_expert", &Value::U32(n));
}

/// EasyRec's `sequence_features` (DIN target attention over `hist_seq`
/// with `key` as the query) as TorchEasyRec's sequence group and DIN
/// encoder, as TorchEasyRec's converter writes them.
fn sequence_groups(ctx: &mut Ctx, g: &Src, dst: &mut DynamicMessage) {
    for (i, s) in g.children("sequence_features").iter().enumerate() {
        let name = s.str("group_name").unwrap_or_else(|| format!("seq_{i}"));
        // Summaries only.
        s.consume("tf_summary");
        let Some(sg) = push_child(ctx, dst, "sequence_groups") else {
            continue;
        };
        set(ctx, sg, "group_name", &Value::String(name.clone()));
        for map in s.children("seq_att_map") {
            for field in ["key", "hist_seq", "aux_hist_seq"] {
                let names = map.strs(field);
                if !names.is_empty() {
                    set(
                        ctx,
                        sg,
                        "feature_names",
                        &Value::List(names.into_iter().map(Value::String).collect()),
                    );
                }
            }
        }
        let Some(enc) = push_child(ctx, dst, "sequence_encoders") else {
            continue;
        };
        let Some(din) = child(ctx, enc, "din_encoder") else {
            continue;
        };
        set(ctx, din, "input", &Value::String(name));
        if s.is_set("seq_dnn") {
            mlp(ctx, s, "seq_dnn", din, "attn_mlp");
        } else if let Some(m) = child(ctx, din, "attn_mlp") {
            // EasyRec's attention MLP when `seq_dnn` is not written.
            let units = [128u32, 64, 32, 1].map(Value::U32).to_vec();
            set(ctx, m, "hidden_units", &Value::List(units));
            set(ctx, m, "use_bn", &Value::Bool(true));
        }
    }
}

fn group(ctx: &mut Ctx, g: &Src, dst: &mut DynamicMessage) {
    let Some(d) = push_child(ctx, dst, "feature_groups") else {
        return;
    };
    copy(ctx, g, d, &["group_name", "feature_names"]);
    match g.enum_name("wide_deep", true).as_deref() {
        Some("WIDE") => set_enum(ctx, d, "group_type", "WIDE"),
        Some("DEEP") | None => set_enum(ctx, d, "group_type", "DEEP"),
        Some(other) => ctx.unsupported(
            &g.field_path("wide_deep"),
            format!("`wide_deep: {other}` has no TorchEasyRec counterpart"),
            "TorchEasyRec groups are DEEP or WIDE: split the group in two",
        ),
    }
    sequence_groups(ctx, g, d);
}

/// EasyRec's `DNN` as TorchEasyRec's `MLP`: units and dropout as written,
/// batch norm as EasyRec has it by default (on), the activation renamed.
fn mlp(ctx: &mut Ctx, parent: &Src, from: &str, dst: &mut DynamicMessage, to: &str) {
    let Some(dnn) = parent.child(from) else {
        return;
    };
    let Some(m) = child(ctx, dst, to) else {
        return;
    };
    copy(ctx, &dnn, m, &["hidden_units", "dropout_ratio"]);
    let bn = dnn.value_or_default("use_bn").unwrap_or(Value::Bool(true));
    set(ctx, m, "use_bn", &bn);
    let activation = dnn.str_or_default("activation");
    let plain = activation.to_ascii_lowercase();
    let plain = plain.strip_prefix("tf.nn.").unwrap_or(&plain);
    let mapped = match plain {
        "relu" => None,
        "sigmoid" => Some("nn.Sigmoid"),
        "tanh" => Some("nn.Tanh"),
        "leaky_relu" => Some("nn.LeakyReLU"),
        "elu" => Some("nn.ELU"),
        "selu" => Some("nn.SELU"),
        "gelu" => Some("nn.GELU"),
        "dice" => Some("Dice"),
        _ => {
            ctx.unsupported(
                &dnn.field_path("activation"),
                format!(
                    "activation `{activation}` has no TorchEasyRec counterpart in plec convert"
                ),
                "plec convert maps relu, sigmoid, tanh, leaky_relu, elu, selu, gelu and dice",
            );
            None
        }
    };
    if let Some(a) = mapped {
        set(ctx, m, "activation", &Value::String(a.to_string()));
    }
}

struct Towers<'l> {
    /// `data_config.label_fields`: tower i without a `label_name` trains on
    /// the i-th, as EasyRec's multi-task models do.
    labels: &'l [String],
    /// `data_config.sample_weight`, which towers with `use_sample_weight`
    /// (EasyRec's default) are weighted by.
    sample_weight: Option<&'l str>,
}

impl Towers<'_> {
    fn task_towers(&self, ctx: &mut Ctx, body: &Src, dst: &mut DynamicMessage, bayes: bool) {
        for (i, t) in body.children("task_towers").iter().enumerate() {
            let Some(d) = push_child(ctx, dst, "task_towers") else {
                continue;
            };
            copy(
                ctx,
                t,
                d,
                &[
                    "tower_name",
                    "label_name",
                    "num_class",
                    "task_space_indicator_label",
                    "in_task_space_weight",
                    "out_task_space_weight",
                ],
            );
            // A weight of 1 is TorchEasyRec's default: not written.
            match t.peek("weight").and_then(|v| v.as_f32()) {
                Some(1.0) => t.consume("weight"),
                Some(_) => copy(ctx, t, d, &["weight"]),
                None => {}
            }
            if !t.is_set("label_name") {
                if let Some(label) = self.labels.get(i) {
                    set(ctx, d, "label_name", &Value::String(label.clone()));
                }
            }
            mlp(ctx, t, "dnn", d, "mlp");
            if bayes {
                copy(ctx, t, d, &["relation_tower_names"]);
                mlp(ctx, t, "relation_dnn", d, "relation_mlp");
            }
            losses(ctx, t, d);
            for metric in t.children("metrics_set") {
                self::metric(ctx, &metric, d);
            }
            let weighted = t
                .value_or_default("use_sample_weight")
                .and_then(|v| v.as_bool());
            if let (Some(true), Some(w)) = (weighted, self.sample_weight) {
                set(ctx, d, "sample_weight_name", &Value::String(w.to_string()));
            }
        }
    }
}

/// `losses`, or the tower's `loss_type` (CLASSIFICATION by default).
fn losses(ctx: &mut Ctx, t: &Src, dst: &mut DynamicMessage) {
    let classes = t.peek("num_class").and_then(|v| v.as_u32()).unwrap_or(1);
    let written = t.children("losses");
    if written.is_empty() {
        let ty = t.enum_name("loss_type", true).unwrap_or_default();
        loss(ctx, &ty, classes, &t.field_path("loss_type"), dst);
        return;
    }
    t.consume("loss_type");
    for l in &written {
        let ty = l.enum_name("loss_type", true).unwrap_or_default();
        // A weight of 1 is no weight; TorchEasyRec's losses have none.
        if l.peek("weight").and_then(|v| v.as_f32()) == Some(1.0) {
            l.consume("weight");
        }
        loss(ctx, &ty, classes, l.path(), dst);
        if ty == "JRC_LOSS" {
            jrc(ctx, l, dst);
        }
    }
}

/// The JRC loss's session and alpha, on the loss just written.
fn jrc(ctx: &mut Ctx, l: &Src, dst: &mut DynamicMessage) {
    let Some(src) = l.child("jrc_loss") else {
        return;
    };
    // EasyRec's defaults are what TorchEasyRec's JRC loss does.
    if src.peek("same_label_loss").and_then(|v| v.as_bool()) == Some(true) {
        src.consume("same_label_loss");
    }
    if src
        .peek("loss_weight_strategy")
        .and_then(|v| v.as_str().map(|s| s == "fixed"))
        == Some(true)
    {
        src.consume("loss_weight_strategy");
    }
    let Some(Value::List(list)) = dst
        .descriptor()
        .get_field_by_name("losses")
        .map(|fd| dst.get_field_mut(&fd))
    else {
        return;
    };
    if let Some(Value::Message(last)) = list.last_mut() {
        if let Some(j) = child(ctx, last, "jrc_loss") {
            copy(ctx, &src, j, &["session_name", "alpha"]);
        }
    }
}

fn loss(ctx: &mut Ctx, ty: &str, classes: u32, path: &str, dst: &mut DynamicMessage) {
    let kind = match ty {
        "CLASSIFICATION" if classes > 1 => "softmax_cross_entropy",
        "CLASSIFICATION" | "BINARY_CROSS_ENTROPY_LOSS" => "binary_cross_entropy",
        "L2_LOSS" => "l2_loss",
        "SOFTMAX_CROSS_ENTROPY" => "softmax_cross_entropy",
        "JRC_LOSS" => "jrc_loss",
        other => {
            ctx.unsupported(
                path,
                format!("loss `{other}` has no TorchEasyRec counterpart in plec convert"),
                "plec convert maps CLASSIFICATION, BINARY_CROSS_ENTROPY_LOSS, L2_LOSS, \
                 SOFTMAX_CROSS_ENTROPY and JRC_LOSS",
            );
            return;
        }
    };
    if let Some(l) = push_child(ctx, dst, "losses") {
        child(ctx, l, kind);
    }
}

fn metric(ctx: &mut Ctx, m: &Src, dst: &mut DynamicMessage) {
    let Some(kind) = m.oneof("metric") else {
        return;
    };
    let target = match kind.as_str() {
        "auc" | "mean_absolute_error" | "mean_squared_error" | "accuracy" => kind.clone(),
        "gauc" => "grouped_auc".to_string(),
        "recall_at_topk" => "recall_at_k".to_string(),
        other => {
            ctx.unsupported(
                &m.field_path(other),
                format!("metric `{other}` has no TorchEasyRec counterpart in plec convert"),
                "plec convert maps auc, gauc, recall_at_topk, mean_absolute_error, \
                 mean_squared_error and accuracy",
            );
            return;
        }
    };
    let Some(body) = m.child(&kind) else {
        return;
    };
    let Some(config) = push_child(ctx, dst, "metrics") else {
        return;
    };
    let Some(d) = child(ctx, config, &target) else {
        return;
    };
    match kind.as_str() {
        "gauc" => {
            super::dest::copy_as(ctx, &body, "uid_field", d, "grouping_key");
            // TorchEasyRec's grouped AUC is the mean over groups.
            if body
                .peek("reduction")
                .and_then(|v| v.as_str().map(|s| s == "mean"))
                == Some(true)
            {
                body.consume("reduction");
            }
        }
        "recall_at_topk" => super::dest::copy_as(ctx, &body, "topk", d, "top_k"),
        _ => {}
    }
}

/// A regularization written as 0 is none: read, nothing to carry over.
fn zero_is_unset(src: &Src, name: &str) {
    if src.peek(name).and_then(|v| v.as_f32()) == Some(0.0) {
        src.consume(name);
    }
}
