"""MCP servers in a batch: a shared server runs once for the whole batch (its one process counts
every task's call), a ``shared=False`` one once per task, a task picks servers by name, and no
server process outlives the batch — real stub server processes over pipes, a scripted model over
loopback HTTP, the ``batch`` command with ``--mcp-config``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.batch import BatchTask, read_results, run_batch
from actors.model import ModelSettings
from actors.scripted import FunctionCall, RecordedRequest, Reply, open_scripted_server
from actors.testing._mcp_stub import stub_command
from actors.tools.mcp import McpServer

from .test_mcp_shared import stub_pids

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the server processes in /proc")


def stub(name: str, tag: str, **kw: Any) -> McpServer:
    command = stub_command(tag)
    return McpServer.stdio(name, command[0], command[1:], **kw)


def router(request: RecordedRequest) -> Reply | str:
    """Each task calls the tool its prompt names (``"<n> <tool>"``), then reports its output."""
    items = request.body["input"]
    prompt = next(i for i in items if i.get("role") == "user")
    text = prompt["content"] if isinstance(prompt["content"], str) else prompt["content"][0]["text"]
    n, tool = text.split()
    outputs = [i["output"] for i in items if i.get("type") == "function_call_output"]
    if not outputs:
        return Reply(items=[FunctionCall(f"c{n}", tool, {"payload": n})])
    return f"task {n}: {outputs[0]}"


def tool_names(request: RecordedRequest) -> set[str]:
    return {t["name"] for t in request.body.get("tools", [])}


async def run(tmp_path: Path, tasks: list[BatchTask], servers: list[McpServer]) -> tuple[dict[str, Any], Any]:
    async with open_scripted_server(router) as server:
        settings = ModelSettings(base_url=server.base_url, model="m", transport="http")
        with trio.fail_after(60):
            summary = await run_batch(
                tasks, out_dir=tmp_path / "out", concurrency=4, model=settings, mcp_servers=servers
            )
        requests = list(server.requests)
    assert summary.completed + summary.failed == len(tasks)
    results = {r.id: r for r in read_results(tmp_path / "out")}
    return results, requests


async def test_a_shared_server_runs_once_for_the_batch(tmp_path: Path) -> None:
    tag = f"batch-shared-{os.getpid()}-{id(tmp_path)}"
    tasks = [BatchTask(id=f"t{n}", input=f"{n} mcp__counter__count") for n in range(8)]
    results, _ = await run(tmp_path, tasks, [stub("counter", tag)])
    assert {r.status for r in results.values()} == {"completed"}
    counts = sorted(int(r.final_message.split("count=")[1].split()[0]) for r in results.values())
    assert counts == list(range(1, 9))  # one process served all 8 sessions
    assert stub_pids(tag) == []  # and it stopped with the batch


async def test_a_per_task_server_runs_once_per_task_and_tasks_pick_servers(tmp_path: Path) -> None:
    tag = f"batch-own-{os.getpid()}-{id(tmp_path)}"
    tasks = [
        *(BatchTask(id=f"own{n}", input=f"{n} mcp__own__count", mcp_servers=["own"]) for n in range(4)),
        BatchTask(id="none", input="9 mcp__own__count", mcp_servers=[]),
        BatchTask(id="typo", input="9 mcp__own__count", mcp_servers=["owm"]),
    ]
    results, requests = await run(tmp_path, tasks, [stub("own", tag, shared=False), stub("other", tag + "-o")])
    for n in range(4):
        assert results[f"own{n}"].status == "completed"
        assert results[f"own{n}"].final_message == f"task {n}: count=1 payload={n}"  # a process of its own
    # no MCP server for this one: the call is an unknown tool, and the model saw no MCP tools
    assert results["none"].status == "completed" and "unknown tool" in (results["none"].final_message or "").lower()
    assert not any(
        name.startswith("mcp__") for r in requests if "9 mcp" in json.dumps(r.body) for name in tool_names(r)
    )
    typo = results["typo"]
    assert typo.status == "failed" and "'owm'" in (typo.error or "") and "'own'" in (typo.error or "")
    assert stub_pids(tag) == [] and stub_pids(tag + "-o") == []


def test_the_batch_command_takes_mcp_config(tmp_path: Path) -> None:
    tag = f"batch-cli-{os.getpid()}"
    command = stub_command(tag)
    config = tmp_path / "config.toml"
    config.write_text(
        f"[mcp_servers.counter]\ncommand = {json.dumps(command[0])}\nargs = {json.dumps(command[1:])}\n",
        encoding="utf-8",
    )
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"id": f"t{n}", "input": f"count {n}"}) + "\n" for n in range(2)))
    replies: list[Any] = []
    for n in range(2):  # concurrency 1: the replies go to the tasks in order
        call = {
            "type": "function_call",
            "call_id": f"c{n}",
            "name": "mcp__counter__count",
            "arguments": {"payload": "x"},
        }
        replies += [{"items": [call]}, f"done {n}"]
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"replies": replies}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "no-config")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "actors.cli", "batch", str(tasks), "--out", str(out), "--concurrency", "1"]
        + ["--script", str(script), "--mcp-config", str(config)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "mcp: counter" in result.stdout + result.stderr
    seen = []
    for rollout in sorted((out / "rollouts").glob("*.jsonl")):
        records = [json.loads(line) for line in rollout.read_text().splitlines()]
        seen += [
            r["item"]["output"] for r in records if r["type"] == "item" and "count=" in str(r["item"].get("output"))
        ]
    assert sorted(seen) == ["count=1 payload=x", "count=2 payload=x"]  # one process for both tasks
    assert stub_pids(tag) == []


def test_task_mcp_servers_key_is_checked_and_round_trips() -> None:
    from actors.batch import TaskFormatError

    task = BatchTask.from_json({"id": "a", "input": "x", "mcp_servers": ["files", "docs"]})
    assert task.mcp_servers == ("files", "docs") and BatchTask.from_json(task.to_json()) == task
    assert BatchTask.from_json({"id": "a", "input": "x"}).mcp_servers is None
    for bad, message in (
        ("files", "list of MCP server names"),
        ([""], "list of MCP server names"),
        (["a", "a"], "twice"),
    ):
        with pytest.raises(TaskFormatError, match=message):
            BatchTask.from_json({"id": "a", "input": "x", "mcp_servers": bad})
