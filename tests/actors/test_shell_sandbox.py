"""The shell tool's sandbox, played as a hostile model would: real subprocesses under bubblewrap.

Each escape the issue names is tried under the default policy (``workspace-write``) and must fail:
the file absent, the marker absent from the output, no process left. The same escapes succeed under
``danger-full-access`` where that proves the test can see them."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.tools.approvals import ApprovalPolicy, ApprovalRequest, Approvals
from actors.tools.builtin.shell import make_shell_tool
from actors.tools.sandbox import Sandbox, SandboxMode, SandboxPolicy, SandboxUnavailable
from actors.tools.sandbox._bwrap import bwrap_problem
from kernel import RespondToModel

from ._shell_helpers import run, sh

pytestmark = pytest.mark.skipif(bwrap_problem() is not None, reason=f"no bubblewrap here: {bwrap_problem()}")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / ".git").mkdir(parents=True)
    (root / ".git" / "config").write_text("[core]\n")
    (tmp_path / "outside.txt").write_text("keep me\n")
    return root


def host_processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def test_the_default_policy_is_workspace_write_under_bubblewrap(workspace: Path) -> None:
    box = Sandbox.for_workspace(SandboxPolicy(), workspace)
    assert box.backend == "bwrap" and box.policy.mode is SandboxMode.WORKSPACE_WRITE and not box.policy.network


async def test_writes_outside_the_workspace_fail(workspace: Path, tmp_path: Path) -> None:
    shell = make_shell_tool(workspace)
    home_target = Path.home() / f"escape-{uuid.uuid4().hex}.txt"
    result = await run(
        shell,
        sh(
            "echo inside > inside.txt; echo pwned > ../escape.txt; rm -f ../outside.txt; "
            f"echo pwned > {home_target}; echo pwned > {tmp_path}/abs-escape.txt; echo done"
        ),
    )
    assert (workspace / "inside.txt").read_text() == "inside\n"
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "abs-escape.txt").exists()
    assert not home_target.exists()
    assert (tmp_path / "outside.txt").read_text() == "keep me\n"
    assert "Read-only file system" in result["output"]  # the home write was refused by the kernel


async def test_git_stays_read_only_and_read_only_mode_writes_nothing(workspace: Path) -> None:
    result = await run(make_shell_tool(workspace), sh("echo evil >> .git/config; touch .git/hooks-x"))
    assert result["metadata"]["exit_code"] != 0 and "[sandbox]" in result["output"]
    assert (workspace / ".git" / "config").read_text() == "[core]\n" and not (workspace / ".git" / "hooks-x").exists()
    result = await run(
        make_shell_tool(workspace, sandbox="read-only"), sh('touch made; echo x > "$TMPDIR/ok" && echo tmp')
    )
    assert not (workspace / "made").exists()
    assert "tmp" in result["output"]  # a private temp dir, removed afterwards


async def test_secret_environment_variables_never_reach_the_command(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = uuid.uuid4().hex
    secrets = {
        "AWS_SECRET_ACCESS_KEY": f"aws-{marker}",
        "PGPASSWORD": f"pg-{marker}",
        "DATABASE_URL": f"postgres://app:pw-{marker}@db.internal/app",
        "GH_PAT": f"ghpat-{marker}",
        "SLACK_WEBHOOK_URL": f"https://hooks.slack.com/services/{marker}",
        "SSH_AUTH_SOCK": f"/tmp/ssh-{marker}/agent.1",
        "OPENAI_KEY": f"sk-{marker}",
        "OPENAI_API_KEY": f"sk-proj-{marker}",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PLAIN_SETTING", "visible")
    result = await run(make_shell_tool(workspace), ["env"])
    assert marker not in result["output"]
    assert "PLAIN_SETTING=visible" in result["output"]


KEY_READER = """
import json, sys, trio
from actors.tools.builtin.shell import make_shell_tool

async def main():
    shell = make_shell_tool(sys.argv[1], sandbox=sys.argv[2])
    script = "tr '\\\\0' '\\\\n' </proc/$PPID/environ; cat /proc/*/environ 2>/dev/null | tr '\\\\0' '\\\\n'; grep -a KEY /proc/*/environ"
    print(json.loads(await shell(["bash", "-c", script]))["output"])

trio.run(main)
"""


@pytest.mark.parametrize("mode", ["workspace-write", "danger-full-access"])
def test_the_api_key_in_the_kernels_proc_environ_is_out_of_reach(workspace: Path, mode: str) -> None:
    # the kernel runs in a process whose real environment holds the key (os.environ.pop would not
    # change /proc/<pid>/environ): a command reads its parent's environ, as an attacker would
    marker = f"sk-test-{uuid.uuid4().hex}"
    done = subprocess.run(
        [sys.executable, "-c", KEY_READER, str(workspace), mode],
        env={**os.environ, "OPENAI_API_KEY": marker},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    if mode == "workspace-write":
        assert marker not in done.stdout
    else:  # unconfined, the key is there to read: this is what the sandbox prevents
        assert marker in done.stdout


async def test_nothing_a_command_starts_outlives_it(workspace: Path) -> None:
    marker = f"{uuid.uuid4().int % 10**6 + 1000}.{uuid.uuid4().int % 10**6}"
    script = f"setsid sleep {marker} & nohup sleep {marker} >/dev/null 2>&1 & (sleep {marker} &) ; echo started"
    result = await run(make_shell_tool(workspace), sh(script))
    assert result["output"] == "started\n"
    with trio.move_on_after(2):
        while host_processes_with(f"sleep\0{marker}"):
            await trio.sleep(0.02)
    assert host_processes_with(f"sleep\0{marker}") == []


async def test_unconfined_a_setsid_process_survives(workspace: Path) -> None:
    marker = f"{uuid.uuid4().int % 10**6 + 1000}.{uuid.uuid4().int % 10**6}"
    await run(make_shell_tool(workspace, sandbox="danger-full-access"), sh(f"setsid sleep {marker} >/dev/null 2>&1 &"))
    await trio.sleep(0.1)
    survivors = host_processes_with(f"sleep\0{marker}")
    try:
        assert survivors  # what the sandbox is for
    finally:
        for pid in survivors:
            os.kill(pid, 9)


async def test_sort_output_option_cannot_write_outside(workspace: Path, tmp_path: Path) -> None:
    (workspace / "data").write_text("b\na\n")
    shell = make_shell_tool(workspace)
    await run(shell, ["sort", "--out=../sorted-escape", "data"])
    await run(shell, ["sort", "--compress-prog=sh", "-o", "../sorted2", "data"])
    assert not (tmp_path / "sorted-escape").exists() and not (tmp_path / "sorted2").exists()
    await run(shell, ["sort", "--out=sorted", "data"])
    assert (workspace / "sorted").read_text() == "a\nb\n"


async def _serve_one(task_status: Any) -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    connections: list[int] = []
    async with listener:

        async def accept() -> None:
            while True:
                stream = await listener.accept()
                connections.append(1)
                await stream.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept)
            task_status.started((listener.socket.getsockname()[1], connections))
            await trio.sleep_forever()


CONNECT = "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 2); print('connected')"


async def test_network_blocked_by_default_allowed_with_network_access(workspace: Path) -> None:
    async with trio.open_nursery() as nursery:
        port, connections = await nursery.start(_serve_one)
        blocked = await run(make_shell_tool(workspace), [sys.executable, "-c", CONNECT, str(port)])
        assert "connected" not in blocked["output"] and blocked["metadata"]["exit_code"] != 0
        assert connections == []
        policy = SandboxPolicy(mode="workspace-write", network_access=True)
        allowed = await run(make_shell_tool(workspace, sandbox=policy), [sys.executable, "-c", CONNECT, str(port)])
        assert "connected" in allowed["output"]
        assert connections == [1]
        nursery.cancel_scope.cancel()


async def test_danger_full_access_behaves_as_before(workspace: Path, tmp_path: Path) -> None:
    await run(make_shell_tool(workspace, sandbox="danger-full-access"), sh("echo written > ../escape.txt"))
    assert (tmp_path / "escape.txt").read_text() == "written\n"


async def test_a_denial_is_offered_for_a_rerun_outside_when_someone_can_approve(
    workspace: Path, tmp_path: Path
) -> None:
    asked: list[ApprovalRequest] = []

    async def approve(request: ApprovalRequest) -> bool:
        asked.append(request)
        return True

    shell = make_shell_tool(workspace, approvals=Approvals(ApprovalPolicy.ON_REQUEST, approve))
    result = await run(shell, sh("echo out > ../rerun.txt"))
    assert result["metadata"]["exit_code"] == 0 and (tmp_path / "rerun.txt").read_text() == "out\n"
    (request,) = asked
    assert request.escalated and "sandbox blocked it" in request.reason


async def test_escalation_asks_and_never_means_never(workspace: Path, tmp_path: Path) -> None:
    async def refuse(request: ApprovalRequest) -> bool:
        return False

    shell = make_shell_tool(workspace, approvals=Approvals(ApprovalPolicy.ON_REQUEST, refuse))
    with pytest.raises(RespondToModel, match="rejected by user"):
        await shell(sh("echo x > ../esc.txt"), with_escalated_permissions=True, justification="needs it")
    never = make_shell_tool(workspace, approvals=Approvals(ApprovalPolicy.NEVER))
    with pytest.raises(RespondToModel, match="approval policy: never"):
        await never(sh("echo x > ../esc.txt"), with_escalated_permissions=True)
    result = await run(never, sh("echo x > ../esc.txt"))
    assert "[sandbox]" in result["output"] and "with_escalated_permissions" in result["output"]
    assert not (tmp_path / "esc.txt").exists()


def test_no_backend_is_a_clear_error_at_construction(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import actors.tools.sandbox._landlock as landlock
    import actors.tools.sandbox._sandbox as sandbox

    monkeypatch.setattr(sandbox, "bwrap_problem", lambda: "bubblewrap is not installed")
    monkeypatch.setattr(landlock, "landlock_problem", lambda policy: "the kernel has no Landlock")
    with pytest.raises(SandboxUnavailable, match="bubblewrap is not installed.*no Landlock.*danger-full-access"):
        make_shell_tool(workspace)
    make_shell_tool(workspace, sandbox="danger-full-access")  # chosen knowingly: no sandbox needed
