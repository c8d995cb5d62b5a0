"""Reusable MQTT test helpers: free ports, private Mosquitto brokers, paho subscribers and publishers.

A plain module (not a conftest) that tests import explicitly::

    from tests.mqtt_fixtures import private_mosquitto, production_conf_variant, collect_messages

- `free_port()` — a TCP port on 127.0.0.1 that was free a moment ago.
- `private_mosquitto(conf_text)` — context manager: writes the config (with `@PORT@` and `@DIR@` filled
  in) to a temporary directory, starts `mosquitto -c`, yields the port once it accepts connections,
  then terminates the broker and waits for it. `MosquittoProcess` is the same thing with `restart()`.
- `production_conf_variant(...)` — deploy/mosquitto/mosquitto.conf with the listener, paths and
  authentication swapped for a private test broker; every other setting stays as deployed.
- `require_mosquitto()` — the broker binary, or a pytest skip (a failure when TWIN_REQUIRE_SERVICES=1).
- `MessageCollector` / `collect_messages(url, topic_filter, n, timeout_s)` — a paho subscriber;
  `publish_all(url, messages)` — a paho publisher that waits for every PUBACK.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from sensors.mqtt_url import parse_broker_url

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
MOSQUITTO_DIR: Final = REPO_ROOT / "deploy" / "mosquitto"
PRODUCTION_CONF: Final = MOSQUITTO_DIR / "mosquitto.conf"
MOSQUITTO_CANDIDATES: Final = ("/usr/sbin/mosquitto", "mosquitto")
PORT_TOKEN: Final = "@PORT@"
DIR_TOKEN: Final = "@DIR@"
START_TIMEOUT_S: Final = 10.0


def services_required() -> bool:
    """True when TWIN_REQUIRE_SERVICES=1: a missing broker is then a test failure, not a skip."""
    return os.environ.get("TWIN_REQUIRE_SERVICES") == "1"


def find_tool(*candidates: str) -> str | None:
    """The first candidate that is an executable path or a command on PATH."""
    for candidate in candidates:
        found = candidate if os.access(candidate, os.X_OK) else shutil.which(candidate)
        if found:
            return found
    return None


def require_tool(*candidates: str) -> str:
    """The tool's path; skip the test when it is missing (fail instead under TWIN_REQUIRE_SERVICES=1)."""
    found = find_tool(*candidates)
    if found is None:
        reason = f"{candidates[0]} is not installed (install the mosquitto package to run this test)"
        if services_required():
            pytest.fail(f"TWIN_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    return found


def require_mosquitto() -> str:
    """Path of the mosquitto broker binary (see `require_tool`)."""
    return require_tool(*MOSQUITTO_CANDIDATES)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that the OS reported free (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout_s: float, alive: Iterable[subprocess.Popen[bytes]] = ()) -> bool:
    """True once 127.0.0.1:port accepts a TCP connection; False on timeout or if a process exits."""
    deadline = time.monotonic() + timeout_s
    processes = list(alive)
    while time.monotonic() < deadline:
        if any(process.poll() is not None for process in processes):
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
        time.sleep(0.02)
    return False


# --- configuration ----------------------------------------------------------------------------------


def replace_directive(conf_text: str, name: str, new_line: str | None) -> str:
    """Replace the one active `name …` line (or drop it when new_line is None); a ValueError otherwise."""
    pattern = re.compile(rf"^{re.escape(name)}(?:[ \t].*)?$", re.MULTILINE)
    found = pattern.findall(conf_text)
    if len(found) != 1:
        raise ValueError(f"directive(={name!r}) must appear exactly once as an active line; found {found}.")
    return pattern.sub(new_line if new_line is not None else f"# (test) removed: {found[0]}", conf_text)


def directive_values(conf_text: str, name: str) -> list[str]:
    """The values of every active `name value` line."""
    pattern = re.compile(rf"^{re.escape(name)}[ \t]+(.*?)[ \t]*$", re.MULTILINE)
    return pattern.findall(conf_text)


def production_conf_variant(
    *,
    password_file: Path | None = None,
    acl_file: Path | None = None,
    conf_text: str | None = None,
) -> str:
    """deploy/mosquitto/mosquitto.conf for a private broker: listener on 127.0.0.1:@PORT@, persistence in
    @DIR@, and either anonymous access (no files given) or the given password and ACL files."""
    text = PRODUCTION_CONF.read_text(encoding="utf-8") if conf_text is None else conf_text
    text = replace_directive(text, "listener", f"listener {PORT_TOKEN} 127.0.0.1")
    text = replace_directive(text, "persistence_location", f"persistence_location {DIR_TOKEN}/data/")
    anonymous = password_file is None
    text = replace_directive(text, "allow_anonymous", f"allow_anonymous {'true' if anonymous else 'false'}")
    text = replace_directive(
        text, "password_file", None if password_file is None else f"password_file {password_file}"
    )
    return replace_directive(text, "acl_file", None if acl_file is None else f"acl_file {acl_file}")


DEFAULT_SETTINGS_CONF: Final = f"listener {PORT_TOKEN} 127.0.0.1\nallow_anonymous true\n"
"""Mosquitto with every queue, in-flight and persistence setting at its built-in default."""


# --- private broker ---------------------------------------------------------------------------------


class MosquittoProcess:
    """A private mosquitto on 127.0.0.1 in its own temporary directory (config, data, log).

    `@PORT@` and `@DIR@` in the config text are replaced by the chosen port and the directory. When the
    tests run as root, `user root` is appended so mosquitto does not switch to the `mosquitto` user, who
    could not write the private data directory.
    """

    def __init__(self, conf_text: str, *, binary: str | None = None) -> None:
        if PORT_TOKEN not in conf_text:
            raise ValueError(f"conf_text must contain {PORT_TOKEN} where the listener port goes.")
        self.conf_text = conf_text
        self.binary = binary or require_mosquitto()
        self.port = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_handle: object | None = None

    @property
    def directory(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("the private mosquitto is not started.")
        return Path(self._tmp.name)

    @property
    def log_path(self) -> Path:
        return self.directory / "mosquitto.log"

    def log(self) -> str:
        """Everything the broker wrote to stdout/stderr so far."""
        with contextlib.suppress(FileNotFoundError):
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        return ""

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> int:
        """Start on a free port (retrying once if another process took it); return the port."""
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="twin-mosquitto-")
            (self.directory / "data").mkdir()
        for _attempt in range(3):
            self.port = free_port() if self.port == 0 or _attempt > 0 else self.port
            if self._launch():
                return self.port
        raise RuntimeError(f"mosquitto did not start; its log:\n{self.log()}")

    def _launch(self) -> bool:
        text = self.conf_text.replace(PORT_TOKEN, str(self.port)).replace(DIR_TOKEN, str(self.directory))
        if os.geteuid() == 0 and not directive_values(text, "user"):
            text += "\n# (test) as root: stay root so the private data directory stays writable\nuser root\n"
        conf_path = self.directory / "mosquitto.conf"
        conf_path.write_text(text, encoding="utf-8")
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [self.binary, "-c", str(conf_path)], stdout=log, stderr=subprocess.STDOUT, cwd=self.directory
            )
        if wait_for_port(self.port, START_TIMEOUT_S, alive=[self._process]):
            return True
        self._terminate()
        return False

    def stop(self) -> None:
        """Terminate the broker (SIGTERM: it saves its persistence database) and wait for it."""
        self._terminate()

    def restart(self) -> None:
        """Stop and start again on the same port with the same directory (persistence survives)."""
        self._terminate()
        if not self._launch():
            raise RuntimeError(f"mosquitto did not restart on port {self.port}; its log:\n{self.log()}")

    def close(self) -> None:
        """Stop the broker and delete its directory."""
        self._terminate()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@contextlib.contextmanager
def private_mosquitto(conf_text: str) -> Iterator[int]:
    """Run a private mosquitto with this config (`@PORT@`, `@DIR@` filled in); yield its port."""
    with MosquittoProcess(conf_text) as broker:
        yield broker.port


# --- paho clients -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    """One message as a subscriber saw it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


def make_client(
    client_id: str = "",
    *,
    clean_session: bool = True,
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
    manual_ack: bool = False,
) -> mqtt.Client:
    """A paho 2.x client (callback API v2). For MQTT v5, `clean_session` maps to clean_start."""
    if protocol == MQTTProtocolVersion.MQTTv5:
        return mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, manual_ack=manual_ack
        )
    return mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session,
        protocol=protocol,
        manual_ack=manual_ack,
    )


def connect(client: mqtt.Client, url: str, timeout_s: float = 5.0, *, clean_start: bool = True) -> ReasonCode:
    """Connect (credentials from the URL), start the network loop, return the CONNACK reason code.

    Raises TimeoutError when no CONNACK arrives (a broker that drops an unsupported CONNECT does that).
    """
    broker = parse_broker_url(url)
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    connected = threading.Event()
    result: list[ReasonCode] = []

    def on_connect(
        _client: mqtt.Client, _userdata: object, _flags: object, reason: ReasonCode, _props: object
    ) -> None:
        result.append(reason)
        connected.set()

    client.on_connect = on_connect
    if client.protocol == MQTTProtocolVersion.MQTTv5:
        client.connect(broker.host, broker.port, clean_start=clean_start)
    else:
        client.connect(broker.host, broker.port)
    client.loop_start()
    if not connected.wait(timeout_s):
        client.loop_stop()
        raise TimeoutError(f"no CONNACK from {broker.redacted()} within {timeout_s} s")
    return result[0]


def subscribe(
    client: mqtt.Client, topic_filter: str, qos: int = 1, timeout_s: float = 5.0
) -> list[ReasonCode]:
    """Subscribe and wait for the SUBACK; return its reason codes (granted QoS or a failure)."""
    acked = threading.Event()
    codes: list[ReasonCode] = []

    def on_subscribe(
        _client: mqtt.Client,
        _userdata: object,
        _mid: int,
        reasons: list[ReasonCode],
        _props: Properties | None,
    ) -> None:
        codes.extend(reasons)
        acked.set()

    client.on_subscribe = on_subscribe
    result, _mid = client.subscribe(topic_filter, qos=qos)
    if result != mqtt.MQTT_ERR_SUCCESS:
        raise ConnectionError(f"subscribe({topic_filter!r}) failed: {mqtt.error_string(result)}")
    if not acked.wait(timeout_s):
        raise TimeoutError(f"no SUBACK for {topic_filter!r} within {timeout_s} s")
    return codes


def close(client: mqtt.Client) -> None:
    """Send DISCONNECT and stop the network loop."""
    client.disconnect()
    client.loop_stop()


class MessageCollector:
    """A paho subscriber that records every message; `wait_for(n)` blocks until n arrived or timeout.

    With `manual_ack=True` nothing is acknowledged (the broker sees every QoS 1 message as in flight).
    """

    def __init__(
        self,
        url: str,
        topic_filter: str,
        *,
        qos: int = 1,
        client_id: str = "",
        clean_session: bool = True,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
        manual_ack: bool = False,
    ) -> None:
        self.url = url
        self.topic_filter = topic_filter
        self.qos = qos
        self.messages: list[Received] = []
        self._arrived = threading.Condition()
        self.client = make_client(
            client_id, clean_session=clean_session, protocol=protocol, manual_ack=manual_ack
        )
        self.client.on_message = self._on_message
        self.clean_session = clean_session

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._arrived:
            self.messages.append(
                Received(message.topic, bytes(message.payload), message.qos, bool(message.retain))
            )
            self._arrived.notify_all()

    def start(self) -> Self:
        """Connect and subscribe (waits for CONNACK and SUBACK)."""
        reason = connect(self.client, self.url, clean_start=self.clean_session)
        if reason.is_failure:
            self.client.loop_stop()
            raise ConnectionError(f"subscriber connect to {self.url} refused: {reason}")
        subscribe(self.client, self.topic_filter, self.qos)
        return self

    def wait_for(self, n: int, timeout_s: float, *, quiet_s: float | None = None) -> list[Received]:
        """The messages so far, once at least n arrived or timeout_s passed, or — with quiet_s — once no
        message arrived for quiet_s seconds (to count what a broker delivers when it delivers fewer)."""
        deadline = time.monotonic() + timeout_s
        with self._arrived:
            while len(self.messages) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                before = len(self.messages)
                self._arrived.wait(remaining if quiet_s is None else min(quiet_s, remaining))
                if quiet_s is not None and len(self.messages) == before:
                    break
            return list(self.messages)

    def wait_quiet(self, quiet_s: float, timeout_s: float) -> list[Received]:
        """The messages once none arrived for quiet_s seconds (or timeout_s passed)."""
        deadline = time.monotonic() + timeout_s
        with self._arrived:
            while time.monotonic() < deadline:
                before = len(self.messages)
                self._arrived.wait(min(quiet_s, max(deadline - time.monotonic(), 0.0)))
                if len(self.messages) == before:
                    break
            return list(self.messages)

    def stop(self) -> None:
        close(self.client)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def collect_messages(
    url: str,
    topic_filter: str,
    n: int,
    timeout_s: float,
    *,
    qos: int = 1,
    client_id: str = "",
    clean_session: bool = True,
) -> list[Received]:
    """Subscribe, then return the messages once n arrived or timeout_s passed (fewer on timeout)."""
    with MessageCollector(
        url, topic_filter, qos=qos, client_id=client_id, clean_session=clean_session
    ) as sub:
        return sub.wait_for(n, timeout_s)


def publish_all(
    url: str,
    messages: Iterable[tuple[str, bytes]],
    *,
    qos: int = 1,
    retain: bool = False,
    client_id: str = "",
    timeout_s: float = 30.0,
    max_inflight: int = 1000,
) -> int:
    """Publish every (topic, payload) and wait until each is acknowledged; return how many were sent.

    Raises TimeoutError if some PUBACK is missing after timeout_s (the broker refused or dropped it).
    """
    client = make_client(client_id)
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(0)
    reason = connect(client, url)
    if reason.is_failure:
        client.loop_stop()
        raise ConnectionError(f"publisher connect to {url} refused: {reason}")
    try:
        infos = [client.publish(topic, payload, qos=qos, retain=retain) for topic, payload in messages]
        deadline = time.monotonic() + timeout_s
        for info in infos:
            info.wait_for_publish(max(deadline - time.monotonic(), 0.001))
            if not info.is_published():
                raise TimeoutError(f"message {info.mid} not acknowledged within {timeout_s} s")
        return len(infos)
    finally:
        close(client)


def numbered(topic: str, n: int) -> list[tuple[str, bytes]]:
    """n messages on one topic whose payloads are b"0" … b"n-1" (to check completeness and order)."""
    return [(topic, str(i).encode()) for i in range(n)]
