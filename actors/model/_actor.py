"""The ModelActor: streaming model requests in, batched events out, over pluggable transports.

The actor is one Trio task that opens its transports (:mod:`actors.model.transport`: HTTP+SSE by
default, which owns the ``httpx`` client and its connection pool) and reads requests from a memory
channel. Each request runs in its own task in the actor's nursery (so one actor — one client, one
pool — can serve many sessions at once) and its decoded events go back on the request's reply
channel, **one message per network read**: everything decoded from one read travels together,
because one channel hop costs about as much as decoding several events.

Errors travel the same channel as :class:`~kernel.errors.KernelError` values and are raised by the
session-side iterator (:class:`HttpModelClient`), which also keeps the session's place in the
actor's transport list: it starts on the first and switches to the next when the kernel's sampling
loop has spent the retry budget (``try_switch_fallback_transport``).

Wires: ``"responses"`` (``POST {base_url}/responses``, default) and ``"chat"``
(``POST {base_url}/chat/completions``, for OpenAI-compatible local servers); see ``_wire``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import attrs
import httpx
import trio

from kernel.errors import KernelError, StreamError
from kernel.prompt import Prompt
from kernel.stream import ModelEvent

from ._error_table import cap_retry_after
from ._http_sse import HttpSseTransport
from ._wire import endpoint_path, new_decoder, request_body
from .transport import ModelTransport, StreamRequest

__all__ = ["ModelSettings", "ModelActor", "HttpModelClient", "default_transports", "open_model_actor"]

_NO_STATE = object()


@attrs.frozen(kw_only=True)
class ModelSettings:
    """How to reach a model endpoint.

    ``base_url`` ends before the endpoint path (``https://api.openai.com/v1``); ``api_key`` is
    sent as ``Authorization: Bearer`` and is never shown (``repr`` hides it). ``idle_timeout``:
    seconds without a byte before the stream counts as broken (codex: 300; reasoning models can
    be silent for minutes). ``stream_max_retries``: the sampling loop's per-transport budget.
    ``transport``: ``"auto"`` (the default: on the Responses wire, WebSocket first with HTTP as the
    fallback; on the Chat wire, HTTP), ``"websocket"`` (WebSocket only) or ``"http"`` (HTTP+SSE
    only). ``max_retry_after``: the longest server-requested wait (``Retry-After``, "try again
    in ...") a retry honours, in seconds; a request asking for longer fails at once.
    ``context_window``: the model's window in tokens, when known. ``auto_compact_tokens``: compact
    a session's history before a request whose estimated input reaches it (default: 0.9 of
    ``context_window``; ``None`` with no window: compact only when a request is refused for the
    window). ``compaction``: how (see :mod:`actors.compaction`) — ``"auto"`` (remote on the
    Responses wire where the endpoint serves ``/responses/compact``, else local), ``"remote"``,
    ``"local"``, ``"server"`` (the service compacts: ``context_management`` on each request) or
    ``"off"`` (a refusal fails the turn, as the seed does).
    """

    base_url: str
    model: str
    api_key: str | None = attrs.field(default=None, repr=False)
    wire: Literal["responses", "chat"] = "responses"
    idle_timeout: float = 300.0
    connect_timeout: float = 30.0
    stream_max_retries: int = 5
    reasoning_effort: str | None = None
    reasoning_summary: str | None = None
    extra_headers: tuple[tuple[str, str], ...] = ()
    transport: Literal["auto", "websocket", "http"] = "auto"
    max_retry_after: float = 120.0
    context_window: int | None = None
    auto_compact_tokens: int | None = None
    compaction: Literal["auto", "server", "remote", "local", "off"] = "auto"

    def __attrs_post_init__(self) -> None:
        if self.wire not in ("responses", "chat"):
            raise ValueError(f"ModelSettings.wire must be 'responses' or 'chat', got {self.wire!r}")
        if self.transport not in ("auto", "websocket", "http"):
            raise ValueError(f"ModelSettings.transport must be 'auto', 'websocket' or 'http', got {self.transport!r}")
        if self.transport == "websocket" and self.wire != "responses":
            raise ValueError(
                "ModelSettings.transport='websocket' needs wire='responses' (Chat Completions is HTTP only)"
            )
        if self.compaction not in ("auto", "server", "remote", "local", "off"):
            raise ValueError(
                f"ModelSettings.compaction must be 'auto', 'server', 'remote', 'local' or 'off', got {self.compaction!r}"
            )
        for name in ("context_window", "auto_compact_tokens"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise ValueError(f"ModelSettings.{name} must be a positive number of tokens or None, got {value!r}")
        if not (self.max_retry_after >= 0 and math.isfinite(self.max_retry_after)):
            raise ValueError(
                f"ModelSettings.max_retry_after must be a finite number of seconds >= 0, got {self.max_retry_after!r}"
            )
        if not (self.idle_timeout > 0 and math.isfinite(self.idle_timeout)):
            raise ValueError(
                f"ModelSettings.idle_timeout must be a positive number of seconds, got {self.idle_timeout!r}"
            )
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"ModelSettings.base_url must start with http:// or https://, got {self.base_url!r}")

    @property
    def endpoint(self) -> str:
        """The full URL requests are posted to."""
        return self.base_url.rstrip("/") + "/" + endpoint_path(self.wire)


def default_transports(
    settings: ModelSettings, *, http_client: httpx.AsyncClient | None = None
) -> tuple[ModelTransport, ...]:
    """The transports ``settings.transport`` names, primary first: ``"auto"`` on the Responses
    wire is WebSocket then HTTP (the WebSocket transport also goes straight to HTTP for an endpoint
    that refuses the upgrade); ``"websocket"`` is WebSocket alone; ``"http"`` (and the Chat wire)
    is HTTP+SSE alone (built with ``http_client`` when given)."""
    http = HttpSseTransport(settings, http_client=http_client)
    if settings.wire != "responses" or settings.transport == "http":
        return (http,)
    from ._websocket import WebSocketTransport

    if settings.transport == "websocket":
        return (WebSocketTransport(settings),)
    return (WebSocketTransport(settings, fallback=http), http)


class ModelActor:
    """The actor. Start it with :func:`open_model_actor` (or ``await nursery.start(actor.run)``);
    talk to it through :meth:`client` (a :class:`~kernel.stream.ModelClient`).

    ``transports``: the ways of reaching the endpoint, primary first; a session moves to the next
    once its retry budget is spent on one (see :mod:`actors.model.transport`). Default:
    :func:`default_transports` (``settings.transport``; the HTTP one built with ``http_client``
    when given)."""

    def __init__(
        self,
        settings: ModelSettings,
        *,
        http_client: httpx.AsyncClient | None = None,
        transports: Sequence[ModelTransport] | None = None,
    ) -> None:
        self.settings = settings
        if transports is None:
            transports = default_transports(settings, http_client=http_client)
        elif http_client is not None:
            raise ValueError("ModelActor takes http_client or transports, not both (give the client to the transport)")
        if not transports:
            raise ValueError("ModelActor.transports must name at least one transport")
        self.transports: tuple[ModelTransport, ...] = tuple(transports)
        self._send, self._receive = trio.open_memory_channel[_Request](0)
        self.requests_started = 0
        self.compact_route: bool | None = None
        """Whether the endpoint serves ``/responses/compact``: ``None`` until a compaction found
        out, ``False`` after a 404/405 (its sessions then compact locally)."""

    def __repr__(self) -> str:
        return f"ModelActor(endpoint={self.settings.endpoint!r}, model={self.settings.model!r})"

    def client(self) -> HttpModelClient:
        """A session-side handle implementing :class:`~kernel.stream.ModelClient` (and
        :class:`~kernel.stream.FallbackTransport`); one per session."""
        return HttpModelClient(self)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the transports, then serve requests until the request channel closes or the task
        is cancelled."""
        async with contextlib.AsyncExitStack() as stack:
            for transport in self.transports:
                await stack.enter_async_context(transport.open())
            async with trio.open_nursery() as nursery:
                task_status.started()
                async with self._receive:
                    async for request in self._receive:
                        nursery.start_soon(self._serve, request)

    async def _serve(self, request: _Request) -> None:
        self.requests_started += 1
        async with request.reply:
            with request.scope:
                try:
                    await request.transport.stream(request)
                except KernelError as exc:
                    exc = cap_retry_after(exc, self.settings.max_retry_after)
                    try:
                        await request.reply.send(exc)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the session stopped listening


@attrs.define(eq=False)
class _Request(StreamRequest):
    transport: ModelTransport = attrs.field(kw_only=True)


class HttpModelClient:
    """Session-side handle of a :class:`ModelActor`; implements :class:`kernel.ModelClient`.

    ``stream(prompt)`` sends one request and yields the batches the actor sends back; errors are
    raised from iteration. Leaving the context (normally, on error or on cancellation) cancels the
    request in the actor and closes the response. One client per session: it keeps the session's
    current transport (implements :class:`kernel.stream.FallbackTransport`) and the session's state
    for each transport.
    """

    __slots__ = ("actor", "_index", "_states", "_wire_cache")

    def __init__(self, actor: ModelActor) -> None:
        self.actor = actor
        self._index = 0
        self._states: dict[int, Any] = {}
        self._wire_cache: dict[int, tuple[Any, dict[str, Any]]] = {}  # encoded history items

    @property
    def transport(self) -> ModelTransport:
        """The transport this session's requests go over now."""
        return self.actor.transports[self._index]

    def has_fallback(self) -> bool:
        """Whether a later transport is left to switch to."""
        return self._index + 1 < len(self.actor.transports)

    def try_switch_fallback_transport(self) -> bool:
        """Move this session to the next transport for good; ``False`` when none is left."""
        if not self.has_fallback():
            return False
        self._index += 1
        return True

    def __repr__(self) -> str:
        return f"HttpModelClient({self.actor!r})"

    async def aclose(self) -> None:
        """Release the session's per-transport state (its WebSocket, if one is open). Never
        raises; the client still works afterwards (a new connection is opened on demand)."""
        states, self._states = self._states, {}
        for index, state in states.items():
            close = getattr(self.actor.transports[index], "close_session_state", None)
            if close is not None and state is not None:
                with trio.move_on_after(2.0):
                    await close(state)

    @property
    def settings(self) -> ModelSettings:
        """The actor's settings."""
        return self.actor.settings

    @asynccontextmanager
    async def stream(self, prompt: Prompt) -> AsyncIterator[AsyncIterator[Sequence[ModelEvent]]]:
        """Stream one response for ``prompt`` (see the class docstring). Checkpoints."""
        settings = self.actor.settings
        transport = self.actor.transports[self._index]
        state = self._states.get(self._index, _NO_STATE)
        if state is _NO_STATE:
            state = self._states[self._index] = transport.session_state()
        send, receive = trio.open_memory_channel[Sequence[ModelEvent] | KernelError](16)
        request = _Request(
            request_body(settings, prompt, self._wire_cache),
            new_decoder(settings.wire, prompt),
            send,
            trio.CancelScope(),
            state,
            transport=transport,
        )
        try:
            await self.actor._send.send(request)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise StreamError("the model actor is not running") from None
        try:
            async with receive:
                yield _batches(receive)
        finally:
            if not request.completed:  # a completed response is left to drain (connection reuse)
                request.scope.cancel()


class _batches:
    """Async iterator over a reply channel that raises delivered errors (a class, not an async
    generator: nothing to finalize when the turn stops early)."""

    __slots__ = ("_receive",)

    def __init__(self, receive: trio.MemoryReceiveChannel[Sequence[ModelEvent] | KernelError]) -> None:
        self._receive = receive

    def __aiter__(self) -> _batches:
        return self

    async def __anext__(self) -> Sequence[ModelEvent]:
        try:
            message = await self._receive.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
        if isinstance(message, KernelError):
            raise message
        return message


@asynccontextmanager
async def open_model_actor(
    settings: ModelSettings,
    *,
    http_client: httpx.AsyncClient | None = None,
    transports: Sequence[ModelTransport] | None = None,
) -> AsyncIterator[ModelActor]:
    """Run a :class:`ModelActor` for the duration of the block; cancelled on exit."""
    actor = ModelActor(settings, http_client=http_client, transports=transports)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        try:
            yield actor
        finally:
            nursery.cancel_scope.cancel()
