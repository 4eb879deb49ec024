"""The server's side of an MCP conversation: elicitation, sampling, progress, cancellation —
against a real MCPServer (FastMCP) subprocess over stdio."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.model import ModelActor, ModelSettings
from actors.scripted import Reply, Script, open_scripted_server
from actors.tools.mcp import ElicitAnswer, McpServer, model_sampler, open_mcp_tools
from kernel import ToolProgress
from kernel.items import Message
from kernel.tools import RespondToModel

SERVER = str(Path(__file__).parent / "mcp_servers" / "interactive_server.py")


def interactive(**kw: Any) -> McpServer:
    return McpServer.stdio("ia", sys.executable, [SERVER], **kw)


async def call(tools: Any, name: str, args: str = "{}") -> Any:
    by_name = {t.name: t for t in tools}
    assert name in by_name, tools.errors
    return await by_name[name].invoke((args,), {})


# --- elicitation -----------------------------------------------------------------------------


async def test_elicitation_accept_decline_cancel() -> None:
    asked: list[tuple[str, str, dict[str, Any]]] = []
    answers = [ElicitAnswer.accept({"name": "Ada", "age": 36}), ElicitAnswer.decline(), ElicitAnswer.cancel()]

    async def elicit(server: str, message: str, schema: dict[str, Any]) -> ElicitAnswer:
        asked.append((server, message, schema))
        return answers[len(asked) - 1]

    with trio.fail_after(30):
        async with open_mcp_tools([interactive()], elicit=elicit) as tools:
            first = await call(tools, "mcp__ia__ask")
            second = await call(tools, "mcp__ia__ask")
            third = await call(tools, "mcp__ia__ask")
    assert first.to_text() == "hello Ada, 36"
    assert second.to_text() == "no answer: decline"
    assert third.to_text() == "no answer: cancel"
    server, message, schema = asked[0]
    assert server == "ia" and message == "Who are you?"
    assert set(schema["properties"]) == {"name", "age"}


async def test_elicitation_without_callback_declines() -> None:
    with trio.fail_after(30):
        async with open_mcp_tools([interactive()]) as tools:
            out = await call(tools, "mcp__ia__ask")
    assert out.to_text() == "no answer: decline"


async def test_elicitation_callback_failure_is_an_error_to_the_server() -> None:
    async def elicit(server: str, message: str, schema: dict[str, Any]) -> ElicitAnswer:
        raise RuntimeError("boom")

    with trio.fail_after(30):
        async with open_mcp_tools([interactive()], elicit=elicit) as tools:
            with pytest.raises(RespondToModel, match="elicitation failed: RuntimeError"):
                await call(tools, "mcp__ia__ask")
            assert tools.errors == {}  # still connected: an error answer is not a crash
            with pytest.raises(RespondToModel, match="elicitation failed") as again:
                await call(tools, "mcp__ia__ask")
    assert "restarted" not in str(again.value)


# --- sampling --------------------------------------------------------------------------------


async def test_sampling_callback() -> None:
    seen: list[Any] = []

    async def sample(server: str, messages: list[Message], system: str | None, max_tokens: int) -> Any:
        seen.append((server, [(m.role, m.text()) for m in messages], system, max_tokens))
        return "short", "test-model", None

    with trio.fail_after(30):
        async with open_mcp_tools([interactive()], sample=sample) as tools:
            out = await call(tools, "mcp__ia__summarise", '{"text": "a long story"}')
    assert out.to_text() == "model test-model said: short"
    assert seen == [("ia", [("user", "Summarise: a long story")], "Be brief.", 50)]


async def test_sampling_without_callback_is_an_error() -> None:
    with trio.fail_after(30):
        async with open_mcp_tools([interactive()]) as tools:
            out = await call(tools, "mcp__ia__summarise", '{"text": "x"}')
    assert (out.to_text() or "").startswith("sampling failed:")


async def test_model_sampler_serves_through_a_model_actor_and_declines_when_not_approved() -> None:
    script = Script([Reply(items=["a summary from the model"])])
    approvals: list[str] = []

    def approve(server: str, messages: list[Message], system: str | None) -> bool:
        approvals.append(server)
        return len(approvals) == 1  # the first request only

    with trio.fail_after(30):
        async with open_scripted_server(script) as model_server, trio.open_nursery() as nursery:
            settings = ModelSettings(
                base_url=model_server.base_url, model="scripted-model", api_key="sk-test-123456", transport="http"
            )
            actor = ModelActor(settings)
            await nursery.start(actor.run)
            sample = model_sampler(actor, approve)
            async with open_mcp_tools([interactive()], sample=sample) as tools:
                first = await call(tools, "mcp__ia__summarise", '{"text": "the story"}')
                second = await call(tools, "mcp__ia__summarise", '{"text": "again"}')
            nursery.cancel_scope.cancel()
    assert first.to_text() == "model scripted-model said: a summary from the model"
    body = model_server.requests[0].body
    assert body["instructions"] == "Be brief."
    assert "Summarise: the story" in str(body["input"])
    assert "tools" not in body or not body["tools"]
    assert len(model_server.requests) == 1
    text = second.to_text() or ""
    assert text.startswith("sampling failed:") and "declined" in text


# --- progress --------------------------------------------------------------------------------


async def test_progress_becomes_events() -> None:
    events: list[ToolProgress] = []

    async def on_progress(event: ToolProgress) -> None:
        events.append(event)

    with trio.fail_after(30):
        async with open_mcp_tools([interactive()], on_progress=on_progress) as tools:
            out = await call(tools, "mcp__ia__steps", '{"n": 3}')
    assert out.to_text() == "did 3 steps"
    assert events == [ToolProgress("mcp__ia__steps", float(i), 3.0, f"step {i}", server="ia") for i in (1, 2, 3)]


async def test_progress_without_callback_is_ignored() -> None:
    with trio.fail_after(30):
        async with open_mcp_tools([interactive()]) as tools:
            out = await call(tools, "mcp__ia__steps", '{"n": 3}')
    assert out.to_text() == "did 3 steps"


# --- cancellation ----------------------------------------------------------------------------


async def wait_for(path: Path, timeout: float = 10) -> str:
    with trio.fail_after(timeout):
        while not path.exists() or not path.read_text():
            await trio.sleep(0.05)
    return path.read_text()


async def test_timeout_sends_cancelled(tmp_path: Path) -> None:
    marker = tmp_path / "nap"
    with trio.fail_after(30):
        async with open_mcp_tools([interactive(tool_timeout=0.5)]) as tools:
            with pytest.raises(RespondToModel, match="timed out after 0.5s"):
                await call(tools, "mcp__ia__nap", f'{{"seconds": 30, "marker": "{marker}"}}')
            assert await wait_for(marker) == "cancelled"
            # the server is still usable
            marker2 = tmp_path / "nap2"
            done = await call(tools, "mcp__ia__nap", f'{{"seconds": 0.01, "marker": "{marker2}"}}')
    assert done.to_text() == "rested" and marker2.read_text() == "finished"


async def test_interrupt_sends_cancelled(tmp_path: Path) -> None:
    marker = tmp_path / "nap"
    with trio.fail_after(30):
        async with open_mcp_tools([interactive()]) as tools:
            with trio.move_on_after(0.5) as scope:  # the turn is interrupted
                await call(tools, "mcp__ia__nap", f'{{"seconds": 30, "marker": "{marker}"}}')
            assert scope.cancelled_caught
            assert await wait_for(marker) == "cancelled"


async def test_uncancelled_call_finishes(tmp_path: Path) -> None:
    marker = tmp_path / "nap"
    with trio.fail_after(30):
        async with open_mcp_tools([interactive()]) as tools:
            out = await call(tools, "mcp__ia__nap", f'{{"seconds": 0.2, "marker": "{marker}"}}')
    assert out.to_text() == "rested" and marker.read_text() == "finished"


async def test_a_session_publishes_progress_with_its_turn_and_keeps_a_rollout(tmp_path: Path) -> None:
    """open_session(mcp_servers=..., rollout=...): progress events reach subscribers tagged with the
    turn, elicitation goes through the session's callback, and the session closes cleanly."""
    from actors import open_session
    from actors.scripted import FunctionCall

    async def elicit(server: str, message: str, schema: dict[str, Any]) -> ElicitAnswer:
        return ElicitAnswer.accept({"name": "Grace", "age": 85})

    script = Script(
        [
            Reply(items=[FunctionCall("c1", "mcp__ia__steps", {"n": 3})]),
            Reply(items=[FunctionCall("c2", "mcp__ia__ask", {})]),
            Reply(items=["done"]),
        ]
    )
    with trio.fail_after(60):
        async with open_scripted_server(script) as server:
            settings = ModelSettings(base_url=server.base_url, model="m", transport="http")
            async with open_session(
                model=settings, mcp_servers=[interactive()], mcp_elicit=elicit, rollout=tmp_path / "r.jsonl"
            ) as session:
                async with session.stream("go") as turn:
                    events = [e async for e in turn]
    progress = [e for e in events if isinstance(e, ToolProgress)]
    assert len(progress) == 3 and {e.turn_id for e in progress} == {turn.turn_id}
    outputs = [i for i in server.requests[-1].body["input"] if i.get("type") == "function_call_output"]
    assert "hello Grace, 85" in str(outputs[-1])
