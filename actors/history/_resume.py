"""Reading a rollout back (:func:`resume`) and making a history well-formed (:func:`repair`,
:func:`well_formed`, pure).

Resume
------
:func:`resume` (synchronous: it reads the file; from Trio, ``await trio.to_thread.run_sync(resume,
path)``) returns a :class:`ResumedSession`. A corrupt or truncated *last* line (a crash mid-write)
is ignored with a :class:`RolloutWarning` naming its line number; a corrupt line anywhere else
raises :class:`RolloutError` naming it. Tool calls without an output get an aborted output
(``success: false``) appended, and outputs without a preceding call are dropped, so the resumed
history is well-formed. ``open_history(rollout=path, resume=True)`` cuts a torn last line off the
file, appends those aborted outputs, and goes on appending to the same file.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from kernel import (
    CustomToolCall,
    CustomToolCallOutput,
    FunctionCall,
    FunctionCallOutput,
    FunctionCallOutputPayload,
    LocalShellCall,
    McpToolCallOutput,
    ResponseItem,
    WireFormatError,
    item_from_wire,
)

from ._format import _HEADER_FIELDS, ROLLOUT_VERSION, RolloutError, RolloutWarning, SessionMeta

__all__ = ["ABORTED_OUTPUT_TEXT", "ResumedSession", "resume", "repair", "well_formed"]

ABORTED_OUTPUT_TEXT: Final = "aborted: session ended before this call finished"
"""The output text :func:`repair` gives a call that never got an output."""

_CALLS: Final = (FunctionCall, CustomToolCall, LocalShellCall)
_OUTPUTS: Final = (FunctionCallOutput, CustomToolCallOutput, McpToolCallOutput)


# ---------------------------------------------------------------------------------------------
# Well-formedness and repair (pure)
# ---------------------------------------------------------------------------------------------


def _call_id(item: ResponseItem) -> str | None:
    return getattr(item, "call_id", None) or None


def _aborted_output(call: ResponseItem) -> ResponseItem:
    payload = FunctionCallOutputPayload.from_text(ABORTED_OUTPUT_TEXT, success=False)
    call_id = _call_id(call)
    assert call_id is not None
    if isinstance(call, CustomToolCall):
        return CustomToolCallOutput(call_id, payload)
    return FunctionCallOutput(call_id, payload)  # function calls and local shell calls


def _split(items: Iterable[ResponseItem]) -> tuple[list[ResponseItem], list[ResponseItem], list[ResponseItem]]:
    """(kept items, calls still open at the end, dropped outputs)."""
    kept: list[ResponseItem] = []
    dropped: list[ResponseItem] = []
    open_calls: dict[str, ResponseItem] = {}
    for item in items:
        if isinstance(item, _CALLS):
            call_id = _call_id(item)
            if call_id is not None:
                open_calls[call_id] = item
            kept.append(item)
        elif isinstance(item, _OUTPUTS):
            if open_calls.pop(item.call_id, None) is None:
                dropped.append(item)  # no call before it, or the call already has an output
            else:
                kept.append(item)
        else:
            kept.append(item)
    return kept, list(open_calls.values()), dropped


def well_formed(items: Iterable[ResponseItem]) -> list[ResponseItem]:
    """``items`` in order without tool outputs that answer no earlier, still unanswered call
    (orphans and duplicates). Calls without an output are kept as they are: the turn supervisor
    records an output for every call before it asks for the next prompt."""
    return _split(items)[0]


def repair(items: Iterable[ResponseItem]) -> tuple[list[ResponseItem], list[ResponseItem], list[ResponseItem]]:
    """Make a history well-formed after a crash: returns ``(repaired, added, dropped)``.

    Orphan and duplicate outputs are dropped; every function, custom-tool or local-shell call
    without an output gets an aborted output (:data:`ABORTED_OUTPUT_TEXT`, ``success=False``)
    appended at the end, in call order. Calls without a ``call_id`` cannot be answered and are
    left alone.
    """
    kept, dangling, dropped = _split(items)
    added = [_aborted_output(call) for call in dangling]
    return kept + added, added, dropped


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ResumedSession:
    """A rollout as loaded by :func:`resume`.

    ``items`` is the repaired history (``recorded`` minus ``dropped``, plus ``added`` at the end);
    ``events`` the event records' ``event`` objects; ``last_seq`` the highest ``seq`` read;
    ``torn_line`` the 1-based number of an ignored corrupt last line (else ``None``);
    ``valid_size`` the byte length of the valid prefix of the file.
    """

    path: Path
    meta: SessionMeta
    items: tuple[ResponseItem, ...]
    recorded: tuple[ResponseItem, ...]
    added: tuple[ResponseItem, ...]
    dropped: tuple[ResponseItem, ...]
    events: tuple[Mapping[str, Any], ...]
    last_seq: int
    torn_line: int | None
    valid_size: int
    missing_newline: bool = False
    """The valid prefix's last record ends without ``\\n`` (the crash came just before it)."""


class _Corrupt(Exception):
    pass


def _parse_header(obj: Any) -> SessionMeta:
    if not isinstance(obj, dict) or obj.get("type") != "session_meta":
        raise _Corrupt("expected the session_meta header record")
    version = obj.get("version")
    if version != ROLLOUT_VERSION or isinstance(version, bool):
        raise RolloutError(f"unsupported rollout version {version!r} (this library reads version {ROLLOUT_VERSION})")
    fields = {}
    for name in _HEADER_FIELDS:
        value = obj.get(name)
        if not isinstance(value, str):
            raise _Corrupt(f"header field {name!r}: expected a string, got {type(value).__name__}")
        fields[name] = value
    return SessionMeta(**fields)


def _parse_record(obj: Any, last_seq: int) -> tuple[str, int, Any]:
    """(kind, seq, payload) of an item or event record; ("", last_seq, None) for a record type this
    reader does not know."""
    if not isinstance(obj, dict):
        raise _Corrupt("expected a JSON object")
    kind = obj.get("type")
    if kind == "session_meta":
        raise _Corrupt("a second session_meta header")
    if not isinstance(kind, str):
        raise _Corrupt("record 'type': expected a string")
    if kind not in ("item", "event"):
        return "", last_seq, None
    seq = obj.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq <= last_seq:
        raise _Corrupt(f"'seq': expected an integer above {last_seq}, got {seq!r}")
    if kind == "event":
        event = obj.get("event")
        if not isinstance(event, dict):
            raise _Corrupt("'event': expected an object")
        return kind, seq, event
    wire = obj.get("item")
    if not isinstance(wire, dict):
        raise _Corrupt("'item': expected an object")
    try:
        item = item_from_wire(wire)
    except WireFormatError as exc:
        raise _Corrupt(f"'item': {exc}") from None
    if "success" in obj:
        success = obj["success"]
        if not isinstance(success, bool) or not isinstance(item, (FunctionCallOutput, CustomToolCallOutput)):
            raise _Corrupt("'success': expected a boolean on a tool output record")
        item = attrs.evolve(item, output=attrs.evolve(item.output, success=success))
    return kind, seq, item


def _load(path: str | os.PathLike[str]) -> tuple[ResumedSession, list[str]]:
    """Read a rollout; return it and the warnings to emit (so a thread can load, Trio can warn)."""
    path = Path(path)
    data = path.read_bytes()
    if not data:
        raise RolloutError(f"{path}: the rollout is empty (no session_meta header)", path=path)
    notes: list[str] = []
    meta: SessionMeta | None = None
    recorded: list[ResponseItem] = []
    events: list[Mapping[str, Any]] = []
    last_seq = 0
    torn: int | None = None
    valid_size = 0
    pos, lineno, size = 0, 0, len(data)
    while pos < size:
        lineno += 1
        newline = data.find(b"\n", pos)
        end = size if newline < 0 else newline + 1
        line = data[pos:end]
        try:
            try:
                obj = json.loads(line)
            except ValueError as exc:  # includes invalid UTF-8
                raise _Corrupt(f"not valid JSON ({exc})") from None
            if meta is None:
                meta = _parse_header(obj)
            else:
                kind, last_seq, payload = _parse_record(obj, last_seq)
                if kind == "item":
                    recorded.append(payload)
                elif kind == "event":
                    events.append(payload)
        except _Corrupt as exc:
            if end < size:
                raise RolloutError(
                    f"{path}, line {lineno}: corrupt record ({exc}); only a crash-torn last line is "
                    "tolerated, so this rollout was damaged after it was written",
                    path=path,
                    line=lineno,
                ) from None
            torn = lineno
            notes.append(
                f"{path}, line {lineno}: ignoring the corrupt last line ({exc}), most likely a write "
                "torn by a crash; everything before it is intact"
            )
            break
        except RolloutError as exc:
            raise RolloutError(f"{path}, line {lineno}: {exc}", path=path, line=lineno) from None
        pos = valid_size = end
    if meta is None:  # only possible when line 1 itself was torn
        raise RolloutError(
            f"{notes[0]}; that leaves no session_meta header: the session crashed before its header "
            "was written, so there is nothing to resume",
            path=path,
            line=1,
        )
    items, added, dropped = repair(recorded)
    session = ResumedSession(
        path=path,
        meta=meta,
        items=tuple(items),
        recorded=tuple(recorded),
        added=tuple(added),
        dropped=tuple(dropped),
        events=tuple(events),
        last_seq=last_seq,
        torn_line=torn,
        valid_size=valid_size,
        missing_newline=not data[:valid_size].endswith(b"\n"),
    )
    return session, notes


def resume(path: str | os.PathLike[str]) -> ResumedSession:
    """Load a rollout: its header, its items (repaired, see :func:`repair`) and its events.

    Synchronous (blocking file read); from Trio use ``await trio.to_thread.run_sync(resume, path)``
    or ``open_history(rollout=path, resume=True)``. Does not change the file.

    A corrupt or truncated last line is ignored with a :class:`RolloutWarning` naming its line.
    Raises :class:`RolloutError` (with ``.line``) for a corrupt line before the last, a missing
    header or an unsupported version; ``OSError`` if the file cannot be read.
    """
    session, notes = _load(path)
    for note in notes:
        warnings.warn(note, RolloutWarning, stacklevel=2)
    return session
