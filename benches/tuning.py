"""The tuning a benchmark's aggregate runs used: the librdkafka properties they set over the
production defaults (NEARFIELD_KAFKA_PROPERTY_*), which aggregator_bench reports as
kafka_properties. Shared by aggregator_summary.py and aggregator_compare.py, so a tuned
run's figure is never read as the defaults'."""

import json


def tuned_line(rows):
    """A line naming every tuning of the aggregate rows, or None when all ran the defaults."""
    tunings = sorted({json.dumps(r["kafka_properties"], sort_keys=True) for r in rows
                      if r.get("phase") == "aggregate" and r.get("kafka_properties")})
    if not tunings:
        return None
    return f"TUNED, not the production defaults: NEARFIELD_KAFKA_PROPERTY_* {', '.join(tunings)}"
