"""A `BufferedClient` subscriber on the real Mosquitto: every message, far fewer syscalls than packets."""

from __future__ import annotations

import select
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sensors.mqtt_io import BufferedClient
from sensors.mqtt_url import parse_broker_url
from tests.mqtt_fixtures import publish_all


def test_a_buffered_subscriber_receives_every_message_with_few_reads(mosquitto_url: str) -> None:
    url = parse_broker_url(mosquitto_url)
    topic = "gpu-twin-test/mqtt-io/buffered"
    received: list[bytes] = []
    client = BufferedClient(CallbackAPIVersion.VERSION2, client_id="buffered-sub", protocol=mqtt.MQTTv311)
    client.on_message = lambda _c, _u, m: received.append(bytes(m.payload))
    client.connect(url.host, url.port)
    client.subscribe(topic, qos=1)
    sock = client.buffered_socket()
    assert sock is not None
    for _ in range(50):  # CONNACK + SUBACK
        client.flush_socket()
        client.read_available(100)
    publish_all(mosquitto_url, [(topic, f"m{i}".encode()) for i in range(900)])
    deadline = time.monotonic() + 10
    while len(received) < 900 and time.monotonic() < deadline:
        select.select([sock], [], [], 0.05)
        client.read_available(10_000)
        client.flush_socket()  # paho's automatic PUBACKs, coalesced
    client.disconnect()
    assert received == [f"m{i}".encode() for i in range(900)]
    assert sock.recv_calls < 900  # at least several packets per syscall (paho alone: 3 per packet)
    assert sock.send_calls < 900
