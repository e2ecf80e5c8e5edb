//! `plec bench`: training and evaluation throughput of the PLE example
//! (or any config) on synthetic data, per batch size: samples/s, GFLOP/s
//! from the plan's `forward_flops_per_sample` (training counted as three
//! forward passes: forward, and backward for inputs and weights), and the
//! peak resident memory. A benchmark, not a test: numbers depend on the
//! machine and on what else runs on it.

use std::path::PathBuf;
use std::time::Instant;

use crate::runtime::exec::native::{isa, isa::Isa, peak as cpu_peak};
use crate::runtime::{self, Model, Progress, TrainOptions};

use super::compile::human_count;
use super::gen_data;
use super::run::{self, render_table, EvalSource};
use super::{Outcome, RunError};

/// The benchmarked config by default: the full PLE example.
pub(crate) const PLE_EXAMPLE: &str = include_str!("../../examples/ple_taobao.config");
/// `--sequence`: the PLE example with a 50-item click history under DIN.
const SEQUENCE_PLE_EXAMPLE: &str = include_str!("../../examples/ple_has_sequence.config");

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Training rows generated (one epoch is timed per batch size).
    #[arg(long, default_value_t = 65_536)]
    pub rows: usize,
    /// Evaluation rows generated.
    #[arg(long, default_value_t = 16_384)]
    pub eval_rows: usize,
    /// Batch sizes to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1024,8192")]
    pub batch_sizes: Vec<usize>,
    /// Matrix-multiply threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Threads of candle's element-wise pool (see `plec run --help`).
    #[arg(long, default_value_t = 1)]
    pub elementwise_threads: usize,
    /// CPU executor: `auto`, `native` or `candle` (see `plec run --help`).
    #[arg(long)]
    pub engine: Option<runtime::EngineChoice>,
    /// Device: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Benchmark this config instead of the built-in PLE example.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Also benchmark the built-in sequence PLE (`examples/ple_has_sequence.config`:
    /// a 50-item click history under DIN), each of its rows beside the PLE's
    /// (or `--config`'s) at the same precision and batch size.
    #[arg(long)]
    pub sequence: bool,
    /// Seed of the data and the parameters.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Matrix-multiply precisions to measure, comma separated (`fp32`,
    /// `bf16`; see `plec run --help`).
    #[arg(long, value_delimiter = ',', default_value = "fp32,bf16")]
    pub precisions: Vec<runtime::exec::native::Precision>,
    /// Instead of the model: the CPU's multiply-add peak per instruction
    /// set it has (a register-resident loop on `--threads` threads) and
    /// the best GFLOP/s of plec's own f32 multiply.
    #[arg(long)]
    pub peak: bool,
    /// Instead of the model: the GFLOP/s of the engine's multiply on linear layers given
    /// as ROWSxINxOUT (e.g. `8192x1024x512,1024x256x128`): forward, input gradient and
    /// weight gradient, in each of `--precisions` this CPU runs.
    #[arg(long, value_delimiter = ',', value_name = "ROWSxINxOUT")]
    pub gemm: Vec<String>,
}

/// Peak resident set size of this process in bytes (`VmHWM`), if known.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets the peak RSS to the current RSS (Linux; ignored elsewhere), so
/// each batch size reports its own peak.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

pub(crate) fn execute(args: &BenchArgs) -> Result<Outcome, RunError> {
    let exec = run::ExecArgs {
        threads: Some(args.threads),
        elementwise_threads: args.elementwise_threads,
        device: args.device.clone(),
        precision: runtime::exec::native::Precision::F32,
        engine: args.engine,
        max_memory: None,
    };
    let (device, threads) = exec.setup()?;
    if args.peak {
        return peak(threads);
    }
    if !args.gemm.is_empty() {
        return layer_gemms(&args.gemm, &args.precisions, threads);
    }
    if args.batch_sizes.contains(&0) {
        return Err(RunError::new("--batch-sizes must all be at least 1"));
    }
    let (name, plan) = match &args.config {
        Some(path) => match run::load_plan(path, args.seed)? {
            Ok(p) => (path.display().to_string(), p),
            Err(outcome) => return Ok(outcome),
        },
        None => {
            let path = PathBuf::from("examples/ple_taobao.config");
            match run::compile_source(&path, PLE_EXAMPLE, args.seed)? {
                Ok(p) => (format!("{} (built in)", path.display()), p),
                Err(outcome) => return Ok(outcome),
            }
        }
    };
    let mut models = vec![(name, plan)];
    if args.sequence {
        let path = PathBuf::from("examples/ple_has_sequence.config");
        match run::compile_source(&path, SEQUENCE_PLE_EXAMPLE, args.seed)? {
            Ok(p) => models.push((format!("{} (built in)", path.display()), p)),
            Err(outcome) => return Ok(outcome),
        }
    }
    if device.is_cpu() {
        println!("plec bench: {}", isa::describe());
    }
    let mut header = vec![
        "model".to_string(),
        "precision".to_string(),
        "batch".to_string(),
        "train samples/s".to_string(),
        "train GFLOP/s".to_string(),
        "ms/step".to_string(),
        "eval samples/s".to_string(),
        "eval GFLOP/s".to_string(),
        "peak RSS MiB".to_string(),
    ];
    let tasks: Vec<String> = models[0]
        .1
        .tasks
        .iter()
        .map(|t| t.tower_name.clone())
        .collect();
    header.extend(tasks.iter().map(|t| format!("AUC {t}")));
    if models.len() > 1 {
        header.push("train / eval vs first model".to_string());
    }
    let mut rows = vec![header];
    // Per (precision, batch): the first model's train and eval samples/s.
    let mut first: Vec<((String, usize), (f64, f64))> = Vec::new();
    for (mi, (name, plan)) in models.iter().enumerate() {
        for m in bench_model(args, name, plan, &device, threads)? {
            let key = (m.label.clone(), m.batch);
            let mut row = vec![short_name(name), m.label.clone(), m.batch.to_string()];
            row.extend(m.cells);
            row.extend(tasks.iter().map(|t| {
                m.aucs
                    .iter()
                    .find(|(k, _)| *k == format!("auc_{t}"))
                    .map_or_else(|| "-".to_string(), |(_, v)| format!("{v:.4}"))
            }));
            if models.len() > 1 {
                row.push(match first.iter().find(|(k, _)| *k == key) {
                    Some((_, (tr, ev))) if mi > 0 => {
                        format!("{:.2}x / {:.2}x", m.train_sps / tr, m.eval_sps / ev)
                    }
                    _ => "-".to_string(),
                });
            }
            if mi == 0 {
                first.push((key, (m.train_sps, m.eval_sps)));
            }
            rows.push(row);
        }
    }
    print!("{}", render_table(&rows));
    println!("(training GFLOP/s counts 3x the forward FLOPs; peak RSS is reset per batch size)");
    Ok(Outcome::Clean)
}

/// One measured (precision, batch size) of a model.
struct Measured {
    label: String,
    batch: usize,
    train_sps: f64,
    eval_sps: f64,
    /// train samples/s, train GFLOP/s, ms/step, eval samples/s, eval GFLOP/s, peak RSS.
    cells: Vec<String>,
    aucs: Vec<(String, f64)>,
}

/// The file name of a model's config, for the table.
fn short_name(name: &str) -> String {
    let path = name.split(' ').next().unwrap_or(name);
    std::path::Path::new(path)
        .file_stem()
        .map_or_else(|| name.to_string(), |s| s.to_string_lossy().into_owned())
}

/// One epoch of training and one evaluation of `plan` on generated data,
/// per precision and batch size.
fn bench_model(
    args: &BenchArgs,
    name: &str,
    plan: &crate::proto::plan::Plan,
    device: &candle_core::Device,
    threads: usize,
) -> Result<Vec<Measured>, RunError> {
    let flops = plan.forward_flops_per_sample as f64;
    let tmp = tempfile::Builder::new()
        .prefix("plec-bench-")
        .tempdir()
        .map_err(|e| RunError::new(format!("cannot create a temporary directory: {e}")))?;
    let t = Instant::now();
    let truth = gen_data::generate(plan, args.rows, args.eval_rows, args.seed, tmp.path())?;
    println!(
        "plec bench: {name}: {} FLOP/sample forward, {} train rows, {} eval rows (generated in {:.1}s), {threads} matmul thread{}, {} element-wise, device {}",
        human_count(plan.forward_flops_per_sample),
        truth.train_rows,
        truth.eval_rows,
        t.elapsed().as_secs_f64(),
        if threads == 1 { "" } else { "s" },
        args.elementwise_threads,
        args.device,
    );
    let train_inputs = vec![truth.train_path.display().to_string()];
    let eval_inputs = vec![truth.eval_path.display().to_string()];
    let mut out = Vec::new();
    let runs = args
        .precisions
        .iter()
        .flat_map(|&p| args.batch_sizes.iter().map(move |&bs| (p, bs)));
    for (precision, bs) in runs {
        if precision == runtime::exec::native::Precision::Bf16 && !device.is_cpu() {
            continue;
        }
        runtime::exec::native::set_default_precision(precision);
        let label =
            match precision.runs_bf16() || precision == runtime::exec::native::Precision::F32 {
                true => precision.to_string(),
                false => format!("{precision} (no bf16 kernel: fp32)"),
            };
        reset_peak_rss();
        let mut train_src =
            run::train_source(run::open_data(plan, &train_inputs)?, plan, bs, args.seed);
        let opts = TrainOptions {
            num_epochs: Some(1),
            seed: Some(args.seed),
            progress: Progress::Silent,
            ..TrainOptions::default()
        };
        let measured = (|| {
            let report = runtime::train(plan, &mut train_src, None, &opts, device)
                .map_err(run::runtime_error)?;
            let train_sps = report.samples_per_sec();
            let mut eval_src = EvalSource::new(run::open_data(plan, &eval_inputs)?, bs);
            let mut model = Model::from_plan(&report.plan, device).map_err(run::runtime_error)?;
            let t0 = Instant::now();
            let aucs = runtime::evaluate(&mut model, &mut eval_src).map_err(run::runtime_error)?;
            let eval_sps = truth.eval_rows as f64 / t0.elapsed().as_secs_f64().max(1e-9);
            Ok::<_, RunError>((report, train_sps, eval_sps, aucs))
        })();
        runtime::exec::native::set_default_precision(runtime::exec::native::Precision::F32);
        let (report, train_sps, eval_sps, aucs) = measured?;
        let rss = peak_rss().map_or_else(|| "-".to_string(), |b| format!("{}", b >> 20));
        println!(
            "  {label} batch {bs}: train {train_sps:.0} samples/s ({} steps), eval {eval_sps:.0} samples/s",
            report.steps
        );
        out.push(Measured {
            label,
            batch: bs,
            train_sps,
            eval_sps,
            cells: vec![
                format!("{train_sps:.0}"),
                format!("{:.1}", 3.0 * flops * train_sps / 1e9),
                format!("{:.1}", 1e3 / report.steps_per_sec().max(1e-9)),
                format!("{eval_sps:.0}"),
                format!("{:.1}", flops * eval_sps / 1e9),
                rss,
            ],
            aucs,
        });
    }
    Ok(out)
}

/// `plec bench --gemm`: one row per layer shape and precision.
fn layer_gemms(
    shapes: &[String],
    precisions: &[runtime::exec::native::Precision],
    threads: usize,
) -> Result<Outcome, RunError> {
    let parse = |s: &str| -> Option<[usize; 3]> {
        let v: Vec<usize> = s
            .split('x')
            .map(|d| d.trim().parse().ok().filter(|&d| d > 0))
            .collect::<Option<_>>()?;
        <[usize; 3]>::try_from(v).ok()
    };
    let dims = shapes
        .iter()
        .map(|s| {
            parse(s).ok_or_else(|| {
                RunError::new(format!(
                    "--gemm {s:?}: give a layer as ROWSxINxOUT with positive numbers, e.g. 8192x1024x512"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    println!("plec bench --gemm: {}", isa::describe());
    let mut rows = vec![[
        "precision",
        "rows x in -> out",
        "forward GFLOP/s",
        "input grad GFLOP/s",
        "weight grad GFLOP/s",
    ]
    .map(String::from)
    .to_vec()];
    for &precision in precisions {
        let bf16 = precision == runtime::exec::native::Precision::Bf16;
        if bf16 && !precision.runs_bf16() {
            println!("{precision}: skipped (this CPU has no bf16 kernel)");
            continue;
        }
        for &[m, k, n] in &dims {
            let g = cpu_peak::gemm_layer(m, n, k, threads, bf16);
            let mut row = vec![precision.to_string(), format!("{m} x {k} -> {n}")];
            row.extend(g.iter().map(|g| format!("{g:.1}")));
            rows.push(row);
        }
    }
    print!("{}", render_table(&rows));
    Ok(Outcome::Clean)
}

/// `plec bench --peak`: one line per instruction set this CPU has (the
/// multiply-add loop), then plec's f32 multiply on the chosen kernel.
/// The `peak ...` and `gemm ...` lines are read by `benches/compare.py`.
fn peak(threads: usize) -> Result<Outcome, RunError> {
    println!("plec bench --peak: {}", isa::describe());
    let have = Isa::detected();
    let mut best = 0f64;
    for level in [Isa::Portable, Isa::Avx2, Isa::Avx512] {
        if level > have {
            println!("peak {level}: - (this CPU has no {level})");
            continue;
        }
        // The loop's first pass wakes the cores up; the second is the figure.
        cpu_peak::fma_peak(level, threads);
        let g = cpu_peak::fma_peak(level, threads);
        // The engine's kernels are held to the instruction sets it may use
        // (`PLEC_ISA` caps them), so the percentages below are of those.
        if level <= isa::chosen() {
            best = best.max(g);
        }
        println!("peak {level}: {g:.1} GFLOP/s f32 multiply-add on {threads} thread(s)");
    }
    if isa::chosen() < have {
        println!(
            "peak best: {best:.1} GFLOP/s (the best of the instruction sets PLEC_ISA={} allows)",
            isa::chosen()
        );
    } else {
        println!("peak best: {best:.1} GFLOP/s");
    }
    let bf16_peak = cpu_peak::bf16_dot_peak(threads).map(|_| {
        // As above: the first pass wakes the cores up.
        cpu_peak::bf16_dot_peak(threads).unwrap_or(0.0)
    });
    match bf16_peak {
        Some(g) => println!(
            "peak bf16: {g:.1} GFLOP/s bf16 dot product (vdpbf16ps) on {threads} thread(s)"
        ),
        None => println!("peak bf16: - (this CPU has no avx512_bf16)"),
    }
    let mut top = 0f64;
    for (shape, g) in cpu_peak::gemm_best(threads, false) {
        top = top.max(g);
        println!(
            "gemm {shape}: {g:.1} GFLOP/s ({:.0}% of peak) on {}",
            100.0 * g / best.max(1e-9),
            isa::chosen().f32_kernel_name()
        );
    }
    println!(
        "gemm best: {top:.1} GFLOP/s ({:.0}% of peak)",
        100.0 * top / best.max(1e-9)
    );
    if isa::chosen().bf16_kernel().is_some() {
        let peak = bf16_peak.unwrap_or(best);
        let mut top = 0f64;
        for (shape, g) in cpu_peak::gemm_best(threads, true) {
            top = top.max(g);
            println!(
                "gemm bf16 {shape}: {g:.1} GFLOP/s ({:.0}% of bf16 peak) on {}",
                100.0 * g / peak.max(1e-9),
                isa::chosen().bf16_kernel_name()
            );
        }
        println!(
            "gemm bf16 best: {top:.1} GFLOP/s ({:.0}% of bf16 peak)",
            100.0 * top / peak.max(1e-9)
        );
    }
    Ok(Outcome::Clean)
}
