"""The rollout file format: the session header, the records and their encoding.

Rollout format (version 1)
--------------------------
UTF-8 JSON Lines, one record per line, each line ending in ``\\n``, never rewritten::

    {"type":"session_meta","session_id":"…","created":"2025-01-01T12:00:00.000Z","model":"…","cwd":"…","version":1}
    {"type":"item","seq":1,"item":{<wire item>}}          (+ "success": true/false when the output knows it)
    {"type":"event","seq":2,"event":{<event_to_dict>}}
    {"type":"compacted","seq":3,"items":[{<wire item>},…],"reason":"compaction","tokens_before":48000,"tokens_after":3100}
                                                            (+ "success": [true, null, …] when an output knows it)

* The header is the first line and holds exactly the fields above: nothing else from the caller's
  configuration (API keys, headers, ...) is ever written; :class:`SessionMeta` rejects other fields.
* ``seq`` rises by one per item, event or compacted record, across all kinds, continuing across
  resumes.
* ``item`` is :func:`kernel.item_to_wire`; ``success`` (kernel-side metadata that the wire form
  omits) sits beside it, so a resumed output keeps it.
* ``event`` is :func:`kernel.event_to_dict`. Streaming deltas and ``ItemStarted``/``ItemCompleted``
  are not written (the items themselves are); record types a reader does not know are skipped.
* ``compacted`` replaces the history (:meth:`HistoryClient.replace`, e.g. after context
  compaction: a summary or an opaque ``compaction`` item plus the recent user messages). ``items``
  (:func:`kernel.item_to_wire` each) *is* the history from there on; item records after it are
  appended to it. ``success``, present only when some output's success is known, is aligned with
  ``items`` (``null`` where unknown). ``reason`` is a short label (``"compaction"``);
  ``tokens_before`` / ``tokens_after`` are the caller's estimates of the history's size, or
  ``null``. The record is one line, written with one ``write()`` and fsynced like a turn boundary:
  a crash leaves either the whole record or a torn last line, which resume ignores (the old
  history). A reader resumes from the *last* ``compacted`` record and does not rebuild the items
  before it. A reader predating this record type skips it, as it skips every unknown type, and so
  sees the uncompacted conversation followed by the later items: longer, but whole.
* Lines are written by ``json.dumps``, which escapes every newline and control character inside a
  string, and readers split on ``\\n`` only: no tool output can end a line early or forge a record.
  Non-ASCII text is written as UTF-8 (a lone surrogate falls back to ``\\uXXXX`` escapes).

The writer and its flush policy are in ``_file``; reading a rollout back is ``_resume``.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import attrs

from kernel import (
    CustomToolCallOutput,
    Event,
    FunctionCallOutput,
    ItemCompleted,
    ItemStarted,
    ResponseItem,
    TurnAborted,
    TurnCompleted,
    TurnFailed,
    event_to_dict,
    item_to_wire,
)

__all__ = ["ROLLOUT_VERSION", "SessionMeta", "RolloutError", "RolloutWarning"]

ROLLOUT_VERSION: Final = 1
"""The rollout format version this module writes and reads."""

_HEADER_FIELDS: Final = ("session_id", "created", "model", "cwd")
_TURN_BOUNDARIES: Final = (TurnCompleted, TurnAborted, TurnFailed)
_NOT_LOGGED: Final = (ItemStarted, ItemCompleted)  # their items are logged as item records


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class RolloutError(Exception):
    """A rollout could not be read or written. ``path`` and ``line`` (1-based, or ``None``) say
    where."""

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = None if path is None else Path(path)
        self.line = line

    def __str__(self) -> str:
        return self.message


class RolloutWarning(UserWarning):
    """A rollout's torn last line was ignored on resume."""


# ---------------------------------------------------------------------------------------------
# Session header
# ---------------------------------------------------------------------------------------------


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_str = attrs.validators.instance_of(str)


@attrs.frozen(kw_only=True)
class SessionMeta:
    """The rollout's header: ``session_id``, ``created`` (ISO-8601 UTC), ``model``, ``cwd``.

    These are the only fields ever written: a configuration holding secrets cannot leak into the
    rollout through here (see :meth:`from_mapping`).
    """

    session_id: str = attrs.field(validator=_str)
    created: str = attrs.field(validator=_str)
    model: str = attrs.field(default="", validator=_str)
    cwd: str = attrs.field(default="", validator=_str)

    @classmethod
    def new(
        cls, *, model: str = "", cwd: str | os.PathLike[str] | None = None, session_id: str | None = None
    ) -> SessionMeta:
        """A header for a new session: a random UUID, created now, ``cwd`` defaulting to the
        process's working directory."""
        return cls(
            session_id=session_id if session_id is not None else str(uuid.uuid4()),
            created=_utc_now(),
            model=model,
            cwd=os.fspath(cwd) if cwd is not None else os.getcwd(),
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SessionMeta:
        """A header from a mapping with some of ``session_id``, ``created``, ``model``, ``cwd``
        (missing ones as in :meth:`new`). Raises ``ValueError`` naming any other key: only the
        documented fields are written, so e.g. an ``api_key`` is refused rather than dropped
        silently."""
        unknown = sorted(str(k) for k in data if k not in _HEADER_FIELDS)
        if unknown:
            raise ValueError(
                f"session_meta: unknown field(s) {', '.join(map(repr, unknown))}; the rollout header holds "
                f"only {', '.join(_HEADER_FIELDS)} (secrets such as API keys are never written)"
            )
        base = cls.new(model=data.get("model", ""), cwd=data.get("cwd"), session_id=data.get("session_id"))
        return attrs.evolve(base, created=data["created"]) if "created" in data else base

    def to_record(self) -> dict[str, Any]:
        """The header record (``{"type": "session_meta", ..., "version": 1}``)."""
        return {
            "type": "session_meta",
            "session_id": self.session_id,
            "created": self.created,
            "model": self.model,
            "cwd": self.cwd,
            "version": ROLLOUT_VERSION,
        }


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if attrs.has(type(value)):
        return attrs.asdict(value)
    raise TypeError(f"rollout: a {type(value).__name__} value is not JSON-serialisable")


def _line(record: Mapping[str, Any]) -> bytes:
    # json.dumps escapes "\n" and every control character inside strings: one record, one line.
    try:
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=_json_default)
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: keep it losslessly as a \\udXXX escape
        text = json.dumps(record, ensure_ascii=True, separators=(",", ":"), default=_json_default)
        return (text + "\n").encode("ascii")


def _item_record(seq: int, item: ResponseItem) -> dict[str, Any]:
    record: dict[str, Any] = {"type": "item", "seq": seq, "item": item_to_wire(item)}
    if isinstance(item, (FunctionCallOutput, CustomToolCallOutput)) and item.output.success is not None:
        record["success"] = item.output.success
    return record


def _compacted_record(
    seq: int,
    items: Sequence[ResponseItem],
    *,
    reason: str,
    tokens_before: int | None,
    tokens_after: int | None,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "type": "compacted",
        "seq": seq,
        "items": [item_to_wire(item) for item in items],
        "reason": reason,
        "tokens_before": tokens_before,
        "tokens_after": tokens_after,
    }
    success = [
        item.output.success if isinstance(item, (FunctionCallOutput, CustomToolCallOutput)) else None for item in items
    ]
    if any(s is not None for s in success):
        record["success"] = success
    return record


def _event_record(seq: int, event: Event) -> dict[str, Any]:
    return {"type": "event", "seq": seq, "event": event_to_dict(event)}


def _logged(event: Event) -> bool:
    return bool(getattr(type(event), "lifecycle", True)) and not isinstance(event, _NOT_LOGGED)
