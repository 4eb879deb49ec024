"""An in-memory scripted host: a model, a history, an event sink and tools, with no I/O, plus a fast backoff."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from ..events import Event
from ..items import (
    CustomToolCall,
    CustomToolCallOutput,
    FunctionCall,
    FunctionCallOutput,
    FunctionCallOutputPayload,
    Message,
    ResponseInputItem,
    ResponseItem,
)
from ..prompt import Prompt
from ..stream import Completed, Created, ModelEvent, OutputItemAdded, OutputItemDone, OutputTextDelta
from ..tools import CompletedResponseItem, RespondToModel
from ._strategies import Fault

__all__ = [
    "ScriptedResponse",
    "text_response",
    "tool_call_response",
    "ScriptedModel",
    "InMemoryHistory",
    "RecordingSink",
    "FunctionToolCall",
    "FunctionTools",
    "FastBackoff",
]


@attrs.define
class ScriptedResponse:
    """One scripted model response: ``batches`` of events (a ``Completed`` is appended if
    missing), or a ``fault`` raised after ``fault.after_events`` events. ``delay_between`` sleeps
    (Trio time) between batches; ``hang`` never completes (for interrupt tests)."""

    batches: list[list[ModelEvent]] = attrs.field(factory=list)
    fault: Fault | None = None
    delay_between: float = 0.0
    hang: bool = False


def text_response(text: str, *, chunks: int = 1, item_id: str = "msg-1") -> ScriptedResponse:
    """An assistant message streamed as ``chunks`` deltas (one batch each), then completed."""
    size = max(1, -(-len(text) // max(1, chunks)))
    pieces = [text[i : i + size] for i in range(0, len(text), size)] or [""]
    batches: list[list[ModelEvent]] = [
        [Created("resp"), OutputItemAdded(Message(role="assistant", content=(), id=item_id))]
    ]
    batches += [[OutputTextDelta(item_id, p)] for p in pieces]
    batches.append([OutputItemDone(Message.assistant(text, id=item_id)), Completed("resp")])
    return ScriptedResponse(batches)


def tool_call_response(*calls: tuple[str, str, Mapping[str, Any] | str], text: str | None = None) -> ScriptedResponse:
    """A response calling ``(call_id, name, args)`` tools (function calls; args as a dict or a
    JSON string), optionally after an assistant message, each call in its own batch."""
    batches: list[list[ModelEvent]] = [[Created("resp")]]
    if text is not None:
        batches.append([OutputItemDone(Message.assistant(text))])
    for call_id, name, args in calls:
        arguments = args if isinstance(args, str) else json.dumps(args)
        batches.append(
            [OutputItemDone(FunctionCall(call_id=call_id, name=name, arguments=arguments, id="fc_" + call_id))]
        )
    batches.append([Completed("resp")])
    return ScriptedResponse(batches)


@attrs.define(eq=False)
class ScriptedModel:
    """An in-memory :class:`~kernel.stream.ModelClient` playing ``responses`` in order.

    Each ``stream()`` call consumes the next response (past the end: a plain "done" message).
    ``prompts`` records every prompt received; ``attempts_per_transport`` counts requests per
    transport; with ``fallback=True`` it implements :class:`~kernel.stream.FallbackTransport`.
    """

    responses: list[ScriptedResponse] = attrs.field(factory=list)
    fallback: bool = False
    prompts: list[Prompt] = attrs.field(factory=list)
    transport: str = "primary"
    attempts_per_transport: dict[str, int] = attrs.field(factory=dict)
    switches: int = 0
    _next: int = 0

    def has_fallback(self) -> bool:
        """Whether a switch is still possible."""
        return self.fallback and self.transport == "primary"

    def try_switch_fallback_transport(self) -> bool:
        """Switch once to ``"fallback"``."""
        if not self.has_fallback():
            return False
        self.transport = "fallback"
        self.switches += 1
        return True

    @asynccontextmanager
    async def stream(self, prompt: Prompt) -> AsyncIterator[AsyncIterator[Sequence[ModelEvent]]]:
        """Play the next scripted response."""
        self.prompts.append(prompt)
        self.attempts_per_transport[self.transport] = self.attempts_per_transport.get(self.transport, 0) + 1
        if self._next < len(self.responses):
            response = self.responses[self._next]
        else:
            response = text_response("done")
        self._next += 1
        await trio.lowlevel.checkpoint()
        batches = self._play(response)
        try:
            yield batches
        finally:
            await batches.aclose()  # type: ignore[attr-defined]

    async def _play(self, response: ScriptedResponse) -> AsyncIterator[Sequence[ModelEvent]]:
        fault = response.fault
        budget = fault.after_events if fault is not None else None
        sent = 0
        for batch in response.batches:
            if response.delay_between:
                await trio.sleep(response.delay_between)
            else:
                await trio.lowlevel.checkpoint()
            if budget is not None:
                room = budget - sent
                if room <= 0:
                    break
                batch = batch[:room]
            sent += len(batch)
            yield batch
        if response.hang:
            await trio.sleep_forever()
        if fault is not None:
            err = fault.to_error()
            if err is not None:
                raise err
        if not any(isinstance(e, Completed) for b in response.batches for e in b):
            yield [Completed("resp")]


@attrs.define(eq=False)
class InMemoryHistory:
    """A :class:`~kernel.turn.History` kept in a list."""

    items: list[ResponseItem] = attrs.field(factory=list)

    async def record(self, items: Sequence[ResponseItem]) -> None:
        """Append. Does not checkpoint."""
        self.items.extend(items)

    async def prompt_input(self) -> list[ResponseItem]:
        """A copy of the log. Does not checkpoint."""
        return list(self.items)


@attrs.define(eq=False)
class RecordingSink:
    """An :class:`~kernel.events.EventSink` that keeps every event."""

    events: list[Event] = attrs.field(factory=list)

    async def publish(self, events: Sequence[Event]) -> None:
        """Keep ``events`` (does not checkpoint: never blocks the turn)."""
        self.events.extend(events)

    def of_type(self, cls: type[Any]) -> list[Any]:
        """The recorded events of one class."""
        return [e for e in self.events if isinstance(e, cls)]


@attrs.frozen
class FunctionToolCall:
    """A parsed call for :class:`FunctionTools` (implements :class:`~kernel.tools.ToolCall`)."""

    call_id: str
    name: str
    arguments: str
    custom: bool = False

    def error_response(self, message: str) -> ResponseInputItem:
        """A failed output for this call."""
        payload = FunctionCallOutputPayload.from_text(message, success=False)
        if self.custom:
            return CustomToolCallOutput(self.call_id, payload)
        return FunctionCallOutput(self.call_id, payload)


ToolFn = Callable[[Any], Awaitable[str]]


@attrs.define(eq=False)
class FunctionTools:
    """A :class:`~kernel.tools.ToolExecutor` over ``{name: async fn(args) -> str}``.

    Function calls get JSON-decoded arguments (invalid JSON → a model-visible error); custom
    calls get their raw ``input``. Unknown tool names are answered with a model-visible error.
    ``started`` records call ids in start order.
    """

    functions: Mapping[str, ToolFn]
    started: list[str] = attrs.field(factory=list)

    async def classify_response_item(self, item: ResponseItem) -> CompletedResponseItem[FunctionToolCall]:
        """Function and custom tool calls are tool calls; everything else is not. Does not
        checkpoint."""
        if isinstance(item, FunctionCall):
            return CompletedResponseItem.ToolCall(item, FunctionToolCall(item.call_id, item.name, item.arguments))
        if isinstance(item, CustomToolCall):
            return CompletedResponseItem.ToolCall(item, FunctionToolCall(item.call_id, item.name, item.input, True))
        return CompletedResponseItem.NonTool(item)  # type: ignore[return-value]

    async def execute_tool_call(self, call: FunctionToolCall) -> ResponseInputItem:
        """Run the named function; its text becomes the output."""
        self.started.append(call.call_id)
        fn = self.functions.get(call.name)
        if fn is None:
            raise RespondToModel(f"unknown tool {call.name!r}")
        if call.custom:
            args: Any = call.arguments
        else:
            try:
                args = json.loads(call.arguments) if call.arguments else {}
            except ValueError as exc:
                raise RespondToModel(f"invalid JSON arguments for {call.name!r}: {exc}") from None
        text = await fn(args)
        payload = FunctionCallOutputPayload.from_text(text, success=True)
        if call.custom:
            return CustomToolCallOutput(call.call_id, payload)
        return FunctionCallOutput(call.call_id, payload)


class FastBackoff(random.Random):
    """A ``random.Random`` whose :meth:`uniform` is scaled by ``scale``.

    :func:`~kernel.errors.backoff` draws its jitter with ``rng.uniform(0.9, 1.1)``; give a
    ``FastBackoff(0.01)`` as ``TurnHost.rng`` (``session.host.rng``) and the retry delays become
    2 ms, 4 ms, 8 ms… instead of 200 ms, 400 ms, 800 ms — same shape, same jitter, fast tests.
    Server-requested delays (``Retry-After``) are not scaled.
    """

    def __init__(self, scale: float = 0.01, seed: int | None = None) -> None:
        super().__init__(seed)
        if not scale > 0:
            raise ValueError(f"FastBackoff.scale must be > 0, got {scale!r}")
        self.scale = scale

    def uniform(self, a: float, b: float) -> float:
        """``scale × uniform(a, b)``."""
        return self.scale * super().uniform(a, b)
