#!/usr/bin/env bash
# Aggregator benchmark on a real local broker (`make bench-aggregator`). Two parts:
#
# 1. The comparison (BENCH_EVENTS records over BENCH_KEYS grid × SKU keys, default 400 000
#    over 20 000): one 6-partition topic whose sale events span BENCH_SPAN_HOURS (50) hours
#    of event time, then a record per partition a day later that closes every window of the
#    span (aggregator_bench `fill ... SPAN_HOURS`, which prints the ground truth: the
#    windows and their digest). Each run (BENCH_RUNS, 3) then runs, each in its own process:
#      consume          a bare librdkafka consumer (no decoding)
#      consume_decode   the same, decoding every record with the project's codec
#      aggregate        nearfield's aggregator, exactly-once, production defaults, until
#                       every record is processed and every window emitted and committed
#      restore          a new instance restoring that state from the changelog
#      streams          Kafka Streams 4.3.1, exactly_once_v2, in-memory stores
#      streams_rocksdb  the same with RocksDB stores (the Streams default)
#    One JSON line per phase and run in target/bench/aggregator-results.jsonl (phase,
#    events, seconds, cpu_s, events_per_cpu_s, peak_rss_mb, the broker's CPU seconds over
#    the phase, RSS slope per million events; windows_out and output_digest where the phase
#    emits windows). benches/aggregator_compare.py prints medians and spread and fails
#    unless every system's windows and digest equal the ground truth.
# 2. The memory curve (BENCH_CURVE="KEYS:EVENTS:RUNS ...", default 20 k, 1 M and 5 M keys,
#    every key one window of each size, none closing): events per CPU-second against
#    consume + decode, RSS against keys, restore per million keys
#    (target/bench/aggregator-curve.jsonl, benches/aggregator_summary.py).
#
# With BENCH_EVENTS or BENCH_KEYS set only the comparison runs; BENCH_CURVE alone runs only
# the curve; neither runs both. BENCH_STREAMS=0 leaves Kafka Streams out.
# NEARFIELD_KAFKA_PROPERTY_<NAME>=value (as for the binary, e.g. ..._LINGER_MS=50) tries a
# librdkafka property over the production defaults in the consume, aggregate and restore
# phases (a tuning experiment, not the defaults' figures: the aggregate lines carry them as
# kafka_properties, and both summaries print TUNED).
source "$(dirname "${BASH_SOURCE[0]}")/broker.sh"
COMPARE=1; CURVE_ON=1
[ -n "${BENCH_EVENTS:-}${BENCH_KEYS:-}" ] && CURVE_ON=0
[ -n "${BENCH_CURVE:-}" ] && [ -z "${BENCH_EVENTS:-}${BENCH_KEYS:-}" ] && COMPARE=0
CURVE=${BENCH_CURVE:-"20000:2000000:3 1000000:2000000:3 5000000:10000000:1"}
STREAMS=${BENCH_STREAMS:-1}
THREADS=${BENCH_STREAMS_THREADS:-$(nproc)}
if [ "$COMPARE" = 1 ] && [ "$STREAMS" != 0 ]; then
  (cd benches/streams && mvn -B -q package)
  STREAMS_CP="benches/streams/target/classes:$(cat benches/streams/target/classpath.txt)"
fi

# CPU seconds (user + system) the broker has used so far.
broker_cpu() {
  local t=0 f
  for f in "$NEARFIELD_KAFKA_DIR"/node-*/pid; do
    t=$(awk -v t="$t" '{ print t + ($14 + $15) / 100 }' "/proc/$(cat "$f")/stat" 2>/dev/null || echo "$t")
  done
  echo "$t"
}

# Runs one phase (its JSON lines tagged with point, run and the broker's CPU seconds).
phase() {
  local point=$1 run=$2; shift 2
  local b0 lines; b0=$(broker_cpu)
  lines=$("$@")
  python3 -c '
import json, sys
for l in sys.argv[4].splitlines():
    if l.startswith("{"):
        print(json.dumps({**json.loads(l), "point": int(sys.argv[1]), "run": int(sys.argv[2]),
                          "broker_cpu_s": round(float(sys.argv[3]), 2)}))' \
    "$point" "$run" "$(awk -v a="$b0" -v b="$(broker_cpu)" 'BEGIN { print b - a }')" "$lines"
}

if [ "$COMPARE" = 1 ]; then
  N=${BENCH_EVENTS:-400000}; KEYS=${BENCH_KEYS:-20000}; SPAN=${BENCH_SPAN_HOURS:-50}
  RES="$OUT/aggregator-results.jsonl"
  rm -f "$RES"
  fresh_broker
  PREFIX="cmp-$KEYS-$(date +%s)"; TOPIC="$PREFIX-sales"
  phase "$KEYS" 0 $BIN fill "$B" "$TOPIC" "$N" "$KEYS" "$PREFIX" "$SPAN" | tee -a "$RES"
  W=$(python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["windows_out"])' <"$RES")
  for run in $(seq 1 "${BENCH_RUNS:-3}"); do
    phase "$KEYS" "$run" $BIN consume "$B" "$TOPIC" "$N" | tee -a "$RES"
    phase "$KEYS" "$run" $BIN consume-decode "$B" "$TOPIC" "$N" | tee -a "$RES"
    BENCH_WINDOWS=$W phase "$KEYS" "$run" $BIN aggregate "$B" "$TOPIC" "$N" "$PREFIX-$run" | tee -a "$RES"
    phase "$KEYS" "$run" $BIN restore "$B" "$TOPIC" "$N" "$PREFIX-$run" | tee -a "$RES"
    if [ "$STREAMS" != 0 ]; then
      for store in memory rocksdb; do
        phase "$KEYS" "$run" java -Xms1g -Xmx"${STREAMS_HEAP:-8g}" -XX:+UseG1GC \
          -Dorg.slf4j.simpleLogger.defaultLogLevel=error -cp "$STREAMS_CP" \
          dev.nearfield.bench.StreamsBaseline "$B" "$TOPIC" "$N" "$PREFIX-streams-$store-$run" \
          "$THREADS" "$store" "$W" | tee -a "$RES"
      done
    fi
  done
  python3 benches/aggregator_compare.py "$RES" | tee "$OUT/aggregator-compare.md"
fi

if [ "$CURVE_ON" = 1 ]; then
  RES="$OUT/aggregator-curve.jsonl"
  rm -f "$RES"
  for point in $CURVE; do
    IFS=: read -r KEYS N RUNS <<<"$point"
    fresh_broker  # per point: the disk and page cache hold one point's topics only
    PREFIX="bench-$KEYS-$(date +%s)"; TOPIC="$PREFIX-sales"
    phase "$KEYS" 0 $BIN fill "$B" "$TOPIC" "$N" "$KEYS" "$PREFIX" | tee -a "$RES"
    for run in $(seq 1 "$RUNS"); do
      phase "$KEYS" "$run" $BIN consume-decode "$B" "$TOPIC" "$N" | tee -a "$RES"
      phase "$KEYS" "$run" $BIN aggregate "$B" "$TOPIC" "$N" "$PREFIX-$run" | tee -a "$RES"
      phase "$KEYS" "$run" $BIN restore "$B" "$TOPIC" "$N" "$PREFIX-$run" | tee -a "$RES"
    done
  done
  python3 benches/aggregator_summary.py "$RES" | tee "$OUT/aggregator.md"
fi
scripts/kafka.sh down >/dev/null 2>&1 || true
