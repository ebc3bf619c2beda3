#!/usr/bin/env bash
# The whole pipeline on a local broker with simulated shops: Kafka (started here unless
# NEARFIELD_BROKERS names one) → topics → ingest → aggregator → emitter, the live page on
# :8090, driven by the simulated store devices of the example city. The demo shortens the
# smallest window to one minute, and the emitter plans on those minutes (10-minute
# horizons, a schedule every 2 minutes), so windows close and plans appear while you
# watch. Ctrl-C stops everything, the broker it started too.
#   DEMO_SECONDS=120 DEMO_RATE=2000 make demo
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECS=${DEMO_SECONDS:-60}
RATE=${DEMO_RATE:-1000}
CFG=deploy/examples/nearfield.toml
PIDS=()
started_kafka=
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ -n "$started_kafka" ]]; then scripts/kafka.sh down; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

scripts/bootstrap.sh
cargo build --release --locked --bin nearfield
BIN=target/release/nearfield
if [[ -z "${NEARFIELD_BROKERS:-}" ]]; then
  export NEARFIELD_KAFKA_DIR="$ROOT/target/kafka-demo" NEARFIELD_KAFKA_OWNER_PID=$$
  scripts/kafka.sh down >/dev/null 2>&1 || true
  line=$(scripts/kafka.sh up 1 | tail -n 1)
  export NEARFIELD_BROKERS="${line#NEARFIELD_BROKERS=}"
  started_kafka=1
fi
echo "demo: Kafka at $NEARFIELD_BROKERS" >&2
$BIN --config $CFG topics
mkdir -p target/demo
$BIN --config $CFG ingest 2>target/demo/ingest.log & PIDS+=($!)
for _ in $(seq 1 100); do curl -sf localhost:8080/readyz >/dev/null && break; sleep 0.2; done
curl -sf localhost:8080/readyz >/dev/null || { tail -n 30 target/demo/ingest.log >&2; echo "demo: ingest not ready" >&2; exit 1; }
export NEARFIELD_AGGREGATE__WINDOWS_MS='[60000, 3600000, 86400000]'
export NEARFIELD_AGGREGATE__OUT_OF_ORDERNESS_MS=5000 NEARFIELD_AGGREGATE__GRACE_MS=2000
export NEARFIELD_AGGREGATE__MAX_CLOSE_DELAY_MS=15000
$BIN --config $CFG aggregate 2>target/demo/aggregate.log & PIDS+=($!)
for _ in $(seq 1 150); do curl -sf localhost:8081/readyz >/dev/null && break; sleep 0.2; done
curl -sf localhost:8081/readyz >/dev/null || { tail -n 30 target/demo/aggregate.log >&2; echo "demo: aggregator not ready" >&2; exit 1; }
export NEARFIELD_EMIT__BUCKET_MS=60000 NEARFIELD_EMIT__SETTLE_MS=5000
export NEARFIELD_EMIT__HORIZON_MS=600000 NEARFIELD_EMIT__SCHEDULE_MS=120000
export NEARFIELD_EMIT__SEASON_BUCKETS=10 NEARFIELD_EMIT__IDLE_ADVANCE_MS=30000
$BIN --config $CFG emit 2>target/demo/emit.log & PIDS+=($!)
for _ in $(seq 1 150); do curl -sf localhost:8082/readyz >/dev/null && break; sleep 0.2; done
curl -sf localhost:8082/readyz >/dev/null || { tail -n 30 target/demo/emit.log >&2; echo "demo: emitter not ready" >&2; exit 1; }
$BIN --config $CFG live 2>target/demo/live.log & PIDS+=($!)
for _ in $(seq 1 50); do curl -sf localhost:8090/healthz >/dev/null && break; sleep 0.2; done
cat >&2 <<MSG
demo: LIVE PAGE: http://127.0.0.1:8090/  (map of the city's demand, plan signals, health)
demo: ingest on http://127.0.0.1:8080  (API: /openapi.json; metrics on :9080/metrics; log: target/demo/ingest.log)
demo: aggregator on http://127.0.0.1:8081  (live: /v1/demand?grid=<h3 cell>[&sku=…], metrics: /metrics, log: target/demo/aggregate.log)
demo: emitter on http://127.0.0.1:8082  (plans: /v1/plans[?supplier=…], metrics: /metrics, log: target/demo/emit.log)
demo: ~3000 simulated shops around Shanghai send $RATE events/s for $SECS s (Ctrl-C stops)
MSG
# A one-line summary every 10 s while it runs (from the live page's own API).
python3 - <<'PY' & PIDS+=($!)
import json, time, urllib.request
while True:
    time.sleep(10)
    try:
        s = json.load(urllib.request.urlopen("http://127.0.0.1:8090/api/state", timeout=5))
    except Exception as e:  # a stage restarting: say so, keep going
        print(f"\ndemo: summary unavailable ({e})", flush=True)
        continue
    h = s["health"]
    per = {}
    for sig in s["signals"]:
        per[sig["supplier_id"]] = per.get(sig["supplier_id"], 0) + 1
    f = lambda v: "-" if v is None else f"{v:,.0f}"
    # A newline first: the simulator's progress line (stderr) has none of its own.
    print(f"\ndemo: {f(h['events_per_s'])} events/s · {f(h['events_accepted'])} accepted · "
          f"{h['windows_per_s'] or 0:,.1f} windows/s · lag agg {f(h['aggregator_lag'])} / emit {f(h['emitter_lag'])} · "
          f"signals {f(h['signals_total'])} (latest 40 by supplier: {per})", flush=True)
PY
$BIN --config $CFG simulate --rate "$RATE" --duration "$SECS" --acked-log target/demo/acked.jsonl \
  | tee target/demo/summary.json
echo "demo: waiting for the last one-minute windows to close and be planned on…" >&2
# The minute of the last sale closes at most max_close_delay (15 s) after its end, and its
# final windows move the emitter's clock past the minute before: plans follow within about
# 80 s of the last sale. Wait for the first plan (at most 120 s), then 10 s more.
signals() {
  curl -s localhost:8082/metrics | awk '/^nearfield_emitter_signals_total\{/ {s += $2} END {print s + 0}'
}
for _ in $(seq 1 120); do
  [[ "$(signals)" != "0" ]] && break
  sleep 1
done
sleep 10
echo "demo: $(signals) plan signals written" >&2
echo "demo: ingest metrics:" >&2
curl -s localhost:9080/metrics | grep -E '^nearfield_ingest_(events_(accepted|rejected)_total|heartbeats_total|dlq_written_total)' >&2 || true
echo "demo: aggregator metrics:" >&2
curl -s localhost:8081/metrics | grep -E '^nearfield_aggregator_(events_total|windows_emitted_total|keys|windows|partitions|consumer_lag|watermark_delay_seconds) ' >&2 || true
curl -s localhost:8081/metrics | grep -E '^nearfield_aggregator_(events_total|windows_emitted_total)\{' >&2 || true
read -r grid sku < <(tail -n 1 target/demo/acked.jsonl | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["grid_id"], d["sku"])')
echo "demo: live demand of $sku in grid $grid (GET /v1/demand?grid=$grid&sku=$sku):" >&2
curl -s "localhost:8081/v1/demand?grid=$grid&sku=$sku" | python3 -m json.tool | head -n 40 >&2 || true
echo "demo: emitter metrics:" >&2
curl -s localhost:8082/metrics | grep -E '^nearfield_emitter_(windows_total|signals_total|privacy_suppressed_total)' | grep -v ' 0$' >&2 || true
echo "demo: signals per supplier (plan.<supplier>.v1):" >&2
curl -s "localhost:8082/v1/plans?limit=1000" | python3 -c '
import collections, json, sys
signals = json.load(sys.stdin)["signals"]
per = collections.Counter((s["supplier_id"], s["reason"]) for s in signals)
for (sup, reason), n in sorted(per.items()):
    print(f"  {sup:<16} {reason:<10} {n}")
if signals:
    s = signals[0]
    print("latest:", json.dumps({k: s[k] for k in ("supplier_id", "sku", "region", "reason", "firmness",
          "observed_units", "forecast_units", "recommended_units", "moq", "batch_size", "contributing_stores")}))
' >&2 || true
