#!/usr/bin/env bash
# The whole pipeline on a local broker with simulated shops: Kafka (started here unless
# NEARFIELD_BROKERS names one) → topics → ingest → aggregator → emitter, the live page on
# :8090, driven by the simulated store devices of the example city. The demo shortens the
# smallest window to one minute, and the emitter plans on those minutes (10-minute
# horizons, a schedule every 2 minutes), so windows close and plans appear while you
# watch. Ctrl-C stops everything within seconds — the stages drain, the broker it started
# stops — and prints the summary (exit status 0: stopping the demo is how it ends).
#   DEMO_SECONDS=120 DEMO_RATE=2000 make demo      (DEMO_BIN: a built nearfield to use)
#   make demo-observe                               (also Prometheus with the alert rules)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECS=${DEMO_SECONDS:-60}
RATE=${DEMO_RATE:-1000}
CFG=deploy/examples/nearfield.toml
PIDS=()
WATCHDOGS=()
started_kafka=
stopping=
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  # Their watchdogs have nothing left to watch: stopped and waited for, so the demo leaves
  # no process behind when it returns (not one that notices a second later).
  for p in "${WATCHDOGS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${WATCHDOGS[@]}"; do wait "$p" 2>/dev/null || true; done
  # The demo's broker and its data are thrown away: killed, not shut down in order (a
  # controlled shutdown took seconds of the ten Ctrl-C has to stop everything).
  if [[ -n "$started_kafka" ]]; then scripts/kafka.sh down --kill >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
# Ctrl-C before the simulation: stop at once. During it: the simulator (which gets the
# same SIGINT) stops sending and prints its totals, then the summary, then everything stops.
trap 'echo "demo: stopped before the shops started" >&2; exit 0' INT
trap 'exit 143' TERM

mkdir -p target/demo
rm -f target/demo/stopping
if [[ -n "${DEMO_BIN:-}" ]]; then
  BIN=$DEMO_BIN
else
  scripts/bootstrap.sh
  cargo build --release --locked --bin nearfield
  BIN=target/release/nearfield
fi
# The demo's fixed ports must be free: another demo or test holding one would answer for it.
for port in 8080 9080 8081 8082 8090; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo: port $port is already in use (another demo or test?): stop it first" >&2; exit 1
  fi
done
if [[ -z "${NEARFIELD_BROKERS:-}" ]]; then
  export NEARFIELD_KAFKA_DIR="$ROOT/target/kafka-demo" NEARFIELD_KAFKA_OWNER_PID=$$
  scripts/kafka.sh down >/dev/null 2>&1 || true
  line=$(scripts/kafka.sh up 1 | tail -n 1)
  export NEARFIELD_BROKERS="${line#NEARFIELD_BROKERS=}"
  started_kafka=1
fi
echo "demo: Kafka at $NEARFIELD_BROKERS" >&2
$BIN --config $CFG topics
# Each stage in a session of its own: Ctrl-C reaches this script (and the simulator), which
# prints the summary from the running stages, then stops them; a watchdog stops them if
# this script dies without cleaning up.
detached() { # log name, command and arguments
  local name=$1; shift
  setsid "$@" >/dev/null 2>"target/demo/$name.log" </dev/null &
  local pid=$!
  PIDS+=("$pid")
  setsid nohup bash -c "while kill -0 $$ 2>/dev/null; do sleep 1; done; kill -TERM $pid 2>/dev/null" \
    >/dev/null 2>&1 </dev/null &
  WATCHDOGS+=("$!")
}
stage() { local name=$1; shift; detached "$name" "$BIN" --config "$CFG" "$@"; }
# Ready means this demo's own stage answers: a stage that exits (a port taken by another
# program, a bad config) fails the demo with its log, instead of the other program's
# answer passing for it.
ready() { # log name, URL, tries of 0.2 s; the stage is the last one started
  local name=$1 url=$2 tries=$3 pid=${PIDS[-1]}
  for _ in $(seq 1 "$tries"); do
    kill -0 "$pid" 2>/dev/null || break
    curl -sf "$url" >/dev/null && return 0
    sleep 0.2
  done
  tail -n 30 "target/demo/$name.log" >&2
  if kill -0 "$pid" 2>/dev/null; then echo "demo: $name not ready" >&2; else echo "demo: $name exited (log: target/demo/$name.log)" >&2; fi
  exit 1
}
stage ingest ingest
ready ingest localhost:8080/readyz 100
export NEARFIELD_AGGREGATE__WINDOWS_MS='[60000, 3600000, 86400000]'
export NEARFIELD_AGGREGATE__OUT_OF_ORDERNESS_MS=5000 NEARFIELD_AGGREGATE__GRACE_MS=2000
export NEARFIELD_AGGREGATE__MAX_CLOSE_DELAY_MS=15000
stage aggregate aggregate
ready aggregate localhost:8081/readyz 150
# The demo's clock runs an hour a minute: the catalog's lead times (whole days) would make
# every plan cover days of demo-minutes, so the emitter reads a copy without them.
python3 - <<'PY'
import json
with open("deploy/examples/catalog.jsonl", encoding="utf-8") as src, \
     open("target/demo/catalog.jsonl", "w", encoding="utf-8") as dst:
    for line in src:
        if line.strip():
            r = json.loads(line)
            r["lead_time_hours"] = 0
            dst.write(json.dumps(r, ensure_ascii=False) + "\n")
PY
export NEARFIELD_EMIT__CATALOG_FILE="$ROOT/target/demo/catalog.jsonl"
export NEARFIELD_EMIT__BUCKET_MS=60000 NEARFIELD_EMIT__SETTLE_MS=5000
export NEARFIELD_EMIT__HORIZON_MS=600000 NEARFIELD_EMIT__SCHEDULE_MS=120000
export NEARFIELD_EMIT__SEASON_BUCKETS=10 NEARFIELD_EMIT__IDLE_ADVANCE_MS=30000
stage emit emit
ready emit localhost:8082/readyz 150
stage live live
ready live localhost:8090/healthz 50
if [[ -n "${DEMO_PROMETHEUS:-}" ]]; then
  # Prometheus (Debian package) scraping every stage with the project's alert rules.
  command -v prometheus >/dev/null || scripts/bootstrap.sh --test
  cat >target/demo/prometheus.yml <<YML
global: {scrape_interval: 5s, evaluation_interval: 5s}
rule_files: ["$ROOT/deploy/prometheus/rules.yml"]
scrape_configs:
  - {job_name: ingest, static_configs: [{targets: ["127.0.0.1:9080"]}]}
  - {job_name: aggregator, static_configs: [{targets: ["127.0.0.1:8081"]}]}
  - {job_name: emitter, static_configs: [{targets: ["127.0.0.1:8082"]}]}
YML
  rm -rf target/demo/prometheus-data
  detached prometheus prometheus --config.file=target/demo/prometheus.yml \
    --storage.tsdb.path=target/demo/prometheus-data --web.listen-address=127.0.0.1:9090
  echo "demo: Prometheus on http://127.0.0.1:9090/alerts (deploy/prometheus rules; kill a stage to see NearfieldStageDown)" >&2
fi
cat >&2 <<MSG
demo: LIVE PAGE: http://127.0.0.1:8090/  (map of the city's demand, plan signals, health)
demo: ingest on http://127.0.0.1:8080  (API: /openapi.json; metrics on :9080/metrics; log: target/demo/ingest.log)
demo: aggregator on http://127.0.0.1:8081  (live: /v1/demand?grid=<h3 cell>[&sku=…], metrics: /metrics, log: target/demo/aggregate.log)
demo: emitter on http://127.0.0.1:8082  (plans: /v1/plans[?supplier=…], metrics: /metrics, log: target/demo/emit.log)
demo: ~3000 simulated shops around Shanghai send $RATE events/s for $SECS s (Ctrl-C stops)

What a factory sees: its own plan topic (plan.<supplier>.v1) receives plans like
  "bright-dairy: have 480 units of Fresh milk #1 (SKU-00001) at warehouse
   bright-dairy-wh-west for 10:20–10:30 UTC — demand at a 90 % service level, forecast
   from the minute-by-minute sales of the shops the warehouse serves, rounded once up to
   the MOQ 120 and batches of 24, split over the warehouse's regions; why: demand reached
   the MOQ (threshold); planning, not yet firm."
The first plans come about 80 s after the shops start selling (windows must close first);
they appear on the live page, and the summary (at the end, or on Ctrl-C) says the latest
ones in words.

MSG
# A one-line progress report every 10 s while it runs (from the live page's own API: the
# page's figures, by the page's definitions). Quiet once the demo is stopping.
python3 - <<'PY' & PIDS+=($!)
import json, os, time, urllib.request
while True:
    time.sleep(10)
    if os.path.exists("target/demo/stopping"):
        break
    try:
        s = json.load(urllib.request.urlopen("http://127.0.0.1:8090/api/state", timeout=5))
    except Exception as e:  # a stage restarting: say so, keep going
        if not os.path.exists("target/demo/stopping"):
            print(f"\ndemo: progress unavailable ({e})", flush=True)
        continue
    h = s["health"]
    f = lambda v: "-" if v is None else f"{v:,.0f}"
    # A newline first: the simulator's progress line (stderr) has none of its own.
    print(f"\ndemo: {f(h['events_per_s'])} events/s · {f(h['events_accepted'])} accepted · "
          f"{f(h['windows_per_min'])} windows emitted in the last minute · "
          f"lag agg {f(h['aggregator_lag'])} / emit {f(h['emitter_lag'])} · signals {f(h['signals_total'])}",
          flush=True)
PY
interrupted=
trap 'interrupted=1; touch target/demo/stopping' INT
# In the background and waited for: a trapped SIGINT ends the `wait` at once (a foreground
# simulator that stops cleanly on it would leave the trap unrun).
$BIN --config $CFG simulate --rate "$RATE" --duration "$SECS" --acked-log target/demo/acked.jsonl \
  >target/demo/summary.json &
sim=$!
wait "$sim" || true
wait "$sim" 2>/dev/null || true # after a Ctrl-C: the simulator stops too, with its totals
cat target/demo/summary.json
if [[ -n "$interrupted" ]]; then
  echo "demo: stopping (Ctrl-C)" >&2
  python3 scripts/demo/report.py deploy/examples/catalog.jsonl target/demo/summary.json
  exit 0
fi
trap 'touch target/demo/stopping; echo "demo: stopping (Ctrl-C)" >&2;
  python3 scripts/demo/report.py deploy/examples/catalog.jsonl target/demo/summary.json; exit 0' INT
# The minute of the last sale acknowledged is final at most max_close_delay (15 s) after
# its end, wherever in the minute the shops stopped (scripts/demo/last_minute.py): wait
# for that first (a plan from an earlier minute does not mean the last one was counted),
# then for its windows to move the emitter's clock past the minute before (plans follow
# within about 80 s of the last sale): for the first plan if there is none yet (at most
# 120 s), then 10 s more.
closed_by=$(python3 scripts/demo/last_minute.py target/demo/acked.jsonl "$NEARFIELD_AGGREGATE__MAX_CLOSE_DELAY_MS")
by=
if ((closed_by > 0)); then by=" (by $(date -u -d "@$closed_by" +%H:%M:%S) UTC)"; fi
echo "demo: waiting for the last one-minute windows to close$by and be planned on…" >&2
deadline=$(($(date +%s) + 120))
while (($(date +%s) < closed_by && $(date +%s) < deadline)); do sleep 1; done
signals() {
  curl -s localhost:8082/metrics | awk '/^nearfield_emitter_signals_total\{/ {s += $2} END {print s + 0}'
}
for _ in $(seq 1 120); do
  [[ "$(signals)" != "0" ]] && break
  sleep 1
done
sleep 10
touch target/demo/stopping
read -r grid sku < <(tail -n 1 target/demo/acked.jsonl | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["grid_id"], d["sku"])')
echo "demo: live demand of $sku in grid $grid (GET /v1/demand?grid=$grid&sku=$sku):" >&2
curl -s "localhost:8081/v1/demand?grid=$grid&sku=$sku&window_ms=60000" | python3 -m json.tool 2>/dev/null | head -n 30 >&2 || true
python3 scripts/demo/report.py deploy/examples/catalog.jsonl target/demo/summary.json
