"""The schemas inside the package are the repository's (schemas/avro, schemas/released)."""

from importlib import resources

from conftest import SCHEMAS
from nearfield_plans import codec


def test_bundled_schemas_equal_the_contract():
    bundled = resources.files("nearfield_plans").joinpath("schemas")
    for record in codec.RECORDS:
        src = (SCHEMAS / "avro" / f"{record}.avsc").read_text()
        assert bundled.joinpath("avro", f"{record}.avsc").read_text() == src, (
            f"{record}.avsc drifted: cp schemas/avro/*.avsc "
            "clients/python/src/nearfield_plans/schemas/avro/"
        )
        for version in codec.RELEASES:
            released = SCHEMAS / "released" / version / f"{record}.avsc"
            if not released.is_file():
                assert not bundled.joinpath("released", version, f"{record}.avsc").is_file()
                continue
            src = released.read_text()
            assert bundled.joinpath("released", version, f"{record}.avsc").read_text() == src
    assert sorted(p.name for p in (SCHEMAS / "released").iterdir()) == codec.RELEASES
    assert sorted(p.stem for p in (SCHEMAS / "avro").glob("*.avsc")) == sorted(codec.RECORDS)
