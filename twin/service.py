"""`twin serve`: subscribe, decode and validate, fold into the live `TwinState`, persist in batches.

No data is lost, none is duplicated:
- The MQTT session is persistent (MQTT 5 session expiry, or a 3.1.1 `clean_session=False` session) with a
  fixed client id, so QoS 1 messages that arrive while the service is down wait at the broker.
- Acknowledgements are manual: a message is acknowledged only after the batch holding it is committed.
  A crash (`kill -9`) between receipt and commit leaves it unacknowledged and the broker redelivers it.
- Writes are idempotent (telemetry is keyed by cluster, node, GPU and timestamp), so a redelivery of a
  message already committed adds no row.
- While the database is unreachable the writer retries the same batch with backoff; nothing is
  acknowledged meanwhile, and the broker's in-flight window (MQTT 5 Receive Maximum, Mosquitto's
  `max_inflight_messages`) bounds how much the service holds in memory.

One thread receives, decodes and folds (the live state stays current even while the database is down);
a writer thread commits batches. paho's socket is touched by the receiving thread only.
"""

from __future__ import annotations

import logging
import queue
import select
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sensors.contract import DEFAULT_TOPIC_ROOT, TopicKind, Topics
from sensors.mqtt_io import BufferedClient
from sensors.mqtt_url import BrokerUrl
from twin.decode import Decoder, DecoderSettings, RejectReason, excerpt
from twin.quarantine import is_transient, write_isolating
from twin.records import IngestBatch, RejectRecord
from twin.state import TwinState
from twin.store.repository import Store, WriteResult

log = logging.getLogger(__name__)

QOS_AT_LEAST_ONCE: Final = 1
# Commit a batch at this many messages or this age, whichever comes first: ~2,000 8-GPU messages are
# 16,000 rows, large enough to amortise a commit, small enough to keep end-to-end latency ≈ 0.25 s.
BATCH_MAX_MESSAGES: Final = 2_000
BATCH_MAX_DELAY_S: Final = 0.25
# Unacknowledged messages the broker may have in flight to us (MQTT 5 Receive Maximum). Must exceed a
# batch several times over, since we acknowledge only after commit.
RECEIVE_MAXIMUM: Final = 20_000
# How long the broker keeps our session (and queues QoS 1 messages) while we are away: one day.
SESSION_EXPIRY_S: Final = 86_400
KEEPALIVE_S: Final = 30
# Database retry backoff while it is unreachable.
WRITE_RETRY_MIN_S: Final = 0.2
WRITE_RETRY_MAX_S: Final = 5.0
# On SIGTERM: how long to wait for the last batches to commit before exiting without acknowledging
# them (the broker then redelivers them to the next instance — slower, never lossy).
SHUTDOWN_FLUSH_S: Final = 30.0
# End-to-end latencies (sample timestamp → commit) kept for percentiles.
LATENCY_SAMPLES: Final = 200_000
# Packets handled per loop step before the loop cuts batches, checks staleness and releases acks.
MAX_PACKETS_PER_STEP: Final = 5_000
SHARED_SUBSCRIPTION_PREFIX: Final = "$share"


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """Everything `twin serve` needs; built from flags and `TWIN_*` variables at the edge (the CLI)."""

    broker: BrokerUrl
    cluster: str | None = None  # None: every cluster under the topic root
    topic_root: str = DEFAULT_TOPIC_ROOT
    shared_group: str | None = None  # subscribe as $share/<group>/… so instances split the load
    client_id: str = "twin-serve"
    mqtt_version: int = 5  # 5, or 4 for MQTT 3.1.1 (brokers without MQTT 5, e.g. the embedded amqtt)
    batch_max_messages: int = BATCH_MAX_MESSAGES
    batch_max_delay_s: float = BATCH_MAX_DELAY_S
    telemetry_interval_s: float = 1.0  # expected publishing interval: seeds stale detection
    receive_maximum: int = RECEIVE_MAXIMUM
    session_expiry_s: int = SESSION_EXPIRY_S
    decoder: DecoderSettings = field(default_factory=DecoderSettings)

    def __post_init__(self) -> None:
        if self.mqtt_version not in (4, 5):
            raise ValueError(f"mqtt_version(={self.mqtt_version}) must be 5 or 4 (MQTT 3.1.1).")
        if self.batch_max_messages < 1:
            raise ValueError(f"batch_max_messages(={self.batch_max_messages}) must be ≥ 1.")
        if not self.batch_max_delay_s > 0:
            raise ValueError(f"batch_max_delay_s(={self.batch_max_delay_s}) must be > 0.")

    def subscriptions(self) -> tuple[str, ...]:
        topics = Topics(self.cluster or "any", self.topic_root)
        filters = topics.subscriptions(all_clusters=self.cluster is None)
        if self.shared_group:
            return tuple(f"{SHARED_SUBSCRIPTION_PREFIX}/{self.shared_group}/{f}" for f in filters)
        return filters


@dataclass(slots=True)
class ServiceStats:
    """Counters since start (the benchmark and `twin serve`'s exit summary read them)."""

    received: int = 0
    telemetry_messages: int = 0
    telemetry_rows: int = 0
    statuses: int = 0
    job_events: int = 0
    rejects: Counter[str] = field(default_factory=Counter)
    batches_committed: int = 0
    rows_inserted: int = 0
    rows_ignored_in_store: int = 0
    write_errors: int = 0
    store_refused: int = 0  # records the store refused for their content (stored as rejects)
    acked: int = 0
    stale_marked: int = 0
    connects: int = 0
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))

    def to_json(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_s)

        def pct(q: float) -> float | None:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None

        return {
            "received": self.received,
            "telemetry_messages": self.telemetry_messages,
            "telemetry_rows": self.telemetry_rows,
            "statuses": self.statuses,
            "job_events": self.job_events,
            "rejects": dict(self.rejects),
            "batches_committed": self.batches_committed,
            "rows_inserted": self.rows_inserted,
            "rows_ignored_in_store": self.rows_ignored_in_store,
            "write_errors": self.write_errors,
            "store_refused": self.store_refused,
            "acked": self.acked,
            "stale_marked": self.stale_marked,
            "connects": self.connects,
            "latency_p50_s": pct(0.50),
            "latency_p99_s": pct(0.99),
        }


@dataclass(slots=True)
class _Pending:
    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int


@dataclass(slots=True)
class _WriteJob:
    batch: IngestBatch
    acks: list[tuple[int, int, int]]  # (mid, qos, connection generation)
    sample_ts: list[float]  # telemetry message timestamps, for end-to-end latency
    stale: list[tuple[str, str]]


class IngestService:
    """The ingest loop. `run(stop)` blocks until `stop` is set, then flushes and returns."""

    def __init__(
        self,
        settings: ServiceSettings,
        store: Store,
        state: TwinState | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.state = state or TwinState(settings.telemetry_interval_s)
        # Samples are folded once per batch: a node cannot look fresher than the batch delay.
        self.state.min_interval_s = max(self.state.min_interval_s, settings.batch_max_delay_s)
        self.stats = ServiceStats()
        self.decoder = Decoder(settings.decoder)
        self._clock = clock
        self._pending: list[_Pending] = []
        self._pending_since = 0.0
        self._generation = 0
        self._connected = threading.Event()
        self._writes: queue.Queue[_WriteJob | None] = queue.Queue()
        self._acks: queue.SimpleQueue[list[tuple[int, int, int]]] = queue.SimpleQueue()
        self._writer_stop = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="twin-writer", daemon=True)
        self._client = self._make_client()
        self._next_stale_check = 0.0
        self._closing = False  # set by shutdown(): the disconnect that follows is ours

    # --- MQTT -------------------------------------------------------------------------------------
    def _make_client(self) -> BufferedClient:
        s = self.settings
        if s.mqtt_version == 5:
            client = BufferedClient(
                CallbackAPIVersion.VERSION2, client_id=s.client_id, protocol=mqtt.MQTTv5, manual_ack=True
            )
        else:
            client = BufferedClient(
                CallbackAPIVersion.VERSION2,
                client_id=s.client_id,
                protocol=mqtt.MQTTv311,
                clean_session=False,
                manual_ack=True,
            )
        if s.broker.username is not None:
            client.username_pw_set(s.broker.username, s.broker.password)
        if s.broker.tls:
            client.tls_set()
        client.max_inflight_messages_set(1_000)
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _connect_properties(self) -> Properties | None:
        if self.settings.mqtt_version != 5:
            return None
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.settings.session_expiry_s
        properties.ReceiveMaximum = self.settings.receive_maximum
        return properties

    def _on_connect(self, client: mqtt.Client, _u: object, flags: Any, reason: Any, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            log.error("broker refused the connection: %s", reason)
            return
        self._generation += 1
        self.stats.connects += 1
        self._connected.set()
        log.info(
            "connected to %s (session present: %s)", self.settings.broker.redacted(), flags.session_present
        )
        for topic_filter in self.settings.subscriptions():
            client.subscribe(topic_filter, qos=QOS_AT_LEAST_ONCE)

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        self._connected.clear()
        if self._closing:
            log.info("disconnected from the broker (%s)", reason)
        else:
            log.warning("disconnected from the broker (%s); reconnecting with backoff", reason)

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        if not self._pending:
            self._pending_since = self._clock()
        try:
            topic = message.topic
        except UnicodeDecodeError:  # brokers refuse non-UTF-8 topics; never crash on one anyway
            topic = "<undecodable topic>"
        payload = bytes(message.payload)
        self._pending.append(_Pending(topic, payload, message.mid, message.qos, self._generation))

    # --- batches ----------------------------------------------------------------------------------
    def _cut_batch(self, now: float, stale: list[tuple[str, str]]) -> None:
        """Decode every pending message into one batch, fold it into the state, hand it to the writer."""
        pending, self._pending = self._pending, []
        batch = IngestBatch()
        sample_ts: list[float] = []
        stats = self.stats
        state = self.state
        for item in pending:
            before_rows = len(batch.telemetry)
            before_rejects = len(batch.rejects)
            topic = item.topic
            outcome = self.decoder.decode(topic, item.payload, now, batch)
            stats.received += 1
            if outcome.kind is TopicKind.TELEMETRY and outcome.ts is not None and outcome.node is not None:
                assert outcome.cluster is not None
                if state.is_duplicate(outcome.cluster, outcome.node, outcome.ts):
                    del batch.telemetry[before_rows:]
                    del batch.rejects[before_rejects:]
                    batch.rejects.append(
                        RejectRecord(
                            now,
                            topic,
                            str(RejectReason.DUPLICATE),
                            f"telemetry for node {outcome.node!r} at ts={outcome.ts} was already received.",
                            excerpt(item.payload),
                            "ts",
                        )
                    )
                elif outcome.rows:
                    state.fold_message(outcome.cluster, outcome.node, outcome.ts, now)
                    state.fold_telemetry(batch.telemetry[before_rows:])
                    stats.telemetry_messages += 1
                    stats.telemetry_rows += outcome.rows
                    sample_ts.append(outcome.ts)
        for record in batch.statuses:
            state.fold_status(record)
        for event in batch.job_events:
            state.fold_job_event(event)
        stats.statuses += len(batch.statuses)
        stats.job_events += len(batch.job_events)
        for reject in batch.rejects:
            stats.rejects[reject.reason] += 1
        acks = [(p.mid, p.qos, p.generation) for p in pending if p.qos > 0]
        self._writes.put(_WriteJob(batch, acks, sample_ts, stale))

    def _write_loop(self) -> None:
        """Writer thread: commit each batch (retrying while the database is down), then release its acks."""
        while True:
            job = self._writes.get()
            if job is None:
                return
            delay = WRITE_RETRY_MIN_S
            while True:
                try:
                    result = self._commit(job)
                    break
                except Exception as exc:  # transient only: `_commit` isolates records the store refuses
                    self.stats.write_errors += 1
                    log.warning("database write failed (%s); retrying in %.1f s", type(exc).__name__, delay)
                    if self._writer_stop.wait(delay):
                        log.error("shutting down with an uncommitted batch; the broker will redeliver it")
                        return
                    delay = min(delay * 2.0, WRITE_RETRY_MAX_S)
            committed = self._clock()
            self.stats.batches_committed += 1
            self.stats.rows_inserted += result.telemetry_inserted
            self.stats.rows_ignored_in_store += result.telemetry_duplicates
            self.stats.stale_marked += len(job.stale)
            self.stats.latencies_s.extend(committed - ts for ts in job.sample_ts)
            self._acks.put(job.acks)

    def _commit(self, job: _WriteJob) -> WriteResult:
        """Write one batch and mark its stale nodes. Raises only errors worth retrying (`is_transient`).

        When the store refuses the batch for its content, `write_isolating` stores every other record
        and turns the refused ones into `store_refused` rejects, so one bad record cannot stall ingestion.
        """
        try:
            result = self.store.write_batch(job.batch)
        except Exception as exc:
            if is_transient(exc):
                raise
            log.warning("the store refused a batch (%s: %s); isolating the records", type(exc).__name__, exc)
            isolated = write_isolating(
                self.store, job.batch, self._clock(), topic_root=self.settings.topic_root
            )
            result = isolated.written
            for reject in isolated.refused:
                self.stats.rejects[reject.reason] += 1
            self.stats.store_refused += len(isolated.refused)
        for cluster in sorted({c for c, _ in job.stale}):
            nodes = [n for c, n in job.stale if c == cluster]
            try:
                self.store.mark_stale(cluster, nodes, self._clock())
            except Exception as exc:
                if is_transient(exc):
                    raise
                log.error("could not mark nodes stale in the store (%s); the live state has them", exc)
        return result

    def _release_acks(self) -> None:
        client = self._client
        while True:
            try:
                acks = self._acks.get_nowait()
            except queue.Empty:
                return
            for mid, qos, generation in acks:
                # A mid belongs to one connection: after a reconnect the broker redelivers instead.
                if generation == self._generation and self._connected.is_set():
                    client.ack(mid, qos)
                    self.stats.acked += 1

    # --- the loop ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the writer and connect (paho retries with backoff if the broker is not up yet)."""
        self._writer.start()
        url = self.settings.broker
        self._client.connect_async(
            url.host,
            url.port,
            keepalive=KEEPALIVE_S,
            clean_start=False,
            properties=self._connect_properties(),
        )
        self._client.reconnect_delay_set(1, 30)

    def step(self, timeout_s: float = 0.02) -> None:
        """One iteration: network I/O, cut a batch when due, stale check, release committed acks.

        paho is driven through its external-loop API on a `BufferedClient`: one `select`, then every
        packet already received (one `recv` per 256 KiB), and all PUBACKs of the step in one `send`.
        """
        client = self._client
        if client.socket() is None:
            try:
                client.reconnect()
            except OSError as exc:
                log.warning("broker unreachable (%s)", exc)
                time.sleep(min(timeout_s * 10, 1.0))
                return
        self._network_io(timeout_s)
        now = self._clock()
        stale: list[tuple[str, str]] = []
        if now >= self._next_stale_check:
            stale = self.state.check_stale(now)
            self._next_stale_check = now + max(self.settings.telemetry_interval_s / 2, 0.05)
        due = self._pending and (
            len(self._pending) >= self.settings.batch_max_messages
            or now - self._pending_since >= self.settings.batch_max_delay_s
        )
        if due or stale:
            self._cut_batch(now, stale)
        self._release_acks()
        client.flush_socket()

    def _network_io(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the socket, read what has arrived, write what is queued, keep alive."""
        client = self._client
        sock = client.buffered_socket()
        if sock is None:
            return
        wait_s = 0.0 if sock.pending() > 0 else timeout_s
        try:
            readable, writable, _ = select.select([sock], [sock] if client.wants_write() else [], [], wait_s)
        except (OSError, ValueError):  # closed under us: paho notices on the next read and reconnects
            readable, writable = [sock], []
        if writable:
            client.flush_socket()
        if readable or sock.pending() > 0:
            client.read_available(MAX_PACKETS_PER_STEP)
        if client.socket() is not None:
            client.loop_misc()

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set; then commit what was received, acknowledge it and disconnect."""
        self.start()
        try:
            while not stop.is_set():
                self.step()
        finally:
            self.shutdown()

    def shutdown(self, flush_timeout_s: float = SHUTDOWN_FLUSH_S) -> None:
        """Flush: cut the last batch, wait for the writer, send the last acks, disconnect cleanly."""
        if self._pending:
            self._cut_batch(self._clock(), [])
        self._writes.put(None)
        deadline = time.monotonic() + flush_timeout_s
        client = self._client
        while self._writer.is_alive() and time.monotonic() < deadline:
            self._writer.join(timeout=0.05)
            self._release_acks()
            if client.socket() is not None:
                client.flush_socket()
        self._writer_stop.set()
        self._writer.join(timeout=5.0)
        self._release_acks()
        if client.socket() is not None:
            client.flush_socket()
            self._closing = True
            client.disconnect()  # BufferedSocket.close() hands over the last PUBACKs and DISCONNECT
            client.flush_socket()
