#!/usr/bin/env bash
# The aggregator at a size: KEYS live grid × SKU keys (2 sales each by default), killed
# with SIGKILL once everything is committed, then restored by a new process that must hold
# exactly the same sums over every window (windows, events, units, revenue, distinct
# stores). Prints both JSON lines and "same counts after SIGKILL and restore: yes|NO".
#   benches/aggregator-crash.sh [KEYS] [EVENTS]      (defaults 20000000 and 2 × KEYS)
source "$(dirname "${BASH_SOURCE[0]}")/broker.sh"
KEYS=${1:-20000000}; N=${2:-$((KEYS * 2))}
fresh_broker
PREFIX="crash-$KEYS-$(date +%s)"; TOPIC="$PREFIX-sales"
RES="$OUT/aggregator-crash-$KEYS.jsonl"
$BIN fill "$B" "$TOPIC" "$N" "$KEYS" "$PREFIX" > "$RES"
# The aggregating process prints its sums, then SIGKILLs itself (exit status 137).
BENCH_KILL=1 $BIN aggregate "$B" "$TOPIC" "$N" "$PREFIX-1" >> "$RES" || true
$BIN restore "$B" "$TOPIC" "$N" "$PREFIX-1" >> "$RES"
cat "$RES"
python3 - "$RES" <<'PY'
import json, sys
r = {j["phase"]: j for j in map(json.loads, open(sys.argv[1]))}
a, s = r["aggregate"], r["restore"]
same = a["totals"] == s["totals"] and a["keys"] == s["keys"]
mk = a["keys"] / 1e6
print(f"keys {a['keys']:,} · windows {a['windows']:,} · aggregate {a['events_per_cpu_s']:,.0f} events/CPU-s · "
      f"RSS {a['rss_mb']:,.0f} MiB ({a['rss_mb'] / mk:,.0f} MiB per million keys) · "
      f"restore {s['seconds']:.1f} s ({s['seconds'] / mk:.2f} s per million keys), RSS {s['rss_mb']:,.0f} MiB")
print(f"same counts after SIGKILL and restore: {'yes' if same else 'NO'}")
sys.exit(0 if same else 1)
PY
