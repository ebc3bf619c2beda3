#!/usr/bin/env bash
# Query-plane benchmark on a real local broker: the live query's latency on a state of
# KEYS grid × SKU keys while the aggregator consumes at its full rate, and the
# aggregator's throughput with and without that query load. One point:
#   1. fill a 6-partition topic with EVENTS sale events over KEYS keys
#   2. RUNS × the aggregator consuming them into fresh state, no queries
#   3. RUNS × the same with an open-loop load of QPS live queries a second (90 % one
#      grid × SKU, 10 % one grid's first 100 SKUs), latencies counted once every key exists
# Reports medians over the runs.
#   benches/query.sh                 (BENCH_QUERY="KEYS:EVENTS:RUNS", BENCH_QPS=500)
source "$(dirname "${BASH_SOURCE[0]}")/broker.sh"
IFS=: read -r KEYS N RUNS <<<"${BENCH_QUERY:-1000000:4000000:3}"
QPS=${BENCH_QPS:-500}; unset BENCH_QPS
RES="$OUT/query.jsonl"
rm -f "$RES"
fresh_broker
PREFIX="query-$KEYS-$(date +%s)"; TOPIC="$PREFIX-sales"
tag() { python3 -c 'import json,sys; [print(json.dumps({**json.loads(l), "load": sys.argv[1], "run": int(sys.argv[2])})) for l in sys.stdin if l.startswith("{")]' "$1" "$2"; }
$BIN fill "$B" "$TOPIC" "$N" "$KEYS" "$PREFIX" | tag fill 0 | tee -a "$RES"
# A first read warms the broker's page cache, so no run pays for it alone.
$BIN consume "$B" "$TOPIC" "$N" >/dev/null
plain() { $BIN aggregate "$B" "$TOPIC" "$N" "$PREFIX-q0-$1" | tag none "$1" | tee -a "$RES"; }
loaded() {
  BENCH_QPS=$QPS BENCH_KEYS=$KEYS $BIN aggregate "$B" "$TOPIC" "$N" "$PREFIX-q$QPS-$1" \
    | tag "$QPS/s" "$1" | tee -a "$RES"
}
for run in $(seq 1 "$RUNS"); do
  # Alternating which goes first, so drift over the runs favours neither.
  if [ $((run % 2)) = 1 ]; then plain "$run"; loaded "$run"; else loaded "$run"; plain "$run"; fi
done
scripts/kafka.sh down >/dev/null 2>&1 || true

python3 - "$RES" "$KEYS" <<'PY' | tee "$OUT/query.md"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"aggregate"' in l]
keys = int(sys.argv[2])
med = lambda xs: statistics.median(xs) if xs else float("nan")
print(f"| query load ({keys:,} keys) | events/s | events/CPU-s | query p50 ms | query p99 ms | queries counted | errors (all runs) |")
print("|---|---|---|---|---|---|---|")
base = None
for load in sorted({r["load"] for r in rows}, key=lambda l: (l != "none", l)):
    rs = [r for r in rows if r["load"] == load]
    eps = med([r["events_per_s"] for r in rs])
    base = base or eps
    q = [r["query"] for r in rs if r.get("query")]
    fmt = lambda k: f"{med([x[k] for x in q]):.2f}" if q else "–"
    cnt = f"{int(med([x['count'] for x in q]))}" if q else "–"
    errs = {}
    for x in q:
        for code, n in x["errors"].items():
            errs[code] = errs.get(code, 0) + n
    err = (", ".join(f"{n} × {c}" for c, n in sorted(errs.items())) or "0") if q else "–"
    print(f"| {load} | {eps:,.0f} ({eps / base:.2f}×) | {med([r['events_per_cpu_s'] for r in rs]):,.0f} | {fmt('p50_ms')} | {fmt('p99_ms')} | {cnt} | {err} |")
print(f"\nmedian of {len(rows) // max(1, len({r['load'] for r in rows}))} runs per row; the query clients run in the aggregator's process, so their CPU is in events/CPU-s")
# Like for like: every run, queried or not, consumed the same events into the same state.
same = len({json.dumps(r["totals"], sort_keys=True) for r in rows}) == 1 and len({r["keys"] for r in rows}) == 1
print(f"same output in every run (keys and sums over every window): {'yes' if same else 'NO'}")
sys.exit(0 if same else 1)
PY
