#!/usr/bin/env bash
# End-to-end latency on a real local broker: the whole pipeline (`nearfield run`: ingest,
# aggregator, emitter) fed by the simulator's shops in real time, then
# `examples/latency_report.rs` reads sales.v1, demand.v1 and the plan topics and reports
# p50/p99 of: a window's emission after its nominal close, occurred_at → DemandWindow,
# and bucket end → PlanSignal.
#   benches/latency.sh [SECONDS] [RATE]      (defaults 60 s at 2000 events/s)
# Windows are 10 s (out-of-orderness 2 s, grace 1 s) so a short run closes many of them;
# the emitter plans on 10 s buckets with a 1 s settle.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECS=${1:-60}; RATE=${2:-2000}
WINDOW=10000 GRACE=1000 OOO=2000
OUT=target/bench; mkdir -p "$OUT"
# A broker directory per script: the watchdog that stops and removes a script's broker
# when the script exits never touches the next script's broker.
export NEARFIELD_KAFKA_DIR="$ROOT/target/kafka-bench-$(basename "$0" .sh)" NEARFIELD_KAFKA_OWNER_PID=$$
cleanup() { [[ -n "${RUN_PID:-}" ]] && kill "$RUN_PID" 2>/dev/null; scripts/kafka.sh down >/dev/null 2>&1 || true; }
trap cleanup EXIT

cargo build --release --locked -q --bin nearfield --example latency_report
BIN=target/release/nearfield
scripts/kafka.sh down >/dev/null 2>&1 || true
line=$(scripts/kafka.sh up 1 | tail -n 1); export NEARFIELD_BROKERS="${line#NEARFIELD_BROKERS=}"
CFG=deploy/examples/nearfield.toml
$BIN --config $CFG topics 2>/dev/null
export NEARFIELD_AGGREGATE__WINDOWS_MS="[$WINDOW, 3600000, 86400000]"
export NEARFIELD_AGGREGATE__OUT_OF_ORDERNESS_MS=$OOO NEARFIELD_AGGREGATE__GRACE_MS=$GRACE
export NEARFIELD_AGGREGATE__MAX_CLOSE_DELAY_MS=15000
export NEARFIELD_EMIT__BUCKET_MS=$WINDOW NEARFIELD_EMIT__SETTLE_MS=1000
export NEARFIELD_EMIT__HORIZON_MS=600000 NEARFIELD_EMIT__SCHEDULE_MS=60000
export NEARFIELD_EMIT__SEASON_BUCKETS=6 NEARFIELD_EMIT__IDLE_ADVANCE_MS=30000
export NEARFIELD_INGEST__FOLLOW_STORES_TOPIC=false
$BIN --config $CFG run >"$OUT/latency-run.log" 2>&1 & RUN_PID=$!
for port in 8080 8081 8082; do
  for _ in $(seq 1 150); do curl -sf "localhost:$port/readyz" >/dev/null && break; sleep 0.2; done
  curl -sf "localhost:$port/readyz" >/dev/null || { tail -n 30 "$OUT/latency-run.log" >&2; exit 1; }
done
NEARFIELD_SIMULATE__INVALID_SHARE=0 NEARFIELD_SIMULATE__OFFLINE_CHANCE=0 \
NEARFIELD_SIMULATE__DUPLICATE_SHARE=0 \
  $BIN --config $CFG simulate --rate "$RATE" --duration "$SECS" >"$OUT/latency-sim.json" 2>/dev/null
# The last windows close by the wall clock (max_close_delay) at the latest.
sleep 20
kill "$RUN_PID"; wait "$RUN_PID" 2>/dev/null || true; RUN_PID=
target/release/examples/latency_report "$NEARFIELD_BROKERS" $WINDOW $GRACE $OOO \
  | tee "$OUT/latency-results.jsonl"
python3 - "$OUT/latency-results.jsonl" "$OUT/latency-sim.json" <<'PY' | tee "$OUT/latency.md"
import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
s = json.load(open(sys.argv[2]))
print(f"| end to end ({s['acked']:,} events acked at {s['rate']:,.0f}/s, 10 s windows) | p50 | p99 | n |")
print("|---|---|---|---|")
print(f"| window emitted after its nominal close (target p99 ≤ 1 s) | {r['close_p50_ms']} ms | {r['close_p99_ms']} ms | {r['windows']:,} windows |")
print(f"| occurred_at → DemandWindow (includes the window's own 10 s + 3 s) | {r['event_to_window_p50_ms']} ms | {r['event_to_window_p99_ms']} ms | {r['events']:,} events |")
print(f"| bucket end → PlanSignal (includes the 1 s settle) | {r['bucket_to_signal_p50_ms']} ms | {r['bucket_to_signal_p99_ms']} ms | {r['signals']:,} signals |")
if "bucket_to_decision_p50_ms" in r:
    print(f"| bucket end → PlanSignal, decisions only (revisions: {r['revisions']:,}) | {r['bucket_to_decision_p50_ms']} ms | {r['bucket_to_decision_p99_ms']} ms | {r['signals'] - r['revisions']:,} signals |")
PY
