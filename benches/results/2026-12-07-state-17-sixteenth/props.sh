#!/usr/bin/env bash
# Alternates aggregate runs at 1 M keys: production defaults (A) against librdkafka properties $1 (B).
cd /work/main/benches && source ./broker.sh
fresh_broker
PREFIX="p-$(date +%s)"; TOPIC="$PREFIX-sales"
$BIN fill "$B" "$TOPIC" 2000000 1000000 "$PREFIX" > /dev/null
$BIN aggregate "$B" "$TOPIC" 2000000 "$PREFIX-w" > /dev/null
for i in 1 2 3; do
  echo "== A $i"; $BIN aggregate "$B" "$TOPIC" 2000000 "$PREFIX-a-$i" | grep aggregate
  echo "== B $i $1"; BENCH_KAFKA_PROPERTIES="$1" $BIN aggregate "$B" "$TOPIC" 2000000 "$PREFIX-b-$i" | grep aggregate
done
