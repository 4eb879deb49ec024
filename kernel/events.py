"""What a UI or an embedding application observes of a turn.

Events are frozen attrs values. Two families:

* **deltas** (:class:`TextDelta`, :class:`ReasoningDelta`, :class:`ToolInputDelta`) — streaming
  progress; ``lifecycle = False``: a notifier under pressure may coalesce consecutive deltas of
  the same item into one (the concatenated text is unchanged);
* **lifecycle** events (everything else) — never dropped, never coalesced.

Every event carries ``turn_id``, the id of the turn that published it (a keyword field that
takes no part in equality; ``""`` for an event built outside a turn). The kernel publishes
events in batches through an :class:`EventSink`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, Union

import attrs

from ._deltas import TextDelta, ToolInputDelta
from .items import ResponseInputItem, ResponseItem
from .stream import TokenUsage

__all__ = [
    "TurnStarted",
    "TextDelta",
    "ReasoningDelta",
    "ToolInputDelta",
    "ItemStarted",
    "ItemCompleted",
    "ToolCallStarted",
    "ToolCallFinished",
    "ToolProgress",
    "StreamRetry",
    "FallbackWarning",
    "RequestSent",
    "CompactionStarted",
    "CompactionFinished",
    "TokenUsageUpdated",
    "RateLimitsUpdated",
    "ContextWindowFull",
    "TurnCompleted",
    "TurnAborted",
    "TurnFailed",
    "Event",
    "EventSink",
    "event_to_dict",
]


@attrs.frozen
class TurnStarted:
    """A turn began."""

    turn_id: str
    lifecycle: ClassVar[bool] = True


@attrs.frozen
class ReasoningDelta:
    """Reasoning text as it streams; ``kind`` is ``"summary"`` or ``"content"``;
    ``section_break`` marks the start of a new summary section (``delta`` is then empty)."""

    item_id: str
    delta: str
    kind: str = "summary"
    section_break: bool = False
    turn_id: str = attrs.field(default="", eq=False, kw_only=True)
    lifecycle: ClassVar[bool] = False


@attrs.frozen
class ItemStarted:
    """The model began an output item (partial)."""

    item: ResponseItem
    turn_id: str = attrs.field(default="", eq=False, kw_only=True)
    lifecycle: ClassVar[bool] = True


@attrs.frozen
class ItemCompleted:
    """A complete item was recorded in history."""

    item: ResponseItem
    turn_id: str = attrs.field(default="", eq=False, kw_only=True)
    lifecycle: ClassVar[bool] = True


@attrs.frozen
class ToolCallStarted:
    """A tool call began executing (at once: while the response still streams)."""

    call_id: str
    name: str
    item: ResponseItem
    turn_id: str = attrs.field(default="", eq=False, kw_only=True)
    lifecycle: ClassVar[bool] = True


@attrs.frozen
class ToolCallFinished:
    """A tool call produced its output. ``status`` is ``"ok"``, ``"error"`` (model-visible
    failure), ``"fatal"`` or ``"aborted"``; ``duration`` is in seconds."""

    call_id: str
    output: ResponseInputItem
    status: str
    duration: float
    turn_id: str = attrs.field(default="", eq=False, kw_only=True)
    lifecycle: ClassVar[bool] = True


@attrs.frozen
class ToolProgress:
    """A running tool reported progress (an MCP server's ``notifications/progress``): ``name``
    is the tool's model-facing name, ``server`` the MCP server, ``call_id`` the call when known
    (``""`` otherwise); ``total`` and ``message`` are ``None`` when the server sent none. A
    lifecycle event: the notifier's coalescing only merges text deltas."""

    name: str
    progress: float
    total: float | None = None
    message: str | None = None
    server: str = ""
    call_id: str = ""
    turn_id: str = attrs.field(default="", eq=False, kw_only=True)
    lifecycle: ClassVar[bool] = True


@attrs.frozen
class StreamRetry:
    """The request is retried: ``message`` is ``"Reconnecting... n/max"``; ``delay`` seconds;
    ``error`` is the failure's text."""

    message: str
    retries: int
    max_retries: int
    delay: float
    error: str
    turn_id: str = attrs.field(default="", eq=False, kw_only=True)
    lifecycle: ClassVar[bool] = True


@attrs.frozen
class FallbackWarning:
    """The session switched to its fallback transport."""

    message: str
    turn_id: str = attrs.field(default="", eq=False, kw_only=True)
    lifecycle: ClassVar[bool] = True


@attrs.frozen
class RequestSent:
    """A model request went out over ``transport`` (``"http"``, ``"websocket"``); ``incremental``:
    only the new input items were sent, after ``previous_response_id``. Recorded in the rollout, so
    it tells which transport served each request (the switch itself is a :class:`FallbackWarning`)."""

    transport: str
    incremental: bool = False
    turn_id: str = attrs.field(default="", eq=False, kw_only=True)
    lifecycle: ClassVar[bool] = True


@attrs.frozen
class CompactionStarted:
    """The history is being compacted: ``reason`` is ``"threshold"`` (the estimate reached the
    limit), ``"window"`` (a request was refused for the window) or ``"manual"``;
    ``tokens_before`` is the estimate of the history."""

    reason: str
    tokens_before: int
    turn_id: str = attrs.field(default="", eq=False, kw_only=True)
    lifecycle: ClassVar[bool] = True


@attrs.frozen
class CompactionFinished:
    """The history was compacted (``mode``: ``"remote"``, ``"local"`` or ``"server"``), from
    ``items_before`` items / ``tokens_before`` to ``items_after`` / ``tokens_after`` (estimates);
    or it could not be (``error`` says why; the history is unchanged)."""

    mode: str
    items_before: int
    items_after: int
    tokens_before: int
    tokens_after: int
    error: str | None = None
    turn_id: str = attrs.field(default="", eq=False, kw_only=True)
    lifecycle: ClassVar[bool] = True


@attrs.frozen
class TokenUsageUpdated:
    """Usage of the last response and the session's running total."""

    last: TokenUsage
    total: TokenUsage
    turn_id: str = attrs.field(default="", eq=False, kw_only=True)
    lifecycle: ClassVar[bool] = True


@attrs.frozen
class RateLimitsUpdated:
    """A rate-limit snapshot (from response headers or a usage-limit error)."""

    snapshot: Any
    turn_id: str = attrs.field(default="", eq=False, kw_only=True)
    lifecycle: ClassVar[bool] = True


@attrs.frozen
class ContextWindowFull:
    """The context window is full; the host marked it so."""

    turn_id: str = attrs.field(default="", eq=False, kw_only=True)
    lifecycle: ClassVar[bool] = True


@attrs.frozen
class TurnCompleted:
    """The turn ended normally."""

    turn_id: str
    last_agent_message: str | None
    lifecycle: ClassVar[bool] = True


@attrs.frozen
class TurnAborted:
    """The turn was interrupted; calls in flight got aborted outputs."""

    turn_id: str
    reason: str = "interrupted"
    lifecycle: ClassVar[bool] = True


@attrs.frozen
class TurnFailed:
    """The turn ended with an error (``error_type`` is the kernel error's class name)."""

    turn_id: str
    error: str
    error_type: str
    lifecycle: ClassVar[bool] = True


Event = Union[
    TurnStarted,
    TextDelta,
    ReasoningDelta,
    ToolInputDelta,
    ItemStarted,
    ItemCompleted,
    ToolCallStarted,
    ToolCallFinished,
    ToolProgress,
    StreamRetry,
    FallbackWarning,
    RequestSent,
    CompactionStarted,
    CompactionFinished,
    TokenUsageUpdated,
    RateLimitsUpdated,
    ContextWindowFull,
    TurnCompleted,
    TurnAborted,
    TurnFailed,
]
"""Any event a turn publishes."""


class EventSink(Protocol):
    """Where a turn publishes its events, a batch at a time (in order)."""

    async def publish(self, events: Sequence[Event]) -> None:
        """Deliver ``events``; must not block the turn for long (buffer or coalesce)."""
        ...


def event_to_dict(event: Event) -> dict[str, Any]:
    """A JSON-ready dict of an event: ``{"type": "text_delta", ...}`` (items in wire form)."""
    from .items import item_to_wire

    name = type(event).__name__
    out: dict[str, Any] = {"type": "".join("_" + c.lower() if c.isupper() else c for c in name)[1:]}
    for field in attrs.fields(type(event)):
        value = getattr(event, field.name)
        if field.name in ("item", "output"):
            value = item_to_wire(value)
        elif attrs.has(type(value)):
            value = attrs.asdict(value)
        out[field.name] = value
    return out
