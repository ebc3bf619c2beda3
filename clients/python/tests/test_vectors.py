"""Every golden vector in schemas/testdata decodes with this package to its JSON form, and
the JSON form encodes back to the same bytes, in both framings: the check the Rust and Java
implementations run too."""

import json
import math

import pytest

from conftest import SCHEMAS
from nearfield_plans import AvroCodec, PlanSignal


def vectors():
    found = sorted((SCHEMAS / "testdata").glob("*/*.avro"))
    assert found, f"no golden vectors under {SCHEMAS / 'testdata'}"
    return [pytest.param(p, id=f"{p.parent.name}/{p.stem}") for p in found]


def golden_to_wire(value, avro_type):
    """The JSON form to the values the encoder takes (bytes fields from latin-1)."""
    if isinstance(avro_type, dict) and avro_type.get("type") == "record":
        return {f["name"]: golden_to_wire(value[f["name"]], f["type"]) for f in avro_type["fields"]}
    if isinstance(avro_type, dict) and avro_type.get("type") == "array":
        return [golden_to_wire(v, avro_type["items"]) for v in value]
    if isinstance(avro_type, list):
        if value is None:
            return None
        (branch,) = [t for t in avro_type if t != "null"]
        return golden_to_wire(value, branch)
    if avro_type == "bytes":
        return value.encode("latin-1")
    return value


def wire_to_golden(value):
    if isinstance(value, dict):
        return {k: wire_to_golden(v) for k, v in value.items()}
    if isinstance(value, list):
        return [wire_to_golden(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value


def same(a, b):
    """Equality that tells -0.0 from 0.0 (bit-exact doubles)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and (
            float(a) == float(b) and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    return a == b


@pytest.mark.parametrize("path", vectors())
def test_vector_decodes_and_encodes_back(path):
    record = path.parent.name
    data = path.read_bytes()
    golden = json.loads(path.with_suffix(".json").read_text())
    codec = AvroCodec(record)

    decoded = codec.decode(data)
    assert same(wire_to_golden(decoded), golden), f"{record}: {decoded} != {golden}"
    wire = golden_to_wire(golden, codec.schema)
    assert codec.encode_single_object(wire) == data

    confluent = b"\x00\x00\x00\x00\x07" + data[10:]
    via_registry = AvroCodec(record, registry_ids={7: "current"})
    assert same(wire_to_golden(via_registry.decode(confluent)), golden)
    assert via_registry.encode_confluent(7, wire) == confluent


def test_plan_vectors_decode_to_typed_plans():
    data = (SCHEMAS / "testdata/PlanSignal/revision.avro").read_bytes()
    plan = PlanSignal.decode(data)
    assert plan.reason == "REVISION" and plan.revision == 1
    assert plan.supersedes == "sig-3f9a1c0e7b2d4a51"
    assert math.copysign(1, plan.forecast_units) == -1.0
    assert plan.encode() == data


def test_the_example_prints_the_json_form(capsys):
    data = (SCHEMAS / "testdata/PlanSignal/threshold.avro").read_bytes()
    golden = json.loads((SCHEMAS / "testdata/PlanSignal/threshold.json").read_text())
    assert same(json.loads(json.dumps(PlanSignal.decode(data).to_json())), golden)
