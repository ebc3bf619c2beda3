#!/usr/bin/env bash
# One 1 M-key point under perf: fill, then aggregate twice (the first warms), the second recorded.
cd /work/main/benches && source ./broker.sh
fresh_broker
PREFIX="perf-$(date +%s)"; TOPIC="$PREFIX-sales"
$BIN fill "$B" "$TOPIC" 2000000 1000000 "$PREFIX"
$BIN aggregate "$B" "$TOPIC" 2000000 "$PREFIX-1"
perf record -F 999 -g --call-graph dwarf,16384 -o /tmp/r16/perf.data -- $BIN aggregate "$B" "$TOPIC" 2000000 "$PREFIX-2"
