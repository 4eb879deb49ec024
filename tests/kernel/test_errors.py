"""The error tree and backoff."""

import random

import pytest
from hypothesis import given, strategies as st

from kernel import (
    ContextWindowExceeded,
    FatalError,
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
    backoff,
)


def test_retryable_flags_follow_protocol_table() -> None:
    assert StreamError("x").retryable and ServerError("x").retryable and RateLimited("x").retryable
    for err in (
        ContextWindowExceeded(),
        UsageLimitReached(),
        QuotaExceeded(),
        UsageNotIncluded(),
        InvalidRequest("x"),
        Unauthorized("x"),
        IncompleteResponse("max_output_tokens"),
        FatalError("x"),
    ):
        assert isinstance(err, KernelError) and not err.retryable


def test_constructors_and_messages() -> None:
    assert str(FatalError("boom")) == "Fatal error: boom"
    e = StreamError("dropped", 1.5)
    assert (e.retry_after, str(e)) == (1.5, "dropped")
    assert StreamError("dropped").retry_after is None
    u = UsageLimitReached("limit", rate_limits={"p": 1})
    assert u.rate_limits == {"p": 1}
    assert UsageLimitReached().rate_limits is None
    assert "context window" in str(ContextWindowExceeded())
    assert InvalidRequest("bad").message == "bad"
    with pytest.raises(ValueError, match="retry_after"):
        StreamError("x", -1)


@given(st.integers(1, 20), st.integers(0, 2**32))
def test_backoff_bounds(attempt: int, seed: int) -> None:
    delay = backoff(attempt, random.Random(seed))
    base = 0.2 * 2 ** (attempt - 1)
    assert 0.9 * base <= delay <= 1.1 * base
    assert delay == backoff(attempt, random.Random(seed))  # reproducible with an rng


def test_default_messages_speak_of_this_project_only() -> None:
    from kernel import errors

    for name in dir(errors):
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, errors.KernelError):
            try:
                text = str(cls())
            except TypeError:
                continue  # needs arguments: no default text
            assert "codex" not in text.lower(), f"{name}: {text!r}"
