"""Running tasks in this process: :func:`run_task` (one task, one session) and :func:`run_batch`
(many tasks under a concurrency limit, with the exactly-once results file).

Layout of an output directory::

    out/results.jsonl              one record per finished task (only the driver writes it)
    out/rollouts/<safe id>.jsonl   each task's session rollout
    out/rollouts/<safe id>.jsonl.stale-<n>   a rollout left by an attempt killed mid-task
    out/workspaces/<safe id>/      a task's tool workspace (only for tasks with tools and no cwd)

**Exactly once.** A task's record is appended (and fsynced) by the driver after the task's
session has closed, its rollout fsynced. A run killed at any moment — SIGKILL included — keeps
every record it acknowledged; run again, it skips every id that has a record and runs the others
once, so ``results.jsonl`` ends with exactly one record per task. A task that was running when
the process died starts over: a fresh rollout (the old one is renamed ``.stale-<n>``), a fresh
default workspace (likewise renamed), and its record says ``attempt: n + 1``. Stopping a batch
(cancellation, Ctrl-C) records nothing for the tasks it interrupts: they run on the next run.

**CPU accounting** (``TaskResult.cpu_time``): see :mod:`actors.batch._cpu`. The model clients
(:class:`~actors.batch.ModelPool`) are in ``_pool``; what this driver shares with the Ray one
(the frame of a run, the output layout) is in ``_common``.
"""

from __future__ import annotations

import contextvars
import os
import time
from collections.abc import Iterable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import trio

from actors.history import HistoryClosed, RolloutError
from actors.model import ModelActor, ModelSettings
from actors.session import open_session
from actors.tools import Tool
from kernel import KernelError, ModelClient, StreamRetry, ToolCallStarted

from ._common import (
    ROLLOUTS_DIR,
    WORKSPACES_DIR,
    Progress,
    ToolsFactory,
    _check_count,
    _count_finished,
    _emit,
    _next_free,
    _open_run,
    _retire_stale_rollout,
    _unique_tasks,
)
from ._cpu import _start_meter, _stop_meter
from ._limiter import RateLimitedModel, RateLimiter
from ._mcp import BatchMcp, UnknownMcpServer, open_batch_mcp
from ._pool import ModelPool, _Counted, _Counts, _SetupError, _task_client, open_model_pool
from ._results import BatchStats, BatchSummary, ResultsFile, ResultsFileError, TaskFinished, TaskResult, TaskStarted
from ._tasks import BatchTask, TaskFormatError, safe_id

if TYPE_CHECKING:
    from actors.tools.mcp import McpServer

__all__ = ["run_task", "run_batch"]


# ---------------------------------------------------------------------------------------------
# One task
# ---------------------------------------------------------------------------------------------

_STATS: contextvars.ContextVar[BatchStats | None] = contextvars.ContextVar("batch_stats", default=None)

_TASK_ERRORS = (KernelError, RolloutError, HistoryClosed, OSError, TaskFormatError, _SetupError, UnknownMcpServer)


def _task_error(exc: BaseException) -> BaseException | None:
    """The error to report when ``exc`` is a task failure (possibly inside exception groups of
    nothing but task failures), else ``None`` (a programming error: re-raised)."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = [_task_error(e) for e in exc.exceptions]
        if leaves and all(leaf is not None for leaf in leaves):
            return leaves[0]
        return None
    return exc if isinstance(exc, _TASK_ERRORS) else None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{type(exc).__name__}: {exc.strerror}{where}"
    return f"{type(exc).__name__}: {exc}"


def _fresh_workspace(path: Path) -> Path:
    if os.path.lexists(path):
        os.rename(path, _next_free(path)[1])
    path.mkdir(parents=True)
    return path


def _resolve_cwd(cwd: str) -> Path:
    path = Path(cwd).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    path = path.resolve()
    if not path.is_dir():
        raise _SetupError(f"cwd {cwd!r} is not a directory")
    return path


def _default_tools(task: BatchTask, workspace: Path | None) -> list[Tool]:
    if not task.tools:
        return []
    assert workspace is not None
    from actors.tools.builtin import builtin_tools

    return [t for t in builtin_tools(workspace) if t.name in task.tools]


class _OpenGuard:
    """Defers a cancellation that arrives while a session is opening until it has opened.

    ``open_session`` starts its HistoryActor with ``until_closed=True`` (serving shielded from
    cancellation). If the starting nursery is cancelled while the actor creates its rollout,
    trio's ``task_status.started()`` quietly does nothing, ``open_history`` never gets the client
    to close, and the shielded actor waits forever: the task (and the whole batch) hangs. With
    hundreds of sessions opening at any moment, a Ctrl-C almost always lands in that window. So
    the task body runs shielded, and an outer cancellation is passed on to it only outside the
    opening phase (which lasts a rollout creation: milliseconds).
    """

    __slots__ = ("scope", "opening", "pending")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.opening = False
        self.pending = False

    def cancel(self) -> None:
        if self.opening:
            self.pending = True
        else:
            self.scope.cancel()

    def begin(self) -> None:
        self.opening = True

    def end(self) -> None:
        self.opening = False
        if self.pending:
            self.scope.cancel()


async def run_task(
    task: BatchTask,
    *,
    out_dir: str | os.PathLike[str],
    model: ModelActor | ModelClient | ModelPool,
    limiter: RateLimiter | None = None,
    max_retries: int | None = None,
    tools_factory: ToolsFactory | None = None,
    mcp: BatchMcp | None = None,
) -> TaskResult:
    """Run ``task`` as one turn of a fresh session and return its :class:`TaskResult`.

    The rollout is ``out_dir/rollouts/<safe id>.jsonl`` (a stale one from a killed attempt is
    renamed first). ``model``: a running ModelActor (shared), a :class:`ModelPool`, or any
    :class:`kernel.ModelClient`; a task naming another model than a ModelActor's gets a
    ModelActor of its own for its duration (a pool keeps one per model instead). ``limiter``:
    every model request waits for it. ``max_retries``: the retry budget (default: the model
    settings', else 5). ``tools_factory(task, workspace)``: the task's tools instead of the
    built-in ones it names (tests use it to inject tools). ``mcp``: the batch's MCP servers
    (:func:`~actors.batch._mcp.open_batch_mcp`), of which the session gets those the task names.

    Never raises for a task failure — the turn failing or aborting, a model error, a bad
    ``cwd``, a model the batch cannot provide, a rollout that cannot be written: the result says
    ``"failed"`` (or ``"aborted"``) with the error. Raises only for programming errors, and
    ``trio.Cancelled`` when cancelled (no result then: the task is unfinished).
    """
    started = time.perf_counter()
    meter, previous = _start_meter()
    try:
        guard = _OpenGuard()
        box: list[TaskResult] = []
        done = trio.Event()

        async def body() -> None:
            try:
                with trio.CancelScope(shield=True), guard.scope:
                    box.append(
                        await _run_task_body(
                            task,
                            out_dir=Path(out_dir),
                            model=model,
                            limiter=limiter,
                            max_retries=max_retries,
                            tools_factory=tools_factory,
                            guard=guard,
                            mcp=mcp,
                        )
                    )
            finally:
                done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(body, name=f"run_task {task.id}")
            try:
                await done.wait()
            except trio.Cancelled:
                guard.cancel()
                with trio.CancelScope(shield=True):
                    await done.wait()
                raise
    finally:
        cpu = _stop_meter(meter, previous)
    if not box:  # the body was cancelled through the guard, and so was this task
        await trio.lowlevel.checkpoint()
        raise RuntimeError("run_task ended without a result")  # pragma: no cover
    return attrs.evolve(box[0], wall_time=time.perf_counter() - started, cpu_time=cpu)


async def _run_task_body(
    task: BatchTask,
    *,
    out_dir: Path,
    model: ModelActor | ModelClient | ModelPool,
    limiter: RateLimiter | None,
    max_retries: int | None,
    tools_factory: ToolsFactory | None,
    guard: _OpenGuard,
    mcp: BatchMcp | None = None,
) -> TaskResult:
    out = out_dir
    safe = safe_id(task.id)
    rollout_rel = f"{ROLLOUTS_DIR}/{safe}.jsonl"
    rollout_path = out / ROLLOUTS_DIR / f"{safe}.jsonl"
    counts = _Counts()
    stats = _STATS.get()
    attempt = 1
    rollout: str | None = None
    tool_calls = retries = 0
    try:
        # a few stat calls: cheaper inline than a worker-thread round trip (~0.2 ms of CPU)
        attempt = _retire_stale_rollout(rollout_path)
        items = task.input_items()
        workspace: Path | None = None
        if task.cwd is not None:
            workspace = await trio.to_thread.run_sync(_resolve_cwd, task.cwd)
        elif task.tools or tools_factory is not None:
            workspace = await trio.to_thread.run_sync(_fresh_workspace, out / WORKSPACES_DIR / safe)
        tools = tools_factory(task, workspace) if tools_factory is not None else _default_tools(task, workspace)
        servers = mcp.for_task(task.mcp_servers) if mcp is not None else []
        async with AsyncExitStack() as stack:
            client, settings = await _task_client(model, task.model, stack)
            retry_budget = (
                max_retries if max_retries is not None else (settings.stream_max_retries if settings else None)
            )
            client = _Counted(client, counts, stats)
            if limiter is not None:
                client = RateLimitedModel(client, limiter)
            rollout = rollout_rel
            guard.begin()
            try:
                session = await stack.enter_async_context(
                    open_session(
                        model=client,
                        tools=tools,
                        rollout=rollout_path,
                        max_retries=retry_budget,
                        cwd=workspace if workspace is not None else out,
                        mcp_servers=servers,
                    )
                )
            finally:
                guard.end()
            async with session.subscribe() as subscription:
                outcome = await session.run(items)
                for event in subscription.take_nowait():
                    kind = type(event)
                    if kind is ToolCallStarted:
                        tool_calls += 1
                    elif kind is StreamRetry:
                        retries += 1
            usage = attrs.asdict(session.total_usage)
        error = None
        if outcome.status != "completed":
            error = _describe(outcome.error) if outcome.error is not None else "turn aborted"
        status = outcome.status
        final_message = outcome.last_agent_message
    except Exception as exc:
        leaf = _task_error(exc)
        if leaf is None:
            raise
        status, final_message, usage, error = "failed", None, {}, _describe(leaf)
        if rollout is not None and not rollout_path.exists():
            rollout = None
    if stats is not None:
        stats.retries += retries
        stats.tool_calls += tool_calls
        stats.tokens += int(usage.get("total_tokens", 0))
    return TaskResult(
        id=task.id,
        status=status,
        final_message=final_message,
        usage=usage,
        tool_calls=tool_calls,
        retries=retries,
        events=counts.events,
        rollout=rollout,
        error=error,
        attempt=attempt,
    )


# ---------------------------------------------------------------------------------------------
# The batch
# ---------------------------------------------------------------------------------------------


@attrs.define(eq=False)
class _Slot:
    result: TaskResult
    done: trio.Event = attrs.field(factory=trio.Event)
    error: BaseException | None = None


class _GroupCommit:
    """Appends results durably; records that arrive while an fsync runs share the next one."""

    def __init__(self, results: ResultsFile) -> None:
        self._results = results
        self._queue: list[_Slot] = []
        self._busy = False

    async def append(self, result: TaskResult) -> None:
        """Durable when it returns. Call shielded: a finished task's record is always written."""
        slot = _Slot(result)
        self._queue.append(slot)
        if self._busy:
            await slot.done.wait()
        else:
            self._busy = True
            try:
                while self._queue:
                    batch, self._queue = self._queue, []
                    try:
                        await trio.to_thread.run_sync(self._results.append_many, [s.result for s in batch])
                    except BaseException as exc:
                        for s in batch + self._queue:
                            s.error = exc
                            s.done.set()
                        self._queue = []
                        raise
                    for s in batch:
                        s.done.set()
            finally:
                self._busy = False
        if slot.error is not None:
            raise slot.error


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


async def run_batch(
    tasks: Iterable[BatchTask],
    *,
    out_dir: str | os.PathLike[str],
    concurrency: int = 16,
    model: ModelSettings | ModelActor | ModelClient | ModelPool,
    limiter: RateLimiter | None = None,
    max_retries: int | None = None,
    progress: Progress = None,
    tools_factory: ToolsFactory | None = None,
    mcp_servers: Sequence[McpServer] = (),
) -> BatchSummary:
    """Run ``tasks`` in this process, at most ``concurrency`` at a time, recording each in
    ``out_dir/results.jsonl`` exactly once (see the module docstring).

    Tasks whose id already has a record there are skipped (a resumed run). Every session shares
    one ModelActor (``model`` as ModelSettings: started here; a ModelActor: used as it is) and
    ``limiter``. ``progress`` receives a :class:`BatchStarted`, then :class:`TaskStarted` /
    :class:`TaskFinished` per task (``TaskFinished`` once the record is durable), then a
    :class:`BatchFinished` — also when the batch is cancelled, in which case the cancellation
    propagates after it. ``tools_factory``: see :func:`run_task`. ``mcp_servers``: MCP servers
    for the tasks' sessions; a ``shared`` one (the default) runs once for the whole batch and
    serves every session, one with ``shared=False`` is started by each session (see
    :mod:`actors.batch._mcp`: a task's ``mcp_servers`` key picks some; elicitation is declined and
    sampling refused, there being no one to ask).

    Raises ``ValueError`` for duplicate task ids or ``concurrency < 1``,
    :class:`~actors.batch.ResultsFileLocked` if another batch runs on ``out_dir``,
    :class:`~actors.batch.ResultsFileError` if the results file cannot be written.
    """
    _check_count("concurrency", concurrency)
    tasks = _unique_tasks(tasks)
    async with _open_run(tasks, out_dir, concurrency=concurrency, progress=progress) as run:
        stats = run.stats
        commit = _GroupCommit(run.results)
        async with open_model_pool(model) as pool, open_batch_mcp(mcp_servers) as mcp:
            capacity = trio.CapacityLimiter(concurrency)

            async def one(task: BatchTask, token: object) -> None:
                try:
                    stats.running += 1
                    await _emit(progress, TaskStarted(task.id, stats))
                    result = await run_task(
                        task,
                        out_dir=run.out,
                        model=pool,
                        limiter=limiter,
                        max_retries=max_retries,
                        tools_factory=tools_factory,
                        mcp=mcp,
                    )
                finally:
                    stats.running -= 1
                    capacity.release_on_behalf_of(token)
                with trio.CancelScope(shield=True):
                    await commit.append(result)
                    _count_finished(stats, run.usage, result)
                await _emit(progress, TaskFinished(result, stats))

            token_stats = _STATS.set(stats)
            try:
                async with trio.open_nursery() as nursery:
                    for task in run.pending:
                        token = object()
                        await capacity.acquire_on_behalf_of(token)
                        nursery.start_soon(one, task, token, name=f"batch task {task.id}")
            except BaseExceptionGroup as group:
                # a results file that cannot be written stops the batch: raise it as it is
                failed, _rest = group.split(ResultsFileError)
                if failed is not None:
                    raise _first_leaf(failed) from None
                raise
            finally:
                _STATS.reset(token_stats)
    assert run.summary is not None
    return run.summary
