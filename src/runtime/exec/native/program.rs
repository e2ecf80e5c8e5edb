//! A plan laid out for one batch size: each value's view, each op's step,
//! and the buffers (activations and gradients) they live in.

use super::step::{gradient_writes, Step};
use super::view::View;
use crate::plan::resolve_axis;
use crate::plan::validate::Analysis;
use crate::proto::plan::{Activation, OpKind, Plan};
use crate::runtime::error::{invalid_plan, unsupported, Result};

/// The plan at one batch size.
#[derive(Debug)]
pub(super) struct Program {
    pub batch: usize,
    /// Built for training (backward passes run on it); an inference
    /// program's values share memory by lifetime (`share_activations`).
    pub training: bool,
    pub steps: Vec<Step>,
    /// Per plan value.
    pub views: Vec<Option<View>>,
    pub bufs: Vec<Vec<f32>>,
    /// Gradient slots, allocated at the first backward pass. Buffer `b`'s
    /// gradient lives in the first `bufs[b].len()` elements of slot
    /// `gslot[b]`; buffers whose gradients are never live at the same
    /// time share a slot (see `GradientPlan`).
    pub gbufs: Vec<Vec<f32>>,
    pub gslot: Vec<usize>,
    slot_sizes: Vec<usize>,
    /// Buffers to zero before the loss seeds the logits' gradients, and
    /// before each op's backward pass (by op index): the accumulated
    /// (non-exclusive) ones, when their gradient becomes live.
    pub zero_first: Vec<usize>,
    pub zero_before: Vec<Vec<usize>>,
    /// Per buffer: whether its gradient is needed.
    pub needs_grad: Vec<bool>,
    /// Per buffer: its gradient is written exactly once per element by the
    /// backward pass (disjoint writers covering it all), so writers store
    /// instead of adding and the buffer is never zeroed. Every other
    /// gradient buffer is zeroed each step and accumulated into.
    pub exclusive: Vec<bool>,
    /// Per LINEAR/BATCHED_LINEAR op: the output columns (start, len) an
    /// in-place relu covers, which the multiply applies with its bias (as
    /// AMX stores its tiles in bf16, in one pass right after it in f32);
    /// per such relu op: true (it then has nothing to do).
    pub relu_epilogue: Vec<Option<(usize, usize)>>,
    pub relu_fused: Vec<bool>,
    /// Per step: it stores its input gradient masked by the input's
    /// values; per in-place relu: its backward pass is done by those
    /// writers (see `relu_masks`).
    pub grad_masked: Vec<bool>,
    pub relu_backward_fused: Vec<bool>,
}

impl Program {
    /// Lays `plan` out for `batch` rows. `Unsupported` names an op the
    /// engine cannot run (the model may then run on candle); `InvalidPlan`
    /// an inconsistency no engine could run.
    pub(super) fn build(plan: &Plan, analysis: &Analysis, batch: usize) -> Result<Self> {
        let batch_axis = &analysis.batch_axis;
        let mut b = Builder {
            plan,
            batch,
            views: vec![None; plan.values.len()],
            sizes: Vec::new(),
            needs: Vec::new(),
            op: String::new(),
        };
        let mut steps = Vec::with_capacity(plan.ops.len());
        let in_place = in_place_activations(plan, analysis);
        for (oi, op) in plan.ops.iter().enumerate() {
            b.op.clone_from(&op.name);
            let kind = OpKind::try_from(op.kind).unwrap_or(OpKind::OpUnspecified);
            let input = |b: &Builder, i: usize| -> Result<View> {
                op.inputs
                    .get(i)
                    .and_then(|&v| b.views.get(v as usize).copied().flatten())
                    .ok_or_else(|| invalid_plan!("op \"{}\" reads a value not computed", op.name))
            };
            let param_shape = |i: usize| -> Vec<usize> {
                op.params
                    .get(i)
                    .and_then(|&p| plan.params.get(p as usize))
                    .map(|p| p.shape.iter().map(|&d| d as usize).collect())
                    .unwrap_or_default()
            };
            let trainable = op
                .params
                .iter()
                .any(|&p| plan.params.get(p as usize).is_some_and(|p| p.trainable));
            let (step, out) = match kind {
                OpKind::FeatureGroup => {
                    let shape = b.declared(op.output as usize)?;
                    let embedded = op.features.iter().any(|&f| {
                        plan.features.get(f as usize).is_some_and(|s| {
                            crate::proto::plan::FeatureKind::try_from(s.kind)
                                != Ok(crate::proto::plan::FeatureKind::RawDense)
                        })
                    });
                    let out = b.fresh(&shape, embedded)?;
                    (Step::Group { out }, out)
                }
                OpKind::Linear => {
                    let x = input(&b, 0)?;
                    let w = param_shape(0);
                    let [o, i] = w[..] else {
                        return Err(invalid_plan!("linear \"{}\" weight {:?}", op.name, w));
                    };
                    if x.dims[2] != i {
                        return Err(invalid_plan!("linear \"{}\" input {:?}", op.name, x.dims));
                    }
                    if x.flat_mat().is_none() {
                        return Err(unsupported!(
                            op.name,
                            "its input's rows are not one strided matrix in memory (a stack of \
                             column slices), and the engine multiplies one matrix per linear"
                        ));
                    }
                    let mut shape = x.logical();
                    if let Some(last) = shape.last_mut() {
                        *last = o;
                    }
                    let out = b.fresh(&shape, true)?;
                    let step = Step::Linear {
                        x,
                        out,
                        w: op.params[0] as usize,
                        b: op.params.get(1).map(|&p| p as usize),
                    };
                    (step, out)
                }
                OpKind::BatchedLinear => {
                    let x = input(&b, 0)?;
                    let w = param_shape(0);
                    let [e, o, i] = w[..] else {
                        return Err(invalid_plan!(
                            "batched linear \"{}\" weight {:?}",
                            op.name,
                            w
                        ));
                    };
                    let ok = x.dims[2] == i
                        && match x.rank {
                            2 => x.flat_mat().is_some(),
                            _ => x.dims[0] == e,
                        };
                    if !ok {
                        return Err(invalid_plan!(
                            "batched linear \"{}\" input {:?}",
                            op.name,
                            x.dims
                        ));
                    }
                    let rows = if x.rank == 2 { x.rows() } else { x.dims[1] };
                    let out = b.fresh(&[e, rows, o], true)?;
                    let step = Step::Batched {
                        x,
                        out,
                        w: op.params[0] as usize,
                        b: op.params.get(1).map(|&p| p as usize),
                    };
                    (step, out)
                }
                OpKind::Activation if in_place[oi] => {
                    let x = input(&b, 0)?;
                    let step = Step::Act {
                        x,
                        y: x,
                        slope: None,
                        in_place: true,
                    };
                    (step, x)
                }
                OpKind::Activation => {
                    let x = input(&b, 0)?;
                    let y = b.fresh(&x.logical(), b.needs[x.buf] || trainable)?;
                    let prelu = Activation::try_from(op.activation) == Ok(Activation::Prelu);
                    let slope = prelu
                        .then(|| op.params.first().map(|&p| p as usize))
                        .flatten();
                    if prelu && slope.is_none() {
                        return Err(invalid_plan!("prelu \"{}\" has no slope", op.name));
                    }
                    let step = Step::Act {
                        x,
                        y,
                        slope,
                        in_place: false,
                    };
                    (step, y)
                }
                OpKind::Dropout => {
                    let x = input(&b, 0)?;
                    let y = b.fresh(&x.logical(), b.needs[x.buf])?;
                    (Step::Dropout { x, y }, y)
                }
                OpKind::Slice => {
                    let x = input(&b, 0)?;
                    let ax = axis_of(op.axis, &x, &op.name)?;
                    let (start, len) = (op.start as usize, op.length as usize);
                    if op.start < 0 || op.length < 0 || start + len > x.dims[ax] {
                        return Err(invalid_plan!("slice \"{}\" out of range", op.name));
                    }
                    (Step::Alias, x.narrow(ax, start, len))
                }
                OpKind::Stack => {
                    let xs = (0..op.inputs.len())
                        .map(|i| input(&b, i))
                        .collect::<Result<Vec<_>>>()?;
                    if xs.iter().any(|x| x.rank != 2 || x.dims != xs[0].dims) {
                        return Err(invalid_plan!(
                            "stack \"{}\" of unequal rank-2 values",
                            op.name
                        ));
                    }
                    match stacked_alias(&xs) {
                        Some(v) => (Step::Alias, v),
                        None => {
                            let [_, r, c] = xs[0].dims;
                            let needs = xs.iter().any(|x| b.needs[x.buf]);
                            let out = b.fresh(&[xs.len(), r, c], needs)?;
                            let parts = xs
                                .iter()
                                .enumerate()
                                .map(|(k, x)| (*x, out.narrow(0, k, 1)))
                                .collect();
                            (Step::Copy { parts, out }, out)
                        }
                    }
                }
                OpKind::Concat => {
                    let xs = (0..op.inputs.len())
                        .map(|i| input(&b, i))
                        .collect::<Result<Vec<_>>>()?;
                    let ax = axis_of(op.axis, &xs[0], &op.name)?;
                    let same = xs.iter().all(|x| {
                        x.rank == xs[0].rank
                            && (0..3).all(|a| a == ax || x.dims[a] == xs[0].dims[a])
                    });
                    if !same {
                        return Err(invalid_plan!("concat \"{}\" of unequal shapes", op.name));
                    }
                    match concat_alias(&xs, ax) {
                        Some(v) => (Step::Alias, v),
                        None => {
                            let mut shape = xs[0].dims;
                            shape[ax] = xs.iter().map(|x| x.dims[ax]).sum();
                            let logical = &shape[3 - xs[0].rank..];
                            let needs = xs.iter().any(|x| b.needs[x.buf]);
                            let out = b.fresh(logical, needs)?;
                            let mut at = 0;
                            let mut parts = Vec::with_capacity(xs.len());
                            for x in &xs {
                                parts.push((*x, out.narrow(ax, at, x.dims[ax])));
                                at += x.dims[ax];
                            }
                            (Step::Copy { parts, out }, out)
                        }
                    }
                }
                OpKind::Softmax => {
                    let x = input(&b, 0)?;
                    let axis = axis_of(op.axis, &x, &op.name)?;
                    let y = b.fresh(&x.logical(), b.needs[x.buf])?;
                    (Step::Softmax { x, y, axis }, y)
                }
                OpKind::GateMix => {
                    let (w, e) = (input(&b, 0)?, input(&b, 1)?);
                    if w.rank != 2
                        || e.rank != 3
                        || e.dims[0] != w.dims[2]
                        || e.dims[1] != w.dims[1]
                    {
                        return Err(invalid_plan!("gate mix \"{}\" shapes", op.name));
                    }
                    let needs = b.needs[w.buf] || b.needs[e.buf];
                    let out = b.fresh(&[e.dims[1], e.dims[2]], needs)?;
                    (
                        Step::GateMix {
                            w,
                            es: vec![e],
                            out,
                        },
                        out,
                    )
                }
                OpKind::BatchNorm if op.over_steps => {
                    // Statistics over every step of every row: the [B, L, D]
                    // value read as [B * L, D], normalized along the rows.
                    let x = input(&b, 0)?;
                    let dense = |v: &View| {
                        v.rank == 3 && v.strides == [v.dims[1] * v.dims[2], v.dims[2], 1]
                    };
                    if !dense(&x) {
                        return Err(unsupported!(
                            op.name,
                            "batch norm over the steps of a value that is not one dense [B, L, D] block"
                        ));
                    }
                    let y = b.fresh(&x.logical(), true)?;
                    let rows = |v: View| View {
                        dims: [1, v.dims[0] * v.dims[1], v.dims[2]],
                        strides: [v.dims[0] * v.dims[1] * v.dims[2], v.dims[2], 1],
                        rank: 2,
                        ..v
                    };
                    let params = op.params.iter().map(|&p| p as usize).collect();
                    (
                        Step::Norm {
                            x: rows(x),
                            y: rows(y),
                            axis: 1,
                            batch_norm: true,
                            params,
                        },
                        y,
                    )
                }
                OpKind::BatchNorm | OpKind::LayerNorm => {
                    let x = input(&b, 0)?;
                    let batch_norm = kind == OpKind::BatchNorm;
                    let axis = if batch_norm {
                        x.internal_axis(batch_axis.get(oi).copied().unwrap_or(0))
                    } else {
                        2
                    };
                    let y = b.fresh(&x.logical(), true)?;
                    let params = op.params.iter().map(|&p| p as usize).collect();
                    (
                        Step::Norm {
                            x,
                            y,
                            axis,
                            batch_norm,
                            params,
                        },
                        y,
                    )
                }
                OpKind::SequenceEmbed => {
                    let shape = b.declared(op.output as usize)?;
                    if shape.len() != 3 {
                        return Err(invalid_plan!(
                            "sequence op \"{}\" makes {:?}",
                            op.name,
                            shape
                        ));
                    }
                    let embedded = op
                        .features
                        .iter()
                        .any(|&f| analysis.embedded.contains(&(f as usize)));
                    let out = b.fresh(&shape, embedded)?;
                    (Step::SeqEmbed { out }, out)
                }
                OpKind::SequenceMask => {
                    let shape = b.declared(op.output as usize)?;
                    let out = b.fresh(&shape, false)?;
                    (Step::SeqMask { out }, out)
                }
                OpKind::DinInput | OpKind::DotScores => {
                    let (q, s) = (input(&b, 0)?, input(&b, 1)?);
                    if q.rank != 2 || s.rank != 3 || q.dims[1] != s.dims[0] || q.dims[2] > s.dims[2]
                    {
                        return Err(invalid_plan!(
                            "sequence op \"{}\" takes {:?} and {:?}",
                            op.name,
                            q.logical(),
                            s.logical()
                        ));
                    }
                    let needs = b.needs[q.buf] || b.needs[s.buf];
                    if kind == OpKind::DinInput {
                        let y = b.fresh(&[s.dims[0], s.dims[1], 4 * s.dims[2]], needs)?;
                        (Step::DinInput { q, s, y }, y)
                    } else {
                        if q.dims[2] != s.dims[2] {
                            return Err(invalid_plan!("dot scores \"{}\" widths", op.name));
                        }
                        let y = b.fresh(&[s.dims[0], s.dims[1], 1], needs)?;
                        (Step::DotScores { q, s, y }, y)
                    }
                }
                OpKind::AttentionPool => {
                    let (scores, s, mask) = (input(&b, 0)?, input(&b, 1)?, input(&b, 2)?);
                    let (rows, steps) = (s.dims[0], s.dims[1]);
                    if s.rank != 3
                        || scores.dims != [rows, steps, 1]
                        || mask.rank != 2
                        || mask.dims[1..] != [rows, steps]
                    {
                        return Err(invalid_plan!("attention pool \"{}\" shapes", op.name));
                    }
                    let y = b.fresh(&[rows, s.dims[2]], b.needs[scores.buf] || b.needs[s.buf])?;
                    (Step::AttnPool { scores, s, mask, y }, y)
                }
                OpKind::SequencePool => {
                    let (s, mask) = (input(&b, 0)?, input(&b, 1)?);
                    let (rows, steps) = (s.dims[0], s.dims[1]);
                    if s.rank != 3 || mask.rank != 2 || mask.dims[1..] != [rows, steps] {
                        return Err(invalid_plan!("sequence pool \"{}\" shapes", op.name));
                    }
                    let mean = crate::proto::plan::Pooling::try_from(op.pooling)
                        == Ok(crate::proto::plan::Pooling::Mean);
                    let y = b.fresh(&[rows, s.dims[2]], b.needs[s.buf])?;
                    (Step::SeqPool { s, mask, y, mean }, y)
                }
                OpKind::MultiHeadAttention => {
                    let (q, k, v) = (input(&b, 0)?, input(&b, 1)?, input(&b, 2)?);
                    let mask = input(&b, 3)?;
                    let heads = op.heads as usize;
                    let (rows, steps, e) = (q.dims[0], q.dims[1], q.dims[2]);
                    if q.rank != 3
                        || k.dims != q.dims
                        || v.dims != q.dims
                        || mask.rank != 2
                        || mask.dims[1..] != [rows, steps]
                        || heads == 0
                        || e % heads != 0
                    {
                        return Err(invalid_plan!(
                            "attention \"{}\" of {heads} heads over {:?}, {:?}, {:?} and mask {:?}",
                            op.name,
                            q.logical(),
                            k.logical(),
                            v.logical(),
                            mask.logical()
                        ));
                    }
                    let needs = b.needs[q.buf] || b.needs[k.buf] || b.needs[v.buf];
                    let y = b.fresh(&q.logical(), needs)?;
                    (
                        Step::Attention {
                            q,
                            k,
                            v,
                            mask,
                            y,
                            heads,
                        },
                        y,
                    )
                }
                OpKind::MaskedMean => {
                    let (x, mask, length) = (input(&b, 0)?, input(&b, 1)?, input(&b, 2)?);
                    let (rows, steps) = (x.dims[0], x.dims[1]);
                    if x.rank != 3
                        || mask.rank != 2
                        || mask.dims[1..] != [rows, steps]
                        || length.rank != 2
                        || length.dims[1] != rows
                    {
                        return Err(invalid_plan!("masked mean \"{}\" shapes", op.name));
                    }
                    let y = b.fresh(&[rows, x.dims[2]], b.needs[x.buf])?;
                    (Step::MaskedMean { x, mask, length, y }, y)
                }
                OpKind::Intervention => {
                    let (x, s) = (input(&b, 0)?, input(&b, 1)?);
                    let (n, m) = (x.dims[2], s.dims[2]);
                    let ps: Vec<usize> = op.params.iter().map(|&p| p as usize).collect();
                    let r = param_shape(0).get(1).copied().unwrap_or(0);
                    let fits = x.rank == 2
                        && s.rank == 2
                        && s.dims[1] == x.dims[1]
                        && param_shape(0) == [n, r]
                        && param_shape(1) == [n, n]
                        && param_shape(2) == [m, r]
                        && param_shape(3) == [m, m];
                    let (Ok([xb, qb, xs, qs]), true) = (<[usize; 4]>::try_from(ps), fits) else {
                        return Err(invalid_plan!(
                            "intervention \"{}\" of {:?} by {:?} and its parameters",
                            op.name,
                            x.logical(),
                            s.logical()
                        ));
                    };
                    let y = b.fresh(&x.logical(), b.needs[x.buf] || trainable)?;
                    (
                        Step::Intervention {
                            x,
                            s,
                            y,
                            params: [xb, qb, xs, qs],
                        },
                        y,
                    )
                }
                OpKind::WindowInput => {
                    let (q, s) = (input(&b, 0)?, input(&b, 1)?);
                    if q.rank != 2 || s.rank != 3 || q.dims[1] != s.dims[0] || q.dims[2] > s.dims[2]
                    {
                        return Err(invalid_plan!("window input \"{}\" shapes", op.name));
                    }
                    let needs = b.needs[q.buf] || b.needs[s.buf];
                    let y = b.fresh(&[s.dims[0], s.dims[1], 3 * s.dims[2]], needs)?;
                    (Step::WindowInput { q, s, y }, y)
                }
                OpKind::WindowPool => {
                    let (scores, s) = (input(&b, 0)?, input(&b, 1)?);
                    let (mask, q) = (input(&b, 2)?, input(&b, 3)?);
                    let (rows, steps, d) = (s.dims[0], s.dims[1], s.dims[2]);
                    if s.rank != 3
                        || scores.dims != [rows, steps, 1]
                        || mask.rank != 2
                        || mask.dims[1..] != [rows, steps]
                        || q.rank != 2
                        || q.dims[1] != rows
                        || q.dims[2] > d
                    {
                        return Err(invalid_plan!("window pool \"{}\" shapes", op.name));
                    }
                    let windows: Vec<usize> = op.widths.iter().map(|&w| w as usize).collect();
                    let needs = b.needs[scores.buf] || b.needs[s.buf] || b.needs[q.buf];
                    let y = b.fresh(&[rows, (windows.len() + 1) * d], needs)?;
                    (
                        Step::WindowPool {
                            scores,
                            s,
                            mask,
                            q,
                            y,
                            windows,
                        },
                        y,
                    )
                }
                OpKind::VariationalDropout => {
                    let x = input(&b, 0)?;
                    let columns: Vec<usize> = op
                        .widths
                        .iter()
                        .enumerate()
                        .flat_map(|(f, &w)| std::iter::repeat_n(f, w as usize))
                        .collect();
                    let fp = op.params.first().map(|&p| p as usize);
                    let (Some(fp), true, true) = (
                        fp,
                        x.rank == 2 && columns.len() == x.dims[2],
                        param_shape(0) == [op.widths.len()],
                    ) else {
                        return Err(invalid_plan!(
                            "variational dropout \"{}\": {} feature widths for a {:?} input",
                            op.name,
                            op.widths.len(),
                            x.logical()
                        ));
                    };
                    let y = b.fresh(&x.logical(), b.needs[x.buf] || trainable)?;
                    (Step::VarDrop { x, y, fp, columns }, y)
                }
                OpKind::Mul => {
                    let (a, x) = (input(&b, 0)?, input(&b, 1)?);
                    if a.logical() != x.logical() {
                        return Err(invalid_plan!(
                            "op \"{}\" multiplies {:?} by {:?}",
                            op.name,
                            a.logical(),
                            x.logical()
                        ));
                    }
                    let y = b.fresh(&a.logical(), b.needs[a.buf] || b.needs[x.buf])?;
                    (Step::Mul { a, b: x, y }, y)
                }
                OpKind::Dice => {
                    let (x, p) = (input(&b, 0)?, input(&b, 1)?);
                    let width = x.logical().last().copied().unwrap_or(0);
                    let alpha = op.params.first().map(|&p| p as usize);
                    let (Some(alpha), true, true) =
                        (alpha, x.logical() == p.logical(), param_shape(0) == [width])
                    else {
                        return Err(invalid_plan!(
                            "dice \"{}\" gates {:?} by {:?} with a {:?} alpha",
                            op.name,
                            x.logical(),
                            p.logical(),
                            param_shape(0)
                        ));
                    };
                    let y = b.fresh(&x.logical(), b.needs[x.buf] || b.needs[p.buf] || trainable)?;
                    (Step::Dice { x, p, y, alpha }, y)
                }
                OpKind::StopGradient => {
                    let x = input(&b, 0)?;
                    let y = b.fresh(&x.logical(), false)?;
                    (Step::Detach { x, y }, y)
                }
                OpKind::OpUnspecified => {
                    return Err(invalid_plan!("op \"{}\" has no kind", op.name))
                }
            };
            let declared = b.declared(op.output as usize)?;
            if out.logical() != declared {
                return Err(invalid_plan!(
                    "op \"{}\" makes {:?}, the plan says {:?}",
                    op.name,
                    out.logical(),
                    declared
                ));
            }
            if !out.rows_disjoint() {
                return Err(invalid_plan!(
                    "op \"{}\" makes an overlapping view",
                    op.name
                ));
            }
            b.views[op.output as usize] = Some(out);
            steps.push(step);
        }
        virtual_concats(plan, analysis, &mut steps, &mut b.sizes);
        let exclusive = exclusive_buffers(plan, &steps, &b.views, &b.sizes, &b.needs);
        let live = gradient_lifetimes(plan, &steps, &b.views, b.sizes.len(), &b.needs);
        let (gslot, slot_sizes) = assign_slots(&live, &b.sizes);
        let mut zero_first = Vec::new();
        let mut zero_before = vec![Vec::new(); steps.len()];
        for (buf, l) in live.iter().enumerate() {
            match l {
                Some((start, _)) if !exclusive[buf] => match usize::try_from(*start) {
                    Ok(t) => zero_before[steps.len() - 1 - t].push(buf),
                    Err(_) => zero_first.push(buf),
                },
                _ => {}
            }
        }
        let (relu_epilogue, relu_fused) = relu_epilogues(plan, &steps);
        let masks = super::relu_masks::relu_masks(plan, &steps, &b.needs);
        let bufs = b.sizes.iter().map(|&n| vec![0.0f32; n]).collect();
        Ok(Self {
            relu_epilogue,
            relu_fused,
            grad_masked: masks.masked,
            relu_backward_fused: masks.relu_done,
            batch,
            training: true,
            steps,
            views: b.views,
            bufs,
            gbufs: Vec::new(),
            gslot,
            slot_sizes,
            zero_first,
            zero_before,
            needs_grad: b.needs,
            exclusive,
        })
    }

    /// `build` for forward passes only (evaluation, prediction): a value's
    /// memory is needed only from the op that writes it to its last reader,
    /// so values whose lifetimes do not overlap share it, as gradients do.
    /// At batch 8192 the PLE example then touches a fraction of the
    /// training program's activation memory. Safe because every forward
    /// kernel overwrites all of its output (a program is reused batch after
    /// batch without clearing).
    pub(super) fn build_inference(plan: &Plan, analysis: &Analysis, batch: usize) -> Result<Self> {
        let mut p = Self::build(plan, analysis, batch)?;
        p.share_activations(plan);
        Ok(p)
    }

    fn share_activations(&mut self, plan: &Plan) {
        let sizes: Vec<usize> = self.bufs.iter().map(Vec::len).collect();
        let mut live: Vec<Option<(i64, i64)>> = vec![None; sizes.len()];
        let mut touch = |b: usize, t: i64| {
            if sizes.get(b).is_some_and(|&n| n > 0) {
                let l = live[b].get_or_insert((t, t));
                l.0 = l.0.min(t);
                l.1 = l.1.max(t);
            }
        };
        for (s, step) in self.steps.iter_mut().enumerate() {
            for v in views_of(step) {
                touch(v.buf, s as i64);
            }
        }
        // The logits are read after the pass.
        let after = self.steps.len() as i64;
        for t in &plan.tasks {
            if let Some(v) = self.views.get(t.logits as usize).copied().flatten() {
                touch(v.buf, after);
            }
        }
        let (slot, slot_sizes) = assign_slots(&live, &sizes);
        for step in &mut self.steps {
            for v in views_of(step) {
                v.buf = slot[v.buf];
            }
        }
        for v in self.views.iter_mut().flatten() {
            v.buf = slot[v.buf];
        }
        self.bufs = slot_sizes.iter().map(|&n| vec![0.0; n]).collect();
        // No backward pass runs on it.
        let n = self.bufs.len();
        self.training = false;
        self.gslot = vec![0; n];
        self.slot_sizes.clear();
        self.zero_first.clear();
        self.zero_before = vec![Vec::new(); self.steps.len()];
        self.needs_grad = vec![false; n];
        self.exclusive = vec![false; n];
    }

    /// Takes over `old`'s memory, which the batches before touched: each of
    /// this program's buffers (and, in training, gradient slots, allocated now
    /// rather than at the first backward pass) becomes the smallest of `old`'s
    /// buffers and slots that holds it, zeroed as a new one would be. What is
    /// not taken over is dropped. Why: a program's memory is faulted in and
    /// cleared by the kernel page by page when first written (the PLE at batch
    /// 8192 touches ~1 GB); the last, shorter batch of every epoch and the full
    /// batch after it each built a program on fresh memory.
    pub(super) fn recycle(&mut self, old: Program) {
        let mut pool: Vec<Vec<f32>> = old.bufs.into_iter().chain(old.gbufs).collect();
        pool.sort_by_key(Vec::capacity);
        // The smallest old buffer that holds `n` floats, zeroed to `n`.
        let mut take = |n: usize| -> Option<Vec<f32>> {
            let i = pool.partition_point(|v| v.capacity() < n);
            if n == 0 || i == pool.len() {
                return None;
            }
            let mut v = pool.remove(i);
            v.clear();
            v.resize(n, 0.0);
            Some(v)
        };
        // The largest first, so that they get the largest old buffers.
        let mut wants: Vec<(usize, bool, usize)> = self
            .bufs
            .iter()
            .enumerate()
            .map(|(i, b)| (b.len(), false, i))
            .collect();
        if self.training {
            wants.extend(
                self.slot_sizes
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| (n, true, i)),
            );
            self.gbufs = vec![Vec::new(); self.slot_sizes.len()];
        }
        wants.sort_by_key(|w| std::cmp::Reverse(w.0));
        for (n, gradient, i) in wants {
            match (take(n), gradient) {
                (Some(v), false) => self.bufs[i] = v,
                (Some(v), true) => self.gbufs[i] = v,
                // A buffer keeps the one `build` gave it; a slot gets one
                // as `start_backward` would.
                (None, false) => {}
                (None, true) => self.gbufs[i] = vec![0.0; n],
            }
        }
    }

    /// Floats of gradient memory (all slots).
    #[cfg(test)]
    pub(super) fn gradient_floats(&self) -> usize {
        self.slot_sizes.iter().sum()
    }

    /// Zeroes `buf`'s gradient (its part of its slot).
    pub(super) fn zero_grad(&mut self, buf: usize) {
        let n = self.bufs[buf].len();
        if let Some(g) = self.gbufs.get_mut(self.gslot[buf]) {
            g[..n].fill(0.0);
        }
    }

    /// Allocates the gradient slots the first time, and zeroes the
    /// buffers the loss seeds into that accumulate.
    pub(super) fn start_backward(&mut self) {
        if self.gbufs.len() != self.slot_sizes.len() {
            self.gbufs = self.slot_sizes.iter().map(|&n| vec![0.0; n]).collect();
        }
        for b in self.zero_first.clone() {
            self.zero_grad(b);
        }
    }
}

/// Activations computed in place, over their input: relu, sigmoid and
/// tanh, whose gradient needs only their output, when nothing else needs
/// the input's values. That holds when the input is read by this op alone
/// and comes straight from a LINEAR or BATCHED_LINEAR (whose backward pass
/// needs their input, not their output), or is a SLICE of such a LINEAR
/// whose other readers are SLICEs of other columns (the fused expert
/// layers). Saves one activation and one gradient buffer per layer, the
/// memory PyTorch saves by keeping only a relu's output.
fn in_place_activations(plan: &Plan, analysis: &Analysis) -> Vec<bool> {
    let (producer, readers) = (&analysis.producer, &analysis.readers);
    let logits: Vec<usize> = plan.tasks.iter().map(|t| t.logits as usize).collect();
    let kind = |i: usize| OpKind::try_from(plan.ops[i].kind).unwrap_or(OpKind::OpUnspecified);
    let linear = |i: usize| matches!(kind(i), OpKind::Linear | OpKind::BatchedLinear);
    let only_reader = |v: usize, i: usize| readers.get(v).is_some_and(|r| r.as_slice() == [i]);
    plan.ops
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let act = Activation::try_from(op.activation).unwrap_or(Activation::ActNone);
            if kind(i) != OpKind::Activation
                || !matches!(
                    act,
                    Activation::Relu | Activation::Sigmoid | Activation::Tanh
                )
                || op.inputs.len() != 1
            {
                return false;
            }
            let x = op.inputs[0] as usize;
            if !only_reader(x, i) || logits.contains(&x) {
                return false;
            }
            let Some(p) = producer.get(x).copied().flatten() else {
                return false;
            };
            if linear(p) {
                return true;
            }
            // A slice of a linear: every reader of the linear's output is a
            // slice along the same axis, and no other one overlaps ours.
            let s = &plan.ops[p];
            let Some(src) = s.inputs.first().map(|&v| v as usize) else {
                return false;
            };
            let Some(lp) = producer.get(src).copied().flatten() else {
                return false;
            };
            if kind(p) != OpKind::Slice || !linear(lp) || logits.contains(&src) {
                return false;
            }
            let ours = (s.start, s.start + s.length);
            readers[src].iter().all(|&r| {
                let o = &plan.ops[r];
                kind(r) == OpKind::Slice
                    && o.axis == s.axis
                    && (r == p || o.start + o.length <= ours.0 || o.start >= ours.1)
            })
        })
        .collect()
}

/// A CONCAT of expert stacks along the expert axis that only gates read
/// (PLE: each task gate's own experts and the shared ones) is not copied:
/// the gates read its inputs in place, and their gradients go straight
/// back. The concat's buffer is left empty.
fn virtual_concats(plan: &Plan, analysis: &Analysis, steps: &mut [Step], sizes: &mut [usize]) {
    let readers = &analysis.readers;
    let logits: Vec<usize> = plan.tasks.iter().map(|t| t.logits as usize).collect();
    for c in 0..steps.len() {
        let op = &plan.ops[c];
        let Step::Copy { parts, out } = &steps[c] else {
            continue;
        };
        let (parts, out) = (parts.clone(), *out);
        let value = op.output as usize;
        let along_experts = OpKind::try_from(op.kind) == Ok(OpKind::Concat)
            && out.rank == 3
            && parts
                .iter()
                .all(|(src, dst)| src.rank == 3 && dst.dims[1..] == out.dims[1..]);
        let gates_only = readers.get(value).is_some_and(|r| {
            !r.is_empty()
                && r.iter().all(|&g| {
                    OpKind::try_from(plan.ops[g].kind) == Ok(OpKind::GateMix)
                        && plan.ops[g].inputs.get(1) == Some(&op.output)
                        && plan.ops[g].inputs.first() != Some(&op.output)
                })
        });
        if !along_experts || !gates_only || logits.contains(&value) {
            continue;
        }
        let sources: Vec<View> = parts.iter().map(|(src, _)| *src).collect();
        for &g in &readers[value] {
            if let Step::GateMix { es, .. } = &mut steps[g] {
                if es.as_slice() == [out] {
                    *es = sources.clone();
                }
            }
        }
        steps[c] = Step::Alias;
        sizes[out.buf] = 0;
    }
}

/// Every view a step reads or writes.
fn views_of(step: &mut Step) -> Vec<&mut View> {
    match step {
        Step::Alias => Vec::new(),
        Step::Group { out } => vec![out],
        Step::Linear { x, out, .. } | Step::Batched { x, out, .. } => vec![x, out],
        Step::Act { x, y, .. }
        | Step::Dropout { x, y }
        | Step::Detach { x, y }
        | Step::Softmax { x, y, .. }
        | Step::Norm { x, y, .. } => vec![x, y],
        Step::Mul { a, b, y } => vec![a, b, y],
        Step::Dice { x, p, y, .. } => vec![x, p, y],
        Step::VarDrop { x, y, .. } => vec![x, y],
        Step::SeqEmbed { out } | Step::SeqMask { out } => vec![out],
        Step::DinInput { q, s, y }
        | Step::DotScores { q, s, y }
        | Step::WindowInput { q, s, y } => vec![q, s, y],
        Step::WindowPool {
            scores,
            s,
            mask,
            q,
            y,
            ..
        } => vec![scores, s, mask, q, y],
        Step::AttnPool { scores, s, mask, y } => vec![scores, s, mask, y],
        Step::SeqPool { s, mask, y, .. } => vec![s, mask, y],
        Step::Attention {
            q, k, v, mask, y, ..
        } => vec![q, k, v, mask, y],
        Step::MaskedMean { x, mask, length, y } => vec![x, mask, length, y],
        Step::Intervention { x, s, y, .. } => vec![x, s, y],
        Step::Copy { parts, out } => parts
            .iter_mut()
            .flat_map(|(s, d)| [s, d])
            .chain(std::iter::once(out))
            .collect(),
        Step::GateMix { w, es, out } => std::iter::once(w)
            .chain(es.iter_mut())
            .chain(std::iter::once(out))
            .collect(),
    }
}

/// `Program::relu_epilogue` and `relu_fused`: an in-place relu over a
/// whole LINEAR/BATCHED_LINEAR output, or over a range of its columns (a
/// last-axis slice: the fused expert layers), can run in that multiply.
fn relu_epilogues(plan: &Plan, steps: &[Step]) -> (Vec<Option<(usize, usize)>>, Vec<bool>) {
    let mut epilogue = vec![None; steps.len()];
    let mut fused = vec![false; steps.len()];
    for (ai, step) in steps.iter().enumerate() {
        let Step::Act {
            x, in_place: true, ..
        } = step
        else {
            continue;
        };
        if Activation::try_from(plan.ops[ai].activation) != Ok(Activation::Relu) {
            continue;
        }
        let producer = steps.iter().position(|s| match s {
            Step::Linear { out, .. } | Step::Batched { out, .. } => out.buf == x.buf,
            _ => false,
        });
        let Some(p) = producer else { continue };
        let out = match &steps[p] {
            Step::Linear { out, .. } | Step::Batched { out, .. } => *out,
            _ => continue,
        };
        let start = x.off.wrapping_sub(out.off);
        let cols = out.narrow(2, start.min(out.dims[2]), x.dims[2]);
        if start + x.dims[2] <= out.dims[2] && cols == *x && epilogue[p].is_none() {
            epilogue[p] = Some((start, x.dims[2]));
            fused[ai] = true;
        }
    }
    (epilogue, fused)
}

/// The view a step's backward pass reads the gradient of (its output),
/// or None for views (which pass gradients through untouched).
fn gradient_read(step: &Step) -> Option<View> {
    match step {
        Step::Alias | Step::Detach { .. } | Step::SeqMask { .. } => None,
        Step::Mul { y, .. }
        | Step::Dice { y, .. }
        | Step::VarDrop { y, .. }
        | Step::DinInput { y, .. }
        | Step::DotScores { y, .. }
        | Step::AttnPool { y, .. }
        | Step::WindowInput { y, .. }
        | Step::WindowPool { y, .. }
        | Step::SeqPool { y, .. }
        | Step::Attention { y, .. }
        | Step::MaskedMean { y, .. }
        | Step::Intervention { y, .. } => Some(*y),
        Step::SeqEmbed { out } => Some(*out),
        Step::Group { out }
        | Step::Linear { out, .. }
        | Step::Batched { out, .. }
        | Step::Copy { out, .. }
        | Step::GateMix { out, .. } => Some(*out),
        Step::Act { y, .. } | Step::Dropout { y, .. } | Step::Softmax { y, .. } => Some(*y),
        Step::Norm { y, .. } => Some(*y),
    }
}

/// Per buffer that needs a gradient: the first and last backward step
/// (0 = the last op's backward, -1 = the loss seeding the logits) that
/// writes or reads its gradient.
fn gradient_lifetimes(
    plan: &Plan,
    steps: &[Step],
    views: &[Option<View>],
    nbufs: usize,
    needs: &[bool],
) -> Vec<Option<(i64, i64)>> {
    let mut live: Vec<Option<(i64, i64)>> = vec![None; nbufs];
    let mut touch = |buf: usize, t: i64| {
        if needs.get(buf) == Some(&true) {
            let l = live[buf].get_or_insert((t, t));
            l.0 = l.0.min(t);
            l.1 = l.1.max(t);
        }
    };
    for t in &plan.tasks {
        if let Some(v) = views.get(t.logits as usize).copied().flatten() {
            touch(v.buf, -1);
        }
    }
    let n = steps.len() as i64;
    for (oi, step) in steps.iter().enumerate() {
        let t = n - 1 - oi as i64;
        for v in gradient_writes(step, needs) {
            touch(v.buf, t);
        }
        if let Some(v) = gradient_read(step) {
            touch(v.buf, t);
        }
    }
    live
}

/// Packs gradient lifetimes into slots: a buffer takes a free slot (one
/// whose buffers' lifetimes all ended before it starts), the smallest that
/// fits or else the largest (grown), or a new one. Returns the slot of
/// each buffer and each slot's size.
fn assign_slots(live: &[Option<(i64, i64)>], sizes: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..live.len()).filter(|&b| live[b].is_some()).collect();
    order.sort_by_key(|&b| live[b].map_or(0, |l| l.0));
    let mut slot = vec![0usize; live.len()];
    let mut slot_size: Vec<usize> = Vec::new();
    let mut busy_until: Vec<i64> = Vec::new();
    for b in order {
        let Some((start, end)) = live[b] else {
            continue;
        };
        let free: Vec<usize> = (0..slot_size.len())
            .filter(|&s| busy_until[s] < start)
            .collect();
        let fits = free
            .iter()
            .copied()
            .filter(|&s| slot_size[s] >= sizes[b])
            .min_by_key(|&s| slot_size[s]);
        let chosen = fits.or_else(|| free.iter().copied().max_by_key(|&s| slot_size[s]));
        let s = match chosen {
            Some(s) => s,
            None => {
                slot_size.push(0);
                busy_until.push(i64::MIN);
                slot_size.len() - 1
            }
        };
        slot_size[s] = slot_size[s].max(sizes[b]);
        busy_until[s] = end;
        slot[b] = s;
    }
    (slot, slot_size)
}

/// `Program::exclusive`: per buffer, whether the row runs of all views
/// written into it are disjoint and cover it exactly.
fn exclusive_buffers(
    plan: &Plan,
    steps: &[Step],
    views: &[Option<View>],
    sizes: &[usize],
    needs: &[bool],
) -> Vec<bool> {
    let mut runs: Vec<Vec<(usize, usize)>> = vec![Vec::new(); sizes.len()];
    let logits = plan
        .tasks
        .iter()
        .filter_map(|t| views.get(t.logits as usize).copied().flatten());
    let writes = steps
        .iter()
        .flat_map(|s| gradient_writes(s, needs))
        .chain(logits);
    for v in writes {
        runs[v.buf].extend(v.row_runs().map(|(s, e)| (s, e - s)));
    }
    runs.into_iter()
        .zip(sizes)
        .map(|(mut r, &size)| {
            r.sort_unstable();
            let mut next = 0;
            for (off, len) in r {
                if off != next {
                    return false;
                }
                next = off + len;
            }
            next == size
        })
        .collect()
}

/// Views and buffers while a program is built.
struct Builder<'a> {
    plan: &'a Plan,
    batch: usize,
    views: Vec<Option<View>>,
    sizes: Vec<usize>,
    needs: Vec<bool>,
    /// The op being laid out, for `Unsupported` errors.
    op: String,
}

impl Builder<'_> {
    /// A new contiguous buffer of `shape`.
    fn fresh(&mut self, shape: &[usize], needs_grad: bool) -> Result<View> {
        let v = View::contiguous(self.sizes.len(), shape).ok_or_else(|| {
            unsupported!(
                self.op,
                "it makes a value of rank {}; the engine lays out values of rank 3 at most",
                shape.len()
            )
        })?;
        self.sizes.push(v.len());
        self.needs.push(needs_grad);
        Ok(v)
    }

    /// The plan's shape of value `v` with the batch dim filled in.
    fn declared(&self, v: usize) -> Result<Vec<usize>> {
        let value = self
            .plan
            .values
            .get(v)
            .ok_or_else(|| invalid_plan!("value {v} does not exist"))?;
        Ok(value
            .shape
            .iter()
            .map(|&d| if d < 0 { self.batch } else { d as usize })
            .collect())
    }
}

fn axis_of(axis: i32, x: &View, op: &str) -> Result<usize> {
    resolve_axis(axis as i64, x.rank)
        .map(|a| x.internal_axis(a))
        .ok_or_else(|| invalid_plan!("op \"{op}\" has axis {axis} for rank {}", x.rank))
}

/// STACK of rank-2 views of one buffer, evenly spaced: one rank-3 view.
fn stacked_alias(xs: &[View]) -> Option<View> {
    let first = xs.first()?;
    let step = xs.get(1).map_or(0, |x| x.off.wrapping_sub(first.off));
    let even = xs.iter().enumerate().all(|(k, x)| {
        x.buf == first.buf && x.strides == first.strides && x.off == first.off + k * step
    });
    let v = View {
        dims: [xs.len(), first.dims[1], first.dims[2]],
        strides: [step, first.strides[1], 1],
        rank: 3,
        ..*first
    };
    (even && step > 0 && v.rows_disjoint()).then_some(v)
}

/// CONCAT of views of one buffer that follow each other along `axis`.
fn concat_alias(xs: &[View], axis: usize) -> Option<View> {
    let first = xs.first()?;
    let mut next = first.off;
    for x in xs {
        if x.buf != first.buf || x.strides != first.strides || x.off != next {
            return None;
        }
        next = x.off + x.dims[axis] * x.strides[axis];
    }
    let mut v = *first;
    v.dims[axis] = xs.iter().map(|x| x.dims[axis]).sum();
    v.rows_disjoint().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::Step;

    /// On the PLE example only the expert outputs that several gates read
    /// accumulate gradients (and get zeroed each step); the wide layers'
    /// gradients are stored once, never zeroed. And the memory it takes.
    #[test]
    fn ple_example_layout() {
        let path = format!("{}/examples/ple_taobao.config", env!("CARGO_MANIFEST_DIR"));
        let source = std::fs::read_to_string(path).unwrap();
        let plan = crate::pipeline::build(&source, Default::default())
            .unwrap()
            .plan;
        let analysis = crate::plan::validate::analyze(&plan).unwrap();
        let p = super::Program::build(&plan, &analysis, 1024).unwrap();
        let mut zeroed: Vec<usize> = (0..p.bufs.len())
            .filter(|&i| p.needs_grad[i] && !p.exclusive[i])
            .map(|i| p.bufs[i].len() / 1024)
            .collect();
        zeroed.sort_unstable();
        // Per batch row: layer 1's six 256-wide expert outputs (the task
        // gates and the shared gate read overlapping sets), and the smaller
        // expert outputs of layers 2 and 3 that two gates read.
        assert_eq!(zeroed, vec![64, 128, 192, 192, 192, 1536], "{zeroed:?}");
        // Memory per batch row: one buffer per layer (relus run in place
        // over their linear's output, gates read concatenated experts where
        // they are; 36.8 K floats before), and gradients in slots shared by
        // values whose gradients are never live at once.
        let total: usize = p.bufs.iter().map(|b| b.len()).sum();
        assert_eq!((total / 1024, p.gradient_floats() / 1024), (19752, 13084));
        // Forward passes only: values share memory by lifetime (the wide
        // first layer's 6158 floats a row live while the experts read it).
        let q = super::Program::build_inference(&plan, &analysis, 1024).unwrap();
        let shared: usize = q.bufs.iter().map(|b| b.len()).sum();
        assert_eq!(shared / 1024, 12575);
        // Every relu's backward pass runs in the writers of its gradient:
        // the next layer's input-gradient multiplies and the gates.
        let relus: Vec<usize> = (0..p.steps.len())
            .filter(|&i| matches!(p.steps[i], Step::Act { in_place: true, .. }))
            .collect();
        assert_eq!(relus.len(), 27);
        assert!(relus.iter().all(|&i| p.relu_backward_fused[i]));
        let masking = |kind: fn(&Step) -> bool| {
            (0..p.steps.len())
                .filter(|&i| p.grad_masked[i] && kind(&p.steps[i]))
                .count()
        };
        // Every layer but the first of each expert group (2 in extraction
        // layer 1, 3 groups x 2 in layers 2 and 3) and of each tower (3
        // each, the logits' included), and all eight gates; never the
        // fused first layers, whose input is no relu's.
        assert_eq!(
            (
                masking(|s| matches!(s, Step::Linear { .. })),
                masking(|s| matches!(s, Step::Batched { .. })),
                masking(|s| matches!(s, Step::GateMix { .. }))
            ),
            (6, 14, 8)
        );
    }
}
