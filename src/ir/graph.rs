//! The model graph: nodes a modeler talks about (input columns, features,
//! embedding tables, the feature group, experts, gates, towers, losses,
//! metrics) and edges that carry tensor shapes with a symbolic batch axis.
//!
//! Every node knows how to infer its output shapes from its inputs
//! ([`Node::infer`]); [`ModelGraph::check`] re-runs that inference over the
//! whole graph and compares it with the shapes the edges carry, which is
//! what the pass driver calls after every patch.

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::proto::plan;

/// A tensor shape; [`BATCH`] marks the symbolic batch axis.
pub(crate) type Shape = Vec<i64>;

/// The symbolic batch dimension, as in `plan.proto`.
pub(crate) const BATCH: i64 = -1;

/// `[B, width]`.
pub(crate) fn batch_shape(width: u64) -> Shape {
    vec![BATCH, width as i64]
}

/// A tensor flowing from one node's output port to another's input port.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    /// Shape of the source port's output.
    pub shape: Shape,
    /// Which output of the source.
    pub src_port: u32,
    /// Which input of the destination; inputs are read in port order.
    pub dst_port: u32,
    /// For an edge from a stacked `[E, B, D]` output into a gate: the experts
    /// `[start, start + len)` it contributes.
    pub experts: Option<(u32, u32)>,
}

impl Edge {
    /// A plain edge between port `src_port` and port `dst_port`.
    pub fn new(shape: Shape, src_port: u32, dst_port: u32) -> Self {
        Edge {
            shape,
            src_port,
            dst_port,
            experts: None,
        }
    }
}

/// How a parameter's initial values are produced (deterministic from the
/// compile seed and the parameter's name, so a rewrite that moves or
/// concatenates parameters keeps their numbers).
#[derive(Debug, Clone, PartialEq)]
pub enum Init {
    /// Uniform in `[-bound, bound]`, seeded by the compile seed and the name.
    Uniform { bound: f32 },
    /// Standard normal (torch's `randn`).
    Normal,
    /// Every element equal.
    Constant(f32),
    /// A square matrix with orthonormal columns: the Q of the QR
    /// decomposition (R's diagonal positive) of a standard normal one,
    /// uniform over the orthogonal matrices as torch's `orthogonal_`.
    Orthogonal,
    /// The row-major concatenation of the parts along axis 0 (also how
    /// `[out, in]` weights stack into `[E, out, in]`).
    Concat(Vec<ParamSpec>),
}

/// A dense parameter or buffer: name, shape and how to initialize it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<u64>,
    pub init: Init,
    /// False for buffers (batch-norm running statistics).
    pub trainable: bool,
    /// Excluded from weight decay (biases, norms).
    pub no_decay: bool,
}

impl ParamSpec {
    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }

    /// The concatenation of `parts` along axis 0 as a new parameter.
    pub fn concat(name: String, parts: Vec<ParamSpec>) -> ParamSpec {
        let trainable = parts.iter().all(|p| p.trainable);
        let no_decay = parts.iter().all(|p| p.no_decay);
        let rows: u64 = parts
            .iter()
            .map(|p| p.shape.first().copied().unwrap_or(1))
            .sum();
        let mut shape = parts.first().map(|p| p.shape.clone()).unwrap_or_default();
        if let Some(first) = shape.first_mut() {
            *first = rows;
        }
        ParamSpec {
            name,
            shape,
            init: Init::Concat(parts),
            trainable,
            no_decay,
        }
    }

    /// Stacks equally shaped parts into a new leading axis.
    pub fn stack(name: String, parts: Vec<ParamSpec>) -> ParamSpec {
        let mut shape = vec![parts.len() as u64];
        shape.extend(parts.first().map(|p| p.shape.clone()).unwrap_or_default());
        let mut p = ParamSpec::concat(name, parts);
        p.shape = shape;
        p
    }
}

/// `y = x W^T + b` with `W` `[out, in]` as in torch.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearParams {
    pub in_dim: u64,
    pub out_dim: u64,
    pub weight: ParamSpec,
    pub bias: Option<ParamSpec>,
}

/// The normalization after a linear layer.
#[derive(Debug, Clone, PartialEq)]
pub enum Norm {
    None,
    /// gamma, beta, running mean, running var.
    Batch([ParamSpec; 4]),
    /// gamma, beta.
    Layer([ParamSpec; 2]),
}

/// An element-wise activation.
#[derive(Debug, Clone, PartialEq)]
pub struct Act {
    pub kind: plan::Activation,
    /// Leaky-relu slope or elu alpha (0: the torch default).
    pub alpha: f32,
    /// The PReLU slope parameter.
    pub slope: Option<ParamSpec>,
    /// Dice (`kind` is then `ActNone`): its own batch norm and gate.
    pub dice: Option<Box<DiceParams>>,
}

/// TorchEasyRec's Dice activation of one layer: `p = sigmoid(bn(x))`, the
/// batch norm without affine parameters, then `x * (p + alpha * (1 - p))`.
#[derive(Debug, Clone, PartialEq)]
pub struct DiceParams {
    /// gamma (1) and beta (0), both frozen (torch's `affine=False`), then
    /// the running mean and variance, as a batch norm's params.
    pub bn: [ParamSpec; 4],
    /// One per channel, initialized to 0.
    pub alpha: ParamSpec,
}

/// One perceptron of an MLP: Linear, then norm, activation, dropout.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseLayer {
    pub linear: LinearParams,
    pub norm: Norm,
    pub act: Act,
    /// Dropout ratio (0: none).
    pub dropout: f32,
}

/// What an MLP is for; experts are what `FuseParallelExperts` batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlpRole {
    Expert,
    Bottom,
    GateMlp,
    TaskMlp,
    Relation,
    /// The attention MLP of a DIN encoder.
    Attention,
}

impl MlpRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MlpRole::Expert => "expert",
            MlpRole::Bottom => "bottom mlp",
            MlpRole::GateMlp => "gate mlp",
            MlpRole::TaskMlp => "task mlp",
            MlpRole::Relation => "relation mlp",
            MlpRole::Attention => "attention mlp",
        }
    }
}

/// An MLP block (`MLP { hidden_units ... }`).
#[derive(Debug, Clone, PartialEq)]
pub struct MlpBlock {
    pub name: String,
    pub role: MlpRole,
    pub layers: Vec<DenseLayer>,
    /// The config path of the MLP message it lowers (e.g.
    /// `model_config.ple.extraction_networks[0].share_expert_net`); empty
    /// for blocks built from other fields. The language server's hover
    /// finds a block's shapes by it.
    pub path: String,
}

impl MlpBlock {
    pub fn in_dim(&self) -> u64 {
        self.layers.first().map_or(0, |l| l.linear.in_dim)
    }
    pub fn out_dim(&self) -> u64 {
        self.layers.last().map_or(0, |l| l.linear.out_dim)
    }
    /// Hidden widths, in order.
    pub fn widths(&self) -> Vec<u64> {
        self.layers.iter().map(|l| l.linear.out_dim).collect()
    }
}

/// A gate: Linear(selector -> experts), softmax, weighted sum of experts.
/// Input port 0 is the selector (or, once its linear joined a fused
/// multiply, the gate logits); ports 1.. are the experts in mixing order.
#[derive(Debug, Clone, PartialEq)]
pub struct GateBlock {
    pub name: String,
    pub num_experts: u64,
    pub expert_dim: u64,
    pub selector_dim: u64,
    /// `None` once the gate's linear joined a [`FusedExperts`] multiply.
    pub head: Option<LinearParams>,
}

/// A gate linear that joined a fused expert multiply.
#[derive(Debug, Clone, PartialEq)]
pub struct GateHead {
    pub gate: String,
    pub linear: LinearParams,
}

/// Parallel experts with the same widths reading one input, computed as one
/// batched chain; gates reading that input join its first multiply.
/// Output port 0 is the stacked experts `[E, B, D]`; port `1 + j` the
/// logits `[B, K_j]` of `gates[j]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FusedExperts {
    pub name: String,
    pub experts: Vec<MlpBlock>,
    pub gates: Vec<GateHead>,
}

impl FusedExperts {
    pub fn in_dim(&self) -> u64 {
        self.experts.first().map_or(0, MlpBlock::in_dim)
    }
    pub fn out_dim(&self) -> u64 {
        self.experts.first().map_or(0, MlpBlock::out_dim)
    }
}

/// A task tower's head: optional MLP, then Linear(-> num_class) = logits.
#[derive(Debug, Clone, PartialEq)]
pub struct TowerBlock {
    pub name: String,
    pub mlp: Option<MlpBlock>,
    pub logits: LinearParams,
    /// PEPNet's towers for domains 1.. (`mlp` and `logits` are domain 0's):
    /// each reads the tower's input, and the output is every domain's
    /// logits side by side, `[B, domains * num_class]`.
    pub more_domains: Vec<TowerHead>,
    /// Labels, losses, metrics and weights; `logits` is set by emit.
    pub task: plan::Task,
}

/// One more domain's copy of a tower (see [`TowerBlock::more_domains`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TowerHead {
    pub mlp: Option<MlpBlock>,
    pub logits: LinearParams,
}

impl TowerBlock {
    pub fn in_dim(&self) -> u64 {
        self.mlp
            .as_ref()
            .map_or(self.logits.in_dim, MlpBlock::in_dim)
    }

    /// The output width: every domain's logits.
    pub fn out_dim(&self) -> u64 {
        self.logits.out_dim * (1 + self.more_domains.len() as u64)
    }
}

/// PEPNet's gate neural unit without its gamma: `sigmoid(second(relu(
/// first(x))))`, a per-row weight in `(0, 1)` for each unit of what it
/// gates; the [`Node::Product`] that applies it carries the gamma.
#[derive(Debug, Clone, PartialEq)]
pub struct GateNuBlock {
    pub name: String,
    pub first: LinearParams,
    pub second: LinearParams,
}

/// A resolved feature: its plan spec (minus the table index) and width.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureNode {
    pub spec: plan::FeatureSpec,
    /// Table name for embedded features.
    pub table: Option<String>,
    pub width: u64,
}

/// An embedding table (shared by features with the same embedding name).
#[derive(Debug, Clone, PartialEq)]
pub struct TableNode {
    pub name: String,
    pub rows: u64,
    pub dim: u64,
}

/// A node of the model graph.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A parquet column.
    InputColumn {
        name: String,
    },
    /// A feature transform (hash, bucketize, vocab, normalize...).
    Feature(FeatureNode),
    EmbeddingTable(TableNode),
    /// The concatenation of its features' outputs, in listed order.
    FeatureGroup {
        name: String,
        width: u64,
    },
    Mlp(MlpBlock),
    Gate(GateBlock),
    /// Concatenation of `[B, d_i]` inputs along the last axis.
    Concat {
        name: String,
    },
    Tower(TowerBlock),
    Loss {
        task: String,
        loss: plan::Loss,
    },
    Metric {
        task: String,
        metric: plan::Metric,
    },
    FusedExperts(FusedExperts),
    /// A sequence group of a feature group: query features (ports before
    /// `queries`, each `[B, w]`) and sequence features (`[B, L, w]`).
    /// Outputs: 0 the query `[B, query_width]`, 1 the steps
    /// `[B, L, seq_width]`, 2 the step mask `[B, L]`.
    SequenceGroup(SequenceGroupNode),
    /// A sequence encoder reading a sequence group's outputs (ports 0
    /// query, 1 steps, 2 mask); output `[B, width]`.
    SeqEncoder(SeqEncoderBlock),
    GateNu(GateNuBlock),
    /// `scale` times the element-wise product of port 0 (a value) and
    /// port 1 (its gate), both `[B, d]`.
    Product {
        name: String,
        scale: f32,
    },
    /// Its input unchanged, with no gradient flowing back (torch's
    /// `detach`): PEPNet's gates read the embeddings without training them.
    StopGradient {
        name: String,
    },
    /// DC2VR's intervention of a tower's input (port 0, `[B, n]`) by its
    /// source towers' outputs (port 1, `[B, m]`, which get no gradient
    /// back); see the plan's INTERVENTION op. Output `[B, n]`.
    Intervention(InterventionBlock),
    /// Variational dropout over a feature group's output (see the plan's
    /// VARIATIONAL_DROPOUT op).
    VariationalDropout(VariationalDropoutBlock),
    /// A norm with no linear before it (MaskNet's layer norm of the
    /// embeddings): `[B, d]` to `[B, d]`.
    Norm {
        name: String,
        norm: Norm,
        width: u64,
    },
}

/// See [`Node::Intervention`]: one orthogonal parametrization per side,
/// each its trained matrix `x` (`[n, r]`) and its fixed base `q`
/// (`[n, n]`).
#[derive(Debug, Clone, PartialEq)]
pub struct InterventionBlock {
    pub name: String,
    pub base_dim: u64,
    pub source_dim: u64,
    pub rank: u64,
    pub base_x: ParamSpec,
    pub base_q: ParamSpec,
    pub source_x: ParamSpec,
    pub source_q: ParamSpec,
    /// Dropout on the output (`dropout_ratio`; training only).
    pub dropout: f32,
}

/// See [`Node::VariationalDropout`].
#[derive(Debug, Clone, PartialEq)]
pub struct VariationalDropoutBlock {
    pub name: String,
    /// `[F]`: each feature's drop logit.
    pub feature_p: ParamSpec,
    /// Per feature (plain features, then sequence encoders): name, width.
    pub features: Vec<(String, u64)>,
    pub lambda: f32,
}

impl VariationalDropoutBlock {
    pub fn width(&self) -> u64 {
        self.features.iter().map(|(_, w)| w).sum()
    }
}

/// See [`Node::SequenceGroup`].
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceGroupNode {
    pub name: String,
    /// Number of query features (the first input ports).
    pub queries: usize,
    pub query_width: u64,
    pub seq_width: u64,
    /// `L`: the sequence_length of its sequence features.
    pub steps: u64,
}

/// What a sequence encoder computes.
#[derive(Debug, Clone, PartialEq)]
pub enum EncoderKind {
    /// DIN: attention MLP over `[q, s, q - s, q * s]`, a linear to one
    /// score per step, masked softmax, weighted sum of the steps.
    Din {
        mlp: Box<MlpBlock>,
        score: Box<LinearParams>,
    },
    /// Dot-product scores of the query with each step, masked softmax,
    /// weighted sum.
    SimpleAttention,
    /// Sum or mean of the valid steps.
    Pooling { mean: bool },
    /// Multi-window DIN: attention MLP over `[s, q * s, q]`, a linear to
    /// one score per step, PReLU; per window the masked, weighted mean of
    /// its steps, then the padded query.
    MultiWindowDin {
        mlp: Box<MlpBlock>,
        score: Box<LinearParams>,
        act: Box<Act>,
        windows: Vec<u64>,
    },
    /// TorchEasyRec's self-attention encoder: the steps through three
    /// linears (`query`, `key`, `value`, sequence width to `dim`), then
    /// torch's `MultiheadAttention` (its in-projections `in_q`, `in_k`,
    /// `in_v`, `heads` heads attending among the valid steps, dropout on
    /// the weights, the out-projection `out`), rows of padded steps zero,
    /// summed over the steps and divided by the row's length.
    SelfAttention(Box<SelfAttentionParams>),
}

/// See [`EncoderKind::SelfAttention`].
#[derive(Debug, Clone, PartialEq)]
pub struct SelfAttentionParams {
    /// `multihead_attn_dim`: the width of the projections and the output.
    pub dim: u64,
    pub heads: u64,
    /// Dropout on the attention weights (training only).
    pub dropout: f32,
    pub query: LinearParams,
    pub key: LinearParams,
    pub value: LinearParams,
    pub in_q: LinearParams,
    pub in_k: LinearParams,
    pub in_v: LinearParams,
    pub out: LinearParams,
}

/// See [`Node::SeqEncoder`].
#[derive(Debug, Clone, PartialEq)]
pub struct SeqEncoderBlock {
    pub name: String,
    pub kind: EncoderKind,
    pub query_width: u64,
    pub seq_width: u64,
    pub steps: u64,
    /// Steps read (`max_seq_length`, or all `steps` when 0).
    pub max_steps: u64,
}

impl SeqEncoderBlock {
    /// Output width: the sequence width for the encoders that pool all
    /// steps into one; one sequence width per window plus the query's for
    /// multi-window DIN; `multihead_attn_dim` for self-attention.
    pub fn width(&self) -> u64 {
        match &self.kind {
            EncoderKind::MultiWindowDin { windows, .. } => {
                self.seq_width * (windows.len() as u64 + 1)
            }
            EncoderKind::SelfAttention(a) => a.dim,
            _ => self.seq_width,
        }
    }
}

impl Node {
    /// A short name for messages and drawings.
    pub fn name(&self) -> String {
        match self {
            Node::InputColumn { name } => name.clone(),
            Node::Feature(f) => f.spec.name.clone(),
            Node::EmbeddingTable(t) => t.name.clone(),
            Node::FeatureGroup { name, .. } => name.clone(),
            Node::Mlp(m) => m.name.clone(),
            Node::Gate(g) => g.name.clone(),
            Node::Concat { name } => name.clone(),
            Node::Tower(t) => t.name.clone(),
            Node::Loss { task, loss } => format!("{task}.{}", loss_name(loss.kind)),
            Node::Metric { task, metric } => format!("{task}.{}", metric_name(metric.kind)),
            Node::FusedExperts(f) => f.name.clone(),
            Node::SequenceGroup(g) => g.name.clone(),
            Node::SeqEncoder(e) => e.name.clone(),
            Node::GateNu(g) => g.name.clone(),
            Node::Product { name, .. } | Node::StopGradient { name } => name.clone(),
            Node::VariationalDropout(v) => v.name.clone(),
            Node::Intervention(v) => v.name.clone(),
            Node::Norm { name, .. } => name.clone(),
        }
    }

    /// Output shapes per port from the input edges (sorted by port).
    pub fn infer(&self, inputs: &[&Edge]) -> Result<Vec<Shape>, String> {
        let one = |w: u64| -> Result<u64, String> {
            match inputs {
                [e] if e.shape.len() == 2 && e.shape[0] == BATCH && e.shape[1] == w as i64 => Ok(w),
                [e] => Err(format!("expects [B, {w}], got {:?}", e.shape)),
                _ => Err(format!("expects one input, got {}", inputs.len())),
            }
        };
        match self {
            Node::InputColumn { .. } => Ok(vec![vec![BATCH]]),
            Node::EmbeddingTable(t) => Ok(vec![vec![t.rows as i64, t.dim as i64]]),
            Node::Feature(f) if f.spec.sequence_length > 0 => Ok(vec![vec![
                BATCH,
                f.spec.sequence_length as i64,
                f.width as i64,
            ]]),
            Node::Feature(f) => Ok(vec![batch_shape(f.width)]),
            Node::SequenceGroup(g) => {
                let (mut q, mut s) = (0i64, 0i64);
                for (k, e) in inputs.iter().enumerate() {
                    match e.shape.as_slice() {
                        [BATCH, w] if k < g.queries => q += w,
                        [BATCH, l, w] if k >= g.queries && *l == g.steps as i64 => s += w,
                        other => return Err(format!("reads a {other:?} feature on port {k}")),
                    }
                }
                if q != g.query_width as i64 || s != g.seq_width as i64 {
                    return Err(format!(
                        "features are {q} + {s} wide, the group says {} + {}",
                        g.query_width, g.seq_width
                    ));
                }
                let l = g.steps as i64;
                Ok(vec![
                    batch_shape(g.query_width),
                    vec![BATCH, l, g.seq_width as i64],
                    vec![BATCH, l],
                ])
            }
            Node::SeqEncoder(e) => {
                let l = e.steps as i64;
                let want = [
                    batch_shape(e.query_width),
                    vec![BATCH, l, e.seq_width as i64],
                    vec![BATCH, l],
                ];
                let got: Vec<&Shape> = inputs.iter().map(|x| &x.shape).collect();
                if got.len() != 3 || got.iter().zip(&want).any(|(g, w)| *g != w) {
                    return Err(format!("reads {got:?}, expected {want:?}"));
                }
                Ok(vec![batch_shape(e.width())])
            }
            Node::FeatureGroup { width, .. } => {
                let sum: i64 = inputs
                    .iter()
                    .map(|e| e.shape.get(1).copied().unwrap_or(0))
                    .sum();
                if sum != *width as i64 {
                    return Err(format!(
                        "features sum to {sum} wide, the group says {width}"
                    ));
                }
                Ok(vec![batch_shape(*width)])
            }
            Node::Mlp(m) => {
                one(m.in_dim())?;
                Ok(vec![batch_shape(m.out_dim())])
            }
            Node::Concat { .. } => {
                let mut sum = 0;
                for e in inputs {
                    if e.shape.len() != 2 || e.shape[0] != BATCH {
                        return Err(format!("concatenates a {:?} input", e.shape));
                    }
                    sum += e.shape[1];
                }
                Ok(vec![vec![BATCH, sum]])
            }
            Node::Tower(t) => {
                one(t.in_dim())?;
                Ok(vec![batch_shape(t.out_dim())])
            }
            Node::Norm { width, .. } => {
                one(*width)?;
                Ok(vec![batch_shape(*width)])
            }
            Node::Intervention(v) => match inputs {
                [a, b]
                    if a.shape == batch_shape(v.base_dim)
                        && b.shape == batch_shape(v.source_dim) =>
                {
                    Ok(vec![batch_shape(v.base_dim)])
                }
                _ => Err(format!(
                    "expects [B, {}] and [B, {}], got {:?}",
                    v.base_dim,
                    v.source_dim,
                    inputs.iter().map(|e| &e.shape).collect::<Vec<_>>()
                )),
            },
            Node::VariationalDropout(v) => {
                one(v.width())?;
                Ok(vec![batch_shape(v.width())])
            }
            Node::GateNu(g) => {
                one(g.first.in_dim)?;
                Ok(vec![batch_shape(g.second.out_dim)])
            }
            Node::StopGradient { .. } => match inputs {
                [e] if e.shape.len() == 2 && e.shape[0] == BATCH => Ok(vec![e.shape.clone()]),
                _ => Err(format!("expects one [B, d] input, got {}", inputs.len())),
            },
            Node::Product { .. } => match inputs {
                [a, b] if a.shape == b.shape && a.shape.len() == 2 && a.shape[0] == BATCH => {
                    Ok(vec![a.shape.clone()])
                }
                [a, b] => Err(format!("multiplies {:?} by {:?}", a.shape, b.shape)),
                _ => Err(format!("expects two inputs, got {}", inputs.len())),
            },
            Node::Loss { .. } | Node::Metric { .. } => Ok(vec![]),
            Node::Gate(g) => infer_gate(g, inputs),
            Node::FusedExperts(f) => {
                one(f.in_dim())?;
                let e = f.experts.len() as i64;
                let mut out = vec![vec![e, BATCH, f.out_dim() as i64]];
                for h in &f.gates {
                    out.push(batch_shape(h.linear.out_dim));
                }
                Ok(out)
            }
        }
    }
}

fn infer_gate(g: &GateBlock, inputs: &[&Edge]) -> Result<Vec<Shape>, String> {
    let Some((sel, experts)) = inputs.split_first() else {
        return Err("has no selector".into());
    };
    if sel.dst_port != 0 {
        return Err("has no selector on port 0".into());
    }
    let want = match &g.head {
        Some(h) => h.in_dim,
        None => g.num_experts,
    };
    if sel.shape != batch_shape(want) {
        return Err(format!("selector is {:?}, expected [B, {want}]", sel.shape));
    }
    let mut count = 0u64;
    for e in experts {
        let d = match (e.shape.as_slice(), e.experts) {
            ([BATCH, d], None) => {
                count += 1;
                *d
            }
            ([n, BATCH, d], Some((start, len))) if (start + len) as i64 <= *n => {
                count += len as u64;
                *d
            }
            (s, r) => return Err(format!("mixes an expert input {s:?} (range {r:?})")),
        };
        if d != g.expert_dim as i64 {
            return Err(format!(
                "mixes experts of different widths ({d} and {})",
                g.expert_dim
            ));
        }
    }
    if count != g.num_experts {
        return Err(format!(
            "mixes {count} experts, its linear has {}",
            g.num_experts
        ));
    }
    Ok(vec![batch_shape(g.expert_dim)])
}

/// Short name of a loss kind.
pub(crate) fn loss_name(kind: i32) -> &'static str {
    match plan::LossKind::try_from(kind) {
        Ok(plan::LossKind::BinaryCrossEntropy) => "binary_cross_entropy",
        Ok(plan::LossKind::SoftmaxCrossEntropy) => "softmax_cross_entropy",
        Ok(plan::LossKind::L2Loss) => "l2_loss",
        Ok(plan::LossKind::BinaryFocalLoss) => "binary_focal_loss",
        _ => "loss",
    }
}

/// Short name of a metric kind.
pub(crate) fn metric_name(kind: i32) -> &'static str {
    match plan::MetricKind::try_from(kind) {
        Ok(plan::MetricKind::Auc) => "auc",
        Ok(plan::MetricKind::GroupedAuc) => "grouped_auc",
        Ok(plan::MetricKind::MeanSquaredError) => "mean_squared_error",
        Ok(plan::MetricKind::MeanAbsoluteError) => "mean_absolute_error",
        Ok(plan::MetricKind::Accuracy) => "accuracy",
        Ok(plan::MetricKind::NormalizedEntropy) => "normalized_entropy",
        _ => "metric",
    }
}

/// The lowered model: the graph plus what the model kind is.
#[derive(Debug, Clone)]
pub struct ModelGraph {
    pub graph: StableDiGraph<Node, Edge>,
    /// "ple", "mmoe", "dbmtl" or "simple_multi_task".
    pub model_kind: String,
    /// Extraction layers (PLE), 1 for one MoE layer, 0 without experts.
    pub layers: usize,
}

impl ModelGraph {
    /// An empty graph of a model kind.
    pub fn new(model_kind: &str) -> Self {
        ModelGraph {
            graph: StableDiGraph::new(),
            model_kind: model_kind.to_string(),
            layers: 0,
        }
    }

    /// Input edges of `n` sorted by destination port.
    pub fn inputs(&self, n: NodeIndex) -> Vec<(NodeIndex, &Edge)> {
        let mut v: Vec<(NodeIndex, &Edge)> = self
            .graph
            .edges_directed(n, Direction::Incoming)
            .map(|e| (e.source(), e.weight()))
            .collect();
        v.sort_by_key(|(_, e)| e.dst_port);
        v
    }

    /// Output edges of `n` (destination, edge).
    pub fn outputs(&self, n: NodeIndex) -> Vec<(NodeIndex, &Edge)> {
        let mut v: Vec<(NodeIndex, &Edge)> = self
            .graph
            .edges_directed(n, Direction::Outgoing)
            .map(|e| (e.target(), e.weight()))
            .collect();
        v.sort_by_key(|(t, e)| (t.index(), e.dst_port));
        v
    }

    /// The feature group node.
    pub fn feature_group(&self) -> Option<NodeIndex> {
        self.graph
            .node_indices()
            .find(|&n| matches!(self.graph[n], Node::FeatureGroup { .. }))
    }

    /// Checks consistency: no cycle, unique input ports, and every edge's
    /// shape equal to what its source infers from its own inputs.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if petgraph::algo::is_cyclic_directed(&self.graph) {
            problems.push("the graph has a cycle".to_string());
        }
        for n in self.graph.node_indices() {
            let node = &self.graph[n];
            let inputs = self.inputs(n);
            let is_feature_side = matches!(
                node,
                Node::InputColumn { .. } | Node::EmbeddingTable(_) | Node::Feature(_)
            );
            if !is_feature_side {
                for w in inputs.windows(2) {
                    if w[0].1.dst_port == w[1].1.dst_port {
                        problems.push(format!(
                            "{}: two inputs on port {}",
                            node.name(),
                            w[0].1.dst_port
                        ));
                    }
                }
            }
            let edges: Vec<&Edge> = inputs.iter().map(|(_, e)| *e).collect();
            let inferred = if is_feature_side {
                node.infer(&[])
            } else {
                node.infer(&edges)
            };
            match inferred {
                Err(msg) => problems.push(format!("{}: {msg}", node.name())),
                Ok(shapes) => {
                    for (_, e) in self.outputs(n) {
                        match shapes.get(e.src_port as usize) {
                            Some(s) if *s == e.shape => {}
                            Some(s) => problems.push(format!(
                                "{}: output {} is {s:?} but its edge says {:?}",
                                node.name(),
                                e.src_port,
                                e.shape
                            )),
                            None => problems.push(format!(
                                "{}: has no output port {}",
                                node.name(),
                                e.src_port
                            )),
                        }
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}
