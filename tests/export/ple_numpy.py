#!/usr/bin/env python3
"""A PLE forward pass in NumPy, built from a TorchEasyRec state_dict that
`plec export --format safetensors` wrote: the structure comes from the
tensor names and shapes alone, the feature contract from the file's
`__metadata__`.

    python3 ple_numpy.py MODEL.safetensors INPUTS.npz OUT.npz

INPUTS.npz is what `plec export PLAN --inputs DATA.parquet` wrote. OUT.npz
gets `logits_<t>` and `probs_<t>` for each task tower t (0, 1, ... in
config order). Assumes what the names cannot say: TorchEasyRec's defaults
(nn.ReLU after every MLP layer, BatchNorm1d with eps 1e-5 in eval mode,
no dropout at inference), binary towers (sigmoid probabilities).

The modules it reads, as TorchEasyRec's PLE builds them:
  embedding_group.emb_impls.__BASE__.ebc.embedding_bags.<table>.weight
      torchrec EmbeddingBagCollection, one table per embedding name
  _extraction_nets.<l>._task_layers.<t>.<k>.mlp.<i>.perceptron.*
  _extraction_nets.<l>._shared_layers.<k>.mlp.<i>.perceptron.*
      tzrec.modules.mlp.MLP experts (perceptron.0 Linear, .1 BatchNorm1d)
  _extraction_nets.<l>._task_gates.<t>, ._shared_gate
      nn.Linear gates of tzrec.modules.extraction_net.ExtractionNet
  _task_tower.<t>.tower_mlp.mlp.<i>.perceptron.*, _task_tower.<t>.linear
      tzrec.modules.task_tower.TaskTower
"""

import json
import re
import sys

import numpy as np
from safetensors import safe_open


def load(path):
    with safe_open(path, framework="np") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k).astype(np.float64) for k in f.keys()}
    return meta, tensors


def indices(tensors, pattern):
    """The distinct integers captured by `pattern` in the tensor names."""
    found = set()
    for name in tensors:
        m = re.fullmatch(pattern, name)
        if m:
            found.add(int(m.group(1)))
    return sorted(found)


def mlp(tensors, prefix, x):
    """tzrec's MLP at `prefix`: Linear, optional BatchNorm1d, ReLU."""
    for i in indices(tensors, re.escape(prefix) + r"\.mlp\.(\d+)\.perceptron\.0\.weight"):
        p = "%s.mlp.%d.perceptron" % (prefix, i)
        x = x @ tensors[p + ".0.weight"].T
        if p + ".0.bias" in tensors:
            x = x + tensors[p + ".0.bias"]
        if p + ".1.running_mean" in tensors:
            mean = tensors[p + ".1.running_mean"]
            var = tensors[p + ".1.running_var"]
            x = (x - mean) / np.sqrt(var + 1e-5) * tensors[p + ".1.weight"] + tensors[p + ".1.bias"]
        x = np.maximum(x, 0.0)
    return x


def linear(tensors, prefix, x):
    return x @ tensors[prefix + ".weight"].T + tensors[prefix + ".bias"]


def gate(tensors, prefix, selector, experts):
    logits = linear(tensors, prefix, selector)
    logits = logits - logits.max(axis=1, keepdims=True)
    w = np.exp(logits)
    w = w / w.sum(axis=1, keepdims=True)
    stacked = np.stack(experts, axis=1)  # [B, E, D]
    return np.einsum("be,bed->bd", w, stacked)


def features(meta, tensors, inputs):
    """The first feature group: each feature's pooled embedding or dense
    value, concatenated in the group's order."""
    contract = json.loads(meta["feature_contract"])
    by_name = {i["name"]: i for i in contract["inputs"]}
    parts = []
    for name in contract["groups"][0]["features"]:
        spec = by_name[name]
        x = inputs[name]
        if spec["dtype"] == "int64":
            table = tensors[spec["table"]]
            valid = x >= 0
            rows = table[np.where(valid, x, 0)] * valid[..., None]
            pooled = rows.sum(axis=1)
            if spec.get("pooling") == "mean":
                pooled = pooled / np.maximum(valid.sum(axis=1, keepdims=True), 1)
            parts.append(pooled)
        else:
            parts.append(x.astype(np.float64).reshape(x.shape[0], -1))
    return np.concatenate(parts, axis=1)


def ple(tensors, x):
    layers = indices(tensors, r"_extraction_nets\.(\d+)\..*")
    towers = indices(tensors, r"_task_tower\.(\d+)\.linear\.weight")
    task_in = [x] * len(towers)
    shared_in = x
    for l in layers:
        p = "_extraction_nets.%d" % l
        shared = [
            mlp(tensors, "%s._shared_layers.%d" % (p, k), shared_in)
            for k in indices(tensors, re.escape(p) + r"\._shared_layers\.(\d+)\..*")
        ]
        all_task = []
        next_in = []
        for t in towers:
            experts = [
                mlp(tensors, "%s._task_layers.%d.%d" % (p, t, k), task_in[t])
                for k in indices(tensors, re.escape(p) + r"\._task_layers\.%d\.(\d+)\..*" % t)
            ]
            all_task.extend(experts)
            next_in.append(gate(tensors, "%s._task_gates.%d" % (p, t), task_in[t], experts + shared))
        if "%s._shared_gate.weight" % p in tensors:
            shared_in = gate(tensors, p + "._shared_gate", shared_in, all_task + shared)
        task_in = next_in
    out = {}
    for t in towers:
        h = mlp(tensors, "_task_tower.%d.tower_mlp" % t, task_in[t])
        logits = linear(tensors, "_task_tower.%d.linear" % t, h)
        out["logits_%d" % t] = logits
        out["probs_%d" % t] = 1.0 / (1.0 + np.exp(-logits))
    return out


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    model, inputs_path, out = argv
    meta, tensors = load(model)
    with np.load(inputs_path) as data:
        inputs = {k: data[k] for k in data.files}
    x = features(meta, tensors, inputs)
    result = ple(tensors, x)
    np.savez(out, **result)
    rows = x.shape[0]
    print("ple_numpy: %d tensors, %d rows -> %s" % (len(tensors), rows, ", ".join(sorted(result))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
