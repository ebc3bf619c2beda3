#!/usr/bin/env bash
# (BENCH_KAFKA_PROPERTIES: aggregator_bench, sixteenth session.) Alternates aggregate runs with the transactional producer's compression lz4 / none on one broker.
cd /work/main/benches && source ./broker.sh
fresh_broker
PREFIX="c-$(date +%s)"; TOPIC="$PREFIX-sales"
$BIN fill "$B" "$TOPIC" 2000000 1000000 "$PREFIX"
$BIN aggregate "$B" "$TOPIC" 2000000 "$PREFIX-w"
for i in 1 2 3; do
  for c in lz4 none; do
    echo "== $c $i"
    BENCH_KAFKA_PROPERTIES="compression.type=$c" $BIN aggregate "$B" "$TOPIC" 2000000 "$PREFIX-$c-$i" | grep aggregate
  done
done
du -sk "$NEARFIELD_KAFKA_DIR"/node-*/data/*changelog* 2>/dev/null | sort -k2 | head -80 || true
find "$NEARFIELD_KAFKA_DIR" -maxdepth 3 -type d | head -5
