"""The WebSocket client codec (actors.model._ws_conn) against a raw loopback server that writes
RFC 6455 bytes by hand: the upgrade, fragmentation at any split, control frames, protocol errors."""

from __future__ import annotations

import base64
import functools
import hashlib
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings, strategies as st

from actors.model._ws_conn import WsClosed, WsRefused, _mask, connect_ws, encode_frame

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = False) -> bytes:
    """A server frame (unmasked unless asked)."""
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, n | (0x80 if masked else 0))
    elif n < 65536:
        head = struct.pack("!BBH", b0, 126 | (0x80 if masked else 0), n)
    else:
        head = struct.pack("!BBQ", b0, 127 | (0x80 if masked else 0), n)
    return head + (b"\0\0\0\0" if masked else b"") + payload


def read_client_frame(data: bytes) -> tuple[int, bytes, int]:
    """(opcode, unmasked payload, bytes used) of the client frame at the start of ``data``."""
    b0, b1 = data[0], data[1]
    assert b1 & 0x80, "client frames are masked"
    n, pos = b1 & 0x7F, 2
    if n == 126:
        n, pos = struct.unpack("!H", data[2:4])[0], 4
    elif n == 127:
        n, pos = struct.unpack("!Q", data[2:10])[0], 10
    key = data[pos : pos + 4]
    payload = _mask(data[pos + 4 : pos + 4 + n], key)
    return b0 & 0x0F, payload, pos + 4 + n


Handler = Callable[[trio.SocketStream, bytes], Awaitable[None]]


async def _read_request(stream: trio.SocketStream) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive_some(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _accept_for(head: bytes) -> bytes:
    key = next(
        line.split(b":", 1)[1].strip() for line in head.split(b"\r\n") if line.lower().startswith(b"sec-websocket-key")
    )
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def upgrade(accept: bytes | None = None) -> Callable[[bytes], bytes]:
    def answer(head: bytes) -> bytes:
        value = accept if accept is not None else _accept_for(head)
        return (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
            + value
            + b"\r\n\r\n"
        )

    return answer


async def serve(
    nursery: trio.Nursery, handler: Handler, answer: Callable[[bytes], bytes] | None = None
) -> tuple[int, list[bytes]]:
    heads: list[bytes] = []
    respond = answer or upgrade()

    async def connection(stream: trio.SocketStream) -> None:
        head, rest = await _read_request(stream)
        heads.append(head)
        await stream.send_all(respond(head))
        try:
            await handler(stream, rest)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    listeners = await nursery.start(functools.partial(trio.serve_tcp, connection, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1], heads


async def test_upgrade_headers_and_a_round_trip(autojump_clock: trio.testing.MockClock) -> None:
    got: list[bytes] = []

    async def handler(stream: trio.SocketStream, rest: bytes) -> None:
        data = rest
        while len(data) < 6:
            data += await stream.receive_some(65536)
        opcode, payload, _ = read_client_frame(data)
        got.append(payload)
        await stream.send_all(frame(0x1, b'{"echo": ' + payload + b"}"))
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        port, heads = await serve(nursery, handler)
        conn = await connect_ws(
            "127.0.0.1", port, "/v1/responses", [("Authorization", "Bearer k")], ssl_context=None, timeout=5
        )
        await conn.send_text('{"a": 1}')
        assert await conn.receive_texts() == [b'{"echo": {"a": 1}}']
        await conn.aclose()
        nursery.cancel_scope.cancel()
    head = heads[0].decode()
    assert head.startswith("GET /v1/responses HTTP/1.1") and f"host: 127.0.0.1:{port}" in head.lower()
    assert "upgrade: websocket" in head.lower() and "sec-websocket-version: 13" in head.lower()
    assert "Authorization: Bearer k" in head
    assert got == [b'{"a": 1}']


MESSAGES = [b'{"type":"response.output_text.delta","delta":"h\\u00e9"}', b"x" * 300, b"y" * 70000, b""]


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(1, 80000), max_size=12), fragment=st.booleans())
def test_any_split_and_fragmentation_give_the_same_messages(cuts: list[int], fragment: bool) -> None:
    stream_bytes = b""
    for message in MESSAGES:
        if fragment and len(message) > 2:
            third = len(message) // 3
            stream_bytes += frame(0x1, message[:third], fin=False)
            stream_bytes += frame(0x9, b"ping!")  # a control frame between fragments
            stream_bytes += frame(0x0, message[third : 2 * third], fin=False) + frame(0x0, message[2 * third :])
        else:
            stream_bytes += frame(0x1, message)
    stream_bytes += frame(0x8, struct.pack("!H", 1000) + b"bye")
    points = sorted({c for c in cuts if c < len(stream_bytes)})
    pieces = [stream_bytes[a:b] for a, b in zip([0, *points], [*points, len(stream_bytes)])]

    async def main() -> tuple[list[bytes], Any, bytes]:
        pongs = bytearray()

        async def handler(stream: trio.SocketStream, rest: bytes) -> None:
            for piece in pieces:
                await stream.send_all(piece)
                await trio.sleep(0.001)
            with trio.move_on_after(1):
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        break
                    pongs.extend(data)

        async with trio.open_nursery() as nursery:
            port, _ = await serve(nursery, handler)
            conn = await connect_ws("127.0.0.1", port, "/", [], ssl_context=None, timeout=5)
            out: list[bytes] = []
            closed = None
            while closed is None:
                try:
                    out += await conn.receive_texts()
                except WsClosed as exc:
                    closed = exc
            await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
        return out, closed, bytes(pongs)

    out, closed, replies = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert out == MESSAGES
    assert closed.code == 1000 and closed.reason == "bye"
    opcodes = []
    while replies:
        opcode, payload, used = read_client_frame(replies)
        opcodes.append((opcode, payload))
        replies = replies[used:]
    assert opcodes[-1] == (0x8, struct.pack("!H", 1000))  # the close is answered
    assert opcodes[:-1] == ([(0xA, b"ping!")] * 3 if fragment else [])  # each ping gets its pong


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (frame(0x1, b"hidden", masked=True), 1002),  # servers must not mask
        (bytes([0xC1, 0x02]) + b"hi", 1002),  # RSV1 without an extension
        (frame(0x0, b"orphan"), 1002),  # a continuation with nothing to continue
        (frame(0x3, b""), 1002),  # an unknown opcode
        (bytes([0x81, 127]) + (2**40).to_bytes(8, "big"), 1009),  # too big
    ],
)
async def test_protocol_errors_close_the_connection(
    bad: bytes, code: int, autojump_clock: trio.testing.MockClock
) -> None:
    async def handler(stream: trio.SocketStream, rest: bytes) -> None:
        await stream.send_all(frame(0x1, b"fine") + bad)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        port, _ = await serve(nursery, handler)
        conn = await connect_ws("127.0.0.1", port, "/", [], ssl_context=None, timeout=5)
        assert await conn.receive_texts() == [b"fine"]
        with pytest.raises(WsClosed) as info:
            await conn.receive_texts()
        nursery.cancel_scope.cancel()
    assert info.value.code == code and "protocol error" in info.value.reason


async def test_a_drop_is_1006(autojump_clock: trio.testing.MockClock) -> None:
    async def handler(stream: trio.SocketStream, rest: bytes) -> None:
        await stream.send_all(frame(0x1, b"last"))
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        port, _ = await serve(nursery, handler)
        conn = await connect_ws("127.0.0.1", port, "/", [], ssl_context=None, timeout=5)
        texts: list[bytes] = []
        with pytest.raises(WsClosed) as info:
            while True:
                texts += await conn.receive_texts()
        nursery.cancel_scope.cancel()
    assert texts == [b"last"] and info.value.code == 1006


async def test_frames_sent_with_the_upgrade_answer_are_read(autojump_clock: trio.testing.MockClock) -> None:
    def answer(head: bytes) -> bytes:
        return upgrade()(head) + frame(0x1, b"early")

    async with trio.open_nursery() as nursery:
        port, _ = await serve(nursery, lambda stream, rest: trio.sleep_forever(), answer)
        conn = await connect_ws("127.0.0.1", port, "/", [], ssl_context=None, timeout=5)
        assert await conn.receive_texts() == [b"early"]
        nursery.cancel_scope.cancel()


async def test_a_refused_upgrade_and_a_bad_accept(autojump_clock: trio.testing.MockClock) -> None:
    def refuse(head: bytes) -> bytes:
        return b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 9\r\n\r\nno thanks"

    async with trio.open_nursery() as nursery:
        port, _ = await serve(nursery, lambda stream, rest: trio.sleep_forever(), refuse)
        with pytest.raises(WsRefused) as refused:
            await connect_ws("127.0.0.1", port, "/", [], ssl_context=None, timeout=5)
        port, _ = await serve(nursery, lambda stream, rest: trio.sleep_forever(), upgrade(b"not-the-accept-key"))
        with pytest.raises(WsClosed, match="not a valid WebSocket upgrade"):
            await connect_ws("127.0.0.1", port, "/", [], ssl_context=None, timeout=5)
        nursery.cancel_scope.cancel()
    assert refused.value.status == 426 and refused.value.body == b"no thanks"


def test_client_frames_are_masked_and_sized() -> None:
    for size in (0, 5, 125, 126, 65535, 65536, 100000):
        payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
        data = encode_frame(0x1, payload)
        opcode, got, used = read_client_frame(data)
        assert (opcode, got, used) == (0x1, payload, len(data))
