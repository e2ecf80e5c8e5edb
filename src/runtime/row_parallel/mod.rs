//! Evaluation with the rows of a batch spread over the threads: each thread
//! runs whole forward passes of its own chunks on its own native engine,
//! single-threaded, instead of every layer's multiply being split over all
//! threads. On one thread a large batch runs the same way, in chunks of
//! `ONE_THREAD_CHUNK` rows on the one worker. Evaluation treats every row on
//! its own (batch norm reads its running statistics), so the logits are
//! those of one pass.
//!
//! Why: a single-threaded multiply runs close to the CPU's peak (bf16
//! 512 x 1024 -> 512 at 97% of a core's `vdpbf16ps` peak), while one split
//! over two threads pays a join per block and shares one packed operand.
//! PLE example, AMD EPYC Zen 5 (AVX512-BF16), 2 threads, model-only
//! evaluation samples/s, best of 3-4 interleaved runs, one pass per layer
//! before vs side by side: bf16 batch 8192 44585 -> 51534, batch 1024
//! 40156 -> 49925; fp32 batch 8192 28173 -> 29584, batch 1024 24849 ->
//! 29703. With each weight packed once per batch (`gemm::fixed_b`) rather than
//! per chunk, 256-row chunks beat 512-row ones (best of 4 interleaved: bf16
//! batch 8192 51119/54901 -> 54505/55691, batch 1024 53373 -> 55301; fp32 batch
//! 8192 31765 -> 32667, batch 1024 31138 -> 32079): a chunk's activations and
//! the packed weights fit the shared L3 together.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use candle_core::Device;

use super::embedding::Table;
use super::error::{invalid_plan, Result};
use super::exec::native::gemm::fixed_b::{with_fixed_b, FixedB};
use super::exec::native::{self as native, Engine, Precision};
use super::params::{Mode, ParamSlot};
use crate::data::batch::Batch;
use crate::plan::validate::Analysis;
use crate::proto::plan::Plan;

mod train;
pub(crate) use train::{rows_apart_in_training, train_parts, PartsTape};

/// Most rows one thread evaluates at a time when several share a batch: its
/// activations stay in the caches between layers (see the module doc).
pub(crate) const ROW_CHUNK_MAX: usize = 256;
/// Fewest rows worth a chunk of their own: below it, splitting each
/// multiply over the threads is the better use of them.
const ROW_CHUNK_MIN: usize = 128;
/// Rows per chunk on one thread. PLE example, AMD EPYC Zen 5, `--threads 1`,
/// model-only evaluation, weights kept packed (`plec eval`), 1024 -> 256-row
/// chunks: bf16 batch 8192 24306/26258/24627 -> 30056/29848/30042, fp32 batch
/// 1024 14898/15342 -> 16300/16721, batch 8192 15502/16797 -> 16884/16963.
/// (Before, on an AMD EPYC Zen 4 in one pass per batch: 22.4k samples/s in
/// 1024-row batches and 18.2k in 8192-row ones, whose activations stream
/// through memory between layers.)
const ONE_THREAD_CHUNK: usize = 256;

/// The rows per chunk when `threads` threads evaluate `rows` rows, or `None`
/// when the batch is better run as one pass (several threads but too few rows
/// for two chunks, or one thread and one chunk's worth).
pub(crate) fn chunk_rows(rows: usize, threads: usize) -> Option<usize> {
    if threads < 2 {
        return (rows > ONE_THREAD_CHUNK).then_some(ONE_THREAD_CHUNK);
    }
    if rows < 2 * ROW_CHUNK_MIN {
        return None;
    }
    Some(rows.div_ceil(threads).clamp(ROW_CHUNK_MIN, ROW_CHUNK_MAX))
}

/// One single-threaded native engine per thread, kept between batches (each
/// holds the programs its chunks and training parts need).
#[derive(Debug)]
pub(crate) struct RowWorkers {
    workers: Vec<Worker>,
}

#[derive(Debug)]
struct Worker {
    /// A pool of one thread: every kernel the engine runs inside it, the
    /// multiplies included, sees one thread and runs inline.
    pool: rayon::ThreadPool,
    engine: Engine,
    /// The weights as this thread's multiplies packed them, kept between
    /// batches of a model whose weights never change (`logits`'s `frozen`).
    packed: Option<FixedB>,
}

/// Per task, `[rows, C]` row-major.
type TaskLogits = Vec<Vec<f32>>;

/// The per-task logits of consecutive parts of a batch, joined in row order.
fn join_rows(parts: impl IntoIterator<Item = TaskLogits>) -> TaskLogits {
    let mut tasks: TaskLogits = Vec::new();
    for part in parts {
        if tasks.is_empty() {
            tasks = part;
        } else {
            for (all, p) in tasks.iter_mut().zip(part) {
                all.extend_from_slice(&p);
            }
        }
    }
    tasks
}

/// What the model lends the workers for one batch (read only).
pub(crate) struct Lent<'a> {
    pub plan: &'a Plan,
    pub analysis: &'a Analysis,
    pub params: &'a [ParamSlot],
    pub tables: &'a [Table],
}

impl RowWorkers {
    /// `threads` workers for `plan`.
    pub(crate) fn new(plan: &Plan, analysis: &Analysis, threads: usize) -> Result<Self> {
        let workers = (0..threads)
            .map(|i| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .thread_name(move |_| format!("plec-rows-{i}"))
                    .build()
                    .map_err(|e| invalid_plan!("cannot start a worker thread: {e}"))?;
                Ok(Worker {
                    pool,
                    engine: Engine::new(plan, analysis)?,
                    packed: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { workers })
    }

    /// How many workers there are.
    pub(crate) fn len(&self) -> usize {
        self.workers.len()
    }

    /// The logits of `batch` (per task, row-major `[rows, C]`), chunks of
    /// `chunk` rows handed out to the workers as they finish their last.
    /// `frozen`: the lent weights are those of every earlier and later call
    /// (a model that only evaluates), so each worker keeps them packed.
    pub(crate) fn logits(
        &mut self,
        lent: &Lent<'_>,
        batch: &Batch,
        chunk: usize,
        precision: Option<Precision>,
        frozen: bool,
    ) -> Result<TaskLogits> {
        let starts: Vec<usize> = (0..batch.rows).step_by(chunk.max(1)).collect();
        let results: Vec<Mutex<Option<Result<TaskLogits>>>> =
            starts.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        // Each worker packs each weight once: for the whole run when the weights
        // never change, else for all its chunks of this batch (the weights are
        // lent read-only for the whole call) when it runs several.
        let ranges = native::param_ranges(lent.params)?;
        let several = starts.len() > self.len();
        self.on_each(precision, |_, engine, packed| {
            engine.set_span(None);
            let mut this_batch = FixedB::new(match several {
                true => ranges.clone(),
                false => Vec::new(),
            });
            let fixed = match frozen {
                true => packed.get_or_insert_with(|| FixedB::new(ranges.clone())),
                false => &mut this_batch,
            };
            with_fixed_b(fixed, || loop {
                let c = next.fetch_add(1, Ordering::Relaxed);
                let Some(&start) = starts.get(c) else {
                    break;
                };
                let part = batch.rows_range(start, (start + chunk).min(batch.rows));
                // The model checked the batch's rows and features; a chunk of it holds.
                let out = engine
                    .forward_pass(
                        lent.plan,
                        lent.analysis,
                        lent.params,
                        lent.tables,
                        &part,
                        Mode::Eval,
                    )
                    .map(|f| f.logits);
                let failed = out.is_err();
                if let Ok(mut slot) = results[c].lock() {
                    *slot = Some(out);
                }
                if failed {
                    // The batch fails as a whole: stop handing out chunks.
                    next.store(starts.len(), Ordering::Relaxed);
                    break;
                }
            });
            Ok(())
        })?;
        let results: Vec<Option<Result<TaskLogits>>> = results
            .into_iter()
            .map(|slot| slot.into_inner().ok().flatten())
            .collect();
        // A failed chunk's error, not the chunks left undone after it.
        let mut parts = Vec::with_capacity(results.len());
        let mut missing = false;
        for r in results {
            match r {
                Some(Err(e)) => return Err(e),
                Some(Ok(p)) => parts.push(p),
                None => missing = true,
            }
        }
        if missing {
            return Err(invalid_plan!(
                "an evaluation thread stopped without a result"
            ));
        }
        Ok(join_rows(parts))
    }

    /// Runs `work(i, engine, packed)` on every worker `i` at once, each in
    /// its one-thread pool (the first on the calling thread), its engine set
    /// to `precision`; their results in worker order, or the first error.
    fn on_each<T: Send>(
        &mut self,
        precision: Option<Precision>,
        work: impl Fn(usize, &mut Engine, &mut Option<FixedB>) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        let work = &work;
        let mut results: Vec<Option<Result<T>>> = (0..self.workers.len()).map(|_| None).collect();
        let run = move |i: usize, w: &mut Worker, slot: &mut Option<Result<T>>| {
            if let Some(p) = precision {
                w.engine.use_precision(p);
            }
            let Worker {
                pool,
                engine,
                packed,
            } = w;
            *slot = Some(pool.install(|| work(i, engine, packed)));
        };
        std::thread::scope(|s| {
            let mut jobs = self.workers.iter_mut().zip(results.iter_mut()).enumerate();
            let first = jobs.next();
            for (i, (w, slot)) in jobs {
                s.spawn(move || run(i, w, slot));
            }
            if let Some((i, (w, slot))) = first {
                run(i, w, slot);
            }
        });
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(invalid_plan!("a worker thread stopped without a result")))
            })
            .collect()
    }

    /// The workers' engines (their profiles, with `PLEC_PROFILE`).
    pub(crate) fn engines(&self) -> impl Iterator<Item = &Engine> {
        self.workers.iter().map(|w| &w.engine)
    }
}

/// Logits as the model's tensors.
pub(crate) fn tensors(
    logits: Vec<Vec<f32>>,
    rows: usize,
    device: &Device,
) -> Result<Vec<candle_core::Tensor>> {
    Ok(super::exec::logits_tensors(logits, rows, device, false)?.0)
}

#[cfg(test)]
mod tests {
    use super::chunk_rows;

    #[test]
    fn chunks_only_where_each_thread_gets_enough_rows() {
        assert_eq!(chunk_rows(256, 1), None);
        assert_eq!(chunk_rows(1024, 1), Some(256));
        assert_eq!(chunk_rows(8192, 1), Some(256));
        assert_eq!(chunk_rows(255, 2), None);
        assert_eq!(chunk_rows(256, 2), Some(128));
        assert_eq!(chunk_rows(300, 3), Some(128));
        assert_eq!(chunk_rows(1024, 2), Some(256));
        assert_eq!(chunk_rows(8192, 2), Some(256));
        assert_eq!(chunk_rows(8192, 32), Some(256));
    }
}
