"""Bad bytes get a DecodeError naming the rule, never another exception or a wrong value."""

import pytest

from conftest import SCHEMAS
from nearfield_plans import AvroCodec, DecodeError, PlanSignal


@pytest.fixture
def plan_bytes():
    return (SCHEMAS / "testdata/PlanSignal/threshold.avro").read_bytes()


def error(data):
    with pytest.raises(DecodeError) as e:
        PlanSignal.decode(data)
    return str(e.value)


def test_each_rule_is_named(plan_bytes):
    assert "empty message" in error(b"")
    assert "unknown framing" in error(b"{")
    assert "truncated single-object header" in error(plan_bytes[:6])
    other = bytearray(plan_bytes)
    other[5] ^= 0x55
    assert "unknown writer schema fingerprint" in error(bytes(other))
    assert "malformed datum" in error(plan_bytes[:-3])
    assert "trailing bytes" in error(plan_bytes + b"\x00")
    assert "registry schema id 9" in error(b"\x00\x00\x00\x00\x09\x02")
    sale = (SCHEMAS / "testdata/SaleEvent/sale.avro").read_bytes()
    assert "unknown writer schema fingerprint" in error(sale)


def test_every_truncation_is_a_decode_error(plan_bytes):
    for n in range(len(plan_bytes)):
        with pytest.raises(DecodeError):
            PlanSignal.decode(plan_bytes[:n])


def test_unknown_registry_version_is_refused():
    with pytest.raises(ValueError, match=r"registry_ids\[3\]: unknown schema version 'v9'"):
        AvroCodec("PlanSignal", registry_ids={3: "v9"})
