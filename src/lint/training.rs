//! Training and data settings: how long training runs, learning rates of
//! every optimizer, batch sizes.

use super::context::Ctx;
use super::{LabelAt, Rule};
use crate::diag::{Diagnostic, Severity};
use crate::proto::tzrec::protos::{
    dense_optimizer, part_optimizer, sparse_optimizer, ManualStepLr,
};

pub(super) const RULES: &[Rule] = &[
    Rule {
        code: "plec::train-length",
        severity: Severity::Error,
        summary: "train_config sets neither num_epochs nor num_steps (or both to one value)",
        explain: "\
Training runs for `num_epochs` passes over the data or for `num_steps` batches:
exactly one must be set. Neither has a default: TorchEasyRec stops before the
first step (\"train_config.num_epochs or train_config.num_steps should be
set\"). Its check is an exclusive or of the two numbers, so setting both to
the same value is refused too.

Example:
    train_config { sparse_optimizer { ... } dense_optimizer { ... } }

Fix: add `num_epochs: 1` (or `num_steps: 10000`).",
        check: train_length,
    },
    Rule {
        code: "plec::both-train-lengths",
        severity: Severity::Warning,
        summary: "train_config sets both num_epochs and num_steps",
        explain: "\
With both `num_epochs` and `num_steps`, training stops at whichever limit is
reached first, so one of the two settings is silently meaningless.

Example:
    train_config { num_epochs: 2 num_steps: 100000 ... }

Fix: keep the one you mean.",
        check: both_train_lengths,
    },
    Rule {
        code: "plec::learning-rate",
        severity: Severity::Error,
        summary: "an optimizer's learning rate is zero or negative",
        explain: "\
Every optimizer (sparse, dense and per-part) has an `lr`, and a manual step
schedule lists `learning_rates`. A rate of zero never changes the weights; a
negative one climbs the loss instead of descending it.

Example:
    dense_optimizer { adam_optimizer { lr: 0 } constant_learning_rate {} }

Fix: use a positive rate, e.g. `lr: 0.001` for adam.",
        check: learning_rate,
    },
    Rule {
        code: "plec::batch-size",
        severity: Severity::Error,
        summary: "data_config.batch_size or eval_batch_size is 0",
        explain: "\
`batch_size` (default 1024) is the number of samples per training step and
`eval_batch_size` the number per evaluation step; a batch of zero samples
cannot be read or trained on.

Example:
    data_config { batch_size: 0 ... }

Fix: use a positive size, e.g. `batch_size: 1024`, or leave it out.",
        check: batch_size,
    },
];

fn train_length(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let Some(tc) = &cx.config.train_config else {
        return;
    };
    let epochs = tc.num_epochs();
    let steps = tc.num_steps();
    if epochs == 0 && steps == 0 {
        let span = if cx.written("train_config.num_epochs") {
            cx.value("train_config.num_epochs")
        } else if cx.written("train_config.num_steps") {
            cx.value("train_config.num_steps")
        } else {
            cx.name("train_config")
        };
        out.push(
            rule.diag("train_config sets neither num_epochs nor num_steps")
                .primary_at(span, "training length is not set")
                .with_help("TorchEasyRec refuses to start without one; add `num_epochs: 1` or `num_steps: N`"),
        );
    } else if epochs == steps {
        out.push(
            rule.diag(format!("num_epochs and num_steps are both {epochs}"))
                .primary_at(cx.value("train_config.num_steps"), format!("{steps} steps"))
                .secondary_at(cx.value("train_config.num_epochs"), format!("{epochs} epochs"))
                .with_help("TorchEasyRec refuses equal values (it checks num_steps xor num_epochs); keep exactly one of them"),
        );
    }
}

fn both_train_lengths(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let Some(tc) = &cx.config.train_config else {
        return;
    };
    let epochs = tc.num_epochs();
    let steps = tc.num_steps();
    if epochs == 0 || steps == 0 || epochs == steps {
        return;
    }
    out.push(
        rule.diag("train_config sets both num_epochs and num_steps")
            .primary_at(
                cx.value("train_config.num_steps"),
                format!("stops after {steps} steps"),
            )
            .secondary_at(
                cx.value("train_config.num_epochs"),
                format!("or after {epochs} epochs"),
            )
            .with_help("training stops at whichever limit is reached first; keep the one you mean"),
    );
}

fn sparse_lr(o: &sparse_optimizer::Optimizer) -> (&'static str, f32) {
    use sparse_optimizer::Optimizer as O;
    match o {
        O::SgdOptimizer(x) => ("sgd_optimizer", x.lr),
        O::AdagradOptimizer(x) => ("adagrad_optimizer", x.lr),
        O::AdamOptimizer(x) => ("adam_optimizer", x.lr),
        O::LarsSgdOptimizer(x) => ("lars_sgd_optimizer", x.lr),
        O::LambOptimizer(x) => ("lamb_optimizer", x.lr),
        O::PartialRowwiseLambOptimizer(x) => ("partial_rowwise_lamb_optimizer", x.lr),
        O::PartialRowwiseAdamOptimizer(x) => ("partial_rowwise_adam_optimizer", x.lr),
        O::RowwiseAdagradOptimizer(x) => ("rowwise_adagrad_optimizer", x.lr),
        O::AdadeltaOptimizer(x) => ("adadelta_optimizer", x.lr),
        O::RmspropOptimizer(x) => ("rmsprop_optimizer", x.lr),
    }
}

/// Dense and part optimizers share their variants (different generated enums).
macro_rules! dense_like_lr {
    ($o:expr, $m:ident) => {{
        use $m::Optimizer as O;
        match $o {
            O::SgdOptimizer(x) => ("sgd_optimizer", x.lr),
            O::AdagradOptimizer(x) => ("adagrad_optimizer", x.lr),
            O::AdamOptimizer(x) => ("adam_optimizer", x.lr),
            O::AdamwOptimizer(x) => ("adamw_optimizer", x.lr),
            O::AdadeltaOptimizer(x) => ("adadelta_optimizer", x.lr),
            O::RmspropOptimizer(x) => ("rmsprop_optimizer", x.lr),
        }
    }};
}

fn dense_lr(o: &dense_optimizer::Optimizer) -> (&'static str, f32) {
    dense_like_lr!(o, dense_optimizer)
}

fn part_lr(o: &part_optimizer::Optimizer) -> (&'static str, f32) {
    dense_like_lr!(o, part_optimizer)
}

fn manual_steps(path: String, m: Option<&ManualStepLr>, out: &mut Vec<(String, f32)>) {
    let Some(m) = m else { return };
    for (i, lr) in m.learning_rates.iter().enumerate() {
        out.push((
            format!("{path}.manual_step_learning_rate.learning_rates[{i}]"),
            *lr,
        ));
    }
}

fn learning_rate(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let Some(tc) = &cx.config.train_config else {
        return;
    };
    // (path of the rate, value)
    let mut rates: Vec<(String, f32)> = Vec::new();
    let sp = "train_config.sparse_optimizer";
    if let Some(o) = &tc.sparse_optimizer.optimizer {
        let (kind, lr) = sparse_lr(o);
        rates.push((format!("{sp}.{kind}.lr"), lr));
    }
    let manual = match &tc.sparse_optimizer.learning_rate {
        Some(sparse_optimizer::LearningRate::ManualStepLearningRate(m)) => Some(m),
        _ => None,
    };
    manual_steps(sp.to_string(), manual, &mut rates);
    let dp = "train_config.dense_optimizer";
    if let Some(o) = &tc.dense_optimizer.optimizer {
        let (kind, lr) = dense_lr(o);
        rates.push((format!("{dp}.{kind}.lr"), lr));
    }
    let manual = match &tc.dense_optimizer.learning_rate {
        Some(dense_optimizer::LearningRate::ManualStepLearningRate(m)) => Some(m),
        _ => None,
    };
    manual_steps(dp.to_string(), manual, &mut rates);
    for (i, part) in tc.dense_optimizer.part_optimizers.iter().enumerate() {
        let pp = format!("{dp}.part_optimizers[{i}]");
        if let Some(o) = &part.optimizer {
            let (kind, lr) = part_lr(o);
            rates.push((format!("{pp}.{kind}.lr"), lr));
        }
        let manual = match &part.learning_rate {
            Some(part_optimizer::LearningRate::ManualStepLearningRate(m)) => Some(m),
            _ => None,
        };
        manual_steps(pp, manual, &mut rates);
    }
    for (path, lr) in rates {
        if lr > 0.0 {
            continue;
        }
        let what = if lr == 0.0 {
            "the weights never change"
        } else {
            "the loss is climbed instead of descended"
        };
        out.push(
            rule.diag(format!("learning rate {lr} is not positive"))
                .primary_at(cx.best(&path), "must be above 0")
                .with_help(format!(
                    "with this rate {what}; typical rates are 0.001 for adam and 0.01 to 0.1 for adagrad on embeddings"
                )),
        );
    }
}

fn batch_size(rule: &Rule, cx: &Ctx, out: &mut Vec<Diagnostic>) {
    let Some(data) = cx.data else { return };
    for (name, value) in [
        ("batch_size", data.batch_size),
        ("eval_batch_size", data.eval_batch_size),
    ] {
        if value != Some(0) {
            continue;
        }
        let help = if name == "batch_size" {
            "use a positive size such as 1024 (the default), or leave `batch_size` out"
        } else {
            "use a positive size, or leave `eval_batch_size` out to evaluate with `batch_size`"
        };
        out.push(
            rule.diag(format!("{name} is 0"))
                .primary_at(
                    cx.value(&format!("data_config.{name}")),
                    "a batch needs at least one sample",
                )
                .with_help(help),
        );
    }
}
