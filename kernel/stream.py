"""What a model transport hands the kernel: decoded stream events, delivered in batches.

A transport (the HTTP ModelActor, an in-memory script, a host's own client) implements
:class:`ModelClient`. Its stream yields *batches* — every event decoded from one network read
travels as one list — because one channel hop costs about as much as decoding several events.
Errors are raised from the stream as :class:`~kernel.errors.KernelError` subclasses. A stream that
ends without :class:`Completed` is a broken stream (the turn raises ``StreamError``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, Union, runtime_checkable

import attrs

from ._deltas import TextDelta, ToolInputDelta
from .items import ResponseItem
from .prompt import Prompt

OutputTextDelta = TextDelta
"""``response.output_text.delta``: the same class as the UI event :class:`~kernel.TextDelta`, so
the turn forwards a streamed delta without allocating another object (the per-event hot path)."""

ToolCallInputDelta = ToolInputDelta
"""``response.function_call_arguments.delta`` / ``response.custom_tool_call_input.delta``: the same
class as the UI event :class:`~kernel.ToolInputDelta`."""

__all__ = [
    "Created",
    "OutputItemAdded",
    "OutputItemDone",
    "OutputTextDelta",
    "ReasoningSummaryDelta",
    "ReasoningSummaryPartAdded",
    "ReasoningContentDelta",
    "ToolCallInputDelta",
    "RateLimitsSnapshot",
    "Completed",
    "TransportUsed",
    "TokenUsage",
    "ModelEvent",
    "ModelClient",
    "FallbackTransport",
]


@attrs.frozen
class TokenUsage:
    """Token counts of one response (or a running total)."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_output_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.input_tokens + other.input_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.output_tokens + other.output_tokens,
            self.reasoning_output_tokens + other.reasoning_output_tokens,
            self.total_tokens + other.total_tokens,
        )

    @classmethod
    def from_wire(cls, usage: Any) -> TokenUsage | None:
        """From a Responses ``usage`` object (or Chat Completions' ``prompt_tokens`` /
        ``completion_tokens``); ``None`` when absent or not an object."""
        if not isinstance(usage, dict):
            return None

        def num(value: Any) -> int:
            return value if isinstance(value, int) and not isinstance(value, bool) else 0

        def detail(key: str, sub: str) -> int:
            d = usage.get(key)
            return num(d.get(sub)) if isinstance(d, dict) else 0

        inp = num(usage.get("input_tokens", usage.get("prompt_tokens")))
        out = num(usage.get("output_tokens", usage.get("completion_tokens")))
        total = num(usage.get("total_tokens")) or inp + out
        return cls(
            inp,
            detail("input_tokens_details", "cached_tokens") or detail("prompt_tokens_details", "cached_tokens"),
            out,
            detail("output_tokens_details", "reasoning_tokens")
            or detail("completion_tokens_details", "reasoning_tokens"),
            total,
        )


@attrs.frozen
class Created:
    """``response.created``."""

    response_id: str | None = None


@attrs.frozen
class OutputItemAdded:
    """``response.output_item.added``: a (partial) item started."""

    item: ResponseItem


@attrs.frozen
class OutputItemDone:
    """``response.output_item.done``: a complete item — the unit the kernel classifies."""

    item: ResponseItem


@attrs.frozen
class ReasoningSummaryDelta:
    """``response.reasoning_summary_text.delta``."""

    item_id: str
    delta: str
    summary_index: int = 0


@attrs.frozen
class ReasoningSummaryPartAdded:
    """``response.reasoning_summary_part.added``: a new reasoning section."""

    item_id: str
    summary_index: int = 0


@attrs.frozen
class ReasoningContentDelta:
    """``response.reasoning_text.delta``: raw reasoning."""

    item_id: str
    delta: str
    content_index: int = 0


@attrs.frozen
class RateLimitsSnapshot:
    """Rate-limit headers of a response (``x-codex-primary-*`` / ``x-codex-secondary-*``)."""

    primary_used_percent: float | None = None
    primary_window_minutes: float | None = None
    primary_reset_after_seconds: float | None = None
    secondary_used_percent: float | None = None
    secondary_window_minutes: float | None = None
    secondary_reset_after_seconds: float | None = None


@attrs.frozen
class TransportUsed:
    """Which transport serves this request, sent before its first event by transports that say
    so: ``name`` (``"http"``, ``"websocket"``); ``incremental`` when only the new input items were
    sent, after ``previous_response_id``."""

    name: str
    incremental: bool = False


@attrs.frozen
class Completed:
    """``response.completed``: the response ended normally. ``end_turn=False`` asks for a
    follow-up request."""

    response_id: str | None = None
    usage: TokenUsage | None = None
    end_turn: bool | None = None


ModelEvent = Union[
    Created,
    OutputItemAdded,
    OutputItemDone,
    OutputTextDelta,
    ReasoningSummaryDelta,
    ReasoningSummaryPartAdded,
    ReasoningContentDelta,
    ToolCallInputDelta,
    RateLimitsSnapshot,
    Completed,
    TransportUsed,
]
"""One decoded model stream event."""


class ModelClient(Protocol):
    """A model transport (the seed's ``ModelClientSession``).

    ``stream(prompt)`` is an async context manager giving an async iterator of event batches;
    leaving it closes the request. Failures are raised as
    :class:`~kernel.errors.KernelError` subclasses (from entering or from iterating).
    """

    def stream(self, prompt: Prompt) -> AbstractAsyncContextManager[AsyncIterator[Sequence[ModelEvent]]]:
        """Open a streaming request for ``prompt``."""
        ...


@runtime_checkable
class FallbackTransport(Protocol):
    """Optional: a :class:`ModelClient` that can switch to a fallback transport (for example
    WebSocket → HTTP) once its retry budget is spent."""

    def has_fallback(self) -> bool:
        """Whether a switch is still possible."""
        ...

    def try_switch_fallback_transport(self) -> bool:
        """Switch; ``False`` when no fallback is left."""
        ...
