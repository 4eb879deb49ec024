"""The stress machine's stdlib MCP server stub, driven by the official SDK client over real pipes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import mcp_types as types
import pytest
import trio
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError

from actors.testing import _mcp_stub

ROOT = Path(__file__).resolve().parents[2]  # the repo root: `actors` imports from here


def params(*args: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "actors.testing._mcp_stub", *args],
        env={"PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )


@asynccontextmanager
async def stub_session(*args: str) -> AsyncIterator[ClientSession]:
    async with stdio_client(params(*args)) as (read, write), ClientSession(read, write) as session:
        with trio.fail_after(10):
            result = await session.initialize()
        assert result.server_info.name == "stress-stub"
        assert result.protocol_version == "2025-11-25"  # the client's own version, echoed
        assert result.capabilities.tools is not None and result.capabilities.tools.list_changed
        yield session


def text(result: types.CallToolResult) -> str:
    [content] = result.content
    assert isinstance(content, types.TextContent)
    return content.text


def child_with_tag(tag: str) -> int:
    """The PID of our child process whose argv carries ``--tag TAG``."""
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
        except OSError:
            continue
        if tag.encode() in argv and ppid == me:
            return int(entry.name)
    raise AssertionError(f"no child process tagged {tag!r}")


async def exit_status(pid: int) -> int:
    """Our child's exit status, peeked without reaping it (its transport still reaps it)."""
    with trio.fail_after(5):
        while True:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)  # noqa: ASYNC222 (WNOHANG: never blocks)
            if info is not None and info.si_pid == pid:
                assert info.si_code == os.CLD_EXITED
                return info.si_status
            await trio.sleep(0.01)


async def test_list_and_call_tools() -> None:
    async with stub_session() as session:
        first = await session.list_tools()
        assert [t.name for t in first.tools] == ["echo"] and first.next_cursor == "p2"
        second = await session.list_tools(params=types.PaginatedRequestParams(cursor=first.next_cursor))
        assert [t.name for t in second.tools] == ["count"] and second.next_cursor is None
        echo, count = first.tools[0], second.tools[0]
        assert echo.annotations is not None and echo.annotations.read_only_hint is True
        assert count.annotations is None or not count.annotations.read_only_hint
        assert echo.input_schema["properties"]["mode"]["enum"] == list(_mcp_stub._MODES)
        assert count.input_schema["properties"] == {"payload": {"type": "string"}}

        ok = await session.call_tool("echo", {"mode": "ok", "payload": "héllo"})
        assert text(ok) == "héllo" and not ok.is_error
        error = await session.call_tool("echo", {"mode": "error", "payload": "boom"})
        assert error.is_error and text(error) == "stub error: boom"

        # slow calls overlap each other and a quick one
        results: dict[str, str] = {}

        async def call(payload: str, mode: str) -> None:
            results[payload] = text(await session.call_tool("echo", {"mode": mode, "payload": payload}))

        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(call, f"slow{i}", "slow")
            nursery.start_soon(call, "quick", "ok")
        assert results == {"slow0": "slow0", "slow1": "slow1", "slow2": "slow2", "quick": "quick"}

        seen: list[tuple[float, float | None, str | None]] = []
        both = trio.Event()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append((progress, total, message))
            if len(seen) == 2:
                both.set()

        progressed = await session.call_tool(
            "echo", {"mode": "progress", "payload": "p"}, progress_callback=on_progress
        )
        assert text(progressed) == "p" and not progressed.is_error
        with trio.fail_after(5):  # the SDK runs progress callbacks as tasks of their own
            await both.wait()
        # (in either order: the SDK runs each callback as a task, and Trio may run them reversed)
        assert sorted(seen) == [(1.0, 2.0, "half"), (2.0, 2.0, "done")]
        # without a progress token it is just ok
        assert text(await session.call_tool("echo", {"mode": "progress", "payload": "q"})) == "q"

        assert [text(await session.call_tool("count", {"payload": f"c{i}"})) for i in (1, 2, 3)] == [
            "count=1 payload=c1",
            "count=2 payload=c2",
            "count=3 payload=c3",
        ]

        with pytest.raises(MCPError) as unknown:
            await session.call_tool("nope", {})
        assert unknown.value.error.code == types.INVALID_PARAMS and "nope" in unknown.value.error.message
        await session.send_ping()


async def test_hang_cancelled_then_ok() -> None:
    async with stub_session() as session:
        with trio.move_on_after(0.2) as scope:
            await session.call_tool("echo", {"mode": "hang", "payload": "h"})
        assert scope.cancelled_caught  # the SDK sent notifications/cancelled on the way out
        after = await session.call_tool("echo", {"mode": "ok", "payload": "after"})
        assert text(after) == "after"
        # a cancelled slow call is dropped too, and the connection carries on
        with trio.move_on_after(0.005):
            await session.call_tool("echo", {"mode": "slow", "payload": "s"})
        await trio.sleep(2 * _mcp_stub.SLOW_SECONDS)
        assert text(await session.call_tool("count", {})) == "count=1 payload="


async def test_crash_exits_with_status_3() -> None:
    tag = f"crash-{uuid.uuid4().hex}"
    async with stub_session("--tag", tag) as session:
        pid = child_with_tag(tag)
        with pytest.raises(MCPError) as closed:
            await session.call_tool("echo", {"mode": "crash", "payload": "x"})
        assert closed.value.error.code == types.CONNECTION_CLOSED
        assert await exit_status(pid) == _mcp_stub.CRASH_STATUS


async def test_raw_protocol_edges() -> None:
    """What the SDK never sends (junk lines, unknown methods and cursors, stray responses), then EOF
    with calls still hanging: the server exits with status 0 on its own."""
    lines = [
        b"not json",
        b"[]",
        b'{"jsonrpc":"2.0","id":1,"method":"resources/list"}',
        b'{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"cursor":"zz"}}',
        b'{"jsonrpc":"2.0","id":99,"result":{}}',
        b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":12345}}',
        b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"mode":"nope"}}}',
        b'{"jsonrpc":"2.0","id":"s","method":"ping"}',
        b'{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","arguments":{"mode":"hang"}}}',
    ]
    with trio.fail_after(10):
        done = await trio.run_process(
            _mcp_stub.stub_command("raw"),  # the fast way in: the file run as a script
            stdin=b"\n".join(lines) + b"\n",
            capture_stdout=True,
            capture_stderr=True,
        )
    assert done.returncode == 0 and done.stderr == b""
    replies = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["id"], r.get("error", {}).get("code")) for r in replies] == [
        (None, -32700),
        (None, -32600),
        (1, -32601),
        (2, -32602),
        (3, -32602),
        ("s", None),
    ]


async def test_cancelled_calls_get_no_answer() -> None:
    """The stub's side of cancellation: a cancelled slow call is never answered, an uncancelled one is."""
    calls = [
        {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "echo", "arguments": {"mode": "slow"}}}
        for i in (1, 2)
    ]
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}
    ping = {"jsonrpc": "2.0", "id": 3, "method": "ping"}
    # slow calls of a second: the cancel (in the same write) lands long before call 1 would end,
    # however loaded the machine (no timing assumption beyond that)
    process = await trio.lowlevel.open_process(
        _mcp_stub.stub_command("cancel", slow_seconds=1.0), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert process.stdin is not None and process.stdout is not None
        with trio.fail_after(20):
            await process.stdin.send_all(b"".join(json.dumps(m).encode() + b"\n" for m in [*calls, cancel, ping]))
            out = b""
            while out.count(b"\n") < 2:  # the ping's answer and call 2's
                out += await process.stdout.receive_some()
            # call 1 would have been answered with call 2 (both timers were of one second)
            with trio.move_on_after(0.3):
                out += await process.stdout.receive_some()
            await process.stdin.aclose()
            assert await process.wait() == 0
    finally:
        process.kill()  # (a no-op once it has exited)
    assert sorted(json.loads(line)["id"] for line in out.splitlines()) == [2, 3]
