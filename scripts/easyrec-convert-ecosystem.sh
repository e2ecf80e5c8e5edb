#!/usr/bin/env bash
# Converts every multi-task config of an EasyRec checkout with
# `plec convert --allow-lossy`, then runs the TorchEasyRec pipeline on the
# result, and prints one line per config and a total.
#
#   scripts/easyrec-convert-ecosystem.sh DIR     (DIR: an EasyRec checkout)
#
# A config passes when `plec convert` writes the output (lossy parts are
# counted, not fatal: --allow-lossy), `plec check` on the output reports no
# error, `plec compile` succeeds, and `plec gen-data` plus
# `plec run --steps 3` on that data finish. Multi-task configs are those
# whose model_config holds an mmoe, esmm, dbmtl, simple_multi_task or ple
# block, or names model_class "MultiTaskModel" (EasyRec's backbone form),
# under samples/ and examples/. Not part of CI: it needs an EasyRec
# checkout, e.g.
#   git --git-dir=/path/to/EasyRec.git archive HEAD samples | tar -x -C /tmp/er
# The check half (all 249 configs under --schema easyrec) is
# scripts/easyrec-check-ecosystem.sh.
# Environment: PLEC (the binary; default target/release/plec), KEEP=1 keeps
# the work directory, VERBOSE=1 prints the first failing step's output.
set -u
dir=${1:?usage: scripts/easyrec-convert-ecosystem.sh EASYREC_DIR}
plec=${PLEC:-$(dirname "$0")/../target/release/plec}
[ -x "$plec" ] || { echo "no plec binary at $plec (set PLEC)" >&2; exit 2; }
work=$(mktemp -d)
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT

kinds='mmoe|esmm|dbmtl|simple_multi_task|ple'
mapfile -t configs < <(
  cd "$dir" && for sub in samples examples; do
    [ -d "$sub" ] && find "$sub" -name '*.config'
  done | sort | while read -r f; do
    if grep -Eq "^[[:space:]]*($kinds)[[:space:]]*[{:]|model_class:[[:space:]]*\"MultiTaskModel\"" "$f"; then
      echo "$f"
    fi
  done
)

pass=0; fail=0; clean=0; lossy_total=0
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
      why="$n: $(grep -m1 -E '×|error|plec:' "$out/$n.log" | sed 's/^[[:space:]]*//' | cut -c1-150)"
      [ "${VERBOSE:-0}" = 1 ] && sed 's/^/    /' "$out/$n.log" | head -40
    fi
  }
  "$plec" convert "$cfg" -o "$out/tzrec.config" --allow-lossy --format json \
    >"$out/convert.json" 2>"$out/convert.log"
  lossy=$(grep -c '"severity":"error","code":"plec::convert-' "$out/convert.json")
  lossy_total=$((lossy_total + lossy))
  [ "$lossy" = 0 ] && clean=$((clean + 1))
  if [ ! -f "$out/tzrec.config" ]; then
    status=FAIL
    why="convert: $(tail -1 "$out/convert.log" | cut -c1-150)"
  fi
  step check "$plec" check "$out/tzrec.config"
  step compile "$plec" compile "$out/tzrec.config" -o "$out/plan.bin"
  step gen-data "$plec" gen-data "$out/plan.bin" --rows 512 -o "$out/data"
  step run "$plec" run "$out/plan.bin" --data "$out/data/train.parquet" \
    --eval "$out/data/eval.parquet" --steps 3 --batch-size 64 -o "$out/run" -q
  if [ "$status" = ok ]; then
    pass=$((pass + 1)); printf 'ok    %-66s %2s lossy\n' "$rel" "$lossy"
  else
    fail=$((fail + 1)); printf 'FAIL  %-66s %2s lossy  (%s)\n' "$rel" "$lossy" "$why"
  fi
done
echo "total: ${#configs[@]} multi-task configs, $pass pass, $fail fail;" \
  "$clean converted with nothing lossy, $lossy_total lossy parts in all"
[ "$fail" = 0 ]
