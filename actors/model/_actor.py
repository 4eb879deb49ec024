"""The ModelActor: one ``httpx.AsyncClient``, streaming model requests in, batched events out.

The actor is one Trio task that owns the HTTP client (connection pool) and reads requests from a
memory channel. Each request runs in its own task in the actor's nursery (so one actor — one
client, one pool — can serve many sessions at once) and sends its decoded events back on the
request's reply channel, **one message per network read**: everything decoded from one read
travels together, because one channel hop costs about as much as decoding several events.

Errors travel the same channel as :class:`~kernel.errors.KernelError` values and are raised by the
session-side iterator: HTTP statuses and ``response.failed`` codes are mapped as PROTOCOL §3 says;
connect/read errors, EOF before completion and the idle timeout (no byte for ``idle_timeout``
seconds) are :class:`~kernel.errors.StreamError`. The API key lives only in the client's default
headers: it never appears in a repr, an error message, a log line or an event.

Wires: ``"responses"`` (``POST {base_url}/responses``, default) and ``"chat"``
(``POST {base_url}/chat/completions``, for OpenAI-compatible local servers).
"""

from __future__ import annotations

import functools
import math
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import attrs
import httpx
import msgspec
import trio

from kernel.errors import KernelError, StreamError
from kernel.prompt import Prompt
from kernel.stream import ModelEvent

from ._http_errors import error_from_http, rate_limits_from_headers, redact
from ._pool import ShardedTransport

__all__ = ["ModelSettings", "ModelActor", "HttpModelClient", "open_model_actor", "default_ssl_context"]

_MAX_ERROR_BODY = 64 * 1024
_JSON_ENCODER = msgspec.json.Encoder()


@attrs.frozen(kw_only=True)
class ModelSettings:
    """How to reach a model endpoint.

    ``base_url`` ends before the endpoint path (``https://api.openai.com/v1``); ``api_key`` is
    sent as ``Authorization: Bearer`` and is never shown (``repr`` hides it). ``idle_timeout``:
    seconds without a byte before the stream counts as broken (codex: 300; reasoning models can
    be silent for minutes). ``stream_max_retries``: the sampling loop's per-transport budget.
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

    def __attrs_post_init__(self) -> None:
        if self.wire not in ("responses", "chat"):
            raise ValueError(f"ModelSettings.wire must be 'responses' or 'chat', got {self.wire!r}")
        if not (self.idle_timeout > 0 and math.isfinite(self.idle_timeout)):
            raise ValueError(
                f"ModelSettings.idle_timeout must be a positive number of seconds, got {self.idle_timeout!r}"
            )
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"ModelSettings.base_url must start with http:// or https://, got {self.base_url!r}")

    @property
    def endpoint(self) -> str:
        """The full URL requests are posted to."""
        path = "responses" if self.wire == "responses" else "chat/completions"
        return self.base_url.rstrip("/") + "/" + path


@attrs.define(eq=False)
class _Request:
    body: bytes
    decoder: Any
    reply: trio.MemorySendChannel[Sequence[ModelEvent] | KernelError]
    scope: trio.CancelScope
    completed: bool = False
    """The response completed: the client leaving the stream no longer cancels the request, so
    the actor can drain the body's tail (connection reuse) without shielding it."""


class ModelActor:
    """The actor. Start it with :func:`open_model_actor` (or ``await nursery.start(actor.run)``);
    talk to it through :meth:`client` (a :class:`~kernel.stream.ModelClient`)."""

    def __init__(self, settings: ModelSettings, *, http_client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self._given_client = http_client
        self._send, self._receive = trio.open_memory_channel[_Request](0)
        self.requests_started = 0

    def __repr__(self) -> str:
        return f"ModelActor(endpoint={self.settings.endpoint!r}, model={self.settings.model!r})"

    def client(self) -> HttpModelClient:
        """A session-side handle implementing :class:`~kernel.stream.ModelClient`."""
        return HttpModelClient(self)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve requests until the request channel closes or the task is cancelled."""
        s = self.settings
        headers = {"Accept": "text/event-stream", "Accept-Encoding": "identity", "Content-Type": "application/json"}
        if s.api_key:
            headers["Authorization"] = f"Bearer {s.api_key}"
        headers.update(dict(s.extra_headers))
        timeout = httpx.Timeout(connect=s.connect_timeout, read=None, write=s.connect_timeout, pool=None)
        if self._given_client is not None:
            http = self._given_client
            owns = False
        else:
            # several small connection pools: one httpcore pool's per-request work grows with
            # its open connections (see actors.model._pool)
            transport = ShardedTransport(verify=default_ssl_context())
            http = httpx.AsyncClient(timeout=timeout, transport=transport, verify=default_ssl_context())
            owns = True
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                async with self._receive:
                    async for request in self._receive:
                        nursery.start_soon(self._serve, http, headers, request)
        finally:
            if owns:
                with trio.CancelScope(shield=True):
                    await http.aclose()

    async def _serve(self, http: httpx.AsyncClient, headers: dict[str, str], request: _Request) -> None:
        self.requests_started += 1
        s = self.settings
        async with request.reply:
            with request.scope:
                try:
                    await self._stream(http, headers, request)
                except KernelError as exc:
                    await _deliver(request, exc)
                except httpx.HTTPError as exc:
                    await _deliver(request, StreamError(_describe_transport_error(exc, s)))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the session stopped listening

    async def _stream(self, http: httpx.AsyncClient, headers: dict[str, str], request: _Request) -> None:
        s = self.settings
        decoder = request.decoder
        send = request.reply.send
        async with http.stream("POST", s.endpoint, content=request.body, headers=headers) as response:
            if response.status_code >= 400:
                body = await _read_limited(response)
                raise error_from_http(response.status_code, response.headers, body)
            first: list[ModelEvent] = []
            limits = rate_limits_from_headers(response.headers)
            if limits is not None:
                first.append(limits)
            chunks = response.aiter_raw()
            next_chunk = chunks.__anext__
            send_nowait = request.reply.send_nowait
            idle = s.idle_timeout
            now = trio.current_time
            # one cancel scope for the whole stream, its deadline moved before each read (cheaper
            # than a scope per chunk); a send that must wait for the session runs without it
            with trio.CancelScope() as idle_scope:
                while True:
                    idle_scope.deadline = now() + idle
                    try:
                        chunk = await next_chunk()
                    except StopAsyncIteration:
                        break
                    events = decoder.feed(chunk)
                    if decoder.done and decoder.error is None:
                        request.completed = True  # before the client can see the completion
                    if first:
                        events = first + events
                        first = []
                    if events:
                        try:
                            send_nowait(events)
                        except trio.WouldBlock:
                            idle_scope.deadline = math.inf  # a slow session is not an idle model
                            await send(events)
                    if decoder.error is not None:
                        raise decoder.error
                    if decoder.done:
                        idle_scope.deadline = math.inf
                        await _drain_for_reuse(chunks)
                        return
            if idle_scope.cancelled_caught:
                raise StreamError(f"idle timeout: no bytes from the model for {idle:g}s")
            tail = decoder.finish()  # chat: a stream with a finish_reason but no [DONE] completes here
            if tail:
                await send(list(tail))
            if decoder.error is not None:
                raise decoder.error


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """The TLS context every :class:`ModelActor` that builds its own client uses: httpx's
    default (certifi roots, ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` honoured), built once per
    process. Loading the CA bundle costs ~50-150 ms of CPU and a few hundred KiB, so building
    one per actor made every session open pay for it (SSLContext is safe to share)."""
    return httpx.create_ssl_context()


async def _drain_for_reuse(chunks: AsyncIterator[bytes]) -> None:
    """Read what is left of a completed response (normally just the chunked-encoding trailer) so
    httpx returns the connection to the pool instead of closing it: without this every request
    paid a new TCP (and TLS) handshake. Capped at 0.5 s. Not shielded: the client does not cancel a
    completed request when it leaves the stream (``_Request.completed``), so the drain survives
    the turn moving on, while closing the session or the actor still stops it at once (a shielded
    drain held a session's exit, even an abrupt cancel, for up to 0.5 s behind a slow trailer)."""
    with trio.move_on_after(0.5):
        try:
            async for _ in chunks:
                pass
        except httpx.HTTPError:
            pass  # the connection is closed instead; the response was already complete


async def _deliver(request: _Request, error: KernelError) -> None:
    try:
        await request.reply.send(error)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


def _new_decoder(wire: str, prompt: Prompt) -> Any:
    if wire == "chat":
        from ._chat import ChatStreamDecoder

        return ChatStreamDecoder.for_prompt(prompt)
    from ._responses import ResponsesStreamDecoder

    return ResponsesStreamDecoder()


def _describe_transport_error(exc: httpx.HTTPError, settings: ModelSettings) -> str:
    kind = type(exc).__name__
    text = str(exc) or kind
    if settings.api_key:
        text = text.replace(settings.api_key, "[redacted]")
    return redact(f"{kind}: {text}")


async def _read_limited(response: httpx.Response) -> bytes:
    out = bytearray()
    async for chunk in response.aiter_raw():
        out += chunk
        if len(out) > _MAX_ERROR_BODY:
            break
    return bytes(out[:_MAX_ERROR_BODY])


def _encode_body(settings: ModelSettings, prompt: Prompt) -> bytes:
    if settings.wire == "chat":
        from ._chat import chat_request_body

        body = chat_request_body(prompt, model=settings.model)
    else:
        from ._responses import responses_request_body

        body = responses_request_body(
            prompt,
            model=settings.model,
            reasoning_effort=settings.reasoning_effort,
            reasoning_summary=settings.reasoning_summary,
        )
    return _JSON_ENCODER.encode(body)  # compact UTF-8 JSON; ~10x faster than json.dumps


class HttpModelClient:
    """Session-side handle of a :class:`ModelActor`; implements :class:`kernel.ModelClient`.

    ``stream(prompt)`` sends one request and yields the batches the actor sends back; errors are
    raised from iteration. Leaving the context (normally, on error or on cancellation) cancels the
    request in the actor and closes the HTTP response.
    """

    def __init__(self, actor: ModelActor) -> None:
        self.actor = actor

    def __repr__(self) -> str:
        return f"HttpModelClient({self.actor!r})"

    @property
    def settings(self) -> ModelSettings:
        """The actor's settings."""
        return self.actor.settings

    @asynccontextmanager
    async def stream(self, prompt: Prompt) -> AsyncIterator[AsyncIterator[Sequence[ModelEvent]]]:
        """Stream one response for ``prompt`` (see the class docstring). Checkpoints."""
        body = _encode_body(self.actor.settings, prompt)
        send, receive = trio.open_memory_channel[Sequence[ModelEvent] | KernelError](16)
        request = _Request(body, _new_decoder(self.actor.settings.wire, prompt), send, trio.CancelScope())
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
    settings: ModelSettings, *, http_client: httpx.AsyncClient | None = None
) -> AsyncIterator[ModelActor]:
    """Run a :class:`ModelActor` for the duration of the block; cancelled on exit."""
    actor = ModelActor(settings, http_client=http_client)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        try:
            yield actor
        finally:
            nursery.cancel_scope.cancel()
