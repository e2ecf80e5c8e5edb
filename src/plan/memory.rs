//! How much memory a plan needs, estimated from its shapes before anything
//! is allocated: parameters, their gradients and optimizer state, embedding
//! tables and their sparse optimizer state, per-batch activations, and
//! (training with checkpoints) the snapshot a checkpoint writer holds. The
//! compiler and the runtime compare it with what the machine has (cgroup
//! limit or `MemAvailable`) or `--max-memory`, and stop with the breakdown
//! rather than grow until the kernel kills them.
//!
//! The activation figure errs high: every value of the plan at the batch
//! size, plus two of the largest for the gradients in flight, where the
//! native engine lays slices and stacks out as views and shares memory by
//! lifetime (measured: see `plec inspect` against `plec bench`'s peak RSS
//! in the README).

use crate::proto::plan::{OptimizerKind, Plan};

/// Bytes of one f32.
const F32: u64 = 4;

/// A memory estimate, by part, in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Estimate {
    /// Dense parameter values.
    pub params: u64,
    /// Dense gradients and optimizer state (training only).
    pub param_training: u64,
    /// Embedding table rows.
    pub tables: u64,
    /// Sparse optimizer state of the tables (training only).
    pub table_training: u64,
    /// Values (and, training, their gradients) of one batch.
    pub activations: u64,
    /// Training with checkpoints: the snapshot a checkpoint writer holds
    /// on its background thread while training goes on (parameters,
    /// tables and their optimizer state; not the gradients).
    #[serde(skip_serializing_if = "is_zero")]
    pub checkpoint: u64,
    /// The largest single parameter or table.
    pub largest: u64,
    /// Its name.
    pub largest_name: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// State tensors an optimizer keeps per parameter element.
fn state_per_element(kind: i32) -> u64 {
    match OptimizerKind::try_from(kind) {
        Ok(OptimizerKind::Adam | OptimizerKind::Adamw) => 2,
        Ok(OptimizerKind::Adagrad) => 1,
        // One accumulator per row, not per element: negligible.
        Ok(OptimizerKind::RowwiseAdagrad) => 0,
        _ => 0,
    }
}

/// Saturating product of a shape's dims (a config can ask for absurd sizes).
fn numel(dims: impl IntoIterator<Item = u64>) -> u64 {
    dims.into_iter().fold(1u64, |n, d| n.saturating_mul(d))
}

impl Estimate {
    /// The memory `plan` needs to evaluate (`training` false) or train at
    /// `batch` rows.
    pub fn of_plan(plan: &Plan, batch: u64, training: bool) -> Estimate {
        Self::of_run(plan, batch, training, false)
    }

    /// As [`Self::of_plan`]; a training run with `checkpoints` also holds
    /// one checkpoint snapshot while it is written (see
    /// `runtime::checkpoint::writer`).
    pub fn of_run(plan: &Plan, batch: u64, training: bool, checkpoints: bool) -> Estimate {
        let settings = plan.train.as_ref();
        let dense_state = settings
            .and_then(|t| t.dense_optimizer.as_ref())
            .map_or(0, |o| state_per_element(o.kind));
        let sparse_state = settings
            .and_then(|t| t.sparse_optimizer.as_ref())
            .map_or(0, |o| state_per_element(o.kind));
        let mut e = Estimate::default();
        // Optimizer state alone (a checkpoint holds it, not the gradients).
        let mut state = 0u64;
        for p in &plan.params {
            let bytes = numel(p.shape.iter().copied()).saturating_mul(F32);
            e.params = e.params.saturating_add(bytes);
            if training && p.trainable {
                e.param_training = e
                    .param_training
                    .saturating_add(bytes.saturating_mul(1 + dense_state));
                state = state.saturating_add(bytes.saturating_mul(dense_state));
            }
            if bytes > e.largest {
                e.largest = bytes;
                e.largest_name.clone_from(&p.name);
            }
        }
        for t in &plan.tables {
            let bytes = numel([t.num_rows, t.dim as u64]).saturating_mul(F32);
            e.tables = e.tables.saturating_add(bytes);
            if training {
                e.table_training = e
                    .table_training
                    .saturating_add(bytes.saturating_mul(sparse_state));
                state = state.saturating_add(bytes.saturating_mul(sparse_state));
            }
            if bytes > e.largest {
                e.largest = bytes;
                e.largest_name.clone_from(&t.name);
            }
        }
        let per_value =
            |dims: &[i64]| numel(dims.iter().map(|&d| if d < 0 { batch } else { d as u64 }));
        let values = plan
            .values
            .iter()
            .fold(0u64, |s, v| s.saturating_add(per_value(&v.shape)));
        let largest_value = plan
            .values
            .iter()
            .map(|v| per_value(&v.shape))
            .max()
            .unwrap_or(0);
        // Training keeps every forward value for the backward pass; the
        // gradients share memory by lifetime, so at any time about two
        // values' worth are live (an op's output gradient and its input's).
        let gradients = if training {
            largest_value.saturating_mul(2)
        } else {
            0
        };
        e.activations = values.saturating_add(gradients).saturating_mul(F32);
        if training && checkpoints {
            e.checkpoint = e.params.saturating_add(e.tables).saturating_add(state);
        }
        e
    }

    /// Everything added up.
    pub fn total(&self) -> u64 {
        [
            self.params,
            self.param_training,
            self.tables,
            self.table_training,
            self.activations,
            self.checkpoint,
        ]
        .iter()
        .fold(0u64, |s, &b| s.saturating_add(b))
    }

    /// The breakdown as aligned lines, for error messages and `inspect`.
    pub fn table(&self) -> String {
        let rows = [
            ("dense parameters", self.params),
            ("their gradients and optimizer state", self.param_training),
            ("embedding tables", self.tables),
            ("their optimizer state", self.table_training),
            ("activations of one batch", self.activations),
            ("a checkpoint being written", self.checkpoint),
            ("total", self.total()),
        ];
        let mut out = String::new();
        for (name, bytes) in rows {
            if name == "a checkpoint being written" && bytes == 0 {
                continue;
            }
            out.push_str(&format!("  {name:<38} {:>10}\n", human_bytes(bytes)));
        }
        if !self.largest_name.is_empty() {
            out.push_str(&format!(
                "  largest: \"{}\", {}\n",
                self.largest_name,
                human_bytes(self.largest)
            ));
        }
        out
    }
}

/// `1.5 GiB`-style sizes.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Parses `--max-memory` values: bytes, or a number with `K`, `M`, `G` or
/// `T` (binary units; `GiB`/`GB` spellings accepted).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("\"{text}\" is not a size (write e.g. 8G or 512M)"))?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        other => return Err(format!("unknown size unit \"{other}\" (use K, M, G or T)")),
    };
    Ok((n * mult as f64) as u64)
}

/// The memory this process may use: the cgroup's limit (v2, then v1) or the
/// kernel's `MemAvailable`, whichever is lower; `None` where neither can be
/// read (not Linux).
pub fn available_memory() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .and_then(|s| s.trim().parse::<u64>().ok());
    let meminfo = read("/proc/meminfo").and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("MemAvailable:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    match (cgroup, meminfo) {
        (Some(c), Some(m)) => Some(c.min(m)),
        (c, m) => c.or(m),
    }
}

/// Why a plan does not fit.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the model needs about {} to {what}, more than the {} {limit_source}\n{breakdown}", human_bytes(*need), human_bytes(*limit))]
pub struct TooBig {
    /// What was going to be done ("compile", "train at batch 8192").
    pub what: String,
    pub need: u64,
    pub limit: u64,
    /// "available on this machine" or "allowed by --max-memory".
    pub limit_source: String,
    pub breakdown: String,
}

/// Checks `need` (of `estimate`) against `max` or the machine's memory.
pub fn fits(what: &str, need: u64, estimate: &Estimate, max: Option<u64>) -> Result<(), TooBig> {
    let (limit, limit_source) = match max {
        Some(m) => (m, "allowed by --max-memory"),
        None => match available_memory() {
            Some(a) => (a, "available on this machine"),
            None => return Ok(()),
        },
    };
    if need <= limit {
        return Ok(());
    }
    Err(TooBig {
        what: what.to_string(),
        need,
        limit,
        limit_source: limit_source.to_string(),
        breakdown: estimate.table().trim_end().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::plan::{EmbeddingTable, Optimizer, Parameter, TrainSettings, Value};

    fn plan() -> Plan {
        Plan {
            params: vec![Parameter {
                name: "w".into(),
                shape: vec![100, 10],
                trainable: true,
                ..Default::default()
            }],
            tables: vec![EmbeddingTable {
                name: "t".into(),
                num_rows: 1000,
                dim: 8,
                ..Default::default()
            }],
            values: vec![
                Value {
                    name: "x".into(),
                    shape: vec![-1, 10],
                },
                Value {
                    name: "y".into(),
                    shape: vec![3, -1, 4],
                },
            ],
            train: Some(TrainSettings {
                dense_optimizer: Some(Optimizer {
                    kind: OptimizerKind::Adam as i32,
                    ..Default::default()
                }),
                sparse_optimizer: Some(Optimizer {
                    kind: OptimizerKind::Adagrad as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn parts_add_up_by_hand() {
        let e = Estimate::of_plan(&plan(), 16, true);
        assert_eq!(e.params, 4000);
        // gradient + Adam's two moments
        assert_eq!(e.param_training, 12000);
        assert_eq!(e.tables, 32000);
        // Adagrad's accumulator
        assert_eq!(e.table_training, 32000);
        // (16*10 + 3*16*4) floats of values, and two of the largest (192)
        // for the gradients in flight
        assert_eq!(e.activations, (160 + 192 + 2 * 192) * 4);
        assert_eq!(e.largest, 32000);
        assert_eq!(e.largest_name, "t");
        let eval = Estimate::of_plan(&plan(), 16, false);
        assert_eq!(eval.total(), 4000 + 32000 + (160 + 192) * 4);
        assert_eq!(e.checkpoint, 0);
        assert!(!e.table().contains("checkpoint"));
    }

    #[test]
    fn a_checkpoint_being_written_holds_parameters_tables_and_state() {
        let plain = Estimate::of_plan(&plan(), 16, true);
        let e = Estimate::of_run(&plan(), 16, true, true);
        // parameters + Adam's two moments, table + Adagrad's accumulator;
        // no gradients
        assert_eq!(e.checkpoint, 4000 + 2 * 4000 + 32000 + 32000);
        assert_eq!(e.total(), plain.total() + e.checkpoint);
        assert!(
            e.table().contains("a checkpoint being written"),
            "{}",
            e.table()
        );
        // Evaluation writes no checkpoints.
        assert_eq!(Estimate::of_run(&plan(), 16, false, true).checkpoint, 0);
        // Frozen parameters are in the snapshot, but have no state.
        let mut frozen = plan();
        frozen.params[0].trainable = false;
        let f = Estimate::of_run(&frozen, 16, true, true);
        assert_eq!(f.checkpoint, 4000 + 32000 + 32000);
    }

    #[test]
    fn absurd_sizes_saturate_instead_of_overflowing() {
        let mut p = plan();
        p.params[0].shape = vec![u64::MAX / 2, 1 << 40];
        let e = Estimate::of_plan(&p, 1 << 20, true);
        assert_eq!(e.total(), u64::MAX);
        let err = fits("compile", e.total(), &e, Some(1 << 30)).unwrap_err();
        assert!(err.to_string().contains("allowed by --max-memory"), "{err}");
    }

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_bytes("8G"), Ok(8 << 30));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5k"), Ok(1536));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3X").is_err());
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12), "12 B");
    }
}
