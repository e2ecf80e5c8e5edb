#!/usr/bin/env python3
"""plec vs the PyTorch reference on the same data, back to back: one table.

For each precision and batch size: `plec run` (one epoch, 2 threads,
evaluation at the end) then `plec eval` of the trained plan, then
`reference/ple_torch.py` on the same parquet files (bf16: autocast).
plec's samples/s are end to end (its training includes reading and
encoding the parquet files on a second thread); the reference encodes
everything before it starts the clock, so the eval ratio uses plec's
model-only figure (`forward_seconds` of `plec eval`) against it. Peak RSS is each child process's own high-water mark
(os.wait4). The measured ceiling is a large matmul in PyTorch on the
same threads, per precision (`ple_torch.py --ceiling`); the CPU's own peak
is `plec bench --peak` (a register-resident multiply-add loop per
instruction set, and the bf16 dot-product loop where the CPU has
avx512_bf16), and each run's GFLOP/s is also given as a share of the peak
of its precision. On a CPU without bf16
instructions (neither avx512_bf16 nor AMX) bf16 is skipped, with a note:
PyTorch's bf16 matmul there is a slow reference path (minutes per product). GFLOP/s counts training as three
forward passes (forward, backward for inputs, backward for weights), as
`plec bench` does. A second table gives each repeat's ratios of runs made
a minute apart (plec, then PyTorch) and their median, which the machine's
drift disturbs less than best-of figures. Standard library only; the
reference needs torch.

  python3 benches/compare.py --plec target/release/plec --python venv/bin/python
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, env=None):
    """Runs cmd; returns (stdout, peak RSS MiB, wall seconds)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    # Read before waiting so a full pipe cannot block the child.
    out, err = p.stdout.read(), p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        sys.stderr.write(err.decode(errors="replace"))
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}")
    return out.decode(), ru.ru_maxrss / 1024.0, wall


def cpu_has_bf16():
    """Whether the CPU has bf16 instructions PyTorch can use (Linux flags)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return True
    return "avx512_bf16" in flags or "amx_bf16" in flags


def measure_peak(plec, threads):
    """`plec bench --peak`: the FMA peak (best instruction set) and plec's best GEMM."""
    out = run([plec, "bench", "--peak", "--threads", str(threads)])[0]
    sys.stdout.write(out)
    peak = {}
    for line in out.splitlines():
        if line.startswith("peak best:"):
            peak["peak_best"] = float(line.split()[2])
        elif line.startswith("gemm best:"):
            peak["gemm_best"] = float(line.split()[2])
        elif line.startswith("peak bf16:") and line.split()[2] != "-":
            peak["peak_bf16"] = float(line.split()[2])
        elif line.startswith("gemm bf16 best:"):
            peak["gemm_bf16_best"] = float(line.split()[3])
        elif line.startswith("plec bench --peak: cpu "):
            peak["cpu"] = line[len("plec bench --peak: cpu "):]
    return peak


def table(rows):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, r in enumerate(rows):
        lines.append("  ".join(str(c).rjust(w) for c, w in zip(r, widths)))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def paired_table(runs):
    """Ratios within each repeat: plec against the PyTorch run right after it
    (same precision and batch) and against that repeat's PyTorch fp32 run of
    the batch, median over the repeats. The machine's speed drifts between
    minutes; a ratio of two runs a minute apart drifts less than best-of
    figures taken far apart."""
    seen = {}
    per = {}  # (precision, batch) -> list of (repeat, plec run, pytorch run)
    for plec, torch in zip(runs[0::2], runs[1::2]):
        key = (plec["precision"], plec["batch"])
        rep = seen.get(key, 0)
        seen[key] = rep + 1
        per.setdefault(key, []).append((rep, plec, torch))

    def median(xs):
        xs = sorted(xs)
        n = len(xs)
        return (xs[n // 2] + xs[(n - 1) // 2]) / 2 if n else float("nan")

    def torch_fp32(batch, rep):
        return next((t for r, _, t in per.get(("fp32", batch), []) if r == rep), None)

    rows = [["precision", "batch", "repeats", "train vs PyTorch same precision",
             "train vs PyTorch fp32", "eval vs PyTorch fp32 (model only)"]]
    for (prec, batch), pairs in per.items():
        same = [p["train_sps"] / t["train_sps"] for _, p, t in pairs]
        fp32 = [(p, torch_fp32(batch, r)) for r, p, _ in pairs]
        fp32 = [(p, t) for p, t in fp32 if t is not None]
        train32 = [p["train_sps"] / t["train_sps"] for p, t in fp32]
        eval32 = [p["eval_model_sps"] / t["eval_model_sps"] for p, t in fp32]
        fmt = lambda xs: (f"{median(xs):.2f}x (" + ", ".join(f"{x:.2f}" for x in xs) + ")"
                          if xs else "-")
        rows.append([prec, batch, len(pairs), fmt(same), fmt(train32), fmt(eval32)])
    return ("paired ratios, median over the repeats (each repeat's in brackets):\n"
            + table(rows))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--plec", default="target/release/plec")
    ap.add_argument("--python", default=sys.executable, help="a python with torch")
    ap.add_argument("--config", default="examples/ple_taobao.config")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--eval-rows", type=int, default=50_000)
    ap.add_argument("--batch-sizes", default="1024,8192")
    ap.add_argument("--precisions", default="fp32,bf16",
                    help="plec's --precision values; PyTorch runs the same (bf16: autocast)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/plec-compare")
    ap.add_argument("--repeat", type=int, default=1,
                    help="alternate plec and PyTorch this many times per batch size and "
                    "keep each one's best throughput (the machine may be shared)")
    ap.add_argument("--json", help="also write every measurement here")
    args = ap.parse_args()

    os.makedirs(args.work, exist_ok=True)
    plan = os.path.join(args.work, "ple.bin")
    plan_json = os.path.join(args.work, "ple.json")
    data = os.path.join(args.work, f"data-{args.rows}-{args.eval_rows}")
    run([args.plec, "compile", args.config, "-o", plan])
    with open(plan_json, "w") as f:
        f.write(run([args.plec, "inspect", plan, "--format", "json"])[0])
    with open(plan_json) as f:
        flops = json.load(f)["forward_flops_per_sample"]
    train = os.path.join(data, "train.parquet")
    evalp = os.path.join(data, "eval.parquet")
    if not os.path.exists(evalp):
        run([args.plec, "gen-data", args.config, "--rows", str(args.rows),
             "--eval-rows", str(args.eval_rows), "-o", data, "--seed", "0"])
    ref = os.path.join(HERE, "reference", "ple_torch.py")
    bf16_ok = cpu_has_bf16()
    precisions = args.precisions.split(",")
    if not bf16_ok and "bf16" in precisions:
        precisions = [p for p in precisions if p != "bf16"]
        print("note: this CPU has no bf16 instructions (avx512_bf16 or amx_bf16): bf16 "
              "skipped (PyTorch's bf16 matmul would be a slow reference path)")
    # The bf16 ceiling only where bf16 is measured: without bf16 instructions (or with
    # PyTorch capped below them, e.g. ONEDNN_MAX_CPU_ISA=AVX2) it is a slow reference path.
    bf16_ceiling = bf16_ok and "bf16" in precisions
    def measure_ceiling():
        c = json.loads(run([args.python, "-W", "ignore", ref, "--ceiling",
                            "--threads", str(args.threads)]
                           + ([] if bf16_ceiling else ["--no-bf16-ceiling"]))[0])
        c.setdefault("bf16_gflops", float("nan"))
        return c

    peak = measure_peak(args.plec, args.threads)
    ceiling = measure_ceiling()
    results = []
    runs = []
    cases = [(p, int(b)) for p in precisions
             for b in args.batch_sizes.split(",")] * args.repeat
    for prec, bs in cases:
        out = os.path.join(args.work, f"run-{prec}-{bs}")
        _, rss, _ = run([args.plec, "run", plan, "--data", train, "--eval", evalp,
                         "--epochs", "1", "--batch-size", str(bs), "--threads",
                         str(args.threads), "--precision", prec, "--eval-every", "0",
                         "-q", "-o", out])
        with open(os.path.join(out, "metrics.json")) as f:
            m = json.load(f)
        ev = json.loads(run([args.plec, "eval", os.path.join(out, "plan.bin"), "--data",
                             evalp, "--batch-size", str(bs), "--threads",
                             str(args.threads), "--precision", prec, "--format", "json"])[0])
        runs.append({
            "impl": "plec", "precision": prec, "batch": bs, "load": os.getloadavg()[0],
            "train_sps": m["samples_per_sec"],
            "eval_sps": ev["rows"] / ev["seconds"],
            # The model alone (parquet decoding and feature encoding
            # excluded), as the PyTorch reference times its eval.
            "eval_model_sps": ev["rows"] / max(ev.get("forward_seconds", ev["seconds"]), 1e-9),
            "auc": {k[4:]: v for k, v in m["eval"].items() if k.startswith("auc_")},
            "rss": rss,
        })
        o, rss, _ = run([args.python, "-W", "ignore", ref, "--config", args.config,
                         "--plan-json", plan_json, "--train", train, "--eval", evalp,
                         "--batch-size", str(bs), "--threads", str(args.threads)]
                        + (["--bf16"] if prec == "bf16" else []))
        t = json.loads(o)
        runs.append({
            "impl": "pytorch", "precision": prec, "batch": bs, "load": os.getloadavg()[0],
            "train_sps": t["train_samples_per_sec"],
            "eval_sps": t["eval_samples_per_sec"],
            "eval_model_sps": t["eval_samples_per_sec"],
            "auc": t["auc"], "rss": rss,
        })
    # Best of the repeats per (impl, batch), by training throughput; eval
    # throughput is the best eval of the repeats.
    for r in runs:
        best = next((x for x in results if x["impl"] == r["impl"] and x["batch"] == r["batch"]
                     and x["precision"] == r["precision"]), None)
        if best is None:
            results.append(dict(r))
        else:
            if r["train_sps"] > best["train_sps"]:
                eval_sps = max(best["eval_sps"], r["eval_sps"])
                model_sps = max(best["eval_model_sps"], r["eval_model_sps"])
                best.update(r)
                best["eval_sps"], best["eval_model_sps"] = eval_sps, model_sps
            best["eval_sps"] = max(best["eval_sps"], r["eval_sps"])
            best["eval_model_sps"] = max(best["eval_model_sps"], r["eval_model_sps"])
    # A second ceiling measurement; the higher one is the ceiling.
    again = measure_ceiling()
    for k in ("fp32_gflops", "bf16_gflops"):
        ceiling[k] = max(ceiling[k], again[k])
    ceil = ceiling["fp32_gflops"]
    fma = peak.get("peak_best", float("nan"))
    # bf16 rows are held to the bf16 dot-product peak where the CPU has one (plec's fp32
    # kernel alone can exceed PyTorch's own matmul, so that is no ceiling).
    peak_of = lambda prec: peak.get("peak_bf16", fma) if prec == "bf16" else fma
    ceil_of = lambda prec: ceiling["bf16_gflops"] if prec == "bf16" and ceiling["bf16_gflops"] else ceil
    tasks = list(results[0]["auc"].keys())
    rows = [["precision", "batch", "impl", "train samples/s", "eval samples/s",
             "eval model-only", "train GFLOP/s", "% PyTorch matmul", "% CPU peak"] + [f"AUC {t}" for t in tasks]
            + ["peak RSS MiB", "train vs PyTorch fp32", "eval vs PyTorch fp32",
               "train vs PyTorch same precision"]]
    def ref(batch, prec):
        return next((x for x in results if x["batch"] == batch and x["impl"] == "pytorch"
                     and x["precision"] == prec), None)
    for r in results:
        g = 3.0 * flops * r["train_sps"] / 1e9
        fp32 = ref(r["batch"], "fp32")
        same = ref(r["batch"], r["precision"])
        ratio = lambda a, b: f"{a / b:.2f}x" if b else "-"
        rows.append([r["precision"], r["batch"], r["impl"], f"{r['train_sps']:.0f}",
                     f"{r['eval_sps']:.0f}", f"{r['eval_model_sps']:.0f}", f"{g:.1f}",
                     f"{100 * g / ceil_of(r['precision']):.0f}%",
                     f"{100 * g / peak_of(r['precision']):.0f}%"]
                    + [f"{r['auc'].get(t, float('nan')):.4f}" for t in tasks]
                    + [f"{r['rss']:.0f}",
                       ratio(r["train_sps"], fp32["train_sps"] if fp32 else 0),
                       ratio(r["eval_model_sps"], fp32["eval_model_sps"] if fp32 else 0),
                       ratio(r["train_sps"], same["train_sps"] if same else 0)])
    print(f"PLE example, {args.rows} train rows, {args.eval_rows} eval rows, "
          f"{args.threads} threads, best of {args.repeat}; ceiling = fp32 matmul {ceil:.0f} GFLOP/s "
          f"(bf16 {ceiling['bf16_gflops']:.0f}); FMA peak {fma:.0f} GFLOP/s, bf16 dot peak "
          f"{peak.get('peak_bf16', float('nan')):.0f}, plec's best GEMM "
          f"{peak.get('gemm_best', float('nan')):.0f} (bf16 {peak.get('gemm_bf16_best', float('nan')):.0f}) "
          f"({peak.get('cpu', '?')}); '% PyTorch matmul' and '% CPU peak' are of the row's "
          f"precision; ratios are plec / PyTorch")
    print(table(rows))
    print(paired_table(runs))
    print("every run (impl, precision, batch, train samples/s, eval samples/s, "
          "1-min load just after it):")
    for r in runs:
        print(f"  {r['impl']:8} {r['precision']:5} {r['batch']:6} {r['train_sps']:8.0f} "
              f"{r['eval_sps']:8.0f}  load {r['load']:.1f}")
    try:
        load = os.getloadavg()
        print(f"load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    except OSError:
        pass
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ceiling": ceiling, "peak": peak, "flops": flops, "results": results, "runs": runs},
                      f, indent=1)


if __name__ == "__main__":
    main()
