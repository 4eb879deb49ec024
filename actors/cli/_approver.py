"""The command line's approver: a y/n question on the terminal.

The question goes to ``/dev/tty`` (so it works with ``--json`` or stdout redirected), falling back
to stderr/stdin. When stdin is not a terminal nobody can answer: the request is refused at once
(never a hang), with a line on stderr saying so, and the model is told why.
"""

from __future__ import annotations

import sys
from typing import TextIO

import trio

from actors.tools.approvals import ApprovalRequest

from ._render import Console, describe_command

__all__ = ["TerminalApprover", "ApprovalUnavailable"]


class ApprovalUnavailable(Exception):
    """No terminal to ask on. :class:`~actors.tools.approvals.Approvals` turns it into a refusal the
    model sees ("approval failed: ... ApprovalUnavailable: <why>; ... was not run")."""


class TerminalApprover:
    """``await approver(request)`` asks on the terminal and returns ``True`` for ``y``/``yes``.

    Questions are asked one at a time (parallel calls wait their turn); while a question is on
    the terminal the console holds its stdout output back and hides the spinner. Cancellation
    (an interrupted turn) abandons the question.
    """

    def __init__(self, console: Console, *, stdin: TextIO | None = None, tty_path: str = "/dev/tty") -> None:
        self.console = console
        self._stdin = stdin
        self._tty_path = tty_path
        self._lock = trio.Lock()
        self.asked = 0
        self.refused_without_asking = 0

    def _stdin_is_terminal(self) -> bool:
        stdin = self._stdin if self._stdin is not None else sys.stdin
        try:
            return stdin is not None and stdin.isatty()
        except (AttributeError, ValueError, OSError):
            return False

    async def __call__(self, request: ApprovalRequest) -> bool:
        what = request.describe()
        if not self._stdin_is_terminal():
            self.refused_without_asking += 1
            self.console.error(
                f"agent-kernel: approval needed for {what} ({request.reason or 'approval policy'}), but stdin is "
                "not a terminal, so nobody can answer: refused. Run with --approval never to allow it without asking."
            )
            raise ApprovalUnavailable(
                "nobody could be asked (the command line is not attached to a terminal), so it was refused"
            )
        async with self._lock:
            self.asked += 1
            question = self.console.scrub(self._question(request))
            with self.console.paused():
                return await trio.to_thread.run_sync(self._ask, question, abandon_on_cancel=True)

    def _question(self, request: ApprovalRequest) -> str:
        lines = ["", f"Approval needed ({request.tool}):"]
        if request.kind == "exec":
            lines.append(f"  run: {describe_command(list(request.command))}")
            if request.cwd:
                lines.append(f"  in:  {request.cwd}")
        else:
            lines.append(f"  patch: {', '.join(request.paths) or '(no paths)'}")
        if request.reason:
            lines.append(f"  why: {request.reason}")
        if request.justification:
            lines.append(f"  model's justification: {request.justification}")
        lines.append("Allow? [y/N] ")
        return "\n".join(lines)

    def _ask(self, question: str) -> bool:
        """Blocking: write the question, read one line (runs in a worker thread)."""
        try:
            with open(self._tty_path, "r+", encoding="utf-8", errors="replace") as tty:
                tty.write(question)
                tty.flush()
                answer = tty.readline()
        except OSError:
            sys.stderr.write(question)
            sys.stderr.flush()
            answer = sys.stdin.readline()
        return answer.strip().lower() in ("y", "yes")
