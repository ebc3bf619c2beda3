"""The demo's wait for its last minute (scripts/demo/last_minute.py)."""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from last_minute import closed_by  # noqa: E402

# 2026-12-08T00:39:57.558Z and the minute that follows it.
LATE_IN_MINUTE = 1_796_690_397_558
NEXT_MINUTE = 1_796_690_400_000


def acked(*times):
    return [json.dumps({"event_id": f"e{i}", "occurred_at": t}) + "\n" for i, t in enumerate(times)]


def test_the_minute_of_the_latest_sale_closes_max_close_delay_after_its_end():
    # Whatever order the log is in, the latest sale decides (a skewed device may be last).
    lines = acked(LATE_IN_MINUTE, LATE_IN_MINUTE - 50_000)
    assert closed_by(lines, 15_000) == NEXT_MINUTE // 1000 + 15 + 3
    assert closed_by(reversed(lines), 15_000) == NEXT_MINUTE // 1000 + 15 + 3


def test_a_sale_on_the_minute_belongs_to_the_minute_it_starts():
    assert closed_by(acked(NEXT_MINUTE), 15_000) == NEXT_MINUTE // 1000 + 60 + 15 + 3
    assert closed_by(acked(NEXT_MINUTE - 1), 15_000) == NEXT_MINUTE // 1000 + 15 + 3


def test_the_delay_is_the_aggregators_and_blank_lines_are_skipped():
    assert closed_by(acked(LATE_IN_MINUTE) + ["\n"], 120_000) == NEXT_MINUTE // 1000 + 120 + 3


def test_nothing_acknowledged_means_no_wait():
    assert closed_by([], 15_000) == 0
    assert closed_by(["\n"], 15_000) == 0
