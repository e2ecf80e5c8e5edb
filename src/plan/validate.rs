//! Plan validation: the checks every executor relies on (each value is
//! computed once before it is read, indices in range, parameter counts per
//! op kind), and the analysis they yield, computed once per plan and read
//! by both engines.

use crate::proto::plan::{Activation, FeatureKind, LossKind, OpKind, Plan, Task};

/// Why a plan cannot be executed by any engine.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidPlan(pub String);

macro_rules! invalid {
    ($($arg:tt)*) => { InvalidPlan(format!($($arg)*)) };
}

/// What a valid plan's ops read and write.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    /// Per value, the op that computes it.
    pub producer: Vec<Option<usize>>,
    /// Per value, the ops that read it, in op order.
    pub readers: Vec<Vec<usize>>,
    /// Embedded (non-dense) features read by some FEATURE_GROUP or
    /// SEQUENCE_EMBED op, in order of first use.
    pub embedded: Vec<usize>,
    /// Per op: the batch axis of its first input (from the value shape).
    pub batch_axis: Vec<usize>,
}

/// Whether an op of `kind` may hold `n` parameters.
fn param_count_ok(kind: OpKind, n: usize) -> bool {
    match kind {
        OpKind::Linear | OpKind::BatchedLinear => n == 1 || n == 2,
        OpKind::BatchNorm => n == 4,
        OpKind::LayerNorm => n == 2,
        OpKind::Activation => n <= 1,
        OpKind::VariationalDropout | OpKind::Dice => n == 1,
        OpKind::Intervention => n == 4,
        _ => n == 0,
    }
}

/// Checks indices, counts and ordering of the plan's ops, and returns what
/// they read and write.
pub fn analyze(plan: &Plan) -> Result<Analysis, InvalidPlan> {
    let nv = plan.values.len();
    let mut producer: Vec<Option<usize>> = vec![None; nv];
    let mut embedded = Vec::new();
    let mut batch_axis = Vec::with_capacity(plan.ops.len());
    for (oi, op) in plan.ops.iter().enumerate() {
        let kind = OpKind::try_from(op.kind)
            .map_err(|_| invalid!("op \"{}\" has unknown kind {}", op.name, op.kind))?;
        if kind == OpKind::OpUnspecified {
            return Err(invalid!("op \"{}\" has no kind", op.name));
        }
        for &i in &op.inputs {
            if producer.get(i as usize).copied().flatten().is_none() {
                return Err(invalid!(
                    "op \"{}\" reads value {} before any op computes it",
                    op.name,
                    i
                ));
            }
        }
        let needs_inputs = match kind {
            OpKind::FeatureGroup | OpKind::SequenceEmbed | OpKind::SequenceMask => 0,
            OpKind::GateMix
            | OpKind::DinInput
            | OpKind::DotScores
            | OpKind::SequencePool
            | OpKind::Mul
            | OpKind::Dice
            | OpKind::WindowInput
            | OpKind::Intervention => 2,
            OpKind::AttentionPool | OpKind::MaskedMean => 3,
            OpKind::WindowPool | OpKind::MultiHeadAttention => 4,
            _ => 1,
        };
        // Ops of a fixed arity; the others read at least `needs_inputs`.
        let exact = matches!(
            kind,
            OpKind::FeatureGroup
                | OpKind::GateMix
                | OpKind::SequenceEmbed
                | OpKind::SequenceMask
                | OpKind::DinInput
                | OpKind::DotScores
                | OpKind::SequencePool
                | OpKind::AttentionPool
                | OpKind::Mul
                | OpKind::Dice
                | OpKind::StopGradient
                | OpKind::WindowInput
                | OpKind::WindowPool
                | OpKind::MultiHeadAttention
                | OpKind::MaskedMean
                | OpKind::Intervention
        );
        if op.inputs.len() < needs_inputs || (exact && op.inputs.len() != needs_inputs) {
            return Err(invalid!(
                "op \"{}\" has {} inputs",
                op.name,
                op.inputs.len()
            ));
        }
        if !param_count_ok(kind, op.params.len()) {
            return Err(invalid!(
                "op \"{}\" ({:?}) has {} parameters",
                op.name,
                kind,
                op.params.len()
            ));
        }
        if kind == OpKind::Activation
            && Activation::try_from(op.activation) == Ok(Activation::Prelu)
            && op.params.len() != 1
        {
            return Err(invalid!(
                "prelu op \"{}\" needs its slope parameter",
                op.name
            ));
        }
        if let Some(&p) = op.params.iter().find(|&&p| p as usize >= plan.params.len()) {
            return Err(invalid!(
                "op \"{}\" uses parameter {} which does not exist",
                op.name,
                p
            ));
        }
        if kind == OpKind::WindowPool && (op.widths.is_empty() || op.widths.contains(&0)) {
            return Err(invalid!(
                "window pooling \"{}\" has windows {:?} (it needs one or more, none empty)",
                op.name,
                op.widths
            ));
        }
        if kind == OpKind::VariationalDropout && op.widths.len() != op.feature_names.len() {
            return Err(invalid!(
                "variational dropout \"{}\" has {} widths for {} feature names",
                op.name,
                op.widths.len(),
                op.feature_names.len()
            ));
        }
        if kind == OpKind::MultiHeadAttention && (op.heads == 0 || !(0.0..1.0).contains(&op.ratio))
        {
            return Err(invalid!(
                "attention \"{}\" has {} heads and dropout {} (it needs a head or more and a dropout in [0, 1))",
                op.name,
                op.heads,
                op.ratio
            ));
        }
        if kind == OpKind::Dropout && !(0.0..1.0).contains(&op.ratio) {
            return Err(invalid!(
                "dropout op \"{}\" has ratio {}",
                op.name,
                op.ratio
            ));
        }
        if matches!(kind, OpKind::SequenceEmbed | OpKind::SequenceMask) {
            if op.features.is_empty() {
                return Err(invalid!("op \"{}\" reads no sequence feature", op.name));
            }
            for &f in &op.features {
                let spec = plan.features.get(f as usize).ok_or_else(|| {
                    invalid!("op \"{}\" uses feature {} which does not exist", op.name, f)
                })?;
                if spec.sequence_length == 0 {
                    return Err(invalid!(
                        "op \"{}\" reads feature \"{}\", which is not a sequence",
                        op.name,
                        spec.name
                    ));
                }
            }
        }
        if matches!(kind, OpKind::FeatureGroup | OpKind::SequenceEmbed) {
            for &f in &op.features {
                let spec = plan.features.get(f as usize).ok_or_else(|| {
                    invalid!("op \"{}\" uses feature {} which does not exist", op.name, f)
                })?;
                let dense = FeatureKind::try_from(spec.kind) == Ok(FeatureKind::RawDense);
                if !dense && !embedded.contains(&(f as usize)) {
                    if spec.table as usize >= plan.tables.len() {
                        return Err(invalid!(
                            "feature \"{}\" uses table {} which does not exist",
                            spec.name,
                            spec.table
                        ));
                    }
                    embedded.push(f as usize);
                }
            }
        }
        let ax = op
            .inputs
            .first()
            .and_then(|&i| plan.values[i as usize].shape.iter().position(|&d| d == -1))
            .unwrap_or(0);
        batch_axis.push(ax);
        let out = op.output as usize;
        if out >= nv {
            return Err(invalid!(
                "op \"{}\" writes value {} which does not exist",
                op.name,
                out
            ));
        }
        if producer[out].is_some() {
            return Err(invalid!(
                "value {} is computed twice (op \"{}\")",
                out,
                op.name
            ));
        }
        producer[out] = Some(oi);
    }
    for t in &plan.tasks {
        if producer.get(t.logits as usize).copied().flatten().is_none() {
            return Err(invalid!(
                "the logits of task \"{}\" (value {}) are never computed",
                t.tower_name,
                t.logits
            ));
        }
        domains(plan, t)?;
        for l in &t.losses {
            if LossKind::try_from(l.kind) == Ok(LossKind::JrcLoss) {
                jrc_session(plan, t, &l.session_feature)?;
            }
        }
    }
    Ok(Analysis {
        readers: super::readers(plan),
        producer,
        embedded,
        batch_axis,
    })
}

/// A task with per-domain towers selects its logits by a label: the label
/// must be a data field and the logits `domain_count * num_class` wide.
fn domains(plan: &Plan, t: &Task) -> Result<(), InvalidPlan> {
    if t.domain_count <= 1 && t.domain_label.is_empty() {
        return Ok(());
    }
    if t.domain_label.is_empty() || t.domain_count < 2 {
        return Err(invalid!(
            "task \"{}\" has {} domains selected by label \"{}\" (it needs a label and at least 2)",
            t.tower_name,
            t.domain_count,
            t.domain_label
        ));
    }
    let in_data = plan
        .data
        .as_ref()
        .is_some_and(|d| d.label_fields.contains(&t.domain_label));
    if !in_data {
        return Err(invalid!(
            "task \"{}\" selects its domain by label \"{}\", which is not among the plan's label fields",
            t.tower_name,
            t.domain_label
        ));
    }
    let width = plan
        .values
        .get(t.logits as usize)
        .and_then(|v| v.shape.last().copied())
        .unwrap_or(-1);
    let want = i64::from(t.domain_count) * i64::from(t.num_class.max(1));
    if width != want {
        return Err(invalid!(
            "task \"{}\" has {} domains of {} classes but its logits are {} wide",
            t.tower_name,
            t.domain_count,
            t.num_class.max(1),
            width
        ));
    }
    Ok(())
}

/// A JRC loss compares two logits of rows of one session: it needs two
/// classes and a session feature the batches carry as ids.
fn jrc_session(plan: &Plan, t: &Task, name: &str) -> Result<(), InvalidPlan> {
    if t.num_class != 2 {
        return Err(invalid!(
            "task \"{}\" trains with jrc_loss but has {} classes (it needs 2)",
            t.tower_name,
            t.num_class
        ));
    }
    let Some(f) = plan.features.iter().find(|f| f.name == name) else {
        return Err(invalid!(
            "task \"{}\": jrc_loss session feature \"{name}\" is not a feature of the plan (plec loads the features of the model's feature groups)",
            t.tower_name
        ));
    };
    let ids = !matches!(
        FeatureKind::try_from(f.kind),
        Ok(FeatureKind::RawDense) | Ok(FeatureKind::Unspecified) | Err(_)
    );
    if !ids || f.sequence_length > 0 {
        return Err(invalid!(
            "task \"{}\": jrc_loss session feature \"{name}\" must be a non-sequence id feature",
            t.tower_name
        ));
    }
    Ok(())
}
