//! Emit: the (optimized) model graph to the plan of `plan.proto`.
//!
//! Features and tables come from the feature group's inputs; ops are
//! written in a topological order of the graph, each graph node expanding
//! into the plan ops that compute it; dense parameters are initialized here
//! (deterministically from the seed and each parameter's name, see
//! `ir::init`); tasks and training settings come from the towers and the
//! config's `train_config`.
//!
//! Embedding tables are emitted with `data` empty, `INIT_UNIFORM` and
//! `init_scale = sqrt(1 / num_rows)`: that is torchrec's default for
//! `EmbeddingBagConfig` (weight_init_min/max = -/+ sqrt(1/num_embeddings)),
//! which is what TorchEasyRec trains with, so the same config starts from
//! the same distribution in both tools. The runtime initializes the rows
//! deterministically from `init_seed` (derived from the seed and the table
//! name), which keeps multi-million-row tables out of the plan file.

use std::collections::HashMap;

use petgraph::stable_graph::NodeIndex;
use sha2::{Digest, Sha256};

use crate::ir::graph::*;
use crate::ir::init;
use crate::ir::torch_names::{torch_names, TorchNames};
use crate::proto::plan::*;
use crate::proto::tzrec::protos::{dense_optimizer, sparse_optimizer, EasyRecConfig, TrainConfig};

/// Why a graph could not be emitted (a bug in an earlier stage).
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error("the model graph has a cycle")]
    Cycle,
    #[error("internal error: {0}")]
    Internal(String),
    #[error("plec cannot run {0} yet; `plec check` accepts it, but training needs one of the supported kinds (see README)")]
    Unsupported(String),
}

/// Hex SHA-256 of a config text.
pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Emits the plan of `graph` (lowered from `config`, whose text is
/// `source_text`), initializing dense parameters from `seed`.
pub fn emit(
    graph: &ModelGraph,
    config: &EasyRecConfig,
    source_text: &str,
    seed: u64,
) -> Result<Plan, EmitError> {
    emit_with(graph, config, source_text, seed, true)
}

/// The plan without parameter data: its shapes, ops and settings, cheap
/// however large the model (the memory guard reads it before `emit`
/// allocates the parameters).
pub fn emit_structure(
    graph: &ModelGraph,
    config: &EasyRecConfig,
    source_text: &str,
    seed: u64,
) -> Result<Plan, EmitError> {
    emit_with(graph, config, source_text, seed, false)
}

fn emit_with(
    graph: &ModelGraph,
    config: &EasyRecConfig,
    source_text: &str,
    seed: u64,
    materialize: bool,
) -> Result<Plan, EmitError> {
    let mut e = Emitter {
        g: graph,
        seed,
        materialize,
        plan: Plan {
            format_version: super::file::FORMAT_VERSION,
            source_config_sha256: sha256_hex(source_text),
            seed,
            model_kind: graph.model_kind.clone(),
            data: Some(data_spec(config)),
            train: Some(train_settings(config.train_config.as_ref())?),
            ..Default::default()
        },
        values: HashMap::new(),
        torch: torch_names(config),
    };
    let order = petgraph::algo::toposort(&graph.graph, None).map_err(|_| EmitError::Cycle)?;
    for n in order {
        e.node(n)?;
    }
    // Tasks in the config's tower order (the order towers were lowered
    // in), not the topological order they were emitted in: task order is
    // what users see, and synthetic data chains binary tasks in that order.
    let tower_order: Vec<&str> = graph
        .graph
        .node_indices()
        .filter_map(|n| match &graph.graph[n] {
            Node::Tower(t) => Some(t.task.tower_name.as_str()),
            _ => None,
        })
        .collect();
    e.plan.tasks.sort_by_key(|t| {
        tower_order
            .iter()
            .position(|name| *name == t.tower_name)
            .unwrap_or(usize::MAX)
    });
    e.plan.torch_unnamed_reason = e.torch.unsupported.clone().unwrap_or_default();
    e.plan.forward_flops_per_sample = forward_flops(&e.plan);
    Ok(e.plan)
}

/// Forward FLOPs per sample (2 per multiply-add) of linears, batched
/// linears, gate mixes, multi-head attention and interventions; element-wise ops are not counted. Any plan,
/// valid or not (a value or parameter it names may be missing; absurd
/// shapes saturate).
pub fn forward_flops(plan: &Plan) -> u64 {
    let shape = |p: u32| -> Vec<u64> {
        plan.params
            .get(p as usize)
            .map(|p| p.shape.clone())
            .unwrap_or_default()
    };
    let mut flops = 0u64;
    for op in &plan.ops {
        match OpKind::try_from(op.kind) {
            Ok(OpKind::Linear) | Ok(OpKind::BatchedLinear) => {
                if let Some(&w) = op.params.first() {
                    // A linear over `[B, L, in]` (a DIN attention MLP) runs
                    // once per step.
                    let per_row: u64 = match OpKind::try_from(op.kind) {
                        Ok(OpKind::Linear) => op
                            .inputs
                            .first()
                            .and_then(|&x| plan.values.get(x as usize))
                            .map_or(1, |v| {
                                let dims = &v.shape[..v.shape.len().saturating_sub(1)];
                                product(dims.iter().filter(|&&d| d > 0).map(|&d| d as u64))
                            }),
                        _ => 1,
                    };
                    let n = product([2, per_row, product(shape(w))]);
                    flops = flops.saturating_add(n);
                }
            }
            Ok(OpKind::MultiHeadAttention) => {
                // Scores and the weighted sum: 2 L^2 E multiply-adds.
                let s = op.inputs.first().and_then(|&x| plan.values.get(x as usize));
                if let Some(s) = s.map(|v| &v.shape).filter(|s| s.len() == 3) {
                    let (l, e) = (s[1].max(0) as u64, s[2].max(0) as u64);
                    flops = flops.saturating_add(product([4, l, l, e]));
                }
            }
            Ok(OpKind::Intervention) => {
                // x Wb, s Ws and (..) Wb^T: (2n + m) r multiply-adds.
                let dims = |i: usize| shape(op.params.get(i).copied().unwrap_or(u32::MAX));
                if let ([n, r], [m, _]) = (dims(0).as_slice(), dims(2).as_slice()) {
                    let n = product([2, (2 * n).saturating_add(*m), *r]);
                    flops = flops.saturating_add(n);
                }
            }
            Ok(OpKind::GateMix) => {
                // A plan file names values by index: one out of range is
                // counted as nothing (validation rejects the plan later).
                let s = op.inputs.get(1).and_then(|&x| plan.values.get(x as usize));
                if let Some(s) = s.map(|v| &v.shape).filter(|s| s.len() == 3) {
                    let n = product([2, s[0].max(0) as u64, s[2].max(0) as u64]);
                    flops = flops.saturating_add(n);
                }
            }
            _ => {}
        }
    }
    flops
}

/// Saturating product (a plan file can hold absurd shapes).
fn product(dims: impl IntoIterator<Item = u64>) -> u64 {
    dims.into_iter().fold(1u64, |n, d| n.saturating_mul(d))
}

// Defaults come from the schema: prost's accessors (`x.momentum()`) return
// the `[default = ...]` of the .proto files, the one source of truth.

fn data_spec(config: &EasyRecConfig) -> DataSpec {
    let d = config.data_config.clone().unwrap_or_default();
    let batch = d.batch_size();
    DataSpec {
        batch_size: batch,
        eval_batch_size: d.eval_batch_size.filter(|&b| b > 0).unwrap_or(batch),
        label_fields: d.label_fields.clone(),
        sample_weight_fields: d.sample_weight_fields.clone(),
        fg_none: d.fg_mode() == crate::proto::tzrec::protos::FgMode::FgNone,
        shuffle: d.shuffle(),
        drop_remainder: d.drop_remainder(),
    }
}

fn unsupported(what: &str) -> EmitError {
    EmitError::Unsupported(what.to_string())
}

macro_rules! schedule {
    ($lr:expr, $m:ident) => {{
        use $m::LearningRate as L;
        match $lr {
            None | Some(L::ConstantLearningRate(_)) => Ok(LearningRate::default()),
            Some(L::ExponentialDecayLearningRate(x)) => Ok(LearningRate {
                kind: ScheduleKind::ExponentialDecay as i32,
                decay_steps: x.decay_size() as u64,
                decay_rate: x.decay_factor(),
                min_lr: x.min_learning_rate(),
                staircase: x.staircase(),
                warmup_steps: x.warmup_size() as u64,
                by_epoch: x.by_epoch(),
                ..Default::default()
            }),
            Some(L::ManualStepLearningRate(x)) => Ok(LearningRate {
                kind: ScheduleKind::ManualStep as i32,
                schedule_steps: x.schedule_sizes.iter().map(|&s| s as u64).collect(),
                learning_rates: x.learning_rates.clone(),
                warmup_steps: if x.warmup() {
                    x.schedule_sizes.first().copied().unwrap_or(0) as u64
                } else {
                    0
                },
                by_epoch: x.by_epoch(),
                ..Default::default()
            }),
            Some(L::CosineAnnealingLearningRate(x)) => Ok(LearningRate {
                kind: ScheduleKind::CosineAnnealing as i32,
                t_max: x.t_max() as u64,
                eta_min: x.min_learning_rate(),
                warmup_steps: x.warmup_size() as u64,
                by_epoch: x.by_epoch(),
                ..Default::default()
            }),
            Some(L::CosineAnnealingWarmRestartsLearningRate(_)) => Err(unsupported(
                "learning-rate schedule cosine_annealing_warm_restarts_learning_rate",
            )),
        }
    }};
}

/// Adagrad's epsilon where the config has no field for it (fbgemm's fused
/// Adagrad, which TorchEasyRec's sparse optimizer is, uses this value).
const SPARSE_ADAGRAD_EPS: f32 = 1e-10;
/// Adam's epsilon for the fused sparse Adam (torch's default).
const SPARSE_ADAM_EPS: f32 = 1e-8;

fn sparse(opt: &crate::proto::tzrec::protos::SparseOptimizer) -> Result<Optimizer, EmitError> {
    use sparse_optimizer::Optimizer as O;
    let mut o = match &opt.optimizer {
        // TorchEasyRec requires a sparse optimizer; with none given, plain
        // SGD at the schema's default rate is what its FusedSGD would use.
        None => Optimizer {
            kind: OptimizerKind::Sgd as i32,
            lr: crate::proto::tzrec::protos::FusedSgdOptimizer::default().lr,
            ..Default::default()
        },
        Some(O::SgdOptimizer(x)) => Optimizer {
            kind: OptimizerKind::Sgd as i32,
            lr: x.lr,
            ..Default::default()
        },
        Some(O::AdagradOptimizer(x)) => Optimizer {
            kind: OptimizerKind::Adagrad as i32,
            lr: x.lr,
            initial_accumulator_value: x.initial_accumulator_value(),
            eps: SPARSE_ADAGRAD_EPS,
            ..Default::default()
        },
        Some(O::AdamOptimizer(x)) => Optimizer {
            kind: OptimizerKind::Adam as i32,
            lr: x.lr,
            beta1: x.beta1(),
            beta2: x.beta2(),
            eps: SPARSE_ADAM_EPS,
            weight_decay: x.weight_decay(),
            ..Default::default()
        },
        Some(O::RowwiseAdagradOptimizer(x)) => Optimizer {
            kind: OptimizerKind::RowwiseAdagrad as i32,
            lr: x.lr,
            weight_decay: x.weight_decay(),
            // TorchEasyRec's FusedRowWiseAdagradOptimizer has no initial
            // accumulator setting; fbgemm starts the accumulator at zero.
            initial_accumulator_value: 0.0,
            eps: SPARSE_ADAGRAD_EPS,
            ..Default::default()
        },
        Some(other) => {
            return Err(unsupported(&format!(
                "sparse optimizer {}",
                sparse_name(other)
            )))
        }
    };
    o.schedule = Some(schedule!(&opt.learning_rate, sparse_optimizer)?);
    Ok(o)
}

fn sparse_name(o: &sparse_optimizer::Optimizer) -> &'static str {
    use sparse_optimizer::Optimizer as O;
    match o {
        O::SgdOptimizer(_) => "sgd_optimizer",
        O::AdagradOptimizer(_) => "adagrad_optimizer",
        O::AdamOptimizer(_) => "adam_optimizer",
        O::LarsSgdOptimizer(_) => "lars_sgd_optimizer",
        O::LambOptimizer(_) => "lamb_optimizer",
        O::PartialRowwiseLambOptimizer(_) => "partial_rowwise_lamb_optimizer",
        O::PartialRowwiseAdamOptimizer(_) => "partial_rowwise_adam_optimizer",
        O::RowwiseAdagradOptimizer(_) => "rowwise_adagrad_optimizer",
        O::AdadeltaOptimizer(_) => "adadelta_optimizer",
        O::RmspropOptimizer(_) => "rmsprop_optimizer",
    }
}

/// Adam and AdamW configs have the same fields (different generated types).
macro_rules! adam {
    ($x:expr, $kind:expr) => {
        Optimizer {
            kind: $kind as i32,
            lr: $x.lr,
            beta1: $x.beta1(),
            beta2: $x.beta2(),
            eps: $x.eps(),
            weight_decay: $x.weight_decay(),
            ..Default::default()
        }
    };
}

fn dense(opt: &crate::proto::tzrec::protos::DenseOptimizer) -> Result<Optimizer, EmitError> {
    use dense_optimizer::Optimizer as O;
    if !opt.part_optimizers.is_empty() {
        return Err(unsupported("dense part_optimizers"));
    }
    let mut o = match &opt.optimizer {
        None => Optimizer {
            kind: OptimizerKind::Sgd as i32,
            lr: crate::proto::tzrec::protos::SgdOptimizer::default().lr,
            ..Default::default()
        },
        Some(O::SgdOptimizer(x)) => Optimizer {
            kind: OptimizerKind::Sgd as i32,
            lr: x.lr,
            momentum: x.momentum(),
            nesterov: x.nesterov(),
            weight_decay: x.weight_decay(),
            ..Default::default()
        },
        Some(O::AdagradOptimizer(x)) => Optimizer {
            kind: OptimizerKind::Adagrad as i32,
            lr: x.lr,
            weight_decay: x.weight_decay(),
            initial_accumulator_value: x.initial_accumulator_value(),
            eps: x.eps(),
            ..Default::default()
        },
        Some(O::AdamOptimizer(x)) => adam!(x, OptimizerKind::Adam),
        Some(O::AdamwOptimizer(x)) => adam!(x, OptimizerKind::Adamw),
        Some(O::AdadeltaOptimizer(_)) => {
            return Err(unsupported("dense optimizer adadelta_optimizer"))
        }
        Some(O::RmspropOptimizer(_)) => {
            return Err(unsupported("dense optimizer rmsprop_optimizer"))
        }
    };
    o.schedule = Some(schedule!(&opt.learning_rate, dense_optimizer)?);
    Ok(o)
}

/// Training settings; without `num_steps` or `num_epochs` one epoch (lint
/// reports that case as an error before compiling gets here).
fn train_settings(t: Option<&TrainConfig>) -> Result<TrainSettings, EmitError> {
    let default = TrainConfig::default();
    let t = t.unwrap_or(&default);
    let steps = t.num_steps() as u64;
    Ok(TrainSettings {
        sparse_optimizer: Some(sparse(&t.sparse_optimizer)?),
        dense_optimizer: Some(dense(&t.dense_optimizer)?),
        num_epochs: if steps > 0 {
            0
        } else {
            t.num_epochs.filter(|&e| e > 0).unwrap_or(1) as u64
        },
        num_steps: steps,
        save_checkpoints_steps: t.save_checkpoints_steps() as u64,
        log_step_count_steps: t.log_step_count_steps() as u64,
        keep_checkpoint_max: t.keep_checkpoint_max() as u64,
    })
}

struct Emitter<'a> {
    g: &'a ModelGraph,
    seed: u64,
    /// Whether parameters get their initial values (else empty data).
    materialize: bool,
    plan: Plan,
    /// (node, output port) -> value index.
    values: HashMap<(NodeIndex, u32), u32>,
    /// TorchEasyRec's names, recorded on each parameter and table.
    torch: TorchNames,
}

/// The tensors a parameter concatenates (itself when it is not fused).
fn leaves(spec: &ParamSpec) -> Vec<&ParamSpec> {
    match &spec.init {
        Init::Concat(parts) => parts.iter().flat_map(leaves).collect(),
        _ => vec![spec],
    }
}

/// One contribution of experts to a gate.
enum Piece {
    Single(u32),
    Range {
        value: u32,
        total: i64,
        start: u32,
        len: u32,
    },
}

impl Emitter<'_> {
    fn value(&mut self, name: &str, shape: Shape) -> u32 {
        self.plan.values.push(Value {
            name: name.to_string(),
            shape,
        });
        (self.plan.values.len() - 1) as u32
    }

    fn shape(&self, v: u32) -> Shape {
        self.plan.values[v as usize].shape.clone()
    }

    fn param(&mut self, spec: &ParamSpec) -> u32 {
        let data = match self.materialize {
            true => init::to_le_bytes(&init::materialize(spec, self.seed)),
            false => Vec::new(),
        };
        // Named only when every part has a TorchEasyRec name; a part of a
        // packed TorchEasyRec tensor only when it is the whole parameter.
        let parts = leaves(spec);
        let packed = match parts.as_slice() {
            [l] => self.torch.packed.get(&l.name).map(|(name, k, n)| {
                let numel: u64 = l.shape.iter().product();
                let mut shape = l.shape.clone();
                if let Some(rows) = shape.first_mut() {
                    *rows *= n;
                }
                TorchTensor {
                    name: name.clone(),
                    shape,
                    packed: true,
                    packed_offset: k * numel,
                }
            }),
            _ => None,
        };
        let torch: Option<Vec<TorchTensor>> = match packed {
            Some(t) => Some(vec![t]),
            None => parts
                .iter()
                .map(|l| {
                    self.torch.params.get(&l.name).map(|name| TorchTensor {
                        name: name.clone(),
                        shape: l.shape.clone(),
                        ..Default::default()
                    })
                })
                .collect(),
        };
        let torch_absent = leaves(spec)
            .iter()
            .all(|l| self.torch.absent.contains(&l.name));
        self.plan.params.push(Parameter {
            name: spec.name.clone(),
            shape: spec.shape.clone(),
            data,
            trainable: spec.trainable,
            no_decay: spec.no_decay,
            torch: torch.unwrap_or_default(),
            torch_absent,
        });
        (self.plan.params.len() - 1) as u32
    }

    /// Appends an op and returns its output value.
    fn op(
        &mut self,
        name: &str,
        kind: OpKind,
        inputs: Vec<u32>,
        shape: Shape,
        params: Vec<u32>,
    ) -> u32 {
        let out = self.value(name, shape);
        self.plan.ops.push(Op {
            name: name.to_string(),
            kind: kind as i32,
            inputs,
            output: out,
            params,
            ..Default::default()
        });
        out
    }

    fn last_op(&mut self) -> &mut Op {
        let n = self.plan.ops.len() - 1;
        &mut self.plan.ops[n]
    }

    fn input(&self, n: NodeIndex, port: u32) -> Result<u32, EmitError> {
        let inputs = self.g.inputs(n);
        let (src, e) = inputs
            .iter()
            .find(|(_, e)| e.dst_port == port)
            .ok_or_else(|| {
                EmitError::Internal(format!("{} has no input {port}", self.g.graph[n].name()))
            })?;
        self.values
            .get(&(*src, e.src_port))
            .copied()
            .ok_or_else(|| {
                EmitError::Internal(format!(
                    "{} reads a value not computed",
                    self.g.graph[n].name()
                ))
            })
    }

    fn node(&mut self, n: NodeIndex) -> Result<(), EmitError> {
        let node = self.g.graph[n].clone();
        match &node {
            Node::InputColumn { .. }
            | Node::Feature(_)
            | Node::EmbeddingTable(_)
            | Node::Loss { .. }
            | Node::Metric { .. } => {}
            Node::FeatureGroup { name, width } => {
                let features = self.features(n);
                let out = self.op(
                    name,
                    OpKind::FeatureGroup,
                    vec![],
                    batch_shape(*width),
                    vec![],
                );
                self.last_op().features = features;
                self.values.insert((n, 0), out);
            }
            Node::Mlp(m) => {
                let x = self.input(n, 0)?;
                let out = self.mlp(m, x);
                self.values.insert((n, 0), out);
            }
            Node::Concat { name } => {
                let inputs: Vec<u32> = (0..self.g.inputs(n).len() as u32)
                    .map(|p| self.input(n, p))
                    .collect::<Result<_, _>>()?;
                let width: i64 = inputs.iter().map(|&v| self.shape(v)[1]).sum();
                let out = self.op(name, OpKind::Concat, inputs, vec![BATCH, width], vec![]);
                self.last_op().axis = 1;
                self.values.insert((n, 0), out);
            }
            Node::Tower(t) => {
                let x = self.input(n, 0)?;
                let head = |e: &mut Self, name: &str, mlp: Option<&MlpBlock>, l: &LinearParams| {
                    let y = match mlp {
                        Some(m) => e.mlp(m, x),
                        None => x,
                    };
                    e.linear(name, l, y)
                };
                let out = if t.more_domains.is_empty() {
                    head(
                        self,
                        &format!("{}.logits", t.name),
                        t.mlp.as_ref(),
                        &t.logits,
                    )
                } else {
                    let mut parts = vec![head(
                        self,
                        &format!("{}.domain0.logits", t.name),
                        t.mlp.as_ref(),
                        &t.logits,
                    )];
                    for (d, h) in t.more_domains.iter().enumerate() {
                        let name = format!("{}.domain{}.logits", t.name, d + 1);
                        parts.push(head(self, &name, h.mlp.as_ref(), &h.logits));
                    }
                    let width = t.out_dim() as i64;
                    let cat = self.op(
                        &format!("{}.logits", t.name),
                        OpKind::Concat,
                        parts,
                        vec![BATCH, width],
                        vec![],
                    );
                    self.last_op().axis = 1;
                    cat
                };
                let mut task = t.task.clone();
                task.logits = out;
                self.plan.tasks.push(task);
                self.values.insert((n, 0), out);
            }
            Node::GateNu(g) => {
                let x = self.input(n, 0)?;
                let h = self.linear(&format!("{}.layer0", g.name), &g.first, x);
                let relu = Act {
                    kind: Activation::Relu,
                    alpha: 0.0,
                    slope: None,
                    dice: None,
                };
                let h = self.post(&format!("{}.layer0", g.name), &Norm::None, &relu, 0.0, h);
                let y = self.linear(&format!("{}.layer1", g.name), &g.second, h);
                let sigmoid = Act {
                    kind: Activation::Sigmoid,
                    alpha: 0.0,
                    slope: None,
                    dice: None,
                };
                let y = self.post(&format!("{}.layer1", g.name), &Norm::None, &sigmoid, 0.0, y);
                self.values.insert((n, 0), y);
            }
            Node::Product { name, scale } => {
                let (a, b) = (self.input(n, 0)?, self.input(n, 1)?);
                let shape = self.shape(a);
                let out = self.op(name, OpKind::Mul, vec![a, b], shape, vec![]);
                self.last_op().alpha = *scale;
                self.values.insert((n, 0), out);
            }
            Node::Intervention(v) => {
                let (x, s) = (self.input(n, 0)?, self.input(n, 1)?);
                let params = [&v.base_x, &v.base_q, &v.source_x, &v.source_q]
                    .into_iter()
                    .map(|p| self.param(p))
                    .collect();
                let y = self.op(
                    &v.name,
                    OpKind::Intervention,
                    vec![x, s],
                    batch_shape(v.base_dim),
                    params,
                );
                let none = Act {
                    kind: Activation::ActNone,
                    alpha: 0.0,
                    slope: None,
                    dice: None,
                };
                let out = self.post(&v.name, &Norm::None, &none, v.dropout, y);
                self.values.insert((n, 0), out);
            }
            Node::VariationalDropout(v) => {
                let x = self.input(n, 0)?;
                let p = self.param(&v.feature_p);
                let out = self.op(
                    &v.name,
                    OpKind::VariationalDropout,
                    vec![x],
                    batch_shape(v.width()),
                    vec![p],
                );
                let op = self.last_op();
                op.alpha = v.lambda;
                op.widths = v.features.iter().map(|(_, w)| *w as u32).collect();
                op.feature_names = v.features.iter().map(|(n, _)| n.clone()).collect();
                self.values.insert((n, 0), out);
            }
            Node::Norm { name, norm, .. } => {
                let x = self.input(n, 0)?;
                let none = Act {
                    kind: Activation::ActNone,
                    alpha: 0.0,
                    slope: None,
                    dice: None,
                };
                let out = self.post(name, norm, &none, 0.0, x);
                self.values.insert((n, 0), out);
            }
            Node::StopGradient { name } => {
                let x = self.input(n, 0)?;
                let shape = self.shape(x);
                let out = self.op(name, OpKind::StopGradient, vec![x], shape, vec![]);
                self.values.insert((n, 0), out);
            }
            Node::Gate(g) => {
                let out = self.gate(n, g)?;
                self.values.insert((n, 0), out);
            }
            Node::SequenceGroup(g) => self.sequence_group(n, g)?,
            Node::SeqEncoder(e) => {
                let out = self.seq_encoder(n, e)?;
                self.values.insert((n, 0), out);
            }
            Node::FusedExperts(f) => {
                let x = self.input(n, 0)?;
                let (experts, logits) = self.fused(f, x);
                self.values.insert((n, 0), experts);
                for (j, l) in logits.into_iter().enumerate() {
                    self.values.insert((n, 1 + j as u32), l);
                }
            }
        }
        Ok(())
    }

    /// A sequence group: the query (a feature group of its query
    /// features), the steps and the mask, as values of ports 0, 1, 2.
    fn sequence_group(&mut self, n: NodeIndex, g: &SequenceGroupNode) -> Result<(), EmitError> {
        let inputs: Vec<NodeIndex> = self.g.inputs(n).into_iter().map(|(s, _)| s).collect();
        let (queries, steps) = inputs.split_at(g.queries.min(inputs.len()));
        if !queries.is_empty() {
            let features = self.feature_specs(queries);
            let out = self.op(
                &format!("{}.query", g.name),
                OpKind::FeatureGroup,
                vec![],
                batch_shape(g.query_width),
                vec![],
            );
            self.last_op().features = features;
            self.values.insert((n, 0), out);
        }
        let features = self.feature_specs(steps);
        let l = g.steps as i64;
        let first = features.first().copied().ok_or_else(|| {
            EmitError::Internal(format!("sequence group {} has no sequence feature", g.name))
        })?;
        let seq = self.op(
            &format!("{}.sequence", g.name),
            OpKind::SequenceEmbed,
            vec![],
            vec![BATCH, l, g.seq_width as i64],
            vec![],
        );
        self.last_op().features = features;
        self.values.insert((n, 1), seq);
        let mask = self.op(
            &format!("{}.mask", g.name),
            OpKind::SequenceMask,
            vec![],
            vec![BATCH, l],
            vec![],
        );
        self.last_op().features = vec![first];
        self.values.insert((n, 2), mask);
        Ok(())
    }

    /// A sequence encoder's ops; returns its `[B, D]` output.
    fn seq_encoder(&mut self, n: NodeIndex, e: &SeqEncoderBlock) -> Result<u32, EmitError> {
        let mut seq = self.input(n, 1)?;
        let mut mask = self.input(n, 2)?;
        let full_mask = mask;
        let d = e.seq_width as i64;
        // Self-attention cuts its projections instead of the steps.
        let cut_steps = !matches!(e.kind, EncoderKind::SelfAttention(_));
        if e.max_steps < e.steps && cut_steps {
            let m = e.max_steps as i64;
            seq = self.op(
                &format!("{}.steps", e.name),
                OpKind::Slice,
                vec![seq],
                vec![BATCH, m, d],
                vec![],
            );
            let op = self.last_op();
            (op.axis, op.start, op.length) = (1, 0, m);
        }
        if e.max_steps < e.steps {
            let m = e.max_steps as i64;
            mask = self.op(
                &format!("{}.mask", e.name),
                OpKind::Slice,
                vec![mask],
                vec![BATCH, m],
                vec![],
            );
            let op = self.last_op();
            (op.axis, op.start, op.length) = (1, 0, m);
        }
        let l = e.max_steps as i64;
        let scores = match &e.kind {
            EncoderKind::Pooling { mean } => {
                let out = self.op(
                    &e.name,
                    OpKind::SequencePool,
                    vec![seq, mask],
                    batch_shape(e.seq_width),
                    vec![],
                );
                self.last_op().pooling = if *mean {
                    Pooling::Mean as i32
                } else {
                    Pooling::Sum as i32
                };
                return Ok(out);
            }
            EncoderKind::SimpleAttention => {
                let q = self.input(n, 0)?;
                self.op(
                    &format!("{}.scores", e.name),
                    OpKind::DotScores,
                    vec![q, seq],
                    vec![BATCH, l, 1],
                    vec![],
                )
            }
            EncoderKind::MultiWindowDin {
                mlp,
                score,
                act,
                windows,
            } => {
                let q = self.input(n, 0)?;
                let x = self.op(
                    &format!("{}.input", e.name),
                    OpKind::WindowInput,
                    vec![q, seq],
                    vec![BATCH, l, 3 * d],
                    vec![],
                );
                let h = self.mlp(mlp, x);
                let s = self.linear(&format!("{}.score", e.name), score, h);
                let s = self.post(&format!("{}.score", e.name), &Norm::None, act, 0.0, s);
                let out = self.op(
                    &e.name,
                    OpKind::WindowPool,
                    vec![s, seq, mask, q],
                    batch_shape(e.width()),
                    vec![],
                );
                self.last_op().widths = windows.iter().map(|&w| w as u32).collect();
                return Ok(out);
            }
            EncoderKind::SelfAttention(a) => {
                let steps = (e.steps as i64, e.max_steps as i64);
                return Ok(self.self_attention(&e.name, a, seq, steps, mask, full_mask));
            }
            EncoderKind::Din { mlp, score } => {
                let q = self.input(n, 0)?;
                let x = self.op(
                    &format!("{}.input", e.name),
                    OpKind::DinInput,
                    vec![q, seq],
                    vec![BATCH, l, 4 * d],
                    vec![],
                );
                let h = self.mlp(mlp, x);
                self.linear(&format!("{}.score", e.name), score, h)
            }
        };
        Ok(self.op(
            &e.name,
            OpKind::AttentionPool,
            vec![scores, seq, mask],
            batch_shape(e.seq_width),
            vec![],
        ))
    }

    /// A self-attention encoder's ops over `seq` `[B, L, D]` and its
    /// `mask` (cut to `max_seq_length` M): the projections as linears over
    /// the steps, the attention among the first M, the out-projection,
    /// then the mean of the valid rows over the whole length (`full_mask`,
    /// uncut, as tzrec divides by the row's `sequence_length`). Returns the
    /// `[B, dim]` output.
    ///
    /// The projections run on all L steps and their outputs are cut to M
    /// (the same rows as cutting the steps first): a cut of the steps is a
    /// view whose rows are no single strided matrix, which the native
    /// engine's multiplies do not read; the attention reads any view.
    fn self_attention(
        &mut self,
        name: &str,
        a: &SelfAttentionParams,
        seq: u32,
        (steps, max_steps): (i64, i64),
        mask: u32,
        full_mask: u32,
    ) -> u32 {
        let mha = format!("{name}.multihead_attn");
        let dim = a.dim as i64;
        let mut project = |outer: &LinearParams, inner: &LinearParams, part: &str| {
            let x = self.linear(&format!("{name}.{part}"), outer, seq);
            let short = &part[..1];
            let y = self.linear(&format!("{mha}.in_proj_{short}"), inner, x);
            if max_steps >= steps {
                return y;
            }
            let cut = self.op(
                &format!("{mha}.{short}_steps"),
                OpKind::Slice,
                vec![y],
                vec![BATCH, max_steps, dim],
                vec![],
            );
            let op = self.last_op();
            (op.axis, op.start, op.length) = (1, 0, max_steps);
            cut
        };
        let q = project(&a.query, &a.in_q, "query");
        let k = project(&a.key, &a.in_k, "key");
        let v = project(&a.value, &a.in_v, "value");
        let shape = self.shape(q);
        let att = self.op(
            &format!("{mha}.attention"),
            OpKind::MultiHeadAttention,
            vec![q, k, v, mask],
            shape,
            vec![],
        );
        let op = self.last_op();
        op.heads = a.heads as u32;
        op.ratio = a.dropout;
        let y = self.linear(&format!("{mha}.out_proj"), &a.out, att);
        self.op(
            name,
            OpKind::MaskedMean,
            vec![y, mask, full_mask],
            batch_shape(a.dim),
            vec![],
        )
    }

    /// Feature specs and tables for the group's inputs; returns the
    /// group's feature indices.
    fn features(&mut self, group: NodeIndex) -> Vec<u32> {
        let sources: Vec<NodeIndex> = self.g.inputs(group).into_iter().map(|(s, _)| s).collect();
        self.feature_specs(&sources)
    }

    /// Feature specs (and their tables) of feature nodes, in order; returns
    /// their indices in the plan.
    fn feature_specs(&mut self, sources: &[NodeIndex]) -> Vec<u32> {
        let mut indices = Vec::new();
        for &src in sources {
            let Node::Feature(f) = &self.g.graph[src] else {
                continue;
            };
            if let Some(i) = self
                .plan
                .features
                .iter()
                .position(|s| s.name == f.spec.name)
            {
                indices.push(i as u32);
                continue;
            }
            let mut spec = f.spec.clone();
            if let Some(t) = &f.table {
                let ti = match self.plan.tables.iter().position(|x| &x.name == t) {
                    Some(i) => i,
                    None => {
                        let rows = spec.num_ids;
                        self.plan.tables.push(EmbeddingTable {
                            name: t.clone(),
                            num_rows: rows,
                            dim: spec.embedding_dim,
                            init: InitKind::InitUniform as i32,
                            init_scale: (1.0 / rows.max(1) as f64).sqrt() as f32,
                            init_seed: init::name_seed(self.seed, &format!("table:{t}")),
                            data: Vec::new(),
                            torch_name: self.torch.tables.get(t).cloned().unwrap_or_default(),
                        });
                        self.plan.tables.len() - 1
                    }
                };
                spec.table = ti as u32;
            }
            self.plan.features.push(spec);
            indices.push((self.plan.features.len() - 1) as u32);
        }
        indices
    }

    fn linear(&mut self, name: &str, l: &LinearParams, x: u32) -> u32 {
        let mut params = vec![self.param(&l.weight)];
        if let Some(b) = &l.bias {
            params.push(self.param(b));
        }
        let mut shape = self.shape(x);
        if let Some(last) = shape.last_mut() {
            *last = l.out_dim as i64;
        }
        self.op(name, OpKind::Linear, vec![x], shape, params)
    }

    /// Norm, activation and dropout after a linear, on any shape.
    fn post(&mut self, name: &str, norm: &Norm, act: &Act, dropout: f32, mut x: u32) -> u32 {
        let shape = self.shape(x);
        match norm {
            Norm::None => {}
            Norm::Batch(ps) => {
                let params = ps.iter().map(|p| self.param(p)).collect();
                x = self.op(
                    &format!("{name}.bn"),
                    OpKind::BatchNorm,
                    vec![x],
                    shape.clone(),
                    params,
                );
                let op = self.last_op();
                op.eps = 1e-5;
                op.momentum = 0.1;
                // `[B, L, C]`: an MLP over a sequence's steps (an attention
                // MLP); `[E, B, D]` experts keep per-expert statistics.
                op.over_steps = shape.len() == 3 && shape[0] == BATCH;
            }
            Norm::Layer(ps) => {
                let params = ps.iter().map(|p| self.param(p)).collect();
                x = self.op(
                    &format!("{name}.ln"),
                    OpKind::LayerNorm,
                    vec![x],
                    shape.clone(),
                    params,
                );
                self.last_op().eps = 1e-5;
            }
        }
        if let Some(dice) = &act.dice {
            x = self.dice(name, dice, x);
        }
        if act.kind != Activation::ActNone {
            let params = act.slope.iter().map(|p| self.param(p)).collect();
            x = self.op(
                &format!("{name}.act"),
                OpKind::Activation,
                vec![x],
                shape.clone(),
                params,
            );
            let op = self.last_op();
            op.activation = act.kind as i32;
            op.alpha = act.alpha;
        }
        if dropout > 0.0 {
            x = self.op(
                &format!("{name}.dropout"),
                OpKind::Dropout,
                vec![x],
                shape,
                vec![],
            );
            self.last_op().ratio = dropout;
        }
        x
    }

    /// Dice over `x`: its affine-free batch norm (statistics over the
    /// steps too for `[B, L, C]`, as tzrec's `Dice(dim=3)`), a sigmoid,
    /// then the DICE gate.
    fn dice(&mut self, name: &str, d: &DiceParams, x: u32) -> u32 {
        let shape = self.shape(x);
        let bn = d.bn.iter().map(|p| self.param(p)).collect();
        let normed = self.op(
            &format!("{name}.dice.bn"),
            OpKind::BatchNorm,
            vec![x],
            shape.clone(),
            bn,
        );
        let op = self.last_op();
        op.eps = 1e-5;
        op.momentum = 0.1;
        op.over_steps = shape.len() == 3 && shape[0] == BATCH;
        let p = self.op(
            &format!("{name}.dice.sigmoid"),
            OpKind::Activation,
            vec![normed],
            shape.clone(),
            vec![],
        );
        self.last_op().activation = Activation::Sigmoid as i32;
        let alpha = self.param(&d.alpha);
        self.op(
            &format!("{name}.dice"),
            OpKind::Dice,
            vec![x, p],
            shape,
            vec![alpha],
        )
    }

    fn mlp(&mut self, m: &MlpBlock, mut x: u32) -> u32 {
        for (k, layer) in m.layers.iter().enumerate() {
            let name = format!("{}.layer{k}", m.name);
            x = self.linear(&name, &layer.linear, x);
            x = self.post(&name, &layer.norm, &layer.act, layer.dropout, x);
        }
        x
    }

    fn gate(&mut self, n: NodeIndex, g: &GateBlock) -> Result<u32, EmitError> {
        let sel = self.input(n, 0)?;
        let logits = match &g.head {
            Some(h) => self.linear(&format!("{}.linear", g.name), h, sel),
            None => sel,
        };
        let k = g.num_experts as i64;
        let d = g.expert_dim as i64;
        let weights = self.op(
            &format!("{}.softmax", g.name),
            OpKind::Softmax,
            vec![logits],
            vec![BATCH, k],
            vec![],
        );
        self.last_op().axis = 1;
        // Expert pieces in port order, contiguous ranges of one source merged.
        let mut pieces: Vec<Piece> = Vec::new();
        let mut last_src: Option<(NodeIndex, u32)> = None;
        for (src, e) in self.g.inputs(n).into_iter().skip(1) {
            let v = *self.values.get(&(src, e.src_port)).ok_or_else(|| {
                EmitError::Internal(format!("{} mixes a value not computed", g.name))
            })?;
            match e.experts {
                None => pieces.push(Piece::Single(v)),
                Some((start, len)) => {
                    if let (
                        Some(Piece::Range {
                            start: s, len: l, ..
                        }),
                        Some(prev),
                    ) = (pieces.last_mut(), last_src)
                    {
                        if prev == (src, e.src_port) && *s + *l == start {
                            *l += len;
                            continue;
                        }
                    }
                    pieces.push(Piece::Range {
                        value: v,
                        total: e.shape[0],
                        start,
                        len,
                    });
                }
            }
            last_src = Some((src, e.src_port));
        }
        let mut parts = Vec::new();
        let mut singles = Vec::new();
        let flush = |this: &mut Self, singles: &mut Vec<u32>, parts: &mut Vec<u32>| {
            if !singles.is_empty() {
                let shape = vec![singles.len() as i64, BATCH, d];
                let name = format!("{}.experts{}", g.name, parts.len());
                parts.push(this.op(&name, OpKind::Stack, std::mem::take(singles), shape, vec![]));
            }
        };
        for p in pieces {
            match p {
                Piece::Single(v) => singles.push(v),
                Piece::Range {
                    value,
                    total,
                    start,
                    len,
                } => {
                    flush(self, &mut singles, &mut parts);
                    if start == 0 && len as i64 == total {
                        parts.push(value);
                    } else {
                        let name = format!("{}.experts{}", g.name, parts.len());
                        let v = self.op(
                            &name,
                            OpKind::Slice,
                            vec![value],
                            vec![len as i64, BATCH, d],
                            vec![],
                        );
                        let op = self.last_op();
                        op.axis = 0;
                        op.start = start as i64;
                        op.length = len as i64;
                        parts.push(v);
                    }
                }
            }
        }
        flush(self, &mut singles, &mut parts);
        let experts = if parts.len() == 1 {
            parts[0]
        } else {
            let v = self.op(
                &format!("{}.experts", g.name),
                OpKind::Concat,
                parts,
                vec![k, BATCH, d],
                vec![],
            );
            self.last_op().axis = 0;
            v
        };
        Ok(self.op(
            &format!("{}.mix", g.name),
            OpKind::GateMix,
            vec![weights, experts],
            vec![BATCH, d],
            vec![],
        ))
    }

    /// The fused expert chain; returns the stacked experts `[E, B, D]` and
    /// each joined gate's logits.
    fn fused(&mut self, f: &FusedExperts, x: u32) -> (u32, Vec<u32>) {
        let e = f.experts.len();
        let name = &f.name;
        let first: Vec<&DenseLayer> = f.experts.iter().filter_map(|m| m.layers.first()).collect();
        let Some(l0) = first.first().copied() else {
            return (x, Vec::new());
        };
        let h1 = l0.linear.out_dim as i64;
        let stack_norm = |norm_of: &dyn Fn(&DenseLayer) -> Norm,
                          layers: &[&DenseLayer],
                          lname: &str,
                          wide: bool|
         -> Norm {
            let norms: Vec<Norm> = layers.iter().map(|l| norm_of(l)).collect();
            let join = |i: usize, what: &str| -> ParamSpec {
                let parts: Vec<ParamSpec> = norms
                    .iter()
                    .filter_map(|n| match n {
                        Norm::Batch(p) => p.get(i).cloned(),
                        Norm::Layer(p) => p.get(i).cloned(),
                        Norm::None => None,
                    })
                    .collect();
                let pname = format!("{lname}.{what}");
                if wide {
                    ParamSpec::concat(pname, parts)
                } else {
                    ParamSpec::stack(pname, parts)
                }
            };
            match norms.first() {
                Some(Norm::Batch(_)) => Norm::Batch([
                    join(0, "bn.gamma"),
                    join(1, "bn.beta"),
                    join(2, "bn.running_mean"),
                    join(3, "bn.running_var"),
                ]),
                Some(Norm::Layer(_)) => Norm::Layer([join(0, "ln.gamma"), join(1, "ln.beta")]),
                _ => Norm::None,
            }
        };
        let act = Act {
            kind: l0.act.kind,
            alpha: l0.act.alpha,
            slope: None,
            dice: None,
        };
        let lname0 = format!("{name}.layer0");
        let mut logits = Vec::new();
        let mut h = if f.gates.is_empty() {
            let w = ParamSpec::stack(
                format!("{lname0}.weight"),
                first.iter().map(|l| l.linear.weight.clone()).collect(),
            );
            let mut params = vec![self.param(&w)];
            let biases: Option<Vec<ParamSpec>> =
                first.iter().map(|l| l.linear.bias.clone()).collect();
            if let Some(b) = biases {
                params.push(self.param(&ParamSpec::stack(format!("{lname0}.bias"), b)));
            }
            let y = self.op(
                &lname0,
                OpKind::BatchedLinear,
                vec![x],
                vec![e as i64, BATCH, h1],
                params,
            );
            let norm = stack_norm(&|l: &DenseLayer| l.norm.clone(), &first, &lname0, false);
            self.post(&lname0, &norm, &act, l0.dropout, y)
        } else {
            let mut ws: Vec<ParamSpec> = first.iter().map(|l| l.linear.weight.clone()).collect();
            let mut bs: Vec<ParamSpec> =
                first.iter().filter_map(|l| l.linear.bias.clone()).collect();
            for gh in &f.gates {
                ws.push(gh.linear.weight.clone());
                bs.extend(gh.linear.bias.clone());
            }
            let total: i64 =
                e as i64 * h1 + f.gates.iter().map(|g| g.linear.out_dim as i64).sum::<i64>();
            let w = self.param(&ParamSpec::concat(format!("{lname0}.wide.weight"), ws));
            let b = self.param(&ParamSpec::concat(format!("{lname0}.wide.bias"), bs));
            let wide = self.op(
                &format!("{lname0}.wide"),
                OpKind::Linear,
                vec![x],
                vec![BATCH, total],
                vec![w, b],
            );
            let mut offset = e as i64 * h1;
            for gh in &f.gates {
                let k = gh.linear.out_dim as i64;
                let v = self.op(
                    &format!("{}.logits", gh.gate),
                    OpKind::Slice,
                    vec![wide],
                    vec![BATCH, k],
                    vec![],
                );
                let op = self.last_op();
                op.axis = 1;
                op.start = offset;
                op.length = k;
                offset += k;
                logits.push(v);
            }
            let xe = self.op(
                &format!("{lname0}.experts"),
                OpKind::Slice,
                vec![wide],
                vec![BATCH, e as i64 * h1],
                vec![],
            );
            let op = self.last_op();
            op.axis = 1;
            op.start = 0;
            op.length = e as i64 * h1;
            let norm = stack_norm(&|l: &DenseLayer| l.norm.clone(), &first, &lname0, true);
            let y = self.post(&lname0, &norm, &act, l0.dropout, xe);
            let parts: Vec<u32> = (0..e)
                .map(|k| {
                    let v = self.op(
                        &format!("{lname0}.expert{k}"),
                        OpKind::Slice,
                        vec![y],
                        vec![BATCH, h1],
                        vec![],
                    );
                    let op = self.last_op();
                    op.axis = 1;
                    op.start = k as i64 * h1;
                    op.length = h1;
                    v
                })
                .collect();
            self.op(
                &format!("{lname0}.stack"),
                OpKind::Stack,
                parts,
                vec![e as i64, BATCH, h1],
                vec![],
            )
        };
        let depth = f.experts.first().map_or(0, |m| m.layers.len());
        for li in 1..depth {
            let layers: Vec<&DenseLayer> =
                f.experts.iter().filter_map(|m| m.layers.get(li)).collect();
            let Some(l) = layers.first().copied() else {
                break;
            };
            let lname = format!("{name}.layer{li}");
            let w = ParamSpec::stack(
                format!("{lname}.weight"),
                layers.iter().map(|l| l.linear.weight.clone()).collect(),
            );
            let mut params = vec![self.param(&w)];
            let biases: Option<Vec<ParamSpec>> =
                layers.iter().map(|l| l.linear.bias.clone()).collect();
            if let Some(b) = biases {
                params.push(self.param(&ParamSpec::stack(format!("{lname}.bias"), b)));
            }
            let y = self.op(
                &lname,
                OpKind::BatchedLinear,
                vec![h],
                vec![e as i64, BATCH, l.linear.out_dim as i64],
                params,
            );
            let norm = stack_norm(&|l: &DenseLayer| l.norm.clone(), &layers, &lname, false);
            let act = Act {
                kind: l.act.kind,
                alpha: l.act.alpha,
                slope: None,
                dice: None,
            };
            h = self.post(&lname, &norm, &act, l.dropout, y);
        }
        (h, logits)
    }
}
