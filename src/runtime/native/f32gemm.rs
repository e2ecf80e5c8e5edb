//! Fast single-precision GEMM for x86-64 AVX-512 (BLIS/GotoBLAS structure).
//!
//! Dependencies: std + rayon only.
//!
//! Design:
//! * Micro-kernel: MR x NR = 14 x 32 (28 zmm accumulators; per k step 2 aligned zmm loads of
//!   packed B, 14 broadcasts of A, 28 FMAs). Edge rows use smaller-R instantiations (const
//!   generic R = 1..14), edge columns a 1-zmm (NV = 1) variant and masked C/bias loads/stores
//!   (packed B is zero padded, so the FMAs themselves never need masks).
//! * A operand: when A has unit column stride (row-major A, all forward / dX shapes) it is NOT
//!   packed: the kernel broadcasts straight from the 14 A rows (one GPR per row) and software-
//!   prefetches each row 64 floats ahead. Otherwise A is packed into MR-row micro-panels
//!   (per k: MR contiguous floats, zero padded).
//! * B operand: always packed into NR-column micro-panels (per k: NR contiguous floats, zero
//!   padded, 64-byte aligned). Unit row stride (B = W^T) uses 16x16 in-register transposes,
//!   unit column stride a vector copy, anything else a scalar gather.
//! * Blocking: K in balanced KC blocks, N in NC blocks (kc x nc B block ~1 MiB, L2 resident),
//!   M in macro blocks of MB rows (packed-A case only). Row-major (unpacked) A: KC = NC = 512;
//!   packed A: KC = 256, NC = 1024, MB = 768.
//!   Loop order: jc(NC) -> pc(KC) -> [pack B] -> ic(MB) -> [pack A] -> tasks; inside a task:
//!   ir(MR) outer (A micro-panel stays in L1) -> jr(NR) inner (B panels stream from L2, with
//!   software prefetch 8 k-steps ahead).
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
//! * Epilogue (accumulate, bias, relu) is fused into the store of the last K block; earlier K
//!   blocks accumulate into dst. dst with column stride != 1 goes through a scratch tile.
//! * n == 1 uses a dedicated matrix-vector path.
//! * Packing buffers are grow-only thread_locals (shared B/A buffers on the driving thread, the
//!   per-task packed A of `gemm_driver2` on each worker): no allocation in the steady state (a
//!   re-entrant call on a thread whose buffers are in use falls back to temporary Vecs).
//!   Parallel phases with 2 jobs use rayon::join (stack jobs, no heap allocation).
//!
//! NaN behaviour of relu: relu(x) = max(x, 0) computed with `vmaxps x, 0`, which returns 0 when
//! x is NaN (same as Rust's `f32::max(x, 0.0)`); relu(-0.0) = +0.0. NaNs in a, b or bias
//! otherwise propagate normally. With accumulate = false dst is never read.

use std::arch::x86_64::*;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// Micro-tile rows.
const MR: usize = 14;
/// Micro-tile columns (2 zmm).
const NR: usize = 32;
/// Packed-A blocking: K block, N block, M macro block.
const KC_PACKED: usize = 256;
const NC_PACKED: usize = 1024;
const MB_PACKED: usize = 768;
/// Unpacked (row-major) A blocking: K block, N block.
const KC_DIRECT: usize = 512;
const NC_DIRECT: usize = 512;
/// Rows per compute task (rounded to whole micro-panels).
const MT_ROWS: usize = 96;
/// B prefetch distance in k steps.
const PF_DIST: usize = 8;
/// A prefetch distance (floats along a row) for unpacked A.
const A_DIST: usize = 64;
/// Below this many flops run single-threaded.
const PAR_MIN_FLOPS: f64 = 3.0e6;

fn avx512_available() -> bool {
    // 0 = unknown, 1 = available, 2 = unavailable.
    static STATE: AtomicU8 = AtomicU8::new(0);
    match STATE.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let ok = is_x86_feature_detected!("avx512f");
            STATE.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
            ok
        }
    }
}

/// All parameters of one call. Raw pointers are shared between worker jobs; jobs write
/// disjoint parts of dst (distinct micro-tiles) and only read a, b, bias.
#[derive(Clone, Copy)]
struct Prob {
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    drs: isize,
    dcs: isize,
    acc: bool,
    a: *const f32,
    ars: isize,
    acs: isize,
    b: *const f32,
    brs: isize,
    bcs: isize,
    bias: *const f32,
    relu: bool,
    /// Null, or a matrix with dst's strides: final values where it is not > 0 become 0.
    mask: *const f32,
    /// Null, or `m` values: each gets its row of A's sum over k added, as A is packed.
    a_sums: *mut f32,
}
// SAFETY: the pointers are only dereferenced inside gemm_f32's dynamic extent (the caller
// guarantees validity for that duration; all jobs are joined before it returns) and jobs write
// disjoint dst elements.
unsafe impl Send for Prob {}
unsafe impl Sync for Prob {}

/// dst (+)= a * b, then optional per-column bias and relu on the final values.
/// Row-then-column strides in elements (may be any positive values; a_rs=1 means A is column-major etc.).
/// C[i,j] at dst + i*dst_rs + j*dst_cs; A[i,p] at a + i*a_rs + p*a_cs; B[p,j] at b + p*b_rs + j*b_cs.
/// accumulate=false: dst = a*b (dst contents ignored, may be garbage/NaN); true: dst += a*b.
/// bias: null or n values added to each row of the result (after accumulation); relu: max(v,0)
/// after bias (NaN -> 0, see module docs). mask: null, or an m x n matrix with dst's strides;
/// the final value (after accumulation, bias and relu) is stored where the mask is > 0, and 0
/// elsewhere (a relu's backward pass, with the relu's output as the mask). a_sums: null, or m
/// values to which each row of A's sum over k is added (for dW = dY^T X that is the bias's
/// gradient, summed from the packed panels while they are in L1 instead of in a pass over dY);
/// each row is summed in k order, so the result does not depend on `threads`.
/// threads: worker count (rayon's current/global pool is used; at most min(threads, pool size)
/// jobs run). Returns false (and does nothing) if AVX-512F is not available at runtime, so the
/// caller can fall back.
///
/// # Safety
/// All pointers must be valid for the element ranges implied by m, n, k and the strides
/// (bias for n elements, mask like dst, a_sums for m elements, when non-null); dst and a_sums
/// must not overlap a, b, bias, mask or each other; distinct (i, j) must map to distinct dst
/// elements.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_f32(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    dst_cs: isize,
    accumulate: bool,
    a: *const f32,
    a_rs: isize,
    a_cs: isize,
    b: *const f32,
    b_rs: isize,
    b_cs: isize,
    threads: usize,
    bias: *const f32,
    relu: bool,
    mask: *const f32,
    a_sums: *mut f32,
) -> bool {
    if !avx512_available() {
        return false;
    }
    let pr = Prob {
        m,
        n,
        k,
        dst,
        drs: dst_rs,
        dcs: dst_cs,
        acc: accumulate,
        a,
        ars: a_rs,
        acs: a_cs,
        b,
        brs: b_rs,
        bcs: b_cs,
        bias,
        relu,
        mask,
        a_sums,
    };
    if !a_sums.is_null() && (n <= 1 || a_cs == 1) {
        // The paths that read A in place (matrix-vector, row-major A), and an empty product,
        // pack nothing to sum from. In a weight's gradient A is dY^T, row-major only for a
        // one-output layer.
        add_a_row_sums(&pr);
    }
    if m == 0 || n == 0 {
        return true;
    }
    if k == 0 {
        // SAFETY: caller guarantees dst (and bias) validity; scalar epilogue only.
        epilogue_only(&pr);
        return true;
    }
    let flops = 2.0 * m as f64 * n as f64 * k as f64;
    let mut workers = threads.min(rayon::current_num_threads()).max(1);
    if flops < PAR_MIN_FLOPS {
        workers = 1;
    }
    let body = || {
        if n == 1 {
            // Matrix-vector product (the 32-wide micro-kernel would waste 31/32 of its work).
            let chunks = if workers > 1 {
                m.div_ceil(256).min(16 * workers)
            } else {
                1
            };
            par_tasks(workers, chunks, &|t| {
                let (i0, i1) = (m * t / chunks, m * (t + 1) / chunks);
                // SAFETY: disjoint row range of a valid problem; avx512f checked above.
                unsafe { gemv_rows(&pr, i0, i1) }
            });
        } else {
            let kc_max = if a_cs == 1 { KC_DIRECT } else { KC_PACKED };
            let use2 = match DRIVER.load(Ordering::Relaxed) {
                // Narrow B with several K blocks (per-K-block joins dominate driver 1), or
                // unpacked A with a moderate n (whole packed B is small, fewer joins).
                0 => (n <= 256 && k > kc_max) || (a_cs == 1 && n > 512 && n <= 1024),
                d => d == 2,
            };
            // SAFETY (both): valid problem (caller contract); avx512f checked above.
            if use2 {
                unsafe { gemm_driver2(&pr, workers) }
            } else {
                unsafe { gemm_driver(&pr, workers) }
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
    true
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

/// k == 0: dst = (acc ? dst : 0) + bias, relu.
unsafe fn epilogue_only(pr: &Prob) {
    for i in 0..pr.m {
        for j in 0..pr.n {
            // SAFETY: (i, j) in range; caller guarantees dst/bias validity.
            let c = pr.dst.offset(i as isize * pr.drs + j as isize * pr.dcs);
            let mut v = if pr.acc { *c } else { 0.0 };
            if !pr.bias.is_null() {
                v += *pr.bias.add(j);
            }
            if pr.relu {
                v = v.max(0.0);
            }
            *c = masked(pr, i, j, v);
        }
    }
}

/// `v`, or 0 where the problem's mask is not > 0 at (i, j).
///
/// # Safety
/// (i, j) is inside the problem.
#[inline(always)]
unsafe fn masked(pr: &Prob, i: usize, j: usize, v: f32) -> f32 {
    if pr.mask.is_null() || *pr.mask.offset(i as isize * pr.drs + j as isize * pr.dcs) > 0.0 {
        v
    } else {
        0.0
    }
}

// ---------------------------------------------------------------------------------------------
// Packing buffers (grow-only, 64-byte aligned views).

thread_local! {
    static BUFS: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Returns a 64-byte aligned pointer to at least `len` floats inside `v` (grows `v` if needed).
fn aligned(v: &mut Vec<f32>, len: usize) -> *mut f32 {
    let need = len + 16;
    if v.len() < need {
        v.resize(need, 0.0);
    }
    let p = v.as_mut_ptr();
    let off = p.align_offset(64);
    // SAFETY: off < 16 floats (f32 alignment is 4, target 64), and v has len + 16 elements.
    unsafe { p.add(off) }
}

/// Raw pointer that may be shared with worker jobs.
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: used only for packing buffers; within a phase each region is written by exactly one
// task, and it is read only after the phase's rayon::scope has joined (happens-before edge).
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}
impl SyncPtr {
    /// Accessor (closures must capture the whole Sync wrapper, not the raw field).
    fn get(self) -> *mut f32 {
        self.0
    }
}

// ---------------------------------------------------------------------------------------------
// Driver.

#[target_feature(enable = "avx512f")]
unsafe fn gemm_driver(pr: &Prob, w: usize) {
    let (m, n, k) = (pr.m, pr.n, pr.k);
    let direct = pr.acs == 1;
    let (kc_max, nc_max, mb_max) = if direct {
        (KC_DIRECT, NC_DIRECT, usize::MAX / 2)
    } else {
        (KC_PACKED, NC_PACKED, MB_PACKED)
    };
    // Balanced blocks: K blocks rounded up to a multiple of 8, N blocks to NR, M to MR.
    let nkb = k.div_ceil(kc_max);
    let kc_b = (k.div_ceil(nkb).div_ceil(8) * 8).min(k);
    let nnb = n.div_ceil(nc_max);
    let nc_b = n.div_ceil(nnb).div_ceil(NR) * NR;
    let nmb = m.div_ceil(mb_max);
    let mb_b = m.div_ceil(nmb).div_ceil(MR) * MR;
    let b_len = nc_b * kc_b;
    let a_len = if direct { 0 } else { mb_b * kc_b };

    let run = |abuf: SyncPtr, bbuf: SyncPtr| {
        let mut jc = 0;
        while jc < n {
            let nc = nc_b.min(n - jc);
            let npan = nc.div_ceil(NR);
            let mut pc = 0;
            while pc < k {
                let kc = kc_b.min(k - pc);
                let first = pc == 0;
                let last = pc + kc == k;
                par_tasks(w, npan, &|jp| {
                    let j = jc + jp * NR;
                    // SAFETY: panel jp of the B buffer (npan*kc*NR <= b_len), written by this
                    // task only; columns j..j+nr are inside B.
                    unsafe {
                        pack_b_panel(
                            pr,
                            pc,
                            kc,
                            j,
                            NR.min(jc + nc - j),
                            bbuf.get().add(jp * kc * NR),
                        )
                    };
                });
                let mut ic = 0;
                while ic < m {
                    let mb = mb_b.min(m - ic);
                    let mpan = mb.div_ceil(MR);
                    // Task grid: row chunks of ~MT_ROWS rows; also split columns if that gives
                    // too few tasks for dynamic load balancing.
                    let mt_pan = (MT_ROWS / MR).max(1);
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
                        par_tasks(w, mpan, &|ip| {
                            let i = ic + ip * MR;
                            // SAFETY: panel ip of the A buffer (mpan*kc*MR <= a_len), written by
                            // this task only.
                            unsafe {
                                pack_a_panel(
                                    pr,
                                    i,
                                    MR.min(ic + mb - i),
                                    pc,
                                    kc,
                                    abuf.get().add(ip * kc * MR),
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
                        for ip in ip0..ip1 {
                            let i = ic + ip * MR;
                            let mr = MR.min(ic + mb - i);
                            let ap = if direct {
                                pr.a.wrapping_offset(i as isize * pr.ars + pc as isize)
                            } else {
                                let ap = abuf.get().wrapping_add(ip * kc * MR);
                                if pack_in_task {
                                    // SAFETY: A panel ip is used by this task only (n_chunks == 1).
                                    unsafe { pack_a_panel(pr, i, mr, pc, kc, ap, jc == 0) };
                                }
                                ap as *const f32
                            };
                            for jp in jp0..jp1 {
                                let j = jc + jp * NR;
                                let nr = NR.min(jc + nc - j);
                                let bp = bbuf.get().wrapping_add(jp * kc * NR);
                                // SAFETY: packed panels are complete for kc (their phase joined
                                // above, or packed just before by this task); the tile
                                // (i..i+mr, j..j+nr) is computed by this task only.
                                unsafe { tile(pr, i, mr, j, nr, kc, ap, direct, bp, first, last) };
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
            let abuf = SyncPtr(aligned(va, a_len));
            let bbuf = SyncPtr(aligned(vb, b_len));
            run(abuf, bbuf);
        }
        Err(_) => {
            // Re-entrant call on this thread (a nested gemm stolen by rayon while this thread
            // waits in a phase): use temporary buffers.
            let mut va = Vec::new();
            let mut vb = Vec::new();
            let abuf = SyncPtr(aligned(&mut va, a_len));
            let bbuf = SyncPtr(aligned(&mut vb, b_len));
            run(abuf, bbuf);
        }
    });
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
#[target_feature(enable = "avx512f")]
unsafe fn gemm_driver2(pr: &Prob, w: usize) {
    let (m, n, k) = (pr.m, pr.n, pr.k);
    let direct = pr.acs == 1;
    let (kc_max, nc_max) = if direct {
        (KC_DIRECT, NC_DIRECT)
    } else {
        (KC_PACKED, NC_PACKED)
    };
    let nkb = k.div_ceil(kc_max);
    let kc_b = (k.div_ceil(nkb).div_ceil(8) * 8).min(k);
    let npan_all = n.div_ceil(NR);
    let n_pad = npan_all * NR;
    let b_len = n_pad * k;
    let mpan = m.div_ceil(MR);
    let mt_pan = (MT_ROWS / MR).max(1);
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
    let run = |bbuf: SyncPtr| {
        // Phase 1: pack B (K block q, panel jp) at bbuf + pc*n_pad + jp*kc*NR.
        par_tasks(w, nkb * npan_all, &|t| {
            let (q, jp) = (t / npan_all, t % npan_all);
            let pc = q * kc_b;
            if pc < k {
                let kc = kc_b.min(k - pc);
                let j = jp * NR;
                // SAFETY: region pc*n_pad + jp*kc*NR .. + kc*NR lies inside b_len = n_pad*k and
                // is written by this task only.
                unsafe {
                    pack_b_panel(
                        pr,
                        pc,
                        kc,
                        j,
                        NR.min(n - j),
                        bbuf.get().add(pc * n_pad + jp * kc * NR),
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
                    if !direct {
                        for ip in ip0..ip1 {
                            let i = ip * MR;
                            // SAFETY: abuf holds (ip1-ip0) panels of kc*MR floats (this worker's).
                            unsafe {
                                pack_a_panel(
                                    pr,
                                    i,
                                    MR.min(m - i),
                                    pc,
                                    kc,
                                    abuf.add((ip - ip0) * kc * MR),
                                    // Column chunks > 0 pack the same rows again.
                                    ni == 0,
                                )
                            };
                        }
                    }
                    for ip in ip0..ip1 {
                        let i = ip * MR;
                        let mr = MR.min(m - i);
                        let ap = if direct {
                            pr.a.wrapping_offset(i as isize * pr.ars + pc as isize)
                        } else {
                            abuf.wrapping_add((ip - ip0) * kc * MR) as *const f32
                        };
                        for jp in jp0..jp1 {
                            let j = jp * NR;
                            let bp = bbuf.get().wrapping_add(pc * n_pad + jp * kc * NR);
                            // SAFETY: B packed in phase 1 (joined); A panel packed above; the
                            // tile belongs to this task only.
                            unsafe {
                                tile(pr, i, mr, j, NR.min(n - j), kc, ap, direct, bp, first, last)
                            };
                        }
                    }
                    pc += kc;
                }
            };
            if direct {
                work(std::ptr::null_mut());
            } else {
                let a_len = (ip1 - ip0) * MR * kc_b;
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
            let bbuf = SyncPtr(aligned(&mut bufs.1, b_len));
            run(bbuf);
        }
        Err(_) => {
            let mut vb = Vec::new();
            let bbuf = SyncPtr(aligned(&mut vb, b_len));
            run(bbuf);
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Micro-tiles and micro-kernel.

#[derive(Clone, Copy)]
struct Epi {
    /// Add the existing C values.
    beta: bool,
    /// Bias pointer for the tile's first column (null: no bias).
    bias: *const f32,
    relu: bool,
    /// Mask pointer for the tile's (0, 0) element, rows at the C stride (null: no mask).
    mask: *const f32,
}

type KernelFn = unsafe fn(usize, *const f32, isize, *const f32, *mut f32, isize, u16, &Epi);

macro_rules! kernel_row {
    ($d:literal; $($r:literal)*) => {
        [$([kernel::<$r, 1, $d> as KernelFn, kernel::<$r, 2, $d> as KernelFn]),*]
    };
}
/// KERNELS[direct_a][rows - 1][nv - 1]
static KERNELS: [[[KernelFn; 2]; MR]; 2] = [
    kernel_row!(false; 1 2 3 4 5 6 7 8 9 10 11 12 13 14),
    kernel_row!(true; 1 2 3 4 5 6 7 8 9 10 11 12 13 14),
];

/// Compute one micro-tile C[i..i+mr, j..j+nr] over a K block and store it with the epilogue.
/// `ap`: packed A panel, or (direct) &A[i, pc] of row-major A.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
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
    let nv = nr.div_ceil(16);
    let lanes = nr - 16 * (nv - 1);
    let mask: u16 = if lanes == 16 {
        0xFFFF
    } else {
        (1u16 << lanes) - 1
    };
    let kf = KERNELS[direct as usize][mr - 1][nv - 1];
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
        // SAFETY: rows i..i+mr and (masked) columns j..j+nr are valid dst elements.
        kf(kc, ap, pr.ars, bp, c, pr.drs, mask, &epi);
    } else {
        // General column stride: compute into an aligned scratch tile, then scalar copy-out.
        #[repr(align(64))]
        struct T([f32; MR * NR]);
        let mut t = T([0.0; MR * NR]);
        let epi = Epi {
            beta: false,
            bias: std::ptr::null(),
            relu: false,
            mask: std::ptr::null(),
        };
        // SAFETY: the scratch tile has MR rows of NR floats.
        kf(
            kc,
            ap,
            pr.ars,
            bp,
            t.0.as_mut_ptr(),
            NR as isize,
            mask,
            &epi,
        );
        for r in 0..mr {
            for jj in 0..nr {
                // SAFETY: (i + r, j + jj) is inside the problem.
                let c = pr
                    .dst
                    .offset((i + r) as isize * pr.drs + (j + jj) as isize * pr.dcs);
                let mut v = t.0[r * NR + jj];
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

/// Micro-kernel: R rows x NV*16 columns over `kc` k-steps.
/// A: DIRECT = false: packed panel, row r of step p at ap[p*MR + r];
///    DIRECT = true: row-major A, row r of step p at ap[r*lda + p].
/// B: packed panel (NR floats per k step, 64-byte aligned).
/// C: row r at c + r*c_rs; the last vector of each row is limited by `mask` (C, bias loads and
/// stores), so columns outside the tile are never touched.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel<const R: usize, const NV: usize, const DIRECT: bool>(
    kc: usize,
    ap: *const f32,
    lda: isize,
    bp: *const f32,
    c: *mut f32,
    c_rs: isize,
    mask: u16,
    epi: &Epi,
) {
    let mut acc = [[_mm512_setzero_ps(); NV]; R];
    let mut a = ap;
    let mut b = bp;
    // Direct mode: bases of row groups {0,1,2}, {3,4,5}, ... (row r = g[r/3] + (r%3)*lda).
    // Wrapping offsets: groups at or beyond R are never dereferenced. black_box keeps LLVM from
    // re-deriving all rows from one pointer (which costs extra adds in the loop).
    let mut g = [
        std::hint::black_box(ap),
        std::hint::black_box(ap.wrapping_offset(3 * lda)),
        std::hint::black_box(ap.wrapping_offset(6 * lda)),
        std::hint::black_box(ap.wrapping_offset(9 * lda)),
        std::hint::black_box(ap.wrapping_offset(12 * lda)),
    ];
    for p in 0..kc {
        let mut bv = [_mm512_setzero_ps(); NV];
        if DIRECT && (p & 15) == 0 {
            // Unpacked A comes from far memory on the first tile of a row panel: prefetch each
            // row's line A_DIST floats ahead, once per 16 k-steps (prefetches never fault).
            for (gi, x) in g.iter().enumerate() {
                for q in 0..3 {
                    if gi * 3 + q < R {
                        _mm_prefetch::<_MM_HINT_T0>(
                            x.wrapping_offset(q as isize * lda + A_DIST as isize) as *const i8,
                        );
                    }
                }
            }
        }
        // Prefetch the streamed B panels PF_DIST k-steps ahead (may run past the panel into
        // the next one, which is what the next tile uses).
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(PF_DIST * NR) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(PF_DIST * NR + 16) as *const i8);
        for (v, x) in bv.iter_mut().enumerate() {
            // SAFETY: packed B panel has NR floats per k step, 64-byte aligned.
            *x = _mm512_load_ps(b.add(16 * v));
        }
        // Fully unrolled over rows (R is a compile-time constant; dead rows fold away).
        macro_rules! row {
            ($r:literal) => {
                if $r < R {
                    // SAFETY: row $r < R <= MR exists in the packed panel / in A (direct).
                    let av = if DIRECT {
                        _mm512_set1_ps(*g[$r / 3].offset(($r % 3) as isize * lda))
                    } else {
                        _mm512_set1_ps(*a.add($r))
                    };
                    for v in 0..NV {
                        acc[$r][v] = _mm512_fmadd_ps(av, bv[v], acc[$r][v]);
                    }
                }
            };
        }
        row!(0);
        row!(1);
        row!(2);
        row!(3);
        row!(4);
        row!(5);
        row!(6);
        row!(7);
        row!(8);
        row!(9);
        row!(10);
        row!(11);
        row!(12);
        row!(13);
        if DIRECT {
            for x in g.iter_mut() {
                *x = x.wrapping_add(1);
            }
        } else {
            a = a.add(MR);
        }
        b = b.add(NR);
    }
    let zero = _mm512_setzero_ps();
    // Rows by macro, like the k loop: a loop over rows here may stay rolled, which indexes
    // `acc` at run time and keeps it in memory inside the k loop (2.5x slower).
    macro_rules! store_row {
        ($r:literal) => {
            if $r < R {
                let crow = c.offset($r * c_rs);
                let mrow = epi.mask.wrapping_offset($r * c_rs);
                for v in 0..NV {
                    let m: __mmask16 = if v + 1 == NV { mask } else { 0xFFFF };
                    let mut x = acc[$r][v];
                    // SAFETY: masked lanes are inside the tile (caller passes the column mask).
                    if epi.beta {
                        x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, crow.add(16 * v)));
                    }
                    if !epi.bias.is_null() {
                        x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, epi.bias.add(16 * v)));
                    }
                    if epi.relu {
                        x = _mm512_max_ps(x, zero);
                    }
                    if !epi.mask.is_null() {
                        let y = _mm512_maskz_loadu_ps(m, mrow.add(16 * v));
                        x = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(y, zero), x);
                    }
                    _mm512_mask_storeu_ps(crow.add(16 * v), m, x);
                }
            }
        };
    }
    store_row!(0);
    store_row!(1);
    store_row!(2);
    store_row!(3);
    store_row!(4);
    store_row!(5);
    store_row!(6);
    store_row!(7);
    store_row!(8);
    store_row!(9);
    store_row!(10);
    store_row!(11);
    store_row!(12);
    store_row!(13);
}

// ---------------------------------------------------------------------------------------------
// Packing.

#[inline(always)]
fn lane_mask(lanes: usize) -> u16 {
    if lanes >= 16 {
        0xFFFF
    } else {
        ((1u32 << lanes) - 1) as u16
    }
}

/// In-register 16x16 transpose: r[i][j] -> r[j][i].
#[inline(always)]
unsafe fn transpose16(r: &mut [__m512; 16]) {
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    let mut s = [_mm512_setzero_ps(); 16];
    for i in 0..4 {
        let t0 = _mm512_castps_pd(t[4 * i]);
        let t1 = _mm512_castps_pd(t[4 * i + 1]);
        let t2 = _mm512_castps_pd(t[4 * i + 2]);
        let t3 = _mm512_castps_pd(t[4 * i + 3]);
        s[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
        s[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        s[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
        s[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
    }
    for c in 0..4 {
        let x0 = _mm512_shuffle_f32x4::<0x44>(s[c], s[4 + c]);
        let x1 = _mm512_shuffle_f32x4::<0xEE>(s[c], s[4 + c]);
        let y0 = _mm512_shuffle_f32x4::<0x44>(s[8 + c], s[12 + c]);
        let y1 = _mm512_shuffle_f32x4::<0xEE>(s[8 + c], s[12 + c]);
        r[c] = _mm512_shuffle_f32x4::<0x88>(x0, y0);
        r[4 + c] = _mm512_shuffle_f32x4::<0xDD>(x0, y0);
        r[8 + c] = _mm512_shuffle_f32x4::<0x88>(x1, y1);
        r[12 + c] = _mm512_shuffle_f32x4::<0xDD>(x1, y1);
    }
}

/// Transposing pack: source rows i < nrows (<= 16) at src + i*ld, contiguous along p (kc values).
/// Writes out[p*out_ld + i] for i < lanes (rows >= nrows are zero).
#[target_feature(enable = "avx512f")]
unsafe fn pack_t(
    src: *const f32,
    ld: isize,
    nrows: usize,
    kc: usize,
    out: *mut f32,
    out_ld: usize,
    lanes: usize,
) {
    let smask = lane_mask(lanes);
    let mut p = 0;
    while p < kc {
        let cnt = (kc - p).min(16);
        let lm = lane_mask(cnt);
        let mut r = [_mm512_setzero_ps(); 16];
        for (i, x) in r.iter_mut().enumerate().take(nrows) {
            // SAFETY: row i < nrows, columns p..p+cnt are in range (masked).
            *x = _mm512_maskz_loadu_ps(lm, src.offset(i as isize * ld).add(p));
        }
        transpose16(&mut r);
        for (q, x) in r.iter().enumerate().take(cnt) {
            // SAFETY: out has kc*out_ld floats; lanes <= out_ld - offset (caller).
            _mm512_mask_storeu_ps(out.add((p + q) * out_ld), smask, *x);
        }
        p += 16;
    }
}

/// Pack B[pc..pc+kc, j..j+nr] into a NR-wide panel (zero padded).
#[target_feature(enable = "avx512f")]
unsafe fn pack_b_panel(pr: &Prob, pc: usize, kc: usize, j: usize, nr: usize, out: *mut f32) {
    if pr.bcs == 1 {
        let m0 = lane_mask(nr);
        let m1 = lane_mask(nr.saturating_sub(16));
        let mut src = pr.b.offset(pc as isize * pr.brs + j as isize);
        for p in 0..kc {
            // SAFETY: columns j..j+nr of row pc+p are valid (masked loads).
            let x0 = _mm512_maskz_loadu_ps(m0, src);
            let x1 = _mm512_maskz_loadu_ps(m1, src.add(16));
            _mm512_store_ps(out.add(p * NR), x0);
            _mm512_store_ps(out.add(p * NR + 16), x1);
            src = src.offset(pr.brs);
        }
    } else if pr.brs == 1 {
        for h in 0..2 {
            let rows = nr.saturating_sub(16 * h).min(16);
            // SAFETY: rows (columns of B) j+16h .. j+16h+rows are valid; contiguous along p.
            let src = pr.b.offset(pc as isize + (j + 16 * h) as isize * pr.bcs);
            pack_t(src, pr.bcs, rows, kc, out.add(16 * h), NR, 16);
        }
    } else {
        let src = pr.b.offset(pc as isize * pr.brs + j as isize * pr.bcs);
        pack_strided(src, pr.brs, pr.bcs, kc, nr, NR, out);
    }
}

/// Scalar packing for operands with no unit stride: per k step `p`,
/// `width` values `src[p * k_stride + t * t_stride]` for `t < valid`, then
/// zeros up to `width`.
///
/// # Safety
/// `src` covers `kc` k steps of `valid` elements at those strides; `out`
/// has `kc * width` writable floats.
unsafe fn pack_strided(
    src: *const f32,
    k_stride: isize,
    t_stride: isize,
    kc: usize,
    valid: usize,
    width: usize,
    out: *mut f32,
) {
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

/// Pack A[i..i+mr, pc..pc+kc] into an MR-tall panel (zero padded); with `sum`, add the
/// panel's row sums to the problem's `a_sums` (each (panel, k block) must be summed once).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn pack_a_panel(
    pr: &Prob,
    i: usize,
    mr: usize,
    pc: usize,
    kc: usize,
    out: *mut f32,
    sum: bool,
) {
    if pr.acs == 1 {
        // Row-major A: rows contiguous along p -> transpose.
        let src = pr.a.offset(i as isize * pr.ars + pc as isize);
        pack_t(src, pr.ars, mr, kc, out, MR, MR);
    } else if pr.ars == 1 {
        let lm = lane_mask(mr);
        let sm = lane_mask(MR);
        let mut src = pr.a.offset(pc as isize * pr.acs + i as isize);
        for p in 0..kc {
            // SAFETY: rows i..i+mr of column pc+p are valid (masked).
            let x = _mm512_maskz_loadu_ps(lm, src);
            _mm512_mask_storeu_ps(out.add(p * MR), sm, x);
            src = src.offset(pr.acs);
        }
    } else {
        let src = pr.a.offset(i as isize * pr.ars + pc as isize * pr.acs);
        pack_strided(src, pr.acs, pr.ars, kc, mr, MR, out);
    }
    if sum && !pr.a_sums.is_null() {
        // The packed panel is exact and still in L1: one vector add per k step.
        let lm = lane_mask(mr);
        let mut acc = _mm512_setzero_ps();
        for p in 0..kc {
            acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(lm, out.add(p * MR)));
        }
        // SAFETY: rows i..i+mr of a_sums are this panel's, written by no other task.
        let s = pr.a_sums.add(i);
        _mm512_mask_storeu_ps(s, lm, _mm512_add_ps(_mm512_maskz_loadu_ps(lm, s), acc));
    }
}

/// Adds each row of A's sum over k (in k order) to `a_sums`, for the paths that do not pack A.
///
/// # Safety
/// `pr` is a valid problem with a non-null `a_sums`.
unsafe fn add_a_row_sums(pr: &Prob) {
    for i in 0..pr.m {
        let mut s = 0f32;
        for p in 0..pr.k {
            s += *pr.a.offset(i as isize * pr.ars + p as isize * pr.acs);
        }
        *pr.a_sums.add(i) += s;
    }
}

// ---------------------------------------------------------------------------------------------
// n == 1: matrix-vector path.

#[target_feature(enable = "avx512f")]
unsafe fn gemv_rows(pr: &Prob, i0: usize, i1: usize) {
    let k = pr.k;
    let finish = |i: usize, s: f32| {
        // SAFETY: row i is in range; column 0.
        let c = pr.dst.offset(i as isize * pr.drs);
        let mut v = s;
        if pr.acc {
            v += *c;
        }
        if !pr.bias.is_null() {
            v += *pr.bias;
        }
        if pr.relu {
            v = v.max(0.0);
        }
        *c = masked(pr, i, 0, v);
    };
    if pr.acs == 1 && pr.brs == 1 {
        // Dot products along contiguous p.
        for i in i0..i1 {
            let arow = pr.a.offset(i as isize * pr.ars);
            let mut s0 = _mm512_setzero_ps();
            let mut s1 = _mm512_setzero_ps();
            let mut p = 0;
            while p + 32 <= k {
                s0 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(arow.add(p)),
                    _mm512_loadu_ps(pr.b.add(p)),
                    s0,
                );
                s1 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(arow.add(p + 16)),
                    _mm512_loadu_ps(pr.b.add(p + 16)),
                    s1,
                );
                p += 32;
            }
            while p < k {
                let lm = lane_mask(k - p);
                s0 = _mm512_fmadd_ps(
                    _mm512_maskz_loadu_ps(lm, arow.add(p)),
                    _mm512_maskz_loadu_ps(lm, pr.b.add(p)),
                    s0,
                );
                p += 16;
            }
            finish(i, _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)));
        }
    } else if pr.ars == 1 {
        // Column-major A: accumulate 16 rows at a time.
        let mut i = i0;
        while i < i1 {
            let cnt = (i1 - i).min(16);
            let lm = lane_mask(cnt);
            let mut s = _mm512_setzero_ps();
            for p in 0..k {
                let bv = _mm512_set1_ps(*pr.b.offset(p as isize * pr.brs));
                s = _mm512_fmadd_ps(
                    _mm512_maskz_loadu_ps(lm, pr.a.offset(p as isize * pr.acs).add(i)),
                    bv,
                    s,
                );
            }
            let mut tmp = [0f32; 16];
            _mm512_storeu_ps(tmp.as_mut_ptr(), s);
            for (r, &t) in tmp.iter().enumerate().take(cnt) {
                finish(i + r, t);
            }
            i += 16;
        }
    } else {
        for i in i0..i1 {
            let mut s = 0f32;
            for p in 0..k {
                s += *pr.a.offset(i as isize * pr.ars + p as isize * pr.acs)
                    * *pr.b.offset(p as isize * pr.brs);
            }
            finish(i, s);
        }
    }
}

#[cfg(test)]
#[path = "f32gemm_tests.rs"]
mod tests;
