#!/usr/bin/env bash
# Compares plec's safetensors export (`plec export --format safetensors`)
# with the state_dict of the model a real TorchEasyRec builds from the same
# config (tests/export/tzrec_keys.py): keys, shapes, dtypes, then a strict
# load_state_dict of the file into that model, then TorchEasyRec's forward
# pass with those weights on rows plec encoded against `plec predict` (the
# plan trained 4 steps on `plec gen-data` rows first); and the other way, a
# freshly initialized TorchEasyRec model's own state_dict (saved with
# safetensors.torch.save_file) through `plec import` and `plec predict`
# against TorchEasyRec's forward pass. Benchmark-side, not CI.
#
#   scripts/tzrec-state-dict-keys.sh [CONFIG...]
#
# Environment:
#   PYTHON      python with TorchEasyRec, torch, torchrec, safetensors
#               (default /work/tzrec-venv/bin/python; see the venv recipe
#               below)
#   TZREC_SRC   optional: a TorchEasyRec source tree (protos compiled) put
#               first on PYTHONPATH instead of the installed tzrec-sekai
#   PLEC        the plec binary (default $CARGO_TARGET_DIR/release/plec)
#   OUT         folder for plans, files and JSON reports (default a temp dir)
#
# The venv this was run with (Python 3.11, all from PyPI: the PyTorch CPU
# index was unreachable, so torch is PyPI's CUDA build, run on the CPU):
#   python3 -m venv /work/tzrec-venv && pip=/work/tzrec-venv/bin/pip
#   $pip install torch==2.8.0 torchrec==1.3.0 fbgemm-gpu-cpu==1.3.0
#   $pip uninstall -y fbgemm-gpu     # torchrec pulled the CUDA fbgemm-gpu 1.9.0
#   $pip install --no-deps --force-reinstall fbgemm-gpu-cpu==1.3.0
#   $pip install --no-deps tzrec-sekai==0.9.6
#   $pip install torchmetrics==1.0.3 "grpcio-tools<1.63.0" anytree pandas pyarrow \
#       safetensors psutil fsspec scikit-learn urllib3 pyodps==0.12.5.1 \
#       "alibabacloud_credentials<2.0.0,>=1.0.2" "tensorboard<2.18" confluent-kafka
#   $pip install protobuf==4.25.9    # tzrec's generated code; tensorboard<2.18
# (tzrec-sekai's own requirements, TorchEasyRec 0.9.6's requirements/*.txt,
# pin pyfg, graphlearn and common_io wheels from Alibaba's OSS bucket, not
# on PyPI; tzrec_keys.py installs stand-ins for them.)
#
# tzrec-sekai 0.9.6 has no PEPNet; for the PEPNet configs use the source
# tree of TorchEasyRec's commit that added it (777f1e8, version 1.0.11,
# whose model code runs on the same torch/torchrec):
#   git --git-dir=.../TorchEasyRec.git archive 777f1e8 tzrec | tar -x -C /work/tzrec-pepnet
#   (cd /work/tzrec-pepnet && python -m grpc_tools.protoc -I . \
#       tzrec/protos/*.proto tzrec/protos/models/*.proto --python_out=. --pyi_out=.)
#   TZREC_SRC=/work/tzrec-pepnet scripts/tzrec-state-dict-keys.sh examples/pepnet_taobao.config
#
# Exit 0 when every config that plec exports matches exactly (a config
# plec refuses to export counts as no mismatch); 1 otherwise.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-/work/tzrec-venv/bin/python}
plec=${PLEC:-${CARGO_TARGET_DIR:-$root/target}/release/plec}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
if [ ! -x "$plec" ]; then
    echo "no plec binary at $plec (cargo build --release first)" >&2
    exit 2
fi
if [ $# -eq 0 ]; then
    set -- "$root"/examples/ple_taobao.config "$root"/examples/ple_demo.config \
        "$root"/examples/mmoe_taobao.config "$root"/examples/dbmtl_taobao.config \
        "$root"/tests/data/dbmtl_variational_dropout.config \
        "$root"/tests/data/mmoe_norms.config "$root"/tests/data/dbmtl_mask_net.config \
        "$root"/tests/data/dbmtl_mask_net_parallel.config "$root"/tests/data/mmoe_sequences.config \
        "$root"/examples/pepnet_taobao.config \
        "$root"/tests/data/pepnet_prelu.config "$root"/examples/ple_has_sequence.config \
        "$root"/examples/mmoe_self_attention.config "$root"/examples/dc2vr_taobao.config
fi
if [ -n "${TZREC_SRC:-}" ]; then
    export PYTHONPATH="$TZREC_SRC${PYTHONPATH:+:$PYTHONPATH}"
fi
status=0
summary=()
for cfg in "$@"; do
    name=$(basename "$cfg" .config)
    plan="$out/$name.plan.bin"
    file="$out/$name.safetensors"
    echo "=== $name"
    # A few training steps on generated rows (so biases, norms and
    # dropouts hold trained values), then plec's predictions on held-out
    # rows and those rows as model inputs.
    if ! { "$plec" gen-data "$cfg" --rows 2000 --eval-rows 500 -o "$out/$name.data" --seed 3 &&
        "$plec" run "$cfg" --data "$out/$name.data/train.parquet" --steps 4 --threads 1 \
            --out "$out/$name.run" -q &&
        cp "$out/$name.run/plan.bin" "$plan" &&
        "$plec" predict "$plan" --data "$out/$name.data/eval.parquet" -o "$out/$name.pred.parquet" &&
        "$plec" export "$plan" --inputs "$out/$name.data/eval.parquet" -o "$out/$name.inputs.npz"; } \
        >"$out/$name.compile.log" 2>&1; then
        echo "plec could not train, predict or export inputs:"; tail -5 "$out/$name.compile.log"
        if ! "$plec" compile "$cfg" -o "$plan" >>"$out/$name.compile.log" 2>&1; then
            echo "plec compile failed:"; tail -5 "$out/$name.compile.log"
            summary+=("$name: plec compile failed")
            status=1
            continue
        fi
    fi
    if ! "$plec" export "$plan" --format safetensors -o "$file" >"$out/$name.export.log" 2>&1; then
        echo "plec export refused:"; cat "$out/$name.export.log"
        summary+=("$name: plec refuses the export")
        continue
    fi
    fwd=()
    if [ -f "$out/$name.pred.parquet" ] && [ -f "$out/$name.inputs.npz" ]; then
        fwd=(--inputs "$out/$name.inputs.npz" --predictions "$out/$name.pred.parquet"
            --import-check "$plec" "$out/$name.data/eval.parquet" "$out/$name.import")
    fi
    "$python" -W ignore "$root/tests/export/tzrec_keys.py" "$cfg" "$file" --json "$out/$name.json" \
        ${fwd[@]+"${fwd[@]}"} 2>"$out/$name.tzrec.log" | tee "$out/$name.txt"
    line=$(grep '^SUMMARY: ' "$out/$name.txt" | sed 's/^SUMMARY: //')
    if [ -z "$line" ]; then
        echo "TorchEasyRec could not build the model:"; tail -5 "$out/$name.tzrec.log"
        summary+=("$name: TorchEasyRec could not build the model ($(tail -1 "$out/$name.tzrec.log"))")
        status=1
        continue
    fi
    case $line in MATCH*) ;; *) status=1 ;; esac
    summary+=("$name: $line")
done
echo
echo "summary (reports in $out):"
printf '  %s\n' "${summary[@]}"
exit $status
