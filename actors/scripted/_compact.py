"""Context-window accounting and compaction for the scripted server (PROTOCOL §6).

Values and pure functions only (the server's I/O lives in ``_server``): the token estimate a
request is measured with, the errors a request over the window is refused with (worded as the
real services word them), the ``compaction`` item and the ``POST /v1/responses/compact`` answer.

The estimate (:func:`estimate_tokens`) is deliberately crude and fully specified, so a test can
compute the number the server compares with its window: the UTF-8 bytes of the compact JSON of
the input items, plus those of the JSON of ``instructions``, divided by 4 and rounded up. A
compaction item stands for what it summarised, so it counts small: the length of its
``encrypted_content``, and the items before the latest compaction item are not counted except
the user messages (what ``/responses/compact`` keeps).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any, Final

import attrs
import msgspec

from ._script import CustomToolCall, FunctionCall, HttpError, RawItem, Reasoning, Reply, Text

__all__ = [
    "COMPACTION_TYPES",
    "WINDOW_MESSAGE",
    "estimate_tokens",
    "input_items",
    "is_compaction",
    "is_user_message",
    "compaction_item",
    "compact_output",
    "compaction_threshold",
    "window_refusal",
    "with_compaction",
]

COMPACTION_TYPES: Final = ("compaction", "compaction_summary")
"""The item types counted as a compaction item (``compaction_summary`` is an older name)."""

WINDOW_MESSAGE: Final = "Your input exceeds the context window of this model. Please adjust your input and try again."
"""The Responses API's message for a request over the context window."""

_encode = msgspec.json.encode


def input_items(value: Any) -> list[Any]:
    """A Responses ``input`` as a list of items: a string is one user message
    (``{"type": "message", "role": "user", "content": value}``), ``None`` none, any other
    non-list value one item."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if isinstance(value, list):
        return list(value)
    return [value]


def is_compaction(item: Any) -> bool:
    """Whether ``item`` is a compaction item (``type`` in :data:`COMPACTION_TYPES`)."""
    return isinstance(item, Mapping) and item.get("type") in COMPACTION_TYPES


def is_user_message(item: Any) -> bool:
    """Whether ``item`` is a user message (``role: "user"``, ``type`` ``"message"`` or absent)."""
    return isinstance(item, Mapping) and item.get("role") == "user" and item.get("type", "message") == "message"


def _compaction_size(item: Mapping[str, Any]) -> int:
    content = item.get("encrypted_content")
    if isinstance(content, str):
        return len(content)
    return len(_encode(item))


def estimate_tokens(input: Any, instructions: Any = None) -> int:
    """The scripted server's token estimate of a request's input: what it compares with its
    ``context_window``, a ``compact_threshold``, and reports as ``usage.input_tokens``.

    ``input`` is a Responses ``input`` (a list of items; a string is one user message, see
    :func:`input_items`) or a Chat Completions ``messages`` list; ``instructions`` (Responses
    only) is added when not ``None``. The count is ``ceil(B / 4)`` where ``B`` is the length in
    bytes of the compact UTF-8 JSON (``msgspec.json.encode``: no spaces, non-ASCII as is) of the
    input items, plus that of the JSON of ``instructions``. When the input holds a compaction
    item, the latest one stands for everything before it: ``B`` is then the JSON of the user
    messages before it followed by the items after it, plus the length of its
    ``encrypted_content``. So ``estimate_tokens(compacted_output)`` is small and a compacted
    history fits the window again. On WebSocket the server estimates the full reconstructed
    input (the remembered chain followed by the frame's ``input``).
    """
    items = input_items(input)
    last = -1
    for i in range(len(items) - 1, -1, -1):
        if is_compaction(items[i]):
            last = i
            break
    if last < 0:
        size = len(_encode(items))
    else:
        kept = [item for item in items[:last] if is_user_message(item)] + items[last + 1 :]
        size = len(_encode(kept)) + _compaction_size(items[last])
    if instructions is not None:
        size += len(_encode(instructions))
    return -(-size // 4)


def compaction_item(items: list[Any]) -> dict[str, Any]:
    """The compaction item summarising ``items`` (an input's items): ``{"type": "compaction",
    "id": "cmp_<digest>", "encrypted_content": <opaque>}``. The content is the base64 of
    ``scripted-compaction:v1:<16 hex digits of the SHA-256 of the items' JSON>:<count of the
    items summarised (all but the user messages)>``: deterministic, short, never decoded by the
    server (it only measures its length)."""
    digest = hashlib.sha256(_encode(items)).hexdigest()[:16]
    summarised = sum(1 for item in items if not is_user_message(item))
    content = base64.b64encode(f"scripted-compaction:v1:{digest}:{summarised}".encode()).decode("ascii")
    return {"type": "compaction", "id": f"cmp_{digest}", "encrypted_content": content}


def compact_output(items: list[Any]) -> list[Any]:
    """The ``output`` of ``/responses/compact`` for an input: its user messages, verbatim and in
    order, followed by the :func:`compaction_item` of the whole input."""
    return [item for item in items if is_user_message(item)] + [compaction_item(items)]


def compaction_threshold(body: Mapping[str, Any], default: int | None) -> int | None | HttpError:
    """The ``compact_threshold`` a Responses request asks for with ``"context_management":
    [{"type": "compaction", "compact_threshold": N}]``; ``default`` (the server's context window)
    when the entry has no threshold; ``None`` without a compaction entry. Entries of other types
    are ignored. A malformed ``context_management`` is the 400 error to answer with."""
    value = body.get("context_management")
    if value is None:
        return None
    if not isinstance(value, list):
        return _invalid("context_management must be an array of objects", "context_management")
    for i, entry in enumerate(value):
        if not isinstance(entry, Mapping):
            return _invalid(f"context_management[{i}] must be an object", f"context_management[{i}]")
        if entry.get("type") != "compaction":
            continue
        threshold = entry.get("compact_threshold")
        if threshold is None:
            return default
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            return _invalid(
                f"context_management[{i}].compact_threshold must be a positive integer, got {threshold!r}",
                f"context_management[{i}].compact_threshold",
            )
        return threshold
    return None


def _invalid(message: str, param: str) -> HttpError:
    return HttpError(
        status=400,
        message=message,
        type="invalid_request_error",
        code="invalid_value",
        error_fields={"param": param},
    )


def window_refusal(endpoint: str, window: int, tokens: int) -> HttpError:
    """The HTTP 400 a request of ``tokens`` (estimated) over a ``window``-token context is
    refused with, as the real services word it: on Responses (and WebSocket) ``{"error":
    {"message": WINDOW_MESSAGE, "type": "invalid_request_error", "param": "input", "code":
    "context_length_exceeded"}}``; on Chat Completions OpenAI's ``"This model's maximum context
    length is N tokens. However, your messages resulted in M tokens. ..."`` with ``param``
    ``"messages"``."""
    if endpoint == "chat":
        message = (
            f"This model's maximum context length is {window} tokens. However, your messages resulted in "
            f"{tokens} tokens. Please reduce the length of the messages."
        )
        param = "messages"
    else:
        message, param = WINDOW_MESSAGE, "input"
    return HttpError(
        status=400,
        message=message,
        type="invalid_request_error",
        code="context_length_exceeded",
        error_fields={"param": param},
    )


_ID_PREFIX: Final[dict[type, str]] = {Text: "msg", Reasoning: "rs", FunctionCall: "fc", CustomToolCall: "ctc"}


def with_compaction(reply: Reply, item: Mapping[str, Any] | None, tag: str, usage_input: int | None) -> Reply:
    """``reply`` as served to one request: ``item`` (a compaction item) first when given, the
    reply's own items keeping the ids they would have had without it (``msg_<tag>_<index>``…), and
    ``usage.input_tokens`` set to ``usage_input`` when given."""
    changes: dict[str, Any] = {}
    if item is not None:
        items: list[Any] = [RawItem(item)]
        for index, own in enumerate(reply.items):
            if isinstance(own, (Text, Reasoning, FunctionCall, CustomToolCall)) and own.id is None:
                own = attrs.evolve(own, id=f"{_ID_PREFIX[type(own)]}_{tag}_{index}")
            items.append(own)
        changes["items"] = items
    if usage_input is not None:
        changes["usage"] = attrs.evolve(reply.usage, input_tokens=usage_input)
    return attrs.evolve(reply, **changes) if changes else reply
