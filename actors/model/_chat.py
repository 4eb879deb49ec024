"""The Chat Completions wire (PROTOCOL §4): request bodies and an incremental stream decoder.

For OpenAI-compatible local servers (vLLM, Ollama, llama.cpp, LM Studio). Both directions map onto
the kernel's Responses item model, so the sampling loop and the turn supervisor are identical on
either wire:

* :func:`chat_request_body` turns a :class:`~kernel.prompt.Prompt` into a ``/chat/completions``
  body: items become ``messages`` (function calls become assistant ``tool_calls``, their outputs
  ``role: "tool"`` messages), tool specs become ``{"type": "function", "function": {...}}``.
* :class:`ChatStreamDecoder` turns the streamed bytes into :mod:`kernel.stream` events: text and
  reasoning deltas as they arrive, one ``OutputItemDone`` per finished item when the
  ``finish_reason`` arrives, and :class:`~kernel.stream.Completed` at ``[DONE]``.

A stream that ends without ``[DONE]`` and without a ``finish_reason`` is a failed stream
(:class:`~kernel.errors.StreamError`, retried), never a short answer.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final

import msgspec

from kernel.errors import (
    ContextWindowExceeded,
    IncompleteResponse,
    InvalidRequest,
    KernelError,
    QuotaExceeded,
    RateLimited,
    ServerError,
    StreamError,
    Unauthorized,
    UsageLimitReached,
    UsageNotIncluded,
)
from kernel.items import (
    CustomToolCall,
    CustomToolCallOutput,
    FreeformTool,
    FunctionCall,
    FunctionCallOutput,
    FunctionTool,
    LocalShellCall,
    McpToolCallOutput,
    Message,
    Reasoning,
    ResponseItem,
)
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

from ._http_errors import clean_message, redact
from ._sse import SSEDecoder, SSEOverflow

__all__ = [
    "ChatStreamDecoder",
    "chat_request_body",
    "chat_error",
    "freeform_tool_names",
]


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
_ENCODER: Final = msgspec.json.Encoder()


def _json_text(value: Any) -> str:
    return _ENCODER.encode(value).decode("utf-8")


def _excerpt(data: bytes, limit: int = 120) -> str:
    # redacted before it is cut, so a key straddling the cut is still found whole
    text = redact(data[: limit * 4].decode("utf-8", "replace"))
    return repr(text[:limit] + ("..." if len(text) > limit or len(data) > limit * 4 else ""))


# ---------------------------------------------------------------------------------------------
# Errors inside the stream
# ---------------------------------------------------------------------------------------------

_DELAY_RE: Final = re.compile(r"try again in\s*(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|secs?|seconds?)\b", re.IGNORECASE)
_CONTEXT_RE: Final = re.compile(
    r"maximum context length|context[ _]length[ _]exceeded|context window exceeded"
    r"|exceeds? (?:the )?(?:available |model'?s? )?context (?:size|length|window)",
    re.IGNORECASE,
)
_CONTEXT_CODES: Final = frozenset({"context_length_exceeded", "exceed_context_size_error"})


def _requested_delay(message: str) -> float | None:
    match = _DELAY_RE.search(message)
    if match is None:
        return None
    value = float(match.group(1))
    return value / 1000.0 if match.group(2).lower().startswith("m") else value


def chat_error(error: Any, *, status: int | None = None) -> KernelError:
    """The :class:`~kernel.errors.KernelError` for an OpenAI-style error object
    (``{"message", "type", "code"}``, or a bare string) met inside a Chat Completions stream or in
    an HTTP error body.

    Recognised by ``code`` / ``type`` (and, for local servers that only say it in words, by the
    message): ``context_length_exceeded`` → :class:`ContextWindowExceeded`,
    ``usage_limit_reached`` → :class:`UsageLimitReached`, ``insufficient_quota`` →
    :class:`QuotaExceeded`, ``usage_not_included`` → :class:`UsageNotIncluded`. A numeric code
    (vLLM, llama.cpp put the HTTP status there) or ``status`` maps like an HTTP status: 429 →
    :class:`RateLimited`, 400/404/422 → :class:`InvalidRequest`, 401/403 → :class:`Unauthorized`,
    5xx → :class:`ServerError`. Anything else is a retryable :class:`StreamError`. A delay named
    in the message (``try again in 1.5s`` / ``28ms``) becomes ``retry_after``. Never raises.
    """
    code: Any = None
    kind: Any = None
    if isinstance(error, Mapping):
        message = error.get("message")
        if not isinstance(message, str) or not message:
            message = _json_text_safe(error)
        code = error.get("code")
        kind = error.get("type")
        if status is None and isinstance(error.get("status"), int):
            status = error["status"]
    elif isinstance(error, str):
        message = error
    else:
        message = _json_text_safe(error)
    if isinstance(code, int) and not isinstance(code, bool):
        if status is None:
            status = code
    elif isinstance(code, str) and code.isdigit() and status is None:
        status = int(code)
    message = clean_message(message)  # server text: redacted (never echo a key it quotes back), capped
    keys = {k.lower() for k in (code, kind) if isinstance(k, str)}
    delay = _requested_delay(message)
    prefixed = f"model server error: {message}"
    if keys & _CONTEXT_CODES or _CONTEXT_RE.search(message):
        return ContextWindowExceeded(message)
    if "usage_limit_reached" in keys:
        return UsageLimitReached(message)
    if "insufficient_quota" in keys:
        return QuotaExceeded(message)
    if "usage_not_included" in keys:
        return UsageNotIncluded(message)
    if status == 429 or "rate_limit_exceeded" in keys:
        return RateLimited(prefixed, retry_after=delay)
    if status in (400, 404, 422):
        return InvalidRequest(prefixed, status=status)
    if status in (401, 403):
        return Unauthorized(prefixed, status=status)
    if status is not None and 500 <= status <= 599:
        return ServerError(prefixed, status=status, retry_after=delay)
    return StreamError(prefixed, retry_after=delay)


def _json_text_safe(value: Any) -> str:
    try:
        return _json_text(value)
    except (TypeError, ValueError, OverflowError):
        return repr(value)


# ---------------------------------------------------------------------------------------------
# Stream decoder
# ---------------------------------------------------------------------------------------------


class _PendingCall:
    """A tool call being streamed: fragments keyed by ``index``."""

    __slots__ = ("index", "item_id", "call_id", "name", "args")

    def __init__(self, index: int, call_id: str) -> None:
        self.index = index
        self.item_id = call_id  # stable for the deltas even if a later fragment names the id
        self.call_id = call_id
        self.name = ""
        self.args: list[str] = []


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
        "_calls",
        "_last_call",
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
        self._segment = 0
        self._msg_id: str | None = None
        self._text: list[str] = []
        self._rs_id: str | None = None
        self._reasoning: list[str] = []
        self._calls: dict[int, _PendingCall] = {}
        self._last_call: _PendingCall | None = None

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
            if self.finish_reason is None:
                self._flush(out)
            out.append(Completed(self.response_id, self.usage))
            self.done = True
            return False
        if name == "error":
            self.error = self._error_event(data)
            return False
        try:
            chunk = _CHUNK_DECODER.decode(data)
        except msgspec.ValidationError as exc:
            self.error = StreamError(
                f"Chat Completions stream: a chunk has the wrong shape: {exc} (data: {_excerpt(data)})"
            )
            return False
        except msgspec.DecodeError as exc:
            self.error = StreamError(
                f"Chat Completions stream: a chunk is not valid JSON: {exc} (data: {_excerpt(data)})"
            )
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
                        self._on_tool_calls(delta.tool_calls, out)
                if choice.finish_reason is not None:
                    self._on_finish(choice.finish_reason, out)
                    if self.error is not None:
                        return False
        if chunk.usage is not None:
            self.usage = TokenUsage.from_wire(chunk.usage)
        return True

    def _error_event(self, data: bytes) -> KernelError:
        try:
            obj = _ANY_DECODER.decode(data)
        except msgspec.DecodeError:
            return StreamError(f"model server error: {redact(data[:2000].decode('utf-8', 'replace'))[:500]}")
        if isinstance(obj, dict) and obj.get("error") is not None:
            obj = obj["error"]
        return chat_error(obj)

    def _synthetic_id(self, prefix: str) -> str:
        base = f"{prefix}_{self.response_id or 'chat'}"
        return base if self._segment == 0 else f"{base}_{self._segment}"

    def _synthetic_call_id(self, index: int) -> str:
        base = f"call_{self.response_id or 'chat'}_{index}"
        return base if self._segment == 0 else f"{base}_{self._segment}"

    def _on_reasoning(self, text: str, out: list[ModelEvent]) -> None:
        rs_id = self._rs_id
        if rs_id is None:
            rs_id = self._rs_id = self._synthetic_id("rs")
            out.append(OutputItemAdded(Reasoning(id=rs_id)))
        self._reasoning.append(text)
        out.append(ReasoningContentDelta(rs_id, text))

    def _on_tool_calls(self, fragments: list[_ToolCallFragment], out: list[ModelEvent]) -> None:
        for frag in fragments:
            fn = frag.function
            call, new = self._call_for(frag, fn)
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

    def _call_for(self, frag: _ToolCallFragment, fn: _Function | None) -> tuple[_PendingCall, bool]:
        calls = self._calls
        index = frag.index
        if index is None:
            # No index (some servers send each call whole): a new id, or a new name after a
            # named call, starts a new call; anything else continues the last one.
            last = self._last_call
            if frag.id:
                for call in calls.values():
                    if call.call_id == frag.id:
                        self._last_call = call
                        return call, False
            elif last is not None and not (fn is not None and fn.name and last.name):
                return last, False
            index = max(calls) + 1 if calls else 0
        else:
            known = calls.get(index)
            if known is not None:
                self._last_call = known
                return known, False
        call = _PendingCall(index, frag.id or self._synthetic_call_id(index))
        calls[index] = call
        self._last_call = call
        return call, True

    def _on_finish(self, reason: str, out: list[ModelEvent]) -> None:
        self.finish_reason = reason
        if reason == "length":
            self._flush(out, drop_calls=True)
            self.error = IncompleteResponse("max_output_tokens")
        elif reason == "content_filter":
            self._flush(out, drop_calls=True)
            self.error = IncompleteResponse("content_filter")
        else:
            self._flush(out)

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
        if self._calls:
            if not drop_calls:
                for index in sorted(self._calls):
                    out.append(OutputItemDone(self._build_call(self._calls[index])))
            self._calls = {}
            self._last_call = None
            flushed = True
        self._msg_id = None
        self._rs_id = None
        if flushed:
            self._segment += 1

    def _build_call(self, call: _PendingCall) -> ResponseItem:
        args = "".join(call.args)
        if call.name in self.custom_tools:
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
# Request body
# ---------------------------------------------------------------------------------------------


def freeform_tool_names(prompt: Prompt) -> frozenset[str]:
    """Names of ``prompt``'s freeform (custom) tools, which the request sends as functions."""
    return frozenset(t.name for t in prompt.tools if isinstance(t, FreeformTool))


def chat_request_body(
    prompt: Prompt,
    *,
    model: str,
    include_usage: bool = True,
    developer_role: str = "system",
) -> dict[str, Any]:
    """The JSON body of a streaming ``POST /chat/completions`` for ``prompt``.

    ``{"model", "messages", "stream": true, "stream_options": {"include_usage": true},
    "tools"?, "parallel_tool_calls"?, "response_format"?}``:

    * ``messages``: a ``system`` message with the base instructions, then
      ``prompt.formatted_input()``: user / system messages keep their role (``developer``
      messages get ``developer_role``, ``"system"`` by default because most local chat templates
      reject other roles; pass ``"developer"`` for OpenAI itself) with their text parts joined
      (an array of ``text`` / ``image_url`` parts when the message has images); assistant
      messages become ``{"role": "assistant", "content": text}``; consecutive function calls,
      custom tool calls (as functions with arguments ``{"input": string}``) and local shell calls
      (as ``local_shell`` with the action as arguments) become one assistant message with
      ``tool_calls``, merged into a directly preceding assistant message; outputs become
      ``{"role": "tool", "tool_call_id", "content": text}``. Reasoning and other item kinds are
      dropped.
    * ``tools`` (only when there are any): function tools as
      ``{"type": "function", "function": {"name", "description", "parameters"}}`` (plus
      ``strict`` when set); freeform tools as functions taking ``{"input": string}`` whose
      description names the grammar; other kinds dropped. ``parallel_tool_calls`` is sent with
      them.
    * ``response_format``: a ``json_schema`` format when the prompt has an output schema.

    Does not mutate ``prompt``; the result shares no mutable state with it except JSON-schema
    mappings, which it does not copy.
    """
    messages: list[dict[str, Any]] = []
    if prompt.base_instructions:
        messages.append({"role": "system", "content": prompt.base_instructions})
    for item in prompt.formatted_input():
        if isinstance(item, Message):
            if item.role == "assistant":
                messages.append({"role": "assistant", "content": item.text()})
            else:
                role = developer_role if item.role == "developer" else item.role
                messages.append({"role": role, "content": _user_content(item.content)})
        elif isinstance(item, FunctionCall):
            _append_tool_call(messages, item.call_id, item.name, item.arguments)
        elif isinstance(item, CustomToolCall):
            _append_tool_call(messages, item.call_id, item.name, _json_text({"input": item.input}))
        elif isinstance(item, LocalShellCall):
            call_id = item.call_id if item.call_id is not None else item.id
            if call_id is not None:
                _append_tool_call(messages, call_id, "local_shell", _json_text_safe(item.action))
        elif isinstance(item, (FunctionCallOutput, CustomToolCallOutput)):
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output.to_text() or ""})
        elif isinstance(item, McpToolCallOutput):
            text = item.as_function_call_output_payload().to_text() or ""
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": text})
        # Reasoning, tool search and unknown items have no Chat Completions form: dropped.

    body: dict[str, Any] = {"model": model, "messages": messages, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    tools = [t for t in (_tool_spec(tool) for tool in prompt.tools) if t is not None]
    if tools:
        body["tools"] = tools
        body["parallel_tool_calls"] = prompt.parallel_tool_calls
    if prompt.output_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": "output_schema",
                "schema": prompt.output_schema,
                "strict": prompt.output_schema_strict,
            },
        }
    return body


def _user_content(content: Sequence[Mapping[str, Any]]) -> str | list[dict[str, Any]]:
    texts: list[str] = []
    has_image = False
    for part in content:
        kind = part.get("type")
        if kind in ("input_text", "output_text"):
            texts.append(str(part.get("text", "")))
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            has_image = True
    if not has_image:
        return "".join(texts)
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type")
        if kind in ("input_text", "output_text"):
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
    return parts


def _append_tool_call(messages: list[dict[str, Any]], call_id: str, name: str, arguments: str) -> None:
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
    else:
        # "" rather than null: some local chat templates string-process the content
        messages.append({"role": "assistant", "content": "", "tool_calls": [call]})


def _tool_spec(tool: Any) -> dict[str, Any] | None:
    if isinstance(tool, FunctionTool):
        fn: dict[str, Any] = {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        }
        if tool.strict:
            fn["strict"] = True
        return {"type": "function", "function": fn}
    if isinstance(tool, FreeformTool):
        input_doc = "The raw freeform input (plain text, not JSON-encoded)."
        if tool.format.definition:
            input_doc += f" It must match this {tool.format.syntax} grammar:\n{tool.format.definition}"
        description = tool.description
        description = (description + "\n\n" if description else "") + (
            "This is a freeform tool: put its whole input, as text, in the `input` string."
        )
        return {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": description,
                "parameters": {
                    "type": "object",
                    "properties": {"input": {"type": "string", "description": input_doc}},
                    "required": ["input"],
                    "additionalProperties": False,
                },
            },
        }
    return None
