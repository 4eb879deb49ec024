"""The default sampling request and the turn: tools start at once, every call gets exactly one
output in call order, interrupts and faults leave history well-formed."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, strategies as st

from kernel import (
    Completed,
    CompletedResponseItem,
    CustomToolCall,
    FatalToolError,
    FunctionCall,
    FunctionCallOutput,
    FunctionCallOutputPayload,
    ItemCompleted,
    Message,
    OutputItemDone,
    RespondToModel,
    StreamRetry,
    TokenUsage,
    TokenUsageUpdated,
    ToolCallFinished,
    ToolCallStarted,
    Turn,
    TurnAborted,
    TurnCompleted,
    TurnFailed,
    TurnHost,
    TurnStarted,
    run_turn,
)
from kernel.testing import (
    Fault,
    FunctionTools,
    InMemoryHistory,
    RecordingSink,
    ScriptedModel,
    ScriptedResponse,
    text_response,
    tool_call_response,
)


def make_host(responses: list[ScriptedResponse], functions: dict[str, Any] | None = None, **kw: Any) -> TurnHost[Any]:
    async def sleep_tool(args: dict[str, Any]) -> str:
        await trio.sleep(float(args.get("seconds", 0)))
        return f"slept {args.get('seconds', 0)}"

    fns = {"sleep": sleep_tool}
    fns.update(functions or {})
    return TurnHost(ScriptedModel(responses), FunctionTools(fns), InMemoryHistory(), RecordingSink(), **kw)


def assert_well_formed(items: list[Any]) -> None:
    """Every call has exactly one output, after it; no output without a call."""
    calls: dict[str, int] = {}
    outputs: dict[str, int] = {}
    for i, item in enumerate(items):
        if isinstance(item, (FunctionCall, CustomToolCall)):
            assert item.call_id not in calls, f"duplicate call {item.call_id}"
            calls[item.call_id] = i
        elif isinstance(item, FunctionCallOutput) or type(item).__name__ == "CustomToolCallOutput":
            assert item.call_id in calls, f"output without call {item.call_id}"
            assert item.call_id not in outputs, f"two outputs for {item.call_id}"
            outputs[item.call_id] = i
    assert set(calls) == set(outputs)


def output_order(items: list[Any]) -> list[str]:
    return [i.call_id for i in items if isinstance(i, FunctionCallOutput)]


def call_order(items: list[Any]) -> list[str]:
    return [i.call_id for i in items if isinstance(i, FunctionCall)]


async def test_tools_start_while_the_stream_continues_and_outputs_follow_call_order(autojump_clock: Any) -> None:
    started_at: dict[str, float] = {}

    async def slow(args: dict[str, Any]) -> str:
        started_at[args["id"]] = trio.current_time()
        await trio.sleep(args["t"])
        return args["id"]

    first = tool_call_response(("a", "slow", {"id": "a", "t": 5}), ("b", "slow", {"id": "b", "t": 1}))
    first.delay_between = 1.0  # batches at t=1 (created), 2 (call a), 3 (call b), 4 (completed)
    host = make_host([first, text_response("done")], {"slow": slow})
    outcome = await run_turn(host, [Message.user("go")])
    assert outcome.status == "completed" and outcome.last_agent_message == "done"
    # each call started the moment its item arrived, before the stream ended at t=4
    assert (started_at["a"], started_at["b"]) == (2.0, 3.0)
    items = host.history.items  # type: ignore[attr-defined]
    assert output_order(items) == ["a", "b"]  # b finished first, recorded in call order
    assert_well_formed(items)
    # the follow-up request saw the calls and their outputs
    follow_up = host.model.prompts[1].input  # type: ignore[attr-defined]
    assert output_order(list(follow_up)) == ["a", "b"]
    kinds = [type(e).__name__ for e in host.events.events]  # type: ignore[attr-defined]
    assert kinds[0] == "TurnStarted" and kinds[-1] == "TurnCompleted"
    assert kinds.index("ToolCallStarted") < kinds.index("ToolCallFinished")


async def test_every_event_of_a_turn_carries_its_turn_id(autojump_clock: Any) -> None:
    """Deltas from the model, tool events, usage, retries and the fallback warning alike."""
    calls = tool_call_response(("a", "sleep", {"seconds": 1}), text="let me sleep")
    calls.batches[-1] = [Completed("resp", TokenUsage(input_tokens=3, output_tokens=2))]
    faults = [ScriptedResponse(fault=Fault("stream")) for _ in range(3)]  # budget spent, fallback, a retry
    host = make_host([*faults, calls, text_response("done", chunks=3)], max_retries=1)
    host.model.fallback = True  # type: ignore[attr-defined]
    await run_turn(host, [Message.user("go")], turn_id="t-one")
    await run_turn(host, [Message.user("again")])  # the next turn, under its own id
    events = host.events.events  # type: ignore[attr-defined]
    kinds = {type(e).__name__ for e in events}
    assert {
        "TextDelta",
        "ToolCallStarted",
        "ToolCallFinished",
        "TokenUsageUpdated",
        "FallbackWarning",
        "StreamRetry",
    } <= kinds
    first = events[: [type(e) for e in events].index(TurnCompleted) + 1]
    assert {e.turn_id for e in first} == {"t-one"}
    rest = events[len(first) :]
    assert len({e.turn_id for e in rest}) == 1 and rest[0].turn_id not in ("", "t-one")


async def test_respond_to_model_becomes_the_calls_output_and_the_turn_goes_on() -> None:
    async def bad(args: Any) -> str:
        raise RespondToModel("no such file")

    host = make_host([tool_call_response(("c", "bad", {})), text_response("ok")], {"bad": bad})
    outcome = await run_turn(host, [Message.user("x")])
    assert outcome.status == "completed"
    out = [i for i in host.history.items if isinstance(i, FunctionCallOutput)]  # type: ignore[attr-defined]
    assert out[0].output == FunctionCallOutputPayload.from_text("no such file", success=False)
    finished = host.events.of_type(ToolCallFinished)  # type: ignore[attr-defined]
    assert finished[0].status == "error"


async def test_fatal_tool_error_ends_the_turn_with_outputs_for_every_call(autojump_clock: Any) -> None:
    async def fatal(args: Any) -> str:
        await trio.sleep(1)
        raise FatalToolError("boom")

    host = make_host(
        [tool_call_response(("s", "sleep", {"seconds": 100}), ("f", "fatal", {})), text_response("never")],
        {"fatal": fatal},
    )
    outcome = await run_turn(host, [Message.user("x")])
    assert outcome.status == "failed" and str(outcome.error) == "Fatal error: boom"
    items = host.history.items  # type: ignore[attr-defined]
    assert_well_formed(items)
    outs = {i.call_id: i.output.body for i in items if isinstance(i, FunctionCallOutput)}
    assert outs["f"] == "Fatal error: boom"
    assert outs["s"].startswith("aborted by user after 1.0s")
    assert trio.current_time() < 2  # the 100 s tool was cancelled
    assert host.events.of_type(TurnFailed)[0].error == "Fatal error: boom"  # type: ignore[attr-defined]


async def test_unexpected_tool_exception_is_fatal_but_history_stays_whole() -> None:
    async def broken(args: Any) -> str:
        raise ZeroDivisionError("oops")

    host = make_host([tool_call_response(("z", "broken", {}))], {"broken": broken})
    outcome = await run_turn(host, [Message.user("x")])
    assert outcome.status == "failed" and "ZeroDivisionError: oops" in str(outcome.error)
    assert_well_formed(host.history.items)  # type: ignore[attr-defined]


async def test_stream_error_drains_started_calls_then_retry_sees_them(autojump_clock: Any) -> None:
    broken = tool_call_response(("a", "sleep", {"seconds": 2}), ("b", "sleep", {"seconds": 1}))
    broken.fault = Fault("stream", after_events=2)  # the Created + call a, then the drop
    host = make_host([broken, tool_call_response(("b2", "sleep", {"seconds": 1})), text_response("fin")])
    outcome = await run_turn(host, [Message.user("x")])
    assert outcome.status == "completed"
    items = host.history.items  # type: ignore[attr-defined]
    assert_well_formed(items)
    assert output_order(items) == ["a", "b2"]
    outs = {i.call_id: i.output.body for i in items if isinstance(i, FunctionCallOutput)}
    assert outs["a"] == "slept 2"  # drained, not aborted
    retry_prompt = host.model.prompts[1].input  # type: ignore[attr-defined]
    assert output_order(list(retry_prompt)) == ["a"]  # the retry re-sent history incl. the drained call
    assert len(host.events.of_type(StreamRetry)) == 1  # type: ignore[attr-defined]


async def test_interrupt_mid_tool_gives_aborted_outputs(autojump_clock: Any) -> None:
    host = make_host(
        [tool_call_response(("s1", "sleep", {"seconds": 60}), ("s2", "shell", {}))],
        {"shell": lambda args: trio.sleep_forever()},
    )
    turn = Turn(host, [Message.user("x")])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(turn.run)
        await trio.sleep(2.5)
        turn.interrupt()
    assert turn.outcome is not None and turn.outcome.status == "aborted"
    items = host.history.items  # type: ignore[attr-defined]
    assert_well_formed(items)
    outs = {i.call_id: i.output for i in items if isinstance(i, FunctionCallOutput)}
    assert outs["s1"].body == "aborted by user after 2.5s" and outs["s1"].success is False
    assert outs["s2"].body == "Wall time: 2.5 seconds\naborted by user"
    assert [type(e) for e in host.events.events][-1] is TurnAborted  # type: ignore[attr-defined]


async def test_interrupt_mid_stream_and_during_backoff(autojump_clock: Any) -> None:
    hang = text_response("partial", chunks=3)
    hang.batches = hang.batches[:-1]  # no item.done, no completed: the stream stalls
    hang.hang = True
    host = make_host([hang])
    turn = Turn(host, [Message.user("x")])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(turn.run)
        await trio.testing.wait_all_tasks_blocked()
        turn.interrupt()
    assert turn.outcome.status == "aborted"  # type: ignore[union-attr]
    # the streamed part is kept as an incomplete assistant message (tests/kernel/test_interrupted_text.py)
    partial = Message(
        role="assistant",
        content=({"type": "output_text", "text": "partial"},),
        id="msg-1",
        extra={"status": "incomplete"},
    )
    assert host.history.items == [Message.user("x"), partial]  # type: ignore[attr-defined]

    host = make_host([ScriptedResponse(fault=Fault("server_delay", delay=30))])
    turn = Turn(host, [Message.user("x")])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(turn.run)
        await trio.sleep(10)
        turn.interrupt()
    assert turn.outcome.status == "aborted" and trio.current_time() < 11  # type: ignore[union-attr]


async def test_interrupt_before_run_still_records_the_input() -> None:
    host = make_host([text_response("x")])
    turn = Turn(host, [Message.user("accepted")])
    turn.interrupt()
    outcome = await turn.run()
    assert outcome.status == "aborted"
    assert host.history.items == [Message.user("accepted")]  # type: ignore[attr-defined]
    kinds = [type(e) for e in host.events.events]  # type: ignore[attr-defined]
    assert kinds == [TurnStarted, TurnAborted]


async def test_outer_cancellation_records_aborted_outputs_and_propagates(autojump_clock: Any) -> None:
    host = make_host([tool_call_response(("s", "sleep", {"seconds": 60}))])
    with trio.move_on_after(5):
        await run_turn(host, [Message.user("x")])
        pytest.fail("not cancelled")
    assert_well_formed(host.history.items)  # type: ignore[attr-defined]
    assert isinstance(host.events.events[-1], TurnAborted)  # type: ignore[attr-defined]


async def test_non_retryable_errors_fail_the_turn_and_hooks_run() -> None:
    host = make_host([ScriptedResponse(fault=Fault("context_window"))])
    outcome = await run_turn(host, [Message.user("x")])
    assert outcome.status == "failed" and type(outcome.error).__name__ == "ContextWindowExceeded"
    assert host.context_full
    host = make_host([ScriptedResponse(fault=Fault("usage_limit"))])
    outcome = await run_turn(host, [Message.user("x")])
    assert type(outcome.error).__name__ == "UsageLimitReached"
    assert host.rate_limits == {"primary_used_percent": 100.0}


async def test_retry_budget_then_fallback_then_failure(autojump_clock: Any) -> None:
    faults = [ScriptedResponse(fault=Fault("stream")) for _ in range(20)]
    host = make_host(faults, max_retries=2)
    host.model.fallback = True  # type: ignore[attr-defined]
    outcome = await run_turn(host, [Message.user("x")])
    assert outcome.status == "failed"
    assert host.model.attempts_per_transport == {"primary": 3, "fallback": 3}  # type: ignore[attr-defined]
    events = host.events.events  # type: ignore[attr-defined]
    assert sum(type(e).__name__ == "FallbackWarning" for e in events) == 1
    # with a fallback available, the first retry of each transport is quiet
    assert [e.message for e in events if isinstance(e, StreamRetry)] == [
        "Reconnecting... 2/2",
        "Reconnecting... 1/2",
        "Reconnecting... 2/2",
    ]


async def test_usage_end_turn_and_immediate_response() -> None:
    class Immediate(FunctionTools):
        async def classify_response_item(self, item: Any) -> Any:
            if isinstance(item, FunctionCall) and item.name == "canned":
                return CompletedResponseItem.ImmediateResponse(
                    item, FunctionCallOutput(item.call_id, FunctionCallOutputPayload.from_text("canned answer"))
                )
            return await super().classify_response_item(item)

    usage = TokenUsage(input_tokens=10, output_tokens=5, total_tokens=15)
    first = ScriptedResponse(
        [
            [OutputItemDone(FunctionCall(call_id="k", name="canned", arguments="{}"))],
            [Completed("r1", usage, end_turn=None)],
        ]
    )
    second = ScriptedResponse([[OutputItemDone(Message.assistant("more?"))], [Completed("r2", usage, end_turn=False)]])
    host = TurnHost(
        ScriptedModel([first, second, text_response("end")]), Immediate({}), InMemoryHistory(), RecordingSink()
    )
    outcome = await run_turn(host, [Message.user("x")])
    assert outcome.last_agent_message == "end"
    assert len(host.model.prompts) == 3  # type: ignore[attr-defined]
    items = host.history.items  # type: ignore[attr-defined]
    assert items[1:3] == [
        FunctionCall(call_id="k", name="canned", arguments="{}"),
        FunctionCallOutput("k", FunctionCallOutputPayload.from_text("canned answer")),
    ]
    assert host.total_usage.total_tokens == 30
    assert host.events.of_type(TokenUsageUpdated)[-1].total.total_tokens == 30  # type: ignore[attr-defined]
    assert host.events.of_type(ToolCallStarted) == []  # type: ignore[attr-defined]


@given(
    n_calls=st.integers(1, 6),
    durations=st.lists(st.integers(0, 5), min_size=6, max_size=6),
    cancel_at=st.one_of(st.none(), st.floats(0, 12)),
    drop_after=st.one_of(st.none(), st.integers(0, 7)),
    gap=st.sampled_from([0.0, 0.5, 1.0]),
)
def test_every_call_gets_exactly_one_output_in_call_order(
    n_calls: int, durations: list[int], cancel_at: float | None, drop_after: int | None, gap: float
) -> None:
    calls = [(f"c{i}", "sleep", {"seconds": durations[i]}) for i in range(n_calls)]
    first = tool_call_response(*calls)
    first.delay_between = gap
    if drop_after is not None:
        first.fault = Fault("stream", after_events=drop_after)
    host = make_host([first, text_response("done")])
    turn = Turn(host, [Message.user("x")])

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(turn.run)
            if cancel_at is not None:
                await trio.sleep(cancel_at)
                turn.interrupt()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    items = host.history.items  # type: ignore[attr-defined]
    assert_well_formed(items)
    assert output_order(items) == call_order(items)
    assert turn.outcome is not None
    finals = [e for e in host.events.events if isinstance(e, (TurnCompleted, TurnAborted, TurnFailed))]  # type: ignore[attr-defined]
    assert len(finals) == 1
    started = host.events.of_type(ToolCallStarted)  # type: ignore[attr-defined]
    finished = host.events.of_type(ToolCallFinished)  # type: ignore[attr-defined]
    assert sorted(e.call_id for e in started) == sorted(e.call_id for e in finished)
    assert all(isinstance(e, ItemCompleted) or True for e in host.events.events)  # type: ignore[attr-defined]


class _ShrinkingCompactor:
    """Replaces the history with its last user message when asked (a stand-in for a real one)."""

    def __init__(self, host: TurnHost[Any], threshold: int | None = None, refuse: bool = False) -> None:
        self.host = host
        self.threshold = threshold
        self.refuse = refuse
        self.calls: list[tuple[str, int]] = []

    async def _shrink(self) -> None:
        items = self.host.history.items  # type: ignore[attr-defined]
        last_user = [i for i in items if isinstance(i, Message) and i.role == "user"][-1:]
        items[:] = last_user

    async def before_request(self, items: Any) -> bool:
        self.calls.append(("before", len(items)))
        if self.threshold is not None and len(items) > self.threshold:
            await self._shrink()
            return True
        return False

    async def after_window_exceeded(self, items: Any) -> bool:
        self.calls.append(("refused", len(items)))
        if self.refuse:
            return False
        await self._shrink()
        return True


async def test_a_window_refusal_compacts_and_retries_the_request_once(autojump_clock: Any) -> None:
    host = make_host([ScriptedResponse(fault=Fault("context_window")), text_response("fits now")])
    host.history.items.extend([Message.user("old"), Message.assistant("long answer")])  # type: ignore[attr-defined]
    compactor = _ShrinkingCompactor(host)
    host.compactor = compactor
    outcome = await run_turn(host, [Message.user("go on")])
    assert outcome.status == "completed" and outcome.last_agent_message == "fits now"
    assert compactor.calls == [("before", 3), ("refused", 3)]
    assert list(host.model.prompts[1].input) == [Message.user("go on")]  # type: ignore[attr-defined]
    assert not host.context_full and not any(isinstance(e, StreamRetry) for e in host.events.events)  # type: ignore[attr-defined]


async def test_without_a_compaction_the_refusal_fails_the_turn(autojump_clock: Any) -> None:
    for compactor_refuses in (True, None):
        host = make_host([ScriptedResponse(fault=Fault("context_window")) for _ in range(3)])
        if compactor_refuses:
            host.compactor = _ShrinkingCompactor(host, refuse=True)
        outcome = await run_turn(host, [Message.user("go")])
        assert outcome.status == "failed" and type(outcome.error).__name__ == "ContextWindowExceeded"
        assert host.context_full and len(host.model.prompts) == 1  # type: ignore[attr-defined]
    host = make_host([ScriptedResponse(fault=Fault("context_window")) for _ in range(3)])
    host.compactor = _ShrinkingCompactor(host)  # compacts, but the retry is refused too: once only
    outcome = await run_turn(host, [Message.user("go")])
    assert outcome.status == "failed" and len(host.model.prompts) == 2  # type: ignore[attr-defined]


async def test_compaction_before_a_request_past_the_threshold(autojump_clock: Any) -> None:
    calls = tool_call_response(("a", "sleep", {"seconds": 0}), ("b", "sleep", {"seconds": 0}))
    host = make_host([calls, text_response("done")])
    compactor = _ShrinkingCompactor(host, threshold=2)
    host.compactor = compactor
    outcome = await run_turn(host, [Message.user("go")])
    assert outcome.status == "completed"
    # the follow-up (user + 2 calls + 2 outputs) passed the threshold: compacted before it was sent
    assert compactor.calls == [("before", 1), ("before", 5)]
    assert list(host.model.prompts[1].input) == [Message.user("go")]  # type: ignore[attr-defined]
