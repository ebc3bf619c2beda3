#!/usr/bin/env bash
# Aggregator benchmark on a real local broker (same machine, same pre-filled topic):
#   1. fill a 6-partition topic with N sale events over KEYS grid × SKU keys
#   2. the ceiling: a bare librdkafka consumer reading the N records
#   3. the aggregator (exactly-once, production defaults) consuming them into fresh state
#   4. a new instance restoring that state from the changelog
# Reports events/s per core (events per CPU-second of the measured process), the ratio to
# the bare consumer, peak memory, memory per million keys, and restore time.
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
BIN=target/release/examples/aggregator_bench
scripts/kafka.sh down >/dev/null 2>&1 || true
line=$(scripts/kafka.sh up 1 | tail -n 1); B="${line#NEARFIELD_BROKERS=}"
PREFIX="bench-$(date +%s)"; TOPIC="$PREFIX-sales"
rm -f "$OUT/aggregator-results.jsonl"
for phase in fill consume aggregate restore; do
  case $phase in
    fill) $BIN fill "$B" "$TOPIC" "$N" "$KEYS" "$PREFIX" ;;
    consume) $BIN consume "$B" "$TOPIC" "$N" ;;
    *) $BIN "$phase" "$B" "$TOPIC" "$N" "$PREFIX" ;;
  esac | tee -a "$OUT/aggregator-results.jsonl"
done

python3 - "$OUT/aggregator-results.jsonl" <<'PY' | tee "$OUT/aggregator.md"
import json, sys
r = {j["phase"]: j for j in map(json.loads, open(sys.argv[1]))}
c, a, s = r["consume"], r["aggregate"], r["restore"]
print(f"| run ({a['events']:,} events, {a['keys']:,} keys) | events/s (wall) | events/s per core | vs bare consumer per core | peak RSS |")
print("|---|---|---|---|---|")
print(f"| aggregator (exactly-once) | {a['events_per_s']:,.0f} | {a['events_per_cpu_s']:,.0f} | {a['events_per_cpu_s']/c['events_per_cpu_s']:.2f} | {a['peak_rss_mb']:.0f} MiB |")
print(f"| bare librdkafka consumer (ceiling) | {c['events_per_s']:,.0f} | {c['events_per_cpu_s']:,.0f} | 1.00 | {c['peak_rss_mb']:.0f} MiB |")
print()
mk = max(a["keys"], 1) / 1e6
print("| state | keys | windows | estimated state bytes | RSS | per million keys | restore | changelog records |")
print("|---|---|---|---|---|---|---|---|")
print(f"| after aggregating | {a['keys']:,} | {a['windows']:,} | {a['state_bytes']/2**20:.0f} MiB | {a['rss_mb']:.0f} MiB | {a['rss_mb']/mk:.0f} MiB RSS | – | – |")
mk = max(s["keys"], 1) / 1e6
print(f"| restored by a new instance | {s['keys']:,} | {s['windows']:,} | {s['state_bytes']/2**20:.0f} MiB | +{s['rss_growth_mb']:.0f} MiB | {s['seconds']/mk:.1f} s, +{s['rss_growth_mb']/mk:.0f} MiB | {s['seconds']:.1f} s | {s['records']:,} |")
PY
