"""HTTP error responses → kernel errors (PROTOCOL §3), requested delays and rate-limit headers."""

from __future__ import annotations

import json
import math
import time
from email.utils import formatdate
from typing import Any

import httpx
import pytest
from hypothesis import example, given, strategies as st

from actors.model._http_errors import (
    MAX_MESSAGE_CHARS,
    error_from_http,
    rate_limits_from_headers,
    redact,
    requested_delay,
)
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
from kernel.stream import RateLimitsSnapshot


def body(**error: Any) -> bytes:
    return json.dumps({"error": error}).encode()


CODEX_HEADERS = {
    "x-codex-primary-used-percent": "100.0",
    "x-codex-primary-window-minutes": "300",
    "x-codex-primary-reset-after-seconds": "1800",
    "x-codex-secondary-used-percent": "42.5",
    "x-codex-secondary-window-minutes": "10080",
    "x-codex-secondary-reset-after-seconds": "86400",
}


# ---------------------------------------------------------------------------------------------
# error_from_http: every row of PROTOCOL §3
# ---------------------------------------------------------------------------------------------


def test_429_usage_limit_reached() -> None:
    err = error_from_http(
        429,
        CODEX_HEADERS,
        body(type="usage_limit_reached", message="You've hit your usage limit.", plan_type="pro", resets_at=1760000000),
    )
    assert type(err) is UsageLimitReached and not err.retryable
    assert err.plan_type == "pro" and err.resets_at == 1760000000.0
    assert err.rate_limits == RateLimitsSnapshot(100.0, 300.0, 1800.0, 42.5, 10080.0, 86400.0)
    assert "You've hit your usage limit." in err.message
    assert err.retry_after is None


def test_429_usage_limit_reached_by_code_without_headers_or_message() -> None:
    err = error_from_http(429, {}, body(code="usage_limit_reached"))
    assert type(err) is UsageLimitReached
    assert err.rate_limits is None and err.plan_type is None and err.resets_at is None
    assert err.message


def test_429_usage_limit_resets_in_seconds() -> None:
    before = time.time()
    err = error_from_http(429, {}, body(type="usage_limit_reached", resets_in_seconds=3600))
    assert type(err) is UsageLimitReached
    assert before + 3600 <= err.resets_at <= time.time() + 3600


def test_429_rate_limited_with_retry_after() -> None:
    err = error_from_http(
        429,
        {"Retry-After": "3"},
        body(message="Rate limit reached for requests", type="requests", code="rate_limit_exceeded"),
    )
    assert type(err) is RateLimited and err.retryable
    assert err.retry_after == 3.0
    assert err.message == "429 Too Many Requests: Rate limit reached for requests"


def test_429_delay_from_message_and_headers_largest_wins() -> None:
    msg = "Rate limit reached. Please try again in 1.898s."
    assert error_from_http(429, {}, body(message=msg, code="rate_limit_exceeded")).retry_after == pytest.approx(1.898)
    err = error_from_http(429, {"retry-after-ms": "5000"}, body(message=msg))
    assert err.retry_after == 5.0
    err = error_from_http(429, {"retry-after-ms": "10"}, body(message=msg))
    assert err.retry_after == pytest.approx(1.898)


def test_429_without_any_delay() -> None:
    err = error_from_http(429, {}, b"")
    assert type(err) is RateLimited and err.retry_after is None and err.message == "429 Too Many Requests"


def test_429_quota_and_plan_errors_are_not_retried() -> None:
    assert type(error_from_http(429, {}, body(code="insufficient_quota", message="quota"))) is QuotaExceeded
    assert type(error_from_http(429, {}, body(type="usage_not_included"))) is UsageNotIncluded


@pytest.mark.parametrize("status", [500, 502, 503, 504, 520, 599])
def test_5xx_is_a_retryable_server_error(status: int) -> None:
    err = error_from_http(status, {"retry-after": "7"}, b"upstream connect error")
    assert type(err) is ServerError and err.retryable
    assert err.status == status and err.retry_after == 7.0
    assert "upstream connect error" in err.message and err.message.startswith(str(status))


def test_5xx_retry_after_http_date() -> None:
    when = formatdate(time.time() + 30, usegmt=True)
    err = error_from_http(503, {"Retry-After": when}, b"")
    assert type(err) is ServerError
    assert 28.0 <= err.retry_after <= 31.0


def test_5xx_without_delay() -> None:
    err = error_from_http(500, {}, body(message="The server had an error", type="server_error"))
    assert type(err) is ServerError and err.retry_after is None
    assert err.message == "500 Internal Server Error: The server had an error"


def test_400_context_length_exceeded() -> None:
    err = error_from_http(
        400,
        {},
        body(
            message="This model's maximum context length is 128000 tokens.",
            type="invalid_request_error",
            param="input",
            code="context_length_exceeded",
        ),
    )
    assert type(err) is ContextWindowExceeded and not err.retryable


@pytest.mark.parametrize("status", [400, 404, 422, 413, 418])
def test_4xx_invalid_request_with_message_from_body(status: int) -> None:
    err = error_from_http(
        status,
        {},
        body(
            message="Unsupported parameter: 'foo'",
            type="invalid_request_error",
            param="foo",
            code="unsupported_parameter",
        ),
    )
    assert type(err) is InvalidRequest and not err.retryable
    assert err.status == status
    assert "Unsupported parameter: 'foo'" in err.message


def test_422_detail_body() -> None:
    err = error_from_http(
        422, {}, json.dumps({"detail": [{"loc": ["body", "model"], "msg": "field required"}]}).encode()
    )
    assert type(err) is InvalidRequest and "field required" in err.message


@pytest.mark.parametrize("status", [401, 403])
def test_401_403_unauthorized(status: int) -> None:
    err = error_from_http(
        status,
        {"www-authenticate": "Bearer"},
        body(message="Incorrect API key provided: sk-abc***xyz.", type="invalid_request_error", code="invalid_api_key"),
    )
    assert type(err) is Unauthorized and not err.retryable and err.status == status


@pytest.mark.parametrize("status", [408, 409])
def test_408_409_are_transient(status: int) -> None:
    err = error_from_http(status, {"retry-after": "2"}, b"")
    assert isinstance(err, StreamError) and err.retryable and err.retry_after == 2.0


@pytest.mark.parametrize("status", [0, 100, 200, 204, 302, 304, 600, 999])
def test_unexpected_statuses(status: int) -> None:
    err = error_from_http(status, {}, b"<html>moved</html>")
    assert type(err) is InvalidRequest and not err.retryable


def test_plain_text_and_html_bodies() -> None:
    err = error_from_http(502, {}, b"<html><body><h1>502 Bad Gateway</h1></body></html>")
    assert "502 Bad Gateway</h1>" in err.message
    err = error_from_http(400, {}, b"\xff\xfe not utf-8")
    assert type(err) is InvalidRequest and "not utf-8" in err.message


def test_error_string_body() -> None:
    err = error_from_http(400, {}, json.dumps({"error": "model not found"}).encode())
    assert type(err) is InvalidRequest and err.message == "400 Bad Request: model not found"


def test_huge_bodies_are_truncated() -> None:
    for raw in (b"A" * 5_000_000, body(message="B" * 3_000_000)):
        err = error_from_http(500, {}, raw)
        assert len(err.message) <= MAX_MESSAGE_CHARS + 100
        assert "truncated" in err.message


def test_messages_never_contain_request_headers_or_keys() -> None:
    key = "sk-proj-SECRETSECRETSECRET1234"
    headers = {"Authorization": f"Bearer {key}", "x-api-key": key, "retry-after": "1"}
    for status in (400, 401, 403, 404, 422, 429, 500, 503):
        echoed = body(message=f"bad header Authorization: Bearer {key}; key={key}")
        err = error_from_http(status, headers, echoed)
        assert key not in err.message and key not in repr(err) and key not in str(err)
        assert "SECRET" not in err.message
        plain = error_from_http(status, headers, b"")
        assert key not in plain.message


def test_redact() -> None:
    assert redact("Authorization: Bearer abc.def-ghi") == "Authorization: Bearer [REDACTED]"
    assert redact("key sk-abcdefgh123 here") == "key [REDACTED] here"
    assert redact("task-abcdefgh stays") == "task-abcdefgh stays"


def test_httpx_headers_are_accepted() -> None:
    headers = httpx.Headers({"Retry-After": "4", "X-Codex-Primary-Used-Percent": "12"})
    assert error_from_http(429, headers, b"").retry_after == 4.0
    err = error_from_http(429, headers, body(type="usage_limit_reached"))
    assert err.rate_limits == RateLimitsSnapshot(primary_used_percent=12.0)


# ---------------------------------------------------------------------------------------------
# requested_delay
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Rate limit reached for gpt-5. Please try again in 1.898s. Visit ...", 1.898),
        ("Please try again in 28ms.", 0.028),
        ("try again in 20 seconds", 20.0),
        ("Try Again In 1 second", 1.0),
        ("TRY AGAIN IN 3S", 3.0),
        ("please try again in 5.5 sec", 5.5),
        ("try again in 250 milliseconds", 0.25),
        ("try again in2s", 2.0),
        ("try again in 1.5s or try again in 4s", 4.0),
        ("Please try again later.", None),
        ("try again in 5 minutes", None),
        ("try again in 5sx", None),
        ("", None),
        (None, None),
    ],
)
def test_requested_delay_from_message(message: str | None, expected: float | None) -> None:
    got = requested_delay({}, message)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_requested_delay_from_headers() -> None:
    assert requested_delay({"Retry-After": "120"}, None) == 120.0
    assert requested_delay({"retry-after": "1.5"}, None) == 1.5
    assert requested_delay({"RETRY-AFTER-MS": "250"}, None) == 0.25
    assert requested_delay({"retry-after": "-3"}, None) is None
    assert requested_delay({"retry-after": "soon"}, None) is None
    assert requested_delay({"retry-after": "nan"}, None) is None
    assert requested_delay({"retry-after-ms": "inf"}, None) is None
    assert requested_delay({"retry-after": ""}, None) is None
    assert requested_delay({}, None) is None
    assert requested_delay(None, None) is None


def test_requested_delay_http_dates() -> None:
    future = formatdate(time.time() + 60, usegmt=True)
    got = requested_delay({"Retry-After": future}, None)
    assert got is not None and 58.0 <= got <= 61.0
    past = formatdate(time.time() - 60, usegmt=True)
    assert requested_delay({"Retry-After": past}, None) == 0.0
    assert requested_delay({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None) == 0.0


def test_requested_delay_prefers_the_largest() -> None:
    headers = {"retry-after": "2", "retry-after-ms": "3000"}
    assert requested_delay(headers, "try again in 1s") == 3.0
    assert requested_delay(headers, "try again in 10s") == 10.0


@given(
    st.dictionaries(st.sampled_from(["retry-after", "Retry-After", "retry-after-ms", "x"]), st.text(max_size=40)),
    st.text(max_size=80),
)
@example({"retry-after": "1e999"}, "try again in 99999999999999999999999999999999999999999999999" * 8 + "s")
@example({"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"}, "")
@example({"retry-after": "Mon, 01 Jan 0001 00:00:00 GMT"}, "")
def test_requested_delay_is_none_or_a_usable_delay(headers: dict[str, str], message: str) -> None:
    got = requested_delay(headers, message)
    assert got is None or (math.isfinite(got) and got >= 0.0)
    if got is not None:
        StreamError("x", got)  # KernelError accepts it


# ---------------------------------------------------------------------------------------------
# rate_limits_from_headers
# ---------------------------------------------------------------------------------------------


def test_rate_limits_from_headers() -> None:
    assert rate_limits_from_headers(CODEX_HEADERS) == RateLimitsSnapshot(100.0, 300.0, 1800.0, 42.5, 10080.0, 86400.0)
    upper = {k.upper(): v for k, v in CODEX_HEADERS.items()}
    assert rate_limits_from_headers(upper) == rate_limits_from_headers(CODEX_HEADERS)
    assert rate_limits_from_headers({"x-codex-secondary-used-percent": "5"}) == RateLimitsSnapshot(
        secondary_used_percent=5.0
    )
    assert rate_limits_from_headers(
        {"x-codex-primary-used-percent": "lots", "x-codex-primary-window-minutes": "60"}
    ) == RateLimitsSnapshot(primary_window_minutes=60.0)
    assert rate_limits_from_headers({"content-type": "application/json"}) is None
    assert rate_limits_from_headers({"x-codex-primary-used-percent": "nope"}) is None
    assert rate_limits_from_headers({}) is None
    assert rate_limits_from_headers(None) is None


# ---------------------------------------------------------------------------------------------
# never raises
# ---------------------------------------------------------------------------------------------

error_bodies = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda v: json.dumps(v).encode(),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(
                    st.sampled_from(
                        ["error", "message", "code", "type", "detail", "plan_type", "resets_at", "resets_in_seconds"]
                    ),
                    inner,
                    max_size=4,
                )
            ),
            max_leaves=10,
        ),
    ),
)


@given(st.integers(-5, 1000), st.dictionaries(st.text(max_size=30), st.text(max_size=30), max_size=5), error_bodies)
@example(429, {}, b'{"error":{"type":"usage_limit_reached","resets_at":1e308}}')
@example(429, {}, b'{"error":{"type":"usage_limit_reached","resets_in_seconds":1e308}}')
@example(400, {}, b"[" * 100_000)
def test_error_from_http_never_raises(status: int, headers: dict[str, str], raw: bytes) -> None:
    err = error_from_http(status, headers, raw)
    assert isinstance(err, KernelError)
    assert len(err.message) <= MAX_MESSAGE_CHARS + 200
