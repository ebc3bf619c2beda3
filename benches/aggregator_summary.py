#!/usr/bin/env python3
"""Summarises benches/aggregator.sh's curve (target/bench/aggregator-curve.jsonl): medians
over the runs of each point, the memory curve and its slope, restore per million keys,
and whether each restore held exactly the sums the aggregating instance held. Writes the
Markdown tables to stdout and target/bench/aggregator-summary.json for benches/report.py."""

import json
import pathlib
import statistics
import sys

from tuning import tuned_line

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
points = sorted({r["point"] for r in rows})


def phase(point, name):
    return [r for r in rows if r["point"] == point and r.get("phase") == name]


def med(rs, key):
    vals = [r[key] for r in rs if key in r]
    return statistics.median(vals) if vals else None


summary = []
for p in points:
    agg, con, res = phase(p, "aggregate"), phase(p, "consume_decode"), phase(p, "restore")
    matches = [
        a.get("totals") == next((r.get("totals") for r in res if r["run"] == a["run"]), None)
        for a in agg
    ]
    s = {
        "keys": med(agg, "keys"),
        "events": med(agg, "events"),
        "runs": len(agg),
        "events_per_cpu_s": med(agg, "events_per_cpu_s"),
        "events_per_s": med(agg, "events_per_s"),
        "ceiling_per_cpu_s": med(con, "events_per_cpu_s"),
        "rss_mb": med(agg, "rss_mb"),
        "peak_rss_mb": med(agg, "peak_rss_mb"),
        "state_bytes": med(agg, "state_bytes"),
        "restore_s": med(res, "seconds"),
        "restore_rss_growth_mb": med(res, "rss_growth_mb"),
        "restore_matches": all(matches) and len(matches) == len(res) and bool(matches),
        "spread_events_per_cpu_s": [r["events_per_cpu_s"] for r in agg],
    }
    summary.append(s)

tuned = tuned_line(rows)
if tuned:
    print(tuned)
    print()
print("| keys | events | runs | aggregator events/CPU-s (median; runs) | ceiling: consume + decode, events/CPU-s | ratio | events/s (wall) |")
print("|---|---|---|---|---|---|---|")
for s in summary:
    ratio = s["events_per_cpu_s"] / s["ceiling_per_cpu_s"] if s["ceiling_per_cpu_s"] else 0
    spread = ", ".join(f"{v:,.0f}" for v in s["spread_events_per_cpu_s"])
    print(f"| {s['keys']:,.0f} | {s['events']:,.0f} | {s['runs']} | {s['events_per_cpu_s']:,.0f} ({spread}) | "
          f"{s['ceiling_per_cpu_s']:,.0f} | {ratio:.2f} | {s['events_per_s']:,.0f} |")
print()
print("| keys | RSS (median) | RSS per million keys | slope from the previous point | estimated state bytes per key | restore | restore per million keys | restored sums = aggregated sums |")
print("|---|---|---|---|---|---|---|---|")
prev = None
for s in summary:
    mk = s["keys"] / 1e6
    slope = "–"
    if prev:
        slope = f"{(s['rss_mb'] - prev['rss_mb']) / (mk - prev['keys'] / 1e6):,.0f} MiB"
        s["slope_mb_per_m_keys"] = (s["rss_mb"] - prev["rss_mb"]) / (mk - prev["keys"] / 1e6)
    print(f"| {s['keys']:,.0f} | {s['rss_mb']:,.0f} MiB | {s['rss_mb'] / mk:,.0f} MiB | {slope} | "
          f"{s['state_bytes'] / s['keys']:,.0f} B | {s['restore_s']:.2f} s | {s['restore_s'] / mk:.2f} s | "
          f"{'yes' if s['restore_matches'] else 'NO'} |")
    prev = s

out = pathlib.Path(sys.argv[1]).with_name("aggregator-summary.json")
out.write_text(json.dumps(summary, indent=1))
sys.exit(0 if all(s["restore_matches"] for s in summary) else 1)
