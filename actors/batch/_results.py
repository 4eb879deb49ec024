"""Task results, the run's ``results.jsonl``, the batch summary and the progress events.

``results.jsonl`` (in the run's output directory) is the run's ledger: one JSON object per
line, one line per finished task (:meth:`TaskResult.to_json`). Exactly-once rules:

* Only the driver writes it (:class:`ResultsFile`), and holds an exclusive ``flock`` on it while
  the run lasts: a second driver on the same directory is refused
  (:class:`ResultsFileLocked`).
* Each record is one ``os.write`` of one complete line to an ``O_APPEND`` descriptor, then
  ``os.fsync`` (appended together, several records share one fsync — group commit — but none is
  acknowledged before its fsync returned). A process killed at any moment leaves every
  acknowledged record intact; at most the line being written is torn.
* On open, a torn last line (no final newline, or not JSON) is cut off the file (``ftruncate`` +
  ``fsync``): that task has no record and runs again. A corrupt line before the last is not a
  crash artefact: :class:`ResultsFileError` names it and nothing is written.
* :meth:`ResultsFile.completed_ids` — ids with a record, whatever their status — are the tasks a
  resumed run skips.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Literal

import attrs

__all__ = [
    "RESULTS_FILE",
    "TaskStatus",
    "TaskResult",
    "ResultsFile",
    "ResultsFileError",
    "ResultsFileLocked",
    "read_results",
    "BatchSummary",
    "BatchStats",
    "BatchStarted",
    "TaskStarted",
    "TaskFinished",
    "BatchFinished",
    "BatchEvent",
    "batch_event_to_dict",
]

RESULTS_FILE: Final = "results.jsonl"
"""The results file's name inside the output directory."""

TaskStatus = Literal["completed", "failed", "aborted"]
_STATUSES: Final = ("completed", "failed", "aborted")


def _usage_dict(value: Mapping[str, Any] | None) -> dict[str, int]:
    return {str(k): int(v) for k, v in (value or {}).items()}


@attrs.frozen(kw_only=True)
class TaskResult:
    """How one task ended.

    * ``status``: ``"completed"`` (the turn ended normally), ``"failed"`` (the turn failed — a
      model error after the retries, a fatal tool error… — or the task could not start: then
      ``error`` says why), ``"aborted"`` (the turn was interrupted).
    * ``final_message``: the last assistant message of the turn, if any.
    * ``usage``: token usage summed over the task's responses (``input_tokens``,
      ``cached_input_tokens``, ``output_tokens``, ``reasoning_output_tokens``, ``total_tokens``).
    * ``tool_calls``: tool calls started; ``retries``: model requests retried (``StreamRetry``
      events); ``events``: model stream events received (decoded SSE events).
    * ``wall_time``: seconds from start to the session's close (rollout fsynced).
    * ``cpu_time``: CPU seconds of the Trio thread attributed to the task (see
      :mod:`actors.batch._cpu`: its own Trio tasks fully, the shared ones — the shared
      ModelActor's HTTP reads and SSE decoding, the scheduler — split evenly among the tasks
      running at the time). Worker-thread file I/O and tool subprocesses are not counted.
    * ``rollout``: the session's rollout, relative to the output directory
      (``rollouts/<safe id>.jsonl``), or ``None`` if the task failed before it had one.
    * ``error``: ``"ErrorType: message"`` when ``status`` is not ``"completed"``.
    * ``attempt``: 1, or 1 + the earlier unfinished attempts found on disk (a run killed while
      the task ran, resumed).
    """

    id: str
    status: TaskStatus = attrs.field()
    final_message: str | None = None
    usage: dict[str, int] = attrs.field(factory=dict, converter=_usage_dict)
    tool_calls: int = 0
    retries: int = 0
    wall_time: float = 0.0
    cpu_time: float = 0.0
    rollout: str | None = None
    error: str | None = None
    attempt: int = 1
    events: int = 0

    @status.validator
    def _check_status(self, _attribute: Any, value: str) -> None:
        if value not in _STATUSES:
            raise ValueError(f"TaskResult.status must be one of {_STATUSES}, got {value!r}")

    def to_json(self) -> dict[str, Any]:
        """The record as written to ``results.jsonl``."""
        return {
            "id": self.id,
            "status": self.status,
            "final_message": self.final_message,
            "usage": dict(self.usage),
            "tool_calls": self.tool_calls,
            "retries": self.retries,
            "events": self.events,
            "wall_time": round(self.wall_time, 6),
            "cpu_time": round(self.cpu_time, 6),
            "rollout": self.rollout,
            "error": self.error,
            "attempt": self.attempt,
        }

    @classmethod
    def from_json(cls, obj: Any) -> TaskResult:
        """Read a record; unknown keys are ignored (newer writers). Raises ``ValueError``."""
        if not isinstance(obj, Mapping):
            raise ValueError(f"a result record must be a JSON object, got {type(obj).__name__}")
        task_id = obj.get("id")
        if not isinstance(task_id, str) or not task_id:
            raise ValueError(f"a result record needs a string 'id', got {task_id!r}")
        status: Any = obj.get("status")
        try:
            return cls(
                id=task_id,
                status=status,  # checked by the validator
                final_message=obj.get("final_message"),
                usage=obj.get("usage") or {},
                tool_calls=int(obj.get("tool_calls") or 0),
                retries=int(obj.get("retries") or 0),
                events=int(obj.get("events") or 0),
                wall_time=float(obj.get("wall_time") or 0.0),
                cpu_time=float(obj.get("cpu_time") or 0.0),
                rollout=obj.get("rollout"),
                error=obj.get("error"),
                attempt=int(obj.get("attempt") or 1),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"result record {task_id!r}: {exc}") from None

    def line(self) -> bytes:
        """The record as one complete line (UTF-8, ``\\n``-terminated)."""
        return (json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n").encode(
            "utf-8", "backslashreplace"
        )


class ResultsFileError(Exception):
    """``results.jsonl`` cannot be read or written (the message names the file and line)."""


class ResultsFileLocked(ResultsFileError):
    """Another process holds the results file: a batch is already running on that directory."""


def _parse_records(data: bytes, path: Path) -> tuple[list[TaskResult], int]:
    """(records, size of the valid prefix). A torn last line is left out of both."""
    records: list[TaskResult] = []
    pos = 0
    line_no = 0
    size = len(data)
    while pos < size:
        end = data.find(b"\n", pos)
        line_no += 1
        last = end == -1 or end == size - 1
        if end == -1:
            return records, pos  # no newline: torn
        raw = data[pos:end]
        try:
            record = TaskResult.from_json(json.loads(raw)) if raw.strip() else None
        except ValueError as exc:
            if last:
                return records, pos  # a complete-looking but corrupt last line: torn as well
            raise ResultsFileError(f"{path}: line {line_no} is not a result record ({exc}); fix or remove it") from None
        if record is not None:
            records.append(record)
        pos = end + 1
    return records, pos


def read_results(out_dir: str | os.PathLike[str]) -> list[TaskResult]:
    """The records of ``out_dir/results.jsonl`` in file order (a torn last line ignored; no
    lock, nothing written). Missing file: ``[]``."""
    path = Path(out_dir) / RESULTS_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return _parse_records(data, path)[0]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


class ResultsFile:
    """The run's ``results.jsonl``, open for appending (see the module docstring).

    ``ResultsFile(out_dir)`` creates the directory and the file if needed, takes the lock, reads
    the existing records and cuts a torn last line off. Blocking file I/O: from Trio, open it
    with ``await trio.to_thread.run_sync(ResultsFile, out_dir)`` and append with
    ``trio.to_thread`` as :func:`~actors.batch.run_batch` does. Use as a context manager or call
    :meth:`close`.
    """

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / RESULTS_FILE
        self.out_dir.mkdir(parents=True, exist_ok=True)
        existed = self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            self._lock()
            if not existed:
                os.fsync(self._fd)
                _fsync_dir(self.out_dir)
            data = self._read_all()
            records, valid = _parse_records(data, self.path)
            self.truncated = len(data) - valid
            """Bytes of a torn last line cut off on open (0: none)."""
            if self.truncated:
                os.ftruncate(self._fd, valid)
                os.fsync(self._fd)
            self._size = valid
            self._records = records
            self._ids = {r.id for r in records}
            self._broken: str | None = None
        except BaseException:
            os.close(self._fd)
            raise

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): one driver per directory is on the user
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ResultsFileLocked(f"{self.path} is in use: another batch is running on {self.out_dir}") from None

    def _read_all(self) -> bytes:
        chunks = []
        offset = 0
        while True:
            chunk = os.pread(self._fd, 1 << 20, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._fd < 0

    def completed_ids(self) -> set[str]:
        """Ids that have a record (any status): a resumed run skips them."""
        return set(self._ids)

    def records(self) -> list[TaskResult]:
        """Every record, in file order (those read on open, then those appended)."""
        return list(self._records)

    def append(self, result: TaskResult) -> None:
        """Append one record durably (write + fsync)."""
        self.append_many([result])

    def append_many(self, results: Iterable[TaskResult]) -> None:
        """Append records durably: one ``write`` per record, one ``fsync`` for all. Raises
        :class:`ResultsFileError` for a second record of an id, or when the disk fails (the
        partial line is cut off; every later append fails too)."""
        results = list(results)
        if self._fd < 0:
            raise ResultsFileError(f"{self.path} is closed")
        if self._broken is not None:
            raise ResultsFileError(f"{self.path}: an earlier write failed ({self._broken}); nothing more is written")
        ids = [r.id for r in results]
        batch: set[str] = set()
        for task_id in ids:
            if task_id in self._ids or task_id in batch:
                raise ResultsFileError(f"{self.path}: task {task_id!r} already has a record")
            batch.add(task_id)
        if not results:
            return
        start = self._size
        try:
            for result in results:
                line = result.line()
                written = os.write(self._fd, line)
                while written < len(line):  # short write (signals, disk nearly full)
                    more = os.write(self._fd, line[written:])
                    if more <= 0:
                        raise OSError("short write")
                    written += more
                self._size += len(line)
            os.fsync(self._fd)
        except OSError as exc:
            self._broken = f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
                os.fsync(self._fd)
            self._size = start
            raise ResultsFileError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self._records.extend(results)
        self._ids.update(ids)

    def close(self) -> None:
        """fsync and close (releases the lock). Idempotent."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        try:
            with contextlib.suppress(OSError):
                os.fsync(fd)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------------
# Summary and progress
# ---------------------------------------------------------------------------------------------


def _rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 and math.isfinite(seconds) else 0.0


@attrs.define
class BatchStats:
    """Live counters of a running batch (updated in place by the driver; read them from a
    progress callback or a UI timer). ``events`` counts model stream events of every task so
    far, running ones included."""

    total: int = 0
    skipped: int = 0
    running: int = 0
    completed: int = 0
    failed: int = 0
    aborted: int = 0
    events: int = 0
    retries: int = 0
    tool_calls: int = 0
    tokens: int = 0

    @property
    def finished(self) -> int:
        """Tasks with a record written by this run."""
        return self.completed + self.failed + self.aborted

    @property
    def pending(self) -> int:
        """Tasks of this run not finished yet (running or waiting)."""
        return self.total - self.skipped - self.finished

    def to_dict(self) -> dict[str, int]:
        """The counters as a JSON object."""
        out = attrs.asdict(self)
        out["finished"] = self.finished
        out["pending"] = self.pending
        return out

    def summary(
        self, *, wall_time: float, cpu_time: float, usage: Mapping[str, int], interrupted: bool, out_dir: str | None
    ) -> BatchSummary:
        """The :class:`BatchSummary` of these counters at the end of a run."""
        return BatchSummary(
            total=self.total,
            skipped=self.skipped,
            completed=self.completed,
            failed=self.failed,
            aborted=self.aborted,
            wall_time=wall_time,
            events=self.events,
            retries=self.retries,
            tool_calls=self.tool_calls,
            usage=dict(usage),
            cpu_time=cpu_time,
            interrupted=interrupted,
            out_dir=out_dir,
        )


@attrs.frozen(kw_only=True)
class BatchSummary:
    """How a batch ended. Counts are of this run (``skipped``: tasks that already had a record
    and were not run); ``tasks_per_s`` and ``events_per_s`` are over ``wall_time``;
    ``cpu_time`` is the driver process's CPU (``time.process_time``) over the run and
    ``cpu_per_task`` that divided by the tasks run. ``interrupted``: the run was stopped before
    every task finished (the rest runs when the batch is run again)."""

    total: int
    skipped: int
    completed: int
    failed: int
    aborted: int
    wall_time: float
    events: int
    retries: int = 0
    tool_calls: int = 0
    usage: dict[str, int] = attrs.field(factory=dict, converter=_usage_dict)
    cpu_time: float = 0.0
    interrupted: bool = False
    out_dir: str | None = None

    @property
    def finished(self) -> int:
        """Tasks finished (recorded) by this run."""
        return self.completed + self.failed + self.aborted

    @property
    def unfinished(self) -> int:
        """Tasks still without a record."""
        return self.total - self.skipped - self.finished

    @property
    def tasks_per_s(self) -> float:
        """Tasks finished per wall-clock second."""
        return _rate(self.finished, self.wall_time)

    @property
    def events_per_s(self) -> float:
        """Model stream events per wall-clock second."""
        return _rate(self.events, self.wall_time)

    @property
    def cpu_per_task(self) -> float:
        """Driver CPU seconds per finished task."""
        return self.cpu_time / self.finished if self.finished else 0.0

    @property
    def counts(self) -> dict[str, int]:
        """Tasks finished by status."""
        return {"completed": self.completed, "failed": self.failed, "aborted": self.aborted}

    def to_json(self) -> dict[str, Any]:
        """The summary as a JSON object (derived rates included)."""
        return {
            "total": self.total,
            "skipped": self.skipped,
            "completed": self.completed,
            "failed": self.failed,
            "aborted": self.aborted,
            "unfinished": self.unfinished,
            "interrupted": self.interrupted,
            "wall_time": round(self.wall_time, 6),
            "tasks_per_s": round(self.tasks_per_s, 3),
            "events": self.events,
            "events_per_s": round(self.events_per_s, 1),
            "retries": self.retries,
            "tool_calls": self.tool_calls,
            "usage": dict(self.usage),
            "cpu_time": round(self.cpu_time, 6),
            "cpu_per_task": round(self.cpu_per_task, 6),
            "out_dir": self.out_dir,
        }


@attrs.frozen
class BatchStarted:
    """The batch begins: ``stats`` is the live :class:`BatchStats` (keep it to poll it)."""

    stats: BatchStats
    out_dir: str
    concurrency: int


@attrs.frozen
class TaskStarted:
    """A task started (it holds one of the ``concurrency`` slots)."""

    id: str
    stats: BatchStats


@attrs.frozen
class TaskFinished:
    """A task ended and its record is durable in ``results.jsonl``."""

    result: TaskResult
    stats: BatchStats


@attrs.frozen
class BatchFinished:
    """The batch ended (also when interrupted)."""

    summary: BatchSummary


BatchEvent = BatchStarted | TaskStarted | TaskFinished | BatchFinished
"""What a batch's ``progress`` receives, in order: one ``BatchStarted``, then ``TaskStarted`` /
``TaskFinished`` per task run, then one ``BatchFinished``."""


def batch_event_to_dict(event: BatchEvent) -> dict[str, Any]:
    """A JSON object for a progress event (``{"type": "task_finished", ...}``; counters as they
    are when called)."""
    if isinstance(event, BatchStarted):
        return {
            "type": "batch_started",
            "out_dir": event.out_dir,
            "concurrency": event.concurrency,
            "stats": event.stats.to_dict(),
        }
    if isinstance(event, TaskStarted):
        return {"type": "task_started", "id": event.id, "stats": event.stats.to_dict()}
    if isinstance(event, TaskFinished):
        return {"type": "task_finished", "result": event.result.to_json(), "stats": event.stats.to_dict()}
    return {"type": "batch_finished", "summary": event.summary.to_json()}
