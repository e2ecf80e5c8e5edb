#!/usr/bin/env python3
"""Scores the inputs `plec export --inputs` wrote with the model
`plec export --format onnx` wrote, on onnxruntime's CPU provider.

    python3 run_onnx.py MODEL.onnx INPUTS.npz OUT.npz [--check]

Writes every model output to OUT.npz (numpy arrays named as the outputs:
probs_<tower>, logits_<tower>). With --check, the onnx package's checker
(with strict shape inference) must accept the model first. Needs numpy and
onnxruntime only (onnx for --check).
"""

import sys

import numpy as np
import onnxruntime as ort


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    model, inputs, out = argv[:3]
    if "--check" in argv[3:]:
        import onnx

        # The path form also works for models with external data.
        onnx.checker.check_model(model, full_check=True)
        print("onnx checker: ok (onnx %s)" % onnx.__version__)
    options = ort.SessionOptions()
    # One thread: the tests run beside other work, and the result is the same.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    with np.load(inputs) as data:
        feeds = {i.name: data[i.name] for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    results = session.run(names, feeds)
    np.savez(out, **dict(zip(names, results)))
    rows = results[0].shape[0] if results else 0
    print("onnxruntime %s: %d rows -> %s" % (ort.__version__, rows, ", ".join(names)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
