"""An interrupt mid-message records the streamed part: an assistant message with status
"incomplete" whose text is exactly the text deltas published for that item."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from hypothesis import given, settings, strategies as st

from kernel import (
    Created,
    FunctionCall,
    FunctionCallOutput,
    ItemCompleted,
    Message,
    OutputItemAdded,
    OutputItemDone,
    OutputTextDelta,
    ReasoningSummaryDelta,
    TextDelta,
    ToolCallInputDelta,
    Turn,
    TurnAborted,
    TurnHost,
    item_to_wire,
)
from kernel.testing import (
    Fault,
    FunctionTools,
    InMemoryHistory,
    RecordingSink,
    ScriptedModel,
    ScriptedResponse,
    text_response,
)
from kernel.turn import partial_message


def make_host(responses: list[ScriptedResponse]) -> TurnHost[Any]:
    async def sleep_tool(args: dict[str, Any]) -> str:
        await trio.sleep(float(args.get("seconds", 0)))
        return "slept"

    return TurnHost(ScriptedModel(responses), FunctionTools({"sleep": sleep_tool}), InMemoryHistory(), RecordingSink())


def stalled(text: str, chunks: int, item_id: str = "msg-1") -> ScriptedResponse:
    """A message streamed as ``chunks`` deltas (1 s apart) that never completes."""
    response = text_response(text, chunks=chunks, item_id=item_id)
    response.batches = response.batches[:-1]  # no output_item.done, no completed
    response.delay_between = 1.0
    response.hang = True
    return response


def incomplete(text: str, item_id: str = "msg-1") -> Message:
    return Message(
        role="assistant", content=({"type": "output_text", "text": text},), id=item_id, extra={"status": "incomplete"}
    )


def published_text(host: TurnHost[Any], item_id: str) -> str:
    return "".join(e.delta for e in host.events.events if isinstance(e, TextDelta) and e.item_id == item_id)  # type: ignore[attr-defined]


async def run_and_interrupt(host: TurnHost[Any], at: float | None) -> Turn:
    turn = Turn(host, [Message.user("go")])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(turn.run)
        if at is None:
            await trio.testing.wait_all_tasks_blocked()
        else:
            await trio.sleep(at)
        turn.interrupt()
    return turn


async def test_interrupt_mid_message_records_the_streamed_part(autojump_clock: Any) -> None:
    host = make_host([stalled("Let me check the files", chunks=4)])  # 6-char deltas at t=2,3,4,5
    turn = await run_and_interrupt(host, 3.5)
    assert turn.outcome is not None and turn.outcome.status == "aborted"
    assert published_text(host, "msg-1") == "Let me check"
    assert host.history.items == [Message.user("go"), incomplete("Let me check")]  # type: ignore[attr-defined]
    assert [type(e) for e in host.events.events][-1] is TurnAborted  # type: ignore[attr-defined]
    # the next request carries it
    host.model.responses.append(text_response("ok"))  # type: ignore[attr-defined]
    await Turn(host, [Message.user("again")]).run()
    sent = list(host.model.prompts[-1].input)  # type: ignore[attr-defined]
    assert sent[:3] == [Message.user("go"), incomplete("Let me check"), Message.user("again")]


async def test_a_completed_message_is_unaffected(autojump_clock: Any) -> None:
    done = text_response("All done.", chunks=3)
    done.batches[-1] = [done.batches[-1][0]]  # the message completes; the response does not
    done.batches.append([OutputItemDone(FunctionCall(call_id="c1", name="sleep", arguments='{"seconds": 60}'))])
    done.delay_between = 1.0
    done.hang = True
    host = make_host([done])
    await run_and_interrupt(host, 10)
    items = host.history.items  # type: ignore[attr-defined]
    assert items[:2] == [Message.user("go"), Message.assistant("All done.", id="msg-1")]
    assert isinstance(items[2], FunctionCall) and isinstance(items[3], FunctionCallOutput)
    assert len(items) == 4
    assert not any(isinstance(i, Message) and i.extra for i in items)


async def test_interrupt_before_any_delta_records_nothing_extra(autojump_clock: Any) -> None:
    host = make_host([stalled("never shown", chunks=2)])
    host.model.responses[0].batches = host.model.responses[0].batches[:1]  # type: ignore[attr-defined]
    await run_and_interrupt(host, None)
    assert host.history.items == [Message.user("go")]  # type: ignore[attr-defined]


async def test_only_message_text_counts(autojump_clock: Any) -> None:
    batches: list[list[Any]] = [
        [Created("r"), OutputItemAdded(Message(role="assistant", content=(), id="m"))],
        [ReasoningSummaryDelta("rs", "thinking")],
        [ToolCallInputDelta("fc", '{"seconds"')],
    ]
    host = make_host([ScriptedResponse(batches, hang=True)])
    await run_and_interrupt(host, None)
    assert host.history.items == [Message.user("go")]  # type: ignore[attr-defined]


async def test_the_partial_message_precedes_the_aborted_outputs(autojump_clock: Any) -> None:
    call = FunctionCall(call_id="c1", name="sleep", arguments='{"seconds": 60}', id="fc1")
    batches: list[list[Any]] = [
        [Created("r"), OutputItemDone(call)],
        [OutputItemAdded(Message(role="assistant", content=(), id="m2"))],
        [OutputTextDelta("m2", "while ")],
        [OutputTextDelta("m2", "waiting")],
    ]
    host = make_host([ScriptedResponse(batches, delay_between=1.0, hang=True)])
    await run_and_interrupt(host, 10)
    items = host.history.items  # type: ignore[attr-defined]
    assert items[:3] == [Message.user("go"), call, incomplete("while waiting", "m2")]
    assert isinstance(items[3], FunctionCallOutput) and items[3].output.success is False
    assert len(items) == 4


async def test_a_stream_error_mid_message_records_no_partial(autojump_clock: Any) -> None:
    broken = text_response("half of it", chunks=4)
    broken.fault = Fault("stream", after_events=3)
    host = make_host([broken, text_response("whole")])
    turn = Turn(host, [Message.user("go")])
    outcome = await turn.run()
    assert outcome.status == "completed"
    assert host.history.items == [Message.user("go"), Message.assistant("whole", id="msg-1")]  # type: ignore[attr-defined]


def test_partial_message_wire_form() -> None:
    message = partial_message([TextDelta("m", "a"), TextDelta("m", "b")])
    assert message == incomplete("ab", "m")
    assert item_to_wire(message) == {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "ab"}],
        "id": "m",
        "status": "incomplete",
    }
    assert partial_message([]) is None
    assert partial_message([TextDelta("m", "")]) is None
    # the item of the last delta
    assert partial_message([TextDelta("a", "x"), TextDelta("b", "y"), TextDelta("b", "z")]) == incomplete("yz", "b")


@settings(max_examples=150, deadline=None)
@given(
    texts=st.lists(st.text(min_size=0, max_size=12), min_size=1, max_size=3),
    chunks=st.lists(st.integers(1, 5), min_size=3, max_size=3),
    at=st.one_of(st.none(), st.floats(0, 25)),
    per_batch=st.integers(1, 3),
)
def test_recorded_text_is_the_published_text(
    texts: list[str], chunks: list[int], at: float | None, per_batch: int
) -> None:
    """Several messages, deltas grouped ``per_batch`` per batch, an interrupt anywhere (or never):
    every assistant message in history has exactly the text published for its item; the one
    cut off is "incomplete" and is the only one not completed."""
    events: list[Any] = [Created("r")]
    for n, text in enumerate(texts):
        item_id = f"m{n}"
        size = max(1, -(-len(text) // chunks[n]))
        events.append(OutputItemAdded(Message(role="assistant", content=(), id=item_id)))
        events += [OutputTextDelta(item_id, text[i : i + size]) for i in range(0, len(text), size)]
        events.append(OutputItemDone(Message.assistant(text, id=item_id)))
    batches = [events[i : i + per_batch] for i in range(0, len(events), per_batch)]
    host = make_host([ScriptedResponse(batches, delay_between=1.0, hang=True)])

    async def main() -> None:
        await run_and_interrupt(host, at if at is not None else 1000.0)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    items = host.history.items  # type: ignore[attr-defined]
    assert items[0] == Message.user("go")
    events = host.events.events  # type: ignore[attr-defined]
    completed = {e.item.id for e in events if isinstance(e, ItemCompleted) and isinstance(e.item, Message)}
    recorded = items[1:]
    assert all(isinstance(m, Message) and m.role == "assistant" for m in recorded)
    for m in recorded:
        assert m.text() == published_text(host, m.id)
        assert (m.extra == {"status": "incomplete"}) == (m.id not in completed)
    partial = [m for m in recorded if m.extra]
    assert len(partial) <= 1
    if partial:
        assert partial[0] is recorded[-1] and partial[0].text()
    # a message whose text was (non-empty and) published but never completed is recorded
    started = {e.item_id for e in host.events.events if isinstance(e, TextDelta) and e.delta}  # type: ignore[attr-defined]
    assert started - completed == {m.id for m in partial}
