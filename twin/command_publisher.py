"""Send the twin's advice to nodes as signed commands, and record every command and every outcome.

    publisher = CommandPublisher(CommandPublisherSettings(url, topics, secret), store)
    publisher.start()                                  # connect, subscribe to every node's outcomes
    commands = publisher.issue_power_cap(advice)       # one command per node of the job
    publisher.wait_for_outcomes([c.id for c in commands], timeout_s=5)
    publisher.close()

A command is recorded in the store (outcome `pending`) before it is published, so an outcome can never
arrive for a command the store does not know. Commands go out at QoS 1 and are never retained (a retained
command would be replayed to every node that subscribes later; the nodes' replay caches would refuse it,
but it has no business being there). Outcomes arrive on `{root}/{cluster}/+/commands/outcome` and are
recorded from paho's network thread (`twin.store.commands.record_outcome`).

With `persistent_session` (the default) the publisher's MQTT session outlives it (fixed client id,
clean_session false), so outcomes a node reports after a one-shot `twin advise` has exited are queued by
the broker and recorded by the next run. The secret is only ever used to sign; it is never logged.
"""

from __future__ import annotations

import logging
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from sensors.commands import (
    MAX_COMMAND_TTL_S,
    MAX_REASON_CHARS,
    NONCE_HEX_CHARS,
    Action,
    Command,
    CommandOutcome,
    CommandSecret,
    parse_outcome,
    sign_command,
)
from sensors.contract import Topics
from sensors.errors import ContractError
from sensors.mqtt_url import BrokerUrl
from sensors.publisher import KEEPALIVE_S, QOS_AT_LEAST_ONCE
from twin.advisor import CheckpointAdvice, PowerCapAdvice
from twin.store.commands import record_command, record_outcome
from twin.store.repository import Store

log = logging.getLogger(__name__)

# ASSUMPTION: two minutes covers delivery to a node that polls commands once a telemetry tick (1 s) and a
# broker reconnect, and is short enough that the advice still reflects the state it came from.
DEFAULT_COMMAND_TTL_S: Final = 120.0
# How long `publish` waits for the broker's PUBACK before reporting the command as not delivered.
PUBLISH_TIMEOUT_S: Final = 10.0


def new_command_id() -> str:
    """A fresh 128-bit nonce in hex (`secrets`, the OS's CSPRNG)."""
    return secrets.token_hex(NONCE_HEX_CHARS // 2)


@dataclass(frozen=True, slots=True)
class CommandPublisherSettings:
    url: BrokerUrl
    topics: Topics
    secret: CommandSecret = field(repr=False)
    client_id: str | None = None  # default: twin-commands-<cluster>
    ttl_s: float = DEFAULT_COMMAND_TTL_S
    persistent_session: bool = True
    keepalive_s: int = KEEPALIVE_S

    def __post_init__(self) -> None:
        if not 0 < self.ttl_s <= MAX_COMMAND_TTL_S:
            raise ValueError(f"ttl_s(={self.ttl_s}) must be in (0, {MAX_COMMAND_TTL_S}].")


@dataclass(slots=True)
class CommandPublisherStats:
    issued: int = 0
    not_delivered: int = 0  # the broker did not acknowledge in time
    outcomes: int = 0
    bad_outcomes: int = 0  # unreadable, or the body names another node than the topic

    def to_json(self) -> dict[str, int]:
        return {
            "issued": self.issued,
            "not_delivered": self.not_delivered,
            "outcomes": self.outcomes,
            "bad_outcomes": self.bad_outcomes,
        }


class CommandPublisher:
    """Signs, records and publishes commands; records the outcomes the nodes report."""

    def __init__(
        self, settings: CommandPublisherSettings, store: Store, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.store = store
        self.stats = CommandPublisherStats()
        self._clock = clock
        self._client: mqtt.Client | None = None
        self._subscribed = threading.Event()
        self._lock = threading.Condition()
        self._outcomes: dict[str, CommandOutcome] = {}  # newest outcome by command id (this run)
        topics = settings.topics
        self._outcome_filter = topics.command_outcome()
        self._outcome_prefix = f"{topics.root}/{topics.cluster}/"

    # --- connection --------------------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> bool:
        """Connect and subscribe to the outcomes; True once subscribed within `timeout_s`."""
        url = self.settings.url
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.settings.client_id or f"twin-commands-{self.settings.topics.cluster}",
            protocol=mqtt.MQTTv311,
            clean_session=not self.settings.persistent_session,
        )
        if url.username is not None:
            client.username_pw_set(url.username, url.password)
        if url.tls:
            client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.connect_async(url.host, url.port, keepalive=self.settings.keepalive_s)
        client.loop_start()
        self._client = client
        return self._subscribed.wait(timeout_s)

    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("command publisher: broker refused the connection: %s", reason)
            return
        client.subscribe(self._outcome_filter, qos=QOS_AT_LEAST_ONCE)

    def _on_subscribe(self, _c: mqtt.Client, _u: object, _mid: int, reasons: Any, _p: object) -> None:
        if any(getattr(r, "is_failure", False) for r in reasons):
            log.warning("command publisher: subscription to %s refused (ACL?)", self._outcome_filter)
            return
        self._subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        topic_node = self._topic_node(message.topic)
        try:
            if topic_node is None:
                raise ContractError(f"topic(={message.topic!r}) is not an outcome topic of this cluster.")
            outcome = parse_outcome(bytes(message.payload))
            if outcome.node != topic_node:
                raise ContractError(f"outcome for node {outcome.node!r} arrived on {topic_node!r}'s topic.")
        except ContractError as exc:
            self.stats.bad_outcomes += 1
            log.warning("command publisher: unreadable outcome on %s: %s", message.topic, exc)
            return
        try:
            record_outcome(self.store, self.settings.topics.cluster, outcome)
        except Exception:  # the store is down: paho's thread must survive; the broker redelivers on reconnect
            log.exception("command publisher: could not record the outcome of %s", outcome.command_id)
            return
        with self._lock:
            self.stats.outcomes += 1
            if outcome.command_id is not None:
                self._outcomes[outcome.command_id] = outcome
            self._lock.notify_all()

    def _topic_node(self, topic: str) -> str | None:
        if not topic.startswith(self._outcome_prefix) or not topic.endswith("/commands/outcome"):
            return None
        node = topic[len(self._outcome_prefix) : -len("/commands/outcome")]
        return node if node and "/" not in node else None

    # --- commands ----------------------------------------------------------------------------------

    def issue(
        self, node: str, action: Action, params: Mapping[str, Any], reason: str | None = None
    ) -> Command:
        """Build, sign, record and publish one command to `node`; returns it (raises if not connected)."""
        if self._client is None:
            raise RuntimeError("CommandPublisher.start() first.")
        now = self._clock()
        command = Command(
            id=new_command_id(),
            cluster=self.settings.topics.cluster,
            node=node,
            action=action,
            params=params,
            issued_ts=now,
            expires_ts=now + self.settings.ttl_s,
            reason=None if reason is None else reason[:MAX_REASON_CHARS],
        )
        payload = sign_command(command, self.settings.secret)
        record_command(self.store, command)
        info = self._client.publish(
            self.settings.topics.commands(node), payload, qos=QOS_AT_LEAST_ONCE, retain=False
        )
        self.stats.issued += 1
        delivered = False
        if info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            try:
                info.wait_for_publish(PUBLISH_TIMEOUT_S)
                delivered = info.is_published()
            except (RuntimeError, ValueError):
                delivered = False
        if not delivered:
            self.stats.not_delivered += 1
            log.warning("command %s to %s: no PUBACK within %s s", command.id, node, PUBLISH_TIMEOUT_S)
        log.info("command %s %s %s → %s", command.id, command.action, dict(command.params), node)
        return command

    def issue_power_cap(self, advice: PowerCapAdvice) -> list[Command]:
        """One `power_cap` command per node of the advice."""
        return [
            self.issue(node, Action.POWER_CAP, {"power_cap_w": advice.power_cap_w}, advice.reason())
            for node in advice.nodes
        ]

    def issue_checkpoint(self, advice: CheckpointAdvice) -> list[Command]:
        """One `checkpoint_now` command per node of the job (whichever host the job's loop polls)."""
        params = {"job_id": advice.job_id, "risk": round(advice.risk, 4)}
        return [self.issue(node, Action.CHECKPOINT_NOW, params, advice.reason()) for node in advice.nodes]

    def wait_for_outcomes(self, command_ids: Iterable[str], timeout_s: float) -> dict[str, CommandOutcome]:
        """The outcomes received for `command_ids` (this run), waiting up to `timeout_s` for all of them."""
        wanted = set(command_ids)
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not wanted <= self._outcomes.keys():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            return {k: v for k, v in self._outcomes.items() if k in wanted}

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()
