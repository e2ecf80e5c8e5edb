//! `plec inspect`: the summary of a config (layers, experts, gates, towers,
//! parameters, FLOPs) or the contents of a plan file.

use std::path::PathBuf;

use serde_json::{json, Value as Json};

use crate::ir::{self, Summary};
use crate::proto::plan::{self as p, Plan};

use super::compile::{human_count, print_out, read, report};
use super::{Outcome, RunError};
use crate::pipeline::{lower, BuildOptions, Lowered};
use crate::plan::memory::Estimate;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// A config file or a plan file written by `plec compile`.
    pub file: PathBuf,
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,
    /// Also list every op (plans only).
    #[arg(long)]
    pub ops: bool,
}

/// The summary table of a config.
pub(crate) fn summary_table(s: &Summary) -> String {
    let rows: Vec<(&str, String)> = vec![
        ("model", s.model_kind.clone()),
        ("features", s.features.to_string()),
        ("input width", s.input_width.to_string()),
        ("extraction layers", s.layers.to_string()),
        ("experts", s.experts.to_string()),
        ("gates", s.gates.to_string()),
        ("towers", s.towers.to_string()),
        ("ops", s.ops.to_string()),
        (
            "dense params",
            format!("{} ({})", s.dense_params, human_count(s.dense_params)),
        ),
        ("embedding tables", s.embedding_tables.to_string()),
        (
            "embedding params",
            format!(
                "{} ({})",
                s.embedding_params,
                human_count(s.embedding_params)
            ),
        ),
        (
            "forward FLOPs/sample",
            format!(
                "{} ({})",
                s.forward_flops_per_sample,
                human_count(s.forward_flops_per_sample)
            ),
        ),
    ];
    rows.iter().map(|(k, v)| format!("{k:<22} {v}\n")).collect()
}

fn enum_name<E: TryFrom<i32>>(v: i32, f: impl Fn(E) -> &'static str) -> String {
    E::try_from(v)
        .map(f)
        .map(str::to_string)
        .unwrap_or_else(|_| v.to_string())
}

fn optimizer_json(o: &Option<p::Optimizer>) -> Json {
    match o {
        None => Json::Null,
        Some(o) => {
            let s = o.schedule.clone().unwrap_or_default();
            json!({
                "kind": enum_name(o.kind, |k: p::OptimizerKind| k.as_str_name()),
                "lr": o.lr, "momentum": o.momentum, "beta1": o.beta1, "beta2": o.beta2,
                "eps": o.eps, "weight_decay": o.weight_decay,
                "initial_accumulator_value": o.initial_accumulator_value,
                "schedule": {
                    "kind": enum_name(s.kind, |k: p::ScheduleKind| k.as_str_name()),
                    "decay_steps": s.decay_steps, "decay_rate": s.decay_rate, "min_lr": s.min_lr,
                    "staircase": s.staircase, "schedule_steps": s.schedule_steps,
                    "learning_rates": s.learning_rates, "t_max": s.t_max, "eta_min": s.eta_min,
                    "warmup_steps": s.warmup_steps, "by_epoch": s.by_epoch,
                }
            })
        }
    }
}

/// A plan as JSON (parameter data summarized, not dumped).
pub(crate) fn plan_json(plan: &Plan, with_ops: bool) -> Json {
    let features: Vec<Json> = plan
        .features
        .iter()
        .map(|f| {
            json!({
                "name": f.name,
                "kind": enum_name(f.kind, |k: p::FeatureKind| k.as_str_name()),
                "input_columns": f.input_columns,
                "num_ids": f.num_ids,
                "embedding_dim": f.embedding_dim,
                "value_dim": f.value_dim,
                "table": f.table,
                "vocab": f.vocab.len(),
                "boundaries": f.boundaries,
                "pooling": enum_name(f.pooling, |k: p::Pooling| k.as_str_name()),
                "normalizer": f.normalizer.as_ref().map(|n| json!({
                    "kind": enum_name(n.kind, |k: p::NormalizerKind| k.as_str_name()),
                    "a": n.a, "b": n.b,
                })),
            })
        })
        .collect();
    let tables: Vec<Json> = plan
        .tables
        .iter()
        .map(|t| {
            json!({
                "name": t.name, "num_rows": t.num_rows, "dim": t.dim,
                "init": enum_name(t.init, |k: p::InitKind| k.as_str_name()),
                "init_scale": t.init_scale, "init_seed": t.init_seed,
                "trained": !t.data.is_empty(),
            })
        })
        .collect();
    let tasks: Vec<Json> = plan
        .tasks
        .iter()
        .map(|t| {
            json!({
                "tower_name": t.tower_name, "label_name": t.label_name, "num_class": t.num_class,
                "logits": plan.values.get(t.logits as usize).map(|v| v.name.clone()),
                "losses": t.losses.iter().map(|l| enum_name(l.kind, |k: p::LossKind| k.as_str_name())).collect::<Vec<_>>(),
                "metrics": t.metrics.iter().map(|m| json!({
                    "kind": enum_name(m.kind, |k: p::MetricKind| k.as_str_name()),
                    "thresholds": m.thresholds, "grouping_key": m.grouping_key,
                })).collect::<Vec<_>>(),
                "weight": t.weight, "sample_weight_name": t.sample_weight_name,
                "task_space_indicator_label": t.task_space_indicator_label,
                "in_task_space_weight": t.in_task_space_weight,
                "out_task_space_weight": t.out_task_space_weight,
            })
        })
        .collect();
    let mut op_kinds = std::collections::BTreeMap::<String, usize>::new();
    for op in &plan.ops {
        *op_kinds
            .entry(enum_name(op.kind, |k: p::OpKind| k.as_str_name()))
            .or_default() += 1;
    }
    let trainable: u64 = plan
        .params
        .iter()
        .filter(|q| q.trainable)
        .map(|q| q.shape.iter().product::<u64>())
        .sum();
    let train = plan.train.clone().unwrap_or_default();
    let data = plan.data.clone().unwrap_or_default();
    let mut j = json!({
        "format_version": plan.format_version,
        "source_config_sha256": plan.source_config_sha256,
        "source_path": plan.source_path,
        "seed": plan.seed,
        "model_kind": plan.model_kind,
        "trained_steps": plan.trained_steps,
        "data": {
            "batch_size": data.batch_size, "eval_batch_size": data.eval_batch_size,
            "label_fields": data.label_fields, "sample_weight_fields": data.sample_weight_fields,
            "fg_none": data.fg_none, "shuffle": data.shuffle, "drop_remainder": data.drop_remainder,
        },
        "features": features,
        "tables": tables,
        "ops": plan.ops.len(),
        "op_kinds": op_kinds,
        "params": plan.params.len(),
        "trainable_params": trainable,
        "forward_flops_per_sample": plan.forward_flops_per_sample,
        "tasks": tasks,
        "train": {
            "sparse_optimizer": optimizer_json(&train.sparse_optimizer),
            "dense_optimizer": optimizer_json(&train.dense_optimizer),
            "num_epochs": train.num_epochs, "num_steps": train.num_steps,
            "save_checkpoints_steps": train.save_checkpoints_steps,
            "log_step_count_steps": train.log_step_count_steps,
        },
    });
    if with_ops {
        j["op_list"] = plan
            .ops
            .iter()
            .map(|op| {
                json!({
                    "name": op.name,
                    "kind": enum_name(op.kind, |k: p::OpKind| k.as_str_name()),
                    "inputs": op.inputs.iter().filter_map(|&i| plan.values.get(i as usize).map(|v| v.name.clone())).collect::<Vec<_>>(),
                    "shape": plan.values.get(op.output as usize).map(|v| v.shape.clone()),
                })
            })
            .collect();
    }
    j
}

/// The human view of a plan.
pub(crate) fn plan_human(plan: &Plan, with_ops: bool) -> String {
    let j = plan_json(plan, with_ops);
    let mut out = String::new();
    out.push_str(&format!(
        "plan format {} · {} · seed {} · trained steps {}\nconfig sha256 {}{}\n",
        plan.format_version,
        plan.model_kind,
        plan.seed,
        plan.trained_steps,
        plan.source_config_sha256,
        if plan.source_path.is_empty() {
            String::new()
        } else {
            format!(" ({})", plan.source_path)
        }
    ));
    out.push_str(&format!("\nfeatures ({}):\n", plan.features.len()));
    for (f, fj) in plan
        .features
        .iter()
        .zip(j["features"].as_array().into_iter().flatten())
    {
        out.push_str(&format!(
            "  {:<24} {:<16} cols {:<28} ids {:<10} dim {}\n",
            f.name,
            fj["kind"].as_str().unwrap_or(""),
            f.input_columns.join(","),
            f.num_ids,
            if f.embedding_dim > 0 {
                f.embedding_dim
            } else {
                f.value_dim
            }
        ));
    }
    out.push_str(&format!("\ntables ({}):\n", plan.tables.len()));
    for t in &plan.tables {
        out.push_str(&format!(
            "  {:<24} {:>10} x {:<4} {}\n",
            t.name,
            t.num_rows,
            t.dim,
            if t.data.is_empty() {
                "initialized at run time"
            } else {
                "trained"
            }
        ));
    }
    out.push_str(&format!("\nops ({}):", plan.ops.len()));
    if let Some(kinds) = j["op_kinds"].as_object() {
        for (k, v) in kinds {
            out.push_str(&format!(" {k} x{v}"));
        }
    }
    out.push('\n');
    if with_ops {
        for op in &plan.ops {
            let shape = plan
                .values
                .get(op.output as usize)
                .map(|v| v.shape.clone())
                .unwrap_or_default();
            out.push_str(&format!(
                "  {:<44} {:<14} {:?}\n",
                op.name,
                enum_name(op.kind, |k: p::OpKind| k.as_str_name()),
                shape
            ));
        }
    }
    out.push_str(&format!(
        "params: {} tensors, {} trainable values\nforward FLOPs/sample: {}\n",
        plan.params.len(),
        j["trainable_params"],
        human_count(plan.forward_flops_per_sample)
    ));
    out.push_str(&format!("\ntasks ({}):\n", plan.tasks.len()));
    for (t, tj) in plan
        .tasks
        .iter()
        .zip(j["tasks"].as_array().into_iter().flatten())
    {
        out.push_str(&format!(
            "  {:<12} label {:<10} classes {} losses {} metrics {} weight {}\n",
            t.tower_name, t.label_name, t.num_class, tj["losses"], tj["metrics"], t.weight
        ));
    }
    out.push_str(&format!(
        "\ntrain: {}\n",
        serde_json::to_string(&j["train"]).unwrap_or_default()
    ));
    out
}

/// The plan's batch size for training (the config's, else the run
/// default) and the memory estimates at it.
fn estimates(plan: &Plan) -> (u64, Estimate, Estimate) {
    let batch = plan
        .data
        .as_ref()
        .map(|d| d.batch_size as u64)
        .filter(|&b| b > 0)
        .unwrap_or(super::run::DEFAULT_BATCH_SIZE as u64);
    (
        batch,
        Estimate::of_plan(plan, batch, true),
        Estimate::of_plan(plan, batch, false),
    )
}

/// The memory estimates as a human section.
pub(crate) fn memory_section(plan: &Plan) -> String {
    let (batch, train, eval) = estimates(plan);
    format!(
        "\nmemory estimate, training at batch {batch} (evaluation: {}):\n{}",
        crate::plan::memory::human_bytes(eval.total()),
        train.table()
    )
}

/// The memory estimates as JSON.
pub(crate) fn memory_json(plan: &Plan) -> Json {
    let (batch, train, eval) = estimates(plan);
    json!({ "batch_size": batch, "train": train, "eval_total": eval.total() })
}

pub(crate) fn execute(args: &InspectArgs) -> Result<Outcome, RunError> {
    let bytes = std::fs::read(&args.file)
        .map_err(|e| RunError::new(format!("cannot read {}: {e}", args.file.display())))?;
    if bytes.starts_with(crate::plan::file::MAGIC) {
        let plan = crate::plan::file::decode(&bytes, &args.file)
            .map_err(|e| RunError::new(e.to_string()))?;
        match args.format {
            Format::Human => print_out(&(plan_human(&plan, args.ops) + &memory_section(&plan))),
            Format::Json => {
                let mut j = plan_json(&plan, args.ops);
                j["memory"] = memory_json(&plan);
                print_out(&format!("{j}\n"));
            }
        }
        return Ok(Outcome::Clean);
    }
    let source = read(&args.file)?;
    // The plan's structure only: inspecting a model too large to build
    // still shows its sizes (and the memory it would need).
    let opts = BuildOptions::default();
    let Lowered { graph, config, .. } = match lower(&source, opts) {
        Ok(l) => l,
        Err(e) => return report(&args.file, &source, e),
    };
    let plan = crate::plan::emit::emit_structure(&graph, &config, &source, opts.seed)
        .map_err(|e| RunError::new(e.to_string()))?;
    let s = ir::summarize(&graph, &plan);
    match args.format {
        Format::Human => print_out(&(summary_table(&s) + &memory_section(&plan))),
        Format::Json => {
            let mut j = serde_json::to_value(&s).unwrap_or_default();
            j["memory"] = memory_json(&plan);
            print_out(&format!(
                "{}\n",
                serde_json::to_string_pretty(&j).unwrap_or_default()
            ));
        }
    }
    Ok(Outcome::Clean)
}
