"""The Responses API stream decoder (PROTOCOL §2): official fixture streams, any split or framing, event mapping."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from actors.model._responses import (
    STREAM_CLOSED_MESSAGE,
    ResponsesStreamDecoder,
)
from actors.model._sse import SSEDecoder
from kernel.errors import (
    ContextWindowExceeded,
    IncompleteResponse,
    KernelError,
    RateLimited,
    StreamError,
)
from kernel.items import (
    CustomToolCall,
    FunctionCall,
    Message,
    Reasoning,
    UnknownItem,
    item_to_wire,
)
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

from ._responses_helpers import ALL_FIXTURES, COMPLETED, cut_points, load, raw_event, run, split_at, sse


def err_key(err: KernelError | None) -> Any:
    if err is None:
        return None
    return (type(err), err.message, err.retry_after, err.retryable)


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
    assert type(error) is RateLimited and error.retryable  # in-stream as at HTTP 429
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
