//! Learning-rate schedules.
//!
//! `t` is the optimizer step (0 for the first step), or the epoch when the
//! schedule says `by_epoch`. With `warmup_steps = W > 0`, the rate rises
//! linearly from 0 (`lr * t / W` for `t < W`, as TorchEasyRec's warmup from
//! a warmup rate of 0); after it, exponential decay and cosine annealing
//! count from the end of the warmup, while manual steps keep their
//! absolute boundaries.

use crate::proto::plan::{LearningRate, Optimizer, ScheduleKind};

/// The learning rate of `opt` at step `step` of epoch `epoch`.
pub(crate) fn learning_rate(opt: &Optimizer, step: u64, epoch: u64) -> f64 {
    let base = opt.lr as f64;
    let Some(s) = &opt.schedule else {
        return base;
    };
    let t = if s.by_epoch { epoch } else { step };
    if s.warmup_steps > 0 && t < s.warmup_steps {
        return base * t as f64 / s.warmup_steps as f64;
    }
    let after = t - s.warmup_steps;
    match ScheduleKind::try_from(s.kind).unwrap_or(ScheduleKind::Constant) {
        ScheduleKind::Constant => base,
        ScheduleKind::ExponentialDecay => exponential(s, base, after),
        ScheduleKind::ManualStep => manual(s, base, t),
        ScheduleKind::CosineAnnealing => cosine(s, base, after),
    }
}

fn exponential(s: &LearningRate, base: f64, t: u64) -> f64 {
    if s.decay_steps == 0 {
        return base;
    }
    let p = if s.staircase {
        (t / s.decay_steps) as f64
    } else {
        t as f64 / s.decay_steps as f64
    };
    (base * (s.decay_rate as f64).powf(p)).max(s.min_lr as f64)
}

fn manual(s: &LearningRate, base: f64, t: u64) -> f64 {
    let mut lr = base;
    for (&at, &rate) in s.schedule_steps.iter().zip(&s.learning_rates) {
        if t >= at {
            lr = rate as f64;
        }
    }
    lr
}

fn cosine(s: &LearningRate, base: f64, t: u64) -> f64 {
    if s.t_max == 0 {
        return base;
    }
    let eta_min = s.eta_min as f64;
    let frac = t.min(s.t_max) as f64 / s.t_max as f64;
    eta_min + (base - eta_min) * (1.0 + (std::f64::consts::PI * frac).cos()) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opt(s: LearningRate) -> Optimizer {
        Optimizer {
            lr: 1.0,
            schedule: Some(s),
            ..Default::default()
        }
    }

    #[test]
    fn schedules() {
        let c = opt(LearningRate::default());
        assert_eq!(learning_rate(&c, 1000, 0), 1.0);
        let e = opt(LearningRate {
            kind: ScheduleKind::ExponentialDecay as i32,
            decay_steps: 10,
            decay_rate: 0.5,
            staircase: true,
            min_lr: 0.2,
            ..Default::default()
        });
        assert_eq!(learning_rate(&e, 9, 0), 1.0);
        assert_eq!(learning_rate(&e, 10, 0), 0.5);
        assert_eq!(learning_rate(&e, 25, 0), 0.25);
        assert!((learning_rate(&e, 35, 0) - 0.2).abs() < 1e-7);
        let smooth = opt(LearningRate {
            kind: ScheduleKind::ExponentialDecay as i32,
            decay_steps: 10,
            decay_rate: 0.5,
            ..Default::default()
        });
        assert!((learning_rate(&smooth, 5, 0) - 0.5f64.sqrt()).abs() < 1e-7);
        let m = opt(LearningRate {
            kind: ScheduleKind::ManualStep as i32,
            schedule_steps: vec![5, 10],
            learning_rates: vec![0.1, 0.01],
            ..Default::default()
        });
        assert_eq!(learning_rate(&m, 4, 0), 1.0);
        assert!((learning_rate(&m, 5, 0) - 0.1).abs() < 1e-7);
        assert!((learning_rate(&m, 100, 0) - 0.01).abs() < 1e-7);
        let cos = opt(LearningRate {
            kind: ScheduleKind::CosineAnnealing as i32,
            t_max: 10,
            eta_min: 0.0,
            warmup_steps: 4,
            ..Default::default()
        });
        assert_eq!(learning_rate(&cos, 0, 0), 0.0);
        assert_eq!(learning_rate(&cos, 2, 0), 0.5);
        assert_eq!(learning_rate(&cos, 4, 0), 1.0);
        assert!((learning_rate(&cos, 9, 0) - 0.5).abs() < 1e-7);
        assert!(learning_rate(&cos, 14, 0).abs() < 1e-7);
        let by_epoch = opt(LearningRate {
            kind: ScheduleKind::ManualStep as i32,
            schedule_steps: vec![1],
            learning_rates: vec![0.5],
            by_epoch: true,
            ..Default::default()
        });
        assert_eq!(learning_rate(&by_epoch, 999, 0), 1.0);
        assert_eq!(learning_rate(&by_epoch, 0, 1), 0.5);
    }
}
