#!/usr/bin/env python3
"""Run the README's fine_tune_checkpoint recipe with a real TorchEasyRec.

Benchmark-side, not CI (it needs TorchEasyRec, torch and torchrec, as
`tests/export/tzrec_keys.py` does, whose model building and stand-ins it
reuses).

    python tests/export/tzrec_fine_tune.py CONFIG MODEL.safetensors WORKDIR

1. Builds TorchEasyRec's model for CONFIG, loads plec's export into it
   (`load_state_dict`, strict) and saves it with TorchEasyRec's own
   `checkpoint_util.save_model(WORKDIR/plec_init, TrainWrapper(model))`,
   as the README says.
2. Then does what `tzrec.main.train_and_evaluate` does with
   `train_config.fine_tune_checkpoint: "WORKDIR/plec_init"`: finds it with
   `checkpoint_util.latest_checkpoint` and restores it with
   `checkpoint_util.restore_model` into a *fresh* model (new random
   weights) wrapped in `TrainWrapper`.
3. Every tensor of the restored model must equal plec's export exactly, and
   must have changed from the fresh model's initial value (so the restore,
   not the initialization, put it there; buffers equal at both ends, such as
   a never-updated count, are listed and allowed).

Single process, CPU: torchrun's sharding of the tables over machines is
TorchEasyRec's own restore and is not exercised here. Exit 0 when every
tensor arrives; 1 otherwise.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tzrec_keys  # noqa: E402  (stand-ins and model building)


def materialize(model, torch):
    # torchrec builds tables on the meta device; give them CPU storage and
    # initial values (what DistributedModelParallel would do).
    model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for _, t in model.state_dict().items():
            if t.dtype.is_floating_point:
                t.copy_(torch.rand(t.shape, generator=gen, dtype=t.dtype) - 0.5)


def main():
    if len(sys.argv) != 4:
        print(__doc__.split("\n\n")[2], file=sys.stderr)
        return 2
    config, weights, workdir = sys.argv[1:]
    tzrec_keys.install_standins()
    import torch
    from safetensors.torch import load_file
    from tzrec.models.model import TrainWrapper
    from tzrec.utils import checkpoint_util

    exported = load_file(weights)
    model = tzrec_keys.build_model(config)
    materialize(model, torch)
    model.load_state_dict(exported, strict=True)
    ckpt = os.path.join(workdir, "plec_init")
    checkpoint_util.save_model(ckpt, TrainWrapper(model))
    files = sorted(os.listdir(os.path.join(ckpt, "model")))
    print(f"saved {ckpt}/model: {len(files)} files ({', '.join(files[:4])}...)")

    found, step = checkpoint_util.latest_checkpoint(ckpt)
    if found is None:
        print(f"latest_checkpoint({ckpt}) finds nothing")
        return 1
    fresh = tzrec_keys.build_model(config)
    materialize(fresh, torch)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    checkpoint_util.restore_model(found, TrainWrapper(fresh))
    after = fresh.state_dict()

    wrong, unchanged = [], []
    for key, want in exported.items():
        got = after.get(key)
        if got is None or got.shape != want.shape or not torch.equal(got, want):
            wrong.append(key)
        elif torch.equal(before[key], want):
            unchanged.append(key)
    extra = sorted(set(after) - set(exported))
    print(
        f"{config}: latest_checkpoint -> {found} (step {step}); restored "
        f"{len(exported) - len(wrong)} of {len(exported)} tensors equal to plec's "
        f"export; not in the export: {len(extra)}; equal to the fresh model "
        f"before the restore too: {unchanged or 'none'}"
    )
    for key in wrong[:20]:
        print(f"  differs: {key}")
    bad_unchanged = [
        k for k in unchanged if exported[k].dtype.is_floating_point and exported[k].numel() > 1
    ]
    return 1 if wrong or extra or bad_unchanged else 0


if __name__ == "__main__":
    sys.exit(main())
