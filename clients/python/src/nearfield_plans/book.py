"""The latest plan per (sku, warehouse, region, horizon), built from a plan topic in order.

The rules (the same in the Rust, Java and Python clients; see docs/factories.md):

- a ``signal_id`` seen before is a re-emission: ``DUPLICATE``, nothing changes;
- the first plan for a key is ``NEW``;
- a plan whose ``supersedes`` is the current plan's id is ``REVISED`` and becomes current;
- a plan whose ``supersedes`` names a signal that is no longer current (a newer decision
  already replaced it) is ``STALE`` and stays out of the book: the newer decision is revised
  on its own if the late data changes it;
- any other plan for the key is a newer decision for the same horizon: ``REPLACED``, and it
  becomes current.
"""

from __future__ import annotations

import enum
from typing import Dict, List, NamedTuple, Optional

from .plan import PlanSignal


class Outcome(str, enum.Enum):
    NEW = "NEW"
    REPLACED = "REPLACED"
    REVISED = "REVISED"
    DUPLICATE = "DUPLICATE"
    STALE = "STALE"


class PlanKey(NamedTuple):
    sku: str
    warehouse_id: Optional[str]
    region: str
    horizon_start: int
    horizon_end: int

    @classmethod
    def of(cls, plan: PlanSignal) -> "PlanKey":
        return cls(plan.sku, plan.warehouse_id, plan.region, plan.horizon_start, plan.horizon_end)


class PlanBook:
    """Not thread-safe; one consumer owns it."""

    def __init__(self) -> None:
        self._current: Dict[PlanKey, PlanSignal] = {}
        self._seen: Dict[str, PlanKey] = {}

    def apply(self, plan: PlanSignal) -> Outcome:
        if plan.signal_id in self._seen:
            return Outcome.DUPLICATE
        key = PlanKey.of(plan)
        self._seen[plan.signal_id] = key
        cur = self._current.get(key)
        sup = plan.supersedes
        if sup is not None and sup in self._seen and (cur is None or cur.signal_id != sup):
            return Outcome.STALE
        self._current[key] = plan
        if cur is None:
            return Outcome.NEW
        return Outcome.REVISED if sup == cur.signal_id else Outcome.REPLACED

    def get(self, key: PlanKey) -> Optional[PlanSignal]:
        return self._current.get(key)

    def current(self) -> List[PlanSignal]:
        """Every current plan, ordered by sku, warehouse, region, horizon."""
        return sorted(
            self._current.values(),
            key=lambda p: (p.sku, p.warehouse_id or "", p.region, p.horizon_start, p.horizon_end),
        )

    def evict_before(self, horizon_end_ms: int) -> None:
        """Forgets plans whose horizon ended before ``horizon_end_ms`` (bounded memory)."""
        self._current = {k: p for k, p in self._current.items() if k.horizon_end >= horizon_end_ms}
        self._seen = {i: k for i, k in self._seen.items() if k.horizon_end >= horizon_end_ms}

    def __len__(self) -> int:
        return len(self._current)
