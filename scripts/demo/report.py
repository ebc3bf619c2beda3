"""The demo's one summary: what was sent, counted and planned, with the latest plans in
words (what a factory would read off its plan topic). Reads the stages' own endpoints and
the live page's API (the same figures, by the same definitions, as the page shows).
Quiet about a stage that is already gone: a figure it cannot get is printed as "–"."""

import json
import sys
import time
import urllib.request


def get(url, as_json=True):
    # A local stage answers in milliseconds; the summary runs inside the seconds Ctrl-C
    # has to stop everything, so a stage that does not answer costs at most 2 s a query.
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            body = r.read().decode()
            return json.loads(body) if as_json else body
    except Exception:  # a stage that stopped: the figure is unknown, not an error
        return None


def fmt(v):
    return "–" if v is None else f"{v:,.0f}"


def hhmm(ms):
    return time.strftime("%H:%M", time.gmtime(ms / 1000)) + " UTC"


def in_words(s, names):
    where = s.get("warehouse_id") or f"region {s['region']}"
    name = names.get(s["sku"], s["sku"])
    lines = [
        f"  {s['supplier_id']} (factory {s['factory_id']}): have {s['recommended_units']:,} units of "
        f"{name} ({s['sku']}) at {where} for the lead time and {hhmm(s['horizon_start'])}–{hhmm(s['horizon_end'])} "
        f"({s.get('service_level', 0.5):.0%} service; less the stock and what is on order).",
        f"    Why: {s['reason'].lower()} — {s['forecast_units']:,.0f} units forecast "
        f"({s['forecast_low']:,.0f}–{s['forecast_high']:,.0f}), {s['observed_units']:,} sold so far by "
        f"{s['contributing_stores']} shops; rounded to the MOQ {s['moq']:,} and batches of {s['batch_size']:,}; "
        f"{s['firmness'].lower()} ({'firm: inside the frozen time fence' if s['firmness'] == 'FIRM' else 'may still change'}).",
    ]
    regions = s.get("allocations") or []
    if regions:
        split = ", ".join(f"{a['units']:,} to {a['region']}" for a in regions[:4])
        more = f" and {len(regions) - 4} more regions" if len(regions) > 4 else ""
        lines.append(f"    Delivered: {split}{more}.")
    return "\n".join(lines)


def privacy_k(config="deploy/examples/nearfield.toml"):
    """The privacy floor the demo's emitter runs with (its config file's, else 5)."""
    try:
        for line in open(config, encoding="utf-8"):
            if line.strip().startswith("privacy_k"):
                return int(line.split("=")[1].split("#")[0])
    except (OSError, ValueError, IndexError):
        pass
    return 5


def check_current(signals, k_floor=5):
    """The contract on the latest plans: one current plan per (supplier, SKU, warehouse,
    horizon), rounded once (less than one batch over the need, or the MOQ), allocations
    adding up, and the fewest shops behind any figure. Returns a line and whether it held."""
    superseded = {s["supersedes"] for s in signals if s.get("supersedes")}
    current = [s for s in signals if s["signal_id"] not in superseded]
    keys = {}
    for s in current:
        k = (s["supplier_id"], s["sku"], s.get("warehouse_id"), s["horizon_start"])
        keys[k] = keys.get(k, 0) + 1
    overlapping = sum(1 for n in keys.values() if n > 1)
    over_batch, unallocated, moq_bound, fewest = 0, 0, 0, None
    for s in current:
        floor = max(-(-s.get("need_units", 0) // 1), s["moq"])
        if s["recommended_units"] - floor >= s["batch_size"]:
            over_batch += 1
        if s["moq"] >= s.get("need_units", 0):
            moq_bound += 1
        if s.get("allocations") and sum(a["units"] for a in s["allocations"]) != s["recommended_units"]:
            unallocated += 1
        figures = [s["contributing_stores"]] + [a["contributing_stores"] for a in s.get("allocations") or []]
        fewest = min(figures + ([fewest] if fewest is not None else []))
    ok = overlapping == 0 and over_batch == 0 and unallocated == 0 and (fewest is None or fewest >= k_floor)
    line = (f"  current plans: {len(keys):,} (SKU, warehouse, horizon) keys, "
            f"{overlapping} with overlapping current plans; rounding over the need below one batch "
            f"on {len(current) - over_batch:,} of {len(current):,} (the MOQ binds on {moq_bound:,}); "
            f"allocations add up on {len(current) - unallocated:,}; the fewest shops behind a figure: "
            f"{'–' if fewest is None else fewest} (floor {k_floor})")
    return line, ok


def main():
    catalog, sent = sys.argv[1], sys.argv[2]
    names = {}
    try:
        for line in open(catalog, encoding="utf-8"):
            r = json.loads(line)
            names[r["sku"]] = r["name"]
    except OSError:
        pass
    sim = {}
    try:
        lines = [l for l in open(sent, encoding="utf-8") if l.startswith("{")]
        sim = json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        pass
    state = get("http://127.0.0.1:8090/api/state") or {}
    h = state.get("health", {})
    plans = get("http://127.0.0.1:8082/v1/plans?limit=1000") or {}
    signals = plans.get("signals", [])
    print("demo: summary", file=sys.stderr)
    # Ingest counts every acknowledged request's events, so the simulator's deliberate
    # resends of acknowledged events (a lost answer) are counted there again; the
    # aggregator counts each event id once.
    rejected = sum((sim.get("rejected") or {}).values()) if sim else None
    # Attempts whose answer never came: ingest may have accepted their events too.
    lost = sim.get("unanswered") or 0
    unanswered = f", {fmt(lost)} in attempts left unanswered" if lost else ""
    print(f"  sent {fmt(sim.get('sent'))} events from the simulated shops ({fmt(sim.get('acked'))} "
          f"acknowledged, {fmt(rejected)} rejected by a rule, {fmt(sim.get('duplicates_sent'))} "
          f"resent after a lost answer{unanswered}); ingest accepted "
          f"{fmt(h.get('events_accepted'))}, resends included", file=sys.stderr)
    print(f"  demand windows emitted: {fmt(h.get('windows_emitted_total'))} "
          f"({fmt(h.get('windows_per_min'))} in the last minute)", file=sys.stderr)
    print(f"  plan signals: {fmt(h.get('signals_total'))}", file=sys.stderr)
    if signals:
        line, ok = check_current(signals, privacy_k())
        print(line if ok else line + "  << CONTRACT BROKEN", file=sys.stderr)
    # Decisions a factory acts on first: new plans before revisions.
    rank = {"THRESHOLD": 0, "SCHEDULED": 1, "SURGE": 2, "REVISION": 3}
    shown, seen = [], set()
    for s in sorted(signals, key=lambda s: (rank.get(s["reason"], 9), -s["generated_at"])):
        if s["supplier_id"] in seen:
            continue
        seen.add(s["supplier_id"])
        shown.append(s)
        if len(shown) == 3:
            break
    if shown:
        print("  what factories read on their plan topics (latest, in words):", file=sys.stderr)
        for s in shown:
            print(in_words(s, names), file=sys.stderr)
    else:
        print("  no plan yet: plans follow the first closed one-minute windows (about 80 s after "
              "sales start)", file=sys.stderr)


if __name__ == "__main__":
    main()
