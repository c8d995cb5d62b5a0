"""Publish node telemetry over MQTT: one connection per node, QoS 1, last will, reconnect, bounded buffer.

Each node gets its own MQTT connection because a last will belongs to a connection: when a node's
connection drops without a DISCONNECT (host crash, network cut), the broker publishes that node's retained
`offline` status (DESIGN §4). On (re)connect the node publishes a retained `online`.

All connections are driven from one thread through paho's external-loop API (`loop_read`, `loop_write`,
`loop_misc`): paho's own network thread costs a thread wake-up per message, which makes publishing about
three times slower (6.5k vs 20k QoS 1 messages/s measured on the 2-core dev machine, see
benchmarks/RESULTS.md). Sockets are `sensors.mqtt_io.BufferedSocket`s: what is published between two
polls leaves in one `send` per connection and PUBACKs are read in 256 KiB chunks. The caller calls
`poll()` between ticks.

No data is lost during a short broker outage: paho keeps every QoS 1 message until the broker acknowledges
it and re-sends unacknowledged ones after reconnecting; `buffer_limit` bounds that queue per node and a
publish beyond it is refused and counted as dropped (never raised).
"""

from __future__ import annotations

import logging
import random
import select
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from sensors.contract import STATUS_OFFLINE, STATUS_ONLINE, JobEvent, NodeSample, Topics
from sensors.mqtt_io import BufferedClient
from sensors.mqtt_url import BrokerUrl

log = logging.getLogger(__name__)

QOS_AT_LEAST_ONCE: Final = 1
# Seconds between keep-alive pings; the broker declares a node gone (and sends its will) after 1.5×.
KEEPALIVE_S: Final = 30
# Unacknowledged QoS 1 messages in flight per connection: enough to fill the pipe on a LAN at 100k
# samples/s (Mosquitto's own default is 20, which throttles a fast publisher to round-trip speed).
DEFAULT_MAX_INFLIGHT: Final = 1_000
# Messages kept per node while the broker is unreachable: one day of 1 Hz telemetry (≈2.3 KiB each,
# ≈200 MB at worst per node) — a "short outage" of minutes uses a tiny part of it.
DEFAULT_BUFFER_LIMIT: Final = 86_400
# Reconnect backoff: exponential from 0.5 s, capped at 30 s, with ±20 % jitter so a fleet restarting
# after a broker outage does not reconnect in lock step (AWS Architecture Blog, "Exponential Backoff
# And Jitter", 2015).
RECONNECT_MIN_S: Final = 0.5
RECONNECT_MAX_S: Final = 30.0
RECONNECT_JITTER: Final = 0.2
# Client that publishes job events (it has no last will: a job's end is an explicit event).
EVENTS_CONNECTION: Final = "_events"
# PUBACKs handled per connection per poll (a connection with 1,000 in flight gets them all in one poll).
READ_PACKETS_PER_POLL: Final = 10_000


@dataclass(slots=True)
class PublisherStats:
    """Counters since start: messages handed to the broker, acknowledged, refused (buffer full)."""

    published: int = 0
    acked: int = 0
    dropped: int = 0
    reconnects: int = 0
    connect_failures: int = 0

    @property
    def unacked(self) -> int:
        return self.published - self.acked


@dataclass(frozen=True, slots=True)
class PublisherSettings:
    """How the publisher talks to the broker."""

    url: BrokerUrl
    topics: Topics
    client_id_prefix: str = "twin-sensor"
    buffer_limit: int = DEFAULT_BUFFER_LIMIT
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    reconnect_min_s: float = RECONNECT_MIN_S
    reconnect_max_s: float = RECONNECT_MAX_S
    keepalive_s: int = KEEPALIVE_S

    def __post_init__(self) -> None:
        if self.buffer_limit < 1:
            raise ValueError(f"buffer_limit(={self.buffer_limit}) must be ≥ 1.")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s(={self.reconnect_min_s}) must be > 0 and "
                f"≤ reconnect_max_s(={self.reconnect_max_s})."
            )


class _Connection:
    """One paho client (one node, or the job-events connection) and its reconnect schedule."""

    def __init__(
        self,
        name: str,
        settings: PublisherSettings,
        stats: PublisherStats,
        will_topic: str | None,
        rng: random.Random,
    ) -> None:
        self.name = name
        self.settings = settings
        self.stats = stats
        self.will_topic = will_topic
        self.telemetry_topic: str | None = None
        self.rng = rng
        self.connected = False
        self.closing = False
        self.next_attempt_s = 0.0
        self.backoff_s = settings.reconnect_min_s
        self.ever_connected = False
        client = BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=f"{settings.client_id_prefix}-{settings.topics.cluster}-{name}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        url = settings.url
        if url.username is not None:
            client.username_pw_set(url.username, url.password)
        if url.tls:
            client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        if will_topic is not None:
            client.will_set(will_topic, STATUS_OFFLINE, qos=QOS_AT_LEAST_ONCE, retain=True)
        client.max_inflight_messages_set(settings.max_inflight)
        client.max_queued_messages_set(settings.buffer_limit)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.connect_async(url.host, url.port, keepalive=settings.keepalive_s)
        self.client = client

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: mqtt.ConnectFlags, reason: object, _p: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("broker refused %s: %s", self.name, reason)
            return
        self.connected = True
        self.backoff_s = self.settings.reconnect_min_s
        if self.ever_connected:
            self.stats.reconnects += 1
        self.ever_connected = True
        if self.will_topic is not None:
            self.publish(self.will_topic, STATUS_ONLINE.encode(), retain=True)

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        if self.connected and not self.closing:
            log.warning("connection %s lost (%s); buffering and reconnecting", self.name, reason)
        self.connected = False

    def _on_publish(self, _c: mqtt.Client, _u: object, _mid: int, _rc: object, _p: object) -> None:
        self.stats.acked += 1

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        info = self.client.publish(topic, payload, qos=QOS_AT_LEAST_ONCE, retain=retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            self.stats.dropped += 1
            return False
        self.stats.published += 1
        return True

    def maybe_connect(self, now_s: float) -> None:
        if self.client.socket() is not None or now_s < self.next_attempt_s:
            return
        try:
            self.client.reconnect()
        except OSError as exc:
            self.stats.connect_failures += 1
            jitter = 1.0 + self.rng.uniform(-RECONNECT_JITTER, RECONNECT_JITTER)
            self.next_attempt_s = now_s + self.backoff_s * jitter
            log.info("connect %s failed (%s); next try in %.1f s", self.name, exc, self.backoff_s)
            self.backoff_s = min(self.backoff_s * 2.0, self.settings.reconnect_max_s)

    def abort(self) -> None:
        """Drop the TCP connection without DISCONNECT, as a crashed host would: the broker sends the will."""
        sock = self.client.buffered_socket()
        if sock is not None:
            sock.abort()
        self.connected = False


class PublisherHub:
    """Publishes `NodeSample`s and `JobEvent`s for any number of nodes from one thread."""

    def __init__(
        self, settings: PublisherSettings, *, clock: Callable[[], float] = time.monotonic, seed: int = 0
    ) -> None:
        self.settings = settings
        self.stats = PublisherStats()
        self._clock = clock
        self._rng = random.Random(seed)
        self._connections: dict[str, _Connection] = {}
        self._silent: set[str] = set()

    def _connection(self, name: str, will_topic: str | None) -> _Connection:
        connection = self._connections.get(name)
        if connection is None:
            connection = _Connection(name, self.settings, self.stats, will_topic, self._rng)
            self._connections[name] = connection
            connection.maybe_connect(self._clock())
        return connection

    def connect(self, nodes: Iterable[str], timeout_s: float = 10.0) -> bool:
        """Open the connections of these nodes now (else on their first sample); True when all are up."""
        wanted = [self._connection(node, self.settings.topics.status(node)) for node in nodes]
        deadline = self._clock() + timeout_s
        while not all(c.connected for c in wanted) and self._clock() < deadline:
            self.poll(0.05)
        return all(c.connected for c in wanted)

    def publish_sample(self, sample: NodeSample) -> bool:
        """Queue one node's telemetry (QoS 1). False when the node's buffer is full (counted as dropped)."""
        if sample.node in self._silent:
            return False
        connection = self._connections.get(sample.node)
        if connection is None:
            connection = self._connection(sample.node, self.settings.topics.status(sample.node))
        if connection.telemetry_topic is None:  # validated and built once per node
            connection.telemetry_topic = self.settings.topics.telemetry(sample.node)
        return connection.publish(connection.telemetry_topic, orjson.dumps(sample.to_payload()))

    def publish_event(self, event: JobEvent) -> bool:
        """Queue one job event (QoS 1) on the events connection."""
        connection = self._connection(EVENTS_CONNECTION, None)
        return connection.publish(
            self.settings.topics.job_events(event.job_id), orjson.dumps(event.to_payload())
        )

    def go_silent(self, nodes: Iterable[str]) -> None:
        """Stop publishing for these nodes and cut their connections abruptly (their wills fire)."""
        for node in nodes:
            if node in self._silent:
                continue
            self._silent.add(node)
            connection = self._connections.get(node)
            if connection is not None:
                connection.abort()

    def poll(self, timeout_s: float = 0.0) -> None:
        """Do network I/O for every connection: reconnect, read acks, write pending data, keep-alives."""
        now = self._clock()
        readers: list[tuple[Any, _Connection]] = []
        writers: list[tuple[Any, _Connection]] = []
        for name, connection in self._connections.items():
            if name in self._silent:
                continue
            connection.maybe_connect(now)
            client = connection.client
            sock = client.socket()
            if sock is None:
                continue
            client.flush_socket()  # everything published since the last poll, in one send
            readers.append((sock, connection))
            if client.wants_write():
                writers.append((sock, connection))
        if not readers:
            if timeout_s > 0:
                time.sleep(timeout_s)
            return
        by_sock = {id(sock): connection for sock, connection in readers}
        try:
            readable, writable, _ = select.select(
                [s for s, _ in readers], [s for s, _ in writers], [], max(timeout_s, 0.0)
            )
        except (OSError, ValueError):  # a socket closed under us: the next poll reconnects
            readable, writable = [], []
        for sock in writable:
            by_sock[id(sock)].client.flush_socket()
        for sock in readable:
            by_sock[id(sock)].client.read_available(READ_PACKETS_PER_POLL)
        for _, connection in readers:
            connection.client.loop_misc()

    def pending(self) -> int:
        """QoS 1 messages not yet acknowledged by the broker (in flight or buffered)."""
        return self.stats.unacked

    def flush(self, timeout_s: float) -> bool:
        """Poll until every published message is acknowledged or `timeout_s` passes; True when all were."""
        deadline = self._clock() + timeout_s
        while self.pending() > 0 and self._clock() < deadline:
            self.poll(0.05)
        return self.pending() == 0

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush, publish retained `offline` for every node (a clean exit sends no will), disconnect."""
        for name, connection in self._connections.items():
            if connection.will_topic is not None and name not in self._silent:
                connection.publish(connection.will_topic, STATUS_OFFLINE.encode(), retain=True)
        self.flush(timeout_s)
        for connection in self._connections.values():
            connection.closing = True
            connection.client.disconnect()
        self._connections.clear()
