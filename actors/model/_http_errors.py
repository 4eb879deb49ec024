"""HTTP error responses of the model endpoint → :class:`~kernel.errors.KernelError` (PROTOCOL §3).

Three functions, used by the HTTP transports and by the stream decoders:

* :func:`error_from_http` — one non-success response (status, headers, body) → the kernel error the
  sampling loop branches on, classified by the error table (``_error_table``; ``docs/errors.md``);
* :func:`requested_delay` — the delay a server asked for (``Retry-After``, ``retry-after-ms``, or
  "try again in 1.898s" in a message);
* :func:`rate_limits_from_headers` — the codex backend's ``x-codex-{primary,secondary}-*`` headers.

The body parsing, delays, redaction and status text live here; the decisions live in the table.
Messages are built from the status code and the response *body* only, never from request
headers; anything that looks like a bearer token or an API key is redacted, and long bodies are
truncated.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any

import httpx

from kernel.errors import KernelError
from kernel.stream import RateLimitsSnapshot

__all__ = [
    "error_from_http",
    "requested_delay",
    "rate_limits_from_headers",
    "clean_message",
    "redact",
    "MAX_MESSAGE_CHARS",
]

MAX_MESSAGE_CHARS = 2000
"""Longest body-derived text kept in an error message (the rest is cut with a marker)."""

_MAX_PARSED_BODY = 1 << 20  # bodies larger than this are not JSON-parsed (only their head is shown)

_TRY_AGAIN = re.compile(r"try again in\s*(\d+(?:\.\d+)?)\s*(milliseconds?|ms|seconds?|secs?|s)\b", re.IGNORECASE)

_SECRET = re.compile(
    r"(?i)(bearer\s+)[^\s\"',;]+"  # Authorization: Bearer <token>
    r"|\b(sk-[A-Za-z0-9_\-*.]{6,})"  # OpenAI-style keys (also partly masked ones)
)


# ---------------------------------------------------------------------------------------------
# headers
# ---------------------------------------------------------------------------------------------


def _lower_headers(headers: Mapping[str, str]) -> Mapping[str, str]:
    """A case-insensitive view: ``httpx.Headers`` already is one; other mappings are copied with
    lower-cased keys."""
    if isinstance(headers, httpx.Headers):
        return headers  # case-insensitive already
    try:
        return {str(k).lower(): v for k, v in headers.items()}
    except Exception:
        return {}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    try:
        value = headers.get(name)
    except Exception:
        return None
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    value = str(value).strip()
    return value or None


def _finite_non_negative(value: float) -> float | None:
    if math.isfinite(value) and value >= 0.0:
        return value
    return None


def _parse_float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _retry_after_header(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After``: delta-seconds or an HTTP date."""
    if value is None:
        return None
    seconds = _parse_float(value)
    if seconds is not None:
        return _finite_non_negative(seconds)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    delay = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, delay) if math.isfinite(delay) else None


def _delay_in_message(message: str | None) -> float | None:
    if not message:
        return None
    best: float | None = None
    for match in _TRY_AGAIN.finditer(message):
        value = float(match.group(1))
        unit = match.group(2).lower()
        if unit.startswith("m"):
            value /= 1000.0
        if math.isfinite(value) and (best is None or value > best):
            best = value
    return best


def requested_delay(headers: Mapping[str, str] | None, message: str | None = None) -> float | None:
    """The delay, in float seconds, that a response asked for, or ``None``.

    Sources: the ``retry-after-ms`` header (milliseconds), the ``Retry-After`` header (seconds
    or an HTTP date, counted from now), and ``try again in <n>(s|ms|seconds)`` in ``message``
    (case-insensitive). When several name a delay the largest wins: never retry sooner than the
    server asked. Header names are matched case-insensitively.
    """
    candidates: list[float] = []
    if headers:
        hs = _lower_headers(headers)
        ms = _parse_float(_header(hs, "retry-after-ms"))
        if ms is not None and ms >= 0.0:
            candidates.append(ms / 1000.0)
        ra = _retry_after_header(_header(hs, "retry-after"))
        if ra is not None:
            candidates.append(ra)
    in_message = _delay_in_message(message)
    if in_message is not None:
        candidates.append(in_message)
    return max(candidates) if candidates else None


def rate_limits_from_headers(headers: Mapping[str, str] | None) -> RateLimitsSnapshot | None:
    """The codex backend's rate-limit snapshot (``x-codex-primary-used-percent``,
    ``-window-minutes``, ``-reset-after-seconds`` and the same for ``secondary``); ``None`` when
    none of the six headers is present with a number."""
    if not headers:
        return None
    hs = _lower_headers(headers)
    values: dict[str, float | None] = {}
    for window in ("primary", "secondary"):
        for suffix, field in (
            ("used-percent", "used_percent"),
            ("window-minutes", "window_minutes"),
            ("reset-after-seconds", "reset_after_seconds"),
        ):
            values[f"{window}_{field}"] = _parse_float(_header(hs, f"x-codex-{window}-{suffix}"))
    if all(v is None for v in values.values()):
        return None
    return RateLimitsSnapshot(**values)


# ---------------------------------------------------------------------------------------------
# bodies
# ---------------------------------------------------------------------------------------------


def redact(text: str) -> str:
    """Replace bearer tokens and ``sk-...`` keys with ``[REDACTED]``."""

    def sub(m: re.Match[str]) -> str:
        return f"{m.group(1)}[REDACTED]" if m.group(1) else "[REDACTED]"

    return _SECRET.sub(sub, text)


def clean_message(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` stripped, with secrets redacted and cut to ``limit`` characters."""
    text = redact(text.strip())
    if len(text) > limit:
        return f"{text[:limit]}… [truncated]"
    return text


class _Body:
    """What an OpenAI-style error body says: ``{"error": {"message", "type", "code", ...}}``
    (also ``{"detail": ...}``, a top-level ``message``/``code``, or plain text)."""

    __slots__ = ("message", "code", "type", "error")

    def __init__(self, body: bytes) -> None:
        self.message: str | None = None
        self.code: str | None = None
        self.type: str | None = None
        self.error: Mapping[str, Any] = {}
        parsed: Any = None
        if body and len(body) <= _MAX_PARSED_BODY:
            try:
                parsed = json.loads(body)
            except (ValueError, RecursionError):
                parsed = None
        if isinstance(parsed, dict):
            err = parsed.get("error")
            if isinstance(err, dict):
                self.error = err
            elif isinstance(err, str):
                self.message = err
            src: Mapping[str, Any] = self.error or parsed
            msg = src.get("message")
            if isinstance(msg, str) and msg.strip():
                self.message = msg
            elif self.message is None:
                detail = parsed.get("detail", parsed.get("message"))
                if isinstance(detail, str) and detail.strip():
                    self.message = detail
                elif detail is not None:
                    self.message = json.dumps(detail, ensure_ascii=False)
            code = src.get("code")
            if isinstance(code, (str, int)) and not isinstance(code, bool):
                self.code = str(code)
            etype = src.get("type")
            if isinstance(etype, str):
                self.type = etype
        if self.message is None and body:
            self.message = body[: MAX_MESSAGE_CHARS * 4].decode("utf-8", "replace")
        if self.message is not None:
            self.message = clean_message(self.message)

    def has(self, name: str) -> bool:
        return self.code == name or self.type == name


def _status_text(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def error_from_http(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    wire: str | None = None,
    max_retry_after: float | None = None,
) -> KernelError:
    """The kernel error for a non-success HTTP response of the model endpoint, classified by the
    error table (:data:`actors.model._error_table.ERROR_TABLE`; ``docs/errors.md``).

    In short: a code that says it wins on any status (``context_length_exceeded`` and llama.cpp's
    ``exceed_context_size_error`` → :class:`ContextWindowExceeded`, ``usage_limit_reached`` →
    :class:`UsageLimitReached` with the rate-limit snapshot, ``plan_type`` and ``resets_at``,
    ``usage_not_included`` → :class:`UsageNotIncluded`, ``insufficient_quota`` →
    :class:`QuotaExceeded`, ``rate_limit_exceeded`` → :class:`RateLimited`); a 400/413/422 whose
    message says the context overflowed (vLLM, Ollama, LM Studio) → :class:`ContextWindowExceeded`;
    then by status: 429 → :class:`RateLimited`, 401/403 → :class:`Unauthorized`, 408/409 →
    :class:`StreamError`, 501 → :class:`InvalidRequest`, 5xx → :class:`ServerError`, other 4xx →
    :class:`InvalidRequest`, anything else → :class:`InvalidRequest` ("unexpected HTTP status").
    Retryable errors carry the requested delay (``Retry-After``, ``retry-after-ms``, "try again in
    1.898s"); ``x-should-retry: true|false`` overrides the decision.

    ``wire`` (``"responses"`` / ``"chat"``) selects the wire-specific rows (a 404 for a missing
    ``/responses`` route gets a hint); ``max_retry_after`` (``ModelSettings.max_retry_after``)
    makes a request for a longer wait fail at once. The message is ``"<status> <phrase>: <body
    message>"``, built from the body only (never from request headers), with secrets redacted and
    long text truncated; the error's ``http_status`` is ``status``. Never raises.
    """
    from ._error_table import http_error  # the table imports this module's helpers

    error = http_error(status, headers, body, wire=wire, max_retry_after=max_retry_after)
    error.http_status = status
    return error
