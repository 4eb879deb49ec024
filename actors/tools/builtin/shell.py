"""The built-in ``shell`` tool: run a command in the workspace and report its output and exit code.

:func:`make_shell_tool` builds a function tool (exclusive: one command at a time) whose output is
the JSON shape the kernel's :meth:`~kernel.Prompt.formatted_input` re-serialises for the model::

    {"output": "...", "metadata": {"exit_code": 0, "duration_seconds": 0.1}}

How a command runs:

* ``command`` is an argv list, run without a shell (the usual model form is
  ``["bash", "-lc", "<script>"]``); stdin is ``/dev/null``; stdout and stderr are captured
  together, in the order they were written; the working directory is the workspace or ``workdir``
  inside it (``..``, absolute paths and symlinks that lead outside are refused).
* The command runs in a new session (its own process group). On timeout, on cancellation (a turn
  interrupt) and when background processes keep the output open after the command exited, the
  *whole group* is killed with ``SIGKILL`` — grandchildren included — and the command reaped
  before the tool returns or the cancellation propagates. A timed-out command reports exit code
  124 and its output ends with ``command timed out after N seconds``. Background processes that
  redirect their output elsewhere and outlive the command are left running; a process that starts
  a session of its own (``setsid``) escapes the group and is not tracked.
* Output is decoded as UTF-8 (invalid bytes replaced) and capped: when it has more than
  ``max_output_lines`` lines or ``max_output_bytes`` bytes, the first and last halves are kept with
  ``[... K lines omitted ...]`` between them, and ``Total output lines: N`` plus a blank line is
  prepended (the header :meth:`~kernel.Prompt.formatted_input` lifts). Memory use stays bounded
  however much a command prints.
* A program that cannot start is not a crash: exit code 127 (not found) or 126 (not executable)
  with the error as output.
* Secrets stay out of the child: its environment is built by an
  :class:`~actors.tools.sandbox.EnvironmentPolicy` (default: this process's, minus every variable
  whose whole name matches ``*KEY*``, ``*SECRET*``, ``*TOKEN*``, ``*PASS*``, ``*CREDENTIAL*``,
  ``*AUTH*``… or whose value is a URL with a password) — unless ``env`` is given, which is then the
  child's whole environment.
* The command runs in a sandbox (:mod:`actors.tools.sandbox`; default ``workspace-write``: it may
  write only the workspace, minus its ``.git``, and a private ``/tmp``; no network; nothing it starts
  outlives it; no other process's ``/proc`` is visible). ``danger-full-access`` runs it as before,
  unconfined.
* With ``approvals``, every call is checked first (an ``"exec"`` :class:`~actors.tools.approvals.ApprovalRequest`);
  a refusal is a model-visible error and nothing runs. Approvals are layered on the sandbox as in
  codex: a call with ``with_escalated_permissions`` asks to run *outside* the sandbox (never granted
  under ``never``); ``on-request`` asks nothing else; ``untrusted`` asks before anything off its
  strict read-only list (approved, it still runs in the sandbox). When the sandbox probably denied a
  command (it failed with "Read-only file system", "Permission denied", an unreachable network…)
  and an approver can be asked, the user is offered to re-run it outside; otherwise the model is told
  the sandbox blocked it and how to ask.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Final

import attrs
import trio

from kernel.tools import RespondToModel

from .._registry import Tool, tool
from ..approvals import ApprovalPolicy, ApprovalRequest, Approvals
from ..sandbox import EnvironmentPolicy, Sandbox, SandboxMode, SandboxPolicy
from ..sandbox._denial import likely_denied

__all__ = ["make_shell_tool", "scrub_environment", "TIMEOUT_EXIT_CODE", "SECRET_SUFFIXES"]

TIMEOUT_EXIT_CODE: Final = 124
"""The exit code reported for a command that timed out (as ``timeout(1)`` does)."""

SECRET_SUFFIXES: Final = ("_API_KEY", "_TOKEN", "_SECRET")
"""Kept for compatibility: names ending with these are among what :func:`scrub_environment` drops
(it drops far more now: see :data:`~actors.tools.sandbox.DEFAULT_EXCLUDES`)."""

_DRAIN_GRACE: Final = 0.25
"""After the command exits, how long to wait for the rest of its output (background processes
still holding the pipe are killed after that)."""
_READ_SIZE: Final = 64 * 1024

_DESCRIPTION: Final = (
    "Runs a command in the workspace and returns its combined stdout and stderr with its exit code. "
    'Pass the program and its arguments as a list; for shell syntax use ["bash", "-lc", "<script>"]. '
    "Commands run non-interactively (stdin is empty) and are killed at the timeout; long output is "
    "shortened to its first and last lines."
)


def scrub_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (default: ``os.environ``) without secrets, as the default
    :class:`~actors.tools.sandbox.EnvironmentPolicy` builds it."""
    return EnvironmentPolicy().build(environ)


def make_shell_tool(
    workspace: str | os.PathLike[str],
    *,
    approvals: Approvals | None = None,
    default_timeout: float = 120.0,
    max_output_bytes: int = 64 * 1024,
    max_output_lines: int = 256,
    env: Mapping[str, str] | None = None,
    name: str = "shell",
    sandbox: SandboxPolicy | SandboxMode | str = SandboxMode.WORKSPACE_WRITE,
    env_policy: EnvironmentPolicy | None = None,
) -> Tool:
    """The ``shell`` tool for ``workspace`` (see the module docstring for what it does).

    ``approvals`` is consulted before every command (none: nothing is ever asked, and nothing runs
    outside the sandbox). ``default_timeout`` (seconds) applies when the call gives no
    ``timeout_ms``. ``max_output_bytes`` / ``max_output_lines`` cap the output shown to the model.
    ``sandbox``: the :class:`~actors.tools.sandbox.SandboxPolicy` (or its mode's name) commands run
    under. ``env_policy`` builds the child's environment from this process's when each command
    starts (default: :class:`~actors.tools.sandbox.EnvironmentPolicy()`); ``env`` replaces it with
    exactly the given mapping. ``name`` is the tool's name.

    Raises :class:`ValueError` if ``workspace`` is not a directory or a limit is not positive, and
    :class:`~actors.tools.sandbox.SandboxUnavailable` if the policy needs a sandbox this machine
    cannot provide.
    """
    root = Path(os.path.realpath(workspace))
    if not root.is_dir():
        raise ValueError(f"workspace {str(workspace)!r} is not a directory")
    if default_timeout <= 0:
        raise ValueError("default_timeout must be positive")
    if max_output_bytes < 2 or max_output_lines < 2:
        raise ValueError("max_output_bytes and max_output_lines must be at least 2")
    fixed_env = dict(env) if env is not None else None
    environment = env_policy if env_policy is not None else EnvironmentPolicy()
    box = Sandbox.for_workspace(sandbox, root)
    tool_name = name

    async def shell(
        command: list[str],
        workdir: str | None = None,
        timeout_ms: int | None = None,
        with_escalated_permissions: bool = False,
        justification: str | None = None,
    ) -> str:
        """Run a command.

        Args:
            command: The program and its arguments, e.g. ["ls", "-la"] or ["bash", "-lc", "make test 2>&1 | tail -n 40"]. No shell is involved unless you call one.
            workdir: The directory to run in, relative to the workspace root (default: the root). It must stay inside the workspace.
            timeout_ms: Kill the command after this many milliseconds (default: the tool's timeout). A timed-out command reports exit code 124.
            with_escalated_permissions: Ask the user to approve this command explicitly (set it when the command changes things outside the workspace, needs the network, or is otherwise risky).
            justification: Only with with_escalated_permissions: one sentence telling the user why the command is needed.
        """
        if not command or not command[0]:
            raise RespondToModel("command must be a non-empty list: the program, then its arguments")
        if any("\0" in part for part in command):
            raise RespondToModel("command arguments must not contain NUL characters")
        cwd = _resolve_workdir(root, workdir)
        if timeout_ms is not None and timeout_ms <= 0:
            raise RespondToModel(f"timeout_ms must be a positive number of milliseconds, not {timeout_ms}")
        timeout = default_timeout if timeout_ms is None else timeout_ms / 1000.0
        request = ApprovalRequest(
            kind="exec",
            tool=tool_name,
            command=tuple(command),
            cwd=str(cwd),
            escalated=with_escalated_permissions,
            justification=justification,
        )
        outside = not box.policy.confined
        if with_escalated_permissions and box.policy.confined:
            if approvals is None or approvals.policy is ApprovalPolicy.NEVER:
                raise RespondToModel(
                    "running outside the sandbox is not available (approval policy: never): "
                    f"run the command without with_escalated_permissions; it runs in the {box.policy.mode.value} sandbox"
                )
            outside = True  # approved just below, or refused there
        if approvals is not None:
            await approvals.check(request)
        child_env = fixed_env if fixed_env is not None else environment.build()

        async def run_it(unconfined: bool) -> tuple[int, str, float]:
            if unconfined:
                argv = list(command)
            else:  # the sandbox reports a missing program as its own failure: say it as a shell would
                cannot = _cannot_start(command[0], cwd, child_env)
                if cannot is not None:
                    return cannot[0], cannot[1], 0.0
                with tempfile.TemporaryDirectory(prefix="agent-kernel-tmp-") as tmp:
                    env = child_env if fixed_env is not None else {**child_env, "TMPDIR": tmp}
                    argv = box.wrap(command, cwd, env, Path(tmp))
                    return await _run_command(argv, cwd, env, timeout, max_output_bytes, max_output_lines)
            return await _run_command(argv, cwd, child_env, timeout, max_output_bytes, max_output_lines)

        exit_code, output, duration = await run_it(outside)
        if not outside and likely_denied(exit_code, output):
            exit_code, output, duration = await _after_denial(
                box, approvals, request, (exit_code, output, duration), run_it
            )
        return json.dumps(
            {"output": output, "metadata": {"exit_code": exit_code, "duration_seconds": round(duration, 1)}},
            ensure_ascii=False,
        )

    return tool(shell, name=name, description=_DESCRIPTION, parallel=False)


async def _after_denial(
    box: Sandbox,
    approvals: Approvals | None,
    request: ApprovalRequest,
    result: tuple[int, str, float],
    run_it: Callable[[bool], Awaitable[tuple[int, str, float]]],
) -> tuple[int, str, float]:
    """The sandbox probably denied the command: offer the user to re-run it outside (when an
    approver can be asked), else tell the model what happened and how to ask."""
    exit_code, output, duration = result
    if approvals is not None and approvals.approver is not None and approvals.policy is not ApprovalPolicy.NEVER:
        retry = attrs.evolve(
            request,
            escalated=True,
            reason=f"the {box.policy.mode.value} sandbox blocked it (exit {exit_code}); run it again outside the sandbox?",
        )
        try:
            await approvals.check(retry)
        except RespondToModel:
            pass  # declined: report the denial below
        else:
            return await run_it(True)
    if output and not output.endswith("\n"):
        output += "\n"
    output += (
        f"[sandbox] the command probably failed because the {box.policy.mode.value} sandbox blocked it "
        "(writes outside the workspace, to .git, or the network). If it is needed, call again with "
        "with_escalated_permissions: true and a justification to ask the user to run it outside the sandbox.\n"
    )
    return exit_code, output, duration


def _cannot_start(program: str, cwd: Path, env: Mapping[str, str]) -> tuple[int, str] | None:
    """(exit code, message) when ``program`` cannot be started as given (127 not found, 126 not
    executable), as ``_run_command`` reports it for an unsandboxed start; ``None`` when it can."""
    if "/" in program:
        path = str(cwd / program)
        if not os.path.exists(path):
            return 127, f"{program}: command not found\n"
    else:
        found = shutil.which(program, path=env.get("PATH", os.defpath))
        if found is None:
            return 127, f"{program}: command not found\n"
        path = found
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        return 126, f"{program}: permission denied (not executable)\n"
    return None


def _resolve_workdir(root: Path, workdir: str | None) -> Path:
    if workdir is None or workdir in ("", "."):
        return root
    if "\0" in workdir:
        raise RespondToModel("workdir must not contain NUL characters")
    candidate = Path(workdir)
    if not candidate.is_absolute():
        candidate = root / candidate
    real = Path(os.path.realpath(candidate))
    if real != root and root not in real.parents:
        raise RespondToModel(f"workdir {workdir!r} is outside the workspace ({root}); use a directory inside it")
    if not real.is_dir():
        what = "does not exist" if not real.exists() else "is not a directory"
        raise RespondToModel(f"workdir {workdir!r} {what}")
    return real


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone (PermissionError: macOS when only zombies remain)


async def _run_command(
    argv: list[str], cwd: Path, env: Mapping[str, str], timeout: float, max_bytes: int, max_lines: int
) -> tuple[int, str, float]:
    """Run ``argv``; return (exit code, capped output, seconds). Kills the process group on
    timeout, on leftover pipe holders, and on cancellation (then re-raises once reaped)."""
    started = time.monotonic()
    try:
        process = await trio.lowlevel.open_process(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=str(cwd),
            env=dict(env),
            start_new_session=True,
        )
    except FileNotFoundError:
        return 127, f"{argv[0]}: command not found\n", time.monotonic() - started
    except PermissionError as exc:
        return 126, f"{argv[0]}: permission denied ({exc.strerror})\n", time.monotonic() - started
    except OSError as exc:
        return 126, f"{argv[0]}: cannot run: {exc.strerror or exc}\n", time.monotonic() - started

    pgid = process.pid  # start_new_session: the child is its session's and group's leader
    stdout = process.stdout
    assert stdout is not None
    capture = _OutputCapture(max_bytes)
    eof = trio.Event()

    async def pump() -> None:
        try:
            while True:
                chunk = await stdout.receive_some(_READ_SIZE)
                if not chunk:
                    break
                capture.feed(chunk)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        eof.set()

    timed_out = False
    clean = False
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump)
            with trio.move_on_after(timeout) as deadline:
                await process.wait()
                with trio.move_on_after(_DRAIN_GRACE):
                    await eof.wait()
            timed_out = deadline.cancelled_caught
            if timed_out or not eof.is_set():
                _kill_group(pgid)
                with trio.move_on_after(_DRAIN_GRACE):  # collect what was written before the kill
                    await eof.wait()
                nursery.cancel_scope.cancel()
        clean = not timed_out
    finally:
        if not clean:
            _kill_group(pgid)
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                await process.wait()
            await stdout.aclose()
    duration = time.monotonic() - started
    text = capture.render(max_lines)
    if timed_out:
        if text and not text.endswith("\n"):
            text += "\n"
        text += f"command timed out after {timeout:g} seconds\n"
        return TIMEOUT_EXIT_CODE, text, duration
    returncode = process.returncode
    assert returncode is not None
    if returncode < 0:  # killed by a signal: report it as a shell would
        returncode = 128 - returncode
    return returncode, text, duration


class _OutputCapture:
    """Bounded capture of a byte stream: the first ``limit`` bytes, the last ``limit`` (at least)
    bytes, and the total byte and newline counts."""

    __slots__ = ("limit", "head", "tail", "total", "newlines", "last_byte")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self.newlines = 0
        self.last_byte = b""

    def feed(self, chunk: bytes | bytearray) -> None:
        self.total += len(chunk)
        self.newlines += chunk.count(b"\n")
        self.last_byte = bytes(chunk[-1:])
        room = self.limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
        self.tail += chunk
        if len(self.tail) > 2 * self.limit:
            del self.tail[: len(self.tail) - self.limit]

    def render(self, max_lines: int) -> str:
        """The output as text, with head and tail kept and the middle omitted when it exceeds
        ``max_lines`` lines or ``limit`` bytes."""
        total_lines = self.newlines + (1 if self.total and self.last_byte != b"\n" else 0)
        if self.total <= self.limit and total_lines <= max_lines:
            return self.head.decode("utf-8", errors="replace")
        return _truncate(self, total_lines, max_lines)


def _truncate(capture: _OutputCapture, total_lines: int, max_lines: int) -> str:
    half_bytes = max(1, capture.limit // 2)
    head_lines_max = max_lines // 2
    tail_lines_max = max_lines - head_lines_max
    # head: whole lines from the start; tail: whole lines from the end, never reaching into the
    # head's lines. Within the budgets; a first (last) line too long is cut.
    head = bytes(capture.head)
    head_parts, head_bytes, head_cut = _keep_lines(
        _lines_forward(head, len(head) == capture.total), head_lines_max, half_bytes, from_end=False
    )
    head_count = len(head_parts)
    tail = bytes(capture.tail)
    tail_parts, tail_bytes, tail_cut = _keep_lines(
        _lines_backward(tail, len(tail) == capture.total),
        min(tail_lines_max, total_lines - head_count),
        half_bytes,
        from_end=True,
    )
    tail_parts.reverse()
    cut = head_cut or tail_cut

    omitted_lines = total_lines - head_count - len(tail_parts)
    omitted_bytes = capture.total - head_bytes - tail_bytes
    head_text = b"".join(head_parts).decode("utf-8", errors="replace")
    tail_text = b"".join(tail_parts).decode("utf-8", errors="replace")
    if head_text and not head_text.endswith("\n"):
        head_text += "\n"
    if cut and omitted_lines == 0:
        marker = f"[... {omitted_bytes} bytes omitted ...]"
    elif cut:
        marker = f"[... {omitted_lines} lines omitted; long lines cut, {omitted_bytes} bytes omitted in all ...]"
    else:
        marker = f"[... {omitted_lines} lines omitted ...]"
    return f"Total output lines: {total_lines}\n\n{head_text}{marker}\n{tail_text}"


def _keep_lines(
    lines: Iterator[tuple[bytes, bool]], max_count: int, budget: int, *, from_end: bool
) -> tuple[list[bytes], int, bool]:
    """``(kept, bytes kept, cut)``: the complete ``lines`` (``(line, complete)`` pairs, nearest the
    edge first) while at most ``max_count`` of them fit in ``budget`` bytes; when not even the first
    fits, the part of it next to the edge (its end when ``from_end``, else its start), and ``cut``."""
    kept: list[bytes] = []
    used = 0
    if max_count <= 0:
        return kept, used, False
    for line, complete in lines:
        if complete and used + len(line) <= budget:
            kept.append(line)
            used += len(line)
            if len(kept) == max_count:
                break
            continue
        if not kept:  # one long first line: keep the part next to the edge
            piece = line[-budget:] if from_end else line[:budget]
            return [piece], len(piece), True
        break
    return kept, used, False


def _lines_forward(buf: bytes, whole: bool) -> Iterator[tuple[bytes, bool]]:
    """``buf``'s lines (each with its newline), first to last; the last, without a newline, is
    complete only if ``whole`` (``buf`` holds the whole stream)."""
    pos = 0
    while pos < len(buf):
        nl = buf.find(b"\n", pos)
        end = nl + 1 if nl >= 0 else len(buf)
        yield buf[pos:end], nl >= 0 or whole
        pos = end


def _lines_backward(buf: bytes, whole: bool) -> Iterator[tuple[bytes, bool]]:
    """``buf``'s lines (each with its newline), last to first; the first is complete only if
    ``whole`` (``buf`` holds the whole stream, so it starts at a line start)."""
    end = len(buf)
    while end > 0:
        search_end = end - 1 if buf[end - 1 : end] == b"\n" else end
        start = buf.rfind(b"\n", 0, search_end) + 1
        yield buf[start:end], start > 0 or whole
        end = start
