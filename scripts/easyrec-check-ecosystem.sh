#!/usr/bin/env bash
# Runs `plec check --schema easyrec` on every .config under samples/ (and
# examples/configs/, where the checkout has it) of an EasyRec checkout, and
# prints errors and warnings per config plus the totals. Also counts how
# many of them plain `plec check` (no --schema) detects as EasyRec configs,
# and runs `plec schema diff --schema easyrec` against the checkout's protos.
#
#   scripts/easyrec-check-ecosystem.sh DIR [PLEC]
#
# DIR is an EasyRec checkout (holding easy_rec/python/protos); PLEC the plec
# binary (default: target/release/plec, or $CARGO_TARGET_DIR/release/plec).
# Configs with errors are then parsed the way EasyRec itself does
# (scripts/easyrec-protobuf-check.py: EasyRec's protos through protoc and
# protobuf's text_format.Merge), when Python has protobuf and grpcio-tools,
# to tell which of them EasyRec rejects too.
# Exit 0 when no config has an error under EasyRec's schema, every config
# is detected as EasyRec, and the schemas agree; 1 otherwise.
set -u
dir=${1:?usage: easyrec-check-ecosystem.sh DIR [PLEC]}
plec=${2:-${CARGO_TARGET_DIR:-target}/release/plec}
if [ ! -x "$plec" ]; then
    echo "no plec binary at $plec (cargo build --release first)" >&2
    exit 2
fi
if [ ! -d "$dir/easy_rec/python/protos" ]; then
    echo "$dir holds no easy_rec/python/protos" >&2
    exit 2
fi
status=0
count() { # count SEVERITY JSON-LINES
    grep -c "\"severity\":\"$1\"" <<<"$2" || true
}
total_e=0 total_w=0 files=0 bad=0 detected=0 undetected="" failing=()
printf '%-72s %10s %s\n' config easyrec detected
while IFS= read -r cfg; do
    files=$((files + 1))
    a=$("$plec" check --format json --schema easyrec "$cfg" 2>&1)
    b=$("$plec" check --format json "$cfg" 2>&1)
    ae=$(count error "$a") aw=$(count warning "$a")
    total_e=$((total_e + ae)) total_w=$((total_w + aw))
    if grep -q 'plec::easyrec-dialect' <<<"$b"; then
        detected=$((detected + 1))
        d=yes
    else
        d=no
        undetected="$undetected ${cfg#"$dir"/}"
        status=1
    fi
    mark=""
    if [ "$ae" -gt 0 ]; then
        mark=" <-"
        bad=$((bad + 1))
        failing+=("$cfg")
        status=1
    fi
    printf '%-72s %4sE %3sW %s%s\n' "${cfg#"$dir"/}" "$ae" "$aw" "$d" "$mark"
done < <(find "$dir/samples" "$dir/examples/configs" -name '*.config' 2>/dev/null | sort)
echo "configs: $files, with errors under --schema easyrec: $bad"
echo "--schema easyrec: $total_e errors, $total_w warnings"
echo "detected as EasyRec without --schema: $detected of $files"
for u in $undetected; do
    echo "  not detected: $u"
done
if [ "$bad" -gt 0 ]; then
    echo "EasyRec's own parser on the configs with errors:"
    here=$(cd "$(dirname "$0")" && pwd)
    if python3 -c 'import google.protobuf, grpc_tools' 2>/dev/null; then
        python3 "$here/easyrec-protobuf-check.py" "$dir" "${failing[@]}" 2>/dev/null
    else
        echo "  (skipped: needs Python packages protobuf and grpcio-tools)"
    fi
fi
echo "schema diff:"
if ! "$plec" schema diff --schema easyrec --proto-path "$dir"; then
    status=1
fi
exit $status
