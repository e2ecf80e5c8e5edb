//! The parquet reader: resolves input paths to files, checks every file's
//! columns against the plan before any training starts, and streams encoded
//! [`Batch`]es from a background thread through a bounded channel, so the
//! next few batches are ready while the model computes.
//!
//! # Shuffling
//! With shuffling on, each epoch (seeded by `seed` and `epoch`) reads the
//! files in a shuffled order, the row groups of each file in a shuffled
//! order, and shuffles rows within a buffer of
//! [`ReadOptions::shuffle_buffer_batches`] batches. Rows farther apart than
//! that buffer and in the same row group stay near each other: write files
//! with many row groups (or pre-shuffle them) for a stronger shuffle.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use arrow_array::{ArrayRef, RecordBatch};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};

use super::assemble::{Assembler, Chunk, RowId};
use super::batch::{Batch, FeatureInput};
use super::column::classify;
use super::encode::{BatchLoc, FeatureEncoder};
use super::error::{DataError, Result};
use super::fields::{
    key_shape_ok, number_shape_ok, read_keys, read_numbers, KEY_EXPECTED, NUMBER_EXPECTED,
};
use super::pages;
use super::seek::{self, SeekPoint};
use crate::proto::plan::{MetricKind, Plan};
use crate::rng::SplitMix64;

/// Batches kept ready ahead of the consumer by default.
pub const DEFAULT_PREFETCH: usize = 3;
/// Encoding threads by default: encoding is the costly part of reading
/// (arrow decoding alone runs ~8 M rows/s), and two threads keep the
/// reader ahead of the model without taking its cores.
pub const DEFAULT_ENCODE_THREADS: usize = 2;
/// Batches of rows mixed together when shuffling, by default: enough to
/// break up runs of similar rows, small enough to stay cache-friendly.
pub const DEFAULT_SHUFFLE_BUFFER_BATCHES: usize = 8;

/// How one pass over the data is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOptions {
    pub batch_size: usize,
    pub shuffle: bool,
    pub drop_remainder: bool,
    pub seed: u64,
    pub epoch: u64,
    /// Encoded batches buffered ahead of the consumer.
    pub prefetch: usize,
    pub shuffle_buffer_batches: usize,
    /// Threads encoding record batches (decoding stays on the reader
    /// thread). Any count gives the same batches.
    pub encode_threads: usize,
    /// Fill [`Batch::group_keys`] (needed only for grouped AUC; building
    /// the key strings costs time, so training passes leave it off).
    pub group_keys: bool,
}

impl ReadOptions {
    /// Training pass: shuffle and drop_remainder as the plan's data spec says.
    pub fn train(plan: &Plan, batch_size: usize, seed: u64, epoch: u64) -> Self {
        let data = plan.data.clone().unwrap_or_default();
        ReadOptions {
            batch_size,
            shuffle: data.shuffle,
            drop_remainder: data.drop_remainder,
            seed,
            epoch,
            prefetch: DEFAULT_PREFETCH,
            shuffle_buffer_batches: DEFAULT_SHUFFLE_BUFFER_BATCHES,
            group_keys: false,
            encode_threads: DEFAULT_ENCODE_THREADS,
        }
    }

    /// Evaluation / prediction pass: file order, every row, no shuffling.
    pub fn eval(batch_size: usize) -> Self {
        ReadOptions {
            batch_size,
            shuffle: false,
            drop_remainder: false,
            seed: 0,
            epoch: 0,
            prefetch: DEFAULT_PREFETCH,
            shuffle_buffer_batches: DEFAULT_SHUFFLE_BUFFER_BATCHES,
            group_keys: true,
            encode_threads: DEFAULT_ENCODE_THREADS,
        }
    }
}

/// One input file, opened and checked.
#[derive(Debug, Clone)]
pub(super) struct FileInfo {
    pub(super) path: PathBuf,
    pub(super) meta: ArrowReaderMetadata,
    /// Root column indices to read.
    pub(super) projection: Vec<usize>,
    /// First file row of each row group.
    pub(super) rg_start: Vec<u64>,
    pub(super) rows: u64,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) files: Vec<FileInfo>,
    encoders: Vec<FeatureEncoder>,
    labels: Vec<String>,
    weights: Vec<String>,
    group_keys: Vec<String>,
    keep: Vec<String>,
}

/// Input files plus what the plan reads from them.
#[derive(Debug, Clone)]
pub struct DataSource {
    inner: Arc<Inner>,
}

/// Expands inputs (files, directories, globs) into a file list. A
/// directory contributes its `*.parquet` files (not recursive), sorted; a
/// glob its matches, sorted; a file itself. Each input must yield a file.
pub fn resolve_inputs<S: AsRef<str>>(inputs: &[S]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        let input = input.as_ref();
        let path = Path::new(input);
        let mut found: Vec<PathBuf> = Vec::new();
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|e| DataError::Io {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })?;
            for entry in entries.flatten() {
                let p = entry.path();
                if p.is_file() && p.extension().is_some_and(|e| e == "parquet") {
                    found.push(p);
                }
            }
        } else if input.contains(['*', '?', '[']) {
            let paths = glob::glob(input).map_err(|e| DataError::Io {
                path: path.to_path_buf(),
                detail: format!("bad glob pattern: {e}"),
            })?;
            found.extend(paths.flatten().filter(|p| p.is_file()));
        } else if path.exists() {
            found.push(path.to_path_buf());
        } else {
            return Err(DataError::Io {
                path: path.to_path_buf(),
                detail: "no such file or directory".to_string(),
            });
        }
        if found.is_empty() {
            return Err(DataError::NoFiles {
                input: input.to_string(),
            });
        }
        found.sort();
        files.extend(found);
    }
    if files.is_empty() {
        return Err(DataError::NoFiles {
            input: String::new(),
        });
    }
    Ok(files)
}

impl DataSource {
    /// Resolves `inputs` and checks every file against `plan`: all needed
    /// columns present, with types the plan can read. Reads only footers.
    pub fn open<S: AsRef<str>>(plan: &Plan, inputs: &[S]) -> Result<Self> {
        Self::open_with_keep(plan, inputs, &[])
    }

    /// Like [`Self::open`], also passing the `keep` columns through to
    /// [`Self::batches_with_kept`] unchanged (for `predict --keep`).
    pub fn open_with_keep<S: AsRef<str>>(
        plan: &Plan,
        inputs: &[S],
        keep: &[String],
    ) -> Result<Self> {
        let encoders = plan
            .features
            .iter()
            .map(FeatureEncoder::new)
            .collect::<Result<Vec<_>>>()?;
        let data = plan.data.clone().unwrap_or_default();
        let group_keys: Vec<String> = {
            let mut seen = BTreeSet::new();
            let mut keys = Vec::new();
            for m in plan.tasks.iter().flat_map(|t| &t.metrics) {
                if m.kind == MetricKind::GroupedAuc as i32
                    && !m.grouping_key.is_empty()
                    && seen.insert(m.grouping_key.clone())
                {
                    keys.push(m.grouping_key.clone());
                }
            }
            keys
        };
        let mut inner = Inner {
            files: Vec::new(),
            encoders,
            labels: data.label_fields.clone(),
            weights: data.sample_weight_fields.clone(),
            group_keys,
            keep: keep.to_vec(),
        };
        let paths = resolve_inputs(inputs)?;
        let mut kept_types: Vec<Option<arrow_schema::DataType>> = vec![None; keep.len()];
        for path in paths {
            let info = inner.check_file(path, &mut kept_types)?;
            inner.files.push(info);
        }
        Ok(DataSource {
            inner: Arc::new(inner),
        })
    }

    /// The resolved input files, in read order (before shuffling).
    pub fn files(&self) -> Vec<&Path> {
        self.inner.files.iter().map(|f| f.path.as_path()).collect()
    }

    /// Total rows over all files.
    pub fn num_rows(&self) -> u64 {
        self.inner.files.iter().map(|f| f.rows).sum()
    }

    /// Names of the grouping-key columns carried in [`Batch::group_keys`].
    pub fn group_key_columns(&self) -> &[String] {
        &self.inner.group_keys
    }

    /// A training pass: shuffling and `drop_remainder` as the plan says.
    /// The plan given to [`Self::open`] decides; see [`ReadOptions::train`].
    pub fn batches(&self, opts: &ReadOptions) -> Batches {
        Batches {
            inner: self.spawn(opts, None),
        }
    }

    /// Like [`Self::batches`], continuing a pass at `at` (a
    /// [`Batches::position`] of an earlier pass with the same options over
    /// the same files): yields exactly the batches that pass yielded after
    /// it, reading only from there on.
    pub fn batches_from(&self, opts: &ReadOptions, at: &SeekPoint) -> Batches {
        Batches {
            inner: self.spawn(opts, Some(at.clone())),
        }
    }

    /// Like [`Self::batches`], each batch with its kept columns (in `keep`
    /// order, same rows as the batch).
    pub fn batches_with_kept(&self, opts: &ReadOptions) -> KeptBatches {
        KeptBatches {
            inner: self.spawn(opts, None),
            names: self.inner.keep.clone(),
        }
    }

    fn spawn(&self, opts: &ReadOptions, start: Option<SeekPoint>) -> ChunkStream {
        let (tx, rx) = sync_channel(opts.prefetch.max(1));
        let inner = Arc::clone(&self.inner);
        let opts = opts.clone();
        let handle = std::thread::Builder::new()
            .name("plec-reader".to_string())
            .spawn(move || {
                let mut send = |item: Result<Located>| tx.send(item).is_ok();
                if let Err(e) = inner.read_all(&opts, start.as_ref(), &mut send) {
                    send(Err(e));
                }
            });
        match handle {
            Ok(h) => ChunkStream {
                rx: Some(rx),
                handle: Some(h),
                spawn_error: None,
                position: None,
            },
            Err(e) => ChunkStream {
                rx: None,
                handle: None,
                spawn_error: Some(e.to_string()),
                position: None,
            },
        }
    }
}

impl Inner {
    fn check_file(
        &self,
        path: PathBuf,
        kept_types: &mut [Option<arrow_schema::DataType>],
    ) -> Result<FileInfo> {
        let file = File::open(&path).map_err(|e| DataError::Io {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(|e| {
            DataError::NotParquet {
                file: path.clone(),
                detail: e.to_string(),
            }
        })?;
        let file_len = file.metadata().map_err(|e| DataError::Io {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        super::footer::check(meta.metadata(), file_len.len(), &path)?;
        let schema = meta.schema().clone();
        let mut projection = BTreeSet::new();
        let available = || {
            schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut lookup =
            |column: &str, needed_by: &dyn Fn() -> String| -> Result<&arrow_schema::DataType> {
                match schema.index_of(column) {
                    Ok(i) => {
                        projection.insert(i);
                        Ok(schema.field(i).data_type())
                    }
                    Err(_) => Err(DataError::MissingColumn {
                        file: path.clone(),
                        column: column.to_string(),
                        needed_by: needed_by(),
                        available: available(),
                    }),
                }
            };
        let wrong = |column: &str,
                     dt: &arrow_schema::DataType,
                     needed_by: String,
                     expected: &str| DataError::WrongType {
            file: path.clone(),
            column: column.to_string(),
            found: dt.to_string(),
            needed_by,
            expected: expected.to_string(),
        };
        for enc in &self.encoders {
            for c in enc.columns() {
                let by = || format!("feature `{}`", enc.name());
                let dt = lookup(c, &by)?;
                enc.check_shape(classify(dt))
                    .map_err(|exp| wrong(c, dt, by(), exp))?;
            }
        }
        for (cols, what) in [(&self.labels, "label"), (&self.weights, "sample weight")] {
            for c in cols {
                let by = || format!("the {what} `{c}`");
                let dt = lookup(c, &by)?;
                if !number_shape_ok(classify(dt)) {
                    return Err(wrong(c, dt, by(), NUMBER_EXPECTED));
                }
            }
        }
        for c in &self.group_keys {
            let by = || "grouped AUC (grouping key)".to_string();
            let dt = lookup(c, &by)?;
            if !key_shape_ok(classify(dt)) {
                return Err(wrong(c, dt, by(), KEY_EXPECTED));
            }
        }
        for (c, seen) in self.keep.iter().zip(kept_types.iter_mut()) {
            let dt = lookup(c, &|| "--keep".to_string())?;
            match seen {
                Some(first) if first != dt => {
                    return Err(wrong(
                        c,
                        dt,
                        "--keep (same type in every file)".to_string(),
                        &first.to_string(),
                    ))
                }
                Some(_) => {}
                None => *seen = Some(dt.clone()),
            }
        }
        let md = meta.metadata();
        let mut rg_start = Vec::with_capacity(md.num_row_groups());
        let mut rows = 0u64;
        for rg in md.row_groups() {
            rg_start.push(rows);
            rows += rg.num_rows().max(0) as u64;
        }
        Ok(FileInfo {
            path,
            meta,
            projection: projection.into_iter().collect(),
            rg_start,
            rows,
        })
    }

    /// Reads every file once (from `start` on, when given), sending
    /// finished chunks; stops early (Ok) when the receiver hangs up.
    fn read_all(
        &self,
        opts: &ReadOptions,
        start: Option<&SeekPoint>,
        send: &mut dyn FnMut(Result<Located>) -> bool,
    ) -> Result<()> {
        let order = seek::pass_order(&self.files, opts);
        let row_rng = SplitMix64::from_words(&[opts.seed, opts.epoch, 2]);
        let mut asm = Assembler::new(
            opts.batch_size,
            opts.drop_remainder,
            opts.shuffle.then_some(row_rng),
            opts.shuffle_buffer_batches,
        );
        let mut out = Emitter {
            cut_start: self.pass_start(opts, asm.shuffle_state()),
            skip: 0,
            send,
        };
        if let Some(at) = start {
            self.check_seek(at, opts)?;
            asm.restore(self.read_rows(&at.pending, opts)?, at.shuffle_state);
            out.cut_start = at.with_skip(0);
            out.skip = at.skip;
        }
        let from = (
            out.cut_start.file,
            out.cut_start.row_group,
            out.cut_start.row,
        );
        let read_size = opts.batch_size.clamp(1, 1 << 16);
        let threads = opts.encode_threads.max(1);
        // Record batches encoded per thread at a time: about 8192 rows, so
        // small batch sizes do not pay a thread start per batch.
        let group = threads * (8192 / read_size).max(1);
        let mut pending: Vec<Pending> = Vec::with_capacity(group);
        for (oi, (fi, rgs)) in order.iter().enumerate() {
            if (oi as u64) < from.0 {
                continue;
            }
            let fi = *fi;
            let info = &self.files[fi];
            let file = File::open(&info.path).map_err(|e| DataError::Io {
                path: info.path.clone(),
                detail: e.to_string(),
            })?;
            for (gi, &rg) in rgs.iter().enumerate() {
                let first = match (oi as u64, gi as u64).cmp(&(from.0, from.1)) {
                    std::cmp::Ordering::Less => continue,
                    std::cmp::Ordering::Equal => from.2,
                    std::cmp::Ordering::Greater => 0,
                };
                let rg_rows = seek::rg_rows(info, rg);
                if first > 0 && first >= rg_rows {
                    continue;
                }
                let corrupt = |detail: String| DataError::Corrupt {
                    file: info.path.clone(),
                    row_group: rg,
                    detail,
                };
                let input = file.try_clone().map_err(|e| corrupt(e.to_string()))?;
                let selection = (first > 0).then(|| seek::from_row(first, rg_rows));
                let mut reader = pages::row_group_reader(
                    input,
                    &info.meta,
                    &info.projection,
                    rg,
                    read_size,
                    selection,
                )
                .map_err(corrupt)?;
                let mut row = first;
                loop {
                    // Pages are checked before the crate decodes them
                    // (`pages`); a panic left in the crate is still the
                    // file's fault, reported as a damaged row group.
                    let next =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.next()))
                            .map_err(|panic| {
                                let why = panic
                                    .downcast_ref::<String>()
                                    .cloned()
                                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                    .unwrap_or_default();
                                corrupt(format!(
                                    "the parquet decoder failed on a malformed page ({why})"
                                ))
                            })?;
                    let Some(rb) = next else { break };
                    let rb = rb.map_err(corrupt)?;
                    let first_row = info.rg_start[rg] + row;
                    row += rb.num_rows() as u64;
                    pending.push(Pending {
                        rb,
                        file: fi,
                        first_row,
                        row_group: rg,
                        after: (oi as u64, gi as u64, row),
                    });
                    if pending.len() >= group
                        && !self.flush(&mut pending, opts, &mut asm, &mut out)?
                    {
                        return Ok(());
                    }
                }
            }
        }
        if !self.flush(&mut pending, opts, &mut asm, &mut out)? {
            return Ok(());
        }
        let end = SeekPoint {
            file: order.len() as u64,
            row_group: 0,
            row: 0,
            pending: Vec::new(),
            ..out.cut_start.with_skip(0)
        };
        out.emit(asm.finish(), end);
        Ok(())
    }

    /// Encodes the pending record batches (in parallel when
    /// `encode_threads` > 1; results keep their order, so the output is
    /// the same for any thread count) and feeds them to the assembler.
    /// Returns false when the receiver hung up.
    fn flush(
        &self,
        pending: &mut Vec<Pending>,
        opts: &ReadOptions,
        asm: &mut Assembler,
        out: &mut Emitter<'_>,
    ) -> Result<bool> {
        let encode_one = |p: &Pending| {
            let loc = BatchLoc {
                file: &self.files[p.file].path,
                first_row: p.first_row,
                row_group: p.row_group,
            };
            self.encode(&p.rb, &loc, p.file, opts.group_keys)
        };
        let threads = opts.encode_threads.max(1).min(pending.len());
        let chunks: Vec<Result<Chunk>> = if threads <= 1 {
            pending.iter().map(encode_one).collect()
        } else {
            let per = pending.len().div_ceil(threads);
            std::thread::scope(|scope| {
                let handles: Vec<_> = pending
                    .chunks(per)
                    .map(|part| {
                        scope.spawn(move || part.iter().map(encode_one).collect::<Vec<_>>())
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| match h.join() {
                        Ok(v) => v,
                        Err(_) => vec![Err(DataError::ReaderStopped {
                            detail: "an encoding thread panicked".to_string(),
                        })],
                    })
                    .collect()
            })
        };
        let afters: Vec<(u64, u64, u64)> = pending.drain(..).map(|p| p.after).collect();
        for (chunk, (file, row_group, row)) in chunks.into_iter().zip(afters) {
            let batches = asm.push(chunk?);
            if batches.is_empty() {
                continue;
            }
            let after = SeekPoint {
                file,
                row_group,
                row,
                shuffle_state: asm.shuffle_state(),
                pending: asm.pending_rows(),
                ..out.cut_start.with_skip(0)
            };
            if !out.emit(batches, after) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Encodes one record batch (rows from `loc.first_row` of file `file`
    /// on): features, labels, weights, keys, kept.
    pub(super) fn encode(
        &self,
        rb: &RecordBatch,
        loc: &BatchLoc<'_>,
        file: usize,
        with_keys: bool,
    ) -> Result<Chunk> {
        let column = |name: &str| -> Result<&ArrayRef> {
            rb.column_by_name(name)
                .ok_or_else(|| DataError::MissingColumn {
                    file: loc.file.to_path_buf(),
                    column: name.to_string(),
                    needed_by: "the plan".to_string(),
                    available: String::new(),
                })
        };
        let mut features = Vec::with_capacity(self.encoders.len());
        for enc in &self.encoders {
            let cols = enc
                .columns()
                .iter()
                .map(|c| column(c))
                .collect::<Result<Vec<_>>>()?;
            features.push(enc.encode(&cols, loc)?);
        }
        check_step_counts(&self.encoders, &features, loc)?;
        let labels = self
            .labels
            .iter()
            .map(|c| read_numbers(column(c)?, c, "label", loc))
            .collect::<Result<Vec<_>>>()?;
        let sample_weights = self
            .weights
            .iter()
            .map(|c| read_numbers(column(c)?, c, "sample weight", loc))
            .collect::<Result<Vec<_>>>()?;
        let group_keys = if !with_keys {
            Vec::new()
        } else {
            self.group_keys
                .iter()
                .map(|c| Ok((c.clone(), read_keys(column(c)?, c, loc)?)))
                .collect::<Result<Vec<_>>>()?
        };
        let kept = self
            .keep
            .iter()
            .map(|c| column(c).cloned())
            .collect::<Result<Vec<_>>>()?;
        Ok(Chunk {
            batch: Batch {
                rows: rb.num_rows(),
                features,
                labels,
                sample_weights,
                group_keys,
            },
            kept,
            origin: (0..rb.num_rows() as u64)
                .map(|r| RowId {
                    file: file as u32,
                    row: loc.first_row + r,
                })
                .collect(),
        })
    }
}

/// A decoded record batch waiting to be encoded.
struct Pending {
    rb: RecordBatch,
    file: usize,
    first_row: u64,
    row_group: usize,
    /// Where the pass stands once this record batch is read: (index into
    /// the file order, into that file's row-group order, row in the group).
    after: (u64, u64, u64),
}

/// A finished batch and the point of the pass right after it.
struct Located {
    chunk: Chunk,
    after: SeekPoint,
}

/// Sends the assembler's batches, each with the point after it.
struct Emitter<'a> {
    /// The point after the last cut, from which the next cut's rows are
    /// read: the batches of a cut but its last point there (skipping those
    /// already out), the last one to the point after the cut.
    cut_start: SeekPoint,
    /// Batches still to drop (already handed out before a resume).
    skip: u64,
    send: &'a mut dyn FnMut(Result<Located>) -> bool,
}

impl Emitter<'_> {
    /// Sends the batches of one cut, `after` being the point once the cut
    /// is made. False when the receiver hung up.
    fn emit(&mut self, batches: Vec<Chunk>, after: SeekPoint) -> bool {
        let n = batches.len();
        for (j, chunk) in batches.into_iter().enumerate() {
            if self.skip > 0 {
                self.skip -= 1;
                continue;
            }
            let at = match j + 1 < n {
                true => self.cut_start.with_skip(j as u64 + 1),
                false => after.clone(),
            };
            if !(self.send)(Ok(Located { chunk, after: at })) {
                return false;
            }
        }
        if n > 0 {
            self.cut_start = after;
        }
        true
    }
}

/// The receiving end of the reader thread.
struct ChunkStream {
    rx: Option<Receiver<Result<Located>>>,
    handle: Option<JoinHandle<()>>,
    spawn_error: Option<String>,
    /// The point after the last chunk received.
    position: Option<SeekPoint>,
}

impl ChunkStream {
    fn next_chunk(&mut self) -> Option<Result<Chunk>> {
        if let Some(detail) = self.spawn_error.take() {
            return Some(Err(DataError::ReaderStopped { detail }));
        }
        let rx = self.rx.as_ref()?;
        match rx.recv() {
            Ok(Err(e)) => {
                // An error ends the pass: never train on what follows it.
                self.rx = None;
                Some(Err(e))
            }
            Ok(Ok(Located { chunk, after })) => {
                self.position = Some(after);
                Some(Ok(chunk))
            }
            Err(_) => {
                self.rx = None;
                let handle = self.handle.take()?;
                match handle.join() {
                    Ok(()) => None,
                    Err(panic) => {
                        let detail = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "panic".to_string());
                        Some(Err(DataError::ReaderStopped { detail }))
                    }
                }
            }
        }
    }
}

/// Dropping the stream stops the reader thread and waits for it: with the
/// receiver gone its next send fails, so it ends after the chunk it is
/// encoding. No reader outlives its stream (a file is not read after the
/// caller is done with it; the fuzzer's leak check saw such a thread's
/// thread-locals as leaked).
impl Drop for ChunkStream {
    fn drop(&mut self) {
        self.rx = None;
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Encoded batches of one pass, read ahead on a background thread. After
/// an error the iterator ends. Dropping it stops the thread.
pub struct Batches {
    inner: ChunkStream,
}

impl Batches {
    /// The point of the pass after the last batch returned (`None` before
    /// the first): [`DataSource::batches_from`] continues from it.
    pub fn position(&self) -> Option<&SeekPoint> {
        self.inner.position.as_ref()
    }
}

impl Iterator for Batches {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next_chunk().map(|r| r.map(|c| c.batch))
    }
}

/// Kept (pass-through) columns of one batch: `(column name, values)`, in
/// the order given to [`DataSource::open_with_keep`].
pub type KeptColumns = Vec<(String, ArrayRef)>;

/// Like [`Batches`], each batch with its kept columns.
pub struct KeptBatches {
    inner: ChunkStream,
    names: Vec<String>,
}

impl Iterator for KeptBatches {
    type Item = Result<(Batch, KeptColumns)>;
    fn next(&mut self) -> Option<Self::Item> {
        let names = &self.names;
        self.inner
            .next_chunk()
            .map(|r| r.map(|c| (c.batch, names.iter().cloned().zip(c.kept).collect())))
    }
}

/// Every feature of one sequence group must have as many steps in a row
/// (tzrec reads a grouped sequence as one history of several attributes).
pub(super) fn check_step_counts(
    encoders: &[FeatureEncoder],
    features: &[FeatureInput],
    loc: &BatchLoc<'_>,
) -> Result<()> {
    let mut first: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (f, enc) in encoders.iter().enumerate() {
        let Some(group) = enc.sequence_group() else {
            continue;
        };
        let Some(&g) = first.get(group) else {
            first.insert(group, f);
            continue;
        };
        let (Some(a), Some(b)) = (step_offsets(&features[g]), step_offsets(&features[f])) else {
            continue;
        };
        for r in 0..a.len().min(b.len()).saturating_sub(1) {
            let (na, nb) = (a[r + 1] - a[r], b[r + 1] - b[r]);
            if na != nb {
                return Err(DataError::StepCount {
                    at: loc.at(r),
                    column: enc.columns().first().cloned().unwrap_or_default(),
                    steps: nb,
                    other_column: encoders[g].columns().first().cloned().unwrap_or_default(),
                    other_steps: na,
                    group: group.to_string(),
                });
            }
        }
    }
    Ok(())
}

fn step_offsets(input: &FeatureInput) -> Option<&[u32]> {
    match input {
        FeatureInput::Ids { offsets, .. } | FeatureInput::SeqDense { offsets, .. } => Some(offsets),
        FeatureInput::Dense { .. } => None,
    }
}
