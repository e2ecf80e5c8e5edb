//! AMX-BF16 matrix multiply for the CPU runtime's opt-in `--precision bf16` mode.
//!
//! `C = (accumulate ? C : 0) + bf16(A) * bf16(B)`, with f32 inputs/outputs of arbitrary
//! element strides (same convention as the `gemm` crate, but rows-then-columns argument order).
//!
//! Structure of the AMX path:
//! * B is packed once per call (in parallel) into VNNI-layout bf16 "panels" of 32 columns.
//! * Output row blocks (up to 512 rows; column ranges too when rows are few) are handed out to
//!   at most `threads` rayon tasks through an atomic counter. Per k block (up to 1024) a task
//!   packs its A rows into a thread-local buffer and runs a 32x32 microkernel (4 accumulator
//!   tiles tmm0-3, A tiles tmm4-5, B tiles tmm6-7) over every B panel, prefetching the next
//!   block's C lines (large outputs are otherwise bound by tile stores waiting on DRAM).
//! * Full 16x16 output tiles with unit column stride are loaded/stored straight from/to `dst`;
//!   edge tiles and non-unit column strides go through a small f32 scratch buffer.
//! * Padding (rows/cols past m/n, k past a multiple of 32) is packed as zeros, so the kernel
//!   never needs partial tiles.
//! * An optional [`Epilogue`] (per-column bias, relu) is applied as the last k block's
//!   accumulators are stored, so callers need no separate passes over C. Full tiles then go
//!   through the scratch buffer and an AVX-512 copy loop instead of a direct tile store.
//!
//! Everything AMX-specific is compiled only for x86_64 Linux (tile permission is requested
//! through `arch_prctl`); elsewhere `available()` is false and `gemm_bf16` uses the portable
//! fallback, which computes the same bf16-rounded product with f32 accumulation.

use std::sync::OnceLock;

/// f32 -> bf16 bits, round-to-nearest-even (what VCVTNEPS2BF16 does for normal numbers).
/// NaNs stay NaN (quieted) instead of possibly rounding into infinity.
#[inline(always)]
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if b & 0x7fff_ffff > 0x7f80_0000 {
        return ((b >> 16) | 0x0040) as u16;
    }
    let round = 0x7fff + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

/// `x` rounded to the nearest bf16 value, as f32.
#[inline(always)]
pub fn bf16_round(x: f32) -> f32 {
    f32::from_bits((bf16_bits(x) as u32) << 16)
}

static AVAILABLE: OnceLock<bool> = OnceLock::new();

/// Whether AMX-BF16 can be used in this process: CPUID says AMX-TILE and AMX-BF16,
/// and arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA=18) succeeded (done once, cached in a OnceLock).
pub fn available() -> bool {
    *AVAILABLE.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    // The packers use AVX-512 BW/BF16 (every AMX-BF16 CPU has them), so require them too.
    if !(std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512bf16"))
    {
        return false;
    }
    // CPUID.(EAX=7,ECX=0):EDX bit 24 = AMX-TILE, bit 22 = AMX-BF16.
    // SAFETY: cpuid is always available on x86_64 (the call is safe on newer toolchains).
    #[allow(unused_unsafe)]
    let leaf7 = unsafe { std::arch::x86_64::__cpuid_count(7, 0) };
    let amx_tile = leaf7.edx & (1 << 24) != 0;
    let amx_bf16 = leaf7.edx & (1 << 22) != 0;
    if !(amx_tile && amx_bf16) {
        return false;
    }
    // Linux keeps the 8 KiB tile-data XSAVE component disabled until the process asks for it;
    // without this the first ldtilecfg raises SIGILL. The permission is process-wide.
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: plain syscall with integer arguments.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    rc == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// C = (accumulate ? C : 0) + A * B, for m x k A and k x n B given as f32 with arbitrary element strides
/// (row stride rs, column stride cs, in elements, like the `gemm` crate: element (i,j) of A is a[i*a_rs + j*a_cs]).
/// A and B are rounded to bf16 (round-to-nearest-even) while packing; products accumulate in f32 (tdpbf16ps).
/// dst is f32 with its own strides. Parallel over output blocks with rayon (the global pool; `threads` = max tasks in flight, 1 = run on the caller's thread).
/// Must be correct for ANY m, n, k >= 0 (edges: tails not multiple of 16/32, k odd, m or n == 0, k == 0 -> C = accumulate ? C : 0).
///
/// When `available()` is false this runs [`gemm_bf16_fallback`] (same rounding, scalar, slow).
///
/// # Safety
/// * The pointers must cover the strided ranges they describe (any alignment; negative strides ok).
/// * `dst` must not alias `a` or `b`, and distinct (i, j) must map to distinct dst elements
///   (tasks write disjoint output blocks concurrently).
/// * Tile registers of the calling thread(s) are clobbered: each task ends with `tilerelease`.
///   Do not call this from code that keeps its own AMX tile state live.
/// * Numerics: the AMX path treats bf16 denormal inputs as zero and flushes denormal results,
///   as TDPBF16PS does; the fallback keeps denormals.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_bf16(
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
) {
    gemm_bf16_epilogue(
        m,
        n,
        k,
        dst,
        dst_rs,
        dst_cs,
        accumulate,
        a,
        a_rs,
        a_cs,
        b,
        b_rs,
        b_cs,
        threads,
        Epilogue::default(),
    );
}

pub use super::frame::Epilogue;

impl Epilogue {
    fn is_noop(&self) -> bool {
        self.bias.is_none() && !self.relu && self.mask.is_none()
    }

    /// The epilogue for one element of column `j`, at offset `off` from `dst`, whose full sum
    /// (incl. the old C) is `v`.
    ///
    /// # Safety
    /// `bias`, if set, must be readable at index `j`; `mask`, if set, at `off`.
    #[inline(always)]
    unsafe fn apply(&self, v: f32, j: usize, off: isize) -> f32 {
        let v = match self.bias {
            Some(b) => v + *b.add(j),
            None => v,
        };
        let v = if self.relu { relu(v) } else { v };
        if self.mask.is_none_or(|m| *m.offset(off) > 0.0) {
            v
        } else {
            0.0
        }
    }
}

/// Written so it matches `vmaxps(x, 0)` bit for bit (the AMX path's vector form).
#[inline(always)]
fn relu(x: f32) -> f32 {
    if x > 0.0 {
        x
    } else {
        0.0
    }
}

/// [`gemm_bf16`] with a fused [`Epilogue`]: `C = act((accumulate ? C : 0) + A*B + bias[j])`.
/// Bias and relu are applied exactly once per element, when the last k block's accumulators
/// are stored (never to partial sums), so the result equals a bias/relu pass after the GEMM
/// up to f32 rounding order. With k == 0 this is `C = act((accumulate ? C : 0) + bias[j])`.
///
/// When `available()` is false this runs [`gemm_bf16_fallback_epilogue`].
///
/// # Safety
/// Everything [`gemm_bf16`] requires, plus: `epilogue.bias`, if set, points to `n` readable
/// f32 (stride 1) that do not overlap `dst` and are not written during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_bf16_epilogue(
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
    epilogue: Epilogue,
) {
    if m == 0 || n == 0 {
        // No product, but A's rows still have sums.
        add_row_sums(m, k, a, a_rs, a_cs, epilogue.a_sums);
        return;
    }
    if k == 0 {
        epilogue_only(m, n, dst, dst_rs, dst_cs, accumulate, epilogue);
        return;
    }
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if available() {
        imp::gemm(
            m,
            n,
            k,
            dst,
            dst_rs,
            dst_cs,
            accumulate,
            a,
            a_rs,
            a_cs,
            b,
            b_rs,
            b_cs,
            threads,
            epilogue.bias.unwrap_or(std::ptr::null()),
            epilogue.relu,
            epilogue.mask.unwrap_or(std::ptr::null()),
            epilogue.a_sums.unwrap_or(std::ptr::null_mut()),
        );
        return;
    }
    gemm_bf16_fallback_epilogue(
        m, n, k, dst, dst_rs, dst_cs, accumulate, a, a_rs, a_cs, b, b_rs, b_cs, threads, epilogue,
    );
}

/// The k == 0 case: no products, only `C = act((accumulate ? C : 0) + bias)`.
unsafe fn epilogue_only(
    m: usize,
    n: usize,
    dst: *mut f32,
    dst_rs: isize,
    dst_cs: isize,
    accumulate: bool,
    ep: Epilogue,
) {
    if ep.is_noop() {
        // Keep the plain GEMM's behaviour of not touching C at all when accumulating.
        if !accumulate {
            zero_dst(m, n, dst, dst_rs, dst_cs);
        }
        return;
    }
    for i in 0..m {
        for j in 0..n {
            let off = i as isize * dst_rs + j as isize * dst_cs;
            let d = dst.offset(off);
            let v = if accumulate { *d } else { 0.0 };
            *d = ep.apply(v, j, off);
        }
    }
}

/// Adds each row of A's sum over k, in k order, to `sums` when it is given (the paths that
/// pack nothing to sum from; also `gemm`'s fallback).
///
/// # Safety
/// A covers the strided m x k range; `sums`, when given, has m values nothing else touches.
pub(super) unsafe fn add_row_sums(
    m: usize,
    k: usize,
    a: *const f32,
    a_rs: isize,
    a_cs: isize,
    sums: Option<*mut f32>,
) {
    if let Some(s) = sums {
        for i in 0..m {
            let row = (0..k).map(|p| *a.offset(i as isize * a_rs + p as isize * a_cs));
            *s.add(i) += row.sum::<f32>();
        }
    }
}

unsafe fn zero_dst(m: usize, n: usize, dst: *mut f32, dst_rs: isize, dst_cs: isize) {
    for i in 0..m {
        for j in 0..n {
            *dst.offset(i as isize * dst_rs + j as isize * dst_cs) = 0.0;
        }
    }
}

/// Portable version of [`gemm_bf16`] with identical semantics (bf16-rounded inputs, f32
/// accumulation in k order). Runs on the caller's thread; `threads` is ignored.
///
/// # Safety
/// Same pointer requirements as [`gemm_bf16`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_bf16_fallback(
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
) {
    gemm_bf16_fallback_epilogue(
        m,
        n,
        k,
        dst,
        dst_rs,
        dst_cs,
        accumulate,
        a,
        a_rs,
        a_cs,
        b,
        b_rs,
        b_cs,
        threads,
        Epilogue::default(),
    );
}

/// Portable version of [`gemm_bf16_epilogue`] with identical semantics.
///
/// # Safety
/// Same pointer requirements as [`gemm_bf16_epilogue`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_bf16_fallback_epilogue(
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
    _threads: usize,
    epilogue: Epilogue,
) {
    if m == 0 || n == 0 {
        add_row_sums(m, k, a, a_rs, a_cs, epilogue.a_sums);
        return;
    }
    if k == 0 {
        epilogue_only(m, n, dst, dst_rs, dst_cs, accumulate, epilogue);
        return;
    }
    add_row_sums(m, k, a, a_rs, a_cs, epilogue.a_sums);
    // Round once into contiguous copies (A row-major, B column-major) so the dot products
    // below walk unit-stride memory.
    let mut ar = Vec::with_capacity(m * k);
    for i in 0..m {
        for p in 0..k {
            ar.push(bf16_round(*a.offset(i as isize * a_rs + p as isize * a_cs)));
        }
    }
    let mut bt = Vec::with_capacity(n * k);
    for j in 0..n {
        for p in 0..k {
            bt.push(bf16_round(*b.offset(p as isize * b_rs + j as isize * b_cs)));
        }
    }
    let noop = epilogue.is_noop();
    for i in 0..m {
        let arow = &ar[i * k..(i + 1) * k];
        for j in 0..n {
            let bcol = &bt[j * k..(j + 1) * k];
            let s: f32 = arow.iter().zip(bcol).map(|(x, y)| x * y).sum();
            let off = i as isize * dst_rs + j as isize * dst_cs;
            let d = dst.offset(off);
            let v = if accumulate { *d + s } else { s };
            *d = if noop { v } else { epilogue.apply(v, j, off) };
        }
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use super::bf16_bits;
    use std::arch::asm;
    use std::arch::x86_64::*;
    use std::cell::RefCell;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// One tile row: 64 bytes = 32 bf16 (A) or 16 bf16 pairs (B). 64-byte aligned so tile
    /// loads never split cache lines.
    #[derive(Clone, Copy)]
    #[repr(C, align(64))]
    struct Line([u16; 32]);

    const ZERO_LINE: Line = Line([0; 32]);

    /// k elements consumed per tdpbf16ps (one 64-byte A row).
    const KSTEP: usize = 32;
    /// Rows of A / columns of B handled by one microkernel call (two 16-row tiles each).
    const PANEL: usize = 32;
    /// Lines per k-step of a packed panel: 2 tiles x 16 rows.
    const LINES_PER_STEP: usize = 32;
    /// Byte offset between the two 16-row tiles of one k-step inside a panel.
    const HALF_BYTES: usize = 16 * 64;
    /// Byte advance per k-step inside a panel.
    const STEP_BYTES: usize = LINES_PER_STEP * 64;

    /// Raw pointer that may be shared with rayon tasks; every use writes disjoint regions.
    #[derive(Clone, Copy)]
    struct SendPtr<T>(*mut T);
    unsafe impl<T> Send for SendPtr<T> {}
    unsafe impl<T> Sync for SendPtr<T> {}
    #[derive(Clone, Copy)]
    struct SendConst<T>(*const T);
    unsafe impl<T> Send for SendConst<T> {}
    unsafe impl<T> Sync for SendConst<T> {}

    thread_local! {
        /// Per-thread packed-A buffer, reused across calls so steady-state training steps do
        /// not mmap/fault fresh pages every call (it is at most ~1 MiB, see `choose_blocks`).
        static A_BUF: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
        /// Packed-B buffer of the calling thread, reused across calls when it is small.
        static B_BUF: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
    }
    /// Packed-B buffers above this many lines (32 MiB) are freed after the call.
    const B_CACHE_MAX_LINES: usize = (32 << 20) / 64;

    /// Palette 1, all eight tiles 16 rows x 64 bytes: accumulators are 16x16 f32, A tiles are
    /// 16 rows x 32 bf16, B tiles are 16 k-pairs x 16 columns x 2 bf16.
    #[repr(C, align(64))]
    struct TileCfg([u8; 64]);

    fn tile_cfg() -> TileCfg {
        let mut c = [0u8; 64];
        c[0] = 1; // palette
        for t in 0..8 {
            c[16 + 2 * t] = 64; // colsb (u16 little-endian)
            c[48 + t] = 16; // rows
        }
        TileCfg(c)
    }

    /// Run `f` on up to `workers` rayon tasks (the caller's thread runs one of them).
    fn run_workers(workers: usize, f: &(dyn Fn() + Sync)) {
        if workers <= 1 {
            f();
        } else {
            rayon::scope(|s| {
                for _ in 1..workers {
                    s.spawn(|_| f());
                }
                f();
            });
        }
    }

    struct Shape {
        m: usize,
        n: usize,
        k: usize,
        /// Number of 32-wide k steps (k rounded up).
        ks: usize,
    }

    impl Shape {
        fn panel_lines(&self) -> usize {
            self.ks * LINES_PER_STEP
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn gemm(
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
    ) {
        let sh = Shape {
            m,
            n,
            k,
            ks: k.div_ceil(KSTEP),
        };
        let pl = sh.panel_lines();
        let n_panels = n.div_ceil(PANEL);
        let m_panels = m.div_ceil(PANEL);
        let max_workers = threads.max(1).min(rayon::current_num_threads().max(1));

        // ---- pack B (shared by all tasks) ----
        let b_lines = n_panels * pl;
        let mut bbuf = B_BUF.with(|c| {
            c.try_borrow_mut()
                .map(|mut v| std::mem::take(&mut *v))
                .unwrap_or_default()
        });
        if bbuf.len() < b_lines {
            // Every line gets written by pack_b_tile, but zero-init keeps this safe Rust.
            bbuf = vec![ZERO_LINE; b_lines];
        }
        {
            // Packed B: [panel (pl lines)][k-step][half][16 k-pairs][16 cols x 2].
            // Work items follow the source's contiguous axis (see pack_a_block): whole panels
            // when k is contiguous, whole k-steps across all panels otherwise.
            let by_panel = b_rs == 1;
            let items = if by_panel { n_panels } else { sh.ks };
            let bp = SendPtr(bbuf.as_mut_ptr());
            let bsrc = SendConst(b);
            let next = AtomicUsize::new(0);
            let sh = &sh;
            let pack = || {
                let (bp, bsrc) = (bp, bsrc);
                let one = |jp: usize, s: usize, half: usize| {
                    // SAFETY: every (jp, s, half) tile is packed by exactly one item.
                    let at = jp * pl + s * LINES_PER_STEP + half * 16;
                    let tile = std::slice::from_raw_parts_mut(bp.0.add(at), 16);
                    pack_b_tile(
                        tile,
                        sh,
                        jp * PANEL + half * 16,
                        s * KSTEP,
                        bsrc.0,
                        b_rs,
                        b_cs,
                    );
                };
                loop {
                    let it = next.fetch_add(1, Ordering::Relaxed);
                    if it >= items {
                        break;
                    }
                    if by_panel {
                        for s in 0..sh.ks {
                            one(it, s, 0);
                            one(it, s, 1);
                        }
                    } else {
                        for jp in 0..n_panels {
                            one(jp, it, 0);
                            one(jp, it, 1);
                        }
                    }
                }
            };
            run_workers(max_workers.min(items), &pack);
        }

        // ---- compute ----
        let bl = choose_blocks(&sh, m_panels, n_panels, max_workers, a_rs == 1 && a_cs != 1);
        let m_blocks = m_panels.div_ceil(bl.mc);
        let n_chunk = n_panels.div_ceil(bl.n_splits);
        let tasks = m_blocks * bl.n_splits;
        let next = AtomicUsize::new(0);
        let dp = SendPtr(dst);
        let asrc = SendConst(a);
        let bpk = SendConst(bbuf.as_ptr());
        let biasp = SendConst(bias);
        let maskp = SendConst(mask);
        let sumsp = SendPtr(a_sums);
        let sh_ref = &sh;
        let work = || {
            let (dp, asrc, bpk) = (dp, asrc, bpk);
            let (biasp, maskp, sumsp) = (biasp, maskp, sumsp);
            let sh = sh_ref;
            let epi = Epi {
                bias: biasp.0,
                relu,
                mask: maskp.0,
            };
            let epi_active = !epi.bias.is_null() || epi.relu || !epi.mask.is_null();
            let out = Out {
                dst: dp.0,
                rs: dst_rs,
                cs: dst_cs,
                m: sh.m,
                n: sh.n,
            };
            A_BUF.with(|cell| {
                // A worker never re-enters rayon, so the borrow should always succeed; if it
                // somehow does not, use a private buffer rather than skip the work.
                let mut guard;
                let mut private = Vec::new();
                let abuf: &mut Vec<Line> = match cell.try_borrow_mut() {
                    Ok(g) => {
                        guard = g;
                        &mut guard
                    }
                    Err(_) => &mut private,
                };
                // Packed A block: mc panels x kc steps, panel stride `apl` lines.
                let apl = bl.kc * LINES_PER_STEP;
                let need = bl.mc * apl;
                if abuf.len() < need {
                    abuf.resize(need, ZERO_LINE);
                }
                let mut scratch = Scratch([0.0; 1024]);
                let cfg = tile_cfg();
                // Tile state is per thread: configure on whichever thread runs this task.
                asm!("ldtilecfg [{}]", in(reg) &cfg as *const TileCfg, options(nostack, readonly));
                loop {
                    let t = next.fetch_add(1, Ordering::Relaxed);
                    if t >= tasks {
                        break;
                    }
                    let (mb, ns) = (t / bl.n_splits, t % bl.n_splits);
                    // Column splits after the first pack the same A rows again.
                    let sums = match ns {
                        0 => sumsp.0,
                        _ => std::ptr::null_mut(),
                    };
                    let ip0 = mb * bl.mc;
                    let ip1 = (ip0 + bl.mc).min(m_panels);
                    let jp0 = ns * n_chunk;
                    let jp1 = (jp0 + n_chunk).min(n_panels);
                    if jp0 >= jp1 {
                        continue;
                    }
                    // GotoBLAS order: per k block, pack this task's A rows once (L2-resident),
                    // then sweep B panels; each B panel stays in L1 across the A panels.
                    let mut s0 = 0;
                    while s0 < sh.ks {
                        let s1 = (s0 + bl.kc).min(sh.ks);
                        pack_a_block(abuf, apl, sh, ip0, ip1, s0, s1, asrc.0, a_rs, a_cs, sums);
                        let load_c = accumulate || s0 > 0;
                        // Bias/relu belong to the finished sum only, never to partial sums
                        // that a later k block reloads.
                        let epi_here = (epi_active && s1 == sh.ks).then_some(&epi);
                        for jp in jp0..jp1 {
                            let bpanel = bpk.0.add(jp * pl + s0 * LINES_PER_STEP);
                            for ip in ip0..ip1 {
                                // Warm the next block's C lines while this one computes:
                                // otherwise tile stores/loads stall on DRAM round trips.
                                let (ni, nj) = if ip + 1 < ip1 {
                                    (ip + 1, jp)
                                } else {
                                    (ip0, jp + 1)
                                };
                                if nj < jp1 {
                                    out.prefetch_block(ni * PANEL, nj * PANEL);
                                }
                                let apanel = abuf.as_ptr().add((ip - ip0) * apl);
                                block_32x32(
                                    &out,
                                    ip * PANEL,
                                    jp * PANEL,
                                    apanel,
                                    bpanel,
                                    s1 - s0,
                                    load_c,
                                    epi_here,
                                    &mut scratch,
                                );
                            }
                        }
                        s0 = s1;
                    }
                }
                asm!("tilerelease", options(nostack, nomem));
            });
        };
        run_workers(max_workers.min(tasks), &work);

        if bbuf.len() <= B_CACHE_MAX_LINES {
            // A nested call on this thread (rayon may run other jobs while we wait) took an
            // empty buffer, so there is nothing to clobber here.
            B_BUF.with(|c| {
                if let Ok(mut slot) = c.try_borrow_mut() {
                    *slot = bbuf;
                }
            });
        }
    }

    struct Blocks {
        /// A panels (32 rows each) per task.
        mc: usize,
        /// Number of contiguous column ranges the B panels are split into.
        n_splits: usize,
        /// k steps (32 each) per k block.
        kc: usize,
    }

    /// k is blocked so one B panel (32 cols x kc, 64 KiB) stays near L1 and the task's A
    /// block (mc x kc, <= 1 MiB) in L2. Tasks are whole row blocks so A is packed once;
    /// columns are split only when there are too few row blocks to keep workers busy.
    fn choose_blocks(
        sh: &Shape,
        m_panels: usize,
        n_panels: usize,
        workers: usize,
        a_transposed: bool,
    ) -> Blocks {
        // Measured on the target box: kc = 1024 beat 512 and 768 (fewer C round trips
        // outweigh the B panel spilling from L1 to L2). Don't split k below 1.5 blocks.
        let kc = if sh.ks <= 48 { sh.ks } else { 32 };
        let panel_bytes = kc * LINES_PER_STEP * 64;
        let mut mc = ((1usize << 20) / panel_bytes).clamp(1, 16).min(m_panels);
        // A given transposed (k-major, as in dW = dY^T X) is expensive to pack (in-register
        // transposes) and every column split packs it again: with long k (several k
        // blocks, so each task is long anyway) aim for one task per worker instead of three.
        let want = if a_transposed && sh.ks >= 4 * kc {
            workers
        } else {
            3 * workers
        };
        // Prefer smaller row blocks down to 4 panels (128 rows) before splitting columns.
        while m_panels.div_ceil(mc) < want && mc > 4 {
            mc = mc.div_ceil(2);
        }
        let m_blocks = m_panels.div_ceil(mc);
        let n_splits = if m_blocks >= want {
            1
        } else {
            want.div_ceil(m_blocks).min(n_panels)
        };
        Blocks { mc, n_splits, kc }
    }

    /// Destination matrix view.
    struct Out {
        dst: *mut f32,
        rs: isize,
        cs: isize,
        m: usize,
        n: usize,
    }

    impl Out {
        /// Offset of element (i, j) from `dst`.
        #[inline(always)]
        fn off(&self, i: usize, j: usize) -> isize {
            i as isize * self.rs + j as isize * self.cs
        }

        #[inline(always)]
        unsafe fn at(&self, i: usize, j: usize) -> *mut f32 {
            self.dst.offset(self.off(i, j))
        }

        /// prefetchw every cache line of the 32x32 block at (i0, j0) (unit column stride only).
        #[inline(always)]
        unsafe fn prefetch_block(&self, i0: usize, j0: usize) {
            if self.cs != 1 || i0 >= self.m || j0 >= self.n {
                return;
            }
            let rows = (self.m - i0).min(PANEL);
            let last = (self.n - j0).min(PANEL) - 1;
            for r in 0..rows {
                let p = self.at(i0 + r, j0);
                // Each distinct cache line of the (<= 128-byte) row once: 2 lines when the
                // row is 64-byte aligned, 3 otherwise.
                let first = p as usize & !63;
                let end = p.add(last) as usize;
                let mut line = first;
                while line <= end {
                    asm!("prefetchw [{}]", in(reg) line, options(nostack, readonly, preserves_flags));
                    line += 64;
                }
            }
        }
    }

    // ---- tile register helpers (the register number is part of the mnemonic) ----

    macro_rules! per_acc {
        ($t:expr, $tmpl:literal, $($args:tt)*) => {
            match $t {
                0 => asm!(concat!($tmpl, "tmm0"), $($args)*),
                1 => asm!(concat!($tmpl, "tmm1"), $($args)*),
                2 => asm!(concat!($tmpl, "tmm2"), $($args)*),
                _ => asm!(concat!($tmpl, "tmm3"), $($args)*),
            }
        };
    }

    #[inline(always)]
    unsafe fn acc_zero(t: usize) {
        per_acc!(t, "tilezero ", options(nostack, nomem));
    }

    #[inline(always)]
    unsafe fn acc_load(t: usize, p: *const f32, stride_bytes: isize) {
        match t {
            0 => {
                asm!("tileloadd tmm0, [{p} + {s}*1]", p = in(reg) p, s = in(reg) stride_bytes, options(nostack, readonly))
            }
            1 => {
                asm!("tileloadd tmm1, [{p} + {s}*1]", p = in(reg) p, s = in(reg) stride_bytes, options(nostack, readonly))
            }
            2 => {
                asm!("tileloadd tmm2, [{p} + {s}*1]", p = in(reg) p, s = in(reg) stride_bytes, options(nostack, readonly))
            }
            _ => {
                asm!("tileloadd tmm3, [{p} + {s}*1]", p = in(reg) p, s = in(reg) stride_bytes, options(nostack, readonly))
            }
        }
    }

    #[inline(always)]
    unsafe fn acc_store(t: usize, p: *mut f32, stride_bytes: isize) {
        match t {
            0 => {
                asm!("tilestored [{p} + {s}*1], tmm0", p = in(reg) p, s = in(reg) stride_bytes, options(nostack))
            }
            1 => {
                asm!("tilestored [{p} + {s}*1], tmm1", p = in(reg) p, s = in(reg) stride_bytes, options(nostack))
            }
            2 => {
                asm!("tilestored [{p} + {s}*1], tmm2", p = in(reg) p, s = in(reg) stride_bytes, options(nostack))
            }
            _ => {
                asm!("tilestored [{p} + {s}*1], tmm3", p = in(reg) p, s = in(reg) stride_bytes, options(nostack))
            }
        }
    }

    /// One f32 16x16 tile per accumulator, so all four can be stored before any is read back
    /// (reading a tile right after its own tilestored would wait on that store).
    #[repr(C, align(64))]
    struct Scratch([f32; 1024]);

    /// Epilogue as the worker tasks see it; `bias` and `mask` are null when there is none
    /// (`mask` has dst's strides).
    struct Epi {
        bias: *const f32,
        relu: bool,
        mask: *const f32,
    }

    impl Epi {
        /// `v` of column `j` at offset `off` from dst, finished.
        #[inline(always)]
        unsafe fn apply(&self, v: f32, j: usize, off: isize) -> f32 {
            let v = if self.bias.is_null() {
                v
            } else {
                v + *self.bias.add(j)
            };
            let v = if self.relu { super::relu(v) } else { v };
            if self.mask.is_null() || *self.mask.offset(off) > 0.0 {
                v
            } else {
                0.0
            }
        }
    }

    /// dst rows 0..16 (16 unit-stride f32 each, row stride `rs` elements) = epilogue(src rows,
    /// stride 16). `bias` is null or points at this tile's 16 bias values; `mask` is null or
    /// this tile's mask (rows at stride `rs`): values where it is not > 0 are stored as 0.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn epi_copy_tile(
        src: *const f32,
        dst: *mut f32,
        rs: isize,
        bias: *const f32,
        relu: bool,
        mask: *const f32,
    ) {
        let bv = if bias.is_null() {
            _mm512_setzero_ps()
        } else {
            _mm512_loadu_ps(bias)
        };
        let zero = _mm512_setzero_ps();
        for r in 0..16 {
            let mut v = _mm512_load_ps(src.add(r * 16));
            if !bias.is_null() {
                v = _mm512_add_ps(v, bv);
            }
            if relu {
                // max(v, 0) returns the second operand for NaN, like `super::relu`.
                v = _mm512_max_ps(v, zero);
            }
            if !mask.is_null() {
                let y = _mm512_loadu_ps(mask.offset(r as isize * rs));
                v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(y, zero), v);
            }
            _mm512_storeu_ps(dst.offset(r as isize * rs), v);
        }
    }

    /// One 32x32 output block at (i0, j0): tmm0..3 = rows {0-15, 16-31} x cols {0-15, 16-31}.
    /// Full tiles with unit column stride go straight between dst and the tile registers
    /// (through `scratch` on the way out when an epilogue applies); edge tiles and other
    /// layouts go through `scratch`. `epi` is Some only for the last k block.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn block_32x32(
        out: &Out,
        i0: usize,
        j0: usize,
        apanel: *const Line,
        bpanel: *const Line,
        steps: usize,
        load_c: bool,
        epi: Option<&Epi>,
        scratch: &mut Scratch,
    ) {
        let stride_bytes = out.rs.wrapping_mul(4);
        // Per accumulator: (row0, col0, rows, cols, direct)
        let mut geo = [(0usize, 0usize, 0usize, 0usize, false); 4];
        for (t, g) in geo.iter_mut().enumerate() {
            let r0 = i0 + (t >> 1) * 16;
            let c0 = j0 + (t & 1) * 16;
            let rows = out.m.saturating_sub(r0).min(16);
            let cols = out.n.saturating_sub(c0).min(16);
            let direct = out.cs == 1 && rows == 16 && cols == 16;
            *g = (r0, c0, rows, cols, direct);
            if direct && load_c {
                acc_load(t, out.at(r0, c0), stride_bytes);
            } else {
                acc_zero(t);
            }
        }

        microkernel(apanel, bpanel, steps);

        let sp = scratch.0.as_mut_ptr();
        // Store every tile that needs post-processing first, then process: the tilestoreds
        // drain back to back instead of each copy loop waiting on its own store. With an
        // epilogue, full tiles also go via scratch (dst written once, by the vector copy):
        // measured ~3% over the bare GEMM vs ~9% for tilestored to dst + in-place fix-up.
        for (t, &(r0, c0, rows, cols, direct)) in geo.iter().enumerate() {
            if direct && epi.is_none() {
                acc_store(t, out.at(r0, c0), stride_bytes);
            } else if rows > 0 && cols > 0 {
                acc_store(t, sp.add(t * 256), 64);
            }
        }
        for (t, &(r0, c0, rows, cols, direct)) in geo.iter().enumerate() {
            let tile = sp.add(t * 256);
            if direct {
                if let Some(e) = epi {
                    let bias = if e.bias.is_null() {
                        e.bias
                    } else {
                        e.bias.add(c0)
                    };
                    let mask = if e.mask.is_null() {
                        e.mask
                    } else {
                        e.mask.offset(out.off(r0, c0))
                    };
                    epi_copy_tile(tile, out.at(r0, c0), out.rs, bias, e.relu, mask);
                }
            } else if rows > 0 && cols > 0 {
                for r in 0..rows {
                    for c in 0..cols {
                        let d = out.at(r0 + r, c0 + c);
                        let s = *tile.add(r * 16 + c);
                        let v = if load_c { *d + s } else { s };
                        *d = match epi {
                            Some(e) => e.apply(v, c0 + c, out.off(r0 + r, c0 + c)),
                            None => v,
                        };
                    }
                }
            }
        }
    }

    /// tmm0..3 += A(32 x 32*steps) * B(32*steps x 32), panels in the packed layout:
    /// per k-step, tile for rows/cols 0-15 then tile for 16-31, 1 KiB each.
    #[inline(always)]
    unsafe fn microkernel(apanel: *const Line, bpanel: *const Line, steps: usize) {
        debug_assert!(steps > 0);
        asm!(
            "2:",
            "tileloadd tmm4, [{a} + {s}*1]",
            "tileloadd tmm6, [{b} + {s}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{b} + {s}*1 + {half}]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a} + {s}*1 + {half}]",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a}, {step}",
            "add {b}, {step}",
            "dec {n}",
            "jnz 2b",
            a = inout(reg) apanel => _,
            b = inout(reg) bpanel => _,
            n = inout(reg) steps => _,
            s = in(reg) 64usize,
            half = const HALF_BYTES,
            step = const STEP_BYTES,
            options(nostack, readonly),
        );
    }

    // ---- packing ----
    //
    // Interior 16x32 tiles with a unit stride on either axis take AVX512-BF16 fast paths
    // (vcvtne2ps2bf16 rounds to nearest even like `bf16_bits`; it also flushes denormals,
    // which tdpbf16ps would do anyway). Edge tiles and general strides use the scalar path.

    /// 32 consecutive f32 (16 at `lo`, 16 at `hi`) -> 32 bf16, `lo` in the low half.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn cvt32(lo: *const f32, hi: *const f32) -> __m512i {
        cvt_pair(_mm512_loadu_ps(lo), _mm512_loadu_ps(hi))
    }

    /// `cvt32` of values already loaded.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn cvt_pair(lo: __m512, hi: __m512) -> __m512i {
        std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo))
    }

    /// Word permutation turning [x0..x15 | y0..y15] into [x0 y0 x1 y1 ...], i.e. VNNI pairs.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn interleave_idx() -> __m512i {
        const IDX: [u16; 32] = {
            let mut t = [0u16; 32];
            let mut c = 0;
            while c < 16 {
                t[2 * c] = c as u16;
                t[2 * c + 1] = 16 + c as u16;
                c += 1;
            }
            t
        };
        _mm512_loadu_si512(IDX.as_ptr() as *const _)
    }

    /// In-register transpose of a 16x16 matrix of 32-bit elements (v[i] = row i).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn transpose16(v: &mut [__m512i; 16]) {
        // 32-bit interleave of row pairs, then 64-bit: b[4i + c] lane L = rows 4i..4i+3,
        // column 4L + c.
        let mut a = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            a[2 * i] = _mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]);
            a[2 * i + 1] = _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]);
        }
        let mut b = [_mm512_setzero_si512(); 16];
        for i in 0..4 {
            b[4 * i] = _mm512_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
            b[4 * i + 1] = _mm512_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
            b[4 * i + 2] = _mm512_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
            b[4 * i + 3] = _mm512_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
        }
        // Gather lane L of b[c], b[4+c], b[8+c], b[12+c] into output row 4L + c.
        for c in 0..4 {
            let e0 = _mm512_shuffle_i32x4::<0x44>(b[c], b[4 + c]);
            let e1 = _mm512_shuffle_i32x4::<0xEE>(b[c], b[4 + c]);
            let f0 = _mm512_shuffle_i32x4::<0x44>(b[8 + c], b[12 + c]);
            let f1 = _mm512_shuffle_i32x4::<0xEE>(b[8 + c], b[12 + c]);
            v[c] = _mm512_shuffle_i32x4::<0x88>(e0, f0);
            v[4 + c] = _mm512_shuffle_i32x4::<0xDD>(e0, f0);
            v[8 + c] = _mm512_shuffle_i32x4::<0x88>(e1, f1);
            v[12 + c] = _mm512_shuffle_i32x4::<0xDD>(e1, f1);
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store_tile(tile: &mut [Line], v: &[__m512i; 16]) {
        for (line, x) in tile.iter_mut().zip(v) {
            _mm512_store_si512(line.0.as_mut_ptr() as *mut _, *x);
        }
    }

    /// Pack the 16x32 A tile at rows r0.., k k0.. as 16 lines of 32 bf16 (row-major);
    /// rows >= m and k >= sh.k are zero. With a non-null `sums` (A's row sums at row r0),
    /// also adds each of the tile's rows' sum of its f32 values, in k order, from the loads
    /// the packing makes anyway.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn pack_a_tile(
        tile: &mut [Line],
        sh: &Shape,
        r0: usize,
        k0: usize,
        a: *const f32,
        rs: isize,
        cs: isize,
        sums: *mut f32,
    ) {
        let full = r0 + 16 <= sh.m && k0 + KSTEP <= sh.k;
        if full && cs == 1 {
            for (r, line) in tile.iter_mut().enumerate() {
                let src = a.offset((r0 + r) as isize * rs + k0 as isize);
                let (lo, hi) = (_mm512_loadu_ps(src), _mm512_loadu_ps(src.add(16)));
                _mm512_store_si512(line.0.as_mut_ptr() as *mut _, cvt_pair(lo, hi));
                if !sums.is_null() {
                    let mut s = *sums.add(r);
                    for x in std::mem::transmute::<[__m512; 2], [f32; 32]>([lo, hi]) {
                        s += x;
                    }
                    *sums.add(r) = s;
                }
            }
        } else if full && rs == 1 {
            // Column-major A: v[q] holds rows 0..15 of the k pair (2q, 2q+1) as 32-bit
            // pairs; transposing gives one 32-bf16 row per line.
            let perm = interleave_idx();
            let mut v = [_mm512_setzero_si512(); 16];
            let mut acc = _mm512_setzero_ps();
            for (q, x) in v.iter_mut().enumerate() {
                let c0 = a.offset((k0 + 2 * q) as isize * cs + r0 as isize);
                let (even, odd) = (_mm512_loadu_ps(c0), _mm512_loadu_ps(c0.offset(cs)));
                *x = _mm512_permutexvar_epi16(perm, cvt_pair(even, odd));
                acc = _mm512_add_ps(_mm512_add_ps(acc, even), odd);
            }
            transpose16(&mut v);
            store_tile(tile, &v);
            if !sums.is_null() {
                _mm512_storeu_ps(sums, _mm512_add_ps(_mm512_loadu_ps(sums), acc));
            }
        } else {
            for (r, line) in tile.iter_mut().enumerate() {
                let row = r0 + r;
                let mut s = 0f32;
                for e in 0..32 {
                    let kk = k0 + e;
                    line.0[e] = if row < sh.m && kk < sh.k {
                        let x = *a.offset(row as isize * rs + kk as isize * cs);
                        s += x;
                        bf16_bits(x)
                    } else {
                        0
                    };
                }
                if !sums.is_null() && row < sh.m {
                    *sums.add(r) += s;
                }
            }
        }
    }

    /// Pack A panels ip0..ip1 (32 rows each), k steps s0..s1, into `out` as
    /// [panel (stride `apl` lines)][k-step][half][16 rows][32 bf16]; with a non-null `sums`
    /// (m values), add the block's row sums to it.
    #[allow(clippy::too_many_arguments)]
    unsafe fn pack_a_block(
        out: &mut [Line],
        apl: usize,
        sh: &Shape,
        ip0: usize,
        ip1: usize,
        s0: usize,
        s1: usize,
        a: *const f32,
        rs: isize,
        cs: isize,
        sums: *mut f32,
    ) {
        let mut one = |ip: usize, s: usize, half: usize| {
            let at = (ip - ip0) * apl + (s - s0) * LINES_PER_STEP + half * 16;
            let r0 = ip * PANEL + half * 16;
            // Rows past m are padding: a full tile's sums go in 16 at a time, so only a tile
            // inside m gets the pointer (partial tiles sum row by row, checking m).
            let tile_sums = if sums.is_null() || r0 >= sh.m {
                std::ptr::null_mut()
            } else {
                sums.add(r0)
            };
            pack_a_tile(
                &mut out[at..at + 16],
                sh,
                r0,
                s * KSTEP,
                a,
                rs,
                cs,
                tile_sums,
            );
        };
        // Walk the source along its contiguous axis: k-contiguous rows panel by panel,
        // otherwise k-step by k-step across all panels (touching 32 source rows at a time
        // instead of hopping over hundreds of pages per tile).
        if cs == 1 {
            for ip in ip0..ip1 {
                for s in s0..s1 {
                    one(ip, s, 0);
                    one(ip, s, 1);
                }
            }
        } else {
            for s in s0..s1 {
                for ip in ip0..ip1 {
                    one(ip, s, 0);
                    one(ip, s, 1);
                }
            }
        }
    }

    /// Pack the B tile at columns c0..c0+16, k k0..k0+32 in VNNI form: 16 lines of
    /// [16 cols][2 bf16 (k, k+1)]; cols >= n and k >= sh.k are zero.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn pack_b_tile(
        tile: &mut [Line],
        sh: &Shape,
        c0: usize,
        k0: usize,
        b: *const f32,
        rs: isize,
        cs: isize,
    ) {
        let full = c0 + 16 <= sh.n && k0 + KSTEP <= sh.k;
        if full && cs == 1 {
            let perm = interleave_idx();
            for (p, line) in tile.iter_mut().enumerate() {
                let r0 = b.offset((k0 + 2 * p) as isize * rs + c0 as isize);
                let x = _mm512_permutexvar_epi16(perm, cvt32(r0, r0.offset(rs)));
                _mm512_store_si512(line.0.as_mut_ptr() as *mut _, x);
            }
        } else if full && rs == 1 {
            // k-contiguous columns (B given transposed): v[c] holds column c's 32 k values,
            // i.e. its 16 (k, k+1) pairs; transposing gives one pair-row per line.
            let mut v = [_mm512_setzero_si512(); 16];
            for (c, x) in v.iter_mut().enumerate() {
                let src = b.offset((c0 + c) as isize * cs + k0 as isize);
                *x = cvt32(src, src.add(16));
            }
            transpose16(&mut v);
            store_tile(tile, &v);
        } else {
            for (p, line) in tile.iter_mut().enumerate() {
                for c in 0..16 {
                    let col = c0 + c;
                    for t in 0..2 {
                        let kk = k0 + 2 * p + t;
                        line.0[2 * c + t] = if col < sh.n && kk < sh.k {
                            bf16_bits(*b.offset(kk as isize * rs + col as isize * cs))
                        } else {
                            0
                        };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn f(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
    }

    /// A strided matrix living inside a buffer whose unused slots hold a sentinel.
    struct Mat {
        buf: Vec<f32>,
        off: isize,
        rs: isize,
        cs: isize,
        rows: usize,
        cols: usize,
    }

    const SENTINEL: f32 = 12345.0;

    impl Mat {
        /// mode 0: row-major padded, 1: column-major padded, 2: interleaved (cs=2),
        /// 3: row-major with negative row stride.
        fn new(rng: &mut Rng, rows: usize, cols: usize, mode: usize) -> Mat {
            let pad = rng.below(3) as isize;
            let (rs, cs) = match mode {
                0 => (cols as isize + pad, 1),
                1 => (1, rows as isize + pad),
                2 => (2 * cols as isize + 1 + pad, 2),
                _ => (-(cols as isize + pad), 1),
            };
            let span = |r: usize, c: usize| -> (isize, isize) {
                let mut lo = 0isize;
                let mut hi = 0isize;
                for &(i, j) in &[
                    (0, 0),
                    (r.saturating_sub(1), 0),
                    (0, c.saturating_sub(1)),
                    (r.saturating_sub(1), c.saturating_sub(1)),
                ] {
                    let o = i as isize * rs + j as isize * cs;
                    lo = lo.min(o);
                    hi = hi.max(o);
                }
                (lo, hi)
            };
            let (lo, hi) = span(rows, cols);
            let len = (hi - lo + 1 + 8) as usize;
            let mut m = Mat {
                buf: vec![SENTINEL; len],
                off: -lo + 4,
                rs,
                cs,
                rows,
                cols,
            };
            for i in 0..rows {
                for j in 0..cols {
                    let v = rng.f();
                    let idx = m.idx(i, j);
                    m.buf[idx] = v;
                }
            }
            m
        }
        fn idx(&self, i: usize, j: usize) -> usize {
            (self.off + i as isize * self.rs + j as isize * self.cs) as usize
        }
        fn get(&self, i: usize, j: usize) -> f32 {
            self.buf[self.idx(i, j)]
        }
        fn ptr(&self) -> *const f32 {
            unsafe { self.buf.as_ptr().offset(self.off) }
        }
        fn ptr_mut(&mut self) -> *mut f32 {
            unsafe { self.buf.as_mut_ptr().offset(self.off) }
        }
        fn in_matrix(&self) -> Vec<bool> {
            let mut used = vec![false; self.buf.len()];
            for i in 0..self.rows {
                for j in 0..self.cols {
                    used[self.idx(i, j)] = true;
                }
            }
            used
        }
    }

    type GemmFn = unsafe fn(
        usize,
        usize,
        usize,
        *mut f32,
        isize,
        isize,
        bool,
        *const f32,
        isize,
        isize,
        *const f32,
        isize,
        isize,
        usize,
    );

    fn check(rng: &mut Rng, f: GemmFn, m: usize, n: usize, k: usize, threads: usize) {
        let (ma, mb, md) = (rng.below(4), rng.below(4), rng.below(4));
        let a = Mat::new(rng, m, k, ma);
        let b = Mat::new(rng, k, n, mb);
        let mut d = Mat::new(rng, m, n, md);
        let accumulate = rng.below(2) == 1;
        let d0 = d.buf.clone();
        let mut refv = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = if accumulate { d.get(i, j) as f64 } else { 0.0 };
                for p in 0..k {
                    s += bf16_round(a.get(i, p)) as f64 * bf16_round(b.get(p, j)) as f64;
                }
                refv[i * n + j] = s;
            }
        }
        unsafe {
            f(
                m,
                n,
                k,
                d.ptr_mut(),
                d.rs,
                d.cs,
                accumulate,
                a.ptr(),
                a.rs,
                a.cs,
                b.ptr(),
                b.rs,
                b.cs,
                threads,
            );
        }
        let ctx = format!(
            "m={m} n={n} k={k} acc={accumulate} a=({},{}) b=({},{}) d=({},{}) threads={threads}",
            a.rs, a.cs, b.rs, b.cs, d.rs, d.cs
        );
        for i in 0..m {
            for j in 0..n {
                let r = refv[i * n + j];
                let g = d.get(i, j) as f64;
                assert!(
                    (g - r).abs() <= 1e-3 * (1.0 + r.abs()),
                    "({i},{j}) got {g} want {r}: {ctx}"
                );
            }
        }
        let used = d.in_matrix();
        for (idx, &u) in used.iter().enumerate() {
            if !u {
                assert_eq!(
                    d.buf[idx].to_bits(),
                    d0[idx].to_bits(),
                    "wrote outside dst: {ctx}"
                );
            }
        }
    }

    const SIZES: [usize; 12] = [0, 1, 3, 15, 16, 17, 31, 32, 33, 64, 100, 257];
    const KS: [usize; 8] = [0, 1, 3, 17, 32, 33, 100, 257];

    fn sweep(f: GemmFn, seed: u64) {
        let mut rng = Rng(seed);
        for &m in &SIZES {
            for &n in &SIZES {
                for &k in &KS {
                    let threads = 1 + rng.below(3);
                    check(&mut rng, f, m, n, k, threads);
                }
            }
        }
    }

    #[test]
    fn gemm_small_shapes() {
        sweep(gemm_bf16, 0x1234_5678_9abc_def1);
    }

    #[test]
    fn fallback_small_shapes() {
        sweep(gemm_bf16_fallback, 0x0fed_cba9_8765_4321);
    }

    #[test]
    fn gemm_big_shapes() {
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        // Includes k > 768 (k split into several blocks) and many tasks per worker.
        for &(m, n, k) in &[
            (300, 513, 1100),
            (1000, 97, 640),
            (67, 1500, 129),
            (640, 640, 64),
            (129, 65, 2049),
        ] {
            for threads in [1, 2, 4] {
                check(&mut rng, gemm_bf16, m, n, k, threads);
            }
        }
    }

    #[test]
    fn transposed_a_long_k() {
        // dW-shaped: A given transposed (unit row stride) with k >= 4 k blocks takes the
        // one-task-per-worker blocking in choose_blocks; edges in m and n included.
        let mut rng = Rng(0x0bad_cafe_1234_5678);
        for &(m, n, k, threads) in &[(100, 70, 4500, 2), (161, 33, 4097, 3), (64, 96, 5000, 1)] {
            for _ in 0..2 {
                let a = Mat::new(&mut rng, m, k, 1);
                let b = Mat::new(&mut rng, k, n, 0);
                let mut d = Mat::new(&mut rng, m, n, 0);
                let accumulate = rng.below(2) == 1;
                let mut refv = vec![0f64; m * n];
                for i in 0..m {
                    for j in 0..n {
                        let mut s = if accumulate { d.get(i, j) as f64 } else { 0.0 };
                        for p in 0..k {
                            s += bf16_round(a.get(i, p)) as f64 * bf16_round(b.get(p, j)) as f64;
                        }
                        refv[i * n + j] = s;
                    }
                }
                unsafe {
                    gemm_bf16(
                        m,
                        n,
                        k,
                        d.ptr_mut(),
                        d.rs,
                        d.cs,
                        accumulate,
                        a.ptr(),
                        a.rs,
                        a.cs,
                        b.ptr(),
                        b.rs,
                        b.cs,
                        threads,
                    );
                }
                for i in 0..m {
                    for j in 0..n {
                        let (g, r) = (d.get(i, j) as f64, refv[i * n + j]);
                        assert!(
                            (g - r).abs() <= 2e-3 * (1.0 + r.abs()),
                            "({i},{j}) got {g} want {r}: m={m} n={n} k={k} acc={accumulate}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn amx_matches_fallback_exactly_shaped() {
        // Same inputs through both paths: results agree to f32 accumulation-order noise.
        let mut rng = Rng(42);
        let (m, n, k) = (77, 45, 300);
        let a: Vec<f32> = (0..m * k).map(|_| rng.f()).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.f()).collect();
        let mut c1 = vec![0.5f32; m * n];
        let mut c2 = c1.clone();
        unsafe {
            gemm_bf16(
                m,
                n,
                k,
                c1.as_mut_ptr(),
                n as isize,
                1,
                true,
                a.as_ptr(),
                k as isize,
                1,
                b.as_ptr(),
                n as isize,
                1,
                2,
            );
            gemm_bf16_fallback(
                m,
                n,
                k,
                c2.as_mut_ptr(),
                n as isize,
                1,
                true,
                a.as_ptr(),
                k as isize,
                1,
                b.as_ptr(),
                n as isize,
                1,
                2,
            );
        }
        for (x, y) in c1.iter().zip(&c2) {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    #[test]
    fn concurrent_calls_from_rayon_tasks() {
        // Several calls at once from pool threads: per-thread tile config and buffers must not
        // interfere (callers inside rayon may have their waits filled with other calls).
        use rayon::prelude::*;
        let results: Vec<bool> = (0..8u64)
            .into_par_iter()
            .map(|i| {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (i + 1));
                let (m, n, k) = (
                    40 + 7 * i as usize,
                    50 + 3 * i as usize,
                    70 + 11 * i as usize,
                );
                check(&mut rng, gemm_bf16, m, n, k, 2);
                true
            })
            .collect();
        assert!(results.iter().all(|&x| x));
    }

    /// Runs gemm_bf16_epilogue and gemm_bf16_fallback_epilogue on the same strided inputs and
    /// checks both against an f64 reference, each other, and untouched padding.
    #[allow(clippy::too_many_arguments)]
    fn check_epi(
        rng: &mut Rng,
        m: usize,
        n: usize,
        k: usize,
        threads: usize,
        with_bias: bool,
        relu_on: bool,
        accumulate: bool,
        mask_on: bool,
    ) {
        let (ma, mb, md) = (rng.below(4), rng.below(4), rng.below(4));
        let a = Mat::new(rng, m, k, ma);
        let b = Mat::new(rng, k, n, mb);
        let d = Mat::new(rng, m, n, md);
        // Offsets up to +-2 so relu has plenty of both signs whatever the sum's spread.
        let bias: Vec<f32> = (0..n).map(|_| 2.0 * rng.f()).collect();
        // A relu output laid out like dst: zeros and positive values.
        let mask: Vec<f32> = (0..d.buf.len()).map(|_| rng.f().max(0.0)).collect();
        let mask_at =
            |i: usize, j: usize| mask[(d.off + i as isize * d.rs + j as isize * d.cs) as usize];
        // A's row sums are added to values already there (as to a bias's gradient).
        let sums0: Vec<f32> = (0..m).map(|_| rng.f()).collect();
        let want_sums: Vec<f64> = (0..m)
            .map(|i| sums0[i] as f64 + (0..k).map(|p| a.get(i, p) as f64).sum::<f64>())
            .collect();
        let ep = Epilogue {
            bias: with_bias.then_some(bias.as_ptr()),
            relu: relu_on,
            mask: mask_on.then(|| unsafe { mask.as_ptr().offset(d.off) }),
            a_sums: None,
        };
        let mut refv = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = if accumulate { d.get(i, j) as f64 } else { 0.0 };
                for p in 0..k {
                    s += bf16_round(a.get(i, p)) as f64 * bf16_round(b.get(p, j)) as f64;
                }
                if with_bias {
                    s += bias[j] as f64;
                }
                if relu_on && s <= 0.0 {
                    s = 0.0;
                }
                if mask_on && mask_at(i, j) <= 0.0 {
                    s = 0.0;
                }
                refv[i * n + j] = s;
            }
        }
        let ctx = format!(
            "m={m} n={n} k={k} acc={accumulate} bias={with_bias} relu={relu_on} mask={mask_on} \
             a=({},{}) b=({},{}) d=({},{}) threads={threads}",
            a.rs, a.cs, b.rs, b.cs, d.rs, d.cs
        );
        let used = d.in_matrix();
        let mut outs = Vec::new();
        for f in [
            gemm_bf16_epilogue as EpiFn,
            gemm_bf16_fallback_epilogue as EpiFn,
        ] {
            let mut dd = Mat {
                buf: d.buf.clone(),
                off: d.off,
                rs: d.rs,
                cs: d.cs,
                rows: d.rows,
                cols: d.cols,
            };
            let mut sums = sums0.clone();
            let ep = Epilogue {
                a_sums: Some(sums.as_mut_ptr()),
                ..ep
            };
            unsafe {
                f(
                    m,
                    n,
                    k,
                    dd.ptr_mut(),
                    dd.rs,
                    dd.cs,
                    accumulate,
                    a.ptr(),
                    a.rs,
                    a.cs,
                    b.ptr(),
                    b.rs,
                    b.cs,
                    threads,
                    ep,
                );
            }
            for (i, (&got, &want)) in sums.iter().zip(&want_sums).enumerate() {
                assert!(
                    (got as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()) * (k as f64).sqrt(),
                    "a_sums[{i}] got {got} want {want}: {ctx}"
                );
            }
            for i in 0..m {
                for j in 0..n {
                    let r = refv[i * n + j];
                    let g = dd.get(i, j) as f64;
                    assert!(
                        (g - r).abs() <= 1e-3 * (1.0 + r.abs()),
                        "({i},{j}) got {g} want {r}: {ctx}"
                    );
                    if relu_on {
                        assert!(g >= 0.0, "relu output {g} < 0: {ctx}");
                    }
                }
            }
            for (idx, &u) in used.iter().enumerate() {
                if !u {
                    assert_eq!(
                        dd.buf[idx].to_bits(),
                        d.buf[idx].to_bits(),
                        "wrote outside dst: {ctx}"
                    );
                }
            }
            outs.push(dd);
        }
        for i in 0..m {
            for j in 0..n {
                let (x, y) = (outs[0].get(i, j), outs[1].get(i, j));
                assert!(
                    (x - y).abs() <= 1e-3 * (1.0 + y.abs()),
                    "({i},{j}) amx {x} vs fallback {y}: {ctx}"
                );
            }
        }
    }

    type EpiFn = unsafe fn(
        usize,
        usize,
        usize,
        *mut f32,
        isize,
        isize,
        bool,
        *const f32,
        isize,
        isize,
        *const f32,
        isize,
        isize,
        usize,
        Epilogue,
    );

    #[test]
    fn epilogue_small_shapes() {
        let mut rng = Rng(0x5151_a3a3_0f0f_7777);
        for &m in &SIZES {
            for &n in &SIZES {
                for &k in &KS {
                    // Every bias/relu/mask combination across the sweep, drawn so that
                    // none is tied to one k.
                    let combo = rng.below(8);
                    let (with_bias, relu_on, mask_on) =
                        (combo & 1 == 1, combo & 2 == 2, combo & 4 == 4);
                    let accumulate = rng.below(2) == 1;
                    let threads = 1 + rng.below(3);
                    check_epi(
                        &mut rng, m, n, k, threads, with_bias, relu_on, accumulate, mask_on,
                    );
                }
            }
        }
    }

    #[test]
    fn epilogue_several_k_blocks() {
        // k = 1600 and 2049 are split into 2 and 3 k blocks (1024 each, see choose_blocks);
        // 1100 stays one block. Bias/relu applied to a partial sum would be off by far more
        // than the tolerance (a whole bias, or a clipped negative partial sum).
        let mut rng = Rng(0x1357_9bdf_2468_ace0);
        let mut threads_i = 0usize;
        for &(m, n, k) in &[(300, 513, 1100), (129, 65, 2049), (97, 200, 1600)] {
            for combo in 0..16usize {
                let (with_bias, relu_on, accumulate, mask_on) = (
                    combo & 1 == 1,
                    combo & 2 == 2,
                    combo & 4 == 4,
                    combo & 8 == 8,
                );
                let threads = [1, 2, 4][threads_i % 3];
                threads_i += 1;
                check_epi(
                    &mut rng, m, n, k, threads, with_bias, relu_on, accumulate, mask_on,
                );
            }
        }
    }

    #[test]
    fn epilogue_default_matches_plain() {
        // gemm_bf16 must be exactly gemm_bf16_epilogue with the default (no-op) epilogue.
        let mut rng = Rng(7);
        let (m, n, k) = (70, 90, 1500);
        let a: Vec<f32> = (0..m * k).map(|_| rng.f()).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.f()).collect();
        let mut c1: Vec<f32> = (0..m * n).map(|_| rng.f()).collect();
        let mut c2 = c1.clone();
        unsafe {
            gemm_bf16(
                m,
                n,
                k,
                c1.as_mut_ptr(),
                n as isize,
                1,
                true,
                a.as_ptr(),
                k as isize,
                1,
                b.as_ptr(),
                1,
                k as isize,
                2,
            );
            gemm_bf16_epilogue(
                m,
                n,
                k,
                c2.as_mut_ptr(),
                n as isize,
                1,
                true,
                a.as_ptr(),
                k as isize,
                1,
                b.as_ptr(),
                1,
                k as isize,
                2,
                Epilogue::default(),
            );
        }
        assert!(c1.iter().zip(&c2).all(|(x, y)| x.to_bits() == y.to_bits()));
    }

    #[test]
    fn relu_nan_and_negative_zero() {
        assert_eq!(relu(f32::NAN).to_bits(), 0);
        assert_eq!(relu(-0.0).to_bits(), 0);
        assert_eq!(relu(-1.5), 0.0);
        assert_eq!(relu(2.5), 2.5);
    }

    #[test]
    fn rounding_is_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties to even (1.0).
        assert_eq!(bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(bf16_bits(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert!(bf16_round(f32::NAN).is_nan());
        assert_eq!(bf16_round(f32::INFINITY), f32::INFINITY);
    }

    #[test]
    fn reports_availability() {
        // Not an assertion about the machine; just exercises detection and its caching.
        let a = available();
        assert_eq!(a, available());
        eprintln!("amx available: {a}");
    }
}
