"""`twin serve` end to end: real brokers, real databases, real clients; nothing lost, nothing duplicated."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

from sensors.contract import GpuReading, NodeSample, Topics
from sensors.mqtt_url import parse_broker_url
from sensors.publisher import PublisherHub, PublisherSettings
from twin.broker import EmbeddedBroker
from twin.records import IngestBatch
from twin.service import IngestService, ServiceSettings
from twin.store.repository import Store, WriteResult
from twin.store.schema import NodeRow, RejectRow, TelemetryRow

REPO = Path(__file__).resolve().parents[2]
GPUS = 4


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def sample(node: str, ts: float, power_w: float = 400.0) -> NodeSample:
    return NodeSample(
        node, ts, tuple(GpuReading(index=i, power_w=power_w + i, temp_c=50.0) for i in range(GPUS))
    )


def count(store: Store, table: Any, cluster: str) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(select(func.count()).select_from(table).where(table.cluster == cluster)).scalar_one()
        )


def wait_until(condition: Callable[[], bool], timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@contextmanager
def running_service(settings: ServiceSettings, store: Store) -> Iterator[IngestService]:
    service = IngestService(settings, store)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    assert service._connected.wait(10), "service did not connect"
    time.sleep(0.3)  # subscriptions acknowledged
    try:
        yield service
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive()


def service_settings(url: str, cluster: str | None, *, version: int = 5, **overrides: Any) -> ServiceSettings:
    values: dict[str, Any] = {
        "broker": parse_broker_url(url),
        "cluster": cluster,
        "client_id": unique("test-serve"),
        "mqtt_version": version,
        "batch_max_delay_s": 0.05,
        "session_expiry_s": 120,
    }
    values.update(overrides)
    return ServiceSettings(**values)


def hub_for(url: str, cluster: str) -> PublisherHub:
    return PublisherHub(
        PublisherSettings(url=parse_broker_url(url), topics=Topics(cluster), client_id_prefix=unique("t"))
    )


@pytest.fixture(params=["mosquitto", "embedded"])
def broker(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    """(URL, MQTT version for the service): the real Mosquitto (MQTT 5) and the embedded amqtt (3.1.1)."""
    if request.param == "mosquitto":
        yield request.getfixturevalue("mosquitto_url"), 5
        return
    with EmbeddedBroker() as embedded:
        yield embedded.url, 4


def test_published_telemetry_is_stored_once_and_folded_into_the_live_state(
    broker: tuple[str, int], store: Store
) -> None:
    url, version = broker
    cluster = unique("c")
    now = time.time()
    with running_service(service_settings(url, cluster, version=version), store) as service:
        hub = hub_for(url, cluster)
        for k in range(25):
            for node in ("n01", "n02"):
                assert hub.publish_sample(sample(node, now - 25 + k, power_w=100.0 + k))
        assert hub.flush(10)
        assert wait_until(lambda: count(store, TelemetryRow, cluster) == 25 * 2 * GPUS)
        snapshot = service.state.snapshot()
        hub.close()
    nodes = {n["node"]: n for n in snapshot["nodes"] if n["cluster"] == cluster}
    assert set(nodes) == {"n01", "n02"} and nodes["n01"]["status"] == "online"
    assert [g["power_w"] for g in nodes["n02"]["gpus"]] == [124.0, 125.0, 126.0, 127.0]  # newest reading
    assert service.stats.rows_inserted == 200 and not service.stats.rejects
    assert count(store, TelemetryRow, cluster) == 200  # nothing duplicated by the shutdown flush


def test_mosquitto_pub_messages_are_ingested_like_our_own(mosquitto_url: str, store: Store) -> None:
    tool = shutil.which("mosquitto_pub")
    if tool is None:
        pytest.skip("mosquitto_pub not installed (Debian package mosquitto-clients)")
    cluster = unique("c")
    host, port = mosquitto_url.rsplit("//", 1)[1].rsplit(":", 1)
    topics = Topics(cluster)
    good = orjson.dumps(sample("n09", time.time() - 1).to_payload())
    with running_service(service_settings(mosquitto_url, cluster), store) as service:
        for topic, payload in (
            (topics.telemetry("n09"), good),
            (topics.telemetry("n09"), b'{"schema": 1, "ts": "yesterday", "gpus": []}'),
            (topics.status("n09"), b"online"),
        ):
            subprocess.run([tool, "-h", host, "-p", port, "-q", "1", "-t", topic, "-m", payload], check=True)
        assert wait_until(lambda: count(store, TelemetryRow, cluster) == GPUS)
        assert wait_until(lambda: service.stats.rejects.get("wrong_type") == 1)
    with store.engine.connect() as conn:
        reasons = conn.execute(
            select(RejectRow.reason).where(RejectRow.topic == topics.telemetry("n09"))
        ).all()
        status = conn.execute(select(NodeRow.status).where(NodeRow.cluster == cluster)).scalar_one()
    assert [r[0] for r in reasons] == ["wrong_type"] and status == "online"


def raw_publish(url: str, messages: list[tuple[str, bytes]]) -> None:
    broker = parse_broker_url(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("raw"))
    client.connect(broker.host, broker.port)
    client.loop_start()
    infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(5)
    client.loop_stop()
    client.disconnect()


def test_bad_input_is_rejected_counted_and_stored_and_the_service_goes_on(
    mosquitto_url: str, store: Store
) -> None:
    cluster = unique("c")
    topics = Topics(cluster)
    now = time.time()
    nan_payload = b'{"schema":1,"ts":%f,"gpus":[{"index":0,"power_w":NaN}]}' % now
    bad = [
        (topics.telemetry("n01"), b"\x00\xff not json"),
        (topics.telemetry("n01"), nan_payload),
        (topics.telemetry("n01"), orjson.dumps({**sample("n02", now).to_payload()})),  # node mismatch
        (topics.telemetry("n01"), orjson.dumps({**sample("n01", now + 86_400).to_payload()})),
        (topics.telemetry("n01"), orjson.dumps({**sample("n01", now, power_w=9_000).to_payload()})),
        (f"gpu-twin/v1/{cluster}/jobs/telemetry", b"{}"),  # matches +/+/telemetry, wrong shape
    ]
    good = [(topics.telemetry("n01"), orjson.dumps(sample("n01", now - k).to_payload())) for k in range(3)]
    with running_service(service_settings(mosquitto_url, None, shared_group=None), store) as service:
        raw_publish(mosquitto_url, bad + good)
        assert wait_until(lambda: count(store, TelemetryRow, cluster) == 3 * GPUS)
        assert wait_until(lambda: sum(service.stats.rejects.values()) >= 5 + GPUS)
    with store.engine.connect() as conn:
        rows = conn.execute(select(RejectRow.reason).where(RejectRow.topic.like(f"%/{cluster}/%"))).all()
    assert len(rows) == 5 + GPUS
    reasons = sorted(r[0] for r in rows)
    assert reasons.count("out_of_range") == GPUS  # each GPU of the 9 kW message, by name
    for reason in ("not_json", "not_finite", "node_mismatch", "ts_in_future", "bad_topic"):
        assert reason in reasons


class FailingStore:
    """A store whose database is down: every write raises (the service must keep the batch, not ack)."""

    def __init__(self) -> None:
        self.attempts = 0

    def write_batch(self, batch: IngestBatch) -> WriteResult:
        self.attempts += 1
        raise ConnectionError("database is down")

    def mark_stale(self, cluster: str, nodes: Any, ts: float) -> int:
        raise ConnectionError("database is down")


def test_a_crash_before_commit_loses_nothing_the_broker_redelivers(mosquitto_url: str, store: Store) -> None:
    cluster = unique("c")
    client_id = unique("serve")
    now = time.time()
    settings = service_settings(mosquitto_url, cluster, client_id=client_id)
    failing = FailingStore()
    crashed = IngestService(settings, failing)  # type: ignore[arg-type]
    crashed.start()
    deadline = time.monotonic() + 10
    while not crashed._connected.is_set() and time.monotonic() < deadline:
        crashed.step()
    for _ in range(10):
        crashed.step()
    hub = hub_for(mosquitto_url, cluster)
    for k in range(20):
        hub.publish_sample(sample("n01", now - 20 + k))
    assert hub.flush(10)
    deadline = time.monotonic() + 10
    while (crashed.stats.telemetry_messages < 20 or failing.attempts < 2) and time.monotonic() < deadline:
        crashed.step()
    assert crashed.stats.telemetry_messages == 20 and failing.attempts >= 1 and crashed.stats.acked == 0
    sock = crashed._client.socket()  # kill -9: the TCP connection drops, no DISCONNECT, no PUBACK
    assert sock is not None
    sock.close()
    crashed._writer_stop.set()
    with running_service(settings, store) as recovered:
        assert wait_until(lambda: count(store, TelemetryRow, cluster) == 20 * GPUS)
    hub.close()
    assert recovered.stats.telemetry_messages == 20 and count(store, TelemetryRow, cluster) == 20 * GPUS


def test_messages_sent_while_the_service_is_down_are_delivered_when_it_returns(
    broker: tuple[str, int], store: Store
) -> None:
    url, version = broker
    cluster = unique("c")
    settings = service_settings(url, cluster, version=version)
    now = time.time()
    with running_service(settings, store):
        pass  # creates the persistent session and its subscriptions, then disconnects cleanly
    hub = hub_for(url, cluster)
    for k in range(30):
        hub.publish_sample(sample("n03", now - 30 + k))
    assert hub.flush(10)
    with running_service(settings, store) as service:
        assert wait_until(lambda: count(store, TelemetryRow, cluster) == 30 * GPUS)
    hub.close()
    assert service.stats.rows_inserted == 30 * GPUS


def test_a_silent_node_is_marked_stale_after_three_intervals(mosquitto_url: str, store: Store) -> None:
    cluster = unique("c")
    settings = service_settings(mosquitto_url, cluster, telemetry_interval_s=0.2)
    with running_service(settings, store) as service:
        hub = hub_for(mosquitto_url, cluster)
        hub.publish_sample(sample("n05", time.time()))
        hub.flush(5)
        assert wait_until(lambda: service.state.nodes.get((cluster, "n05")) is not None)
        assert wait_until(lambda: service.state.nodes[(cluster, "n05")].status == "stale", timeout_s=5)
        hub.go_silent(["n05"])
    with store.engine.connect() as conn:
        status = conn.execute(select(NodeRow.status).where(NodeRow.cluster == cluster)).scalar_one()
    assert status in ("stale", "offline")  # the will (offline) may land after the stale mark
    assert service.stats.stale_marked >= 1


def test_shared_subscriptions_split_the_load_between_instances(mosquitto_url: str, store: Store) -> None:
    cluster = unique("c")
    group = unique("g")
    now = time.time()
    first = service_settings(mosquitto_url, cluster, shared_group=group)
    second = service_settings(mosquitto_url, cluster, shared_group=group)
    with running_service(first, store) as a, running_service(second, store) as b:
        hub = hub_for(mosquitto_url, cluster)
        for k in range(40):
            hub.publish_sample(sample(f"n{k % 4:02d}", now - 40 + k))
        assert hub.flush(10)
        assert wait_until(lambda: count(store, TelemetryRow, cluster) == 40 * GPUS)
        hub.close()
    assert a.stats.telemetry_messages > 0 and b.stats.telemetry_messages > 0
    assert a.stats.telemetry_messages + b.stats.telemetry_messages == 40


def test_twin_serve_flushes_and_exits_cleanly_on_sigterm(mosquitto_url: str, tmp_path: Path) -> None:
    cluster = unique("c")
    db = tmp_path / "serve.db"
    stats = tmp_path / "stats.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [
        sys.executable, "-m", "twin.cli", "serve", "--broker", mosquitto_url, "--db", f"sqlite:///{db}",
        "--cluster", cluster, "--client-id", unique("serve"), "--batch-delay-s", "30",
        "--stats-json", str(stats),
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith(b"twin serve:")  # the banner: it is serving
        time.sleep(2.0)
        hub = hub_for(mosquitto_url, cluster)
        for k in range(10):
            hub.publish_sample(sample("n01", time.time() - 10 + k))
        assert hub.flush(10)
        time.sleep(1.0)  # received, but the 30 s batch delay has not passed: only SIGTERM commits it
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        hub.close()
    finally:
        if process.poll() is None:
            process.kill()
    summary = orjson.loads(stats.read_bytes())
    assert summary["rows_inserted"] == 10 * GPUS and summary["acked"] >= 10
    check = Store.open(f"sqlite:///{db}")
    try:
        assert count(check, TelemetryRow, cluster) == 10 * GPUS
    finally:
        check.close()
