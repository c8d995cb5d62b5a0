"""The embedded amqtt broker (twin.broker) measured with real paho-mqtt 2.x clients.

Besides the features we rely on (QoS 1, retained statuses, last will, persistent sessions) these tests
pin the limits documented in twin/broker.py and deploy/mosquitto/README.md: if an amqtt upgrade lifts
one, a test fails and the documentation (and the `supports_*` flags) must be updated with it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import paho.mqtt.client as mqtt
import pytest
from amqtt.contexts import BaseContext
from paho.mqtt.enums import MQTTProtocolVersion

from tests.mqtt_fixtures import (
    MessageCollector,
    close,
    connect,
    make_client,
    numbered,
    publish_all,
)
from twin.broker import EmbeddedBroker, EmbeddedBrokerError, LoopbackAuthPlugin

THREAD_NAME = "twin-embedded-broker"


@pytest.fixture(autouse=True)
def _no_asyncio_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail a test whose broker loop logged an error (an exception in a callback or task)."""
    yield
    errors = [r.getMessage() for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]
    assert errors == []


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running


def broker_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == THREAD_NAME]


# --- what works -------------------------------------------------------------------------------------


def test_qos1_round_trip(broker: EmbeddedBroker) -> None:
    with MessageCollector(broker.url, "gpu-twin/v1/c1/+/telemetry") as subscriber:
        publish_all(broker.url, [("gpu-twin/v1/c1/n01/telemetry", b'{"schema":1}')])
        got = subscriber.wait_for(1, timeout_s=2)
    assert [(m.topic, m.payload, m.qos) for m in got] == [
        ("gpu-twin/v1/c1/n01/telemetry", b'{"schema":1}', 1)
    ]


def test_retained_message_reaches_a_late_subscriber(broker: EmbeddedBroker) -> None:
    publish_all(broker.url, [("gpu-twin/v1/c1/n01/status", b"online")], retain=True)
    with MessageCollector(broker.url, "gpu-twin/v1/c1/+/status") as late:
        got = late.wait_for(1, timeout_s=2)
    assert [(m.payload, m.retain) for m in got] == [(b"online", True)]


def test_last_will_is_published_when_the_socket_is_killed(broker: EmbeddedBroker) -> None:
    topic = "gpu-twin/v1/c1/n01/status"
    with MessageCollector(broker.url, topic) as watcher:
        node = make_client("n01")
        node.will_set(topic, b"offline", qos=1, retain=True)
        assert not connect(node, broker.url).is_failure
        node.loop_stop()  # no DISCONNECT will ever be sent
        sock = node.socket()
        assert isinstance(sock, socket.socket)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = TCP RST
        sock.close()
        got = watcher.wait_for(1, timeout_s=2)
    assert [(m.topic, m.payload) for m in got] == [(topic, b"offline")]
    with MessageCollector(broker.url, topic) as late:  # the will was retained, too
        # (a set: amqtt may replay it twice, see test_new_client_gets_retained_messages_for_other_…)
        assert {(m.payload, m.retain) for m in late.wait_for(1, timeout_s=2)} == {(b"offline", True)}


def test_persistent_session_gets_messages_queued_while_away(broker: EmbeddedBroker) -> None:
    durable = MessageCollector(broker.url, "gpu-twin/v1/#", client_id="twin-service", clean_session=False)
    durable.start()
    durable.stop()
    publish_all(broker.url, numbered("gpu-twin/v1/c1/n01/telemetry", 200))
    back = make_client("twin-service", clean_session=False)
    payloads: list[bytes] = []
    retain_flags: set[bool] = set()
    done = threading.Event()

    def on_message(_client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        payloads.append(bytes(message.payload))
        retain_flags.add(bool(message.retain))
        if len(payloads) == 200:
            done.set()

    back.on_message = on_message
    assert not connect(back, broker.url).is_failure  # no SUBSCRIBE: the session remembers it
    done.wait(3)
    close(back)
    assert payloads == [str(i).encode() for i in range(200)]  # all of them, in order
    # amqtt quirk (documented): messages queued for an offline session arrive with the RETAIN flag set.
    assert retain_flags == {True}


def test_subscriber_that_acks_after_its_batch_commit_is_not_throttled(broker: EmbeddedBroker) -> None:
    # The twin acknowledges after committing a batch; amqtt has no in-flight window (Mosquitto's
    # max_inflight_messages), so a subscriber holding 1,000 unacknowledged messages still gets them all.
    with MessageCollector(broker.url, "gpu-twin/v1/#", client_id="twin-service", manual_ack=True) as twin:
        publish_all(broker.url, numbered("gpu-twin/v1/c1/n01/telemetry", 1_000))
        got = twin.wait_for(1_000, timeout_s=3)
    assert len(got) == 1_000


# --- limits we document -----------------------------------------------------------------------------


def test_delivery_uses_the_subscription_qos_even_above_the_publish_qos(broker: EmbeddedBroker) -> None:
    # amqtt quirk (documented): MQTT 3.1.1 §3.8.4 says min(publish QoS, subscription QoS).
    with (
        MessageCollector(broker.url, "up/#", qos=1) as qos1,
        MessageCollector(broker.url, "down/#", qos=0) as qos0,
    ):
        publish_all(broker.url, [("up/t", b"x")], qos=0)
        publish_all(broker.url, [("down/t", b"x")], qos=1)
        assert [m.qos for m in qos1.wait_for(1, timeout_s=2)] == [1]
        assert [m.qos for m in qos0.wait_for(1, timeout_s=2)] == [0]


def test_mqtt5_is_refused_as_unsupported_protocol_version(broker: EmbeddedBroker) -> None:
    client = make_client("v5-client", protocol=MQTTProtocolVersion.MQTTv5)
    reason = connect(client, broker.url)
    client.loop_stop()
    assert reason.getName() == "Unsupported protocol version"
    assert broker.supports_mqtt5 is (not reason.is_failure)


def test_mqtt31_connect_gets_no_connack(broker: EmbeddedBroker) -> None:
    client = make_client("v31-client", protocol=MQTTProtocolVersion.MQTTv31)
    with pytest.raises(TimeoutError, match="no CONNACK"):
        connect(client, broker.url, timeout_s=0.5)


def test_shared_subscription_receives_nothing(broker: EmbeddedBroker) -> None:
    topic = "gpu-twin/v1/c1/n01/telemetry"
    with (
        MessageCollector(broker.url, f"$share/twin/{topic}") as shared,
        MessageCollector(broker.url, topic) as control,
    ):
        publish_all(broker.url, [(topic, b"x")])
        assert len(control.wait_for(1, timeout_s=2)) == 1
        received = shared.wait_quiet(0.2, timeout_s=0.5)
    assert received == []
    assert EmbeddedBroker.supports_shared_subscriptions is bool(received)


def test_new_client_gets_retained_messages_for_other_clients_subscriptions(broker: EmbeddedBroker) -> None:
    # amqtt quirk (documented): on connect, amqtt replays retained messages matching *any* client's
    # subscription, so a client that subscribed to nothing still receives them; filter by topic.
    publish_all(broker.url, [("gpu-twin/v1/c1/n01/status", b"online")], retain=True)
    with (
        MessageCollector(broker.url, "gpu-twin/v1/+/+/status"),
        MessageCollector(broker.url, "unrelated/topic") as bystander,
    ):
        got = bystander.wait_for(1, timeout_s=2)
    assert [m.topic for m in got] == ["gpu-twin/v1/c1/n01/status"]


# --- lifecycle --------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("error")
def test_stop_leaves_no_thread_and_closes_the_port() -> None:
    broker = EmbeddedBroker()
    broker.start()
    port = broker.port
    assert broker.running and len(broker_threads()) == 1
    broker.stop()
    assert broker_threads() == []
    assert not broker.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


@pytest.mark.filterwarnings("error")
def test_stop_with_clients_still_connected_is_clean() -> None:
    with EmbeddedBroker() as broker:
        subscriber = MessageCollector(broker.url, "a/#").start()
        publisher = make_client("pub")
        assert not connect(publisher, broker.url).is_failure
        publisher.publish("a/b", b"x", qos=1).wait_for_publish(2)
        subscriber.wait_for(1, timeout_s=2)
        started = time.monotonic()
    assert time.monotonic() - started < 2
    subscriber.client.loop_stop()
    publisher.loop_stop()
    assert broker_threads() == []  # and _no_asyncio_errors checks the loop logged nothing


def test_url_and_port_follow_the_lifecycle() -> None:
    broker = EmbeddedBroker()
    with pytest.raises(EmbeddedBrokerError, match="not running"):
        _ = broker.port
    with broker:
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
        assert broker.port > 0
        with pytest.raises(EmbeddedBrokerError, match="already started"):
            broker.start()
    broker.stop()  # idempotent


def test_ipv6_loopback_url_uses_brackets() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        with EmbeddedBroker(host="::1") as broker:
            assert broker.url == f"mqtt://[::1]:{broker.port}"
            assert not connect(make_client(), broker.url).is_failure
    except EmbeddedBrokerError as error:  # a container without an IPv6 loopback
        pytest.skip(f"cannot bind ::1 here: {error}")


def test_port_in_use_is_a_clear_error(broker: EmbeddedBroker) -> None:
    with pytest.raises(EmbeddedBrokerError, match=f"127.0.0.1:{broker.port}"):
        EmbeddedBroker(port=broker.port).start()
    assert len(broker_threads()) == 1  # the failed one left no thread behind


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "localhost", "::"])
def test_only_loopback_addresses_are_accepted(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        EmbeddedBroker(host=host)


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"port": -1}, "port(=-1)"),
        ({"port": 70_000}, "port(=70000)"),
        ({"session_expiry_s": 0}, "session_expiry_s"),
    ],
)
def test_bad_arguments_name_the_value(kwargs: dict[str, int], names: str) -> None:
    with pytest.raises(ValueError) as caught:
        EmbeddedBroker(**kwargs)  # type: ignore[arg-type]
    assert names in str(caught.value)


@pytest.mark.parametrize(
    ("address", "admitted"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("10.0.0.7", False),
        ("fe80::1", False),
        (None, False),
        ("not-an-address", False),
    ],
)
def test_loopback_auth_admits_only_loopback_peers(address: str | None, admitted: bool) -> None:
    context = BaseContext()
    context.config = LoopbackAuthPlugin.Config()
    plugin = LoopbackAuthPlugin(context)
    session = SimpleNamespace(remote_address=address, is_anonymous=False)
    assert asyncio.run(plugin.authenticate(session=session)) is admitted
    assert session.is_anonymous is False  # what keeps persistent sessions alive in amqtt
