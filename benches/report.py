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
curve_p = BENCH / "aggregator-summary.json"
curve = {int(c["keys"]): c for c in json.loads(curve_p.read_text())} if curve_p.exists() else {}
lat = jsonl("latency-results.jsonl").get("latency", {})
# The path the stage takes (a polled partition's records as one run), and one by one.
update = criterion("aggregator_update", "apply_sales (3 windows per event), runs of 500")
update_one = criterion("aggregator_update", "apply_sale (3 windows per event)")

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

def point(want):
    """The curve point nearest to `want` keys."""
    if not curve:
        return {}
    return curve[min(curve, key=lambda k: abs(k - want))]


big, small = point(1_000_000), point(20_000)
row(f"aggregator events/CPU-s at {n(big.get('keys'))} keys (exactly-once, median of {big.get('runs', 0)})",
    n(big.get("events_per_cpu_s")), f"consume + decode {n(big.get('ceiling_per_cpu_s'))}",
    f"{big['events_per_cpu_s'] / big['ceiling_per_cpu_s']:.2f}" if big else "–", "≥ 500 000",
    big["events_per_cpu_s"] >= 500_000 if big else None)
row(f"aggregator events/CPU-s at {n(small.get('keys'))} keys (median of {small.get('runs', 0)})",
    n(small.get("events_per_cpu_s")), f"consume + decode {n(small.get('ceiling_per_cpu_s'))}",
    f"{small['events_per_cpu_s'] / small['ceiling_per_cpu_s']:.2f}" if small else "–", "≥ 0.70 of the ceiling",
    small["events_per_cpu_s"] / small["ceiling_per_cpu_s"] >= 0.7 if small else None)
cmp_p = BENCH / "aggregator-compare.json"
cmp = json.loads(cmp_p.read_text()) if cmp_p.exists() else {}
cph = cmp.get("phases", {})
cagg = cph.get("aggregate", {}).get("events_per_cpu_s")
where = f"{n(cmp.get('events'))} records, {n(cmp.get('keys'))} keys, {cmp.get('span_hours', '–')} h" if cmp else "–"
row(f"aggregator events/CPU-s, windows closing ({where}; median of {cph.get('aggregate', {}).get('runs', 0)})",
    n(cagg), f"consume + decode {n(cph.get('consume_decode', {}).get('events_per_cpu_s'))}",
    f"{cmp['ratios']['consume_decode']:.2f}" if cmp.get("ratios", {}).get("consume_decode") else "–", "–", None)
for peer, label in [("streams", "in-memory stores"), ("streams_rocksdb", "RocksDB stores")]:
    pr = cph.get(peer, {}).get("events_per_cpu_s")
    row(f"aggregator vs Kafka Streams ({label}, exactly_once_v2), per CPU-second, same output",
        n(cagg), f"Kafka Streams {n(pr)}",
        f"{cagg / pr:.1f}×" if cagg and pr else "–", "outputs equal",
        cmp.get("output_matches") if cmp and pr else None)
st = {"streams_peak_rss_mb": cph.get("streams", {}).get("peak_rss_mb")}
row("in-memory update path (criterion, one core, runs of 500 as the stage applies them): window updates/s",
    f"{n(update)} (one by one {n(update_one)})", "–", "–",
    "≥ 20 000 000", update >= 20e6 if update else None)
row("window emitted after its nominal close: p50 · p99",
    f"{lat.get('close_p50_ms', '–')} ms · {lat.get('close_p99_ms', '–')} ms", "–", "–", "p99 ≤ 1 000 ms",
    lat.get("close_p99_ms", 10**9) <= 1000 if lat else None)
row("occurred_at → DemandWindow (10 s windows): p50 · p99",
    f"{lat.get('event_to_window_p50_ms', '–')} ms · {lat.get('event_to_window_p99_ms', '–')} ms", "–", "–", "–", None)
row("bucket end → PlanSignal (1 s settle): p50 · p99",
    f"{lat.get('bucket_to_signal_p50_ms', '–')} ms · {lat.get('bucket_to_signal_p99_ms', '–')} ms", "–", "–", "–", None)
largest = curve[max(curve)] if curve else {}
slope = largest.get("slope_mb_per_m_keys")
row(f"aggregator RSS per million live keys (slope up to {n(largest.get('keys'))} keys; absolute at 1 M)",
    f"{slope:,.0f} MiB; {big['rss_mb'] / (big['keys'] / 1e6):,.0f} MiB" if slope and big else "missing",
    f"Kafka Streams peak {n(st.get('streams_peak_rss_mb'))} MiB at the comparison point", "–", "≤ 160 MiB",
    slope <= 160 if slope else None)
row("restore time per million keys (at the largest point)",
    f"{largest['restore_s'] / (largest['keys'] / 1e6):.2f} s" if largest else "missing", "–", "–", "≤ 2 s",
    largest["restore_s"] / (largest["keys"] / 1e6) <= 2 if largest else None)
row("restored state = aggregated state (sums over every window)",
    ("yes" if all(c["restore_matches"] for c in curve.values()) else "NO") if curve else "missing",
    "–", "–", "equal", all(c["restore_matches"] for c in curve.values()) if curve else None)

for name, what in (("emitter-summary.json", "city scale"), ("emitter-popular-summary.json", "popular SKUs")):
    em_p = BENCH / name
    if name != "emitter-summary.json" and not em_p.exists():
        continue
    em = json.loads(em_p.read_text()) if em_p.exists() else {}
    row(f"emitter, {what} ({n(em.get('windows'))} demand windows, {n(em.get('keys'))} keys, "
        f"{n(em.get('grids'))} grids per SKU, {em.get('suppliers', '–')} suppliers): windows/CPU-s · peak RSS · restore",
        f"{n(em.get('windows_per_cpu_s'))} · {n(em.get('peak_rss_mb'))} MiB · {em.get('restore_s', 0):.2f} s" if em else "missing",
        "–", "–", "–", None)
    row(f"emitter changelog, {what}: bytes per window · largest record (Kafka's default limit 1 MiB)",
        f"{em.get('changelog_bytes_per_window', 0):,.0f} B · {n(em.get('largest_changelog_record'))} B" if em else "missing",
        "–", "–", "no record near the limit",
        em.get("largest_changelog_record", 1 << 30) < (1 << 19) if em else None)
    if em.get("plans") is not None:
        firm = em.get("firm_plans") or 0
        row(f"emitter revision churn, {what}: revisions per plan · FIRM plans revised · units moved",
            f"{em['revisions_per_plan']:.3f} · {n(em.get('firm_plans_revised'))} of {n(firm)} · {n(em.get('revision_units'))}",
            "–", "–", "–", None)

qrows = [json.loads(l) for l in (BENCH / "query.jsonl").read_text().splitlines()
         if '"aggregate"' in l] if (BENCH / "query.jsonl").exists() else []


def med(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else None


qload = [r for r in qrows if r.get("query")]
qnone = med([r["events_per_s"] for r in qrows if not r.get("query")])
qwith = med([r["events_per_s"] for r in qload])
row(f"live query under full consumption ({n(qload[0]['keys']) if qload else '–'} keys, "
    f"{qload[0]['query']['qps'] if qload else '–'} q/s): p50 · p99",
    f"{med([r['query']['p50_ms'] for r in qload]):.1f} ms · {med([r['query']['p99_ms'] for r in qload]):.1f} ms"
    if qload else "missing", "–", "–", "–", None)
row("aggregator events/s with that query load · without",
    f"{n(qwith)} · {n(qnone)}" if qload else "missing", "without queries",
    f"{qwith / qnone:.2f}" if qload and qnone else "–", "–", None)

print("| measure | nearfield | baseline | ratio | target | met |")
print("|---|---|---|---|---|---|")
for what, ours, base, ratio, target, met in rows:
    print(f"| {what} | {ours} | {base} | {ratio} | {target} | {met} |")
missing = [w for w, o, *_ in rows if "missing" in o]
sys.exit(1 if missing else 0)
