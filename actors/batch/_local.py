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

**CPU accounting** (``TaskResult.cpu_time``). Trio runs every session on one thread, so no OS
counter separates tasks. While tasks run, a Trio instrument reads the thread's CPU clock
(``time.thread_time``) before every task step and charges the time since the previous reading
to the Trio task that ran: a Trio task started (directly or not) by ``run_task`` — the session's
turn runner, its tool and history actors, tool calls — counts for that batch task; any other
(the shared ModelActor's HTTP reads and SSE decoding, the connection pool, the scheduler's I/O
handling) is split evenly among the batch tasks running at that moment. The figures add up to
the Trio thread's CPU over the run; worker-thread file I/O (rollout writes) and tool
subprocesses are not included. The overhead is one clock read (< 1 µs) per task step, only
while a task runs.
"""

from __future__ import annotations

import contextvars
import inspect
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from actors.history import HistoryClosed, RolloutError
from actors.model import ModelActor, ModelSettings, open_model_actor
from actors.session import open_session
from actors.tools import Tool, ToolRegistry
from kernel import (
    KernelError,
    ModelClient,
    ModelEvent,
    Prompt,
    StreamRetry,
    ToolCallStarted,
)

from ._limiter import RateLimitedModel, RateLimiter
from ._results import (
    BatchEvent,
    BatchFinished,
    BatchStarted,
    BatchStats,
    BatchSummary,
    ResultsFile,
    ResultsFileError,
    TaskFinished,
    TaskResult,
    TaskStarted,
)
from ._tasks import BatchTask, TaskFormatError, safe_id

__all__ = [
    "ModelPool",
    "open_model_pool",
    "run_task",
    "run_batch",
    "ToolsFactory",
    "Progress",
    "ROLLOUTS_DIR",
    "WORKSPACES_DIR",
]

ROLLOUTS_DIR = "rollouts"
WORKSPACES_DIR = "workspaces"

ToolsFactory = Callable[[BatchTask, "Path | None"], "ToolRegistry | Iterable[Tool | Callable[..., Any]] | None"]
"""``tools_factory(task, workspace)`` → the task's tools (a registry or tools). ``workspace`` is
the task's ``cwd`` (resolved) or a fresh ``workspaces/<safe id>`` directory."""

Progress = Any
"""A progress sink: a callable taking one :data:`BatchEvent` (sync or async), or an object with
``async publish(events)`` (an :class:`~kernel.EventSink`-like object)."""


class _SetupError(Exception):
    """A task cannot start (bad cwd, a model the batch cannot provide...): the task fails."""


# ---------------------------------------------------------------------------------------------
# CPU accounting
# ---------------------------------------------------------------------------------------------


class _Meter:
    __slots__ = ("own", "share0", "value", "acct")

    def __init__(self, acct: _CpuAccountant) -> None:
        self.acct = acct
        self.own = 0.0
        self.share0 = acct.share
        self.value: float | None = None

    def stop(self) -> float:
        if self.value is None:
            self.acct.charge_current()
            self.value = self.own + (self.acct.share - self.share0)
            self.acct.active -= 1
        return self.value


class _CpuAccountant(trio.abc.Instrument):
    """See the module docstring. One per Trio run, installed while some meter is active."""

    def __init__(self) -> None:
        self.owner: dict[trio.lowlevel.Task, _Meter] = {}
        self.active = 0
        self.share = 0.0  # cumulative unowned CPU seconds per active meter
        self.last = time.thread_time()
        self.current: trio.lowlevel.Task | None = None

    def _charge(self, task: trio.lowlevel.Task | None, seconds: float) -> None:
        meter = self.owner.get(task) if task is not None else None
        if meter is not None and meter.value is None:
            meter.own += seconds
        elif self.active:
            self.share += seconds / self.active

    def charge_current(self) -> None:
        now = time.thread_time()
        self._charge(self.current, now - self.last)
        self.last = now

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        now = time.thread_time()
        self._charge(self.current, now - self.last)
        self.last = now
        self.current = task

    def before_io_wait(self, timeout: float) -> None:
        now = time.thread_time()
        self._charge(self.current, now - self.last)
        self.last = now
        self.current = None

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        nursery = task.parent_nursery
        if nursery is not None:
            meter = self.owner.get(nursery.parent_task)
            if meter is not None:
                self.owner[task] = meter

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self.owner.pop(task, None)


_ACCOUNTANT: trio.lowlevel.RunVar[_CpuAccountant | None] = trio.lowlevel.RunVar("batch_cpu_accountant", default=None)


def _start_meter() -> tuple[_Meter, _Meter | None]:
    """A meter for the current Trio task (and the meter it had before, to restore)."""
    acct = _ACCOUNTANT.get()
    if acct is None:
        acct = _CpuAccountant()
        _ACCOUNTANT.set(acct)
        trio.lowlevel.add_instrument(acct)
    acct.charge_current()
    meter = _Meter(acct)
    acct.active += 1
    task = trio.lowlevel.current_task()
    previous = acct.owner.get(task)
    acct.owner[task] = meter
    acct.current = task
    return meter, previous


def _stop_meter(meter: _Meter, previous: _Meter | None) -> float:
    value = meter.stop()
    acct = meter.acct
    task = trio.lowlevel.current_task()
    if previous is not None:
        acct.owner[task] = previous
    else:
        acct.owner.pop(task, None)
    if acct.active == 0 and _ACCOUNTANT.get() is acct:
        _ACCOUNTANT.set(None)
        try:
            trio.lowlevel.remove_instrument(acct)
        except KeyError:
            pass
    return value


# ---------------------------------------------------------------------------------------------
# Model clients: the pool, event counting, secret scrubbing
# ---------------------------------------------------------------------------------------------


class _Scrubbed:
    """Removes the API key from the errors a client raises (servers may echo it back in spellings
    the HTTP layer does not recognise), before they reach an event, a rollout or a record."""

    def __init__(self, inner: ModelClient, secret: str, model: str) -> None:
        self._inner = inner
        self._secret = secret
        self.model = model

    def _scrub(self, exc: KernelError) -> None:
        if self._secret in exc.message:
            exc.message = exc.message.replace(self._secret, "[REDACTED]")
            exc.args = (exc.message,)

    @asynccontextmanager
    async def stream(self, prompt: Prompt) -> AsyncIterator[AsyncIterator[Sequence[ModelEvent]]]:
        try:
            async with self._inner.stream(prompt) as batches:
                yield _ScrubbedBatches(batches, self)
        except KernelError as exc:
            self._scrub(exc)
            raise


class _ScrubbedBatches:
    __slots__ = ("_inner", "_owner")

    def __init__(self, inner: AsyncIterator[Sequence[ModelEvent]], owner: _Scrubbed) -> None:
        self._inner = inner
        self._owner = owner

    def __aiter__(self) -> _ScrubbedBatches:
        return self

    async def __anext__(self) -> Sequence[ModelEvent]:
        try:
            return await self._inner.__anext__()
        except KernelError as exc:
            self._owner._scrub(exc)
            raise


@attrs.define(eq=False)
class _Counts:
    events: int = 0


class _Counted:
    """Counts model stream events (per task, and in the batch's live stats)."""

    def __init__(self, inner: ModelClient, counts: _Counts, stats: BatchStats | None) -> None:
        self._inner = inner
        self._counts = counts
        self._stats = stats
        self.model = getattr(inner, "model", "")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    @asynccontextmanager
    async def stream(self, prompt: Prompt) -> AsyncIterator[AsyncIterator[Sequence[ModelEvent]]]:
        async with self._inner.stream(prompt) as batches:
            yield _CountedBatches(batches, self._counts, self._stats)


class _CountedBatches:
    __slots__ = ("_inner", "_counts", "_stats")

    def __init__(self, inner: AsyncIterator[Sequence[ModelEvent]], counts: _Counts, stats: BatchStats | None) -> None:
        self._inner = inner
        self._counts = counts
        self._stats = stats

    def __aiter__(self) -> _CountedBatches:
        return self

    async def __anext__(self) -> Sequence[ModelEvent]:
        batch = await self._inner.__anext__()
        n = len(batch)
        self._counts.events += n
        if self._stats is not None:
            self._stats.events += n
        return batch


class _NameTag:
    """Gives a client the ``model`` attribute open_session writes in the rollout header."""

    def __init__(self, inner: ModelClient, model: str) -> None:
        self._inner = inner
        self.model = model

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    def stream(self, prompt: Prompt) -> Any:
        return self._inner.stream(prompt)


class ModelPool:
    """The model clients of a batch: one shared :class:`~actors.model.ModelActor` (one HTTP
    client and connection pool for every session) for the batch's model, and one more per other
    model name that tasks ask for (``BatchTask.model``), started on first use. Made by
    :func:`open_model_pool`; pass it as ``model=`` to :func:`run_task`."""

    def __init__(self, default: ModelClient, settings: ModelSettings | None, nursery: trio.Nursery) -> None:
        self._default = default
        self.settings = settings
        self._nursery = nursery
        self._others: dict[str, ModelClient] = {}
        self.actors: list[ModelActor] = []

    @property
    def max_retries(self) -> int | None:
        """The settings' retry budget, when the pool has settings."""
        return self.settings.stream_max_retries if self.settings is not None else None

    def client_for(self, model: str | None) -> ModelClient:
        """The client for a task's ``model`` (``None``: the batch's). Raises an error (the task
        fails) when the pool was given a bare :class:`kernel.ModelClient` and the task names another model."""
        settings = self.settings
        if model is None or (settings is not None and model == settings.model):
            return self._default
        client = self._others.get(model)
        if client is not None:
            return client
        if settings is None:
            if getattr(self._default, "model", None) == model:
                return self._default
            raise _SetupError(
                f"the task asks for model {model!r}, but the batch's model is a client that cannot switch "
                "models (pass ModelSettings or a ModelActor)"
            )
        other = attrs.evolve(settings, model=model)
        actor = ModelActor(other)
        self.actors.append(actor)
        # the actor's client may be used before its task runs: requests wait on its channel
        self._nursery.start_soon(actor.run)
        client = self._others[model] = _wrap_settings(actor.client(), other)
        return client


@asynccontextmanager
async def open_model_pool(model: ModelSettings | ModelActor | ModelClient | ModelPool) -> AsyncIterator[ModelPool]:
    """A :class:`ModelPool` for the block: ``ModelSettings`` — a ModelActor is started and
    shared; a running ``ModelActor`` — shared as it is; any other :class:`kernel.ModelClient` —
    used as it is (tasks cannot switch models then); a ``ModelPool`` — yielded as it is."""
    if isinstance(model, ModelPool):
        yield model
        return
    async with trio.open_nursery() as nursery:
        try:
            if isinstance(model, ModelSettings):
                actor = ModelActor(model)
                await nursery.start(actor.run)
                pool = ModelPool(_wrap_settings(actor.client(), model), model, nursery)
                pool.actors.append(actor)
            elif isinstance(model, ModelActor):
                pool = ModelPool(_wrap_settings(model.client(), model.settings), model.settings, nursery)
                pool.actors.append(model)
            else:
                pool = ModelPool(model, None, nursery)
            yield pool
        finally:
            nursery.cancel_scope.cancel()


def _wrap_settings(client: ModelClient, settings: ModelSettings) -> ModelClient:
    if settings.api_key:
        return _Scrubbed(client, settings.api_key, settings.model)
    return _NameTag(client, settings.model)


# ---------------------------------------------------------------------------------------------
# One task
# ---------------------------------------------------------------------------------------------

_STATS: contextvars.ContextVar[BatchStats | None] = contextvars.ContextVar("batch_stats", default=None)

_TASK_ERRORS = (KernelError, RolloutError, HistoryClosed, OSError, TaskFormatError, _SetupError)


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
) -> TaskResult:
    """Run ``task`` as one turn of a fresh session and return its :class:`TaskResult`.

    The rollout is ``out_dir/rollouts/<safe id>.jsonl`` (a stale one from a killed attempt is
    renamed first). ``model``: a running ModelActor (shared), a :class:`ModelPool`, or any
    :class:`kernel.ModelClient`; a task naming another model than a ModelActor's gets a
    ModelActor of its own for its duration (a pool keeps one per model instead). ``limiter``:
    every model request waits for it. ``max_retries``: the retry budget (default: the model
    settings', else 5). ``tools_factory(task, workspace)``: the task's tools instead of the
    built-in ones it names (tests use it to inject tools).

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
        async with AsyncExitStack() as stack:
            settings: ModelSettings | None
            if isinstance(model, ModelPool):
                client = model.client_for(task.model)
                settings = model.settings
            elif isinstance(model, ModelActor):
                settings = model.settings
                if task.model is not None and task.model != settings.model:
                    settings = attrs.evolve(settings, model=task.model)
                    actor = await stack.enter_async_context(open_model_actor(settings))
                else:
                    actor = model
                client = _wrap_settings(actor.client(), settings)
            else:
                settings = None
                if task.model is not None and getattr(model, "model", None) != task.model:
                    raise _SetupError(
                        f"the task asks for model {task.model!r}, but the batch's model is a client that "
                        "cannot switch models (pass ModelSettings or a ModelActor)"
                    )
                client = model
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


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _add_usage(total: dict[str, int], usage: dict[str, int]) -> None:
    for key, value in usage.items():
        total[key] = total.get(key, 0) + value


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
) -> BatchSummary:
    """Run ``tasks`` in this process, at most ``concurrency`` at a time, recording each in
    ``out_dir/results.jsonl`` exactly once (see the module docstring).

    Tasks whose id already has a record there are skipped (a resumed run). Every session shares
    one ModelActor (``model`` as ModelSettings: started here; a ModelActor: used as it is) and
    ``limiter``. ``progress`` receives a :class:`BatchStarted`, then :class:`TaskStarted` /
    :class:`TaskFinished` per task (``TaskFinished`` once the record is durable), then a
    :class:`BatchFinished` — also when the batch is cancelled, in which case the cancellation
    propagates after it. ``tools_factory``: see :func:`run_task`.

    Raises ``ValueError`` for duplicate task ids or ``concurrency < 1``,
    :class:`~actors.batch.ResultsFileLocked` if another batch runs on ``out_dir``,
    :class:`~actors.batch.ResultsFileError` if the results file cannot be written.
    """
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    tasks = list(tasks)
    ids: set[str] = set()
    for task in tasks:
        if task.id in ids:
            raise ValueError(f"duplicate task id {task.id!r}")
        ids.add(task.id)
    out = Path(out_dir)
    results = await trio.to_thread.run_sync(ResultsFile, out)
    try:
        done = results.completed_ids()
        pending = [t for t in tasks if t.id not in done]
        await trio.to_thread.run_sync(lambda: (out / ROLLOUTS_DIR).mkdir(parents=True, exist_ok=True))
        stats = BatchStats(total=len(tasks), skipped=len(tasks) - len(pending))
        commit = _GroupCommit(results)
        usage: dict[str, int] = {}
        started = time.perf_counter()
        cpu_started = time.process_time()
        interrupted = True
        await _emit(progress, BatchStarted(stats, os.fspath(out), concurrency))
        try:
            async with open_model_pool(model) as pool:
                capacity = trio.CapacityLimiter(concurrency)

                async def one(task: BatchTask, token: object) -> None:
                    try:
                        stats.running += 1
                        await _emit(progress, TaskStarted(task.id, stats))
                        result = await run_task(
                            task,
                            out_dir=out,
                            model=pool,
                            limiter=limiter,
                            max_retries=max_retries,
                            tools_factory=tools_factory,
                        )
                    finally:
                        stats.running -= 1
                        capacity.release_on_behalf_of(token)
                    with trio.CancelScope(shield=True):
                        await commit.append(result)
                        if result.status == "completed":
                            stats.completed += 1
                        elif result.status == "failed":
                            stats.failed += 1
                        else:
                            stats.aborted += 1
                        _add_usage(usage, result.usage)
                    await _emit(progress, TaskFinished(result, stats))

                token_stats = _STATS.set(stats)
                try:
                    async with trio.open_nursery() as nursery:
                        for task in pending:
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
            interrupted = stats.pending > 0
        finally:
            summary = stats.summary(
                wall_time=time.perf_counter() - started,
                cpu_time=time.process_time() - cpu_started,
                usage=usage,
                interrupted=interrupted,
                out_dir=os.fspath(out),
            )
            with trio.CancelScope(shield=True):
                await _emit(progress, BatchFinished(summary))
    finally:
        results.close()
    return summary
