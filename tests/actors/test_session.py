"""The runtime end to end over real loopback HTTP: open_session + ModelActor + scripted server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors.history import resume
from actors.model import ModelSettings, open_model_actor
from actors.scripted import (
    CustomToolCall as ScriptCustomCall,
    Disconnect,
    Failed,
    FunctionCall as ScriptCall,
    HttpError,
    Incomplete,
    Malformed,
    Reply,
    Script,
    Stall,
    Text,
    Usage,
    open_scripted_server,
    rate_limit_headers,
)
from actors.session import Session, open_session
from actors.tools import ToolRegistry
from kernel import (
    ContextWindowFull,
    CustomToolCall,
    CustomToolCallOutput,
    FunctionCall,
    FunctionCallOutput,
    Message,
    RateLimitsUpdated,
    StreamRetry,
    TextDelta,
    ToolCallStarted,
    TurnCompleted,
    TurnFailed,
    item_to_wire,
)

SECRET = "sk-test-SECRET-0123456789abcdef"

registry = ToolRegistry()


@registry.tool(parallel=True)
async def wait(seconds: float, tag: str = "") -> str:
    """Sleep, then answer.

    Args:
        seconds: How long to sleep.
        tag: Echoed back.
    """
    await trio.sleep(seconds)
    return f"waited {seconds} {tag}".strip()


@registry.freeform
async def note(input: str) -> str:
    """Take a free-form note."""
    return f"noted {len(input)} chars"


def settings(base_url: str, **kw: Any) -> ModelSettings:
    return ModelSettings(base_url=base_url, model="scripted-model", api_key=SECRET, **kw)


@asynccontextmanager
async def running(script: Script, rollout: Path | None = None, **session_kw: Any) -> AsyncIterator[tuple[Any, Session]]:
    model_kw = {k: session_kw.pop(k) for k in ("idle_timeout", "wire", "transport", "compaction") if k in session_kw}
    async with open_scripted_server(script) as server:
        async with open_session(
            model=settings(server.base_url, **model_kw), tools=registry, rollout=rollout, **session_kw
        ) as session:
            yield server, session


def assert_well_formed(items: list[Any]) -> None:
    calls = [i.call_id for i in items if isinstance(i, (FunctionCall, CustomToolCall))]
    outputs = [i.call_id for i in items if isinstance(i, (FunctionCallOutput, CustomToolCallOutput))]
    assert sorted(calls) == sorted(outputs) and len(set(calls)) == len(calls)
    for call_id in calls:  # each output after its call
        ci = next(
            i for i, x in enumerate(items) if isinstance(x, (FunctionCall, CustomToolCall)) and x.call_id == call_id
        )
        oi = next(
            i
            for i, x in enumerate(items)
            if isinstance(x, (FunctionCallOutput, CustomToolCallOutput)) and x.call_id == call_id
        )
        assert ci < oi


def input_of(request: Any) -> list[dict[str, Any]]:
    return request.body["input"] if "input" in request.body else request.body["messages"]


async def test_multi_step_turn_with_parallel_tool_calls(autojump_clock: trio.testing.MockClock) -> None:
    script = Script(
        [
            Reply(
                items=[
                    Text("Let me check.", chunk_size=4),
                    ScriptCall("c1", "wait", {"seconds": 3, "tag": "a"}, chunk_size=5),
                    ScriptCall("c2", "wait", {"seconds": 1, "tag": "b"}),
                    ScriptCustomCall("c3", "note", "free text here"),
                ],
                usage=Usage(input_tokens=100, output_tokens=20),
            ),
            Reply(items=[ScriptCall("c4", "wait", {"seconds": 2})], usage=Usage(input_tokens=150, output_tokens=5)),
            Reply(items=[Text("All three are done.", chunk_size=3)], usage=Usage(input_tokens=200, output_tokens=8)),
        ]
    )
    async with running(script) as (server, session):
        async with session.subscribe() as events:
            start = trio.current_time()
            outcome = await session.run("do things")
            seen = events.take_nowait()
        history = await session.history()
    assert outcome.status == "completed" and outcome.last_agent_message == "All three are done."
    assert trio.current_time() - start == pytest.approx(5.0, abs=0.5)  # 3 s (parallel) + 2 s, not 6
    assert_well_formed(history)
    assert [i.call_id for i in history if isinstance(i, (FunctionCallOutput, CustomToolCallOutput))] == [
        "c1",
        "c2",
        "c3",
        "c4",
    ]
    assert len(server.requests) == 3
    second = input_of(server.requests[1])
    assert [i.get("call_id") for i in second if i["type"].endswith("_output")] == ["c1", "c2", "c3"]
    assert session.total_usage.total_tokens == 483
    text = "".join(e.delta for e in seen if isinstance(e, TextDelta))
    assert text == "Let me check.All three are done."
    assert [e.call_id for e in seen if isinstance(e, ToolCallStarted)] == ["c1", "c2", "c3", "c4"]
    assert isinstance(seen[-1], TurnCompleted)


OK_REPLY = Reply(items=[Text("recovered", chunk_size=3)])
PARTIAL = [Text("some partial text that streams", chunk_size=2)]

# (fault reply, retried?, requested delay or None for backoff, final error class if not retried)
RETRIED = {
    "429 Retry-After": (Reply(faults=[HttpError.rate_limited(retry_after=1.5)]), 1.5),
    "429 try again in": (Reply(faults=[HttpError.rate_limited(try_again_in=0.8)]), 0.8),
    "503": (Reply(faults=[HttpError.server_error(503)]), None),
    "500 Retry-After": (Reply(faults=[HttpError.server_error(500, retry_after=2)]), 2.0),
    "drop after N events": (Reply(items=PARTIAL, faults=[Disconnect(after_events=6)]), None),
    "drop mid-event": (Reply(items=PARTIAL, faults=[Disconnect(after_events=4, mid_event=True)]), None),
    "clean close before completed": (Reply(items=PARTIAL, faults=[Disconnect(after_events=9, clean=True)]), None),
    "malformed SSE": (Reply(items=PARTIAL, faults=[Malformed(after_events=5)]), None),
    "failed rate_limit_exceeded": (
        Reply(items=PARTIAL, faults=[Failed("rate_limit_exceeded", "Rate limit reached. Please try again in 2.5s.")]),
        2.5,
    ),
    "failed server_error": (Reply(faults=[Failed("server_error")]), None),
}


# each transport alone (under "auto" a session with a fallback keeps its first retry quiet and
# moves to HTTP once the budget is spent: tests/actors/test_websocket_fallback.py)
TRANSPORTS = pytest.mark.parametrize("transport", ["http", "websocket"])


@TRANSPORTS
@pytest.mark.parametrize("name", sorted(RETRIED))
async def test_retryable_faults_recover_with_history_resent(
    name: str, transport: str, autojump_clock: trio.testing.MockClock
) -> None:
    fault, delay = RETRIED[name]
    async with running(Script([fault, OK_REPLY]), transport=transport) as (server, session):
        async with session.subscribe() as events:
            start = trio.current_time()
            outcome = await session.run("hello")
            seen = events.take_nowait()
        history = await session.history()
    assert outcome.status == "completed" and outcome.last_agent_message == "recovered"
    assert len(server.requests) == 2
    # the retry re-sent history: the first input plus what the failed attempt completed
    first, retry = input_of(server.requests[0]), input_of(server.requests[1])
    assert retry[: len(first)] == first
    assert [i["type"] for i in retry] == [item_to_wire(i)["type"] for i in history[:-1]]
    retries = [e for e in seen if isinstance(e, StreamRetry)]
    assert len(retries) == 1 and retries[0].message == "Reconnecting... 1/5"
    elapsed = trio.current_time() - start
    if delay is not None:
        assert retries[0].delay == pytest.approx(delay)
        assert elapsed >= delay
    else:
        assert 0.18 <= retries[0].delay <= 0.22
    # text of an item cut off by the fault was streamed to the UI but never recorded
    recorded = "".join(i.text() for i in history if isinstance(i, Message))
    assert recorded.count("recovered") == 1


@TRANSPORTS
async def test_idle_timeout_is_a_retryable_stream_error(transport: str, autojump_clock: trio.testing.MockClock) -> None:
    stall = Reply(items=PARTIAL, faults=[Stall(after_events=3, seconds=60)])
    async with running(Script([stall, OK_REPLY]), idle_timeout=5.0, transport=transport) as (server, session):
        async with session.subscribe() as events:
            start = trio.current_time()
            outcome = await session.run("hello")
            seen = events.take_nowait()
    assert outcome.status == "completed"
    retry = next(e for e in seen if isinstance(e, StreamRetry))
    assert "idle timeout" in retry.error
    assert 5.0 <= trio.current_time() - start < 60


async def test_a_slow_reader_is_not_an_idle_model(autojump_clock: trio.testing.MockClock) -> None:
    """The idle timeout counts only time waiting for bytes: a session slow to take the batches
    (the actor's reply buffer full) is not a silent model."""
    from kernel import Prompt

    script = Script([Reply(items=[Text("x" * 200, chunk_size=1)], events_per_write=1)])
    async with open_scripted_server(script) as server:
        async with open_model_actor(settings(server.base_url, idle_timeout=5.0)) as actor:
            async with actor.client().stream(Prompt(input=[Message.user("hi")])) as batches:
                await trio.sleep(60)  # the actor fills the reply buffer, then waits on the session
                seen = [e async for batch in batches for e in batch]
    assert sum(len(getattr(e, "delta", "")) for e in seen) == 200
    assert type(seen[-1]).__name__ == "Completed"


NOT_RETRIED = {
    "failed context_length_exceeded": (
        Reply(items=PARTIAL, faults=[Failed("context_length_exceeded", "too long")]),
        "ContextWindowExceeded",
    ),
    "400 context_length_exceeded": (Reply(faults=[HttpError.context_length_exceeded()]), "ContextWindowExceeded"),
    "429 usage_limit_reached": (
        Reply(
            faults=[
                HttpError.usage_limit_reached(
                    headers=rate_limit_headers(primary_used_percent=100, primary_window_minutes=300)
                )
            ]
        ),
        "UsageLimitReached",
    ),
    "failed insufficient_quota": (Reply(faults=[Failed("insufficient_quota", "no quota")]), "QuotaExceeded"),
    "failed usage_not_included": (Reply(faults=[Failed("usage_not_included", "not in plan")]), "UsageNotIncluded"),
    "401": (Reply(faults=[HttpError.unauthorized()]), "Unauthorized"),
    "403": (Reply(faults=[HttpError.unauthorized(status=403)]), "Unauthorized"),
    "400": (Reply(faults=[HttpError(status=400, message="bad parameter 'x'")]), "InvalidRequest"),
    "404": (Reply(faults=[HttpError(status=404, message="no such model")]), "InvalidRequest"),
    "422": (Reply(faults=[HttpError(status=422, message="unprocessable")]), "InvalidRequest"),
    "incomplete": (Reply(items=PARTIAL, faults=[Incomplete("max_output_tokens")]), "IncompleteResponse"),
}


@pytest.mark.parametrize("name", sorted(NOT_RETRIED))
async def test_non_retryable_faults_fail_at_once(name: str, autojump_clock: trio.testing.MockClock) -> None:
    fault, error_type = NOT_RETRIED[name]
    # (compaction off: the seed's behaviour, a window refusal fails the turn; with it, see
    # tests/actors/test_compaction.py)
    async with running(Script([fault, OK_REPLY]), compaction="off") as (server, session):
        async with session.subscribe() as events:
            outcome = await session.run("hello")
            seen = events.take_nowait()
    assert outcome.status == "failed" and type(outcome.error).__name__ == error_type
    assert len(server.requests) == 1
    assert not any(isinstance(e, StreamRetry) for e in seen)
    failed = [e for e in seen if isinstance(e, TurnFailed)]
    assert len(failed) == 1 and failed[0].error_type == error_type
    assert SECRET not in failed[0].error
    if error_type == "ContextWindowExceeded":
        assert session.context_full and any(isinstance(e, ContextWindowFull) for e in seen)
    if error_type == "UsageLimitReached":
        snapshot = next(e for e in seen if isinstance(e, RateLimitsUpdated)).snapshot
        assert snapshot.primary_used_percent == 100


@TRANSPORTS
async def test_retry_budget_is_spent_then_the_error_surfaces(
    transport: str, autojump_clock: trio.testing.MockClock
) -> None:
    drops = [Reply(items=PARTIAL, faults=[Disconnect(after_events=2)]) for _ in range(10)]
    async with running(Script(drops), max_retries=3, transport=transport) as (server, session):
        async with session.subscribe() as events:
            outcome = await session.run("hello")
            seen = events.take_nowait()
    assert outcome.status == "failed" and type(outcome.error).__name__ == "StreamError"
    assert len(server.requests) == 4  # first attempt + 3 retries
    assert [e.message for e in seen if isinstance(e, StreamRetry)] == [f"Reconnecting... {n}/3" for n in (1, 2, 3)]
    delays = [e.delay for e in seen if isinstance(e, StreamRetry)]
    for n, d in enumerate(delays, 1):
        assert 0.18 * 2 ** (n - 1) <= d <= 0.22 * 2 ** (n - 1)


async def test_drop_after_a_tool_call_keeps_the_call_and_resends_it(autojump_clock: trio.testing.MockClock) -> None:
    first = Reply(
        items=[ScriptCall("k1", "wait", {"seconds": 1}), Text("and more text", chunk_size=2)],
        faults=[Disconnect(after_events=12)],
    )
    script = Script([first, Reply(items=[Text("finished")]), Reply(items=[Text("extra")])])
    async with running(script) as (server, session):
        outcome = await session.run("go")
        history = await session.history()
    assert outcome.status == "completed"
    assert_well_formed(history)
    retry_input = input_of(server.requests[1])
    assert [i["type"] for i in retry_input] == ["message", "function_call", "function_call_output"]
    assert retry_input[2]["output"] == "waited 1.0"  # the call was drained, not aborted


async def test_interrupt_mid_stream_and_mid_tool(autojump_clock: trio.testing.MockClock) -> None:
    slow_text = Reply(items=[Text("x" * 200, chunk_size=1)], delta_delay=0.1)
    tool_turn = Reply(items=[ScriptCall("t1", "wait", {"seconds": 100}), ScriptCall("t2", "wait", {"seconds": 1})])
    script = Script([slow_text, tool_turn, Reply(items=[Text("after")])])
    async with running(script) as (server, session):
        handle = await session.submit("stream slowly")
        await trio.sleep(3)
        session.interrupt()
        outcome = await handle.result()
        assert outcome.status == "aborted"
        # the streamed part is kept as an incomplete assistant message (tests/actors/test_interrupted_text.py)
        streamed = await session.history()
        assert streamed[0] == Message.user("stream slowly") and len(streamed) == 2
        partial = streamed[1]
        assert isinstance(partial, Message) and partial.extra == {"status": "incomplete"}
        assert partial.text() and set(partial.text()) == {"x"}

        handle = await session.submit("run tools")
        await trio.sleep(5)
        session.interrupt()
        outcome = await handle.result()
        assert outcome.status == "aborted"
        history = await session.history()
        assert_well_formed(history)
        outputs = {i.call_id: i.output for i in history if isinstance(i, FunctionCallOutput)}
        assert outputs["t2"].body == "waited 1.0"
        assert outputs["t1"].body.startswith("aborted by user after") and outputs["t1"].success is False

        outcome = await session.run("continue")
        assert outcome.status == "completed"
        sent = input_of(server.requests[-1])
        assert sum(1 for i in sent if i["type"] == "function_call_output") == 2


async def test_rollout_resume_continues_with_nothing_lost(tmp_path: Path) -> None:
    rollout = tmp_path / "session.jsonl"
    script = Script(
        [
            Reply(items=[ScriptCall("r1", "wait", {"seconds": 0})]),
            Reply(items=[Text("first answer")]),
            Reply(items=[Text("second answer")]),
        ]
    )
    async with open_scripted_server(script) as server:
        async with open_session(model=settings(server.base_url), tools=registry, rollout=rollout) as session:
            assert (await session.run("first question")).status == "completed"
            before = await session.history()
        # the process state is gone; only the file remains
        resumed = await trio.to_thread.run_sync(resume, rollout)
        assert list(resumed.items) == before
        async with open_session(
            model=settings(server.base_url), tools=registry, rollout=rollout, resume=True
        ) as session:
            assert await session.history() == before
            outcome = await session.run("second question")
            after = await session.history()
    assert outcome.last_agent_message == "second answer"
    assert after[: len(before)] == before and after[-1] == after[-1]
    sent = input_of(server.requests[-1])
    assert [i["type"] for i in sent][: len(before)] == [item_to_wire(i)["type"] for i in before]
    text = rollout.read_text()
    assert SECRET not in text
    assert all(json.loads(line) for line in text.splitlines())


async def test_slow_subscriber_does_not_slow_the_turn(autojump_clock: trio.testing.MockClock) -> None:
    script = Script([Reply(items=[Text("y" * 3000, chunk_size=1)])])
    async with running(script) as (server, session):
        async with session.subscribe(max_buffer=16) as stalled, session.subscribe() as live:
            outcome = await session.run("stream")
            fast = live.take_nowait()
            # the turn finished while `stalled` never read; its buffer stayed small and lost no text
            assert stalled.buffered < 100
            slow = stalled.take_nowait()
    assert outcome.status == "completed"
    assert "".join(e.delta for e in slow if isinstance(e, TextDelta)) == "y" * 3000
    assert "".join(e.delta for e in fast if isinstance(e, TextDelta)) == "y" * 3000
    assert len(slow) < len(fast)


async def test_chat_completions_wire_runs_the_same_loop(autojump_clock: trio.testing.MockClock) -> None:
    script = Script(
        [
            Reply(items=[Text("calling", chunk_size=2), ScriptCall("w1", "wait", {"seconds": 1})]),
            Reply(items=[Text("chat done", chunk_size=2)]),
        ]
    )
    async with running(script, wire="chat") as (server, session):
        outcome = await session.run("hello")
        history = await session.history()
    assert outcome.status == "completed" and outcome.last_agent_message == "chat done"
    assert_well_formed(history)
    assert server.requests[0].path.endswith("/chat/completions")
    messages = input_of(server.requests[1])
    assert messages[-1]["role"] == "tool" and messages[-1]["tool_call_id"] == "w1"


async def test_one_model_actor_shared_by_many_sessions(autojump_clock: trio.testing.MockClock) -> None:
    script = Script([Reply(items=[Text("shared", chunk_size=2)])], cycle=True)
    async with open_scripted_server(script) as server:
        async with open_model_actor(settings(server.base_url)) as actor:
            outcomes: list[str] = []

            async def one() -> None:
                async with open_session(model=actor) as session:
                    outcomes.append((await session.run("hi")).status)

            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(one)
    assert outcomes == ["completed"] * 20
    assert actor.requests_started == 20


async def test_secret_never_leaks_into_events_errors_or_reprs(autojump_clock: trio.testing.MockClock) -> None:
    script = Script([Reply(faults=[HttpError.unauthorized(message=f"bad key {SECRET}")])])
    async with running(script) as (server, session):
        async with session.subscribe() as events:
            outcome = await session.run("hello")
            seen = events.take_nowait()
        assert SECRET not in repr(session.host.model) and SECRET not in repr(settings(server.base_url))
    assert server.requests[0].headers["authorization"] == "Bearer [REDACTED]"
    assert SECRET not in str(outcome.error) and SECRET not in repr(outcome.error)
    assert all(SECRET not in repr(e) for e in seen)


async def test_leaving_the_session_cancels_everything(autojump_clock: trio.testing.MockClock) -> None:
    script = Script([Reply(items=[ScriptCall("h1", "wait", {"seconds": 1000})])])
    async with running(script) as (server, session):
        handle = await session.submit("hang")
        queued = await session.submit("never runs")
        await trio.sleep(1)
    assert (await handle.result()).status == "aborted"
    assert (await queued.result()).status == "aborted"
    assert trio.current_time() < 10


async def test_sequential_requests_reuse_one_connection(autojump_clock: trio.testing.MockClock) -> None:
    script = Script([Reply(items=[Text("again", chunk_size=2)])], cycle=True)
    async with running(script) as (server, session):
        for _ in range(4):
            assert (await session.run("x")).status == "completed"
    assert len(server.requests) == 4
    assert server.connections_opened == 1  # the completed body is drained, so httpx keeps the connection


def _task_names() -> list[str]:
    names, stack = [], [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        names.append(task.name)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return names


async def test_an_idle_session_runs_no_task_until_it_needs_one(autojump_clock: trio.testing.MockClock) -> None:
    script = Script([Reply(items=[ScriptCall("w1", "wait", {"seconds": 0})]), Reply(items=[Text("done")])])
    async with open_scripted_server(script) as server:
        async with open_model_actor(settings(server.base_url)) as actor:
            before = sorted(_task_names())
            async with open_session(model=actor, tools=registry) as session:
                await trio.sleep(1)
                assert sorted(_task_names()) == before  # no turn runner, tool actor or history task
                outcome = await session.run("use the tool")
                assert outcome.status == "completed"
                names = _task_names()
                assert any(n.endswith("ToolActor.run") for n in names)  # started by the first call
                assert not any(n.endswith("_run_turns") for n in names)  # the runner left with the queue
            session_tasks = ("ToolActor.", "_run_turns", "HistoryActor.", "TurnHost.")
            assert not [n for n in _task_names() if any(k in n for k in session_tasks)]
