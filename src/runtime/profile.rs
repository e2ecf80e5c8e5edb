//! Opt-in timing of the training step's phases, for finding hot spots.
//!
//! Set `PLEC_PROFILE=1` and every training run prints, at its end, the
//! milliseconds per step spent waiting for data, in the forward pass, in
//! the loss, in backward, in the dense and in the sparse optimizer. Candle's
//! CPU ops run synchronously, so wall time per phase is exact on the CPU
//! (on CUDA, kernels still queued count toward the phase that waits).
//! Without the variable nothing is timed and nothing is printed.

use std::time::Instant;

use once_cell::sync::Lazy;

/// Whether `PLEC_PROFILE` is set to anything but empty or `0`.
pub(crate) fn enabled() -> bool {
    static ON: Lazy<bool> =
        Lazy::new(|| std::env::var("PLEC_PROFILE").is_ok_and(|v| !v.is_empty() && v != "0"));
    *ON
}

/// The phases of one training step, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the next batch from the data source.
    Data,
    /// Embedding lookup and the plan's ops.
    Forward,
    /// Task losses and their read-back.
    Loss,
    /// Autograd.
    Backward,
    /// Dense optimizer.
    Dense,
    /// Sparse optimizer.
    Sparse,
}

const PHASES: [Phase; 6] = [
    Phase::Data,
    Phase::Forward,
    Phase::Loss,
    Phase::Backward,
    Phase::Dense,
    Phase::Sparse,
];

/// Accumulated seconds per phase and the number of steps.
#[derive(Debug, Clone, Default)]
pub struct Phases {
    seconds: [f64; 6],
    steps: u64,
    last: Option<Instant>,
}

impl Phases {
    /// Starts (or restarts) the clock without charging anything.
    pub fn start(&mut self) {
        self.last = Some(Instant::now());
    }

    /// Charges the time since the last mark to `phase`.
    pub fn mark(&mut self, phase: Phase) {
        let now = Instant::now();
        if let Some(t) = self.last {
            self.seconds[phase as usize] += now.duration_since(t).as_secs_f64();
        }
        self.last = Some(now);
    }

    /// Counts one finished step.
    pub fn step_done(&mut self) {
        self.steps += 1;
    }

    /// One line: milliseconds per step for every phase and the total.
    pub fn summary(&self) -> String {
        let n = self.steps.max(1) as f64;
        let parts: Vec<String> = PHASES
            .iter()
            .map(|p| format!("{:?} {:.1}", p, self.seconds[*p as usize] * 1e3 / n))
            .collect();
        let total: f64 = self.seconds.iter().sum::<f64>() * 1e3 / n;
        format!(
            "profile: ms/step over {} steps: {}, total {:.1}",
            self.steps,
            parts.join(", "),
            total
        )
    }
}
