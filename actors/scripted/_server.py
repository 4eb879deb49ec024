"""The HTTP/1.1 server: h11 on ``trio.serve_tcp``, keep-alive, chunked SSE bodies.

One task per connection (``trio.serve_tcp``'s handler nursery, owned by
:func:`open_scripted_server`); requests on a connection are served one after another (HTTP/1.1
has no pipelining in practice). Every connection error is local to its connection: a client that
hangs up mid-stream ends that task, never the server. A ``GET /v1/responses`` with ``Upgrade:
websocket`` is handed to ``_ws`` (Responses WebSocket mode) on the same connection.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Literal

import attrs
import h11
import msgspec
import trio

from ._compact import (
    compact_output,
    compaction_item,
    compaction_threshold,
    estimate_tokens,
    input_items,
    window_refusal,
    with_compaction,
)
from ._render import Rendered, malformed_event, render_chat, render_responses
from ._script import (
    SESSION_BODY_FIELDS,
    Disconnect,
    HttpError,
    Malformed,
    RefuseUpgrade,
    Reply,
    Script,
    ServerOptions,
    SessionScripts,
    Stall,
    Text,
    Usage,
    WebSocketClose,
)

__all__ = ["RecordedRequest", "Router", "ScriptedServer", "open_scripted_server", "REDACTED"]

REDACTED = "[REDACTED]"
"""What a recorded request holds in place of a secret header's value."""

_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key", "cookie", "openai-api-key"}
)
_RECEIVE_SIZE = 65536
_SERVER_HEADER = b"scripted-model-server"

Endpoint = Literal["responses", "chat", "compact"]
Transport = Literal["http", "websocket"]
_RESPONSES_PATHS = ("/v1/responses", "/responses")
_COMPACT_PATHS = ("/v1/responses/compact", "/responses/compact")
_UNSET_USAGE = Usage()


def _redact(name: str, value: str) -> str:
    if name not in _SECRET_HEADERS:
        return value
    scheme, sep, _secret = value.partition(" ")
    # keep the scheme ("Bearer") so tests can check how the key was sent, never the key
    if sep and scheme.isalpha() and name.endswith("authorization"):
        return f"{scheme} {REDACTED}"
    return REDACTED


@attrs.frozen(kw_only=True)
class RecordedRequest:
    """One request the server received.

    ``headers`` have lower-case names (repeated headers joined with ``", "``) and secret values
    (``Authorization``, API-key and cookie headers) replaced by :data:`REDACTED` — the scheme of
    an ``Authorization`` value is kept (``"Bearer [REDACTED]"``). ``body`` is the parsed JSON
    body (``None`` when absent or not JSON). ``endpoint`` is ``"responses"``, ``"chat"``,
    ``"compact"`` (``POST /v1/responses/compact``) or ``None`` (unknown path); ``reply_index`` is the script position of the reply served (``None``
    when the default reply was served, no reply was consumed or a router chose it).
    ``session`` is the request's conversation key (the session header, else the body's
    ``prompt_cache_key``, else its ``user``; ``None`` when it has none).

    ``transport`` is ``"http"`` (a POST) or ``"websocket"``: one ``response.create`` text frame,
    recorded with ``method`` ``"GET"``, the ``path`` and ``headers`` of the upgrade request and
    the frame's JSON as ``body`` (``"type": "response.create"`` included). ``full_input`` is the
    request's whole input as a list of items (a string input is one user message): on HTTP the
    body's ``input``; on WebSocket the remembered chain (the previous response's full input and
    its output) followed by the frame's ``input`` when it continues ``previous_response_id``, so
    an incremental request can be compared with the full one. ``None`` on Chat Completions and for
    a request that was refused before its input was read.

    ``input_tokens`` is the server's estimate of the input as sent
    (:func:`~actors.scripted.estimate_tokens` of the ``input`` and ``instructions``, on WebSocket of
    ``full_input``; of the ``messages`` on Chat Completions), ``None`` when the request was refused
    before its input was read. ``window_refused`` is true when the request was refused with
    ``context_length_exceeded`` for the server's ``context_window`` (no reply consumed).
    """

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    endpoint: Endpoint | None
    reply_index: int | None
    session: str | None = None
    transport: Transport = "http"
    full_input: list[Any] | None = None
    input_tokens: int | None = None
    window_refused: bool = False


Router = Callable[[RecordedRequest], "Reply | str"]
"""A reply chooser for :func:`open_scripted_server`: called (synchronously) once per streaming
request (HTTP POST or WebSocket ``response.create``; not for ``generate: false``) with the
request as a :class:`RecordedRequest` (secrets redacted, ``reply_index`` ``None``); returns the
:class:`Reply` to serve (a string: one text item). An exception it raises is answered with HTTP
500 (on WebSocket: an error frame with status 500) naming the exception."""


@attrs.frozen
class _Selected:
    """The reply chosen for a request: its script index (``-1``: default or routed), the reply,
    the render cache's session key, the input's estimate (after a server-side compaction) and the
    server-side compaction item to send first, if any."""

    index: int
    reply: Reply
    cache_session: str | None
    input_tokens: int | None = None
    compaction: dict[str, Any] | None = None


@attrs.frozen
class _Plan:
    """What the window and ``context_management`` make of a streaming request: the estimate of
    the input as sent, the server-side compaction item (if the input passed the threshold), the
    estimate after it, and the error to refuse the request with."""

    estimate: int
    compaction: dict[str, Any] | None = None
    effective: int = 0
    error: HttpError | None = None
    window_refused: bool = False


@attrs.define(eq=False)
class ScriptedServer:
    """A running scripted model server (from :func:`open_scripted_server`).

    Every POST to ``/v1/responses`` or ``/v1/chat/completions``, and every WebSocket
    ``response.create``, consumes the next reply of the script (one cursor shared by both
    endpoints, both transports and all connections) — unless ``sessions`` is set (one script and
    cursor per conversation key) or ``router`` is (it picks each reply).
    """

    script: Script
    host: str
    port: int = 0
    events_per_write: int = 16
    record_requests: bool = True
    requests: list[RecordedRequest] = attrs.field(factory=list)
    """Every request received, in arrival order (secrets redacted); stays empty when
    ``record_requests`` is false."""
    replies_served: int = 0
    """How many replies have been consumed (the cursor)."""
    connections_opened: int = 0
    """How many TCP connections were accepted (keep-alive reuses them)."""
    sessions: SessionScripts | None = None
    """The keyed scripts, when the server routes by conversation key (``script`` is unused)."""
    router: Router | None = None
    """The reply chooser, when a callable routes the replies (``script`` only names the model)."""
    served_by_session: dict[str, int] = attrs.field(factory=dict)
    """How many replies each conversation key has consumed (its cursor), with ``sessions``."""
    websocket: bool | RefuseUpgrade = True
    """Whether ``GET /v1/responses`` upgrades to WebSocket mode; ``False`` or a
    :class:`RefuseUpgrade` answers every upgrade with an HTTP error (426 by default)."""
    websocket_max_age: float | None = None
    """Seconds a WebSocket connection may serve requests: a ``response.create`` that arrives
    later gets ``websocket_connection_limit_reached`` and the connection is closed (the real
    service: 60 minutes). ``None``: no limit."""
    websocket_connections_opened: int = 0
    """How many WebSocket upgrades were accepted (101)."""
    upgrades_refused: int = 0
    """How many WebSocket upgrades were answered with an HTTP error instead (the ``websocket``
    option, a :class:`RefuseUpgrade` reply or a malformed handshake)."""
    context_window: int | None = None
    """Tokens (estimated, :func:`~actors.scripted.estimate_tokens`) a streaming request's input may
    hold: a request above it is refused with HTTP 400 ``context_length_exceeded`` (on WebSocket an
    error frame with status 400) and consumes no reply. ``None``: no limit."""
    estimate_usage: bool = False
    """Whether a reply that sets no usage (``Usage()``) reports the input's estimate as
    ``usage.input_tokens`` (and ``prompt_tokens`` on Chat Completions)."""
    compact: bool = True
    """Whether ``POST /v1/responses/compact`` is served (``False``: 404, like an unknown path)."""
    compact_errors: tuple[HttpError | None, ...] = ()
    """Errors answering the compact requests in order, one each (``None``: serve that one)."""
    window_refusals: int = 0
    """How many streaming requests were refused for the context window."""
    compact_requests: int = 0
    """How many requests reached ``/v1/responses/compact`` (any answer, 404 included)."""
    compactions: int = 0
    """How many compact requests were answered 200 with a compaction."""
    server_compactions: int = 0
    """How many responses carried a server-side compaction item (``context_management``)."""
    _compact_cursor: int = 0
    _cache: dict[tuple[str | None, int, str, bool], Rendered] = attrs.field(factory=dict)
    _warmups: int = 0

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (no path)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The API base URL, ``http://HOST:PORT/v1`` (an OpenAI client's ``base_url``)."""
        return self.url + "/v1"

    @property
    def websocket_url(self) -> str:
        """The WebSocket mode URL, ``ws://HOST:PORT/v1/responses`` (same port as HTTP)."""
        return "ws" + self.url.removeprefix("http") + "/v1/responses"

    # ---- reply selection and rendering ------------------------------------------------------

    def _next_reply(self) -> tuple[int, Reply]:
        """The next reply and its script index (``-1`` for the default reply)."""
        n = self.replies_served
        self.replies_served += 1
        return _pick(self.script, n)

    def _rendered(
        self, index: int, reply: Reply, endpoint: Endpoint, usage: bool, session: str | None = None
    ) -> Rendered:
        # rendering never awaits, so concurrent requests for one reply render it once
        key = (session, index, endpoint, usage)
        rendered = self._cache.get(key)
        if rendered is None:
            rendered = _render(reply, endpoint, tag=_tag(index, session), model=self._model(session), usage=usage)
            self._cache[key] = rendered
        return rendered

    def _model(self, session: str | None) -> str:
        script = self.script if session is None or self.sessions is None else self.sessions.scripts[session]
        return script.model

    def _session_key(self, incoming: _Incoming) -> str | None:
        header = self.sessions.header if self.sessions is not None else "x-session-id"
        value = incoming.headers.get(header)
        if value:
            return value
        body = incoming.body
        if isinstance(body, dict):
            for name in SESSION_BODY_FIELDS:
                field = body.get(name)
                if isinstance(field, str) and field:
                    return field
        return None

    def _choose(self, incoming: _Incoming, session: str | None) -> tuple[int, Reply, str | None] | HttpError:
        """The reply for a keyed or routed request: ``(script index, reply, cache key)``, or the
        error to answer with."""
        if self.router is not None:
            self.replies_served += 1
            request = incoming.record(None, session)
            try:
                chosen = self.router(request)
                if isinstance(chosen, str):
                    chosen = Reply(items=[Text(chosen)])
                if not isinstance(chosen, Reply):
                    raise TypeError(f"the router returned {type(chosen).__name__}, not a Reply or a str")
            except Exception as exc:
                return HttpError(
                    status=500,
                    message=f"the scripted server's router {_name_of(self.router)} raised {type(exc).__name__}: {exc}",
                    type="server_error",
                )
            return -1, chosen, None
        assert self.sessions is not None
        known = sorted(self.sessions.scripts)
        if session is None:
            fields = " or ".join(repr(f) for f in SESSION_BODY_FIELDS)
            return HttpError(
                status=400,
                message=f"no session key in the request: send the {self.sessions.header!r} header "
                f"(or a {fields} body field) naming one of the known sessions {known}",
                type="invalid_request_error",
                code="missing_session",
            )
        script = self.sessions.scripts.get(session)
        if script is None:
            return HttpError(
                status=404,
                message=f"no script for session {session!r}: the known sessions are {known}",
                type="invalid_request_error",
                code="unknown_session",
            )
        n = self.served_by_session.get(session, 0)
        self.served_by_session[session] = n + 1
        self.replies_served += 1
        index, reply = _pick(script, n)
        return index, reply, session

    # ---- HTTP -------------------------------------------------------------------------------

    async def _handle_connection(self, stream: trio.SocketStream) -> None:
        self.connections_opened += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = await _next_event(stream, conn)
                if not isinstance(event, h11.Request):
                    return  # ConnectionClosed (or junk after a close)
                body = bytearray()
                while True:
                    part = await _next_event(stream, conn)
                    if isinstance(part, h11.Data):
                        body += part.data
                    elif isinstance(part, h11.EndOfMessage):
                        break
                    else:
                        return
                if _wants_websocket(event):
                    from ._ws import serve_upgrade  # _ws imports this module

                    # False: the connection was upgraded, and its WebSocket session is over
                    keep_alive = await serve_upgrade(self, stream, conn, event)
                else:
                    keep_alive = await self._respond(stream, conn, event, bytes(body))
                if not keep_alive:
                    return
                if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                    conn.start_next_cycle()
                else:
                    return
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                error = HttpError(status=400, message=f"bad HTTP request: {exc}", type="invalid_request_error")
                try:
                    await _send_error(stream, conn, error, {})
                except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client hung up
        finally:
            await trio.aclose_forcefully(stream)

    async def _respond(self, stream: trio.SocketStream, conn: h11.Connection, request: h11.Request, raw: bytes) -> bool:
        """Answer one request; returns whether the connection may be reused."""
        incoming = _Incoming.parse(request, raw)
        if incoming.endpoint == "compact":
            return await self._compact(stream, conn, incoming)
        problem = incoming.refusal()
        if problem is not None:
            self._record(incoming, None)
            await _send_error(stream, conn, problem, {})
            return True

        endpoint, body = incoming.endpoint, incoming.body
        assert endpoint is not None and isinstance(body, dict)
        selected = self._select(incoming)
        if isinstance(selected, HttpError):
            await _send_error(stream, conn, selected, {})
            return True
        reply = selected.reply
        http_error = standalone_error(reply, "an HTTP request")
        if http_error is not None:
            await _send_error(stream, conn, http_error, reply.headers)
            return True

        include_usage = False
        if endpoint == "chat":
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
        rendered = self._render_selected(selected, endpoint, include_usage)
        return await self._stream(stream, conn, reply, rendered, named_events=endpoint == "responses")

    def _select(self, incoming: _Incoming) -> _Selected | HttpError:
        """Choose the reply for a streaming request (either transport) and record the request;
        returns the error to answer with when there is no reply for it (session or router
        problems)."""
        session = self._session_key(incoming)
        plan = self._plan(incoming)
        incoming = attrs.evolve(incoming, input_tokens=plan.estimate)
        if plan.error is not None:
            # refused before a reply is chosen: nothing consumed, the router not called
            if plan.window_refused:
                self.window_refusals += 1
            self._record(incoming, None, session, window_refused=plan.window_refused)
            return plan.error
        if self.sessions is None and self.router is None:
            index, reply = self._next_reply()
            cache_session: str | None = None
        else:
            chosen = self._choose(incoming, session)
            if isinstance(chosen, HttpError):
                self._record(incoming, None, session)
                return chosen
            index, reply, cache_session = chosen
        self._record(incoming, index if index >= 0 else None, session)
        return _Selected(index, reply, cache_session, plan.effective, plan.compaction)

    def _plan(self, incoming: _Incoming) -> _Plan:
        """Measure a streaming request against ``context_management`` and the context window."""
        body = incoming.body
        assert isinstance(body, dict)
        threshold: int | None | HttpError = None
        items: list[Any] = []
        if incoming.endpoint == "chat":
            estimate = estimate_tokens(body.get("messages"))
        else:
            items = incoming.full_input if incoming.full_input is not None else input_items(body.get("input"))
            estimate = estimate_tokens(items, body.get("instructions"))
            threshold = compaction_threshold(body, self.context_window)
        if isinstance(threshold, HttpError):
            return _Plan(estimate, effective=estimate, error=threshold)
        compaction: dict[str, Any] | None = None
        effective = estimate
        if threshold is not None and estimate > threshold:
            # the service compacts before sampling: the window applies to the compacted input
            compaction = compaction_item(items)
            effective = estimate_tokens([*items, compaction], body.get("instructions"))
        window = self.context_window
        if window is not None and effective > window:
            assert incoming.endpoint is not None
            error = window_refusal(incoming.endpoint, window, effective)
            return _Plan(estimate, effective=effective, error=error, window_refused=True)
        return _Plan(estimate, compaction, effective)

    def _render_selected(self, selected: _Selected, endpoint: Endpoint, include_usage: bool) -> Rendered:
        reply = selected.reply
        routed = self.router is not None
        # a router's replies are new objects: render each one (tagged by the request count)
        tag = f"r{self.replies_served}" if routed else _tag(selected.index, selected.cache_session)
        usage_input: int | None = None
        if self.estimate_usage and selected.input_tokens is not None and reply.usage == _UNSET_USAGE:
            usage_input = selected.input_tokens
        if selected.compaction is not None or usage_input is not None:
            # a per-request variant of the reply: rendered for this request only
            if selected.compaction is not None:
                self.server_compactions += 1
            reply = with_compaction(reply, selected.compaction, tag, usage_input)
        elif not routed:
            return self._rendered(selected.index, reply, endpoint, include_usage, selected.cache_session)
        model = self.script.model if routed else self._model(selected.cache_session)
        return _render(reply, endpoint, tag=tag, model=model, usage=include_usage)

    # ---- /v1/responses/compact ---------------------------------------------------------------

    async def _compact(self, stream: trio.SocketStream, conn: h11.Connection, incoming: _Incoming) -> bool:
        """Answer ``POST /v1/responses/compact`` (PROTOCOL §6): 200 JSON, not streamed."""
        self.compact_requests += 1
        session = self._session_key(incoming)
        problem = incoming.refusal() if self.compact else _no_route(incoming)
        body = incoming.body
        if problem is None and incoming.full_input is None:
            problem = HttpError(
                status=400,
                message=f"input must be a string or an array of items, got {type(body['input']).__name__}",
                type="invalid_request_error",
                code="invalid_type",
                error_fields={"param": "input"},
            )
        if problem is not None:
            self._record(incoming, None, session)
            await _send_error(stream, conn, problem, {})
            return True
        items = incoming.full_input or []
        estimate = estimate_tokens(items, body.get("instructions"))
        self._record(attrs.evolve(incoming, input_tokens=estimate), None, session)
        n = self._compact_cursor
        self._compact_cursor += 1
        if n < len(self.compact_errors):
            error = self.compact_errors[n]
            if error is not None:
                await _send_error(stream, conn, error, {})
                return True
        self.compactions += 1
        output = compact_output(items)
        content = output[-1]["encrypted_content"]
        usage = Usage(input_tokens=estimate, output_tokens=-(-len(content) // 4))
        answer = {
            "id": f"cmp_resp_{self.compactions}",
            "object": "response.compaction",
            "created_at": int(time.time()),
            "output": output,
            "usage": usage.to_responses(),
        }
        payload = msgspec.json.encode(answer)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"server", _SERVER_HEADER),
            (b"x-request-id", f"req_cmp_{self.compact_requests}".encode()),
        ]
        out = [
            conn.send(h11.Response(status_code=200, headers=headers)),
            conn.send(h11.Data(data=payload)),
            conn.send(h11.EndOfMessage()),
        ]
        await stream.send_all(b"".join(b for b in out if b is not None))
        return True

    def _take_refusal(self, headers: Mapping[str, str]) -> RefuseUpgrade | None:
        """The refusal for a WebSocket upgrade, if any: the ``websocket`` option, else a
        :class:`RefuseUpgrade` reply next in line (consumed). Without a router only: the upgrade
        carries no body, so a keyed script is looked up by the session header alone."""
        if self.websocket is False:
            return RefuseUpgrade()
        if isinstance(self.websocket, RefuseUpgrade):
            return self.websocket
        if self.router is not None:
            return None
        if self.sessions is None:
            _index, reply = _pick(self.script, self.replies_served)
            refusal = reply.refuse_upgrade
            if refusal is not None:
                self.replies_served += 1
            return refusal
        key = headers.get(self.sessions.header)
        script = self.sessions.scripts.get(key) if key else None
        if key is None or script is None:
            return None
        n = self.served_by_session.get(key, 0)
        _index, reply = _pick(script, n)
        refusal = reply.refuse_upgrade
        if refusal is not None:
            self.served_by_session[key] = n + 1
            self.replies_served += 1
        return refusal

    def _record(
        self, incoming: _Incoming, reply_index: int | None, session: str | None = None, *, window_refused: bool = False
    ) -> None:
        if self.record_requests:
            self.requests.append(incoming.record(reply_index, session, window_refused=window_refused))

    async def _stream(
        self, stream: trio.SocketStream, conn: h11.Connection, reply: Reply, rendered: Rendered, named_events: bool
    ) -> bool:
        """Send the 200 head and the rendered SSE body; returns whether the connection may be
        reused."""
        response_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"server", _SERVER_HEADER),
            (b"x-request-id", f"req_{self.replies_served}".encode()),
        ]
        response_headers += [(k.encode(), v.encode()) for k, v in reply.headers.items()]
        head = conn.send(h11.Response(status_code=200, headers=response_headers))
        assert head is not None

        per_write = reply.events_per_write or self.events_per_write
        if not reply.transport_faults and not reply.delta_delay:
            # fast path: the head rides with the first batch and the final chunk with the last
            # (syscalls dominate the per-request cost on loopback)
            batches = rendered.batches(per_write)
            last = len(batches) - 1
            out = head
            for i, batch in enumerate(batches):
                out += conn.send(h11.Data(data=batch)) or b""
                if i == last:
                    out += conn.send(h11.EndOfMessage()) or b""
                await stream.send_all(out)
                out = b""
            return True
        await stream.send_all(head)
        return await _write_with_faults(stream, conn, rendered, reply, per_write, named_events)


@attrs.frozen
class _Incoming:
    """One request as received: its method, path (no query), headers (lower-case names, secrets
    redacted), parsed JSON body and the endpoint its path names."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    bad_json: bool
    endpoint: Endpoint | None
    transport: Transport = "http"
    full_input: list[Any] | None = None
    input_tokens: int | None = None

    @classmethod
    def parse(cls, request: h11.Request, raw: bytes) -> _Incoming:
        method = request.method.decode("ascii", "replace")
        target = request.target.decode("ascii", "replace")
        path = target.partition("?")[0]
        headers = parse_headers(request)
        try:
            body: Any = msgspec.json.decode(raw) if raw else None
            bad_json = False
        except msgspec.DecodeError:
            body, bad_json = None, True
        endpoint: Endpoint | None
        full_input: list[Any] | None = None
        if path in _RESPONSES_PATHS or path in _COMPACT_PATHS:
            endpoint = "responses" if path in _RESPONSES_PATHS else "compact"
            if isinstance(body, dict) and (endpoint == "responses" or isinstance(body.get("input", []), (list, str))):
                full_input = input_items(body.get("input"))
        elif path in ("/v1/chat/completions", "/chat/completions"):
            endpoint = "chat"
        else:
            endpoint = None
        return cls(method, path, headers, body, bad_json, endpoint, full_input=full_input)

    def record(self, reply_index: int | None, session: str | None, *, window_refused: bool = False) -> RecordedRequest:
        """This request as a :class:`RecordedRequest`."""
        return RecordedRequest(
            method=self.method,
            path=self.path,
            headers=self.headers,
            body=self.body,
            endpoint=self.endpoint,
            reply_index=reply_index,
            session=session,
            transport=self.transport,
            full_input=self.full_input,
            input_tokens=self.input_tokens,
            window_refused=window_refused,
        )

    def refusal(self) -> HttpError | None:
        """The error answer for a request the server does not serve (unknown path, not a POST,
        not a JSON object, not streaming; the compact endpoint needs no ``stream``), else
        ``None``."""
        if self.endpoint is None:
            return _no_route(self)
        if self.method != "POST":
            return HttpError(
                status=405, message=f"{self.path} takes POST, got {self.method}", type="invalid_request_error"
            )
        if self.bad_json or not isinstance(self.body, dict):
            return HttpError(
                status=400,
                message="the request body must be a JSON object",
                type="invalid_request_error",
            )
        if self.endpoint != "compact" and self.body.get("stream") is not True:
            return HttpError(
                status=400,
                message='the scripted server only streams: send "stream": true',
                type="invalid_request_error",
                code="unsupported_value",
            )
        return None


def parse_headers(request: h11.Request) -> dict[str, str]:
    """A request's headers: lower-case names, repeated headers joined with ``", "``, secret
    values redacted."""
    headers: dict[str, str] = {}
    for name_b, value_b in request.headers:
        name = name_b.decode("latin-1").lower()
        value = _redact(name, value_b.decode("latin-1"))
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _no_route(incoming: _Incoming) -> HttpError:
    return HttpError(
        status=404,
        message=f"no route for {incoming.method} {incoming.path}: the scripted server serves POST "
        "/v1/responses, POST /v1/responses/compact and POST /v1/chat/completions",
        type="invalid_request_error",
    )


def standalone_error(reply: Reply, what: str) -> HttpError | None:
    """The error a reply answers with instead of a stream (:class:`HttpError`,
    :class:`WebSocketConnectionLimit`; a :class:`RefuseUpgrade` reached by ``what``, a request
    that is no upgrade, is a script mismatch: 500), else ``None``."""
    if reply.http_error is not None:
        return reply.http_error
    limit = reply.connection_limit
    if limit is not None:
        return limit.to_http_error()
    if reply.refuse_upgrade is not None:
        return HttpError(
            status=500,
            message=f"script mismatch: the scripted reply refuses a WebSocket upgrade (RefuseUpgrade), "
            f"but {what} reached it",
            type="server_error",
            code="script_mismatch",
        )
    return None


def _wants_websocket(request: h11.Request) -> bool:
    """Whether ``request`` asks to upgrade ``/v1/responses`` to WebSocket mode."""
    if request.method != b"GET" or request.target.partition(b"?")[0].decode("ascii", "replace") not in _RESPONSES_PATHS:
        return False
    for name, value in request.headers:
        if name == b"upgrade" and b"websocket" in value.lower():
            return True
    return False


def _pick(script: Script, n: int) -> tuple[int, Reply]:
    """The ``n``-th reply of ``script`` (0-based) and its index (``-1`` for the default)."""
    replies = script.replies
    if n < len(replies):
        return n, replies[n]
    if script.cycle and replies:
        i = n % len(replies)
        return i, replies[i]
    return -1, script.default


def _tag(index: int, session: str | None) -> str:
    """The id tag of a script's reply (``msg_<tag>_0``…): its index (or ``default``), after its
    session key."""
    tag = str(index) if index >= 0 else "default"
    return f"{session}_{tag}" if session is not None else tag


def _render(reply: Reply, endpoint: Endpoint, *, tag: str, model: str, usage: bool) -> Rendered:
    if endpoint == "responses":
        return render_responses(reply, tag=tag, model=model)
    return render_chat(reply, tag=tag, model=model, include_usage=usage)


def _name_of(router: Router) -> str:
    name = getattr(router, "__qualname__", None) or type(router).__qualname__
    return f"{name!r}"


async def _next_event(stream: trio.SocketStream, conn: h11.Connection) -> Any:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(_RECEIVE_SIZE))
            continue
        return event


async def _send_error(
    stream: trio.SocketStream, conn: h11.Connection, error: HttpError, extra: Mapping[str, str]
) -> None:
    payload = error.body_bytes()
    is_json = not isinstance(error.body, str)
    headers = [
        (b"content-type", b"application/json" if is_json else b"text/plain; charset=utf-8"),
        (b"content-length", str(len(payload)).encode()),
        (b"server", _SERVER_HEADER),
    ]
    if error.retry_after is not None:
        value = error.retry_after
        headers.append((b"retry-after", (value if isinstance(value, str) else f"{value:g}").encode()))
    for k, v in {**extra, **error.headers}.items():
        headers.append((k.encode(), v.encode()))
    out = [
        conn.send(h11.Response(status_code=error.status, headers=headers)),
        conn.send(h11.Data(data=payload)),
        conn.send(h11.EndOfMessage()),
    ]
    await stream.send_all(b"".join(b for b in out if b is not None))


async def _write_with_faults(
    stream: trio.SocketStream,
    conn: h11.Connection,
    rendered: Rendered,
    reply: Reply,
    per_write: int,
    named_events: bool,
) -> bool:
    """The slow path: events one by one, with faults at their positions and delta delays.
    Returns whether the connection may be reused."""
    events, is_delta = rendered.events, rendered.is_delta
    n = len(events)
    at: dict[int, list[Disconnect | Malformed | Stall | WebSocketClose]] = {}
    for fault in reply.transport_faults:
        at.setdefault(min(fault.after_events, n), []).append(fault)
    delay = reply.delta_delay
    pending: list[bytes] = []

    async def flush() -> None:
        if pending:
            data = b"".join(pending)
            pending.clear()
            await stream.send_all(conn.send(h11.Data(data=data)))

    for i in range(n + 1):
        for fault in at.get(i, ()):
            if isinstance(fault, Stall):
                await flush()
                await trio.sleep(fault.seconds)
            elif isinstance(fault, Malformed):
                pending.append(malformed_event(fault.data, fault.event if named_events else None))
            elif isinstance(fault, WebSocketClose):
                await flush()
                return False  # no close frames on HTTP: an unterminated chunked body, as Disconnect
            else:
                if fault.mid_event and i < n:
                    pending.append(events[i][: len(events[i]) // 2])
                await flush()
                if fault.clean:
                    await stream.send_all(conn.send(h11.EndOfMessage()))
                    return True
                return False  # the caller closes the socket: an unterminated chunked body
        if i == n:
            break
        if delay and is_delta[i]:
            await flush()
            await trio.sleep(delay)
        pending.append(events[i])
        if len(pending) >= per_write:
            await flush()
    await flush()
    await stream.send_all(conn.send(h11.EndOfMessage()))
    return True


@asynccontextmanager
async def open_scripted_server(
    script: Script | SessionScripts | Mapping[str, Script | Iterable[Reply | str]] | Router | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    events_per_write: int = 16,
    record_requests: bool = True,
    websocket: bool | RefuseUpgrade = True,
    websocket_max_age: float | None = None,
    context_window: int | None = None,
    estimate_usage: bool | None = None,
    compact: bool | None = None,
    compact_errors: Iterable[HttpError | None] | None = None,
) -> AsyncIterator[ScriptedServer]:
    """Serve ``script`` over HTTP on ``host:port`` for the body of the ``async with``.

    ``script`` is a :class:`Script` (one cursor for every request), a :class:`SessionScripts`
    or a ``{key: Script or replies}`` mapping (one script and cursor per conversation key, read
    from the ``X-Session-Id`` header or the body's ``prompt_cache_key`` / ``user``; see
    :meth:`Script.per_session`), or a :data:`Router` callable that picks each reply from the
    request. ``None``: every request gets ``"Done."``.

    ``port=0`` picks a free port (read it from ``server.port`` / ``server.base_url``). The server
    binds loopback by default: it is a test double, not meant to face a network.
    ``events_per_write`` SSE events are joined into one socket write (a reply's
    ``events_per_write`` overrides it). ``record_requests=False`` keeps ``server.requests``
    empty (long runs: each record holds the whole request body).

    WebSocket mode (PROTOCOL §5) is served on the same port: ``GET /v1/responses`` with
    ``Upgrade: websocket`` (``ws://HOST:PORT/v1/responses``). ``websocket=False`` answers every
    upgrade with HTTP 426 (a :class:`RefuseUpgrade` chooses the status and message) and keeps
    serving HTTP on the connection: an endpoint without WebSocket mode. ``websocket_max_age``
    (seconds) answers a ``response.create`` on an older connection with
    ``websocket_connection_limit_reached`` and closes it.

    Context window and compaction (PROTOCOL §6; each option defaults to the script's
    :class:`ServerOptions`, ``script.server``): ``context_window=N`` refuses a streaming request
    whose input is estimated (:func:`~actors.scripted.estimate_tokens`) above ``N`` tokens with
    HTTP 400 ``context_length_exceeded`` as the real service words it (on WebSocket an error frame
    with status 400; the full reconstructed input counts), consuming no reply
    (``server.window_refusals``). ``estimate_usage`` (default: on when ``context_window`` is set)
    reports the estimate as ``usage.input_tokens`` of every reply that sets no usage.
    ``POST /v1/responses/compact`` answers ``{"id", "object": "response.compaction", "created_at",
    "output": [user messages..., compaction item], "usage"}``; ``compact=False`` answers it 404;
    ``compact_errors`` (HTTP errors, or ``None`` to serve one) answer the compact requests in
    order. A request with ``"context_management": [{"type": "compaction", "compact_threshold":
    T}]`` whose input passes ``T`` gets a compaction item before its reply's items.

    Leaving the block cancels the server and every open connection; an exception raised in the
    block comes out as it is (not wrapped in an ``ExceptionGroup``). Raises ``OSError`` when the
    address cannot be bound, :class:`ScriptError` for a malformed session mapping, a
    ``context_window`` that is not a positive int or a ``compact_errors`` entry that is not an
    :class:`HttpError` or ``None``, ``TypeError`` when ``script`` is none of the accepted forms.
    Checkpoints on entry.
    """
    if events_per_write < 1:
        raise ValueError(f"events_per_write must be >= 1, got {events_per_write}")
    if not isinstance(websocket, (bool, RefuseUpgrade)):
        raise TypeError(f"open_scripted_server: websocket must be a bool or a RefuseUpgrade, got {websocket!r}")
    if websocket_max_age is not None and not websocket_max_age >= 0:
        raise ValueError(f"websocket_max_age must be >= 0 seconds or None, got {websocket_max_age!r}")
    options = script.server if isinstance(script, (Script, SessionScripts)) else ServerOptions()
    overrides: dict[str, Any] = {
        "context_window": context_window,
        "estimate_usage": estimate_usage,
        "compact": compact,
        "compact_errors": compact_errors,
    }
    # the same validation as a script's options (ScriptError is a ValueError)
    options = attrs.evolve(options, **{k: v for k, v in overrides.items() if v is not None})
    usage_estimated = options.estimate_usage
    if usage_estimated is None:
        usage_estimated = options.context_window is not None
    sessions: SessionScripts | None = None
    router: Router | None = None
    if script is None:
        script = Script()
    elif isinstance(script, SessionScripts):
        sessions, script = script, Script()
    elif isinstance(script, Mapping):
        sessions, script = SessionScripts(script), Script()
    elif not isinstance(script, Script):
        if not callable(script):
            raise TypeError(
                f"open_scripted_server: script must be a Script, SessionScripts, a mapping of session "
                f"key to script or a router callable, got {type(script).__name__}"
            )
        router, script = script, Script()
    server = ScriptedServer(
        script,
        host=host,
        events_per_write=events_per_write,
        record_requests=record_requests,
        sessions=sessions,
        router=router,
        websocket=websocket,
        websocket_max_age=websocket_max_age,
        context_window=options.context_window,
        estimate_usage=usage_estimated,
        compact=options.compact,
        compact_errors=options.compact_errors,
    )
    # bound outside the nursery so that a bind error comes out as a plain OSError
    listeners = await trio.open_tcp_listeners(port, host=host)
    server.port = listeners[0].socket.getsockname()[1]
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            # serve_listeners closes the listeners when it is cancelled
            await nursery.start(partial(trio.serve_listeners, server._handle_connection, listeners))
            try:
                yield server
            except BaseException as exc:
                body_error = exc
                raise
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # the nursery wraps whatever the body of the `async with` raised: give it back as it
        # was, so `pytest.raises(SomeError)` around the block works
        if body_error is None or len(group.exceptions) != 1 or group.exceptions[0] is not body_error:
            raise
    finally:
        for listener in listeners:  # already closed unless serving never started
            await trio.aclose_forcefully(listener)
    if body_error is not None:
        raise body_error
