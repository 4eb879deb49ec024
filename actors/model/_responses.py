"""The Responses API wire layer: request bodies and the streaming-event decoder (PROTOCOL §2/§3).

:class:`ResponsesStreamDecoder` turns the raw bytes of a ``POST /responses`` SSE stream, in any
split, into :mod:`kernel.stream` events. It is the per-event hot path of the HTTP ModelActor, so
the common events (text, tool-argument and reasoning deltas) are decoded by one
``msgspec.json.Decoder`` into a small struct holding only the fields the kernel reads; nested
``item`` / ``response`` objects are kept as raw JSON spans and decoded only for the rare events
that use them. Anything off-shape falls back to a generic (slow, careful) path that names the
event and the field.

:func:`responses_request_body` builds the JSON body of one request from a
:class:`~kernel.prompt.Prompt`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

import msgspec

from kernel.errors import (
    IncompleteResponse,
    KernelError,
    StreamError,
    WireFormatError,
)
from kernel.items import UnknownItem, item_from_wire, item_to_wire, json_type_name, tool_to_wire
from kernel.prompt import Prompt
from kernel.stream import (
    Completed,
    Created,
    ModelEvent,
    OutputItemAdded,
    OutputItemDone,
    OutputTextDelta,
    RateLimitsSnapshot,
    ReasoningContentDelta,
    ReasoningSummaryDelta,
    ReasoningSummaryPartAdded,
    TokenUsage,
    ToolCallInputDelta,
)

from ._error_table import error_from_failure
from ._sse import DEFAULT_MAX_EVENT_BYTES, SSEDecoder, SSEOverflow

__all__ = [
    "ResponsesStreamDecoder",
    "responses_request_body",
    "error_from_failure",
    "OUTPUT_SCHEMA_NAME",
    "STREAM_CLOSED_MESSAGE",
    "MAX_ITEM_DEPTH",
    "HANDLED_EVENT_TYPES",
    "IGNORED_EVENT_TYPES",
]

OUTPUT_SCHEMA_NAME: Final = "codex_output_schema"
"""``text.format.name`` of a request with an output schema (as codex sends it)."""

MIN_OUTPUT_TOKENS: Final = 16
"""The smallest ``max_output_tokens`` the Responses API accepts (a smaller bound is raised to it)."""

STREAM_CLOSED_MESSAGE: Final = "stream closed before response.completed"
"""The :class:`StreamError` message of a stream that ended before a terminal event."""


# ---------------------------------------------------------------------------------------------
# request body
# ---------------------------------------------------------------------------------------------


def responses_request_body(
    prompt: Prompt,
    *,
    model: str,
    reasoning_effort: str | None = None,
    reasoning_summary: str | None = "auto",
    prompt_cache_key: str | None = None,
    verbosity: str | None = None,
    wire_cache: dict[int, tuple[Any, dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """The JSON body of a streaming ``POST /responses`` for ``prompt`` (PROTOCOL §2).

    ``reasoning`` (``{"effort", "summary"}``) and ``include: ["reasoning.encrypted_content"]``
    are sent only when ``reasoning_effort`` is given (``summary`` is left out when
    ``reasoning_summary`` is ``None``). ``text`` is sent when ``verbosity`` is given or the
    prompt has an ``output_schema`` (``{"type": "json_schema", "name": "codex_output_schema",
    "schema": ..., "strict": prompt.output_schema_strict}``). ``store`` is always ``false`` and
    ``stream`` always ``true``. Input items are sent without their server-side ``id`` (as codex
    does): with ``store: false`` the server keeps no items, so an id would point at nothing. An
    ``item_reference`` (typed, or the ``{"id": ...}`` form with ``type`` absent or null) keeps
    its ``id``: the id is what it sends.
    """
    body: dict[str, Any] = {
        "model": model,
        "instructions": prompt.base_instructions,
        "input": _inputs_wire(prompt.formatted_input(), wire_cache),
        "tools": [tool_to_wire(tool) for tool in prompt.tools],
        "tool_choice": "auto",
        "parallel_tool_calls": prompt.parallel_tool_calls,
        "store": False,
        "stream": True,
    }
    if reasoning_effort is not None:
        reasoning: dict[str, Any] = {"effort": reasoning_effort}
        if reasoning_summary is not None:
            reasoning["summary"] = reasoning_summary
        body["reasoning"] = reasoning
        body["include"] = ["reasoning.encrypted_content"]
    else:
        body["include"] = []
    text: dict[str, Any] = {}
    if verbosity is not None:
        text["verbosity"] = verbosity
    if prompt.output_schema is not None:
        text["format"] = {
            "type": "json_schema",
            "name": OUTPUT_SCHEMA_NAME,
            "schema": prompt.output_schema,
            "strict": prompt.output_schema_strict,
        }
    if text:
        body["text"] = text
    if prompt_cache_key is not None:
        body["prompt_cache_key"] = prompt_cache_key
    if prompt.max_output_tokens is not None:
        body["max_output_tokens"] = max(MIN_OUTPUT_TOKENS, prompt.max_output_tokens)
    return body


def _inputs_wire(items: list[Any], cache: dict[int, tuple[Any, dict[str, Any]]] | None) -> list[dict[str, Any]]:
    """The input items in wire form. With ``cache`` (one per session: ``id(item) → (item, wire)``,
    refreshed to this request's items), an item already encoded for the previous request is not
    encoded again: a long history costs one dict lookup per item. The cached dicts are shared
    between requests and must not be mutated (nothing downstream does)."""
    if cache is None:
        return [_input_wire(item) for item in items]
    out: list[dict[str, Any]] = []
    fresh: dict[int, tuple[Any, dict[str, Any]]] = {}
    for item in items:
        key = id(item)
        hit = cache.get(key)
        wire = hit[1] if hit is not None and hit[0] is item else _input_wire(item)
        fresh[key] = (item, wire)  # the item is held, so its id is not reused while cached
        out.append(wire)
    cache.clear()
    cache.update(fresh)
    return out


def input_wire(item: Any) -> dict[str, Any]:
    """An input item as a request's ``input`` carries it (its server-side ``id`` dropped, except
    for an item reference, whose id is the reference)."""
    return _input_wire(item)


def _input_wire(item: Any) -> dict[str, Any]:
    wire = item_to_wire(item)
    if wire.get("type") == "item_reference" or (isinstance(item, UnknownItem) and wire.get("type") is None):
        return wire  # an item reference (its type is optional): the id is the reference
    wire.pop("id", None)
    return wire


# ---------------------------------------------------------------------------------------------
# failures carried by the stream
# ---------------------------------------------------------------------------------------------


# (the table: actors.model._error_table, one place for HTTP, in-stream and Chat errors)


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _opt_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if value == value and value not in (float("inf"), float("-inf")) else None


# ---------------------------------------------------------------------------------------------
# the stream decoder
# ---------------------------------------------------------------------------------------------

_NO_RAW: Final = msgspec.Raw()


class _Event(msgspec.Struct, gc=False):
    """The fields of a Responses stream event that the kernel reads; all others are skipped by
    the decoder. ``item`` / ``response`` stay raw JSON until a handler needs them."""

    type: str | None = None
    delta: str | None = None
    item_id: str | None = None
    summary_index: int | None = None
    content_index: int | None = None
    item: msgspec.Raw = _NO_RAW  # the slow path stores decoded values here instead
    response: msgspec.Raw = _NO_RAW


_decode_event: Final = msgspec.json.Decoder(_Event).decode


class _Terminal(Exception):
    """Raised inside the decoding loop to end the stream with ``error``."""

    def __init__(self, error: KernelError) -> None:
        super().__init__(error)
        self.error = error


def _type_name(value: Any) -> str:
    return json_type_name(value, show_number=False)


def _stream_error(event: str, detail: str) -> _Terminal:
    return _Terminal(StreamError(f"malformed {event} event: {detail}"))


def _missing(event: str, field: str) -> _Terminal:
    return _stream_error(event, f"required field {field!r} is missing")


def _json_value(value: Any) -> Any:
    return msgspec.json.decode(value) if type(value) is msgspec.Raw else value


def _object_field(ev: _Event, name: str, event: str, *, required: bool) -> dict[str, Any] | None:
    raw = getattr(ev, name)
    if raw is _NO_RAW:
        if required:
            raise _missing(event, name)
        return None
    value = _json_value(raw)
    if not isinstance(value, dict):
        if required:
            raise _stream_error(event, f"field {name!r} must be an object, got {_type_name(value)}")
        return None
    return value


# --- handlers of the rarer events: (event, type, data) -> ModelEvent | None -----------------


def _on_created(ev: _Event, t: str, data: bytes) -> ModelEvent:
    response = _object_field(ev, "response", t, required=False)
    return Created(_opt_str(response.get("id")) if response is not None else None)


MAX_ITEM_DEPTH: Final = 128
"""Deepest nesting of JSON arrays/objects accepted in a streamed output item. msgspec decodes up
to ~1000 levels whatever the call stack, but the JSON encoders that write the item to the rollout
and send it back in the next request recurse on the Python stack and fail near 1000 levels minus
the caller's depth: an item the decoder accepted could then crash the session with a raw
``RecursionError``. Real items nest a handful of levels."""


def _too_deep(value: Any, limit: int = MAX_ITEM_DEPTH) -> bool:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, (dict, list)):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


def _checked_item(ev: _Event, t: str) -> dict[str, Any]:
    item = _object_field(ev, "item", t, required=True)
    assert item is not None
    if _too_deep(item):
        raise _stream_error(t, f"the item is nested deeper than {MAX_ITEM_DEPTH} levels")
    return item


def _on_item_added(ev: _Event, t: str, data: bytes) -> ModelEvent:
    item = _checked_item(ev, t)
    try:
        return OutputItemAdded(item_from_wire(item))
    except WireFormatError:
        # added items are partial by design (UI only): keep what came, losslessly
        return OutputItemAdded(UnknownItem(item))


def _on_item_done(ev: _Event, t: str, data: bytes) -> ModelEvent:
    item = _checked_item(ev, t)
    try:
        done = OutputItemDone(item_from_wire(item))
    except WireFormatError as exc:
        raise _stream_error(t, f"invalid item: {exc.message}") from None
    ev.item = item  # type: ignore[assignment]  # decoded: the decoder notes the item's id
    return done


def _on_summary_part(ev: _Event, t: str, data: bytes) -> ModelEvent:
    return ReasoningSummaryPartAdded(ev.item_id or "", ev.summary_index or 0)


def _on_completed(ev: _Event, t: str, data: bytes) -> ModelEvent:
    response = _object_field(ev, "response", t, required=True)
    assert response is not None
    ev.response = response  # type: ignore[assignment]  # decoded: the decoder backfills its output
    end_turn = response.get("end_turn")
    return Completed(
        _opt_str(response.get("id")),
        TokenUsage.from_wire(response.get("usage")),
        end_turn if isinstance(end_turn, bool) else None,
    )


def _on_incomplete(ev: _Event, t: str, data: bytes) -> ModelEvent:
    response = _object_field(ev, "response", t, required=False) or {}
    details = response.get("incomplete_details")
    reason = details.get("reason") if isinstance(details, dict) else None
    raise _Terminal(IncompleteResponse(reason if isinstance(reason, str) and reason else "unknown"))


def _on_failed(ev: _Event, t: str, data: bytes) -> ModelEvent:
    response = _object_field(ev, "response", t, required=False) or {}
    raise _Terminal(error_from_failure(response.get("error"), "response.failed event received"))


def _on_error(ev: _Event, t: str, data: bytes) -> ModelEvent:
    obj = msgspec.json.decode(data)
    err = obj.get("error") if isinstance(obj, dict) else None
    if not isinstance(err, dict):
        err = obj if isinstance(obj, dict) else {}
    raise _Terminal(error_from_failure(err, "error event received"))


def _on_rate_limits(ev: _Event, t: str, data: bytes) -> ModelEvent | None:
    """``codex.rate_limits`` (codex backend, informational): never fails the stream."""
    obj = msgspec.json.decode(data)
    limits = obj.get("rate_limits") if isinstance(obj, dict) else None
    if not isinstance(limits, dict):
        return None
    values: dict[str, float | None] = {}
    for window in ("primary", "secondary"):
        w = limits.get(window)
        w = w if isinstance(w, dict) else {}
        for field in ("used_percent", "window_minutes", "reset_after_seconds"):
            values[f"{window}_{field}"] = _opt_number(w.get(field))
    if all(v is None for v in values.values()):
        return None
    return RateLimitsSnapshot(**values)


# --- hot-path construction of the delta events ------------------------------------------------
#
# attrs' frozen ``__init__`` goes through ``object.__setattr__`` bound per call; writing the slots
# through their member descriptors builds the same object in about half the time. Used only when
# the class is exactly what this module expects (slotted attrs class, these fields in this
# order, no validators / converters / post-init); otherwise the ordinary constructor is used.


def _slot_setters(cls: type[Any], names: tuple[str, ...]) -> tuple[Any, ...] | None:
    import attrs

    try:
        fields = attrs.fields(cls)
    except Exception:
        return None
    if tuple(f.name for f in fields) != names:
        return None
    if any(f.validator is not None or f.converter is not None or not f.init for f in fields):
        return None
    if hasattr(cls, "__attrs_post_init__") or hasattr(cls, "__attrs_pre_init__"):
        return None
    setters = []
    for name in names:
        descriptor = cls.__dict__.get(name)
        setter = getattr(descriptor, "__set__", None)
        if setter is None or type(descriptor).__name__ != "member_descriptor":
            return None
        setters.append(setter)
    return tuple(setters)


_TEXT_SETTERS: Final = _slot_setters(OutputTextDelta, ("item_id", "delta", "turn_id"))
_TOOL_SETTERS: Final = _slot_setters(ToolCallInputDelta, ("item_id", "delta", "turn_id"))
_SUMMARY_SETTERS: Final = _slot_setters(ReasoningSummaryDelta, ("item_id", "delta", "summary_index"))
_REASONING_SETTERS: Final = _slot_setters(ReasoningContentDelta, ("item_id", "delta", "content_index"))
_FAST_CONSTRUCTION: Final = None not in (
    _TEXT_SETTERS,
    _TOOL_SETTERS,
    _SUMMARY_SETTERS,
    _REASONING_SETTERS,
)


def _three_slot_factory(cls: type[Any], setters: tuple[Any, ...] | None) -> Callable[..., Any]:
    if setters is None:
        return cls
    a, b, c = setters
    new = object.__new__

    def make(x: Any, y: Any, z: Any) -> Any:
        obj = new(cls)
        a(obj, x)
        b(obj, y)
        c(obj, z)
        return obj

    return make


_summary_delta: Final[Callable[[str, str, int], ReasoningSummaryDelta]] = _three_slot_factory(
    ReasoningSummaryDelta, _SUMMARY_SETTERS
)
_reasoning_delta: Final[Callable[[str, str, int], ReasoningContentDelta]] = _three_slot_factory(
    ReasoningContentDelta, _REASONING_SETTERS
)


_TEXT: Final = "response.output_text.delta"
_ARGS: Final = "response.function_call_arguments.delta"
_CUSTOM: Final = "response.custom_tool_call_input.delta"
_SUMMARY: Final = "response.reasoning_summary_text.delta"
_REASONING: Final = "response.reasoning_text.delta"
_COMPLETED: Final = "response.completed"

_HANDLERS: Final[dict[str, Callable[[_Event, str, bytes], ModelEvent | None]]] = {
    "response.created": _on_created,
    "response.output_item.added": _on_item_added,
    "response.output_item.done": _on_item_done,
    "response.reasoning_summary_part.added": _on_summary_part,
    _COMPLETED: _on_completed,
    "response.incomplete": _on_incomplete,
    "response.failed": _on_failed,
    "error": _on_error,
    "codex.rate_limits": _on_rate_limits,
}

HANDLED_EVENT_TYPES: Final[frozenset[str]] = frozenset((_TEXT, _ARGS, _CUSTOM, _SUMMARY, _REASONING, *_HANDLERS))
"""The stream event types the decoder turns into kernel events (or a terminal error)."""

IGNORED_EVENT_TYPES: Final[Mapping[str, str]] = MappingProxyType(
    {
        # status only
        "response.in_progress": "lifecycle",
        "response.queued": "lifecycle",
        "response.compaction.compacting": "lifecycle",
        # the item of the ``response.output_item.done`` that follows carries the same content
        "response.content_part.added": "redundant",
        "response.content_part.done": "redundant",
        "response.output_text.done": "redundant",
        "response.output_text.annotation.added": "redundant",
        "response.refusal.delta": "redundant",
        "response.refusal.done": "redundant",
        "response.function_call_arguments.done": "redundant",
        "response.custom_tool_call_input.done": "redundant",
        "response.reasoning_summary_part.done": "redundant",
        "response.reasoning_summary_text.done": "redundant",
        "response.reasoning_text.done": "redundant",
        # progress of a tool the service runs (its item is kept from output_item.done)
        "response.code_interpreter_call_code.delta": "hosted",
        "response.code_interpreter_call_code.done": "hosted",
        "response.code_interpreter_call.completed": "hosted",
        "response.code_interpreter_call.in_progress": "hosted",
        "response.code_interpreter_call.interpreting": "hosted",
        "response.file_search_call.completed": "hosted",
        "response.file_search_call.in_progress": "hosted",
        "response.file_search_call.searching": "hosted",
        "response.web_search_call.completed": "hosted",
        "response.web_search_call.in_progress": "hosted",
        "response.web_search_call.searching": "hosted",
        "response.image_generation_call.completed": "hosted",
        "response.image_generation_call.generating": "hosted",
        "response.image_generation_call.in_progress": "hosted",
        "response.image_generation_call.partial_image": "hosted",
        "response.mcp_call_arguments.delta": "hosted",
        "response.mcp_call_arguments.done": "hosted",
        "response.mcp_call.completed": "hosted",
        "response.mcp_call.failed": "hosted",
        "response.mcp_call.in_progress": "hosted",
        "response.mcp_list_tools.completed": "hosted",
        "response.mcp_list_tools.failed": "hosted",
        "response.mcp_list_tools.in_progress": "hosted",
        # progress of the SDK's ``shell`` tool, which the kernel does not model (its
        # ``shell_call`` item is kept, opaque, from output_item.done)
        "response.shell_call_command.added": "unmodelled",
        "response.shell_call_command.delta": "unmodelled",
        "response.shell_call_command.done": "unmodelled",
        "response.shell_call_output_content.delta": "unmodelled",
        "response.shell_call_output_content.done": "unmodelled",
        # audio output, which the kernel never requests
        "response.audio.delta": "unrequested",
        "response.audio.done": "unrequested",
        "response.audio.transcript.delta": "unrequested",
        "response.audio.transcript.done": "unrequested",
    }
)
"""Stream event types the decoder skips on purpose, each with a one-word reason: ``lifecycle``
(status only), ``redundant`` (the ``output_item.done`` item carries the same content),
``hosted`` (progress of a tool the service runs), ``unmodelled`` (progress of a tool the kernel
does not model), ``unrequested`` (audio). Any other type is skipped too (a stream never fails on
an unknown event); the SDK conformance test fails on an SDK event type in neither table."""

# the fields each known event reads (the slow path validates exactly these)
_DELTA_FIELDS: Final = ("delta", "item_id")
_NEEDED: Final[dict[str, tuple[str, ...]]] = {
    _TEXT: _DELTA_FIELDS,
    _ARGS: _DELTA_FIELDS,
    _CUSTOM: _DELTA_FIELDS,
    _SUMMARY: ("delta", "item_id", "summary_index"),
    _REASONING: ("delta", "item_id", "content_index"),
    "response.reasoning_summary_part.added": ("item_id", "summary_index"),
    "response.created": ("response",),
    "response.output_item.added": ("item",),
    "response.output_item.done": ("item",),
    _COMPLETED: ("response",),
    "response.incomplete": ("response",),
    "response.failed": ("response",),
    "error": (),
    "codex.rate_limits": (),
}
_SCALAR_KINDS: Final = {
    "delta": (str, "a string"),
    "item_id": (str, "a string"),
    "summary_index": (int, "an integer"),
    "content_index": (int, "an integer"),
}


def _slow_event(name: str | None, data: bytes) -> _Event | None:
    """The careful path for a payload the fast decoder rejected: ``None`` for an event the
    kernel ignores; a :class:`_Terminal` stream error naming the event and field for a known
    event of the wrong shape."""
    obj = msgspec.json.decode(data)  # DecodeError: not JSON (handled by the caller)
    t = obj.get("type") if isinstance(obj, dict) else None
    if not isinstance(t, str) or not t:
        t = name
    if t is None or t not in _NEEDED:
        return None
    if not isinstance(obj, dict):
        raise _stream_error(t, f"data must be a JSON object, got {_type_name(obj)}")
    ev = _Event(type=t)
    needed = _NEEDED[t]
    for field, (kind, kind_name) in _SCALAR_KINDS.items():
        value = obj.get(field)
        if value is None:
            continue
        if isinstance(value, kind) and not isinstance(value, bool):
            setattr(ev, field, value)
        elif field in needed:
            raise _stream_error(t, f"field {field!r} must be {kind_name}, got {_type_name(value)}")
    for field in ("item", "response"):
        if field in obj:
            setattr(ev, field, obj[field])
    return ev


class ResponsesStreamDecoder:
    """Bytes of a Responses API SSE stream in → :mod:`kernel.stream` events out.

    ``feed(chunk)`` returns the events completed by ``chunk`` (any split of the stream gives the
    same events). It never raises: a terminal failure (``response.failed``,
    ``response.incomplete``, an ``error`` event, a malformed event, an oversized SSE event)
    sets :attr:`error` to the :class:`~kernel.errors.KernelError` and :attr:`done` to true;
    ``feed`` then returns the events decoded before the failure, and ignores further input.
    ``response.completed`` ends the stream normally (:attr:`done` true, :attr:`error` ``None``).
    Call :meth:`finish` at EOF: a stream that ended before a terminal event gets
    ``StreamError("stream closed before response.completed")``.

    Mapping (PROTOCOL §2): ``response.created`` → :class:`Created`;
    ``response.output_item.added`` / ``.done`` → :class:`OutputItemAdded` /
    :class:`OutputItemDone` (a partial ``added`` item that does not validate is kept as an
    :class:`~kernel.items.UnknownItem`; a ``done`` item that does not validate is a stream
    error); ``response.output_text.delta`` → :class:`OutputTextDelta`;
    ``response.function_call_arguments.delta`` and ``response.custom_tool_call_input.delta`` →
    :class:`ToolCallInputDelta`; ``response.reasoning_summary_text.delta`` →
    :class:`ReasoningSummaryDelta`; ``response.reasoning_summary_part.added`` →
    :class:`ReasoningSummaryPartAdded`; ``response.reasoning_text.delta`` →
    :class:`ReasoningContentDelta`; ``codex.rate_limits`` → :class:`RateLimitsSnapshot`;
    ``response.completed`` → :class:`Completed`. Other events are ignored
    (:data:`HANDLED_EVENT_TYPES`, :data:`IGNORED_EVENT_TYPES`). A delta without ``delta`` is a
    stream error; a missing ``item_id`` / index is tolerated (``""`` / ``0``): the kernel does not
    need it to keep the text.

    Backfill: an item of ``response.completed``'s ``response.output`` for which no
    ``output_item.done`` came (matched by item ``id``, or by position — the done event's
    ``output_index`` — when either side has no id) is emitted as an :class:`OutputItemDone`
    before :class:`Completed`, in output order. Such an item that does not validate (or nests
    too deep) is skipped: it is a summary, not the stream's unit, and must not fail a stream
    that completed.

    ``response_id`` is the id seen in ``response.created`` / ``response.completed``.
    """

    __slots__ = ("_sse", "error", "done", "response_id", "_done_ids", "_done_at")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._sse = SSEDecoder(max_event_bytes)
        self.error: KernelError | None = None
        self.done = False
        self.response_id: str | None = None
        self._done_ids: set[str] | None = None  # ids of the items output_item.done delivered
        self._done_at: dict[int, tuple[str | None, str | None]] = {}  # positions → (id, type) delivered there

    def _fail(self, error: KernelError) -> None:
        self.error = error
        self.done = True

    def feed(self, chunk: bytes) -> list[ModelEvent]:
        """Decode the events completed by ``chunk``. Never raises."""
        if self.done:
            return []
        try:
            raw_events = self._sse.feed(chunk)
        except SSEOverflow as exc:
            self._fail(StreamError(f"SSE event too large: {exc}"))
            return []
        except Exception as exc:
            self._fail(StreamError(f"malformed SSE stream: {type(exc).__name__}: {exc}"))
            return []
        if not raw_events:
            return []
        return self.feed_events(raw_events)

    def feed_events(self, raw_events: Sequence[tuple[str | None, bytes]]) -> list[ModelEvent]:
        """Decode whole events, each ``(SSE event name or None, JSON data)`` — what a transport
        that frames events itself (WebSocket: one JSON text frame per event) hands over. The
        same decoding as :meth:`feed`. Never raises."""
        out: list[ModelEvent] = []
        if self.done:
            return out
        append = out.append
        decode = _decode_event
        handlers = _HANDLERS
        fast = _FAST_CONSTRUCTION
        if fast:
            new = object.__new__
            text_id, text_delta, text_turn = _TEXT_SETTERS  # type: ignore[misc]
            tool_id, tool_delta, tool_turn = _TOOL_SETTERS  # type: ignore[misc]
        name: str | None = None
        t: str | None = None
        try:
            for name, data in raw_events:
                try:
                    ev = decode(data)
                except msgspec.ValidationError:
                    slow = _slow_event(name, data)
                    if slow is None:
                        continue
                    ev = slow
                t = ev.type or name
                if t == _TEXT:
                    d = ev.delta
                    if d is None:
                        raise _missing(t, "delta")
                    if fast:
                        obj = new(OutputTextDelta)
                        text_id(obj, ev.item_id or "")
                        text_delta(obj, d)
                        text_turn(obj, "")  # the turn stamps its id
                        append(obj)
                    else:
                        append(OutputTextDelta(ev.item_id or "", d))
                elif t == _ARGS or t == _CUSTOM:
                    d = ev.delta
                    if d is None:
                        raise _missing(t, "delta")
                    if fast:
                        tool = new(ToolCallInputDelta)
                        tool_id(tool, ev.item_id or "")
                        tool_delta(tool, d)
                        tool_turn(tool, "")
                        append(tool)
                    else:
                        append(ToolCallInputDelta(ev.item_id or "", d))
                elif t == _SUMMARY:
                    d = ev.delta
                    if d is None:
                        raise _missing(t, "delta")
                    append(_summary_delta(ev.item_id or "", d, ev.summary_index or 0))
                elif t == _REASONING:
                    d = ev.delta
                    if d is None:
                        raise _missing(t, "delta")
                    append(_reasoning_delta(ev.item_id or "", d, ev.content_index or 0))
                else:
                    handler = handlers.get(t)  # type: ignore[arg-type]
                    if handler is None:
                        continue
                    event = handler(ev, t, data)  # type: ignore[arg-type]
                    if event is None:
                        continue
                    if type(event) is OutputItemDone:
                        self._note_done(ev.item, data)
                    elif type(event) is Created:
                        self.response_id = event.response_id
                    elif type(event) is Completed:
                        if event.response_id is not None:
                            self.response_id = event.response_id
                        self._backfill(ev.response, out)
                        append(event)
                        self.done = True
                        return out
                    append(event)
        except _Terminal as exc:
            self._fail(exc.error)
        except msgspec.DecodeError as exc:
            where = name or "SSE"
            self._fail(StreamError(f"malformed {where} event: data is not valid JSON ({exc})"))
        except KernelError as exc:  # e.g. a WireFormatError from a nested value
            self._fail(StreamError(f"malformed {t or name or 'SSE'} event: {exc.message}"))
        except Exception as exc:
            # (``t`` may still name the previous event here; ``name`` is this event's)
            self._fail(StreamError(f"malformed {name or 'SSE'} event: {type(exc).__name__}: {exc}"))
        return out

    # --- rare paths: output_item.done bookkeeping and the backfill at completion ---------------

    def _note_done(self, item: Any, data: bytes) -> None:
        """Remember an ``output_item.done`` item (its ``id``, its position) for :meth:`_backfill`."""
        item_id = item.get("id") if isinstance(item, dict) else None
        has_id = isinstance(item_id, str) and bool(item_id)
        if has_id:
            if self._done_ids is None:
                self._done_ids = set()
            self._done_ids.add(item_id)  # type: ignore[arg-type]
        try:
            index = _decode_index(data).output_index
        except (msgspec.DecodeError, msgspec.ValidationError):
            index = None
        if not isinstance(index, int) or isinstance(index, bool):
            index = len(self._done_at)  # no usable output_index: its rank among done items
        item_type = item.get("type") if isinstance(item, dict) else None
        self._done_at[index] = (item_id if has_id else None, item_type if isinstance(item_type, str) else None)

    def _backfill(self, response: Any, out: list[ModelEvent]) -> None:
        """Append an :class:`OutputItemDone` for each item of ``response.output`` that no
        ``output_item.done`` delivered (see the class docstring)."""
        output = response.get("output") if isinstance(response, dict) else None
        if not isinstance(output, list):
            return
        ids = self._done_ids or ()
        done_at = self._done_at
        listed = {e.get("id") for e in output if isinstance(e, dict)}
        for index, entry in enumerate(output):
            if not isinstance(entry, dict):
                continue
            item_id = entry.get("id")
            if isinstance(item_id, str) and item_id:
                if item_id in ids:
                    continue  # delivered under the same id
                done = done_at.get(index)
                if done is not None:
                    done_id, done_type = done
                    if done_id is None:
                        continue  # the done item at its place had no id: the same item
                    if done_type in (None, entry.get("type")) and done_id not in listed:
                        continue  # the same item renamed (Copilot, OpenRouter rotate ids)
            elif index in done_at:
                continue  # no id: matched by position
            if _too_deep(entry):
                continue
            try:
                out.append(OutputItemDone(item_from_wire(entry)))
            except WireFormatError:
                continue

    def finish(self) -> list[ModelEvent]:
        """End of stream: returns the events of a last SSE event whose terminating blank line
        never came, when its data is complete JSON (so nothing complete is lost; an event cut
        mid-way is discarded). Then, without a terminal event, :attr:`error` becomes
        ``StreamError("stream closed before response.completed")``. Never raises."""
        if self.done:
            return []
        out: list[ModelEvent] = []
        try:
            tail = self._sse.finish_event()
            if tail is not None and _is_json(tail[1]):
                out = self.feed(_reframe(*tail))
        except Exception:  # pragma: no cover - feed never raises; belt and braces
            pass
        if not self.done:
            self._fail(StreamError(STREAM_CLOSED_MESSAGE))
        return out


class _Index(msgspec.Struct, gc=False):
    output_index: Any = None


_decode_index: Final = msgspec.json.Decoder(_Index).decode


def _is_json(data: bytes) -> bool:
    try:
        msgspec.json.decode(data)
    except msgspec.DecodeError:
        return False
    return True


def _reframe(name: str | None, data: bytes) -> bytes:
    """One complete SSE event (blank line included) carrying ``name`` and ``data``."""
    head = b"event: " + name.encode() + b"\n" if name is not None else b""
    return head + b"".join(b"data: " + line + b"\n" for line in data.split(b"\n")) + b"\n"
