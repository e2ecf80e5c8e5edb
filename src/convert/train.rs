//! The pipeline's top-level paths, `train_config` (optimizer and learning
//! rate schedule), `eval_config` and `data_config`.

use prost_reflect::{DynamicMessage, Value};

use super::dest::{child, copy, copy_as, set, set_enum};
use super::source::Src;
use super::Ctx;

/// `train_input_path`, `eval_input_path`, `model_dir`.
pub(crate) fn paths(ctx: &mut Ctx, src: &Src, out: &mut DynamicMessage) {
    copy(
        ctx,
        src,
        out,
        &["train_input_path", "eval_input_path", "model_dir"],
    );
}

/// EasyRec's optimizer becomes TorchEasyRec's sparse (embedding) and
/// dense optimizers, with the same learning rate schedule; of two
/// `optimizer_config`s EasyRec gives the first to the embeddings and the
/// second to the other layers, as TorchEasyRec's two sides do.
pub(crate) fn train_config(ctx: &mut Ctx, src: &Src, out: &mut DynamicMessage) {
    let train = src.child("train_config");
    let Some(dst) = child(ctx, out, "train_config") else {
        return;
    };
    let written = train
        .as_ref()
        .map(|t| t.children("optimizer_config"))
        .unwrap_or_default();
    match written.as_slice() {
        [] => default_optimizers(ctx, dst),
        [one] => optimizers(ctx, one, dst, &["sparse_optimizer", "dense_optimizer"]),
        [sparse, dense] => {
            optimizers(ctx, sparse, dst, &["sparse_optimizer"]);
            optimizers(ctx, dense, dst, &["dense_optimizer"]);
        }
        [first, rest @ ..] => {
            if let Some(third) = rest.get(1) {
                ctx.unsupported(
                    third.path(),
                    "more than two `optimizer_config`s have no TorchEasyRec counterpart"
                        .to_string(),
                    "TorchEasyRec has one optimizer for embeddings and one for the other \
                     layers; the first is used for both",
                );
            }
            optimizers(ctx, first, dst, &["sparse_optimizer", "dense_optimizer"]);
        }
    }
    if let Some(t) = &train {
        copy(
            ctx,
            t,
            dst,
            &[
                "num_steps",
                "save_checkpoints_steps",
                "log_step_count_steps",
            ],
        );
    }
    // EasyRec counts epochs in data_config; 0 (its default) runs forever.
    let epochs = src
        .child("data_config")
        .and_then(|d| d.value("num_epochs"))
        .and_then(|v| v.as_u32())
        .filter(|n| *n > 0);
    if let Some(n) = epochs {
        set(ctx, dst, "num_epochs", &Value::U32(n));
    }
    let has_steps = train.as_ref().is_some_and(|t| t.is_set("num_steps"));
    if epochs.is_none() && !has_steps {
        set(ctx, dst, "num_epochs", &Value::U32(1));
    }
}

/// Adam with lr 0.001 and a constant rate for both, as TorchEasyRec's own
/// converter writes when EasyRec's config has no optimizer.
fn default_optimizers(ctx: &mut Ctx, dst: &mut DynamicMessage) {
    default_sides(ctx, dst, &["sparse_optimizer", "dense_optimizer"]);
}

fn default_sides(ctx: &mut Ctx, dst: &mut DynamicMessage, sides: &[&str]) {
    for side in sides {
        if let Some(o) = child(ctx, dst, side) {
            if let Some(adam) = child(ctx, o, "adam_optimizer") {
                set(ctx, adam, "lr", &Value::F32(0.001));
            }
            child(ctx, o, "constant_learning_rate");
        }
    }
}

fn optimizers(ctx: &mut Ctx, opt: &Src, dst: &mut DynamicMessage, sides: &[&str]) {
    // Settings that make no difference when off.
    if opt.peek("use_moving_average").and_then(|v| v.as_bool()) == Some(false) {
        opt.consume("use_moving_average");
    }
    let Some(kind) = opt.oneof("optimizer") else {
        default_sides(ctx, dst, sides);
        return;
    };
    // EasyRec optimizer -> (sparse, dense) TorchEasyRec optimizers, and the
    // fields copied by name (EasyRec name, TorchEasyRec name).
    let (sparse, dense, fields): (&str, &str, &[(&str, &str)]) = match kind.as_str() {
        "adam_optimizer" => (
            "adam_optimizer",
            "adam_optimizer",
            &[("beta1", "beta1"), ("beta2", "beta2")],
        ),
        "adagrad_optimizer" => (
            "adagrad_optimizer",
            "adagrad_optimizer",
            &[("initial_accumulator_value", "initial_accumulator_value")],
        ),
        "momentum_optimizer" => (
            "sgd_optimizer",
            "sgd_optimizer",
            &[("momentum_optimizer_value", "momentum")],
        ),
        other => {
            ctx.unsupported(
                &opt.field_path(other),
                format!("`{other}` has no TorchEasyRec counterpart in plec convert"),
                "plec convert maps adam_optimizer, adagrad_optimizer and momentum_optimizer; \
                 the output gets Adam with lr 0.001: set the optimizer you want in its \
                 train_config",
            );
            default_sides(ctx, dst, sides);
            return;
        }
    };
    let Some(o) = opt.child(&kind) else {
        return;
    };
    let rate = o.child("learning_rate");
    let schedule = rate.as_ref().and_then(|r| r.oneof("learning_rate"));
    for side in sides {
        let name = if *side == "sparse_optimizer" {
            sparse
        } else {
            dense
        };
        let Some(side_msg) = child(ctx, dst, side) else {
            continue;
        };
        if let Some(m) = child(ctx, side_msg, name) {
            for (from, to) in fields {
                copy_as(ctx, &o, from, m, to);
            }
        }
        learning_rate(
            ctx,
            rate.as_ref(),
            schedule.as_deref(),
            side_msg,
            name,
            side == &sides[0],
        );
    }
}

/// EasyRec's `learning_rate` block: the initial rate goes to the
/// optimizer's `lr`, the schedule to the optimizer's schedule.
fn learning_rate(
    ctx: &mut Ctx,
    rate: Option<&Src>,
    schedule: Option<&str>,
    side: &mut DynamicMessage,
    optimizer: &str,
    first: bool,
) {
    let lr_of = |s: &Src, name: &str| s.value_or_default(name).unwrap_or(Value::F32(0.002));
    match (rate, schedule) {
        (Some(r), Some("constant_learning_rate")) => {
            let Some(c) = r.child("constant_learning_rate") else {
                return;
            };
            let lr = lr_of(&c, "learning_rate");
            if let Some(o) = child(ctx, side, optimizer) {
                set(ctx, o, "lr", &lr);
            }
            child(ctx, side, "constant_learning_rate");
        }
        (Some(r), Some("exponential_decay_learning_rate")) => {
            let Some(e) = r.child("exponential_decay_learning_rate") else {
                return;
            };
            let lr = lr_of(&e, "initial_learning_rate");
            if let Some(o) = child(ctx, side, optimizer) {
                set(ctx, o, "lr", &lr);
            }
            if let Some(d) = child(ctx, side, "exponential_decay_learning_rate") {
                // EasyRec's defaults differ from TorchEasyRec's: write them.
                let steps = e
                    .value_or_default("decay_steps")
                    .unwrap_or(Value::U32(4_000_000));
                set(ctx, d, "decay_size", &steps);
                let factor = e
                    .value_or_default("decay_factor")
                    .unwrap_or(Value::F32(0.95));
                set(ctx, d, "decay_factor", &factor);
                copy(ctx, &e, d, &["staircase", "min_learning_rate"]);
                copy_as(ctx, &e, "burnin_learning_rate", d, "warmup_learning_rate");
                copy_as(ctx, &e, "burnin_steps", d, "warmup_size");
            }
        }
        (Some(r), Some(other)) => {
            // Reported once, for the first side written.
            if first {
                ctx.unsupported(
                    &r.field_path(other),
                    format!("`{other}` has no TorchEasyRec counterpart in plec convert"),
                    "plec convert maps constant_learning_rate and \
                     exponential_decay_learning_rate; the output keeps a constant rate",
                );
            }
            child(ctx, side, "constant_learning_rate");
        }
        _ => {
            // No schedule written: TorchEasyRec's default `lr`, constant.
            child(ctx, side, "constant_learning_rate");
        }
    }
}

/// `eval_config {}`: EasyRec's global metrics become the towers' metrics
/// in TorchEasyRec, so nothing of it carries over here.
pub(crate) fn eval_config(ctx: &mut Ctx, out: &mut DynamicMessage) {
    child(ctx, out, "eval_config");
}

/// Batch size, labels, the dataset kind, CSV columns and sample weights.
pub(crate) fn data_config(ctx: &mut Ctx, src: &Src, out: &mut DynamicMessage) {
    let Some(dst) = child(ctx, out, "data_config") else {
        return;
    };
    let Some(data) = src.child("data_config") else {
        set_enum(ctx, dst, "dataset_type", "OdpsDataset");
        return;
    };
    // EasyRec's default batch is 32, TorchEasyRec's 1024: always written.
    let batch = data
        .value_or_default("batch_size")
        .unwrap_or(Value::U32(32));
    set(ctx, dst, "batch_size", &batch);
    let input_type = data.enum_name("input_type", false).unwrap_or_default();
    let dataset = if input_type.starts_with("CSVInput") {
        Some("CsvDataset")
    } else if input_type.starts_with("Parquet") {
        Some("ParquetDataset")
    } else if input_type.starts_with("Odps") {
        Some("OdpsDataset")
    } else {
        None
    };
    match dataset {
        Some(d) => {
            data.consume("input_type");
            set_enum(ctx, dst, "dataset_type", d);
        }
        // As TorchEasyRec's converter does; `input_type` is reported as
        // dropped (a warning: the data source is set up anew anyway).
        None => set_enum(ctx, dst, "dataset_type", "OdpsDataset"),
    }
    copy(ctx, &data, dst, &["label_fields"]);
    if dataset == Some("CsvDataset") {
        csv_fields(ctx, &data, dst);
        copy_as(ctx, &data, "separator", dst, "delimiter");
        copy(ctx, &data, dst, &["with_header"]);
    }
    copy(ctx, &data, dst, &["eval_batch_size", "drop_remainder"]);
    if let Some(w) = data.str("sample_weight") {
        set(ctx, dst, "sample_weight_fields", &Value::String(w));
    }
    set(ctx, dst, "num_workers", &Value::U32(8));
}

/// CSV columns: names and types (TorchEasyRec has no per-column default).
fn csv_fields(ctx: &mut Ctx, data: &Src, dst: &mut DynamicMessage) {
    for f in data.children("input_fields") {
        let Some(field) = super::dest::push_child(ctx, dst, "input_fields") else {
            continue;
        };
        copy(ctx, &f, field, &["input_name"]);
        let ty = f.enum_name("input_type", true).unwrap_or_default();
        let mapped = match ty.as_str() {
            "INT32" | "INT64" | "STRING" | "FLOAT" | "DOUBLE" => Some(ty.as_str()),
            _ => None,
        };
        match mapped {
            Some(t) => set_enum(ctx, field, "input_type", t),
            None => ctx.unsupported(
                &f.field_path("input_type"),
                format!("input type `{ty}` has no TorchEasyRec counterpart"),
                "TorchEasyRec's CSV columns are INT32, INT64, STRING, FLOAT or DOUBLE",
            ),
        }
    }
}
