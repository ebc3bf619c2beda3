# Sourced by the aggregator benchmarks (aggregator.sh, aggregator-crash.sh, query.sh): the
# repository as the working directory, target/bench for results, a benchmark broker of
# their own under target/kafka-bench-<script> (stopped on exit), and the benchmark binary.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT=target/bench; mkdir -p "$OUT"
# A broker directory per script: the watchdog that stops and removes a script's broker
# when the script exits never touches the next script's broker.
export NEARFIELD_KAFKA_DIR="$ROOT/target/kafka-bench-$(basename "$0" .sh)" NEARFIELD_KAFKA_OWNER_PID=$$
cleanup() { scripts/kafka.sh down >/dev/null 2>&1 || true; }
trap cleanup EXIT
# BENCH_DEBUG=1 (make test's smoke run): a debug build, to check the benchmark works, not
# to measure.
if [ "${BENCH_DEBUG:-0}" = 1 ]; then
  BIN=target/debug/examples/aggregator_bench
  cargo build --locked -q -p nearfield-aggregator --example aggregator_bench
else
  BIN=target/release/examples/aggregator_bench
  cargo build --release --locked -q -p nearfield-aggregator --example aggregator_bench
fi

# A fresh one-node broker (its disk and page cache hold one run's topics only); sets B to
# its bootstrap address.
fresh_broker() {
  scripts/kafka.sh down >/dev/null 2>&1 || true
  rm -rf "$NEARFIELD_KAFKA_DIR"
  local line
  line=$(scripts/kafka.sh up 1 | tail -n 1)
  B="${line#NEARFIELD_BROKERS=}"
}
