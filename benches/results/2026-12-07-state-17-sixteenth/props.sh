#!/usr/bin/env bash
# Alternates aggregate runs at 1 M keys on one broker and one fill, three pairs: the
# production defaults (A) against one librdkafka property set as the binary takes it (B),
# e.g. props.sh NEARFIELD_KAFKA_PROPERTY_COMPRESSION_TYPE=none or ..._LINGER_MS=50; then
# the changelog bytes each run left on the broker, in KiB.
cd "$(dirname "${BASH_SOURCE[0]}")/../.." && source ./broker.sh
fresh_broker
PREFIX="p-$(date +%s)"; TOPIC="$PREFIX-sales"
$BIN fill "$B" "$TOPIC" 2000000 1000000 "$PREFIX" > /dev/null
$BIN aggregate "$B" "$TOPIC" 2000000 "$PREFIX-w" > /dev/null
for i in 1 2 3; do
  echo "== A $i"; $BIN aggregate "$B" "$TOPIC" 2000000 "$PREFIX-a-$i" | grep aggregate
  echo "== B $i $1"; env "$1" $BIN aggregate "$B" "$TOPIC" 2000000 "$PREFIX-b-$i" | grep aggregate
done
for run in a-1 a-2 a-3 b-1 b-2 b-3; do
  echo "changelog $run: $(du -sk "$NEARFIELD_KAFKA_DIR"/node-*/data/"$PREFIX-$run"-changelog-* | awk '{ s += $1 } END { print s }') KiB"
done
