"""The Responses API stream decoder's errors (PROTOCOL §3): error rows, malformed events, and fuzzing."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import assume, example, given, strategies as st

from actors.model._responses import (
    ResponsesStreamDecoder,
)
from kernel.errors import (
    ContextWindowExceeded,
    IncompleteResponse,
    InvalidRequest,
    KernelError,
    QuotaExceeded,
    RateLimited,
    StreamError,
    UsageLimitReached,
    UsageNotIncluded,
)
from kernel.stream import (
    OutputTextDelta,
)

from ._responses_helpers import ALL_FIXTURES, COMPLETED, cut_points, load, raw_event, run, split_at, sse

# ---------------------------------------------------------------------------------------------
# every error row (PROTOCOL §3) carried by the stream
# ---------------------------------------------------------------------------------------------

ERROR_ROWS: list[tuple[dict[str, Any], type[KernelError], bool, float | None]] = [
    (
        {"code": "context_length_exceeded", "message": "Your input exceeds the context window"},
        ContextWindowExceeded,
        False,
        None,
    ),
    ({"code": "insufficient_quota", "message": "You exceeded your current quota"}, QuotaExceeded, False, None),
    ({"code": "usage_not_included", "message": "not in plan"}, UsageNotIncluded, False, None),
    (
        {
            "type": "usage_limit_reached",
            "message": "The usage limit has been reached",
            "plan_type": "pro",
            "resets_at": 1760000000,
        },
        UsageLimitReached,
        False,
        None,
    ),
    ({"code": "invalid_prompt", "message": "Invalid prompt: flagged"}, InvalidRequest, False, None),
    (
        {"code": "rate_limit_exceeded", "message": "Rate limit reached. Please try again in 1.898s."},
        RateLimited,
        True,
        1.898,
    ),
    ({"code": "rate_limit_exceeded", "message": "Rate limit reached, try again in 28ms"}, RateLimited, True, 0.028),
    ({"code": "server_is_overloaded", "message": "Overloaded. Try again in 20 seconds."}, StreamError, True, 20.0),
    ({"code": "server_error", "message": "An error occurred while processing your request."}, StreamError, True, None),
    ({"message": "no code at all"}, StreamError, True, None),
]


@pytest.mark.parametrize(("error", "cls", "retryable", "delay"), ERROR_ROWS)
def test_response_failed_rows(
    error: dict[str, Any], cls: type[KernelError], retryable: bool, delay: float | None
) -> None:
    stream = sse(
        {"type": "response.output_text.delta", "delta": "kept"},
        {"type": "response.failed", "response": {"id": "r", "status": "failed", "error": error}},
        {"type": "response.output_text.delta", "delta": "after the end"},
    )
    events, err, dec = run([stream])
    assert events == [OutputTextDelta("", "kept")]
    assert type(err) is cls
    assert err.retryable is retryable
    assert err.retry_after == (pytest.approx(delay) if delay is not None else None)
    if cls is UsageLimitReached:
        assert err.plan_type == "pro" and err.resets_at == 1760000000.0
    if cls is InvalidRequest or cls is StreamError:
        assert err.message == error["message"]


@pytest.mark.parametrize(("error", "cls", "retryable", "delay"), ERROR_ROWS)
@pytest.mark.parametrize("nested", [False, True])
def test_error_event_rows(
    error: dict[str, Any], cls: type[KernelError], retryable: bool, delay: float | None, nested: bool
) -> None:
    flat = {("code" if k == "type" else k): v for k, v in error.items()}  # "type" is the event's
    payload = {"type": "error", "error": error} if nested else {"type": "error", **flat, "param": None}
    events, err, _ = run([sse({"type": "response.output_text.delta", "delta": "kept"}, payload)])
    assert events == [OutputTextDelta("", "kept")]
    assert type(err) is cls and err.retryable is retryable
    assert err.retry_after == (pytest.approx(delay) if delay is not None else None)


def test_response_failed_without_error_object() -> None:
    for payload in (
        {"type": "response.failed"},
        {"type": "response.failed", "response": {"id": "r"}},
        {"type": "response.failed", "response": {"error": None}},
    ):
        events, err, _ = run([sse(payload)])
        assert type(err) is StreamError and err.retryable
        assert err.message == "response.failed event received"


def test_incomplete_reasons() -> None:
    for details, reason in (({"reason": "content_filter"}, "content_filter"), (None, "unknown"), ({}, "unknown")):
        _, err, _ = run(
            [sse({"type": "response.incomplete", "response": {"status": "incomplete", "incomplete_details": details}})]
        )
        assert isinstance(err, IncompleteResponse) and err.reason == reason and not err.retryable


def test_failure_messages_are_redacted_and_bounded() -> None:
    msg = "bad key sk-proj-abcdefghijklmnop " + "x" * 10_000
    _, err, _ = run([sse({"type": "response.failed", "response": {"error": {"code": "server_error", "message": msg}}})])
    assert type(err) is StreamError
    assert "sk-proj-abcdefghijklmnop" not in err.message
    assert len(err.message) < 2100


# ---------------------------------------------------------------------------------------------
# malformed events → StreamError naming event and field, never another exception
# ---------------------------------------------------------------------------------------------

MALFORMED: list[tuple[bytes, str]] = [
    (raw_event("response.output_text.delta", "{not json"), "not valid JSON"),
    (
        raw_event("response.output_text.delta", '{"type":"response.output_text.delta","item_id":"m"}'),
        "response.output_text.delta event: required field 'delta' is missing",
    ),
    (
        raw_event("response.output_text.delta", '{"type":"response.output_text.delta","delta":null}'),
        "required field 'delta' is missing",
    ),
    (
        raw_event("response.output_text.delta", '{"type":"response.output_text.delta","delta":5}'),
        "response.output_text.delta event: field 'delta' must be a string",
    ),
    (
        raw_event("response.output_text.delta", '{"type":"response.output_text.delta","delta":"a","item_id":3}'),
        "field 'item_id' must be a string",
    ),
    (
        raw_event("response.function_call_arguments.delta", '{"type":"response.function_call_arguments.delta"}'),
        "response.function_call_arguments.delta event: required field 'delta' is missing",
    ),
    (
        raw_event(
            "response.custom_tool_call_input.delta", '{"type":"response.custom_tool_call_input.delta","delta":[]}'
        ),
        "field 'delta' must be a string",
    ),
    (
        raw_event(
            "response.reasoning_summary_text.delta",
            '{"type":"response.reasoning_summary_text.delta","delta":"a","summary_index":"0"}',
        ),
        "field 'summary_index' must be an integer",
    ),
    (
        raw_event("response.reasoning_text.delta", '{"type":"response.reasoning_text.delta","content_index":0}'),
        "required field 'delta' is missing",
    ),
    (
        raw_event("response.output_item.done", '{"type":"response.output_item.done","output_index":0}'),
        "response.output_item.done event: required field 'item' is missing",
    ),
    (
        raw_event("response.output_item.done", '{"type":"response.output_item.done","item":null}'),
        "field 'item' must be an object",
    ),
    (
        raw_event("response.output_item.done", '{"type":"response.output_item.done","item":[1]}'),
        "field 'item' must be an object",
    ),
    (
        raw_event(
            "response.output_item.done",
            '{"type":"response.output_item.done","item":{"type":"function_call","name":"f","arguments":"{}"}}',
        ),
        "invalid item: function_call: required field 'call_id' is missing",
    ),
    (
        raw_event(
            "response.output_item.done",
            '{"type":"response.output_item.done","item":{"type":"message","role":"assistant","content":5}}',
        ),
        "invalid item: message.content: expected a string or an array",
    ),
    (
        raw_event("response.output_item.added", '{"type":"response.output_item.added"}'),
        "required field 'item' is missing",
    ),
    (
        raw_event("response.completed", '{"type":"response.completed"}'),
        "response.completed event: required field 'response' is missing",
    ),
    (
        raw_event("response.completed", '{"type":"response.completed","response":"done"}'),
        "field 'response' must be an object",
    ),
    (raw_event("response.output_text.delta", "[1,2,3]"), "data must be a JSON object"),
    (raw_event("response.output_text.delta", '"just a string"'), "data must be a JSON object"),
    (raw_event(None, '{"type":"response.output_text.delta","delta":"\\ud800x'), "not valid JSON"),
    (
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"\xff\xfe"}\n\n',
        "not valid JSON",
    ),
    (raw_event("response.in_progress", "{truncated"), "not valid JSON"),
]


@pytest.mark.parametrize(("stream", "fragment"), MALFORMED)
def test_malformed_events_are_retryable_stream_errors(stream: bytes, fragment: str) -> None:
    before = sse({"type": "response.output_text.delta", "item_id": "m", "delta": "kept"})
    events, err, _ = run([before + stream + sse(COMPLETED)])
    assert events == [OutputTextDelta("m", "kept")]
    assert type(err) is StreamError and err.retryable
    assert fragment in err.message


# ---------------------------------------------------------------------------------------------
# fuzzing: only KernelError ever surfaces, and only through .error
# ---------------------------------------------------------------------------------------------

KNOWN_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.output_item.done",
    "response.output_text.delta",
    "response.function_call_arguments.delta",
    "response.custom_tool_call_input.delta",
    "response.reasoning_summary_text.delta",
    "response.reasoning_summary_part.added",
    "response.reasoning_text.delta",
    "response.completed",
    "response.incomplete",
    "response.failed",
    "error",
    "codex.rate_limits",
    "response.content_part.added",
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "type",
                    "delta",
                    "item_id",
                    "item",
                    "response",
                    "error",
                    "code",
                    "message",
                    "summary_index",
                    "content_index",
                    "usage",
                    "id",
                    "role",
                    "content",
                    "call_id",
                    "name",
                    "arguments",
                    "incomplete_details",
                    "reason",
                    "rate_limits",
                    "primary",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=12,
)


def _check_fuzz(chunks: list[bytes]) -> None:
    dec = ResponsesStreamDecoder()
    for chunk in chunks:
        out = dec.feed(chunk)
        assert isinstance(out, list)
    dec.finish()
    assert dec.done
    assert dec.error is None or isinstance(dec.error, KernelError)
    if dec.error is not None:
        assert isinstance(dec.error.message, str)


@given(st.lists(st.binary(max_size=200), max_size=10))
@example([b"data: \xff\n\n"])
@example([b"event: \xff\xfe\ndata: {}\n\n"])
@example([b'data: {"type":"response.output_item.done","item":{"type":"message"}}\n\n'])
def test_random_bytes_never_raise(chunks: list[bytes]) -> None:
    _check_fuzz(chunks)


@given(st.lists(st.tuples(st.sampled_from(KNOWN_EVENTS) | st.text(max_size=10), json_values), max_size=8), st.data())
def test_random_json_payloads_never_raise(pairs: list[tuple[str, Any]], data: st.DataObject) -> None:
    body = b"".join(
        raw_event(name, json.dumps({"type": name, **v} if isinstance(v, dict) and data.draw(st.booleans()) else v))
        for name, v in pairs
        if "\n" not in name and "\r" not in name
    )
    _check_fuzz(split_at(body, data.draw(cut_points(len(body)))))


@given(name=st.sampled_from(ALL_FIXTURES), data=st.data())
def test_mutated_fixtures_never_raise(name: str, data: st.DataObject) -> None:
    raw = bytearray(load(name))
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if op == "flip":
            raw[pos] = data.draw(st.integers(0, 255))
        elif op == "delete":
            del raw[pos : pos + data.draw(st.integers(1, 20))]
        else:
            raw[pos:pos] = data.draw(st.sampled_from([b"\n", b"\n\n", b"\r", b":", b"data: ", b'"', b"{", b"\xf0"]))
        assume(len(raw) > 0)
    _check_fuzz(split_at(bytes(raw), data.draw(cut_points(len(raw)))))


def test_no_secret_shapes_in_module_messages() -> None:
    # sanity: the decoder never formats request data into errors
    _, err, _ = run([raw_event("response.output_text.delta", '{"delta": 1, "authorization": "Bearer sk-abcdefgh"}')])
    assert err is not None and not re.search(r"sk-abcdefgh", err.message)
