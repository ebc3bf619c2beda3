#!/usr/bin/env bash
# Everything `make test` runs: bootstrap, format and lint checks, unit and integration
# tests against a real Apache Kafka started here (and stopped on exit, whatever happens),
# the golden vectors through an independent Avro implementation, and a fuzz smoke run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
step() { printf '\n==> %s\n' "$*" >&2; }

step "bootstrap"
scripts/bootstrap.sh --test

step "cargo fmt --check"
cargo fmt --all --check
(cd fuzz && cargo fmt --check)

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build tests"
cargo test --workspace --locked --no-run

LOG="$ROOT/target/test-output.log"
: >"$LOG"
step "Java factory client: mvn test (golden vectors, plan book) and package"
if ! (cd clients/java && mvn -B -q package) >>"$LOG" 2>&1; then
  grep -E '^\[ERROR\]|FAIL' "$LOG" | head -n 60 >&2
  echo "clients/java: mvn package failed; full output in $LOG" >&2
  exit 1
fi
java_tests=$(cat clients/java/target/surefire-reports/*.txt | grep -oE 'Tests run: [0-9]+, Failures: 0, Errors: 0' | awk '{s+=$3} END {print s+0}')
echo "clients/java: $java_tests tests passed" >&2

step "start Apache Kafka"
export NEARFIELD_KAFKA_DIR="$ROOT/target/kafka-make-test"
export NEARFIELD_KAFKA_OWNER_PID=$$
trap 'scripts/kafka.sh down' EXIT
scripts/kafka.sh down
brokers_line=$(scripts/kafka.sh up 1 | tail -n 1)
export NEARFIELD_BROKERS="${brokers_line#NEARFIELD_BROKERS=}"
echo "using live Kafka at $NEARFIELD_BROKERS" >&2

step "cargo test (unit + integration against live Kafka)"
set +e
cargo test --workspace --locked 2>&1 | tee -a "$LOG" | grep --line-buffered -E '^(test result|\s+Running|test .* FAILED$|.*panicked)'
rc=${PIPESTATUS[0]}
set -e
if [[ $rc -ne 0 ]]; then
  grep -E -A 30 '^failures:' "$LOG" | head -n 120 >&2 || true
  echo "cargo test failed (exit $rc); full output in $LOG" >&2
  exit 1
fi

step "golden vectors with fastavro (independent Avro implementation)"
.venv/bin/python -m pytest -q schemas/tests/python 2>&1 | tee -a "$LOG"

step "Python factory client: pytest (golden vectors, plan book, errors; the installed package)"
.venv/bin/python -m pytest -q -p no:cacheprovider clients/python/tests 2>&1 | tee -a "$LOG"

step "the demo's own logic: pytest (when its last minute of sales is final)"
.venv/bin/python -m pytest -q -p no:cacheprovider scripts/demo/tests 2>&1 | tee -a "$LOG"

step "device API contract: schemathesis on a running ingest, requests from its OpenAPI document"
NEARFIELD_BIN="$ROOT/target/debug/nearfield" .venv/bin/python -m pytest -q -s -p no:cacheprovider ingest/tests/contract 2>&1 | tee -a "$LOG"

step "deploy/: promtool (config, rules, rule tests), manifests against Kubernetes schemas, compose config, structural checks"
promtool check config deploy/prometheus/prometheus.yml
promtool test rules deploy/prometheus/tests/*.yml 2>&1 | tee -a "$LOG"
.venv/bin/python -m pytest -q deploy/tests 2>&1 | tee -a "$LOG"

step "benchmark smoke: nearfield vs Kafka Streams on a small topic, both outputs checked against the ground truth"
# Not a measurement (a debug build): proves the comparison runs and that its output
# check holds (benches/aggregator_compare.py fails the step otherwise).
BENCH_DEBUG=1 BENCH_EVENTS=20000 BENCH_KEYS=1000 BENCH_RUNS=1 benches/aggregator.sh 2>&1 | tail -n 14 | tee -a "$LOG"

step "benchmark smoke: a tuning experiment on the benchmark is labelled as one"
# NEARFIELD_KAFKA_PROPERTY_* reaches the bench's clients as it reaches the binary's
# (librdkafka must accept it), and the summary says the figures are not the defaults'.
tuned=$(NEARFIELD_KAFKA_PROPERTY_LINGER_MS=20 BENCH_DEBUG=1 BENCH_EVENTS=2000 BENCH_KEYS=100 \
  BENCH_RUNS=1 BENCH_STREAMS=0 benches/aggregator.sh 2>&1) || { echo "$tuned" >&2; exit 1; }
grep -F 'TUNED, not the production defaults: NEARFIELD_KAFKA_PROPERTY_* {"linger.ms": "20"}' \
  <<<"$tuned" | tee -a "$LOG" || {
  echo "$tuned" >&2
  echo "the tuned benchmark run was not labelled TUNED" >&2
  exit 1
}

step "benchmark smoke: the steady harness of make bench-instructions, its flush and lean modes"
# A debug build, not a measurement: two fresh states must write the same flush digest
# (the harness asserts it), and the lean bound must count what the state counts.
cargo test --locked -q -p nearfield-aggregator --bench steady -- 4 2 flush 2>&1 | tee -a "$LOG"
cargo test --locked -q -p nearfield-aggregator --bench steady -- 4 1 lean 2>&1 | tee -a "$LOG"

step "fuzz smoke (${FUZZ_SECONDS:=20}s per target)"
scripts/fuzz.sh "$FUZZ_SECONDS"

passed=$(grep -oE '(ok|FAILED)\. [0-9]+ passed' "$LOG" | awk '{s+=$2} END {print s+0}')
py=$(grep -oE '^[0-9]+ passed' "$LOG" | awk '{s+=$1} END {print s+0}')
step "all checks passed"
echo "nearfield: $((passed + py + java_tests)) passed, 0 failed"
