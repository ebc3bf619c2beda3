"""When the demo's last minute of sales is final: the end of the one-minute window of the
latest acknowledged sale (its `occurred_at`, device clock, as the aggregator windows it)
plus the aggregator's max_close_delay, plus a margin for its commit. `make demo` waits for
this before it waits for plans, so its summary counts every minute the shops sold in.

    python3 scripts/demo/last_minute.py ACKED_LOG MAX_CLOSE_DELAY_MS   → epoch seconds
"""

import json
import sys

MINUTE_MS = 60_000
MARGIN_S = 3  # the close happens on the aggregator's next tick and commit (500 ms apart)


def closed_by(lines, max_close_delay_ms):
    """Epoch seconds by which the minute of the latest sale in `lines` (the simulator's
    acked log, one JSON object a line) is closed; 0 when nothing was acknowledged."""
    latest = None
    for line in lines:
        if line.strip():
            t = json.loads(line)["occurred_at"]
            latest = t if latest is None else max(latest, t)
    if latest is None:
        return 0
    end_ms = latest // MINUTE_MS * MINUTE_MS + MINUTE_MS
    return (end_ms + max_close_delay_ms) // 1000 + MARGIN_S


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        print(closed_by(f, int(sys.argv[2])))
