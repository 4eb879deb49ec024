"""Responses WebSocket mode (PROTOCOL §5) for the scripted server, with ``wsproto`` framing.

The HTTP server (``_server``) hands a ``GET /v1/responses`` carrying ``Upgrade: websocket`` to
:func:`serve_upgrade` on the same connection. The handshake is refused with an HTTP error when the
server's ``websocket`` option or a :class:`RefuseUpgrade` reply says so (the connection stays
HTTP); otherwise the request's bytes (rebuilt from h11's ``Request``) go to a server-side
``WSConnection``, which answers 101, and h11's unread bytes follow them.

A connection then runs two tasks: a reader (answers pings, answers the client's close, queues
each complete text message) and a responder that answers the queued ``response.create`` frames
one after another (one response at a time per connection). Each one is recorded and its reply
chosen exactly as for an HTTP POST (``ScriptedServer._select``); its events are the Responses
renderer's SSE events with the ``event:``/``data:`` framing taken off, one text frame each.

Per-connection state as the service keeps it: the most recent response only (its id, and its full
input followed by its output). ``previous_response_id`` equal to it continues that chain; any other
id is answered ``previous_response_not_found``. A ``response.create`` that does not complete
(error frame, ``response.failed`` / ``response.incomplete`` / ``error`` event, a stream cut short)
forgets the remembered response. ``generate: false`` creates an empty response (no reply consumed)
that later requests can continue.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, Literal

import attrs
import h11
import msgspec
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from ._compact import input_items
from ._render import Rendered, render_responses
from ._script import (
    Disconnect,
    ErrorEvent,
    Failed,
    HttpError,
    Incomplete,
    Malformed,
    Reply,
    Stall,
    WebSocketClose,
    WebSocketConnectionLimit,
)
from ._server import (
    ScriptedServer,
    _Incoming,
    _send_error,
    parse_headers,
    standalone_error,
)

__all__ = ["serve_upgrade"]

_RECEIVE_SIZE: Final = 65536
CLOSE_WAIT: Final = 5.0
"""Seconds the server waits for the client's close frame after sending its own."""

_Outcome = Literal["done", "stopped", "ended"]
"""How writing a response went: all events sent; cut short with the connection kept open
(``Disconnect(clean=True)``); the connection is over."""


async def serve_upgrade(
    server: ScriptedServer, stream: trio.SocketStream, conn: h11.Connection, request: h11.Request
) -> bool:
    """Answer a WebSocket upgrade request (its body, if any, already read by ``conn``).

    Returns ``True`` when the upgrade was refused with an HTTP error and the connection goes on as
    HTTP; ``False`` when it was upgraded and its WebSocket session has ended (close the socket)."""
    headers = parse_headers(request)
    refusal = server._take_refusal(headers)
    if refusal is not None:
        server.upgrades_refused += 1
        await _send_error(stream, conn, refusal.to_http_error(), {})
        return True

    ws = WSConnection(ConnectionType.SERVER)
    try:
        ws.receive_data(_request_bytes(request))
        events = list(ws.events())
    except RemoteProtocolError as exc:
        server.upgrades_refused += 1
        hint = exc.event_hint
        status = getattr(hint, "status_code", 400)
        error = HttpError(
            status=status if 400 <= status <= 599 else 400,
            message=f"bad WebSocket handshake: {exc}",
            type="invalid_request_error",
            headers={k.decode("latin-1"): v.decode("latin-1") for k, v in getattr(hint, "headers", [])},
        )
        await _send_error(stream, conn, error, {})
        return True
    assert len(events) == 1 and isinstance(events[0], Request), events
    target = events[0].target
    server.websocket_connections_opened += 1
    # no extensions: permessage-deflate offers are declined (clients go on uncompressed)
    await stream.send_all(ws.send(AcceptConnection()))
    session = _WsSession(
        server=server,
        stream=stream,
        ws=ws,
        path=target.partition("?")[0],
        headers=headers,
        opened_at=trio.current_time(),
    )
    await session.run(conn.trailing_data[0])
    return False


def _request_bytes(request: h11.Request) -> bytes:
    """The request head again, as the client sent it (the names' case kept)."""
    lines = [b"GET " + request.target + b" HTTP/1.1"]
    lines += [name + b": " + value for name, value in request.headers.raw_items()]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _frames(rendered: Rendered) -> list[str]:
    """The JSON of each rendered SSE event (``event: T\\ndata: {json}\\n\\n``): its data line."""
    out: list[str] = []
    for event in rendered.events:
        start = event.find(b"data: ") + 6
        out.append(event[start:-2].decode())
    return out


def _error_frame(
    status: int,
    error: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
) -> str:
    frame: dict[str, Any] = {"type": "error", "status": status, "error": dict(error)}
    if headers:
        frame["headers"] = dict(headers)
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def _invalid(message: str, code: str | None = None, param: str | None = None) -> str:
    """A 400 ``invalid_request_error`` frame."""
    return _error_frame(400, {"type": "invalid_request_error", "code": code, "message": message, "param": param})


def _http_error_frame(error: HttpError, extra_headers: Mapping[str, str]) -> str:
    """An :class:`HttpError` as the WebSocket error frame: the HTTP body's ``error`` object
    nested under the status; its headers (``Retry-After`` included) as ``headers``."""
    body = error.body
    inner: Mapping[str, Any]
    if isinstance(body, str):
        inner = {"type": error.type, "code": error.code, "message": body, "param": None}
    elif body is not None:
        nested = body.get("error")
        inner = nested if isinstance(nested, Mapping) else body
    else:
        inner = {"type": error.type, "code": error.code, "message": error.message, "param": None, **error.error_fields}
    headers = {**extra_headers, **error.headers}
    if error.retry_after is not None:
        value = error.retry_after
        headers["retry-after"] = value if isinstance(value, str) else f"{value:g}"
    return _error_frame(error.status, inner, headers)


@attrs.frozen
class _Remembered:
    """The connection's most recent response: its id and its full input followed by its output."""

    response_id: str
    chain: list[Any]


class _Ended(Exception):
    """The connection is over (closed, dropped, or the client is gone)."""


@attrs.define(eq=False)
class _WsSession:
    """One upgraded connection."""

    server: ScriptedServer
    stream: trio.SocketStream
    ws: WSConnection
    path: str
    headers: dict[str, str]
    opened_at: float
    last: _Remembered | None = None
    _send_lock: trio.Lock = attrs.field(factory=trio.Lock)
    _cancel: trio.CancelScope = attrs.field(factory=trio.CancelScope)

    async def run(self, trailing: bytes) -> None:
        """Serve the connection until either side ends it; the caller closes the socket."""
        send, receive = trio.open_memory_channel[str | bytes](1024)
        with self._cancel:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._respond_loop, receive)
                await self._read_loop(send, trailing)
                self._cancel.cancel()

    def _end(self) -> None:
        self._cancel.cancel()

    # ---- reading ----------------------------------------------------------------------------

    async def _read_loop(self, requests: trio.MemorySendChannel[str | bytes], data: bytes) -> None:
        """Read frames until the client closes or hangs up: pings answered, the client's close
        answered, each complete message queued for the responder."""
        text: list[str] = []
        binary = bytearray()
        try:
            while True:
                if data:
                    self.ws.receive_data(data)
                for event in self.ws.events():
                    if isinstance(event, Ping):
                        await self._send_event(event.response())
                    elif isinstance(event, CloseConnection):
                        if self.ws.state is ConnectionState.REMOTE_CLOSING:
                            await self._send_event(event.response())
                        elif self.ws.state is ConnectionState.OPEN:
                            # a protocol error in the client's frames: close with its code
                            await self._send_event(CloseConnection(code=event.code, reason=event.reason))
                        return  # else the answer to our close
                    elif isinstance(event, TextMessage):
                        text.append(event.data)
                        if event.message_finished:
                            await requests.send("".join(text))
                            text.clear()
                    elif isinstance(event, BytesMessage):
                        binary += event.data
                        if event.message_finished:
                            await requests.send(bytes(binary))
                            binary.clear()
                data = await self.stream.receive_some(_RECEIVE_SIZE)
                if not data:
                    return  # the client hung up without a close frame
        except (trio.BrokenResourceError, trio.ClosedResourceError, LocalProtocolError, _Ended):
            return

    # ---- writing ----------------------------------------------------------------------------

    async def _send_event(self, event: Any) -> None:
        async with self._send_lock:
            try:
                data = self.ws.send(event)
            except LocalProtocolError:
                raise _Ended from None
            await self.stream.send_all(data)

    async def _send_texts(self, texts: list[str]) -> None:
        if not texts:
            return
        async with self._send_lock:
            if self.ws.state is not ConnectionState.OPEN:
                raise _Ended
            data = b"".join([self.ws.send(TextMessage(data=t)) for t in texts])
            await self.stream.send_all(data)

    async def _close(self, code: int | None, reason: str = "") -> None:
        """Close the connection: a close frame with ``code`` then (after the client's close
        frame, or :data:`CLOSE_WAIT` seconds) the socket; ``None``: the socket at once."""
        if code is not None:
            await self._send_event(CloseConnection(code=code, reason=reason))
            await trio.sleep(CLOSE_WAIT)  # the reader ends the session at the client's close
        self._end()

    # ---- responding -------------------------------------------------------------------------

    async def _respond_loop(self, requests: trio.MemoryReceiveChannel[str | bytes]) -> None:
        try:
            async for message in requests:
                if not await self._answer(message):
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError, _Ended):
            pass
        self._end()

    async def _answer(self, message: str | bytes) -> bool:
        """Answer one client message; returns whether the connection goes on."""
        server = self.server
        if isinstance(message, bytes):
            await self._send_texts([_invalid("binary frames are not supported: send JSON text frames")])
            return True
        try:
            body: Any = msgspec.json.decode(message)
        except msgspec.DecodeError:
            body = None
        if not isinstance(body, dict):
            server._record(self._incoming(body, bad_json=True), None)
            await self._send_texts([_invalid("a message must be a JSON object", code="invalid_json")])
            return True
        kind = body.get("type")
        if kind != "response.create":
            server._record(self._incoming(body), None)
            message = f"unsupported event type {kind!r}: the scripted server takes response.create"
            await self._send_texts([_invalid(message, code="unknown_event_type", param="type")])
            return True

        max_age = server.websocket_max_age
        if max_age is not None and trio.current_time() - self.opened_at >= max_age:
            incoming = self._incoming(body)
            server._record(incoming, None, server._session_key(incoming))
            return await self._connection_limit(WebSocketConnectionLimit())
        if body.get("background") is True:
            incoming = self._incoming(body)
            server._record(incoming, None, server._session_key(incoming))
            self.last = None
            message = "background responses are not supported in WebSocket mode"
            await self._send_texts([_invalid(message, code="unsupported_parameter", param="background")])
            return True

        previous = body.get("previous_response_id")
        chain: list[Any] = []
        if previous is not None:
            if self.last is None or previous != self.last.response_id:
                incoming = self._incoming(body)
                server._record(incoming, None, server._session_key(incoming))
                self.last = None
                frame = _invalid(
                    f"Previous response with id '{previous}' not found.",
                    code="previous_response_not_found",
                    param="previous_response_id",
                )
                await self._send_texts([frame])
                return True
            chain = self.last.chain
        full_input = chain + input_items(body.get("input"))
        incoming = self._incoming(body, full_input=full_input)
        self.last = None  # a response.create that does not complete forgets the chain

        if body.get("generate") is False:
            server._record(incoming, None, server._session_key(incoming))
            server._warmups += 1
            rendered = render_responses(Reply(), tag=f"warmup{server._warmups}", model=server.script.model)
            return await self._stream(Reply(), _frames(rendered), rendered.is_delta, full_input)

        selected = server._select(incoming)
        if isinstance(selected, HttpError):
            await self._send_texts([_http_error_frame(selected, {})])
            return True
        reply = selected.reply
        if reply.connection_limit is not None:
            return await self._connection_limit(reply.connection_limit)
        error = standalone_error(reply, "a WebSocket response.create")
        if error is not None:
            await self._send_texts([_http_error_frame(error, reply.headers)])
            return True
        rendered = server._render_selected(selected, "responses", False)
        return await self._stream(reply, _frames(rendered), rendered.is_delta, full_input)

    def _incoming(self, body: Any, *, bad_json: bool = False, full_input: list[Any] | None = None) -> _Incoming:
        return _Incoming(
            method="GET",
            path=self.path,
            headers=self.headers,
            body=body,
            bad_json=bad_json,
            endpoint="responses",
            transport="websocket",
            full_input=full_input,
        )

    async def _connection_limit(self, limit: WebSocketConnectionLimit) -> bool:
        self.last = None
        await self._send_texts([_http_error_frame(limit.to_http_error(), {})])
        await self._close(limit.close_code)
        return False

    async def _stream(self, reply: Reply, frames: list[str], is_delta: list[bool], full_input: list[Any]) -> bool:
        """Send a response's frames with the reply's faults; remember it when it completed.
        Returns whether the connection goes on."""
        outcome = await self._write(reply, frames, is_delta)
        if outcome == "ended":
            return False
        if outcome == "done" and not isinstance(reply.terminal, (Failed, Incomplete, ErrorEvent)):
            final = json.loads(frames[-1])
            response = final.get("response")
            if final.get("type") == "response.completed" and isinstance(response, dict):
                self.last = _Remembered(response["id"], full_input + list(response.get("output") or []))
        return True

    async def _write(self, reply: Reply, frames: list[str], is_delta: list[bool]) -> _Outcome:
        """The frames in batches of ``events_per_write``, with the transport faults at their
        positions and ``delta_delay`` before each delta (as on HTTP)."""
        per_write = reply.events_per_write or self.server.events_per_write
        n = len(frames)
        at: dict[int, list[Disconnect | Malformed | Stall | WebSocketClose]] = {}
        for fault in reply.transport_faults:
            at.setdefault(min(fault.after_events, n), []).append(fault)
        delay = reply.delta_delay
        pending: list[str] = []

        async def flush() -> None:
            batch = pending[:]
            pending.clear()
            await self._send_texts(batch)

        for i in range(n + 1):
            for fault in at.get(i, ()):
                if isinstance(fault, Stall):
                    await flush()
                    await trio.sleep(fault.seconds)  # the reader still answers pings
                elif isinstance(fault, Malformed):
                    pending.append(fault.data)
                elif isinstance(fault, WebSocketClose):
                    await flush()
                    await self._close(fault.code, fault.reason)
                    return "ended"
                else:
                    await flush()
                    if fault.clean:
                        return "stopped"  # nothing marks the end: the client sees a stalled stream
                    if fault.mid_event and i < n:
                        async with self._send_lock:
                            raw = self.ws.send(TextMessage(data=frames[i]))
                            await self.stream.send_all(raw[: len(raw) // 2])
                    await self._close(None)
                    return "ended"
            if i == n:
                break
            if delay and is_delta[i]:
                await flush()
                await trio.sleep(delay)
            pending.append(frames[i])
            if len(pending) >= per_write:
                await flush()
        await flush()
        return "done"
