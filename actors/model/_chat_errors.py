"""Errors on the Chat Completions wire: :func:`chat_error` maps an OpenAI-style error object (met
inside a stream or in an HTTP error body) to a :class:`~kernel.errors.KernelError`.

Also the JSON text helpers the request body and the stream decoder share.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from kernel.errors import (
    ContextWindowExceeded,
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

from ._http_errors import clean_message

__all__ = ["chat_error"]

_ENCODER: Final = msgspec.json.Encoder()


def _json_text(value: Any) -> str:
    return _ENCODER.encode(value).decode("utf-8")


def _json_text_safe(value: Any) -> str:
    try:
        return _json_text(value)
    except (TypeError, ValueError, OverflowError):
        return repr(value)


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
