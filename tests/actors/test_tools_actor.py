"""The ToolActor: outputs and model-visible errors, shared/exclusive scheduling, cancellation, lifetime, turns."""

from __future__ import annotations

import threading
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
from hypothesis import given, settings, strategies as st

from actors.tools import (
    ToolActor,
    ToolActorClosed,
    ToolInvocation,
    ToolRegistry,
    open_tool_actor,
)
from kernel import (
    CompletedResponseItem,
    CustomToolCall,
    CustomToolCallOutput,
    FatalError,
    FatalToolError,
    FunctionCall,
    FunctionCallOutput,
    FunctionCallOutputPayload,
    Message,
    RespondToModel,
    ToolCall,
    Turn,
    TurnHost,
    execute_tool_call_with_default_output,
    run_turn,
)
from kernel.testing import InMemoryHistory, RecordingSink, ScriptedModel, text_response, tool_call_response


def fn_call(name: str, args: Any = None, call_id: str = "c1") -> FunctionCall:
    arguments = args if isinstance(args, str) else msgspec.json.encode(args or {}).decode()
    return FunctionCall(call_id=call_id, name=name, arguments=arguments)


async def run_call(actor: ToolActor, item: FunctionCall | CustomToolCall) -> Any:
    """Classify and execute one item; RespondToModel becomes the error output (as in a turn)."""
    classified = await actor.classify_response_item(item)
    assert isinstance(classified, CompletedResponseItem.ToolCall)
    assert isinstance(classified.call, ToolInvocation)
    return await execute_tool_call_with_default_output(actor, classified.call)


async def raw_call(actor: ToolActor, item: FunctionCall | CustomToolCall) -> Any:
    classified = await actor.classify_response_item(item)
    assert isinstance(classified, CompletedResponseItem.ToolCall)
    assert isinstance(classified.call, ToolInvocation)
    return await actor.execute_tool_call(classified.call)


def text(output: Any) -> str:
    assert isinstance(output, (FunctionCallOutput, CustomToolCallOutput))
    body = output.output.text_content()
    assert body is not None
    return body


# =============================================================================================
# The actor: results, errors, kinds of call
# =============================================================================================


def make_registry() -> ToolRegistry:
    registry = ToolRegistry()

    @registry.tool(parallel=True)
    async def echo(value: str) -> str:
        return value

    @registry.tool
    def stats(values: list[int]) -> dict[str, int]:
        """Runs in a worker thread."""
        assert threading.current_thread() is not threading.main_thread()
        return {"n": len(values), "sum": sum(values)}

    @registry.tool(threaded=False)
    def inline(x: int) -> int:
        assert threading.current_thread() is threading.main_thread()
        return x * 2

    @registry.tool
    def boom(kind: str) -> str:
        if kind == "value":
            raise ValueError("bad value")
        if kind == "respond":
            raise RespondToModel("file not found: a.txt")
        raise FatalToolError("disk on fire")

    @registry.tool
    async def group_boom() -> str:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_raise_key_error)
        return "unreachable"

    @registry.tool
    async def content() -> FunctionCallOutputPayload:
        return FunctionCallOutputPayload.from_content_items([{"type": "input_text", "text": "hi"}])

    @registry.freeform(name="apply_patch")
    def apply_patch(patch: str) -> str:
        return f"applied {len(patch)} chars"

    return registry


async def _raise_key_error() -> None:
    await trio.lowlevel.checkpoint()
    raise KeyError("missing")


async def test_sync_async_and_freeform_tools_give_the_right_outputs() -> None:
    async with open_tool_actor(make_registry()) as actor:
        out = await raw_call(actor, fn_call("echo", {"value": "hi"}, "e1"))
        assert out == FunctionCallOutput("e1", FunctionCallOutputPayload.from_text("hi", success=True))
        out = await raw_call(actor, fn_call("stats", {"values": [1, 2, 3]}))
        assert text(out) == '{"n":3,"sum":6}' and out.output.success is True
        assert text(await raw_call(actor, fn_call("inline", {"x": 21}))) == "42"
        out = await raw_call(actor, fn_call("content"))
        assert out.output.content_items() == ({"type": "input_text", "text": "hi"},) and out.output.success
        custom = CustomToolCall(call_id="p1", name="apply_patch", input="*** Begin Patch\n")
        out = await raw_call(actor, custom)
        assert out == CustomToolCallOutput("p1", FunctionCallOutputPayload.from_text("applied 16 chars", success=True))
        assert actor.calls_started == actor.calls_finished == 5


async def test_tool_errors_become_model_visible_outputs() -> None:
    async with open_tool_actor(make_registry()) as actor:
        with pytest.raises(RespondToModel, match=r"^tool 'boom' failed: ValueError: bad value$"):
            await raw_call(actor, fn_call("boom", {"kind": "value"}))
        with pytest.raises(RespondToModel, match=r"^file not found: a.txt$"):
            await raw_call(actor, fn_call("boom", {"kind": "respond"}))
        with pytest.raises(FatalToolError, match="disk on fire"):
            await raw_call(actor, fn_call("boom", {"kind": "fatal"}))
        with pytest.raises(RespondToModel, match=r"^tool 'group_boom' failed: KeyError: 'missing'$"):
            await raw_call(actor, fn_call("group_boom"))
        # the turn's view: a failed output (success false) and the turn goes on
        out = await run_call(actor, fn_call("boom", {"kind": "value"}, "b1"))
        assert out == FunctionCallOutput(
            "b1", FunctionCallOutputPayload.from_text("tool 'boom' failed: ValueError: bad value", success=False)
        )
        out = await run_call(actor, fn_call("echo", '{"value": 3}', "b2"))
        assert text(out) == "invalid arguments for tool 'echo': parameter 'value': Expected `str`, got `int`"
        assert out.output.success is False
        with pytest.raises(FatalError, match="disk on fire"):
            await run_call(actor, fn_call("boom", {"kind": "fatal"}))
        assert text(await raw_call(actor, fn_call("echo", {"value": "still fine"}))) == "still fine"


async def test_unknown_tools_and_mismatched_call_kinds_get_an_error_output() -> None:
    async with open_tool_actor(make_registry()) as actor:
        message = Message.assistant("hello")
        assert await actor.classify_response_item(message) == CompletedResponseItem.NonTool(message)
        classified = await actor.classify_response_item(fn_call("nope", call_id="u1"))
        assert isinstance(classified, CompletedResponseItem.ToolCall)
        call = classified.call
        assert isinstance(call, ToolInvocation) and isinstance(call, ToolCall) and call.tool is None
        out = await execute_tool_call_with_default_output(actor, call)
        assert out == FunctionCallOutput(
            "u1", FunctionCallOutputPayload.from_text("unknown tool 'nope'", success=False)
        )
        out = await run_call(actor, CustomToolCall(call_id="u2", name="nope", input="x"))
        assert out == CustomToolCallOutput(
            "u2", FunctionCallOutputPayload.from_text("unknown tool 'nope'", success=False)
        )
        out = await run_call(actor, fn_call("apply_patch", {"input": "x"}))
        assert "freeform tool" in text(out) and out.output.success is False
        out = await run_call(actor, CustomToolCall(call_id="u3", name="echo", input="x"))
        assert isinstance(out, CustomToolCallOutput) and "JSON arguments" in text(out)
        assert actor.calls_started == 0  # none of these reached the actor


# =============================================================================================
# Scheduling: shared and exclusive access, under Trio's fake clock
# =============================================================================================


def timed_registry(log: list[tuple[str, float, float]]) -> ToolRegistry:
    registry = ToolRegistry()

    async def work(tag: str, seconds: float) -> str:
        start = trio.current_time()
        try:
            await trio.sleep(seconds)
        finally:  # cancelled calls are logged too (their time held the lock)
            log.append((tag, start, trio.current_time()))
        return tag

    registry.tool(name="shared", parallel=True)(work)
    registry.tool(name="exclusive")(work)
    return registry


async def call_at(actor: ToolActor, delay: float, name: str, tag: str, seconds: float, results: dict[str, Any]) -> None:
    await trio.sleep(delay)
    results[tag] = await raw_call(actor, fn_call(name, {"tag": tag, "seconds": seconds}, tag))


async def test_parallel_tools_overlap_and_exclusive_ones_do_not(autojump_clock: trio.testing.MockClock) -> None:
    log: list[tuple[str, float, float]] = []
    results: dict[str, Any] = {}
    async with open_tool_actor(timed_registry(log)) as actor:
        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            for tag in ("p1", "p2", "p3"):
                nursery.start_soon(call_at, actor, 0, "shared", tag, 1.0, results)
        assert trio.current_time() - t0 == 1.0  # all three ran together
        assert {(s - t0, e - t0) for _, s, e in log} == {(0.0, 1.0)}

        log.clear()
        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            for tag in ("x1", "x2", "x3"):
                nursery.start_soon(call_at, actor, 0, "exclusive", tag, 1.0, results)
        assert trio.current_time() - t0 == 3.0  # one after another
        spans = sorted((s - t0, e - t0) for _, s, e in log)
        assert spans == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]
        assert {text(results[t]) for t in ("p1", "p2", "p3", "x1", "x2", "x3")} == {"p1", "p2", "p3", "x1", "x2", "x3"}


async def test_a_waiting_exclusive_call_is_not_overtaken_by_later_parallel_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, float, float]] = []
    results: dict[str, Any] = {}
    async with open_tool_actor(timed_registry(log)) as actor:
        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call_at, actor, 0.0, "shared", "r1", 2.0, results)
            nursery.start_soon(call_at, actor, 0.5, "exclusive", "w", 1.0, results)
            nursery.start_soon(call_at, actor, 1.0, "shared", "r2", 1.0, results)
            nursery.start_soon(call_at, actor, 1.0, "shared", "r3", 1.0, results)
        spans = {tag: (s - t0, e - t0) for tag, s, e in log}
    # r2 and r3 arrive while r1 holds shared access, but w queued first: they wait for it
    assert spans == {"r1": (0.0, 2.0), "w": (2.0, 3.0), "r2": (3.0, 4.0), "r3": (3.0, 4.0)}


@settings(max_examples=60)
@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 6), st.integers(1, 4), st.booleans()),
        min_size=1,
        max_size=10,
    )
)
def test_scheduling_invariants_hold_for_any_arrival_pattern(plan: list[tuple[bool, int, int, bool]]) -> None:
    """Random arrivals of parallel/exclusive calls (some cancelled by their caller after 2 s): an
    exclusive call never overlaps another call; exclusive calls start in arrival order; every
    call not cancelled finishes; the actor never stalls."""
    log: list[tuple[str, float, float]] = []

    async def main() -> None:
        results: dict[str, Any] = {}

        async def caller(i: int, parallel: bool, delay: int, seconds: int, cancel: bool) -> None:
            with trio.move_on_after(delay + 2.5 if cancel else float("inf")):
                await call_at(actor, delay + i * 0.01, "shared" if parallel else "exclusive", f"{i}", seconds, results)

        async with open_tool_actor(timed_registry(log)) as actor:
            async with trio.open_nursery() as nursery:
                for i, (parallel, delay, seconds, cancel) in enumerate(plan):
                    nursery.start_soon(caller, i, parallel, delay, seconds, cancel)
            assert actor.calls_started == actor.calls_finished
            assert actor._lock.statistics() == (0, False, 0)
        for i, (_, delay, seconds, cancel) in enumerate(plan):
            if not cancel:
                assert text(results[f"{i}"]) == f"{i}"

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    spans = {int(tag): (s, e) for tag, s, e in log}
    for i, (s, e) in spans.items():
        if not plan[i][0]:  # exclusive
            for j, (s2, e2) in spans.items():
                if j != i:
                    assert e2 <= s or s2 >= e, (i, j, spans)
    exclusive_starts = [(plan[i][1] + i * 0.01, s) for i, (s, _) in spans.items() if not plan[i][0]]
    assert [s for _, s in sorted(exclusive_starts)] == sorted(s for _, s in exclusive_starts)


# =============================================================================================
# Cancellation and the actor's lifetime
# =============================================================================================


async def test_cancelling_a_caller_cancels_only_its_call(autojump_clock: trio.testing.MockClock) -> None:
    registry = ToolRegistry()
    events: list[str] = []

    @registry.tool(parallel=True)
    async def slow(tag: str) -> str:
        try:
            await trio.sleep(10)
        except trio.Cancelled:
            events.append(f"{tag} cancelled at {trio.current_time() - t0}")
            raise
        events.append(f"{tag} done at {trio.current_time() - t0}")
        return tag

    results: dict[str, Any] = {}

    async def caller(tag: str, timeout: float) -> None:
        with trio.move_on_after(timeout) as scope:
            results[tag] = await raw_call(actor, fn_call("slow", {"tag": tag}, tag))
        if scope.cancelled_caught:
            # the call's task had ended before our execute_tool_call returned
            events.append(f"{tag} caller saw cancellation")

    async with open_tool_actor(registry) as actor:
        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller, "a", 1.0)
            nursery.start_soon(caller, "b", 100.0)
            nursery.start_soon(caller, "c", 100.0)
        assert events[:2] == ["a cancelled at 1.0", "a caller saw cancellation"]
        assert sorted(events[2:]) == ["b done at 10.0", "c done at 10.0"]
        assert set(results) == {"b", "c"}
        assert actor.calls_started == actor.calls_finished == 3
        # the actor is unaffected
        assert text(await raw_call(actor, fn_call("slow", {"tag": "d"}))) == "d"


async def test_cancelling_a_queued_exclusive_call_releases_its_place(autojump_clock: trio.testing.MockClock) -> None:
    log: list[tuple[str, float, float]] = []
    results: dict[str, Any] = {}
    doomed = trio.CancelScope()
    async with open_tool_actor(timed_registry(log)) as actor:

        async def doomed_caller() -> None:
            with doomed:
                await call_at(actor, 0.1, "exclusive", "doomed", 1.0, results)

        async def cancel_later() -> None:
            await trio.sleep(1.0)
            assert actor._lock.statistics() == (0, True, 2)  # "first" runs; "doomed" and "after" wait
            doomed.cancel()

        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call_at, actor, 0.0, "exclusive", "first", 2.0, results)
            nursery.start_soon(doomed_caller)
            nursery.start_soon(call_at, actor, 0.2, "shared", "after", 1.0, results)
            nursery.start_soon(cancel_later)
        spans = {tag: (s - t0, e - t0) for tag, s, e in log}
        assert spans == {"first": (0.0, 2.0), "after": (2.0, 3.0)}  # "doomed" never ran
        assert doomed.cancelled_caught and "doomed" not in results
        assert actor._lock.statistics() == (0, False, 0)


async def test_sync_tool_in_a_thread_is_abandoned_on_cancel() -> None:
    release = threading.Event()
    finished = threading.Event()
    registry = ToolRegistry()

    @registry.tool
    def blocking() -> str:
        release.wait(10)
        finished.set()
        return "late"

    async with open_tool_actor(registry) as actor:
        with trio.CancelScope() as scope:

            async def cancel_when_blocked() -> None:
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_when_blocked)
                await raw_call(actor, fn_call("blocking"))
        assert scope.cancelled_caught and not finished.is_set()  # returned without waiting
        release.set()
        await trio.to_thread.run_sync(finished.wait, 10)
        assert actor.calls_started == actor.calls_finished == 1


async def test_callers_get_a_clear_error_when_the_actor_is_not_running(autojump_clock: trio.testing.MockClock) -> None:
    registry = ToolRegistry()

    @registry.tool(parallel=True)
    async def forever() -> str:
        await trio.sleep_forever()
        raise AssertionError

    actor = ToolActor(registry)
    with pytest.raises(ToolActorClosed, match="not running: start it"):
        await raw_call(actor, fn_call("forever"))

    errors: list[BaseException] = []

    async def caller(call_id: str) -> None:
        try:
            await raw_call(actor, fn_call("forever", call_id=call_id))
        except ToolActorClosed as exc:
            errors.append(exc)

    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as actor_nursery:
            await actor_nursery.start(actor.run)

            async def stop_then_call() -> None:
                # the actor is cancelled before it can receive: the request stays queued
                actor_nursery.cancel_scope.cancel()
                await caller("queued")

            outer.start_soon(caller, "running")
            await trio.testing.wait_all_tasks_blocked()
            outer.start_soon(stop_then_call)
    assert sorted(str(e) for e in errors) == [
        "Fatal error: the tool actor stopped before this call started",
        "Fatal error: the tool actor stopped while tool 'forever' was running",
    ]
    assert not actor.running
    with pytest.raises(ToolActorClosed, match="has stopped"):
        await raw_call(actor, fn_call("forever"))
    # through the turn's helper it is fatal, not a silent hang
    with pytest.raises(FatalError):
        await run_call(actor, fn_call("forever"))
    with pytest.raises(RuntimeError, match="runs once"):
        await actor.run()


async def test_an_actor_started_on_demand(autojump_clock: trio.testing.MockClock) -> None:
    log: list[tuple[str, float, float]] = []
    results: dict[str, Any] = {}
    actor = ToolActor(timed_registry(log))
    async with trio.open_nursery() as nursery:
        actor.start_on_demand(nursery)
        assert actor.running and not nursery.child_tasks  # nothing runs before the first call
        async with trio.open_nursery() as callers:  # concurrent first calls start one task
            for i in range(3):
                callers.start_soon(call_at, actor, 0, "shared", f"c{i}", 1.0, results)
            await trio.testing.wait_all_tasks_blocked()
            assert len(nursery.child_tasks) == 1
        assert sorted(text(r) for r in results.values()) == ["c0", "c1", "c2"]
        with pytest.raises(RuntimeError, match="runs once"):
            actor.start_on_demand(nursery)
        nursery.cancel_scope.cancel()
    # a nursery already closed: the call gets a clear error, not a hang
    late = ToolActor(timed_registry(log))
    async with trio.open_nursery() as closed:
        late.start_on_demand(closed)
    with pytest.raises(ToolActorClosed, match="has stopped"):
        await raw_call(late, fn_call("shared", {"tag": "x", "seconds": 1}))
    assert not late.running


async def test_close_lets_calls_in_flight_finish(autojump_clock: trio.testing.MockClock) -> None:
    log: list[tuple[str, float, float]] = []
    results: dict[str, Any] = {}
    actor = ToolActor(timed_registry(log))
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        nursery.start_soon(call_at, actor, 0, "shared", "inflight", 5.0, results)
        await trio.testing.wait_all_tasks_blocked()
        actor.close()
        assert not actor.running
        with pytest.raises(ToolActorClosed):
            await raw_call(actor, fn_call("shared", {"tag": "late", "seconds": 1}))
    assert text(results["inflight"]) == "inflight"  # run() returned after the call finished


# =============================================================================================
# End to end: a turn with parallel tool calls through the actor
# =============================================================================================


async def test_a_turn_runs_parallel_tool_calls_through_the_actor(autojump_clock: trio.testing.MockClock) -> None:
    log: list[tuple[str, float, float]] = []
    registry = timed_registry(log)

    @registry.tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    model = ScriptedModel(
        [
            tool_call_response(
                ("c1", "shared", {"tag": "one", "seconds": 3}),
                ("c2", "shared", {"tag": "two", "seconds": 3}),
                ("c3", "add", {"a": 2, "b": 3}),
                ("c4", "add", {"a": "2"}),
                ("c5", "missing_tool", {}),
                ("c6", "shared", {"tag": "three", "seconds": 3}),
            ),
            text_response("all done"),
        ]
    )
    history = InMemoryHistory()
    sink = RecordingSink()
    async with open_tool_actor(registry) as actor:
        host = TurnHost(model, actor, history, sink, tool_config=registry.tool_config())
        t0 = trio.current_time()
        outcome = await run_turn(host, [Message.user("go")])
        elapsed = trio.current_time() - t0
    assert outcome.status == "completed" and outcome.last_agent_message == "all done"
    # "one" and "two" overlap; "add" (exclusive) queues behind them, and "three" (parallel-safe,
    # but called after "add") waits for it: fair to the exclusive call
    spans = {tag: (s - t0, e - t0) for tag, s, e in log}
    assert spans == {"one": (0.0, 3.0), "two": (0.0, 3.0), "three": (3.0, 6.0)}
    assert elapsed == 6.0
    outputs = [i for i in history.items if isinstance(i, FunctionCallOutput)]
    assert [o.call_id for o in outputs] == ["c1", "c2", "c3", "c4", "c5", "c6"]  # call order
    by_id = {o.call_id: (o.output.body, o.output.success) for o in outputs}
    assert by_id["c1"] == ("one", True) and by_id["c6"] == ("three", True)
    assert by_id["c3"] == ("5", True)
    assert by_id["c4"][1] is False and "parameter 'a'" in str(by_id["c4"][0])
    assert by_id["c5"] == ("unknown tool 'missing_tool'", False)
    # the model saw the registry's specs, and the follow-up saw every output
    assert [t.name for t in model.prompts[0].tools] == ["shared", "exclusive", "add"]
    assert model.prompts[0].parallel_tool_calls
    follow_up = [i for i in model.prompts[1].input if isinstance(i, FunctionCallOutput)]
    assert [o.call_id for o in follow_up] == ["c1", "c2", "c3", "c4", "c5", "c6"]


async def test_interrupting_a_turn_cancels_the_running_tools(autojump_clock: trio.testing.MockClock) -> None:
    registry = ToolRegistry()
    cancelled: list[str] = []

    @registry.tool(parallel=True)
    async def slow(tag: str) -> str:
        try:
            await trio.sleep(60)
        except trio.Cancelled:
            cancelled.append(tag)
            raise
        return tag

    model = ScriptedModel([tool_call_response(("s1", "slow", {"tag": "a"}), ("s2", "slow", {"tag": "b"}))])
    history = InMemoryHistory()
    async with open_tool_actor(registry) as actor:
        turn = Turn(
            TurnHost(model, actor, history, RecordingSink(), tool_config=registry.tool_config()), [Message.user("x")]
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(turn.run)
            await trio.sleep(2)
            turn.interrupt()
        assert sorted(cancelled) == ["a", "b"]
        assert actor.calls_started == actor.calls_finished == 2
    assert turn.outcome is not None and turn.outcome.status == "aborted"
    outputs = {i.call_id: i.output for i in history.items if isinstance(i, FunctionCallOutput)}
    assert outputs["s1"].body == "aborted by user after 2.0s" and outputs["s1"].success is False
    assert outputs["s2"].success is False
