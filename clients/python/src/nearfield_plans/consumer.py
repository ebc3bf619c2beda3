"""Follows one supplier's plan topic and commits an offset only after its plan was handled.

Reads ``read_committed``, so only plans of committed emitter transactions are seen. A
handler that raises stops the consumer with the failed message uncommitted: it is read
again on restart, so handlers must be idempotent (e.g. keyed by ``signal_id``).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, Mapping, Optional, Tuple

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from .book import Outcome, PlanBook
from .codec import DecodeError
from .plan import CODEC, PlanSignal

log = logging.getLogger(__name__)

Handler = Callable[[Message, PlanSignal, Outcome], None]
BadRecordPolicy = Callable[[Message, DecodeError], None]


def plan_topic(supplier_id: str) -> str:
    """The plan topic of a supplier."""
    return f"plan.{supplier_id}.v1"


def consumer_config(bootstrap_servers: str, group_id: str, **extra: str) -> Dict[str, object]:
    """Minimal librdkafka settings: brokers, group, start at the beginning, read_committed.
    Any librdkafka property (SASL/SSL for the supplier's ACL'd principal) goes in ``extra``
    with dots written as underscores, or pass a dict to :class:`PlanConsumer` directly."""
    conf: Dict[str, object] = {
        "bootstrap.servers": bootstrap_servers,
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    }
    conf.update({k.replace("_", "."): v for k, v in extra.items()})
    return conf


def stop_on_bad_record(message: Message, error: DecodeError) -> None:
    """The default policy: stop, leaving the message uncommitted, with where and why."""
    raise DecodeError(
        f"{message.topic()}/{message.partition()}@{message.offset()}: {error}"
    ) from error


class PlanConsumer:
    def __init__(
        self,
        config: Mapping[str, object],
        supplier_id: str,
        on_bad_record: BadRecordPolicy = stop_on_bad_record,
        codec=CODEC,
        topic: Optional[str] = None,
    ) -> None:
        """``topic`` overrides ``plan.<supplier_id>.v1`` (a prefixed or mirrored topic)."""
        conf = dict(config)
        # Offsets are committed here after the handler, never automatically.
        conf["enable.auto.commit"] = False
        conf.setdefault("isolation.level", "read_committed")
        self.supplier_id = supplier_id
        self.topic = topic or plan_topic(supplier_id)
        self.book = PlanBook()
        self._codec = codec
        self._on_bad_record = on_bad_record
        self._consumer = Consumer(conf)
        self._running = True
        self.assigned = False

    def stop(self) -> None:
        """Makes :meth:`run` return after the current batch (safe from a signal handler)."""
        self._running = False

    def run(
        self,
        handler: Handler,
        idle_exit_s: Optional[float] = None,
        batch: int = 500,
    ) -> None:
        """Handles plans until :meth:`stop`, or once assigned and idle for ``idle_exit_s``."""

        def on_assign(consumer, partitions):
            self.assigned = True

        self._consumer.subscribe([self.topic], on_assign=on_assign)
        last = time.monotonic()
        while self._running:
            messages = self._consumer.consume(num_messages=batch, timeout=0.2)
            handled: Dict[Tuple[str, int], int] = {}
            try:
                for msg in messages:
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            continue
                        if err.fatal():
                            raise KafkaException(err)
                        log.warning("consumer error: %s", err)
                        continue
                    self._handle(msg, handler)
                    handled[(msg.topic(), msg.partition())] = msg.offset() + 1
                    last = time.monotonic()
            finally:
                if handled:
                    self._consumer.commit(
                        offsets=[TopicPartition(t, p, o) for (t, p), o in handled.items()],
                        asynchronous=False,
                    )
            if idle_exit_s is not None and self.assigned and time.monotonic() - last >= idle_exit_s:
                break

    def _handle(self, msg: Message, handler: Handler) -> None:
        try:
            plan = PlanSignal.decode(msg.value() or b"", self._codec)
            if plan.supplier_id != self.supplier_id:
                raise DecodeError(
                    f"supplier_id: {plan.supplier_id} on the topic of {self.supplier_id}"
                )
        except DecodeError as e:
            self._on_bad_record(msg, e)
            return
        handler(msg, plan, self.book.apply(plan))

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> "PlanConsumer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
