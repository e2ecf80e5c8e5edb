//! The frame every f32 GEMM backend shares (BLIS/GotoBLAS structure): the
//! problem description (`Problem`: three strided matrices and one
//! `Epilogue`), the blocking drivers, the task scheduler, the packing
//! buffers and the edge cases (k == 0, row sums of unpacked A). A backend
//! (`f32::avx512` for AVX-512, `f32::avx2` for AVX2 + FMA) supplies only what
//! depends on its registers: the micro-kernel, the packers, and the
//! matrix-vector path, through [`Backend`].
//!
//! Design (see each backend for its tile shape):
//! * A operand: when A has unit column stride (row-major A, all forward / dX shapes) it is NOT
//!   packed: the kernel broadcasts straight from the MR A rows. Otherwise A is packed into
//!   MR-row micro-panels (per k: MR contiguous floats, zero padded).
//! * B operand: always packed into NR-column micro-panels (per k: NR contiguous floats, zero
//!   padded, 64-byte aligned).
//! * Blocking: K in balanced KC blocks, N in NC blocks (the kc x nc B block L2 resident), M in
//!   macro blocks of MB rows (packed-A case only); the sizes are the backend's.
//!   Loop order: jc(NC) -> pc(KC) -> [pack B] -> ic(MB) -> [pack A] -> tasks; inside a task:
//!   ir(MR) outer (A micro-panel stays in L1) -> jr(NR) inner (B panels stream from L2).
//! * Threading: B (and A) are packed once, cooperatively, and the compute is cut into
//!   (row chunk of <= 96 rows) x (column chunk) tasks handed out dynamically through an atomic
//!   counter to min(threads, pool size) rayon jobs, so a worker that is descheduled by other
//!   load on the machine does not stall the whole call. Two drivers:
//!   - `gemm_driver` (default): per (NC, KC) block a "pack B" phase and a compute phase (plus a
//!     "pack A" phase when several tasks share an A panel); the B block stays L2 resident
//!     across all row chunks.
//!   - `gemm_driver2`: pack all of B (every K block) in one phase, then a single compute phase
//!     whose tasks run the whole K loop for their C block (two joins per call). Used when B is
//!     narrow (n <= 256) with several K blocks, or A is row-major with 512 < n <= 1024.
//! * Epilogue (accumulate, bias, relu, relu mask) is fused into the store of the last K block;
//!   earlier K blocks accumulate into dst. dst with column stride != 1 goes through a scratch
//!   tile. A's row sums (`a_sums`) are taken from the packed panels.
//! * n == 1 uses the backend's matrix-vector path.
//! * Packing buffers are grow-only thread_locals (shared B/A buffers on the driving thread, the
//!   per-task packed A of `gemm_driver2` on each worker): no allocation in the steady state (a
//!   re-entrant call on a thread whose buffers are in use falls back to temporary Vecs).
//!   Parallel phases with 2 jobs use rayon::join (stack jobs, no heap allocation).
//!
//! NaN behaviour of relu: relu(x) = max(x, 0) computed with `vmaxps x, 0`, which returns 0 when
//! x is NaN (same as Rust's `f32::max(x, 0.0)`); relu(-0.0) = +0.0. NaNs in a, b or bias
//! otherwise propagate normally. With accumulate = false dst is never read.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::super::shared::Shared;

/// Rows per compute task (rounded to whole micro-panels).
const MT_ROWS: usize = 96;
/// Below this many flops run single-threaded.
const PAR_MIN_FLOPS: f64 = 3.0e6;

/// One strided matrix: element (i, j) at `ptr + i * rs + j * cs` (strides in elements).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Strided<P> {
    pub ptr: P,
    pub rs: isize,
    pub cs: isize,
}

/// What to apply to each output element once its full k-sum is known:
/// `C = act((accumulate ? C : 0) + A*B + bias[j])`, act = relu when `relu` is set, identity
/// otherwise, then 0 where `mask` is not > 0. Lets a caller drop its separate bias-broadcast,
/// relu and relu-backward passes over C; `a_sums` gathers A's row sums while A is packed.
///
/// relu is `x > 0 ? x : 0`: NaN and -0.0 become +0.0 (same as `x.max(0.0)` for NaN).
///
/// The struct is deliberately not `Send`/`Sync` (it holds raw pointers); the GEMMs pass the
/// addresses to their worker tasks internally under the contract below.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Epilogue {
    /// `n` f32 values, one per output column j, contiguous (stride 1). Must stay valid and
    /// unmodified for the duration of the call and must not overlap `dst`.
    pub bias: Option<*const f32>,
    pub relu: bool,
    /// An `m x n` matrix with `dst`'s strides: the final value is kept where it is > 0 and
    /// set to 0 elsewhere (a relu's backward pass, masked by the relu's output). Must stay
    /// valid and unmodified for the call and must not overlap `dst`.
    pub mask: Option<*const f32>,
    /// Not applied to C: `m` values to which each row of A's sum over k (of the f32 inputs,
    /// before any rounding) is added, gathered while A is packed. For a weight's gradient
    /// `dY^T X` these are the bias's gradient, without a pass of their own over dY. Each row
    /// is summed in k order, whatever the thread count. Must not overlap anything else.
    pub a_sums: Option<*mut f32>,
}

/// `dst (+)= a b` with an epilogue: the whole description of one f32 GEMM call.
/// C[i,j] at dst (i*rs + j*cs); A[i,p] is m x k; B[p,j] is k x n; any positive strides.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Problem {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub dst: Strided<*mut f32>,
    /// false: dst = a*b (dst contents ignored, may be garbage/NaN); true: dst += a*b.
    pub accumulate: bool,
    pub a: Strided<*const f32>,
    pub b: Strided<*const f32>,
    pub epilogue: Epilogue,
}

/// The f32 micro-kernel families the frame can drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// 14 x 32 tiles in 28 zmm accumulators (`f32::avx512`).
    Avx512,
    /// 6 x 16 tiles in 12 ymm accumulators (`f32::avx2`).
    Avx2,
}

impl Kernel {
    /// Whether this CPU can run the kernel.
    pub(crate) fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Kernel::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
                Kernel::Avx2 => {
                    std::arch::is_x86_feature_detected!("avx2")
                        && std::arch::is_x86_feature_detected!("fma")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = self;
            false
        }
    }
}

/// What a backend supplies: its tile shape, its blocking, and the code that touches vector
/// registers. Every method runs only after `Kernel::available` said yes for its kernel.
///
/// # Safety
/// The contract of every method below includes, besides what its own `# Safety` says:
/// * the CPU runs this backend (`Kernel::available` returned true for its kernel): the
///   implementations are `#[target_feature]` code;
/// * `pr`, where passed, describes a problem that satisfies [`gemm_f32`]'s contract (every
///   pointer valid for the strided ranges m, n, k imply, dst and `a_sums` written by no one
///   else, distinct (i, j) at distinct dst elements).
///
/// The implementations (`f32::avx2`, `f32::avx512`) rely on exactly this, and each
/// implementing method's `# Safety` is the one here.
pub(super) trait Backend: 'static {
    /// Micro-tile rows.
    const MR: usize;
    /// Micro-tile columns.
    const NR: usize;
    /// Packed-A blocking: K block, N block, M macro block.
    const KC_PACKED: usize;
    const NC_PACKED: usize;
    const MB_PACKED: usize;
    /// Unpacked (row-major) A blocking: K block, N block.
    const KC_DIRECT: usize;
    const NC_DIRECT: usize;
    /// Whether the kernel can read row-major A in place (`Backend::kernel`'s `direct`);
    /// a backend that must convert A (bf16) always packs it.
    const DIRECT_A: bool = true;

    /// Packs B[pc..pc+kc, j..j+nr] into an NR-wide panel (zero padded, 64-byte aligned).
    ///
    /// # Safety
    /// The columns are inside B: `pc + kc <= pr.k`, `j + nr <= pr.n`, `1 <= nr <= NR`;
    /// `out` is 64-byte aligned (the panel is written with aligned vector stores) and has
    /// kc * NR writable floats that no one else touches during the call.
    unsafe fn pack_b_panel(pr: &Prob, pc: usize, kc: usize, j: usize, nr: usize, out: *mut f32);

    /// Packs A[i..i+mr, pc..pc+kc] into an MR-tall panel (zero padded); with `sum`, adds the
    /// panel's row sums to the problem's `a_sums` (each (panel, k block) is summed once).
    ///
    /// # Safety
    /// The rows are inside A: `i + mr <= pr.m`, `1 <= mr <= MR`, `pc + kc <= pr.k`; `out`
    /// has kc * MR writable floats that no one else touches during the call (any
    /// alignment); with `sum` and a non-null `pr.a_sums`, its rows i..i+mr are the
    /// caller's alone during the call.
    #[allow(clippy::too_many_arguments)]
    unsafe fn pack_a_panel(
        pr: &Prob,
        i: usize,
        mr: usize,
        pc: usize,
        kc: usize,
        out: *mut f32,
        sum: bool,
    );

    /// Whether the backend packs an operand whose lanes are contiguous (a weight gradient's
    /// dY^T as A, a row-major B) a k step's row at a time across several panels
    /// (`pack_lanes_block`), and a task packs such an A before computing with any of it
    /// (other A panels are packed each just before its tiles, while in L1).
    const LANES_BLOCK: bool = false;

    /// Packs `block` (see [`LaneBlock`]) as its panels, each as `pack_a_panel` /
    /// `pack_b_panel` packs it. Called only when `LANES_BLOCK` is set.
    ///
    /// # Safety
    /// `block` satisfies its type's contract.
    unsafe fn pack_lanes_block(block: &LaneBlock) {
        let _ = block;
        debug_assert!(
            !Self::LANES_BLOCK,
            "a LANES_BLOCK backend packs its own blocks"
        );
    }

    /// The micro-kernel for an mr x nr tile (mr <= MR, nr <= NR) over kc k-steps: `ap` a
    /// packed A panel or (direct) &A[i, pc] of row-major A with row stride `lda`; `bp` a
    /// packed B panel; C row r at c + r*c_rs (unit column stride), stored with `epi`.
    ///
    /// # Safety
    /// `1 <= mr <= MR`, `1 <= nr <= NR`; `bp` is a 64-byte aligned packed B panel of kc
    /// steps of NR floats; `ap` is a packed A panel of kc steps of MR floats or (`direct`)
    /// the first of mr rows at stride `lda` with kc readable floats each; C rows r < mr at
    /// `c + r*c_rs` have nr floats that are writable (and readable when `epi.beta`) and
    /// that no one else touches during the call; `epi.bias` is null or points at nr
    /// readable floats; `epi.mask` is null or points at mr rows (stride `c_rs`) of nr
    /// readable floats.
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel(
        direct: bool,
        mr: usize,
        nr: usize,
        kc: usize,
        ap: *const f32,
        lda: isize,
        bp: *const f32,
        c: *mut f32,
        c_rs: isize,
        epi: &Epi,
    );

    /// Rows i0..i1 of the n == 1 product, with the epilogue.
    ///
    /// # Safety
    /// `pr.n == 1` and `i0 <= i1 <= pr.m`; rows i0..i1 of dst are the caller's alone during
    /// the call.
    unsafe fn gemv_rows(pr: &Prob, i0: usize, i1: usize);
}

/// An operand block whose lanes are contiguous, to pack as panels: `lanes` lanes of `kc`
/// k steps, lane t of step p at `src + p*k_stride + t`, as consecutive panels of `width`
/// lanes (MR for A, NR for B; panel q at `out + q * kc * width`), the last zero padded;
/// with `sums`, each lane's sum over the steps (of the f32 inputs, in k order) is added
/// to `sums[t]`.
///
/// Contract (for `Backend::pack_lanes_block`): lane t < `lanes` of step p < kc is
/// readable; `out` has `lanes.div_ceil(width)` panels of kc * width writable floats no
/// one else touches (64-byte aligned for B); `sums`, when given, has `lanes` values that
/// are the caller's.
#[derive(Clone, Copy, Debug)]
pub(super) struct LaneBlock {
    pub src: *const f32,
    pub k_stride: isize,
    pub lanes: usize,
    pub kc: usize,
    pub out: *mut f32,
    pub width: usize,
    pub sums: Option<*mut f32>,
}

/// Whether a task packs all its A panels before computing with any: an A the backend
/// packs a row at a time (`Backend::LANES_BLOCK`).
fn packs_a_ahead<K: Backend>(pr: &Prob) -> bool {
    K::LANES_BLOCK && pr.ars == 1 && pr.acs != 1
}

/// Packs A rows i..i+rows (k steps pc..pc+kc) as consecutive MR-tall panels at `out`
/// (panel p at `out + p * kc * MR`), each as `pack_a_panel` packs it: a row at a time
/// where the backend can (`Backend::pack_lanes_block`), else panel by panel.
///
/// # Safety
/// As `Backend::pack_a_panel` for each panel: `i + rows <= pr.m`, `rows >= 1`, and `out`
/// has `rows.div_ceil(MR) * kc * MR` writable floats no one else touches.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn pack_a_panels<K: Backend>(
    pr: &Prob,
    i: usize,
    rows: usize,
    pc: usize,
    kc: usize,
    out: *mut f32,
    sum: bool,
) {
    // SAFETY: this function's contract, for the block or panel by panel.
    unsafe {
        if packs_a_ahead::<K>(pr) {
            K::pack_lanes_block(&LaneBlock {
                src: pr.a.offset(i as isize + pc as isize * pr.acs),
                k_stride: pr.acs,
                lanes: rows,
                kc,
                out,
                width: K::MR,
                sums: (sum && !pr.a_sums.is_null()).then(|| pr.a_sums.add(i)),
            });
            return;
        }
        for (p, r) in (0..rows).step_by(K::MR).enumerate() {
            let out = out.add(p * kc * K::MR);
            K::pack_a_panel(pr, i + r, K::MR.min(rows - r), pc, kc, out, sum);
        }
    }
}

/// Packs columns j..j+cols of B (k steps pc..pc+kc) as consecutive NR-wide panels at
/// `out` (panel p at `out + p * kc * NR`), each as `pack_b_panel` packs it: a row at a
/// time where the backend can (`Backend::pack_lanes_block`), else panel by panel.
///
/// # Safety
/// As `Backend::pack_b_panel` for each panel: `j + cols <= pr.n`, `cols >= 1`, `out`
/// 64-byte aligned with `cols.div_ceil(NR) * kc * NR` writable floats no one else touches.
pub(super) unsafe fn pack_b_panels<K: Backend>(
    pr: &Prob,
    pc: usize,
    kc: usize,
    j: usize,
    cols: usize,
    out: *mut f32,
) {
    // SAFETY: this function's contract, for the block or panel by panel (each panel's
    // slots are a multiple of 16 floats, so every panel stays 64-byte aligned).
    unsafe {
        if K::LANES_BLOCK && pr.bcs == 1 && pr.brs != 1 {
            K::pack_lanes_block(&LaneBlock {
                src: pr.b.offset(pc as isize * pr.brs + j as isize),
                k_stride: pr.brs,
                lanes: cols,
                kc,
                out,
                width: K::NR,
                sums: None,
            });
            return;
        }
        for (p, c) in (0..cols).step_by(K::NR).enumerate() {
            K::pack_b_panel(
                pr,
                pc,
                kc,
                j + c,
                K::NR.min(cols - c),
                out.add(p * kc * K::NR),
            );
        }
    }
}

/// A [`Problem`] flattened for the kernels: raw pointers, null for an absent epilogue part.
/// Fields are read in the innermost loops, where an `Option` test per use would cost.
#[derive(Clone, Copy)]
pub(super) struct Prob {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub dst: *mut f32,
    pub drs: isize,
    pub dcs: isize,
    pub acc: bool,
    pub a: *const f32,
    pub ars: isize,
    pub acs: isize,
    pub b: *const f32,
    pub brs: isize,
    pub bcs: isize,
    pub bias: *const f32,
    pub relu: bool,
    /// Null, or a matrix with dst's strides: final values where it is not > 0 become 0.
    pub mask: *const f32,
    /// Null, or `m` values: each gets its row of A's sum over k added, as A is packed.
    pub a_sums: *mut f32,
}
// SAFETY: the pointers are only dereferenced inside gemm_f32's dynamic extent (the caller
// guarantees validity for that duration; all jobs are joined before it returns) and jobs write
// disjoint dst elements (distinct micro-tiles, distinct rows of a_sums).
unsafe impl Send for Prob {}
// SAFETY: as for Send: shared references only read the description; the writes through its
// pointers go to disjoint elements per job.
unsafe impl Sync for Prob {}

impl Prob {
    pub(super) fn new(p: &Problem) -> Self {
        Prob {
            m: p.m,
            n: p.n,
            k: p.k,
            dst: p.dst.ptr,
            drs: p.dst.rs,
            dcs: p.dst.cs,
            acc: p.accumulate,
            a: p.a.ptr,
            ars: p.a.rs,
            acs: p.a.cs,
            b: p.b.ptr,
            brs: p.b.rs,
            bcs: p.b.cs,
            bias: p.epilogue.bias.unwrap_or(std::ptr::null()),
            relu: p.epilogue.relu,
            mask: p.epilogue.mask.unwrap_or(std::ptr::null()),
            a_sums: p.epilogue.a_sums.unwrap_or(std::ptr::null_mut()),
        }
    }
}

/// `f32::gemm_f32` on backend `K`.
///
/// # Safety
/// As `gemm_f32`; the CPU can run `K`.
pub(super) unsafe fn run<K: Backend>(pr: &Prob, threads: usize) {
    let (m, n, k) = (pr.m, pr.n, pr.k);
    if !pr.a_sums.is_null() && (n <= 1 || (pr.acs == 1 && K::DIRECT_A)) {
        // The paths that read A in place (matrix-vector, row-major A), and an empty product,
        // pack nothing to sum from. In a weight's gradient A is dY^T, row-major only for a
        // one-output layer.
        // SAFETY: the caller's contract covers A's m x k range and `a_sums` (m values no one
        // else touches); no task is running yet.
        unsafe { add_a_row_sums(pr) };
    }
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // SAFETY: the caller's contract covers dst, bias and mask; scalar epilogue only, on
        // this thread.
        unsafe { epilogue_only(pr) };
        return;
    }
    let flops = 2.0 * m as f64 * n as f64 * k as f64;
    let mut workers = threads.min(rayon::current_num_threads()).max(1);
    if flops < PAR_MIN_FLOPS {
        workers = 1;
    }
    let body = || {
        if n == 1 {
            // Matrix-vector product (the NR-wide micro-kernel would waste most of its work).
            let chunks = if workers > 1 {
                m.div_ceil(256).min(16 * workers)
            } else {
                1
            };
            par_tasks(workers, chunks, &|t| {
                let (i0, i1) = (m * t / chunks, m * (t + 1) / chunks);
                // SAFETY: n == 1 and i0 <= i1 <= m; the row ranges of distinct tasks are
                // disjoint, so each task's dst rows are its own; the CPU runs K (this
                // function's contract).
                unsafe { K::gemv_rows(pr, i0, i1) }
            });
        } else {
            let direct = pr.acs == 1 && K::DIRECT_A;
            let kc_max = if direct { K::KC_DIRECT } else { K::KC_PACKED };
            let use2 = match DRIVER.load(Ordering::Relaxed) {
                // Narrow B with several K blocks (per-K-block joins dominate driver 1), or
                // unpacked A with between one and two N blocks (whole packed B is small,
                // fewer joins).
                0 => {
                    (n <= 256 && k > kc_max)
                        || (direct && n > K::NC_DIRECT && n <= 2 * K::NC_DIRECT)
                }
                d => d == 2,
            };
            // A B packed once for a scope (`fixed_b`) is laid out for the first driver.
            let use2 = use2 && !(workers == 1 && super::fixed_b::is_fixed(pr));
            if use2 {
                // SAFETY: a valid problem (this function's contract) with m, n, k > 0; the
                // CPU runs K; workers >= 1.
                unsafe { gemm_driver2::<K>(pr, workers) }
            } else {
                // SAFETY: as for driver 2 just above.
                unsafe { gemm_driver::<K>(pr, workers) }
            }
        }
    };
    if workers > 1 && rayon::current_thread_index().is_none() {
        // Run the driver inside the pool so each parallel phase is a cheap local spawn instead
        // of a cross-thread injection.
        rayon::scope(|_| body());
    } else {
        body();
    }
}

/// Run f(t) for t in 0..ntasks on up to `w` jobs of the current rayon pool, handing out tasks
/// dynamically through an atomic counter (a descheduled worker does not stall the phase).
fn par_tasks(w: usize, ntasks: usize, f: &(dyn Fn(usize) + Sync)) {
    if w <= 1 || ntasks <= 1 {
        (0..ntasks).for_each(f);
        return;
    }
    let next = AtomicUsize::new(0);
    let drain = || loop {
        let t = next.fetch_add(1, Ordering::Relaxed);
        if t >= ntasks {
            break;
        }
        f(t);
    };
    if w.min(ntasks) == 2 {
        // join keeps both jobs on the stack (no heap allocation per phase).
        rayon::join(drain, drain);
    } else {
        rayon::scope(|s| {
            for _ in 1..w.min(ntasks) {
                s.spawn(|_| drain());
            }
            drain();
        });
    }
}

/// k == 0: dst = (acc ? dst : 0) + bias, relu, mask; with no epilogue, dst is only
/// cleared (when not accumulating) and otherwise not touched.
///
/// # Safety
/// `pr` describes valid memory (the GEMM entry points' contract).
pub(super) unsafe fn epilogue_only(pr: &Prob) {
    let noop = pr.bias.is_null() && !pr.relu && pr.mask.is_null();
    if noop && pr.acc {
        return;
    }
    for i in 0..pr.m {
        for j in 0..pr.n {
            // SAFETY: i < m and j < n, so (i, j) is a dst (and mask) element and j a bias
            // index, all valid by the caller's contract; no one else touches dst.
            unsafe {
                let c = pr.dst.offset(i as isize * pr.drs + j as isize * pr.dcs);
                let v = if pr.acc { *c } else { 0.0 };
                *c = epilogue_value(pr, i, j, v);
            }
        }
    }
}

/// The epilogue applied to the full sum `v` (old C included) of element (i, j): bias,
/// relu (`x > 0 ? x : 0`: NaN and -0.0 become +0.0, like `vmaxps(x, 0)`), then the mask.
///
/// # Safety
/// (i, j) is inside the problem (`i < m`, `j < n`) and `pr`'s bias and mask, when
/// non-null, are valid (the GEMM entry points' contract).
#[inline(always)]
pub(super) unsafe fn epilogue_value(pr: &Prob, i: usize, j: usize, v: f32) -> f32 {
    // SAFETY: `j < n` indexes the bias's n values; `masked` gets this function's own
    // contract for (i, j).
    unsafe {
        let v = if pr.bias.is_null() {
            v
        } else {
            v + *pr.bias.add(j)
        };
        let v = if pr.relu { relu(v) } else { v };
        masked(pr, i, j, v)
    }
}

/// Written so it matches `vmaxps(x, 0)` bit for bit (the vector kernels' form).
#[inline(always)]
pub(super) fn relu(x: f32) -> f32 {
    if x > 0.0 {
        x
    } else {
        0.0
    }
}

/// `v`, or 0 where the problem's mask is not > 0 at (i, j).
///
/// # Safety
/// (i, j) is inside the problem (`i < m`, `j < n`) and `pr.mask`, when non-null, is valid
/// for dst's m x n range at dst's strides.
#[inline(always)]
pub(super) unsafe fn masked(pr: &Prob, i: usize, j: usize, v: f32) -> f32 {
    // SAFETY: the mask is read only when non-null, at (i, j), inside its m x n range.
    unsafe {
        if pr.mask.is_null() || *pr.mask.offset(i as isize * pr.drs + j as isize * pr.dcs) > 0.0 {
            v
        } else {
            0.0
        }
    }
}

/// K steps ahead that the packers of a column-major A (a weight gradient's dY^T: each k
/// step a row of dY, kilobytes from the last) prefetch, and the bf16 packer of a row-major
/// B too: the hardware prefetchers do not run that far ahead on such strides. Weight
/// gradient 8192 x 1024 -> 512 on an AMD EPYC Zen 5, 2 threads, best of 3 interleaved:
/// bf16 575 -> 726 GFLOP/s, AVX2 f32 213 -> 222; AVX-512 f32 unchanged with the A
/// prefetch, 20% slower with a B prefetch as well (so its B packer has none).
#[cfg(target_arch = "x86_64")]
pub(super) const PACK_AHEAD: usize = 16;

/// Prefetches the k step `steps` steps after `row` (steps `stride` floats apart) into L1.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) fn prefetch_step(row: *const f32, stride: isize, steps: usize) {
    let at = row.wrapping_offset(stride.wrapping_mul(steps as isize));
    // SAFETY: a prefetch only hints the cache and never faults, whatever the address (it is
    // formed with wrapping arithmetic and never dereferenced); SSE is baseline on x86-64.
    unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast()) }
}

// ---------------------------------------------------------------------------------------------
// Packing buffers (grow-only, 64-byte aligned views).

thread_local! {
    static BUFS: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Returns a 64-byte aligned pointer to at least `len` floats inside `v` (grows `v` if needed).
pub(super) fn aligned(v: &mut Vec<f32>, len: usize) -> *mut f32 {
    let need = len + 16;
    if v.len() < need {
        v.resize(need, 0.0);
    }
    let p = v.as_mut_ptr();
    let off = p.align_offset(64);
    // SAFETY: off < 16 floats (f32 alignment is 4, target 64), and v has len + 16 elements.
    unsafe { p.add(off) }
}

// ---------------------------------------------------------------------------------------------
// Driver.

/// Driver 1: per (NC, KC) block a cooperative "pack B" phase, an optional "pack A" phase and
/// a compute phase (see the module docs). Every task writes only its own packed panels, its
/// own micro-tiles of dst and its panels' rows of `a_sums`, and each phase is joined before
/// the next one reads what it wrote.
///
/// # Safety
/// `pr` satisfies [`gemm_f32`]'s contract with m, n, k > 0; the CPU runs `K`; `w >= 1`.
unsafe fn gemm_driver<K: Backend>(pr: &Prob, w: usize) {
    let (m, n, k) = (pr.m, pr.n, pr.k);
    let direct = pr.acs == 1 && K::DIRECT_A;
    let (kc_max, nc_max, mb_max) = if direct {
        (K::KC_DIRECT, K::NC_DIRECT, usize::MAX / 2)
    } else {
        (K::KC_PACKED, K::NC_PACKED, K::MB_PACKED)
    };
    // Balanced blocks: K blocks rounded up to a multiple of 8, N blocks to K::NR, M to K::MR.
    let nkb = k.div_ceil(kc_max);
    let kc_b = (k.div_ceil(nkb).div_ceil(8) * 8).min(k);
    // A packed A panel is packed again for every N block, so with short K blocks the N
    // blocks widen to keep the kc x nc B block at its designed size (the B block's
    // footprint is what bounds nc, and it is kc * nc).
    let nc_max = if direct {
        nc_max
    } else {
        nc_max * (kc_max / kc_b.max(1)).max(1)
    };
    let nnb = n.div_ceil(nc_max);
    let nc_b = n.div_ceil(nnb).div_ceil(K::NR) * K::NR;
    let nmb = m.div_ceil(mb_max);
    let mb_b = m.div_ceil(nmb).div_ceil(K::MR) * K::MR;
    let b_len = nc_b * kc_b;
    let a_len = if direct { 0 } else { mb_b * kc_b };
    let fixed = match w {
        // SAFETY: `pr` is valid and the CPU runs K (this function's contract); the panels
        // stay valid until the scope closes, after this call returns.
        1 => unsafe { super::fixed_b::panels::<K>(pr, kc_b, nc_b) }.map(Shared::new),
        _ => None,
    };

    let run = |abuf: Shared<*mut f32>, bbuf: Shared<*mut f32>| {
        let mut jc = 0;
        while jc < n {
            let nc = nc_b.min(n - jc);
            let npan = nc.div_ceil(K::NR);
            let mut pc = 0;
            while pc < k {
                let kc = kc_b.min(k - pc);
                let first = pc == 0;
                let last = pc + kc == k;
                let bblock = match fixed {
                    // The block's panels, packed when the scope first met this B.
                    Some(base) => Shared::new(
                        base.get()
                            .wrapping_add(super::fixed_b::offset::<K>(k, n, nc_b, jc, pc))
                            .cast_mut(),
                    ),
                    None => {
                        // SAFETY: the B buffer holds npan * kc * NR <= b_len slots, 64-byte
                        // aligned, this call's alone; the block is inside B.
                        unsafe { pack_b_block::<K>(pr, w, jc, nc, pc, kc, bbuf) };
                        bbuf
                    }
                };
                let mut ic = 0;
                while ic < m {
                    let mb = mb_b.min(m - ic);
                    let mpan = mb.div_ceil(K::MR);
                    // Task grid: row chunks of ~MT_ROWS rows; also split columns if that gives
                    // too few tasks for dynamic load balancing.
                    let mt_pan = (MT_ROWS / K::MR).max(1);
                    let m_chunks = mpan.div_ceil(mt_pan);
                    let want = 4 * w;
                    let n_chunks = if w > 1 && m_chunks < want {
                        want.div_ceil(m_chunks).min(npan)
                    } else {
                        1
                    };
                    // Packed A: pack inside the task when the task is the panel's only user.
                    let pack_in_task = !direct && n_chunks == 1;
                    if !direct && !pack_in_task {
                        let g = panel_group(mpan, w);
                        par_tasks(w, mpan.div_ceil(g), &|t| {
                            let i = ic + t * g * K::MR;
                            // SAFETY: panels t*g.. of the A buffer (mpan*kc*K::MR <= a_len),
                            // written by this task only; their rows are inside the M block.
                            unsafe {
                                pack_a_panels::<K>(
                                    pr,
                                    i,
                                    (g * K::MR).min(ic + mb - i),
                                    pc,
                                    kc,
                                    abuf.get().add(t * g * kc * K::MR),
                                    // Each column block packs the same rows again.
                                    jc == 0,
                                )
                            };
                        });
                    }
                    par_tasks(w, m_chunks * n_chunks, &|t| {
                        let (mi, ni) = (t / n_chunks, t % n_chunks);
                        let (ip0, ip1) = (mpan * mi / m_chunks, mpan * (mi + 1) / m_chunks);
                        let (jp0, jp1) = (npan * ni / n_chunks, npan * (ni + 1) / n_chunks);
                        let ahead = pack_in_task && packs_a_ahead::<K>(pr);
                        if ahead && ip0 < ip1 {
                            let i = ic + ip0 * K::MR;
                            // SAFETY: A panels ip0..ip1 are this task's alone (n_chunks == 1)
                            // and lie inside the A buffer; their rows are inside the M block.
                            unsafe {
                                pack_a_panels::<K>(
                                    pr,
                                    i,
                                    (ic + mb).min(ic + ip1 * K::MR) - i,
                                    pc,
                                    kc,
                                    abuf.get().add(ip0 * kc * K::MR),
                                    jc == 0,
                                )
                            };
                        }
                        for ip in ip0..ip1 {
                            let i = ic + ip * K::MR;
                            let mr = K::MR.min(ic + mb - i);
                            let ap = if direct {
                                pr.a.wrapping_offset(i as isize * pr.ars + pc as isize)
                            } else {
                                let ap = abuf.get().wrapping_add(ip * kc * K::MR);
                                if pack_in_task && !ahead {
                                    // SAFETY: A panel ip is used by this task only (n_chunks == 1).
                                    unsafe { K::pack_a_panel(pr, i, mr, pc, kc, ap, jc == 0) };
                                }
                                ap as *const f32
                            };
                            for jp in jp0..jp1 {
                                let j = jc + jp * K::NR;
                                let nr = K::NR.min(jc + nc - j);
                                let bp = bblock.get().wrapping_add(jp * kc * K::NR);
                                // SAFETY: packed panels are complete for kc (their phase joined
                                // above, or packed just before by this task); the tile
                                // (i..i+mr, j..j+nr) is computed by this task only.
                                unsafe {
                                    tile::<K>(pr, i, mr, j, nr, kc, ap, direct, bp, first, last)
                                };
                            }
                        }
                    });
                    ic += mb;
                }
                pc += kc;
            }
            jc += nc;
        }
    };
    BUFS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => {
            let (va, vb) = &mut *bufs;
            let abuf = Shared::new(aligned(va, a_len));
            let bbuf = Shared::new(aligned(vb, b_len));
            run(abuf, bbuf);
        }
        Err(_) => {
            // Re-entrant call on this thread (a nested gemm stolen by rayon while this thread
            // waits in a phase): use temporary buffers.
            let mut va = Vec::new();
            let mut vb = Vec::new();
            let abuf = Shared::new(aligned(&mut va, a_len));
            let bbuf = Shared::new(aligned(&mut vb, b_len));
            run(abuf, bbuf);
        }
    });
}

/// Packs block (columns `jc..jc + nc`, K steps `pc..pc + kc`) of B into its
/// NR-wide panels at `out` (panel p at `out + p * kc * NR`), on up to `w` jobs.
///
/// # Safety
/// As `Backend::pack_b_panel` for each panel: the block is inside B, `out` is 64-byte
/// aligned with `nc.div_ceil(NR) * kc * NR` writable slots no one else touches.
pub(super) unsafe fn pack_b_block<K: Backend>(
    pr: &Prob,
    w: usize,
    jc: usize,
    nc: usize,
    pc: usize,
    kc: usize,
    out: Shared<*mut f32>,
) {
    let npan = nc.div_ceil(K::NR);
    let g = panel_group(npan, w);
    par_tasks(w, npan.div_ceil(g), &|t| {
        let j = jc + t * g * K::NR;
        // SAFETY: panels t*g.. of the block (inside `out`, written by this task only);
        // their columns are inside B (this function's contract).
        unsafe {
            pack_b_panels::<K>(
                pr,
                pc,
                kc,
                j,
                (g * K::NR).min(jc + nc - j),
                out.get().add(t * g * kc * K::NR),
            )
        };
    });
}

/// Panels per packing task when `w` jobs pack `npan` panels: all of them on one thread,
/// else about four tasks per job (the dynamic hand-out balances them), as many panels
/// each as that leaves (a backend's block packer reads better the more it has).
fn panel_group(npan: usize, w: usize) -> usize {
    if w <= 1 {
        npan.max(1)
    } else {
        (npan / (4 * w)).max(1)
    }
}

/// Driver override for tests/benchmarks: 0 = automatic choice, 1 = per-K-block phases
/// (`gemm_driver`), 2 = whole-B prepack with the K loop inside tasks (`gemm_driver2`).
/// Both are always correct; only speed differs.
pub(crate) static DRIVER: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Per-worker packed-A buffer for driver 2.
    static ABUF: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Driver 2: pack all of B once (all K blocks, cooperatively), then one dynamic phase of
/// (row chunk x column chunk) tasks, each running the whole K loop for its C block; only two
/// joins per call.
///
/// # Safety
/// As [`gemm_driver`]: `pr` satisfies [`gemm_f32`]'s contract with m, n, k > 0; the CPU
/// runs `K`; `w >= 1`.
unsafe fn gemm_driver2<K: Backend>(pr: &Prob, w: usize) {
    let (m, n, k) = (pr.m, pr.n, pr.k);
    let direct = pr.acs == 1 && K::DIRECT_A;
    let (kc_max, nc_max) = if direct {
        (K::KC_DIRECT, K::NC_DIRECT)
    } else {
        (K::KC_PACKED, K::NC_PACKED)
    };
    let nkb = k.div_ceil(kc_max);
    let kc_b = (k.div_ceil(nkb).div_ceil(8) * 8).min(k);
    let npan_all = n.div_ceil(K::NR);
    let n_pad = npan_all * K::NR;
    let b_len = n_pad * k;
    let mpan = m.div_ceil(K::MR);
    let mt_pan = (MT_ROWS / K::MR).max(1);
    // Tasks here span the whole K loop, so use enough of them (>= 8 per worker when possible)
    // to keep the end-of-phase imbalance small.
    let mut m_chunks = mpan.div_ceil(mt_pan);
    if w > 1 {
        m_chunks = m_chunks.max((8 * w).min(mpan));
    }
    let mut n_chunks = n.div_ceil(nc_max);
    let want = 4 * w;
    if w > 1 && m_chunks * n_chunks < want {
        n_chunks = want.div_ceil(m_chunks).min(npan_all);
    }
    let run = |bbuf: Shared<*mut f32>| {
        // Phase 1: pack B (K block q, panel jp) at bbuf + pc*n_pad + jp*kc*K::NR, in tasks
        // of a group of panels (`panel_group`).
        let group = panel_group(npan_all, w);
        let ngroups = npan_all.div_ceil(group);
        par_tasks(w, nkb * ngroups, &|t| {
            let (q, g) = (t / ngroups, t % ngroups);
            let pc = q * kc_b;
            if pc < k {
                let kc = kc_b.min(k - pc);
                let j = g * group * K::NR;
                // SAFETY: the group's panels lie at pc*n_pad + g*group*kc*K::NR, inside
                // b_len = n_pad*k, and are written by this task only; its columns are
                // inside B.
                unsafe {
                    pack_b_panels::<K>(
                        pr,
                        pc,
                        kc,
                        j,
                        (group * K::NR).min(n - j),
                        bbuf.get().add(pc * n_pad + g * group * kc * K::NR),
                    )
                };
            }
        });
        // Phase 2: compute tasks.
        par_tasks(w, m_chunks * n_chunks, &|t| {
            let (mi, ni) = (t / n_chunks, t % n_chunks);
            let (ip0, ip1) = (mpan * mi / m_chunks, mpan * (mi + 1) / m_chunks);
            let (jp0, jp1) = (npan_all * ni / n_chunks, npan_all * (ni + 1) / n_chunks);
            let work = |abuf: *mut f32| {
                let mut pc = 0;
                while pc < k {
                    let kc = kc_b.min(k - pc);
                    let (first, last) = (pc == 0, pc + kc == k);
                    if !direct && ip0 < ip1 {
                        let i = ip0 * K::MR;
                        // SAFETY: abuf holds (ip1-ip0) panels of kc*K::MR floats (this
                        // worker's); rows i..min(m, ip1*MR) are inside A.
                        unsafe {
                            pack_a_panels::<K>(
                                pr,
                                i,
                                m.min(ip1 * K::MR) - i,
                                pc,
                                kc,
                                abuf,
                                // Column chunks > 0 pack the same rows again.
                                ni == 0,
                            )
                        };
                    }
                    for ip in ip0..ip1 {
                        let i = ip * K::MR;
                        let mr = K::MR.min(m - i);
                        let ap = if direct {
                            pr.a.wrapping_offset(i as isize * pr.ars + pc as isize)
                        } else {
                            abuf.wrapping_add((ip - ip0) * kc * K::MR) as *const f32
                        };
                        for jp in jp0..jp1 {
                            let j = jp * K::NR;
                            let bp = bbuf.get().wrapping_add(pc * n_pad + jp * kc * K::NR);
                            // SAFETY: B packed in phase 1 (joined); A panel packed above; the
                            // tile belongs to this task only.
                            unsafe {
                                tile::<K>(
                                    pr,
                                    i,
                                    mr,
                                    j,
                                    K::NR.min(n - j),
                                    kc,
                                    ap,
                                    direct,
                                    bp,
                                    first,
                                    last,
                                )
                            };
                        }
                    }
                    pc += kc;
                }
            };
            if direct {
                work(std::ptr::null_mut());
            } else {
                let a_len = (ip1 - ip0) * K::MR * kc_b;
                ABUF.with(|cell| match cell.try_borrow_mut() {
                    Ok(mut v) => work(aligned(&mut v, a_len)),
                    Err(_) => {
                        let mut v = Vec::new();
                        work(aligned(&mut v, a_len))
                    }
                });
            }
        });
    };
    BUFS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => {
            let bbuf = Shared::new(aligned(&mut bufs.1, b_len));
            run(bbuf);
        }
        Err(_) => {
            let mut vb = Vec::new();
            let bbuf = Shared::new(aligned(&mut vb, b_len));
            run(bbuf);
        }
    });
}

// Micro-tiles and micro-kernel.

/// The epilogue of one micro-tile's store.
#[derive(Clone, Copy)]
pub(super) struct Epi {
    /// Add the existing C values.
    pub beta: bool,
    /// Bias pointer for the tile's first column (null: no bias).
    pub bias: *const f32,
    pub relu: bool,
    /// Mask pointer for the tile's (0, 0) element, rows at the C stride (null: no mask).
    pub mask: *const f32,
}

/// Floats in the scratch tile of a column-strided dst: the largest MR x NR (AVX-512's 14 x 32).
const SCRATCH: usize = 14 * 32;

/// Compute one micro-tile C[i..i+mr, j..j+nr] over a K block and store it with the epilogue.
/// `ap`: packed A panel, or (direct) &A[i, pc] of row-major A.
///
/// # Safety
/// `pr` satisfies [`gemm_f32`]'s contract and the CPU runs `K`; `1 <= mr <= K::MR`,
/// `1 <= nr <= K::NR`, `i + mr <= m`, `j + nr <= n`; `ap`, `direct` and `bp` are as
/// [`Backend::kernel`] takes them for kc k steps (B packed into a 64-byte aligned panel);
/// `first`/`last` say whether this K block is the first/last (the epilogue goes with the
/// last); the tile's dst elements are the caller's alone during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn tile<K: Backend>(
    pr: &Prob,
    i: usize,
    mr: usize,
    j: usize,
    nr: usize,
    kc: usize,
    ap: *const f32,
    direct: bool,
    bp: *const f32,
    first: bool,
    last: bool,
) {
    // SAFETY: every pointer formed or read below stays inside the tile's rows i..i+mr and
    // columns j..j+nr of dst and mask (and columns j..j+nr of the bias), all valid by the
    // caller's contract; the kernels get panels and a tile as `Backend::kernel` requires
    // (with column stride != 1 the tile is the local scratch, MR rows of NR floats).
    unsafe {
        let beta = !first || pr.acc;
        if pr.dcs == 1 {
            let c = pr.dst.offset(i as isize * pr.drs + j as isize);
            let epi = Epi {
                beta,
                bias: if last && !pr.bias.is_null() {
                    pr.bias.add(j)
                } else {
                    std::ptr::null()
                },
                relu: last && pr.relu,
                mask: if last && !pr.mask.is_null() {
                    pr.mask.offset(i as isize * pr.drs + j as isize)
                } else {
                    std::ptr::null()
                },
            };
            // SAFETY: rows i..i+mr and columns j..j+nr are valid dst elements.
            K::kernel(direct, mr, nr, kc, ap, pr.ars, bp, c, pr.drs, &epi);
        } else {
            // General column stride: compute into an aligned scratch tile, then scalar copy-out.
            #[repr(align(64))]
            struct T([f32; SCRATCH]);
            debug_assert!(K::MR * K::NR <= SCRATCH);
            let mut t = T([0.0; SCRATCH]);
            let epi = Epi {
                beta: false,
                bias: std::ptr::null(),
                relu: false,
                mask: std::ptr::null(),
            };
            // SAFETY: the scratch tile has MR rows of NR floats.
            K::kernel(
                direct,
                mr,
                nr,
                kc,
                ap,
                pr.ars,
                bp,
                t.0.as_mut_ptr(),
                K::NR as isize,
                &epi,
            );
            for r in 0..mr {
                for jj in 0..nr {
                    // SAFETY: (i + r, j + jj) is inside the problem.
                    let c = pr
                        .dst
                        .offset((i + r) as isize * pr.drs + (j + jj) as isize * pr.dcs);
                    let mut v = t.0[r * K::NR + jj];
                    if beta {
                        v += *c;
                    }
                    if last {
                        if !pr.bias.is_null() {
                            v += *pr.bias.add(j + jj);
                        }
                        if pr.relu {
                            v = v.max(0.0);
                        }
                        v = masked(pr, i + r, j + jj, v);
                    }
                    *c = v;
                }
            }
        }
    }
}

/// Scalar packing for operands with no unit stride: per k step `p`,
/// `width` values `src[p * k_stride + t * t_stride]` for `t < valid`, then
/// zeros up to `width`.
///
/// # Safety
/// `src` covers `kc` k steps of `valid` elements at those strides; `out`
/// has `kc * width` writable floats no one else touches during the call.
pub(super) unsafe fn pack_strided(
    src: *const f32,
    k_stride: isize,
    t_stride: isize,
    kc: usize,
    valid: usize,
    width: usize,
    out: *mut f32,
) {
    // SAFETY: `p < kc`, `t < width`: the writes stay in `out`'s kc * width floats, and the
    // reads (only for `t < valid`) in `src`'s range; both by the caller's contract.
    unsafe {
        for p in 0..kc {
            for t in 0..width {
                *out.add(p * width + t) = if t < valid {
                    *src.offset(p as isize * k_stride + t as isize * t_stride)
                } else {
                    0.0
                };
            }
        }
    }
}

/// Adds each row of A's sum over k (in k order) to `a_sums`, for the paths that do not pack A.
///
/// # Safety
/// `pr` is a valid problem with a non-null `a_sums`.
pub(super) unsafe fn add_a_row_sums(pr: &Prob) {
    let a = Strided {
        ptr: pr.a,
        rs: pr.ars,
        cs: pr.acs,
    };
    // SAFETY: a valid problem's A covers its strided m x k range, and its non-null
    // `a_sums` has m values that nothing else touches (the caller's contract).
    unsafe { add_row_sums(pr.m, pr.k, a, pr.a_sums) };
}

/// Adds each row of the m x k matrix `a`'s sum, in k order, to `sums`.
///
/// # Safety
/// `a` covers its strided m x k range; `sums` has `m` values nothing else touches.
pub(super) unsafe fn add_row_sums(m: usize, k: usize, a: Strided<*const f32>, sums: *mut f32) {
    // SAFETY: `i < m`, `p < k`: every read is inside `a`'s range and every write one of
    // `sums`' m values (the caller's contract).
    unsafe {
        for i in 0..m {
            let mut s = 0f32;
            for p in 0..k {
                s += *a.ptr.offset(i as isize * a.rs + p as isize * a.cs);
            }
            *sums.add(i) += s;
        }
    }
}

/// A [`Problem`] from the flat argument list the kernel tests were written
/// against.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(super) fn test_problem(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    (dst_rs, dst_cs): (isize, isize),
    accumulate: bool,
    a: *const f32,
    (a_rs, a_cs): (isize, isize),
    b: *const f32,
    (b_rs, b_cs): (isize, isize),
    epilogue: Epilogue,
) -> Problem {
    Problem {
        m,
        n,
        k,
        dst: Strided {
            ptr: dst,
            rs: dst_rs,
            cs: dst_cs,
        },
        accumulate,
        a: Strided {
            ptr: a,
            rs: a_rs,
            cs: a_cs,
        },
        b: Strided {
            ptr: b,
            rs: b_rs,
            cs: b_cs,
        },
        epilogue,
    }
}
