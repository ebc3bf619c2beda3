import os
import pathlib

import pytest

#: The repository's schemas/ (the contract); NEARFIELD_SCHEMAS_DIR overrides it.
SCHEMAS = pathlib.Path(
    os.environ.get("NEARFIELD_SCHEMAS_DIR", pathlib.Path(__file__).resolve().parents[3] / "schemas")
)


@pytest.fixture(scope="session")
def schemas_dir() -> pathlib.Path:
    assert (SCHEMAS / "avro").is_dir(), f"schemas/ not found at {SCHEMAS}"
    return SCHEMAS
