#!/usr/bin/env python3
"""Summarises benches/emitter.sh (target/bench/emitter[-popular]-results.jsonl): medians
over the runs and their spread; writes the matching emitter[-popular]-summary.json for
benches/report.py."""

import json
import pathlib
import statistics
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
fill = next(r for r in rows if r["phase"] == "fill")
emit = [r for r in rows if r["phase"] == "emit"]
rest = [r for r in rows if r["phase"] == "restore"]


def med(rs, k):
    v = [r[k] for r in rs if r.get(k) is not None]
    return statistics.median(v) if v else None


s = {
    "grids": fill.get("grids", 49),
    "windows": fill["windows"], "keys": fill["keys"], "suppliers": fill["suppliers"], "runs": len(emit),
    "windows_per_cpu_s": med(emit, "windows_per_cpu_s"), "windows_per_s": med(emit, "windows_per_s"),
    "spread": sorted(r["windows_per_cpu_s"] for r in emit),
    "peak_rss_mb": med(emit, "peak_rss_mb"), "signals": med(emit, "signals"),
    "changelog_bytes_per_window": med(emit, "changelog_bytes_per_window"),
    "largest_changelog_record": med(emit, "largest_changelog_record"),
    "restore_s": med(rest, "seconds"), "restore_until_ready_s": med(rest, "until_ready_s"),
    "restore_records": med(rest, "records"),
    "plans": med(emit, "plans"), "revisions_per_plan": med(emit, "revisions_per_plan"),
    "firm_plans": med(emit, "firm_plans"), "firm_plans_revised": med(emit, "firm_plans_revised"),
    "revision_units": med(emit, "revision_units"),
}
print(f"{s['windows']:,} DemandWindows over {s['keys']:,} grid × SKU keys ({s['grids']:,} grids per SKU), {s['suppliers']} suppliers, {s['runs']} runs")
print()
print("| windows/CPU-s (median; runs) | windows/s (wall) | peak RSS | signals | changelog bytes per window | largest changelog record | restore (ready) |")
print("|---|---|---|---|---|---|---|")
print(f"| {s['windows_per_cpu_s']:,.0f} ({', '.join(f'{v:,.0f}' for v in s['spread'])}) | {s['windows_per_s']:,.0f} | "
      f"{s['peak_rss_mb']:,.0f} MiB | {s['signals']:,.0f} | {s['changelog_bytes_per_window']:,.1f} B | "
      f"{s['largest_changelog_record']:,.0f} B | {s['restore_s']:.2f} s ({s['restore_until_ready_s']:.2f} s) |")
if s["plans"] is not None:
    firm = s["firm_plans"] or 0
    share = f"{s['firm_plans_revised'] / firm:.1%}" if firm else "–"
    print()
    print("| plans | revisions per plan | FIRM plans | FIRM plans revised | units moved by revisions |")
    print("|---|---|---|---|---|")
    print(f"| {s['plans']:,.0f} | {s['revisions_per_plan']:.3f} | {firm:,.0f} | {s['firm_plans_revised']:,.0f} ({share}) | "
          f"{s['revision_units']:,.0f} |")
out = pathlib.Path(sys.argv[1])
out.with_name(out.name.replace("-results.jsonl", "-summary.json")).write_text(json.dumps(s, indent=1))
