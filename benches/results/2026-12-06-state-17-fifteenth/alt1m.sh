#!/usr/bin/env bash
# One broker, one 1 M-key topic; the aggregate phase of two builds alternated on it.
cd /work/main/benches && source ./broker.sh
fresh_broker
PREFIX="alt-$(date +%s)"; TOPIC="$PREFIX-sales"
$BIN fill "$B" "$TOPIC" 2000000 1000000 "$PREFIX" > /dev/null
for i in 1 2 3 4 5; do
  for b in main base; do
    if [ $b = main ]; then X=/work/main/target/release/examples/aggregator_bench; else X=/work/main/target/base/release/examples/aggregator_bench; fi
    $X aggregate "$B" "$TOPIC" 2000000 "$PREFIX-$b-$i" | python3 -c '
import sys,json
j=json.loads(sys.stdin.readline()); print("'$b'", j["events_per_cpu_s"], j["threads_cpu_s"]["aggregator"], j["totals"]["events"])'
  done
done
