#!/usr/bin/env bash
# Installs what building and testing nearfield needs and is missing on this machine:
# C toolchain and headers for librdkafka, Java 17 and Maven for the local Kafka, a Python
# venv with an independent Avro implementation for the golden vectors and the Python
# factory client, and the Kafka jars;
# with --test also headless Chromium for the live page's browser test, promtool for
# the alert rules and podman (its compose front end checks deploy/compose.yaml);
# with --bench also valgrind (`benches/instructions.sh` counts instructions with it).
# Idempotent; cheap when everything is present.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log() { echo "bootstrap: $*" >&2; }

missing=()
need_cmd() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need_pc() { pkg-config --exists "$1" 2>/dev/null || missing+=("$2"); }
need_cmd cc build-essential
need_cmd c++ g++
need_cmd make make
need_cmd cmake cmake
need_cmd pkg-config pkg-config
need_cmd java openjdk-17-jdk-headless
need_cmd mvn maven
need_cmd python3 python3
if [[ "${1:-}" == "--test" ]]; then
  need_cmd chromium chromium
  need_cmd promtool prometheus
  need_cmd podman podman
fi
if [[ "${1:-}" == "--bench" ]]; then
  need_cmd valgrind valgrind
fi
if command -v pkg-config >/dev/null 2>&1; then
  need_pc openssl libssl-dev
  need_pc libcurl libcurl4-openssl-dev
  need_pc zlib zlib1g-dev
else
  missing+=(libssl-dev libcurl4-openssl-dev zlib1g-dev)
fi
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    log "missing system packages: ${missing[*]} (install them, e.g. with apt-get)"; exit 1
  fi
fi

command -v cargo >/dev/null 2>&1 || { log "cargo not found: install rustup (toolchain pinned in rust-toolchain.toml)"; exit 1; }

# Python venv with fastavro + pytest, rebuilt when the requirements change.
req=schemas/tests/python/requirements.txt
if ! cmp -s "$req" .venv/requirements.stamp 2>/dev/null; then
  log "creating .venv from $req"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r "$req"
  cp "$req" .venv/requirements.stamp
fi
# The Python factory client, installed as a factory would (a built wheel, schemas inside).
.venv/bin/pip install -q --disable-pip-version-check --no-build-isolation --no-deps \
  --force-reinstall ./clients/python >/dev/null
rm -rf clients/python/build clients/python/src/*.egg-info

scripts/kafka.sh fetch
