#!/usr/bin/env bash
# Build the CUDA flavour of plec (`--features cuda`) on a machine with no GPU
# and no system CUDA toolkit.
#
# nvcc, the CUDA headers and the libraries candle links against come from
# NVIDIA's PyPI wheels, installed with pip into a local, git-ignored folder
# ($PLEC_CUDA_DEPS, default .cuda-venv/).  The driver library (libcuda.so) is
# not in any wheel: it belongs to the GPU driver.  Linking only needs a file
# that defines the driver's symbols, so this script writes a stub libcuda.so.1
# (every cu* entry point cudarc declares, as empty functions) into the deps
# folder.  The binary records `libcuda.so.1` as NEEDED and, on the GPU
# machine, the driver's real libcuda.so.1 is loaded instead.  The stub is
# never put on any runtime library path.
#
# Usage: scripts/build-cuda.sh [extra cargo build args...]
#        scripts/build-cuda.sh clippy     # clippy with the feature, same env
# Builds $CARGO_TARGET_DIR/release/plec and the test binary of tests/cuda.rs,
# and stages both, stripped and compressed, as .gpu-bin/bins.tar.xz
# (git-ignored) for scripts/gpu-check.sh on the GPU machine
# (PLEC_CUDA_STAGE=0: build only).
#
# Environment (all optional):
#   CARGO_TARGET_DIR   default /work/target-cuda (kept apart from CPU builds)
#   PLEC_CUDA_DEPS     default <repo>/.cuda-venv
#   PLEC_CUDA_MAJOR    13 (default) or 12.  The lent H200 machines run driver
#                      580 (CUDA 13.0) with CUDA 13 libraries (cuBLAS 13) in
#                      their image; a binary linked against CUDA 12's
#                      libcublas.so.12 would not find its libraries there.
#   CUDA_COMPUTE_CAP   default 90 (H100/H200; candle's kernels build sm_90a)
#   PLEC_CUDA_JOBS     cargo -j and parallel nvcc runs, default 2
#
# CUDA 13 wheel versions are pinned to 13.0.x: PTX made by a newer nvcc than
# the driver's CUDA version is rejected at load time (driver 580 = CUDA 13.0).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deps="${PLEC_CUDA_DEPS:-$repo/.cuda-venv}"
major="${PLEC_CUDA_MAJOR:-13}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/target-cuda}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
jobs="${PLEC_CUDA_JOBS:-2}"
python="${PYTHON:-python3}"

say() { printf '[build-cuda] %s\n' "$*" >&2; }
die() {
    printf '[build-cuda] error: %s\n' "$*" >&2
    exit 1
}

case "$major" in
13)
    wheels=(
        nvidia-cuda-nvcc==13.0.88
        nvidia-cuda-crt==13.0.88
        nvidia-nvvm==13.0.88
        nvidia-cuda-runtime==13.0.96
        nvidia-cuda-cccl==13.0.85
        nvidia-cuda-nvrtc==13.0.88
        nvidia-cublas==13.0.2.14
        nvidia-curand==10.4.0.35
    )
    ;;
12)
    wheels=(
        nvidia-cuda-nvcc-cu12==12.9.86
        nvidia-cuda-runtime-cu12==12.9.79
        nvidia-cuda-cccl-cu12==12.9.27
        nvidia-cuda-nvrtc-cu12==12.9.86
        nvidia-cublas-cu12==12.9.1.4
        nvidia-curand-cu12==10.3.10.19
    )
    ;;
*) die "PLEC_CUDA_MAJOR must be 12 or 13 (got '$major')" ;;
esac

site="$deps/cu$major/site"
root="$deps/cu$major/root" # merged CUDA root: bin/ include/ lib64/ nvvm/
stubs="$deps/cu$major/stubs"

# 1. Wheels -------------------------------------------------------------------
stamp="$deps/cu$major/installed.txt"
if [[ ! -f "$stamp" ]] || [[ "$(cat "$stamp")" != "${wheels[*]}" ]]; then
    say "installing ${#wheels[@]} CUDA $major wheels into $site"
    rm -rf "$site" "$root" "$stubs"
    mkdir -p "$site"
    "$python" -m pip install --quiet --disable-pip-version-check --no-deps \
        --only-binary=:all: --target "$site" "${wheels[@]}" ||
        die "pip could not install the CUDA wheels"
    printf '%s' "${wheels[*]}" >"$stamp"
fi

# 2. One CUDA root that nvcc, cudaforge and cudarc understand ----------------
# CUDA 13 wheels already share one tree (nvidia/cu13/{bin,include,lib,nvvm});
# CUDA 12 wheels each have their own (nvidia/cuda_nvcc/bin,
# nvidia/cuda_runtime/include, nvidia/cublas/lib, ...).  Either way, build
# $root with:
#   bin/    real copies of nvcc & co. (nvcc.profile finds everything relative
#           to the directory nvcc runs from, so no symlinked binaries)
#   include/, nvvm/  symlinks into the wheels
#   lib64/  the wheels' libX.so.N plus unversioned libX.so links for -lX
if [[ ! -x "$root/bin/nvcc" ]]; then
    say "assembling CUDA root in $root"
    rm -rf "$root"
    mkdir -p "$root/bin" "$root/include" "$root/lib64"
    shopt -s nullglob
    for pkg in "$site"/nvidia/*/; do
        pkg="${pkg%/}"
        if [[ -d "$pkg/bin" ]]; then cp -a "$pkg/bin/." "$root/bin/"; fi
        if [[ -d "$pkg/nvvm" && ! -e "$root/nvvm" ]]; then ln -s "$pkg/nvvm" "$root/nvvm"; fi
        if [[ -d "$pkg/include" ]]; then
            for h in "$pkg/include"/*; do
                name="$(basename "$h")"
                if [[ -e "$root/include/$name" ]]; then
                    # two wheels ship the same directory (e.g. crt/): merge one level
                    if [[ -d "$h" && -L "$root/include/$name" ]]; then
                        prev="$(readlink "$root/include/$name")"
                        rm "$root/include/$name"
                        mkdir "$root/include/$name"
                        for x in "$prev"/* "$h"/*; do ln -sf "$x" "$root/include/$name/"; done
                    elif [[ -d "$h" && -d "$root/include/$name" ]]; then
                        for x in "$h"/*; do ln -sf "$x" "$root/include/$name/"; done
                    fi
                else
                    ln -s "$h" "$root/include/$name"
                fi
            done
        fi
        for libdir in "$pkg/lib" "$pkg/lib64"; do
            [[ -d "$libdir" ]] || continue
            for l in "$libdir"/*; do ln -sf "$l" "$root/lib64/"; done
        done
    done
    shopt -u nullglob
    [[ -x "$root/bin/nvcc" ]] || die "no nvcc found in the wheels under $site/nvidia"
    # libfoo.so.13 -> libfoo.so (the linker only looks for the unversioned name)
    for l in "$root"/lib64/lib*.so.*; do
        base="${l%%.so.*}.so"
        [[ -e "$base" ]] || ln -s "$(basename "$l")" "$base"
    done
fi

# 3. Stub libcuda.so.1 for linking -------------------------------------------
if [[ ! -f "$stubs/libcuda.so" ]]; then
    cudarc_src="$(cargo metadata --format-version 1 --features cuda --manifest-path "$repo/Cargo.toml" 2>/dev/null |
        "$python" -c 'import json,sys
m=json.load(sys.stdin)
print(next(p["manifest_path"] for p in m["packages"] if p["name"]=="cudarc").rsplit("/",1)[0])')" ||
        die "could not locate the cudarc crate (run cargo fetch)"
    sys_rs="$cudarc_src/src/driver/sys/mod.rs"
    [[ -f "$sys_rs" ]] || die "missing $sys_rs"
    say "writing stub libcuda.so.1 from $sys_rs"
    mkdir -p "$stubs"
    grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$sys_rs" | sed 's/^pub unsafe fn //' | sort -u |
        sed 's/.*/int &(void) { return 999; }/' >"$stubs/libcuda_stub.c"
    n="$(wc -l <"$stubs/libcuda_stub.c")"
    ((n > 100)) || die "found only $n driver entry points in $sys_rs"
    cc -shared -fPIC -O0 -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so.1" "$stubs/libcuda_stub.c"
    ln -sf libcuda.so.1 "$stubs/libcuda.so"
fi

# 4. Environment and build -----------------------------------------------------
export CUDA_ROOT="$root" CUDA_PATH="$root" CUDA_HOME="$root" CUDA_TOOLKIT_ROOT_DIR="$root"
export NVCC="$root/bin/nvcc"
export PATH="$root/bin:$PATH"
export LIBRARY_PATH="$root/lib64:$stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
# build scripts that run nvcc need the wheels' libraries, never the stub
export LD_LIBRARY_PATH="$root/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$root/lib64 -L native=$stubs"
# candle-kernels compiles ~25 .cu files (its quantized matmul and MoE
# kernels alone take ~3 min each on one core); cudaforge runs them on half
# the cores unless told otherwise (not a rebuild trigger)
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-$jobs}"

nvcc_version="$("$NVCC" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')"
say "nvcc $nvcc_version, compute capability $CUDA_COMPUTE_CAP, target dir $CARGO_TARGET_DIR"
cd "$repo"
if [[ "${1:-}" == clippy ]]; then
    shift
    say "cargo clippy --release --features cuda --lib --bins --test cuda $*"
    exec cargo clippy --release --features cuda -j "$jobs" --lib --bins --test cuda "$@" -- -D warnings
fi
say "cargo build --release --features cuda -j $jobs $*"
start=$(date +%s)
cargo build --release --features cuda -j "$jobs" "$@"
say "built in $(($(date +%s) - start)) s: $CARGO_TARGET_DIR/release/plec"

# 5. The GPU-check test binary and the staged copies for the GPU machine ------
[[ "${PLEC_CUDA_STAGE:-1}" == 1 ]] || exit 0
say "cargo test --release --features cuda --test cuda --no-run"
test_bin="$(cargo test --release --features cuda -j "$jobs" --test cuda --no-run --message-format=json |
    "$python" -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cuda" and m.get("executable"):
        print(m["executable"])')"
[[ -x "$test_bin" ]] || die "no test binary for tests/cuda.rs"
# Stripped, the two binaries are ~120 MB (half of it candle's sm_90a
# kernels), over the device tool's 64 MiB carry limit: ship them as one
# xz archive (~10 MB; -9's 64 MiB window also folds the second copy of the
# kernels into the first).
stage="$repo/.gpu-bin"
rm -rf "$stage"
mkdir -p "$stage/tmp"
cp "$CARGO_TARGET_DIR/release/plec" "$stage/tmp/plec"
cp "$test_bin" "$stage/tmp/cuda-tests"
strip "$stage/tmp/plec" "$stage/tmp/cuda-tests"
{
    echo "plec $(git -C "$repo" rev-parse --short HEAD)$(git -C "$repo" diff --quiet HEAD -- src tests Cargo.toml Cargo.lock || echo '+dirty')"
    echo "built $(date -u +%Y-%m-%dT%H:%MZ) with nvcc $nvcc_version (wheels: ${wheels[*]}), CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"
    echo "needs at run time: $(ldd "$stage/tmp/plec" | awk '/=>/{print $1}' | grep -E 'cu|nvrtc' | sort -u | tr '\n' ' ')"
} >"$stage/BUILD_INFO"
say "compressing the staged binaries (xz -9, about a minute)"
tar -C "$stage/tmp" -cf - plec cuda-tests | xz -9 -T1 >"$stage/bins.tar.xz"
rm -rf "$stage/tmp"
say "staged for the GPU machine (carry .gpu-bin): $(du -sh "$stage" | cut -f1)"
ls -la "$stage" >&2
