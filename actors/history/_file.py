"""The rollout writer: blocking file operations, run in a worker thread (create, reopen on resume,
append a batch, close). Every ``os`` call that writes or syncs the rollout is in this module.

Flush policy
------------
* Each record is one ``write()`` of one complete line to an unbuffered ``O_APPEND`` descriptor;
  there is no user-space buffer, so when a batch (one :meth:`HistoryClient.record` or
  :meth:`HistoryClient.record_events` call) returns, all of it is in the OS. A process crash loses
  at most the batch being written, and only its last line can be torn.
* ``os.fsync`` runs after a batch holding a turn boundary (:class:`~kernel.TurnCompleted`,
  :class:`~kernel.TurnAborted`, :class:`~kernel.TurnFailed`), after a ``compacted`` record
  (:meth:`HistoryClient.replace`: one line, so a crash leaves it whole or torn, never half
  applied), on :meth:`HistoryClient.sync`, when the file is created (with its directory) or
  resumed, and on close: a power loss loses at most the current turn.
* File I/O runs in a worker thread (``trio.to_thread.run_sync``), so a slow disk never blocks the
  Trio loop; JSON encoding runs in the actor task. A batch that fails to write (disk full, I/O
  error) is cut back out of the file and not added to memory, the caller gets
  :class:`RolloutError`, and every later write fails the same way (a disk that failed once, and
  maybe failed the cut too, is trusted with nothing more); reads keep working.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Sequence
from pathlib import Path

from ._format import SessionMeta, _item_record, _line
from ._resume import ResumedSession, _load


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
