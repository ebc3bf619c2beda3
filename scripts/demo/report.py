"""The demo's one summary: what was sent, counted and planned, with the latest plans in
words (what a factory would read off its plan topic). Reads the stages' own endpoints and
the live page's API (the same figures, by the same definitions, as the page shows).
Quiet about a stage that is already gone: a figure it cannot get is printed as "–"."""

import json
import sys
import time
import urllib.request


def get(url, as_json=True):
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
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
        f"  {s['supplier_id']} (factory {s['factory_id']}): make {s['recommended_units']:,} units of "
        f"{name} ({s['sku']}) for {where}, {hhmm(s['horizon_start'])}–{hhmm(s['horizon_end'])}.",
        f"    Why: {s['reason'].lower()} — {s['forecast_units']:,.0f} units forecast "
        f"({s['forecast_low']:,.0f}–{s['forecast_high']:,.0f}), {s['observed_units']:,} sold so far by "
        f"{s['contributing_stores']} shops; rounded to the MOQ {s['moq']:,} and batches of {s['batch_size']:,}; "
        f"{s['firmness'].lower()} ({'firm: inside the frozen time fence' if s['firmness'] == 'FIRM' else 'may still change'}).",
    ]
    return "\n".join(lines)


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
    print(f"  sent {fmt(sim.get('sent'))} events from the simulated shops; ingest accepted "
          f"{fmt(h.get('events_accepted'))}", file=sys.stderr)
    print(f"  demand windows emitted: {fmt(h.get('windows_emitted_total'))} "
          f"({fmt(h.get('windows_per_min'))} in the last minute)", file=sys.stderr)
    print(f"  plan signals: {fmt(h.get('signals_total'))}", file=sys.stderr)
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
