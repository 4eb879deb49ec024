"""MCP servers shared by sessions (one process serving many sessions, as a batch worker does),
progress routed to the session whose call it is, and sampling usage in the session's totals —
against real server processes (the stdlib stub, the FastMCP interactive server) and a scripted
model over loopback HTTP."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.model import ModelSettings
from actors.scripted import FunctionCall, Reply, Script, Usage, open_scripted_server
from actors.session import open_session
from actors.testing._mcp_stub import stub_command
from actors.tools.mcp import McpServer, open_mcp_tools
from kernel import ToolProgress, TurnOutcome
from kernel.events import Event

from .test_mcp import pid_gone

INTERACTIVE = str(Path(__file__).parent / "mcp_servers" / "interactive_server.py")


def stub(name: str = "stub", tag: str = "shared-test", **kw: Any) -> McpServer:
    command = stub_command(tag)
    return McpServer.stdio(name, command[0], command[1:], **kw)


def stub_pids(tag: str) -> list[int]:
    """Live (non-zombie) processes whose command line carries ``tag``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if tag.encode() in argv and not pid_gone(int(entry.name)):
            found.append(int(entry.name))
    return found


def outputs(request: Any) -> list[str]:
    return [str(i["output"]) for i in request.body["input"] if i.get("type") == "function_call_output"]


async def run_turn(session: Any, text: str) -> tuple[TurnOutcome, list[Event]]:
    async with session.stream(text) as turn:
        events = [e async for e in turn]
    assert turn.outcome is not None
    return turn.outcome, events


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the server process in /proc")
async def test_sessions_share_one_server_process_and_get_their_own_progress(tmp_path: Path) -> None:
    tag = f"shared-{id(tmp_path)}"
    script = Script(
        [
            # session A counts, then echoes with progress; session B counts: one process counts both
            Reply(items=[FunctionCall("a1", "mcp__stub__count", {"payload": "A"})]),
            Reply(items=["A done"]),
            Reply(items=[FunctionCall("b1", "mcp__stub__count", {"payload": "B"})]),
            Reply(items=["B done"]),
            Reply(items=[FunctionCall("a2", "mcp__stub__echo", {"mode": "progress", "payload": "p"})]),
            Reply(items=["A again"]),
        ]
    )
    with trio.fail_after(60):
        async with open_scripted_server(script) as server, open_mcp_tools([stub(tag=tag)]) as shared:
            assert len(stub_pids(tag)) == 1
            settings = ModelSettings(base_url=server.base_url, model="m", transport="http")
            async with (
                open_session(model=settings, mcp_servers=[shared]) as a,
                open_session(model=settings, mcp_servers=[shared]) as b,
            ):
                async with b.subscribe() as b_events:
                    first, _ = await run_turn(a, "count")
                    assert outputs(server.requests[-1]) == ["count=1 payload=A"]
                    second, _ = await run_turn(b, "count too")
                    assert outputs(server.requests[-1]) == ["count=2 payload=B"]  # the same process
                    third, a_events = await run_turn(a, "echo")
                    seen_by_b = b_events.take_nowait()
            assert [o.status for o in (first, second, third)] == ["completed"] * 3
            progress = [e for e in a_events if isinstance(e, ToolProgress)]
            assert [(e.progress, e.turn_id) for e in progress] == [(1.0, third.turn_id), (2.0, third.turn_id)]
            assert not any(isinstance(e, ToolProgress) for e in seen_by_b)  # not the other session's
            # the sessions ended; the shared server goes on and stopped following them
            assert len(stub_pids(tag)) == 1 and shared.on_change == []
            async with open_session(model=settings, mcp_servers=[shared]) as c:
                assert "mcp__stub__count" in {t.name for t in c.host.tool_config.tools}
        with trio.move_on_after(5):
            while stub_pids(tag):
                await trio.sleep(0.01)
        assert stub_pids(tag) == []  # gone with the block that started it


async def test_own_and_shared_servers_side_by_side_and_name_clashes(tmp_path: Path) -> None:
    script = Script(
        [
            Reply(items=[FunctionCall("c1", "mcp__mine__echo", {"payload": "own"})]),
            Reply(items=[FunctionCall("c2", "mcp__stub__echo", {"payload": "shared"})]),
            Reply(items=["both"]),
        ]
    )
    with trio.fail_after(60):
        async with open_scripted_server(script) as server, open_mcp_tools([stub()]) as shared:
            settings = ModelSettings(base_url=server.base_url, model="m", transport="http")
            async with open_session(model=settings, mcp_servers=[stub("mine", tag="own-test"), shared]) as session:
                outcome = await session.run("go")
            assert outcome.last_agent_message == "both"
            assert outputs(server.requests[-1]) == ["own", "shared"]
            with pytest.raises(ValueError, match="unique"):
                async with open_session(model=settings, mcp_servers=[stub(), shared]):
                    pass  # pragma: no cover
            with pytest.raises(TypeError, match="McpServer or McpTools"):
                async with open_session(model=settings, mcp_servers=["stub"]):  # type: ignore[list-item]
                    pass  # pragma: no cover


async def test_sampling_usage_counts_in_the_session_totals() -> None:
    """A server's sampling request runs on the session's model; its usage is added to the
    session's total and published as a TokenUsageUpdated of the running turn."""
    from kernel.events import TokenUsageUpdated

    script = Script(
        [
            Reply(
                items=[FunctionCall("c1", "mcp__ia__summarise", {"text": "a long text"})], usage=Usage(input_tokens=10)
            ),
            Reply(items=["short"], usage=Usage(input_tokens=7, output_tokens=3)),  # the sampling request
            Reply(items=["summarised"], usage=Usage(input_tokens=20, output_tokens=1)),
        ]
    )
    asked: list[str] = []

    def approve(server: str, messages: Any, system: str | None) -> bool:
        asked.append(server)
        return True

    with trio.fail_after(60):
        async with open_scripted_server(script) as server:
            settings = ModelSettings(base_url=server.base_url, model="m", transport="http")
            async with open_session(
                model=settings,
                mcp_servers=[McpServer.stdio("ia", sys.executable, [INTERACTIVE])],
                mcp_sample_approve=approve,
            ) as session:
                outcome, events = await run_turn(session, "summarise")
                total = session.total_usage
    assert outcome.last_agent_message == "summarised" and asked == ["ia"]
    assert server.requests[1].body["max_output_tokens"] == 50  # the server's maxTokens bounds it
    assert "model m said: short" in outputs(server.requests[-1])[0]
    assert (total.input_tokens, total.output_tokens) == (37, 4)
    updates = [e for e in events if isinstance(e, TokenUsageUpdated)]
    assert (updates[1].last.input_tokens, updates[1].turn_id) == (7, outcome.turn_id)
