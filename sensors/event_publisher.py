"""Publish a training job's events (DESIGN §4: `{root}/{cluster}/jobs/{job_id}/events`, QoS 1) over MQTT.

`EventSink` is the seam a `JobReporter` talks to; `MqttEventPublisher` is its MQTT implementation. It runs
paho-mqtt's own network thread (`loop_start`) because a training loop never calls back into us between
steps: the thread connects (`connect_async`, so a broker that is down when the job starts is not fatal),
reconnects with exponential backoff, and re-sends unacknowledged QoS 1 messages after a reconnect.

No event is lost in a broker outage shorter than the buffer: paho keeps every QoS 1 message until the
broker acknowledges it; `buffer_limit` bounds that queue (`max_queued_messages_set`), and a publish beyond
it is refused, counted as dropped and returns False (never raises) so a full buffer never stops training.

MQTT 3.1.1 is used (not 5) so the embedded amqtt broker of the default demo accepts the connection too.
"""

from __future__ import annotations

import logging
import ssl
import threading
import uuid
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from sensors.contract import DEFAULT_TOPIC_ROOT, JobEvent, Topics
from sensors.errors import ContractError, PublishError
from sensors.mqtt_url import BrokerUrl

__all__ = [
    "DEFAULT_BUFFER_LIMIT",
    "RECONNECT_MAX_S",
    "RECONNECT_MIN_S",
    "EventPublisherStats",
    "EventSink",
    "MqttEventPublisher",
]

log = logging.getLogger(__name__)

QOS_AT_LEAST_ONCE: Final = 1
# Seconds between keep-alive pings; the broker drops a silent connection after 1.5× this.
KEEPALIVE_S: Final = 30
# Events kept while the broker is unreachable: at one step event per second, close to three hours.
DEFAULT_BUFFER_LIMIT: Final = 10_000
# Unacknowledged messages in flight at once: enough to drain a full buffer after an outage in a few
# hundred round trips (paho's default of 20 would need 500).
MAX_INFLIGHT: Final = 100
# Reconnect backoff (seconds): paho doubles the wait after each failed attempt, from min up to max.
RECONNECT_MIN_S: Final = 0.5
RECONNECT_MAX_S: Final = 30.0
CLIENT_ID_PREFIX: Final = "twin-job"
# Hex digits of a random UUID in a generated client id ("twin-job-" + 12 = 21 characters, under the
# 23 that MQTT 3.1.1 §3.1.3.1 guarantees every broker accepts).
CLIENT_ID_RANDOM_HEX: Final = 12


@runtime_checkable
class EventSink(Protocol):
    """Where a `JobReporter` sends its events."""

    def publish_event(self, event: JobEvent) -> bool:
        """Queue one event for delivery; False when it was refused (buffer full) — never raises for that."""
        ...

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued, waiting at most `timeout_s` seconds, then release the connection."""
        ...


@dataclass(frozen=True, slots=True)
class EventPublisherStats:
    """Counters since construction (a snapshot): events accepted into the buffer, acknowledged by the
    broker, refused because the buffer was full, and successful reconnects after a lost connection."""

    published: int
    acked: int
    dropped: int
    reconnects: int

    @property
    def unacked(self) -> int:
        """Events accepted but not yet acknowledged (buffered or in flight)."""
        return max(self.published - self.acked, 0)


class MqttEventPublisher:
    """Publishes `JobEvent`s of one cluster to an MQTT broker with QoS 1 from paho's network thread.

    Constructing does no I/O (DESIGN §1); the network thread starts with `start()` or the first
    `publish_event`. `close()` waits for outstanding acknowledgements, disconnects and stops the thread.
    Thread-safe: `publish_event` may be called from any thread.
    """

    def __init__(
        self,
        url: BrokerUrl,
        cluster: str,
        client_id: str | None = None,
        root: str = DEFAULT_TOPIC_ROOT,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        reconnect_min_s: float = RECONNECT_MIN_S,
        reconnect_max_s: float = RECONNECT_MAX_S,
    ) -> None:
        if isinstance(buffer_limit, bool) or not isinstance(buffer_limit, int) or buffer_limit < 1:
            raise ValueError(f"buffer_limit(={buffer_limit!r}) must be an integer ≥ 1.")
        if not 0 < reconnect_min_s <= reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s(={reconnect_min_s}) must be > 0 and ≤ reconnect_max_s(={reconnect_max_s})."
            )
        if client_id is not None and not client_id:
            raise ValueError("client_id(='') must be non-empty when given (omit it for a generated one).")
        self.url = url
        self.topics = Topics(cluster, root)
        self.client_id = client_id or f"{CLIENT_ID_PREFIX}-{uuid.uuid4().hex[:CLIENT_ID_RANDOM_HEX]}"
        self.buffer_limit = buffer_limit
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self._cond = threading.Condition()
        self._published = 0
        self._acked = 0
        self._dropped = 0
        self._reconnects = 0
        self._ever_connected = False
        self._started = False
        self._closed = False
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if url.username is not None:
            client.username_pw_set(url.username, url.password)
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.max_queued_messages_set(buffer_limit)
        # paho annotates the delays as int but sleeps on them as floats (`_reconnect_wait`).
        client.reconnect_delay_set(reconnect_min_s, reconnect_max_s)  # type: ignore[arg-type]
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the network thread; it connects (and keeps reconnecting) in the background. Idempotent."""
        with self._cond:
            if self._closed:
                raise PublishError(f"publisher for {self.url.redacted()} is closed; it cannot start again.")
            if self._started:
                return
            self._started = True
        if self.url.tls:
            self._client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        self._client.connect_async(self.url.host, self.url.port, keepalive=KEEPALIVE_S)
        self._client.loop_start()

    @property
    def is_connected(self) -> bool:
        """True while the broker has accepted the connection (CONNACK received, not yet lost)."""
        return self._client.is_connected()

    @property
    def stats(self) -> EventPublisherStats:
        with self._cond:
            return EventPublisherStats(self._published, self._acked, self._dropped, self._reconnects)

    def flush(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` seconds until every accepted event is acknowledged; True when all are."""
        with self._cond:
            return self._cond.wait_for(lambda: self._acked >= self._published, timeout=max(timeout_s, 0.0))

    def close(self, timeout_s: float = 5.0) -> None:
        """Wait up to `timeout_s` seconds for outstanding acknowledgements, then disconnect and stop the
        network thread. Events still unacknowledged then are abandoned (logged). Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            started = self._started
        if not started:
            return
        if not self.flush(timeout_s):
            log.warning(
                "closing the job-event publisher to %s with %d event(s) unacknowledged",
                self.url.redacted(),
                self.stats.unacked,
            )
        self._client.disconnect()
        self._client.loop_stop()

    # -- publishing --------------------------------------------------------------------------------

    def publish_event(self, event: JobEvent) -> bool:
        """Queue `event` (QoS 1) on its job's topic. False when the buffer is full (counted as dropped).

        Raises `ContractError` when the event's model/layout is not JSON-serialisable, `PublishError`
        after `close()`.
        """
        if self._closed:
            raise PublishError(f"publisher for {self.url.redacted()} is closed; event {event.event} refused.")
        topic = self.topics.job_events(event.job_id)
        try:
            payload = orjson.dumps(event.to_payload())
        except orjson.JSONEncodeError as exc:
            raise ContractError(
                f"event(={event.event}) of job_id(={event.job_id!r}) is not JSON-serialisable: {exc}."
            ) from None
        self.start()
        # Not under self._cond: paho calls on_publish holding its own message lock, which publish() takes.
        info = self._client.publish(topic, payload, qos=QOS_AT_LEAST_ONCE)
        with self._cond:
            if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                self._dropped += 1
                dropped = self._dropped
            else:
                # SUCCESS, or NO_CONN: paho keeps the message and sends it once connected.
                self._published += 1
                return True
        log.warning(
            "job-event buffer full (%d events); dropped %s of job %s (%d dropped so far)",
            self.buffer_limit,
            event.event,
            event.job_id,
            dropped,
        )
        return False

    # -- paho callbacks (network thread) -----------------------------------------------------------

    def _on_connect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _properties: object,
    ) -> None:
        if reason.is_failure:
            log.warning("broker %s refused the job-event connection: %s", self.url.redacted(), reason)
            return
        with self._cond:
            if self._ever_connected:
                self._reconnects += 1
            self._ever_connected = True
        log.info("job-event publisher connected to %s", self.url.redacted())

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: object) -> None:
        log.info("cannot reach broker %s yet; retrying with backoff", self.url.redacted())

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _properties: object,
    ) -> None:
        if not self._closed:
            log.warning("job-event connection to %s lost (%s); buffering", self.url.redacted(), reason)

    def _on_publish(
        self, _client: mqtt.Client, _userdata: object, _mid: int, _reason: ReasonCode, _props: object
    ) -> None:
        with self._cond:
            self._acked += 1
            self._cond.notify_all()
