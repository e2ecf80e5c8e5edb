#!/usr/bin/env python3
"""PyTorch eager reference for plec's PLE benchmark (issue 5).

Builds the same PLE model as `plec compile` from the same config numbers,
reads the same parquet files, encodes features exactly as plec does
(src/data/encode.rs: xxh3_64 of the value's string form mod the bucket
count; RAW_BUCKETIZED: bucket = number of boundaries <= x; a null value
with no default is an empty bag, i.e. a zero embedding), trains one epoch
with the plan's optimizers (sparse Adagrad on the embedding tables through
`EmbeddingBag(sparse=True)`, Adam on the dense parameters), evaluates, and
prints one JSON object: train and eval samples/s, per-task AUC (binned as
plec's metric, and exact), peak RSS.

The model is written the way TorchEasyRec writes it: one `nn.Sequential`
MLP per expert, a linear+softmax gate per task (and a shared gate between
layers), towers with a logits layer. Initialization follows the plan: torch's
default uniform(+-1/sqrt(fan_in)) for linears and each table's
uniform(+-init_scale) from the plan. Data is read and encoded before the
clock starts and batches are pre-built, so the timed loop is pure
forward/backward/optimizer work (this favours PyTorch: plec's timed loop
includes its data reading, which runs on a prefetch thread).

torch is used only here (pip install torch pyarrow xxhash numpy), never in
plec's tests or CI.

Usage:
  plec compile examples/ple_taobao.config -o ple.bin
  plec inspect ple.bin --format json > ple.json
  python ple_torch.py --config examples/ple_taobao.config --plan-json ple.json \
      --train data/train.parquet --eval data/eval.parquet --batch-size 1024
  python ple_torch.py --ceiling          # large-matmul GFLOP/s (fp32, bf16)
"""

import argparse
import json
import re
import resource
import sys
import time

import numpy as np


# --------------------------------------------------------------------------
# A small protobuf text-format reader: enough for the numbers we need
# (nested messages, repeated fields, [a, b] lists, scalars, # comments).
# --------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:#[^\n]*\n?\s*)*"
    r"(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|[{}\[\]:,;<>]|[^\s{}\[\]:,;<>#\"']+)"
)


def _tokens(text):
    pos = 0
    out = []
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            break
        out.append(m.group(1))
        pos = m.end()
    return out


def _scalar(tok):
    if tok[0] in "\"'":
        return bytes(tok[1:-1], "utf-8").decode("unicode_escape")
    try:
        return int(tok, 0)
    except ValueError:
        pass
    try:
        return float(tok.rstrip("fF"))
    except ValueError:
        return tok


def _parse_message(toks, i, end):
    msg = {}
    while i < len(toks) and toks[i] != end:
        name = toks[i]
        i += 1
        if toks[i] == ":":
            i += 1
        if toks[i] in ("{", "<"):
            close = "}" if toks[i] == "{" else ">"
            val, i = _parse_message(toks, i + 1, close)
            i += 1
            msg.setdefault(name, []).append(val)
        elif toks[i] == "[":
            i += 1
            while toks[i] != "]":
                if toks[i] == "{":
                    val, i = _parse_message(toks, i + 1, "}")
                    msg.setdefault(name, []).append(val)
                    i += 1
                elif toks[i] == ",":
                    i += 1
                else:
                    msg.setdefault(name, []).append(_scalar(toks[i]))
                    i += 1
            i += 1
        else:
            msg.setdefault(name, []).append(_scalar(toks[i]))
            i += 1
        if i < len(toks) and toks[i] in (",", ";"):
            i += 1
    return msg, i


def parse_config(path):
    with open(path, encoding="utf-8") as f:
        msg, _ = _parse_message(_tokens(f.read()), 0, None)
    return msg


def one(msg, name, default=None):
    v = msg.get(name)
    return v[0] if v else default


# --------------------------------------------------------------------------
# Features, as plec encodes them.
# --------------------------------------------------------------------------


def encode_column(table, feat):
    """Returns (ids int64 [N], present bool [N]) for one single-valued
    feature, following src/data/encode.rs."""
    import xxhash

    col = table.column(feat["input_columns"][0])
    kind = feat["kind"]
    n = len(col)
    if kind == "ID_HASH":
        num = int(feat["num_ids"])
        vals = col.to_pylist()
        ids = np.zeros(n, dtype=np.int64)
        present = np.ones(n, dtype=bool)
        h = xxhash.xxh3_64_intdigest
        for r, v in enumerate(vals):
            if v is None or v == "":
                present[r] = False
                continue
            s = v if isinstance(v, str) else str(v)
            ids[r] = h(s.encode("utf-8")) % num
        return ids, present
    if kind == "RAW_BUCKETIZED":
        x = col.to_numpy(zero_copy_only=False).astype(np.float64)
        present = ~np.isnan(x)
        b = np.asarray(feat["boundaries"], dtype=np.float64)
        ids = np.searchsorted(b, np.where(present, x, 0.0), side="right").astype(np.int64)
        return ids, present
    raise SystemExit(f"feature kind {kind} is not supported by this reference")


def load_encoded(path, features, labels):
    import pyarrow.parquet as pq

    cols = sorted({c for f in features for c in f["input_columns"]} | set(labels))
    table = pq.read_table(path, columns=cols)
    ids, present = [], []
    for f in features:
        i, p = encode_column(table, f)
        ids.append(i)
        present.append(p)
    y = np.stack([table.column(l).to_numpy().astype(np.float32) for l in labels], 1)
    return np.stack(ids, 1), np.stack(present, 1), y


def make_batches(torch, ids, present, y, bs):
    """Pre-builds (per-feature (ids, offsets), labels) for each batch."""
    out = []
    n = ids.shape[0]
    for s in range(0, n, bs):
        e = min(s + bs, n)
        feats = []
        for f in range(ids.shape[1]):
            p = present[s:e, f]
            fid = ids[s:e, f][p]
            offs = np.concatenate([[0], np.cumsum(p)[:-1]]).astype(np.int64)
            feats.append((torch.from_numpy(fid.copy()), torch.from_numpy(offs)))
        out.append((feats, torch.from_numpy(y[s:e].copy())))
    return out


# --------------------------------------------------------------------------
# The model.
# --------------------------------------------------------------------------


def build_model(torch, cfg, plan):
    nn = torch.nn

    def mlp(in_dim, units):
        layers = []
        for u in units:
            layers += [nn.Linear(in_dim, u), nn.ReLU()]
            in_dim = u
        return nn.Sequential(*layers), in_dim

    class Gate(nn.Module):
        def __init__(self, sel_dim, k):
            super().__init__()
            self.linear = nn.Linear(sel_dim, k)

        def forward(self, sel, experts):
            w = torch.softmax(self.linear(sel), dim=-1)  # [B, K]
            e = torch.stack(experts, dim=1)  # [B, K, D]
            return torch.bmm(w.unsqueeze(1), e).squeeze(1)

    class PLE(nn.Module):
        def __init__(self):
            super().__init__()
            self.tables = nn.ModuleList()
            for t in plan["tables"]:
                emb = nn.EmbeddingBag(int(t["num_rows"]), int(t["dim"]), mode="sum", sparse=True)
                s = float(t["init_scale"]) or (1.0 / int(t["num_rows"])) ** 0.5
                nn.init.uniform_(emb.weight, -s, s)
                self.tables.append(emb)
            self.feature_table = [int(f["table"]) for f in plan["features"]]
            width = sum(int(f["embedding_dim"]) for f in plan["features"])
            ple = one(one(cfg, "model_config"), "ple")
            towers = ple["task_towers"]
            self.ntask = len(towers)
            self.layers = nn.ModuleList()
            task_w = [width] * self.ntask
            shared_w = width
            nets = ple["extraction_networks"]
            for li, net in enumerate(nets):
                L = nn.Module()
                tunits = one(net, "task_expert_net")["hidden_units"]
                sunits = one(net, "share_expert_net", {}).get("hidden_units", [])
                k_task = int(one(net, "expert_num_per_task", 0))
                k_share = int(one(net, "share_num", 0))
                L.task_experts = nn.ModuleList()
                out_w = None
                for t in range(self.ntask):
                    ex = nn.ModuleList()
                    for _ in range(k_task):
                        m, out_w = mlp(task_w[t], tunits)
                        ex.append(m)
                    L.task_experts.append(ex)
                L.shared = nn.ModuleList()
                for _ in range(k_share):
                    m, out_w = mlp(shared_w, sunits)
                    L.shared.append(m)
                L.task_gates = nn.ModuleList(
                    [Gate(task_w[t], k_task + k_share) for t in range(self.ntask)]
                )
                L.shared_gate = (
                    Gate(shared_w, self.ntask * k_task + k_share) if li + 1 < len(nets) else None
                )
                self.layers.append(L)
                task_w = [out_w] * self.ntask
                shared_w = out_w
            self.towers = nn.ModuleList()
            for t, tw in enumerate(towers):
                units = one(tw, "mlp", {}).get("hidden_units", [])
                m, w = mlp(task_w[t], units)
                self.towers.append(nn.Sequential(m, nn.Linear(w, 1)))

        def forward(self, feats):
            x = torch.cat(
                [self.tables[t](ids, offs) for t, (ids, offs) in zip(self.feature_table, feats)], 1
            )
            task_in = [x] * self.ntask
            shared_in = x
            for L in self.layers:
                shared = [m(shared_in) for m in L.shared]
                tex = [[m(task_in[t]) for m in L.task_experts[t]] for t in range(self.ntask)]
                nxt = [L.task_gates[t](task_in[t], tex[t] + shared) for t in range(self.ntask)]
                if L.shared_gate is not None:
                    allx = [e for es in tex for e in es] + shared
                    shared_in = L.shared_gate(shared_in, allx)
                task_in = nxt
            return [tw(task_in[t]).squeeze(-1) for t, tw in enumerate(self.towers)]

    return PLE()


# --------------------------------------------------------------------------
# Metrics.
# --------------------------------------------------------------------------


def exact_auc(scores, labels):
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    lab = labels[order] > 0.5
    # Average ranks for ties.
    ranks = np.empty(len(s), dtype=np.float64)
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i : j + 1] = (i + j) / 2.0 + 1.0
        i = j + 1
    npos = lab.sum()
    nneg = len(lab) - npos
    if npos == 0 or nneg == 0:
        return float("nan")
    return float((ranks[lab].sum() - npos * (npos + 1) / 2.0) / (npos * nneg))


def binned_auc(scores, labels, n):
    """torchmetrics BinaryAUROC(thresholds=n), as plec's binned AUC."""
    th = np.linspace(0.0, 1.0, max(n, 2), dtype=np.float32)
    pos = labels > 0.5
    tp = np.array([(scores[pos] >= t).sum() for t in th], dtype=np.float64)
    fp = np.array([(scores[~pos] >= t).sum() for t in th], dtype=np.float64)
    tpr = tp / max(pos.sum(), 1)
    fpr = fp / max((~pos).sum(), 1)
    tpr, fpr = tpr[::-1], fpr[::-1]
    return float(np.trapezoid(tpr, fpr) if hasattr(np, "trapezoid") else np.trapz(tpr, fpr))


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------


def ceiling(torch, threads, bf16=True):
    torch.set_num_threads(threads)
    out = {"threads": threads}
    kinds = [("fp32", torch.float32)] + ([("bf16", torch.bfloat16)] if bf16 else [])
    for name, dt in kinds:
        m, k, n = 8192, 1024, 1024
        a = torch.randn(m, k, dtype=dt)
        b = torch.randn(k, n, dtype=dt)
        for _ in range(3):
            a @ b
        best = 0.0
        for _ in range(5):
            t = time.perf_counter()
            reps = 5
            for _ in range(reps):
                a @ b
            dt_s = (time.perf_counter() - t) / reps
            best = max(best, 2.0 * m * k * n / dt_s / 1e9)
        out[f"{name}_gflops"] = best
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config")
    ap.add_argument("--plan-json", help="`plec inspect plan.bin --format json`")
    ap.add_argument("--train")
    ap.add_argument("--eval")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ceiling", action="store_true", help="measure matmul GFLOP/s and exit")
    ap.add_argument("--no-bf16-ceiling", action="store_true",
                    help="with --ceiling: fp32 only (a CPU without bf16 instructions takes "
                    "minutes for one bf16 matmul)")
    ap.add_argument("--bf16", action="store_true",
                    help="bf16 autocast for the model's forward (and so its backward); "
                    "losses, optimizers and master weights stay fp32")
    args = ap.parse_args()

    import torch

    if args.ceiling:
        print(json.dumps(ceiling(torch, args.threads, not args.no_bf16_ceiling)))
        return
    for need in ("config", "plan_json", "train", "eval"):
        if getattr(args, need) is None:
            ap.error(f"--{need.replace('_', '-')} is required")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = parse_config(args.config)
    with open(args.plan_json, encoding="utf-8") as f:
        plan = json.load(f)
    labels = [t["label_name"] for t in plan["tasks"]]
    t0 = time.perf_counter()
    tr = load_encoded(args.train, plan["features"], labels)
    ev = load_encoded(args.eval, plan["features"], labels)
    train_batches = make_batches(torch, *tr, args.batch_size)
    eval_batches = make_batches(torch, *ev, args.batch_size)
    encode_s = time.perf_counter() - t0
    del tr

    model = build_model(torch, cfg, plan)
    tcfg = plan["train"]
    so, do = tcfg["sparse_optimizer"], tcfg["dense_optimizer"]
    if so["kind"] != "ADAGRAD" or do["kind"] != "ADAM":
        raise SystemExit("this reference implements sparse ADAGRAD + dense ADAM only")
    sparse_params = [p for t in model.tables for p in t.parameters()]
    sparse_ids = {id(p) for p in sparse_params}
    dense_params = [p for p in model.parameters() if id(p) not in sparse_ids]
    sparse_opt = torch.optim.Adagrad(
        sparse_params,
        lr=so["lr"],
        eps=so["eps"],
        initial_accumulator_value=so["initial_accumulator_value"],
    )
    dense_opt = torch.optim.Adam(
        dense_params, lr=do["lr"], betas=(do["beta1"], do["beta2"]), eps=do["eps"]
    )
    bce = torch.nn.BCEWithLogitsLoss()
    weights = [float(t["weight"]) for t in plan["tasks"]]

    import contextlib

    def autocast():
        if args.bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    model.train()
    samples = 0
    t0 = time.perf_counter()
    for feats, y in train_batches:
        with autocast():
            logits = [lg.float() for lg in model(feats)]
        loss = sum(w * bce(lg, y[:, i]) for i, (w, lg) in enumerate(zip(weights, logits)))
        sparse_opt.zero_grad(set_to_none=True)
        dense_opt.zero_grad(set_to_none=True)
        loss.backward()
        dense_opt.step()
        sparse_opt.step()
        samples += y.shape[0]
    train_s = time.perf_counter() - t0
    final_loss = float(loss)

    model.eval()
    preds = [[] for _ in labels]
    ys = []
    t0 = time.perf_counter()
    with torch.inference_mode(), autocast():
        for feats, y in eval_batches:
            for i, lg in enumerate(model(feats)):
                preds[i].append(torch.sigmoid(lg.float()))
            ys.append(y)
    eval_s = time.perf_counter() - t0
    ys = torch.cat(ys).numpy()
    auc, auc_exact = {}, {}
    for i, t in enumerate(plan["tasks"]):
        p = torch.cat(preds[i]).numpy()
        th = next((m["thresholds"] for m in t["metrics"] if m["kind"] == "AUC"), 200)
        auc[t["tower_name"]] = binned_auc(p, ys[:, i], int(th))
        auc_exact[t["tower_name"]] = exact_auc(p, ys[:, i])
    eval_rows = ys.shape[0]
    print(
        json.dumps(
            {
                "impl": "pytorch",
                "precision": "bf16" if args.bf16 else "fp32",
                "torch": torch.__version__,
                "batch_size": args.batch_size,
                "threads": args.threads,
                "train_rows": samples,
                "eval_rows": eval_rows,
                "train_seconds": train_s,
                "train_samples_per_sec": samples / train_s,
                "eval_samples_per_sec": eval_rows / eval_s,
                "final_loss": final_loss,
                "auc": auc,
                "auc_exact": auc_exact,
                "peak_rss_mib": peak_rss_mib(),
                "encode_seconds": encode_s,
                "dense_params": sum(p.numel() for p in dense_params),
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
