"""Example: follow a supplier's plan topic, print one JSON line per plan handled
(``{"partition","offset","outcome","plan"}``) and, on exit, the book of current plans
(``{"book": [...]}``).

    python -m nearfield_plans.follow --supplier dairy-east [--brokers H:P] [--group G]
        [--topic T] [--idle-exit-s 5] [--out FILE]

With ``--idle-exit-s`` it exits once assigned and idle that long; otherwise it runs until
SIGTERM/SIGINT. Brokers default to ``$NEARFIELD_BROKERS``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys

from .consumer import PlanConsumer, consumer_config


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="nearfield-follow-plans", description=__doc__.split("\n")[0])
    p.add_argument("--brokers", default=os.environ.get("NEARFIELD_BROKERS", "127.0.0.1:9092"))
    p.add_argument("--supplier", required=True)
    p.add_argument("--group")
    p.add_argument("--topic", help="default: plan.<supplier>.v1")
    p.add_argument("--idle-exit-s", type=float)
    p.add_argument("--out")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    group = args.group or f"factory-{args.supplier}"
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    consumer = PlanConsumer(
        consumer_config(args.brokers, group), args.supplier, topic=args.topic
    )
    signal.signal(signal.SIGTERM, lambda *_: consumer.stop())
    signal.signal(signal.SIGINT, lambda *_: consumer.stop())

    def handle(msg, plan, outcome):
        line = {
            "partition": msg.partition(),
            "offset": msg.offset(),
            "outcome": outcome.value,
            "plan": plan.to_json(),
        }
        out.write(json.dumps(line) + "\n")
        out.flush()

    try:
        consumer.run(handle, idle_exit_s=args.idle_exit_s)
        out.write(json.dumps({"book": [p.to_json() for p in consumer.book.current()]}) + "\n")
    finally:
        consumer.close()
        if out is not sys.stdout:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
