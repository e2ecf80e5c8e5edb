//! The native engine's forward pass: every op of the program on one
//! batch, keeping in training what the backward pass needs (the tape).

use super::attention;
use super::draws::{self, Layout, RowSpan};
use super::intervention;
use super::kernels;
use super::sequence;
use super::timing::record;
use super::*;

impl Engine {
    /// Runs every op on `batch`; in training keeps what `backward` needs.
    pub(crate) fn forward_pass(
        &mut self,
        plan: &Plan,
        analysis: &Analysis,
        params: &[ParamSlot],
        tables: &[Table],
        batch: &Batch,
        mode: Mode,
    ) -> Result<NativeForward> {
        if let Some(t) = self.times.as_mut() {
            t.begin_pass();
        }
        // `Model::forward` checked the batch's rows and features.
        let rows = batch.rows;
        let span = match self.span {
            Some(s) if s.first + rows <= s.total => s,
            Some(s) => {
                return Err(invalid_plan!(
                    "native engine: rows {}..{} of a {}-row batch",
                    s.first,
                    s.first + rows,
                    s.total
                ))
            }
            None => RowSpan {
                first: 0,
                total: rows,
            },
        };
        let train = matches!(mode, Mode::Train { .. });
        let nt = self.gemm();
        let lookup = embed::lookup(
            tables,
            &plan.features,
            &analysis.embedded,
            &batch.features,
            rows,
            train,
        )?;
        let pi = self.program(plan, analysis, rows, train)?;
        let prog = &mut self.programs[pi];
        let ps = Params::borrow(params)?;
        let n_ops = plan.ops.len();
        let mut tape = Tape {
            batch: rows,
            lookup,
            masks: (0..n_ops).map(|_| None).collect(),
            stats: (0..n_ops).map(|_| None).collect(),
            columns: (0..n_ops).map(|_| None).collect(),
        };
        let mut updates = Vec::new();
        let mut penalties = Vec::new();
        for (oi, step) in prog.steps.iter().enumerate() {
            let op = &plan.ops[oi];
            let t0 = self.times.is_some().then(std::time::Instant::now);
            match step {
                Step::Alias => {}
                Step::Group { out } => {
                    let mut buf = std::mem::take(&mut prog.bufs[out.buf]);
                    let cols =
                        feature_group(&mut buf, out, plan, op, tables, batch, &tape.lookup, train);
                    prog.bufs[out.buf] = buf;
                    tape.columns[oi] = Some(cols?);
                }
                Step::Linear { x, out, w, b } => {
                    let (o, i) = (out.dims[2], x.dims[2]);
                    let mut buf = std::mem::take(&mut prog.bufs[out.buf]);
                    let r = gemm::matmul_bias_relu(
                        &mut buf,
                        flat(out)?,
                        &prog.bufs[x.buf],
                        flat(x)?,
                        ps.get(*w),
                        Mat::dense(0, o, i).t(),
                        b.map(|b| ps.get(b)),
                        prog.relu_epilogue[oi],
                        nt,
                    );
                    prog.bufs[out.buf] = buf;
                    r?;
                }
                Step::Batched { x, out, w, b } => {
                    let (e, o, i) = (out.dims[0], out.dims[2], x.dims[2]);
                    let mut buf = std::mem::take(&mut prog.bufs[out.buf]);
                    let mut r = Ok(());
                    if experts_in_parallel(nt, out.dims[1], e) && out.off == 0 {
                        use rayon::prelude::*;
                        let (rows, xs) = (out.dims[1], &prog.bufs[x.buf]);
                        let one = gemm::Gemm { threads: 1, ..nt };
                        // Each task: a block of `rp` rows of expert `k`.
                        let parts = expert_parts(nt, rows, e);
                        let rp = rows / parts;
                        let rs: Vec<Result<()>> = buf
                            .par_chunks_mut(rp * o)
                            .enumerate()
                            .take(e * parts)
                            .map(|(c, dst)| {
                                let (k, p) = (c / parts, c % parts);
                                let xm = if x.rank == 2 { flat(x)? } else { x.mat(k) };
                                gemm::matmul_bias_relu(
                                    dst,
                                    Mat::dense(0, rp, o),
                                    xs,
                                    xm.row_block(p * rp, rp),
                                    ps.get(*w),
                                    Mat::dense(k * o * i, o, i).t(),
                                    b.map(|b| &ps.get(b)[k * o..(k + 1) * o]),
                                    prog.relu_epilogue[oi],
                                    one,
                                )
                            })
                            .collect();
                        prog.bufs[out.buf] = buf;
                        rs.into_iter().collect::<Result<Vec<()>>>()?;
                        record(&mut self.times, "fwd", step, t0);
                        continue;
                    }
                    for k in 0..e {
                        let xm = if x.rank == 2 { flat(x)? } else { x.mat(k) };
                        r = r.and(gemm::matmul_bias_relu(
                            &mut buf,
                            out.mat(k),
                            &prog.bufs[x.buf],
                            xm,
                            ps.get(*w),
                            Mat::dense(k * o * i, o, i).t(),
                            b.map(|b| &ps.get(b)[k * o..(k + 1) * o]),
                            prog.relu_epilogue[oi],
                            nt,
                        ));
                    }
                    prog.bufs[out.buf] = buf;
                    r?;
                }
                // Done by its multiply's epilogue.
                Step::Act { in_place: true, .. } if prog.relu_fused[oi] => {}
                Step::Act {
                    x, in_place: true, ..
                } => {
                    let kind = Activation::try_from(op.activation).unwrap_or(Activation::ActNone);
                    kernels::activation_in_place(kind, &mut prog.bufs[x.buf], x);
                }
                Step::Act { x, y, slope, .. } => {
                    let kind = Activation::try_from(op.activation).unwrap_or(Activation::ActNone);
                    let mut buf = std::mem::take(&mut prog.bufs[y.buf]);
                    let s = slope.map(|s| ps.get(s));
                    kernels::activation(kind, op.alpha, s, &mut buf, y, &prog.bufs[x.buf], x);
                    prog.bufs[y.buf] = buf;
                }
                Step::Dropout { x, y } => {
                    let mut buf = std::mem::take(&mut prog.bufs[y.buf]);
                    match mode {
                        Mode::Train { seed, step } if op.ratio > 0.0 => {
                            // The candle path's stream: the same mask bit for bit.
                            let axis = x.internal_axis(analysis.batch_axis[oi]);
                            let layout = Layout::of(x.dims, axis);
                            let keep = draws::keep_mask((seed, step, oi), layout, span, op.ratio);
                            let scale = 1.0 / (1.0 - op.ratio);
                            kernels::dropout(&mut buf, y, &prog.bufs[x.buf], x, &keep, scale);
                            tape.masks[oi] = Some(keep);
                        }
                        _ => kernels::copy(&mut buf, y, &prog.bufs[x.buf], x, false),
                    }
                    prog.bufs[y.buf] = buf;
                }
                Step::Copy { parts, out } => {
                    let mut buf = std::mem::take(&mut prog.bufs[out.buf]);
                    for (src, dst) in parts {
                        if src.buf == out.buf {
                            prog.bufs[out.buf] = buf;
                            return Err(invalid_plan!("op \"{}\" copies into itself", op.name));
                        }
                        kernels::copy(&mut buf, dst, &prog.bufs[src.buf], src, false);
                    }
                    prog.bufs[out.buf] = buf;
                }
                Step::Mul { a, b, y } => {
                    let mut buf = std::mem::take(&mut prog.bufs[y.buf]);
                    kernels::mul(
                        &mut buf,
                        y,
                        &prog.bufs[a.buf],
                        a,
                        &prog.bufs[b.buf],
                        b,
                        op.alpha,
                    );
                    prog.bufs[y.buf] = buf;
                }
                Step::Dice { x, p, y, alpha } => {
                    let mut buf = std::mem::take(&mut prog.bufs[y.buf]);
                    kernels::dice(
                        &mut buf,
                        y,
                        &prog.bufs[x.buf],
                        x,
                        &prog.bufs[p.buf],
                        p,
                        ps.get(*alpha),
                    );
                    prog.bufs[y.buf] = buf;
                }
                Step::SeqEmbed { out } => {
                    let mut buf = std::mem::take(&mut prog.bufs[out.buf]);
                    let cols =
                        sequence_steps(&mut buf, out, plan, op, tables, batch, &tape.lookup, train);
                    prog.bufs[out.buf] = buf;
                    tape.columns[oi] = Some(cols?);
                }
                Step::SeqMask { out } => {
                    let f = op.features.first().map(|&f| f as usize);
                    let spec = f.and_then(|f| plan.features.get(f));
                    let offsets = match f.and_then(|f| batch.features.get(f)) {
                        Some(FeatureInput::Ids { offsets, .. })
                        | Some(FeatureInput::SeqDense { offsets, .. }) => offsets,
                        _ => {
                            return Err(bad_batch!(
                                "sequence mask \"{}\" has no sequence feature in the batch",
                                op.name
                            ))
                        }
                    };
                    let name = spec.map_or("", |s| s.name.as_str());
                    let mut buf = std::mem::take(&mut prog.bufs[out.buf]);
                    let r = sequence::mask(&mut buf, out, offsets, name);
                    prog.bufs[out.buf] = buf;
                    r?;
                }
                Step::DinInput { q, s, y } => {
                    let mut buf = std::mem::take(&mut prog.bufs[y.buf]);
                    sequence::din_input(&mut buf, y, &prog.bufs[q.buf], q, &prog.bufs[s.buf], s);
                    prog.bufs[y.buf] = buf;
                }
                Step::DotScores { q, s, y } => {
                    let mut buf = std::mem::take(&mut prog.bufs[y.buf]);
                    sequence::dot_scores(&mut buf, y, &prog.bufs[q.buf], q, &prog.bufs[s.buf], s);
                    prog.bufs[y.buf] = buf;
                }
                Step::AttnPool { scores, s, mask, y } => {
                    let mut buf = std::mem::take(&mut prog.bufs[y.buf]);
                    sequence::attention_pool(
                        &mut buf,
                        y,
                        &prog.bufs[scores.buf],
                        scores,
                        &prog.bufs[s.buf],
                        s,
                        &prog.bufs[mask.buf],
                        mask,
                    );
                    prog.bufs[y.buf] = buf;
                }
                Step::SeqPool { s, mask, y, mean } => {
                    let mut buf = std::mem::take(&mut prog.bufs[y.buf]);
                    sequence::pool(
                        &mut buf,
                        y,
                        &prog.bufs[s.buf],
                        s,
                        &prog.bufs[mask.buf],
                        mask,
                        *mean,
                    );
                    prog.bufs[y.buf] = buf;
                }
                Step::WindowInput { q, s, y } => {
                    let mut buf = std::mem::take(&mut prog.bufs[y.buf]);
                    sequence::window_input(&mut buf, y, &prog.bufs[q.buf], q, &prog.bufs[s.buf], s);
                    prog.bufs[y.buf] = buf;
                }
                Step::WindowPool {
                    scores,
                    s,
                    mask,
                    q,
                    y,
                    windows,
                } => {
                    let mut buf = std::mem::take(&mut prog.bufs[y.buf]);
                    sequence::window_pool(
                        &mut buf,
                        y,
                        (&prog.bufs[scores.buf], scores),
                        (&prog.bufs[s.buf], s),
                        (&prog.bufs[mask.buf], mask),
                        (&prog.bufs[q.buf], q),
                        windows,
                    );
                    prog.bufs[y.buf] = buf;
                }
                Step::Attention {
                    q,
                    k,
                    v,
                    mask,
                    y,
                    heads,
                } => {
                    let keep = match mode {
                        Mode::Train { seed, step } if op.ratio > 0.0 => {
                            // The candle path's stream: the same mask bit for bit.
                            // Weights `[B, heads, L, L]`, the batch first.
                            let l = q.dims[1];
                            let layout = Layout::of([1, q.dims[0], heads * l * l], 1);
                            Some(draws::keep_mask((seed, step, oi), layout, span, op.ratio))
                        }
                        _ => None,
                    };
                    let mut buf = std::mem::take(&mut prog.bufs[y.buf]);
                    let a = attention::AttentionInputs {
                        q: (&prog.bufs[q.buf], q),
                        k: (&prog.bufs[k.buf], k),
                        v: (&prog.bufs[v.buf], v),
                        mask: (&prog.bufs[mask.buf], mask),
                        heads: *heads,
                        keep: keep.as_deref().map(|m| (m, 1.0 / (1.0 - op.ratio))),
                    };
                    attention::forward(&mut buf, y, &a);
                    prog.bufs[y.buf] = buf;
                    tape.masks[oi] = keep;
                }
                Step::Intervention { x, s, y, params } => {
                    let w =
                        intervention::Weights::new(params.map(|p| ps.get(p)), x.dims[2], s.dims[2]);
                    let mut buf = std::mem::take(&mut prog.bufs[y.buf]);
                    intervention::forward(
                        &mut buf,
                        y,
                        (&prog.bufs[x.buf], x),
                        (&prog.bufs[s.buf], s),
                        &w,
                    );
                    prog.bufs[y.buf] = buf;
                }
                Step::MaskedMean { x, mask, length, y } => {
                    let mut buf = std::mem::take(&mut prog.bufs[y.buf]);
                    attention::masked_mean(
                        &mut buf,
                        y,
                        (&prog.bufs[x.buf], x),
                        (&prog.bufs[mask.buf], mask),
                        (&prog.bufs[length.buf], length),
                    );
                    prog.bufs[y.buf] = buf;
                }
                Step::VarDrop { x, y, fp, columns } => {
                    let features = op.widths.len();
                    let keep = match mode {
                        Mode::Train { seed, step } => {
                            // The candle path's stream: the same noise bit for bit.
                            let rng = draws::op_stream(seed, step, oi);
                            let layout = Layout::of([1, rows, features], 1);
                            let u = draws::draws(&rng, layout, span, |u| u as f32);
                            penalties.push((*fp, op.alpha));
                            kernels::vd_keep(ps.get(*fp), rows, Some(&u))
                        }
                        _ => kernels::vd_keep(ps.get(*fp), rows, None),
                    };
                    let mut buf = std::mem::take(&mut prog.bufs[y.buf]);
                    kernels::vd_apply(&mut buf, y, &prog.bufs[x.buf], x, &keep, columns);
                    prog.bufs[y.buf] = buf;
                    tape.stats[oi] = Some((keep, Vec::new()));
                }
                Step::Detach { x, y } => {
                    let mut buf = std::mem::take(&mut prog.bufs[y.buf]);
                    kernels::copy(&mut buf, y, &prog.bufs[x.buf], x, false);
                    prog.bufs[y.buf] = buf;
                }
                Step::Softmax { x, y, axis } => {
                    let mut buf = std::mem::take(&mut prog.bufs[y.buf]);
                    kernels::softmax(&mut buf, y, &prog.bufs[x.buf], x, *axis);
                    prog.bufs[y.buf] = buf;
                }
                Step::GateMix { w, es, out } => {
                    let mut buf = std::mem::take(&mut prog.bufs[out.buf]);
                    let parts: Vec<(&[f32], View)> = es
                        .iter()
                        .map(|v| (prog.bufs[v.buf].as_slice(), *v))
                        .collect();
                    kernels::gate_mix(&mut buf, out, &prog.bufs[w.buf], w, &parts);
                    prog.bufs[out.buf] = buf;
                }
                Step::Norm {
                    x,
                    y,
                    axis,
                    batch_norm,
                    params: p,
                } => {
                    let eps = if op.eps > 0.0 {
                        op.eps as f64
                    } else {
                        DEFAULT_NORM_EPS
                    };
                    let xs = &prog.bufs[x.buf];
                    let (mean, inv) = if *batch_norm && !train {
                        let (rm, rv) = (ps.get(p[2]), ps.get(p[3]));
                        let inv = rv.iter().map(|&v| (1.0 / (v as f64 + eps).sqrt()) as f32);
                        (rm.to_vec(), inv.collect())
                    } else {
                        kernels::lane_moments(xs, x, *axis, eps)
                    };
                    if *batch_norm && train {
                        let m = if op.momentum > 0.0 {
                            op.momentum
                        } else {
                            DEFAULT_BN_MOMENTUM as f32
                        };
                        let n = x.dims[*axis] as f32;
                        let unbiased = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
                        let (rm, rv) = (ps.get(p[2]), ps.get(p[3]));
                        let new_mean = rm
                            .iter()
                            .zip(&mean)
                            .map(|(&r, &mu)| r * (1.0 - m) + mu * m)
                            .collect();
                        let new_var = rv
                            .iter()
                            .zip(&inv)
                            .map(|(&r, &iv)| {
                                let var = (1.0 / (iv as f64 * iv as f64) - eps) as f32;
                                r * (1.0 - m) + var * unbiased * m
                            })
                            .collect();
                        updates.push((p[2], new_mean));
                        updates.push((p[3], new_var));
                    }
                    let mut buf = std::mem::take(&mut prog.bufs[y.buf]);
                    let bn = *batch_norm;
                    let affine = move |l: usize, i: usize| if bn { l } else { i };
                    kernels::normalize(
                        &mut buf,
                        y,
                        &prog.bufs[x.buf],
                        x,
                        *axis,
                        &mean,
                        &inv,
                        ps.get(p[0]),
                        ps.get(p[1]),
                        &affine,
                    );
                    prog.bufs[y.buf] = buf;
                    tape.stats[oi] = Some((mean, inv));
                }
            }
            record(&mut self.times, "fwd", step, t0);
        }
        let logits = plan
            .tasks
            .iter()
            .map(|t| {
                let v = prog.views[t.logits as usize].ok_or_else(|| {
                    invalid_plan!("the logits of task \"{}\" are never computed", t.tower_name)
                })?;
                let buf = &prog.bufs[v.buf];
                Ok((0..v.rows())
                    .flat_map(|r| kernels::row(buf, &v, r).to_vec())
                    .collect())
            })
            .collect::<Result<Vec<Vec<f32>>>>()?;
        self.tape = train.then_some(tape);
        Ok(NativeForward {
            logits,
            buffer_updates: updates,
            penalties,
        })
    }
}

/// `f` of the rows `bag` reads: in training the gathered rows of its slot,
/// else its table's weights.
fn with_rows<R>(
    lookup: &Lookup,
    tables: &[Table],
    bag: &embed::Bag,
    train: bool,
    f: impl FnOnce(&[f32]) -> R,
) -> Result<R> {
    if train {
        return Ok(f(&lookup.rows[bag.source].2));
    }
    let weight = host::tensor_f32(&tables[bag.source].weight)?;
    Ok(f(weight.slice()))
}

/// SEQUENCE_EMBED: each feature's steps side by side in `[B, L, W]`, zero
/// past each row's length; returns each feature's first column.
#[allow(clippy::too_many_arguments)]
fn sequence_steps(
    buf: &mut [f32],
    out: &View,
    plan: &Plan,
    op: &crate::proto::plan::Op,
    tables: &[Table],
    batch: &Batch,
    lookup: &Lookup,
    train: bool,
) -> Result<Vec<usize>> {
    let width = out.dims[2];
    let region = out.off..out.end().min(buf.len());
    buf[region].fill(0.0);
    let mut cols = Vec::with_capacity(op.features.len());
    let mut col = 0usize;
    for &f in &op.features {
        let f = f as usize;
        let name = plan.features.get(f).map_or("", |s| s.name.as_str());
        cols.push(col);
        let dim = if let Some(bag) = lookup.bags.iter().find(|b| b.feature == f) {
            if col + bag.dim > width {
                return Err(bad_batch!(
                    "sequence group \"{}\" is wider than the plan says",
                    op.name
                ));
            }
            with_rows(lookup, tables, bag, train, |src| {
                sequence::embed_steps(buf, out, col, bag, src, name)
            })??;
            bag.dim
        } else {
            match batch.features.get(f) {
                Some(FeatureInput::SeqDense {
                    values,
                    offsets,
                    dim,
                }) => {
                    if col + dim > width {
                        return Err(bad_batch!(
                            "sequence group \"{}\" is wider than the plan says",
                            op.name
                        ));
                    }
                    sequence::dense_steps(buf, out, col, (values, offsets, *dim), name)?;
                    *dim
                }
                _ => {
                    return Err(bad_batch!(
                    "sequence feature \"{name}\" needs dense steps, the batch holds something else"
                ))
                }
            }
        };
        col += dim;
    }
    if col != width {
        return Err(bad_batch!(
            "sequence group \"{}\" is {} wide, the plan says {}",
            op.name,
            col,
            width
        ));
    }
    Ok(cols)
}

/// Fills the feature group `out` (`[B, W]`) and returns each feature's
/// first column.
#[allow(clippy::too_many_arguments)]
fn feature_group(
    buf: &mut [f32],
    out: &View,
    plan: &Plan,
    op: &crate::proto::plan::Op,
    tables: &[Table],
    batch: &Batch,
    lookup: &Lookup,
    train: bool,
) -> Result<Vec<usize>> {
    let (rows, width) = (out.dims[1], out.dims[2]);
    let mut cols = Vec::with_capacity(op.features.len());
    let mut col = 0usize;
    for &f in &op.features {
        let f = f as usize;
        let spec = &plan.features[f];
        cols.push(col);
        if let Some(bag) = lookup.bags.iter().find(|b| b.feature == f) {
            if col + bag.dim > width {
                return Err(bad_batch!(
                    "feature group \"{}\" is wider than the plan says",
                    op.name
                ));
            }
            with_rows(lookup, tables, bag, train, |src| {
                embed::pool(buf, width, col, bag, src)
            })?;
            col += bag.dim;
            continue;
        }
        match &batch.features[f] {
            FeatureInput::Dense { values, dim } => {
                if values.len() != rows * dim {
                    return Err(bad_batch!(
                        "feature \"{}\" has {} values for {} rows of width {}",
                        spec.name,
                        values.len(),
                        rows,
                        dim
                    ));
                }
                if col + dim > width {
                    return Err(bad_batch!(
                        "feature group \"{}\" is wider than the plan's {}",
                        op.name,
                        width
                    ));
                }
                for r in 0..rows {
                    buf[r * width + col..r * width + col + dim]
                        .copy_from_slice(&values[r * dim..(r + 1) * dim]);
                }
                col += dim;
            }
            FeatureInput::Ids { .. } | FeatureInput::SeqDense { .. } => {
                return Err(bad_batch!(
                    "feature \"{}\" is a plain dense feature, the batch holds ids or steps for it",
                    spec.name
                ))
            }
        }
    }
    if col != width {
        return Err(bad_batch!(
            "feature group \"{}\" is {} wide, the plan says {}",
            op.name,
            col,
            width
        ));
    }
    Ok(cols)
}
