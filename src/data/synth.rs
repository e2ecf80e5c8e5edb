//! Synthetic data for a plan: `train.parquet` and `eval.parquet` holding
//! exactly the columns the plan reads, with labels drawn from a planted
//! ground-truth model, so a training run has something real to learn and
//! its AUC can be compared with the best achievable one.
//!
//! # What is generated
//! - Id columns: values with Zipf-like frequencies (exponent
//!   [`ZIPF_EXPONENT`]): int64 ids in range for `ID_NUM_BUCKETS`, vocab
//!   words (plus a few out-of-vocabulary words) for `ID_VOCAB`, strings such
//!   as `"user_id_17"` for `ID_HASH` and combo inputs (about 1% null).
//! - Raw columns: doubles spread over the boundaries (bucketized), or
//!   matching the normalizer (log-normal for LOG10, normal with the z-score
//!   mean and deviation, uniform over min..max); `value_dim` > 1 gives a
//!   list of doubles.
//! - Sequence columns (features with a `sequence_length`): per sequence
//!   group, each row draws a history of 1..=`sequence_length` items (about
//!   2% of rows none, written as null); every column of the group renders
//!   the same items (an id, word or number derived from the item) joined by
//!   the `sequence_delim`.
//! - Labels (int64 0/1 for binary tasks, float for regression ones), sample
//!   weights (float in [0.5, 1.5]) and grouping keys.
//!
//! # The planted model
//! Each task's logit is a sum of per-value random effects of every
//! feature column, drawn deterministically from (seed, task, column, value)
//! and mixing a part shared by all tasks with a task-specific part; a
//! smooth function of each raw column; two pairwise interactions; and per
//! sequence group a history term, the sum of per-item effects over the
//! history's items divided by the square root of its length. The
//! logit is scaled to a fixed spread and shifted to the base rate
//! ([`BASE_RATE`]). Binary tasks form a funnel in plan order: task i > 0 can
//! only be 1 where task i-1 is 1 (like cvr after ctr), with conditional
//! probability sigmoid(logit_i); its unconditional probability is the
//! product along the funnel, and that is what the reported Bayes AUC scores.
//!
//! Deterministic: the same plan, sizes and seed give byte-identical files.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, Float32Array, Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rand::distr::Distribution;
use rand_distr::Zipf;

use super::error::{DataError, Result};
use crate::metrics::auc::exact_auc;
use crate::proto::plan::{FeatureKind, LossKind, MetricKind, NormalizerKind, Plan};
use crate::rng::{mix64, SplitMix64};

/// Zipf exponent of id frequencies: a realistic long tail.
pub const ZIPF_EXPONENT: f64 = 1.1;
/// Base rate of the first binary task, and the conditional rate of each
/// later one given the previous task is positive.
pub const BASE_RATE: f64 = 0.3;
/// Standard deviation of each planted logit before the bias: sets the
/// Bayes AUC near 0.75-0.8.
pub const LOGIT_SPREAD: f64 = 1.2;
/// Rows per parquet row group in the written files.
pub const ROW_GROUP_ROWS: usize = 65_536;
/// Fraction of null values in string id columns.
pub const NULL_RATE: f64 = 0.01;
/// Fraction of rows with an empty history in a sequence group.
pub const EMPTY_HISTORY_RATE: f64 = 0.02;
/// Distinct items a history draws from.
pub const HISTORY_ITEMS: u64 = 2_000;
/// Weight of the planted history term: strong enough that a model that
/// reads the history beats one that does not by a clear AUC margin.
pub const HISTORY_WEIGHT: f64 = 3.0;

/// What was generated.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthReport {
    pub train_path: PathBuf,
    pub eval_path: PathBuf,
    pub train_rows: usize,
    pub eval_rows: usize,
    /// Columns written, with their arrow types.
    pub columns: Vec<(String, String)>,
    pub tasks: Vec<TaskReport>,
}

/// Ground truth of one task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskReport {
    pub tower_name: String,
    pub label: String,
    /// True for binary tasks, false for regression ones.
    pub binary: bool,
    /// Mean label on the train / eval split.
    pub train_label_mean: f64,
    pub eval_label_mean: f64,
    /// AUC of the planted (unconditional) probabilities on the eval split:
    /// the best any model can reach there. NaN for regression tasks.
    pub bayes_auc_eval: f64,
    /// Mean squared error of the planted mean on the eval split
    /// (regression: the noise variance; binary: the Brier score).
    pub bayes_mse_eval: f64,
}

#[derive(Debug, Clone, PartialEq)]
enum Gen {
    IntIds {
        n: u64,
    },
    StrIds {
        card: u64,
    },
    Vocab {
        words: Vec<String>,
    },
    Float {
        dist: FloatDist,
    },
    FloatList {
        dim: usize,
    },
    /// A history column of a sequence group: each row's steps are the
    /// group's item keys, rendered by `inner` and joined by `delim`.
    Seq {
        group: String,
        steps: u32,
        delim: String,
        inner: Box<Gen>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum FloatDist {
    Normal { mean: f64, sd: f64 },
    LogNormal,
    Uniform { lo: f64, hi: f64 },
}

impl Gen {
    fn priority(&self) -> u8 {
        match self {
            Gen::IntIds { .. } => 5,
            Gen::Vocab { .. } => 4,
            Gen::StrIds { .. } => 3,
            Gen::FloatList { .. } => 2,
            Gen::Float { .. } => 1,
            Gen::Seq { .. } => 6,
        }
    }
    fn categorical(&self) -> bool {
        (3..=5).contains(&self.priority())
    }
}

/// Picks one generator for a column several features read.
fn merge(a: Gen, b: Gen) -> Gen {
    match (&a, &b) {
        (Gen::IntIds { n: x }, Gen::IntIds { n: y }) => Gen::IntIds { n: (*x).min(*y) },
        (Gen::StrIds { card }, Gen::Float { .. }) | (Gen::Float { .. }, Gen::StrIds { card }) => {
            Gen::IntIds { n: *card }
        }
        _ if b.priority() > a.priority() => b,
        _ => a,
    }
}

struct Column {
    name: String,
    gen: Gen,
}

fn gen_for(kind: FeatureKind, spec: &crate::proto::plan::FeatureSpec, combo: bool) -> Gen {
    match kind {
        FeatureKind::IdNumBuckets => Gen::IntIds {
            n: spec.num_ids.max(1),
        },
        FeatureKind::IdVocab => {
            let mut words: Vec<String> = spec.vocab.clone();
            let mut dict: Vec<&String> = spec.vocab_dict.keys().collect();
            dict.sort();
            words.extend(dict.into_iter().cloned());
            Gen::Vocab { words }
        }
        FeatureKind::RawBucketized => {
            let b = &spec.boundaries;
            let (lo, hi) = match (b.first(), b.last()) {
                (Some(&lo), Some(&hi)) if hi > lo => {
                    let pad = (hi - lo) / b.len().max(1) as f64;
                    (lo - pad, hi + pad)
                }
                (Some(&lo), _) => (lo - 1.0, lo + 1.0),
                _ => (0.0, 1.0),
            };
            Gen::Float {
                dist: FloatDist::Uniform { lo, hi },
            }
        }
        FeatureKind::RawDense if spec.value_dim > 1 => Gen::FloatList {
            dim: spec.value_dim as usize,
        },
        FeatureKind::RawDense => {
            let n = spec.normalizer.unwrap_or_default();
            let dist =
                match NormalizerKind::try_from(n.kind).unwrap_or(NormalizerKind::NormalizerNone) {
                    NormalizerKind::Log10 => FloatDist::LogNormal,
                    NormalizerKind::Zscore if n.b > 0.0 => FloatDist::Normal { mean: n.a, sd: n.b },
                    NormalizerKind::Minmax if n.b > n.a => FloatDist::Uniform { lo: n.a, hi: n.b },
                    _ => FloatDist::Normal { mean: 0.0, sd: 1.0 },
                };
            Gen::Float { dist }
        }
        _ => {
            // Combo inputs get few values so their crosses repeat.
            let card = if combo {
                50
            } else {
                spec.num_ids.clamp(10, 50_000)
            };
            Gen::StrIds { card }
        }
    }
}

/// Columns the plan's features read, with one generator each.
fn plan_columns(plan: &Plan) -> Vec<Column> {
    let mut cols: Vec<Column> = Vec::new();
    for spec in &plan.features {
        let kind = FeatureKind::try_from(spec.kind).unwrap_or(FeatureKind::Unspecified);
        let combo = kind == FeatureKind::ComboHash;
        for c in &spec.input_columns {
            let mut g = gen_for(kind, spec, combo);
            if spec.sequence_length > 0 {
                g = Gen::Seq {
                    group: if spec.sequence_group.is_empty() {
                        c.clone()
                    } else {
                        spec.sequence_group.clone()
                    },
                    steps: spec.sequence_length,
                    delim: if spec.sequence_delim.is_empty() {
                        ";".into()
                    } else {
                        spec.sequence_delim.clone()
                    },
                    inner: Box::new(g),
                };
            }
            match cols.iter_mut().find(|x| x.name == *c) {
                Some(col) => col.gen = merge(col.gen.clone(), g),
                None => cols.push(Column {
                    name: c.clone(),
                    gen: g,
                }),
            }
        }
    }
    cols
}

/// One column's generated values: a numeric key per row (for effects)
/// and the arrow array written.
struct Drawn {
    /// Per row: the categorical index (+1; 0 = null / out of vocabulary),
    /// or for float columns the standardized value's bits.
    keys: Vec<u64>,
    /// Standardized numeric signal in about [-2, 2] (float columns).
    signal: Vec<f64>,
    array: ArrayRef,
}

fn draw(col: &Column, rows: usize, seed: u64, split: u64, idx: u64) -> Drawn {
    let mut rng = SplitMix64::from_words(&[seed, split, idx, 0xc01]);
    let zipf = |card: u64| Zipf::new(card.max(1) as f64, ZIPF_EXPONENT).ok();
    let mut keys = Vec::with_capacity(rows);
    let mut signal = Vec::new();
    let array: ArrayRef = match &col.gen {
        Gen::IntIds { n } => {
            let z = zipf(*n);
            let mut vals = Vec::with_capacity(rows);
            for _ in 0..rows {
                let k = z.as_ref().map_or(1.0, |z| z.sample(&mut rng)) as u64;
                // Scatter ranks over the id range so popular ids are not all small.
                let id = mix64(k ^ mix64(idx)) % n.max(&1);
                keys.push(id + 1);
                vals.push(id as i64);
            }
            Arc::new(Int64Array::from(vals))
        }
        Gen::StrIds { card } => {
            let z = zipf(*card);
            let mut b = StringBuilder::with_capacity(rows, rows * (col.name.len() + 6));
            let mut text = String::new();
            for _ in 0..rows {
                let k = z.as_ref().map_or(1.0, |z| z.sample(&mut rng)) as u64;
                if rng.next_f64() < NULL_RATE {
                    keys.push(0);
                    b.append_null();
                } else {
                    keys.push(k);
                    text.clear();
                    let _ = write!(text, "{}_{}", col.name, k);
                    b.append_value(&text);
                }
            }
            Arc::new(b.finish())
        }
        Gen::Vocab { words } => {
            let z = zipf(words.len() as u64);
            let mut b = StringBuilder::with_capacity(rows, rows * 8);
            let mut text = String::new();
            for _ in 0..rows {
                let k = z.as_ref().map_or(1.0, |z| z.sample(&mut rng)) as usize;
                if words.is_empty() || rng.next_f64() < 0.03 {
                    keys.push(0);
                    text.clear();
                    let _ = write!(text, "oov_{}", rng.below(100));
                    b.append_value(&text);
                } else {
                    keys.push(k as u64);
                    b.append_value(&words[(k - 1).min(words.len() - 1)]);
                }
            }
            Arc::new(b.finish())
        }
        Gen::Float { dist } => {
            let mut vals = Vec::with_capacity(rows);
            for _ in 0..rows {
                let z = rng.next_normal();
                let (x, s) = match *dist {
                    FloatDist::Normal { mean, sd } => (mean + sd * z, z),
                    FloatDist::LogNormal => ((1.0 + z).exp(), z),
                    FloatDist::Uniform { lo, hi } => {
                        let u = rng.next_f64();
                        (lo + (hi - lo) * u, (u - 0.5) * 3.4)
                    }
                };
                vals.push(x);
                signal.push(s);
                keys.push(s.to_bits());
            }
            Arc::new(Float64Array::from(vals))
        }
        Gen::FloatList { dim } => {
            let mut b = ListBuilder::new(Float64Builder::with_capacity(rows * dim));
            for _ in 0..rows {
                let mut sum = 0.0;
                for _ in 0..*dim {
                    let z = rng.next_normal();
                    sum += z;
                    b.values().append_value(z);
                }
                b.append(true);
                let s = sum / (*dim as f64).sqrt();
                signal.push(s);
                keys.push(s.to_bits());
            }
            Arc::new(b.finish())
        }
        Gen::Seq {
            group,
            steps,
            delim,
            inner,
        } => {
            let hist = history(group, *steps, rows, seed, split);
            let mut b = StringBuilder::with_capacity(rows, rows * 16);
            let mut text = String::new();
            for h in &hist {
                if h.is_empty() {
                    b.append_null();
                    keys.push(0);
                    continue;
                }
                text.clear();
                for (j, &k) in h.iter().enumerate() {
                    if j > 0 {
                        text.push_str(delim);
                    }
                    render_step(inner, &col.name, k, &mut text);
                }
                b.append_value(&text);
                keys.push(0);
            }
            Arc::new(b.finish())
        }
    };
    Drawn {
        keys,
        signal,
        array,
    }
}

/// Item keys of every row's history in a sequence group: deterministic in
/// (seed, split, group), so every column of the group sees the same items.
/// About [`EMPTY_HISTORY_RATE`] of rows have none; the others 1..=`steps`
/// items with Zipf-like popularity.
fn history(group: &str, steps: u32, rows: usize, seed: u64, split: u64) -> Vec<Vec<u64>> {
    let g = group
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| mix64(h ^ b as u64));
    let mut rng = SplitMix64::from_words(&[seed, split, g, 0x5e9]);
    let zipf = Zipf::new(HISTORY_ITEMS as f64, ZIPF_EXPONENT).ok();
    (0..rows)
        .map(|_| {
            if rng.next_f64() < EMPTY_HISTORY_RATE {
                return Vec::new();
            }
            let n = 1 + rng.below(steps.max(1) as usize);
            (0..n)
                .map(|_| zipf.as_ref().map_or(1.0, |z| z.sample(&mut rng)) as u64)
                .collect()
        })
        .collect()
}

/// Writes one step of item `k` as the column's generator would value it.
fn render_step(inner: &Gen, column: &str, k: u64, out: &mut String) {
    let h = mix64(k ^ column.bytes().fold(0u64, |a, b| mix64(a ^ b as u64)));
    match inner {
        Gen::IntIds { n } => {
            let _ = write!(out, "{}", h % n.max(&1));
        }
        Gen::Vocab { words } if !words.is_empty() => {
            out.push_str(&words[(h % words.len() as u64) as usize]);
        }
        Gen::Float { dist } => {
            let z = effect(&[h, 0xf10]);
            let x = match *dist {
                FloatDist::Normal { mean, sd } => mean + sd * z,
                FloatDist::LogNormal => (1.0 + z).exp(),
                FloatDist::Uniform { lo, hi } => lo + (hi - lo) * (0.5 + z.tanh() * 0.5),
            };
            let _ = write!(out, "{x}");
        }
        _ => {
            let _ = write!(out, "{column}_{}", h % 10_000);
        }
    }
}

/// The planted history term of task `t` for a sequence group: the sum of
/// per-item effects over the steps, divided by sqrt(steps), times
/// [`HISTORY_WEIGHT`] (0 for an empty history).
fn history_logits(hist: &[Vec<u64>], group: &str, seed: u64, t: u64) -> Vec<f64> {
    let g = group.bytes().fold(0u64, |h, b| mix64(h ^ b as u64));
    hist.iter()
        .map(|h| {
            if h.is_empty() {
                return 0.0;
            }
            let sum: f64 = h
                .iter()
                .map(|&k| 0.6 * effect(&[seed, g, k, 0x51]) + 0.8 * effect(&[seed, g, k, t, 0x52]))
                .sum();
            HISTORY_WEIGHT * sum / (h.len() as f64).sqrt()
        })
        .collect()
}

/// A deterministic standard normal from hashed words.
fn effect(words: &[u64]) -> f64 {
    SplitMix64::from_words(words).next_normal()
}

/// Raw (unscaled) planted logit of every row for task `t`.
fn raw_logits(cols: &[Column], drawn: &[Drawn], rows: usize, seed: u64, t: u64) -> Vec<f64> {
    let mut logit = vec![0.0f64; rows];
    let cat: Vec<usize> = (0..cols.len())
        .filter(|&i| cols[i].gen.categorical())
        .collect();
    for (c, (col, d)) in cols.iter().zip(drawn).enumerate() {
        let c = c as u64;
        if matches!(col.gen, Gen::Seq { .. }) {
            // Planted per group, once (see `history_logits`).
            continue;
        }
        if col.gen.categorical() {
            for (r, l) in logit.iter_mut().enumerate() {
                let k = d.keys[r];
                // Tasks are related but different: 60% shared, 80% own.
                *l += 0.6 * effect(&[seed, c, k, 0x5a]) + 0.8 * effect(&[seed, c, k, t, 0x7a]);
            }
        } else {
            let w_shared = effect(&[seed, c, 0xf1]);
            let w_task = effect(&[seed, c, t, 0xf2]);
            for (r, l) in logit.iter_mut().enumerate() {
                let s = d.signal[r];
                *l += 0.6 * w_shared * s.tanh() + 0.8 * w_task * (s * s - 1.0) * 0.5;
            }
        }
    }
    // Two pairwise interactions among categorical columns.
    for pair in cat.windows(2).take(2) {
        let (a, b) = (pair[0], pair[1]);
        for (r, l) in logit.iter_mut().enumerate() {
            *l += 0.7
                * effect(&[
                    seed,
                    a as u64,
                    b as u64,
                    drawn[a].keys[r],
                    drawn[b].keys[r],
                    t,
                    0x1a,
                ]);
        }
    }
    logit
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Scale and shift so the logits have spread [`LOGIT_SPREAD`] and the mean
/// probability is `rate`; returns (scale, bias).
fn calibrate(raw: &[f64], rate: f64) -> (f64, f64) {
    let n = raw.len().max(1) as f64;
    let mean = raw.iter().sum::<f64>() / n;
    let var = raw.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    let scale = if var > 0.0 {
        LOGIT_SPREAD / var.sqrt()
    } else {
        0.0
    };
    let (mut lo, mut hi) = (-20.0f64, 20.0f64);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        let m = raw
            .iter()
            .map(|&x| sigmoid(scale * (x - mean) + mid))
            .sum::<f64>()
            / n;
        if m < rate {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (scale, 0.5 * (lo + hi) - scale * mean)
}

fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<()> {
    let werr = |detail: String| DataError::Write {
        path: path.to_path_buf(),
        detail,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| werr(e.to_string()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let file = tmp.reopen().map_err(|e| werr(e.to_string()))?;
    let mut writer =
        ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(|e| werr(e.to_string()))?;
    writer.write(batch).map_err(|e| werr(e.to_string()))?;
    writer.close().map_err(|e| werr(e.to_string()))?;
    tmp.persist(path).map_err(|e| werr(e.to_string()))?;
    Ok(())
}

/// Writes `out_dir/train.parquet` and `out_dir/eval.parquet` for `plan`
/// (each atomically: a temporary file renamed into place) and reports the
/// planted truth; see the module doc.
pub fn generate(
    plan: &Plan,
    train_rows: usize,
    eval_rows: usize,
    seed: u64,
    out_dir: &Path,
) -> Result<SynthReport> {
    std::fs::create_dir_all(out_dir).map_err(|e| DataError::Write {
        path: out_dir.to_path_buf(),
        detail: e.to_string(),
    })?;
    let mut cols = plan_columns(plan);
    let data = plan.data.clone().unwrap_or_default();
    for m in plan.tasks.iter().flat_map(|t| &t.metrics) {
        if m.kind == MetricKind::GroupedAuc as i32
            && !m.grouping_key.is_empty()
            && !cols.iter().any(|c| c.name == m.grouping_key)
        {
            let card = ((train_rows + eval_rows) as u64 / 20).max(2);
            cols.push(Column {
                name: m.grouping_key.clone(),
                gen: Gen::StrIds { card },
            });
        }
    }
    let total = train_rows + eval_rows;
    // Sequence groups, each planted once (however many columns it has).
    let mut groups: Vec<(String, u32)> = Vec::new();
    for c in &cols {
        if let Gen::Seq { group, steps, .. } = &c.gen {
            if !groups.iter().any(|(g, _)| g == group) {
                groups.push((group.clone(), *steps));
            }
        }
    }
    // Draw train and eval from separate streams, then score them together
    // so both share one calibration.
    let drawn_train: Vec<Drawn> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| draw(c, train_rows, seed, 0, i as u64))
        .collect();
    let drawn_eval: Vec<Drawn> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| draw(c, eval_rows, seed, 1, i as u64))
        .collect();
    let drawn_all: Vec<Drawn> = drawn_train
        .iter()
        .zip(&drawn_eval)
        .map(|(a, b)| Drawn {
            keys: a.keys.iter().chain(&b.keys).copied().collect(),
            signal: a.signal.iter().chain(&b.signal).copied().collect(),
            array: a.array.clone(),
        })
        .collect();

    // Labels: one column per distinct label name.
    let mut label_cols: Vec<(String, ArrayRef, ArrayRef)> = Vec::new();
    let mut reports = Vec::new();
    let mut funnel_prev: Option<(Vec<f64>, Vec<bool>)> = None;
    let mut noise = SplitMix64::from_words(&[seed, 0x1abe1]);
    for (t, task) in plan.tasks.iter().enumerate() {
        if label_cols.iter().any(|(n, _, _)| *n == task.label_name) {
            continue;
        }
        let mut raw = raw_logits(&cols, &drawn_all, total, seed, t as u64);
        for (group, steps) in &groups {
            let hist: Vec<Vec<u64>> = history(group, *steps, train_rows, seed, 0)
                .into_iter()
                .chain(history(group, *steps, eval_rows, seed, 1))
                .collect();
            for (l, h) in raw
                .iter_mut()
                .zip(history_logits(&hist, group, seed, t as u64))
            {
                *l += h;
            }
        }
        let binary = !task
            .losses
            .iter()
            .any(|l| l.kind == LossKind::L2Loss as i32);
        let (scale, bias) = calibrate(&raw, BASE_RATE);
        let (truth, labels): (Vec<f64>, Vec<f64>) = if binary {
            let cond: Vec<f64> = raw.iter().map(|&x| sigmoid(scale * x + bias)).collect();
            let (prev_p, prev_y) = funnel_prev
                .take()
                .unwrap_or_else(|| (vec![1.0; total], vec![true; total]));
            let p: Vec<f64> = cond.iter().zip(&prev_p).map(|(c, q)| c * q).collect();
            let y: Vec<bool> = cond
                .iter()
                .zip(&prev_y)
                .map(|(&c, &ok)| ok && noise.next_f64() < c)
                .collect();
            let labels = y.iter().map(|&b| b as u8 as f64).collect();
            funnel_prev = Some((p.clone(), y));
            (p, labels)
        } else {
            let mean: Vec<f64> = raw.iter().map(|&x| scale * x).collect();
            let labels = mean.iter().map(|m| m + 0.5 * noise.next_normal()).collect();
            (mean, labels)
        };
        let split = |v: &[f64], a: usize, b: usize| -> f64 {
            if b > a {
                v[a..b].iter().sum::<f64>() / (b - a) as f64
            } else {
                f64::NAN
            }
        };
        let eval_p: Vec<f32> = truth[train_rows..].iter().map(|&p| p as f32).collect();
        let eval_y: Vec<f32> = labels[train_rows..].iter().map(|&y| y as f32).collect();
        let bayes_mse = split(
            &truth
                .iter()
                .zip(&labels)
                .map(|(p, y)| (p - y) * (p - y))
                .collect::<Vec<_>>(),
            train_rows,
            total,
        );
        reports.push(TaskReport {
            tower_name: task.tower_name.clone(),
            label: task.label_name.clone(),
            binary,
            train_label_mean: split(&labels, 0, train_rows),
            eval_label_mean: split(&labels, train_rows, total),
            bayes_auc_eval: if binary {
                exact_auc(&eval_p, &eval_y)
            } else {
                f64::NAN
            },
            bayes_mse_eval: bayes_mse,
        });
        let to_array = |v: &[f64]| -> ArrayRef {
            if binary {
                Arc::new(Int64Array::from(
                    v.iter().map(|&y| y as i64).collect::<Vec<_>>(),
                ))
            } else {
                Arc::new(Float32Array::from(
                    v.iter().map(|&y| y as f32).collect::<Vec<_>>(),
                ))
            }
        };
        label_cols.push((
            task.label_name.clone(),
            to_array(&labels[..train_rows]),
            to_array(&labels[train_rows..]),
        ));
    }
    // Label fields no task reads: a domain index (PEPNet's domain label)
    // uniform over its domains, anything else (e.g. an extra indicator)
    // 0/1 at the base rate.
    for name in &data.label_fields {
        if !label_cols.iter().any(|(n, _, _)| n == name) && !cols.iter().any(|c| c.name == *name) {
            let domains = plan
                .tasks
                .iter()
                .filter(|t| t.domain_label == *name)
                .map(|t| t.domain_count as usize)
                .max();
            let mut draw = |n: usize| -> ArrayRef {
                Arc::new(Int64Array::from(
                    (0..n)
                        .map(|_| match domains {
                            Some(d) => noise.below(d.max(1)) as i64,
                            None => (noise.next_f64() < BASE_RATE) as i64,
                        })
                        .collect::<Vec<_>>(),
                ))
            };
            let (a, b) = (draw(train_rows), draw(eval_rows));
            label_cols.push((name.clone(), a, b));
        }
    }
    let mut weight_cols: Vec<(String, ArrayRef, ArrayRef)> = Vec::new();
    for name in &data.sample_weight_fields {
        if label_cols.iter().any(|(n, _, _)| n == name)
            || cols.iter().any(|c| c.name == *name)
            || weight_cols.iter().any(|(n, _, _)| n == name)
        {
            continue;
        }
        let mut w = |n: usize| -> ArrayRef {
            Arc::new(Float32Array::from(
                (0..n)
                    .map(|_| (0.5 + noise.next_f64()) as f32)
                    .collect::<Vec<_>>(),
            ))
        };
        let (a, b) = (w(train_rows), w(eval_rows));
        weight_cols.push((name.clone(), a, b));
    }

    let mut fields = Vec::new();
    let mut train_arrays = Vec::new();
    let mut eval_arrays = Vec::new();
    for (c, (tr, ev)) in cols.iter().zip(drawn_train.iter().zip(&drawn_eval)) {
        fields.push(Field::new(&c.name, tr.array.data_type().clone(), true));
        train_arrays.push(tr.array.clone());
        eval_arrays.push(ev.array.clone());
    }
    for (name, tr, ev) in label_cols.iter().chain(&weight_cols) {
        fields.push(Field::new(name, tr.data_type().clone(), false));
        train_arrays.push(tr.clone());
        eval_arrays.push(ev.clone());
    }
    let columns = fields
        .iter()
        .map(|f| (f.name().clone(), type_name(f.data_type())))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let train_path = out_dir.join("train.parquet");
    let eval_path = out_dir.join("eval.parquet");
    for (path, arrays) in [(&train_path, train_arrays), (&eval_path, eval_arrays)] {
        let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(|e| DataError::Write {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        write_parquet(path, &batch)?;
    }
    Ok(SynthReport {
        train_path,
        eval_path,
        train_rows,
        eval_rows,
        columns,
        tasks: reports,
    })
}

fn type_name(dt: &DataType) -> String {
    dt.to_string()
}
