"""Scripts for the scripted model server: the JSON form, its errors, and the command-line server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from actors.scripted import (
    CustomToolCall,
    Disconnect,
    ErrorEvent,
    Failed,
    FunctionCall,
    HttpError,
    Incomplete,
    Malformed,
    RawItem,
    Reasoning,
    Reply,
    Script,
    ScriptError,
    Stall,
    Text,
    Usage,
)

from ._scripted_helpers import first_line, post

REPO = Path(__file__).resolve().parents[2]


# ---- JSON scripts and the CLI --------------------------------------------------------------------

JSON_SCRIPT: dict[str, Any] = {
    "model": "gpt-scripted",
    "cycle": True,
    "default": "bye",
    "replies": [
        "plain text",
        {
            "items": [
                {"type": "reasoning", "summary": ["thinking"], "chunk_size": 3},
                {"type": "text", "text": "Hello world", "chunk_size": 5, "phase": "final_answer"},
                {
                    "type": "function_call",
                    "call_id": "call_1",
                    "name": "shell",
                    "arguments": {"cmd": "ls"},
                },
                {
                    "type": "custom_tool_call",
                    "call_id": "call_2",
                    "name": "apply_patch",
                    "input": "p",
                },
                {"type": "raw", "item": {"type": "web_search_call", "id": "ws_1"}},
            ],
            "usage": {
                "input_tokens": 10,
                "cached_tokens": 2,
                "output_tokens": 5,
                "reasoning_tokens": 1,
            },
            "end_turn": True,
            "headers": {"x-codex-primary-used-percent": 12},
            "delta_delay": 0.25,
            "events_per_write": 4,
        },
        {"faults": [{"kind": "rate_limited", "retry_after": 1.5}]},
        {"faults": [{"kind": "usage_limit_reached", "plan_type": "team", "resets_at": 123}]},
        {
            "faults": [
                {
                    "kind": "http_error",
                    "status": 503,
                    "message": "overloaded",
                    "type": "server_error",
                }
            ]
        },
        {"faults": [{"kind": "context_length_exceeded"}]},
        {
            "faults": [
                {"kind": "server_error", "status": 502},
            ]
        },
        {"faults": [{"kind": "unauthorized"}]},
        {
            "items": ["x"],
            "faults": [{"kind": "failed", "code": "insufficient_quota", "message": "no"}],
        },
        {"faults": [{"kind": "incomplete", "reason": "content_filter"}]},
        {"faults": [{"kind": "error_event", "code": "c", "message": "m"}]},
        {
            "faults": [
                {"kind": "malformed", "after_events": 1},
                {"kind": "stall", "after_events": 2, "seconds": 3},
                {"kind": "disconnect", "after_events": 3, "mid_event": True},
            ]
        },
    ],
}

PY_SCRIPT = Script(
    [
        Reply(items=[Text("plain text")]),
        Reply(
            items=[
                Reasoning(["thinking"], chunk_size=3),
                Text("Hello world", chunk_size=5, phase="final_answer"),
                FunctionCall("call_1", "shell", '{"cmd":"ls"}'),
                CustomToolCall("call_2", "apply_patch", "p"),
                RawItem({"type": "web_search_call", "id": "ws_1"}),
            ],
            usage=Usage(input_tokens=10, cached_tokens=2, output_tokens=5, reasoning_tokens=1),
            end_turn=True,
            headers={"x-codex-primary-used-percent": "12"},
            delta_delay=0.25,
            events_per_write=4,
        ),
        Reply(faults=[HttpError.rate_limited(retry_after=1.5)]),
        Reply(faults=[HttpError.usage_limit_reached(plan_type="team", resets_at=123)]),
        Reply(faults=[HttpError(status=503, message="overloaded", type="server_error")]),
        Reply(faults=[HttpError.context_length_exceeded()]),
        Reply(faults=[HttpError.server_error(502)]),
        Reply(faults=[HttpError.unauthorized()]),
        Reply(items=["x"], faults=[Failed("insufficient_quota", "no")]),
        Reply(faults=[Incomplete("content_filter")]),
        Reply(faults=[ErrorEvent("c", "m")]),
        Reply(
            faults=[
                Malformed(after_events=1),
                Stall(after_events=2, seconds=3),
                Disconnect(after_events=3, mid_event=True),
            ]
        ),
    ],
    cycle=True,
    default=Reply(items=[Text("bye")]),
    model="gpt-scripted",
)


def test_json_script_matches_the_python_form(tmp_path: Path) -> None:
    assert Script.from_json(JSON_SCRIPT) == PY_SCRIPT
    path = tmp_path / "script.json"
    path.write_text(json.dumps(JSON_SCRIPT))
    assert Script.from_json(path) == PY_SCRIPT
    assert Script.from_json(str(path)) == PY_SCRIPT
    assert Script.from_json(["a", {"items": ["b"]}]) == Script(["a", "b"])


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"replies": [{"itemz": []}]}, r"replies\[0\]: unknown key\(s\) \['itemz'\]"),
        ({"replies": [{"faults": [{"kind": "stal"}]}]}, r"replies\[0\]\.faults\[0\]: kind 'stal'"),
        (
            {"replies": [{"items": [{"type": "text"}]}]},
            r"replies\[0\]\.items\[0\]: missing key\(s\) \['text'\]",
        ),
        (
            {"replies": [{"faults": [{"kind": "stall", "after_events": 1, "seconds": -1}]}]},
            "seconds must be >= 0",
        ),
        ({"replies": "nope"}, "expected a list"),
        (42, "expected a JSON object"),
    ],
)
def test_json_script_errors_name_the_place(bad: Any, message: str) -> None:
    with pytest.raises(ScriptError, match=message):
        Script.from_json(bad)


async def test_cli_serves_a_script(tmp_path: Path) -> None:
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"replies": [{"items": [{"type": "text", "text": "from the cli", "chunk_size": 4}]}]}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "actors.scripted", "--port", "0", "--script", str(path)],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env=env,
    )
    try:
        line = await first_line(proc)
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ")
        async with httpx.AsyncClient() as client:
            got = await post(client, url + "/v1/responses")
        item = got.of("response.output_item.done")[0]["item"]
        assert item["content"][0]["text"] == "from the cli"
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await proc.wait() == 0
        assert await proc.stdout.receive_some(1024) == b""  # exactly one line
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
