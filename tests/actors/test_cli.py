"""The ``agent-kernel`` command line, run for real: a subprocess (``python -m actors.cli``) with the
real clock, against the scripted model server (the built-in demo, a ``--script`` file, a server
started here, or ``agent-kernel serve-scripted``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from actors.scripted import Reply, Script, Text, open_scripted_server

CLI = [sys.executable, "-m", "actors.cli"]
SECRET = "sk-test-SECRET"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    # rollouts and the demo's temporary workspace go under tmp_path
    env.update(XDG_DATA_HOME=str(tmp_path / "xdg"), TMPDIR=str(tmp_path), NO_COLOR="1", PYTHONDONTWRITEBYTECODE="1")
    env.update(extra)
    return env


def _run(args: list[str], tmp_path: Path, *, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        cwd=cwd or tmp_path,
        env=_env(tmp_path, **env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


@asynccontextmanager
async def _spawned(args: list[str], env: dict[str, str], **kwargs: Any) -> AsyncIterator[trio.Process]:
    """The CLI as a process whose stdout the test reads as it goes; killed if the test leaves
    early."""
    process = await trio.lowlevel.open_process(
        [*CLI, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env, **kwargs
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


def _json_lines(stdout: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in stdout.splitlines()]  # every line is JSON, nothing else
    assert records and all(isinstance(r, dict) and "type" in r for r in records)
    return records


def _script(path: Path, replies: list[Any], **fields: Any) -> Path:
    path.write_text(json.dumps({"replies": replies, **fields}))
    return path


def _shell_call(call_id: str, script: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "call_id": call_id,
        "name": "shell",
        "arguments": {"command": ["bash", "-c", script]},
    }


def _records(rollout: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in rollout.read_text().splitlines()]


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for its reaper counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in ("Z", "X")


# ---------------------------------------------------------------------------------------------
# The demo
# ---------------------------------------------------------------------------------------------


def test_demo_runs_the_real_loop_in_the_workspace(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    result = _run(["exec", "--cwd", str(workspace)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert (workspace / "NOTES.md").read_text().startswith("# Notes")
    ran = subprocess.run([sys.executable, str(workspace / "hello.py")], capture_output=True, text=True)
    assert ran.stdout == "Hello from trio-agent-kernel!\n"
    out = result.stdout
    # the transcript: streamed text, one line per call and result, the program's output, a summary
    assert "Let me look at the workspace first." in out
    assert "• shell  ls -la" in out and "• apply_patch  add hello.py, add NOTES.md" in out
    assert "• shell  python3 hello.py" in out and "    Hello from trio-agent-kernel!" in out
    assert out.count("exit 0") == 3
    assert "completed  1 turn · 4 model requests · 3 tool calls" in out
    # the demo's model has a small window: its history is compacted before the last request
    assert "◦ history compacted (remote): 11 items → 2" in out
    assert out.index("Hello from trio-agent-kernel!") < out.index("history compacted") < out.index("Done.")
    assert "Traceback" not in result.stderr
    (rollout_line,) = [line for line in out.splitlines() if line.startswith("rollout: ")]
    rollout = Path(rollout_line.removeprefix("rollout: "))
    assert rollout.parent == tmp_path / "xdg" / "agent-kernel" / "rollouts"
    header = _records(rollout)[0]
    assert header["type"] == "session_meta" and header["cwd"] == str(workspace)
    assert rollout.name.endswith(f"-{header['session_id']}.jsonl")


def test_demo_json_without_cwd_uses_a_fresh_workspace(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    result = _run(["exec", "--json"], tmp_path, cwd=repo)
    assert result.returncode == 0, result.stderr
    records = _json_lines(result.stdout)
    summary = records[-1]
    assert summary["type"] == "summary" and [r["type"] for r in records].count("summary") == 1
    assert summary["status"] == "completed" and summary["exit_code"] == 0
    assert summary["tool_calls"] == 3 and summary["tool_failures"] == 0 and summary["model_requests"] == 4
    # 284 output tokens over the four responses, and the compaction's (/responses/compact) usage
    assert summary["usage"]["output_tokens"] > 284 and summary["wall_time_seconds"] > 0
    (compacted,) = [r for r in records if r["type"] == "compaction_finished"]
    assert compacted["mode"] == "remote" and compacted["items_before"] == 11 and compacted["items_after"] == 2
    types = [r["type"] for r in records]
    assert types[0] == "turn_started" and types[-2] == "turn_completed"
    assert types.count("tool_call_started") == types.count("tool_call_finished") == 3
    assert "text_delta" in types
    # the user's directory is untouched; the demo ran in a new one, named on stderr
    assert list(repo.iterdir()) == []
    workspace = Path(summary["workspace"])
    assert workspace != repo and (workspace / "hello.py").is_file() and (workspace / "NOTES.md").is_file()
    assert str(workspace) in result.stderr and workspace.parent == tmp_path
    assert Path(summary["rollout"]).is_file()


# ---------------------------------------------------------------------------------------------
# Ctrl-C, resume, history
# ---------------------------------------------------------------------------------------------


async def test_ctrl_c_interrupts_cleanly_then_resume_and_history(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    pids_file = workspace / "pids"
    sleeper = _shell_call(
        "call_sleep",
        f"sleep 60 & echo $! >> {pids_file}; echo $$ >> {pids_file}; sleep 61 & echo $! >> {pids_file}; wait",
    )
    script = _script(tmp_path / "sleep.json", [{"items": ["Sleeping a while.", sleeper]}])
    rollout = tmp_path / "session.jsonl"
    env = _env(tmp_path)
    args = [
        "exec",
        "sleep please",
        "--script",
        str(script),
        "--cwd",
        str(workspace),
        "--rollout",
        str(rollout),
        "--json",
        "--sandbox",  # unconfined: the pids the command writes are the host's (the sandboxed case: test_shell_sandbox)
        "danger-full-access",
    ]
    pids: list[int] = []
    try:
        async with _spawned(args, env, stderr=subprocess.DEVNULL) as process:
            assert process.stdout is not None
            buffer = b""
            with trio.fail_after(20):
                while b'"type":"tool_call_started"' not in buffer:
                    chunk = await process.stdout.receive_some()
                    assert chunk, f"the CLI ended before the tool started: {buffer!r}"
                    buffer += chunk
                while not (pids_file.exists() and len(pids_file.read_text().split()) == 3):
                    await trio.sleep(0.05)
            pids = [int(p) for p in pids_file.read_text().split()]
            assert all(_alive(pid) for pid in pids)

            process.send_signal(signal.SIGINT)
            with trio.fail_after(5):
                while chunk := await process.stdout.receive_some():
                    buffer += chunk
                assert await process.wait() == 130
        records = _json_lines(buffer.decode())
        assert records[-1]["type"] == "summary" and records[-1]["status"] == "aborted"
        assert records[-1]["exit_code"] == 130
        assert "turn_aborted" in [r["type"] for r in records]
        assert not [pid for pid in pids if _alive(pid)], "a child or grandchild survived the interrupt"
    finally:
        for pid in pids:  # only if the test failed: leave nothing running
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

    # the rollout records the aborted output (and was flushed and closed)
    (output,) = [r for r in _records(rollout) if r["type"] == "item" and r["item"]["type"] == "function_call_output"]
    assert output["item"]["call_id"] == "call_sleep" and output["success"] is False
    assert "aborted" in output["item"]["output"]

    # resume: the next request's input carries the aborted output
    async with open_scripted_server(Script([Reply(items=[Text("Resumed fine.")])])) as server:
        resumed = await trio.run_process(
            [*CLI, "resume", str(rollout), "go on", "--base-url", server.base_url, "--model", "m", "--json"],
            capture_stdout=True,
            capture_stderr=True,
            stdin=b"",
            check=False,
            env=env,
        )
        assert resumed.returncode == 0, resumed.stderr
        (request,) = server.requests
    inputs = request.body["input"]
    (aborted,) = [i for i in inputs if i.get("type") == "function_call_output"]
    assert aborted["call_id"] == "call_sleep" and "aborted" in aborted["output"]
    assert any(i.get("type") == "function_call" and i.get("call_id") == "call_sleep" for i in inputs)
    assert inputs[-1]["role"] == "user" and inputs[-1]["content"][0]["text"] == "go on"
    summary = _json_lines(resumed.stdout.decode())[-1]
    assert summary["status"] == "completed" and summary["rollout"] == str(rollout)
    assert summary["workspace"] == str(workspace)  # from the rollout's header

    # history: readable lines, and the records with --json
    shown = _run(["history", str(rollout)], tmp_path)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "user: sleep please" in text and "call shell [call_sleep]: sleep 60 &" in text
    assert "output [call_sleep] (failed): " in text and "aborted by user" in text
    assert "turn aborted" in text and "assistant: Resumed fine." in text and "user: go on" in text
    as_json = _run(["history", str(rollout), "--json"], tmp_path)
    assert _json_lines(as_json.stdout) == _records(rollout)


# ---------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------


async def test_api_key_never_appears_even_when_the_server_echoes_it(tmp_path: Path) -> None:
    custom = "custom-key-XYZZY-0123456789"
    script = _script(
        tmp_path / "401.json",
        [],
        cycle=False,
        default={
            "faults": [
                {
                    "kind": "http_error",
                    "status": 401,
                    "message": f"Incorrect API key provided: {SECRET} / {custom}.",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            ]
        },
    )
    env = _env(tmp_path)
    async with _spawned(["serve-scripted", "--port", "0", "--script", str(script)], env) as server:
        assert server.stdout is not None
        line = b""
        with trio.fail_after(10):
            while not line.endswith(b"\n"):
                line += await server.stdout.receive_some(1)
        assert line.startswith(b"listening on http://127.0.0.1:")
        base_url = line.decode().split()[-1] + "/v1"

        async def cli(index: int, args: list[str], extra: dict[str, str]) -> tuple[Any, str]:
            rollout = tmp_path / f"run{index}.jsonl"
            result = await trio.run_process(
                [*CLI, "exec", "hi", "--base-url", base_url, "--model", "m", "--rollout", str(rollout), *args],
                capture_stdout=True,
                capture_stderr=True,
                stdin=b"",
                check=False,
                env={**env, **extra},
            )
            return result, rollout.read_text()

        runs: list[tuple[list[str], dict[str, str]]] = [
            (["--json"], {"OPENAI_API_KEY": SECRET}),
            ([], {"OPENAI_API_KEY": SECRET}),
            # a key the HTTP layer's own redaction does not recognise: the CLI scrubs it itself
            (["--json", "--api-key-env", "MY_KEY"], {"MY_KEY": custom}),
            (["--api-key-env", "MY_KEY"], {"MY_KEY": custom}),
        ]
        for index, (args, extra) in enumerate(runs):
            result, rollout = await cli(index, args, extra)
            (key,) = extra.values()
            stdout, stderr = result.stdout.decode(), result.stderr.decode()
            assert result.returncode == 1, stderr
            for where in (stdout, stderr, rollout):
                assert key not in where
            assert "Traceback" not in stderr and "401" in stderr + stdout
            if "--json" in args:
                summary = _json_lines(stdout)[-1]
                assert summary["status"] == "failed" and summary["error_type"] == "Unauthorized"
                assert "[REDACTED]" in summary["error"]
            else:
                assert "error: " in stderr and "failed" in stdout
        server.send_signal(signal.SIGINT)
        with trio.fail_after(5):
            assert await server.wait() == 0


# ---------------------------------------------------------------------------------------------
# Approvals
# ---------------------------------------------------------------------------------------------


def test_approval_is_refused_at_once_without_a_terminal(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    script = _script(
        tmp_path / "touch.json",
        [
            {"items": [_shell_call("call_ls", "ls")]},
            {"items": [_shell_call("call_touch", "touch made_by_model")]},
            "I was not allowed to create the file.",
        ],
    )
    result = _run(
        ["exec", "make a file", "--script", str(script), "--cwd", str(workspace), "--approval", "untrusted", "--json"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert not (workspace / "made_by_model").exists()
    finished = {r["call_id"]: r for r in _json_lines(result.stdout) if r["type"] == "tool_call_finished"}
    assert finished["call_ls"]["status"] == "ok"  # read-only: no approval needed
    refusal = finished["call_touch"]
    assert refusal["status"] == "error"
    assert "was not run" in refusal["output"]["output"] and "not attached to a terminal" in refusal["output"]["output"]
    assert "stdin is not a terminal" in result.stderr and "touch made_by_model" in result.stderr


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_errors_are_one_line(tmp_path: Path) -> None:
    missing = _run(["exec", "x", "--script", str(tmp_path / "nope.json")], tmp_path)
    bad_rollout = _run(["history", str(tmp_path / "nope.jsonl")], tmp_path)
    for result in (missing, bad_rollout):
        assert result.returncode != 0
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("agent-kernel: error: ")
    usage = _run(["exec", "x", "--base-url", "http://127.0.0.1:9/v1"], tmp_path)
    assert usage.returncode == 2 and "--model" in usage.stderr and "Traceback" not in usage.stderr
