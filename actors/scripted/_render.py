"""Render a :class:`Reply` into the SSE bytes of each protocol, once.

A rendered reply is a list of complete SSE events (bytes) plus, per event, whether it is a delta
(``delta_delay`` sleeps before those). The server caches renders per reply and joins them into
write batches, so the per-request cost of a 20,000-delta reply is a few hundred socket writes.
Item ids are fixed per reply (``msg_<tag>_<index>``…), so a cycled script repeats them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import attrs

from ._script import (
    CustomToolCall,
    ErrorEvent,
    Failed,
    FunctionCall,
    Incomplete,
    RawItem,
    Reasoning,
    Reply,
    Text,
)

__all__ = ["Rendered", "render_responses", "render_chat", "malformed_event"]

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_quote: Callable[[str], str] = json.encoder.encode_basestring  # C-accelerated string → JSON


@attrs.define
class Rendered:
    """The events of one reply on one protocol, and their write batches by batch size."""

    events: list[bytes]
    is_delta: list[bool]
    _batches: dict[int, list[bytes]] = attrs.field(factory=dict)

    def batches(self, events_per_write: int) -> list[bytes]:
        """The events joined ``events_per_write`` at a time (cached)."""
        out = self._batches.get(events_per_write)
        if out is None:
            ev = self.events
            out = [b"".join(ev[i : i + events_per_write]) for i in range(0, len(ev), events_per_write)]
            self._batches[events_per_write] = out
        return out


def _chunks(text: str, size: int) -> list[str]:
    if not text:
        return []
    if size <= 0:
        return [text]
    return [text[i : i + size] for i in range(0, len(text), size)]


class _Responses:
    """Accumulates Responses API events with increasing sequence numbers."""

    def __init__(self) -> None:
        self.events: list[bytes] = []
        self.is_delta: list[bool] = []
        self.seq = 0

    def emit(self, type_: str, fields: dict[str, Any], delta: bool = False) -> None:
        payload = {"type": type_, "sequence_number": self.seq, **fields}
        self.seq += 1
        self.events.append(b"event: " + type_.encode() + b"\ndata: " + _dumps(payload).encode() + b"\n\n")
        self.is_delta.append(delta)

    def emit_deltas(
        self,
        type_: str,
        where: dict[str, Any],
        pieces: list[str],
        tail: dict[str, Any] | None = None,
    ) -> None:
        """``emit(type_, {**where, "delta": piece, **tail}, delta=True)`` for each piece, from a
        byte template: a 20,000-delta reply renders in tens of milliseconds, not a second."""
        pre = b"event: " + type_.encode() + b'\ndata: {"type":' + _dumps(type_).encode() + b',"sequence_number":'
        mid = b"," + _dumps(where).encode()[1:-1] + b',"delta":' if where else b',"delta":'
        post = (b"," + _dumps(tail).encode()[1:-1] if tail else b"") + b"}\n\n"
        seq = self.seq
        events = self.events
        for piece in pieces:
            events.append(b"".join((pre, str(seq).encode(), mid, _quote(piece).encode(), post)))
            seq += 1
        self.is_delta.extend([True] * len(pieces))
        self.seq = seq


def render_responses(reply: Reply, *, tag: str, model: str) -> Rendered:
    """The Responses API SSE events of ``reply``: ``response.created``, ``response.in_progress``,
    each item's events, then ``response.completed`` (or the scripted terminal fault)."""
    out = _Responses()
    base: dict[str, Any] = {
        "id": reply.response_id or f"resp_{tag}",
        "object": "response",
        "created_at": int(time.time()),
        "model": reply.model or model,
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
        "parallel_tool_calls": True,
        "temperature": 1.0,
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "output": [],
        "usage": None,
    }
    out.emit("response.created", {"response": base})
    out.emit("response.in_progress", {"response": base})
    done: list[dict[str, Any]] = []
    for index, item in enumerate(reply.items):
        done.append(_render_item(out, item, index, tag))

    terminal = reply.terminal
    if isinstance(terminal, Failed):
        out.emit(
            "response.failed",
            {
                "response": {
                    **base,
                    "status": "failed",
                    "error": {"code": terminal.code, "message": terminal.message},
                    "output": done,
                }
            },
        )
    elif isinstance(terminal, Incomplete):
        out.emit(
            "response.incomplete",
            {
                "response": {
                    **base,
                    "status": "incomplete",
                    "incomplete_details": {"reason": terminal.reason},
                    "output": done,
                    "usage": reply.usage.to_responses(),
                }
            },
        )
    elif isinstance(terminal, ErrorEvent):
        out.emit("error", {"code": terminal.code, "message": terminal.message, "param": None})
    else:
        final: dict[str, Any] = {
            **base,
            "status": "completed",
            "output": done,
            "usage": reply.usage.to_responses(),
        }
        if reply.end_turn is not None:
            final["end_turn"] = reply.end_turn
        out.emit("response.completed", {"response": final})
    return Rendered(out.events, out.is_delta)


def _render_item(out: _Responses, item: Any, index: int, tag: str) -> dict[str, Any]:
    """Emit one item's events, from ``response.output_item.added`` to ``response.output_item.done``;
    return its complete (done) form."""
    if isinstance(item, Text):
        done = _render_text(out, item, index, item.id or f"msg_{tag}_{index}")
    elif isinstance(item, Reasoning):
        done = _render_reasoning(out, item, index, item.id or f"rs_{tag}_{index}")
    elif isinstance(item, FunctionCall):
        added = _call_added(item.id or f"fc_{tag}_{index}", "function_call", item.call_id, item.name, "arguments")
        if item.namespace is not None:
            added["namespace"] = item.namespace
        done = _render_call(out, index, added, "arguments", item.arguments, item.chunk_size)
    elif isinstance(item, CustomToolCall):
        added = _call_added(item.id or f"ctc_{tag}_{index}", "custom_tool_call", item.call_id, item.name, "input")
        done = _render_call(out, index, added, "input", item.input, item.chunk_size)
    elif isinstance(item, RawItem):
        done = dict(item.item)
        out.emit("response.output_item.added", {"output_index": index, "item": done})
    else:  # pragma: no cover - Reply's converter admits only items
        raise TypeError(f"not a scripted item: {item!r}")
    out.emit("response.output_item.done", {"output_index": index, "item": done})
    return done


def _render_text(out: _Responses, item: Text, index: int, item_id: str) -> dict[str, Any]:
    added: dict[str, Any] = {
        "id": item_id,
        "type": "message",
        "status": "in_progress",
        "role": "assistant",
        "content": [],
    }
    if item.phase is not None:
        added["phase"] = item.phase
    out.emit("response.output_item.added", {"output_index": index, "item": added})
    where = {"item_id": item_id, "output_index": index, "content_index": 0}
    part = _render_part(
        out,
        where,
        ("response.content_part", "response.output_text"),
        {"type": "output_text", "annotations": [], "logprobs": []},
        item.text,
        item.chunk_size,
        {"logprobs": []},
    )
    return {**added, "status": "completed", "content": [part]}


def _render_reasoning(out: _Responses, item: Reasoning, index: int, item_id: str) -> dict[str, Any]:
    added: dict[str, Any] = {"id": item_id, "type": "reasoning", "summary": []}
    if item.encrypted_content is not None:
        added["encrypted_content"] = item.encrypted_content
    out.emit("response.output_item.added", {"output_index": index, "item": added})
    summary: list[dict[str, Any]] = []
    for s, section in enumerate(item.summary):
        where = {"item_id": item_id, "output_index": index, "summary_index": s}
        events = ("response.reasoning_summary_part", "response.reasoning_summary_text")
        summary.append(_render_part(out, where, events, {"type": "summary_text"}, section, item.chunk_size))
    done = {**added, "summary": summary}
    if item.content is not None:
        where = {"item_id": item_id, "output_index": index, "content_index": 0}
        events = ("response.content_part", "response.reasoning_text")
        done["content"] = [_render_part(out, where, events, {"type": "reasoning_text"}, item.content, item.chunk_size)]
    return done


def _render_part(
    out: _Responses,
    where: dict[str, Any],
    events: tuple[str, str],
    part: dict[str, Any],
    text: str,
    chunk_size: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Stream one content or summary part: ``<part event>.added``, the ``<text event>.delta``
    events, ``<text event>.done``, ``<part event>.done`` (``extra`` fields on the text events).
    Returns the done part (``part`` with its ``text``)."""
    part_event, text_event = events
    out.emit(part_event + ".added", {**where, "part": {**part, "text": ""}})
    out.emit_deltas(text_event + ".delta", where, _chunks(text, chunk_size), extra)
    out.emit(text_event + ".done", {**where, "text": text, **(extra or {})})
    done = {**part, "text": text}
    out.emit(part_event + ".done", {**where, "part": done})
    return done


def _call_added(item_id: str, type_: str, call_id: str, name: str, field: str) -> dict[str, Any]:
    """The in-progress form of a tool call item whose ``field`` streams (empty so far)."""
    return {"id": item_id, "type": type_, "status": "in_progress", "call_id": call_id, "name": name, field: ""}


def _render_call(
    out: _Responses, index: int, added: dict[str, Any], field: str, value: str, chunk_size: int
) -> dict[str, Any]:
    """Stream the tool call ``added`` (its in-progress form): ``field`` (``arguments`` /
    ``input``) as ``response.<type>_<field>.delta`` events, then ``.done``. Returns the done item."""
    events = f"response.{added['type']}_{field}"
    out.emit("response.output_item.added", {"output_index": index, "item": added})
    where = {"item_id": added["id"], "output_index": index}
    out.emit_deltas(events + ".delta", where, _chunks(value, chunk_size))
    out.emit(events + ".done", {**where, field: value})
    return {**added, "status": "completed", field: value}


def render_chat(reply: Reply, *, tag: str, model: str, include_usage: bool) -> Rendered:
    """The Chat Completions chunks of ``reply`` (``data: {json}`` events ending with
    ``data: [DONE]``; a usage chunk before it when ``include_usage``). Reasoning is sent as
    ``delta.reasoning_content`` (the vLLM / DeepSeek convention); raw items are left out."""
    events: list[bytes] = []
    is_delta: list[bool] = []
    head = {
        "id": reply.response_id or f"chatcmpl-{tag}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": reply.model or model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> None:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        events.append(b"data: " + _dumps({**head, "choices": [choice]}).encode() + b"\n\n")
        is_delta.append(False)

    pre = b"data: " + _dumps(head).encode()[:-1] + b',"choices":[{"index":0,"delta":'
    post = b',"logprobs":null,"finish_reason":null}]}\n\n'

    def delta_chunks(open_: str, pieces: list[str], close: str) -> None:
        # byte template per fragment, as in _Responses.emit_deltas
        start, end = pre + open_.encode(), close.encode() + post
        events.extend(b"".join((start, _quote(p).encode(), end)) for p in pieces)
        is_delta.extend([True] * len(pieces))

    chunk({"role": "assistant", "content": ""})
    tool_index = 0
    for item in reply.items:
        if isinstance(item, Text):
            delta_chunks('{"content":', _chunks(item.text, item.chunk_size), "}")
        elif isinstance(item, Reasoning):
            text = "\n\n".join(item.summary) if item.summary else (item.content or "")
            delta_chunks('{"reasoning_content":', _chunks(text, item.chunk_size), "}")
        elif isinstance(item, (FunctionCall, CustomToolCall)):
            args = item.arguments if isinstance(item, FunctionCall) else item.input
            first = {
                "index": tool_index,
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": ""},
            }
            chunk({"tool_calls": [first]})
            delta_chunks(
                f'{{"tool_calls":[{{"index":{tool_index},"function":{{"arguments":',
                _chunks(args, item.chunk_size),
                "}}]}",
            )
            tool_index += 1

    terminal = reply.terminal
    if isinstance(terminal, (Failed, ErrorEvent)):
        error = {
            "message": terminal.message,
            "type": terminal.code,
            "param": None,
            "code": terminal.code,
        }
        events.append(b"data: " + _dumps({"error": error}).encode() + b"\n\n")
        is_delta.append(False)
        return Rendered(events, is_delta)
    if isinstance(terminal, Incomplete):
        finish = "content_filter" if terminal.reason == "content_filter" else "length"
    else:
        finish = "tool_calls" if tool_index else "stop"
    chunk({}, finish)
    if include_usage:
        usage_chunk = {**head, "choices": [], "usage": reply.usage.to_chat()}
        events.append(b"data: " + _dumps(usage_chunk).encode() + b"\n\n")
        is_delta.append(False)
    events.append(b"data: [DONE]\n\n")
    is_delta.append(False)
    return Rendered(events, is_delta)


def malformed_event(data: str, event: str | None) -> bytes:
    """An SSE event whose data line is ``data`` as it is (not JSON-encoded)."""
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + data.encode() + b"\n\n"
