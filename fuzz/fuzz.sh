#!/usr/bin/env bash
# Runs one fuzz target (built with `cargo +nightly fuzz build -O`) for a
# while with the project's limits: a hang is over 1 s per input, an OOM
# over 2 GiB. One process. Stops at the first crash, hang or OOM, leaving
# it under artifacts/TARGET/.
#   fuzz/fuzz.sh TARGET SECONDS [more libFuzzer flags]
set -euo pipefail
cd "$(dirname "$0")"
target=$1
seconds=$2
shift 2
case $target in
  check_source | compile_mutated) dict=(-dict=dicts/config.dict) ;;
  parquet_read) dict=(-dict=dicts/parquet.dict) ;;
  *) dict=() ;;
esac
mkdir -p "corpus/$target" "artifacts/$target"
start=$(date +%s)
status=0
"target/x86_64-unknown-linux-gnu/release/$target" "corpus/$target" \
  "${dict[@]}" -timeout=1 -rss_limit_mb=2048 -max_total_time="$seconds" \
  -print_final_stats=1 -artifact_prefix="artifacts/$target/" "$@" || status=$?
echo "wall_seconds: $(($(date +%s) - start)) corpus_files: $(ls "corpus/$target" | wc -l) exit: $status"
exit $status
