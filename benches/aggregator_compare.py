#!/usr/bin/env python3
"""Summarises the comparison of benches/aggregator.sh (target/bench/aggregator-results.jsonl):
per phase the median over its runs and the spread, the ratios of nearfield's aggregator to
each peer, and the output check. Fails (exit 1) unless every run of every system that emits
windows emitted exactly the fill's ground truth (same windows_out, same output_digest) and
every restore held the sums its aggregating run held. Writes
target/bench/aggregator-compare.json for benches/report.py."""

import json
import pathlib
import statistics
import sys

from tuning import tuned_line

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
fill = next(r for r in rows if r["phase"] == "fill")
PHASES = ["consume", "consume_decode", "aggregate", "restore", "streams", "streams_rocksdb"]


def runs(name):
    return [r for r in rows if r["phase"] == name]


def med(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


summary = {"events": fill["events"], "keys": fill["keys"], "span_hours": fill["span_hours"],
           "windows_truth": fill["windows_out"], "digest_truth": fill["output_digest"], "phases": {}}
problems = []
for name in PHASES:
    rs = runs(name)
    if not rs:
        continue
    s = {k: med(rs, k) for k in ["events_per_cpu_s", "seconds", "cpu_s", "broker_cpu_s", "peak_rss_mb",
                                 "rss_slope_mb_per_m_events", "events_per_s"]}
    s["runs"] = len(rs)
    s["spread_events_per_cpu_s"] = sorted(r.get("events_per_cpu_s") for r in rs if r.get("events_per_cpu_s"))
    if name == "restore":
        s["restore_s"] = med(rs, "seconds")
        for r in rs:
            agg = next((a for a in runs("aggregate") if a["run"] == r["run"]), None)
            if agg is None or agg.get("totals") != r.get("totals"):
                problems.append(f"restore run {r['run']}: restored sums differ from the aggregated sums")
    if name in ("aggregate", "streams", "streams_rocksdb"):
        for r in rs:
            if r.get("windows_out") != fill["windows_out"] or r.get("output_digest") != fill["output_digest"]:
                problems.append(
                    f"{name} run {r['run']}: windows_out {r.get('windows_out')} digest {r.get('output_digest')}, "
                    f"expected {fill['windows_out']} {fill['output_digest']}")
        s["windows_out"] = rs[0].get("windows_out")
        s["output_digest"] = rs[0].get("output_digest")
    summary["phases"][name] = s

ph = summary["phases"]
agg = ph.get("aggregate", {}).get("events_per_cpu_s")


def ratio(peer):
    p = ph.get(peer, {}).get("events_per_cpu_s")
    return agg / p if agg and p else None


summary["ratios"] = {peer: ratio(peer) for peer in ["consume", "consume_decode", "streams", "streams_rocksdb"]}

tuned = tuned_line(rows)
if tuned:
    print(tuned)
print(f"{fill['events']:,} records over {fill['keys']:,} grid × SKU keys, {fill['span_hours']} h of event time; "
      f"ground truth {fill['windows_out']:,} windows, digest {fill['output_digest'][:16]}…")
print()
print("| phase | runs | events/CPU-s (median) | spread (min–max) | seconds | CPU s | broker CPU s | peak RSS | RSS slope per M events | windows_out | digest | aggregate ÷ this |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for name, s in ph.items():
    spread = s["spread_events_per_cpu_s"]
    rate = f"{s['events_per_cpu_s']:,.0f}" if s["events_per_cpu_s"] else "–"
    sp = f"{spread[0]:,.0f}–{spread[-1]:,.0f}" if spread else "–"
    r = summary["ratios"].get(name)
    win = f"{s['windows_out']:,}" if s.get("windows_out") is not None else "–"
    dig = (s.get("output_digest") or "–")[:12]
    rs = f"{s['rss_slope_mb_per_m_events']:,.0f} MiB" if s.get("rss_slope_mb_per_m_events") is not None else "–"
    print(f"| {name} | {s['runs']} | {rate} | {sp} | {s['seconds']:.2f} | {s['cpu_s'] or 0:.2f} | "
          f"{s['broker_cpu_s'] or 0:.2f} | {s['peak_rss_mb'] or 0:,.0f} MiB | {rs} | {win} | {dig} | "
          f"{f'{r:.2f}' if r else '–'} |")
print()
print("(restore: events are the changelog records read; seconds the restore itself.)")
print()
if problems:
    print("OUTPUT CHECK FAILED:")
    for p in problems:
        print(f"  {p}")
else:
    print(f"Output check: every run of every system emitted the ground truth's {fill['windows_out']:,} windows "
          f"with digest {fill['output_digest']}; every restore held its run's sums.")

out = pathlib.Path(sys.argv[1]).with_name("aggregator-compare.json")
summary["output_matches"] = not problems
out.write_text(json.dumps(summary, indent=1))
sys.exit(1 if problems else 0)
