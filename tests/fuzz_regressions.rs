//! Replays every input under `fuzz/regressions/<target>/` (minimized
//! crashers the fuzzers found, and inputs that once hung or ran out of
//! memory) through the same library function the fuzz target calls
//! (`plec::fuzzing`), on the stable toolchain: none may panic, and each
//! must return within a generous bound. Hangs are judged by the fuzzer
//! (`-timeout=1`); a hang's regression input is scaled up until the slow
//! code takes far longer than the bound here.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, Once};
use std::time::Duration;

use plec::fuzzing::TARGETS;

/// Per input; far above the fuzzer's one second, so a loaded CI machine
/// does not flake, yet below what a hang regression takes without its fix
/// (those inputs are sized so: `check_source/stray-close-brackets-100k-lines`
/// runs in about 2 s, and over 60 s with miette reading every span from
/// the first byte).
const BOUND: Duration = Duration::from_secs(20);

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions")
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    out.retain(|p| p.is_file());
    out.sort();
    out
}

/// Panics on any thread of this process so far. The fuzzer aborts on a
/// panic anywhere (libfuzzer-sys's panic hook), so a panic that plec
/// catches on a worker thread (the parquet reader's, reported as an error)
/// is a finding too; this hook counts them.
static PANICS: AtomicUsize = AtomicUsize::new(0);
/// Held by every test that runs targets, so one test's deliberate panic is
/// not counted against another.
static SERIAL: Mutex<()> = Mutex::new(());

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
}

/// Runs `f` on `data` on its own thread: `Err` with the panic message (of
/// that thread or any it started), or a note that it did not return
/// within `bound`. The caller holds `SERIAL`.
fn run_one(f: fn(&[u8]), data: Vec<u8>, bound: Duration) -> Result<(), String> {
    count_panics();
    let before = PANICS.load(Ordering::SeqCst);
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new().spawn(move || {
        let outcome = std::panic::catch_unwind(|| f(&data));
        let _ = tx.send(outcome);
    });
    if let Err(e) = spawned {
        return Err(format!("cannot start a thread: {e}"));
    }
    match rx.recv_timeout(bound) {
        Ok(Ok(())) if PANICS.load(Ordering::SeqCst) == before => Ok(()),
        Ok(Ok(())) => Err("a thread it started panicked (see the output above)".to_string()),
        Ok(Err(panic)) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".to_string())),
        Err(_) => Err(format!("did not return within {bound:?}")),
    }
}

#[test]
fn every_committed_fuzz_input_returns_without_panicking() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let root = regressions_dir();
    let mut failures = Vec::new();
    let mut ran = 0;
    for (name, f) in TARGETS {
        for path in inputs(&root.join(name)) {
            let data = std::fs::read(&path).expect("read a regression input");
            ran += 1;
            if let Err(e) = run_one(*f, data, BOUND) {
                failures.push(format!("{}: {e}", path.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // A moved or emptied directory must not turn this test into a no-op.
    assert!(ran > 0, "no inputs under {}", root.display());
}

#[test]
fn regression_directories_name_known_targets() {
    let known: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    for entry in std::fs::read_dir(regressions_dir()).expect("fuzz/regressions") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            known.contains(&name.as_str()),
            "fuzz/regressions/{name} is no fuzz target: its inputs would never run"
        );
    }
}

#[test]
fn the_runner_reports_panics_and_overruns() {
    fn panics(_: &[u8]) {
        panic!("boom");
    }
    fn sleeps(_: &[u8]) {
        std::thread::sleep(Duration::from_millis(500));
    }
    fn panics_on_a_worker(_: &[u8]) {
        // As plec's reader does: the panic is caught and becomes an error.
        let _ = std::thread::spawn(|| panic!("worker")).join();
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(run_one(panics, vec![], BOUND), Err("boom".to_string()));
    assert!(run_one(panics_on_a_worker, vec![], BOUND).is_err());
    assert!(run_one(sleeps, vec![], Duration::from_millis(50)).is_err());
    assert!(run_one(|_| {}, vec![], BOUND).is_ok());
}

#[test]
fn the_parquet_plan_compiles() {
    // Otherwise parquet_read would return at once on every input.
    assert!(plec::fuzzing::parquet_plan().is_some());
}

#[test]
fn every_target_accepts_its_seeds() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let counts = plec::fuzzing::seeds::write_seeds(root, dir.path()).expect("seeds");
    for (name, f) in TARGETS {
        let files = inputs(&dir.path().join(name));
        assert!(!files.is_empty(), "no seeds for {name}: {counts:?}");
        for path in files {
            let data = std::fs::read(&path).expect("read a seed");
            if let Err(e) = run_one(*f, data, BOUND) {
                panic!("{name} on seed {}: {e}", path.display());
            }
        }
    }
}

/// Writes the seed corpora under `fuzz/corpus/` (not committed) and the
/// dictionaries under `fuzz/dicts/`:
/// `cargo test --release --test fuzz_regressions -- --ignored write_fuzz_seeds`
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let counts = plec::fuzzing::seeds::write_seeds(root, &root.join("fuzz/corpus")).expect("seeds");
    println!("{counts:?}");
    let dicts = root.join("fuzz/dicts");
    std::fs::create_dir_all(&dicts).expect("fuzz/dicts");
    let config = plec::fuzzing::seeds::config_dict().expect("config dict");
    std::fs::write(dicts.join("config.dict"), config).expect("config.dict");
    let parquet = plec::fuzzing::seeds::parquet_dict().expect("parquet dict");
    std::fs::write(dicts.join("parquet.dict"), parquet).expect("parquet.dict");
}
