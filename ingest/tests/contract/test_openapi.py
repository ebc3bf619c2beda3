"""The device API tested from its own contract: schemathesis generates requests from the
OpenAPI document the running ingest serves (valid ones and ones the document forbids),
signs each exactly as a device would, and checks every answer against the document.

What fails the test: a 5xx; a status code, content type or body the document does not
list for the operation; a request the document forbids that is accepted (2xx). Not
checked here: that every request the document allows is accepted (an event's
`occurred_at` must be near the server's clock, which OpenAPI cannot say, so a generated
"valid" event may rightly get a 422), and the auth headers (every request is signed
here; `ingest/tests/api.rs` tests missing, wrong and foreign signatures).
"""

from __future__ import annotations

import json
import os
import urllib.parse

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    ignored_auth,
    missing_required_header,
    positive_data_acceptance,
)

from conftest import signed_headers

EXAMPLES = int(os.environ.get("CONTRACT_EXAMPLES", "200"))
COUNTS = {"requests": 0, "2xx": 0, "4xx": 0}

config = schemathesis.Config.from_dict(
    {
        "generation": {"mode": "all", "max-examples": EXAMPLES},
        "phases": {"stateful": {"enabled": False}},
        # A forbidden request is refused with any documented 4xx: 413 for a batch over
        # the limit included.
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": ["400", "401", "403", "413", "415", "422", "429"]
            }
        },
    }
)


def _send(case, ingest_url: str):
    import requests

    kwargs = case.as_transport_kwargs(base_url=ingest_url)
    body = _body_bytes(kwargs)
    headers = dict(kwargs.pop("headers", {}) or {})
    if case.media_type:
        headers.setdefault("Content-Type", case.media_type)
    # Sign what is sent (a generated auth header is replaced: auth has tests of its own).
    url = kwargs.pop("url")
    params = kwargs.pop("params", None) or {}
    query = urllib.parse.urlencode(params, doseq=True)
    content_type = headers.get("Content-Type", "")
    headers.update(
        signed_headers(case.method.upper(), case.formatted_path, query, content_type, body)
    )
    response = requests.request(
        case.method, url + (f"?{query}" if query else ""), headers=headers, data=body, timeout=30
    )
    COUNTS["requests"] += 1
    cls = f"{response.status_code // 100}xx"
    COUNTS[cls] = COUNTS.get(cls, 0) + 1
    case.validate_response(
        response,
        excluded_checks=[positive_data_acceptance, ignored_auth, missing_required_header],
        transport_kwargs={"headers": headers},
    )


def _body_bytes(kwargs: dict) -> bytes:
    if "json" in kwargs:
        return json.dumps(kwargs.pop("json")).encode()
    data = kwargs.pop("data", None)
    if data is None:
        return b""
    return data if isinstance(data, bytes) else str(data).encode()


def _operations(url: str):
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config)
    for result in schema.include(path_regex="^/v1/").get_all_operations():
        yield result.ok()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_answers_as_its_document_says(ingest_url, mode):
    for operation in _operations(ingest_url):

        @hypothesis.settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        @hypothesis.given(operation.as_strategy(generation_mode=mode))
        def run(case):
            # The auth headers are replaced by a valid signature below: a case whose only
            # "violation" is in them is not negative once sent.
            meta = case.meta
            if meta is not None and meta.is_negative_at(ParameterLocation.HEADER):
                hypothesis.assume(
                    any(meta.is_negative_at(loc) for loc in ParameterLocation if loc.value != "header")
                )
            _send(case, ingest_url)

        run()


def test_zz_report(ingest_url):
    """Prints how many requests the property test sent (runs after it: names sort)."""
    print(f"\ncontract: {COUNTS['requests']} generated requests, by class {COUNTS}")
    assert COUNTS["requests"] > 0, "the property test sent nothing"
