"""The end of a Chat Completions stream: a last SSE event whose terminating blank line never came
is decoded when it is complete (its data is whole JSON, or ``[DONE]``), as on the Responses wire;
one cut mid-way is still discarded and reported ("cut mid-event")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from actors.model._chat import ChatStreamDecoder
from kernel.errors import IncompleteResponse, RateLimited, StreamError
from kernel.items import Message
from kernel.stream import Completed, Created, ModelEvent, OutputItemDone, OutputTextDelta, TokenUsage

from ._replay_helpers import feed_in_pieces

CHAT_REPLAY = Path(__file__).resolve().parent.parent / "data" / "replay" / "chat"


def sse(*chunks: Any) -> bytes:
    return b"".join(f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n".encode() for c in chunks)


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **top: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}]}
    out.update(top)
    return out


USAGE = {"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
TOKENS = TokenUsage(input_tokens=10, output_tokens=5, total_tokens=15)
USAGE_TAIL = f"data: {json.dumps(USAGE)}".encode()
HI = Message(role="assistant", content=({"type": "output_text", "text": "hi"},), id="msg_chatcmpl-1")


def unterminated(body: bytes, ending: bytes = b"") -> bytes:
    """``body`` with its last event's blank line taken off (``ending`` put in its place); CR or
    CRLF line ends throughout when ``ending`` uses them."""
    body = body.rstrip(b"\n") + b"\n"
    if ending.startswith(b"\r"):
        body = body.replace(b"\n", b"\r\n" if ending == b"\r\n" else b"\r")
    return body[: -len(b"\r\n" if body.endswith(b"\r\n") else b"\n")] + ending


def decode(body: bytes, cuts: list[int] | None = None) -> tuple[list[ModelEvent], ChatStreamDecoder]:
    d = ChatStreamDecoder()
    return feed_in_pieces(d, body, cuts), d


def items(events: list[ModelEvent]) -> list[Any]:
    return [e.item for e in events if isinstance(e, OutputItemDone)]


# --- a complete last event is kept ------------------------------------------------------------


@pytest.mark.parametrize("ending", [b"", b"\n", b"\r\n", b"\r"])
def test_a_final_usage_chunk_without_its_blank_line_is_read(ending: bytes) -> None:
    events, d = decode(unterminated(sse(chunk({"content": "hi"}), chunk(finish="stop"), USAGE), ending))
    assert d.error is None and d.done
    assert items(events) == [HI]
    assert events[-1] == Completed("chatcmpl-1", TOKENS)  # the usage of the last chunk, not None


@pytest.mark.parametrize("ending", [b"", b"\n", b"\r\n"])
def test_a_final_finish_reason_chunk_without_its_blank_line_completes(ending: bytes) -> None:
    # before: "closed before [DONE] or a finish_reason (cut mid-event)", the answer lost
    events, d = decode(unterminated(sse(chunk({"content": "hi"}), chunk(finish="stop", usage=USAGE["usage"])), ending))
    assert d.error is None and d.done and d.finish_reason == "stop"
    assert items(events) == [HI] and events[-1] == Completed("chatcmpl-1", TOKENS)


def test_a_single_complete_chunk_at_eof_is_the_whole_answer() -> None:
    events, d = decode(b'data: {"id":"c","choices":[{"delta":{"content":"hi"},"finish_reason":"stop"}]}')
    assert d.error is None and d.done
    assert isinstance(events[0], Created) and items(events) == [
        Message(role="assistant", content=({"type": "output_text", "text": "hi"},), id="msg_c")
    ]
    assert [e.delta for e in events if isinstance(e, OutputTextDelta)] == ["hi"]
    assert isinstance(events[-1], Completed) and events[-1].response_id == "c"


@pytest.mark.parametrize("ending", [b"", b"\n", b"\r\n"])
def test_a_final_done_without_its_blank_line_completes(ending: bytes) -> None:
    # no finish_reason at all: [DONE] flushes the items, as when it comes whole
    body = unterminated(sse(chunk({"content": "hi"}), USAGE, "[DONE]"), ending)
    events, d = decode(body)
    assert d.error is None and d.done
    assert items(events) == [HI] and events[-1] == Completed("chatcmpl-1", TOKENS)
    assert (events, d.done) == (decode(sse(chunk({"content": "hi"}), USAGE, "[DONE]"))[0], True)


def test_a_last_event_with_multi_line_data_is_kept() -> None:
    body = json.dumps(chunk({"content": "hi"}, "stop"), indent=1).encode()
    tail = b"".join(b"data: " + line + b"\n" for line in body.split(b"\n"))
    events, d = decode(sse(chunk({"role": "assistant"})) + tail)
    assert d.error is None and d.done and items(events) == [HI]


def test_the_usage_chunk_after_length_is_read_and_the_response_is_still_incomplete() -> None:
    events, d = decode(unterminated(sse(chunk({"content": "hi"}, "length"), USAGE)))
    assert isinstance(d.error, IncompleteResponse) and d.error.reason == "max_output_tokens"
    assert d.usage == TOKENS and not d.done
    assert items(events) == [HI]  # the text so far is kept


def test_a_complete_last_chunk_carrying_an_error_is_that_error() -> None:
    error = {"error": {"message": "slow down", "type": "rate_limit_error", "code": "rate_limit_exceeded"}}
    events, d = decode(unterminated(sse(chunk({"content": "hi"}), error)))
    assert isinstance(d.error, RateLimited) and not d.done
    assert not any(isinstance(e, Completed) for e in events)


def test_a_complete_last_error_event_is_that_error() -> None:
    body = sse(chunk({"content": "hi"})) + b'event: error\ndata: {"error": {"message": "slow down", "code": 429}}'
    _, d = decode(body)
    assert d.error is not None and "slow down" in d.error.message and not d.done


def test_a_complete_last_chunk_of_the_wrong_shape_is_the_usual_error() -> None:
    _, d = decode(sse(chunk({"content": "hi"})) + b'data: {"choices": "nope"}')
    assert isinstance(d.error, StreamError) and "has the wrong shape" in d.error.message
    assert "cut mid-event" not in d.error.message


# --- an incomplete last event is still discarded ------------------------------------------------


@pytest.mark.parametrize(
    "tail",
    [
        b'data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":{},"finish_reason":"st',  # cut mid-JSON
        b'data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]',  # one brace short
        b"data: [DON",
        b"data:",
        b"data",
    ],
)
def test_a_chunk_cut_mid_way_is_the_usual_error(tail: bytes) -> None:
    events, d = decode(sse(chunk({"content": "hi"})) + tail)
    assert isinstance(d.error, StreamError) and d.error.retryable and not d.done
    assert d.error.message.startswith("Chat Completions stream closed before [DONE] or a finish_reason")
    assert d.error.message.endswith("(cut mid-event)")
    assert [e.delta for e in events if isinstance(e, OutputTextDelta)] == ["hi"] and items(events) == []


def test_a_comment_left_at_eof_is_not_an_event() -> None:
    events, d = decode(sse(chunk({"content": "hi"})) + b": keep-alive")
    assert isinstance(d.error, StreamError) and "cut mid-event" not in d.error.message
    events, d = decode(sse(chunk({"content": "hi"}, "stop")) + b": keep-alive")
    assert d.error is None and d.done and items(events) == [HI]


def test_a_usage_chunk_cut_mid_way_after_finish_reason_completes_without_it() -> None:
    # the tolerated quirk (EOF after a finish_reason, no [DONE]) is unchanged: the cut chunk is
    # dropped, the answer is complete
    events, d = decode(sse(chunk({"content": "hi"}, "stop")) + b'data: {"choices":[],"usage":{"prompt_tok')
    assert d.error is None and d.done and d.usage is None
    assert items(events) == [HI] and events[-1] == Completed("chatcmpl-1", None)


def test_finish_after_the_end_returns_nothing_and_resets_the_framing() -> None:
    d = ChatStreamDecoder()
    d.feed(sse(chunk({"content": "hi"}, "stop"), "[DONE]") + b'data: {"choices": []}')
    assert d.done and d.finish() == [] and d.finish() == []
    d = ChatStreamDecoder()
    d.feed(b'data: {"choices": [1]}\n\n' + USAGE_TAIL)
    assert d.error is not None and d.finish() == [] and d.usage is None  # nothing after a failure


# --- any split, and the real recordings ----------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_split_gives_the_same_events(data: st.DataObject) -> None:
    body = unterminated(sse(chunk({"content": "hi"}), chunk({"content": " there"}, "stop"), USAGE))
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=30))
    whole, d = decode(body)
    assert d.done and whole[-1] == Completed("chatcmpl-1", TOKENS)
    split, d = decode(body, cuts)
    assert split == whole and d.done


RECORDINGS = sorted(p.name for p in CHAT_REPLAY.glob("*.sse"))


@pytest.mark.parametrize("name", RECORDINGS)
def test_a_recording_without_its_last_blank_line_decodes_the_same(name: str) -> None:
    body = (CHAT_REPLAY / name).read_bytes()
    whole, d = decode(body)
    cut, e = decode(body.rstrip(b"\r\n"))
    assert cut == whole
    assert (e.done, e.usage, e.finish_reason, type(e.error)) == (d.done, d.usage, d.finish_reason, type(d.error))
