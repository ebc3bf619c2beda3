"""Starts a real `nearfield ingest` on a real Kafka for the OpenAPI-driven API test.

Needs NEARFIELD_BROKERS (make test starts Kafka and sets it) and the debug binary that
`cargo test` built (NEARFIELD_BIN overrides). It fails loudly when either is missing:
a contract test that skipped would prove nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pathlib
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
# The public demo key: refused off loopback, fine for a test on 127.0.0.1.
MASTER_KEY = "6e6561726669656c642d64656d6f2d6f6e6c792d6d61737465722d6b6579"
STORE, DEVICE = "s1", "d1"


def device_key(store: str = STORE, device: str = DEVICE, version: int = 1) -> bytes:
    """The key ingest derives for a device (ingest/src/auth.rs)."""
    text = f"nearfield/device-key/v{version}\0{store}\0{device}".encode()
    return hmac.new(bytes.fromhex(MASTER_KEY), text, hashlib.sha256).digest()


def signed_headers(
    method: str, path: str, query: str, content_type: str, body: bytes, key: bytes | None = None
) -> dict:
    """The four auth headers of the device API for this exact request (ingest/src/auth.rs:
    timestamp, method, path, query, content type and body are signed)."""
    ts = str(int(time.time() * 1000))
    line = f"{ts}\n{method}\n{path}\n{query}\n{content_type}\n".encode()
    mac = hmac.new(key or device_key(), line + body, hashlib.sha256)
    return {
        "X-Nearfield-Store": STORE,
        "X-Nearfield-Device": DEVICE,
        "X-Nearfield-Timestamp": ts,
        "X-Nearfield-Signature": mac.hexdigest(),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ingest_url():
    brokers = os.environ.get("NEARFIELD_BROKERS")
    if not brokers:
        pytest.fail("NEARFIELD_BROKERS is not set: run through `make test` (it starts Kafka)")
    binary = pathlib.Path(os.environ.get("NEARFIELD_BIN", ROOT / "target/debug/nearfield"))
    if not binary.is_file():
        pytest.fail(f"{binary} not built: `cargo test` builds it (or set NEARFIELD_BIN)")
    run = uuid.uuid4().hex[:8]
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        stores = tmp / "stores.jsonl"
        stores.write_text(
            json.dumps(
                {
                    "store_id": STORE,
                    "name": "Contract test shop",
                    "lat": 31.2304,
                    "lon": 121.4737,
                    "device_ids": [DEVICE],
                    "key_version": 1,
                    "active": True,
                    "updated_at": 0,
                }
            )
            + "\n"
        )
        names = ["sales", "heartbeats", "dlq", "late", "demand", "coverage", "stores", "catalog"]
        names += ["aggregator_changelog", "emitter_changelog"]
        topics = "\n".join(f'{n} = "contract-{n}-{run}"' for n in names)
        config = tmp / "nearfield.toml"
        config.write_text(
            f"""[kafka]
brokers = "{brokers}"
partitions = 1
[kafka.topics]
{topics}
[ingest]
listen = "127.0.0.1:{port}"
operator_listen = "127.0.0.1:0"
stores_file = "{stores}"
follow_stores_topic = false
master_key = "{MASTER_KEY}"
[ingest.rate_limit]
events_per_second = 1000000.0
burst = 1000000.0
"""
        )
        made = subprocess.run(
            [str(binary), "topics", "--config", str(config)], capture_output=True, timeout=120
        )
        if made.returncode != 0:
            pytest.fail(f"nearfield topics failed: {made.stderr.decode()[-2000:]}")
        log = open(tmp / "ingest.log", "wb")
        proc = subprocess.Popen(
            [str(binary), "ingest", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 90
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/readyz", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.time() > deadline:
                    log.flush()
                    pytest.fail(
                        "ingest did not become ready:\n" + (tmp / "ingest.log").read_text()[-4000:]
                    )
                time.sleep(0.2)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
