"""The node agent: receives the twin's commands, verifies them, carries out the allowed ones, reports back.

    processor = CommandProcessor(verifier, handlers, apply=False)     # dry-run: verify and report only
    agent = CommandAgent(AgentSettings(url, topics, nodes=("n01",)), processor)
    agent.start()                       # paho network thread: subscribes to {root}/{cluster}/n01/commands
    ... agent.process_pending() ...     # in the telemetry loop (runner's on_tick): verify, act, report
    agent.close()

Every payload received on a node's `commands` topic gets exactly one outcome, published (QoS 1, not
retained) on `{root}/{cluster}/{node}/commands/outcome`: `applied`, `dry_run` (verified; the detail says
what applying would do), `rejected` (reason code and the offending field: stale, replayed, unsigned,
bad signature, unknown action, out of range …), `not_permitted` (the device refused, e.g. NVML without
root) or `failed` (an unexpected error while applying). A malformed payload is rejected with a reason,
counted, and the agent goes on; nothing a sender puts in a payload can stop it.

Actions run through one `ActionHandler` per whitelisted action, built for the node's hardware:

- `power_cap` — `nvml_power_cap_handler` sets every GPU's limit with `nvmlDeviceSetPowerManagementLimit`
  after checking it against `nvmlDeviceGetPowerManagementLimitConstraints` (null restores the default
  limit). Without root NVML answers NO_PERMISSION: outcome `not_permitted`, logged.
  `simulated_power_cap_handler` applies it to a `SimulatedCluster` node (`set_power_cap`), so the
  simulated telemetry shows the cap.
- `checkpoint_now` — the agent cannot checkpoint a training job itself. `checkpoint_handler` forwards the
  advisory: it logs it and, when the operator gave a marker directory, writes
  `<dir>/<job_id>.checkpoint-now.json` (atomically) for the job's training loop to poll, e.g. in a
  Hugging Face `TrainerCallback.on_step_end`: `if marker.exists(): control.should_save = True;
  marker.unlink()`.

Handlers run in the thread that calls `process_pending` (the telemetry loop), never in paho's network
thread, so they may touch the source (the simulated cluster) without locks.
"""

from __future__ import annotations

import logging
import os
import queue
import ssl
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from sensors.commands import (
    Action,
    Command,
    CommandOutcome,
    CommandRejected,
    CommandVerifier,
    OutcomeKind,
    RejectReason,
)
from sensors.contract import Topics, check_segment
from sensors.errors import SensorError
from sensors.mqtt_url import BrokerUrl
from sensors.nvml import PowerLimitNotPermitted
from sensors.publisher import KEEPALIVE_S, QOS_AT_LEAST_ONCE, RECONNECT_MAX_S, RECONNECT_MIN_S

if TYPE_CHECKING:
    from sensors.nvml import NvmlPowerLimits
    from sensors.simulated import SimulatedCluster

log = logging.getLogger(__name__)

# Commands waiting for the telemetry loop. ASSUMPTION: the twin sends a few per node per minute; beyond
# 1,000 waiting, the loop is stuck or someone floods the topic, and new ones are dropped (counted).
DEFAULT_MAX_PENDING: Final = 1_000
# Simulated GPUs accept caps from this share of TDP up to TDP. ASSUMPTION modelled on the ranges NVML
# reports (nvidia-smi -q "Min/Max Power Limit"): A100-SXM4 100–400 W, H100-SXM 200–700 W.
SIM_MIN_POWER_CAP_FRACTION_OF_TDP: Final = 0.25
MARKER_SUFFIX: Final = ".checkpoint-now.json"


class ActionNotPermitted(SensorError):  # noqa: N818 (an outcome, reported as "not_permitted")
    """The device or the operator's setup does not allow this action here."""


@dataclass(frozen=True, slots=True)
class ActionHandler:
    """How this node carries out one action.

    `check(command)` returns why the command does not fit this device (→ rejected `out_of_range`) or
    None; `describe(command)` says what applying would do (the dry-run detail); `apply(command)` does it
    and returns what it did, raising `ActionNotPermitted` when the device refuses.
    """

    describe: Callable[[Command], str]
    apply: Callable[[Command], str]
    check: Callable[[Command], str | None] = lambda _command: None


Handlers = Mapping[Action, ActionHandler]


# --- handlers ------------------------------------------------------------------------------------------


def _cap_text(power_cap_w: float | None) -> str:
    return (
        "remove the power cap (default limit)" if power_cap_w is None else f"cap power at {power_cap_w:g} W"
    )


def simulated_power_cap_handler(cluster: SimulatedCluster) -> ActionHandler:
    """`power_cap` on a simulated node: every GPU of the node, through `SimulatedCluster.set_power_cap`."""
    gpu = cluster.gpu
    low_w = max(SIM_MIN_POWER_CAP_FRACTION_OF_TDP * gpu.tdp_w, gpu.idle_w)

    def check(command: Command) -> str | None:
        cap = command.params.get("power_cap_w")
        if cap is None or (low_w <= cap <= gpu.tdp_w and cap > gpu.idle_w):
            return None
        return f"power_cap_w(={cap}) is outside the {gpu.name}'s allowed range [{low_w:g}, {gpu.tdp_w:g}] W."

    def describe(command: Command) -> str:
        return f"{_cap_text(command.params.get('power_cap_w'))} on {cluster.gpus_per_node} simulated GPUs"

    def apply(command: Command) -> str:
        cluster.set_power_cap(command.node, command.params.get("power_cap_w"))
        return describe(command)

    return ActionHandler(describe=describe, apply=apply, check=check)


def nvml_power_cap_handler(limits: NvmlPowerLimits) -> ActionHandler:
    """`power_cap` on this host's GPUs through NVML, within each GPU's allowed range."""

    def check(command: Command) -> str | None:
        cap = command.params.get("power_cap_w")
        if cap is None:
            return None
        for index in range(limits.gpu_count):
            low, high = limits.constraints_w(index)
            if not low <= cap <= high:
                return f"power_cap_w(={cap}) is outside GPU {index}'s allowed range [{low:g}, {high:g}] W."
        return None

    def describe(command: Command) -> str:
        return f"{_cap_text(command.params.get('power_cap_w'))} on {limits.gpu_count} GPU(s) via NVML"

    def apply(command: Command) -> str:
        cap = command.params.get("power_cap_w")
        done: list[str] = []
        for index in range(limits.gpu_count):
            target = limits.default_limit_w(index) if cap is None else float(cap)
            try:
                limits.set_limit_w(index, target)
            except PowerLimitNotPermitted as exc:
                already = f" (GPUs {', '.join(done)} were set)" if done else ""
                raise ActionNotPermitted(f"{exc}{already}") from exc
            done.append(str(index))
        return describe(command)

    return ActionHandler(describe=describe, apply=apply, check=check)


def checkpoint_handler(marker_dir: Path | None = None) -> ActionHandler:
    """`checkpoint_now`: log the advisory and, with `marker_dir`, write the job's marker file there."""

    def marker(command: Command) -> Path | None:
        return None if marker_dir is None else marker_dir / f"{command.params['job_id']}{MARKER_SUFFIX}"

    def describe(command: Command) -> str:
        path = marker(command)
        where = f"write {path}" if path is not None else "log it (no marker directory configured)"
        return f"advise job {command.params['job_id']} to checkpoint now: {where}"

    def apply(command: Command) -> str:
        log.warning(
            "checkpoint advisory for job %s (risk %s): %s",
            command.params["job_id"],
            command.params.get("risk"),
            command.reason or "no reason given",
        )
        path = marker(command)
        if path is not None:
            content = {
                "command_id": command.id,
                "job_id": command.params["job_id"],
                "node": command.node,
                "risk": command.params.get("risk"),
                "issued_ts": command.issued_ts,
                "expires_ts": command.expires_ts,
                "reason": command.reason,
            }
            _write_atomically(path, orjson.dumps(content, option=orjson.OPT_INDENT_2))
        return describe(command)

    return ActionHandler(describe=describe, apply=apply)


def _write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` so a reader sees the old file or the whole new one (rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- processing ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class AgentStats:
    """Counters since start: payloads received, outcomes by kind, rejections by reason, drops."""

    received: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    dropped: int = 0  # the pending queue was full
    ignored: int = 0  # a message on a topic that is not one of our nodes' command topics

    def to_json(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "outcomes": dict(self.outcomes),
            "rejected": dict(self.rejected),
            "dropped": self.dropped,
            "ignored": self.ignored,
        }


class CommandProcessor:
    """Verify one payload and act on it (or describe, in dry-run); always returns one outcome."""

    def __init__(self, verifier: CommandVerifier, handlers: Handlers, *, apply: bool = False) -> None:
        self.verifier = verifier
        self.handlers = dict(handlers)
        self.apply = apply
        self.stats = AgentStats()

    def process(self, node: str, payload: bytes, now_s: float) -> CommandOutcome:
        self.stats.received += 1
        try:
            outcome = self._process(node, payload, now_s)
        except Exception as exc:  # a bug or a device failure must not stop the agent
            log.exception("command on node %s failed", node)
            outcome = CommandOutcome(
                node, now_s, OutcomeKind.FAILED, reason="error", detail=f"{type(exc).__name__}: {exc}"
            )
        self.stats.outcomes[outcome.outcome] += 1
        if outcome.outcome is OutcomeKind.REJECTED and outcome.reason is not None:
            self.stats.rejected[outcome.reason] += 1
        level = (
            logging.INFO if outcome.outcome in (OutcomeKind.APPLIED, OutcomeKind.DRY_RUN) else logging.WARNING
        )
        log.log(
            level,
            "command %s %s on %s: %s%s%s",
            outcome.command_id or "(unreadable id)",
            outcome.action or "?",
            node,
            outcome.outcome,
            f" [{outcome.reason}]" if outcome.reason else "",
            f": {outcome.detail}" if outcome.detail else "",
        )
        return outcome

    def _process(self, node: str, payload: bytes, now_s: float) -> CommandOutcome:
        try:
            command = self.verifier.verify(payload, node, now_s)
        except CommandRejected as exc:
            return CommandOutcome(
                node,
                now_s,
                OutcomeKind.REJECTED,
                command_id=exc.command_id,
                action=exc.action,
                reason=str(exc.reason),
                field=exc.field,
                detail=str(exc),
            )
        action = str(command.action)
        handler = self.handlers.get(command.action)
        if handler is None:
            return CommandOutcome(
                node,
                now_s,
                OutcomeKind.REJECTED,
                command_id=command.id,
                action=action,
                reason=str(RejectReason.UNKNOWN_ACTION),
                field="action",
                detail=f"this node has no handler for {action}.",
            )
        try:
            problem = handler.check(command)
        except ActionNotPermitted as exc:
            return CommandOutcome(
                node, now_s, OutcomeKind.NOT_PERMITTED, command.id, action, "device", detail=str(exc)
            )
        if problem is not None:
            where = next(iter(command.params), None)
            return CommandOutcome(
                node,
                now_s,
                OutcomeKind.REJECTED,
                command_id=command.id,
                action=action,
                reason=str(RejectReason.OUT_OF_RANGE),
                field=None if where is None else f"params.{where}",
                detail=problem,
            )
        if not self.apply:
            return CommandOutcome(
                node,
                now_s,
                OutcomeKind.DRY_RUN,
                command.id,
                action,
                detail=f"would {handler.describe(command)}",
            )
        try:
            detail = handler.apply(command)
        except ActionNotPermitted as exc:
            return CommandOutcome(
                node, now_s, OutcomeKind.NOT_PERMITTED, command.id, action, "device", detail=str(exc)
            )
        return CommandOutcome(node, now_s, OutcomeKind.APPLIED, command.id, action, detail=detail)


# --- MQTT ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """Where the agent listens: the broker, the cluster's topics and the nodes it speaks for."""

    url: BrokerUrl
    topics: Topics
    nodes: tuple[str, ...]
    client_id: str | None = None  # default: twin-agent-<cluster>-<first node>[-x<count>]
    max_pending: int = DEFAULT_MAX_PENDING
    keepalive_s: int = KEEPALIVE_S

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ValueError("nodes must name at least one node.")
        for node in self.nodes:
            check_segment("node", node)
        if self.max_pending < 1:
            raise ValueError(f"max_pending(={self.max_pending}) must be ≥ 1.")

    def resolved_client_id(self) -> str:
        if self.client_id is not None:
            return self.client_id
        more = f"-x{len(self.nodes)}" if len(self.nodes) > 1 else ""
        return f"twin-agent-{self.topics.cluster}-{self.nodes[0]}{more}"


class CommandAgent:
    """Subscribes to the command topics of `settings.nodes`, queues what arrives, processes it on demand."""

    def __init__(
        self, settings: AgentSettings, processor: CommandProcessor, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.processor = processor
        self._clock = clock
        self._by_topic = {settings.topics.commands(node): node for node in settings.nodes}
        self._outcome_topic = {node: settings.topics.command_outcome(node) for node in settings.nodes}
        self._pending: queue.Queue[tuple[str, bytes]] = queue.Queue(settings.max_pending)
        self._subscribed = threading.Event()
        self._client: mqtt.Client | None = None
        self._in_flight: deque[mqtt.MQTTMessageInfo] = deque()
        self.published_outcomes = 0
        # Called by close(), last: release what the handlers hold (e.g. `NvmlPowerLimits.close`).
        self.on_close: list[Callable[[], None]] = []

    @property
    def stats(self) -> AgentStats:
        return self.processor.stats

    @property
    def subscriptions(self) -> Sequence[str]:
        return tuple(self._by_topic)

    def start(self) -> None:
        """Connect in the background (paho's network thread; it reconnects by itself)."""
        url = self.settings.url
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.settings.resolved_client_id(),
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if url.username is not None:
            client.username_pw_set(url.username, url.password)
        if url.tls:
            client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(round(RECONNECT_MIN_S) or 1, round(RECONNECT_MAX_S))
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        client.connect_async(url.host, url.port, keepalive=self.settings.keepalive_s)
        client.loop_start()
        self._client = client

    def wait_subscribed(self, timeout_s: float) -> bool:
        """True once the broker has granted the subscriptions (after start)."""
        return self._subscribed.wait(timeout_s)

    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("command agent: broker refused the connection: %s", reason)
            return
        # A clean session forgets subscriptions: subscribe on every (re)connect.
        client.subscribe([(topic, QOS_AT_LEAST_ONCE) for topic in self._by_topic])

    def _on_subscribe(self, _c: mqtt.Client, _u: object, _mid: int, reasons: Any, _p: object) -> None:
        failed = [r for r in reasons if getattr(r, "is_failure", False)]
        if failed:
            log.warning("command agent: subscription refused (%s); check the broker ACL", failed[0])
            return
        self._subscribed.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
        self._subscribed.clear()
        if self._client is not None:  # not closing
            log.warning("command agent disconnected (%s); paho reconnects", reason)

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        node = self._by_topic.get(message.topic)
        if node is None:
            self.processor.stats.ignored += 1
            return
        try:
            self._pending.put_nowait((node, bytes(message.payload)))
        except queue.Full:
            self.processor.stats.dropped += 1
            log.warning(
                "command agent: %d commands pending; dropped one for %s", self.settings.max_pending, node
            )

    def process_pending(self, now_s: float | None = None) -> int:
        """Verify, carry out and report every command received so far; returns how many."""
        handled = 0
        while True:
            try:
                node, payload = self._pending.get_nowait()
            except queue.Empty:
                return handled
            outcome = self.processor.process(node, payload, self._clock() if now_s is None else now_s)
            self._publish_outcome(outcome)
            handled += 1

    def _publish_outcome(self, outcome: CommandOutcome) -> None:
        if self._client is None:
            return
        info = self._client.publish(
            self._outcome_topic[outcome.node], orjson.dumps(outcome.to_payload()), qos=QOS_AT_LEAST_ONCE
        )
        if info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):  # queued either way
            self.published_outcomes += 1
            while self._in_flight and self._in_flight[0].is_published():
                self._in_flight.popleft()
            self._in_flight.append(info)
        else:
            log.warning("command agent: outcome for %s not queued (paho rc %s)", outcome.command_id, info.rc)

    def close(self, timeout_s: float = 5.0) -> None:
        """Report what is still pending, wait for the outcomes to leave, disconnect."""
        try:
            self.process_pending()
            self._disconnect(timeout_s)
        finally:
            for release in self.on_close:
                release()
            self.on_close.clear()

    def _disconnect(self, timeout_s: float) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        deadline = time.monotonic() + timeout_s
        for info in self._in_flight:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not info.is_published():
                try:
                    info.wait_for_publish(left)
                except (RuntimeError, ValueError):  # not connected, or the queue refused it
                    break
        self._in_flight.clear()
        client.disconnect()
        client.loop_stop()
