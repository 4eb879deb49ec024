"""What both batch drivers share — :func:`~actors.batch.run_batch` (``_local``) and
``run_batch_ray`` (``_ray``): the output layout, the progress sink, argument checks, the attempt
numbering of rollouts, the counting of finished tasks, and the frame of a run (:func:`_open_run`:
the results file, the live stats, ``BatchStarted`` … ``BatchFinished`` and the summary).
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from actors.tools import Tool, ToolRegistry

from ._results import BatchEvent, BatchFinished, BatchStarted, BatchStats, BatchSummary, ResultsFile, TaskResult
from ._tasks import BatchTask

__all__ = ["ROLLOUTS_DIR", "WORKSPACES_DIR", "ToolsFactory", "Progress"]

ROLLOUTS_DIR = "rollouts"
WORKSPACES_DIR = "workspaces"

ToolsFactory = Callable[[BatchTask, "Path | None"], "ToolRegistry | Iterable[Tool | Callable[..., Any]] | None"]
"""``tools_factory(task, workspace)`` → the task's tools (a registry or tools). ``workspace`` is
the task's ``cwd`` (resolved) or a fresh ``workspaces/<safe id>`` directory."""

Progress = Any
"""A progress sink: a callable taking one :data:`BatchEvent` (sync or async), or an object with
``async publish(events)`` (an :class:`~kernel.EventSink`-like object)."""


def _check_count(name: str, value: object) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer >= 1."""
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _unique_tasks(tasks: Iterable[BatchTask]) -> list[BatchTask]:
    """``tasks`` as a list; ``ValueError`` if two share an id."""
    tasks = list(tasks)
    ids: set[str] = set()
    for task in tasks:
        if task.id in ids:
            raise ValueError(f"duplicate task id {task.id!r}")
        ids.add(task.id)
    return tasks


async def _emit(progress: Progress, event: BatchEvent) -> None:
    if progress is None:
        return
    publish = getattr(progress, "publish", None)
    if publish is not None:
        await publish([event])
        return
    value = progress(event)
    if inspect.isawaitable(value):
        await value


def _add_usage(total: dict[str, int], usage: dict[str, int]) -> None:
    for key, value in usage.items():
        total[key] = total.get(key, 0) + value


def _count_finished(stats: BatchStats, usage: dict[str, int], result: TaskResult) -> None:
    """Count a recorded ``result`` by status, and add its token usage to ``usage``."""
    if result.status == "completed":
        stats.completed += 1
    elif result.status == "failed":
        stats.failed += 1
    else:
        stats.aborted += 1
    _add_usage(usage, result.usage)


# ---------------------------------------------------------------------------------------------
# Rollout attempts
# ---------------------------------------------------------------------------------------------


def _next_free(path: Path) -> tuple[int, Path]:
    """(n, ``path.stale-n``) for the first n whose name is free."""
    n = 1
    while True:
        candidate = path.with_name(f"{path.name}.stale-{n}")
        if not os.path.lexists(candidate):
            return n, candidate
        n += 1


def _retire_stale_rollout(rollout: Path) -> int:
    """Rename a rollout left by an earlier, unfinished attempt; return this attempt's number."""
    if not rollout.parent.is_dir():
        rollout.parent.mkdir(parents=True, exist_ok=True)
    n, stale = _next_free(rollout)
    if os.path.lexists(rollout):
        os.rename(rollout, stale)
        n += 1
    return n


# ---------------------------------------------------------------------------------------------
# The frame of a run
# ---------------------------------------------------------------------------------------------


@attrs.define(eq=False)
class _Run:
    """A batch run opened by :func:`_open_run`: ``pending`` are the tasks without a record yet;
    the driver updates ``stats`` and ``usage``; ``summary`` is set when the block exits."""

    out: Path
    results: ResultsFile
    stats: BatchStats
    pending: list[BatchTask]
    usage: dict[str, int] = attrs.field(factory=dict)
    summary: BatchSummary | None = None


@asynccontextmanager
async def _open_run(
    tasks: list[BatchTask], out_dir: str | os.PathLike[str], *, concurrency: int, progress: Progress
) -> AsyncIterator[_Run]:
    """Open ``out_dir``'s results file (its lock held until the end), skip the tasks it already
    records, emit :class:`BatchStarted`; at the end — also on an error or a cancellation — build
    the summary (``interrupted`` unless the block ended normally with nothing pending), emit
    :class:`BatchFinished` and close the results file."""
    out = Path(out_dir)
    results = await trio.to_thread.run_sync(ResultsFile, out)
    try:
        done = results.completed_ids()
        pending = [t for t in tasks if t.id not in done]
        await trio.to_thread.run_sync(lambda: (out / ROLLOUTS_DIR).mkdir(parents=True, exist_ok=True))
        stats = BatchStats(total=len(tasks), skipped=len(tasks) - len(pending))
        run = _Run(out, results, stats, pending)
        started = time.perf_counter()
        cpu_started = time.process_time()
        interrupted = True
        await _emit(progress, BatchStarted(stats, os.fspath(out), concurrency))
        try:
            yield run
            interrupted = stats.pending > 0
        finally:
            stats.running = 0
            run.summary = stats.summary(
                wall_time=time.perf_counter() - started,
                cpu_time=time.process_time() - cpu_started,
                usage=run.usage,
                interrupted=interrupted,
                out_dir=os.fspath(out),
            )
            with trio.CancelScope(shield=True):
                await _emit(progress, BatchFinished(run.summary))
    finally:
        results.close()
