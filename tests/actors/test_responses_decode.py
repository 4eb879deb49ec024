"""The Responses API wire layer: stream decoding (PROTOCOL §2/§3) and request bodies.

Fixtures under ``fixtures/*.sse`` are complete streams shaped like the official API's streaming
examples (``event:`` + ``data:`` pairs, ``sequence_number`` on every event, the full response
object on lifecycle events).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, example, given, settings, strategies as st

from actors.model._responses import (
    OUTPUT_SCHEMA_NAME,
    STREAM_CLOSED_MESSAGE,
    ResponsesStreamDecoder,
    responses_request_body,
)
from actors.model._sse import SSEDecoder
from kernel.errors import (
    ContextWindowExceeded,
    IncompleteResponse,
    InvalidRequest,
    KernelError,
    QuotaExceeded,
    StreamError,
    UsageLimitReached,
    UsageNotIncluded,
)
from kernel.items import (
    CustomToolCall,
    FreeformTool,
    FunctionCall,
    FunctionCallOutput,
    FunctionCallOutputPayload,
    FunctionTool,
    Message,
    Reasoning,
    UnknownItem,
    item_from_wire,
    item_to_wire,
    tool_to_wire,
)
from kernel.prompt import Prompt
from kernel.stream import (
    Completed,
    Created,
    OutputItemAdded,
    OutputItemDone,
    OutputTextDelta,
    RateLimitsSnapshot,
    ReasoningContentDelta,
    ReasoningSummaryDelta,
    ReasoningSummaryPartAdded,
    TokenUsage,
    ToolCallInputDelta,
)

FIXTURES = Path(__file__).parent / "fixtures"
ALL_FIXTURES = sorted(p.name for p in FIXTURES.glob("*.sse"))


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def run(chunks: list[bytes], **kw: Any) -> tuple[list[Any], KernelError | None, ResponsesStreamDecoder]:
    """Feed ``chunks`` then EOF; return (events, error, decoder). Fails the test if anything
    but a list comes out of ``feed``."""
    dec = ResponsesStreamDecoder(**kw)
    events: list[Any] = []
    for chunk in chunks:
        out = dec.feed(chunk)
        assert isinstance(out, list)
        events.extend(out)
    dec.finish()
    assert dec.done
    return events, dec.error, dec


def sse(*events: dict[str, Any], name: bool = True) -> bytes:
    parts = []
    for i, e in enumerate(events):
        e = {**e}
        e.setdefault("sequence_number", i)
        head = f"event: {e['type']}\n" if name and "type" in e else ""
        parts.append(f"{head}data: {json.dumps(e)}\n\n")
    return "".join(parts).encode()


def raw_event(event: str | None, data: str) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


def err_key(err: KernelError | None) -> Any:
    if err is None:
        return None
    return (type(err), err.message, err.retry_after, err.retryable)


COMPLETED = {"type": "response.completed", "response": {"id": "resp_x", "status": "completed"}}
MSG_ID = "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b"


# ---------------------------------------------------------------------------------------------
# fixtures: the official streaming shapes
# ---------------------------------------------------------------------------------------------


def test_text_message_fixture() -> None:
    events, error, dec = run([load("text_message.sse")])
    assert error is None
    deltas = ["Hi", " there", "!", " How", " can", " I", " help", " you", " today", "? ", "😀 ünïcode"]
    text = "".join(deltas)
    assert events[0] == Created("resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b")
    assert events[1] == OutputItemAdded(
        Message(role="assistant", content=[], id=MSG_ID, extra={"status": "in_progress"})
    )
    assert events[2:13] == [OutputTextDelta(MSG_ID, d) for d in deltas]
    done = events[13]
    assert isinstance(done, OutputItemDone) and isinstance(done.item, Message)
    assert done.item.text() == text and done.item.id == MSG_ID
    assert events[14] == Completed(
        "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
        TokenUsage(37, 0, 11, 0, 48),
        None,
    )
    assert len(events) == 15
    assert dec.response_id == "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b"


def test_function_call_fixture() -> None:
    events, error, _ = run([load("function_call.sse")])
    assert error is None
    fc = "fc_67ca09c6bedc8190a7abfec07b1a1332096610f474011cc0"
    args = [e for e in events if isinstance(e, ToolCallInputDelta)]
    assert [a.item_id for a in args] == [fc] * 7
    assert "".join(a.delta for a in args) == '{"location":"Paris, France"}'
    added, done = events[1], events[-2]
    assert isinstance(added.item, FunctionCall) and added.item.arguments == ""
    assert isinstance(done, OutputItemDone)
    assert done.item == FunctionCall(
        call_id="call_unLAR8MvFNptuiZK6K6HCy5k",
        name="get_current_weather",
        arguments='{"location":"Paris, France"}',
        id=fc,
        extra={"status": "completed"},
    )
    assert events[-1] == Completed("resp_fc1", TokenUsage(291, 256, 23, 0, 314), None)


def test_reasoning_fixture() -> None:
    events, error, _ = run([load("reasoning.sse")])
    assert error is None
    rs = "rs_6876cf02e0bc8192b74af0fb64b715ff06fa2fcced15a5ac"
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "Created",
        "OutputItemAdded",
        "ReasoningContentDelta",
        "ReasoningContentDelta",
        "ReasoningSummaryPartAdded",
        *["ReasoningSummaryDelta"] * 4,
        "ReasoningSummaryPartAdded",
        *["ReasoningSummaryDelta"] * 2,
        "OutputItemDone",
        "OutputItemAdded",
        "TextDelta",  # kernel.stream.OutputTextDelta is kernel.TextDelta
        "OutputItemDone",
        "Completed",
    ]
    assert events[2] == ReasoningContentDelta(rs, "The user asks", 0)
    assert events[4] == ReasoningSummaryPartAdded(rs, 0)
    assert events[5] == ReasoningSummaryDelta(rs, "**Planning", 0)
    assert events[9] == ReasoningSummaryPartAdded(rs, 1)
    assert events[10] == ReasoningSummaryDelta(rs, "**Checking**\n\n", 1)
    item = events[12].item
    assert isinstance(item, Reasoning)
    assert item.encrypted_content == "gAAAAABodsjEfPLS-encrypted-blob=="
    assert [s["text"] for s in item.summary] == [
        "**Planning the answer**\n\nI need to add the numbers.",
        "**Checking**\n\n2 + 2 = 4.",
    ]
    assert events[-1] == Completed("resp_rs1", TokenUsage(1200, 1024, 300, 128, 1500), None)


def test_custom_tool_call_fixture() -> None:
    events, error, _ = run([load("custom_tool_call.sse")])
    assert error is None
    assert events[0] == RateLimitsSnapshot(7.0, 300.0, 13168.0, 29.0, 10080.0, 434962.0)
    patch = "".join(e.delta for e in events if isinstance(e, ToolCallInputDelta))
    assert patch == "*** Begin Patch\n*** Add File: hello.txt\n+Hello, world!\n*** End Patch"
    done = events[-2]
    assert isinstance(done.item, CustomToolCall)
    assert done.item.input == patch and done.item.name == "apply_patch"
    assert events[-1] == Completed("resp_ct1", TokenUsage(500, 0, 40, 0, 540), False)


def test_failed_rate_limit_fixture_keeps_earlier_events_and_requested_delay() -> None:
    events, error, _ = run([load("failed_rate_limit.sse")])
    assert [type(e) for e in events] == [Created, OutputItemAdded, OutputTextDelta]
    assert events[2] == OutputTextDelta(MSG_ID, "Partial")
    assert type(error) is StreamError and error.retryable
    assert error.retry_after == pytest.approx(1.898)
    assert "Rate limit reached" in error.message


def test_failed_context_length_fixture() -> None:
    events, error, _ = run([load("failed_context_length.sse")])
    assert events == [Created("resp_f2")]
    assert isinstance(error, ContextWindowExceeded) and not error.retryable


def test_incomplete_fixture() -> None:
    events, error, _ = run([load("incomplete.sse")])
    assert events[-1] == OutputTextDelta(MSG_ID, "Once upon")
    assert isinstance(error, IncompleteResponse) and not error.retryable
    assert error.reason == "max_output_tokens"


def test_error_event_fixture() -> None:
    events, error, _ = run([load("error_event.sse")])
    assert events == []
    assert type(error) is StreamError and error.retryable
    assert error.retry_after == 20.0


def test_truncated_fixture_is_a_retryable_stream_error() -> None:
    events, error, _ = run([load("truncated.sse")])
    assert len([e for e in events if isinstance(e, OutputTextDelta)]) == 11
    assert type(error) is StreamError and error.retryable
    assert error.message.startswith(STREAM_CLOSED_MESSAGE)


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_every_fixture_is_well_formed_sse(name: str) -> None:
    """Each fixture event carries ``type`` equal to its event name and a sequence number."""
    pairs = SSEDecoder().feed(load(name))
    assert pairs
    for i, (event, data) in enumerate(pairs):
        obj = json.loads(data)
        assert obj["type"] == event
        assert obj["sequence_number"] == i


# ---------------------------------------------------------------------------------------------
# any split, any framing → the same events
# ---------------------------------------------------------------------------------------------


def _canonical(name: str) -> tuple[list[Any], Any]:
    events, error, _ = run([load(name)])
    return events, err_key(error)


@st.composite
def cut_points(draw: st.DrawFn, size: int) -> list[int]:
    cuts = draw(st.lists(st.integers(0, size), max_size=40))
    if draw(st.booleans()):  # sometimes: many tiny reads
        step = draw(st.integers(1, 7))
        cuts += list(range(0, size, step))
    return sorted(set(cuts))


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


@given(name=st.sampled_from(ALL_FIXTURES), data=st.data())
def test_any_split_gives_the_same_events(name: str, data: st.DataObject) -> None:
    raw = load(name)
    cuts = data.draw(cut_points(len(raw)))
    expected = _canonical(name)
    events, error, _ = run(split_at(raw, cuts))
    assert (events, err_key(error)) == expected


@st.composite
def reframed(draw: st.DrawFn, raw: bytes) -> bytes:
    """Re-emit a stream's events with other legal SSE framing: ``\\r\\n`` / ``\\r`` line ends,
    comment lines, no ``event:`` line, ``data:`` without the space, multi-line ``data:``,
    ``id:`` / ``retry:`` fields, extra blank lines."""
    eol = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    out: list[str] = []
    if draw(st.booleans()):
        out.append(f": connected{eol}{eol}")
    for event, data in SSEDecoder().feed(raw):
        lines: list[str] = []
        if draw(st.booleans()):
            lines.append(": keep-alive")
        if draw(st.integers(0, 3)) > 0:
            lines.append(f"event:{' ' if draw(st.booleans()) else ''}{event}")
        if draw(st.booleans()):
            lines.append(f"id: {draw(st.integers(0, 999))}")
        text = data.decode()
        if draw(st.booleans()):
            # multi-line data: the same JSON pretty-printed, one data: line per line
            text = json.dumps(
                json.loads(text), indent=draw(st.sampled_from([None, 1, 2])), ensure_ascii=draw(st.booleans())
            )
        for line in text.split("\n"):
            sep = "data: " if draw(st.integers(0, 3)) > 0 else "data:"
            if sep == "data:" and line.startswith(" "):
                sep = "data: "  # a single leading space after the colon is eaten by SSE
            lines.append(sep + line)
            if draw(st.integers(0, 9)) == 0:
                lines.append(":comment in the middle")
        out.append(eol.join(lines) + eol + eol * draw(st.integers(1, 2)))
    return "".join(out).encode()


@settings(max_examples=150)
@given(name=st.sampled_from(ALL_FIXTURES), data=st.data())
def test_any_framing_and_split_gives_the_same_events(name: str, data: st.DataObject) -> None:
    framed = data.draw(reframed(load(name)))
    cuts = data.draw(cut_points(len(framed)))
    events, error, _ = run(split_at(framed, cuts))
    assert (events, err_key(error)) == _canonical(name)


def test_lone_cr_at_eof_completes_the_last_event() -> None:
    events, error, _ = run([b'data: {"type":"response.completed","response":{"id":"r"}}\r\r'])
    assert error is None and events == [Completed("r", None, None)]


@given(
    st.lists(st.sampled_from(["Hi", " ", "ü", "😀", "\n", '"', "\\", "\r\n", "data: x\n\n"]), max_size=30), st.data()
)
def test_text_deltas_survive_any_split(deltas: list[str], data: st.DataObject) -> None:
    stream = sse(
        {"type": "response.created", "response": {"id": "r"}},
        *({"type": "response.output_text.delta", "item_id": "m", "delta": d} for d in deltas),
        COMPLETED,
    )
    cuts = data.draw(cut_points(len(stream)))
    events, error, _ = run(split_at(stream, cuts))
    assert error is None
    assert [e.delta for e in events if isinstance(e, OutputTextDelta)] == deltas


# ---------------------------------------------------------------------------------------------
# event mapping details
# ---------------------------------------------------------------------------------------------


def test_data_only_events_use_the_json_type() -> None:
    events, error, _ = run(
        [sse({"type": "response.output_text.delta", "item_id": "m", "delta": "a"}, COMPLETED, name=False)]
    )
    assert error is None
    assert events == [OutputTextDelta("m", "a"), Completed("resp_x", None, None)]


def test_event_name_is_used_when_the_json_has_no_type() -> None:
    events, error, _ = run(
        [
            raw_event("response.output_text.delta", '{"item_id":"m","delta":"a"}'),
            raw_event("response.completed", '{"response":{"id":"r"}}'),
        ]
    )
    assert error is None
    assert events == [OutputTextDelta("m", "a"), Completed("r", None, None)]


def test_json_type_wins_over_the_event_name() -> None:
    events, _, _ = run([raw_event("something.else", '{"type":"response.output_text.delta","delta":"a"}')])
    assert events == [OutputTextDelta("", "a")]


def test_missing_item_id_and_indices_are_tolerated() -> None:
    events, error, _ = run(
        [
            sse(
                {"type": "response.output_text.delta", "delta": "a"},
                {"type": "response.function_call_arguments.delta", "delta": "{"},
                {"type": "response.reasoning_summary_text.delta", "delta": "s"},
                {"type": "response.reasoning_text.delta", "delta": "r"},
                {"type": "response.reasoning_summary_part.added"},
                COMPLETED,
            )
        ]
    )
    assert error is None
    assert events[:5] == [
        OutputTextDelta("", "a"),
        ToolCallInputDelta("", "{"),
        ReasoningSummaryDelta("", "s", 0),
        ReasoningContentDelta("", "r", 0),
        ReasoningSummaryPartAdded("", 0),
    ]


def test_ignored_events() -> None:
    stream = sse(
        {"type": "response.in_progress", "response": {"id": "r"}},
        {"type": "response.content_part.added", "item_id": "m", "part": {"type": "output_text"}},
        {"type": "response.output_text.done", "item_id": "m", "text": "full"},
        {"type": "response.content_part.done", "item_id": "m", "part": {}},
        {"type": "response.refusal.delta", "item_id": "m", "delta": "no"},
        {"type": "response.function_call_arguments.done", "arguments": "{}"},
        {"type": "response.reasoning_summary_text.done", "text": "x"},
        {"type": "response.queued"},
        # unknown events of any shape are ignored, even with fields of unexpected types
        {"type": "response.audio.delta", "delta": {"bytes": [1, 2]}, "item_id": 7},
        {"type": "response.future_thing", "item": "not an object", "response": 3},
        {"type": "codex.response.metadata", "headers": {"x": "y"}},
        COMPLETED,
    )
    events, error, _ = run([stream])
    assert error is None
    assert events == [Completed("resp_x", None, None)]


def test_unknown_event_with_non_object_data_is_ignored() -> None:
    events, error, _ = run([raw_event("ping", "[1, 2]"), raw_event(None, '"hello"'), sse(COMPLETED)])
    assert error is None and events == [Completed("resp_x", None, None)]


def test_partial_added_item_that_does_not_validate_is_kept_whole() -> None:
    partial = {"type": "reasoning", "id": "rs_1"}  # no summary yet
    events, error, _ = run([sse({"type": "response.output_item.added", "item": partial}, COMPLETED)])
    assert error is None
    assert events[0] == OutputItemAdded(UnknownItem(partial))


def test_unknown_item_types_are_kept_losslessly() -> None:
    item = {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"query": "q"}}
    events, error, _ = run([sse({"type": "response.output_item.done", "item": item}, COMPLETED)])
    assert error is None
    assert events[0] == OutputItemDone(UnknownItem(item))
    assert item_to_wire(events[0].item) == item


def test_completed_details() -> None:
    events, error, dec = run(
        [
            sse(
                {"type": "response.created", "response": {"id": "resp_a"}},
                {
                    "type": "response.completed",
                    "response": {
                        "id": "resp_a",
                        "end_turn": True,
                        "usage": {
                            "input_tokens": 10,
                            "input_tokens_details": None,
                            "output_tokens": 5,
                            "output_tokens_details": None,
                            "total_tokens": 15,
                        },
                    },
                },
            )
        ]
    )
    assert error is None
    assert events[-1] == Completed("resp_a", TokenUsage(10, 0, 5, 0, 15), True)
    assert dec.response_id == "resp_a"


def test_created_without_response_is_tolerated() -> None:
    events, error, _ = run([sse({"type": "response.created"}, COMPLETED)])
    assert error is None and events[0] == Created(None)


def test_input_after_completed_is_ignored() -> None:
    dec = ResponsesStreamDecoder()
    out = dec.feed(sse(COMPLETED, {"type": "response.output_text.delta", "delta": "late"}))
    assert out == [Completed("resp_x", None, None)]
    assert dec.done and dec.error is None
    assert dec.feed(b"data: not json\n\n") == []
    dec.finish()
    assert dec.error is None


def test_input_after_an_error_is_ignored() -> None:
    dec = ResponsesStreamDecoder()
    out = dec.feed(
        sse({"type": "response.output_text.delta", "delta": "a"})
        + b"data: {oops\n\n"
        + sse({"type": "response.output_text.delta", "delta": "b"})
    )
    assert out == [OutputTextDelta("", "a")]
    first = dec.error
    assert type(first) is StreamError
    assert dec.feed(sse(COMPLETED)) == []
    dec.finish()
    assert dec.error is first


def test_finish_is_idempotent_and_eof_without_terminal_is_a_stream_error() -> None:
    dec = ResponsesStreamDecoder()
    assert dec.feed(sse({"type": "response.output_text.delta", "delta": "a"})) == [OutputTextDelta("", "a")]
    assert not dec.done
    dec.finish()
    err = dec.error
    assert type(err) is StreamError and err.message == STREAM_CLOSED_MESSAGE and err.retryable
    dec.finish()
    assert dec.error is err


def test_eof_mid_event_is_a_stream_error() -> None:
    events, error, _ = run([b'event: response.completed\ndata: {"type":"response.completed","resp'])
    assert events == []
    assert type(error) is StreamError and error.message.startswith(STREAM_CLOSED_MESSAGE)


def test_empty_stream_is_a_stream_error() -> None:
    events, error, _ = run([])
    assert events == [] and type(error) is StreamError


def test_sse_event_over_the_size_limit_is_a_stream_error() -> None:
    big = sse({"type": "response.output_text.delta", "delta": "x" * 5000})
    events, error, _ = run([big[:3000], big[3000:]], max_event_bytes=1024)
    assert events == []
    assert type(error) is StreamError and "too large" in error.message


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
        StreamError,
        True,
        1.898,
    ),
    ({"code": "rate_limit_exceeded", "message": "Rate limit reached, try again in 28ms"}, StreamError, True, 0.028),
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
            '{"type":"response.output_item.done","item":{"type":"message","role":"assistant","content":"x"}}',
        ),
        "invalid item",
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


# ---------------------------------------------------------------------------------------------
# request body (PROTOCOL §2)
# ---------------------------------------------------------------------------------------------


def _prompt(**kw: Any) -> Prompt:
    tools = (
        FunctionTool(
            name="shell",
            description="Run a command",
            parameters={"type": "object", "properties": {"cmd": {"type": "string"}}},
        ),
        FreeformTool(name="apply_patch", description="Apply a patch"),
    )
    items = (
        Message.user("hello"),
        FunctionCall(call_id="c1", name="shell", arguments='{"cmd":"ls"}'),
        FunctionCallOutput("c1", FunctionCallOutputPayload.from_text("a\nb", success=True)),
    )
    return Prompt(input=items, tools=tools, parallel_tool_calls=True, base_instructions="Be brief.", **kw)


def test_request_body_minimal() -> None:
    prompt = _prompt()
    body = responses_request_body(prompt, model="gpt-5-codex")
    assert body == {
        "model": "gpt-5-codex",
        "instructions": "Be brief.",
        "input": [item_to_wire(i) for i in prompt.formatted_input()],
        "tools": [tool_to_wire(t) for t in prompt.tools],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "store": False,
        "stream": True,
        "include": [],
    }
    assert "reasoning" not in body and "text" not in body and "prompt_cache_key" not in body
    assert body["input"][2] == {"type": "function_call_output", "call_id": "c1", "output": "a\nb"}
    json.dumps(body)  # serialisable


def test_request_body_with_reasoning_schema_verbosity_and_cache_key() -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    prompt = _prompt(output_schema=schema, output_schema_strict=False)
    body = responses_request_body(
        prompt, model="m", reasoning_effort="high", prompt_cache_key="conv-1", verbosity="low"
    )
    assert body["reasoning"] == {"effort": "high", "summary": "auto"}
    assert body["include"] == ["reasoning.encrypted_content"]
    assert body["text"] == {
        "verbosity": "low",
        "format": {"type": "json_schema", "name": OUTPUT_SCHEMA_NAME, "schema": schema, "strict": False},
    }
    assert body["prompt_cache_key"] == "conv-1"
    assert OUTPUT_SCHEMA_NAME == "codex_output_schema"


def test_request_body_reasoning_without_summary() -> None:
    body = responses_request_body(_prompt(), model="m", reasoning_effort="low", reasoning_summary=None)
    assert body["reasoning"] == {"effort": "low"}


def test_request_body_uses_formatted_input() -> None:
    """With a freeform apply_patch tool, shell outputs are re-serialised (Prompt.formatted_input)."""
    out = json.dumps({"output": "hi\n", "metadata": {"exit_code": 0, "duration_seconds": 0.5}})
    prompt = Prompt(
        input=(
            FunctionCall(call_id="c1", name="shell", arguments="{}"),
            FunctionCallOutput("c1", FunctionCallOutputPayload.from_text(out)),
        ),
        tools=(FreeformTool(name="apply_patch"),),
    )
    body = responses_request_body(prompt, model="m")
    assert body["input"][1]["output"] == "Exit code: 0\nWall time: 0.5 seconds\nOutput:\nhi\n"


def test_request_body_round_trips_items() -> None:
    prompt = _prompt()
    body = responses_request_body(prompt, model="m")
    assert [item_from_wire(i) for i in json.loads(json.dumps(body["input"]))] == [
        item_from_wire(item_to_wire(i)) for i in prompt.formatted_input()
    ]


def test_no_secret_shapes_in_module_messages() -> None:
    # sanity: the decoder never formats request data into errors
    _, err, _ = run([raw_event("response.output_text.delta", '{"delta": 1, "authorization": "Bearer sk-abcdefgh"}')])
    assert err is not None and not re.search(r"sk-abcdefgh", err.message)


def test_fast_constructed_delta_events_are_ordinary_frozen_events() -> None:
    """The hot path builds delta events without attrs' __init__; they must be indistinguishable."""
    import attrs

    from actors.model import _responses

    assert _responses._FAST_CONSTRUCTION
    events, error, _ = run(
        [
            sse(
                {"type": "response.output_text.delta", "item_id": "m", "delta": "a"},
                {"type": "response.function_call_arguments.delta", "item_id": "f", "delta": "{"},
                {"type": "response.custom_tool_call_input.delta", "item_id": "c", "delta": "*"},
                {"type": "response.reasoning_summary_text.delta", "item_id": "r", "delta": "s", "summary_index": 2},
                {"type": "response.reasoning_text.delta", "item_id": "r", "delta": "t", "content_index": 1},
                COMPLETED,
            )
        ]
    )
    assert error is None
    expected = [
        OutputTextDelta("m", "a"),
        ToolCallInputDelta("f", "{"),
        ToolCallInputDelta("c", "*"),
        ReasoningSummaryDelta("r", "s", 2),
        ReasoningContentDelta("r", "t", 1),
    ]
    for got, want in zip(events, expected):
        assert type(got) is type(want)
        assert got == want and hash(got) == hash(want) and repr(got) == repr(want)
        assert attrs.asdict(got) == attrs.asdict(want)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            got.delta = "changed"  # type: ignore[misc]


def test_slot_setters_refuse_unexpected_classes() -> None:
    import attrs

    from actors.model._responses import _slot_setters

    @attrs.frozen
    class Validated:
        a: str = attrs.field(validator=attrs.validators.instance_of(str))
        b: str = ""

    @attrs.frozen
    class Plain:
        a: str
        b: str

    assert _slot_setters(Validated, ("a", "b")) is None
    assert _slot_setters(Plain, ("b", "a")) is None
    assert _slot_setters(dict, ("a", "b")) is None
    assert _slot_setters(Plain, ("a", "b")) is not None
