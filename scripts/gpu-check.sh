#!/usr/bin/env bash
# The GPU checks of plec's CUDA path, as one script for the GPU machine
# (an H200: 16 cores, no network, CUDA 13 driver and libraries in its image).
#
# Nothing is built there. Build here first:
#     scripts/build-cuda.sh            # also stages .gpu-bin/bins.tar.xz (plec, cuda-tests)
# then run this from the repo root on the GPU machine, carrying .gpu-bin
# (device tool: command `scripts/gpu-check.sh`, carry [".gpu-bin"],
# timeout_s 600). It should take 3-5 minutes.
#
# Checks (the issue's numbering):
#   (1) forward outputs of the PLE example, same plan and batches, CPU vs
#       CUDA: max |cuda - cpu| / max |cpu| <= 1e-4 (tests/cuda.rs, which
#       also checks dropout masks bit for bit and 4 training steps);
#   (2) one epoch of `plec run` on `plec gen-data` output, CPU vs CUDA:
#       per-task AUC within 0.005;
#   (3) `plec bench` on CUDA at batch 1024, 8192 and 65536: train and eval
#       samples/s, peak GPU memory used (nvidia-smi, above the idle level).
# Prints one table at the end; logs go to $OUT (the device tool's output
# folder) or /tmp/plec-gpu-check.
#
# Environment: PLEC_GPU_BIN (default .gpu-bin), PLEC_AUC_CONFIG (default
# examples/ple_demo.config), PLEC_AUC_ROWS (default 60000),
# PLEC_BENCH_SIZES (default 1024,8192,65536), PLEC_CHECK_DEVICE (default
# cuda; `cpu` is a dry run of the script itself on a machine without a GPU:
# it skips (1) and compares the CPU with itself).
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo" || exit 1
bin="${PLEC_GPU_BIN:-$repo/.gpu-bin}"
out="${OUT:-/tmp/plec-gpu-check}"
work="$(mktemp -d /tmp/plec-gpu-work.XXXXXX)"
mkdir -p "$out"
log="$out/gpu-check.log"
results="$out/results.tsv"
: >"$log"
printf 'check\tdetail\tcpu\tcuda\tvalue\tlimit\tresult\n' >"$results"
start=$(date +%s)

say() { printf '[gpu-check %3ds] %s\n' "$(($(date +%s) - start))" "$*" | tee -a "$log" >&2; }
row() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$results"; }
fail=0

# --- setup ---------------------------------------------------------------------
if [[ -f "$bin/bins.tar.xz" ]]; then
    mkdir -p "$work/bin"
    if command -v xz >/dev/null; then
        xz -dc "$bin/bins.tar.xz" | tar -C "$work/bin" -xf -
    else
        python3 -c 'import sys,tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' \
            "$bin/bins.tar.xz" "$work/bin"
    fi
    cp "$bin/BUILD_INFO" "$work/bin/" 2>/dev/null
    bin="$work/bin"
fi
[[ -x "$bin/plec" && -x "$bin/cuda-tests" ]] ||
    { say "missing $bin/plec or $bin/cuda-tests: run scripts/build-cuda.sh here and carry .gpu-bin"; exit 2; }
cat "$bin/BUILD_INFO" 2>/dev/null | tee -a "$log" >&2
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1 | tee -a "$log" >&2

# The binaries need the CUDA 13 user libraries (cuBLAS, cuBLASLt, cuRAND,
# NVRTC, cudart) and the driver's libcuda.so.1. Find them in the image.
libdirs=""
for lib in libcublasLt.so.13 libcublas.so.13 libcurand.so.10 libnvrtc.so.13 libcudart.so.13; do
    found=""
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
        /opt/torch/.venv/lib/python3*/site-packages/nvidia/cu13/lib \
        /usr/local/lib/python3*/dist-packages/nvidia/cu13/lib; do
        [[ -e "$d/$lib" ]] && { found="$d"; break; }
    done
    if [[ -z "$found" ]]; then
        f="$(find / -xdev -name "$lib" -not -path '/proc/*' 2>/dev/null | head -1)"
        [[ -n "$f" ]] && found="$(dirname "$f")"
    fi
    if [[ -n "$found" && ":$libdirs:" != *":$found:"* ]]; then libdirs="${libdirs:+$libdirs:}$found"; fi
done
export LD_LIBRARY_PATH="${libdirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
say "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
missing="$(ldd "$bin/plec" "$bin/cuda-tests" 2>&1 | grep 'not found' | sort -u)"
if [[ -n "$missing" ]]; then
    say "libraries not found:"
    echo "$missing" | tee -a "$log" >&2
    exit 2
fi
cores="$(nproc)"
dev="${PLEC_CHECK_DEVICE:-cuda}"
export RAYON_NUM_THREADS="$cores"

# GPU memory sampler: peak of memory.used (MiB) while a command runs.
gpu_mem_now() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 2>/dev/null | head -1 | tr -d ' '; }
with_gpu_mem() { # with_gpu_mem FILE cmd... : writes the peak MiB to FILE
    local peak_file="$1"
    shift
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 100 >"$peak_file.samples" 2>/dev/null &
    local sampler=$!
    "$@"
    local rc=$?
    kill "$sampler" 2>/dev/null
    wait "$sampler" 2>/dev/null
    sort -n "$peak_file.samples" | tail -1 | tr -d ' ' >"$peak_file"
    return $rc
}

# --- (1) forward, dropout masks, training steps: CPU vs CUDA ------------------
say "(1) tests/cuda.rs: forward, dropout masks, training steps"
if [[ "$dev" == cpu ]]; then
    echo "CHECK skipped_without_gpu 0 0 ok" >"$work/tests.log"
    rc=0
else
    timeout 300 "$bin/cuda-tests" --ignored --nocapture --test-threads=1 cuda_ >"$work/tests.log" 2>&1
    rc=$?
fi
cat "$work/tests.log" >>"$log"
grep -E '^(CHECK|forward|losses|test )' "$work/tests.log" >&2
if ! grep -q '^CHECK ' "$work/tests.log"; then
    row "(1) tests" "cuda-tests exit $rc" - - - - FAIL
    fail=1
fi
while read -r _ name value limit result; do
    row "(1) $name" "tests/cuda.rs" - - "$value" "$limit" "$result"
    [[ "$result" == ok ]] || fail=1
done < <(grep '^CHECK ' "$work/tests.log")
[[ $rc -eq 0 ]] || fail=1

# --- (2) one epoch on gen-data output: AUC CPU vs CUDA ------------------------
cfg="${PLEC_AUC_CONFIG:-examples/ple_demo.config}"
rows="${PLEC_AUC_ROWS:-60000}"
say "(2) gen-data $cfg --rows $rows, one epoch on cpu and on cuda"
"$bin/plec" gen-data "$cfg" --rows "$rows" -o "$work/data" >>"$log" 2>&1 || say "gen-data failed"
for d in cpu cuda; do
    [[ $d == cuda ]] && d_flag="$dev" || d_flag=cpu
    t0=$(date +%s.%N)
    "$bin/plec" run "$cfg" --data "$work/data/train.parquet" --eval "$work/data/eval.parquet" \
        --epochs 1 --device "$d_flag" --threads "$cores" -q -o "$work/run-$d" >>"$log" 2>&1 ||
        say "plec run --device $d_flag failed (exit $?)"
    say "  $d_flag: $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f s", b-a}')"
done
if [[ -f "$work/run-cpu/metrics.json" && -f "$work/run-cuda/metrics.json" ]]; then
    python3 - "$work/run-cpu/metrics.json" "$work/run-cuda/metrics.json" >"$work/auc.tsv" <<'EOF'
import json, sys
cpu, gpu = (json.load(open(p)) for p in sys.argv[1:3])
ce, ge = cpu.get("eval") or {}, gpu.get("eval") or {}
keys = [k for k in ce if "auc" in k.lower()]
if not keys:
    print("auc\tno AUC in metrics.json\t-\t-\t-\t0.005\tFAIL")
for k in keys:
    c, g = ce[k], ge.get(k)
    if g is None:
        print(f"{k}\tmissing on cuda\t{c:.5f}\t-\t-\t0.005\tFAIL")
        continue
    d = abs(c - g)
    print(f"{k}\t|cuda - cpu|\t{c:.5f}\t{g:.5f}\t{d:.5f}\t0.005\t{'ok' if d <= 0.005 else 'FAIL'}")
for name, m in (("train samples/s", "samples_per_sec"),):
    print(f"{name}\tone epoch, plan batch\t{cpu.get(m, 0):.0f}\t{gpu.get(m, 0):.0f}\t-\t-\tinfo")
EOF
    while IFS=$'\t' read -r k detail c g v lim res; do
        row "(2) $k" "$detail" "$c" "$g" "$v" "$lim" "$res"
        [[ "$res" == FAIL ]] && fail=1
    done <"$work/auc.tsv"
else
    row "(2) auc" "a run failed (see log)" - - - 0.005 FAIL
    fail=1
fi

# --- (3) throughput and GPU memory per batch size ----------------------------
sizes="${PLEC_BENCH_SIZES:-1024,8192,65536}"
say "(3) plec bench --device $dev, batch sizes $sizes"
# warm-up: loads (and JIT-caches) the kernels and cuBLAS before timing
"$bin/plec" bench --device "$dev" --batch-sizes 1024 --rows 4096 --eval-rows 2048 >>"$log" 2>&1 ||
    say "warm-up bench failed"
idle="$(gpu_mem_now)"
IFS=, read -r -a bs_list <<<"$sizes"
for bs in "${bs_list[@]}"; do
    # at least 16 steps per epoch, at least 131072 rows
    r=$((bs * 16 > 131072 ? bs * 16 : 131072))
    er=$((bs * 2 > 32768 ? bs * 2 : 32768))
    with_gpu_mem "$work/mem-$bs" "$bin/plec" bench --device "$dev" --batch-sizes "$bs" \
        --rows "$r" --eval-rows "$er" --threads "$cores" >"$work/bench-$bs.log" 2>&1
    rc=$?
    cat "$work/bench-$bs.log" >>"$log"
    line="$(grep -E "^  batch $bs:" "$work/bench-$bs.log")"
    train="$(sed -n 's/.*train \([0-9]*\) samples\/s.*/\1/p' <<<"$line")"
    evals="$(sed -n 's/.*eval \([0-9]*\) samples\/s.*/\1/p' <<<"$line")"
    peak="$(cat "$work/mem-$bs" 2>/dev/null)"
    used="-"
    [[ -n "$peak" && -n "$idle" ]] && used="$((peak - idle))"
    say "  batch $bs: train $train, eval $evals samples/s, GPU memory +$used MiB (exit $rc)"
    res=info
    [[ $rc -eq 0 && -n "$train" ]] || { res=FAIL; fail=1; }
    row "(3) batch $bs" "train/eval samples/s; GPU MiB used" - "${train:--}/${evals:--}" "${used} MiB" - "$res"
done

# --- table --------------------------------------------------------------------
say "done in $(($(date +%s) - start)) s"
cp "$work/tests.log" "$out/cuda-tests.log" 2>/dev/null
rm -rf "$work"
echo
column -t -s $'\t' "$results" 2>/dev/null || cat "$results"
echo
if [[ $fail -eq 0 ]]; then echo "gpu-check: all checks passed"; else echo "gpu-check: FAILED (see $log)"; fi
exit $fail
