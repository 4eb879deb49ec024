"""Protocol fidelity of the Responses wire layer: items only ``response.completed`` carries, a last
SSE event without its blank line, SDK-optional item fields in a stream, refusals, item references.

Codec-level tests feed :class:`ResponsesStreamDecoder` directly; the end-to-end ones run a session
against the scripted server on 127.0.0.1, over HTTP+SSE (and WebSocket, where the case is not
about SSE framing).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio.testing

from actors import ModelSettings, open_model_actor, open_session
from actors.model._responses import STREAM_CLOSED_MESSAGE, ResponsesStreamDecoder, responses_request_body
from actors.model._sse import SSEDecoder
from actors.scripted import Malformed, RawItem, Reply, Script, Text, _server as scripted_server, open_scripted_server
from actors.scripted._render import Rendered
from kernel import StreamError
from kernel.items import FunctionCallOutput, Message, UnknownItem, item_from_wire, item_to_wire
from kernel.prompt import Prompt
from kernel.stream import Completed, OutputItemDone, OutputTextDelta

from ._responses_helpers import sse


def feed_all(chunks: list[bytes]) -> tuple[list[Any], Any, ResponsesStreamDecoder]:
    """Feed ``chunks`` then EOF, keeping what ``finish()`` returns."""
    dec = ResponsesStreamDecoder()
    events: list[Any] = []
    for chunk in chunks:
        events += dec.feed(chunk)
    events += dec.finish()
    assert dec.done
    return events, dec.error, dec


def message(id: str | None, text: str) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}
    if id is not None:
        item = {"id": id, **item}
    return item


def done(item: dict[str, Any], index: int | None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "response.output_item.done", "item": item}
    if index is not None:
        event["output_index"] = index
    return event


def completed(*output: Any) -> dict[str, Any]:
    return {"type": "response.completed", "response": {"id": "resp_1", "status": "completed", "output": list(output)}}


def done_items(events: list[Any]) -> list[dict[str, Any]]:
    return [item_to_wire(e.item) for e in events if isinstance(e, OutputItemDone)]


# ---------------------------------------------------------------------------------------------
# backfill: items only response.completed carries
# ---------------------------------------------------------------------------------------------


def test_items_only_in_completed_output_are_backfilled_in_order_before_completed() -> None:
    streamed = message("msg_1", "streamed")
    late_call = {"type": "function_call", "id": "fc_2", "call_id": "call_2", "name": "shell", "arguments": "{}"}
    late_search = {"type": "web_search_call", "id": "ws_3", "status": "completed"}
    events, error, _ = feed_all(
        [sse(done(streamed, 0), completed(streamed, late_call, late_search, message("msg_4", "tail")))]
    )
    assert error is None
    assert [type(e) for e in events] == [OutputItemDone] * 4 + [Completed]
    assert done_items(events) == [streamed, late_call, late_search, message("msg_4", "tail")]
    assert isinstance(events[2].item, UnknownItem)


def test_backfill_matches_by_id_whatever_the_position() -> None:
    a, b = message("msg_a", "a"), message("msg_b", "b")
    # delivered in the reverse order of the output, with shifted indices: nothing is repeated
    events, error, _ = feed_all([sse(done(b, 5), done(a, 7), completed(a, b))])
    assert error is None and done_items(events) == [b, a]


def test_backfill_matches_by_position_when_ids_are_absent() -> None:
    first, second = message(None, "one"), message(None, "two")
    # the done item had no id, the summary's has one: the same place, the same item
    with_id = message("msg_1", "one")
    events, error, _ = feed_all([sse(done(first, 0), completed(with_id, second))])
    assert error is None and done_items(events) == [first, second]
    # no output_index on the done events: their rank stands for it
    events, error, _ = feed_all([sse(done(first, None), completed(first, second))])
    assert error is None and done_items(events) == [first, second]
    # an id on the done side only: the summary's id-less item at that place is the same item
    events, error, _ = feed_all([sse(done(with_id, 0), completed(first, second))])
    assert error is None and done_items(events) == [with_id, second]


def test_backfill_keeps_every_kind_of_item_and_skips_what_cannot_be_used() -> None:
    no_call_id = {"type": "function_call_output", "output": "ran elsewhere"}
    broken = {"type": "function_call", "name": "f", "arguments": "{}"}  # no call_id: not a usable call
    deep: Any = {"type": "web_search_call", "id": "deep", "x": []}
    node = deep["x"]
    for _ in range(200):
        node.append([])
        node = node[0]
    events, error, _ = feed_all([sse(completed("junk", no_call_id, broken, deep, message("m", "kept")))])
    assert error is None
    assert done_items(events) == [no_call_id, message("m", "kept")]
    assert isinstance(events[0].item, FunctionCallOutput) and events[0].item.call_id == ""


@pytest.mark.parametrize(
    "response",
    [
        {"id": "resp_1", "status": "completed"},
        {"id": "resp_1", "status": "completed", "output": None},
        {"id": "resp_1", "status": "completed", "output": {"not": "a list"}},
        {"id": "resp_1", "status": "completed", "output": []},
    ],
)
def test_completed_without_usable_output_backfills_nothing(response: dict[str, Any]) -> None:
    events, error, _ = feed_all([sse({"type": "response.completed", "response": response})])
    assert error is None and [type(e) for e in events] == [Completed]


def test_a_done_item_is_not_backfilled_again_in_any_split() -> None:
    stream = sse(done(message("msg_1", "x"), 0), completed(message("msg_1", "x")))
    for cut in range(1, len(stream)):
        events, error, _ = feed_all([stream[:cut], stream[cut:]])
        assert error is None and [type(e) for e in events] == [OutputItemDone, Completed]


# ---------------------------------------------------------------------------------------------
# a last event without its blank line
# ---------------------------------------------------------------------------------------------

DELTA = {"type": "response.output_text.delta", "item_id": "msg_1", "delta": "hi"}


@pytest.mark.parametrize("ending", [b"\n", b"", b"\r\n", b"\r"])
def test_a_complete_last_event_without_its_blank_line_is_kept(ending: bytes) -> None:
    stream = sse(DELTA, completed(message("msg_1", "hi"))).rstrip(b"\n") + ending
    if ending.startswith(b"\r"):
        stream = stream.replace(b"\n", b"\r\n" if ending == b"\r\n" else b"\r")
    events, error, dec = feed_all([stream])
    assert error is None and dec.response_id == "resp_1"
    assert [type(e) for e in events] == [OutputTextDelta, OutputItemDone, Completed]  # backfilled too


def test_a_last_event_with_multi_line_data_is_kept() -> None:
    body = json.dumps(completed(), indent=1).encode()  # JSON with line breaks: one data line each
    stream = (
        sse(DELTA) + b"event: response.completed\n" + b"".join(b"data: " + line + b"\n" for line in body.split(b"\n"))
    )
    events, error, _ = feed_all([stream])
    assert error is None and [type(e) for e in events] == [OutputTextDelta, Completed]


def test_a_kept_last_event_that_is_not_terminal_still_ends_in_a_stream_error() -> None:
    events, error, _ = feed_all([sse(DELTA) + sse(DELTA).rstrip(b"\n")])
    assert events == [OutputTextDelta("msg_1", "hi")] * 2  # nothing complete is lost
    assert type(error) is StreamError and error.message == STREAM_CLOSED_MESSAGE


@pytest.mark.parametrize(
    "tail",
    [
        b'event: response.completed\ndata: {"type":"response.completed","response":{"id":"r"',  # cut mid-JSON
        b"event: response.completed\n",  # no data yet
        b": keep-alive",  # a comment
        b"data: {not json}",
    ],
)
def test_an_incomplete_last_event_is_still_discarded(tail: bytes) -> None:
    events, error, _ = feed_all([sse(DELTA) + tail])
    assert events == [OutputTextDelta("msg_1", "hi")]
    assert type(error) is StreamError and error.message == STREAM_CLOSED_MESSAGE


def test_a_malformed_but_complete_last_event_is_the_usual_stream_error() -> None:
    events, error, _ = feed_all([sse(DELTA) + b'event: response.completed\ndata: {"type":"response.completed"}'])
    assert events == [OutputTextDelta("msg_1", "hi")]
    assert type(error) is StreamError and "required field 'response' is missing" in error.message


def test_finish_after_completion_returns_nothing() -> None:
    dec = ResponsesStreamDecoder()
    assert [type(e) for e in dec.feed(sse(completed()))] == [Completed]
    assert dec.finish() == [] and dec.error is None


def test_sse_finish_event_parses_the_leftover_block() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"event: a\ndata: 1\n\nevent: b\r\ndata: x\r\ndata: y") == [("a", b"1")]
    assert dec.finish_event() == ("b", b"x\ny")
    assert dec.finish_event() is None  # reset, like finish()
    dec.feed(b"\n\n: only a comment\n")
    assert dec.finish_event() is None
    dec.feed(b"data: z")
    assert dec.finish() is True and dec.finish_event() is None  # finish() still discards


# ---------------------------------------------------------------------------------------------
# items the SDK may send in a stream, and requests
# ---------------------------------------------------------------------------------------------


def test_function_call_output_without_call_id_does_not_break_a_stream() -> None:
    item = {"id": "fco_1", "type": "function_call_output", "output": "x", "status": "completed"}
    events, error, _ = feed_all([sse(done(item, 0), completed(item))])
    assert error is None and [type(e) for e in events] == [OutputItemDone, Completed]
    assert item_to_wire(events[0].item) == item


def test_item_references_keep_their_id_in_requests() -> None:
    items = [
        item_from_wire({"type": "item_reference", "id": "msg_1"}),
        item_from_wire({"id": "rs_2"}),
        item_from_wire({"id": "rs_3", "type": None}),
        item_from_wire({"type": "message", "id": "msg_4", "role": "user", "content": "hi"}),
        item_from_wire({"type": "web_search_call", "id": "ws_5", "status": "completed"}),
    ]
    sent = responses_request_body(Prompt(input=items), model="m")["input"]
    assert sent == [
        {"type": "item_reference", "id": "msg_1"},
        {"id": "rs_2"},
        {"id": "rs_3", "type": None},
        {"type": "message", "role": "user", "content": "hi"},  # server-side ids are not sent
        {"type": "web_search_call", "status": "completed"},
    ]


def test_easy_input_messages_are_sent_as_they_came() -> None:
    wire = {"role": "user", "content": "hello"}
    body = responses_request_body(Prompt(input=[item_from_wire(wire)]), model="m")
    assert json.dumps(body["input"]) == json.dumps([wire])


# ---------------------------------------------------------------------------------------------
# end to end: a session against the scripted server on 127.0.0.1
# ---------------------------------------------------------------------------------------------


def settings(base_url: str, transport: Any) -> ModelSettings:
    return ModelSettings(base_url=base_url, model="scripted-model", stream_max_retries=1, transport=transport)


async def run_one(script: Script, transport: str = "http") -> tuple[Any, list[Any], int]:
    """One turn ("hello") of a session over ``transport``: (outcome, history, requests served)."""
    async with open_scripted_server(script) as server:
        async with open_model_actor(settings(server.base_url, transport)) as actor:
            async with open_session(model=actor) as session:
                outcome = await session.run("hello")
                history = await session.history()
        return outcome, history, len(server.requests)


# one streamed text item renders 8 events before response.completed: created, in_progress,
# output_item.added, content_part.added, output_text.delta, output_text.done,
# content_part.done, output_item.done
BEFORE_COMPLETED = 8


@pytest.mark.parametrize("transport", ["http", "websocket"])
async def test_end_to_end_items_only_in_completed_are_recorded_once(transport: str) -> None:
    streamed = message("msg_streamed", "streamed part")
    late = message("msg_late", "the answer")
    search = {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search"}}
    injected = {**completed(streamed, search, late), "sequence_number": BEFORE_COMPLETED}
    reply = Reply(
        items=[Text("streamed part", id="msg_streamed")],
        faults=[Malformed(after_events=BEFORE_COMPLETED, event="response.completed", data=json.dumps(injected))],
    )
    outcome, history, requests = await run_one(Script([reply]), transport)
    assert outcome.status == "completed" and requests == 1
    assert outcome.last_agent_message == "the answer"
    assert [item_to_wire(i).get("id") for i in history] == [None, "msg_streamed", "ws_1", "msg_late"]
    assert item_to_wire(history[2]) == search and item_to_wire(history[3]) == late


def _drop_final_bytes(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """Make the scripted server send the last event of each Responses reply without its last
    ``count`` bytes (then end the body cleanly): 1 drops the terminating blank line."""
    render = scripted_server._render

    def without_tail(reply: Any, endpoint: Any, **kw: Any) -> Rendered:
        rendered = render(reply, endpoint, **kw)
        if endpoint != "responses":
            return rendered
        events = list(rendered.events)
        assert events[-1].endswith(b"}\n\n")
        events[-1] = events[-1][:-count]
        return Rendered(events, list(rendered.is_delta))

    monkeypatch.setattr(scripted_server, "_render", without_tail)


async def test_end_to_end_a_last_event_without_its_blank_line_completes(monkeypatch: pytest.MonkeyPatch) -> None:
    _drop_final_bytes(monkeypatch, 1)
    outcome, history, requests = await run_one(Script([Reply(items=[Text("complete answer", chunk_size=4)])]))
    assert outcome.status == "completed" and outcome.last_agent_message == "complete answer"
    assert requests == 1  # not retried
    assert isinstance(history[-1], Message) and history[-1].text() == "complete answer"


async def test_end_to_end_a_last_event_cut_mid_json_is_still_retried(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    _drop_final_bytes(monkeypatch, 4)  # "}}\n\n" → the JSON is cut
    outcome, _, requests = await run_one(Script([Reply(items=[Text("never complete")])]))
    assert outcome.status == "failed" and requests == 2  # one retry (stream_max_retries=1)
    assert isinstance(outcome.error, StreamError) and STREAM_CLOSED_MESSAGE in outcome.error.message


@pytest.mark.parametrize("transport", ["http", "websocket"])
async def test_end_to_end_a_refusal_is_the_last_agent_message(transport: str) -> None:
    refusal = {
        "id": "msg_r",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "refusal", "refusal": "I can't help with that."}],
    }
    outcome, _, requests = await run_one(Script([Reply(items=[RawItem(refusal)])]), transport)
    assert outcome.status == "completed" and requests == 1
    assert outcome.last_agent_message == "I can't help with that."


@pytest.mark.parametrize("transport", ["http", "websocket"])
async def test_end_to_end_sdk_optional_fields_do_not_break_a_stream(transport: str) -> None:
    raw: list[dict[str, Any]] = [
        {"id": "fco_1", "type": "function_call_output", "output": "x", "status": "completed"},
        {"id": "tsc_1", "type": "tool_search_call", "arguments": {"q": "x"}, "status": "completed"},
        {"id": "tso_1", "type": "tool_search_output", "tools": []},
    ]
    reply = Reply(items=[*(RawItem(item) for item in raw), Text("after them")])
    outcome, history, requests = await run_one(Script([reply]), transport)
    assert outcome.status == "completed" and requests == 1
    assert outcome.last_agent_message == "after them"
    assert [item_to_wire(i) for i in history[1:4]] == raw
