//! Warm start (TorchEasyRec's `fine_tune_checkpoint`): a new plan takes
//! the trained values of every table and parameter of an older plan whose
//! name and shape match; the rest keep their initial values. Only values
//! move: training counters (`trained_steps`) stay the new plan's, so
//! schedules, optimizer state and metrics start fresh.

use super::compare::{self, Entry};
use super::Plan;

/// What a warm start did.
#[derive(Debug, Clone)]
pub struct WarmStart {
    /// Tables and parameters whose values were copied.
    pub copied: usize,
    /// Every name that is not in both plans with one shape (`a`: the plan
    /// being trained, `b`: the source).
    pub mismatched: Vec<Entry>,
}

/// Copies into `target` the values of `source`'s tables and parameters
/// that match by name and shape.
pub fn warm_start(target: &mut Plan, source: &Plan) -> WarmStart {
    let entries = compare::compare(target, source);
    let mut copied = 0;
    for t in &mut target.tables {
        if let Some(s) = source
            .tables
            .iter()
            .find(|s| s.name == t.name && s.num_rows == t.num_rows && s.dim == t.dim)
        {
            // A table never trained has no data: it is its init settings.
            t.data = s.data.clone();
            t.init = s.init;
            t.init_scale = s.init_scale;
            t.init_seed = s.init_seed;
            copied += 1;
        }
    }
    for p in &mut target.params {
        if let Some(s) = source
            .params
            .iter()
            .find(|s| s.name == p.name && s.shape == p.shape && !s.data.is_empty())
        {
            p.data = s.data.clone();
            copied += 1;
        }
    }
    WarmStart {
        copied,
        mismatched: entries.into_iter().filter(|e| !e.matches()).collect(),
    }
}
