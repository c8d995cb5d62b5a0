"""BufferedSocket / BufferedClient: fewer syscalls, same bytes, errors surfaced where paho looks."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from sensors.mqtt_io import READ_CHUNK_BYTES, BufferedClient, BufferedSocket


@pytest.fixture
def pair() -> Iterator[tuple[BufferedSocket, socket.socket]]:
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    buffered = BufferedSocket(ours)
    yield buffered, peer
    peer.close()
    ours.close()


def test_many_small_reads_cost_one_recv_syscall(pair: tuple[BufferedSocket, socket.socket]) -> None:
    buffered, peer = pair
    peer.sendall(b"\x30\x05hello" * 100)  # 100 tiny "packets" of 7 bytes
    received = b"".join(buffered.recv(n) for n in [1, 1, 5] * 100)
    assert received == b"\x30\x05hello" * 100
    assert buffered.recv_calls == 1
    assert buffered.pending() == 0
    with pytest.raises(BlockingIOError):  # nothing left: paho's "try again later"
        buffered.recv(1)


def test_pending_counts_what_is_buffered_so_the_loop_keeps_reading(
    pair: tuple[BufferedSocket, socket.socket],
) -> None:
    buffered, peer = pair
    peer.sendall(b"abcdef")
    assert buffered.recv(2) == b"ab"
    assert buffered.pending() == 4
    assert buffered.recv(10) == b"cdef"
    assert buffered.pending() == 0


def test_a_large_read_is_served_whole_when_asked_for_more_than_a_chunk(
    pair: tuple[BufferedSocket, socket.socket],
) -> None:
    buffered, peer = pair
    peer.setblocking(True)
    data = bytes(range(256)) * 64  # 16 KiB
    peer.sendall(data)
    got = b""
    while len(got) < len(data):
        got += buffered.recv(READ_CHUNK_BYTES * 2)
    assert got == data


def test_writes_are_coalesced_into_one_send(pair: tuple[BufferedSocket, socket.socket]) -> None:
    buffered, peer = pair
    for i in range(500):
        assert buffered.send(b"\x40\x02" + i.to_bytes(2, "big")) == 4  # 500 PUBACKs
    assert buffered.send_calls == 0 and buffered.has_output()
    assert buffered.flush() is True
    assert buffered.send_calls == 1
    peer.settimeout(2)
    got = b""
    while len(got) < 2000:
        got += peer.recv(4096)
    assert got == b"".join(b"\x40\x02" + i.to_bytes(2, "big") for i in range(500))


def test_a_write_error_is_raised_by_the_next_read_where_paho_handles_it(
    pair: tuple[BufferedSocket, socket.socket],
) -> None:
    buffered, peer = pair
    peer.close()
    buffered.send(b"x" * 10)
    assert buffered.flush() is False  # broken pipe, kept
    assert not buffered.has_output()  # dropped with the connection
    with pytest.raises(OSError):
        buffered.recv(1)
    with pytest.raises(OSError):
        buffered.send(b"z")


def test_close_hands_over_buffered_bytes_and_abort_drops_them() -> None:
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    buffered = BufferedSocket(ours)
    buffered.send(b"\xe0\x00")  # DISCONNECT
    buffered.close()
    peer.settimeout(2)
    assert peer.recv(10) == b"\xe0\x00"
    peer.close()

    ours, peer = socket.socketpair()
    ours.setblocking(False)
    buffered = BufferedSocket(ours)
    buffered.send(b"lost")
    buffered.abort()
    peer.settimeout(2)
    assert peer.recv(10) == b""  # closed, nothing delivered
    peer.close()


def test_paho_still_has_the_private_socket_hook_we_override() -> None:
    # BufferedClient relies on paho-mqtt 2.x's Client._create_socket (pyproject pins paho-mqtt < 3).
    assert callable(getattr(mqtt.Client, "_create_socket", None))
    client = BufferedClient(CallbackAPIVersion.VERSION2, client_id="hook-check")
    assert client.buffered_socket() is None  # not connected yet


def test_paho_still_has_the_private_puback_handler_we_shortcut() -> None:
    assert callable(getattr(mqtt.Client, "_handle_pubackcomp", None))
    assert callable(getattr(mqtt.Client, "_do_on_publish", None))


def test_the_puback_shortcut_completes_the_message_as_paho_would() -> None:
    client = BufferedClient(CallbackAPIVersion.VERSION2, client_id="puback", protocol=mqtt.MQTTv311)
    published: list[int] = []

    def on_publish(_c: object, _u: object, mid: int, reason: ReasonCode, _p: object) -> None:
        assert not reason.is_failure
        published.append(mid)

    client.on_publish = on_publish
    info = client.publish("t/x", b"payload", qos=1)  # not connected: queued in _out_messages
    client._in_packet["packet"] = bytearray(info.mid.to_bytes(2, "big"))
    assert client._handle_pubackcomp("PUBACK") == 0
    assert published == [info.mid]
    assert info.mid not in client._out_messages  # completed, as paho completes it
    assert client._handle_pubackcomp("PUBACK") == 0  # a second PUBACK for the same id is ignored
    assert published == [info.mid]
