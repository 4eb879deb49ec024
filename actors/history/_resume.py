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

Compaction: the history starts from the *last* ``compacted`` record (its ``items``), followed by
the item records after it; the items recorded before it are not rebuilt (their lines are still
read as records — JSON, ``type``, rising ``seq`` — so damage there is still reported, but their
items are not decoded). A ``compacted`` record torn by a crash mid-write is a torn last line like
any other: it is ignored, and the history is the one before it. So a resume sees the old history
or the new one, never a mix.
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

__all__ = ["ABORTED_OUTPUT_TEXT", "Compaction", "ResumedSession", "resume", "repair", "well_formed"]

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
class Compaction:
    """A ``compacted`` record (written by :meth:`HistoryClient.replace`): its ``seq`` and 1-based
    ``line``, the ``items`` that replaced the history, its ``reason`` and the token estimates."""

    seq: int
    line: int
    items: tuple[ResponseItem, ...]
    reason: str
    tokens_before: int | None = None
    tokens_after: int | None = None


@attrs.frozen(kw_only=True)
class ResumedSession:
    """A rollout as loaded by :func:`resume`.

    ``items`` is the repaired history (``recorded`` minus ``dropped``, plus ``added`` at the end);
    ``recorded`` the history as written: the items of the last ``compacted`` record (if any), then
    the item records after it; ``events`` every event record's ``event`` object (also those
    before a compaction); ``compaction`` the last ``compacted`` record (else ``None``) and
    ``compactions`` how many the file holds; ``last_seq`` the highest ``seq`` read;
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
    compaction: Compaction | None = None
    compactions: int = 0


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


def _seq(obj: dict[str, Any], last_seq: int) -> int:
    seq = obj.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq <= last_seq:
        raise _Corrupt(f"'seq': expected an integer above {last_seq}, got {seq!r}")
    return seq


def _tokens(obj: dict[str, Any], name: str) -> int | None:
    value = obj.get(name)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise _Corrupt(f"{name!r}: expected a count of tokens or null, got {value!r}")
    return value


def _check_record(obj: Any, last_seq: int) -> tuple[str, int]:
    """(kind, seq) of a record whose shape is checked, its items not decoded; ("", last_seq) for
    a record type this reader does not know."""
    if not isinstance(obj, dict):
        raise _Corrupt("expected a JSON object")
    kind = obj.get("type")
    if kind == "session_meta":
        raise _Corrupt("a second session_meta header")
    if not isinstance(kind, str):
        raise _Corrupt("record 'type': expected a string")
    if kind not in ("item", "event", "compacted"):
        return "", last_seq
    seq = _seq(obj, last_seq)
    if kind == "event":
        if not isinstance(obj.get("event"), dict):
            raise _Corrupt("'event': expected an object")
    elif kind == "item":
        if not isinstance(obj.get("item"), dict):
            raise _Corrupt("'item': expected an object")
    else:
        wires = obj.get("items")
        if not isinstance(wires, list) or not all(isinstance(w, dict) for w in wires):
            raise _Corrupt("'items': expected a list of objects")
        if not isinstance(obj.get("reason"), str):
            raise _Corrupt("'reason': expected a string")
        _tokens(obj, "tokens_before")
        _tokens(obj, "tokens_after")
        if "success" in obj:
            success = obj["success"]
            if (
                not isinstance(success, list)
                or len(success) != len(wires)
                or not all(v is None or isinstance(v, bool) for v in success)
            ):
                raise _Corrupt("'success': expected a list of booleans or nulls, one per item")
    return kind, seq


def _with_success(item: ResponseItem, success: Any) -> ResponseItem:
    if not isinstance(success, bool) or not isinstance(item, (FunctionCallOutput, CustomToolCallOutput)):
        raise _Corrupt("'success': expected a boolean on a tool output record")
    return attrs.evolve(item, output=attrs.evolve(item.output, success=success))


def _decode(wire: dict[str, Any], what: str) -> ResponseItem:
    try:
        return item_from_wire(wire)
    except WireFormatError as exc:
        raise _Corrupt(f"{what}: {exc}") from None


def _item(obj: dict[str, Any]) -> ResponseItem:
    """The item of a checked ``item`` record."""
    item = _decode(obj["item"], "'item'")
    return _with_success(item, obj["success"]) if "success" in obj else item


def _compaction(obj: dict[str, Any], line: int) -> Compaction:
    """The compaction of a checked ``compacted`` record."""
    items = [_decode(wire, f"'items'[{i}]") for i, wire in enumerate(obj["items"])]
    for i, success in enumerate(obj.get("success") or ()):
        if success is not None:
            items[i] = _with_success(items[i], success)
    return Compaction(
        seq=obj["seq"],
        line=line,
        items=tuple(items),
        reason=obj["reason"],
        tokens_before=obj.get("tokens_before"),
        tokens_after=obj.get("tokens_after"),
    )


def _rebuild(obj: dict[str, Any], line: int) -> ResponseItem | Compaction:
    return _compaction(obj, line) if obj["type"] == "compacted" else _item(obj)


def _corrupt_line(path: Path, lineno: int, exc: _Corrupt) -> RolloutError:
    return RolloutError(
        f"{path}, line {lineno}: corrupt record ({exc}); only a crash-torn last line is "
        "tolerated, so this rollout was damaged after it was written",
        path=path,
        line=lineno,
    )


def _load(path: str | os.PathLike[str]) -> tuple[ResumedSession, list[str]]:
    """Read a rollout; return it and the warnings to emit (so a thread can load, Trio can warn)."""
    path = Path(path)
    data = path.read_bytes()
    if not data:
        raise RolloutError(f"{path}: the rollout is empty (no session_meta header)", path=path)
    notes: list[str] = []
    meta: SessionMeta | None = None
    # the records that make the history: the last compacted one (if any) and the item records
    # after it, as (line number, record, decoded); each is decoded once the whole file has been
    # read, so the items a compaction replaced are never decoded. The last line is decoded at
    # once: if it cannot be, it is a torn line (and must not cut the history before it).
    live: list[tuple[int, dict[str, Any], ResponseItem | Compaction | None]] = []
    compactions = 0
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
                kind, seq = _check_record(obj, last_seq)
                decoded = _rebuild(obj, lineno) if kind in ("item", "compacted") and end == size else None
                if kind == "item":
                    live.append((lineno, obj, decoded))
                elif kind == "compacted":
                    live = [(lineno, obj, decoded)]
                    compactions += 1
                elif kind == "event":
                    events.append(obj["event"])
                last_seq = seq
        except _Corrupt as exc:
            if end < size:
                raise _corrupt_line(path, lineno, exc) from None
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
    recorded: list[ResponseItem] = []
    compaction: Compaction | None = None
    for number, obj, decoded in live:
        if decoded is None:
            try:
                decoded = _rebuild(obj, number)
            except _Corrupt as exc:  # never the last line: that one was decoded as it was read
                raise _corrupt_line(path, number, exc) from None
        if isinstance(decoded, Compaction):
            compaction = decoded
            recorded.extend(decoded.items)
        else:
            recorded.append(decoded)
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
        compaction=compaction,
        compactions=compactions,
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
