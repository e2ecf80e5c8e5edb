//! Strided views of the native engine's buffers.
//!
//! Every value of a plan is a view: a buffer, an offset and up to three
//! dims with element strides. SLICE, and STACK/CONCAT of adjacent pieces of
//! one buffer, become views of their input's buffer instead of copies; the
//! fused-expert layers then multiply straight out of the wide layer's
//! output, and their gradients accumulate straight into its gradient.
//!
//! Rank-2 values are stored as rank 3 with a leading dim of 1, so kernels
//! see one shape. The innermost stride is always 1 (no op transposes), so
//! every row `(i0, i1)` is a contiguous run of `dims[2]` elements.

/// A view of `dims` elements of buffer `buf` starting at `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct View {
    pub buf: usize,
    pub off: usize,
    pub dims: [usize; 3],
    pub strides: [usize; 3],
    /// The plan's rank (2 or 3).
    pub rank: usize,
}

impl View {
    /// A dense row-major view of a whole buffer.
    pub(super) fn contiguous(buf: usize, logical: &[usize]) -> Option<Self> {
        let dims = pad(logical)?;
        Some(Self {
            buf,
            off: 0,
            dims,
            strides: [dims[1] * dims[2], dims[2], 1],
            rank: logical.len(),
        })
    }

    /// The dims as the plan sees them.
    pub(super) fn logical(&self) -> Vec<usize> {
        self.dims[3 - self.rank..].to_vec()
    }

    /// The internal axis of logical axis `axis`.
    pub(super) fn internal_axis(&self, axis: usize) -> usize {
        axis + 3 - self.rank
    }

    /// Number of elements.
    pub(super) fn len(&self) -> usize {
        self.dims.iter().product()
    }

    /// Number of rows (`dims[0] * dims[1]`), each `dims[2]` long.
    pub(super) fn rows(&self) -> usize {
        self.dims[0] * self.dims[1]
    }

    /// Offset of row `r`.
    pub(super) fn row_offset(&self, r: usize) -> usize {
        let (i0, i1) = (r / self.dims[1].max(1), r % self.dims[1].max(1));
        self.off + i0 * self.strides[0] + i1 * self.strides[1]
    }

    /// One past the largest offset the view touches (its `off` when empty).
    pub(super) fn end(&self) -> usize {
        if self.len() == 0 {
            return self.off;
        }
        self.off
            + self
                .dims
                .iter()
                .zip(&self.strides)
                .map(|(d, s)| (d - 1) * s)
                .sum::<usize>()
            + 1
    }

    /// The sub-view `[start, start + len)` along internal axis `axis`.
    pub(super) fn narrow(&self, axis: usize, start: usize, len: usize) -> Self {
        let mut v = *self;
        v.off += start * self.strides[axis];
        v.dims[axis] = len;
        v
    }

    /// The element runs `[start, end)` of its rows, in row order.
    pub(super) fn row_runs(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.rows()).map(|r| (self.row_offset(r), self.row_offset(r) + self.dims[2]))
    }

    /// Whether no two rows share an element (checked exactly, once per
    /// view when a program is built). Kernels that write rows in parallel
    /// rely on it.
    pub(super) fn rows_disjoint(&self) -> bool {
        if self.strides[2] != 1 {
            return false;
        }
        let mut starts: Vec<usize> = self.row_runs().map(|(s, _)| s).collect();
        starts.sort_unstable();
        starts.windows(2).all(|w| w[1] - w[0] >= self.dims[2])
    }

    /// Matrix `i0` of the view (rows `dims[1]`, cols `dims[2]`).
    pub(super) fn mat(&self, i0: usize) -> Mat {
        Mat {
            off: self.off + i0 * self.strides[0],
            rows: self.dims[1],
            cols: self.dims[2],
            rs: self.strides[1] as isize,
            cs: 1,
        }
    }

    /// All rows as one matrix, when the leading dims collapse (the outer
    /// stride steps exactly over the inner rows).
    pub(super) fn flat_mat(&self) -> Option<Mat> {
        if self.dims[0] <= 1 || self.strides[0] == self.dims[1] * self.strides[1] {
            Some(Mat {
                off: self.off,
                rows: self.rows(),
                cols: self.dims[2],
                rs: self.strides[1] as isize,
                cs: 1,
            })
        } else {
            None
        }
    }
}

/// Pads a rank-2 or rank-3 shape to three dims.
fn pad(logical: &[usize]) -> Option<[usize; 3]> {
    match *logical {
        [a, b] => Some([1, a, b]),
        [a, b, c] => Some([a, b, c]),
        _ => None,
    }
}

/// A strided matrix in a buffer, as the GEMM takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mat {
    pub off: usize,
    pub rows: usize,
    pub cols: usize,
    pub rs: isize,
    pub cs: isize,
}

impl Mat {
    /// A dense row-major `rows x cols` matrix at `off`.
    pub(crate) fn dense(off: usize, rows: usize, cols: usize) -> Self {
        Self {
            off,
            rows,
            cols,
            rs: cols as isize,
            cs: 1,
        }
    }

    /// Rows `r0..r0 + n` (no data moves).
    pub(crate) fn row_block(self, r0: usize, n: usize) -> Self {
        Self {
            off: (self.off as isize + r0 as isize * self.rs) as usize,
            rows: n,
            ..self
        }
    }

    /// The transpose (no data moves).
    pub(crate) fn t(self) -> Self {
        Self {
            off: self.off,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// One past the largest offset touched (`off` when empty).
    pub(crate) fn end(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            return self.off;
        }
        self.off
            + (self.rows - 1) * self.rs.unsigned_abs()
            + (self.cols - 1) * self.cs.unsigned_abs()
            + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_and_stacks_of_a_wide_matrix_are_disjoint_views() {
        let wide = View::contiguous(0, &[8, 10]).unwrap_or_else(|| unreachable!());
        let cols = wide.narrow(2, 1, 6);
        assert!(cols.rows_disjoint());
        assert_eq!(cols.row_offset(2), 21);
        // Three 2-wide blocks of those columns stacked: [3, 8, 2].
        let stack = View {
            dims: [3, 8, 2],
            strides: [2, 10, 1],
            rank: 3,
            ..cols
        };
        assert!(stack.rows_disjoint());
        assert_eq!(stack.row_offset(8 + 3), 1 + 2 + 30);
        assert_eq!(stack.end(), 1 + 2 * 2 + 7 * 10 + 1 + 1);
        assert!(stack.flat_mat().is_none());
        let overlapping = View {
            strides: [1, 10, 1],
            ..stack
        };
        assert!(!overlapping.rows_disjoint());
    }
}
