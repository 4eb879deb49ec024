"""The Responses WebSocket transport ("WebSocket mode", PROTOCOL §5), with incremental input.

One connection per session (its :meth:`~WebSocketTransport.session_state`), opened on the first
request and reused across requests and turns; a connection carries one response at a time. Each
request is one ``response.create`` text frame: the body of ``POST /responses`` without ``stream``.
The answer is the same ``response.*`` events as the SSE stream, one JSON text frame each, decoded
by the same decoder (everything one network read completed is one batch, as on HTTP).

**Incremental input.** When a request's input is exactly the previous request's input, plus that
response's output, plus new items, and the previous response completed on this same connection,
only the new items are sent, with ``previous_response_id`` (the server keeps that response in
memory for the connection, even with ``store: false``). Anything else — a new connection, history
edited or compacted, a retry after a failed response — sends the full input.
``previous_response_not_found`` re-sends the full input at once, and
``websocket_connection_limit_reached`` (a connection lives at most 60 minutes) reconnects and
re-sends, both without spending the retry budget (they happen before any event was delivered).

**Faults** map as on HTTP: an ``error`` frame (``{"type": "error", "status": 429, "error": {...}}``)
goes through the same status × code table as an HTTP error body; a drop or a close frame
mid-response, or no frame for ``idle_timeout`` seconds, is a retryable
:class:`~kernel.errors.StreamError`, and the next attempt opens a new connection.

**Fallback.** An endpoint that answers the upgrade with anything but 101 (vLLM, Ollama, most
proxies) has no WebSocket mode: with ``fallback`` (the actor's HTTP transport, under
``transport="auto"``) the request goes over HTTP at once, and so does every later request of the
actor's sessions (the refusal is remembered by the transport, one per actor: not for the process,
where another server may later listen on the same host and port). A session that spends its retry budget on WebSocket is moved to HTTP by
the kernel's sampling loop (``try_switch_fallback_transport``), for the rest of the session.

Secrets: the API key is sent only in the upgrade request's ``Authorization`` header; it is never
part of a frame, an error message or an event.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import attrs
import msgspec
import trio

from kernel.errors import InvalidRequest, KernelError, StreamError
from kernel.stream import OutputItemDone, TransportUsed

from ._http_errors import error_from_http, redact
from ._http_sse import default_ssl_context
from ._responses import input_wire
from ._wire import encode_json
from ._ws_conn import WsClosed, WsConnection, WsRefused, connect_ws
from .transport import ModelTransport, StreamRequest, deliver_batch

if TYPE_CHECKING:
    from ._actor import ModelSettings

__all__ = ["WebSocketTransport", "websocket_url"]

CONNECTION_LIFETIME: Final = 55 * 60.0
"""Seconds after which a connection is replaced before its next request (the service closes
connections at 60 minutes; ``websocket_connection_limit_reached`` is handled too)."""

_NOT_SENT: Final = frozenset({"stream", "background"})


def websocket_url(base_url: str) -> str:
    """``http://h/v1`` → ``ws://h/v1/responses`` (``https`` → ``wss``)."""
    url = base_url.rstrip("/") + "/responses"
    if url.startswith("https://"):
        return "wss://" + url[len("https://") :]
    if url.startswith("http://"):
        return "ws://" + url[len("http://") :]
    raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")


@attrs.define(eq=False)
class _WsSession:
    """One session's WebSocket state: its connection and the chain the server remembers on it."""

    lock: trio.Lock = attrs.field(factory=trio.Lock)
    conn: WsConnection | None = None
    response_id: str | None = None
    """The last response completed on ``conn`` (the server remembers only that one)."""
    sent_input: list[Any] = attrs.field(factory=list)
    """The full input of that response's request."""
    output: list[Any] = attrs.field(factory=list)
    """That response's output items, as the next request's input carries them."""
    in_flight: bool = False
    """A request was sent and its terminal frame not read yet (the socket's state is unknown)."""

    def forget(self) -> None:
        self.response_id = None
        self.sent_input = []
        self.output = []


class _Resend(Exception):
    """Send the request again with the full input (on a new connection when ``reconnect``)."""

    def __init__(self, reconnect: bool) -> None:
        self.reconnect = reconnect


class WebSocketTransport:
    """Responses streaming over one WebSocket per session (see the module docstring).

    ``fallback``: the transport to use when the endpoint has no WebSocket mode (the upgrade
    refused); without one, a refused upgrade fails the request (not retryable).
    Counters (for tests and benchmarks): ``requests``, ``incremental_requests``,
    ``connections_opened``, ``bytes_sent`` (frames, upgrade excluded), ``http_fallbacks``.
    """

    name = "websocket"

    def __init__(
        self,
        settings: ModelSettings,
        *,
        fallback: ModelTransport | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if settings.wire != "responses":
            raise ValueError("the WebSocket transport speaks the Responses wire only (wire='responses')")
        self.settings = settings
        self.fallback = fallback
        self.url = websocket_url(settings.base_url)
        parts = urlsplit(self.url)
        self._tls = parts.scheme == "wss"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._tls else 80)
        self._target = parts.path or "/"
        if parts.query:
            self._target += "?" + parts.query
        headers = [("User-Agent", "trio-agent-kernel")]
        if settings.api_key:
            headers.append(("Authorization", f"Bearer {settings.api_key}"))
        headers.extend(settings.extra_headers)
        self._headers = tuple(headers)
        self._ssl_context = ssl_context
        self.refused_status: int | None = None
        """The status the endpoint answered the upgrade with when it refused it (remembered for
        this transport's life, so for its ModelActor's: not for the process, where a different
        server may later listen on the same host and port)."""
        self._open: set[WsConnection] = set()
        self.requests = 0
        self.incremental_requests = 0
        self.connections_opened = 0
        self.bytes_sent = 0
        self.http_fallbacks = 0

    def __repr__(self) -> str:
        return f"WebSocketTransport(url={self.url!r})"

    @asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        """Nothing shared to open (connections are per session); on exit every connection still
        open is closed cleanly."""
        try:
            yield
        finally:
            with trio.CancelScope(shield=True):
                for conn in list(self._open):
                    await conn.aclose()
                self._open.clear()

    def session_state(self) -> _WsSession:
        """A new session's connection slot and response chain."""
        return _WsSession()

    async def close_session_state(self, state: Any) -> None:
        """Close the session's connection (the session ended). Never raises."""
        if isinstance(state, _WsSession) and state.conn is not None:
            conn, state.conn = state.conn, None
            self._open.discard(conn)
            await conn.aclose()

    @property
    def refused(self) -> bool:
        """Whether this endpoint refused the upgrade earlier (on this transport)."""
        return self.refused_status is not None

    async def stream(self, request: StreamRequest) -> None:
        """Send the request as ``response.create`` and deliver its events (see the module
        docstring); over ``fallback`` when the endpoint has no WebSocket mode."""
        if self.refused_status is not None:
            await self._over_fallback(request, self.refused_status)
            return
        state = request.state
        if not isinstance(state, _WsSession):
            raise StreamError("the WebSocket transport was given another transport's session state")
        async with state.lock:
            try:
                for _ in range(3):  # resends that spend no retry budget
                    try:
                        await self._attempt(request, state)
                        return
                    except _Resend as resend:
                        state.forget()
                        if resend.reconnect:
                            await self._drop(state)
                raise StreamError("the WebSocket endpoint kept refusing the response chain")
            except WsRefused as refused:
                self.refused_status = refused.status
            except BaseException:
                # a failed, interrupted or cancelled response: the server forgot the chain; a
                # socket with a response still in flight is in an unknown state, so it goes too
                state.forget()
                if state.in_flight:
                    state.in_flight = False
                    with trio.CancelScope(shield=True):
                        await self._drop(state)
                raise
        assert self.refused_status is not None
        await self._over_fallback(request, self.refused_status)

    async def _over_fallback(self, request: StreamRequest, status: int) -> None:
        if self.fallback is None:
            raise InvalidRequest(
                f"{self.url} refused the WebSocket upgrade (HTTP {status}): the endpoint has no "
                "WebSocket mode; use transport='http' or 'auto'"
            )
        self.http_fallbacks += 1
        await self.fallback.stream(request)

    async def _drop(self, state: _WsSession) -> None:
        conn, state.conn = state.conn, None
        if conn is not None:
            self._open.discard(conn)
            await conn.aclose()

    async def _connection(self, state: _WsSession) -> WsConnection:
        conn = state.conn
        if conn is not None and not conn.closed and trio.current_time() - conn.opened_at < CONNECTION_LIFETIME:
            return conn
        await self._drop(state)
        state.forget()
        s = self.settings
        context = self._ssl_context or (default_ssl_context() if self._tls else None)
        try:
            conn = await connect_ws(
                self._host, self._port, self._target, self._headers, ssl_context=context, timeout=s.connect_timeout
            )
        except WsRefused:
            raise
        except trio.TooSlowError:
            raise StreamError(
                f"ConnectTimeout: no WebSocket connection to {self._authority()} within {s.connect_timeout:g}s"
            ) from None
        except (OSError, WsClosed, ssl.SSLError, trio.BrokenResourceError) as exc:
            # a failed TLS handshake is a BrokenResourceError caused by the ssl.SSLError
            cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ else exc
            raise StreamError(
                redact(f"ConnectError: cannot open a WebSocket to {self._authority()}: {cause}")
            ) from None
        self.connections_opened += 1
        self._open.add(conn)
        state.conn = conn
        return conn

    def _authority(self) -> str:
        return f"{self._host}:{self._port}"

    def _frame(self, state: _WsSession, body: dict[str, Any]) -> tuple[bytes, bool]:
        """The ``response.create`` frame for ``body``: incremental when the chain allows it."""
        full = body.get("input")
        message: dict[str, Any] = {"type": "response.create"}
        incremental = False
        for key, value in body.items():
            if key not in _NOT_SENT:
                message[key] = value
        if state.response_id is not None and isinstance(full, list):
            n_in = len(state.sent_input)
            n = n_in + len(state.output)
            if len(full) >= n and full[:n_in] == state.sent_input and full[n_in:n] == state.output:
                message["input"] = full[n:]
                message["previous_response_id"] = state.response_id
                incremental = True
        return encode_json(message), incremental

    async def _attempt(self, request: StreamRequest, state: _WsSession) -> None:
        old = state.conn
        conn = await self._connection(state)
        reused = conn is old
        text, incremental = self._frame(state, request.body)
        sent_before = conn.bytes_sent
        state.in_flight = True
        try:
            await conn.send_text(text)
        except WsClosed as exc:
            if reused:  # the server closed the idle socket: a new one, nothing was lost
                raise _Resend(reconnect=True) from None
            raise StreamError(f"websocket send failed: {exc}") from None
        self.requests += 1
        self.incremental_requests += incremental
        self.bytes_sent += conn.bytes_sent - sent_before
        outputs = await self._pump(request, state, conn, incremental, reused)
        state.in_flight = False
        body_input = request.body.get("input")
        state.sent_input = list(body_input) if isinstance(body_input, list) else []
        state.output = outputs
        state.response_id = request.decoder.response_id  # type: ignore[attr-defined]

    async def _pump(
        self, request: StreamRequest, state: _WsSession, conn: WsConnection, incremental: bool, reused: bool
    ) -> list[Any]:
        """Read frames until the response ends; deliver one batch per network read. Returns the
        response's output items in request-input form."""
        decoder = request.decoder
        idle_timeout = self.settings.idle_timeout
        outputs: list[Any] = []
        delivered = False
        first: list[Any] | None = [TransportUsed("websocket", incremental)]
        feed = decoder.feed_events  # type: ignore[attr-defined]  # (the Responses decoder)
        now = trio.current_time
        with trio.CancelScope() as idle_scope:
            while True:
                idle_scope.deadline = now() + idle_timeout
                try:
                    texts = await conn.receive_texts()
                except WsClosed as exc:
                    if reused and not delivered and exc.code == 1006:
                        # the server had closed the reused idle socket before our request: resend
                        raise _Resend(reconnect=True) from None
                    raise StreamError(f"websocket closed before response.completed: {exc}") from None
                if not texts:
                    continue
                events = feed(self._events_of(texts, delivered, state))
                if decoder.done and decoder.error is None:
                    request.completed = True
                if first is not None and events:
                    events = first + events
                    first = None
                if events:
                    for event in events:
                        if type(event) is OutputItemDone:
                            outputs.append(input_wire(event.item))  # as the next request carries it
                    delivered = True
                    await deliver_batch(request, events, idle_scope)
                if decoder.done and decoder.error is None:
                    state.in_flight = False  # completed: the socket is clean again (after a failure
                    # or a malformed frame the rest of that response may still be on its way)
                if decoder.error is not None:
                    raise decoder.error
                if decoder.done:
                    return outputs
        raise StreamError(f"idle timeout: no frame from the model for {idle_timeout:g}s")

    def _events_of(self, texts: list[bytes], delivered: bool, state: _WsSession) -> list[tuple[None, bytes]]:
        """The frames as whole events for the decoder; an ``error`` frame (nested, with an
        HTTP-like status, unlike the SSE ``error`` event) is mapped here."""
        out: list[tuple[None, bytes]] = []
        for text in texts:
            if b'"error"' in text[:96] and _is_error_frame(text):
                state.in_flight = False  # the error frame ends the request; the socket stays usable
                raise self._error_frame(text, delivered)
            out.append((None, text))
        return out

    def _error_frame(self, text: bytes, delivered: bool) -> BaseException:
        obj = msgspec.json.decode(text)
        error = obj.get("error") if isinstance(obj.get("error"), dict) else {}
        code = error.get("code")
        if not delivered:
            if code == "previous_response_not_found":
                return _Resend(reconnect=False)
            if code == "websocket_connection_limit_reached":
                return _Resend(reconnect=True)
        status = obj.get("status")
        if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
            status = 400 if error.get("type") == "invalid_request_error" else 500
        raw_headers = obj.get("headers")
        headers = {str(k): str(v) for k, v in raw_headers.items()} if isinstance(raw_headers, dict) else {}
        mapped: KernelError = error_from_http(
            status,
            headers,
            msgspec.json.encode({"error": error}),
            wire="responses",
            max_retry_after=self.settings.max_retry_after,
        )
        return mapped


def _is_error_frame(text: bytes) -> bool:
    try:
        obj = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return False
    # the wrapped form ({"type": "error", "status", "error": {...}}); the flat in-stream ``error``
    # event ({"type": "error", "code", "message"}) goes to the decoder, as on HTTP
    return isinstance(obj, dict) and obj.get("type") == "error" and isinstance(obj.get("error"), dict)
