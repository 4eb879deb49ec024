"""The seam between the :class:`~actors.model.ModelActor` and the wire: a model transport.

A :class:`ModelTransport` is one way of reaching the endpoint (HTTP+SSE today, see
:class:`~actors.model.HttpSseTransport`; a WebSocket transport is another implementation of this
protocol, not a branch in the actor). The actor opens each of its transports once (``open()``:
connection pools, shared sockets) and then runs every request in a task of its own, calling
``await transport.stream(request)``. The transport sends the request, feeds what arrives to
``request.decoder`` and delivers the decoded events with :func:`deliver_batch`, **one batch per
network read** (one channel hop costs about as much as decoding several events). It signals failure
by raising a :class:`~kernel.errors.KernelError` (its own I/O errors mapped to
:class:`~kernel.errors.StreamError` or the PROTOCOL §3 classes), never a library exception.

Fallback: the actor's transports are ordered, primary first. The session-side client
(:class:`~actors.model.HttpModelClient`) starts every session on the first and moves it, once its
retry budget is spent, to the next (the kernel's ``try_switch_fallback_transport`` decision point).
Per-session transport state (a socket, the last response id and the input it answered) is made by
:meth:`ModelTransport.session_state` and kept by that client, so one actor still serves many
sessions.

Why "model transport" and not "transport": an ``httpx`` transport (:class:`~actors.model._pool.ShardedTransport`)
sits one layer below, inside :class:`~actors.model.HttpSseTransport`.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable

import attrs
import trio

from kernel.errors import KernelError, StreamError
from kernel.stream import ModelEvent

__all__ = ["ModelTransport", "StreamDecoder", "StreamRequest", "deliver_batch", "pump_stream"]


class StreamDecoder(Protocol):
    """What a wire codec's streaming decoder offers a transport (``ResponsesStreamDecoder``,
    ``ChatStreamDecoder``): ``feed`` bytes as they arrive; ``done`` once the terminal event was
    seen; ``error`` the :class:`~kernel.errors.KernelError` the stream ended with, if any;
    ``finish()`` at EOF (events a stream without a terminal marker still completes with)."""

    done: bool
    error: KernelError | None

    def feed(self, chunk: bytes) -> list[ModelEvent]: ...

    def finish(self) -> Sequence[ModelEvent] | None: ...


@attrs.define(eq=False)
class StreamRequest:
    """One streaming request, as the actor hands it to a transport.

    ``body`` is the wire body (the JSON object of ``POST /responses`` or ``/chat/completions``);
    ``decoder`` decodes what arrives; ``reply`` carries batches (or the final error) back to the
    session; ``scope`` is cancelled when the session leaves the stream; ``state`` is the session's
    own state for this transport (:meth:`ModelTransport.session_state`).
    """

    body: dict[str, Any]
    decoder: StreamDecoder
    reply: trio.MemorySendChannel[Sequence[ModelEvent] | KernelError]
    scope: trio.CancelScope
    state: Any = None
    completed: bool = False
    """The response completed: the client leaving the stream no longer cancels the request, so
    the transport can drain the body's tail (connection reuse) without shielding it."""


@runtime_checkable
class ModelTransport(Protocol):
    """One way of reaching a model endpoint, shared by every session of a ModelActor."""

    name: str
    """Short name for messages and events (``"http"``, ``"websocket"``)."""

    def open(self) -> AbstractAsyncContextManager[None]:
        """Hold the transport's shared resources (a connection pool) for the actor's lifetime."""
        ...

    def session_state(self) -> Any:
        """A new session's state for this transport (``None`` when it keeps none)."""
        ...

    async def stream(self, request: StreamRequest) -> None:
        """Send ``request`` and deliver its events with :func:`deliver_batch`; return once the
        stream ended; raise a :class:`~kernel.errors.KernelError` when it failed."""
        ...


async def deliver_batch(request: StreamRequest, events: list[ModelEvent], idle_scope: trio.CancelScope | None) -> None:
    """Send one batch to the session: without waiting when its channel has room (the common case),
    otherwise wait with ``idle_scope``'s deadline lifted (a slow session is not an idle model)."""
    try:
        request.reply.send_nowait(events)
    except trio.WouldBlock:
        if idle_scope is not None:
            idle_scope.deadline = math.inf
        await request.reply.send(events)


async def pump_stream(
    request: StreamRequest,
    next_chunk: Callable[[], Awaitable[bytes]],
    idle_timeout: float,
    first: list[ModelEvent] | None = None,
) -> bool:
    """Read chunks with ``next_chunk`` (``StopAsyncIteration`` at EOF), decode them and deliver one
    batch per chunk, until the decoder is done, fails, or the stream ends. ``first`` (events the
    transport learnt before the body, such as rate limits from headers) travel with the first batch.

    Returns ``True`` when the response completed (the caller may drain the connection for reuse),
    ``False`` at EOF (after delivering what ``decoder.finish()`` adds). Raises the decoder's error,
    or :class:`~kernel.errors.StreamError` when no chunk arrives for ``idle_timeout`` seconds.
    Hot path: one cancel scope for the whole stream, its deadline moved before each read (cheaper
    than a scope per chunk)."""
    decoder = request.decoder
    now = trio.current_time
    with trio.CancelScope() as idle_scope:
        while True:
            idle_scope.deadline = now() + idle_timeout
            try:
                chunk = await next_chunk()
            except StopAsyncIteration:
                break
            events = decoder.feed(chunk)
            if decoder.done and decoder.error is None:
                request.completed = True  # before the client can see the completion
            if first:
                events = first + events
                first = None
            if events:
                await deliver_batch(request, events, idle_scope)
            if decoder.error is not None:
                raise decoder.error
            if decoder.done:
                return True
    if idle_scope.cancelled_caught:
        raise StreamError(f"idle timeout: no bytes from the model for {idle_timeout:g}s")
    tail = decoder.finish()  # chat: a stream with a finish_reason but no [DONE] completes here
    if tail:
        await request.reply.send(list(tail))
    if decoder.error is not None:
        raise decoder.error
    return False
