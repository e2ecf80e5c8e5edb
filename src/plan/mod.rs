//! The compiled plan: the prost message (`crate::proto::plan`) and its file
//! envelope (version, checksum, atomic write).

pub mod emit;
pub mod file;
pub mod memory;
pub mod validate;

pub use crate::proto::plan::*;

/// Resolves a possibly negative axis against a rank.
pub fn resolve_axis(axis: i64, rank: usize) -> Option<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    (a >= 0 && (a as usize) < rank).then_some(a as usize)
}

/// Per value, the ops that read it (in op order; an op reading a value
/// twice is listed twice). Out-of-range value ids are skipped: plans are
/// validated before anything relies on them.
pub fn readers(plan: &Plan) -> Vec<Vec<usize>> {
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); plan.values.len()];
    for (i, op) in plan.ops.iter().enumerate() {
        for &v in &op.inputs {
            if let Some(r) = readers.get_mut(v as usize) {
                r.push(i);
            }
        }
    }
    readers
}
