//! Per-op timing of the native engine, with `PLEC_PROFILE` set (see
//! `runtime::profile`): milliseconds per call of each step label.

use super::step::Step;
use super::Engine;

/// With `PLEC_PROFILE`: seconds and calls per step label, apart for the
/// engine's first pass (its program's build and its buffers' first touch,
/// which on some machines costs several times a later pass) and after it.
#[derive(Debug, Default)]
pub(crate) struct OpTimes {
    labels: std::collections::BTreeMap<String, OpTime>,
    /// Forward passes begun so far.
    passes: u64,
}

/// One label's (seconds, calls) in the first pass and after it.
#[derive(Debug, Default, Clone, Copy)]
struct OpTime {
    first: (f64, u64),
    later: (f64, u64),
}

impl OpTimes {
    /// A forward pass begins (the first one, and its backward pass, are
    /// counted apart).
    pub(super) fn begin_pass(&mut self) {
        self.passes += 1;
    }

    fn add(&mut self, label: &str, secs: f64) {
        let t = self.labels.entry(label.to_string()).or_default();
        let slot = if self.passes > 1 {
            &mut t.later
        } else {
            &mut t.first
        };
        slot.0 += secs;
        slot.1 += 1;
    }
}

impl Engine {
    /// With `PLEC_PROFILE`: milliseconds per call and share of the total
    /// per step label, largest first; `None` when nothing was timed.
    pub(crate) fn profile_table(&self) -> Option<String> {
        profile_of([self], "native engine profile")
    }
}

/// The merged per-label times of `engines` as a table headed `title`
/// (`None` without `PLEC_PROFILE` or when nothing was timed): per label the
/// milliseconds per call after each engine's first pass (in it, where no
/// later pass ran), the calls, the share of all the time, and the
/// milliseconds per call in the first passes.
pub(crate) fn profile_of<'a>(
    engines: impl IntoIterator<Item = &'a Engine>,
    title: &str,
) -> Option<String> {
    let mut times: std::collections::BTreeMap<&str, OpTime> = Default::default();
    for e in engines {
        for (label, t) in e.times.iter().flat_map(|t| &t.labels) {
            let m = times.entry(label).or_default();
            m.first.0 += t.first.0;
            m.first.1 += t.first.1;
            m.later.0 += t.later.0;
            m.later.1 += t.later.1;
        }
    }
    if times.is_empty() {
        return None;
    }
    let secs = |t: &OpTime| t.first.0 + t.later.0;
    let total: f64 = times.values().map(secs).sum();
    let mut rows: Vec<_> = times.into_iter().collect();
    rows.sort_by(|a, b| secs(&b.1).total_cmp(&secs(&a.1)));
    let per_call = |(s, n): (f64, u64)| 1e3 * s / n.max(1) as f64;
    let mut out = format!(
        "{title} (ms per call after the first pass, calls, share, ms per call in the first pass):\n"
    );
    for (label, t) in rows {
        let steady = if t.later.1 > 0 { t.later } else { t.first };
        out.push_str(&format!(
            "  {label:<32} {:>9.3} {:>7} {:>5.1}% {:>9.3}\n",
            per_call(steady),
            t.first.1 + t.later.1,
            100.0 * secs(&t) / total.max(1e-12),
            per_call(t.first),
        ));
    }
    Some(out)
}

/// Adds the time since `t0` to `step`'s label (profiling only).
pub(super) fn record(
    times: &mut Option<OpTimes>,
    dir: &str,
    step: &Step,
    t0: Option<std::time::Instant>,
) {
    let (Some(times), Some(t0)) = (times.as_mut(), t0) else {
        return;
    };
    let label = match step {
        Step::Alias => "alias".to_string(),
        Step::Group { .. } => "feature group".into(),
        Step::Linear { x, out, .. } => format!("linear {}x{}", x.dims[2], out.dims[2]),
        Step::Batched { x, out, .. } => {
            format!("batched {}x {}x{}", out.dims[0], x.dims[2], out.dims[2])
        }
        Step::Act { .. } => "activation".into(),
        Step::Dropout { .. } => "dropout".into(),
        Step::Mul { .. } => "multiply".into(),
        Step::Dice { .. } => "dice".into(),
        Step::Detach { .. } => "stop gradient".into(),
        Step::VarDrop { .. } => "variational dropout".into(),
        Step::Copy { .. } => "copy".into(),
        Step::Softmax { .. } => "softmax".into(),
        Step::GateMix { .. } => "gate mix".into(),
        Step::Norm { .. } => "norm".into(),
        Step::SeqEmbed { .. } => "sequence steps".into(),
        Step::SeqMask { .. } => "sequence mask".into(),
        Step::DinInput { .. } => "din input".into(),
        Step::AttnPool { .. } => "attention pool".into(),
        Step::SeqPool { .. } => "sequence pool".into(),
        Step::DotScores { .. } => "dot scores".into(),
        Step::WindowInput { .. } => "window input".into(),
        Step::WindowPool { .. } => "window pool".into(),
        Step::Attention { .. } => "multi-head attention".into(),
        Step::MaskedMean { .. } => "masked mean".into(),
        Step::Intervention { .. } => "intervention".into(),
    };
    times.add(&format!("{dir} {label}"), t0.elapsed().as_secs_f64());
}

pub(super) fn record_label(
    times: &mut Option<OpTimes>,
    label: &str,
    t0: Option<std::time::Instant>,
) {
    if let (Some(times), Some(t0)) = (times.as_mut(), t0) {
        times.add(label, t0.elapsed().as_secs_f64());
    }
}
