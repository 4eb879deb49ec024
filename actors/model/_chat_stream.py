"""The Chat Completions stream decoder: :class:`ChatStreamDecoder` turns the streamed bytes of a
``/chat/completions`` response into :mod:`kernel.stream` events.

In reading order: the wire shapes of one chunk; the errors for an event that cannot be decoded;
:class:`_ToolCalls`, which assembles ``delta.tool_calls`` fragments into tool calls; and the
decoder itself (per-chunk dispatch, text and reasoning, the finish of a segment of items).
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
    TokenUsage,
    ToolCallInputDelta,
)

from ._chat_errors import _json_text, chat_error
from ._chat_request import freeform_tool_names
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


class _ToolCallFragment(msgspec.Struct, gc=False):
    index: int | None = None
    id: str | None = None
    function: _Function | None = None


class _Delta(msgspec.Struct, gc=False):
    content: str | None = None
    reasoning_content: str | None = None  # vLLM (older), DeepSeek, llama.cpp
    reasoning: str | None = None  # vLLM (newer), Ollama, OpenRouter
    tool_calls: list[_ToolCallFragment] | None = None


class _Choice(msgspec.Struct, gc=False):
    index: int | None = None
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Chunk(msgspec.Struct, gc=False):
    id: str | None = None
    choices: list[_Choice] | None = None
    usage: dict[str, Any] | None = None
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
    """The tool calls of the current segment, assembled from ``delta.tool_calls`` fragments.

    Fragments are keyed by ``index`` (``id`` and ``function.name`` in the first fragment of an
    index, ``arguments`` concatenated); a fragment without ``index`` continues the last call
    unless it names a new id, or a new name after a named call. :meth:`feed` emits
    ``OutputItemAdded`` when a call first appears and a ``ToolCallInputDelta`` per argument
    fragment; :meth:`flush` emits the finished items in index order.
    """

    __slots__ = ("pending", "last")

    def __init__(self) -> None:
        self.pending: dict[int, _PendingCall] = {}
        self.last: _PendingCall | None = None

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
        pending = self.pending
        if not pending:
            return False
        if not drop:
            for index in sorted(pending):
                out.append(OutputItemDone(_build_call(pending[index], custom_tools)))
        self.pending = {}
        self.last = None
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
# The decoder
# ---------------------------------------------------------------------------------------------

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
    * ``delta.reasoning_content`` / ``delta.reasoning`` → ``ReasoningContentDelta`` (after an
      ``OutputItemAdded(Reasoning)`` on the first one);
    * ``delta.content`` → ``OutputTextDelta(item_id="msg_<id>")`` (after an
      ``OutputItemAdded(Message)`` on the first one);
    * ``delta.tool_calls`` fragments, keyed by ``index`` (``id`` and ``function.name`` in the
      first fragment of an index, ``arguments`` concatenated) → ``ToolCallInputDelta`` per
      argument fragment (``item_id`` is the call id), after an ``OutputItemAdded(FunctionCall)``
      when an index first appears;
    * ``finish_reason`` (or ``[DONE]`` without one) → ``OutputItemDone`` for the reasoning (if
      any), the assistant ``Message`` (if any text), then one ``FunctionCall`` per tool call in
      index order (a ``CustomToolCall`` when the name is in ``custom_tools``: the request sent
      freeform tools as functions taking ``{"input": string}``);
    * ``[DONE]`` (or EOF after a ``finish_reason``) → ``Completed(id, usage)`` with the usage of
      the last chunk that carried one.

    ``finish_reason: "length"`` / ``"content_filter"`` end the stream with
    :class:`~kernel.errors.IncompleteResponse` (``max_output_tokens`` / ``content_filter``),
    as ``response.incomplete`` does on the Responses wire; the text so far is still emitted as an
    item, tool calls cut off mid-arguments are not. A call without an ``id`` gets the
    deterministic ``call_<response id>_<index>``; empty arguments become ``"{}"``.
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
        "_msg_id",
        "_text",
        "_rs_id",
        "_reasoning",
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
        """The usage of the last chunk that carried one."""
        self.custom_tools = frozenset(custom_tools)
        """Names of freeform tools (sent as ``{"input": string}`` functions)."""
        self._sse = SSEDecoder()
        self._created = False
        self._segment = 0  # how many segments (items ended by a finish_reason) were flushed
        self._msg_id: str | None = None
        self._text: list[str] = []
        self._rs_id: str | None = None
        self._reasoning: list[str] = []
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
        try:
            for name, data in events:
                if not self._on_event(name, data, out):
                    break
        except Exception as exc:  # pragma: no cover - a bug here must not crash the transport
            self.error = StreamError(f"Chat Completions stream: internal decoder failure: {type(exc).__name__}: {exc}")
        return out

    def finish(self) -> list[ModelEvent]:
        """End of the response body. Returns the final events: ``Completed`` when a
        ``finish_reason`` was seen but ``[DONE]`` never came (a tolerated server quirk).
        Otherwise, unless the stream already ended, sets :attr:`error` to a
        :class:`~kernel.errors.StreamError` (a stream without ``[DONE]`` or a ``finish_reason``
        is a failed stream). Never raises."""
        cut = self._sse.finish()
        if self.done or self.error is not None:
            return []
        if self.finish_reason is not None:
            self.done = True
            return [Completed(self.response_id, self.usage)]
        self.error = StreamError(
            "Chat Completions stream closed before [DONE] or a finish_reason" + (" (cut mid-event)" if cut else "")
        )
        return []

    # --- per event (the hot path) -----------------------------------------------------------

    def _on_event(self, name: str | None, data: bytes, out: list[ModelEvent]) -> bool:
        """Handle one SSE event; ``False`` ends decoding (error or ``[DONE]``)."""
        if len(data) < 16 and data.strip() == b"[DONE]":
            self._on_done(out)
            return False
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
                if delta is not None:  # the delta's pieces, inlined: this runs once per chunk
                    reasoning = delta.reasoning_content or delta.reasoning
                    if reasoning:
                        self._on_reasoning(reasoning, out)
                    content = delta.content
                    if content:
                        msg_id = self._msg_id
                        if msg_id is None:
                            msg_id = self._msg_id = self._synthetic_id("msg")
                            out.append(OutputItemAdded(Message(role="assistant", content=(), id=msg_id)))
                        self._text.append(content)
                        out.append(OutputTextDelta(msg_id, content))
                    if delta.tool_calls:
                        self._tool_calls.feed(delta.tool_calls, out, self.response_id, self._segment)
                if choice.finish_reason is not None:
                    self._on_finish(choice.finish_reason, out)
                    if self.error is not None:
                        return False
        if chunk.usage is not None:
            self.usage = TokenUsage.from_wire(chunk.usage)
        return True

    def _synthetic_id(self, prefix: str) -> str:
        return _synthetic_id(f"{prefix}_{self.response_id or 'chat'}", self._segment)

    def _on_reasoning(self, text: str, out: list[ModelEvent]) -> None:
        rs_id = self._rs_id
        if rs_id is None:
            rs_id = self._rs_id = self._synthetic_id("rs")
            out.append(OutputItemAdded(Reasoning(id=rs_id)))
        self._reasoning.append(text)
        out.append(ReasoningContentDelta(rs_id, text))

    # --- the end of a segment, and of the stream ---------------------------------------------

    def _on_finish(self, reason: str, out: list[ModelEvent]) -> None:
        self.finish_reason = reason
        incomplete = _INCOMPLETE.get(reason)
        self._flush(out, drop_calls=incomplete is not None)
        if incomplete is not None:
            self.error = IncompleteResponse(incomplete)

    def _on_done(self, out: list[ModelEvent]) -> None:
        """``[DONE]``: flush what no ``finish_reason`` flushed, then ``Completed``."""
        if self.finish_reason is None:
            self._flush(out)
        out.append(Completed(self.response_id, self.usage))
        self.done = True

    def _flush(self, out: list[ModelEvent], *, drop_calls: bool = False) -> None:
        """Emit the finished items and start a fresh segment (a server that streams more after
        a ``finish_reason`` gets new item ids)."""
        flushed = False
        if self._reasoning:
            text = "".join(self._reasoning)
            out.append(
                OutputItemDone(
                    Reasoning(
                        id=self._rs_id or self._synthetic_id("rs"),
                        content=({"type": "reasoning_text", "text": text},),
                    )
                )
            )
            self._reasoning = []
            flushed = True
        if self._text:
            out.append(OutputItemDone(Message.assistant("".join(self._text), id=self._msg_id)))
            self._text = []
            flushed = True
        if self._tool_calls.flush(out, drop_calls, self.custom_tools):
            flushed = True
        self._msg_id = None
        self._rs_id = None
        if flushed:
            self._segment += 1
