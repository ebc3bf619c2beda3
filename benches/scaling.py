#!/usr/bin/env python3
"""The sizing table of docs/SCALING.md, computed from measured figures.

Reads target/bench/aggregator-summary.json (benches/aggregator.sh) and, if present, the
runs of benches/aggregator-crash.sh (target/bench/aggregator-crash-KEYS.jsonl: the one
with the most keys, and one with many events per key for the restore of event ids), or
takes the figures as flags, and prints the table for 60 k, 600 k and 6 M shops.

  benches/scaling.py [--bytes-per-key B] [--events-per-cpu-s E] [--restore-s-per-m R]
                     [--restore-s-per-m-ids I]
"""

import argparse
import json
import math
import pathlib

BENCH = pathlib.Path(__file__).resolve().parents[1] / "target" / "bench"


def measured():
    """Per-key bytes (RSS slope), events per CPU-second and restore seconds per million
    keys at the largest state measured."""
    out = {}
    s = BENCH / "aggregator-summary.json"
    if s.exists():
        curve = json.loads(s.read_text())
        big = max(curve, key=lambda c: c["keys"])
        out["bytes_per_key"] = big.get("slope_mb_per_m_keys", 0) * 2**20 / 1e6
        out["events_per_cpu_s"] = big["events_per_cpu_s"]
        out["restore_s_per_m"] = big["restore_s"] / (big["keys"] / 1e6)
    for c in sorted(BENCH.glob("aggregator-crash*.jsonl")):
        r = {j["phase"]: j for j in map(json.loads, c.read_text().splitlines())}
        a, s = r.get("aggregate"), r.get("restore")
        if not (a and s):
            continue
        if a["keys"] > out.get("keys", 0):
            out["events_per_cpu_s"] = a["events_per_cpu_s"]
            out["restore_s_per_m"] = s["seconds"] / (a["keys"] / 1e6)
            out["keys"] = a["keys"]
        # Many events per key: the restore is the event ids'.
        if a["events"] >= 100 * a["keys"]:
            out["restore_s_per_m_ids"] = s["seconds"] / (a["events"] / 1e6)
    return out


p = argparse.ArgumentParser()
p.add_argument("--bytes-per-key", type=float)
p.add_argument("--events-per-cpu-s", type=float)
p.add_argument("--restore-s-per-m", type=float)
p.add_argument("--restore-s-per-m-ids", type=float)
args = p.parse_args()
m = measured()
B = args.bytes_per_key or m.get("bytes_per_key")
E = args.events_per_cpu_s or m.get("events_per_cpu_s")
R = args.restore_s_per_m or m.get("restore_s_per_m")
RI = args.restore_s_per_m_ids or m.get("restore_s_per_m_ids")
if not (B and E and R and RI):
    raise SystemExit("no measured figures: run benches/aggregator.sh (and aggregator-crash.sh) first, or pass them")

# Planning figures (SPEC §9), scaled linearly with the number of shops.
MISSION_SHOPS = 6_000_000
INSTANCE_CORES = 4          # aggregator instance: 4 vCPU, 32 GiB
INSTANCE_STATE_GIB = 20     # of which state (the rest: buffers, closes in flight, headroom)
CPU_HEADROOM = 0.6          # run cores at most 60 % busy at the burst rate
FIXED_GIB = 0.4             # per instance: librdkafka queues, runtime, HTTP
AVRO_BYTES = 89             # a SaleEvent on sales.v1 (measured: 888 888 890 bytes / 10 M)
CHANGELOG_BYTES = 28        # per event, worst case: one window entry (~20 B) and its id (8 B)
OUTPUT_BYTES = 220          # a DemandWindow record with key and headers; worst case two per
                            # event (each sale alone in its 5-minute and its hour window)
FAILOVER_S = 60             # restore budget when one instance dies
EVENTS_PER_DAY = 1.8e9      # sale events a day at 6 M shops
ID_DAYS = 3                 # event ids held: today's and the two days before, whose day
                            # windows still take sales 48 h late (worst case, just before
                            # the oldest set is dropped)
ID_BYTES = 8.7              # per event id held (state/dedupe.rs: 8.67 at 40 M ids)
IDS_PER_KEY_MEASURED = 2    # the per-key bytes were measured with 2 sales (ids) a key

print(f"Measured: {B:,.0f} bytes of RSS per live key (slope, with {IDS_PER_KEY_MEASURED} event ids a key), "
      f"{E:,.0f} events per aggregator CPU-second, restore {R:.2f} s per million keys and "
      f"{RI:.2f} s per million event ids. Event ids held: {ID_DAYS} days of sales at "
      f"{ID_BYTES} bytes each.\n")
print("| shops | live keys · event ids held | events/s peak · burst | partitions | aggregator instances (4 vCPU, 32 GiB) | state per instance | cores busy at burst | restore of one instance's partitions, spread over the others | broker in · out at burst |")
print("|---|---|---|---|---|---|---|---|---|")
for shops, partitions in [(60_000, 12), (600_000, 48), (6_000_000, 256)]:
    f = shops / MISSION_SHOPS
    keys_lo, keys_hi = 150e6 * f, 400e6 * f
    peak, burst = 65_000 * f, 200_000 * f
    heartbeats = 100_000 * f
    # The keys' state without the ids measured with them, plus the ids of ID_DAYS days.
    ids = EVENTS_PER_DAY * f * ID_DAYS
    state_bytes = keys_hi * (B - IDS_PER_KEY_MEASURED * ID_BYTES) + ids * ID_BYTES
    restore_s_total = keys_hi * R / 1e6 + max(ids - IDS_PER_KEY_MEASURED * keys_hi, 0) * RI / 1e6
    mem_inst = math.ceil(state_bytes / 2**30 / INSTANCE_STATE_GIB)
    cpu_inst = math.ceil((burst + heartbeats) / (E * INSTANCE_CORES * CPU_HEADROOM))
    # After a crash an instance's partitions move to the survivors; each restores its
    # share in parallel. Keep that under FAILOVER_S by adding instances.
    inst = max(mem_inst, cpu_inst, 2)
    while restore_s_total / inst / max(inst - 1, 1) > FAILOVER_S and inst < partitions:
        inst += 1
    restore_keys = keys_hi / inst
    restore_s = restore_s_total / inst / max(inst - 1, 1)
    state = state_bytes / inst / 2**30 + FIXED_GIB
    busy = (burst + heartbeats) / E
    mb_in = burst * AVRO_BYTES / 1e6
    mb_out = burst * (CHANGELOG_BYTES + 2 * OUTPUT_BYTES) / 1e6
    print(f"| {shops:,} | {keys_lo / 1e6:,.1f}–{keys_hi / 1e6:,.0f} M · {ids / 1e9:,.2f} G | {peak:,.0f} · {burst:,.0f} | "
          f"{partitions} | {inst} | {state:,.1f} GiB | {busy:,.1f} | {restore_s:,.0f} s "
          f"({restore_keys / 1e6:,.1f} M keys and {ids / inst / 1e9:,.2f} G ids over {max(inst - 1, 1)}) | {mb_in:,.1f} · {mb_out:,.1f} MB/s |")
