#!/bin/sh
# plec vs the PyTorch reference, back to back on the same data: one table.
# Usage: benches/compare.sh [PYTHON_WITH_TORCH] [extra compare.py args]
# Builds plec (release), then runs benches/compare.py; see its --help.
set -eu
cd "$(dirname "$0")/.."
PY="${1:-python3}"
[ $# -gt 0 ] && shift
cargo build --release --quiet
TARGET="${CARGO_TARGET_DIR:-target}"
exec python3 benches/compare.py --plec "$TARGET/release/plec" --python "$PY" "$@"
