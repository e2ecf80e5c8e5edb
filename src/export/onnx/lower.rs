//! Plan ops to ONNX nodes, one function per `OpKind`, each computing what
//! the candle reference (`runtime::exec::candle`) computes at evaluation,
//! in the same order of floating-point operations where that matters: the
//! logistic function is plec's `(tanh(x / 2) + 1) / 2` and not ONNX's
//! `Sigmoid`, so a probability near 0 or 1 is the number `plec predict`
//! gives, not a differently rounded one.
//!
//! Parameters and embedding tables become initializers; a weight that ONNX
//! wants in another layout (a linear's `[out, in]` as MatMul's `[in, out]`)
//! is rearranged here once. An op the export cannot express is an error
//! naming it, never a different model.

use std::collections::HashMap;

use super::graph::{attr_f, attr_i, attr_ints, value_info, Builder, Dim};
use super::proto::{GraphProto, ValueInfoProto, FLOAT, INT64};
use super::ExportError;
use crate::export::contract::{GraphInput, InputKind};
use crate::plan::validate::Analysis;
use crate::proto::plan::{Activation, FeatureKind, Op, OpKind, Parameter, Plan, Pooling};
use crate::runtime::exec::candle::ops::MASKED_SCORE;

/// The symbolic batch dimension of every input and output.
pub(crate) const BATCH: &str = "batch";

/// How a parameter is laid out as an initializer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Layout {
    /// As in the plan.
    Plain,
    /// The last two axes swapped (`[.., out, in]` to `[.., in, out]`).
    Transposed,
    /// The plan's values with other dimensions of the same element count
    /// (a size-1 axis added for broadcasting).
    Dims(Vec<i64>),
}

/// The lowering of one plan into a graph.
pub(crate) struct Lowering<'a> {
    plan: &'a Plan,
    analysis: &'a Analysis,
    b: Builder,
    /// Per plan value, its ONNX value name once computed.
    values: Vec<Option<String>>,
    /// Per plan feature, its graph input.
    feature_inputs: Vec<Option<String>>,
    /// Per domain label index, its graph input.
    domain_inputs: HashMap<usize, String>,
    /// Per plan feature, its pooled embedding (or padded steps).
    embedded: Vec<Option<String>>,
    /// Per plan table, its initializer.
    tables: Vec<Option<String>>,
    params: HashMap<(u32, Layout), String>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
}

fn unsupported(op: &Op, kind: OpKind, why: impl Into<String>) -> ExportError {
    ExportError::Unsupported {
        op: op.name.clone(),
        kind: kind.as_str_name().to_string(),
        why: why.into(),
    }
}

fn invalid(msg: impl Into<String>) -> ExportError {
    ExportError::InvalidPlan(msg.into())
}

impl<'a> Lowering<'a> {
    pub(crate) fn new(plan: &'a Plan, analysis: &'a Analysis) -> Self {
        Lowering {
            plan,
            analysis,
            b: Builder::default(),
            values: vec![None; plan.values.len()],
            feature_inputs: vec![None; plan.features.len()],
            domain_inputs: HashMap::new(),
            embedded: vec![None; plan.features.len()],
            tables: vec![None; plan.tables.len()],
            params: HashMap::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// Declares the graph inputs of the contract.
    pub(crate) fn declare_inputs(&mut self, inputs: &[GraphInput]) -> Result<(), ExportError> {
        let batch = Dim::Named(BATCH.to_string());
        for input in inputs {
            if !self.b.reserve(&input.name) {
                return Err(invalid(format!(
                    "input name \"{}\" is used twice",
                    input.name
                )));
            }
            let info = match &input.kind {
                InputKind::Ids { feature } => {
                    self.feature_inputs[*feature] = Some(input.name.clone());
                    let k = Dim::Named(format!("{}_len", input.name));
                    value_info(&input.name, INT64, &[batch.clone(), k])
                }
                InputKind::Dense { feature, dim } => {
                    self.feature_inputs[*feature] = Some(input.name.clone());
                    value_info(
                        &input.name,
                        FLOAT,
                        &[batch.clone(), Dim::Fixed(*dim as i64)],
                    )
                }
                InputKind::SequenceIds { feature, steps } => {
                    self.feature_inputs[*feature] = Some(input.name.clone());
                    value_info(
                        &input.name,
                        INT64,
                        &[batch.clone(), Dim::Fixed(*steps as i64)],
                    )
                }
                InputKind::SequenceDense {
                    feature,
                    steps,
                    dim,
                } => {
                    self.feature_inputs[*feature] = Some(input.name.clone());
                    value_info(
                        &input.name,
                        FLOAT,
                        &[
                            batch.clone(),
                            Dim::Fixed(*steps as i64),
                            Dim::Fixed(*dim as i64),
                        ],
                    )
                }
                InputKind::Domain { label } => {
                    self.domain_inputs.insert(*label, input.name.clone());
                    value_info(&input.name, INT64, std::slice::from_ref(&batch))
                }
            };
            self.inputs.push(info);
        }
        Ok(())
    }

    /// Lowers every op in plan order.
    pub(crate) fn lower_ops(&mut self) -> Result<(), ExportError> {
        let plan = self.plan;
        for (oi, op) in plan.ops.iter().enumerate() {
            let kind = OpKind::try_from(op.kind).unwrap_or(OpKind::OpUnspecified);
            let out = self.op(oi, op, kind)?;
            let slot = self
                .values
                .get_mut(op.output as usize)
                .ok_or_else(|| invalid(format!("op \"{}\" writes no value", op.name)))?;
            *slot = Some(out);
        }
        Ok(())
    }

    /// Reserves the output names (before any op takes a value name).
    pub(crate) fn reserve_outputs(&mut self) -> Result<(), ExportError> {
        for task in &self.plan.tasks {
            let (logits, pred) = output_names(task);
            for name in [logits, pred] {
                if !self.b.reserve(&name) {
                    return Err(ExportError::Contract(
                        crate::export::contract::ContractError::NameClash {
                            what: "output",
                            name,
                        },
                    ));
                }
            }
        }
        Ok(())
    }

    /// Adds `logits_<tower>` and `probs_<tower>` (`y_<tower>` for a
    /// regression task) for every task, as `plec predict` computes them.
    pub(crate) fn task_outputs(&mut self) -> Result<(), ExportError> {
        let batch = Dim::Named(BATCH.to_string());
        let labels = self
            .plan
            .data
            .as_ref()
            .map(|d| d.label_fields.clone())
            .unwrap_or_default();
        let plan = self.plan;
        for task in &plan.tasks {
            let logits = self.value(task.logits)?;
            let c = task.num_class.max(1) as i64;
            let logits = if task.domain_count > 1 {
                self.pick_domain(task, &labels, &logits, c)?
            } else {
                logits
            };
            let t = &task.tower_name;
            let (logits_name, pred_name) = output_names(task);
            let regression = crate::runtime::loss::is_regression(task);
            self.b
                .node_into("Identity", &[&logits], vec![], &logits_name);
            if regression {
                self.b.node_into("Identity", &[&logits], vec![], &pred_name);
            } else if c == 1 {
                let p = self.sigmoid(&logits, &format!("{t}.sigmoid"));
                self.b.node_into("Identity", &[&p], vec![], &pred_name);
            } else {
                self.b
                    .node_into("Softmax", &[&logits], vec![attr_i("axis", 1)], &pred_name);
            }
            let dims = [batch.clone(), Dim::Fixed(c)];
            self.outputs.push(value_info(&logits_name, FLOAT, &dims));
            self.outputs.push(value_info(&pred_name, FLOAT, &dims));
        }
        Ok(())
    }

    /// The graph.
    pub(crate) fn finish(self, name: &str) -> GraphProto {
        GraphProto {
            node: self.b.nodes,
            name: Some(name.to_string()),
            initializer: self.b.initializers,
            doc_string: None,
            input: self.inputs,
            output: self.outputs,
            value_info: Vec::new(),
        }
    }

    /// Each row's block of `num_class` logits of the domain its domain
    /// input names, as `runtime::loss::task_logits` gathers it.
    fn pick_domain(
        &mut self,
        task: &crate::proto::plan::Task,
        labels: &[String],
        logits: &str,
        c: i64,
    ) -> Result<String, ExportError> {
        let label = labels
            .iter()
            .position(|l| *l == task.domain_label)
            .ok_or_else(|| invalid(format!("no label \"{}\"", task.domain_label)))?;
        let dom = self
            .domain_inputs
            .get(&label)
            .cloned()
            .ok_or_else(|| invalid(format!("no input for label \"{}\"", task.domain_label)))?;
        let axes1 = self.b.ints(&[1]);
        let col = self
            .b
            .node("Unsqueeze", &[&dom, &axes1], vec![], "domain.col");
        let cc = self.b.int_scalar(c);
        let first = self.b.node("Mul", &[&col, &cc], vec![], "domain.first");
        let ks: Vec<i64> = (0..c).collect();
        let range = self.b.ints_shaped(&[1, c], &ks);
        let index = self
            .b
            .node("Add", &[&first, &range], vec![], "domain.index");
        Ok(self.b.node(
            "GatherElements",
            &[logits, &index],
            vec![attr_i("axis", 1)],
            &format!("{}.domain_logits", task.tower_name),
        ))
    }

    fn value(&self, v: u32) -> Result<String, ExportError> {
        self.values
            .get(v as usize)
            .cloned()
            .flatten()
            .ok_or_else(|| invalid(format!("value {v} is read before any op computes it")))
    }

    fn rank(&self, v: u32) -> usize {
        self.plan
            .values
            .get(v as usize)
            .map_or(0, |v| v.shape.len())
    }

    fn axis(&self, op: &Op, kind: OpKind, rank: usize) -> Result<i64, ExportError> {
        crate::plan::resolve_axis(op.axis as i64, rank)
            .map(|a| a as i64)
            .ok_or_else(|| unsupported(op, kind, format!("axis {} for rank {rank}", op.axis)))
    }

    fn param(&self, op: &Op, i: usize) -> Result<(u32, &'a Parameter), ExportError> {
        let idx = *op
            .params
            .get(i)
            .ok_or_else(|| invalid(format!("op \"{}\" lacks parameter {i}", op.name)))?;
        let plan: &'a Plan = self.plan;
        let p = plan
            .params
            .get(idx as usize)
            .ok_or_else(|| invalid(format!("op \"{}\" reads parameter {idx}", op.name)))?;
        let n: u64 = p.shape.iter().product();
        if p.data.len() as u64 != n * 4 {
            return Err(invalid(format!(
                "parameter \"{}\" holds {} bytes for shape {:?}; export a plan with its \
                 parameters (one `plec compile` or `plec run` wrote)",
                p.name,
                p.data.len(),
                p.shape
            )));
        }
        Ok((idx, p))
    }

    /// The initializer of parameter `i` of `op` in `layout`.
    fn init(&mut self, op: &Op, i: usize, layout: Layout) -> Result<String, ExportError> {
        let (idx, p) = self.param(op, i)?;
        if let Some(n) = self.params.get(&(idx, layout.clone())) {
            return Ok(n.clone());
        }
        let shape: Vec<i64> = p.shape.iter().map(|&d| d as i64).collect();
        let name = match &layout {
            Layout::Plain => self.b.init_f32(&p.name, &shape, p.data.clone()),
            Layout::Dims(dims) => {
                let n: i64 = dims.iter().product();
                if n != shape.iter().product::<i64>() {
                    return Err(invalid(format!(
                        "parameter \"{}\" of shape {shape:?} cannot be viewed as {dims:?}",
                        p.name
                    )));
                }
                self.b.init_f32(&p.name, dims, p.data.clone())
            }
            Layout::Transposed => {
                let r = shape.len();
                if r < 2 {
                    return Err(invalid(format!(
                        "parameter \"{}\" of shape {shape:?} is not a matrix",
                        p.name
                    )));
                }
                let (rows, cols) = (shape[r - 2] as usize, shape[r - 1] as usize);
                let mut dims = shape.clone();
                dims.swap(r - 2, r - 1);
                let data = transpose_last2(&p.data, rows, cols);
                self.b.init_f32(&format!("{}.T", p.name), &dims, data)
            }
        };
        self.params.insert((idx, layout), name.clone());
        Ok(name)
    }

    /// The initializer of table `t`, with its trained rows or, for a plan
    /// never trained, the rows the runtime would initialize it with.
    fn table(&mut self, t: usize) -> Result<String, ExportError> {
        if let Some(n) = self.tables.get(t).cloned().flatten() {
            return Ok(n);
        }
        let table = self
            .plan
            .tables
            .get(t)
            .ok_or_else(|| invalid(format!("table {t} does not exist")))?;
        let n = table
            .num_rows
            .checked_mul(table.dim as u64)
            .ok_or_else(|| invalid(format!("table \"{}\" is too large", table.name)))?;
        let data = crate::runtime::embedding::table_le_bytes(table, n as usize).map_err(invalid)?;
        let dims = [table.num_rows as i64, table.dim as i64];
        let name = self
            .b
            .init_f32(&format!("table.{}", table.name), &dims, data);
        self.tables[t] = Some(name.clone());
        Ok(name)
    }

    /// Feature `f`'s embedding: bags pooled to `[B, D]`, or a sequence's
    /// steps `[B, L, D]` (zero at padding), from its padded id input.
    fn embedding(&mut self, f: usize) -> Result<String, ExportError> {
        if let Some(e) = self.embedded[f].clone() {
            return Ok(e);
        }
        let plan = self.plan;
        let spec = &plan.features[f];
        let ids = self.feature_inputs[f]
            .clone()
            .ok_or_else(|| invalid(format!("feature \"{}\" has no input", spec.name)))?;
        let table = self.table(spec.table as usize)?;
        let n = &spec.name;
        let zero = self.b.int_scalar(0);
        let valid = self.b.node(
            "GreaterOrEqual",
            &[&ids, &zero],
            vec![],
            &format!("{n}.valid"),
        );
        let safe = self.b.node(
            "Where",
            &[&valid, &ids, &zero],
            vec![],
            &format!("{n}.safe_ids"),
        );
        let rows = self.b.node(
            "Gather",
            &[&table, &safe],
            vec![attr_i("axis", 0)],
            &format!("{n}.rows"),
        );
        let mask = self.b.node(
            "Cast",
            &[&valid],
            vec![attr_i("to", FLOAT as i64)],
            &format!("{n}.mask"),
        );
        let axes2 = self.b.ints(&[2]);
        let mask3 = self
            .b
            .node("Unsqueeze", &[&mask, &axes2], vec![], &format!("{n}.mask3"));
        let kept = self
            .b
            .node("Mul", &[&rows, &mask3], vec![], &format!("{n}.kept"));
        let out = if spec.sequence_length > 0 {
            kept
        } else {
            let axes1 = self.b.ints(&[1]);
            let sum = self.b.node(
                "ReduceSum",
                &[&kept, &axes1],
                vec![attr_i("keepdims", 0)],
                &format!("{n}.sum"),
            );
            if Pooling::try_from(spec.pooling) == Ok(Pooling::Mean) {
                // plec multiplies by 1 / max(n, 1) (runtime::embedding::pool).
                let count = self.b.node(
                    "ReduceSum",
                    &[&mask, &axes1],
                    vec![attr_i("keepdims", 1)],
                    &format!("{n}.count"),
                );
                let one = self.b.float_scalar(1.0);
                let count = self
                    .b
                    .node("Max", &[&count, &one], vec![], &format!("{n}.count1"));
                let inv = self
                    .b
                    .node("Reciprocal", &[&count], vec![], &format!("{n}.inv"));
                self.b
                    .node("Mul", &[&sum, &inv], vec![], &format!("{n}.mean"))
            } else {
                sum
            }
        };
        self.embedded[f] = Some(out.clone());
        Ok(out)
    }

    /// plec's logistic function, `(tanh(x / 2) + 1) / 2` (`ops::sigmoid`).
    fn sigmoid(&mut self, x: &str, hint: &str) -> String {
        let half = self.b.float_scalar(0.5);
        let one = self.b.float_scalar(1.0);
        let h = self.b.node("Mul", &[x, &half], vec![], hint);
        let t = self.b.node("Tanh", &[&h], vec![], hint);
        let a = self.b.node("Add", &[&t, &one], vec![], hint);
        self.b.node("Mul", &[&a, &half], vec![], hint)
    }

    /// `q [B, Dq]` zero-padded to `d` and repeated over the steps of `s`
    /// `[B, L, d]` (`ops::repeat_query`).
    fn repeat_query(&mut self, q: &str, q_width: i64, s: &str, d: i64, hint: &str) -> String {
        let q = self.pad_query(q, q_width, d, hint);
        let axes1 = self.b.ints(&[1]);
        let q3 = self.b.node("Unsqueeze", &[&q, &axes1], vec![], hint);
        let shape = self.b.node("Shape", &[s], vec![], hint);
        self.b.node("Expand", &[&q3, &shape], vec![], hint)
    }

    fn pad_query(&mut self, q: &str, q_width: i64, d: i64, hint: &str) -> String {
        if q_width >= d {
            return q.to_string();
        }
        let pads = self.b.ints(&[0, 0, 0, d - q_width]);
        self.b.node("Pad", &[q, &pads], vec![], hint)
    }

    fn width(&self, v: u32) -> i64 {
        self.plan
            .values
            .get(v as usize)
            .and_then(|v| v.shape.last().copied())
            .unwrap_or(-1)
    }

    fn op(&mut self, oi: usize, op: &Op, kind: OpKind) -> Result<String, ExportError> {
        let hint = op.name.as_str();
        let plan = self.plan;
        let ins = op
            .inputs
            .iter()
            .map(|&v| self.value(v))
            .collect::<Result<Vec<_>, _>>()?;
        let input = |i: usize| -> Result<String, ExportError> {
            ins.get(i)
                .cloned()
                .ok_or_else(|| invalid(format!("op \"{}\" lacks input {i}", op.name)))
        };
        Ok(match kind {
            OpKind::FeatureGroup => {
                let mut parts = Vec::with_capacity(op.features.len());
                for &f in &op.features {
                    let f = f as usize;
                    let spec = plan
                        .features
                        .get(f)
                        .ok_or_else(|| invalid(format!("op \"{}\" reads feature {f}", op.name)))?;
                    if is_dense(plan, f) {
                        parts.push(self.feature_inputs[f].clone().ok_or_else(|| {
                            invalid(format!("feature \"{}\" has no input", spec.name))
                        })?);
                    } else {
                        parts.push(self.embedding(f)?);
                    }
                }
                let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
                self.b.node("Concat", &refs, vec![attr_i("axis", 1)], hint)
            }
            OpKind::Linear => {
                let x = input(0)?;
                let w = self.init(op, 0, Layout::Transposed)?;
                let y = self.b.node("MatMul", &[&x, &w], vec![], hint);
                if op.params.len() > 1 {
                    let bias = self.init(op, 1, Layout::Plain)?;
                    self.b.node("Add", &[&y, &bias], vec![], hint)
                } else {
                    y
                }
            }
            OpKind::BatchedLinear => {
                let x = input(0)?;
                // [B, in] or [E, B, in] times [E, in, out]: MatMul's
                // broadcasting gives [E, B, out] either way.
                let w = self.init(op, 0, Layout::Transposed)?;
                let y = self.b.node("MatMul", &[&x, &w], vec![], hint);
                if op.params.len() > 1 {
                    let (_, p) = self.param(op, 1)?;
                    let dims = match p.shape.as_slice() {
                        &[e, o] => vec![e as i64, 1, o as i64],
                        s => return Err(unsupported(op, kind, format!("bias of shape {s:?}"))),
                    };
                    let bias = self.init(op, 1, Layout::Dims(dims))?;
                    self.b.node("Add", &[&y, &bias], vec![], hint)
                } else {
                    y
                }
            }
            OpKind::BatchNorm => {
                let x = input(0)?;
                let rank = self.rank(op.inputs[0]);
                let ax = self.analysis.batch_axis.get(oi).copied().unwrap_or(0);
                let layout = |p: &Parameter| -> Result<Layout, ExportError> {
                    if op.over_steps && rank == 3 {
                        // Statistics per channel over batch and steps: the
                        // `[C]` parameters broadcast over `[B, L, C]`.
                        return Ok(Layout::Plain);
                    }
                    let mut dims: Vec<i64> = p.shape.iter().map(|&d| d as i64).collect();
                    if dims.len() + 1 != rank || ax > dims.len() {
                        return Err(unsupported(
                            op,
                            kind,
                            format!("parameters of shape {:?} for a rank-{rank} input", p.shape),
                        ));
                    }
                    dims.insert(ax, 1);
                    Ok(Layout::Dims(dims))
                };
                let mut names = Vec::with_capacity(4);
                for i in 0..4 {
                    let (_, p) = self.param(op, i)?;
                    let l = layout(p)?;
                    names.push(self.init(op, i, l)?);
                }
                let eps = if op.eps > 0.0 {
                    op.eps
                } else {
                    crate::runtime::params::DEFAULT_NORM_EPS as f32
                };
                let eps = self.b.float_scalar(eps);
                let (gamma, beta, mean, var) = (&names[0], &names[1], &names[2], &names[3]);
                let v = self.b.node("Add", &[var, &eps], vec![], hint);
                let sd = self.b.node("Sqrt", &[&v], vec![], hint);
                let inv = self.b.node("Reciprocal", &[&sd], vec![], hint);
                let xc = self.b.node("Sub", &[&x, mean], vec![], hint);
                let xhat = self.b.node("Mul", &[&xc, &inv], vec![], hint);
                let y = self.b.node("Mul", &[&xhat, gamma], vec![], hint);
                self.b.node("Add", &[&y, beta], vec![], hint)
            }
            OpKind::LayerNorm => {
                let x = input(0)?;
                let gamma = self.init(op, 0, Layout::Plain)?;
                let beta = self.init(op, 1, Layout::Plain)?;
                let eps = if op.eps > 0.0 {
                    op.eps
                } else {
                    crate::runtime::params::DEFAULT_NORM_EPS as f32
                };
                let eps = self.b.float_scalar(eps);
                let last = vec![attr_ints("axes", &[-1]), attr_i("keepdims", 1)];
                let mean = self.b.node("ReduceMean", &[&x], last.clone(), hint);
                let xc = self.b.node("Sub", &[&x, &mean], vec![], hint);
                let sq = self.b.node("Mul", &[&xc, &xc], vec![], hint);
                let var = self.b.node("ReduceMean", &[&sq], last, hint);
                let v = self.b.node("Add", &[&var, &eps], vec![], hint);
                let sd = self.b.node("Sqrt", &[&v], vec![], hint);
                let inv = self.b.node("Reciprocal", &[&sd], vec![], hint);
                let xhat = self.b.node("Mul", &[&xc, &inv], vec![], hint);
                let y = self.b.node("Mul", &[&xhat, &gamma], vec![], hint);
                self.b.node("Add", &[&y, &beta], vec![], hint)
            }
            OpKind::Activation => {
                let x = input(0)?;
                let act = Activation::try_from(op.activation).unwrap_or(Activation::ActNone);
                self.activation(op, kind, act, &x)?
            }
            // Identities at evaluation: the value is the input's.
            OpKind::Dropout | OpKind::StopGradient => input(0)?,
            OpKind::Concat => {
                let xs = (0..op.inputs.len())
                    .map(&input)
                    .collect::<Result<Vec<_>, _>>()?;
                let ax = self.axis(op, kind, self.rank(op.inputs[0]))?;
                let refs: Vec<&str> = xs.iter().map(String::as_str).collect();
                self.b.node("Concat", &refs, vec![attr_i("axis", ax)], hint)
            }
            OpKind::Slice => {
                let x = input(0)?;
                let ax = self.axis(op, kind, self.rank(op.inputs[0]))?;
                let starts = self.b.ints(&[op.start]);
                let ends = self.b.ints(&[op.start + op.length]);
                let axes = self.b.ints(&[ax]);
                self.b
                    .node("Slice", &[&x, &starts, &ends, &axes], vec![], hint)
            }
            OpKind::Stack => {
                let axes0 = self.b.ints(&[0]);
                let mut parts = Vec::with_capacity(op.inputs.len());
                for i in 0..op.inputs.len() {
                    let x = input(i)?;
                    parts.push(self.b.node("Unsqueeze", &[&x, &axes0], vec![], hint));
                }
                let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
                self.b.node("Concat", &refs, vec![attr_i("axis", 0)], hint)
            }
            OpKind::Softmax => {
                let x = input(0)?;
                let ax = self.axis(op, kind, self.rank(op.inputs[0]))?;
                self.b
                    .node("Softmax", &[&x], vec![attr_i("axis", ax)], hint)
            }
            OpKind::GateMix => {
                // w [B, K], e [K, B, D]: sum_k w[b, k] e[k, b, :].
                let (w, e) = (input(0)?, input(1)?);
                let wt = self
                    .b
                    .node("Transpose", &[&w], vec![attr_ints("perm", &[1, 0])], hint);
                let axes2 = self.b.ints(&[2]);
                let wt3 = self.b.node("Unsqueeze", &[&wt, &axes2], vec![], hint);
                let prod = self.b.node("Mul", &[&e, &wt3], vec![], hint);
                let axes0 = self.b.ints(&[0]);
                self.b.node(
                    "ReduceSum",
                    &[&prod, &axes0],
                    vec![attr_i("keepdims", 0)],
                    hint,
                )
            }
            OpKind::SequenceEmbed => {
                let mut parts = Vec::with_capacity(op.features.len());
                for &f in &op.features {
                    let f = f as usize;
                    let input = self
                        .feature_inputs
                        .get(f)
                        .cloned()
                        .flatten()
                        .ok_or_else(|| invalid(format!("op \"{}\" reads feature {f}", op.name)))?;
                    if is_dense(plan, f) {
                        // Already [B, L, dim], zero past each row's steps.
                        parts.push(input);
                    } else {
                        parts.push(self.embedding(f)?);
                    }
                }
                let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
                self.b.node("Concat", &refs, vec![attr_i("axis", 2)], hint)
            }
            OpKind::SequenceMask => {
                let first = *op.features.first().ok_or_else(|| {
                    invalid(format!("op \"{}\" reads no sequence feature", op.name))
                })? as usize;
                // The steps of a dense feature are not marked in its input;
                // an embedded feature of the same group has as many steps.
                let f = if is_dense(plan, first) {
                    let group = plan.features.get(first).map(|s| s.sequence_group.clone());
                    (0..plan.features.len())
                        .find(|&g| {
                            !is_dense(plan, g)
                                && Some(&plan.features[g].sequence_group) == group.as_ref()
                                && plan.features[g].sequence_length > 0
                                && self.feature_inputs[g].is_some()
                        })
                        .ok_or_else(|| {
                            unsupported(
                                op,
                                kind,
                                "a sequence group of dense features only has no input that \
                                 marks its steps; add an id feature to the group",
                            )
                        })?
                } else {
                    first
                };
                let ids = self
                    .feature_inputs
                    .get(f)
                    .cloned()
                    .flatten()
                    .ok_or_else(|| invalid(format!("op \"{}\" reads feature {f}", op.name)))?;
                let zero = self.b.int_scalar(0);
                let valid = self.b.node("GreaterOrEqual", &[&ids, &zero], vec![], hint);
                self.b
                    .node("Cast", &[&valid], vec![attr_i("to", FLOAT as i64)], hint)
            }
            OpKind::DinInput | OpKind::WindowInput => {
                let (q, s) = (input(0)?, input(1)?);
                let d = self.width(op.inputs[1]);
                let dq = self.width(op.inputs[0]);
                if d <= 0 || dq <= 0 || dq > d {
                    return Err(unsupported(op, kind, "query wider than the sequence"));
                }
                let qs = self.repeat_query(&q, dq, &s, d, hint);
                let prod = self.b.node("Mul", &[&qs, &s], vec![], hint);
                let parts = if kind == OpKind::DinInput {
                    let diff = self.b.node("Sub", &[&qs, &s], vec![], hint);
                    vec![qs, s, diff, prod]
                } else {
                    vec![s, prod, qs]
                };
                let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
                self.b.node("Concat", &refs, vec![attr_i("axis", 2)], hint)
            }
            OpKind::DotScores => {
                let (q, s) = (input(0)?, input(1)?);
                let axes2 = self.b.ints(&[2]);
                let q3 = self.b.node("Unsqueeze", &[&q, &axes2], vec![], hint);
                self.b.node("MatMul", &[&s, &q3], vec![], hint)
            }
            OpKind::AttentionPool => {
                let (scores, s, mask) = (input(0)?, input(1)?, input(2)?);
                let axes1 = self.b.ints(&[1]);
                let axes2 = self.b.ints(&[2]);
                let sc = self.b.node("Squeeze", &[&scores, &axes2], vec![], hint);
                let half = self.b.float_scalar(0.5);
                let keep = self.b.node("GreaterOrEqual", &[&mask, &half], vec![], hint);
                let masked = self.b.float_scalar(MASKED_SCORE as f32);
                let sc = self.b.node("Where", &[&keep, &sc, &masked], vec![], hint);
                let w = self
                    .b
                    .node("Softmax", &[&sc], vec![attr_i("axis", 1)], hint);
                let w3 = self.b.node("Unsqueeze", &[&w, &axes1], vec![], hint);
                let pooled = self.b.node("MatMul", &[&w3, &s], vec![], hint);
                self.b.node("Squeeze", &[&pooled, &axes1], vec![], hint)
            }
            OpKind::SequencePool => {
                let (s, mask) = (input(0)?, input(1)?);
                let sum = self.sum_steps(&s, false, hint);
                if Pooling::try_from(op.pooling) == Ok(Pooling::Mean) {
                    self.over_count(&sum, &mask, hint)
                } else {
                    sum
                }
            }
            OpKind::WindowPool => self.window_pool(op, kind, &input)?,
            OpKind::Mul => {
                let (a, b) = (input(0)?, input(1)?);
                let y = self.b.node("Mul", &[&a, &b], vec![], hint);
                if op.alpha == 1.0 {
                    y
                } else {
                    let alpha = self.b.float_scalar(op.alpha);
                    self.b.node("Mul", &[&y, &alpha], vec![], hint)
                }
            }
            OpKind::Dice => {
                // x * (p + alpha * (1 - p)), alpha [C] broadcast over rows.
                let (x, p) = (input(0)?, input(1)?);
                let alpha = self.init(op, 0, Layout::Plain)?;
                let one = self.b.float_scalar(1.0);
                let open = self.b.node("Sub", &[&one, &p], vec![], hint);
                let scaled = self.b.node("Mul", &[&open, &alpha], vec![], hint);
                let gate = self.b.node("Add", &[&p, &scaled], vec![], hint);
                self.b.node("Mul", &[&x, &gate], vec![], hint)
            }
            OpKind::VariationalDropout => {
                // Evaluation: each column times 1 - sigmoid(feature_p) of
                // its feature.
                let x = input(0)?;
                let fp = self.init(op, 0, Layout::Plain)?;
                let columns: Vec<i64> = op
                    .widths
                    .iter()
                    .enumerate()
                    .flat_map(|(f, &w)| std::iter::repeat_n(f as i64, w as usize))
                    .collect();
                if columns.len() as i64 != self.width(op.inputs[0]) {
                    return Err(invalid(format!(
                        "variational dropout \"{}\" has widths summing to {} for a {}-wide input",
                        op.name,
                        columns.len(),
                        self.width(op.inputs[0])
                    )));
                }
                let p = self.sigmoid(&fp, hint);
                let one = self.b.float_scalar(1.0);
                let neg = self.b.float_scalar(-1.0);
                let m = self.b.node("Mul", &[&p, &neg], vec![], hint);
                let keep = self.b.node("Add", &[&m, &one], vec![], hint);
                let cols = self.b.ints(&columns);
                let keep = self
                    .b
                    .node("Gather", &[&keep, &cols], vec![attr_i("axis", 0)], hint);
                self.b.node("Mul", &[&x, &keep], vec![], hint)
            }
            OpKind::MultiHeadAttention => {
                let (q, k, v, mask) = (input(0)?, input(1)?, input(2)?, input(3)?);
                self.multi_head_attention(op, kind, [&q, &k, &v], &mask)?
            }
            OpKind::MaskedMean => {
                // As the engines: the masked steps summed, over
                // max(sum(length), 1).
                let (x, mask, length) = (input(0)?, input(1)?, input(2)?);
                let axes2 = self.b.ints(&[2]);
                let m3 = self.b.node("Unsqueeze", &[&mask, &axes2], vec![], hint);
                let kept = self.b.node("Mul", &[&x, &m3], vec![], hint);
                let sum = self.sum_steps(&kept, false, hint);
                self.over_count(&sum, &length, hint)
            }
            OpKind::Intervention => {
                // The orthogonal weights depend on parameters only: computed
                // here once, by the function the native engine uses.
                let (x, s) = (input(0)?, input(1)?);
                let (n, m) = (self.width(op.inputs[0]), self.width(op.inputs[1]));
                let mut ps = Vec::with_capacity(4);
                for i in 0..4 {
                    ps.push(crate::runtime::embedding::f32s_from_le(
                        &self.param(op, i)?.1.data,
                    ));
                }
                let (n, m) = (
                    usize::try_from(n)
                        .map_err(|_| invalid(format!("op \"{hint}\" input width")))?,
                    usize::try_from(m)
                        .map_err(|_| invalid(format!("op \"{hint}\" input width")))?,
                );
                let r = ps[0].len() / n.max(1);
                if n == 0
                    || r == 0
                    || ps[0].len() != n * r
                    || ps[1].len() != n * n
                    || ps[2].len() != m * r
                    || ps[3].len() != m * m
                {
                    return Err(invalid(format!(
                        "intervention \"{hint}\" has parameters of the wrong sizes for widths {n} and {m}"
                    )));
                }
                let wb = crate::ir::orthogonal::weight(&ps[0], &ps[1], n, r);
                let ws = crate::ir::orthogonal::weight(&ps[2], &ps[3], m, r);
                let wbt: Vec<f32> = (0..r * n).map(|e| wb[(e % n) * r + e / n]).collect();
                let le = crate::runtime::embedding::f32s_to_le;
                let (ni, mi, ri) = (n as i64, m as i64, r as i64);
                let wb = self
                    .b
                    .init_f32(&format!("{hint}.base_weight"), &[ni, ri], le(&wb));
                let ws = self
                    .b
                    .init_f32(&format!("{hint}.selection_weight"), &[mi, ri], le(&ws));
                let wbt = self
                    .b
                    .init_f32(&format!("{hint}.base_weight.T"), &[ri, ni], le(&wbt));
                let xb = self.b.node("MatMul", &[&x, &wb], vec![], hint);
                let sw = self.b.node("MatMul", &[&s, &ws], vec![], hint);
                let t = self.b.node("Sub", &[&xb, &sw], vec![], hint);
                let back = self.b.node("MatMul", &[&t, &wbt], vec![], hint);
                self.b.node("Add", &[&x, &back], vec![], hint)
            }
            OpKind::OpUnspecified => {
                return Err(unsupported(op, kind, "the op has no kind"));
            }
        })
    }

    /// `x` summed over axis 1 (the steps).
    fn sum_steps(&mut self, x: &str, keepdims: bool, hint: &str) -> String {
        let axes1 = self.b.ints(&[1]);
        self.b.node(
            "ReduceSum",
            &[x, &axes1],
            vec![attr_i("keepdims", i64::from(keepdims))],
            hint,
        )
    }

    /// `sum / max(n, 1)` with `n` the row sums of `counts` `[B, L]`, as the
    /// engines divide a mean over steps.
    fn over_count(&mut self, sum: &str, counts: &str, hint: &str) -> String {
        let n = self.sum_steps(counts, true, hint);
        let one = self.b.float_scalar(1.0);
        let n = self.b.node("Max", &[&n, &one], vec![], hint);
        self.b.node("Div", &[sum, &n], vec![], hint)
    }

    /// Multi-head self-attention at evaluation (`runtime::exec::native::
    /// attention`): per head `softmax(q k^T / sqrt(head_dim))` over the
    /// valid keys, times v, heads joined, padded query steps zeroed.
    fn multi_head_attention(
        &mut self,
        op: &Op,
        kind: OpKind,
        [q, k, v]: [&str; 3],
        mask: &str,
    ) -> Result<String, ExportError> {
        let hint = op.name.as_str();
        let shape = self
            .plan
            .values
            .get(op.inputs[0] as usize)
            .map(|v| v.shape.clone())
            .unwrap_or_default();
        let heads = i64::from(op.heads);
        let (l, e) = match shape.as_slice() {
            [_, l, e] if *l > 0 && *e > 0 && heads > 0 && e % heads == 0 => (*l, *e),
            _ => {
                return Err(unsupported(
                    op,
                    kind,
                    format!("{heads} heads over a query of shape {shape:?}"),
                ))
            }
        };
        let hd = e / heads;
        let split = self.b.ints(&[0, l, heads, hd]);
        let heads_of = |b: &mut super::graph::Builder, x: &str, perm: &[i64]| {
            let r = b.node("Reshape", &[x, &split], vec![], hint);
            b.node("Transpose", &[&r], vec![attr_ints("perm", perm)], hint)
        };
        let qh = heads_of(&mut self.b, q, &[0, 2, 1, 3]);
        let kt = heads_of(&mut self.b, k, &[0, 2, 3, 1]);
        let vh = heads_of(&mut self.b, v, &[0, 2, 1, 3]);
        let scores = self.b.node("MatMul", &[&qh, &kt], vec![], hint);
        let scale = self.b.float_scalar(1.0 / (hd as f32).sqrt());
        let scores = self.b.node("Mul", &[&scores, &scale], vec![], hint);
        let half = self.b.float_scalar(0.5);
        let valid = self.b.node("GreaterOrEqual", &[mask, &half], vec![], hint);
        let axes12 = self.b.ints(&[1, 2]);
        let keys = self.b.node("Unsqueeze", &[&valid, &axes12], vec![], hint);
        // Finite, so a row with no valid key (a padded query, zeroed
        // below) stays finite.
        let excluded = self.b.float_scalar(-1e30);
        let scores = self
            .b
            .node("Where", &[&keys, &scores, &excluded], vec![], hint);
        let w = self
            .b
            .node("Softmax", &[&scores], vec![attr_i("axis", 3)], hint);
        let out = self.b.node("MatMul", &[&w, &vh], vec![], hint);
        let out = self.b.node(
            "Transpose",
            &[&out],
            vec![attr_ints("perm", &[0, 2, 1, 3])],
            hint,
        );
        let join = self.b.ints(&[0, l, e]);
        let out = self.b.node("Reshape", &[&out, &join], vec![], hint);
        let axes2 = self.b.ints(&[2]);
        let m3 = self.b.node("Unsqueeze", &[mask, &axes2], vec![], hint);
        Ok(self.b.node("Mul", &[&out, &m3], vec![], hint))
    }

    fn activation(
        &mut self,
        op: &Op,
        kind: OpKind,
        act: Activation,
        x: &str,
    ) -> Result<String, ExportError> {
        let hint = op.name.as_str();
        Ok(match act {
            Activation::ActNone => x.to_string(),
            Activation::Relu => self.b.node("Relu", &[x], vec![], hint),
            Activation::Sigmoid => self.sigmoid(x, hint),
            Activation::Tanh => self.b.node("Tanh", &[x], vec![], hint),
            Activation::LeakyRelu => {
                let a = if op.alpha == 0.0 { 0.01 } else { op.alpha };
                self.b
                    .node("LeakyRelu", &[x], vec![attr_f("alpha", a)], hint)
            }
            Activation::Elu => {
                let a = if op.alpha == 0.0 { 1.0 } else { op.alpha };
                self.b.node("Elu", &[x], vec![attr_f("alpha", a)], hint)
            }
            Activation::Gelu => {
                // The erf form (opset 17 has no Gelu): x / 2 (1 + erf(x / sqrt 2)).
                let half = self.b.float_scalar(0.5);
                let one = self.b.float_scalar(1.0);
                let root2 = self.b.float_scalar(std::f32::consts::SQRT_2);
                let s = self.b.node("Div", &[x, &root2], vec![], hint);
                let e = self.b.node("Erf", &[&s], vec![], hint);
                let e1 = self.b.node("Add", &[&e, &one], vec![], hint);
                let h = self.b.node("Mul", &[x, &half], vec![], hint);
                self.b.node("Mul", &[&h, &e1], vec![], hint)
            }
            Activation::Silu => {
                // candle's silu: x / (1 + exp(-x)).
                let one = self.b.float_scalar(1.0);
                let n = self.b.node("Neg", &[x], vec![], hint);
                let e = self.b.node("Exp", &[&n], vec![], hint);
                let d = self.b.node("Add", &[&e, &one], vec![], hint);
                self.b.node("Div", &[x, &d], vec![], hint)
            }
            Activation::Prelu => {
                if op.params.is_empty() {
                    return Err(unsupported(op, kind, "prelu without its slope parameter"));
                }
                let slope = self.init(op, 0, Layout::Plain)?;
                self.b.node("PRelu", &[x, &slope], vec![], hint)
            }
        })
    }

    /// Multi-window DIN pooling (`ops::window_pool`).
    fn window_pool(
        &mut self,
        op: &Op,
        kind: OpKind,
        input: &dyn Fn(usize) -> Result<String, ExportError>,
    ) -> Result<String, ExportError> {
        let hint = op.name.as_str();
        let (scores, s, mask, q) = (input(0)?, input(1)?, input(2)?, input(3)?);
        let shape = self
            .plan
            .values
            .get(op.inputs[1] as usize)
            .map(|v| v.shape.clone())
            .unwrap_or_default();
        let (l, d) = match shape.as_slice() {
            &[_, l, d] if l > 0 && d > 0 => (l, d),
            _ => {
                return Err(unsupported(
                    op,
                    kind,
                    format!("sequence of shape {shape:?}"),
                ))
            }
        };
        let dq = self.width(op.inputs[3]);
        if dq <= 0 || dq > d {
            return Err(unsupported(op, kind, "query wider than the sequence"));
        }
        let axes1 = self.b.ints(&[1]);
        let axes2 = self.b.ints(&[2]);
        let m3 = self.b.node("Unsqueeze", &[&mask, &axes2], vec![], hint);
        let sm = self.b.node("Mul", &[&scores, &m3], vec![], hint);
        let weighted = self.b.node("Mul", &[&sm, &s], vec![], hint);
        let length = self.b.node(
            "ReduceSum",
            &[&mask, &axes1],
            vec![attr_i("keepdims", 0)],
            hint,
        );
        let one = self.b.float_scalar(1.0);
        let mut parts = Vec::with_capacity(op.widths.len() + 1);
        let mut start = 0i64;
        for &w in &op.widths {
            let w = w as i64;
            let (lo, hi) = (start.min(l), (start + w).min(l));
            let summed = if hi > lo {
                let starts = self.b.ints(&[lo]);
                let ends = self.b.ints(&[hi]);
                let part = self
                    .b
                    .node("Slice", &[&weighted, &starts, &ends, &axes1], vec![], hint);
                self.b.node(
                    "ReduceSum",
                    &[&part, &axes1],
                    vec![attr_i("keepdims", 0)],
                    hint,
                )
            } else {
                // A window past the last step: zeros [B, D].
                let all = self.b.node(
                    "ReduceSum",
                    &[&weighted, &axes1],
                    vec![attr_i("keepdims", 0)],
                    hint,
                );
                let zero = self.b.float_scalar(0.0);
                self.b.node("Mul", &[&all, &zero], vec![], hint)
            };
            // max(min(length - start, w), 1), as candle's clamp(1, w).
            let st = self.b.float_scalar(start as f32);
            let rest = self.b.node("Sub", &[&length, &st], vec![], hint);
            let hi_c = self.b.float_scalar(w.max(1) as f32);
            let c = self.b.node("Max", &[&rest, &one], vec![], hint);
            let c = self.b.node("Min", &[&c, &hi_c], vec![], hint);
            let c = self.b.node("Unsqueeze", &[&c, &axes1], vec![], hint);
            parts.push(self.b.node("Div", &[&summed, &c], vec![], hint));
            start += w;
        }
        parts.push(self.pad_query(&q, dq, d, hint));
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        Ok(self.b.node("Concat", &refs, vec![attr_i("axis", 1)], hint))
    }
}

/// The names of a task's logits and predictions.
fn output_names(task: &crate::proto::plan::Task) -> (String, String) {
    let t = &task.tower_name;
    let pred = if crate::runtime::loss::is_regression(task) {
        format!("y_{t}")
    } else {
        format!("probs_{t}")
    };
    (format!("logits_{t}"), pred)
}

/// Whether feature `f` enters the model as values (not embedded).
fn is_dense(plan: &Plan, f: usize) -> bool {
    plan.features
        .get(f)
        .is_some_and(|s| FeatureKind::try_from(s.kind) == Ok(FeatureKind::RawDense))
}

/// `[.., rows, cols]` little-endian f32 bytes as `[.., cols, rows]`.
fn transpose_last2(data: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    let mut out = vec![0u8; data.len()];
    let plane = rows * cols * 4;
    if plane == 0 {
        return out;
    }
    for (src, dst) in data.chunks_exact(plane).zip(out.chunks_exact_mut(plane)) {
        for r in 0..rows {
            for c in 0..cols {
                let s = (r * cols + c) * 4;
                let d = (c * rows + r) * 4;
                dst[d..d + 4].copy_from_slice(&src[s..s + 4]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::transpose_last2;
    use crate::runtime::embedding::{f32s_from_le, f32s_to_le};

    #[test]
    fn transposes_each_matrix_of_a_stack() {
        let v: Vec<f32> = (0..12).map(|i| i as f32).collect();
        // Two [2, 3] matrices.
        let t = f32s_from_le(&transpose_last2(&f32s_to_le(&v), 2, 3));
        assert_eq!(t, [0., 3., 1., 4., 2., 5., 6., 9., 7., 10., 8., 11.]);
    }
}
