"""Session lifecycle (issue 16 parts 2-3): ``aclose``/``closed``/``wait_closed``, ``run_session`` in
the caller's nursery, ``session_id``, ``resume="auto"`` and opening errors raised as themselves."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors.history import ABORTED_OUTPUT_TEXT, RolloutError, resume
from actors.model import ModelSettings
from actors.scripted import FunctionCall as ScriptCall, Reply, Script, Text, open_scripted_server
from actors.session import Session, TurnHandle, open_session, run_session
from actors.tools import ToolRegistry
from kernel import FunctionCall, FunctionCallOutput, Message, ToolCallStarted

registry = ToolRegistry()


@registry.tool(parallel=True)
async def wait(seconds: float) -> str:
    """Sleep, then answer.

    Args:
        seconds: How long to sleep.
    """
    await trio.sleep(seconds)
    return f"waited {seconds}"


def settings(base_url: str) -> ModelSettings:
    return ModelSettings(base_url=base_url, model="scripted-model", api_key="sk-test-lifecycle-0123456789")


def header(rollout: Path) -> dict[str, Any]:
    first: dict[str, Any] = json.loads(rollout.read_text().splitlines()[0])
    return first


async def submit_until_tool_started(session: Session, *inputs: str) -> list[TurnHandle]:
    """Submit ``inputs``; return once the first turn's tool call runs (waiting on events, not
    on the clock: the autojump clock does not wait for the scripted server's bytes)."""
    async with session.subscribe() as events:
        handles = [await session.submit(i) for i in inputs]
        async for event in events:
            if isinstance(event, ToolCallStarted):
                break
    await trio.sleep(1)
    return handles


async def test_aclose_during_a_turn_leaves_a_rollout_that_resumes(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rollout = tmp_path / "s.jsonl"
    script = Script([Reply(items=[ScriptCall("c1", "wait", {"seconds": 1000})]), Reply(items=[Text("resumed fine")])])
    async with open_scripted_server(script) as server:
        async with open_session(model=settings(server.base_url), tools=registry, rollout=rollout) as session:
            handle, queued = await submit_until_tool_started(session, "hang", "never runs")
            assert not session.closed
            await session.aclose()
            assert session.closed
            assert (await handle.result()).status == "aborted"
            assert (await queued.result()).status == "aborted"
            with pytest.raises(trio.ClosedResourceError):
                await session.submit("too late")
            await session.aclose()  # idempotent
            await session.wait_closed()  # returns at once
            assert trio.current_time() < 10
        loaded = await trio.to_thread.run_sync(resume, rollout)
        items = list(loaded.items)
        assert items[0] == Message.user("hang")
        assert isinstance(items[1], FunctionCall) and items[1].call_id == "c1"
        assert isinstance(items[2], FunctionCallOutput) and items[2].call_id == "c1"
        assert items[2].output.body.startswith("aborted by user after")  # recorded by the turn
        assert loaded.added == () and ABORTED_OUTPUT_TEXT not in json.dumps([str(i) for i in items])  # no repair
        assert [e["type"] for e in loaded.events][-1] == "turn_aborted"
        async with open_session(model=settings(server.base_url), tools=registry, rollout=rollout, resume=True) as again:
            assert await again.history() == items
            outcome = await again.run("go on")
            assert outcome.last_agent_message == "resumed fine"
            assert again.session_id == loaded.meta.session_id


async def test_wait_closed_wakes_on_aclose_and_on_block_exit(autojump_clock: trio.testing.MockClock) -> None:
    script = Script([Reply(items=[Text("hi")])])
    woke: list[float] = []
    async with open_scripted_server(script) as server:
        async with trio.open_nursery() as nursery:
            async with open_session(model=settings(server.base_url)) as session:

                async def waiter(s: Session) -> None:
                    await s.wait_closed()
                    woke.append(trio.current_time())

                nursery.start_soon(waiter, session)
                await trio.sleep(5)
                assert not woke and not session.closed
            # leaving the block closes it too
            await trio.sleep(0.1)
            assert session.closed and woke == [5.0]


async def test_run_session_outlives_the_opening_function(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    script = Script([Reply(items=[Text("one")]), Reply(items=[Text("two")])])

    async def open_for(nursery: trio.Nursery, url: str) -> Session:
        session: Session = await nursery.start(
            functools.partial(run_session, model=settings(url), rollout=tmp_path / "a.jsonl", session_id="app-42")
        )
        return session

    async with open_scripted_server(script) as server:
        async with trio.open_nursery() as nursery:
            session = await open_for(nursery, server.base_url)
            assert session.session_id == "app-42"
            assert (await session.run("first")).last_agent_message == "one"
            await trio.sleep(100)
            assert (await session.run("second")).last_agent_message == "two"
            await session.aclose()
            assert session.closed
        # the nursery ended by itself: aclose() ended the session's task
    assert header(tmp_path / "a.jsonl")["session_id"] == "app-42"


async def test_run_session_closes_when_its_nursery_is_cancelled(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rollout = tmp_path / "c.jsonl"
    script = Script([Reply(items=[ScriptCall("c1", "wait", {"seconds": 1000})])])
    async with open_scripted_server(script) as server:
        async with trio.open_nursery() as nursery:
            session: Session = await nursery.start(
                functools.partial(run_session, model=settings(server.base_url), tools=registry, rollout=rollout)
            )
            (handle,) = await submit_until_tool_started(session, "hang")
            nursery.cancel_scope.cancel()
        assert session.closed
        assert (await handle.result()).status == "aborted"
    loaded = await trio.to_thread.run_sync(resume, rollout)
    assert loaded.added == ()  # the aborted output was recorded before the file closed
    assert [type(i) for i in loaded.items] == [Message, FunctionCall, FunctionCallOutput]


async def test_resume_auto_creates_then_resumes(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    rollout = tmp_path / "auto.jsonl"
    script = Script([Reply(items=[Text("first")]), Reply(items=[Text("second")])])
    async with open_scripted_server(script) as server:
        async with open_session(
            model=settings(server.base_url), rollout=rollout, resume="auto", session_id="conv-7"
        ) as session:
            assert await session.history() == []
            await session.run("q1")
            before = await session.history()
        assert header(rollout)["session_id"] == "conv-7"
        async with open_session(
            model=settings(server.base_url), rollout=rollout, resume="auto", session_id="conv-7"
        ) as session:
            assert session.session_id == "conv-7"
            assert await session.history() == before
            await session.run("q2")
        lines = rollout.read_text().splitlines()
        assert sum(1 for line in lines if json.loads(line)["type"] == "session_meta") == 1
    last = (await trio.to_thread.run_sync(resume, rollout)).items[-1]
    assert isinstance(last, Message) and last.content[0]["text"] == "second"


async def test_resume_auto_without_a_rollout_is_in_memory(autojump_clock: trio.testing.MockClock) -> None:
    async with open_session(model=settings("http://127.0.0.1:9/v1"), resume="auto") as session:
        assert session.rollout is None


async def test_session_id_defaults_to_a_uuid_recorded_in_the_header(tmp_path: Path) -> None:
    rollout = tmp_path / "h.jsonl"
    async with open_session(model=settings("http://127.0.0.1:9/v1"), rollout=rollout) as session:
        sid = session.session_id
    assert len(sid) == 36 and header(rollout)["session_id"] == sid


async def test_resuming_with_another_session_id_names_the_file(tmp_path: Path) -> None:
    rollout = tmp_path / "x.jsonl"
    async with open_session(model=settings("http://127.0.0.1:9/v1"), rollout=rollout, session_id="a"):
        pass
    with pytest.raises(ValueError, match=r"x\.jsonl.*'a'"):
        async with open_session(model=settings("http://127.0.0.1:9/v1"), rollout=rollout, resume=True, session_id="b"):
            pass


async def test_missing_rollout_with_resume_true_raises_file_not_found_directly(tmp_path: Path) -> None:
    rollout = tmp_path / "missing.jsonl"
    with pytest.raises(FileNotFoundError) as info:
        async with open_session(model=settings("http://127.0.0.1:9/v1"), rollout=rollout, resume=True):
            pass
    assert type(info.value) is FileNotFoundError and str(rollout) in str(info.value)
    async with trio.open_nursery() as nursery:  # through nursery.start as well
        with pytest.raises(FileNotFoundError):
            await nursery.start(
                functools.partial(run_session, model=settings("http://127.0.0.1:9/v1"), rollout=rollout, resume=True)
            )


async def test_corrupt_rollout_raises_rollout_error_directly(tmp_path: Path) -> None:
    rollout = tmp_path / "corrupt.jsonl"
    async with open_session(model=settings("http://127.0.0.1:9/v1"), rollout=rollout):
        pass
    rollout.write_text(rollout.read_text() + "{not json\n" + '{"type": "event"}\n')
    for mode in (True, "auto"):
        with pytest.raises(RolloutError) as info:
            async with open_session(model=settings("http://127.0.0.1:9/v1"), rollout=rollout, resume=mode):
                pass
        assert type(info.value) is RolloutError and "corrupt.jsonl" in str(info.value)


async def test_existing_rollout_without_resume_raises_file_exists_directly(tmp_path: Path) -> None:
    rollout = tmp_path / "there.jsonl"
    rollout.write_text("")
    with pytest.raises(FileExistsError, match="there.jsonl"):
        async with open_session(model=settings("http://127.0.0.1:9/v1"), rollout=rollout):
            pass


async def test_bad_resume_value_is_refused() -> None:
    with pytest.raises(ValueError, match="resume"):
        async with open_session(model=settings("http://127.0.0.1:9/v1"), resume="yes"):  # type: ignore[arg-type]
            pass


async def test_session_id_is_the_default_prompt_cache_key(autojump_clock: trio.testing.MockClock) -> None:
    from kernel import PromptConfig

    script = Script([Reply(items=[Text("one")]), Reply(items=[Text("two")])])
    async with open_scripted_server(script) as server:
        async with open_session(model=settings(server.base_url), session_id="conv-9") as session:
            await session.run("hi")
        async with open_session(
            model=settings(server.base_url), session_id="conv-9", prompt_config=PromptConfig(prompt_cache_key="mine")
        ) as session:
            await session.run("hi")
    assert [r.body["prompt_cache_key"] for r in server.requests] == ["conv-9", "mine"]


def test_run_session_takes_exactly_open_sessions_arguments() -> None:
    """run_session forwards every open_session argument by name: the two signatures stay in step."""
    import inspect

    opened = inspect.signature(open_session).parameters
    ran = dict(inspect.signature(run_session).parameters)
    assert ran.pop("task_status").kind is inspect.Parameter.KEYWORD_ONLY
    assert [(p.name, p.kind, p.default, p.annotation) for p in ran.values()] == [
        (p.name, p.kind, p.default, p.annotation) for p in opened.values()
    ]
    source = inspect.getsource(run_session)
    assert all(f"{name}={name}" in source for name in opened)
