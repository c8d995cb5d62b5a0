"""Buffered socket I/O for paho-mqtt clients driven through the external-loop API.

paho reads a packet in three `recv` calls (command byte, remaining length, body) and writes each packet
with its own `send`. At tens of thousands of messages a second those syscalls, not MQTT, dominate: the
ingest benchmark (benchmarks/RESULTS.md, "Where the service's time goes") measured about 21 µs of an
8-GPU message's 125 µs in `select`, `recv` and framing, and 5 µs per PUBACK. `BufferedSocket` wraps the
connected socket so that

- one `recv` takes up to `READ_CHUNK_BYTES` and the packets in it are served from memory
  (`pending()` tells the loop that more packets are already here), and
- `send` appends to an output buffer that `flush()` writes in one syscall, e.g. a whole batch of PUBACKs.

Nothing about delivery changes: a QoS 1 message is complete only when its PUBACK arrives, whether its
bytes sat in our buffer or in the kernel's. A write error found by `flush()` is raised by the next
`recv`/`send`, so paho sees the lost connection where it always does and reconnects as usual.

`BufferedClient` is a `paho.mqtt.client.Client` whose sockets are wrapped; it must be driven with
`loop_read` / `loop_write` / `loop_misc` (never `loop()` or `loop_start()`), and its owner must call
`flush_socket()` after queueing packets. It overrides two private paho methods, which is why pyproject
pins paho-mqtt below 3 and tests/sensors/test_mqtt_io.py checks both still exist:

- `_create_socket`, to wrap the socket;
- `_handle_pubackcomp`, for one case only: an MQTT 3.1.1 PUBACK (always exactly a 2-byte packet id, no
  reason code, no properties). paho 2.x builds a `ReasonCode` and a `Properties` object for each one
  (20 % of a publisher's CPU in the benchmark's profile); the override reads the id and calls the same
  `_do_on_publish` paho would, with one shared success reason code. Every other packet goes to paho.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

# One read takes at most this much: 256 KiB is ~100 8-GPU telemetry messages (≈2.5 KiB each), and the
# contract's payload limit (DecoderSettings.max_payload_bytes), so a maximal message needs ≤ 2 reads.
READ_CHUNK_BYTES: Final = 256 * 1024
# `send` flushes on its own once this much is buffered (a burst of publishes between two polls).
WRITE_FLUSH_BYTES: Final = 256 * 1024
# Above this the buffer refuses more (paho keeps the packet and retries): bounded memory when the peer
# stops reading. 8 MiB is ~3,000 telemetry messages.
WRITE_BUFFER_MAX_BYTES: Final = 8 * 1024 * 1024
# How long `close()` may block to hand over what is buffered (e.g. a DISCONNECT after the last PUBACKs).
CLOSE_FLUSH_TIMEOUT_S: Final = 1.0


class BufferedSocket:
    """A non-blocking connected socket (plain or TLS) with a read-ahead buffer and a write buffer."""

    def __init__(self, sock: socket.socket | ssl.SSLSocket, read_chunk_bytes: int = READ_CHUNK_BYTES) -> None:
        if read_chunk_bytes < 1:
            raise ValueError(f"read_chunk_bytes(={read_chunk_bytes}) must be ≥ 1.")
        self._sock = sock
        self._chunk = read_chunk_bytes
        self._rbuf = b""
        self._rpos = 0
        self._wbuf = bytearray()
        self._error: OSError | None = None
        self.recv_calls = 0  # real syscalls, for tests and benchmarks
        self.send_calls = 0

    # --- reading ----------------------------------------------------------------------------------
    def recv(self, bufsize: int) -> bytes:
        """Up to `bufsize` bytes: from the buffer, else one real `recv` of up to the read chunk."""
        if self._error is not None:
            raise self._error
        if self._rpos >= len(self._rbuf):
            self.recv_calls += 1
            data = self._sock.recv(max(bufsize, self._chunk))  # BlockingIOError passes through to paho
            if len(data) <= bufsize:
                return data
            self._rbuf, self._rpos = data, 0
        end = self._rpos + bufsize
        out = self._rbuf[self._rpos : end]
        self._rpos = min(end, len(self._rbuf))
        return out

    def pending(self) -> int:
        """Bytes already received and not yet handed out (TLS's decrypted leftovers included)."""
        inner = self._sock.pending() if isinstance(self._sock, ssl.SSLSocket) else 0
        return len(self._rbuf) - self._rpos + inner

    # --- writing ----------------------------------------------------------------------------------
    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Buffer `data` (all of it, or raise BlockingIOError when the buffer is full)."""
        if self._error is not None:
            raise self._error
        if len(self._wbuf) >= WRITE_BUFFER_MAX_BYTES:
            self.flush()
            if len(self._wbuf) >= WRITE_BUFFER_MAX_BYTES:
                raise BlockingIOError("output buffer full")
        self._wbuf += data
        if len(self._wbuf) >= WRITE_FLUSH_BYTES:
            self.flush()
        return len(data)

    def has_output(self) -> bool:
        return bool(self._wbuf)

    def flush(self) -> bool:
        """Write what is buffered without blocking; True when nothing is left.

        A connection error is kept and raised by the next `recv`/`send` (paho then reports the lost
        connection and reconnects); the buffered bytes are dropped with the connection, as the kernel's
        would be.
        """
        while self._wbuf and self._error is None:
            try:
                self.send_calls += 1
                sent = self._sock.send(self._wbuf)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return False
            except OSError as exc:
                self._error = exc
                self._wbuf.clear()
                return False
            del self._wbuf[:sent]
        return not self._wbuf

    # --- lifetime ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Hand over what is buffered (bounded by CLOSE_FLUSH_TIMEOUT_S), then close."""
        deadline = time.monotonic() + CLOSE_FLUSH_TIMEOUT_S
        try:
            while not self.flush() and self._error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                select.select([], [self._sock], [], left)
        except (OSError, ValueError):
            pass
        self._sock.close()

    def abort(self) -> None:
        """Close at once, dropping buffered output (a crashed host: the broker then sends the will)."""
        self._wbuf.clear()
        self._sock.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def __getattr__(self, name: str) -> Any:  # anything else paho may ask (getpeername, settimeout…)
        return getattr(self._sock, name)


# What paho hands `on_publish` for an MQTT 3.1.1 PUBACK, which carries neither: "Success" and no properties.
_PUBACK_SUCCESS: Final = ReasonCode(PacketTypes.PUBACK)
_NO_PROPERTIES: Final = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]
_MQTT_V311_PUBACK_BYTES: Final = 2  # MQTT 3.1.1 §3.4: the variable header is the packet id, no payload


class BufferedClient(mqtt.Client):
    """A paho client whose sockets are `BufferedSocket`s (drive it with the external-loop API)."""

    def _create_socket(self) -> Any:  # paho-mqtt 2.x private hook (see the module docstring)
        return BufferedSocket(super()._create_socket())  # type: ignore[arg-type]

    def _handle_pubackcomp(self, cmd: Any) -> MQTTErrorCode:  # paho-mqtt 2.x private (module docstring)
        packet = self._in_packet["packet"]
        if (
            cmd != "PUBACK"
            or self._protocol == MQTTProtocolVersion.MQTTv5
            or len(packet) != _MQTT_V311_PUBACK_BYTES
        ):
            return super()._handle_pubackcomp(cmd)
        mid = (packet[0] << 8) | packet[1]
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, _PUBACK_SUCCESS, _NO_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def buffered_socket(self) -> BufferedSocket | None:
        sock = self.socket()
        return sock if isinstance(sock, BufferedSocket) else None

    def read_available(self, max_packets: int) -> int:
        """Handle every packet already received (one real `recv` at most per read chunk).

        paho's `loop_read` handles one packet per call for a subscriber; call it while bytes are
        buffered, at most `max_packets` times. Returns paho's last error code (0 on success).
        """
        rc = self.loop_read()
        sock = self.buffered_socket()
        handled = 1
        while rc == 0 and sock is not None and sock.pending() > 0 and handled < max_packets:
            rc = self.loop_read()
            handled += 1
            sock = self.buffered_socket()
        return int(rc)

    def flush_socket(self) -> None:
        """Move paho's queued packets into the buffer and write the buffer out (non-blocking)."""
        if self.want_write():
            self.loop_write()
        sock = self.buffered_socket()
        if sock is not None:
            sock.flush()

    def wants_write(self) -> bool:
        """True when there is output to wait for writability on (paho's queue or our buffer)."""
        sock = self.buffered_socket()
        return self.want_write() or (sock is not None and sock.has_output())
