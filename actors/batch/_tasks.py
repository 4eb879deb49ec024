"""Batch tasks: the JSONL task file and the :class:`BatchTask` value.

One task per line, a JSON object::

    {"id": "fix-1", "input": "Fix the failing test in tests/test_x.py",
     "model": "gpt-5", "tools": ["shell", "apply_patch"], "cwd": "repos/x", "metadata": {"k": 1}}

* ``id`` (required): a non-empty string (an integer is taken as its decimal string), unique in
  the file; it names the task's result record and rollout file.
* ``input`` (required): a user message (a non-empty string) or a list of Responses API input
  items in wire form (``{"type": "message", "role": "user", "content": [...]}``, …).
* ``model``: the model name for this task (default: the batch's model).
* ``tools``: names of built-in tools to enable: ``"shell"``, ``"apply_patch"`` (default: none).
* ``cwd``: the tools' workspace (default: a fresh ``workspaces/<id>`` directory in the output
  directory, made only when the task has tools).
* ``metadata``: any JSON object, copied as it is into the task (not sent to the model).

Any other key is an error (put extra fields under ``metadata``). Blank lines are skipped. A bad
line — not JSON, not an object, a missing or wrong field, a duplicate ``id`` (the later line is
the bad one) — is reported as a :class:`TaskLineError` with its 1-based line number and skipped;
every other line still loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from kernel import Message, ResponseItem, WireFormatError, item_from_wire
from kernel.items import json_type_name

__all__ = [
    "BUILTIN_TOOL_NAMES",
    "BatchTask",
    "TaskFormatError",
    "TaskLineError",
    "load_tasks",
    "parse_tasks",
    "safe_id",
]

BUILTIN_TOOL_NAMES: Final = ("shell", "apply_patch")
"""The tool names a task may list in ``tools``."""

_KEYS: Final = ("id", "input", "model", "tools", "cwd", "mcp_servers", "metadata")


class TaskFormatError(ValueError):
    """A task object does not have the documented shape (the message names the field)."""


def _freeze_input(value: str | Sequence[Mapping[str, Any]]) -> str | tuple[dict[str, Any], ...]:
    if isinstance(value, str):
        return value
    return tuple(dict(item) for item in value)


def _freeze_tools(value: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


@attrs.frozen(kw_only=True)
class BatchTask:
    """One task of a batch: run ``input`` as one turn of a fresh session.

    ``input`` is a user message or a list of wire input items (kept in wire form, so a task
    travels as JSON: :meth:`to_json` / :meth:`from_json`). ``tools`` names built-in tools
    (:data:`BUILTIN_TOOL_NAMES`); ``None`` or empty: none. ``mcp_servers`` names the batch's MCP
    servers the task's session gets (``None``: all of them; empty: none). Construct from untrusted
    data with :meth:`from_json`, which validates every field.
    """

    id: str
    input: str | tuple[dict[str, Any], ...] = attrs.field(converter=_freeze_input)
    model: str | None = None
    tools: tuple[str, ...] | None = attrs.field(default=None, converter=_freeze_tools)
    cwd: str | None = None
    mcp_servers: tuple[str, ...] | None = attrs.field(default=None, converter=_freeze_tools)
    metadata: dict[str, Any] = attrs.field(factory=dict, hash=False)

    def input_items(self) -> list[ResponseItem]:
        """The input as kernel items (a string becomes one user message). Raises
        :class:`TaskFormatError` for a malformed wire item."""
        if isinstance(self.input, str):
            return [Message.user(self.input)]
        out: list[ResponseItem] = []
        for i, raw in enumerate(self.input):
            try:
                out.append(item_from_wire(raw))
            except WireFormatError as exc:
                raise TaskFormatError(f"input[{i}]: {exc}") from None
        return out

    def to_json(self) -> dict[str, Any]:
        """The task as a JSON object (the task-file form; ``None`` fields left out)."""
        out: dict[str, Any] = {"id": self.id, "input": self.input if isinstance(self.input, str) else list(self.input)}
        if self.model is not None:
            out["model"] = self.model
        if self.tools is not None:
            out["tools"] = list(self.tools)
        if self.cwd is not None:
            out["cwd"] = self.cwd
        if self.mcp_servers is not None:
            out["mcp_servers"] = list(self.mcp_servers)
        if self.metadata:
            out["metadata"] = self.metadata
        return out

    @classmethod
    def from_json(cls, obj: Any) -> BatchTask:
        """Validate and build a task from its JSON object. Raises :class:`TaskFormatError`."""
        if not isinstance(obj, Mapping):
            raise TaskFormatError(f"expected a JSON object, got {_type_name(obj)}")
        unknown = sorted(set(obj) - set(_KEYS))
        if unknown:
            raise TaskFormatError(
                f"unknown key(s) {', '.join(map(repr, unknown))}; a task has {', '.join(_KEYS)} "
                "(put extra fields under 'metadata')"
            )
        if "id" not in obj:
            raise TaskFormatError("missing 'id'")
        task_id = obj["id"]
        if isinstance(task_id, int) and not isinstance(task_id, bool):
            task_id = str(task_id)
        if not isinstance(task_id, str) or not task_id.strip():
            raise TaskFormatError(f"'id' must be a non-empty string, got {_show(task_id)}")
        if "input" not in obj:
            raise TaskFormatError("missing 'input'")
        raw_input = obj["input"]
        if isinstance(raw_input, str):
            if not raw_input.strip():
                raise TaskFormatError("'input' is an empty string")
        elif isinstance(raw_input, list):
            if not raw_input:
                raise TaskFormatError("'input' is an empty list")
            for i, item in enumerate(raw_input):
                try:
                    item_from_wire(item)
                except WireFormatError as exc:
                    raise TaskFormatError(f"input[{i}]: {exc}") from None
        else:
            raise TaskFormatError(f"'input' must be a string or a list of input items, got {_type_name(raw_input)}")
        model = obj.get("model")
        if model is not None and (not isinstance(model, str) or not model.strip()):
            raise TaskFormatError(f"'model' must be a non-empty string, got {_show(model)}")
        tools = obj.get("tools")
        if tools is not None:
            if not isinstance(tools, list) or not all(isinstance(t, str) for t in tools):
                raise TaskFormatError(f"'tools' must be a list of tool names, got {_show(tools)}")
            bad = [t for t in tools if t not in BUILTIN_TOOL_NAMES]
            if bad:
                raise TaskFormatError(
                    f"unknown tool(s) {', '.join(map(repr, bad))} in 'tools'; built-in tools: {', '.join(BUILTIN_TOOL_NAMES)}"
                )
            if len(set(tools)) != len(tools):
                raise TaskFormatError(f"'tools' lists a tool twice: {_show(tools)}")
        cwd = obj.get("cwd")
        if cwd is not None and (not isinstance(cwd, str) or not cwd):
            raise TaskFormatError(f"'cwd' must be a non-empty string, got {_show(cwd)}")
        servers = obj.get("mcp_servers")
        if servers is not None:
            if not isinstance(servers, list) or not all(isinstance(s, str) and s for s in servers):
                raise TaskFormatError(f"'mcp_servers' must be a list of MCP server names, got {_show(servers)}")
            if len(set(servers)) != len(servers):
                raise TaskFormatError(f"'mcp_servers' lists a server twice: {_show(servers)}")
        metadata = obj.get("metadata", {})
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, Mapping):
            raise TaskFormatError(f"'metadata' must be a JSON object, got {_type_name(metadata)}")
        return cls(
            id=task_id,
            input=raw_input,
            model=model,
            tools=tools,
            cwd=cwd,
            mcp_servers=servers,
            metadata=dict(metadata),
        )


@attrs.frozen
class TaskLineError:
    """A task line that was skipped: ``line`` (1-based) and what is wrong with it."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def parse_tasks(lines: Sequence[str] | str) -> tuple[list[BatchTask], list[TaskLineError]]:
    """:func:`load_tasks` on text already read (a string or its lines)."""
    if isinstance(lines, str):
        lines = lines.split("\n")
    tasks: list[BatchTask] = []
    errors: list[TaskLineError] = []
    seen: dict[str, int] = {}
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except ValueError as exc:
            errors.append(TaskLineError(number, f"not JSON: {exc}"))
            continue
        try:
            task = BatchTask.from_json(obj)
        except TaskFormatError as exc:
            errors.append(TaskLineError(number, str(exc)))
            continue
        first = seen.get(task.id)
        if first is not None:
            errors.append(TaskLineError(number, f"duplicate id {task.id!r} (first on line {first})"))
            continue
        seen[task.id] = number
        tasks.append(task)
    return tasks, errors


def load_tasks(path: str | os.PathLike[str]) -> tuple[list[BatchTask], list[TaskLineError]]:
    """Read a JSONL task file: ``(tasks in file order, bad lines)``. A bad line is skipped and
    reported with its line number; nothing else is lost. A line that is not valid UTF-8 is a bad
    line. Raises ``OSError`` if the file cannot be read."""
    with open(path, "rb") as f:
        data = f.read()
    lines: list[str] = []
    undecodable: dict[int, str] = {}
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            lines.append(raw.decode("utf-8").removesuffix("\r"))
        except UnicodeDecodeError as exc:
            undecodable[number] = f"not UTF-8: {exc.reason} at byte {exc.start}"
            lines.append("")
    tasks, errors = parse_tasks(lines)
    if undecodable:
        errors.extend(TaskLineError(n, m) for n, m in undecodable.items())
        errors.sort(key=lambda e: e.line)
    return tasks, errors


_SAFE: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
_UNSAFE_CHARS: Final = re.compile(r"[^A-Za-z0-9._-]+")


def safe_id(task_id: str) -> str:
    """A file name for ``task_id``: the id itself when it is already safe everywhere (lower-case
    letters, digits, ``.``, ``_``, ``-``, at most 100 characters, starting with a letter or digit),
    else a cleaned-up prefix plus a hash of the id, so two ids never share a file (also on
    case-insensitive file systems)."""
    if _SAFE.fullmatch(task_id) and not task_id.endswith("."):
        return task_id
    cleaned = _UNSAFE_CHARS.sub("_", task_id).strip("._-")[:60] or "task"
    digest = hashlib.sha256(task_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{cleaned}-{digest}"


def _type_name(value: Any) -> str:
    return json_type_name(value, show_number=False, array="a list")


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
