"""The typed plan signal a factory reads (field meanings: schemas/avro/PlanSignal.avsc)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from .codec import AvroCodec

#: The decoder for plan topics (either framing, any released PlanSignal version).
CODEC = AvroCodec("PlanSignal")


@dataclass(frozen=True)
class RegionAllocation:
    """The share of a warehouse plan that goes to one of its regions."""

    region: str
    units: int
    forecast_units: float
    forecast_low: float
    forecast_high: float
    observed_units: int
    contributing_stores: int


@dataclass(frozen=True)
class PlanSignal:
    """One production-plan signal; times are UTC milliseconds."""

    signal_id: str
    supplier_id: str
    factory_id: str
    sku: str
    warehouse_id: Optional[str]
    region: str
    horizon_start: int
    horizon_end: int
    observed_units: int
    forecast_units: float
    forecast_low: float
    forecast_high: float
    interval_coverage: float
    recommended_units: int
    moq: int
    batch_size: int
    reason: str  # THRESHOLD | SCHEDULED | SURGE | REVISION
    firmness: str  # FIRM | PLANNING
    contributing_grids: List[str]
    contributing_stores: int
    stores_reporting: int
    stores_expected: int
    based_on_watermark: int
    generated_at: int
    revision: int
    supersedes: Optional[str]
    #: The quantile of demand over lead time + horizon the recommendation covers.
    service_level: float = 0.5
    #: Units needed before rounding (MOQ and batch size).
    need_units: float = 0.0
    #: A warehouse plan's allocation per region (empty for per-region plans of v1).
    allocations: List[RegionAllocation] = dataclasses.field(default_factory=list)

    @classmethod
    def decode(cls, data: bytes, codec: AvroCodec = CODEC) -> "PlanSignal":
        """A plan-topic message value (raises :class:`DecodeError`)."""
        return cls.from_dict(codec.decode(data))

    @classmethod
    def from_dict(cls, value: Dict[str, Any]) -> "PlanSignal":
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in value.items() if k in names}
        if "allocations" in fields:
            known = {f.name for f in dataclasses.fields(RegionAllocation)}
            fields["allocations"] = [
                RegionAllocation(**{k: v for k, v in a.items() if k in known})
                for a in fields["allocations"]
            ]
        return cls(**fields)

    def to_json(self) -> Dict[str, Any]:
        """The shared JSON form (as in schemas/testdata)."""
        return dataclasses.asdict(self)

    def encode(self, codec: AvroCodec = CODEC) -> bytes:
        """Single-object encoding with the current schema."""
        return codec.encode_single_object(self.to_json())
