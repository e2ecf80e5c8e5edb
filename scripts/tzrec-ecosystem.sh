#!/usr/bin/env bash
# Runs plec over every multi-task config of a TorchEasyRec checkout and
# prints one line per config and a total.
#
#   scripts/tzrec-ecosystem.sh DIR        (DIR: a tzrec checkout)
#
# A config passes when `plec check` reports nothing, `plec compile`
# succeeds (so no block was dropped: compile refuses any block it cannot
# run), and `plec gen-data` plus `plec run --steps 3 --engine native` on
# that data finish (so the native CPU engine runs every op of the model).
# Configs are found under examples/, tzrec/benchmark/configs/ and
# tzrec/tests/configs/ by their model_config kind. Not part of CI: it needs
# a tzrec checkout, e.g.
#   git --git-dir=/path/to/TorchEasyRec.git archive HEAD | tar -x -C /tmp/tzrec
# Environment: PLEC (the binary; default target/release/plec), KEEP=1 keeps
# the work directory, VERBOSE=1 prints the first failing step's output.
set -u
dir=${1:?usage: scripts/tzrec-ecosystem.sh TZREC_DIR}
plec=${PLEC:-$(dirname "$0")/../target/release/plec}
[ -x "$plec" ] || { echo "no plec binary at $plec (set PLEC)" >&2; exit 2; }
work=$(mktemp -d)
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT

# Multi-task families of tzrec's multi_task_rank.proto.
kinds='ple|mmoe|dbmtl|pepnet|dc2vr|simple_multi_task'
mapfile -t configs < <(
  cd "$dir" && for sub in examples tzrec/benchmark/configs tzrec/tests/configs; do
    [ -d "$sub" ] && find "$sub" -name '*.config'
  done | sort | while read -r f; do
    # The model kind is the block opened right inside model_config.
    if grep -Eq "^[[:space:]]*($kinds)[[:space:]]*[{:]" "$f"; then echo "$f"; fi
  done
)

pass=0; fail=0
for rel in "${configs[@]}"; do
  cfg="$dir/$rel"
  name=$(echo "$rel" | tr '/' '_')
  out="$work/$name"; mkdir -p "$out"
  status=ok; why=""
  step() { # step NAME CMD...: runs a step, records the first failure
    local n=$1; shift
    [ "$status" = ok ] || return 0
    if ! "$@" >"$out/$n.log" 2>&1; then
      status=FAIL
      why="$n: $(grep -m1 -E 'error|×|plec:' "$out/$n.log" | sed 's/^[[:space:]]*//' | cut -c1-150)"
      [ "${VERBOSE:-0}" = 1 ] && sed 's/^/    /' "$out/$n.log" | head -40
    fi
  }
  step check "$plec" check --deny-warnings "$cfg"
  step compile "$plec" compile "$cfg" -o "$out/plan.bin"
  step gen-data "$plec" gen-data "$out/plan.bin" --rows 512 -o "$out/data"
  step run "$plec" run "$out/plan.bin" --data "$out/data/train.parquet" \
    --eval "$out/data/eval.parquet" --steps 3 --batch-size 64 --engine native \
    -o "$out/run" -q
  if [ "$status" = ok ]; then
    pass=$((pass + 1)); printf 'ok    %s\n' "$rel"
  else
    fail=$((fail + 1)); printf 'FAIL  %s  (%s)\n' "$rel" "$why"
  fi
done
echo "total: ${#configs[@]} multi-task configs, $pass pass, $fail fail"
[ "$fail" = 0 ]
