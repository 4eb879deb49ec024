"""``agent-kernel history ROLLOUT``: a rollout as readable lines (or its records with ``--json``).

Reads the JSONL file record by record without building items, so records of kinds this version
does not know are shown rather than refused. A torn last line (a crash mid-write) is skipped
with a note on stderr, as :func:`actors.history.resume` does.

A ``compacted`` record (context compaction replaced the history) is shown as a rule saying how
many items it replaced with how many, why, and the token estimates::

      42  ── compacted: 182 items → 7 (compaction; ~48,000 → ~3,100 tokens)
          user: fix the test
          …

followed by the items of the new history (no ``seq``: they belong to the record); the item
records after it continue that history.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ._render import Console, describe_command, dumps, parse_exec_output, patch_summary

__all__ = ["print_history", "read_records", "describe_compaction", "HistoryFileError"]

_OUTPUT_CHARS = 200


class HistoryFileError(Exception):
    """The rollout cannot be read (missing, not JSONL, corrupt before its last line)."""


def read_records(path: str | Path, console: Console | None = None) -> Iterator[dict[str, Any]]:
    """The rollout's records in order; a corrupt last line is skipped (noted on stderr)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise HistoryFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        raise HistoryFileError(f"{path}: the rollout is empty")
    for number, raw in enumerate(lines, 1):
        try:
            record = json.loads(raw)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            if number == len(lines) and number > 1:
                if console is not None:
                    console.error(f"agent-kernel: {path}, line {number}: skipping a torn last line ({exc})")
                return
            raise HistoryFileError(f"{path}, line {number}: not a rollout record ({exc})") from None
        if number == 1 and record.get("type") != "session_meta":
            raise HistoryFileError(f"{path}: not a rollout (the first line is not a session_meta header)")
        yield record


def _cut(text: str, full: bool, limit: int = _OUTPUT_CHARS) -> str:
    if full:
        return text
    flat = " ⏎ ".join(line for line in text.strip().splitlines())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def describe_item(item: Mapping[str, Any], *, success: bool | None, full: bool) -> str:
    """One readable line for a wire item."""
    kind = item.get("type")
    if kind == "message":
        role = item.get("role", "?")
        return f"{role}: {_cut(_content_text(item.get('content')), full, 400)}"
    if kind == "reasoning":
        summary = " ".join(_content_text([p]) for p in item.get("summary") or [] if isinstance(p, Mapping))
        return f"reasoning: {_cut(summary, full) or '(encrypted)'}"
    if kind == "function_call":
        name = item.get("name", "?")
        arguments = item.get("arguments", "")
        shown = arguments
        try:
            args = json.loads(arguments)
            if isinstance(args, dict) and "command" in args:
                shown = describe_command(args["command"])
                if args.get("workdir"):
                    shown += f"  (in {args['workdir']})"
        except (ValueError, TypeError):
            pass
        return f"call {name} [{item.get('call_id', '')}]: {_cut(str(shown), full)}"
    if kind == "custom_tool_call":
        name = item.get("name", "?")
        text = item.get("input", "")
        shown = patch_summary(text) if name == "apply_patch" and not full else text
        return f"call {name} [{item.get('call_id', '')}]: {_cut(shown, full)}"
    if kind in ("function_call_output", "custom_tool_call_output"):
        text = _content_text(item.get("output"))
        body, code = parse_exec_output(text)
        verdict = "failed" if success is False else "ok" if success else "output"
        if code is not None:
            verdict += f", exit {code}"
        return f"output [{item.get('call_id', '')}] ({verdict}): {_cut(body, full)}"
    if kind == "local_shell_call":
        command = (item.get("action") or {}).get("command", [])
        return f"call local_shell [{item.get('call_id', '')}]: {_cut(describe_command(command), full)}"
    return f"{kind}: {_cut(dumps(item), full)}"


_SHOWN_EVENTS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "turn_started": lambda e: f"turn started ({e.get('turn_id')})",
    "turn_completed": lambda e: f"turn completed ({e.get('turn_id')})",
    "turn_aborted": lambda e: f"turn aborted ({e.get('turn_id')}: {e.get('reason')})",
    "turn_failed": lambda e: f"turn failed ({e.get('turn_id')}): {e.get('error_type')}: {e.get('error')}",
    "stream_retry": lambda e: f"{e.get('message')} ({e.get('error')})",
    "fallback_warning": lambda e: str(e.get("message")),
    "context_window_full": lambda e: "context window full",
    "token_usage_updated": lambda e: "tokens: {input_tokens} in, {output_tokens} out".format(
        **{"input_tokens": 0, "output_tokens": 0, **(e.get("last") or {})}
    ),
}


def _tokens(value: Any) -> str | None:
    return f"~{value:,}" if isinstance(value, int) and not isinstance(value, bool) else None


def describe_compaction(record: Mapping[str, Any], items_before: int, *, arrow: str = "→") -> str:
    """``compacted: 182 items → 7 (compaction; ~48,000 → ~3,100 tokens)`` for a ``compacted``
    record replacing ``items_before`` items (token estimates shown when the record has them)."""
    items = record.get("items")
    after = len(items) if isinstance(items, list) else 0
    noun = "item" if items_before == 1 else "items"
    details = [str(record.get("reason") or "compaction")]
    before_t, after_t = _tokens(record.get("tokens_before")), _tokens(record.get("tokens_after"))
    if before_t and after_t:
        details.append(f"{before_t} {arrow} {after_t} tokens")
    elif before_t:
        details.append(f"{before_t} tokens before")
    elif after_t:
        details.append(f"{after_t} tokens after")
    return f"compacted: {items_before} {noun} {arrow} {after} ({'; '.join(details)})"


def _item_line(c: Console, seq: str, item: Mapping[str, Any], success: Any, full: bool) -> None:
    text = describe_item(item, success=success if isinstance(success, bool) else None, full=full)
    style = "31" if success is False else "36" if str(item.get("type", "")).endswith("call") else ""
    c.line(f"{c.style(f'{seq:>4}', '2')}  {c.style(text, style) if style else text}")


def print_history(path: str | Path, console: Console, *, as_json: bool = False, full: bool = False) -> None:
    """Print the rollout at ``path``: the header, then one line per item and turn event (tool
    outputs cut to a line unless ``full``), and for each compaction a rule and the items of the
    new history; with ``as_json`` every record as one JSON line."""
    c = console
    live = 0  # items in the history so far: since the start, or the last compaction's
    for record in read_records(path, console):
        kind = record.get("type")
        if as_json:
            c.write(dumps(record) + "\n")
            continue
        if kind == "session_meta":
            c.line(c.style(f"session {record.get('session_id')}", "1"))
            for key in ("created", "model", "cwd", "version"):
                c.line(c.style(f"  {key}: {record.get(key)}", "2"))
            c.line()
        elif kind == "item":
            live += 1
            _item_line(c, str(record.get("seq", "")), record.get("item") or {}, record.get("success"), full)
        elif kind == "compacted":
            items = record.get("items")
            items = [i for i in items if isinstance(i, Mapping)] if isinstance(items, list) else []
            success = record.get("success")
            success = success if isinstance(success, list) and len(success) == len(items) else [None] * len(items)
            rule = f"{c.sym('──', '--')} {describe_compaction(record, live, arrow=c.sym('→', '->'))}"
            seq = c.style(f"{record.get('seq', ''):>4}", "2")
            c.line(f"{seq}  {c.style(rule, '1')}")
            for item, ok in zip(items, success, strict=True):
                _item_line(c, "", item, ok, full)
            live = len(items)
        elif kind == "event":
            event = record.get("event") or {}
            shown = _SHOWN_EVENTS.get(str(event.get("type")))
            if shown is not None:
                c.line(c.style(f"{record.get('seq', ''):>4}  -- {shown(event)}", "2"))
        else:
            c.line(c.style(f"      ({kind} record)", "2"))
