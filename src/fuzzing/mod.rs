//! The bodies of the fuzz targets under `fuzz/`, kept in the library so the
//! stable regression test (`tests/fuzz_regressions.rs`) replays every
//! committed crasher through exactly the code the fuzzer ran. Each takes
//! arbitrary bytes and must return: a panic, a hang or an unbounded
//! allocation is a bug in plec, whatever the bytes.
//!
//! Only the fuzz targets and tests use this module.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::data::{DataSource, ReadOptions};
use crate::pipeline::{self, BuildOptions};
use crate::plan::{self, Plan};
use crate::schema::Schema;

pub mod seeds;

/// Memory `compile_mutated` lets a build use: small, so that a mutated
/// config declaring a huge table is refused by the memory guard instead of
/// allocated (and the fuzzer reports an OOM that is no bug).
pub const COMPILE_MAX_MEMORY: u64 = 64 << 20;

/// The config whose plan `parquet_read` reads against: the example with
/// the most kinds of input column (ids, a bucketized raw value, a
/// sequence).
pub const PARQUET_PLAN_CONFIG: &str = include_str!("../../examples/ple_has_sequence.config");

/// A target's body: bytes in, nothing out (a panic is the finding).
pub type Target = fn(&[u8]);

/// Every target by name (the name of its directory under `fuzz/` and
/// `fuzz/regressions/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("check_source", check_source),
    ("plan_decode", plan_decode),
    ("parquet_read", parquet_read),
    ("compile_mutated", compile_mutated),
];

fn builtin_schema() -> Option<&'static Schema> {
    static SCHEMA: OnceLock<Option<Schema>> = OnceLock::new();
    SCHEMA.get_or_init(|| Schema::builtin().ok()).as_ref()
}

/// Any text through parse, bind, lint and shape checks, and both
/// renderings of the findings. Every label must lie inside the text (the
/// renderers slice the source with them).
pub fn check_source(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(schema) = builtin_schema() else {
        return;
    };
    let checked = pipeline::check_source(schema, text);
    for d in &checked.diagnostics {
        for l in &d.labels {
            assert!(
                l.span.start <= l.span.end && l.span.end <= text.len(),
                "label {:?} outside the {}-byte source: {d:?}",
                l.span,
                text.len()
            );
        }
    }
    let _ = crate::diag::render_json("fuzz.config", text, &checked.diagnostics);
    let _ = crate::diag::render_human("fuzz.config", text, &checked.diagnostics, false);
}

/// Any bytes as a plan file, and what plec does with a decoded plan before
/// (or without) validating it: `plec inspect` (both formats, with ops),
/// `plec diff` against itself, a warm start from it (`--init-from`), and
/// `plec run`'s memory check, validation and feature encoders.
///
/// A mutated plan file almost never keeps its SHA-256 right, so bytes that
/// start with the magic are also decoded with the length and checksum
/// recomputed: that is what lets the fuzzer reach the prost decoder and
/// everything behind it.
pub fn plan_decode(data: &[u8]) {
    let name = Path::new("fuzz.plan");
    if let Ok(p) = plan::file::decode(data, name) {
        inspect_plan(&p);
    }
    if let Some(fixed) = with_fixed_envelope(data) {
        if let Ok(p) = plan::file::decode(&fixed, name) {
            inspect_plan(&p);
        }
    }
}

/// `data` with its envelope's length and checksum made to match its
/// payload (`None` when it has no full header or already matches).
fn with_fixed_envelope(data: &[u8]) -> Option<Vec<u8>> {
    const HEADER: usize = 8 + 4 + 8 + 32;
    if data.len() < HEADER || !data.starts_with(plan::file::MAGIC) {
        return None;
    }
    use sha2::{Digest, Sha256};
    let payload = &data[HEADER..];
    let mut out = data.to_vec();
    out[12..20].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    out[20..HEADER].copy_from_slice(&Sha256::digest(payload));
    (out != data).then_some(out)
}

fn inspect_plan(p: &Plan) {
    let _ = crate::cli::inspect::plan_human(p, true);
    let _ = crate::cli::inspect::memory_section(p);
    let _ = crate::cli::inspect::plan_json(p, true);
    let _ = crate::cli::inspect::memory_json(p);
    let entries = plan::compare::compare(p, p);
    let _ = plan::compare::difference_rows(&entries, "a", "b");
    // `plec run --init-from` warm-starts from a plan file as it is.
    let _ = plan::warm::warm_start(&mut p.clone(), p);
    let _ = plan::emit::forward_flops(p);
    let _ = plan::memory::Estimate::of_run(p, 1024, true, true).total();
    if plan::validate::analyze(p).is_ok() {
        for f in &p.features {
            let _ = crate::data::encode::FeatureEncoder::new(f);
        }
    }
}

/// The plan `parquet_read` reads against (structure only: the reader needs
/// no parameter values). `None` if the example no longer compiles, which
/// the regression test reports.
pub fn parquet_plan() -> Option<&'static Plan> {
    static PLAN: OnceLock<Option<Plan>> = OnceLock::new();
    PLAN.get_or_init(|| structure_plan(PARQUET_PLAN_CONFIG))
        .as_ref()
}

/// A config's plan without parameter values (cheap however large its
/// tables).
pub fn structure_plan(source: &str) -> Option<Plan> {
    let lowered = pipeline::lower(source, BuildOptions::default()).ok()?;
    plan::emit::emit_structure(&lowered.graph, &lowered.config, source, 0).ok()
}

/// Any bytes as a parquet file, read for [`parquet_plan`] as `plec run`
/// reads its training data (the file checked against the plan, then every
/// batch of a shuffled pass) and as `plec eval` reads (file order, grouping
/// keys).
pub fn parquet_read(data: &[u8]) {
    let Some(plan) = parquet_plan() else {
        return;
    };
    // One file per call: the regression test runs targets on several
    // threads of one process.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let Some(dir) = scratch_dir() else {
        return;
    };
    let path = dir.join(format!(
        "input-{}.parquet",
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let inputs = [path.to_string_lossy().into_owned()];
    if let Ok(source) = DataSource::open(plan, &inputs) {
        let mut train = ReadOptions::train(plan, 8, 1, 0);
        train.shuffle = true;
        train.shuffle_buffer_batches = 2;
        for batch in source.batches(&train) {
            if batch.is_err() {
                break;
            }
        }
        for batch in source.batches(&ReadOptions::eval(5)) {
            if batch.is_err() {
                break;
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// A directory for `parquet_read`'s files, made once per process (under
/// /dev/shm when there is one: the fuzzer writes a file per input).
fn scratch_dir() -> Option<&'static PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::Builder::new().prefix("plec-fuzz").tempdir_in(shm)
        } else {
            tempfile::Builder::new().prefix("plec-fuzz").tempdir()
        };
        // Kept for the life of the process (a static is never dropped).
        dir.ok().map(|d| d.keep())
    })
    .as_ref()
}

/// Any text through the whole compiler (check, lower, optimize, emit) with
/// a small memory allowance; a plan it emits must pass the validation every
/// engine runs before executing it.
pub fn compile_mutated(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let opts = BuildOptions {
        max_memory: Some(COMPILE_MAX_MEMORY),
        ..BuildOptions::default()
    };
    if let Ok(built) = pipeline::build(text, opts) {
        if let Err(e) = plan::validate::analyze(&built.plan) {
            panic!("plec compiled a plan its engines reject: {e}");
        }
    }
}
