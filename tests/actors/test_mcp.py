"""MCP servers as tool sources: real subprocesses over real pipes, loopback HTTP, a scripted model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from actors.model import ModelSettings
from actors.scripted import FunctionCall as ScriptCall, Reply, Script, open_scripted_server
from actors.session import open_session
from actors.tools.mcp import McpServer, mcp_tool_name, open_mcp_tools, sanitize

DEMO = str(Path(__file__).parent / "mcp_servers" / "demo_server.py")


def demo(name: str = "srv", **kw: Any) -> McpServer:
    return McpServer.stdio(name, sys.executable, [DEMO], **kw)


def outputs(request: Any) -> dict[str, Any]:
    return {i["call_id"]: i["output"] for i in request.body["input"] if i.get("type") == "function_call_output"}


def tool_names(request: Any) -> list[str]:
    return [t["name"] for t in request.body.get("tools", [])]


@asynccontextmanager
async def running(script: Script, servers: list[McpServer]) -> AsyncIterator[tuple[Any, Any]]:
    async with open_scripted_server(script) as server:
        settings = ModelSettings(base_url=server.base_url, model="scripted-model", api_key="sk-test-123456")
        async with open_session(model=settings, mcp_servers=servers) as session:
            yield server, session


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie still answers kill(0): look at its state
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


# --- naming --------------------------------------------------------------------------------


def test_names_sanitised_hashed_unique() -> None:
    assert mcp_tool_name("srv", "echo") == "mcp__srv__echo"
    assert mcp_tool_name("my.server", "get file") == "mcp__my_server__get_file"
    assert sanitize("a/b:c") == "a_b_c"
    long = mcp_tool_name("srv", "x" * 100)
    assert len(long) == 64 and long.startswith("mcp__srv__xxx")
    assert long != mcp_tool_name("srv", "x" * 101)  # the hash keeps them apart
    first = mcp_tool_name("a.b", "t")
    second = mcp_tool_name("a_b", "t", taken={first})
    assert first == "mcp__a_b__t" and second != first and second.startswith("mcp__a_b__t_")
    import re

    for name in (long, first, second):
        assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name)


def test_filters_and_repr_hide_secrets() -> None:
    server = McpServer.stdio(
        "s", "cmd", env={"TOKEN": "hunter2-secret"}, enabled_tools=["a", "b"], disabled_tools=["b"]
    )
    assert server.allows("a") and not server.allows("b") and not server.allows("c")
    assert "hunter2" not in repr(server)
    http = McpServer.http("h", "http://127.0.0.1:1/mcp", headers={"X-Key": "topsecret-value"})
    assert "topsecret" not in repr(http)


# --- stdio, through a session -----------------------------------------------------------------


async def test_stdio_session_results_errors_and_list_changed() -> None:
    script = Script(
        [
            Reply(
                items=[
                    ScriptCall("c1", "mcp__srv__echo", {"text": "hi"}),
                    ScriptCall("c2", "mcp__srv__weather", {"city": "Oslo"}),
                    ScriptCall("c3", "mcp__srv__pixel", {}),
                    ScriptCall("c4", "mcp__srv__fail", {"reason": "because"}),
                    ScriptCall("c5", "mcp__srv__slow", {"seconds": 30}),
                    ScriptCall("c6", "mcp__srv__resources", {}),
                ]
            ),
            Reply(items=[ScriptCall("c7", "mcp__srv__grow", {})]),
            Reply(items=[ScriptCall("c8", "mcp__srv__extra", {"n": 7})]),
            Reply(items=["done"]),
        ]
    )
    async with running(script, [demo(tool_timeout=1, disabled_tools=["peek"])]) as (server, session):
        with trio.fail_after(20):
            outcome = await session.run("go")
    assert outcome.status == "completed"
    names = tool_names(server.requests[0])
    assert "mcp__srv__echo" in names and "mcp__srv__peek" not in names and "mcp__srv__extra" not in names
    echo_spec = next(t for t in server.requests[0].body["tools"] if t["name"] == "mcp__srv__echo")
    assert echo_spec["description"] == "Echo the text back."
    assert echo_spec["parameters"]["properties"]["text"]["type"] == "string"
    out = outputs(server.requests[1])
    assert out["c1"] == "echo: hi"
    assert '"celsius": 21.5' in out["c2"]
    assert isinstance(out["c3"], list) and out["c3"][0]["type"] == "input_image"
    assert out["c3"][0]["image_url"].startswith("data:image/png;base64,")
    assert "failed on purpose: because" in out["c4"]
    assert "timed out" in out["c5"] and "'srv'" in out["c5"]
    assert "file:///tmp/a.txt" in out["c6"] and "bee" in out["c6"]
    # list_changed: the new tool is listed in the very next request, and it runs
    assert "mcp__srv__extra" in tool_names(server.requests[2])
    assert outputs(server.requests[3])["c8"] == "extra 7"


async def test_crash_restart_and_no_process_outlives_the_session() -> None:
    script = Script(
        [
            Reply(items=[ScriptCall("c1", "mcp__srv__pid", {})]),
            Reply(items=[ScriptCall("c2", "mcp__srv__crash", {})]),
            Reply(items=[ScriptCall("c3", "mcp__srv__pid", {})]),
            Reply(items=["done"]),
        ]
    )
    async with running(script, [demo()]) as (server, session):
        with trio.fail_after(20):
            outcome = await session.run("go")
        assert outcome.status == "completed"
        first = int(outputs(server.requests[1])["c1"])
        crashed = outputs(server.requests[2])["c2"]
        second = int(outputs(server.requests[3])["c3"])
        assert "MCP server 'srv'" in crashed and "restarted" in crashed
        assert second != first and pid_gone(first)
    with trio.fail_after(10):
        while not pid_gone(second):
            await trio.sleep(0.05)


async def test_server_that_fails_to_start(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    bad = demo("bad", env={"DEMO_HANG_AT_START": "1", "DEMO_PID_FILE": str(pid_file)}, startup_timeout=0.5)
    script = Script(
        [
            Reply(items=[ScriptCall("c1", "mcp__bad__echo", {"text": "hi"})]),
            Reply(items=["still here"]),
        ]
    )
    async with running(script, [bad]) as (server, session):
        with trio.fail_after(20):
            outcome = await session.run("go")
        assert outcome.status == "completed" and outcome.last_agent_message == "still here"
        out = outputs(server.requests[1])["c1"]
        assert "MCP server 'bad'" in out and "did not start within 0.5s" in out
        assert "DEMO_PID_FILE" not in out and str(pid_file) not in out
    pid = int(pid_file.read_text())
    with trio.fail_after(10):
        while not pid_gone(pid):
            await trio.sleep(0.05)


async def test_missing_command_is_a_model_visible_error() -> None:
    script = Script([Reply(items=[ScriptCall("c1", "mcp__nope__x", {})]), Reply(items=["ok"])])
    servers = [McpServer.stdio("nope", "/nonexistent/mcp-server-binary")]
    async with running(script, servers) as (server, session):
        outcome = await session.run("go")
    assert outcome.status == "completed"
    assert "MCP server 'nope'" in outputs(server.requests[1])["c1"]


# --- streamable HTTP ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_streamable_http_server() -> None:
    port = free_port()
    proc = await trio.lowlevel.open_process([sys.executable, DEMO, "http", str(port)], stderr=subprocess.DEVNULL)
    try:
        with trio.fail_after(20):
            while True:
                try:
                    await trio.open_tcp_stream("127.0.0.1", port)
                    break
                except OSError:
                    await trio.sleep(0.05)
        os.environ["MCP_TEST_TOKEN"] = "tok-secret-value"
        server = McpServer.http("web", f"http://127.0.0.1:{port}/mcp", bearer_token_env_var="MCP_TEST_TOKEN")
        script = Script(
            [
                Reply(items=[ScriptCall("c1", "mcp__web__echo", {"text": "over http"})]),
                Reply(items=["done"]),
            ]
        )
        async with running(script, [server]) as (model, session):
            with trio.fail_after(20):
                outcome = await session.run("go")
        assert outcome.status == "completed"
        assert outputs(model.requests[1])["c1"] == "echo: over http"
    finally:
        os.environ.pop("MCP_TEST_TOKEN", None)
        proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()


# --- mcp-server-time from PyPI -------------------------------------------------------------------


async def test_mcp_server_time() -> None:
    server = McpServer.stdio("time", sys.executable, ["-m", "mcp_server_time", "--local-timezone", "UTC"])
    with trio.fail_after(20):
        async with open_mcp_tools([server]) as tools:
            by_name = {t.name: t for t in tools}
            assert "mcp__time__get_current_time" in by_name, tools.errors
            payload = await by_name["mcp__time__get_current_time"].invoke(('{"timezone": "UTC"}',), {})
    assert payload.success and "UTC" in (payload.to_text() or "")
