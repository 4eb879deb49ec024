"""The kernel's error tree and the retry backoff (PROTOCOL §3).

Every failure the sampling loop reasons about is a :class:`KernelError`. The loop branches on the
class and on two attributes, never on message text:

* ``retryable`` — whether the loop may try the request again (each class says; a transport may
  change it for one error with :meth:`KernelError.override_retry`, when the server decides);
* ``retry_after`` — the delay, in float seconds, that the server asked for (``None`` when it named
  none). When a server names a delay the loop never retries sooner.

Messages never contain credentials: transports build them from status codes and response bodies,
never from request headers.
"""

from __future__ import annotations

import random
from typing import Any

__all__ = [
    "KernelError",
    "StreamError",
    "ServerError",
    "RateLimited",
    "UsageLimitReached",
    "ContextWindowExceeded",
    "QuotaExceeded",
    "UsageNotIncluded",
    "InvalidRequest",
    "Unauthorized",
    "IncompleteResponse",
    "FatalError",
    "WireFormatError",
    "backoff",
    "INITIAL_DELAY",
    "BACKOFF_FACTOR",
]

INITIAL_DELAY = 0.2
"""Seconds before the first retry (before jitter)."""
BACKOFF_FACTOR = 2.0
"""Each further retry waits this many times longer."""


class KernelError(Exception):
    """Base of every error the kernel raises or understands.

    ``retryable`` says whether the sampling loop may try again; ``retry_after`` is the delay the
    server requested, in seconds, or ``None``; ``http_status`` is the HTTP status of the response
    that carried the error, when one did (set by the transport), else ``None``.
    """

    retryable: bool = False
    http_status: int | None = None

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = _check_delay(retry_after)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        extra = "" if self.retry_after is None else f", retry_after={self.retry_after!r}"
        if self.retryable != type(self).retryable:
            extra += f", retryable={self.retryable!r}"
        return f"{type(self).__name__}({self.message!r}{extra})"

    def override_retry(self, retryable: bool, reason: str = "", *, retry_after: float | None = None) -> None:
        """Change this one error's retry decision (its class keeps its own).

        Transports use it when the server decides: an ``x-should-retry: true|false`` response
        header, or a requested wait longer than the client accepts (then the error fails at once).
        ``reason`` (when given) is appended to the message in parentheses, so the user sees why;
        ``retry_after`` (when given) replaces the requested delay. Does not raise for a valid
        delay (a negative or infinite one raises :class:`ValueError`, as the constructor does).
        """
        self.retryable = retryable
        if retry_after is not None:
            self.retry_after = _check_delay(retry_after)
        if reason:
            self.message = f"{self.message} ({reason})" if self.message else reason
            self.args = (self.message,)


def _check_delay(delay: float | None) -> float | None:
    if delay is None:
        return None
    delay = float(delay)
    if not delay >= 0.0 or delay == float("inf"):
        raise ValueError(f"retry_after must be a finite number of seconds >= 0, got {delay!r}")
    return delay


class StreamError(KernelError):
    """The response stream broke: connect/read error, EOF before completion, idle timeout,
    malformed SSE, or a retryable ``response.failed``. Retried."""

    retryable = True

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)


class ServerError(KernelError):
    """HTTP 5xx from the model endpoint. Retried (after ``Retry-After`` when given)."""

    retryable = True

    def __init__(self, message: str, *, status: int = 500, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.status = status


class RateLimited(KernelError):
    """HTTP 429 that is not a usage-limit error (``rate_limit_exceeded``). Retried after the
    requested delay."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)


class UsageLimitReached(KernelError):
    """The plan's usage limit is reached (HTTP 429 ``usage_limit_reached``). Never retried: the
    host's ``handle_usage_limit_reached`` hook receives ``rate_limits``."""

    def __init__(
        self,
        message: str = "",
        rate_limits: Any = None,
        *,
        plan_type: str | None = None,
        resets_at: float | None = None,
    ) -> None:
        super().__init__(message or "usage limit reached")
        self.rate_limits = rate_limits
        self.plan_type = plan_type
        self.resets_at = resets_at


class ContextWindowExceeded(KernelError):
    """The prompt does not fit the model's context window. Never retried: the host's
    ``handle_context_window_exceeded`` hook runs first."""

    def __init__(self, message: str = "") -> None:
        super().__init__(
            message
            or "The conversation no longer fits the model's context window. Start a new session or "
            "clear earlier history before retrying."
        )


class QuotaExceeded(KernelError):
    """``insufficient_quota``: the account has no quota left. Not retried."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message or "Quota exceeded. Check your plan and billing details.")


class UsageNotIncluded(KernelError):
    """``usage_not_included``: the plan does not include this usage. Not retried."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message or "This model is not included in your plan.")


class InvalidRequest(KernelError):
    """HTTP 400/404/422: the endpoint rejected the request. Not retried."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Unauthorized(KernelError):
    """HTTP 401/403. Not retried by the loop (a host may refresh credentials first)."""

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


class IncompleteResponse(KernelError):
    """``response.incomplete`` (``max_output_tokens``, ``content_filter``). Not retried."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"Incomplete response returned, reason: {reason}")
        self.reason = reason


class FatalError(KernelError):
    """A fatal failure that ends the turn (for example a tool's ``FatalToolError``).

    ``str(FatalError("boom")) == "Fatal error: boom"``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)

    def __str__(self) -> str:
        return f"Fatal error: {self.message}"


class WireFormatError(KernelError, ValueError):
    """A wire value (item, tool spec, event) does not have the documented shape.

    The message names the item type, the field and what was expected. Not retryable by itself;
    a transport that meets one inside a response stream raises :class:`StreamError` instead
    (PROTOCOL §3: a malformed event is a broken stream and is retried).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)


def backoff(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based).

    ``0.2 × 2^(attempt−1) × uniform(0.9, 1.1)``: 0.18–0.22 s for the first retry, doubling after.
    ``rng`` makes the jitter reproducible (tests); the default is the ``random`` module.
    Does not checkpoint.
    """
    if attempt < 1:
        attempt = 1
    base = INITIAL_DELAY * BACKOFF_FACTOR ** (attempt - 1)
    jitter = (rng or random).uniform(0.9, 1.1)
    return base * jitter
