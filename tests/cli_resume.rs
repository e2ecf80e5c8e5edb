//! Long runs through the built `plec` binary: checkpoints every
//! `--checkpoint-every` steps, a run killed (SIGKILL) or stopped (SIGTERM)
//! and resumed with `--resume` ends bit-identical to the run that was never
//! stopped, and `--init-from` / `plec diff` for warm starts.
//!
//! The model is tiny (MMoE, a few thousand rows, shuffled, with dropout,
//! so the data order and the random stream both have to resume exactly).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

fn config(expert_units: &str, dim_a: u32) -> String {
    format!(
        r#"
train_config {{
  sparse_optimizer {{ adagrad_optimizer {{ lr: 0.1 }} constant_learning_rate {{}} }}
  dense_optimizer {{ adam_optimizer {{ lr: 0.005 }} constant_learning_rate {{}} }}
  num_epochs: 1
}}
data_config {{
  batch_size: 128
  shuffle: true
  dataset_type: ParquetDataset
  fg_mode: FG_NORMAL
  label_fields: "clk"
  label_fields: "buy"
}}
feature_configs {{ id_feature {{ feature_name: "a" expression: "user:a" num_buckets: 8 embedding_dim: {dim_a} }} }}
feature_configs {{ id_feature {{ feature_name: "b" expression: "user:b" hash_bucket_size: 10 embedding_dim: 8 }} }}
feature_configs {{ raw_feature {{ feature_name: "price" expression: "item:price" boundaries: [1, 5, 10, 20, 50] embedding_dim: 4 }} }}
model_config {{
  feature_groups {{ group_name: "all" feature_names: ["a", "b", "price"] group_type: DEEP }}
  mmoe {{
    expert_mlp {{ hidden_units: [{expert_units}] dropout_ratio: 0.1 }}
    num_expert: 2
    task_towers {{
      tower_name: "ctr" label_name: "clk" mlp {{ hidden_units: [8] }}
      metrics {{ auc {{}} }} losses {{ binary_cross_entropy {{}} }}
    }}
    task_towers {{
      tower_name: "cvr" label_name: "buy" mlp {{ hidden_units: [8] }}
      metrics {{ auc {{}} }} losses {{ binary_cross_entropy {{}} }}
    }}
  }}
}}
"#
    )
}

/// A config and its generated data in `dir`: (config, train, eval).
fn setup(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let cfg = dir.join("m.config");
    std::fs::write(&cfg, config("16, 8", 8)).unwrap();
    let data = dir.join("data");
    ok(&[
        "gen-data",
        s(&cfg),
        "--rows",
        "3000",
        "--eval-rows",
        "500",
        "-o",
        s(&data),
        "--seed",
        "3",
    ]);
    (cfg, data.join("train.parquet"), data.join("eval.parquet"))
}

/// The arguments of the training run every test repeats: 10 epochs of 24
/// batches, a checkpoint every 7 steps, evaluation every 20.
fn run_args<'a>(cfg: &'a Path, train: &'a Path, eval: &'a Path, out: &'a Path) -> Vec<&'a str> {
    vec![
        "run",
        s(cfg),
        "--data",
        s(train),
        "--eval",
        s(eval),
        "--epochs",
        "10",
        "--seed",
        "5",
        "--checkpoint-every",
        "7",
        "--eval-every",
        "20",
        "--threads",
        "1",
        "--out",
        s(out),
        "-q",
    ]
}

fn checkpoints(out: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(out.join("checkpoints"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "plecckpt"));
    v.sort();
    v
}

/// metrics.json without the wall-clock fields.
fn metrics(out: &Path) -> serde_json::Value {
    let t = std::fs::read_to_string(out.join("metrics.json")).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&t).unwrap();
    for k in ["train_seconds", "steps_per_sec", "samples_per_sec"] {
        m.as_object_mut().unwrap().remove(k);
    }
    m
}

fn assert_same_run(a: &Path, b: &Path) {
    assert_eq!(metrics(a), metrics(b), "metrics differ");
    assert!(
        std::fs::read(a.join("plan.bin")).unwrap() == std::fs::read(b.join("plan.bin")).unwrap(),
        "trained plans differ"
    );
}

/// Starts the run in a child, waits for its first checkpoint, then sends
/// `signal` after a random delay. Returns the child's output, or None when
/// it finished before the signal landed.
fn interrupt_run(args: &[&str], out: &Path, signal: i32, delay_ms: u64) -> Option<Output> {
    let child = Command::new(PLEC)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the plec binary runs");
    let t0 = Instant::now();
    while checkpoints(out).is_empty() && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(delay_ms));
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    unsafe { libc::kill(child.id() as i32, signal) };
    let o = child.wait_with_output().unwrap();
    (o.status.code() != Some(0)).then_some(o)
}

/// SIGKILL at a random step after the first checkpoint, then `--resume`:
/// the same trained plan, bit for bit, and the same metrics as the run
/// that was never killed.
#[test]
fn killed_run_resumes_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, train, eval) = setup(dir.path());
    let full = dir.path().join("full");
    ok(&run_args(&cfg, &train, &eval, &full));
    assert!(
        checkpoints(&full).len() >= 30,
        "a checkpoint every 7 of 240 steps"
    );

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut delay = seed % 150;
    let killed = dir.path().join("killed");
    let o = loop {
        let _ = std::fs::remove_dir_all(&killed);
        if let Some(o) = interrupt_run(
            &run_args(&cfg, &train, &eval, &killed),
            &killed,
            libc::SIGKILL,
            delay,
        ) {
            break o;
        }
        assert!(delay > 0, "the run finished before it could be killed");
        delay /= 2;
    };
    eprintln!(
        "killed after {delay} ms past the first checkpoint: {}",
        text(&o)
    );
    assert!(
        !killed.join("plan.bin").exists(),
        "a killed run leaves no plan.bin"
    );
    let left = checkpoints(&killed);
    assert!(!left.is_empty());
    // The newest checkpoint may be the one the kill cut short: resume must
    // take the newest complete one either way.
    let resumed = plec(&["run", "--resume", s(&killed), "-q"]);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    let said = String::from_utf8_lossy(&resumed.stderr);
    assert!(said.contains("resuming from"), "{said}");
    // It seeks to the checkpoint's data position, not re-reading the epoch.
    assert!(
        said.contains("reading on from file 0, row group 0"),
        "{said}"
    );
    assert_same_run(&full, &killed);
}

/// SIGTERM stops after the current step with a checkpoint and exit 130;
/// `--resume` with a changed batch size is refused (exit 2); resuming as
/// it was ends identical to the uninterrupted run. `--keep-checkpoints`
/// keeps only the newest.
#[test]
fn terminated_run_checkpoints_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, train, eval) = setup(dir.path());
    let full = dir.path().join("full");
    let mut args = run_args(&cfg, &train, &eval, &full);
    args.extend(["--keep-checkpoints", "3"]);
    ok(&args);
    assert_eq!(checkpoints(&full).len(), 3, "--keep-checkpoints 3");

    let stopped = dir.path().join("stopped");
    let mut delay = 40;
    let o = loop {
        let _ = std::fs::remove_dir_all(&stopped);
        if let Some(o) = interrupt_run(
            &run_args(&cfg, &train, &eval, &stopped),
            &stopped,
            libc::SIGTERM,
            delay,
        ) {
            break o;
        }
        assert!(delay > 0, "the run finished before it could be stopped");
        delay /= 2;
    };
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("interrupted after step") && err.contains("plec run --resume"),
        "{err}"
    );
    assert!(!stopped.join("plan.bin").exists());

    let bad = plec(&["run", "--resume", s(&stopped), "--batch-size", "64", "-q"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(text(&bad).contains("--batch-size"), "{}", text(&bad));

    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let none = plec(&["run", "--resume", s(&empty), "-q"]);
    assert_eq!(none.status.code(), Some(2), "{}", text(&none));
    assert!(
        text(&none).contains("no complete checkpoint"),
        "{}",
        text(&none)
    );

    ok(&["run", "--resume", s(&stopped), "-q"]);
    assert_same_run(&full, &stopped);
}

/// `--init-from` copies what matches: the same config starts from the
/// trained values (its first loss is lower than a cold start's); a changed
/// embedding_dim and hidden width are listed as a table and stop the run
/// (exit 2) unless `--allow-partial`. `plec diff` lists the same.
#[test]
fn warm_start_and_diff() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, train, eval) = setup(dir.path());
    let first = dir.path().join("first");
    ok(&run_args(&cfg, &train, &eval, &first));
    let trained = first.join("plan.bin");

    let warm = dir.path().join("warm");
    let out = plec(&[
        "run",
        s(&cfg),
        "--data",
        s(&train),
        "--steps",
        "1",
        "--seed",
        "5",
        "--init-from",
        s(&trained),
        "--out",
        s(&warm),
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("copied"), "{}", text(&out));
    let cold = dir.path().join("cold");
    ok(&[
        "run",
        s(&cfg),
        "--data",
        s(&train),
        "--steps",
        "1",
        "--seed",
        "5",
        "--out",
        s(&cold),
        "-q",
    ]);
    let loss = |d: &Path| metrics(d)["final_loss"].as_f64().unwrap();
    assert!(
        loss(&warm) < loss(&cold),
        "warm {} vs cold {}",
        loss(&warm),
        loss(&cold)
    );
    // Steps and metrics start fresh.
    assert_eq!(metrics(&warm)["trained_steps"], 1);

    let changed = dir.path().join("changed.config");
    std::fs::write(&changed, config("24, 8", 16)).unwrap();
    let base = [
        "run",
        s(&changed),
        "--data",
        s(&train),
        "--steps",
        "1",
        "--init-from",
        s(&trained),
        "-q",
    ];
    let refused = plec(&base);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    let t = text(&refused);
    assert!(
        t.contains("do not match") && t.contains("--allow-partial"),
        "{t}"
    );
    assert!(
        t.contains("8x16") && t.contains("8x8"),
        "the table's shapes are listed: {t}"
    );
    let mut partial = base.to_vec();
    partial.push("--allow-partial");
    let o = plec(&partial);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("not copied"), "{}", text(&o));

    let d = plec(&["diff", s(&trained), s(&changed)]);
    assert_eq!(d.status.code(), Some(1), "{}", text(&d));
    let out = String::from_utf8_lossy(&d.stdout);
    assert!(
        out.contains("table") && out.contains("8x8") && out.contains("8x16"),
        "{out}"
    );
    assert!(
        out.contains("param"),
        "the first expert layer's width changed: {out}"
    );
    let same = plec(&["diff", s(&trained), s(&cfg)]);
    assert_eq!(same.status.code(), Some(0), "{}", text(&same));
}
