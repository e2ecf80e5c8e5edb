#!/usr/bin/env bash
# Runs `plec check` on every .config of a TorchEasyRec checkout, twice: with
# the built-in schema and with --proto-path at the checkout's own protos, and
# prints errors and warnings per config plus the totals. Also runs
# `plec schema diff` against the checkout's protos.
#
#   scripts/tzrec-check-ecosystem.sh DIR [PLEC]
#
# DIR is a TorchEasyRec checkout (holding tzrec/protos); PLEC the plec binary
# (default: target/release/plec, or $CARGO_TARGET_DIR/release/plec).
# Exit 0 when no config has an error or an `unchecked-block` warning under
# either schema and the schemas agree; 1 otherwise.
set -u
dir=${1:?usage: tzrec-check-ecosystem.sh DIR [PLEC]}
plec=${2:-${CARGO_TARGET_DIR:-target}/release/plec}
if [ ! -x "$plec" ]; then
    echo "no plec binary at $plec (cargo build --release first)" >&2
    exit 2
fi
if [ ! -d "$dir/tzrec/protos" ]; then
    echo "$dir holds no tzrec/protos" >&2
    exit 2
fi
status=0
count() { # count SEVERITY JSON-LINES
    grep -c "\"severity\":\"$1\"" <<<"$2" || true
}
total_e=0 total_w=0 total_pe=0 total_pw=0 files=0 bad=0
printf '%-70s %9s %9s\n' config builtin proto-path
while IFS= read -r cfg; do
    files=$((files + 1))
    a=$("$plec" check --format json "$cfg" 2>&1)
    b=$("$plec" check --format json --proto-path "$dir" "$cfg" 2>&1)
    ae=$(count error "$a") aw=$(count warning "$a")
    be=$(count error "$b") bw=$(count warning "$b")
    un=$(grep -c 'unchecked-block' <<<"$a$b" || true)
    total_e=$((total_e + ae)) total_w=$((total_w + aw))
    total_pe=$((total_pe + be)) total_pw=$((total_pw + bw))
    mark=""
    if [ "$ae" -gt 0 ] || [ "$be" -gt 0 ] || [ "$un" -gt 0 ]; then
        mark=" <-"
        bad=$((bad + 1))
        status=1
    fi
    printf '%-70s %4sE %3sW %4sE %3sW%s\n' "${cfg#"$dir"/}" "$ae" "$aw" "$be" "$bw" "$mark"
done < <(find "$dir" -name '*.config' -not -path '*/.git/*' | sort)
echo "configs: $files, with errors or unchecked blocks: $bad"
echo "built-in schema: $total_e errors, $total_w warnings"
echo "--proto-path:    $total_pe errors, $total_pw warnings"
echo "schema diff:"
if ! "$plec" schema diff --proto-path "$dir"; then
    status=1
fi
exit $status
