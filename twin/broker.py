"""The embedded MQTT broker: the default when a user gives no `--broker` (DESIGN §1, §4).

`EmbeddedBroker` runs amqtt's asyncio `Broker` in a dedicated background thread with its own event loop,
listening on a loopback address only, so the demo works on a fresh machine without Mosquitto::

    with EmbeddedBroker() as broker:          # port 0: the OS picks a free port
        run_twin(broker_url=broker.url)        # mqtt://127.0.0.1:PORT

We own the listening socket (an amqtt "external" listener fed through `Broker.external_connected`), so
port 0 works without a pick-then-bind race, and the socket is bound to the host given, which must be a
loopback address. Clients on loopback are admitted without credentials by `LoopbackAuthPlugin`; it does
*not* mark them anonymous, because amqtt drops the session (and every queued message) of an anonymous
client the moment it disconnects.

Settings chosen here, explicitly: one TCP listener (no websockets), no `$SYS` plugin (no periodic
traffic, no psutil), no packet/event logging plugins, retained messages on (amqtt always keeps them),
persistent sessions for `clean_session=False` clients expiring `session_expiry_s` after disconnecting,
and a keep-alive grace of `KEEPALIVE_GRACE_S` seconds before a silent client is dropped (and its will sent).

Embedded broker limits (amqtt 0.12.1, measured with paho-mqtt 2.2 clients; `tests/test_broker.py` pins
each one, so an amqtt upgrade that changes one fails a test; see also deploy/mosquitto/README.md):

- MQTT 3.1.1 only (`supports_mqtt5 = False`). An MQTT v5 CONNECT gets CONNACK "unsupported protocol
  version"; an MQTT 3.1 ("MQIsdp") CONNECT is dropped without a CONNACK.
- No shared subscriptions (`supports_shared_subscriptions = False`). `$share/group/topic` is granted as
  a literal filter that never matches a published topic, so such a subscriber silently gets nothing.
- Works: QoS 1 publish/subscribe; retained messages for late subscribers; the last will (and its
  retain flag) when a client's connection dies without DISCONNECT; persistent sessions: QoS 1 messages
  published while a `clean_session=False` client is away are queued (unbounded, in memory) and delivered
  in order when it reconnects, without it subscribing again; no in-flight window, so a subscriber that
  acknowledges only after committing a batch is not throttled.
- Quirks a subscriber must tolerate: messages queued for an offline session arrive with the RETAIN flag
  set; on connect, amqtt replays retained messages matching *any* client's subscription (it walks the
  broker-wide table), so a client can receive retained messages it never subscribed to, sometimes
  twice (filter by topic); delivery uses the subscription's QoS even above the publish QoS (MQTT 3.1.1
  §3.8.4 says the minimum).
- Nothing survives the process: sessions, queues and retained messages live in memory. Use Mosquitto
  (deploy/mosquitto/) for anything that must survive a restart or be reached from another machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import threading
from types import TracebackType
from typing import Any, Final, Self

from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin

from twin.errors import TwinError

__all__ = [
    "DEFAULT_DEMO_PORT",
    "KEEPALIVE_GRACE_S",
    "EmbeddedBroker",
    "EmbeddedBrokerError",
    "LoopbackAuthPlugin",
]

logger = logging.getLogger(__name__)

# A stable port for a demo whose publishers run in other processes: one above Mosquitto's 1883 so the two
# can run side by side. `EmbeddedBroker` itself defaults to port 0 (any free port).
DEFAULT_DEMO_PORT: Final = 1884
# Seconds added to a client's keep-alive before a silent client is dropped and its will published.
# MQTT 3.1.1 §3.1.2.10 allows the server one and a half keep-alive periods; 10 s covers a ping in flight.
KEEPALIVE_GRACE_S: Final = 10
# One day, like `persistent_client_expiration 1d` in deploy/mosquitto/mosquitto.conf.
DEFAULT_SESSION_EXPIRY_S: Final = 86_400
_LISTENER: Final = "default"
_PLUGIN_NAMESPACE: Final = "amqtt.broker.plugins"
_SHUTDOWN_STEP_TIMEOUT_S: Final = 3.0


class EmbeddedBrokerError(TwinError):
    """The embedded broker could not start or stop (port in use, timeout); the message names the cause."""


class LoopbackAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type information
    """amqtt authentication plugin: admit clients connecting from a loopback address, refuse the rest.

    Unlike amqtt's `AnonymousAuthPlugin` it leaves `session.is_anonymous` false, which is what keeps a
    `clean_session=False` client's session and queued QoS 1 messages alive across a disconnect.
    """

    async def authenticate(self, *, session: Any) -> bool:
        """True when the client's address is a loopback address (127.0.0.0/8 or ::1)."""
        address = getattr(session, "remote_address", None)
        try:
            return ipaddress.ip_address(str(address)).is_loopback
        except ValueError:
            return False


def _loopback_host(host: str) -> str:
    """The host if it is a loopback IP literal; a ValueError naming it otherwise."""
    try:
        is_loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        is_loopback = False
    if not is_loopback:
        raise ValueError(
            f"host(={host!r}) must be a loopback IP address such as '127.0.0.1' or '::1': the embedded "
            "broker admits clients without credentials, so it never listens on a network interface."
        )
    return host


class EmbeddedBroker:
    """An in-process amqtt MQTT 3.1.1 broker on a loopback address, served from a background thread.

    `start()` returns once the broker accepts connections; `stop()` shuts it down and joins the thread.
    Also a context manager. The constructor does no I/O.
    """

    # Measured with paho-mqtt 2.2 against amqtt 0.12.1 (tests/test_broker.py pins both).
    supports_mqtt5: bool = False
    supports_shared_subscriptions: bool = False

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        session_expiry_s: int | None = DEFAULT_SESSION_EXPIRY_S,
        start_timeout_s: float = 10.0,
    ) -> None:
        if not 0 <= port <= 65_535:
            raise ValueError(f"port(={port}) must be in 0..65535 (0 picks a free port).")
        if session_expiry_s is not None and session_expiry_s <= 0:
            raise ValueError(f"session_expiry_s(={session_expiry_s}) must be > 0, or None to never expire.")
        if start_timeout_s <= 0:
            raise ValueError(f"start_timeout_s(={start_timeout_s}) must be > 0.")
        self.host = _loopback_host(host)
        self.requested_port = port
        self.session_expiry_s = session_expiry_s
        self.start_timeout_s = start_timeout_s
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._port: int | None = None
        self._error: BaseException | None = None

    # -- public API ---------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between a successful `start()` and `stop()`."""
        return self._thread is not None and self._thread.is_alive() and self._port is not None

    @property
    def port(self) -> int:
        """The TCP port the broker listens on (the OS-assigned one when constructed with port 0)."""
        if self._port is None:
            raise EmbeddedBrokerError("port is unknown: the embedded broker is not running; call start().")
        return self._port

    @property
    def url(self) -> str:
        """`mqtt://HOST:PORT` for clients (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtt://{host}:{self.port}"

    def start(self) -> None:
        """Start the broker thread and return once the listening socket accepts connections."""
        if self._thread is not None:
            raise EmbeddedBrokerError(f"the embedded broker is already started (url={self._url_or_none()}).")
        self._ready.clear()
        self._error = None
        self._port = None
        thread = threading.Thread(target=self._run, name="twin-embedded-broker", daemon=True)
        self._thread = thread
        thread.start()
        if not self._ready.wait(self.start_timeout_s):
            self.stop()
            raise EmbeddedBrokerError(
                f"the embedded broker did not start within start_timeout_s(={self.start_timeout_s})."
            )
        if self._error is not None:
            error = self._error
            thread.join(self.start_timeout_s)
            self._thread = None
            raise EmbeddedBrokerError(
                f"the embedded broker failed to start on {self.host}:{self.requested_port}: {error}"
            ) from error

    def stop(self, timeout_s: float = 10.0) -> None:
        """Shut the broker down, close its loop and join its thread. Idempotent."""
        thread = self._thread
        if thread is None:
            return
        loop, stop_requested = self._loop, self._stop_requested
        if loop is not None and stop_requested is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed: the thread is ending
                loop.call_soon_threadsafe(stop_requested.set)
        thread.join(timeout_s)
        if thread.is_alive():
            raise EmbeddedBrokerError(
                f"the embedded broker thread did not stop within timeout_s(={timeout_s})."
            )
        self._thread = None
        self._port = None
        self._loop = None
        self._stop_requested = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedBroker(url={self._url_or_none()!r}, running={self.running})"

    # -- internals ----------------------------------------------------------------------------------

    def _url_or_none(self) -> str | None:
        return self.url if self._port is not None else None

    def _config(self) -> dict[str, Any]:
        """amqtt's BrokerConfig as a dict (keys checked strictly by amqtt through dacite)."""
        return {
            # "external": amqtt opens no socket itself; `_serve` owns it and hands connections over.
            "listeners": {_LISTENER: {"type": "external", "bind": f"{self.host}:{self.requested_port}"}},
            "timeout_disconnect_delay": KEEPALIVE_GRACE_S,
            "session_expiry_interval": self.session_expiry_s,
            # Listing plugins replaces amqtt's defaults (event/packet loggers, anonymous auth, $SYS).
            "plugins": {f"{LoopbackAuthPlugin.__module__}.{LoopbackAuthPlugin.__qualname__}": {}},
        }

    def _run(self) -> None:
        """Thread body: a fresh event loop for the broker's whole life (asyncio.run closes it cleanly)."""
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported to start(), or logged when it happens after start
            if not self._ready.is_set():
                self._error = error
            else:
                logger.exception("embedded MQTT broker stopped with an error")
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        stop_requested = asyncio.Event()
        self._stop_requested = stop_requested
        broker = Broker(self._config(), loop=self._loop)
        connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        await broker.start()
        try:
            server = await asyncio.start_server(
                lambda reader, writer: self._connected(broker, connections, reader, writer),
                self.host,
                self.requested_port,
            )
        except BaseException:
            await self._shutdown(broker, connections)
            raise
        self._port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        try:
            await stop_requested.wait()
        finally:
            server.close()
            await self._shutdown(broker, connections)
            await server.wait_closed()

    @staticmethod
    async def _connected(
        broker: Any,
        connections: dict[asyncio.Task[None], asyncio.StreamWriter],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """Hand one accepted TCP connection to amqtt; it runs the MQTT session until the client leaves."""
        task = asyncio.current_task()
        if task is not None:
            connections[task] = writer
        writer_adapter = StreamWriterAdapter(writer)
        try:
            await broker.external_connected(StreamReaderAdapter(reader), writer_adapter, _LISTENER)
        except Exception:
            logger.exception("embedded MQTT broker: a client connection failed")
        finally:
            if task is not None:
                connections.pop(task, None)
            with contextlib.suppress(Exception):
                await writer_adapter.close()
            # The adapter marks itself closed before draining, so when draining a reset connection
            # fails it never closes the transport: close it here (idempotent). Not `wait_closed()`:
            # amqtt may have cancelled that shared future already, which would raise CancelledError.
            writer.close()

    @staticmethod
    async def _shutdown(broker: Any, connections: dict[asyncio.Task[None], asyncio.StreamWriter]) -> None:
        """Drop every client connection, let amqtt finish those sessions, then shut amqtt down.

        Connections are aborted first (the clients see the broker go away, as with a stopped Mosquitto),
        so each session ends the way an abrupt disconnect does. Left to amqtt's own shutdown, which
        cancels each session's reader (blocked in `asyncio.wait_for`) and waits for it, a session whose
        client had just sent a packet was seen to keep shutdown waiting forever on Python 3.11. Each
        step is bounded by a timeout regardless; `asyncio.run` cancels whatever is left.
        """
        await asyncio.sleep(0)  # connections accepted just before the listener closed register first
        for writer in list(connections.values()):
            writer.transport.abort()
        if connections:
            _done, pending = await asyncio.wait(list(connections), timeout=_SHUTDOWN_STEP_TIMEOUT_S)
            if pending:
                logger.warning("embedded MQTT broker: %d client session(s) did not end in time", len(pending))
        await asyncio.sleep(0)  # let the transports' close callbacks run before the loop goes away
        try:
            await asyncio.wait_for(broker.shutdown(), _SHUTDOWN_STEP_TIMEOUT_S)
        except TimeoutError:  # asyncio.run() then cancels whatever is left
            logger.warning("embedded MQTT broker: amqtt shutdown took over %s s", _SHUTDOWN_STEP_TIMEOUT_S)
        # amqtt's PluginManager registers itself in a module-level dict keyed by namespace; drop ours so a
        # stopped broker (and its closed loop) is not kept alive by it.
        from amqtt.plugins import manager

        if manager.plugins_manager.get(_PLUGIN_NAMESPACE) is broker.plugins_manager:
            del manager.plugins_manager[_PLUGIN_NAMESPACE]
