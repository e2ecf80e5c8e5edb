//! What each op does in the engine (`Step`), and the gradient views its
//! backward pass writes: what `program` lays out and `relu_masks` reads.

use super::view::View;

/// What an op does in the engine.
#[derive(Debug, Clone)]
pub(super) enum Step {
    /// A view of its input (SLICE; STACK or CONCAT of adjacent pieces).
    Alias,
    /// FEATURE_GROUP into `out` (`[B, W]`).
    Group {
        out: View,
    },
    /// `out = x W^T + b` over the collapsed rows of `x`.
    Linear {
        x: View,
        out: View,
        w: usize,
        b: Option<usize>,
    },
    /// Per expert `k`: `out[k] = x[k] W[k]^T + b[k]` (`x` shared when rank 2).
    Batched {
        x: View,
        out: View,
        w: usize,
        b: Option<usize>,
    },
    /// `y = act(x)`; `in_place`: `y` is `x`'s own view (see
    /// `in_place_activations`).
    Act {
        x: View,
        y: View,
        slope: Option<usize>,
        in_place: bool,
    },
    Dropout {
        x: View,
        y: View,
    },
    /// `y = alpha * a * b`, element-wise (`alpha` is the op's).
    Mul {
        a: View,
        b: View,
        y: View,
    },
    /// Dice's gate: `y = x * (p + alpha * (1 - p))`, `alpha` the param
    /// over the last axis.
    Dice {
        x: View,
        p: View,
        y: View,
        alpha: usize,
    },
    /// TorchEasyRec's variational dropout: `y[r, c] = x[r, c] * keep[r, f]`,
    /// `f = columns[c]` the column's feature, its drop logits param `fp`.
    VarDrop {
        x: View,
        y: View,
        fp: usize,
        columns: Vec<usize>,
    },
    /// `y = x`; no gradient flows back to `x`.
    Detach {
        x: View,
        y: View,
    },
    /// STACK or CONCAT by copying: (input, its place in `out`).
    Copy {
        parts: Vec<(View, View)>,
        out: View,
    },
    Softmax {
        x: View,
        y: View,
        axis: usize,
    },
    /// `es`: the experts, one `[K_j, B, D]` view per part (one part, or
    /// the inputs of a CONCAT that only gates read; see `virtual_concats`).
    GateMix {
        w: View,
        es: Vec<View>,
        out: View,
    },
    /// SEQUENCE_EMBED into `out` (`[B, L, W]`).
    SeqEmbed {
        out: View,
    },
    /// SEQUENCE_MASK into `out` (`[B, L]`).
    SeqMask {
        out: View,
    },
    /// `y = [q, s, q - s, q * s]` per step (DIN's attention input).
    DinInput {
        q: View,
        s: View,
        y: View,
    },
    /// Masked softmax of `scores` over the steps, weighted sum of `s`.
    AttnPool {
        scores: View,
        s: View,
        mask: View,
        y: View,
    },
    /// Sum (mean with `mean`) of the steps of `s`.
    SeqPool {
        s: View,
        mask: View,
        y: View,
        mean: bool,
    },
    /// `y[r, l] = q[r] . s[r, l]`.
    DotScores {
        q: View,
        s: View,
        y: View,
    },
    /// `y = [s, q * s, q]` per step (multi-window DIN's attention input).
    WindowInput {
        q: View,
        s: View,
        y: View,
    },
    /// Multi-window DIN's pooling over `windows` (each window's length).
    WindowPool {
        scores: View,
        s: View,
        mask: View,
        q: View,
        y: View,
        windows: Vec<usize>,
    },
    /// Multi-head attention among the valid steps (`mask`) of `q`, `k`,
    /// `v`, `heads` heads.
    Attention {
        q: View,
        k: View,
        v: View,
        mask: View,
        y: View,
        heads: usize,
    },
    /// The valid steps (`mask`) of `x` summed, over the row's whole
    /// length (`length`, a mask over all its steps).
    MaskedMean {
        x: View,
        mask: View,
        length: View,
        y: View,
    },
    /// DC2VR's intervention of `x` by `s` (no gradient to `s`), its
    /// params `[xb, qb, xs, qs]`.
    Intervention {
        x: View,
        s: View,
        y: View,
        params: [usize; 4],
    },
    /// Batch norm (lanes along the batch axis, affine per lane) or layer
    /// norm (lanes along the last axis, affine per position).
    Norm {
        x: View,
        y: View,
        axis: usize,
        batch_norm: bool,
        params: Vec<usize>,
    },
}

/// The views each step's backward pass writes a gradient into (its
/// inputs that need one), plus the task logits the loss seeds.
pub(super) fn gradient_writes(step: &Step, needs: &[bool]) -> Vec<View> {
    let all: Vec<View> = match step {
        Step::Alias
        | Step::Group { .. }
        | Step::Detach { .. }
        | Step::SeqEmbed { .. }
        | Step::SeqMask { .. } => Vec::new(),
        Step::DinInput { q, s, .. }
        | Step::DotScores { q, s, .. }
        | Step::WindowInput { q, s, .. } => vec![*q, *s],
        Step::WindowPool { scores, s, q, .. } => vec![*scores, *s, *q],
        Step::AttnPool { scores, s, .. } => vec![*scores, *s],
        Step::SeqPool { s, .. } => vec![*s],
        Step::Attention { q, k, v, .. } => vec![*q, *k, *v],
        Step::MaskedMean { x, .. } | Step::Intervention { x, .. } => vec![*x],
        Step::Mul { a, b, .. } => vec![*a, *b],
        Step::Dice { x, p, .. } => vec![*x, *p],
        Step::VarDrop { x, .. } => vec![*x],
        Step::Linear { x, .. } => vec![*x],
        // A shared input takes one gradient per expert; a stacked one, one
        // per expert into its own matrix (together: the view once).
        Step::Batched { x, out, .. } if x.rank == 2 => vec![*x; out.dims[0]],
        Step::Batched { x, .. } => vec![*x],
        // In place, the activation rescales the gradient its readers wrote.
        Step::Act { in_place: true, .. } => Vec::new(),
        Step::Act { x, .. } | Step::Dropout { x, .. } | Step::Softmax { x, .. } => vec![*x],
        Step::Norm { x, .. } => vec![*x],
        Step::Copy { parts, .. } => parts.iter().map(|(src, _)| *src).collect(),
        Step::GateMix { w, es, .. } => std::iter::once(*w).chain(es.iter().copied()).collect(),
    };
    all.into_iter().filter(|v| needs[v.buf]).collect()
}
