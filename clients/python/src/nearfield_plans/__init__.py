"""nearfield-plans: what a factory needs to consume its nearfield plan topic.

- :mod:`.codec`: decode/encode nearfield Avro records in single-object or Confluent framing.
- :mod:`.plan`: the typed :class:`PlanSignal`.
- :mod:`.book`: :class:`PlanBook`, the latest plan per (sku, warehouse, region, horizon).
- :mod:`.consumer`: :class:`PlanConsumer`, which commits offsets only after handling.
- :mod:`.follow`: the runnable example.
"""

from .book import Outcome, PlanBook, PlanKey
from .codec import AvroCodec, DecodeError
from .consumer import PlanConsumer, consumer_config, plan_topic
from .plan import PlanSignal, RegionAllocation

__all__ = [
    "AvroCodec",
    "DecodeError",
    "Outcome",
    "PlanBook",
    "PlanConsumer",
    "PlanKey",
    "PlanSignal",
    "RegionAllocation",
    "consumer_config",
    "plan_topic",
]
