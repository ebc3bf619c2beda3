#!/usr/bin/env python3
"""`make bench`'s one table: reads what the benchmark steps wrote under target/bench and
target/criterion and prints every figure next to its baseline and the issue's target.
Missing inputs are reported as such (a step that failed), never invented."""

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = ROOT / "target" / "bench"
CRIT = ROOT / "target" / "criterion"


def jsonl(name):
    p = BENCH / name
    if not p.exists():
        return {}
    out = {}
    for line in p.read_text().splitlines():
        if line.strip().startswith("{"):
            j = json.loads(line)
            out[j.get("phase") or j.get("run")] = j
    return out


def criterion(group, bench):
    d = CRIT / group / bench / "new"
    try:
        est = json.loads((d / "estimates.json").read_text())["mean"]["point_estimate"]
        elems = json.loads((d / "benchmark.json").read_text())["throughput"]["Elements"]
    except (OSError, KeyError, TypeError):
        return None
    return elems / (est / 1e9)


def n(v, unit=""):
    return "missing" if v is None else f"{v:,.0f}{unit}"


ing = jsonl("ingest-results.jsonl")
ceiling = json.loads((BENCH / "ceiling.json").read_text()) if (BENCH / "ceiling.json").exists() else {}
agg = jsonl("aggregator-results.jsonl")
lat = jsonl("latency-results.jsonl").get("latency", {})
update = criterion("aggregator_update", "apply_sale (3 windows per event)")

rows = []


def row(what, ours, base, ratio, target, met):
    rows.append((what, ours, base, ratio, target, "yes" if met else ("no" if met is not None else "–")))


b, s = ing.get("batch", {}), ing.get("single", {})
cpc = ceiling.get("events_per_cpu_s")
row("ingest, batch posts: accepted events/s (box) · per ingest core",
    f"{n(b.get('rate'))} · {n(b.get('per_core'))}", f"bare producer {n(cpc)}/core",
    f"{b['per_core'] / cpc:.2f}" if b and cpc else "–", "≥ 200 000 events/s",
    b.get("rate", 0) >= 200_000 if b else None)
row("ingest, single posts: accepted events/s · p99", f"{n(s.get('rate'))} · {s.get('p99_ms', '–')} ms",
    "–", "–", "–", None)
a, c, k, r = agg.get("aggregate", {}), agg.get("consume", {}), agg.get("streams", {}), agg.get("restore", {})
keys = a.get("keys")
row(f"aggregator events/s per core ({n(a.get('events'))} events, {n(keys)} keys)",
    n(a.get("events_per_cpu_s")), f"bare consumer {n(c.get('events_per_cpu_s'))}",
    f"{a['events_per_cpu_s'] / c['events_per_cpu_s']:.2f}" if a and c else "–", "≥ 0.70",
    a["events_per_cpu_s"] / c["events_per_cpu_s"] >= 0.7 if a and c else None)
row("aggregator vs Kafka Streams (same topic, exactly-once), per core", n(a.get("events_per_cpu_s")),
    f"Kafka Streams {n(k.get('events_per_cpu_s'))}",
    f"{a['events_per_cpu_s'] / k['events_per_cpu_s']:.1f}×" if a and k else "–", "≥ 5×",
    a["events_per_cpu_s"] / k["events_per_cpu_s"] >= 5 if a and k else None)
row("in-memory update path (criterion, one core): window updates/s", n(update), "–", "–",
    "≥ 20 000 000", update >= 20e6 if update else None)
row("window emitted after its nominal close: p50 · p99",
    f"{lat.get('close_p50_ms', '–')} ms · {lat.get('close_p99_ms', '–')} ms", "–", "–", "p99 ≤ 1 000 ms",
    lat.get("close_p99_ms", 10**9) <= 1000 if lat else None)
row("occurred_at → DemandWindow (10 s windows): p50 · p99",
    f"{lat.get('event_to_window_p50_ms', '–')} ms · {lat.get('event_to_window_p99_ms', '–')} ms", "–", "–", "–", None)
row("bucket end → PlanSignal (1 s settle): p50 · p99",
    f"{lat.get('bucket_to_signal_p50_ms', '–')} ms · {lat.get('bucket_to_signal_p99_ms', '–')} ms", "–", "–", "–", None)
mk = (keys or 0) / 1e6
row("aggregator RSS per million live keys", f"{a['rss_mb'] / mk:,.0f} MiB" if a and mk else "missing",
    f"Kafka Streams peak {n(k.get('peak_rss_mb'))} MiB (JVM heap ≤ 6 GiB)", "–", "–", None)
rk = (r.get("keys") or 0) / 1e6
row("restore time per million keys", f"{r['seconds'] / rk:.1f} s" if r and rk else "missing", "–", "–", "–", None)

print("| measure | nearfield | baseline | ratio | target | met |")
print("|---|---|---|---|---|---|")
for what, ours, base, ratio, target, met in rows:
    print(f"| {what} | {ours} | {base} | {ratio} | {target} | {met} |")
missing = [w for w, o, *_ in rows if "missing" in o]
sys.exit(1 if missing else 0)
