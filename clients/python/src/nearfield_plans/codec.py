"""Decoding and encoding of nearfield Avro records in both framings nearfield writes.

* Avro single-object encoding (the default): ``C3 01``, the 8-byte little-endian
  CRC-64-AVRO fingerprint of the writer schema, the datum. The writer schema is found by
  fingerprint among the bundled current and released schemas.
* Confluent wire format (with a schema registry): ``00``, the 4-byte big-endian registry id,
  the datum. Registry ids map to schema versions with ``registry_ids``.

Records are read into the current schema (Avro schema resolution), so a consumer built
today reads what an older writer wrote. Values come back in the shared JSON form of the
golden vectors: timestamps as integer milliseconds, enums as symbols, ``bytes`` as bytes.
"""

from __future__ import annotations

import datetime
import io
import json
import struct
from importlib import resources
from typing import Any, Dict, List, Mapping, Optional, Tuple

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

#: Released schema versions, oldest first (a test checks it against schemas/released/).
RELEASES: List[str] = ["v1"]
#: The records of the contract.
RECORDS: List[str] = [
    "SaleEvent",
    "RejectedEvent",
    "DemandWindow",
    "PlanSignal",
    "Heartbeat",
    "StoreRecord",
    "CatalogRecord",
    "GridCoverage",
]

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_MS = datetime.timedelta(milliseconds=1)


class DecodeError(ValueError):
    """A message is not a record of the expected type; the message names the rule."""


def _load(path: str) -> dict:
    text = resources.files(__package__).joinpath("schemas", *path.split("/")).read_text("utf-8")
    return json.loads(text)


def schema_versions(record: str) -> List[Tuple[str, dict]]:
    """The current schema, then each released version, newest first, parsed."""
    out = [("current", fastavro.parse_schema(_load(f"avro/{record}.avsc")))]
    for version in reversed(RELEASES):
        path = resources.files(__package__).joinpath("schemas", "released", version, f"{record}.avsc")
        if not path.is_file():
            continue  # the record is newer than this release
        out.append((version, fastavro.parse_schema(_load(f"released/{version}/{record}.avsc"))))
    return out


def schema_fingerprint(parsed: dict) -> bytes:
    """CRC-64-AVRO of the Parsing Canonical Form, as the single-object header carries it."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


def _to_millis(value: Any) -> Any:
    """fastavro's logical-type values back to the wire form (timestamps as milliseconds)."""
    if isinstance(value, dict):
        return {k: _to_millis(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_millis(v) for v in value]
    if isinstance(value, datetime.datetime):
        return (value - _EPOCH) // _MS
    return value


class AvroCodec:
    """Decoder/encoder for one record of the contract, e.g. ``AvroCodec("PlanSignal")``."""

    def __init__(self, record: str, registry_ids: Optional[Mapping[int, str]] = None):
        if record not in RECORDS:
            raise ValueError(f"record: {record!r} is not one of {RECORDS}")
        self.record = record
        versions = schema_versions(record)
        self.schema = versions[0][1]
        by_version = dict(versions)
        self._by_fingerprint: Dict[bytes, dict] = {}
        for _, parsed in versions:
            self._by_fingerprint.setdefault(schema_fingerprint(parsed), parsed)
        self._fingerprint = schema_fingerprint(self.schema)
        self._by_id: Dict[int, dict] = {}
        for rid, version in (registry_ids or {}).items():
            if version not in by_version:
                raise ValueError(
                    f"registry_ids[{rid}]: unknown schema version {version!r} "
                    f"(known: {sorted(by_version)})"
                )
            self._by_id[int(rid)] = by_version[version]

    def decode(self, data: bytes) -> dict:
        """One message (either framing) as a dict of the current schema."""
        rec = self.record
        if not data:
            raise DecodeError(f"{rec}: empty message")
        if data[0] == 0xC3:
            if len(data) < 10 or data[1] != 0x01:
                raise DecodeError(
                    f"{rec}: truncated single-object header (needs 10 bytes, got {len(data)})"
                )
            writer = self._by_fingerprint.get(bytes(data[2:10]))
            if writer is None:
                raise DecodeError(
                    f"{rec}: unknown writer schema fingerprint {bytes(data[2:10]).hex()} "
                    f"(not the current or a released {rec} schema)"
                )
            offset = 10
        elif data[0] == 0x00:
            if len(data) < 5:
                raise DecodeError(
                    f"{rec}: truncated Confluent header (needs 5 bytes, got {len(data)})"
                )
            (rid,) = struct.unpack(">i", bytes(data[1:5]))
            writer = self._by_id.get(rid)
            if writer is None:
                raise DecodeError(f"{rec}: registry schema id {rid} is not mapped (registry_ids)")
            offset = 5
        else:
            raise DecodeError(
                f"{rec}: unknown framing: first byte 0x{data[0]:02x} is neither single-object "
                "(0xc3) nor Confluent (0x00)"
            )
        buf = io.BytesIO(bytes(data[offset:]))
        reader = None if writer is self.schema else self.schema
        try:
            value = fastavro.schemaless_reader(buf, writer, reader)
        except Exception as e:  # fastavro raises many types on malformed input
            raise DecodeError(f"{rec}: malformed datum: {type(e).__name__}: {e}") from e
        if buf.read(1):
            raise DecodeError(f"{rec}: trailing bytes after the datum")
        return _to_millis(value)

    def _datum(self, value: Mapping[str, Any]) -> bytes:
        out = io.BytesIO()
        fastavro.schemaless_writer(out, self.schema, dict(value))
        return out.getvalue()

    def encode_single_object(self, value: Mapping[str, Any]) -> bytes:
        """Single-object encoding with the current schema."""
        return b"\xc3\x01" + self._fingerprint + self._datum(value)

    def encode_confluent(self, registry_id: int, value: Mapping[str, Any]) -> bytes:
        """Confluent wire format with the given registry id and the current schema."""
        return b"\x00" + struct.pack(">i", registry_id) + self._datum(value)
