#!/usr/bin/env python3
"""onnxruntime CPU throughput of a model `plec export` wrote, on the inputs
`plec export --inputs` wrote, at a given batch size (a benchmark, not a test).

    python3 ort_throughput.py MODEL.onnx INPUTS.npz [--batch 1024] [--threads N] [--seconds 10]

Prints samples/s over whole batches cut from the inputs (repeated to fill
the time); compare with the samples/s `plec predict` prints for the same
data (`--batch-size 1024 --threads N`).
"""

import argparse
import time

import numpy as np
import onnxruntime as ort


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("inputs")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args()
    o = ort.SessionOptions()
    o.intra_op_num_threads = a.threads
    o.inter_op_num_threads = 1
    s = ort.InferenceSession(a.model, o, providers=["CPUExecutionProvider"])
    data = dict(np.load(a.inputs))
    rows = next(iter(data.values())).shape[0]
    reps = -(-a.batch // rows)
    big = {k: np.concatenate([v] * reps)[: a.batch] for k, v in data.items()}
    names = [x.name for x in s.get_outputs()]
    s.run(names, big)  # warm up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < a.seconds:
        s.run(names, big)
        n += a.batch
    dt = time.perf_counter() - t0
    print("onnxruntime %s, batch %d, %d thread(s): %.0f samples/s" % (ort.__version__, a.batch, a.threads, n / dt))


if __name__ == "__main__":
    main()
