"""Service tests run against real brokers (Mosquitto on 127.0.0.1:1883, the embedded amqtt broker) and
real databases (SQLite, PostgreSQL on 127.0.0.1:5432); the store fixtures are the store tests' own."""

from __future__ import annotations

import os
import socket

import pytest

from tests.store.conftest import postgres_url, store

__all__ = ["postgres_url", "store"]

# The machine's Mosquitto (default configuration). TWIN_TEST_MQTT_URL points the suite elsewhere.
DEFAULT_MOSQUITTO_URL = "mqtt://127.0.0.1:1883"


@pytest.fixture(scope="session")
def mosquitto_url() -> str:
    """The real Mosquitto's URL, or skip (fail under TWIN_REQUIRE_SERVICES=1) when it is not running."""
    url = os.environ.get("TWIN_TEST_MQTT_URL") or DEFAULT_MOSQUITTO_URL
    host, port = url.rsplit("//", 1)[1].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            pass
    except OSError as exc:
        reason = f"Mosquitto not reachable at {url} ({exc}); start it or set TWIN_TEST_MQTT_URL"
        if os.environ.get("TWIN_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return url
