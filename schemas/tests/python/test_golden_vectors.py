"""Every golden vector in schemas/testdata decodes with fastavro (an Avro implementation
independent of the Rust one) to its JSON form, and that JSON encodes back to the same bytes.
The single-object header must carry the CRC-64-AVRO fingerprint fastavro computes for the
schema file."""

import datetime
import io
import json
import pathlib

import fastavro
import pytest
from fastavro.schema import fingerprint, to_parsing_canonical_form

ROOT = pathlib.Path(__file__).resolve().parents[2]
AVRO = ROOT / "avro"
TESTDATA = ROOT / "testdata"
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def schema(record):
    return fastavro.parse_schema(json.loads((AVRO / f"{record}.avsc").read_text()))


def vectors():
    found = sorted(TESTDATA.glob("*/*.avro"))
    assert found, f"no golden vectors under {TESTDATA}"
    return [pytest.param(p, id=f"{p.parent.name}/{p.stem}") for p in found]


def to_golden_json(value):
    """fastavro's Python values in the golden JSON form (see schemas/src/golden.rs)."""
    if isinstance(value, dict):
        return {k: to_golden_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_golden_json(v) for v in value]
    if isinstance(value, datetime.datetime):
        return (value - EPOCH) // datetime.timedelta(milliseconds=1)
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value


def from_golden_json(value, avro_type):
    """The golden JSON form back to what fastavro writes (bytes fields from latin-1)."""
    if isinstance(avro_type, dict) and avro_type.get("type") == "record":
        return {f["name"]: from_golden_json(value[f["name"]], f["type"]) for f in avro_type["fields"]}
    if isinstance(avro_type, dict) and avro_type.get("type") == "array":
        return [from_golden_json(v, avro_type["items"]) for v in value]
    if isinstance(avro_type, list):
        if value is None:
            return None
        (branch,) = [t for t in avro_type if t != "null"]
        return from_golden_json(value, branch)
    if avro_type == "bytes":
        return value.encode("latin-1")
    return value


@pytest.mark.parametrize("path", vectors())
def test_golden_vector(path):
    record = path.parent.name
    parsed = schema(record)
    data = path.read_bytes()
    assert data[:2] == b"\xc3\x01", "single-object magic"
    expected_fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
    assert data[2:10] == expected_fp, "header fingerprint is the schema's CRC-64-AVRO"

    buf = io.BytesIO(data[10:])
    value = fastavro.schemaless_reader(buf, parsed, None)
    assert buf.read() == b"", "no trailing bytes"
    golden = json.loads(path.with_suffix(".json").read_text())
    assert to_golden_json(value) == golden

    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, from_golden_json(golden, parsed))
    assert out.getvalue() == data[10:], "JSON form encodes back to the same bytes"
