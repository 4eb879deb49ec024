"""Errors on the Chat Completions wire: :func:`chat_error` maps an OpenAI-style error object (met
inside a stream or in an HTTP error body) to a :class:`~kernel.errors.KernelError`.

Also the JSON text helpers the request body and the stream decoder share.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from kernel.errors import KernelError

from ._error_table import stream_error

__all__ = ["chat_error"]

_ENCODER: Final = msgspec.json.Encoder()


def _json_text(value: Any) -> str:
    return _ENCODER.encode(value).decode("utf-8")


def _json_text_safe(value: Any) -> str:
    try:
        return _json_text(value)
    except (TypeError, ValueError, OverflowError):
        return repr(value)


def chat_error(error: Any, *, status: int | None = None, max_retry_after: float | None = None) -> KernelError:
    """The :class:`~kernel.errors.KernelError` for an OpenAI-style error object
    (``{"message", "type", "code"}``, or a bare string) met inside a Chat Completions stream or, with
    ``status``, in an HTTP error body; classified by the error table
    (:data:`actors.model._error_table.ERROR_TABLE`; ``docs/errors.md``).

    Recognised by ``code`` / ``type`` (``context_length_exceeded`` and llama.cpp's
    ``exceed_context_size_error`` → :class:`ContextWindowExceeded`, ``usage_limit_reached`` →
    :class:`UsageLimitReached`, ``insufficient_quota`` → :class:`QuotaExceeded`,
    ``usage_not_included`` → :class:`UsageNotIncluded`, ``rate_limit_exceeded`` →
    :class:`RateLimited`, the permanent Responses codes → :class:`InvalidRequest`), by the message
    for local servers that only say it in words (a context overflow), and by a numeric code (vLLM,
    llama.cpp put the HTTP status there) or ``status`` like an HTTP status: 429 →
    :class:`RateLimited`, 400/404/422 → :class:`InvalidRequest`, 401/403 → :class:`Unauthorized`,
    5xx → :class:`ServerError`. Anything else is a retryable :class:`StreamError`. A delay named in
    the message (``try again in 1.5s`` / ``28ms``) becomes ``retry_after`` of a retryable error (a
    wait over ``max_retry_after`` fails at once). Messages are prefixed ``"model server error: "``
    (the host-hook errors keep the server's words). Never raises.
    """
    return stream_error(  # an object without a message is shown as JSON
        error,
        wire="chat",
        prefix="model server error: ",
        status=status,
        max_retry_after=max_retry_after,
    )
