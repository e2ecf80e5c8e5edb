//! The AMX-BF16 kernel: blocking, the rayon tasks, the 32x32 microkernel on
//! tiles tmm0-7 and the fused epilogue as the last k block is stored.
//! Only built on x86-64 Linux (tile permission comes from `arch_prctl`, see
//! `detect`).

use super::super::super::shared::Shared;
use super::super::frame::{relu as relu_value, Prob};
use super::pack::{
    pack_a_block, pack_b_tile, Line, Shape, HALF_BYTES, KSTEP, LINES_PER_STEP, PANEL, STEP_BYTES,
    ZERO_LINE,
};
use std::arch::asm;
use std::arch::x86_64::*;
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// The AMX product for m, n, k > 0 (see `super::gemm_bf16`).
///
/// # Safety
/// AMX is usable in this process (`detect`, which also checked AVX-512F/BW/BF16 for the
/// packers); the contract of `super::gemm_bf16`, with m, n, k > 0.
pub(super) unsafe fn gemm(pr: &Prob, threads: usize) {
    // SAFETY: AMX and AVX-512F/BW/BF16 are usable (this function's contract), so the packers,
    // `ldtilecfg`/`tilerelease` and the tile code may run; each task configures the tiles of
    // its own thread (`tile_cfg`) before any tile instruction and releases them at the end.
    // Packing B: item (jp, s, half) writes the 16 lines at jp * pl + s * LINES_PER_STEP +
    // half * 16 < n_panels * pl <= bbuf.len(), each by exactly one item, so the `&mut`
    // slices are disjoint; `pack_b_tile` reads B inside its k x n range (the caller's
    // contract). Compute: each task packs A (inside its m x k range) into its own thread's
    // buffer, sized for `bl.mc` panels of `bl.kc` k steps, and reads the packed B after its
    // phase was joined; `bpanel`/`apanel` hold s1 - s0 >= 1 k steps; each task writes only
    // the dst elements (and `a_sums` rows) of its own row block x column range, which no
    // other task touches, and `prefetch_block` and `block_32x32` get blocks whose corner
    // lies inside dst (ip < m_panels, jp < n_panels).
    unsafe {
        let Prob {
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
        } = *pr;
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
            let bp = Shared::new(bbuf.as_mut_ptr());
            let bsrc = Shared::new(b);
            let next = AtomicUsize::new(0);
            let sh = &sh;
            let pack = || {
                let (bp, bsrc) = (bp, bsrc);
                let one = |jp: usize, s: usize, half: usize| {
                    // SAFETY: every (jp, s, half) tile is packed by exactly one item.
                    let at = jp * pl + s * LINES_PER_STEP + half * 16;
                    let tile = std::slice::from_raw_parts_mut(bp.get().add(at), 16);
                    pack_b_tile(
                        tile,
                        sh,
                        jp * PANEL + half * 16,
                        s * KSTEP,
                        bsrc.get(),
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
        let dp = Shared::new(dst);
        let asrc = Shared::new(a);
        let bpk = Shared::new(bbuf.as_ptr());
        let biasp = Shared::new(bias);
        let maskp = Shared::new(mask);
        let sumsp = Shared::new(a_sums);
        let sh_ref = &sh;
        let work = || {
            let (dp, asrc, bpk) = (dp, asrc, bpk);
            let (biasp, maskp, sumsp) = (biasp, maskp, sumsp);
            let sh = sh_ref;
            let epi = Epi {
                bias: biasp.get(),
                relu,
                mask: maskp.get(),
            };
            let epi_active = !epi.bias.is_null() || epi.relu || !epi.mask.is_null();
            let out = Out {
                dst: dp.get(),
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
                        0 => sumsp.get(),
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
                        pack_a_block(
                            abuf,
                            apl,
                            sh,
                            ip0,
                            ip1,
                            s0,
                            s1,
                            asrc.get(),
                            a_rs,
                            a_cs,
                            sums,
                        );
                        let load_c = accumulate || s0 > 0;
                        // Bias/relu belong to the finished sum only, never to partial sums
                        // that a later k block reloads.
                        let epi_here = (epi_active && s1 == sh.ks).then_some(&epi);
                        for jp in jp0..jp1 {
                            let bpanel = bpk.get().add(jp * pl + s0 * LINES_PER_STEP);
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

    /// The address of element (i, j).
    ///
    /// # Safety
    /// `i < m` and `j < n`, so the element lies inside the destination (whose m x n range
    /// `dst` covers, by `super::gemm_bf16`'s contract).
    #[inline(always)]
    unsafe fn at(&self, i: usize, j: usize) -> *mut f32 {
        // SAFETY: (i, j) is an element of dst (the caller's contract), so the offset stays
        // inside its allocation.
        unsafe { self.dst.offset(self.off(i, j)) }
    }

    /// prefetchw every cache line of the 32x32 block at (i0, j0) (unit column stride only).
    ///
    /// # Safety
    /// `self` describes a valid destination (every (i < m, j < n) element inside one
    /// allocation). Any (i0, j0) is fine: blocks outside m x n are skipped.
    #[inline(always)]
    unsafe fn prefetch_block(&self, i0: usize, j0: usize) {
        // SAFETY: only for i0 < m, j0 < n: the addresses formed are of elements
        // (i0 + r, j0) and (i0 + r, j0 + last) with r < rows, all inside dst; `prefetchw`
        // is a hint that never faults and writes nothing.
        unsafe {
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

/// Zeroes accumulator tile `t` (tmm0..3; any larger `t` means tmm3).
///
/// # Safety
/// AMX is usable and this thread's tiles are configured (`ldtilecfg` of `tile_cfg`).
#[inline(always)]
unsafe fn acc_zero(t: usize) {
    // SAFETY: `tilezero` touches no memory; the tiles are configured (the caller's
    // contract).
    unsafe {
        per_acc!(t, "tilezero ", options(nostack, nomem));
    }
}

/// Loads accumulator tile `t` (tmm0..3) with 16 rows of 16 f32: row r at
/// `p + r * stride_bytes` bytes.
///
/// # Safety
/// AMX is usable and this thread's tiles are configured (`tile_cfg`); those 16 rows of
/// 64 bytes are readable and not written concurrently.
#[inline(always)]
unsafe fn acc_load(t: usize, p: *const f32, stride_bytes: isize) {
    // SAFETY: `tileloadd` reads exactly the 16 rows of 64 bytes the caller's contract covers.
    unsafe {
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
}

/// Stores accumulator tile `t` (tmm0..3) as 16 rows of 16 f32: row r at
/// `p + r * stride_bytes` bytes.
///
/// # Safety
/// AMX is usable and this thread's tiles are configured (`tile_cfg`); those 16 rows of
/// 64 bytes are writable and no one else accesses them during the call.
#[inline(always)]
unsafe fn acc_store(t: usize, p: *mut f32, stride_bytes: isize) {
    // SAFETY: `tilestored` writes exactly the 16 rows of 64 bytes the caller's contract
    // covers.
    unsafe {
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
    ///
    /// # Safety
    /// `j < n` and `off` is the offset of an element (i, j) of dst, so the bias (n values)
    /// and the mask (dst's layout), when non-null, are read inside their ranges.
    #[inline(always)]
    unsafe fn apply(&self, v: f32, j: usize, off: isize) -> f32 {
        // SAFETY: the bias is read at j < n, the mask at an element of dst's range (the
        // caller's contract); null pointers are not read.
        unsafe {
            let v = if self.bias.is_null() {
                v
            } else {
                v + *self.bias.add(j)
            };
            let v = if self.relu { relu_value(v) } else { v };
            if self.mask.is_null() || *self.mask.offset(off) > 0.0 {
                v
            } else {
                0.0
            }
        }
    }
}

/// dst rows 0..16 (16 unit-stride f32 each, row stride `rs` elements) = epilogue(src rows,
/// stride 16). `bias` is null or points at this tile's 16 bias values; `mask` is null or
/// this tile's mask (rows at stride `rs`): values where it is not > 0 are stored as 0.
///
/// # Safety
/// The CPU has AVX-512F; `src` is 64-byte aligned with 16 * 16 readable floats; dst's 16
/// rows of 16 floats are writable and no one else accesses them during the call; `bias`
/// is null or has 16 readable floats; `mask` is null or has 16 rows of 16 readable floats
/// at stride `rs`.
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
    // SAFETY: rows r < 16 only: the aligned loads read src's rows (64-byte aligned, 16
    // floats apart), the unaligned ones the bias and mask rows, the stores dst's rows, all
    // inside the contract's ranges; null bias and mask are not read.
    unsafe {
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
}

/// One 32x32 output block at (i0, j0): tmm0..3 = rows {0-15, 16-31} x cols {0-15, 16-31}.
/// Full tiles with unit column stride go straight between dst and the tile registers
/// (through `scratch` on the way out when an epilogue applies); edge tiles and other
/// layouts go through `scratch`. `epi` is Some only for the last k block.
///
/// # Safety
/// AMX and AVX-512F are usable and this thread's tiles are configured (`tile_cfg`); `out`
/// describes a valid destination with i0 < m, j0 < n, whose elements in rows i0..i0+32,
/// columns j0..j0+32 (those inside m x n) no one else accesses during the call; `apanel`
/// and `bpanel` hold `steps >= 1` k steps of the packed layout (`LINES_PER_STEP` lines
/// each); `epi`'s bias is null or has n values and its mask null or dst's layout.
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
    // SAFETY: the contract above. Direct tiles (unit column stride, all 16 x 16 inside
    // m x n) are loaded from and stored to dst's 16 rows at the row stride, and copied out
    // by `epi_copy_tile` with their 16 bias values and mask rows; every other tile goes
    // through its own 1 KiB slot of `scratch` (64-byte aligned, 4 x 256 floats) and then,
    // element by element, to dst's rows < rows and columns < cols, i.e. inside m x n.
    unsafe {
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
}

/// tmm0..3 += A(32 x 32*steps) * B(32*steps x 32), panels in the packed layout:
/// per k-step, tile for rows/cols 0-15 then tile for 16-31, 1 KiB each.
///
/// # Safety
/// AMX is usable and this thread's tiles are configured (`tile_cfg`); `steps >= 1` (only
/// debug-asserted: 0 would run the loop 2^64 times); `apanel` and `bpanel` each have
/// `steps * STEP_BYTES` readable bytes not written during the call. tmm4-7 are clobbered.
#[inline(always)]
unsafe fn microkernel(apanel: *const Line, bpanel: *const Line, steps: usize) {
    // SAFETY: the loop runs `steps` times and reads, per step, the two 1 KiB tiles of each
    // panel at `+0` and `+HALF_BYTES` (64-byte rows), then advances both by STEP_BYTES: all
    // inside the panels' `steps * STEP_BYTES` bytes. The tile registers it changes are not
    // ones the compiler allocates.
    unsafe {
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
}
