"""Sessions that outlive the context window: the scripted server enforces a window (refusing as the
services do) and serves /responses/compact; the session compacts (remote, local, server-side) and
runs to its final answer, over both wires, and a resumed rollout goes on after compactions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors import ModelSettings, open_session
from actors.compaction import CompactionFailed
from actors.scripted import FunctionCall, RecordedRequest, Reply, open_scripted_server
from actors.tools import tool
from kernel import CompactionFinished, CompactionStarted, Message, TurnCompleted
from kernel.compaction import COMPACTION_PROMPT, SUMMARY_PREFIX
from kernel.testing import assert_well_formed

WINDOW = 1500
PART = "lorem ipsum dolor sit amet " * 45  # ~1,200 characters: ~330 tokens per tool output


@tool
def read(part: int) -> str:
    """Read one part of the report."""
    return f"part {part}: {PART}"


def _last_user_text(request: RecordedRequest) -> str:
    body = request.body if isinstance(request.body, dict) else {}
    items = request.full_input or body.get("input") or body.get("messages") or []
    for item in reversed(items):
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict))
    return ""


class Model:
    """A router: ``calls`` tool calls in a row, then the answer; a summary when asked for one."""

    def __init__(self, calls: int) -> None:
        self.calls = calls
        self.made = 0
        self.summaries = 0

    def __call__(self, request: RecordedRequest) -> Reply | str:
        if _last_user_text(request).strip() == COMPACTION_PROMPT.strip():
            self.summaries += 1
            return f"The user wants the report read; parts 0..{self.made - 1} were read and looked fine."
        if self.made < self.calls:
            self.made += 1
            return Reply(items=[FunctionCall(f"call_{self.made}", "read", {"part": self.made})])
        return f"All {self.made} parts read."


def settings(base_url: str, **kw: Any) -> ModelSettings:
    return ModelSettings(base_url=base_url, model="scripted-model", **kw)


async def _run(model: Model, rollout: Path | None = None, **kw: Any) -> tuple[Any, list[Any], Any]:
    server_kw = {k: kw.pop(k) for k in ("compact",) if k in kw}
    async with open_scripted_server(model, context_window=WINDOW, **server_kw) as server:
        async with open_session(model=settings(server.base_url, **kw), tools=[read], rollout=rollout) as session:
            async with session.stream("read the whole report") as turn:
                events = [e async for e in turn]
            history = await session.history()
    assert turn.outcome is not None
    assert_well_formed(history)
    return turn.outcome, events, server


@pytest.mark.parametrize("transport", ["auto", "websocket", "http"])
async def test_remote_compaction_on_refusal_reaches_the_answer(
    transport: str, autojump_clock: trio.testing.MockClock
) -> None:
    model = Model(calls=10)  # ~3,300 tokens of tool output: more than twice the window
    outcome, events, server = await _run(model, transport=transport)
    assert outcome.status == "completed" and outcome.last_agent_message == "All 10 parts read."
    assert server.window_refusals >= 1 and server.compactions >= 1 and model.summaries == 0
    finished = [e for e in events if isinstance(e, CompactionFinished)]
    assert finished and all(e.mode == "remote" and e.error is None for e in finished)
    assert all(e.tokens_after < e.tokens_before for e in finished)
    assert len([e for e in events if isinstance(e, CompactionStarted)]) == len(finished)
    assert sum(isinstance(e, TurnCompleted) for e in events) == 1


async def test_the_threshold_compacts_before_any_refusal(autojump_clock: trio.testing.MockClock) -> None:
    model = Model(calls=10)
    outcome, events, server = await _run(model, context_window=WINDOW)  # threshold: 0.9 of it
    assert outcome.last_agent_message == "All 10 parts read."
    assert server.window_refusals == 0 and server.compactions >= 1
    assert {e.reason for e in events if isinstance(e, CompactionStarted)} == {"threshold"}


async def test_local_compaction_when_the_endpoint_has_no_compact_route(
    autojump_clock: trio.testing.MockClock,
) -> None:
    model = Model(calls=10)
    outcome, events, server = await _run(model, compact=False, transport="http")
    assert outcome.last_agent_message == "All 10 parts read."
    assert model.summaries >= 1 and server.compactions == 0
    finished = [e for e in events if isinstance(e, CompactionFinished)]
    assert finished and {e.mode for e in finished} == {"local"}
    # the 404 is remembered (by the session's model actor, with the HTTP status on the error)
    assert len(finished) >= 2 and sum(r.endpoint == "compact" for r in server.requests) == 1


async def test_local_compaction_on_the_chat_wire(autojump_clock: trio.testing.MockClock) -> None:
    model = Model(calls=10)
    outcome, events, server = await _run(model, wire="chat")
    assert outcome.last_agent_message == "All 10 parts read."
    assert model.summaries >= 1 and server.window_refusals >= 1
    assert {e.mode for e in events if isinstance(e, CompactionFinished)} == {"local"}


async def test_the_rollout_records_compactions_and_a_resume_goes_on(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rollout = tmp_path / "session.jsonl"
    model = Model(calls=10)
    outcome, _, _ = await _run(model, rollout=rollout, transport="http")
    assert outcome.status == "completed"
    records = [json.loads(line) for line in rollout.read_text().splitlines()]
    compacted = [r for r in records if r["type"] == "compacted"]
    assert compacted and all(r["tokens_after"] < r["tokens_before"] for r in compacted)
    after_last = records[records.index(compacted[-1]) + 1 :]
    async with open_scripted_server(Model(calls=0), context_window=WINDOW) as server:
        async with open_session(model=settings(server.base_url), tools=[read], rollout=rollout, resume=True) as session:
            resumed = await session.history()
            # the history is the last compaction's items plus what came after it
            expected = len(compacted[-1]["items"]) + sum(r["type"] == "item" for r in after_last)
            assert len(resumed) == expected
            again = await session.run("and now?")
    assert again.status == "completed" and again.last_agent_message == "All 0 parts read."


async def test_session_compact_on_demand_and_a_failure_says_why(autojump_clock: trio.testing.MockClock) -> None:
    model = Model(calls=2)
    async with open_scripted_server(model, compact=False) as server:
        async with open_session(model=settings(server.base_url, transport="http"), tools=[read]) as session:
            await session.run("read a little")
            before = await session.history()
            assert await session.compact()
            after = await session.history()
            assert isinstance(after[-1], Message) and after[-1].text().startswith(SUMMARY_PREFIX.strip()[:20])
            assert len(after) < len(before)
            model.summaries = 0
    async with open_scripted_server(lambda request: Reply(items=[])) as server:  # an empty summary
        async with open_session(model=settings(server.base_url, transport="http", compaction="local")) as session:
            await session.run("hi")
            unchanged = await session.history()
            with pytest.raises(CompactionFailed, match="empty summary"):
                await session.compact()
            assert await session.history() == unchanged


async def test_server_side_compaction_drops_what_precedes_the_compaction_item(
    autojump_clock: trio.testing.MockClock,
) -> None:
    model = Model(calls=10)
    outcome, events, server = await _run(model, compaction="server", context_window=WINDOW, transport="http")
    assert outcome.last_agent_message == "All 10 parts read."
    assert server.server_compactions >= 1 and server.window_refusals == 0
    assert {e.mode for e in events if isinstance(e, CompactionFinished)} == {"server"}


async def test_after_a_compaction_the_websocket_starts_a_new_chain(autojump_clock: trio.testing.MockClock) -> None:
    model = Model(calls=10)
    outcome, events, server = await _run(model, transport="websocket")
    assert outcome.status == "completed"
    sent_after_compaction = []
    waiting = False
    for e in events:
        if isinstance(e, CompactionFinished):
            waiting = True
        elif waiting and type(e).__name__ == "RequestSent":
            sent_after_compaction.append(e.incremental)
            waiting = False
    assert sent_after_compaction and not any(sent_after_compaction)  # the full input, no previous_response_id
    assert any(type(e).__name__ == "RequestSent" and e.incremental for e in events)


async def test_an_interrupt_during_compaction_leaves_the_old_history(autojump_clock: trio.testing.MockClock) -> None:
    slow_summary = Reply(items=["a summary that takes its time " * 5], delta_delay=1.0)
    model = Model(calls=10)

    def router(request: RecordedRequest) -> Reply | str:
        if _last_user_text(request).strip() == COMPACTION_PROMPT.strip():
            return slow_summary
        return model(request)

    async with open_scripted_server(router, context_window=WINDOW, compact=False) as server:
        async with open_session(model=settings(server.base_url, transport="http"), tools=[read]) as session:
            async with session.stream("read the whole report") as turn:
                async for event in turn:
                    if isinstance(event, CompactionStarted):
                        before = await session.history()
                        turn.interrupt()
            assert turn.outcome is not None and turn.outcome.status == "aborted"
            after = await session.history()
    assert after == before  # the summary never came: the history is the one before the compaction
    assert_well_formed(after)
    assert server.compactions == 0
