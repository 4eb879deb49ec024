"""A WebSocket client connection on Trio's own streams, with ``wsproto`` doing the framing.

Why not a WebSocket library: the transport reads a response's frames in its request task, one
network read at a time, and hands everything that read completed to the decoder in one batch —
the same shape as the HTTP+SSE path. A library with a background reader task adds a task switch
and a channel hop per message (``trio-websocket``) or an anyio task group and memory streams
(``httpx2``'s ``websocket()``); ``benchmarks/bench_ws_clients.py`` measures the three side by side.
``wsproto`` is sans-I/O (the same author and design as ``h11``, which the project already uses),
so the I/O stays plain Trio: cancellation, deadlines and ``aclose`` behave as everywhere else.

A :class:`WsConnection` is used by one task at a time (the transport holds a per-session lock).
Pings are answered as they are read; the server's close is answered and surfaces as
:class:`WsClosed`; a TCP drop as :class:`WsClosed` with code 1006.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

__all__ = ["WsConnection", "WsClosed", "WsRefused", "connect_ws"]

_RECEIVE_SIZE = 65536
_MAX_REJECT_BODY = 16384


class WsClosed(Exception):
    """The connection closed: ``code`` is the close code (1006: dropped without a close frame)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"websocket closed (code {code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class WsRefused(Exception):
    """The server answered the upgrade with an HTTP status other than 101."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"websocket upgrade refused with HTTP {status}")
        self.status = status
        self.body = body


class WsConnection:
    """One open client connection (from :func:`connect_ws`)."""

    __slots__ = ("_stream", "_ws", "_text", "_pending_close", "opened_at", "bytes_sent", "closed")

    def __init__(self, stream: trio.abc.Stream, ws: WSConnection, opened_at: float) -> None:
        self._stream = stream
        self._ws = ws
        self._text: list[str] = []  # a message arriving in fragments
        self._pending_close: WsClosed | None = None  # a close read with messages before it
        self.opened_at = opened_at
        self.bytes_sent = 0
        self.closed = False

    async def send_text(self, text: str) -> None:
        """Send one text message. Raises :class:`WsClosed` when the connection is gone."""
        try:
            data = self._ws.send(TextMessage(data=text))
        except LocalProtocolError as exc:
            raise WsClosed(1006, f"cannot send: {exc}") from None
        await self._send(data)

    async def _send(self, data: bytes) -> None:
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.closed = True
            raise WsClosed(1006, f"connection lost while sending ({type(exc).__name__})") from None
        self.bytes_sent += len(data)

    async def receive_texts(self) -> list[str]:
        """Wait for one network read and return the text messages it completed (possibly none:
        a ping, a fragment). Raises :class:`WsClosed` at a close frame or EOF (after returning the
        messages that arrived before the close frame)."""
        if self._pending_close is not None:
            raise self._pending_close
        try:
            data = await self._stream.receive_some(_RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.closed = True
            raise WsClosed(1006, f"connection lost ({type(exc).__name__})") from None
        if not data:
            self.closed = True
            raise WsClosed(1006, "connection dropped without a close frame")
        ws = self._ws
        try:
            ws.receive_data(bytes(data))
            out: list[str] = []
            for event in ws.events():
                kind = type(event)
                if kind is TextMessage:
                    if event.message_finished:  # type: ignore[attr-defined]
                        if self._text:
                            self._text.append(event.data)  # type: ignore[attr-defined]
                            out.append("".join(self._text))
                            self._text.clear()
                        else:
                            out.append(event.data)  # type: ignore[attr-defined]
                    else:
                        self._text.append(event.data)  # type: ignore[attr-defined]
                elif kind is Ping:
                    await self._send(ws.send(event.response()))  # type: ignore[attr-defined]
                elif kind is CloseConnection:
                    await self._answer_close(event)  # type: ignore[arg-type]
                    closed = WsClosed(event.code, event.reason or "")  # type: ignore[attr-defined]
                    if not out:
                        raise closed
                    self._pending_close = closed
                    break
                elif kind is BytesMessage:
                    pass  # the Responses protocol sends text only
        except RemoteProtocolError as exc:
            self.closed = True
            raise WsClosed(1002, f"protocol error: {exc}") from None
        return out

    async def _answer_close(self, event: CloseConnection) -> None:
        self.closed = True
        if self._ws.state is ConnectionState.REMOTE_CLOSING:
            try:
                await self._stream.send_all(self._ws.send(event.response()))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, LocalProtocolError):
                pass
        await trio.aclose_forcefully(self._stream)

    async def aclose(self, code: int = 1000) -> None:
        """Close cleanly (a close frame, then the socket), within 1 second; never raises."""
        if self.closed:
            await trio.aclose_forcefully(self._stream)
            return
        self.closed = True
        with trio.move_on_after(1.0) as scope:
            scope.shield = True
            try:
                if self._ws.state is ConnectionState.OPEN:
                    await self._stream.send_all(self._ws.send(CloseConnection(code=code)))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, LocalProtocolError):
                pass
        await trio.aclose_forcefully(self._stream)


async def connect_ws(
    host: str,
    port: int,
    target: str,
    headers: Sequence[tuple[str, str]],
    *,
    ssl_context: ssl.SSLContext | None,
    timeout: float,
) -> WsConnection:
    """Open a TCP (TLS when ``ssl_context`` is given) connection and upgrade it. Raises
    :class:`WsRefused` for a non-101 answer, :class:`OSError` / :class:`WsClosed` when the
    connection fails, :class:`trio.TooSlowError` after ``timeout`` seconds."""
    with trio.fail_after(timeout):
        tcp = await trio.open_tcp_stream(host, port)
        stream: trio.abc.Stream = tcp
        try:
            if ssl_context is not None:
                tls = trio.SSLStream(tcp, ssl_context, server_hostname=host)
                await tls.do_handshake()
                stream = tls
            ws = WSConnection(ConnectionType.CLIENT)
            default_port = 443 if ssl_context is not None else 80
            authority = host if port == default_port else f"{host}:{port}"
            if ":" in host and not host.startswith("["):
                authority = f"[{host}]" if port == default_port else f"[{host}]:{port}"
            request = Request(
                host=authority,
                target=target,
                extra_headers=[(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers],
            )
            await stream.send_all(ws.send(request))
            conn = WsConnection(stream, ws, trio.current_time())
            await _await_accept(stream, ws)
            return conn
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise


async def _await_accept(stream: trio.abc.Stream, ws: WSConnection) -> None:
    rejected: int | None = None
    body = bytearray()
    while True:
        data = await stream.receive_some(_RECEIVE_SIZE)
        if not data:
            if rejected is not None:
                raise WsRefused(rejected, bytes(body))
            raise WsClosed(1006, "connection closed during the websocket upgrade")
        try:
            ws.receive_data(bytes(data))
        except RemoteProtocolError as exc:
            raise WsClosed(1002, f"bad upgrade response: {exc}") from None
        for event in ws.events():
            if isinstance(event, AcceptConnection):
                return
            if isinstance(event, RejectConnection):
                rejected = event.status_code
                if not event.has_body:
                    raise WsRefused(rejected, b"")
            elif isinstance(event, RejectData):
                if len(body) < _MAX_REJECT_BODY:
                    body += event.data
                if event.body_finished:
                    raise WsRefused(rejected or 400, bytes(body[:_MAX_REJECT_BODY]))
