"""The history actor: the ordered conversation log, persisted as an append-only JSONL rollout.

One Trio task (:class:`HistoryActor`) owns the log and the rollout file; everyone else talks to it
through a :class:`HistoryClient`, which implements the kernel's :class:`~kernel.History` protocol
(``record``, ``prompt_input``)::

    async with open_history(rollout="session.jsonl", session_meta=SessionMeta.new(model="gpt-5")) as history:
        await history.record([Message.user("hi")])
        prompt = await history.for_prompt()
        await history.record_event(TurnCompleted("turn-1", None))   # rollout only; fsyncs
        await history.replace([summary, *recent_user_messages],    # context compaction; fsyncs
                              tokens_before=48_000, tokens_after=3_100)

    async with open_history(rollout="session.jsonl", resume=True) as history:   # after a crash
        ...   # the same items, dangling calls answered "aborted"; appends to the same file

Requests travel on a bounded memory channel (``buffer`` requests, default 64; when it is full a
caller waits: back-pressure, nothing is dropped), each with its own reply channel. A history with
no rollout has no I/O to serialise, so :func:`open_history` then starts no task at all: the client
applies each request in place (same semantics — ordered, every method checkpoints — at a fraction
of a channel round trip's cost, and no task or channel per idle session).

The rollout's format is in ``_format``, its writer (and flush policy) in ``_file``, reading it
back (:func:`resume`, :func:`repair`) in ``_resume``; this module holds the actor and its client.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Union

import attrs
import trio

from kernel import Event, ResponseItem

from ._file import _close, _create, _reopen, _write_lines
from ._format import (
    _TURN_BOUNDARIES,
    RolloutError,
    RolloutWarning,
    SessionMeta,
    _compacted_record,
    _event_record,
    _item_record,
    _line,
    _logged,
)
from ._resume import ResumedSession, well_formed

__all__ = ["HistoryActor", "HistoryClient", "open_history", "HistoryClosed"]


class HistoryClosed(Exception):
    """The history actor has stopped (closed, or its nursery was cancelled)."""


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
class _Replace:
    items: tuple[ResponseItem, ...]
    reason: str
    tokens_before: int | None
    tokens_after: int | None


@attrs.frozen
class _Snapshot:
    pass


@attrs.frozen
class _Sync:
    pass


@attrs.frozen
class _Close:
    pass


_Request = Union[_Record, _RecordEvents, _Replace, _Snapshot, _Sync, _Close]
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
            elif isinstance(request, _Replace):
                # one line, one write(), fsynced: durable before the caller goes on, and a crash
                # leaves the whole record or a torn last line that resume ignores
                record = _compacted_record(
                    self._seq + 1,
                    request.items,
                    reason=request.reason,
                    tokens_before=request.tokens_before,
                    tokens_after=request.tokens_after,
                )
                await self._write([_line(record)], fsync=True)
                self._seq += 1
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
        if isinstance(request, _Replace):  # one step: no reader ever sees part of the swap
            self._items = list(request.items)
            self._snapshot = request.items
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
    method checkpoints. Once a write (``record``, ``record_events``, ``replace``, ``sync``,
    ``aclose``) is sent, the client waits for its answer even if cancelled (a write is bounded by the disk), so
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

    async def replace(
        self,
        items: Sequence[ResponseItem],
        *,
        reason: str = "compaction",
        tokens_before: int | None = None,
        tokens_after: int | None = None,
    ) -> None:
        """Replace the whole history with ``items`` (context compaction: a summary or an opaque
        ``compaction`` item plus the recent user messages); later :meth:`record` calls append to
        them and :meth:`prompt_input` starts from them.

        Writes one ``compacted`` record (``items``, ``reason``, and the caller's token estimates
        ``tokens_before`` / ``tokens_after``, see ``_format``) and fsyncs it, like a turn
        boundary, before it returns: the replacement is durable before the session goes on, and
        a resume starts from it. All or nothing: every reader (:meth:`snapshot`,
        :meth:`prompt_input`, a resume after a crash at any moment) sees the old history or the
        new one, never a mix. Like :meth:`record`, once sent it is waited for even if cancelled
        (returned: done; ``Cancelled``: not done).

        Requests are served in order: items recorded before this call are replaced, items
        recorded after it are appended to ``items``. So call it between turns (not while a turn
        may still record a call's output). The items are written as given: like :meth:`record`,
        the history scrubs no secrets (a session redacts before it records).

        Raises :class:`RolloutError` if the write failed (the history is then unchanged),
        ``TypeError`` / ``ValueError`` for bad arguments or an item JSON cannot encode."""
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
            raise TypeError(f"replace(items): expected a sequence of items, got {type(items).__name__}")
        if not isinstance(reason, str):
            raise TypeError(f"replace(reason=...): expected a str, got {type(reason).__name__}")
        for name, value in (("tokens_before", tokens_before), ("tokens_after", tokens_after)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise TypeError(f"replace({name}=...): expected an int or None, got {type(value).__name__}")
            if value is not None and value < 0:
                raise ValueError(f"replace({name}=...): expected a count of tokens >= 0, got {value}")
        await self._call(_Replace(tuple(items), reason, tokens_before, tokens_after))

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
