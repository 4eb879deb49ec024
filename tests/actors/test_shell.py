"""The built-in shell tool with real subprocesses (real clock, short timeouts): output and exit
codes, merged stderr, output caps, process-group kills on timeout and cancellation, workdir
confinement, secret scrubbing, approvals, and the output's re-serialisation by the prompt."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.tools import ToolRegistry, open_tool_actor
from actors.tools.approvals import ApprovalPolicy, ApprovalRequest, Approvals
from actors.tools.builtin.shell import make_shell_tool, scrub_environment
from kernel import (
    CompletedResponseItem,
    FreeformTool,
    FunctionCall,
    FunctionCallOutput,
    FunctionCallOutputPayload,
    Prompt,
    RespondToModel,
    execute_tool_call_with_default_output,
)
from kernel.prompt import format_f32


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    return ws


async def run(tool: Any, command: list[str], **kwargs: Any) -> dict[str, Any]:
    result = await tool(command, **kwargs)
    assert isinstance(result, str)
    decoded: dict[str, Any] = json.loads(result)
    return decoded


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as dead: PID 1 may not reap it here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def wait_dead(pid: int, within: float = 2.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        await trio.sleep(0.02)
    return not alive(pid)


async def read_pid(path: Path, within: float = 2.0) -> int:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        text = path.read_text().strip() if path.exists() else ""
        if text:
            return int(text)
        await trio.sleep(0.01)
    raise AssertionError(f"{path} was never written")


def text_of(item: object) -> str:
    assert isinstance(item, FunctionCallOutput)
    assert isinstance(item.output, FunctionCallOutputPayload)
    text = item.output.text_content()
    assert text is not None
    return text


def success_of(item: FunctionCallOutput) -> bool | None:
    assert isinstance(item.output, FunctionCallOutputPayload)
    return item.output.success


# --- basics ---------------------------------------------------------------------------------


async def test_output_exit_code_and_duration(workspace: Path) -> None:
    shell = make_shell_tool(workspace)
    result = await run(shell, ["bash", "-c", "echo hello; exit 3"])
    assert result["output"] == "hello\n"
    assert result["metadata"]["exit_code"] == 3
    duration = result["metadata"]["duration_seconds"]
    assert isinstance(duration, float) and 0.0 <= duration < 5 and round(duration, 1) == duration
    ok = await run(shell, ["true"])
    assert ok == {"output": "", "metadata": {"exit_code": 0, "duration_seconds": ok["metadata"]["duration_seconds"]}}


async def test_runs_in_workspace_with_empty_stdin(workspace: Path) -> None:
    shell = make_shell_tool(workspace)
    result = await run(shell, ["bash", "-c", "pwd; cat; echo end"])
    assert result["output"] == f"{os.path.realpath(workspace)}\nend\n"


async def test_stderr_is_merged_in_order(workspace: Path) -> None:
    shell = make_shell_tool(workspace)
    result = await run(shell, ["bash", "-c", "echo out1; echo err1 >&2; echo out2; echo err2 >&2"])
    assert result["output"] == "out1\nerr1\nout2\nerr2\n"


async def test_killed_by_signal_reports_128_plus_signal(workspace: Path) -> None:
    result = await run(make_shell_tool(workspace), ["bash", "-c", "kill -TERM $$"])
    assert result["metadata"]["exit_code"] == 143


async def test_invalid_utf8_is_replaced(workspace: Path) -> None:
    result = await run(make_shell_tool(workspace), ["printf", "ok \\377\\n"])
    assert result["output"] == "ok \ufffd\n"


async def test_missing_and_unexecutable_commands(workspace: Path) -> None:
    shell = make_shell_tool(workspace)
    missing = await run(shell, ["definitely-not-a-command-xyz", "--help"])
    assert missing["metadata"]["exit_code"] == 127
    assert "definitely-not-a-command-xyz: command not found" in missing["output"]
    script = workspace / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    denied = await run(shell, [str(script)])
    assert denied["metadata"]["exit_code"] == 126
    assert "permission denied" in denied["output"]


async def test_bad_arguments_are_model_visible(workspace: Path) -> None:
    shell = make_shell_tool(workspace)
    with pytest.raises(RespondToModel, match="non-empty"):
        await shell([])
    with pytest.raises(RespondToModel, match="timeout_ms"):
        await shell(["true"], timeout_ms=0)


def test_factory_checks_and_schema(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        make_shell_tool(tmp_path / "missing")
    shell = make_shell_tool(tmp_path, name="exec_command")
    assert shell.name == "exec_command" and not shell.parallel and shell.is_async
    params = shell.parameters
    assert params is not None
    assert params["required"] == ["command"]
    assert params["properties"]["command"]["type"] == "array"
    for key in ("command", "workdir", "timeout_ms", "with_escalated_permissions", "justification"):
        assert params["properties"][key]["description"]
    assert "bash" in shell.description


# --- output caps ------------------------------------------------------------------------------


async def test_huge_output_keeps_head_and_tail(workspace: Path) -> None:
    shell = make_shell_tool(workspace)  # 256 lines / 64 KiB
    result = await run(shell, ["seq", "1", "100000"])
    output = result["output"]
    assert result["metadata"]["exit_code"] == 0
    assert output.startswith("Total output lines: 100000\n\n1\n2\n3\n")
    lines = output.split("\n")
    assert lines[2:130] == [str(i) for i in range(1, 129)]
    assert lines[130] == f"[... {100000 - 256} lines omitted ...]"
    assert lines[131:-1] == [str(i) for i in range(100000 - 127, 100001)]
    assert output.endswith("99999\n100000\n")
    assert len(output.encode()) < 64 * 1024


async def test_byte_cap_and_long_lines(workspace: Path) -> None:
    shell = make_shell_tool(workspace, max_output_bytes=100, max_output_lines=6)
    few_long = await run(shell, ["bash", "-c", "echo start; head -c 300 /dev/zero | tr '\\0' a; echo; echo end"])
    assert few_long["output"] == "Total output lines: 3\n\nstart\n[... 1 lines omitted ...]\nend\n"
    one_line = await run(shell, ["bash", "-c", "head -c 300 /dev/zero | tr '\\0' b"])
    assert one_line["output"] == "Total output lines: 1\n\n" + "b" * 50 + "\n[... 250 bytes omitted ...]\n"
    exact = await run(shell, ["seq", "1", "6"])
    assert exact["output"] == "1\n2\n3\n4\n5\n6\n"
    over = await run(shell, ["seq", "1", "7"])
    assert over["output"] == "Total output lines: 7\n\n1\n2\n3\n[... 1 lines omitted ...]\n5\n6\n7\n"
    no_newline = await run(shell, ["printf", "a\\nb"])
    assert no_newline["output"] == "a\nb"


# --- process groups (unsandboxed: the sandboxed equivalents are in test_shell_sandbox.py) ---------


async def test_timeout_kills_grandchildren(workspace: Path) -> None:
    shell = make_shell_tool(workspace, sandbox="danger-full-access")
    pidfile = workspace / "pid"
    started = time.monotonic()
    result = await run(shell, ["bash", "-c", f"sleep 60 & echo $! > {pidfile}; echo waiting; wait"], timeout_ms=500)
    elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 3
    assert result["metadata"]["exit_code"] == 124
    assert result["output"] == "waiting\ncommand timed out after 0.5 seconds\n"
    assert await wait_dead(int(pidfile.read_text()))


async def test_default_timeout_applies(workspace: Path) -> None:
    result = await run(make_shell_tool(workspace, default_timeout=0.3), ["sleep", "30"])
    assert result["metadata"]["exit_code"] == 124
    assert result["output"].endswith("command timed out after 0.3 seconds\n")


async def test_cancellation_kills_the_group_before_propagating(workspace: Path) -> None:
    shell = make_shell_tool(workspace, sandbox="danger-full-access")
    pidfile = workspace / "pid"
    grandchild: list[int] = []

    async def interrupt(cancel_scope: trio.CancelScope) -> None:
        grandchild.append(await read_pid(pidfile))
        cancel_scope.cancel()

    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(interrupt, nursery.cancel_scope)
        await shell(["bash", "-c", f"sleep 60 & echo $! > {pidfile}; wait"])
        raise AssertionError("the call should have been cancelled")
    assert time.monotonic() - started < 3
    (pid,) = grandchild
    assert not alive(pid) or await wait_dead(pid, 0.5)  # killed before Cancelled propagated


async def test_cancelling_the_caller_through_the_tool_actor_kills_the_group(workspace: Path) -> None:
    registry = ToolRegistry([make_shell_tool(workspace, sandbox="danger-full-access")])
    pidfile = workspace / "pid"
    call = FunctionCall(
        call_id="c1",
        name="shell",
        arguments=json.dumps({"command": ["bash", "-c", f"sleep 60 & echo $! > {pidfile}; wait"]}),
    )
    async with open_tool_actor(registry) as actor:
        classified = await actor.classify_response_item(call)
        assert isinstance(classified, CompletedResponseItem.ToolCall)
        with trio.move_on_after(0.3) as scope:
            await actor.execute_tool_call(classified.call)
        assert scope.cancelled_caught
        assert await wait_dead(await read_pid(pidfile), 1.0)
        assert actor.calls_finished == 1


async def test_background_process_holding_output_is_killed(workspace: Path) -> None:
    shell = make_shell_tool(workspace, sandbox="danger-full-access")
    pidfile = workspace / "pid"
    started = time.monotonic()
    result = await run(shell, ["bash", "-c", f"sleep 60 & echo $! > {pidfile}; echo started"])
    assert time.monotonic() - started < 3
    assert result == {
        "output": "started\n",
        "metadata": {"exit_code": 0, "duration_seconds": result["metadata"]["duration_seconds"]},
    }
    assert await wait_dead(int(pidfile.read_text()))


# --- workdir confinement ---------------------------------------------------------------------


async def test_workdir_inside_workspace(workspace: Path) -> None:
    shell = make_shell_tool(workspace)
    real = Path(os.path.realpath(workspace))
    assert (await run(shell, ["pwd"], workdir="sub/deeper"))["output"] == f"{real}/sub/deeper\n"
    assert (await run(shell, ["pwd"], workdir="sub/../sub"))["output"] == f"{real}/sub\n"
    assert (await run(shell, ["pwd"], workdir=str(real / "sub")))["output"] == f"{real}/sub\n"
    assert (await run(shell, ["pwd"], workdir="."))["output"] == f"{real}\n"
    (workspace / "link").symlink_to(workspace / "sub")
    assert (await run(shell, ["pwd"], workdir="link"))["output"] == f"{real}/sub\n"


@pytest.mark.parametrize("workdir", ["..", "../outside", "sub/../../outside", "/", "/tmp", "escape"])
async def test_workdir_escapes_are_refused(workspace: Path, workdir: str) -> None:
    (workspace / "escape").symlink_to(workspace.parent / "outside")
    marker = workspace.parent / "ran"
    shell = make_shell_tool(workspace)
    with pytest.raises(RespondToModel) as info:
        await shell(["touch", str(marker)], workdir=workdir)
    assert repr(workdir) in info.value.message and "outside the workspace" in info.value.message
    assert not marker.exists()


async def test_missing_workdir_is_refused(workspace: Path) -> None:
    (workspace / "afile").write_text("x")
    shell = make_shell_tool(workspace)
    with pytest.raises(RespondToModel, match="'nope' does not exist"):
        await shell(["pwd"], workdir="nope")
    with pytest.raises(RespondToModel, match="'afile' is not a directory"):
        await shell(["pwd"], workdir="afile")


# --- environment ---------------------------------------------------------------------------


async def test_secrets_do_not_reach_the_child(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-SECRET")
    monkeypatch.setenv("my_secret", "SECRET")
    monkeypatch.setenv("KEEP_ME", "visible")
    result = await run(make_shell_tool(workspace), ["env"])
    assert "SECRET" not in result["output"]
    assert "KEEP_ME=visible" in result["output"]
    assert "PATH=" in result["output"]
    scrubbed = scrub_environment({"A_TOKEN": "x", "API_KEY": "y", "TOKENS": "gone too", "HOME": "/h"})
    assert scrubbed == {"HOME": "/h"}  # the whole name is matched against *TOKEN*, *KEY*, ...


async def test_explicit_env_is_the_whole_environment(workspace: Path) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ONLY": "1", "X_TOKEN": "given"}
    result = await run(make_shell_tool(workspace, env=env), ["env"])
    assert sorted(result["output"].split()) == sorted(f"{k}={v}" for k, v in env.items())


# --- approvals -----------------------------------------------------------------------------


async def test_approvals_gate_the_command(workspace: Path) -> None:
    asked: list[ApprovalRequest] = []
    answer = False

    async def approver(request: ApprovalRequest) -> bool:
        asked.append(request)
        return answer

    shell = make_shell_tool(workspace, approvals=Approvals(ApprovalPolicy.UNTRUSTED, approver))
    assert (await run(shell, ["bash", "-c", "ls && pwd"]))["metadata"]["exit_code"] == 0  # read-only: not asked
    assert asked == []
    with pytest.raises(RespondToModel, match=r"^rejected by user: the command `touch made` was not approved"):
        await shell(["bash", "-lc", "touch made"], workdir="sub")
    assert not (workspace / "sub" / "made").exists()
    (request,) = asked
    assert request.kind == "exec" and request.tool == "shell"
    assert request.command == ("bash", "-lc", "touch made")
    assert request.cwd == os.path.realpath(workspace / "sub")
    answer = True
    await shell(["touch", "made"], workdir="sub")
    assert (workspace / "sub" / "made").exists()


async def test_escalation_on_request_and_no_approver(workspace: Path) -> None:
    shell = make_shell_tool(workspace, approvals=Approvals(ApprovalPolicy.ON_REQUEST))
    await shell(["touch", "plain"])  # on-request: not asked unless the call asks
    assert (workspace / "plain").exists()
    with pytest.raises(RespondToModel, match="no approver is available"):
        await shell(["touch", "escalated"], with_escalated_permissions=True, justification="needs it")
    assert not (workspace / "escalated").exists()


# --- through the ToolActor and the prompt -----------------------------------------------------


async def test_end_to_end_through_the_actor_and_prompt(workspace: Path) -> None:
    registry = ToolRegistry([make_shell_tool(workspace, max_output_lines=4)])
    apply_patch = FreeformTool(name="apply_patch")
    calls = [
        FunctionCall(call_id="c1", name="shell", arguments=json.dumps({"command": ["bash", "-c", "echo hi; exit 2"]})),
        FunctionCall(call_id="c2", name="shell", arguments=json.dumps({"command": ["seq", "1", "10"]})),
        FunctionCall(call_id="c3", name="shell", arguments=json.dumps({"command": ["pwd"], "workdir": "../outside"})),
        FunctionCall(call_id="c4", name="shell", arguments=json.dumps({"command": "ls"})),
    ]
    outputs: list[FunctionCallOutput] = []
    async with open_tool_actor(registry) as actor:
        for call in calls:
            classified = await actor.classify_response_item(call)
            assert isinstance(classified, CompletedResponseItem.ToolCall)
            output = await execute_tool_call_with_default_output(actor, classified.call)
            assert isinstance(output, FunctionCallOutput)
            outputs.append(output)
    raw = json.loads(text_of(outputs[0]))
    assert raw["output"] == "hi\n" and raw["metadata"]["exit_code"] == 2

    items = [x for pair in zip(calls, outputs) for x in pair]
    formatted = Prompt(input=items, tools=[apply_patch]).formatted_input()
    wall = format_f32(raw["metadata"]["duration_seconds"])
    assert text_of(formatted[1]) == f"Exit code: 2\nWall time: {wall} seconds\nOutput:\nhi\n"
    second = text_of(formatted[3])
    assert second.startswith("Exit code: 0\nWall time: ")
    assert second.endswith("Total output lines: 10\nOutput:\n1\n2\n[... 6 lines omitted ...]\n9\n10\n")
    assert success_of(outputs[2]) is False
    assert "outside the workspace" in text_of(outputs[2])
    assert success_of(outputs[3]) is False
    assert "invalid arguments" in text_of(outputs[3])
    # without a freeform apply_patch tool the JSON is left as is
    assert Prompt(input=items).formatted_input()[1] == outputs[0]
