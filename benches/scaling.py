#!/usr/bin/env python3
"""The sizing table of docs/SCALING.md, computed from measured figures.

Reads target/bench/aggregator-summary.json (benches/aggregator.sh) and, if present,
target/bench/aggregator-crash.jsonl (benches/aggregator-crash.sh, the largest run), or
takes the figures as flags, and prints the table for 60 k, 600 k and 6 M shops.

  benches/scaling.py [--bytes-per-key B] [--events-per-cpu-s E] [--restore-s-per-m R]
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
    c = BENCH / "aggregator-crash.jsonl"
    if c.exists():
        r = {j["phase"]: j for j in map(json.loads, c.read_text().splitlines())}
        a, s = r.get("aggregate"), r.get("restore")
        if a and s and a["keys"] > out.get("keys", 0):
            out["events_per_cpu_s"] = a["events_per_cpu_s"]
            out["restore_s_per_m"] = s["seconds"] / (a["keys"] / 1e6)
            out["keys"] = a["keys"]
    return out


p = argparse.ArgumentParser()
p.add_argument("--bytes-per-key", type=float)
p.add_argument("--events-per-cpu-s", type=float)
p.add_argument("--restore-s-per-m", type=float)
args = p.parse_args()
m = measured()
B = args.bytes_per_key or m.get("bytes_per_key")
E = args.events_per_cpu_s or m.get("events_per_cpu_s")
R = args.restore_s_per_m or m.get("restore_s_per_m")
if not (B and E and R):
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

print(f"Measured: {B:,.0f} bytes of RSS per live key (slope), {E:,.0f} events per aggregator "
      f"CPU-second, restore {R:.2f} s per million keys.\n")
print("| shops | live keys | events/s peak · burst | partitions | aggregator instances (4 vCPU, 32 GiB) | state per instance | cores busy at burst | restore of one instance's partitions, spread over the others | broker in · out at burst |")
print("|---|---|---|---|---|---|---|---|---|")
for shops, partitions in [(60_000, 12), (600_000, 48), (6_000_000, 256)]:
    f = shops / MISSION_SHOPS
    keys_lo, keys_hi = 150e6 * f, 400e6 * f
    peak, burst = 65_000 * f, 200_000 * f
    heartbeats = 100_000 * f
    mem_inst = math.ceil(keys_hi * B / 2**30 / INSTANCE_STATE_GIB)
    cpu_inst = math.ceil((burst + heartbeats) / (E * INSTANCE_CORES * CPU_HEADROOM))
    restore_keys = keys_hi / max(mem_inst, cpu_inst, 2)
    # After a crash an instance's partitions move to the survivors; each restores its
    # share in parallel. Keep that under FAILOVER_S by adding instances.
    inst = max(mem_inst, cpu_inst, 2)
    while keys_hi / inst / max(inst - 1, 1) * R / 1e6 > FAILOVER_S and inst < partitions:
        inst += 1
    restore_keys = keys_hi / inst
    restore_s = restore_keys / max(inst - 1, 1) * R / 1e6
    state = keys_hi * B / inst / 2**30 + FIXED_GIB
    busy = (burst + heartbeats) / E
    mb_in = burst * AVRO_BYTES / 1e6
    mb_out = burst * (CHANGELOG_BYTES + 2 * OUTPUT_BYTES) / 1e6
    print(f"| {shops:,} | {keys_lo / 1e6:,.1f}–{keys_hi / 1e6:,.0f} M | {peak:,.0f} · {burst:,.0f} | "
          f"{partitions} | {inst} | {state:,.1f} GiB | {busy:,.1f} | {restore_s:,.0f} s "
          f"({restore_keys / 1e6:,.1f} M keys over {max(inst - 1, 1)}) | {mb_in:,.1f} · {mb_out:,.1f} MB/s |")
