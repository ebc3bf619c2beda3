#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), seeded from the golden vectors.
#   scripts/fuzz.sh [SECONDS]
# cargo-fuzz needs nightly-only sanitizer flags; the pinned stable toolchain accepts them
# with RUSTC_BOOTSTRAP=1 (no other toolchain can be installed on the build machines).
set -euo pipefail
SECS=${1:-60}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2
export RUSTC_BOOTSTRAP=1

# Seed corpus: each golden vector behind the byte that selects its record.
corpus=fuzz/corpus/decode_records
mkdir -p "$corpus"
i=0
for rec in SaleEvent DemandWindow PlanSignal Heartbeat StoreRecord CatalogRecord RejectedEvent; do
  for f in schemas/testdata/"$rec"/*.avro; do
    { printf "\\x$(printf %02x "$i")"; cat "$f"; } >"$corpus/seed-$rec-$(basename "$f")"
  done
  i=$((i + 1))
done
# Byte 9 selects GridCoverage (added after the first seven).
for f in schemas/testdata/GridCoverage/*.avro; do
  { printf '\x09'; cat "$f"; } >"$corpus/seed-GridCoverage-$(basename "$f")"
done
# Byte 7 selects the aggregator's changelog decoder.
for f in aggregator/testdata/changelog/*.bin; do
  { printf '\x07'; cat "$f"; } >"$corpus/seed-changelog-$(basename "$f")"
done
# Byte 8 selects the emitter's changelog decoder: a key-length byte, the key, the value;
# seeded with every record of the format-3 and format-2 goldens and the format-1 (JSON) one.
python3 - "$corpus" <<'PY'
import json, sys
corpus = sys.argv[1]
seeds = []
for name in ("format3.hex", "format2.hex"):
    for line in open("emitter/testdata/changelog/" + name):
        k, v = line.split()
        seeds.append((bytes.fromhex(k), b"\xff" if v == "-" else bytes.fromhex(v)))
for line in open("emitter/testdata/changelog/format1.jsonl"):
    r = json.loads(line)
    seeds.append((r["key"].encode(), b"\xff" if r["value"] is None else r["value"].encode()))
for i, (k, v) in enumerate(seeds):
    with open(f"{corpus}/seed-emitter-changelog-{i}", "wb") as f:
        f.write(b"\x08" + bytes([len(k)]) + k + v)
PY

# Seed corpus for the ingest body parsers: a JSON event, a JSON batch, NDJSON, an Avro batch.
corpus=fuzz/corpus/ingest_bodies
mkdir -p "$corpus"
ev='{"event_id":"e1","sku":"SKU-1","kind":"SALE","quantity":2,"unit_price_minor":650,"currency":"CNY","occurred_at":1764000000000}'
printf '\x00%s' "$ev" >"$corpus/seed-single"
printf '\x01[%s,%s]' "$ev" "$ev" >"$corpus/seed-batch"
printf '\x02%s\n%s\n' "$ev" "$ev" >"$corpus/seed-ndjson"
# Byte 4 selects the heartbeat body.
printf '\x04{"sent_at":1764000000000,"pending_events":3,"last_upload_at":1763990000000}' >"$corpus/seed-heartbeat"
len=$(stat -c %s schemas/testdata/SaleEvent/sale.avro)
{ printf '\x03\x00\x00\x00'; printf "\\x$(printf %02x "$len")"; cat schemas/testdata/SaleEvent/sale.avro; } >"$corpus/seed-avro"

for target in $(cargo fuzz list); do
  echo "fuzz: $target for ${SECS}s" >&2
  log="fuzz/$target.log"
  mkdir -p fuzz
  if ! cargo fuzz run "$target" "fuzz/corpus/$target" -- \
      -max_total_time="$SECS" -rss_limit_mb=1024 -malloc_limit_mb=64 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz: $target FAILED (crash input in fuzz/artifacts/$target)" >&2
    exit 1
  fi
  grep -E "^Done|stat::number_of_executed_units|stat::peak_rss_mb" "$log" >&2 || true
done
