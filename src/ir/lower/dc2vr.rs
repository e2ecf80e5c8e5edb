//! DC2VR (TorchEasyRec's `dc2vr`): DBMTL's bottom MLP and optional MMoE,
//! a task MLP per tower, then for each tower with `low_rank_dim` an
//! intervention of its task output by the outputs of the earlier towers
//! it names, and the logits linear.
//!
//! The facts follow `tzrec/models/dc2vr.py` and
//! `tzrec/modules/intervention.py`: a tower's intervention reads its task
//! output `x` (`[B, n]`) and the concatenation `s` (`[B, m]`) of its
//! intervention towers' outputs (their interventions, or their task
//! outputs when they have none), *detached*; it computes
//! `(x Wb - s Ws) Wb^T + x` and dropout of `dropout_ratio` (default 0.1).
//! `Wb` (`[n, r]`) and `Ws` (`[m, r]`) are `RotateLayer` weights under
//! `torch.nn.utils.parametrizations.orthogonal`: not square, so the
//! Householder map with the default trivialization. Registering it stores
//! a random orthogonal `base` (`[n, n]`, a buffer: the orthogonal init
//! completed to a square) and sets the trained `original` to minus the
//! identity, so that the weight starts as the first `r` columns of `base`;
//! the plan keeps exactly these two (see the INTERVENTION op).

use std::collections::HashMap;

use super::{Builder, Out, SharedBottom, TaskDesc};
use crate::ir::error::IrError;
use crate::ir::graph::*;
use crate::proto::tzrec::protos::{Dc2vr, InterventionTaskTower};

const BASE: &str = "model_config.dc2vr";

impl TaskDesc {
    fn from_intervention(t: &InterventionTaskTower) -> Self {
        TaskDesc {
            name: t.tower_name.clone(),
            label: t.label_name().to_string(),
            num_class: t.num_class(),
            losses: t.losses.clone(),
            metrics: t.metrics.clone(),
            weight: t.weight(),
            sample_weight_name: String::new(),
            indicator: t.task_space_indicator_label().to_string(),
            in_weight: t.in_task_space_weight(),
            out_weight: t.out_task_space_weight(),
        }
    }
}

impl Builder {
    pub(super) fn dc2vr(&mut self, m: &Dc2vr, group: Out) {
        let names: Vec<String> = m.task_towers.iter().map(|t| t.tower_name.clone()).collect();
        let shared = SharedBottom {
            bottom: m.bottom_mlp.as_ref(),
            experts: m.expert_mlp.as_ref(),
            gate: m.gate_mlp.as_ref(),
            num_expert: m.num_expert(),
        };
        let inputs = self.shared_bottom(BASE, &shared, &names, group);
        // Each tower's output as later towers' interventions read it.
        let mut outputs: HashMap<&str, Out> = HashMap::new();
        for (t, tower) in m.task_towers.iter().enumerate() {
            let path = format!("{BASE}.task_towers[{t}]");
            let name = &tower.tower_name;
            let task_out = self.task_mlp(name, &path, tower.mlp.as_ref(), inputs[t]);
            // `low_rank_dim` is proto2 `required`, so prost keeps no
            // presence: 0 stands for tzrec's unset field (no intervention).
            let out = match tower.low_rank_dim {
                0 => task_out,
                rank => self
                    .intervention(tower, &path, rank, task_out, &outputs)
                    .unwrap_or(task_out),
            };
            outputs.insert(name.as_str(), out);
            let task = TaskDesc::from_intervention(tower);
            self.tower(&path, &task, None, out);
        }
    }

    /// A tower's intervention of `base` by its intervention towers (which
    /// must come earlier: tzrec reads their outputs from a dict filled in
    /// tower order). `None` after an error.
    fn intervention(
        &mut self,
        tower: &InterventionTaskTower,
        path: &str,
        rank: u32,
        base: Out,
        earlier: &HashMap<&str, Out>,
    ) -> Option<Out> {
        let name = format!("{}.intervention", tower.tower_name);
        if tower.intervention_tower_names.is_empty() {
            self.errors.push(IrError::invalid(
                format!(
                    "tower \"{}\" has a low_rank_dim but no intervention_tower_names to intervene with",
                    tower.tower_name
                ),
                format!("{path}.low_rank_dim"),
            ));
            return None;
        }
        let mut sources = Vec::new();
        for (k, s) in tower.intervention_tower_names.iter().enumerate() {
            match earlier.get(s.as_str()) {
                Some(o) => sources.push(*o),
                None => self.errors.push(IrError::invalid(
                    format!("intervention tower \"{s}\" is not an earlier tower"),
                    format!("{path}.intervention_tower_names[{k}]"),
                )),
            }
        }
        if sources.len() < tower.intervention_tower_names.len() {
            return None;
        }
        let source_dim: u64 = sources.iter().map(|o| o.width).sum();
        let r = u64::from(rank);
        // tzrec's RotateLayer asserts both spaces are wider than the rank.
        if r == 0 || r >= base.width || r >= source_dim {
            self.errors.push(IrError::invalid(
                format!(
                    "low_rank_dim {r} must be above 0 and below both the tower's width {} and its intervention sources' {source_dim}",
                    base.width
                ),
                format!("{path}.low_rank_dim"),
            ));
            return None;
        }
        let dropout = tower.dropout_ratio();
        if !(0.0..1.0).contains(&dropout) {
            self.errors.push(IrError::invalid(
                format!("dropout_ratio {dropout} is not in [0, 1)"),
                format!("{path}.dropout_ratio"),
            ));
            return None;
        }
        let source = if sources.len() == 1 {
            sources[0]
        } else {
            let c = self.add(Node::Concat {
                name: format!("{name}.source"),
            });
            for (k, o) in sources.iter().enumerate() {
                self.connect(*o, c, k as u32);
            }
            Out {
                node: c,
                port: 0,
                width: source_dim,
            }
        };
        let side = |part: &str, n: u64| {
            let x = ParamSpec {
                name: format!("{name}.{part}.original"),
                shape: vec![n, r],
                init: minus_identity(n, r),
                trainable: true,
                no_decay: false,
            };
            let q = ParamSpec {
                name: format!("{name}.{part}.base"),
                shape: vec![n, n],
                init: Init::Orthogonal,
                trainable: false,
                no_decay: true,
            };
            (x, q)
        };
        let (base_x, base_q) = side("base_rotate_layer", base.width);
        let (source_x, source_q) = side("source_rotate_layer", source_dim);
        let node = self.add(Node::Intervention(InterventionBlock {
            name,
            base_dim: base.width,
            source_dim,
            rank: r,
            base_x,
            base_q,
            source_x,
            source_q,
            dropout,
        }));
        self.connect(base, node, 0);
        // The op detaches the source itself (see the plan's INTERVENTION).
        self.connect(source, node, 1);
        Some(Out {
            node,
            port: 0,
            width: base.width,
        })
    }
}

/// Minus the identity's first `r` columns (`[n, r]`, `n > r`), as runs of
/// constants in row-major order: what torch's trivialized parametrization
/// stores as the trained matrix when it is registered.
fn minus_identity(n: u64, r: u64) -> Init {
    let run = |len: u64, value: f32| ParamSpec {
        name: String::new(),
        shape: vec![len],
        init: Init::Constant(value),
        trainable: true,
        no_decay: false,
    };
    let mut parts = Vec::new();
    let mut at = 0;
    // Element (i, i) of the row-major matrix sits at i (r + 1).
    for i in 0..r.min(n) {
        let diagonal = i * (r + 1);
        if diagonal > at {
            parts.push(run(diagonal - at, 0.0));
        }
        parts.push(run(1, -1.0));
        at = diagonal + 1;
    }
    if n * r > at {
        parts.push(run(n * r - at, 0.0));
    }
    Init::Concat(parts)
}
