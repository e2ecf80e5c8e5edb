//! Packed B operands kept while their memory stays unchanged: a multiply
//! whose B lies in memory the caller declared unchanged (`with_fixed_b`: the
//! weights, while one evaluation batch runs its chunks, or for a whole run
//! of a model that only evaluates) packs B once, the first time, and every
//! later multiply by the same B on this thread reads those panels instead
//! of packing them again.
//!
//! Why: evaluation runs a batch in chunks of a few hundred rows on
//! single-threaded engines (`runtime::row_parallel`), and each chunk's
//! multiplies packed every weight again, as much packing as for the chunk's
//! activations or more (a PLE's 256 -> 6158 layer: 1.6 M weight values
//! against 131 k input values per 512-row chunk).
//!
//! The panels are laid out as the frame's first driver walks them (N blocks,
//! then K blocks, then NR-wide panels; `offset`), for the blocking the driver
//! computes from the problem, which is part of the key.

use std::any::TypeId;
use std::cell::RefCell;
use std::collections::HashMap;

use super::super::shared::Shared;
use super::frame::{aligned, pack_b_block, Backend, Prob};

/// What identifies one packing of B: the backend, B's place and strides, the
/// problem's k and n and the blocking.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    backend: TypeId,
    b: usize,
    brs: isize,
    bcs: isize,
    k: usize,
    n: usize,
    kc: usize,
    nc: usize,
}

/// Memory declared unchanged (byte address ranges, `[start, end)`) and the
/// B operands packed from it: what a scope (`with_fixed_b`) reads, kept by
/// its owner between scopes for as long as that memory stays unchanged.
pub(crate) struct FixedB {
    ranges: Vec<(usize, usize)>,
    /// Each packing's panels, from the 64-byte aligned start `aligned` gives.
    packed: HashMap<Key, Vec<f32>>,
}

impl FixedB {
    /// Nothing packed yet from `ranges`.
    pub(crate) fn new(ranges: Vec<(usize, usize)>) -> Self {
        Self {
            ranges,
            packed: HashMap::new(),
        }
    }
}

impl std::fmt::Debug for FixedB {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FixedB")
            .field("ranges", &self.ranges.len())
            .field("packed", &self.packed.len())
            .finish()
    }
}

thread_local! {
    static SCOPE: RefCell<Option<FixedB>> = const { RefCell::new(None) };
}

/// Puts the scope back in its owner's hands, and the outer one in place,
/// however `with_fixed_b` leaves.
struct Close<'a> {
    owner: &'a mut FixedB,
    outer: Option<FixedB>,
}

impl Drop for Close<'_> {
    fn drop(&mut self) {
        let outer = self.outer.take();
        if let Some(mine) = SCOPE.with(|s| s.replace(outer)) {
            *self.owner = mine;
        }
    }
}

/// Runs `f` with the memory of `fixed`'s ranges declared unchanged until
/// it returns: single-threaded multiplies on this thread whose B lies
/// inside one range pack it once, into `fixed`, and read it from there on
/// (in this scope and in later ones with the same `fixed`). The caller
/// keeps the promise, for as long as it keeps `fixed`; nothing checks it.
/// A scope opened inside another replaces it until it closes.
pub(crate) fn with_fixed_b<T>(fixed: &mut FixedB, f: impl FnOnce() -> T) -> T {
    let mine = std::mem::replace(fixed, FixedB::new(Vec::new()));
    let outer = SCOPE.with(|s| s.replace(Some(mine)));
    let _close = Close {
        owner: fixed,
        outer,
    };
    f()
}

/// The first and one-past-last byte addresses of B's `k x n` elements.
fn extent(pr: &Prob) -> Option<(usize, usize)> {
    if pr.brs < 0 || pr.bcs < 0 || pr.k == 0 || pr.n == 0 {
        return None;
    }
    let last = (pr.k - 1) * pr.brs as usize + (pr.n - 1) * pr.bcs as usize;
    let start = pr.b as usize;
    Some((start, start + (last + 1) * std::mem::size_of::<f32>()))
}

/// Whether a scope is open on this thread and B lies inside one of its
/// ranges.
pub(super) fn is_fixed(pr: &Prob) -> bool {
    let Some((lo, hi)) = extent(pr) else {
        return false;
    };
    SCOPE.with(|s| {
        s.try_borrow().is_ok_and(|s| {
            s.as_ref()
                .is_some_and(|s| s.ranges.iter().any(|&(a, b)| a <= lo && hi <= b))
        })
    })
}

/// Where the panels of N block `jc` (a multiple of the N block) and K block
/// `pc` start, in f32 slots from the first.
pub(super) fn offset<K: Backend>(k: usize, n: usize, nc: usize, jc: usize, pc: usize) -> usize {
    let npan = nc.min(n - jc).div_ceil(K::NR);
    jc * k + pc * npan * K::NR
}

/// B's panels for blocks of `kc` K steps and `nc` columns, packed on first
/// use in this thread's scope; None when no scope is open, B is not inside
/// it, or the scope is borrowed (a multiply inside a packer).
///
/// # Safety
/// As `Backend::pack_b_panel` for every panel of B (`pr` a valid problem, the CPU runs
/// `K`); the memory the scope declared unchanged stays unchanged while the scope is open.
/// The pointer stays valid until the scope closes.
pub(super) unsafe fn panels<K: Backend + 'static>(
    pr: &Prob,
    kc: usize,
    nc: usize,
) -> Option<*const f32> {
    if !is_fixed(pr) {
        return None;
    }
    let (k, n) = (pr.k, pr.n);
    let key = Key {
        backend: TypeId::of::<K>(),
        b: pr.b as usize,
        brs: pr.brs,
        bcs: pr.bcs,
        k,
        n,
        kc,
        nc,
    };
    SCOPE.with(|s| {
        let mut s = s.try_borrow_mut().ok()?;
        let scope = s.as_mut()?;
        let len = n.div_ceil(K::NR) * K::NR * k;
        let panels = scope.packed.entry(key).or_insert_with(|| {
            let mut p = Vec::new();
            let base = aligned(&mut p, len);
            let mut jc = 0;
            while jc < n {
                let cols = nc.min(n - jc);
                let mut pc = 0;
                while pc < k {
                    let kcb = kc.min(k - pc);
                    let block = base.wrapping_add(offset::<K>(k, n, nc, jc, pc));
                    // SAFETY: block (jc, pc) lies inside the buffer (`offset` plus
                    // cols.div_ceil(NR) panels of kcb * NR slots end by (jc + cols rounded
                    // up to NR) * k <= its length), 64-byte aligned (every offset is a
                    // multiple of 16 slots from an aligned base); the block is inside B;
                    // the CPU runs K (this function's contract).
                    unsafe { pack_b_block::<K>(pr, 1, jc, cols, pc, kcb, Shared::new(block)) };
                    pc += kcb;
                }
                jc += cols;
            }
            p
        });
        // The same start as when packed: the buffer already holds `len`.
        Some(aligned(panels, len) as *const f32)
    })
}

/// How many packings the open scope holds (tests).
#[cfg(test)]
pub(super) fn packed_count() -> usize {
    SCOPE.with(|s| s.borrow().as_ref().map_or(0, |s| s.packed.len()))
}

impl FixedB {
    /// How many packings it holds (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.packed.len()
    }
}
