#!/usr/bin/env bash
# Aggregator benchmark on a real local broker, as a curve over key counts. Per point
# (KEYS grid × SKU keys, EVENTS sale events, RUNS repetitions):
#   1. fill a 6-partition topic with EVENTS sale events over KEYS keys
#   2. the ceiling: a bare librdkafka consumer reading and decoding the records
#   3. the aggregator (exactly-once, production defaults) consuming them into fresh state
#   4. a new instance restoring that state from the changelog (and checking that every
#      window sums to what the aggregating instance held)
# and once, on the point with BENCH_STREAMS_KEYS keys, the Kafka Streams baseline
# (benches/streams: the same windowed counts, exactly-once).
# Reports medians over the runs: events per CPU-second against the ceiling, RSS against
# keys (absolute and the slope between points: the bytes a further million keys costs),
# restore seconds per million keys.
#   benches/aggregator.sh            (BENCH_CURVE="KEYS:EVENTS:RUNS ...", BENCH_STREAMS=0 skips Streams)
source "$(dirname "${BASH_SOURCE[0]}")/broker.sh"
CURVE=${BENCH_CURVE:-"20000:2000000:3 1000000:2000000:3 5000000:10000000:1"}
STREAMS_KEYS=${BENCH_STREAMS_KEYS:-1000000}
if [ "${BENCH_STREAMS:-1}" != 0 ]; then
  (cd benches/streams && mvn -B -q package)
  STREAMS_CP="benches/streams/target/classes:$(cat benches/streams/target/classpath.txt)"
fi
RES="$OUT/aggregator-curve.jsonl"
rm -f "$RES"
for point in $CURVE; do
  IFS=: read -r KEYS N RUNS <<<"$point"
  fresh_broker  # per point: the disk and page cache hold one point's topics only
  PREFIX="bench-$KEYS-$(date +%s)"; TOPIC="$PREFIX-sales"
  tag() { python3 -c 'import json,sys; [print(json.dumps({**json.loads(l), "point": int(sys.argv[1]), "run": int(sys.argv[2])})) for l in sys.stdin if l.startswith("{")]' "$KEYS" "$1"; }
  $BIN fill "$B" "$TOPIC" "$N" "$KEYS" "$PREFIX" | tag 0 | tee -a "$RES"
  for run in $(seq 1 "$RUNS"); do
    $BIN consume "$B" "$TOPIC" "$N" | tag "$run" | tee -a "$RES"
    $BIN aggregate "$B" "$TOPIC" "$N" "$PREFIX-$run" | tag "$run" | tee -a "$RES"
    $BIN restore "$B" "$TOPIC" "$N" "$PREFIX-$run" | tag "$run" | tee -a "$RES"
  done
  if [ "${BENCH_STREAMS:-1}" != 0 ] && [ "$KEYS" = "$STREAMS_KEYS" ]; then
    java -Xms1g -Xmx${STREAMS_HEAP:-6g} -XX:+UseG1GC -Dorg.slf4j.simpleLogger.defaultLogLevel=error \
      -cp "$STREAMS_CP" dev.nearfield.bench.StreamsBaseline "$B" "$TOPIC" "$N" "$PREFIX-streams" 2 \
      | tag 1 | tee -a "$RES"
  fi
done
scripts/kafka.sh down >/dev/null 2>&1 || true

python3 benches/aggregator_summary.py "$RES" | tee "$OUT/aggregator.md"
