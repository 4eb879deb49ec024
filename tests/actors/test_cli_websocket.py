"""``agent-kernel exec`` with no transport flag against an endpoint with WebSocket mode (the scripted
server on 127.0.0.1, in this process; the CLI a real subprocess): incremental input, a socket
dropped mid-stream, an upgrade refused, every socket failing."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import trio

from actors.scripted import (
    Disconnect,
    FunctionCall,
    RefuseUpgrade,
    Reply,
    Script,
    Text,
    open_scripted_server,
)

CLI = [sys.executable, "-m", "actors.cli"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(XDG_DATA_HOME=str(tmp_path / "xdg"), TMPDIR=str(tmp_path), NO_COLOR="1", PYTHONDONTWRITEBYTECODE="1")
    return env


async def _exec(tmp_path: Path, base_url: str, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    workspace = tmp_path / "ws"
    workspace.mkdir(exist_ok=True)
    result = await trio.run_process(
        [*CLI, "exec", "look around", "--base-url", base_url, "--model", "m", "--cwd", str(workspace), "--json", *args],
        capture_stdout=True,
        capture_stderr=True,
        stdin=b"",
        check=False,
        env=_env(tmp_path),
    )
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    return result.returncode, lines, result.stderr.decode()


def _ls(call_id: str) -> FunctionCall:
    return FunctionCall(call_id, "shell", {"command": ["ls"]})


def _summary(lines: list[dict[str, Any]]) -> dict[str, Any]:
    return next(r for r in lines if r["type"] == "summary")


async def test_every_request_after_the_first_is_incremental(tmp_path: Path) -> None:
    script = Script([Reply(items=[_ls("c1")]), Reply(items=[_ls("c2")]), Reply(items=[Text("Two looks, all fine.")])])
    async with open_scripted_server(script) as server:
        code, lines, stderr = await _exec(tmp_path, server.base_url)
    assert code == 0, stderr
    assert _summary(lines)["last_agent_message"] == "Two looks, all fine."
    requests = [r for r in server.requests if r.endpoint == "responses"]
    assert [r.transport for r in requests] == ["websocket"] * 3
    assert "previous_response_id" not in requests[0].body
    for r in requests[1:]:
        assert r.body["previous_response_id"] and len(r.body["input"]) == 1  # the call's output only
        assert r.body["input"][0]["type"] == "function_call_output"
    assert server.websocket_connections_opened == 1
    sent = [(r["transport"], r["incremental"]) for r in lines if r["type"] == "request_sent"]
    assert sent == [("websocket", False), ("websocket", True), ("websocket", True)]


async def test_a_socket_dropped_mid_stream_is_retried_and_the_turn_finishes(tmp_path: Path) -> None:
    dropped = Reply(items=[Text("I will look", chunk_size=2)], faults=[Disconnect(after_events=4)])
    script = Script([Reply(items=[_ls("c1")]), dropped, Reply(items=[Text("Finished after the drop.")])])
    async with open_scripted_server(script) as server:
        code, lines, stderr = await _exec(tmp_path, server.base_url)
    assert code == 0, stderr
    assert _summary(lines)["last_agent_message"] == "Finished after the drop."
    requests = [r for r in server.requests if r.endpoint == "responses"]
    assert len(requests) == 3 and server.websocket_connections_opened == 2
    assert "previous_response_id" not in requests[2].body  # a retry sends the full input, on a new socket


async def test_a_refused_upgrade_goes_on_over_http(tmp_path: Path) -> None:
    script = Script([Reply(items=[_ls("c1")]), Reply(items=[Text("Done over HTTP.")])])
    async with open_scripted_server(script, websocket=RefuseUpgrade(status=404)) as server:
        code, lines, stderr = await _exec(tmp_path, server.base_url)
    assert code == 0, stderr
    assert _summary(lines)["last_agent_message"] == "Done over HTTP."
    assert [r.transport for r in server.requests if r.endpoint == "responses"] == ["http", "http"]
    assert server.upgrades_refused == 1  # remembered: the follow-up went straight to HTTP
    assert not any(r["type"] in ("stream_retry", "fallback_warning") for r in lines)


async def test_every_socket_failing_falls_back_after_the_budget_and_says_so(tmp_path: Path) -> None:
    drop = Reply(items=[Text("cut", chunk_size=1)], faults=[Disconnect(after_events=2)])
    # three attempts over WebSocket (--max-retries 2), then HTTP for the rest of the session
    script = Script([drop, drop, drop, Reply(items=[_ls("c1")]), Reply(items=[Text("Saved by HTTP.")])])
    async with open_scripted_server(script) as server:
        code, lines, stderr = await _exec(tmp_path, server.base_url, "--max-retries", "2")
    assert code == 0, stderr
    assert _summary(lines)["last_agent_message"] == "Saved by HTTP."
    transports = [r.transport for r in server.requests if r.endpoint == "responses"]
    assert transports == ["websocket"] * 3 + ["http"] * 2
    warnings = [r for r in lines if r["type"] == "fallback_warning"]
    assert len(warnings) == 1 and "Falling back from WebSockets to HTTPS transport" in warnings[0]["message"]
    # which transport served each request, in the event stream and so in the rollout
    assert [r["transport"] for r in lines if r["type"] == "request_sent"] == ["websocket"] * 3 + ["http"] * 2
    async with open_scripted_server(script) as server:  # without --json the warning is on stderr
        workspace = tmp_path / "plain"
        workspace.mkdir()
        result = await trio.run_process(
            [*CLI, "exec", "look", "--base-url", server.base_url, "--model", "m", "--cwd", str(workspace)]
            + ["--max-retries", "2"],
            capture_stdout=True,
            capture_stderr=True,
            stdin=b"",
            check=False,
            env=_env(tmp_path),
        )
    shown = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0 and "Falling back from WebSockets to HTTPS transport" in shown
