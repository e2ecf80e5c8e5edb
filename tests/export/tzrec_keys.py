#!/usr/bin/env python3
"""Compare plec's safetensors export with a real TorchEasyRec model's state_dict.

Benchmark-side, not CI: it needs TorchEasyRec (the `tzrec-sekai` package,
or a source checkout on PYTHONPATH with its protos compiled), torch and
torchrec. `scripts/tzrec-state-dict-keys.sh` sets that up and runs it for
the example configs.

    python tests/export/tzrec_keys.py CONFIG MODEL.safetensors [--json OUT]
        [--inputs INPUTS.npz --predictions PRED.parquet]
        [--import-check PLEC DATA.parquet WORKDIR]

It builds TorchEasyRec's model for CONFIG on the CPU the way
`tzrec.main` does (features, then the model class the config names), with
`data_config.fg_mode` set to FG_NONE, and compares the *bare* model's
`state_dict()` (no `model.` prefix of TorchEasyRec's `TrainWrapper`, which
only wraps it) with the tensors in MODEL.safetensors: keys, shapes and
dtypes. Then it loads the file into the model with `load_state_dict(...,
strict=True)` (after `to_empty(device="cpu")`: torchrec builds the tables
on the meta device) and reads every tensor back to check the values
arrived unchanged.

TorchEasyRec imports three packages that are not on PyPI (`pyfg`, the
feature generator; `graphlearn`, for negative samplers; `common_io`, for
ODPS tables). None of them is used to build a model under FG_NONE, so
stand-in modules are installed for them: any attribute is a placeholder
class that raises if it is ever called. If building the model needed one
of them, the run fails loudly; nothing is faked.

With --inputs and --predictions (what `plec export PLAN --inputs DATA`
and `plec predict PLAN --data DATA` wrote for the plan the file came
from), TorchEasyRec's forward pass with the loaded weights must give plec's
probabilities (--rtol, default 1e-4 relative). With --import-check, the
other way: a fresh TorchEasyRec model's own state_dict goes through
`plec import` and `plec predict`, against TorchEasyRec's forward pass.

Exit status: 0 when the key sets, shapes and dtypes agree exactly, the
strict load succeeds and the values read back unchanged, and every
forward comparison asked for agrees; 1 otherwise.
"""

import argparse
import importlib.abc
import importlib.machinery
import json
import struct
import sys
import types

STANDINS = ("pyfg", "graphlearn", "common_io")


class _UnavailableMeta(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Unavailable


class _Unavailable(metaclass=_UnavailableMeta):
    """Placeholder for anything of a stand-in module (its attributes too,
    for annotations such as `common_io.table.TableReader`)."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError(
            "tzrec_keys.py: a stand-in module (pyfg/graphlearn/common_io) was "
            "called while building the model; the comparison is not valid"
        )


class _StandinModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Unavailable


class _StandinFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in STANDINS:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        m = _StandinModule(spec.name)
        m.__path__ = []
        return m

    def exec_module(self, module):
        pass


def install_standins():
    for name in STANDINS:
        try:
            __import__(name)
            continue  # the real package is there
        except Exception:
            pass
    sys.meta_path.append(_StandinFinder())


def safetensors_header(path):
    """{key: (dtype, shape)} of a safetensors file, read from its header."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return {k: (v["dtype"], list(v["shape"])) for k, v in header.items()}


TORCH_TO_ST = {
    "torch.float32": "F32",
    "torch.int64": "I64",
    "torch.int32": "I32",
    "torch.float64": "F64",
}


def build_model(config_path):
    """TorchEasyRec's model for the config, built as `tzrec.main`'s
    `_create_features` and `_create_model` build it (called through them
    when `tzrec.main` imports; a source tree newer than the installed
    torchrec may fail to import `tzrec.main` for its planner imports,
    then the same two calls are made directly)."""
    from tzrec.protos import data_pb2
    from tzrec.utils import config_util

    config = config_util.load_pipeline_config(config_path)
    data_config = config.data_config
    data_config.fg_mode = data_config_fg_none(data_pb2)
    labels = list(data_config.label_fields)
    weights = list(data_config.sample_weight_fields)
    try:
        from tzrec import main as tz_main
    except ImportError as e:
        print(f"  (tzrec.main does not import here: {e}; building directly)")
        tz_main = None
    if tz_main is not None:
        features = tz_main._create_features(list(config.feature_configs), data_config)
        return tz_main._create_model(
            config.model_config, features, labels, sample_weights=weights
        )
    from tzrec.features.feature import create_features
    from tzrec.models.model import BaseModel
    from tzrec.protos.model_pb2 import Kernel as KernelProto
    from tzrec.utils.config_util import which_msg

    features = create_features(
        list(config.feature_configs),
        fg_mode=data_config.fg_mode,
        fg_encoded_multival_sep=data_config.fg_encoded_multival_sep,
        force_base_data_group=data_config.force_base_data_group,
    )
    model_cls = BaseModel.create_class(which_msg(config.model_config, "model"))
    model = model_cls(config.model_config, features, labels, sample_weights=weights)
    try:
        from tzrec.ops import Kernel

        model.set_kernel(Kernel[KernelProto.Name(config.model_config.kernel)])
    except (ImportError, AttributeError, ValueError):
        pass  # kernels pick fused ops; they hold no parameters
    return model


def data_config_fg_none(data_pb2):
    return data_pb2.FgMode.Value("FG_NONE")


def model_config_groups(model):
    return list(model._base_model_config.feature_groups)


def compare_forward(model, inputs_path, predictions_path, rtol):
    """TorchEasyRec's forward pass (eval mode) on the rows plec encoded, its
    probabilities against `plec predict`'s.

    The batch is built the way TorchEasyRec's data parser hands features to
    the model: one KeyedJaggedTensor of the sparse features' ids (plec's
    `-1` padding dropped) and one KeyedTensor of the dense values, both
    under the `__BASE__` data group. With PEPNet's `domain_input_name`
    TorchEasyRec scores each row with every domain's tower
    (`probs_<tower>_<d>`); the row's domain (plec's `domain_<label>` input)
    picks the one plec predicts."""
    import numpy as np
    import pyarrow.parquet as pq
    import torch
    from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor, KeyedTensor
    from tzrec.datasets.utils import Batch

    with np.load(inputs_path) as data:
        inputs = {k: data[k] for k in data.files}
    # plec names a sequence group's inputs `<sequence group>.<feature>`;
    # TorchEasyRec's batch is keyed by feature name (the same values in
    # every sequence group that lists the feature).
    for k in list(inputs):
        if "." in k and not k.startswith("domain_"):
            inputs.setdefault(k.split(".", 1)[1], inputs[k])
            del inputs[k]
    eg = model.embedding_group
    sparse_names = []
    for impl in list(eg.emb_impls.values()) + list(eg.seq_emb_impls.values()):
        collections = [impl.ebc] if hasattr(impl, "ebc") else []
        collections += list(getattr(impl, "ec_dict", {}).values())
        for c in collections:
            configs = (
                c.embedding_bag_configs()
                if hasattr(c, "embedding_bag_configs")
                else c.embedding_configs()
            )
            for cfg in configs:
                sparse_names.extend(n for n in cfg.feature_names if n not in sparse_names)
    rows = next(iter(inputs.values())).shape[0]
    dense_names = [
        n for n, v in inputs.items()
        if v.dtype.kind == "f" and v.ndim == 2 and n not in sparse_names
    ]
    seq_dense_names = [n for n, v in inputs.items() if v.dtype.kind == "f" and v.ndim == 3]
    missing = [n for n in sparse_names if n not in inputs]
    if missing:
        return {"ok": False, "max_rel": float("nan"), "towers": {},
                "error": f"plec's inputs lack {missing}"}
    sparse = None
    if sparse_names:
        values, lengths = [], []
        for n in sparse_names:
            x = inputs[n].reshape(rows, -1)
            valid = x >= 0
            values.append(x[valid])
            lengths.append(valid.sum(axis=1))
        sparse = KeyedJaggedTensor.from_lengths_sync(
            keys=sparse_names,
            values=torch.from_numpy(np.concatenate(values).astype(np.int64)),
            lengths=torch.from_numpy(np.concatenate(lengths).astype(np.int32)),
        )
    dense = None
    if dense_names:
        parts = [inputs[n].reshape(rows, -1).astype(np.float32) for n in dense_names]
        dense = KeyedTensor(
            keys=dense_names,
            length_per_key=[p.shape[1] for p in parts],
            values=torch.from_numpy(np.concatenate(parts, axis=1)),
        )
    # A dense sequence's step count is that of an id sequence of its
    # sequence group (plec pads the steps with zeros).
    seq_dense = {}
    for n in seq_dense_names:
        steps = None
        for g in model_config_groups(model):
            for sg in g.sequence_groups:
                if n not in sg.feature_names:
                    continue
                for other in sg.feature_names:
                    v = inputs.get(other)
                    if v is not None and v.dtype.kind == "i" and v.ndim == 2 and v.shape[1] == inputs[n].shape[1]:
                        steps = (v >= 0).sum(axis=1)
                        break
        if steps is None:
            return {"ok": False, "max_rel": float("nan"), "towers": {},
                    "error": f"no step count for the dense sequence {n}"}
        x = inputs[n]
        vals = np.concatenate([x[r, : steps[r]] for r in range(rows)]).astype(np.float32)
        seq_dense[n] = JaggedTensor(
            values=torch.from_numpy(vals.reshape(-1, x.shape[2])),
            lengths=torch.from_numpy(steps.astype(np.int32)),
        )
    batch = Batch(
        sparse_features={"__BASE__": sparse} if sparse is not None else {},
        dense_features={"__BASE__": dense} if dense is not None else {},
        sequence_dense_features=seq_dense,
    )
    model.eval()
    with torch.no_grad():
        pred = {k: v.detach().numpy() for k, v in model.predict(batch).items()}
    table = pq.read_table(predictions_path)
    domain = {k[len("domain_"):]: v for k, v in inputs.items() if k.startswith("domain_")}
    towers = {}
    ok = True
    worst = 0.0
    for column in table.column_names:
        if not column.startswith("probs_"):
            continue
        want = np.asarray(table.column(column).to_pylist(), dtype=np.float64)
        tower = column[len("probs_"):]
        if column in pred:
            got = pred[column].astype(np.float64)
        elif f"{column}_0" in pred and len(domain) == 1:
            (picks,) = domain.values()
            per = np.stack(
                [pred[f"{column}_{d}"] for d in range(int(picks.max()) + 1)], axis=1
            )
            got = per[np.arange(rows), picks.reshape(-1)].astype(np.float64)
        else:
            towers[tower] = {"rows": 0, "max_abs": float("nan"), "max_rel": float("nan"),
                             "error": f"TorchEasyRec predicts no {column}: {sorted(pred)}"}
            ok = False
            continue
        got = got.reshape(want.shape)
        diff = np.abs(got - want)
        rel = diff / np.maximum(np.maximum(np.abs(got), np.abs(want)), 1e-30)
        towers[tower] = {"rows": int(want.size), "max_abs": float(diff.max()),
                         "max_rel": float(rel.max())}
        worst = max(worst, float(rel.max()))
        ok = ok and bool(rel.max() <= rtol)
    if not towers:
        ok = False
    return {"ok": ok, "max_rel": worst, "towers": towers, "tzrec_outputs": sorted(pred)}


def import_check(config, plec, data, workdir, rtol):
    """A state_dict TorchEasyRec saved itself, into plec: a fresh model (its
    meta-device tables allocated and drawn uniform, every float parameter
    moved off its initial value by a little noise, so no tensor is left at
    a value plec's compile would also give it), saved with
    `safetensors.torch.save_file`, read by `plec import --config`, scored by
    `plec predict`, and compared with TorchEasyRec's own forward pass."""
    import os
    import subprocess

    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = build_model(config)
    before = model.state_dict()
    meta = {k for k, v in before.items() if v.is_meta}
    kept = {k: v.clone() for k, v in before.items() if not v.is_meta}
    if meta:
        # to_empty reallocates every tensor: put the initialized ones back.
        model = model.to_empty(device="cpu")
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if k in kept:
                v.copy_(kept[k])
            elif v.is_floating_point():
                v.uniform_(-0.1, 0.1)
        for _, p in model.named_parameters():
            if p.is_floating_point():
                p.add_(torch.randn_like(p) * 0.05)
        for k, v in model.state_dict().items():
            if k.endswith("running_var"):
                v.uniform_(0.5, 2.0)
            elif k.endswith("running_mean"):
                v.uniform_(-0.2, 0.2)
    os.makedirs(workdir, exist_ok=True)
    st = os.path.join(workdir, "tzrec_state_dict.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, st)
    plan = os.path.join(workdir, "imported.bin")
    pred = os.path.join(workdir, "imported.pred.parquet")
    inputs = os.path.join(workdir, "imported.inputs.npz")
    for cmd in (
        [plec, "import", st, "--config", config, "-o", plan],
        [plec, "predict", plan, "--data", data, "-o", pred, "--threads", "1"],
        [plec, "export", plan, "--inputs", data, "-o", inputs],
    ):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            return {"ok": False, "error": f"{' '.join(cmd[:2])} failed: {r.stdout}{r.stderr}"}
    return compare_forward(model, inputs, pred, rtol)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("safetensors")
    ap.add_argument("--json", help="write the comparison here")
    ap.add_argument("--show", type=int, default=40, help="keys listed per kind")
    ap.add_argument(
        "--inputs",
        help="`plec export PLAN --inputs DATA -o INPUTS.npz` of the same plan: "
        "also run TorchEasyRec's forward pass on these rows",
    )
    ap.add_argument(
        "--predictions",
        help="`plec predict PLAN --data DATA -o PRED.parquet`: the probabilities "
        "TorchEasyRec's forward pass must reproduce",
    )
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument(
        "--import-check",
        nargs=3,
        metavar=("PLEC", "DATA", "WORKDIR"),
        help="also the other way: save a freshly initialized TorchEasyRec model's "
        "state_dict with safetensors.torch.save_file, `PLEC import` it with the "
        "config, and compare `PLEC predict` on DATA (a parquet file) with "
        "TorchEasyRec's forward pass on the same rows",
    )
    args = ap.parse_args()

    install_standins()
    import torch

    import tzrec

    model = build_model(args.config)
    sd = model.state_dict()
    tz = {
        k: (TORCH_TO_ST.get(str(v.dtype), str(v.dtype)), list(v.shape))
        for k, v in sd.items()
    }
    pl = safetensors_header(args.safetensors)

    matched = sorted(k for k in tz if k in pl and tz[k] == pl[k])
    shape_mismatch = sorted(k for k in tz if k in pl and tz[k] != pl[k])
    only_tz = sorted(k for k in tz if k not in pl)
    only_pl = sorted(k for k in pl if k not in tz)

    # The TrainWrapper only prefixes: check it on the same model.
    from tzrec.models.model import TrainWrapper

    wrapped = list(TrainWrapper(model).state_dict().keys())
    wrapper_prefix_only = sorted(wrapped) == sorted("model." + k for k in tz)

    load_ok, load_error, values_equal = False, "", False
    if not (shape_mismatch or only_tz or only_pl):
        from safetensors.torch import load_file

        loaded = load_file(args.safetensors)
        # torchrec builds the tables on the meta device (DistributedModel-
        # Parallel allocates them); give every tensor CPU storage first.
        if any(t.is_meta for t in model.state_dict().values()):
            model = model.to_empty(device="cpu")
        try:
            model.load_state_dict(loaded, strict=True)
            load_ok = True
            after = model.state_dict()
            values_equal = all(torch.equal(after[k], loaded[k]) for k in loaded)
        except Exception as e:  # a strict-load failure is a result
            load_error = f"{type(e).__name__}: {e}"

    forward = None
    if load_ok and args.inputs and args.predictions:
        forward = compare_forward(model, args.inputs, args.predictions, args.rtol)
    imported = None
    if load_ok and args.import_check:
        imported = import_check(args.config, *args.import_check, rtol=args.rtol)

    version = getattr(tzrec, "__version__", None)
    if version is None:
        try:
            from tzrec.version import __version__ as version
        except Exception:
            version = "?"
    import torchrec

    result = {
        "config": args.config,
        "model_class": type(model).__name__,
        "tzrec": version,
        "tzrec_path": tzrec.__file__,
        "torch": torch.__version__,
        "torchrec": getattr(torchrec, "__version__", "?"),
        "tzrec_keys": len(tz),
        "plec_keys": len(pl),
        "matched": len(matched),
        "only_in_tzrec": only_tz,
        "only_in_plec": only_pl,
        "shape_mismatches": {k: {"tzrec": tz[k], "plec": pl[k]} for k in shape_mismatch},
        "train_wrapper_adds_only_model_prefix": wrapper_prefix_only,
        "strict_load": load_ok,
        "strict_load_error": load_error,
        "values_equal_after_load": values_equal,
        "forward": forward,
        "import_check": imported,
        "tzrec_state_dict": {k: tz[k] for k in sorted(tz)},
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)

    print(f"config: {args.config}  ({type(model).__name__}, tzrec {version}, "
          f"torch {torch.__version__}, torchrec {result['torchrec']})")
    print(f"  tzrec state_dict keys: {len(tz)}   plec safetensors keys: {len(pl)}")
    print(f"  matched (key, shape, dtype): {len(matched)}")
    print(f"  only in tzrec: {len(only_tz)}   only in plec: {len(only_pl)}   "
          f"shape/dtype mismatches: {len(shape_mismatch)}")
    for title, keys in (("only in tzrec", only_tz), ("only in plec", only_pl)):
        for k in keys[: args.show]:
            src = tz if title == "only in tzrec" else pl
            print(f"    {title}: {k} {src[k][0]} {src[k][1]}")
        if len(keys) > args.show:
            print(f"    ... {len(keys) - args.show} more")
    for k in shape_mismatch[: args.show]:
        print(f"    mismatch: {k} tzrec {tz[k]} plec {pl[k]}")
    print(f"  TrainWrapper(model).state_dict() = 'model.' + model.state_dict(): "
          f"{wrapper_prefix_only}")
    if load_ok:
        print(f"  load_state_dict(strict=True): ok; values equal after load: {values_equal}")
    elif load_error:
        print(f"  load_state_dict(strict=True) FAILED: {load_error}")
    ok = not (shape_mismatch or only_tz or only_pl) and load_ok and values_equal
    fwd = ""
    if forward is not None:
        for tower, r in forward["towers"].items():
            print(f"  forward {tower}: {r['rows']} rows, max |diff| {r['max_abs']:.2e}, "
                  f"max relative {r['max_rel']:.2e}")
        if forward.get("error"):
            print(f"  forward pass: {forward['error']}")
        print(f"  forward pass: {'agrees' if forward['ok'] else 'DIFFERS'} "
              f"(rtol {args.rtol})")
        ok = ok and forward["ok"]
        fwd = f", forward {'agrees' if forward['ok'] else 'DIFFERS'} (max relative {forward['max_rel']:.1e})"
    if imported is not None:
        if imported.get("error"):
            print(f"  import check: {imported['error']}")
        for tower, r in imported.get("towers", {}).items():
            print(f"  import check {tower}: {r['rows']} rows, max relative {r['max_rel']:.2e}")
        print(f"  TorchEasyRec's own state_dict -> plec import -> plec predict: "
              f"{'agrees' if imported['ok'] else 'DIFFERS'} with TorchEasyRec's forward pass")
        ok = ok and imported["ok"]
        fwd += f", import {'agrees' if imported['ok'] else 'DIFFERS'}"
    print("  RESULT: " + ("MATCH" if ok else "MISMATCH"))
    print(
        f"SUMMARY: {'MATCH' if ok else 'MISMATCH'} {type(model).__name__}: "
        f"matched {len(matched)}/{len(tz)}, only in tzrec {len(only_tz)}, "
        f"only in plec {len(only_pl)}, shape/dtype mismatches {len(shape_mismatch)}, "
        f"strict load {'ok' if load_ok else 'failed'}, values equal {values_equal}{fwd}"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
