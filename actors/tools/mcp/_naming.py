"""The names the model sees: ``mcp__<server>__<tool>``, sanitised to ``^[a-zA-Z0-9_-]{1,64}$``."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection
from typing import Final

__all__ = ["MAX_NAME", "PREFIX", "mcp_tool_name", "sanitize"]

PREFIX: Final = "mcp__"
MAX_NAME: Final = 64
_BAD: Final = re.compile(r"[^a-zA-Z0-9_-]")


def sanitize(part: str) -> str:
    """``part`` with every character outside ``[a-zA-Z0-9_-]`` replaced by ``_``."""
    return _BAD.sub("_", part)


def _hash(text: str, n: int = 8) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def server_prefix(server: str) -> str:
    """``mcp__<server>__`` sanitised (the prefix of every tool name of ``server``)."""
    return f"{PREFIX}{sanitize(server)}__"


def mcp_tool_name(server: str, tool: str, taken: Collection[str] = ()) -> str:
    """The model-facing name of MCP tool ``tool`` of ``server``: ``mcp__<server>__<tool>`` with
    invalid characters replaced by ``_``; when longer than 64 characters it is cut and ends in
    ``_`` and a short hash of the full name; when the result is in ``taken`` (another tool has
    it), a hash of the raw ``server``/``tool`` pair (then a counter) makes it unique."""
    raw = f"{PREFIX}{server}__{tool}"
    name = sanitize(raw)
    if len(name) > MAX_NAME:
        name = f"{name[: MAX_NAME - 9]}_{_hash(raw)}"
    if name not in taken:
        return name
    suffix = _hash(f"{server}\0{tool}")
    base = name[: MAX_NAME - 9]
    candidate = f"{base}_{suffix}"
    n = 2
    while candidate in taken:
        tail = f"_{suffix}{n}"
        candidate = f"{name[: MAX_NAME - len(tail)]}{tail}"
        n += 1
    return candidate
