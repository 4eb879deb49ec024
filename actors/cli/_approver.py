"""The command line's approver: a y/n question on the terminal — for tool approvals, an MCP
server's sampling requests — and the form an MCP server's elicitation asks the user to fill.

The question goes to ``/dev/tty`` (so it works with ``--json`` or stdout redirected), falling back
to stderr/stdin. When stdin is not a terminal nobody can answer: the request is refused at once
(an elicitation declined; never a hang), with a line on stderr saying so, and the model (or the
server) is told why.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

import trio

from actors.tools.approvals import ApprovalPolicy, ApprovalRequest
from kernel.items import Message

from ._render import Console, describe_command

__all__ = ["TerminalApprover", "ApprovalUnavailable", "parse_field"]


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
        elif request.kind == "mcp":
            lines.append(f"  MCP server: {request.server}")
            arguments = request.arguments if len(request.arguments) <= 500 else request.arguments[:500] + "…"
            lines.append(f"  arguments: {arguments}")
            lines.append(f"  the server says: {', '.join(request.hints) or 'nothing about its effects'}")
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
        return self._converse(lambda ask: ask(question)).strip().lower() in ("y", "yes")

    def _converse(self, talk: Callable[[Callable[[str], str]], Any]) -> Any:
        """Blocking: run ``talk(ask)`` where ``ask(text)`` writes ``text`` and reads one line, on
        ``/dev/tty`` (else stderr / stdin)."""
        try:
            with open(self._tty_path, "r+", encoding="utf-8", errors="replace") as tty:

                def ask_tty(text: str) -> str:
                    tty.write(text)
                    tty.flush()
                    return tty.readline()

                return talk(ask_tty)
        except OSError:

            def ask_std(text: str) -> str:
                sys.stderr.write(text)
                sys.stderr.flush()
                return sys.stdin.readline()

            return talk(ask_std)

    # --- MCP servers asking the user ---------------------------------------------------------

    async def elicit(self, server: str, message: str, schema: dict[str, Any]) -> Any:
        """An MCP server's ``elicitation/create``: show its message, then ask each field of its
        (flat) schema. Declined without a terminal, or when the user says no; cancelled when a
        required field is left unanswered after three tries."""
        from actors.tools.mcp import ElicitAnswer

        if not self._stdin_is_terminal():
            self.refused_without_asking += 1
            self.console.error(
                f"agent-kernel: MCP server {server!r} asks a question, but stdin is not a terminal: declined"
            )
            return ElicitAnswer.decline()
        async with self._lock:
            self.asked += 1
            header = self.console.scrub(f"\nMCP server {server!r} asks: {message}\nAnswer? [y/N] ")
            fields = _form_fields(schema)
            with self.console.paused():
                return await trio.to_thread.run_sync(
                    self._converse, lambda ask: _fill_form(ask, header, fields), abandon_on_cancel=True
                )

    def sampling_approver(self, policy: ApprovalPolicy | str) -> Callable[[str, list[Message], str | None], Any]:
        """The ``mcp_sample_approve`` of a session under ``policy``: ``never`` lets every sampling
        request run without asking; otherwise the user is asked (shown the server, its system
        prompt and last message), and without a terminal the request is refused."""
        policy = ApprovalPolicy(policy)

        async def approve(server: str, messages: list[Message], system: str | None) -> bool:
            if policy is ApprovalPolicy.NEVER:
                return True
            if not self._stdin_is_terminal():
                self.refused_without_asking += 1
                self.console.error(
                    f"agent-kernel: MCP server {server!r} asks to use the model (sampling), but stdin is not a "
                    "terminal, so nobody can approve it: refused"
                )
                return False
            last = messages[-1].text() if messages else ""
            lines = ["", f"MCP server {server!r} asks to use the model (sampling):"]
            if system:
                lines.append(f"  system prompt: {_short(system)}")
            lines.append(f"  {len(messages)} message(s); the last: {_short(last)}")
            lines.append("Allow? [y/N] ")
            async with self._lock:
                self.asked += 1
                question = self.console.scrub("\n".join(lines))
                with self.console.paused():
                    return await trio.to_thread.run_sync(self._ask, question, abandon_on_cancel=True)

        return approve


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


_FieldSpec = tuple[str, dict[str, Any], bool]


def _form_fields(schema: dict[str, Any]) -> list[_FieldSpec]:
    """``(name, property schema, required)`` for each property of an elicitation schema."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    required = set(schema.get("required") or ()) if isinstance(schema, dict) else set()
    if not isinstance(properties, dict):
        return []
    return [(name, spec if isinstance(spec, dict) else {}, name in required) for name, spec in properties.items()]


def parse_field(text: str, spec: dict[str, Any]) -> Any:
    """The value of one answer for a field of ``spec`` (an elicitation's primitive schema:
    string, number, integer, boolean, or a string enum). Raises ``ValueError`` naming what
    is expected."""
    choices = spec.get("enum")
    kind = spec.get("type", "string")
    text = text.strip()
    if isinstance(choices, list) and choices:
        if text not in [str(c) for c in choices]:
            raise ValueError("one of " + ", ".join(str(c) for c in choices))
        return next(c for c in choices if str(c) == text)
    if kind == "boolean":
        if text.lower() in ("y", "yes", "true"):
            return True
        if text.lower() in ("n", "no", "false"):
            return False
        raise ValueError("yes or no")
    if kind == "integer":
        try:
            return int(text)
        except ValueError:
            raise ValueError("a whole number") from None
    if kind == "number":
        try:
            return float(text)
        except ValueError:
            raise ValueError("a number") from None
    return text


def _fill_form(ask: Callable[[str], str], header: str, fields: list[_FieldSpec]) -> Any:
    """Blocking: the terminal conversation of one elicitation."""
    from actors.tools.mcp import ElicitAnswer

    if ask(header).strip().lower() not in ("y", "yes"):
        return ElicitAnswer.decline()
    content: dict[str, Any] = {}
    for name, spec, required in fields:
        label = spec.get("title") or name
        hint = spec.get("description")
        prompt = f"  {label}{' (' + hint + ')' if hint else ''}{'' if required else ' [optional]'}: "
        for _ in range(3):
            text = ask(prompt).rstrip("\n")
            if not text.strip():
                if not required:
                    break
                prompt = f"  (a value is required) {label}: "
                continue
            try:
                content[name] = parse_field(text, spec)
                break
            except ValueError as exc:
                prompt = f"  (expected {exc}) {label}: "
        else:
            return ElicitAnswer.cancel()
    return ElicitAnswer.accept(content)
