# nearfield — see README.md. Every target works on a fresh machine (it installs what is
# missing through scripts/bootstrap.sh).
SHELL := /usr/bin/env bash
KAFKA_BROKERS ?= 1

.PHONY: help bootstrap build demo demo-observe image image-test test kafka-up kafka-down kafka-status bench bench-ingest bench-instructions bench-aggregator bench-emitter bench-latency bench-query fuzz golden fmt lint

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

bootstrap: ## install missing system packages, Python venv, Kafka jars
	@scripts/bootstrap.sh

build: bootstrap ## build the nearfield binary (release)
	cargo build --release --locked --bin nearfield

demo: ## the pipeline on a local Kafka with simulated shops (DEMO_SECONDS, DEMO_RATE)
	@scripts/demo.sh

demo-observe: ## make demo with Prometheus on :9090 scraping every stage with deploy/prometheus rules
	@DEMO_PROMETHEUS=1 scripts/demo.sh

test: ## everything: fmt, clippy, unit + integration tests on real Kafka, golden vectors, fuzz smoke
	@scripts/test.sh

kafka-up: ## start a local Apache Kafka (KAFKA_BROKERS=3: 3 nodes; KAFKA_SECURITY=scram: SASL/SCRAM + ACLs, admin settings printed after NEARFIELD_BROKERS)
	@scripts/kafka.sh up $(KAFKA_BROKERS)

kafka-down: ## stop the local Kafka and remove its data
	@scripts/kafka.sh down

kafka-status: ## show the local Kafka nodes
	@scripts/kafka.sh status

bench: bootstrap ## criterion benchmarks, ingest/aggregator (vs bare client and Kafka Streams) and latency on a real broker; one table
	rm -rf target/bench
	cargo bench --locked -p nearfield-schemas --bench codec
	cargo bench --locked -p nearfield-aggregator --bench update
	cargo bench --locked -p nearfield-emitter --bench decide
	benches/ingest.sh
	benches/aggregator.sh
	benches/emitter.sh
	BENCH_GRIDS=20000 BENCH_SKUS=6 BENCH_HOURS=12 benches/emitter.sh
	benches/latency.sh
	benches/query.sh
	@echo; echo "nearfield benchmark ($$(nproc) cores, $$(rustc --version | cut -d' ' -f2), Kafka 4.3.1, $$(date -u +%F)):"; benches/report.py | tee target/bench/report.md

bench-instructions: ## instructions an event of the aggregator's in-memory update path and its lean bound, and a window of the flush after it (callgrind; exact, unlike times on a shared host)
	@scripts/bootstrap.sh --bench
	benches/instructions.sh

bench-ingest: bootstrap ## ingest events/s, latency and memory vs a bare producer (BENCH_SECONDS)
	benches/ingest.sh $${BENCH_SECONDS:-20}

bench-aggregator: bootstrap ## aggregator vs consume, consume+decode and Kafka Streams (in-memory, RocksDB) on the same records with output digests checked (BENCH_EVENTS, BENCH_KEYS), then the memory/restore curve (BENCH_CURVE); either env var alone runs only its part
	benches/aggregator.sh

bench-emitter: bootstrap ## emitter at city scale: ~1 M demand windows over ~50 k keys, then 6 popular SKUs over 20 000 grids each; windows/CPU-s, changelog bytes per window, RSS, restore, churn (BENCH_SKUS, BENCH_HOURS, BENCH_GRIDS, BENCH_RUNS)
	benches/emitter.sh
	BENCH_GRIDS=20000 BENCH_SKUS=6 BENCH_HOURS=12 benches/emitter.sh

bench-latency: bootstrap ## end-to-end latency: window close, occurred_at → DemandWindow → PlanSignal (BENCH_SECONDS, BENCH_RATE)
	benches/latency.sh $${BENCH_SECONDS:-60} $${BENCH_RATE:-2000}

bench-query: bootstrap ## live query p50/p99 on 1 M keys while the aggregator consumes, and its throughput with and without the load (BENCH_QPS)
	benches/query.sh

image: ## the OCI image, built here with podman from an mmdebstrap root filesystem (no registry); prints NEARFIELD_IMAGE= last
	@scripts/image.sh build

image-test: ## the image against a local Kafka: --version, then a stage until /readyz answers (IMAGE=…, default the last built)
	@scripts/image.sh test $(IMAGE)

fuzz: ## fuzz every decoder (FUZZ_SECONDS each, default 300)
	@scripts/fuzz.sh $${FUZZ_SECONDS:-300}

golden: ## rewrite schemas/testdata after a deliberate schema change
	cargo run --locked -p nearfield-schemas --example golden

fmt: ## format the code
	cargo fmt --all && (cd fuzz && cargo fmt)

lint: ## clippy with warnings as errors
	cargo clippy --workspace --all-targets --locked -- -D warnings
