#!/usr/bin/env bash
# Instructions an event of the aggregator's in-memory update path (`apply_sales` in runs
# of 500), counted by callgrind over the measured events of aggregator/benches/steady.rs
# (the criterion bench's city). Exact and independent of the host's speed, where
# criterion's times move ±15 % with it: the figure to compare builds by, beside the times.
# Prints one line per shape: "<SKUS> SKUs: <n> instructions an event; " and the bench's
# own line (events, keys, the state's totals: equal between builds that did the same work),
# then "<SKUS> SKUs, lean bound: <n> instructions an event; ": the same events through the
# lean lower bound of the criterion bench (aggregator/benches/lean), checked by the bench
# to count the same events, keys, windows and sums. Then "<SKUS> SKUs, flush: <n>
# instructions a window": the flush after those events (the changelog of every window
# and event id the state holds, and the closing of the windows the watermark passed),
# divided by the windows (the ids' share included: with 4 SKUs, few windows and many
# ids), with its records, bytes and digest (equal between builds that wrote the same
# changelog).
#   benches/instructions.sh [SKUS...]   (default: 400 4; 400 SKUs: the 200 000-key mix,
#                                        4 SKUs: 2 000 keys, in cache)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v valgrind >/dev/null 2>&1 || {
  echo "instructions.sh: valgrind is missing (scripts/bootstrap.sh --bench installs it)" >&2
  exit 1
}
OUT=target/bench; mkdir -p "$OUT"
BIN=$(cargo bench --locked -q -p nearfield-aggregator --bench steady --no-run --message-format=json |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "steady" and m.get("executable"):
        print(m["executable"])')
[[ -x "$BIN" ]] || { echo "instructions.sh: no steady bench executable" >&2; exit 1; }
SHAPES=("$@"); ((${#SHAPES[@]})) || SHAPES=(400 4)
# callgrind FUNCTION NAME ARGS...: the steady bench run with ARGS under callgrind,
# counting inside FUNCTION only (its output file callgrind.NAME); sets LOG and TOTAL.
callgrind() {
  local fn=$1 name=$2
  shift 2
  # Children traced: the bench re-executes itself with the binary's allocator settings
  # (common/src/alloc.rs), and the program counted must be that one.
  LOG=$(valgrind --tool=callgrind --trace-children=yes --toggle-collect="$fn" \
    --callgrind-out-file="$OUT/callgrind.$name" "$BIN" "$@" 2>&1)
  TOTAL=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' <<<"$LOG" | tail -n 1)
  # No count, or none in the function: it never ran under valgrind.
  [[ -n "$TOTAL" ]] && ((TOTAL > 0)) || {
    echo "$LOG" >&2
    echo "instructions.sh: nothing counted in $fn" >&2
    exit 1
  }
}
# count SKUS LABEL FUNCTION [lean]: instructions an event of FUNCTION; one line.
count() {
  local s=$1 label=$2 fn=$3 summary events
  callgrind "$fn" "${fn#steady::}.$s" "$s" "${@:4}"
  summary=$(grep '^steady: ' <<<"$LOG" || true)
  events=$(sed -n 's/^steady: \([0-9]*\) events measured.*/\1/p' <<<"$summary")
  [[ -n "$events" ]] || { echo "$LOG" >&2; exit 1; }
  echo "$s SKUs$label: $((TOTAL / events)) instructions an event; $summary"
}
# flush SKUS: instructions a window of the flush after the measured events; one line.
flush() {
  local s=$1 summary windows
  callgrind steady::measure_flush "measure_flush.$s" "$s" 1 flush
  summary=$(grep '^steady: flush' <<<"$LOG" || true)
  windows=$(sed -n 's/^steady: flush of \([0-9]*\) windows.*/\1/p' <<<"$summary")
  [[ -n "$windows" ]] || { echo "$LOG" >&2; exit 1; }
  echo "$s SKUs, flush: $((TOTAL / windows)) instructions a window; $summary"
}
for s in "${SHAPES[@]}"; do
  count "$s" "" 'steady::measure'
  count "$s" ", lean bound" 'steady::measure_lean' lean
  flush "$s"
done
