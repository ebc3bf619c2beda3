#!/usr/bin/env bash
# Emitter benchmark at city scale on a real local broker (`make bench-emitter`): the
# synthetic demand stream (hourly DemandWindows as the aggregator writes them, late
# corrections and a surge) for BENCH_SKUS SKUs (default 1 024) over 49 grids and
# BENCH_HOURS hours (24): ~1 M windows over ~50 k grid × SKU keys, the 6 suppliers of the
# example catalog. Per run (BENCH_RUNS, 3), each phase its own process
# (emitter/examples/emitter_bench.rs): the emitter (exactly-once, production defaults)
# consuming every window into fresh state, then a new instance restoring it. Reports
# windows per CPU-second, changelog bytes per window and the largest changelog record,
# peak RSS, restore time (target/bench/emitter-results.jsonl, medians by
# benches/emitter_summary.py). Plan latency is measured live by benches/latency.sh.
# BENCH_GRIDS (default 49) sets the grids per SKU: BENCH_GRIDS=20000 BENCH_SKUS=6
# BENCH_HOURS=12 is the popular-SKU stream (~1.15 M windows over 120 k keys), with its
# results in emitter-popular-results.jsonl / emitter-popular-summary.json.
source "$(dirname "${BASH_SOURCE[0]}")/broker.sh"
EBIN=target/release/examples/emitter_bench
[ "${BENCH_DEBUG:-0}" = 1 ] && EBIN=target/debug/examples/emitter_bench
if [ "${BENCH_DEBUG:-0}" = 1 ]; then
  cargo build --locked -q -p nearfield-emitter --example emitter_bench
else
  cargo build --release --locked -q -p nearfield-emitter --example emitter_bench
fi
SKUS=${BENCH_SKUS:-1024}; HOURS=${BENCH_HOURS:-24}; GRIDS=${BENCH_GRIDS:-49}
RES="$OUT/emitter-results.jsonl"
[ "$GRIDS" -gt 49 ] && RES="$OUT/emitter-popular-results.jsonl"
rm -f "$RES"
fresh_broker
tag() { python3 -c 'import json,sys; [print(json.dumps({**json.loads(l), "run": int(sys.argv[1])})) for l in sys.stdin if l.startswith("{")]' "$1"; }
PREFIX="emit-$SKUS-$GRIDS-$(date +%s)"
$EBIN fill "$B" "$PREFIX" "$SKUS" "$HOURS" "$GRIDS" | tag 0 | tee -a "$RES"
N=$(python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["windows"])' <"$RES")
for run in $(seq 1 "${BENCH_RUNS:-3}"); do
  # Each run its own group and changelog over the same demand topic.
  cp "$OUT/$PREFIX-catalog.jsonl" "$OUT/$PREFIX-$run-catalog.jsonl"
  BENCH_DEMAND="$PREFIX-demand" $EBIN emit "$B" "$PREFIX-$run" "$N" | tag "$run" | tee -a "$RES"
  BENCH_DEMAND="$PREFIX-demand" $EBIN restore "$B" "$PREFIX-$run" | tag "$run" | tee -a "$RES"
done
scripts/kafka.sh down >/dev/null 2>&1 || true
python3 benches/emitter_summary.py "$RES" | tee "${RES%-results.jsonl}.md"
