//! The dense op kernels of a plan, as functions over candle tensors.
//!
//! Each function implements one `OpKind` exactly as plan.proto describes it
//! and is differentiable through candle's autograd. They are independent of
//! dtype and device, so the gradient tests run them in f64 and the runtime
//! in f32 on whichever device the model lives on.

use candle_core::{DType, Device, Result, Tensor, D};

use crate::proto::plan::Activation;

/// `y = x W^T + b` with `W` `[out, in]` as in torch. `x` is `[.., in]`; any
/// leading axes are flattened into one matrix multiply.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let y = if dims.len() == 2 {
        x.matmul(&w.t()?)?
    } else {
        let inner = dims[dims.len() - 1];
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let y = x.contiguous()?.reshape((rows, inner))?.matmul(&w.t()?)?;
        let mut out = dims.clone();
        let last = out.len() - 1;
        out[last] = w.dim(0)?;
        y.reshape(out)?
    };
    match b {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// `E` independent linears: `x` `[B, in]` (shared by all experts) or
/// `[E, B, in]`, `w` `[E, out, in]`, `b` `[E, out]`; output `[E, B, out]`.
pub fn batched_linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let (e, out, inp) = w.dims3()?;
    match x.rank() {
        2 => {
            // One wide multiply instead of E small ones: the input is shared.
            let bsz = x.dim(0)?;
            let y = x.matmul(&w.reshape((e * out, inp))?.t()?)?;
            let y = match b {
                Some(b) => y.broadcast_add(&b.reshape(e * out)?)?,
                None => y,
            };
            y.reshape((bsz, e, out))?.transpose(0, 1)?.contiguous()
        }
        _ => {
            let y = x.contiguous()?.matmul(&w.transpose(1, 2)?)?;
            match b {
                Some(b) => y.broadcast_add(&b.unsqueeze(1)?),
                None => Ok(y),
            }
        }
    }
}

/// Batch statistics of `x` over `axis`: the mean and the biased variance,
/// both with `axis` kept (size 1).
pub fn batch_moments(x: &Tensor, axis: usize) -> Result<(Tensor, Tensor)> {
    let mean = x.mean_keepdim(axis)?;
    let var = x.broadcast_sub(&mean)?.sqr()?.mean_keepdim(axis)?;
    Ok((mean, var))
}

/// Normalizes `x` with the given statistics (axis kept) and applies the
/// per-feature `gamma`, `beta` (shape of `x` without `axis`).
pub fn batch_norm_apply(
    x: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    axis: usize,
    eps: f64,
) -> Result<Tensor> {
    let inv = (var + eps)?.sqrt()?.recip()?;
    let xhat = x.broadcast_sub(mean)?.broadcast_mul(&inv)?;
    xhat.broadcast_mul(&gamma.unsqueeze(axis)?)?
        .broadcast_add(&beta.unsqueeze(axis)?)
}

/// Layer normalization over the last axis with `gamma`, `beta` of the last
/// axis' width.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xhat = xc.broadcast_mul(&(var + eps)?.sqrt()?.recip()?)?;
    xhat.broadcast_mul(gamma)?.broadcast_add(beta)
}

/// The logistic function as `(tanh(x / 2) + 1) / 2`: equal to `1 / (1 +
/// e^-x)`, but neither it nor its gradient overflows for large `|x|`.
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    ((x * 0.5)?.tanh()? + 1.0)? * 0.5
}

/// `min(x, 0)`, differentiable.
fn negative_part(x: &Tensor) -> Result<Tensor> {
    x.minimum(&x.zeros_like()?)
}

/// An element-wise activation. `alpha` is the leaky-relu slope (0 means
/// torch's default 0.01) or the elu alpha (0 means 1.0); `slope` is the
/// prelu parameter (`[1]` or the last axis' width).
pub fn activation(
    x: &Tensor,
    kind: Activation,
    alpha: f32,
    slope: Option<&Tensor>,
) -> Result<Tensor> {
    match kind {
        Activation::ActNone => Ok(x.clone()),
        Activation::Relu => x.relu(),
        Activation::Sigmoid => sigmoid(x),
        Activation::Tanh => x.tanh(),
        Activation::LeakyRelu => {
            let a = if alpha == 0.0 { 0.01 } else { alpha as f64 };
            x.relu()? + (negative_part(x)? * a)?
        }
        Activation::Gelu => x.gelu_erf(),
        Activation::Silu => x.silu(),
        Activation::Elu => {
            let a = if alpha == 0.0 { 1.0 } else { alpha as f64 };
            x.elu(a)
        }
        Activation::Prelu => match slope {
            Some(s) => x.relu()? + negative_part(x)?.broadcast_mul(s)?,
            None => candle_core::bail!("prelu needs its slope parameter"),
        },
    }
}

/// Inverted dropout with a mask given by the caller: `mask` holds 0 or 1
/// per element; kept elements are scaled by `1 / (1 - ratio)`.
pub fn dropout_with_mask(x: &Tensor, mask: &Tensor, ratio: f32) -> Result<Tensor> {
    let scale = 1.0 / (1.0 - ratio as f64);
    x.mul(&(mask * scale)?)
}

/// Builds a dropout keep-mask on `device` from a seeded generator: drawn
/// on the host and uploaded on the CPU, drawn on the device on CUDA (the
/// same stream, so the same mask bit for bit; see `runtime::cuda`).
pub fn dropout_mask(
    shape: &[usize],
    ratio: f32,
    rng: &mut crate::rng::SplitMix64,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(dev) = device {
        return crate::runtime::cuda::dropout_mask(dev, shape, ratio, rng)?.to_dtype(dtype);
    }
    let n: usize = shape.iter().product();
    let keep: Vec<f32> = (0..n)
        .map(|_| {
            if rng.next_f64() < ratio as f64 {
                0.0
            } else {
                1.0
            }
        })
        .collect();
    Tensor::from_vec(keep, shape, device)?.to_dtype(dtype)
}

/// Softmax along `axis`, shifted by the (constant) maximum for stability.
pub fn softmax(x: &Tensor, axis: usize) -> Result<Tensor> {
    let max = x.max_keepdim(axis)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(axis)?)
}

/// `log(sum(exp(x)))` along the last axis, kept as `[.., 1]`.
pub fn log_sum_exp(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    x.broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        .broadcast_add(&max)
}

/// Mixes experts: `w` `[B, K]`, `e` `[K, B, D]` to `[B, D]` with
/// `out[b] = sum_k w[b, k] e[k, b]`.
pub fn gate_mix(w: &Tensor, e: &Tensor) -> Result<Tensor> {
    let wt = w.t()?.unsqueeze(2)?;
    e.broadcast_mul(&wt)?.sum(0)
}

/// Score of a padded sequence step before the softmax, as TorchEasyRec's
/// encoders write it (`-(2**31) + 1`): far below any real score, so the
/// step gets no weight unless every step of the row is padding.
pub const MASKED_SCORE: f64 = -2_147_483_647.0;

/// DIN attention input: `q` `[B, Dq]`, `s` `[B, L, D]` with `Dq <= D`; the
/// query is zero-padded to `D` and repeated over `L`; output
/// `[q, s, q - s, q * s]` concatenated along the last axis: `[B, L, 4D]`.
pub fn din_input(q: &Tensor, s: &Tensor) -> Result<Tensor> {
    let qs = repeat_query(q, s)?;
    let s = s.contiguous()?;
    Tensor::cat(&[&qs, &s, &(&qs - &s)?, &(&qs * &s)?], 2)
}

/// Dot-product scores: `q` `[B, D]`, `s` `[B, L, D]` to `[B, L, 1]`.
pub fn dot_scores(q: &Tensor, s: &Tensor) -> Result<Tensor> {
    s.contiguous()?.matmul(&q.unsqueeze(2)?.contiguous()?)
}

/// Masked attention pooling: `scores` `[B, L, 1]`, `s` `[B, L, D]`, `mask`
/// `[B, L]` (1 valid, 0 padding) to `[B, D]`: scores at padded steps
/// become [`MASKED_SCORE`], softmax over `L`, weighted sum of the steps.
pub fn attention_pool(scores: &Tensor, s: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (b, l, _) = s.dims3()?;
    let scores = scores.reshape((b, l))?;
    let keep = mask.ge(0.5)?;
    let padding = Tensor::full(MASKED_SCORE, (b, l), s.device())?.to_dtype(scores.dtype())?;
    let scores = keep.where_cond(&scores, &padding)?;
    let w = softmax(&scores, 1)?;
    w.unsqueeze(1)?.matmul(&s.contiguous()?)?.squeeze(1)
}

/// Sum (or, with `mean`, the sum over `max(length, 1)`) of the valid steps
/// of `s` `[B, L, D]` under `mask` `[B, L]`: `[B, D]`. Padded steps are zero
/// already; the mask only counts the length.
pub fn sequence_pool(s: &Tensor, mask: &Tensor, mean: bool) -> Result<Tensor> {
    let summed = s.sum(1)?;
    if !mean {
        return Ok(summed);
    }
    let len = mask.sum_keepdim(1)?.clamp(1.0, f64::INFINITY)?;
    summed.broadcast_div(&len)
}

/// `alpha * a * b`, element-wise (the plan's MUL).
pub fn mul(a: &Tensor, b: &Tensor, alpha: f32) -> Result<Tensor> {
    (a * b)?.affine(f64::from(alpha), 0.0)
}

/// The gate of TorchEasyRec's Dice (the plan's DICE): `x * (p + alpha *
/// (1 - p))`, `alpha [C]` over the last axis of `x` and `p`.
pub fn dice_gate(x: &Tensor, p: &Tensor, alpha: &Tensor) -> Result<Tensor> {
    let open = p.affine(-1.0, 1.0)?.broadcast_mul(alpha)?;
    x * (p + open)?
}

/// TorchEasyRec's variational dropout of one feature group (the plan's
/// VARIATIONAL_DROPOUT): `x [B, W]` times each column's keep factor.
/// `columns [W]` (u32) names each column's feature; `noise [B, F]`,
/// uniform in `[0, 1)`, is given when training: the keep factor is then a
/// relaxed Bernoulli draw, `1 - sigmoid((logit(p) + logit(u)) / 0.1)`, with
/// tzrec's epsilon inside each log; without noise it is `1 - p`.
pub fn variational_dropout(
    x: &Tensor,
    feature_p: &Tensor,
    columns: &Tensor,
    noise: Option<&Tensor>,
) -> Result<Tensor> {
    const TEMPERATURE: f64 = 0.1;
    let eps = f64::from(f32::EPSILON);
    let p = sigmoid(feature_p)?;
    let keep = match noise {
        Some(u) => {
            let logit = |v: &Tensor| -> Result<Tensor> {
                v.affine(1.0, eps)?.log()? - v.affine(-1.0, 1.0 + eps)?.log()?
            };
            let approx = (logit(u)?.broadcast_add(&logit(&p)?)? / TEMPERATURE)?;
            sigmoid(&approx)?
                .affine(-1.0, 1.0)?
                .index_select(columns, 1)?
        }
        None => p
            .affine(-1.0, 1.0)?
            .index_select(columns, 0)?
            .unsqueeze(0)?,
    };
    x.broadcast_mul(&keep)
}

/// The regularization a variational dropout adds to the training loss:
/// `lambda / B * sum(1 - sigmoid(feature_p))`.
pub fn variational_dropout_penalty(feature_p: &Tensor, lambda: f32, rows: usize) -> Result<Tensor> {
    let keep = sigmoid(feature_p)?.affine(-1.0, 1.0)?.sum_all()?;
    keep.affine(f64::from(lambda) / rows.max(1) as f64, 0.0)
}

/// `q` `[B, Dq]` zero-padded to `D` and repeated over the steps of `s`
/// `[B, L, D]`.
fn repeat_query(q: &Tensor, s: &Tensor) -> Result<Tensor> {
    let (b, l, d) = s.dims3()?;
    let dq = q.dim(1)?;
    let q = if dq < d {
        q.pad_with_zeros(1, 0, d - dq)?
    } else {
        q.clone()
    };
    q.unsqueeze(1)?.broadcast_as((b, l, d))?.contiguous()
}

/// Multi-window DIN's attention input `[s, q * s, q]`, `[B, L, 3D]` (the
/// plan's WINDOW_INPUT).
pub fn window_input(q: &Tensor, s: &Tensor) -> Result<Tensor> {
    let qs = repeat_query(q, s)?;
    let s = s.contiguous()?;
    Tensor::cat(&[&s, &(&qs * &s)?, &qs], 2)
}

/// Multi-window DIN's pooling (the plan's WINDOW_POOL): each window's
/// masked, score-weighted step sum over its valid steps, then the padded
/// query: `[B, (W + 1) D]`.
pub fn window_pool(
    scores: &Tensor,
    s: &Tensor,
    mask: &Tensor,
    q: &Tensor,
    windows: &[usize],
) -> Result<Tensor> {
    let (b, l, d) = s.dims3()?;
    let weighted = scores
        .broadcast_mul(&mask.unsqueeze(2)?)?
        .broadcast_mul(s)?;
    let length = mask.sum(1)?;
    let mut parts = Vec::with_capacity(windows.len() + 1);
    let mut start = 0usize;
    for &w in windows {
        let (lo, hi) = (start.min(l), (start + w).min(l));
        let summed = if hi > lo {
            weighted.narrow(1, lo, hi - lo)?.sum(1)?
        } else {
            Tensor::zeros((b, d), s.dtype(), s.device())?
        };
        // max(min(length - start, w), 1): the window's valid steps, at
        // least one.
        let count = length
            .affine(1.0, -(start as f64))?
            .clamp(1.0, w.max(1) as f64)?;
        parts.push(summed.broadcast_div(&count.unsqueeze(1)?)?);
        start += w;
    }
    let dq = q.dim(1)?;
    parts.push(if dq < d {
        q.pad_with_zeros(1, 0, d - dq)?
    } else {
        q.clone()
    });
    Tensor::cat(&parts, 1)
}

/// What a masked-out key's score becomes before the softmax: its weight is
/// then exactly zero (torch writes `-inf`; a finite value keeps a row
/// with no valid key finite, and such rows are zeroed afterwards).
const EXCLUDED_KEY: f64 = -1e30;

/// Multi-head self-attention among the valid steps (the plan's
/// MULTI_HEAD_ATTENTION): `q`, `k`, `v` `[B, L, E]` split into `heads`
/// heads of `E / heads` columns, `mask` `[B, L]` (1 valid). Per head the
/// scores `q_i . k_j / sqrt(E / heads)` over valid `j` are softmaxed,
/// multiplied by `dropout`'s keep-mask `[B, heads, L, L]` over
/// `1 - ratio` when given, and weight the `v_j`; rows `i` that are not
/// valid are zero. Output `[B, L, E]`.
pub fn multi_head_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    heads: usize,
    dropout: Option<(&Tensor, f32)>,
) -> Result<Tensor> {
    let (b, l, e) = q.dims3()?;
    if heads == 0 || e % heads != 0 {
        candle_core::bail!("attention over {e} columns cannot have {heads} heads");
    }
    let hd = e / heads;
    let split = |x: &Tensor| -> Result<Tensor> {
        x.contiguous()?
            .reshape((b, l, heads, hd))?
            .transpose(1, 2)?
            .contiguous()
    };
    let (qh, kh, vh) = (split(q)?, split(k)?, split(v)?);
    let scores = (qh.matmul(&kh.transpose(2, 3)?.contiguous()?)? / (hd as f64).sqrt())?;
    let valid = mask.ge(0.5)?;
    let keys = valid
        .reshape((b, 1, 1, l))?
        .broadcast_as((b, heads, l, l))?
        .contiguous()?;
    let excluded = Tensor::full(EXCLUDED_KEY, (b, heads, l, l), q.device())?.to_dtype(q.dtype())?;
    let w = softmax(&keys.where_cond(&scores, &excluded)?, 3)?;
    let w = match dropout {
        Some((keep, ratio)) => dropout_with_mask(&w, keep, ratio)?,
        None => w,
    };
    let out = w
        .matmul(&vh)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, l, e))?;
    out.broadcast_mul(&mask.unsqueeze(2)?)
}

/// The mean of the valid steps over the whole length (the plan's
/// MASKED_MEAN): `x` `[B, L, D]` summed over the steps where `mask`
/// `[B, L]` is 1, divided by `max(sum(length), 1)` of `length` `[B, L0]`.
pub fn masked_mean(x: &Tensor, mask: &Tensor, length: &Tensor) -> Result<Tensor> {
    let summed = x.broadcast_mul(&mask.unsqueeze(2)?)?.sum(1)?;
    let count = length.sum_keepdim(1)?.clamp(1.0, f64::INFINITY)?;
    summed.broadcast_div(&count)
}

/// torch's orthogonal parametrization of `x` `[n, r]` over the base `q`
/// `[n, n]` (the plan's INTERVENTION; `ir::orthogonal` states the map):
/// `q H_0 .. H_{r-1} E D`, differentiable in the strictly lower triangle
/// of `x` (its diagonal only gives the signs `D`, truncated, as torch's
/// `.int()`).
pub fn orthogonal(x: &Tensor, q: &Tensor) -> Result<Tensor> {
    let (n, r) = x.dims2()?;
    let (dev, dt) = (x.device(), x.dtype());
    let pattern = |keep: fn(usize, usize) -> bool| -> Result<Tensor> {
        let v: Vec<f32> = (0..n * r)
            .map(|e| if keep(e / r, e % r) { 1.0 } else { 0.0 })
            .collect();
        Tensor::from_vec(v, (n, r), dev)?.to_dtype(dt)
    };
    let eye = pattern(|i, j| i == j)?;
    // Column i is v_i: 1 at row i, x below it.
    let v = (x.mul(&pattern(|i, j| i > j)?)? + &eye)?;
    let host = x.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let signs: Vec<f64> = (0..r)
        .map(|c| {
            host.get(c)
                .and_then(|row| row.get(c))
                .map_or(0.0, |d| d.trunc())
        })
        .collect();
    let signs = Tensor::from_vec(signs, (1, r), dev)?.to_dtype(dt)?;
    let mut y = eye.broadcast_mul(&signs)?;
    for i in (0..r.min(n)).rev() {
        let vi = v.narrow(1, i, 1)?.contiguous()?;
        let c = (vi.sqr()?.sum_all()?.recip()? * 2.0)?;
        let proj = vi.t()?.contiguous()?.matmul(&y)?;
        y = (y - vi.matmul(&proj)?.broadcast_mul(&c)?)?;
    }
    q.matmul(&y)
}

/// DC2VR's intervention (the plan's INTERVENTION): `(x Wb - s Ws) Wb^T +
/// x` with `Wb`, `Ws` the orthogonal parametrizations of `(xb, qb)` and
/// `(xs, qs)`; `s` is detached, as tzrec does.
pub fn intervention(
    x: &Tensor,
    s: &Tensor,
    (xb, qb): (&Tensor, &Tensor),
    (xs, qs): (&Tensor, &Tensor),
) -> Result<Tensor> {
    let wb = orthogonal(xb, qb)?;
    let ws = orthogonal(xs, qs)?;
    let t = (x.matmul(&wb)? - s.detach().matmul(&ws)?)?;
    t.matmul(&wb.t()?.contiguous()?)? + x
}
