#!/usr/bin/env bash
# Aggregator benchmark on a real local broker (same machine, same pre-filled topic):
#   1. fill a 6-partition topic with N sale events over KEYS grid × SKU keys
#   2. the ceiling: a bare librdkafka consumer reading the N records
#   3. the aggregator (exactly-once, production defaults) consuming them into fresh state
#   4. a new instance restoring that state from the changelog
#   5. the Kafka Streams baseline (benches/streams: the same windowed counts, exactly-once)
# Reports events/s per core (events per CPU-second of the measured process), the ratios to
# the bare consumer and to Kafka Streams, peak memory, memory per million keys, and
# restore time.
#   benches/aggregator.sh [N] [KEYS]      (defaults 2000000 and 1000000)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N=${1:-2000000}; KEYS=${2:-1000000}
OUT=target/bench; mkdir -p "$OUT"
export NEARFIELD_KAFKA_DIR="$ROOT/target/kafka-bench" NEARFIELD_KAFKA_OWNER_PID=$$
cleanup() { scripts/kafka.sh down >/dev/null 2>&1 || true; }
trap cleanup EXIT

cargo build --release --locked -q -p nearfield-aggregator --example aggregator_bench
(cd benches/streams && mvn -B -q package)
STREAMS_CP="benches/streams/target/classes:$(cat benches/streams/target/classpath.txt)"
BIN=target/release/examples/aggregator_bench
scripts/kafka.sh down >/dev/null 2>&1 || true
line=$(scripts/kafka.sh up 1 | tail -n 1); B="${line#NEARFIELD_BROKERS=}"
PREFIX="bench-$(date +%s)"; TOPIC="$PREFIX-sales"
rm -f "$OUT/aggregator-results.jsonl"
for phase in fill consume aggregate restore streams; do
  case $phase in
    fill) $BIN fill "$B" "$TOPIC" "$N" "$KEYS" "$PREFIX" ;;
    consume) $BIN consume "$B" "$TOPIC" "$N" ;;
    streams) java -Xms1g -Xmx${STREAMS_HEAP:-6g} -XX:+UseG1GC -Dorg.slf4j.simpleLogger.defaultLogLevel=error \
               -cp "$STREAMS_CP" dev.nearfield.bench.StreamsBaseline "$B" "$TOPIC" "$N" "$PREFIX-streams" 2 ;;
    *) $BIN "$phase" "$B" "$TOPIC" "$N" "$PREFIX" ;;
  esac | tee -a "$OUT/aggregator-results.jsonl"
done

python3 - "$OUT/aggregator-results.jsonl" <<'PY' | tee "$OUT/aggregator.md"
import json, sys
r = {j["phase"]: j for j in map(json.loads, open(sys.argv[1]))}
c, a, s, k = r["consume"], r["aggregate"], r["restore"], r["streams"]
print(f"| run ({a['events']:,} events, {a['keys']:,} keys) | events/s (wall) | events/s per core | vs bare consumer per core | ours vs it per core | peak RSS |")
print("|---|---|---|---|---|---|")
print(f"| aggregator (exactly-once) | {a['events_per_s']:,.0f} | {a['events_per_cpu_s']:,.0f} | {a['events_per_cpu_s']/c['events_per_cpu_s']:.2f} | 1.00 | {a['peak_rss_mb']:.0f} MiB |")
print(f"| bare librdkafka consumer (ceiling) | {c['events_per_s']:,.0f} | {c['events_per_cpu_s']:,.0f} | 1.00 | {a['events_per_cpu_s']/c['events_per_cpu_s']:.2f} | {c['peak_rss_mb']:.0f} MiB |")
print(f"| Kafka Streams 4.3.1 (exactly_once_v2, {k['threads']} threads) | {k['events_per_s']:,.0f} | {k['events_per_cpu_s']:,.0f} | {k['events_per_cpu_s']/c['events_per_cpu_s']:.2f} | {a['events_per_cpu_s']/k['events_per_cpu_s']:.1f}× | {k['peak_rss_mb']:.0f} MiB |")
print()
mk = max(a["keys"], 1) / 1e6
print("| state | keys | windows | estimated state bytes | RSS | per million keys | restore | changelog records |")
print("|---|---|---|---|---|---|---|---|")
print(f"| after aggregating | {a['keys']:,} | {a['windows']:,} | {a['state_bytes']/2**20:.0f} MiB | {a['rss_mb']:.0f} MiB | {a['rss_mb']/mk:.0f} MiB RSS | – | – |")
mk = max(s["keys"], 1) / 1e6
print(f"| restored by a new instance | {s['keys']:,} | {s['windows']:,} | {s['state_bytes']/2**20:.0f} MiB | +{s['rss_growth_mb']:.0f} MiB | {s['seconds']/mk:.1f} s, +{s['rss_growth_mb']/mk:.0f} MiB | {s['seconds']:.1f} s | {s['records']:,} |")
PY
