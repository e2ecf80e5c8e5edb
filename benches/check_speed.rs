//! `cargo bench --bench check_speed`: time of plec's front end (parse, bind,
//! lint, shape check) on a 600-line config against Python protobuf's
//! `text_format.Merge` on the same file, side by side, as a ratio. Both are
//! timed in-process over many iterations, so process start-up is excluded.
//!
//! Needs python3 with tests/conformance/requirements.txt installed.

use std::process::Command;
use std::time::Instant;

use plec::pipeline::check_source;
use plec::schema::Schema;

/// The PLE example grown to about 600 lines with more id features.
fn big_config() -> String {
    let base = std::fs::read_to_string("examples/ple_taobao.config").unwrap_or_default();
    let mut extra_features = String::new();
    let mut extra_names = String::new();
    let mut k = 0;
    while base.lines().count() + extra_features.lines().count() + extra_names.lines().count() < 600
    {
        extra_features.push_str(&format!(
            "feature_configs {{\n  id_feature {{\n    feature_name: \"extra_{k}\"\n    expression: \"user:extra_{k}\"\n    hash_bucket_size: 1000\n    embedding_dim: 16\n  }}\n}}\n"
        ));
        extra_names.push_str(&format!("    feature_names: \"extra_{k}\"\n"));
        k += 1;
    }
    let with_features = base.replacen(
        "model_config {",
        &format!("{extra_features}model_config {{"),
        1,
    );
    with_features.replacen(
        "    group_type: DEEP",
        &format!("{extra_names}    group_type: DEEP"),
        1,
    )
}

const PY: &str = r#"
import os, sys, time, tempfile, importlib
from grpc_tools import protoc
import grpc_tools
out = tempfile.mkdtemp()
files = []
for d, _, names in os.walk("proto"):
    for n in names:
        if n.endswith(".proto"):
            files.append(os.path.relpath(os.path.join(d, n), "proto"))
wkt = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
assert protoc.main(["protoc", "-Iproto", f"-I{wkt}", f"--python_out={out}"] + files) == 0
sys.path.insert(0, out)
from google.protobuf import text_format
pipeline = importlib.import_module("tzrec.protos.pipeline_pb2")
text = open(sys.argv[1]).read()
n = int(sys.argv[2])
text_format.Merge(text, pipeline.EasyRecConfig())
t = time.perf_counter()
for _ in range(n):
    text_format.Merge(text, pipeline.EasyRecConfig())
print((time.perf_counter() - t) / n)
"#;

fn main() {
    let text = big_config();
    let lines = text.lines().count();
    let Ok(schema) = Schema::builtin() else {
        eprintln!("built-in schema failed to load");
        return;
    };
    let iterations = 200;
    let checked = check_source(&schema, &text);
    let errors = checked.diagnostics.iter().filter(|d| d.is_error()).count();
    let start = Instant::now();
    for _ in 0..iterations {
        std::hint::black_box(check_source(&schema, std::hint::black_box(&text)));
    }
    let plec_s = start.elapsed().as_secs_f64() / iterations as f64;

    let dir = std::env::temp_dir().join("plec-check-bench.config");
    let python = std::fs::write(&dir, &text).ok().and_then(|_| {
        Command::new("python3")
            .args(["-c", PY, &dir.display().to_string(), "50"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
    });

    println!("config: {lines} lines, {errors} errors");
    println!("| tool | what it does | time per file | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| plec check | parse + bind + lint + shapes, all diagnostics | {:.3} ms | 1.00 |",
        plec_s * 1e3
    );
    match python {
        Some(py) => println!(
            "| protobuf text_format.Merge (python, upb) | parse + bind, first error only | {:.3} ms | {:.2}x slower than plec |",
            py * 1e3,
            py / plec_s
        ),
        None => println!("| protobuf text_format.Merge | not run: python3 with protobuf + grpcio-tools missing | - | - |"),
    }
}
