"""The history actor: the ordered conversation log, persisted as an append-only JSONL rollout.

One Trio task (:class:`HistoryActor`) owns the log and the rollout file; everyone else talks to it
through a :class:`HistoryClient`, which implements the kernel's :class:`~kernel.History` protocol
(``record``, ``prompt_input``)::

    async with open_history(rollout="session.jsonl", session_meta=SessionMeta.new(model="gpt-5")) as history:
        await history.record([Message.user("hi")])
        prompt = await history.for_prompt()
        await history.record_event(TurnCompleted("turn-1", None))   # rollout only; fsyncs

    async with open_history(rollout="session.jsonl", resume=True) as history:   # after a crash
        ...   # the same items, dangling calls answered "aborted"; appends to the same file

Requests travel on a bounded memory channel (``buffer`` requests, default 64; when it is full a
caller waits: back-pressure, nothing is dropped), each with its own reply channel. A history with
no rollout has no I/O to serialise, so :func:`open_history` then starts no task at all: the client
applies each request in place (same semantics — ordered, every method checkpoints — at a fraction
of a channel round trip's cost, and no task or channel per idle session).

Rollout format (version 1)
--------------------------
UTF-8 JSON Lines, one record per line, each line ending in ``\\n``, never rewritten::

    {"type":"session_meta","session_id":"…","created":"2025-01-01T12:00:00.000Z","model":"…","cwd":"…","version":1}
    {"type":"item","seq":1,"item":{<wire item>}}          (+ "success": true/false when the output knows it)
    {"type":"event","seq":2,"event":{<event_to_dict>}}

* The header is the first line and holds exactly the fields above: nothing else from the caller's
  configuration (API keys, headers, ...) is ever written; :class:`SessionMeta` rejects other fields.
* ``seq`` rises by one per item or event record, across both kinds, continuing across resumes.
* ``item`` is :func:`kernel.item_to_wire`; ``success`` (kernel-side metadata that the wire form
  omits) sits beside it, so a resumed output keeps it.
* ``event`` is :func:`kernel.event_to_dict`. Streaming deltas and ``ItemStarted``/``ItemCompleted``
  are not written (the items themselves are); record types a reader does not know are skipped.
* Lines are written by ``json.dumps``, which escapes every newline and control character inside a
  string, and readers split on ``\\n`` only: no tool output can end a line early or forge a record.
  Non-ASCII text is written as UTF-8 (a lone surrogate falls back to ``\\uXXXX`` escapes).

Flush policy
------------
* Each record is one ``write()`` of one complete line to an unbuffered ``O_APPEND`` descriptor;
  there is no user-space buffer, so when a batch (one :meth:`HistoryClient.record` or
  :meth:`HistoryClient.record_events` call) returns, all of it is in the OS. A process crash loses
  at most the batch being written, and only its last line can be torn.
* ``os.fsync`` runs after a batch holding a turn boundary (:class:`~kernel.TurnCompleted`,
  :class:`~kernel.TurnAborted`, :class:`~kernel.TurnFailed`), on :meth:`HistoryClient.sync`, when
  the file is created (with its directory) or resumed, and on close: a power loss loses at most the
  current turn.
* File I/O runs in a worker thread (``trio.to_thread.run_sync``), so a slow disk never blocks the
  Trio loop; JSON encoding runs in the actor task. A batch that fails to write (disk full, I/O
  error) is cut back out of the file and not added to memory, the caller gets
  :class:`RolloutError`, and every later write fails the same way (a disk that failed once, and
  maybe failed the cut too, is trusted with nothing more); reads keep working.

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

import contextlib
import errno
import functools
import json
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Union

import attrs
import trio

from kernel import (
    CustomToolCall,
    CustomToolCallOutput,
    Event,
    FunctionCall,
    FunctionCallOutput,
    FunctionCallOutputPayload,
    ItemCompleted,
    ItemStarted,
    LocalShellCall,
    McpToolCallOutput,
    ResponseItem,
    TurnAborted,
    TurnCompleted,
    TurnFailed,
    WireFormatError,
    event_to_dict,
    item_from_wire,
    item_to_wire,
)

__all__ = [
    "ROLLOUT_VERSION",
    "ABORTED_OUTPUT_TEXT",
    "SessionMeta",
    "HistoryActor",
    "HistoryClient",
    "open_history",
    "ResumedSession",
    "resume",
    "repair",
    "well_formed",
    "RolloutError",
    "RolloutWarning",
    "HistoryClosed",
]

ROLLOUT_VERSION: Final = 1
"""The rollout format version this module writes and reads."""

ABORTED_OUTPUT_TEXT: Final = "aborted: session ended before this call finished"
"""The output text :func:`repair` gives a call that never got an output."""

_HEADER_FIELDS: Final = ("session_id", "created", "model", "cwd")
_TURN_BOUNDARIES: Final = (TurnCompleted, TurnAborted, TurnFailed)
_NOT_LOGGED: Final = (ItemStarted, ItemCompleted)  # their items are logged as item records
_CALLS: Final = (FunctionCall, CustomToolCall, LocalShellCall)
_OUTPUTS: Final = (FunctionCallOutput, CustomToolCallOutput, McpToolCallOutput)


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


class HistoryClosed(Exception):
    """The history actor has stopped (closed, or its nursery was cancelled)."""


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


def _event_record(seq: int, event: Event) -> dict[str, Any]:
    return {"type": "event", "seq": seq, "event": event_to_dict(event)}


def _logged(event: Event) -> bool:
    return bool(getattr(type(event), "lifecycle", True)) and not isinstance(event, _NOT_LOGGED)


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


# ---------------------------------------------------------------------------------------------
# Blocking file operations (run in a worker thread)
# ---------------------------------------------------------------------------------------------


def _write_lines(fd: int, lines: Sequence[bytes], fsync: bool) -> None:
    start = os.fstat(fd).st_size if lines else None
    try:
        for line in lines:
            view = memoryview(line)
            while view:  # one write() per line; the loop only finishes a short write
                view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    except OSError:
        if start is not None:  # cut the failed batch back out: the file keeps matching memory
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
        raise


def _fsync_dir(path: Path) -> None:
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on directories
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _create(path: Path, meta: SessionMeta) -> int:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise FileExistsError(
            errno.EEXIST, "the rollout already exists: pass resume=True to continue it, or choose a new path", str(path)
        ) from None
    try:
        _write_lines(fd, [_line(meta.to_record())], fsync=True)
    except BaseException:
        os.close(fd)
        raise
    _fsync_dir(path)
    return fd


def _reopen(path: Path) -> tuple[int, ResumedSession, list[str]]:
    session, notes = _load(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_size != session.valid_size:
            os.ftruncate(fd, session.valid_size)  # drop the torn line so the file stays valid JSONL
        lines = [b"\n"] if session.missing_newline else []
        lines += [_line(_item_record(session.last_seq + 1 + i, item)) for i, item in enumerate(session.added)]
        _write_lines(fd, lines, fsync=True)
    except BaseException:
        os.close(fd)
        raise
    return fd, session, notes


def _close(fd: int, fsync: bool) -> None:
    try:
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# The actor and its message spec
# ---------------------------------------------------------------------------------------------


@attrs.frozen
class _Reply:
    value: Any = None
    error: BaseException | None = None


_ReplyTo = trio.MemorySendChannel[_Reply]


@attrs.frozen
class _Record:
    items: tuple[ResponseItem, ...]


@attrs.frozen
class _RecordEvents:
    events: tuple[Event, ...]


@attrs.frozen
class _Snapshot:
    pass


@attrs.frozen
class _Sync:
    pass


@attrs.frozen
class _Close:
    pass


_Request = Union[_Record, _RecordEvents, _Snapshot, _Sync, _Close]
_SNAPSHOT: Final = _Snapshot()
_SYNC: Final = _Sync()
_CLOSE: Final = _Close()


class HistoryActor:
    """The task that owns the conversation log and its rollout.

    ``rollout`` is the JSONL path (``None``: in memory only). A new rollout must not exist yet
    (``FileExistsError``); ``resume=True`` continues an existing one (its header is kept;
    ``session_meta`` must then be ``None``). ``session_meta`` is a :class:`SessionMeta` or a
    mapping for :meth:`SessionMeta.from_mapping` (default: :meth:`SessionMeta.new`).

    Start it in a nursery; :meth:`run` hands the :class:`HistoryClient` to ``nursery.start``::

        client = await nursery.start(HistoryActor(rollout=path).run)
        ...
        await client.aclose()   # fsyncs and closes the file; the actor's task ends

    or use :func:`open_history`, which does exactly that.
    """

    def __init__(
        self,
        *,
        rollout: str | os.PathLike[str] | None = None,
        session_meta: SessionMeta | Mapping[str, Any] | None = None,
        resume: bool = False,
        buffer: int = 64,
    ) -> None:
        if resume and rollout is None:
            raise ValueError("resume=True needs the rollout path to resume from")
        if resume and session_meta is not None:
            raise ValueError("resume=True keeps the rollout's own header: pass session_meta=None")
        if isinstance(session_meta, Mapping):
            session_meta = SessionMeta.from_mapping(session_meta)
        self.rollout: Path | None = None if rollout is None else Path(rollout)
        self.meta: SessionMeta = session_meta or SessionMeta.new()
        self.resumed: ResumedSession | None = None
        self._resume = resume
        self._buffer = buffer
        self._items: list[ResponseItem] = []
        self._snapshot: tuple[ResponseItem, ...] | None = ()
        self._seq = 0
        self._fd: int | None = None
        self._broken: BaseException | None = None
        self._started = False

    async def run(
        self, *, until_closed: bool = False, task_status: trio.TaskStatus[HistoryClient] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Open (create or resume) the rollout, report a :class:`HistoryClient` through
        ``task_status``, then serve requests until :meth:`HistoryClient.aclose`.

        Opening errors (``FileExistsError``, :class:`RolloutError`, ``OSError``) are raised from
        ``nursery.start``. By default cancellation also stops the actor; requests queued but not
        served then get :class:`HistoryClosed`. With ``until_closed=True`` serving is shielded
        from cancellation, so tasks that record from shielded cleanup code (a turn recording
        aborted outputs) are still served while their nursery is cancelled; then the starter
        must call :meth:`HistoryClient.aclose` (as :func:`open_history` does on exit) or the
        nursery never finishes. Either way the file is fsynced and closed on the way out."""
        if self._started:
            raise RuntimeError("a HistoryActor runs once; create a new one")
        self._started = True
        send, receive = trio.open_memory_channel[tuple[_Request, _ReplyTo]](self._buffer)
        try:
            await self._open()
            task_status.started(HistoryClient(send, self.meta, self.rollout))
            # cancelled while opening (the starter gave up, so no one will ever call aclose):
            # stop here rather than serve, shielded, forever
            await trio.lowlevel.checkpoint_if_cancelled()
            with trio.CancelScope(shield=until_closed):
                await self._serve(receive)
        finally:
            # no checkpoint between draining and closing: nothing can slip in unanswered
            while True:
                try:
                    _, reply_to = receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                reply_to.close()
            receive.close()
            with trio.CancelScope(shield=True):
                await self._close_file()

    async def _open(self) -> None:
        path = self.rollout
        if path is None:
            return
        if self._resume:
            fd, session, notes = await trio.to_thread.run_sync(_reopen, path)
            self._fd = fd
            self.resumed = session
            self.meta = session.meta
            self._items = list(session.items)
            self._snapshot = None
            self._seq = session.last_seq + len(session.added)
            for note in notes:
                warnings.warn(note, RolloutWarning, stacklevel=1)
        else:
            self._fd = await trio.to_thread.run_sync(_create, path, self.meta)

    async def _serve(self, receive: trio.MemoryReceiveChannel[tuple[_Request, _ReplyTo]]) -> None:
        while True:
            try:
                request, reply_to = await receive.receive()
            except trio.EndOfChannel:
                return
            try:
                try:
                    reply = _Reply(await self._handle(request))
                except Exception as exc:  # the requester's failure: it is raised there, not here
                    reply = _Reply(error=exc)
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    reply_to.send_nowait(reply)
            finally:
                reply_to.close()
            if isinstance(request, _Close):
                return

    async def _handle(self, request: _Request) -> Any:
        """Write what ``request`` puts in the rollout (if any), then apply it to memory: a batch
        that failed to write is not added."""
        if self._fd is not None:
            if isinstance(request, _Record):
                if request.items:
                    lines = [_line(_item_record(self._seq + 1 + i, item)) for i, item in enumerate(request.items)]
                    await self._write(lines, fsync=False)
                    self._seq += len(lines)
            elif isinstance(request, _RecordEvents):
                events = [e for e in request.events if _logged(e)]
                if events:
                    lines = [_line(_event_record(self._seq + 1 + i, e)) for i, e in enumerate(events)]
                    await self._write(lines, fsync=any(isinstance(e, _TURN_BOUNDARIES) for e in events))
                    self._seq += len(lines)
            elif isinstance(request, _Sync):
                await self._write([], fsync=True)
            elif isinstance(request, _Close):
                await self._close_file()
        return self._apply(request)

    def _apply(self, request: _Request) -> Any:
        """The in-memory part of a request (never blocks)."""
        if isinstance(request, _Snapshot):
            if self._snapshot is None:
                self._snapshot = tuple(self._items)
            return self._snapshot
        if isinstance(request, _Record):
            if request.items:
                self._items.extend(request.items)
                self._snapshot = None
            return None
        if isinstance(request, (_RecordEvents, _Sync, _Close)):
            return None
        raise TypeError(f"HistoryActor: unknown request {type(request).__name__}")

    async def _write(self, lines: Sequence[bytes], fsync: bool) -> None:
        if self._broken is not None:
            raise RolloutError(
                f"{self.rollout}: an earlier write failed ({self._broken}); the rollout accepts no more records",
                path=self.rollout,
            ) from self._broken
        assert self._fd is not None
        try:
            # not abandoned on cancel: a batch is written whole or (on error) cut back out
            await trio.to_thread.run_sync(_write_lines, self._fd, lines, fsync)
        except OSError as exc:
            self._broken = exc
            raise RolloutError(
                f"{self.rollout}: writing the rollout failed ({exc}); this batch was not recorded and the "
                "rollout accepts no more records",
                path=self.rollout,
            ) from exc

    async def _close_file(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                await trio.to_thread.run_sync(_close, fd, self._broken is None)


class HistoryClient:
    """The handle on a :class:`HistoryActor`; implements :class:`kernel.History`.

    Share it freely between tasks: requests are served one at a time in arrival order. Every
    method checkpoints. Once a write (``record``, ``record_events``, ``sync``, ``aclose``) is
    sent, the client waits for its answer even if cancelled (a write is bounded by the disk), so
    a write that returns has done its work and one that raises ``Cancelled`` has done none. After
    the actor stops, methods raise :class:`HistoryClosed`.
    """

    __slots__ = ("_send", "_inline", "meta", "rollout", "_closed")

    def __init__(
        self,
        send: trio.MemorySendChannel[tuple[_Request, _ReplyTo]] | None,
        meta: SessionMeta,
        rollout: Path | None,
        *,
        inline: HistoryActor | None = None,
    ) -> None:
        self._send = send
        self._inline = inline
        self.meta = meta
        """The session's header."""
        self.rollout = rollout
        """The rollout path, or ``None`` for an in-memory history."""
        self._closed = False

    async def _call(self, request: _Request, *, writes: bool = True) -> Any:
        inline = self._inline
        if inline is not None:  # an in-memory history served in place (see the module docstring)
            await trio.lowlevel.checkpoint_if_cancelled()  # "Cancelled" means "not done"
            if self._closed:
                raise HistoryClosed("the history has been closed")
            value = inline._apply(request)
            await trio.lowlevel.cancel_shielded_checkpoint()  # "returned" means "done"
            return value
        assert self._send is not None
        reply_send, reply_receive = trio.open_memory_channel[_Reply](1)
        try:
            await self._send.send((request, reply_send))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            reply_send.close()
            raise HistoryClosed("the history actor has stopped") from None
        # a write, once sent, is waited for even if cancelled: "returned" means "done" and
        # "Cancelled" means "not sent". A read needs no such care (a shield costs ~50% of a hop).
        with reply_receive, trio.CancelScope(shield=writes):
            try:
                reply = await reply_receive.receive()
            except trio.EndOfChannel:
                raise HistoryClosed("the history actor stopped before answering") from None
        if reply.error is not None:
            raise reply.error
        return reply.value

    async def record(self, items: Sequence[ResponseItem]) -> None:
        """Append ``items`` in order, as one batch: in the rollout (in the OS, not yet fsynced)
        when this returns. Raises :class:`RolloutError` if the write failed (nothing of the batch
        is then recorded), ``TypeError`` if an item holds a value JSON cannot encode."""
        await self._call(_Record(tuple(items)))

    async def record_events(self, events: Sequence[Event]) -> None:
        """Write lifecycle ``events`` to the rollout (not to the history) as one batch; fsync if
        one is a turn boundary. Deltas and ``ItemStarted``/``ItemCompleted`` are skipped."""
        await self._call(_RecordEvents(tuple(events)))

    async def record_event(self, event: Event) -> None:
        """:meth:`record_events` of one event."""
        await self.record_events((event,))

    async def snapshot(self) -> tuple[ResponseItem, ...]:
        """Every recorded item, in order, as an immutable tuple (cheap: shared until the next
        record)."""
        result: tuple[ResponseItem, ...] = await self._call(_SNAPSHOT, writes=False)
        return result

    async def items(self) -> list[ResponseItem]:
        """Every recorded item, in order, as a new list."""
        return list(await self.snapshot())

    async def for_prompt(self) -> list[ResponseItem]:
        """A prompt-ready copy: the items in order, without outputs that answer no earlier call
        (see :func:`well_formed`)."""
        return well_formed(await self.snapshot())

    async def prompt_input(self) -> list[ResponseItem]:
        """:meth:`for_prompt` (the kernel's :class:`~kernel.History` method)."""
        return await self.for_prompt()

    async def sync(self) -> None:
        """fsync the rollout now."""
        await self._call(_SYNC)

    async def aclose(self) -> None:
        """fsync and close the rollout and stop the actor; later calls raise
        :class:`HistoryClosed`. Idempotent."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        if self._inline is not None:
            await trio.lowlevel.checkpoint()
            self._closed = True
            return
        self._closed = True
        assert self._send is not None
        try:
            await self._call(_CLOSE)
        except HistoryClosed:
            pass
        finally:
            self._send.close()


@contextlib.asynccontextmanager
async def open_history(
    *,
    rollout: str | os.PathLike[str] | None = None,
    session_meta: SessionMeta | Mapping[str, Any] | None = None,
    resume: bool = False,
    buffer: int = 64,
) -> AsyncIterator[HistoryClient]:
    """Run a :class:`HistoryActor` for the duration of the block and yield its client.

    Arguments as for :class:`HistoryActor`. The actor serves requests until the block exits,
    even while the block is being cancelled (so shielded cleanup in it can still record); on exit
    (also on error or cancellation) the rollout is fsynced and closed. A :class:`RolloutWarning` is emitted if resuming ignored a torn line.
    """
    actor = HistoryActor(rollout=rollout, session_meta=session_meta, resume=resume, buffer=buffer)
    if rollout is None:  # nothing to write: no task, the client applies requests in place
        actor._started = True
        local = HistoryClient(None, actor.meta, None, inline=actor)
        try:
            yield local
        finally:
            local._closed = True
        return
    try:
        async with trio.open_nursery() as nursery:
            # served until closed: cleanup code in the block that records (shielded) during a
            # cancellation is still served; the finally below always closes it
            client: HistoryClient = await nursery.start(functools.partial(actor.run, until_closed=True))
            try:
                yield client
            finally:
                with trio.CancelScope(shield=True):
                    await client.aclose()
    except BaseExceptionGroup as group:
        # the actor task never raises on its own, so a lone error is the block's (or start's):
        # re-raise it as is instead of wrapped in the nursery's group
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from group.exceptions[0].__cause__
        raise
