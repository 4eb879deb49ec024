"""Terminal and ``--json`` rendering of a session's events.

:class:`Console` owns stdout and stderr: every write goes through it, so secrets are scrubbed in
one place and the spinner line (rewritten with ``\\r``) is cleared before anything else is
written. :class:`HumanRenderer` turns events into a readable transcript; :class:`JsonRenderer`
prints one JSON object per event (:func:`kernel.event_to_dict`) and nothing else on stdout.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

import attrs
import trio

from kernel import (
    CompactionFinished,
    ContextWindowFull,
    CustomToolCall,
    CustomToolCallOutput,
    Event,
    FallbackWarning,
    FunctionCall,
    FunctionCallOutput,
    ItemCompleted,
    LocalShellCall,
    McpToolCallOutput,
    Message,
    Reasoning,
    ReasoningDelta,
    ResponseInputItem,
    ResponseItem,
    StreamRetry,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    TurnAborted,
    TurnCompleted,
    TurnFailed,
    TurnStarted,
    event_to_dict,
)

__all__ = [
    "Console",
    "Tally",
    "HumanRenderer",
    "JsonRenderer",
    "describe_call",
    "describe_command",
    "dumps",
    "format_duration",
    "output_text",
    "parse_exec_output",
    "patch_summary",
    "REDACTED",
]

REDACTED = "[REDACTED]"
_OUTPUT_LINES = 5  # lines of a tool's output shown under its result line
_LINE_WIDTH = 160
_SPINNER_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_SPINNER_AFTER = 0.3  # seconds of silence before the spinner shows


def _wants_color(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return _isatty(stream)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def _unicode_ok(stream: TextIO) -> bool:
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "").replace("_", "")
    return encoding in ("utf8", "utf8sig")


class Console:
    """Every byte the CLI writes to stdout and stderr goes through here.

    ``secrets`` are replaced by ``[REDACTED]`` in everything written (also their JSON-escaped
    spelling). stdout writes are flushed at once. While :meth:`paused` (an approval prompt is on
    the terminal) stdout writes are held back and written when the pause ends. The spinner line
    is drawn only on a terminal stdout and is erased before any other write.
    """

    def __init__(self, stdout: TextIO, stderr: TextIO, *, secrets: Iterable[str] = ()) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.secrets: list[str] = []
        for s in secrets:
            self.add_secret(s)
        self.stdout_tty = _isatty(stdout)
        self.color_out = _wants_color(stdout)
        self.color_err = _wants_color(stderr)
        self.unicode = _unicode_ok(stdout)
        self.at_line_start = True
        self._tail = "\n\n"  # the last two characters written to stdout
        self.last_write = time.monotonic()
        self._spinner_visible = False
        self._paused = 0
        self._held: list[str] = []

    def add_secret(self, secret: str | None) -> None:
        """Scrub ``secret`` (and its JSON-escaped form) from everything written from now on."""
        if not secret:
            return
        for form in (secret, json.dumps(secret)[1:-1]):
            if form and form not in self.secrets:
                self.secrets.append(form)
        self.secrets.sort(key=len, reverse=True)

    def scrub(self, text: str) -> str:
        """``text`` with every secret replaced by ``[REDACTED]``."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    # ---- stdout --------------------------------------------------------------------------

    def write(self, text: str) -> None:
        """Write ``text`` to stdout as it is (scrubbed) and flush."""
        if not text:
            return
        text = self.scrub(text)
        if self._paused:
            self._held.append(text)
            return
        self._emit(text)

    def _emit(self, text: str) -> None:
        self.clear_spinner()
        try:
            self.stdout.write(text)
            self.stdout.flush()
        except BrokenPipeError:
            pass  # a closed pipe (`| head`): keep running, the rollout still records everything
        self.at_line_start = text.endswith("\n")
        self._tail = (self._tail + text)[-2:]
        self.last_write = time.monotonic()

    def end_line(self) -> None:
        """Start a new line on stdout unless the cursor is already at the start of one."""
        if not self.at_line_start:
            self.write("\n")

    def blank_line(self) -> None:
        """End the current line and leave one empty line (unless there is one already)."""
        self.end_line()
        if self._tail != "\n\n" and not self._paused:
            self.write("\n")

    def line(self, text: str = "") -> None:
        """Write ``text`` as a line of its own on stdout."""
        self.end_line()
        self.write(text + "\n")

    # ---- stderr --------------------------------------------------------------------------

    def error(self, text: str) -> None:
        """Write one line to stderr (after ending a half-written stdout line on a terminal)."""
        prefix = ""
        if self._paused:
            prefix = "\n"  # a question is waiting for its answer on this line
        elif self.stdout_tty:
            self.clear_spinner()
            self.end_line()
        try:
            self.stderr.write(prefix + self.scrub(text) + "\n")
            self.stderr.flush()
        except BrokenPipeError:
            pass

    # ---- styles --------------------------------------------------------------------------

    def style(self, text: str, code: str, *, err: bool = False) -> str:
        """``text`` in an ANSI style (``"2"`` dim, ``"1"`` bold, ``"31"`` red…) when that stream
        is a terminal that takes colours."""
        if not (self.color_err if err else self.color_out):
            return text
        return f"\x1b[{code}m{text}\x1b[0m"

    def sym(self, fancy: str, plain: str) -> str:
        """``fancy`` when stdout takes UTF-8, else ``plain``."""
        return fancy if self.unicode else plain

    # ---- the spinner ---------------------------------------------------------------------

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Hold stdout writes back and keep the spinner off (a prompt is on the terminal)."""
        self.clear_spinner()
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1
            if not self._paused:
                held, self._held = self._held, []
                if held:
                    self._emit("".join(held))

    def can_spin(self) -> bool:
        """Whether a spinner may be drawn now: a terminal stdout, at the start of a line, not
        paused, and nothing written for a moment."""
        return (
            self.stdout_tty
            and not self._paused
            and self.at_line_start
            and time.monotonic() - self.last_write >= _SPINNER_AFTER
        )

    def show_spinner(self, text: str) -> None:
        """Draw (or redraw) the spinner line; it stays until the next write."""
        try:
            self.stdout.write("\r\x1b[2K" + text)
            self.stdout.flush()
        except BrokenPipeError:
            return
        self._spinner_visible = True

    def clear_spinner(self) -> None:
        """Erase the spinner line if it is shown."""
        if self._spinner_visible:
            self._spinner_visible = False
            try:
                self.stdout.write("\r\x1b[2K")
                self.stdout.flush()
            except BrokenPipeError:
                pass


# ---------------------------------------------------------------------------------------------
# Counting
# ---------------------------------------------------------------------------------------------


@attrs.define
class Tally:
    """What the summary counts, updated from every event."""

    turns: int = 0
    tool_calls: int = 0
    tool_failures: int = 0
    retries: int = 0

    def add(self, event: Event) -> None:
        if isinstance(event, TurnStarted):
            self.turns += 1
        elif isinstance(event, ToolCallStarted):
            self.tool_calls += 1
        elif isinstance(event, ToolCallFinished):
            if event.status != "ok":
                self.tool_failures += 1
        elif isinstance(event, StreamRetry):
            self.retries += 1


# ---------------------------------------------------------------------------------------------
# Describing calls and outputs
# ---------------------------------------------------------------------------------------------


def describe_command(command: Any) -> str:
    """A command as a user would type it: the script of ``bash -lc <script>``, else shell-quoted
    words (a string is shown as it is)."""
    if isinstance(command, str):
        return command
    if not isinstance(command, Sequence) or not all(isinstance(w, str) for w in command):
        return json.dumps(command, ensure_ascii=False)
    words = [str(w) for w in command]
    if (
        len(words) == 3
        and os.path.basename(words[0]) in ("bash", "sh", "zsh", "dash")
        and words[1] in ("-c", "-lc", "-cl")
    ):
        return words[2]
    return shlex.join(words)


def _one_line(text: str, width: int = _LINE_WIDTH) -> str:
    lines = text.strip().splitlines() or [""]
    first = lines[0]
    if len(lines) > 1:
        first += " …"
    return first if len(first) <= width else first[: width - 1] + "…"


_PATCH_HEADERS = (
    ("*** Add File: ", "add"),
    ("*** Update File: ", "update"),
    ("*** Delete File: ", "delete"),
    ("*** Move to: ", "move to"),
)


def patch_summary(patch: str) -> str:
    """``add hello.py, update src/x.py`` from an ``apply_patch`` patch text."""
    parts = []
    for line in patch.splitlines():
        for prefix, verb in _PATCH_HEADERS:
            if line.startswith(prefix):
                parts.append(f"{verb} {line[len(prefix) :].strip()}")
    return ", ".join(parts) if parts else _one_line(patch, 80)


def describe_call(item: ResponseItem) -> str:
    """One line for a tool call: ``shell  ls -la``, ``apply_patch  add hello.py``, or the tool's
    name and its arguments."""
    if isinstance(item, FunctionCall):
        try:
            args = json.loads(item.arguments or "{}")
        except ValueError:
            args = None
        if isinstance(args, dict) and "command" in args and item.name in ("shell", "exec_command", "container.exec"):
            text = _one_line(describe_command(args["command"]))
            if args.get("workdir"):
                text += f"  (in {args['workdir']})"
            return f"{item.name}  {text}"
        return f"{item.name}  {_one_line(item.arguments or '', 120)}"
    if isinstance(item, CustomToolCall):
        if item.name == "apply_patch":
            return f"apply_patch  {patch_summary(item.input)}"
        return f"{item.name}  {_one_line(item.input, 120)}"
    if isinstance(item, LocalShellCall):
        return f"local_shell  {_one_line(describe_command(item.action.get('command', [])))}"
    return type(item).__name__


def output_text(output: ResponseInputItem) -> str:
    """The text of a tool output item (content parts joined)."""
    if isinstance(output, (FunctionCallOutput, CustomToolCallOutput)):
        body = output.output.body
        if isinstance(body, str):
            return body
        return "\n".join(str(part.get("text", "")) for part in body if isinstance(part, Mapping))
    if isinstance(output, McpToolCallOutput):
        return json.dumps(output.output, ensure_ascii=False)
    return ""


def parse_exec_output(text: str) -> tuple[str, int | None]:
    """``(output, exit_code)`` of a shell-style JSON output (``{"output", "metadata":
    {"exit_code", ...}}``), or ``(text, None)``."""
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("output"), str):
            meta = data.get("metadata")
            code = meta.get("exit_code") if isinstance(meta, dict) else None
            output: str = data["output"]
            return output, code if isinstance(code, int) and not isinstance(code, bool) else None
    return text, None


def format_duration(seconds: float) -> str:
    """``0.42s``, ``12.3s``, ``2m 05s``."""
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m {secs:02d}s"


# ---------------------------------------------------------------------------------------------
# Renderers
# ---------------------------------------------------------------------------------------------


class HumanRenderer:
    """The transcript on the terminal: assistant text as it streams, reasoning dimmed, one line
    per tool call and one per result (with the first lines of the output), notices on stderr,
    and a spinner with the elapsed time while nothing arrives (terminal stdout only)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._block: str | None = None  # "text" or "reasoning": the stream being written
        self._calls: dict[str, str] = {}  # call_id -> tool name
        self._last_call_line: str | None = None  # call_id whose start line was the last thing written
        self._after_tool = False  # a tool line was the last thing written: text starts a new paragraph
        self._spinning = False  # the spinner starts once the header is out
        self.started = time.monotonic()

    # -- header and summary ----------------------------------------------------------------

    def header(self, fields: Sequence[tuple[str, str]], task: str) -> None:
        c = self.console
        c.line(c.style("agent-kernel", "1") + c.style("  " + "  ".join(f"{k}: {v}" for k, v in fields), "2"))
        c.line(c.style(c.sym("› ", "> "), "36") + task)
        c.blank_line()
        self._spinning = True

    def note(self, text: str) -> None:
        self.console.error(self.console.style(text, "2", err=True))

    def summary(self, data: Mapping[str, Any]) -> None:
        c = self.console
        self._end_block()
        status = data["status"]
        colour = {"completed": "32", "failed": "31"}.get(status, "33")
        usage = data["usage"]
        parts = [
            f"{data['turns']} turn{'s' if data['turns'] != 1 else ''}",
            f"{data['model_requests']} model request{'s' if data['model_requests'] != 1 else ''}",
            f"{data['tool_calls']} tool call{'s' if data['tool_calls'] != 1 else ''}",
            f"{usage['total_tokens']:,} tokens ({usage['input_tokens']:,} in, {usage['output_tokens']:,} out)",
            f"{format_duration(data['wall_time_seconds'])}",
        ]
        c.blank_line()
        c.line(c.style(status, colour) + c.style("  " + " · ".join(parts), "2"))
        if data.get("rollout"):
            c.line(c.style(f"rollout: {data['rollout']}", "2"))

    # -- events ----------------------------------------------------------------------------

    def _end_block(self) -> None:
        if self._block is not None:
            self.console.end_line()
            self._block = None

    def _start_block(self, kind: str) -> bool:
        """Switch to streaming ``kind``; ``True`` if a new block began."""
        if self._block == kind:
            return False
        self._end_block()
        if self._after_tool:
            self.console.blank_line()
            self._after_tool = False
        self._block = kind
        self._last_call_line = None
        return True

    def event(self, event: Event) -> None:
        c = self.console
        if isinstance(event, TextDelta):
            self._start_block("text")
            c.write(event.delta)
        elif isinstance(event, ReasoningDelta):
            if self._start_block("reasoning"):
                c.write(c.style("thinking: ", "2;3"))
            elif event.section_break:
                c.write("\n")
            c.write(c.style(event.delta, "2;3"))
        elif isinstance(event, ItemCompleted):
            if isinstance(event.item, (Message, Reasoning)):
                self._end_block()
        elif isinstance(event, ToolCallStarted):
            self._end_block()
            self._calls[event.call_id] = event.name
            c.line(c.style(c.sym("• ", "* "), "36") + c.style(describe_call(event.item), "1"))
            self._last_call_line = event.call_id
            self._after_tool = True
        elif isinstance(event, ToolCallFinished):
            self._end_block()
            self._tool_result(event)
        elif isinstance(event, StreamRetry):
            self.console.error(
                c.style(f"{event.message} (in {event.delay:.1f}s: {_one_line(event.error, 200)})", "33", err=True)
            )
        elif isinstance(event, FallbackWarning):
            self.console.error(c.style(event.message, "33", err=True))
        elif isinstance(event, ContextWindowFull):
            self.console.error(c.style("the context window is full", "31", err=True))
        elif isinstance(event, CompactionFinished):
            self._end_block()
            if event.error is None:
                c.line(
                    c.style(
                        f"{c.sym('◦ ', '- ')}history compacted ({event.mode}): {event.items_before} items → "
                        f"{event.items_after}, ~{event.tokens_before:,} → ~{event.tokens_after:,} tokens",
                        "2",
                    )
                )
                self._after_tool = True
            else:
                self.console.error(c.style(f"compaction failed: {event.error}", "33", err=True))
        elif isinstance(event, TurnCompleted):
            self._end_block()
        elif isinstance(event, TurnAborted):
            self._end_block()
            self.console.error(c.style(f"turn aborted ({event.reason})", "33", err=True))
        elif isinstance(event, TurnFailed):
            self._end_block()
            self.console.error(c.style(f"error: {event.error}", "31", err=True))

    def _tool_result(self, event: ToolCallFinished) -> None:
        c = self.console
        text, exit_code = parse_exec_output(output_text(event.output))
        if event.status == "ok":
            if exit_code is None:
                verdict = c.style("ok", "32")
            else:
                verdict = c.style(f"exit {exit_code}", "32" if exit_code == 0 else "31")
        elif event.status == "aborted":
            verdict = c.style("aborted", "33")
        else:
            verdict = c.style(event.status, "31")
        who = ""
        if self._last_call_line != event.call_id:
            who = f"{self._calls.get(event.call_id, 'tool')} ({event.call_id}) "
        c.line(f"  {c.sym('└', '`-')} {who}{verdict}{c.style(' · ' + format_duration(event.duration), '2')}")
        lines = text.rstrip("\n").splitlines()
        for line in lines[:_OUTPUT_LINES]:
            shown = line if len(line) <= _LINE_WIDTH else line[: _LINE_WIDTH - 1] + "…"
            c.line(c.style("    " + shown, "2"))
        if len(lines) > _OUTPUT_LINES:
            more = len(lines) - _OUTPUT_LINES
            c.line(c.style(f"    {c.sym('…', '...')} {more} more line{'s' if more != 1 else ''}", "2"))
        self._last_call_line = None
        self._after_tool = True

    # -- the spinner -----------------------------------------------------------------------

    async def run_spinner(self) -> None:
        """Redraw the elapsed-time line while nothing arrives (terminal stdout only). Runs until
        cancelled."""
        c = self.console
        if not c.stdout_tty:
            return
        frames = _SPINNER_FRAMES if c.unicode else "|/-\\"
        n = 0
        while True:
            await trio.sleep(0.1)
            if self._spinning and c.can_spin():
                elapsed = time.monotonic() - self.started
                text = f"{frames[n % len(frames)]} Working {_elapsed(elapsed)} · Ctrl-C to interrupt"
                c.show_spinner(c.style(text, "2"))
                n += 1


def _elapsed(seconds: float) -> str:
    if seconds < 60:
        return f"{int(seconds)}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m {secs:02d}s"


def _json_default(value: Any) -> Any:
    if attrs.has(type(value)):
        return attrs.asdict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def dumps(obj: Any) -> str:
    """One compact JSON line (non-ASCII kept)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=_json_default)


class JsonRenderer:
    """``--json``: one JSON object per line on stdout — every event as
    :func:`kernel.event_to_dict` gives it, then ``{"type": "summary", ...}``. Notes go to
    stderr."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def header(self, fields: Sequence[tuple[str, str]], task: str) -> None:
        pass

    def note(self, text: str) -> None:
        self.console.error(text)

    def event(self, event: Event) -> None:
        self.console.write(dumps(event_to_dict(event)) + "\n")

    def summary(self, data: Mapping[str, Any]) -> None:
        self.console.write(dumps({"type": "summary", **data}) + "\n")

    async def run_spinner(self) -> None:
        return
