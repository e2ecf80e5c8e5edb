//! The native engine's backward pass: from the logits' gradients back
//! through the tape of the last training forward pass, into parameter and
//! embedding-row gradients for candle's `GradStore`.

use super::attention;
use super::intervention;
use super::kernels;
use super::param_grads::ParamGrads;
use super::sequence;
use super::timing::{record, record_label};
use super::*;

/// The gradients of one backward pass: per plan parameter (empty where it
/// is not trained), and per gathered table slot its rows' (`[U, dim]`).
#[derive(Debug)]
pub(crate) struct PassGrads {
    pub params: Vec<Vec<f32>>,
    pub rows: Vec<Vec<f32>>,
}

impl Engine {
    /// Backpropagates `dlogits` (per task, `[B, C]`) through the last
    /// training forward pass and inserts every trainable parameter's and
    /// every gathered table's gradient into `grads`.
    pub(crate) fn backward_pass(
        &mut self,
        plan: &Plan,
        params: &[ParamSlot],
        dlogits: &[Option<Vec<f32>>],
        gathered: &[Gathered],
        grads: &mut GradStore,
        device: &Device,
    ) -> Result<()> {
        let pass = self.backward_grads(plan, params, dlogits)?;
        let t_out = self.times.is_some().then(std::time::Instant::now);
        store_grads(plan, params, pass, gathered, grads, device)?;
        record_label(&mut self.times, "bwd gradients out", t_out);
        Ok(())
    }

    /// Backpropagates `dlogits` (per task, `[B, C]`) through the last
    /// training forward pass: every parameter's and gathered row's gradient.
    pub(crate) fn backward_grads(
        &mut self,
        plan: &Plan,
        params: &[ParamSlot],
        dlogits: &[Option<Vec<f32>>],
    ) -> Result<PassGrads> {
        let nt = self.gemm();
        let tape = self
            .tape
            .take()
            .ok_or_else(|| invalid_plan!("backward without a training forward pass"))?;
        let prog = self
            .programs
            .iter_mut()
            .find(|p| p.batch == tape.batch && p.training)
            .ok_or_else(|| invalid_plan!("the forward pass's program is gone"))?;
        let t_zero = self.times.is_some().then(std::time::Instant::now);
        prog.start_backward();
        record_label(&mut self.times, "bwd zero gradients", t_zero);
        let ps = Params::borrow(params)?;
        let t_alloc = self.times.is_some().then(std::time::Instant::now);
        let mut pg = ParamGrads::new(plan, params, &prog.steps);
        record_label(&mut self.times, "bwd parameter gradients", t_alloc);
        for (t, d) in plan.tasks.iter().zip(dlogits) {
            let Some(v) = prog.views[t.logits as usize] else {
                continue;
            };
            let w = v.dims[2];
            let acc = !prog.exclusive[v.buf];
            let mut g = std::mem::take(&mut prog.gbufs[prog.gslot[v.buf]]);
            // A task without a gradient (weight 0) still seeds zeros: an
            // exclusive buffer is never zeroed otherwise.
            kernels::rows_mut(&mut g, &v, |r, out| match d {
                Some(d) if acc => out
                    .iter_mut()
                    .zip(&d[r * w..(r + 1) * w])
                    .for_each(|(o, &x)| *o += x),
                Some(d) => out.copy_from_slice(&d[r * w..(r + 1) * w]),
                None if acc => {}
                None => out.fill(0.0),
            });
            prog.gbufs[prog.gslot[v.buf]] = g;
        }
        // Gradients of the gathered rows, per slot; a slot's bags share
        // one table, so the first bag gives its row width.
        let mut drows: Vec<Vec<f32>> = tape
            .lookup
            .rows
            .iter()
            .enumerate()
            .map(|(slot, (_, list, _))| {
                let dim = tape
                    .lookup
                    .bags
                    .iter()
                    .find(|b| b.source == slot)
                    .map_or(0, |b| b.dim);
                vec![0.0; list.len() * dim]
            })
            .collect();
        for (oi, step) in prog.steps.iter().enumerate().rev() {
            let op = &plan.ops[oi];
            let needs = |v: &View| prog.needs_grad[v.buf];
            let acc = |v: &View| !prog.exclusive[v.buf];
            // The relu behind an input, when this step masks its gradient:
            // its output (the input's values) is the mask.
            let mask = |v: &View| prog.grad_masked[oi].then_some(prog.bufs[v.buf].as_slice());
            let t0 = self.times.is_some().then(std::time::Instant::now);
            for &b in &prog.zero_before[oi] {
                let n = prog.bufs[b].len();
                prog.gbufs[prog.gslot[b]][..n].fill(0.0);
            }
            match step {
                Step::Alias => {}
                Step::Group { out } => {
                    let g = &prog.gbufs[prog.gslot[out.buf]];
                    for_each_bag(op, &tape, oi, &mut drows, |d, c, bag| {
                        embed::scatter(d, g, out.dims[2], c, bag)
                    });
                }
                Step::Linear { x, out, w, b }
                    if needs(x) && experts_in_parallel(nt, out.rows(), 2) =>
                {
                    // The weight and input gradients are independent: one
                    // thread each, like the experts of a batched layer.
                    let (o, i) = (out.dims[2], x.dims[2]);
                    let (gm, xm) = (flat(out)?, flat(x)?);
                    let one = gemm::Gemm { threads: 1, ..nt };
                    let mut dx = std::mem::take(&mut prog.gbufs[prog.gslot[x.buf]]);
                    let g = &prog.gbufs[prog.gslot[out.buf]];
                    let xs = &prog.bufs[x.buf];
                    let acc_x = acc(x);
                    let wgrad = pg.weight(*w, o * i);
                    let bgrad = b.and_then(|b| pg.added(b));
                    let (rw, rx) = rayon::join(
                        || {
                            let dw = Mat::dense(0, o, i);
                            // SAFETY: the weight's gradient buffer is this
                            // multiply's alone; `add` as `weight` says.
                            unsafe {
                                weight_and_bias_grads(
                                    wgrad,
                                    bgrad,
                                    dw,
                                    g,
                                    gm,
                                    &flat_view(out),
                                    xs,
                                    xm,
                                    one,
                                )
                            }
                        },
                        || {
                            gemm::matmul_masked(
                                &mut dx,
                                xm,
                                acc_x,
                                g,
                                gm,
                                ps.get(*w),
                                Mat::dense(0, o, i),
                                mask(x),
                                one,
                            )
                        },
                    );
                    prog.gbufs[prog.gslot[x.buf]] = dx;
                    rw?;
                    rx?;
                    if wgrad.is_some() {
                        // SAFETY: the multiply wrote the whole weight.
                        unsafe { pg.stored(*w) };
                    }
                }
                Step::Linear { x, out, w, b } => {
                    let (o, i) = (out.dims[2], x.dims[2]);
                    let (gm, xm) = (flat(out)?, flat(x)?);
                    let g = &prog.gbufs[prog.gslot[out.buf]];
                    let wgrad = pg.weight(*w, o * i);
                    let bgrad = b.and_then(|b| pg.added(b));
                    // SAFETY: as in the parallel case above.
                    unsafe {
                        weight_and_bias_grads(
                            wgrad,
                            bgrad,
                            Mat::dense(0, o, i),
                            g,
                            gm,
                            &flat_view(out),
                            &prog.bufs[x.buf],
                            xm,
                            nt,
                        )?;
                        if wgrad.is_some() {
                            pg.stored(*w);
                        }
                    }
                    if needs(x) {
                        let mut dx = std::mem::take(&mut prog.gbufs[prog.gslot[x.buf]]);
                        let r = gemm::matmul_masked(
                            &mut dx,
                            xm,
                            acc(x),
                            &prog.gbufs[prog.gslot[out.buf]],
                            gm,
                            ps.get(*w),
                            Mat::dense(0, o, i),
                            mask(x),
                            nt,
                        );
                        prog.gbufs[prog.gslot[x.buf]] = dx;
                        r?;
                    }
                }
                Step::Batched { x, out, w, b }
                    if experts_in_parallel(nt, out.dims[1], out.dims[0]) =>
                {
                    use rayon::prelude::*;
                    let (e, o, i) = (out.dims[0], out.dims[2], x.dims[2]);
                    let one = gemm::Gemm { threads: 1, ..nt };
                    let g = &prog.gbufs[prog.gslot[out.buf]];
                    let xs = &prog.bufs[x.buf];
                    // Tasks share out evenly over the threads (see
                    // `expert_parts`): blocks of `op` weight rows here,
                    // of `rp` batch rows for the input gradient.
                    let parts = expert_parts(nt, o, e);
                    let op = o / parts;
                    let wgrad = pg.weight(*w, e * o * i);
                    let bgrad = b.and_then(|b| pg.added(b));
                    match (wgrad, bgrad) {
                        (Some((dw, add)), db) => {
                            // Task `c` sums its weight rows' share of the
                            // bias gradient (`parts` divides `o`: e * parts
                            // chunks).
                            let sums: Vec<Option<&mut [f32]>> = match db {
                                Some(db) => expert_rows(db, e * o)?
                                    .chunks_mut(op.max(1))
                                    .map(Some)
                                    .collect(),
                                None => (0..e * parts).map(|_| None).collect(),
                            };
                            let rs: Vec<Result<()>> = sums
                                .into_par_iter()
                                .enumerate()
                                .map(|(c, sums)| {
                                    let (k, p) = (c / parts, c % parts);
                                    let xm = if x.rank == 2 { flat(x)? } else { x.mat(k) };
                                    // SAFETY: task `c` writes block `c` of the
                                    // weight's gradient, no other task's.
                                    unsafe {
                                        gemm::matmul_into(
                                            dw,
                                            Mat::dense(c * op * i, op, i),
                                            add,
                                            g,
                                            out.mat(k).t().row_block(p * op, op),
                                            xs,
                                            xm,
                                            None,
                                            sums,
                                            one,
                                        )
                                    }
                                })
                                .collect();
                            rs.into_iter().collect::<Result<Vec<()>>>()?;
                            // SAFETY: the blocks cover the whole weight.
                            unsafe { pg.stored(*w) };
                        }
                        (None, Some(db)) => kernels::add_bias_grad(db, g, out),
                        (None, None) => {}
                    }
                    if needs(x) {
                        let mut dx = std::mem::take(&mut prog.gbufs[prog.gslot[x.buf]]);
                        let shared = gemm::SharedDst::new(&mut dx);
                        let g = &prog.gbufs[prog.gslot[out.buf]];
                        let parts = if x.rank == 3 {
                            expert_parts(nt, out.dims[1], e)
                        } else {
                            1
                        };
                        let rp = out.dims[1] / parts;
                        let run = |c: usize| -> Result<()> {
                            let (k, p) = (c / parts, c % parts);
                            // A shared input is written by one expert at a time,
                            // each multiply on all threads.
                            let (xm, how) = match x.rank {
                                2 => (flat(x)?, nt),
                                _ => (x.mat(k).row_block(p * rp, rp), one),
                            };
                            // SAFETY: stacked inputs: each expert's matrix is its own
                            // rows of a view whose rows are disjoint (checked when the
                            // program was built), so parallel calls never share an
                            // element; a shared input is written one expert at a time.
                            unsafe {
                                gemm::matmul_into(
                                    shared,
                                    xm,
                                    acc(x),
                                    g,
                                    out.mat(k).row_block(p * rp, rp),
                                    ps.get(*w),
                                    Mat::dense(k * o * i, o, i),
                                    mask(x),
                                    None,
                                    how,
                                )
                            }
                        };
                        let r: Result<Vec<()>> = if x.rank == 3 {
                            (0..e * parts).into_par_iter().map(run).collect()
                        } else {
                            (0..e).map(run).collect()
                        };
                        prog.gbufs[prog.gslot[x.buf]] = dx;
                        r?;
                    }
                }
                Step::Batched { x, out, w, b } => {
                    let (e, o, i) = (out.dims[0], out.dims[2], x.dims[2]);
                    let g = &prog.gbufs[prog.gslot[out.buf]];
                    let wgrad = pg.weight(*w, e * o * i);
                    let bgrad = b.and_then(|b| pg.added(b));
                    match (wgrad, bgrad) {
                        (Some((dw, add)), mut db) => {
                            if let Some(d) = db.as_deref_mut() {
                                expert_rows(d, e * o)?;
                            }
                            for k in 0..e {
                                let xm = if x.rank == 2 { flat(x)? } else { x.mat(k) };
                                let sums = db.as_deref_mut().map(|d| &mut d[k * o..(k + 1) * o]);
                                // SAFETY: one expert's block at a time.
                                unsafe {
                                    gemm::matmul_into(
                                        dw,
                                        Mat::dense(k * o * i, o, i),
                                        add,
                                        g,
                                        out.mat(k).t(),
                                        &prog.bufs[x.buf],
                                        xm,
                                        None,
                                        sums,
                                        nt,
                                    )?;
                                }
                            }
                            // SAFETY: the experts' blocks cover the whole weight.
                            unsafe { pg.stored(*w) };
                        }
                        (None, Some(db)) => kernels::add_bias_grad(db, g, out),
                        (None, None) => {}
                    }
                    if needs(x) {
                        let mut dx = std::mem::take(&mut prog.gbufs[prog.gslot[x.buf]]);
                        let mut r = Ok(());
                        for k in 0..e {
                            let xm = if x.rank == 2 { flat(x)? } else { x.mat(k) };
                            r = r.and(gemm::matmul_masked(
                                &mut dx,
                                xm,
                                acc(x),
                                &prog.gbufs[prog.gslot[out.buf]],
                                out.mat(k),
                                ps.get(*w),
                                Mat::dense(k * o * i, o, i),
                                mask(x),
                                nt,
                            ));
                        }
                        prog.gbufs[prog.gslot[x.buf]] = dx;
                        r?;
                    }
                }
                // Its gradient's writers masked it (see `relu_masks`).
                Step::Act { in_place: true, .. } if prog.relu_backward_fused[oi] => {}
                Step::Act {
                    x, in_place: true, ..
                } => {
                    let kind = Activation::try_from(op.activation).unwrap_or(Activation::ActNone);
                    kernels::activation_backward_in_place(
                        kind,
                        &mut prog.gbufs[prog.gslot[x.buf]],
                        x,
                        &prog.bufs[x.buf],
                    );
                }
                Step::Act { x, y, slope, .. } => {
                    let kind = Activation::try_from(op.activation).unwrap_or(Activation::ActNone);
                    let s = slope.map(|s| ps.get(s));
                    if let Some(ds) = slope.and_then(|s| pg.added(s)) {
                        kernels::prelu_slope_grad(
                            ds,
                            &prog.gbufs[prog.gslot[y.buf]],
                            y,
                            &prog.bufs[x.buf],
                            x,
                        );
                    }
                    if needs(x) {
                        let mut dx = std::mem::take(&mut prog.gbufs[prog.gslot[x.buf]]);
                        kernels::activation_backward(
                            kind,
                            op.alpha,
                            s,
                            &mut dx,
                            x,
                            &prog.gbufs[prog.gslot[y.buf]],
                            y,
                            &prog.bufs[x.buf],
                            x,
                            &prog.bufs[y.buf],
                            y,
                            acc(x),
                        );
                        prog.gbufs[prog.gslot[x.buf]] = dx;
                    }
                }
                Step::Dropout { x, y } => {
                    if needs(x) {
                        let mut dx = std::mem::take(&mut prog.gbufs[prog.gslot[x.buf]]);
                        match &tape.masks[oi] {
                            Some(keep) => {
                                let s = 1.0 / (1.0 - op.ratio);
                                kernels::dropout_backward(
                                    &mut dx,
                                    x,
                                    &prog.gbufs[prog.gslot[y.buf]],
                                    y,
                                    keep,
                                    s,
                                    acc(x),
                                )
                            }
                            None => {
                                kernels::copy(&mut dx, x, &prog.gbufs[prog.gslot[y.buf]], y, acc(x))
                            }
                        }
                        prog.gbufs[prog.gslot[x.buf]] = dx;
                    }
                }
                Step::Copy { parts, out } => {
                    for (src, dst) in parts {
                        if needs(src) && src.buf != out.buf {
                            let mut dx = std::mem::take(&mut prog.gbufs[prog.gslot[src.buf]]);
                            kernels::copy(
                                &mut dx,
                                src,
                                &prog.gbufs[prog.gslot[out.buf]],
                                dst,
                                acc(src),
                            );
                            prog.gbufs[prog.gslot[src.buf]] = dx;
                        }
                    }
                }
                Step::SeqMask { .. } => {}
                Step::SeqEmbed { out } => {
                    let g = &prog.gbufs[prog.gslot[out.buf]];
                    for_each_bag(op, &tape, oi, &mut drows, |d, c, bag| {
                        sequence::scatter_steps(d, g, out, c, bag)
                    });
                }
                Step::DinInput { q, s, y }
                | Step::DotScores { q, s, y }
                | Step::WindowInput { q, s, y } => {
                    use sequence::terms;
                    let d = s.dims[2];
                    // One input at a time: both may be views of one buffer.
                    if needs(q) {
                        let mut dq = std::mem::take(&mut prog.gbufs[prog.gslot[q.buf]]);
                        let (g, sv) = (&prog.gbufs[prog.gslot[y.buf]], &prog.bufs[s.buf]);
                        let (din, window) = (
                            move |g: &[f32], s: &[f32], j| terms::din_query(g, s, j, d),
                            move |g: &[f32], s: &[f32], j| terms::window_query(g, s, j, d),
                        );
                        let term: &sequence::QueryTerm = match step {
                            Step::DinInput { .. } => &din,
                            Step::WindowInput { .. } => &window,
                            _ => &terms::dot_query,
                        };
                        sequence::query_grad(&mut dq, q, g, y, sv, s, acc(q), term);
                        prog.gbufs[prog.gslot[q.buf]] = dq;
                    }
                    if needs(s) {
                        let mut ds = std::mem::take(&mut prog.gbufs[prog.gslot[s.buf]]);
                        let (g, qv) = (&prog.gbufs[prog.gslot[y.buf]], &prog.bufs[q.buf]);
                        let (din, window, dot) = (
                            move |g: &[f32], q, j| terms::din_step(g, q, j, d),
                            move |g: &[f32], q, j| terms::window_step(g, q, j, d),
                            |g: &[f32], q, _| terms::dot_step(g, q),
                        );
                        let term: &sequence::StepTerm = match step {
                            Step::DinInput { .. } => &din,
                            Step::WindowInput { .. } => &window,
                            _ => &dot,
                        };
                        sequence::steps_grad(&mut ds, s, g, y, qv, q, acc(s), term);
                        prog.gbufs[prog.gslot[s.buf]] = ds;
                    }
                }
                Step::AttnPool { scores, s, mask, y } => {
                    if needs(scores) {
                        let mut d = std::mem::take(&mut prog.gbufs[prog.gslot[scores.buf]]);
                        sequence::attention_pool_grad_scores(
                            &mut d,
                            scores,
                            &prog.gbufs[prog.gslot[y.buf]],
                            y,
                            &prog.bufs[scores.buf],
                            scores,
                            &prog.bufs[s.buf],
                            s,
                            &prog.bufs[mask.buf],
                            mask,
                            acc(scores),
                        );
                        prog.gbufs[prog.gslot[scores.buf]] = d;
                    }
                    if needs(s) {
                        let mut d = std::mem::take(&mut prog.gbufs[prog.gslot[s.buf]]);
                        sequence::attention_pool_grad_steps(
                            &mut d,
                            s,
                            &prog.gbufs[prog.gslot[y.buf]],
                            y,
                            &prog.bufs[scores.buf],
                            scores,
                            &prog.bufs[mask.buf],
                            mask,
                            acc(s),
                        );
                        prog.gbufs[prog.gslot[s.buf]] = d;
                    }
                }
                Step::WindowPool {
                    scores,
                    s,
                    mask,
                    q,
                    y,
                    windows,
                } => {
                    // One gradient at a time: the inputs may be views of one buffer.
                    for (which, v) in [scores, s, q].into_iter().enumerate() {
                        if !needs(v) {
                            continue;
                        }
                        let mut d = std::mem::take(&mut prog.gbufs[prog.gslot[v.buf]]);
                        let target = Some((d.as_mut_slice(), v, acc(v)));
                        let (mut dsc, mut dst, mut dq) = (None, None, None);
                        match which {
                            0 => dsc = target,
                            1 => dst = target,
                            _ => dq = target,
                        }
                        sequence::window_pool_grads(
                            (&prog.gbufs[prog.gslot[y.buf]], y),
                            (&prog.bufs[scores.buf], scores),
                            (&prog.bufs[s.buf], s),
                            (&prog.bufs[mask.buf], mask),
                            windows,
                            dsc,
                            dst,
                            dq,
                        );
                        prog.gbufs[prog.gslot[v.buf]] = d;
                    }
                }
                Step::SeqPool { s, mask, y, mean } => {
                    if needs(s) {
                        let mut d = std::mem::take(&mut prog.gbufs[prog.gslot[s.buf]]);
                        sequence::pool_grad(
                            &mut d,
                            s,
                            &prog.gbufs[prog.gslot[y.buf]],
                            y,
                            &prog.bufs[mask.buf],
                            mask,
                            *mean,
                            acc(s),
                        );
                        prog.gbufs[prog.gslot[s.buf]] = d;
                    }
                }
                Step::Attention {
                    q,
                    k,
                    v,
                    mask,
                    y,
                    heads,
                } => {
                    let targets = [q, k, v];
                    let slots: Vec<Option<usize>> = targets
                        .iter()
                        .map(|t| needs(t).then(|| prog.gslot[t.buf]))
                        .collect();
                    let live: Vec<usize> = slots.iter().flatten().copied().collect();
                    if (1..live.len()).any(|i| live[..i].contains(&live[i])) {
                        return Err(invalid_plan!(
                            "attention \"{}\": its inputs share a gradient slot",
                            op.name
                        ));
                    }
                    let mut taken: Vec<Option<Vec<f32>>> = slots
                        .iter()
                        .map(|s| s.map(|s| std::mem::take(&mut prog.gbufs[s])))
                        .collect();
                    {
                        let a = attention::AttentionInputs {
                            q: (&prog.bufs[q.buf], q),
                            k: (&prog.bufs[k.buf], k),
                            v: (&prog.bufs[v.buf], v),
                            mask: (&prog.bufs[mask.buf], mask),
                            heads: *heads,
                            keep: tape.masks[oi]
                                .as_deref()
                                .map(|m| (m, 1.0 / (1.0 - op.ratio))),
                        };
                        let mut it = taken.iter_mut().zip(targets).map(|(t, view)| {
                            t.as_mut().map(|b| (b.as_mut_slice(), view, acc(view)))
                        });
                        let (dq, dk, dv) = (
                            it.next().flatten(),
                            it.next().flatten(),
                            it.next().flatten(),
                        );
                        let g = (&prog.gbufs[prog.gslot[y.buf]][..], y);
                        attention::backward(&a, g, dq, dk, dv);
                    }
                    for (s, t) in slots.into_iter().zip(taken) {
                        if let (Some(s), Some(t)) = (s, t) {
                            prog.gbufs[s] = t;
                        }
                    }
                }
                Step::Intervention { x, s, y, params } => {
                    let (n, m) = (x.dims[2], s.dims[2]);
                    let w = intervention::Weights::new(params.map(|p| ps.get(p)), n, m);
                    let g = (&prog.gbufs[prog.gslot[y.buf]][..], y);
                    let (xs, ss) = ((&prog.bufs[x.buf][..], x), (&prog.bufs[s.buf][..], s));
                    let (dwb, dws) = intervention::weight_grads(g, xs, ss, &w);
                    let [xb, qb, xsrc, qs] = *params;
                    for (p, q, dw, width) in [(xb, qb, dwb, n), (xsrc, qs, dws, m)] {
                        let mut dp = pg.take(p);
                        if !dp.is_empty() {
                            let dx = crate::ir::orthogonal::weight_grad(
                                ps.get(p),
                                ps.get(q),
                                width,
                                w.rank,
                                &dw,
                            );
                            dp.iter_mut().zip(dx).for_each(|(a, b)| *a += b);
                        }
                        pg.put(p, dp);
                    }
                    if needs(x) {
                        let mut d = std::mem::take(&mut prog.gbufs[prog.gslot[x.buf]]);
                        let g = (&prog.gbufs[prog.gslot[y.buf]][..], y);
                        intervention::input_grad((&mut d, x, acc(x)), g, &w);
                        prog.gbufs[prog.gslot[x.buf]] = d;
                    }
                }
                Step::MaskedMean { x, mask, length, y } => {
                    if needs(x) {
                        let mut d = std::mem::take(&mut prog.gbufs[prog.gslot[x.buf]]);
                        attention::masked_mean_grad(
                            (&mut d, x, acc(x)),
                            (&prog.gbufs[prog.gslot[y.buf]], y),
                            (&prog.bufs[mask.buf], mask),
                            (&prog.bufs[length.buf], length),
                        );
                        prog.gbufs[prog.gslot[x.buf]] = d;
                    }
                }
                Step::VarDrop { x, y, fp, columns } => {
                    let keep = tape.stats[oi].as_ref().map_or(&[][..], |s| s.0.as_slice());
                    let mut dx =
                        needs(x).then(|| std::mem::take(&mut prog.gbufs[prog.gslot[x.buf]]));
                    let mut dfp = pg.take(*fp);
                    kernels::vd_backward(
                        dx.as_mut().map(|d| (d.as_mut_slice(), x, acc(x))),
                        (!dfp.is_empty()).then_some(dfp.as_mut_slice()),
                        &prog.gbufs[prog.gslot[y.buf]],
                        y,
                        &prog.bufs[x.buf],
                        x,
                        keep,
                        ps.get(*fp),
                        columns,
                    );
                    pg.put(*fp, dfp);
                    if let Some(d) = dx {
                        prog.gbufs[prog.gslot[x.buf]] = d;
                    }
                }
                Step::Detach { .. } => {}
                Step::Mul { a, b, y } => {
                    // One input at a time: both may be views of one buffer.
                    for (x, other) in [(a, b), (b, a)] {
                        if needs(x) {
                            let mut dx = std::mem::take(&mut prog.gbufs[prog.gslot[x.buf]]);
                            kernels::mul_backward(
                                &mut dx,
                                x,
                                &prog.gbufs[prog.gslot[y.buf]],
                                y,
                                &prog.bufs[other.buf],
                                other,
                                op.alpha,
                                acc(x),
                            );
                            prog.gbufs[prog.gslot[x.buf]] = dx;
                        }
                    }
                }
                Step::Dice { x, p, y, alpha } => {
                    let a = ps.get(*alpha);
                    let (xs, pv) = (&prog.bufs[x.buf], &prog.bufs[p.buf]);
                    let dy = &prog.gbufs[prog.gslot[y.buf]];
                    if let Some(da) = pg.added(*alpha) {
                        kernels::dice_alpha_grad(da, dy, y, xs, x, pv, p);
                    }
                    // One input at a time: both may be views of one buffer.
                    for (v, is_x) in [(x, true), (p, false)] {
                        if needs(v) {
                            let mut dv = std::mem::take(&mut prog.gbufs[prog.gslot[v.buf]]);
                            let dy = &prog.gbufs[prog.gslot[y.buf]];
                            let (xs, pv) = (&prog.bufs[x.buf], &prog.bufs[p.buf]);
                            kernels::dice_backward(
                                &mut dv,
                                v,
                                dy,
                                y,
                                xs,
                                x,
                                pv,
                                p,
                                a,
                                is_x,
                                acc(v),
                            );
                            prog.gbufs[prog.gslot[v.buf]] = dv;
                        }
                    }
                }
                Step::Softmax { x, y, axis } => {
                    if needs(x) {
                        let mut dx = std::mem::take(&mut prog.gbufs[prog.gslot[x.buf]]);
                        kernels::softmax_backward(
                            &mut dx,
                            x,
                            &prog.gbufs[prog.gslot[y.buf]],
                            y,
                            &prog.bufs[y.buf],
                            y,
                            *axis,
                            acc(x),
                        );
                        prog.gbufs[prog.gslot[x.buf]] = dx;
                    }
                }
                Step::GateMix { w, es, out } => {
                    // One part at a time: parts may share a buffer (two
                    // views of one expert stack), and each pass takes the
                    // gate weights' and its experts' gradients out at once.
                    // Their gradients, the gate weights' and the output's
                    // are all live here, so they are in different slots.
                    let mut dw =
                        needs(w).then(|| std::mem::take(&mut prog.gbufs[prog.gslot[w.buf]]));
                    let mut k0 = 0;
                    for e in es {
                        let mut de =
                            needs(e).then(|| std::mem::take(&mut prog.gbufs[prog.gslot[e.buf]]));
                        let g = &prog.gbufs[prog.gslot[out.buf]];
                        kernels::gate_mix_backward(
                            dw.as_deref_mut().map(|d| (d, acc(w))),
                            w,
                            de.as_deref_mut().map(|d| (d, acc(e))),
                            mask(e).is_some(),
                            &prog.bufs[e.buf],
                            e,
                            g,
                            out,
                            &prog.bufs[w.buf],
                            w,
                            k0,
                        );
                        if let Some(de) = de {
                            prog.gbufs[prog.gslot[e.buf]] = de;
                        }
                        k0 += e.dims[0];
                    }
                    if let Some(dw) = dw {
                        prog.gbufs[prog.gslot[w.buf]] = dw;
                    }
                }
                Step::Norm {
                    x,
                    y,
                    axis,
                    batch_norm,
                    params: p,
                } => {
                    let Some((mean, inv)) = &tape.stats[oi] else {
                        continue;
                    };
                    let mut dgamma = pg.take(p[0]);
                    let mut dbeta = pg.take(p[1]);
                    dgamma.resize(ps.get(p[0]).len(), 0.0);
                    dbeta.resize(ps.get(p[1]).len(), 0.0);
                    let mut dx = std::mem::take(&mut prog.gbufs[prog.gslot[x.buf]]);
                    let bn = *batch_norm;
                    let affine = move |l: usize, i: usize| if bn { l } else { i };
                    kernels::normalize_backward(
                        &mut dx,
                        x,
                        &prog.gbufs[prog.gslot[y.buf]],
                        y,
                        &prog.bufs[x.buf],
                        x,
                        *axis,
                        mean,
                        inv,
                        ps.get(p[0]),
                        &mut dgamma,
                        &mut dbeta,
                        &affine,
                        acc(x),
                    );
                    prog.gbufs[prog.gslot[x.buf]] = dx;
                    pg.put(p[0], dgamma);
                    pg.put(p[1], dbeta);
                }
            }
            record(&mut self.times, "bwd", step, t0);
        }
        Ok(PassGrads {
            params: pg.finish(),
            rows: drows,
        })
    }
}

/// Inserts a pass's gradients into `grads`: each trainable parameter's
/// (added to what a term of the loss outside the logits, variational
/// dropout's penalty, already put there) and each gathered slot's rows'.
pub(crate) fn store_grads(
    plan: &Plan,
    params: &[ParamSlot],
    pass: PassGrads,
    gathered: &[Gathered],
    grads: &mut GradStore,
    device: &Device,
) -> Result<()> {
    for ((slot, p), g) in params.iter().zip(&plan.params).zip(pass.params) {
        if let ParamSlot::Trainable(var) = slot {
            let shape: Vec<usize> = p.shape.iter().map(|&d| d as usize).collect();
            let mut t = Tensor::from_vec(g, shape, device)?;
            if let Some(prev) = grads.get(var.as_tensor()) {
                t = (prev + t)?;
            }
            grads.insert(var.as_tensor(), t);
        }
    }
    for (g, d) in gathered.iter().zip(pass.rows) {
        let dims = g.rows.as_tensor().dims().to_vec();
        grads.insert(g.rows.as_tensor(), Tensor::from_vec(d, dims, device)?);
    }
    Ok(())
}

/// Calls `f` with each embedded feature of a FEATURE_GROUP or
/// SEQUENCE_EMBED op (the `oi`-th): its table slot's row gradients, its
/// first column in the op's output and its bag.
fn for_each_bag(
    op: &crate::proto::plan::Op,
    tape: &Tape,
    oi: usize,
    drows: &mut [Vec<f32>],
    mut f: impl FnMut(&mut [f32], usize, &embed::Bag),
) {
    let cols = tape.columns[oi].as_deref().unwrap_or(&[]);
    for (k, &feature) in op.features.iter().enumerate() {
        let Some(bag) = tape
            .lookup
            .bags
            .iter()
            .find(|b| b.feature == feature as usize)
        else {
            continue;
        };
        if let (Some(&c), Some(d)) = (cols.get(k), drows.get_mut(bag.source)) {
            f(d, c, bag);
        }
    }
}

/// A batched layer's bias gradient, whose rows the weight-gradient
/// multiplies sum into: it must have one value per weight row.
fn expert_rows(db: &mut [f32], rows: usize) -> Result<&mut [f32]> {
    if db.len() == rows {
        Ok(db)
    } else {
        Err(invalid_plan!(
            "native engine: a bias has {} values where its weight has {rows} rows",
            db.len()
        ))
    }
}

/// `dW (+)= dY^T X` into a weight's gradient (`wgrad`, as
/// `ParamGrads::weight` gives it; `dw` is the weight's matrix there), which
/// also sums the bias's gradient `bgrad` as it packs dY^T (`gm` is dY); a
/// bias whose weight is not trained is summed in a pass of its own over dY
/// (view `gv`).
///
/// # Safety
/// As `gemm::matmul_into` for `dw` in the weight's gradient buffer.
#[allow(clippy::too_many_arguments)]
unsafe fn weight_and_bias_grads(
    wgrad: Option<(gemm::SharedDst, bool)>,
    bgrad: Option<&mut Vec<f32>>,
    dw: Mat,
    g: &[f32],
    gm: Mat,
    gv: &View,
    xs: &[f32],
    xm: Mat,
    how: gemm::Gemm,
) -> Result<()> {
    match (wgrad, bgrad) {
        // SAFETY: `dst` is the weight's gradient buffer and `dw` its matrix there, which
        // this function's contract makes the caller's alone for the call (as
        // `matmul_into` asks); `add` is the flag `ParamGrads::weight` gave with `dst`, false
        // for a fresh (unwritten) buffer.
        (Some((dst, add)), db) => unsafe {
            gemm::matmul_into(
                dst,
                dw,
                add,
                g,
                gm.t(),
                xs,
                xm,
                None,
                db.map(|d| d.as_mut_slice()),
                how,
            )
        },
        (None, Some(db)) => {
            kernels::add_bias_grad(db, g, gv);
            Ok(())
        }
        (None, None) => Ok(()),
    }
}
