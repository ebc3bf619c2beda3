#!/usr/bin/env bash
# Ingest benchmark on a real local broker (same machine, same topic layout):
#   1. batch posts  (simulator, batch_share=1, 100 events per request)
#   2. single posts (simulator, batch_share=0)
#   3. the ceiling: a bare librdkafka producer writing the same records
# Reports accepted events/s, events per CPU-second of the ingest process ("per core"),
# p50/p99 request latency, ingest peak RSS, and the ratio to the ceiling.
#   benches/ingest.sh [SECONDS]      (default 20 per run)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECS=${1:-20}
OUT=target/bench; mkdir -p "$OUT"
# A broker directory per script: the watchdog that stops and removes a script's broker
# when the script exits never touches the next script's broker.
export NEARFIELD_KAFKA_DIR="$ROOT/target/kafka-bench-$(basename "$0" .sh)" NEARFIELD_KAFKA_OWNER_PID=$$
cleanup() { [[ -n "${INGEST_PID:-}" ]] && kill "$INGEST_PID" 2>/dev/null; scripts/kafka.sh down >/dev/null 2>&1 || true; }
trap cleanup EXIT

cargo build --release --locked -q --bin nearfield
cargo build --release --locked -q -p nearfield-ingest --example produce_ceiling
BIN=target/release/nearfield
scripts/kafka.sh down >/dev/null 2>&1 || true
line=$(scripts/kafka.sh up 1 | tail -n 1); export NEARFIELD_BROKERS="${line#NEARFIELD_BROKERS=}"
CFG=deploy/examples/nearfield.toml
export NEARFIELD_INGEST__RATE_LIMIT__EVENTS_PER_SECOND=1000000000.0 NEARFIELD_INGEST__RATE_LIMIT__BURST=1000000000.0
export NEARFIELD_INGEST__FOLLOW_STORES_TOPIC=false
$BIN --config $CFG topics 2>/dev/null

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

run_sim() { # name, extra env...
  local name=$1; shift
  $BIN --config $CFG ingest >"$OUT/ingest-$name.log" 2>&1 & INGEST_PID=$!
  for _ in $(seq 1 100); do curl -sf localhost:8080/readyz >/dev/null && break; sleep 0.1; done
  local t0; t0=$(cpu_ticks $INGEST_PID)
  env "$@" NEARFIELD_SIMULATE__INVALID_SHARE=0 NEARFIELD_SIMULATE__OFFLINE_CHANCE=0 \
      NEARFIELD_SIMULATE__DUPLICATE_SHARE=0 NEARFIELD_SIMULATE__HEARTBEAT_INTERVAL_S=0 \
      NEARFIELD_SIMULATE__CONCURRENCY=128 \
    $BIN --config $CFG simulate --duration "$SECS" >"$OUT/sim-$name.json" 2>/dev/null
  local t1; t1=$(cpu_ticks $INGEST_PID)
  local hwm; hwm=$(hwm_kb $INGEST_PID)
  kill $INGEST_PID; wait $INGEST_PID 2>/dev/null || true; INGEST_PID=
  python3 - "$name" "$OUT/sim-$name.json" "$t0" "$t1" "$hwm" >>"$OUT/ingest-results.jsonl" <<'PY'
import json, sys
name, path, t0, t1, hwm = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
s = json.load(open(path))
cpu = (t1 - t0) / 100.0
print(json.dumps({"run": name, "acked": s["acked"], "rate": s["rate"], "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"],
                  "ingest_cpu_s": cpu, "per_core": round(s["acked"] / max(cpu, 0.01)), "peak_rss_mb": round(hwm / 1024, 1),
                  "elapsed_s": s["elapsed_s"]}))
PY
}

rm -f "$OUT/ingest-results.jsonl"
run_sim batch NEARFIELD_SIMULATE__BATCH_SHARE=1 NEARFIELD_SIMULATE__BATCH_MIN=100 NEARFIELD_SIMULATE__BATCH_MAX=100 NEARFIELD_SIMULATE__RATE=400000
run_sim single NEARFIELD_SIMULATE__BATCH_SHARE=0 NEARFIELD_SIMULATE__RATE=40000
target/release/examples/produce_ceiling "$NEARFIELD_BROKERS" sales.v1 3000000 >"$OUT/ceiling.json"

python3 - "$OUT/ingest-results.jsonl" "$OUT/ceiling.json" <<'PY' | tee "$OUT/ingest.md"
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
c = json.load(open(sys.argv[2]))
print("| ingest run | accepted events/s | events/s per core (ingest CPU) | p50 ms | p99 ms | ingest peak RSS | vs bare producer per core |")
print("|---|---|---|---|---|---|---|")
for r in runs:
    print(f"| {r['run']} posts | {r['rate']:.0f} | {r['per_core']:.0f} | {r['p50_ms']} | {r['p99_ms']} | {r['peak_rss_mb']} MiB | {r['per_core']/c['events_per_cpu_s']:.2f} |")
print(f"| bare librdkafka producer (ceiling) | {c['events_per_s']:.0f} | {c['events_per_cpu_s']:.0f} | – | – | – | 1.00 |")
PY
