"""The Chat Completions stream decoder: :class:`ChatStreamDecoder` turns the streamed bytes of a
``/chat/completions`` response into :mod:`kernel.stream` events.

In reading order: the wire shapes of one chunk; the errors for an event that cannot be decoded;
:class:`_ToolCalls`, which assembles ``delta.tool_calls`` (and legacy ``delta.function_call``)
fragments into tool calls; the dialects' helpers (reasoning objects, ``reasoning_details``
merging, annotations); and the decoder itself (per-chunk dispatch, text, refusal, reasoning, the
finish of a segment of items).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Final

import msgspec

from kernel.errors import IncompleteResponse, KernelError, StreamError
from kernel.items import CustomToolCall, FunctionCall, Message, Reasoning, ResponseItem
from kernel.prompt import Prompt
from kernel.stream import (
    Completed,
    Created,
    ModelEvent,
    OutputItemAdded,
    OutputItemDone,
    OutputTextDelta,
    ReasoningContentDelta,
    ReasoningSummaryDelta,
    ReasoningSummaryPartAdded,
    TokenUsage,
    ToolCallInputDelta,
)

from ._chat_errors import _json_text, chat_error
from ._chat_request import LEGACY_CALL_PREFIX, freeform_tool_names
from ._http_errors import redact
from ._sse import SSEDecoder, SSEOverflow

__all__ = ["ChatStreamDecoder"]


# ---------------------------------------------------------------------------------------------
# Wire shapes of one streamed chunk. Typed msgspec structs: decoding validates the shape in C
# (a wrong type is a ValidationError naming the JSON path) and is faster than building dicts.
# Unknown fields are ignored; every field may be absent or null.
# ---------------------------------------------------------------------------------------------


class _Function(msgspec.Struct, gc=False):
    name: str | None = None
    # some servers send the arguments as a JSON object instead of a JSON string
    arguments: str | dict[str, Any] | None = None
    id: str | None = None  # not in the API; a legacy ``function_call`` that names itself keeps it


class _ToolCallFragment(msgspec.Struct, gc=False):
    index: int | None = None
    id: str | None = None
    function: _Function | None = None


class _Delta(msgspec.Struct, gc=False):
    # a string, or (Mistral magistral) an array of typed parts: {"type": "text", "text"} and
    # {"type": "thinking", "thinking": [{"type": "text", "text"}]}
    content: str | list[Any] | None = None
    refusal: str | None = None
    reasoning_content: str | None = None  # vLLM (older), DeepSeek, llama.cpp
    # vLLM (newer), Ollama, OpenRouter, Groq: a string; some servers: {"text"} / {"content"}
    reasoning: Any = None
    # OpenRouter, Snowflake: [{"type": "reasoning.text" | "reasoning.summary" |
    # "reasoning.encrypted", "text" / "summary" / "data", "signature"?, "index"?, ...}]
    reasoning_details: Any = None
    tool_calls: list[_ToolCallFragment] | None = None
    function_call: _Function | None = None  # the legacy (pre-``tools``) single call
    annotations: Any = None  # [{"type": "url_citation", "url_citation": {...}}]


class _Choice(msgspec.Struct, gc=False):
    index: int | None = None
    delta: _Delta | None = None
    message: _Delta | None = None  # a final non-delta chunk (some servers)
    finish_reason: str | None = None


class _Chunk(msgspec.Struct, gc=False):
    id: str | None = None
    choices: list[_Choice] | None = None
    usage: dict[str, Any] | None = None
    x_groq: Any = None  # Groq without stream_options: {"id", "usage": {...}} on the last chunk
    error: Any = None


_CHUNK_DECODER: Final = msgspec.json.Decoder(_Chunk)
_ANY_DECODER: Final = msgspec.json.Decoder()


# ---------------------------------------------------------------------------------------------
# Events that cannot be decoded
# ---------------------------------------------------------------------------------------------


def _bad_chunk(exc: msgspec.DecodeError, data: bytes) -> StreamError:
    """The error for a ``data:`` payload that is not JSON, or not the shape of a chunk."""
    what = "has the wrong shape" if isinstance(exc, msgspec.ValidationError) else "is not valid JSON"
    return StreamError(f"Chat Completions stream: a chunk {what}: {exc} (data: {_excerpt(data)})")


def _excerpt(data: bytes, limit: int = 120) -> str:
    # redacted before it is cut, so a key straddling the cut is still found whole
    text = redact(data[: limit * 4].decode("utf-8", "replace"))
    return repr(text[:limit] + ("..." if len(text) > limit or len(data) > limit * 4 else ""))


def _error_event(data: bytes) -> KernelError:
    """The error an ``event: error`` SSE event reports."""
    try:
        obj = _ANY_DECODER.decode(data)
    except msgspec.DecodeError:
        return StreamError(f"model server error: {redact(data[:2000].decode('utf-8', 'replace'))[:500]}")
    if isinstance(obj, dict) and obj.get("error") is not None:
        obj = obj["error"]
    return chat_error(obj)


# ---------------------------------------------------------------------------------------------
# Tool-call fragment assembly
# ---------------------------------------------------------------------------------------------


def _synthetic_id(base: str, segment: int) -> str:
    """The id of an item the server did not name: ``base``, plus ``_<segment>`` after the first
    segment (a server that streams more after a ``finish_reason`` gets new item ids)."""
    return base if segment == 0 else f"{base}_{segment}"


class _PendingCall:
    """A tool call being streamed: fragments keyed by ``index``."""

    __slots__ = ("index", "item_id", "call_id", "name", "args")

    def __init__(self, index: int, call_id: str) -> None:
        self.index = index
        self.item_id = call_id  # stable for the deltas even if a later fragment names the id
        self.call_id = call_id
        self.name = ""
        self.args: list[str] = []


class _ToolCalls:
    """The tool calls of the current segment, assembled from ``delta.tool_calls`` fragments
    (and legacy ``delta.function_call`` fragments).

    Fragments are keyed by ``index`` (``id`` and ``function.name`` in the first fragment of an
    index, ``arguments`` concatenated); a fragment without ``index`` continues the last call
    unless it names a new id, or a new name after a named call. :meth:`feed` emits
    ``OutputItemAdded`` when a call first appears and a ``ToolCallInputDelta`` per argument
    fragment; :meth:`flush` emits the finished items in index order, then the legacy calls.
    """

    __slots__ = ("pending", "last", "legacy")

    def __init__(self) -> None:
        self.pending: dict[int, _PendingCall] = {}
        self.last: _PendingCall | None = None
        self.legacy: list[_PendingCall] = []

    def feed(
        self, fragments: list[_ToolCallFragment], out: list[ModelEvent], response_id: str | None, segment: int
    ) -> None:
        """Add the fragments of one chunk (``response_id`` and ``segment`` name a call without
        an id: ``call_<response id>_<index>``)."""
        for frag in fragments:
            fn = frag.function
            call, new = self._call_for(frag, fn, response_id, segment)
            if frag.id and call.call_id != frag.id:
                call.call_id = frag.id  # a real id always wins over a synthetic one
            if fn is not None and fn.name and not call.name:
                call.name = fn.name
            if new:
                out.append(OutputItemAdded(FunctionCall(call_id=call.call_id, name=call.name, arguments="")))
            if fn is not None:
                args = fn.arguments
                if args:
                    if not isinstance(args, str):
                        args = _json_text(args)
                    call.args.append(args)
                    out.append(ToolCallInputDelta(call.item_id, args))

    def feed_legacy(self, fn: _Function, out: list[ModelEvent], response_id: str | None, segment: int) -> None:
        """Add a legacy ``delta.function_call`` fragment (``{"name"?, "arguments"?}``): one call
        per message, so every fragment continues the current call, except a new name after a
        call that already has a name and arguments. A call without an id gets
        ``<LEGACY_CALL_PREFIX><response id>_<n>`` (``_<segment>`` added after the first
        segment, as for tool calls), which the request builder recognises to send it back in the
        legacy form."""
        legacy = self.legacy
        call = legacy[-1] if legacy else None
        new = call is None or bool(fn.name and call.name and call.args)
        if new:
            n = len(legacy)
            base = f"{LEGACY_CALL_PREFIX}{response_id or 'chat'}_{n}"
            call = _PendingCall(n, fn.id or _synthetic_id(base, segment))
            legacy.append(call)
        assert call is not None
        if fn.name and not call.name:
            call.name = fn.name
        if new:
            out.append(OutputItemAdded(FunctionCall(call_id=call.call_id, name=call.name, arguments="")))
        args = fn.arguments
        if args:
            if not isinstance(args, str):
                args = _json_text(args)
            call.args.append(args)
            out.append(ToolCallInputDelta(call.item_id, args))

    def _call_for(
        self, frag: _ToolCallFragment, fn: _Function | None, response_id: str | None, segment: int
    ) -> tuple[_PendingCall, bool]:
        """The call ``frag`` belongs to, and whether it is new."""
        calls = self.pending
        index = frag.index
        if index is None:
            # No index (some servers send each call whole): a new id, or a new name after a
            # named call, starts a new call; anything else continues the last one.
            last = self.last
            if frag.id:
                for call in calls.values():
                    if call.call_id == frag.id:
                        self.last = call
                        return call, False
            elif last is not None and not (fn is not None and fn.name and last.name):
                return last, False
            index = max(calls) + 1 if calls else 0
        else:
            known = calls.get(index)
            if known is not None:
                self.last = known
                return known, False
        call = _PendingCall(index, frag.id or _synthetic_id(f"call_{response_id or 'chat'}_{index}", segment))
        calls[index] = call
        self.last = call
        return call, True

    def flush(self, out: list[ModelEvent], drop: bool, custom_tools: frozenset[str]) -> bool:
        """Emit the finished calls in index order (none if ``drop``: cut off mid-arguments) and
        start over; returns whether there were any. A name in ``custom_tools`` makes a
        ``CustomToolCall``."""
        pending, legacy = self.pending, self.legacy
        if not pending and not legacy:
            return False
        if not drop:
            for index in sorted(pending):
                out.append(OutputItemDone(_build_call(pending[index], custom_tools)))
            for call in legacy:
                out.append(OutputItemDone(_build_call(call, custom_tools)))
        self.pending = {}
        self.last = None
        self.legacy = []
        return True


def _build_call(call: _PendingCall, custom_tools: frozenset[str]) -> ResponseItem:
    args = "".join(call.args)
    if call.name in custom_tools:
        return CustomToolCall(call_id=call.call_id, name=call.name, input=_freeform_input(args))
    if not args.strip():
        args = "{}"
    return FunctionCall(call_id=call.call_id, name=call.name, arguments=args, id=None)


def _freeform_input(arguments: str) -> str:
    """The ``input`` of a freeform tool called as ``{"input": string}``; the raw arguments when
    the model did not follow that shape."""
    try:
        value = _ANY_DECODER.decode(arguments)
    except msgspec.DecodeError:
        return arguments
    if isinstance(value, dict) and isinstance(value.get("input"), str):
        return value["input"]  # type: ignore[no-any-return]
    if isinstance(value, str):
        return value
    return arguments


# ---------------------------------------------------------------------------------------------
# Dialects: typed content parts, reasoning objects, reasoning_details, annotations
# ---------------------------------------------------------------------------------------------


def _text_of(value: Any, depth: int = 0) -> str:
    """The text of a reasoning value in any of the shapes servers use: a string, an object with
    ``text`` / ``content`` / ``thinking`` (itself any of these shapes), or an array of such parts
    (``{"type": "text", "text"}``). Anything else has no text."""
    if isinstance(value, str):
        return value
    if depth > 4:
        return ""
    if isinstance(value, list):
        return "".join(_text_of(v, depth + 1) for v in value)
    if isinstance(value, dict):
        for key in ("text", "content", "thinking"):
            inner = value.get(key)
            if inner:
                return _text_of(inner, depth + 1)
    return ""


_CONCATENATED: Final = ("text", "summary", "data", "signature")
"""The ``reasoning_details`` fields streamed in fragments (joined); other fields: the last
non-null value wins."""


def _merge_detail(details: list[dict[str, Any]], entry: dict[str, Any]) -> int:
    """Add one streamed ``reasoning_details`` entry to ``details``: a fragment with the
    ``index`` and ``type`` of a known entry continues it (an entry without ``index`` continues
    the last one when they agree on ``type`` and ``id`` and it is not encrypted); anything else
    is a new entry. Fragments of ``text`` / ``summary`` / ``data`` / ``signature`` are joined
    (a repeated whole ``signature`` / ``data`` is not doubled). Returns the position of the
    entry it went to."""
    kind = entry.get("type")
    index = entry.get("index")
    position = -1
    if isinstance(index, int) and not isinstance(index, bool):
        for i in range(len(details) - 1, -1, -1):
            if details[i].get("index") == index and details[i].get("type") == kind:
                position = i
                break
    elif details and index is None:
        last = details[-1]
        if (
            last.get("index") is None
            and last.get("type") == kind
            and last.get("id") == entry.get("id")
            and kind != "reasoning.encrypted"
        ):
            position = len(details) - 1
    if position < 0:
        details.append(dict(entry))
        return len(details) - 1
    target = details[position]
    for key, value in entry.items():
        if value is None:
            continue
        old = target.get(key)
        if key in _CONCATENATED and isinstance(value, str) and isinstance(old, str):
            if key in ("data", "signature") and old and (value == old):
                continue
            target[key] = old + value
        else:
            target[key] = value
    return position


def _annotation(value: Any) -> dict[str, Any] | None:
    """A Chat annotation in the Responses wire's flat shape: ``{"type": "url_citation",
    "url_citation": {"url", "title", "start_index", "end_index", ...}}`` becomes ``{"type":
    "url_citation", "url", "title", "start_index", "end_index"}``; other types are flattened the
    same way and kept whole; non-objects are dropped."""
    if not isinstance(value, dict):
        return None
    kind = value.get("type")
    nested = value.get(kind) if isinstance(kind, str) else None
    if not isinstance(nested, dict):
        return dict(value)
    if kind == "url_citation":
        out: dict[str, Any] = {"type": kind}
        for key in ("url", "title", "start_index", "end_index"):
            if key in nested:
                out[key] = nested[key]
        return out
    return {"type": kind, **nested}


# ---------------------------------------------------------------------------------------------
# The decoder
# ---------------------------------------------------------------------------------------------


def _is_complete(data: bytes) -> bool:
    """Whether the data of a last SSE event left without its blank line is whole: ``[DONE]``,
    or JSON that parses (an event cut mid-way almost never is)."""
    if data.strip() == b"[DONE]":
        return True
    try:
        _ANY_DECODER.decode(data)
    except msgspec.DecodeError:
        return False
    return True


_INCOMPLETE: Final = {"length": "max_output_tokens", "content_filter": "content_filter"}
"""The ``finish_reason`` values that end the stream with :class:`IncompleteResponse`, and its
reason."""


class ChatStreamDecoder:
    """Decode a streamed ``/chat/completions`` response into :mod:`kernel.stream` events.

    Feed the raw response bytes in any split; call :meth:`finish` at EOF. Neither raises: on a
    failure the decoder keeps the events decoded before it, sets :attr:`error` (a
    :class:`~kernel.errors.KernelError`, a :class:`~kernel.errors.StreamError` unless the server
    sent a recognisable error object) and ignores everything after. The transport forwards the
    events, then raises :attr:`error` if set. :attr:`done` is true once
    :class:`~kernel.stream.Completed` was emitted.

    Mapping (only the first choice is read; ``n`` is never requested):

    * first chunk → ``Created(id)``;
    * reasoning → ``ReasoningContentDelta`` (after an ``OutputItemAdded(Reasoning)`` on the first
      one): ``delta.reasoning_content``, else ``delta.reasoning`` (a string, or an object with
      ``text`` / ``content``), else the ``text`` of ``delta.reasoning_details`` entries
      (``reasoning.summary`` entries → ``ReasoningSummaryDelta``), and the ``thinking`` parts of
      an array ``delta.content`` (Mistral magistral). ``reasoning_details`` entries are merged
      (fragments of an ``index`` joined) and kept whole, signatures and encrypted ``data``
      included, in the reasoning item's ``extra["reasoning_details"]`` (the request builder
      sends them back);
    * ``delta.content`` (a string, or the ``text`` parts of an array) →
      ``OutputTextDelta(item_id="msg_<id>")`` (after an ``OutputItemAdded(Message)`` on the first
      one); ``delta.refusal`` → a ``{"type": "refusal", "refusal"}`` content part of that message
      (no delta event); ``delta.annotations`` → the ``annotations`` of its ``output_text`` part,
      in the Responses wire's flat ``url_citation`` shape;
    * ``delta.tool_calls`` fragments, keyed by ``index`` (``id`` and ``function.name`` in the
      first fragment of an index, ``arguments`` concatenated) → ``ToolCallInputDelta`` per
      argument fragment (``item_id`` is the call id), after an ``OutputItemAdded(FunctionCall)``
      when an index first appears; the legacy ``delta.function_call`` likewise, one call whose
      id is synthesized (``legacy_function_call_<id>_<n>``) unless the server names one;
    * ``message`` in a final non-delta chunk → the same, for each of text, refusal, reasoning
      and tool calls that was not already streamed in this segment;
    * ``finish_reason`` (or ``[DONE]`` without one) → ``OutputItemDone`` for the reasoning (if
      any), the assistant ``Message`` (if any text, refusal or annotation), then one
      ``FunctionCall`` per tool call in index order (a ``CustomToolCall`` when the name is in
      ``custom_tools``: the request sent freeform tools as functions taking
      ``{"input": string}``);
    * ``[DONE]`` (or EOF after a ``finish_reason``) → ``Completed(id, usage)`` with the usage of
      the last chunk that carried one (``usage``, else Groq's ``x_groq.usage``).

    ``finish_reason: "length"`` / ``"content_filter"`` end the stream with
    :class:`~kernel.errors.IncompleteResponse` (``max_output_tokens`` / ``content_filter``),
    as ``response.incomplete`` does on the Responses wire; the text so far is still emitted as an
    item, tool calls cut off mid-arguments are not. The error is set at ``[DONE]`` / EOF: the
    chunks in between are read for their usage only (:attr:`usage`). A call without an ``id``
    gets the deterministic ``call_<response id>_<index>``; empty arguments become ``"{}"``.
    Tolerates ``finish_reason`` in the chunk carrying content, ``null`` fields, fragments without
    ``index``, servers that never send the usage chunk, and comment / keep-alive lines.
    """

    __slots__ = (
        "error",
        "done",
        "response_id",
        "finish_reason",
        "usage",
        "custom_tools",
        "_sse",
        "_created",
        "_segment",
        "_incomplete",
        "_msg_id",
        "_text",
        "_refusal",
        "_annotations",
        "_rs_id",
        "_reasoning",
        "_summaries",
        "_summary_text",
        "_details",
        "_tool_calls",
    )

    def __init__(self, *, custom_tools: Collection[str] = ()) -> None:
        self.error: KernelError | None = None
        """The failure that ended decoding, or ``None``."""
        self.done = False
        """``True`` once ``Completed`` was emitted."""
        self.response_id: str | None = None
        """The ``id`` of the first chunk."""
        self.finish_reason: str | None = None
        """The last ``finish_reason`` seen."""
        self.usage: TokenUsage | None = None
        """The usage of the last chunk that carried one (also after a truncating
        ``finish_reason``)."""
        self.custom_tools = frozenset(custom_tools)
        """Names of freeform tools (sent as ``{"input": string}`` functions)."""
        self._sse = SSEDecoder()
        self._created = False
        self._segment = 0  # how many segments (items ended by a finish_reason) were flushed
        self._incomplete: str | None = None  # the IncompleteResponse reason, set at [DONE] / EOF
        self._msg_id: str | None = None
        self._text: list[str] = []
        self._refusal: list[str] = []
        self._annotations: list[dict[str, Any]] = []
        self._rs_id: str | None = None
        self._reasoning: list[str] = []
        self._summaries: dict[int, int] = {}  # position in _details -> summary section
        self._summary_text: list[list[str]] = []  # the text of each summary section
        self._details: list[dict[str, Any]] = []  # merged reasoning_details entries
        self._tool_calls = _ToolCalls()

    @classmethod
    def for_prompt(cls, prompt: Prompt) -> ChatStreamDecoder:
        """A decoder that turns calls of ``prompt``'s freeform tools back into
        ``CustomToolCall`` items."""
        return cls(custom_tools=freeform_tool_names(prompt))

    # --- public API -----------------------------------------------------------------------

    def feed(self, chunk: bytes) -> list[ModelEvent]:
        """Decode ``chunk`` (any split of the response body); return the events it completed.

        Never raises. After a failure (:attr:`error` set) or after ``[DONE]`` the rest of the
        input is ignored and ``[]`` is returned.
        """
        out: list[ModelEvent] = []
        if self.done or self.error is not None:
            return out
        try:
            events = self._sse.feed(chunk)
        except SSEOverflow as exc:
            self.error = StreamError(f"Chat Completions stream: {exc}")
            return out
        self._decode_events(events, out)
        return out

    def _decode_events(self, events: list[tuple[str | None, bytes]], out: list[ModelEvent]) -> None:
        try:
            for name, data in events:
                if not self._on_event(name, data, out):
                    break
        except Exception as exc:  # pragma: no cover - a bug here must not crash the transport
            self.error = StreamError(f"Chat Completions stream: internal decoder failure: {type(exc).__name__}: {exc}")

    def finish(self) -> list[ModelEvent]:
        """End of the response body. Returns the final events.

        A last SSE event whose terminating blank line never came is decoded when it is complete
        (its data is whole JSON, or ``[DONE]``): a final usage or ``finish_reason`` chunk is not
        lost. One cut mid-way is discarded, as the SSE rule says (the error then says "cut
        mid-event"). Then: ``Completed`` when a ``finish_reason`` was seen but ``[DONE]`` never
        came (a tolerated server quirk). Otherwise, unless the stream already ended, sets
        :attr:`error` to a :class:`~kernel.errors.StreamError` (a stream without ``[DONE]`` or a
        ``finish_reason`` is a failed stream), or to the
        :class:`~kernel.errors.IncompleteResponse` a truncating ``finish_reason`` announced.
        Never raises."""
        if self.done or self.error is not None:
            self._sse.finish()
            return []
        out: list[ModelEvent] = []
        cut = False
        try:
            tail = self._sse.finish_event()
        except Exception:  # pragma: no cover - finish_event never raises; belt and braces
            tail = None
        if tail is not None:
            if _is_complete(tail[1]):
                self._decode_events([tail], out)
            else:
                cut = True
        if self.done or self.error is not None:
            return out
        if self._incomplete is not None:
            self.error = IncompleteResponse(self._incomplete)
            return out
        if self.finish_reason is not None:
            self.done = True
            out.append(Completed(self.response_id, self.usage))
            return out
        self.error = StreamError(
            "Chat Completions stream closed before [DONE] or a finish_reason" + (" (cut mid-event)" if cut else "")
        )
        return out

    # --- per event (the hot path) -----------------------------------------------------------

    def _on_event(self, name: str | None, data: bytes, out: list[ModelEvent]) -> bool:
        """Handle one SSE event; ``False`` ends decoding (error or ``[DONE]``)."""
        if len(data) < 16 and data.strip() == b"[DONE]":
            self._on_done(out)
            return False
        if self._incomplete is not None:
            self._after_incomplete(data)
            return True
        if name == "error":
            self.error = _error_event(data)
            return False
        try:
            chunk = _CHUNK_DECODER.decode(data)
        except msgspec.DecodeError as exc:  # also a ValidationError: JSON of the wrong shape
            self.error = _bad_chunk(exc, data)
            return False
        if chunk.error is not None:
            self.error = chat_error(chunk.error)
            return False
        if not self._created:
            self._created = True
            self.response_id = chunk.id
            out.append(Created(chunk.id))
        choices = chunk.choices
        if choices:
            for choice in choices:
                if choice.index:  # only the first choice; a missing index counts as 0
                    continue
                delta = choice.delta
                if delta is not None:
                    content = delta.content
                    if (
                        isinstance(content, str)
                        and delta.reasoning_content is None
                        and delta.reasoning is None
                        and delta.reasoning_details is None
                        and delta.tool_calls is None
                        and not delta.refusal
                        and delta.function_call is None
                        and delta.annotations is None
                    ):
                        if content:  # the common case, inlined: a text fragment and nothing else
                            self._on_text(content, out)
                    else:
                        self._on_delta(delta, out)
                if choice.message is not None:
                    self._on_message(choice.message, out)
                if choice.finish_reason is not None:
                    self._on_finish(choice.finish_reason, out)
                    if self._incomplete is not None:
                        break
        self._read_usage(chunk.usage, chunk.x_groq)
        return True

    def _read_usage(self, usage: dict[str, Any] | None, x_groq: Any) -> None:
        if usage is None and isinstance(x_groq, dict):
            usage = x_groq.get("usage")
        if usage is not None:
            parsed = TokenUsage.from_wire(usage)
            if parsed is not None:
                self.usage = parsed

    def _after_incomplete(self, data: bytes) -> None:
        """A chunk after a truncating ``finish_reason``: only its usage is read (a chunk that
        does not decode, or an error object, changes nothing: the response is incomplete)."""
        try:
            chunk = _CHUNK_DECODER.decode(data)
        except msgspec.DecodeError:
            return
        self._read_usage(chunk.usage, chunk.x_groq)

    def _synthetic_id(self, prefix: str) -> str:
        return _synthetic_id(f"{prefix}_{self.response_id or 'chat'}", self._segment)

    def _on_delta(self, delta: _Delta, out: list[ModelEvent]) -> None:
        """Every piece of one ``delta`` (or final ``message``), in the order reasoning, text and
        refusal, annotations, tool calls."""
        reasoning: Any = delta.reasoning_content or delta.reasoning
        text = _text_of(reasoning) if reasoning else ""
        details = delta.reasoning_details
        if details and isinstance(details, list):
            self._on_reasoning_details(details, out, emit_text=not text)
        if text:
            self._on_reasoning(text, out)
        content = delta.content
        if content:
            if isinstance(content, str):
                self._on_text(content, out)
            else:
                self._on_content_parts(content, out)
        if delta.refusal:
            self._message_id(out)
            self._refusal.append(delta.refusal)
        annotations = delta.annotations
        if annotations and isinstance(annotations, list):
            self._on_annotations(annotations, out)
        if delta.tool_calls:
            self._tool_calls.feed(delta.tool_calls, out, self.response_id, self._segment)
        if delta.function_call is not None:
            self._tool_calls.feed_legacy(delta.function_call, out, self.response_id, self._segment)

    def _on_message(self, message: _Delta, out: list[ModelEvent]) -> None:
        """A whole ``message`` in a final chunk: its parts of each kind not already streamed in
        this segment (a server that streamed deltas and repeats them whole is not doubled)."""
        calls = self._tool_calls
        self._on_delta(
            _Delta(
                content=message.content if not self._text else None,
                refusal=message.refusal if not self._refusal else None,
                reasoning_content=message.reasoning_content if self._rs_id is None else None,
                reasoning=message.reasoning if self._rs_id is None else None,
                reasoning_details=message.reasoning_details if self._rs_id is None else None,
                tool_calls=message.tool_calls if not calls.pending else None,
                function_call=message.function_call if not calls.legacy else None,
                annotations=message.annotations if not self._annotations else None,
            ),
            out,
        )

    def _message_id(self, out: list[ModelEvent]) -> str:
        """The id of the segment's assistant message, announced on first use."""
        msg_id = self._msg_id
        if msg_id is None:
            msg_id = self._msg_id = self._synthetic_id("msg")
            out.append(OutputItemAdded(Message(role="assistant", content=(), id=msg_id)))
        return msg_id

    def _on_text(self, text: str, out: list[ModelEvent]) -> None:
        msg_id = self._msg_id
        if msg_id is None:
            msg_id = self._message_id(out)
        self._text.append(text)
        out.append(OutputTextDelta(msg_id, text))

    def _on_content_parts(self, parts: list[Any], out: list[ModelEvent]) -> None:
        """An array ``delta.content`` (Mistral): ``text`` parts are text, ``thinking`` parts
        reasoning; other parts carry neither."""
        for part in parts:
            if isinstance(part, str):
                if part:
                    self._on_text(part, out)
                continue
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind == "thinking":
                text = _text_of(part.get("thinking"))
                if text:
                    self._on_reasoning(text, out)
            elif kind in ("text", None):
                value = part.get("text")
                if isinstance(value, str) and value:
                    self._on_text(value, out)

    def _on_annotations(self, annotations: list[Any], out: list[ModelEvent]) -> None:
        self._message_id(out)
        known = self._annotations
        for value in annotations:
            annotation = _annotation(value)
            if annotation is not None and annotation not in known:
                known.append(annotation)

    def _reasoning_id(self, out: list[ModelEvent]) -> str:
        rs_id = self._rs_id
        if rs_id is None:
            rs_id = self._rs_id = self._synthetic_id("rs")
            out.append(OutputItemAdded(Reasoning(id=rs_id)))
        return rs_id

    def _on_reasoning(self, text: str, out: list[ModelEvent]) -> None:
        rs_id = self._rs_id
        if rs_id is None:
            rs_id = self._reasoning_id(out)
        self._reasoning.append(text)
        out.append(ReasoningContentDelta(rs_id, text))

    def _on_reasoning_details(self, entries: list[Any], out: list[ModelEvent], *, emit_text: bool) -> None:
        """``delta.reasoning_details``: merged into :attr:`_details`; their text is the
        reasoning text when ``emit_text`` (no plain reasoning string came with them): a
        ``reasoning.summary`` entry is a summary section (``ReasoningSummaryPartAdded`` when it
        starts), any other entry's ``text`` raw reasoning."""
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            rs_id = self._reasoning_id(out)
            count = len(self._details)
            position = _merge_detail(self._details, entry)
            if not emit_text:
                continue
            kind = entry.get("type")
            if kind == "reasoning.summary":
                summary = entry.get("summary")
                if isinstance(summary, str) and summary:
                    section = self._summaries.get(position)
                    if section is None or position == count:
                        section = self._summaries[position] = len(self._summaries)
                        out.append(ReasoningSummaryPartAdded(rs_id, section))
                        self._summary_text.append([])
                    self._summary_text[section].append(summary)
                    out.append(ReasoningSummaryDelta(rs_id, summary, section))
            elif kind != "reasoning.encrypted":
                text = entry.get("text")
                if isinstance(text, str) and text:
                    self._reasoning.append(text)
                    out.append(ReasoningContentDelta(rs_id, text))

    # --- the end of a segment, and of the stream ---------------------------------------------

    def _on_finish(self, reason: str, out: list[ModelEvent]) -> None:
        self.finish_reason = reason
        incomplete = _INCOMPLETE.get(reason)
        self._flush(out, drop_calls=incomplete is not None)
        if incomplete is not None:
            self._incomplete = incomplete

    def _on_done(self, out: list[ModelEvent]) -> None:
        """``[DONE]``: flush what no ``finish_reason`` flushed, then ``Completed`` (or the
        :class:`~kernel.errors.IncompleteResponse` a truncating ``finish_reason`` announced)."""
        if self._incomplete is not None:
            self.error = IncompleteResponse(self._incomplete)
            return
        if self.finish_reason is None:
            self._flush(out)
        out.append(Completed(self.response_id, self.usage))
        self.done = True

    def _flush(self, out: list[ModelEvent], *, drop_calls: bool = False) -> None:
        """Emit the finished items and start a fresh segment (a server that streams more after
        a ``finish_reason`` gets new item ids)."""
        flushed = False
        if self._rs_id is not None:
            out.append(OutputItemDone(self._reasoning_item(self._rs_id)))
            self._reasoning = []
            self._summaries = {}
            self._summary_text = []
            self._details = []
            flushed = True
        if self._msg_id is not None:
            message = self._message_item(self._msg_id)
            if message is not None:
                out.append(OutputItemDone(message))
                flushed = True
            self._text = []
            self._refusal = []
            self._annotations = []
        if self._tool_calls.flush(out, drop_calls, self.custom_tools):
            flushed = True
        self._msg_id = None
        self._rs_id = None
        if flushed:
            self._segment += 1

    def _reasoning_item(self, rs_id: str) -> Reasoning:
        text = "".join(self._reasoning)
        summary = [{"type": "summary_text", "text": "".join(s)} for s in self._summary_text]
        extra: dict[str, Any] = {"reasoning_details": self._details} if self._details else {}
        return Reasoning(
            id=rs_id,
            summary=summary,
            content=({"type": "reasoning_text", "text": text},) if text else None,
            extra=extra,
        )

    def _message_item(self, msg_id: str) -> Message | None:
        """The assistant message of the segment: an ``output_text`` part (with its
        ``annotations``, if any), then a ``refusal`` part; ``None`` when it has neither."""
        text = "".join(self._text)
        refusal = "".join(self._refusal)
        parts: list[dict[str, Any]] = []
        if text or self._annotations:
            part: dict[str, Any] = {"type": "output_text", "text": text}
            if self._annotations:
                part["annotations"] = self._annotations
            parts.append(part)
        if refusal:
            parts.append({"type": "refusal", "refusal": refusal})
        if not parts:
            return None
        return Message(role="assistant", content=parts, id=msg_id)
