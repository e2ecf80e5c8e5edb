//! Per-op timing of the native engine, with `PLEC_PROFILE` set (see
//! `runtime::profile`): milliseconds per call of each step label.

use super::step::Step;
use super::Engine;

impl Engine {
    /// With `PLEC_PROFILE`: milliseconds per call and share of the total
    /// per step label, largest first; `None` when nothing was timed.
    pub(crate) fn profile_table(&self) -> Option<String> {
        profile_of([self], "native engine profile (ms per call, calls, share)")
    }
}

/// The merged per-label times of `engines` as a table headed `title`
/// (`None` without `PLEC_PROFILE` or when nothing was timed).
pub(crate) fn profile_of<'a>(
    engines: impl IntoIterator<Item = &'a Engine>,
    title: &str,
) -> Option<String> {
    let mut times: std::collections::BTreeMap<&str, (f64, u64)> = Default::default();
    for e in engines {
        for (label, (s, n)) in e.times.iter().flatten() {
            let t = times.entry(label).or_default();
            t.0 += s;
            t.1 += n;
        }
    }
    if times.is_empty() {
        return None;
    }
    let total: f64 = times.values().map(|t| t.0).sum();
    let mut rows: Vec<_> = times.into_iter().collect();
    rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    let mut out = format!("{title}:\n");
    for (label, (s, n)) in rows {
        out.push_str(&format!(
            "  {label:<32} {:>9.3} {:>7} {:>5.1}%\n",
            1e3 * s / n as f64,
            n,
            100.0 * s / total.max(1e-12)
        ));
    }
    Some(out)
}

/// Adds the time since `t0` to `step`'s label (profiling only).
pub(super) fn record(
    times: &mut Option<std::collections::BTreeMap<String, (f64, u64)>>,
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
    let e = times.entry(format!("{dir} {label}")).or_insert((0.0, 0));
    e.0 += t0.elapsed().as_secs_f64();
    e.1 += 1;
}

pub(super) fn record_label(
    times: &mut Option<std::collections::BTreeMap<String, (f64, u64)>>,
    label: &str,
    t0: Option<std::time::Instant>,
) {
    if let (Some(times), Some(t0)) = (times.as_mut(), t0) {
        let e = times.entry(label.to_string()).or_insert((0.0, 0));
        e.0 += t0.elapsed().as_secs_f64();
        e.1 += 1;
    }
}
