//! A plain-Rust reference evaluator of plan ops (forward, evaluation mode):
//! `Vec<f32>` tensors, no BLAS, no candle. It is slow and obviously
//! correct, which is what the pass-equivalence tests need, and it is
//! independent of `runtime` so it can check the runtime too.
//!
//! Feature-group outputs are not computed here: the caller supplies them
//! (random inputs in tests), keyed by the FEATURE_GROUP op's name.

use std::collections::HashMap;

use super::init::from_le_bytes;
use crate::proto::plan::{Activation, OpKind, Plan, Pooling};

/// A dense row-major tensor.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub(crate) fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        Tensor { shape, data }
    }

    fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Tensor {
            shape,
            data: vec![0.0; n],
        }
    }
}

/// Why evaluation failed.
#[derive(Debug, thiserror::Error)]
#[error("reference evaluation failed at op \"{op}\": {message}")]
pub(crate) struct EvalError {
    pub op: String,
    pub message: String,
}

fn resolve(axis: i32, rank: usize) -> Option<usize> {
    let a = if axis < 0 {
        axis as i64 + rank as i64
    } else {
        axis as i64
    };
    (a >= 0 && (a as usize) < rank).then_some(a as usize)
}

/// Splits a shape around `axis` into (outer, size, inner).
fn split(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}

/// Runs every op of `plan`; returns each task's logits by tower name.
pub(crate) fn evaluate(
    plan: &Plan,
    groups: &HashMap<String, Tensor>,
) -> Result<HashMap<String, Tensor>, EvalError> {
    let params: Vec<Tensor> = plan
        .params
        .iter()
        .map(|p| {
            Tensor::new(
                p.shape.iter().map(|&d| d as usize).collect(),
                from_le_bytes(&p.data),
            )
        })
        .collect();
    let mut values: Vec<Option<Tensor>> = vec![None; plan.values.len()];
    for op in &plan.ops {
        let err = |m: String| EvalError {
            op: op.name.clone(),
            message: m,
        };
        let inputs: Vec<&Tensor> = op
            .inputs
            .iter()
            .map(|&i| {
                values
                    .get(i as usize)
                    .and_then(|v| v.as_ref())
                    .ok_or_else(|| err(format!("input {i} not computed")))
            })
            .collect::<Result<_, _>>()?;
        let p = |i: usize| -> Result<&Tensor, EvalError> {
            op.params
                .get(i)
                .and_then(|&k| params.get(k as usize))
                .ok_or_else(|| err(format!("parameter {i} missing")))
        };
        let x = inputs.first().copied();
        let kind = OpKind::try_from(op.kind).map_err(|_| err("unknown op kind".into()))?;
        let out = match kind {
            OpKind::FeatureGroup => groups
                .get(&op.name)
                .cloned()
                .ok_or_else(|| err("no input given for this feature group".into()))?,
            OpKind::Linear => {
                let x = x.ok_or_else(|| err("no input".into()))?;
                let w = p(0)?;
                let b = if op.params.len() > 1 {
                    Some(p(1)?)
                } else {
                    None
                };
                linear(
                    x,
                    &w.data,
                    w.shape[0],
                    w.shape[1],
                    b.map(|b| b.data.as_slice()),
                )
                .map_err(err)?
            }
            OpKind::BatchedLinear => {
                let x = x.ok_or_else(|| err("no input".into()))?;
                let w = p(0)?;
                let (e, o, i) = (w.shape[0], w.shape[1], w.shape[2]);
                let b = if op.params.len() > 1 {
                    Some(p(1)?)
                } else {
                    None
                };
                let (bsz, shared) = match x.shape.as_slice() {
                    [bsz, inn] if *inn == i => (*bsz, true),
                    [ee, bsz, inn] if *ee == e && *inn == i => (*bsz, false),
                    s => {
                        return Err(err(format!(
                            "input {s:?} does not fit weight {:?}",
                            w.shape
                        )))
                    }
                };
                let mut out = Tensor::zeros(vec![e, bsz, o]);
                for k in 0..e {
                    let xs = if shared {
                        &x.data[..]
                    } else {
                        &x.data[k * bsz * i..(k + 1) * bsz * i]
                    };
                    let xt = Tensor::new(vec![bsz, i], xs.to_vec());
                    let y = linear(
                        &xt,
                        &w.data[k * o * i..(k + 1) * o * i],
                        o,
                        i,
                        b.map(|b| &b.data[k * o..(k + 1) * o]),
                    )
                    .map_err(err)?;
                    out.data[k * bsz * o..(k + 1) * bsz * o].copy_from_slice(&y.data);
                }
                out
            }
            OpKind::BatchNorm => {
                let x = x.ok_or_else(|| err("no input".into()))?;
                let ax = plan.values[op.inputs[0] as usize]
                    .shape
                    .iter()
                    .position(|&d| d == -1)
                    .unwrap_or(0);
                let eps = if op.eps > 0.0 { op.eps } else { 1e-5 };
                let (g, b, m, v) = (p(0)?, p(1)?, p(2)?, p(3)?);
                // Over the steps too: one statistic per channel.
                let (outer, size, inner) = match (op.over_steps, x.shape.as_slice()) {
                    (true, &[bb, l, c]) => (1, bb * l, c),
                    _ => split(&x.shape, ax),
                };
                let mut out = x.clone();
                for o in 0..outer {
                    for s in 0..size {
                        for i in 0..inner {
                            let idx = (o * size + s) * inner + i;
                            let f = o * inner + i;
                            out.data[idx] = (x.data[idx] - m.data[f]) / (v.data[f] + eps).sqrt()
                                * g.data[f]
                                + b.data[f];
                        }
                    }
                }
                out
            }
            OpKind::LayerNorm => {
                let x = x.ok_or_else(|| err("no input".into()))?;
                let eps = if op.eps > 0.0 { op.eps } else { 1e-5 };
                let (g, b) = (p(0)?, p(1)?);
                let d = *x.shape.last().unwrap_or(&1);
                let mut out = x.clone();
                for row in out.data.chunks_mut(d) {
                    let mean = row.iter().sum::<f32>() / d as f32;
                    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = (*v - mean) / (var + eps).sqrt() * g.data[j] + b.data[j];
                    }
                }
                out
            }
            OpKind::Activation => {
                let x = x.ok_or_else(|| err("no input".into()))?;
                let act = Activation::try_from(op.activation).unwrap_or(Activation::ActNone);
                let slope = if act == Activation::Prelu {
                    p(0)?.data[0]
                } else {
                    0.0
                };
                let f = |v: f32| -> f32 {
                    match act {
                        Activation::ActNone => v,
                        Activation::Relu => v.max(0.0),
                        Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
                        Activation::Tanh => v.tanh(),
                        Activation::LeakyRelu => {
                            let a = if op.alpha == 0.0 { 0.01 } else { op.alpha };
                            if v >= 0.0 {
                                v
                            } else {
                                a * v
                            }
                        }
                        Activation::Gelu => 0.5 * v * (1.0 + erf(v / std::f32::consts::SQRT_2)),
                        Activation::Silu => v / (1.0 + (-v).exp()),
                        Activation::Elu => {
                            let a = if op.alpha == 0.0 { 1.0 } else { op.alpha };
                            if v >= 0.0 {
                                v
                            } else {
                                a * (v.exp() - 1.0)
                            }
                        }
                        Activation::Prelu => {
                            if v >= 0.0 {
                                v
                            } else {
                                slope * v
                            }
                        }
                    }
                };
                Tensor::new(x.shape.clone(), x.data.iter().map(|&v| f(v)).collect())
            }
            OpKind::Dropout => x.ok_or_else(|| err("no input".into()))?.clone(),
            OpKind::Concat => {
                let first = x.ok_or_else(|| err("no input".into()))?;
                let ax =
                    resolve(op.axis, first.shape.len()).ok_or_else(|| err("bad axis".into()))?;
                let mut shape = first.shape.clone();
                shape[ax] = inputs.iter().map(|t| t.shape[ax]).sum();
                let (outer, _, inner) = split(&first.shape, ax);
                let mut data = Vec::with_capacity(shape.iter().product());
                for o in 0..outer {
                    for t in &inputs {
                        let chunk = t.shape[ax] * inner;
                        data.extend_from_slice(&t.data[o * chunk..(o + 1) * chunk]);
                    }
                }
                Tensor::new(shape, data)
            }
            OpKind::Slice => {
                let x = x.ok_or_else(|| err("no input".into()))?;
                let ax = resolve(op.axis, x.shape.len()).ok_or_else(|| err("bad axis".into()))?;
                let (outer, size, inner) = split(&x.shape, ax);
                let (start, len) = (op.start as usize, op.length as usize);
                if start + len > size {
                    return Err(err(format!("slice [{start}, {}) of {size}", start + len)));
                }
                let mut shape = x.shape.clone();
                shape[ax] = len;
                let mut data = Vec::with_capacity(outer * len * inner);
                for o in 0..outer {
                    let base = o * size * inner;
                    data.extend_from_slice(
                        &x.data[base + start * inner..base + (start + len) * inner],
                    );
                }
                Tensor::new(shape, data)
            }
            OpKind::Stack => {
                let first = x.ok_or_else(|| err("no input".into()))?;
                let mut shape = vec![inputs.len()];
                shape.extend(first.shape.iter());
                let data = inputs.iter().flat_map(|t| t.data.iter().copied()).collect();
                Tensor::new(shape, data)
            }
            OpKind::Softmax => {
                let x = x.ok_or_else(|| err("no input".into()))?;
                let ax = resolve(op.axis, x.shape.len()).ok_or_else(|| err("bad axis".into()))?;
                let (outer, size, inner) = split(&x.shape, ax);
                let mut out = x.clone();
                for o in 0..outer {
                    for i in 0..inner {
                        let at = |s: usize| (o * size + s) * inner + i;
                        let max = (0..size)
                            .map(|s| x.data[at(s)])
                            .fold(f32::NEG_INFINITY, f32::max);
                        let sum: f32 = (0..size).map(|s| (x.data[at(s)] - max).exp()).sum();
                        for s in 0..size {
                            out.data[at(s)] = (x.data[at(s)] - max).exp() / sum;
                        }
                    }
                }
                out
            }
            OpKind::GateMix => {
                let (w, e) = match inputs.as_slice() {
                    [w, e] => (*w, *e),
                    _ => return Err(err("needs two inputs".into())),
                };
                let (k, bsz, d) = match e.shape.as_slice() {
                    [k, b, d] => (*k, *b, *d),
                    s => return Err(err(format!("experts are {s:?}"))),
                };
                if w.shape != [bsz, k] {
                    return Err(err(format!(
                        "weights {:?} do not fit experts {:?}",
                        w.shape, e.shape
                    )));
                }
                let mut out = Tensor::zeros(vec![bsz, d]);
                for b in 0..bsz {
                    for kk in 0..k {
                        let wt = w.data[b * k + kk];
                        for j in 0..d {
                            out.data[b * d + j] += wt * e.data[(kk * bsz + b) * d + j];
                        }
                    }
                }
                out
            }
            // Steps and masks are inputs, like feature groups.
            OpKind::SequenceEmbed | OpKind::SequenceMask => groups
                .get(&op.name)
                .cloned()
                .ok_or_else(|| err("no input given for this sequence".into()))?,
            OpKind::DinInput => match inputs.as_slice() {
                [q, s] => din_input(q, s).map_err(err)?,
                _ => return Err(err("needs two inputs".into())),
            },
            OpKind::DotScores => match inputs.as_slice() {
                [q, s] => dot_scores(q, s).map_err(err)?,
                _ => return Err(err("needs two inputs".into())),
            },
            OpKind::AttentionPool => match inputs.as_slice() {
                [scores, s, m] => attention_pool(scores, s, m).map_err(err)?,
                _ => return Err(err("needs three inputs".into())),
            },
            OpKind::SequencePool => match inputs.as_slice() {
                [s, m] => sequence_pool(s, m, op.pooling == Pooling::Mean as i32).map_err(err)?,
                _ => return Err(err("needs two inputs".into())),
            },
            OpKind::WindowInput => match inputs.as_slice() {
                [q, s] => window_input(q, s).map_err(err)?,
                _ => return Err(err("needs two inputs".into())),
            },
            OpKind::WindowPool => match inputs.as_slice() {
                [scores, s, m, q] => window_pool(scores, s, m, q, &op.widths).map_err(err)?,
                _ => return Err(err("needs four inputs".into())),
            },
            OpKind::MultiHeadAttention => match inputs.as_slice() {
                [q, k, v, m] => multi_head_attention(q, k, v, m, op.heads as usize).map_err(err)?,
                _ => return Err(err("needs four inputs".into())),
            },
            OpKind::Intervention => match inputs.as_slice() {
                [x, s] => {
                    let ps = [p(0)?, p(1)?, p(2)?, p(3)?];
                    intervention(x, s, ps).map_err(err)?
                }
                _ => return Err(err("needs two inputs".into())),
            },
            OpKind::MaskedMean => match inputs.as_slice() {
                [x, m, len] => masked_mean(x, m, len).map_err(err)?,
                _ => return Err(err("needs three inputs".into())),
            },
            OpKind::Mul => match inputs.as_slice() {
                [a, b] if a.shape == b.shape => Tensor::new(
                    a.shape.clone(),
                    a.data
                        .iter()
                        .zip(&b.data)
                        .map(|(x, y)| op.alpha * x * y)
                        .collect(),
                ),
                [a, b] => return Err(err(format!("multiplies {:?} by {:?}", a.shape, b.shape))),
                _ => return Err(err("needs two inputs".into())),
            },
            OpKind::Dice => match inputs.as_slice() {
                [x, g] if x.shape == g.shape => {
                    let alpha = &p(0)?.data;
                    let w = x.shape.last().copied().unwrap_or(0);
                    if alpha.len() != w {
                        return Err(err(format!("{} alphas for {w} columns", alpha.len())));
                    }
                    let data = x.data.iter().zip(&g.data).enumerate();
                    Tensor::new(
                        x.shape.clone(),
                        data.map(|(i, (&v, &q))| v * (q + alpha[i % w] * (1.0 - q)))
                            .collect(),
                    )
                }
                [x, g] => return Err(err(format!("gates {:?} by {:?}", x.shape, g.shape))),
                _ => return Err(err("needs two inputs".into())),
            },
            // Evaluation: each feature's columns times 1 - sigmoid(p_f).
            OpKind::VariationalDropout => {
                let x = x.ok_or_else(|| err("no input".into()))?;
                let fp = p(0)?;
                let keep: Vec<f32> = op
                    .widths
                    .iter()
                    .zip(&fp.data)
                    .flat_map(|(&w, &l)| {
                        std::iter::repeat_n(1.0 - 1.0 / (1.0 + (-l).exp()), w as usize)
                    })
                    .collect();
                let w = x.shape.last().copied().unwrap_or(0);
                if keep.len() != w {
                    return Err(err(format!("{} keep factors for {w} columns", keep.len())));
                }
                Tensor::new(
                    x.shape.clone(),
                    x.data
                        .iter()
                        .enumerate()
                        .map(|(i, v)| v * keep[i % w])
                        .collect(),
                )
            }
            // Evaluation only: the identity.
            OpKind::StopGradient => x.ok_or_else(|| err("no input".into()))?.clone(),
            OpKind::OpUnspecified => return Err(err("op has no kind".into())),
        };
        let idx = op.output as usize;
        if idx >= values.len() {
            return Err(err("output value out of range".into()));
        }
        values[idx] = Some(out);
    }
    let mut logits = HashMap::new();
    for t in &plan.tasks {
        let v = values
            .get(t.logits as usize)
            .and_then(|v| v.clone())
            .ok_or_else(|| EvalError {
                op: t.tower_name.clone(),
                message: "logits never computed".into(),
            })?;
        logits.insert(t.tower_name.clone(), v);
    }
    Ok(logits)
}

/// `x W^T + b` over the last axis of `x`.
fn linear(
    x: &Tensor,
    w: &[f32],
    out: usize,
    inp: usize,
    b: Option<&[f32]>,
) -> Result<Tensor, String> {
    if x.shape.last() != Some(&inp) {
        return Err(format!("input {:?} is not {inp} wide", x.shape));
    }
    let rows = x.data.len() / inp.max(1);
    let mut shape = x.shape.clone();
    if let Some(l) = shape.last_mut() {
        *l = out;
    }
    let mut data = vec![0.0f32; rows * out];
    for r in 0..rows {
        let xr = &x.data[r * inp..(r + 1) * inp];
        for o in 0..out {
            let wr = &w[o * inp..(o + 1) * inp];
            let mut acc = 0.0f64;
            for (a, c) in xr.iter().zip(wr) {
                acc += (*a as f64) * (*c as f64);
            }
            data[r * out + o] = acc as f32 + b.map_or(0.0, |b| b[o]);
        }
    }
    Ok(Tensor::new(shape, data))
}

/// `[B, L, D]` dimensions of a sequence, checked against the query or
/// mask that goes with it.
fn seq_dims(s: &Tensor) -> Result<(usize, usize, usize), String> {
    match s.shape.as_slice() {
        [b, l, d] => Ok((*b, *l, *d)),
        other => Err(format!("a sequence is [B, L, D], not {other:?}")),
    }
}

/// What an attention input concatenates per step.
#[derive(Clone, Copy)]
enum Stream {
    Query,
    Step,
    Difference,
    Product,
}

/// The per-step concatenation of `streams`, the query zero-padded to `D`.
fn step_streams(q: &Tensor, s: &Tensor, streams: &[Stream]) -> Result<Tensor, String> {
    let (b, l, d) = seq_dims(s)?;
    let dq = q.shape.get(1).copied().unwrap_or(0);
    if q.shape.len() != 2 || q.shape[0] != b || dq > d {
        return Err(format!(
            "query {:?} does not fit steps {:?}",
            q.shape, s.shape
        ));
    }
    let mut out = Vec::with_capacity(b * l * streams.len() * d);
    for r in 0..b {
        for k in 0..l {
            let qv = |j: usize| if j < dq { q.data[r * dq + j] } else { 0.0 };
            let sv = |j: usize| s.data[(r * l + k) * d + j];
            for stream in streams {
                out.extend((0..d).map(|j| match stream {
                    Stream::Query => qv(j),
                    Stream::Step => sv(j),
                    Stream::Difference => qv(j) - sv(j),
                    Stream::Product => qv(j) * sv(j),
                }));
            }
        }
    }
    Ok(Tensor::new(vec![b, l, streams.len() * d], out))
}

/// DIN: `[q, s, q - s, q * s]` per step.
fn din_input(q: &Tensor, s: &Tensor) -> Result<Tensor, String> {
    use Stream::*;
    step_streams(q, s, &[Query, Step, Difference, Product])
}

/// Multi-window DIN: `[s, q * s, q]` per step.
fn window_input(q: &Tensor, s: &Tensor) -> Result<Tensor, String> {
    use Stream::*;
    step_streams(q, s, &[Step, Product, Query])
}

/// `s[b, l, :] . q[b, :]` as `[B, L, 1]`.
fn dot_scores(q: &Tensor, s: &Tensor) -> Result<Tensor, String> {
    let (b, l, d) = seq_dims(s)?;
    if q.shape != [b, d] {
        return Err(format!(
            "query {:?} does not fit steps {:?}",
            q.shape, s.shape
        ));
    }
    let mut out = Vec::with_capacity(b * l);
    for r in 0..b {
        for k in 0..l {
            let mut acc = 0.0f64;
            for j in 0..d {
                acc += s.data[(r * l + k) * d + j] as f64 * q.data[r * d + j] as f64;
            }
            out.push(acc as f32);
        }
    }
    Ok(Tensor::new(vec![b, l, 1], out))
}

/// Masked softmax of the scores over the steps (TorchEasyRec's
/// `-(2**31) + 1` at padded steps), then the weighted sum of the steps.
fn attention_pool(scores: &Tensor, s: &Tensor, mask: &Tensor) -> Result<Tensor, String> {
    let (b, l, d) = seq_dims(s)?;
    if scores.data.len() != b * l || mask.shape != [b, l] {
        return Err(format!(
            "scores {:?} or mask {:?} do not fit steps {:?}",
            scores.shape, mask.shape, s.shape
        ));
    }
    let mut out = vec![0.0f32; b * d];
    for r in 0..b {
        let z: Vec<f64> = (0..l)
            .map(|k| {
                if mask.data[r * l + k] >= 0.5 {
                    scores.data[r * l + k] as f64
                } else {
                    -2_147_483_647.0
                }
            })
            .collect();
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        for j in 0..d {
            let acc: f64 = e
                .iter()
                .enumerate()
                .map(|(k, w)| w / sum * s.data[(r * l + k) * d + j] as f64)
                .sum();
            out[r * d + j] = acc as f32;
        }
    }
    Ok(Tensor::new(vec![b, d], out))
}

/// Multi-head attention among the valid steps (evaluation: no dropout);
/// rows of masked steps are zero.
fn multi_head_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    heads: usize,
) -> Result<Tensor, String> {
    let (b, l, e) = seq_dims(q)?;
    if k.shape != q.shape || v.shape != q.shape || mask.shape != [b, l] {
        return Err(format!(
            "q {:?}, k {:?}, v {:?} and mask {:?} do not fit",
            q.shape, k.shape, v.shape, mask.shape
        ));
    }
    if heads == 0 || e % heads != 0 {
        return Err(format!("{heads} heads over {e} columns"));
    }
    let hd = e / heads;
    let valid = |r: usize, i: usize| mask.data[r * l + i] >= 0.5;
    let at = |t: &Tensor, r: usize, i: usize, c: usize| t.data[(r * l + i) * e + c] as f64;
    let mut out = vec![0.0f32; b * l * e];
    for r in 0..b {
        for h in 0..heads {
            let cols = h * hd..(h + 1) * hd;
            for i in (0..l).filter(|&i| valid(r, i)) {
                let z: Vec<(usize, f64)> = (0..l)
                    .filter(|&j| valid(r, j))
                    .map(|j| {
                        let dot: f64 = cols.clone().map(|c| at(q, r, i, c) * at(k, r, j, c)).sum();
                        (j, dot / (hd as f64).sqrt())
                    })
                    .collect();
                let max = z.iter().map(|x| x.1).fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = z.iter().map(|x| (x.1 - max).exp()).sum();
                for c in cols.clone() {
                    let y: f64 = z
                        .iter()
                        .map(|&(j, s)| (s - max).exp() / sum * at(v, r, j, c))
                        .sum();
                    out[(r * l + i) * e + c] = y as f32;
                }
            }
        }
    }
    Ok(Tensor::new(vec![b, l, e], out))
}

/// DC2VR's intervention `(x Wb - s Ws) Wb^T + x`, the weights from
/// `params` `[xb, qb, xs, qs]` by the orthogonal parametrization.
fn intervention(x: &Tensor, s: &Tensor, params: [&Tensor; 4]) -> Result<Tensor, String> {
    let [xb, qb, xs, qs] = params;
    let (b, n, m) = match (x.shape.as_slice(), s.shape.as_slice()) {
        ([b, n], [b2, m]) if b == b2 => (*b, *n, *m),
        _ => return Err(format!("inputs {:?} and {:?}", x.shape, s.shape)),
    };
    let r = xb.shape.get(1).copied().unwrap_or(0);
    if xb.shape != [n, r] || qb.shape != [n, n] || xs.shape != [m, r] || qs.shape != [m, m] {
        return Err("parameter shapes do not fit the inputs".into());
    }
    let wb = crate::ir::orthogonal::weight(&xb.data, &qb.data, n, r);
    let ws = crate::ir::orthogonal::weight(&xs.data, &qs.data, m, r);
    let mut out = x.data.clone();
    for row in 0..b {
        let t: Vec<f32> = (0..r)
            .map(|k| {
                let a: f32 = (0..n).map(|j| x.data[row * n + j] * wb[j * r + k]).sum();
                let c: f32 = (0..m).map(|j| s.data[row * m + j] * ws[j * r + k]).sum();
                a - c
            })
            .collect();
        for j in 0..n {
            out[row * n + j] += (0..r).map(|k| t[k] * wb[j * r + k]).sum::<f32>();
        }
    }
    Ok(Tensor::new(vec![b, n], out))
}

/// The sum of the valid steps over the row's whole length, at least 1.
fn masked_mean(x: &Tensor, mask: &Tensor, length: &Tensor) -> Result<Tensor, String> {
    let (b, l, d) = seq_dims(x)?;
    if mask.shape != [b, l] || length.shape.first() != Some(&b) {
        return Err(format!(
            "mask {:?} or length {:?} do not fit steps {:?}",
            mask.shape, length.shape, x.shape
        ));
    }
    let l0 = length.data.len() / b.max(1);
    let mut out = vec![0.0f32; b * d];
    for r in 0..b {
        let count: f32 = length.data[r * l0..(r + 1) * l0]
            .iter()
            .sum::<f32>()
            .max(1.0);
        for k in (0..l).filter(|&k| mask.data[r * l + k] >= 0.5) {
            for j in 0..d {
                out[r * d + j] += x.data[(r * l + k) * d + j];
            }
        }
        out[r * d..(r + 1) * d].iter_mut().for_each(|o| *o /= count);
    }
    Ok(Tensor::new(vec![b, d], out))
}

/// Sum of the steps, divided by max(length, 1) for the mean.
fn sequence_pool(s: &Tensor, mask: &Tensor, mean: bool) -> Result<Tensor, String> {
    let (b, l, d) = seq_dims(s)?;
    if mask.shape != [b, l] {
        return Err(format!(
            "mask {:?} does not fit steps {:?}",
            mask.shape, s.shape
        ));
    }
    let mut out = vec![0.0f32; b * d];
    for r in 0..b {
        let len: f32 = (0..l).map(|k| mask.data[r * l + k]).sum();
        for j in 0..d {
            let sum: f32 = (0..l).map(|k| s.data[(r * l + k) * d + j]).sum();
            out[r * d + j] = if mean { sum / len.max(1.0) } else { sum };
        }
    }
    Ok(Tensor::new(vec![b, d], out))
}

/// Each window's masked, score-weighted mean over its valid steps, then
/// the padded query, step by step as the plan's WINDOW_POOL says.
fn window_pool(
    scores: &Tensor,
    s: &Tensor,
    mask: &Tensor,
    q: &Tensor,
    windows: &[u32],
) -> Result<Tensor, String> {
    let (b, l, d) = seq_dims(s)?;
    let dq = q.shape.get(1).copied().unwrap_or(0);
    if mask.shape != [b, l] || scores.shape != [b, l, 1] || dq > d {
        return Err(format!(
            "scores {:?}, mask {:?} or query {:?} do not fit steps {:?}",
            scores.shape, mask.shape, q.shape, s.shape
        ));
    }
    let width = d * (windows.len() + 1);
    let mut out = vec![0.0f32; b * width];
    for r in 0..b {
        let len: f32 = (0..l).map(|k| mask.data[r * l + k]).sum();
        let mut start = 0usize;
        for (w, &wl) in windows.iter().enumerate() {
            let wl = wl as usize;
            let count = (len - start as f32).min(wl as f32).max(1.0);
            for k in start..(start + wl).min(l) {
                let a = scores.data[r * l + k] * mask.data[r * l + k];
                for j in 0..d {
                    out[r * width + w * d + j] += a * s.data[(r * l + k) * d + j] / count;
                }
            }
            start += wl;
        }
        for j in 0..dq {
            out[r * width + windows.len() * d + j] = q.data[r * dq + j];
        }
    }
    Ok(Tensor::new(vec![b, width], out))
}

/// Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7).
fn erf(x: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs() as f64);
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-(x as f64) * (x as f64)).exp();
    (if x >= 0.0 { y } else { -y }) as f32
}

/// Random feature-group inputs for every FEATURE_GROUP op of `plan`
/// (uniform in [-1, 1), deterministic from `seed`).
pub(crate) fn random_group_inputs(plan: &Plan, batch: usize, seed: u64) -> HashMap<String, Tensor> {
    let mut rng = crate::rng::SplitMix64::new(seed);
    let mut out = HashMap::new();
    for op in &plan.ops {
        // Steps are zero past each row's length, as the lookup pads them.
        if op.kind == OpKind::SequenceEmbed as i32 || op.kind == OpKind::SequenceMask as i32 {
            let shape = &plan.values[op.output as usize].shape;
            let l = shape.get(1).copied().unwrap_or(0).max(0) as usize;
            let d = shape.get(2).copied().unwrap_or(1).max(1) as usize;
            let lens: Vec<usize> = (0..batch)
                .map(|r| {
                    let mut lr = crate::rng::SplitMix64::new(seed ^ (r as u64 + 1));
                    lr.below(l + 1)
                })
                .collect();
            let mut data = Vec::with_capacity(batch * l * d);
            for &n in &lens {
                for k in 0..l {
                    for _ in 0..d {
                        data.push(if k >= n {
                            0.0
                        } else if op.kind == OpKind::SequenceMask as i32 {
                            1.0
                        } else {
                            (rng.next_f64() * 2.0 - 1.0) as f32
                        });
                    }
                }
            }
            let shape = if op.kind == OpKind::SequenceMask as i32 {
                vec![batch, l]
            } else {
                vec![batch, l, d]
            };
            out.insert(op.name.clone(), Tensor::new(shape, data));
        }
        if op.kind == OpKind::FeatureGroup as i32 {
            let w = plan.values[op.output as usize]
                .shape
                .get(1)
                .copied()
                .unwrap_or(0)
                .max(0) as usize;
            let data = (0..batch * w)
                .map(|_| (rng.next_f64() * 2.0 - 1.0) as f32)
                .collect();
            out.insert(op.name.clone(), Tensor::new(vec![batch, w], data));
        }
    }
    out
}
