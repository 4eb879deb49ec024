"""The Ray backend of batch runs: :func:`run_batch_ray` spreads a batch over a Ray cluster (the
optional ``ray`` extra; Ray is imported only inside this module, lazily, so everything else works
without it).

::

    from actors import ModelSettings
    from actors.batch import load_tasks
    from actors.batch._ray import run_batch_ray

    tasks, _bad = load_tasks("tasks.jsonl")
    summary = await run_batch_ray(                      # from Trio; Ray calls run in threads
        tasks,
        out_dir="runs/x",                               # results.jsonl + rollouts/, on the driver
        concurrency=2000,                               # sessions at once, over all workers
        model=ModelSettings(base_url=..., model=..., api_key=...),
        limiter_rpm=5000, limiter_tpm=20_000_000,       # one budget for the whole cluster
        workers=4,                                      # Ray actors, each one Trio loop
        address=None,                                   # None: a local cluster, started and stopped here
    )

**Layout.** The driver (the caller's process) hands tasks out in small batches (``batch_size``)
to ``workers`` Ray actors. Each worker runs one ``trio.run`` in a thread of its own with one
shared :class:`~actors.batch.ModelPool` (one ModelActor, one HTTP connection pool) and runs
:func:`~actors.batch.run_task` for up to ``concurrency // workers`` tasks at once; the driver
keeps that many tasks plus one batch in flight per worker, so a slow or dead worker holds back
little. A worker runs each task in a scratch directory of its own and returns, per task, the
:class:`~actors.batch.TaskResult` and the bytes of its rollout. The driver **alone** writes
``out_dir/rollouts/`` and ``out_dir/results.jsonl`` (through :class:`~actors.batch.ResultsFile`:
its lock, fsync per group of records), the rollout before the record.

**Exactly once.** The driver records a task at most once (by id; a late or repeated result is
dropped), and tasks that already have a record in ``results.jsonl`` are skipped, so runs can be
resumed after a crash of the driver exactly as with :func:`~actors.batch.run_batch`. A worker
that dies — its process killed, ``ray.kill``, its node lost (``RayActorError``,
``WorkerCrashedError``…) — takes with it the tasks it held; they are dispatched again to the other
workers and a replacement worker is started. Execution is therefore at least once (a task
whose worker died may have run, and spent tokens, before); recording is exactly once. A task's
``attempt`` counts the times it was handed to a worker in this run (plus the unfinished attempts
left on disk by a killed driver).

**Poison tasks.** A task that kills every worker it runs on must not take the batch down. Each
task held by a worker that died counts one crash (deaths from a node being *preempted* are not
counted). A task with ``max_task_crashes - 1`` crashes is no longer mixed with others: it runs
alone, one task at a time, on a quarantine worker (a Ray actor that asks for no CPU). A death
there can only be that task's doing; when its crashes reach ``max_task_crashes`` it is given up
with a ``failed`` record (``error: "WorkerCrashed: …"``). Innocent tasks that happened to share a
worker with it get at most to quarantine, where they complete. (``max_task_crashes=1`` gives a
task up at its first crash, without isolating it.)

**Cluster-wide rate limit.** ``limiter_rpm`` / ``limiter_tpm`` start one small async Ray actor,
:class:`RateLimiterActor`, holding the budget with the same sliding-window rules as
:class:`~actors.batch.LocalRateLimiter` (``limiter_window`` seconds, 60 by default; estimates
reserved then replaced by the tokens used). Each worker talks to it through
:class:`RayRateLimiter` (a :class:`~actors.batch.RateLimiter`), which asks for **batched
grants**: when several sessions of the worker are waiting, one round trip asks for a permit for
each of them (up to ``grant_batch``); the permits land in a worker-local pool that the sessions
take in arrival order. Token reports (:meth:`~actors.batch.RateLimiter.record`) travel with the next grant
request, or every 0.25 s. A permit unused for ``permit_ttl`` seconds (a tenth of the window, at
most 1 s; counted from its arrival) is dropped and reported as 0 tokens, so a worker never sits
on budget it does not use; and the actor keeps each grant counted ``2 × permit_ttl`` longer than
the window (the keeping plus as much for delivering the answer), so the cap holds for the
requests as *sent* (at most ``rpm`` in any window), not only as granted — at the price of a rate
of ``rpm / (window + 2 × permit_ttl)`` at saturation (3 % below ``rpm`` with the 60 s window). Waiting requests are served by the actor in arrival order (a FIFO lock), so no
worker starves. Pass ``limiter_name`` to share one named budget between several drivers: a
*detached* actor in the ``agent-kernel`` namespace, created by the first driver that asks (its
rates win) and left running after the batch (``ray.kill`` it when done).

**Scratch.** A worker writes its rollouts in a scratch directory only to read them back, so
by default that directory is in ``/dev/shm`` (memory: the session's fsyncs cost nothing — on a
disk they were a third of a task's wall time here); ``scratch_dir`` puts it elsewhere. A task
with tools but no ``cwd`` gets its workspace under ``<scratch>/workspaces`` (on disk: a link to a
temporary directory), which is *not* shipped back; a worker leaves it in place at the end when it
is not empty (logged), and removes everything else. A killed worker's scratch is swept by the
next worker started on that node.

**Costs and caveats.** The task's ``cwd`` is resolved on the worker's node (use a shared file
system across nodes). ``ModelSettings`` (with its API key) travels to the workers as an actor
argument, through Ray's object store. ``summary.cpu_time`` is the driver's CPU;
``TaskResult.cpu_time`` is the task's CPU on its worker; each worker logs its process CPU when
it closes (``actors.batch.ray`` logger, INFO, ``extra={"worker_info": {...}}``). Starting a
worker costs a Ray worker process (2-5 s on a small machine): short batches are faster with
:func:`~actors.batch.run_batch`. If the cluster cannot place a worker (not enough CPUs), the
batch waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import outcome
import trio

from actors.model import ModelSettings

from ._limiter import _WindowBudget
from ._local import (
    ROLLOUTS_DIR,
    WORKSPACES_DIR,
    ModelPool,
    Progress,
    ToolsFactory,
    _add_usage,
    _emit,
    _retire_stale_rollout,
    open_model_pool,
    run_task,
)
from ._results import (
    BatchFinished,
    BatchStarted,
    BatchStats,
    BatchSummary,
    ResultsFile,
    TaskFinished,
    TaskResult,
    TaskStarted,
)
from ._tasks import BatchTask, safe_id

__all__ = ["run_batch_ray", "RateLimiterActor", "RayRateLimiter", "WORKER_NAME_PREFIX", "LIMITER_NAMESPACE"]

logger = logging.getLogger("actors.batch.ray")

LIMITER_NAMESPACE = "agent-kernel"
"""The Ray namespace of named limiters (``limiter_name``): ``ray.get_actor(name,
namespace=LIMITER_NAMESPACE)``."""

WORKER_NAME_PREFIX = "agent-kernel-batch"
"""Worker actors are named ``agent-kernel-batch/<run id>/worker-<slot>.<generation>`` (the
quarantine worker ``…/quarantine.<generation>``) in the driver's Ray namespace:
``ray.util.list_named_actors()`` finds them, ``ray.get_actor(name).pid.remote()`` gives a
worker's process id."""


def _ray() -> Any:
    """Import Ray (lazily: it is an optional extra)."""
    try:
        import ray
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "run_batch_ray needs Ray: pip install 'trio-agent-kernel[ray]' (or pip install ray)"
        ) from None
    return ray


# ---------------------------------------------------------------------------------------------
# The cluster-wide rate limiter
# ---------------------------------------------------------------------------------------------


class RateLimiterActor:
    """The cluster's request budget: an async Ray actor (one per batch, or one named actor
    shared by several drivers). Workers talk to it through :class:`RayRateLimiter`.

    :meth:`grant` waits (in arrival order) until one more request fits and then grants as many
    as fit, up to the ``n`` asked for; each granted request reserves ``estimate`` tokens, which
    the client's later ``records`` (tokens really used, oldest reservation first) replace.
    ``permit_ttl`` (default: a tenth of the window, at most 1 s): how long a client may keep a
    granted permit, from its arrival, before using it. A grant stays counted ``2 × permit_ttl``
    longer than the window (the keeping, plus as much for the answer's delivery), so the cap
    holds for the requests as sent, not only as granted.
    """

    def __init__(
        self,
        rpm: float | None,
        tpm: float | None,
        window: float = 60.0,
        *,
        permit_ttl: float | None = None,
        keep_log: int = 100_000,
    ) -> None:
        if permit_ttl is None:
            permit_ttl = min(1.0, window / 10) if window > 0 else 0.0
        self.permit_ttl = permit_ttl
        self._budget = _WindowBudget(rpm, tpm, window, hold=2 * permit_ttl)
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._log: deque[float] = deque(maxlen=keep_log)
        self.granted = 0
        self.calls = 0
        self.waited = 0

    def _apply(self, client: str, records: Sequence[int]) -> None:
        if records:
            now = time.monotonic()
            for used in records:
                self._budget.record(now, client, used)
            self._changed.set()

    async def grant(self, client: str, n: int, estimate: int = 0, records: Sequence[int] = ()) -> tuple[int, float]:
        """Apply ``records``, then wait for room and grant 1 to ``n`` requests. Returns how many,
        and ``permit_ttl``."""
        self._apply(client, records)
        self.calls += 1
        estimate = max(0, int(estimate))
        budget = self._budget
        async with self._lock:
            waited = False
            while True:
                now = time.monotonic()
                budget.expire(now)
                at = budget.ready_at(now, estimate)
                if at is None:
                    break
                waited = True
                self._changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=max(0.0, at - now))
            count = 0
            while count < max(1, n):
                if count and budget.ready_at(now, estimate) is not None:
                    break
                budget.admit(now, client, estimate)
                self._log.append(now)
                count += 1
            self.granted += count
            if waited:
                self.waited += 1
            return count, self.permit_ttl

    async def config(self) -> dict[str, Any]:
        """``rpm``, ``tpm``, ``window``, ``permit_ttl``."""
        b = self._budget
        return {"rpm": b.rpm, "tpm": b.tpm, "window": b.window, "permit_ttl": self.permit_ttl}

    async def report(self, client: str, records: Sequence[int]) -> None:
        """Apply token records without asking for anything."""
        self._apply(client, records)

    async def stats(self) -> dict[str, Any]:
        """Counters: ``granted`` requests, ``calls`` (grant round trips), ``waited`` (calls
        that had to wait), ``tokens_in_window``."""
        self._budget.expire(time.monotonic())
        return {
            "granted": self.granted,
            "calls": self.calls,
            "waited": self.waited,
            "tokens_in_window": self._budget.token_sum,
        }

    async def grant_times(self) -> list[float]:
        """When each request was granted (``time.monotonic()`` of the actor's node; the last
        ``keep_log``)."""
        return list(self._log)


class RayRateLimiter:
    """A :class:`~actors.batch.RateLimiter` for one worker process, backed by a
    :class:`RateLimiterActor` (see the module docstring: batched grants, a local pool of permits
    taken in arrival order, records sent with the next grant request or by :meth:`run` every
    ``flush_interval`` seconds). Run :meth:`run` in the worker's nursery."""

    def __init__(self, actor: Any, *, client: str, grant_batch: int = 8, flush_interval: float = 0.25) -> None:
        if grant_batch < 1:
            raise ValueError(f"grant_batch must be >= 1, got {grant_batch!r}")
        self._actor = actor
        self.client = client
        self.grant_batch = grant_batch
        self.permit_ttl = math.inf  # the actor's, learnt from its first answer
        self.flush_interval = flush_interval
        self._permits: deque[float] = deque()
        self._records: list[int] = []
        self._lock = trio.Lock()
        self.admitted = 0
        self.round_trips = 0
        self.dropped = 0

    def __repr__(self) -> str:
        return f"RayRateLimiter(client={self.client!r}, grant_batch={self.grant_batch})"

    def _drop_stale(self, now: float) -> None:
        permits = self._permits
        while permits and now - permits[0] > self.permit_ttl:
            permits.popleft()
            self.dropped += 1
            self._records.append(0)

    async def acquire(self, estimated_tokens: int = 0) -> None:
        """Take a permit from the local pool, asking the actor for more when it is empty."""
        estimate = max(0, int(estimated_tokens))
        async with self._lock:
            while True:
                self._drop_stale(time.monotonic())
                if self._permits:
                    self._permits.popleft()
                    self.admitted += 1
                    return
                n = min(self.grant_batch, 1 + self._lock.statistics().tasks_waiting)
                records, self._records = self._records, []
                ref = self._actor.grant.remote(self.client, n, estimate, records)
                granted, self.permit_ttl = await trio.to_thread.run_sync(_ray().get, ref, abandon_on_cancel=True)
                self.round_trips += 1
                # a permit's age counts from its arrival (the first one is used at once)
                self._permits.extend([time.monotonic()] * granted)

    def record(self, tokens_used: int) -> None:
        """Queue the tokens used by an admitted request for the actor (which ignores them when
        it has no tpm limit)."""
        self._records.append(max(0, int(tokens_used)))

    async def run(self) -> None:
        """Flush queued records every ``flush_interval`` seconds (and drop stale permits)."""
        while True:
            await trio.sleep(self.flush_interval)
            if not self._lock.locked():
                self._drop_stale(time.monotonic())
            if self._records:
                records, self._records = self._records, []
                self._actor.report.remote(self.client, records)


# ---------------------------------------------------------------------------------------------
# The worker
# ---------------------------------------------------------------------------------------------


def _take_file(path: Path | None, workspace: Path) -> bytes | None:
    """Read and delete ``path`` (``None`` if it does not exist or is ``None``); remove the task's
    ``workspace`` if it is empty."""
    with contextlib.suppress(OSError):
        workspace.rmdir()
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    with contextlib.suppress(OSError):
        path.unlink()
    return data


def _make_scratch(scratch_dir: str | None) -> Path:
    """The worker's scratch directory. Rollouts are written there only to be read back and
    shipped to the driver (which fsyncs its own copy), so by default it lives in ``/dev/shm``
    (memory: the session's fsyncs cost nothing) when that exists; ``workspaces/`` in it is a
    link to a directory on disk (task workspaces can be big). ``scratch_dir``: a parent
    directory of your choosing instead."""
    prefix = f"{_SCRATCH_PREFIX}{os.getpid()}-"
    shm = Path("/dev/shm")
    if scratch_dir is None and shm.is_dir() and os.access(shm, os.W_OK):
        _sweep_scratch(shm)
        scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=shm))
        disk = Path(tempfile.mkdtemp(prefix=prefix + "workspaces-"))
        os.symlink(disk, scratch / WORKSPACES_DIR)
        return scratch
    if scratch_dir is not None:
        _sweep_scratch(Path(scratch_dir))
    return Path(tempfile.mkdtemp(prefix=prefix, dir=scratch_dir))


_SCRATCH_PREFIX = "agent-kernel-ray-"


def _sweep_scratch(parent: Path) -> None:
    """Remove the scratch directories that killed workers of this node left in ``parent`` (their
    process is gone), keeping any task workspaces."""
    for path in parent.glob(f"{_SCRATCH_PREFIX}*-*"):
        pid = path.name[len(_SCRATCH_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or os.path.exists(f"/proc/{pid}") or not os.path.isdir("/proc/self"):
            continue
        with contextlib.suppress(OSError):
            _remove_scratch(path)


def _remove_scratch(scratch: Path) -> str | None:
    """Remove the scratch directory, unless task workspaces are in it: then remove only the
    rollouts and return where the workspaces are."""
    workspaces = scratch / WORKSPACES_DIR
    with contextlib.suppress(OSError):
        for child in workspaces.iterdir():
            with contextlib.suppress(OSError):
                child.rmdir()  # only empty ones go
    if any(workspaces.glob("*")):
        shutil.rmtree(scratch / ROLLOUTS_DIR, ignore_errors=True)
        return os.fspath(workspaces.resolve())
    if workspaces.is_symlink():
        shutil.rmtree(workspaces.resolve(), ignore_errors=True)
    shutil.rmtree(scratch, ignore_errors=True)
    return None


_Answer = list[tuple[dict[str, Any], bytes | None]]


class _WorkerLoop:
    """The Trio side of a :class:`BatchWorker` (the actor's own methods run on Ray's asyncio
    loop: everything Trio lives here, in the Trio thread)."""

    def __init__(
        self,
        settings: ModelSettings,
        *,
        concurrency: int,
        scratch: Path,
        max_retries: int | None,
        tools_factory: ToolsFactory | None,
        limiter: RayRateLimiter | None,
    ) -> None:
        self.settings = settings
        self.concurrency = concurrency
        self.scratch = scratch
        self.max_retries = max_retries
        self.tools_factory = tools_factory
        self.limiter = limiter
        self.pool: ModelPool | None = None
        self.capacity: trio.CapacityLimiter | None = None
        self.token: trio.lowlevel.TrioToken | None = None
        self.stop: trio.Event | None = None
        self.nursery: trio.Nursery | None = None
        self.tasks_run = 0

    async def main(self, started: threading.Event) -> None:
        async with open_model_pool(self.settings) as pool, trio.open_nursery() as nursery:
            self.pool = pool
            self.capacity = trio.CapacityLimiter(self.concurrency)
            self.stop = trio.Event()
            self.nursery = nursery
            if self.limiter is not None:
                nursery.start_soon(self.limiter.run)
            self.token = trio.lowlevel.current_trio_token()
            started.set()
            await self.stop.wait()
            nursery.cancel_scope.cancel()

    def submit(self, tasks: list[BatchTask], done: Callable[[outcome.Outcome[_Answer]], object]) -> None:
        """Start a batch (call in the Trio thread, e.g. through ``run_sync_soon``); ``done``
        gets its outcome, in the Trio thread."""
        assert self.nursery is not None
        self.nursery.start_soon(self._batch, tasks, done)

    async def _batch(self, tasks: list[BatchTask], done: Callable[[outcome.Outcome[_Answer]], object]) -> None:
        done(await outcome.acapture(self.run_batch, tasks))

    async def run_batch(self, tasks: list[BatchTask]) -> _Answer:
        out: list[tuple[dict[str, Any], bytes | None] | None] = [None] * len(tasks)
        async with trio.open_nursery() as nursery:
            for i, task in enumerate(tasks):
                nursery.start_soon(self._one, i, task, out, name=f"batch task {task.id}")
        return [r for r in out if r is not None]

    async def _one(self, i: int, task: BatchTask, out: list[tuple[dict[str, Any], bytes | None] | None]) -> None:
        assert self.capacity is not None and self.pool is not None
        async with self.capacity:
            result = await run_task(
                task,
                out_dir=self.scratch,
                model=self.pool,
                limiter=self.limiter,
                max_retries=self.max_retries,
                tools_factory=self.tools_factory,
            )
        self.tasks_run += 1
        rollout = self.scratch / result.rollout if result.rollout is not None else None
        data = await trio.to_thread.run_sync(_take_file, rollout, self.scratch / WORKSPACES_DIR / safe_id(task.id))
        out[i] = (result.to_json(), data)


class BatchWorker:
    """A Ray actor body (wrapped with ``ray.remote`` by the driver): one Trio loop in a thread
    of its own, one shared model pool, up to ``concurrency`` tasks at once.

    An asyncio actor (Ray runs its methods on an event loop of its own; many calls at once cost
    no thread each): :meth:`run_batch` hands its tasks to the Trio loop and awaits their
    results, ``[(result.to_json(), rollout bytes or None), ...]`` in the order given."""

    def __init__(
        self,
        model: ModelSettings,
        *,
        concurrency: int,
        max_retries: int | None = None,
        tools_factory: ToolsFactory | None = None,
        limiter: Any = None,
        grant_batch: int = 8,
        name: str = "worker",
        scratch_dir: str | None = None,
    ) -> None:
        self.name = name
        self._scratch = _make_scratch(scratch_dir)
        self._limiter: RayRateLimiter | None = None
        if limiter is not None:
            self._limiter = RayRateLimiter(limiter, client=f"{name}/{os.getpid()}", grant_batch=grant_batch)
        self._loop = _WorkerLoop(
            model,
            concurrency=concurrency,
            scratch=self._scratch,
            max_retries=max_retries,
            tools_factory=tools_factory,
            limiter=self._limiter,
        )
        self._error: BaseException | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._trio_thread, args=(started,), name=f"trio {name}", daemon=True)
        self._thread.start()
        started.wait()
        if self._error is not None:
            raise self._error

    def _trio_thread(self, started: threading.Event) -> None:
        try:
            trio.run(self._loop.main, started)
        except BaseException as exc:  # reported by __init__ when it happens before the start
            self._error = exc
        finally:
            started.set()

    async def pid(self) -> int:
        """This worker's process id."""
        return os.getpid()

    async def info(self) -> dict[str, Any]:
        """Process id, name, scratch directory and counters (``cpu_s``: the process's CPU)."""
        return self._info()

    def _info(self) -> dict[str, Any]:
        limiter = self._limiter
        return {
            "pid": os.getpid(),
            "name": self.name,
            "scratch": os.fspath(self._scratch),
            "tasks_run": self._loop.tasks_run,
            "cpu_s": time.process_time(),
            "limiter_round_trips": limiter.round_trips if limiter else 0,
            "limiter_admitted": limiter.admitted if limiter else 0,
            "limiter_dropped": limiter.dropped if limiter else 0,
        }

    async def run_batch(self, tasks: Sequence[BatchTask]) -> _Answer:
        """Run ``tasks`` concurrently (within the worker's concurrency) and return their results."""
        token = self._loop.token
        assert token is not None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_Answer] = loop.create_future()

        def settle(result: outcome.Outcome[_Answer]) -> None:
            if not future.done():
                if isinstance(result, outcome.Error):
                    future.set_exception(result.error)
                else:
                    future.set_result(result.unwrap())

        def done(result: outcome.Outcome[_Answer]) -> None:  # in the Trio thread
            loop.call_soon_threadsafe(settle, result)

        token.run_sync_soon(self._loop.submit, list(tasks), done)
        return await future

    async def close(self) -> dict[str, Any]:
        """Stop the Trio loop and remove the scratch directory, unless it holds task workspaces.
        Returns :meth:`info`, with ``kept``: where the workspaces were left (or ``None``)."""
        token, stop = self._loop.token, self._loop.stop
        if token is not None and stop is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(stop.set)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 5)
        info = self._info()
        info["kept"] = _remove_scratch(self._scratch)
        return info


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------


@attrs.define(eq=False)
class _Pending:
    task: BatchTask
    runs: int = 0
    crashes: int = 0
    last_error: str | None = None
    isolated: bool = False  # the last crash was in quarantine


@attrs.define(eq=False)
class _Worker:
    slot: int  # -1: the quarantine worker
    name: str
    handle: Any
    max_in_flight: int
    batch_size: int
    in_flight: int = 0
    refs: set[Any] = attrs.field(factory=set)
    dead: bool = False


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _write_rollouts(out: Path, items: list[tuple[TaskResult, bytes | None, int]]) -> list[TaskResult]:
    """Write each rollout (fsynced) and return the results with their final ``attempt``."""
    results = []
    wrote = False
    for result, data, runs in items:
        disk = 1
        if data is not None and result.rollout is not None:
            path = out / result.rollout
            disk = _retire_stale_rollout(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            wrote = True
        elif result.rollout is not None:
            result = attrs.evolve(result, rollout=None)
        results.append(attrs.evolve(result, attempt=max(1, runs) + disk - 1))
    if wrote:
        fd = os.open(out / ROLLOUTS_DIR, os.O_RDONLY)
        try:
            with contextlib.suppress(OSError):
                os.fsync(fd)
        finally:
            os.close(fd)
    return results


def _wait_and_get(ray: Any, refs: list[Any], timeout: float) -> list[tuple[Any, Any, BaseException | None]]:
    ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
    if not ready:
        return []
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
    out: list[tuple[Any, Any, BaseException | None]] = []
    for ref in ready:
        try:
            out.append((ref, ray.get(ref), None))
        except Exception as exc:
            out.append((ref, None, exc))
    return out


class _Driver:
    def __init__(
        self,
        ray: Any,
        *,
        out: Path,
        results: ResultsFile,
        stats: BatchStats,
        usage: dict[str, int],
        progress: Progress,
        model: ModelSettings,
        concurrency: int,
        workers: int,
        batch_size: int,
        max_retries: int | None,
        tools_factory: ToolsFactory | None,
        limiter: Any,
        grant_batch: int,
        max_task_crashes: int,
        worker_cpus: float,
        scratch_dir: str | None,
    ) -> None:
        self.ray = ray
        self.scratch_dir = scratch_dir
        self.out = out
        self.results = results
        self.stats = stats
        self.usage = usage
        self.progress = progress
        self.model = model
        self.workers_wanted = workers
        self.per_worker = max(1, concurrency // workers)
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.tools_factory = tools_factory
        self.limiter = limiter
        self.grant_batch = grant_batch
        self.max_task_crashes = max_task_crashes
        self.worker_cpus = worker_cpus
        self.run_id = uuid.uuid4().hex[:8]
        self.queue: deque[_Pending] = deque()
        self.quarantine: deque[_Pending] = deque()
        self._give_up: list[_Pending] = []
        self.workers: dict[int, _Worker] = {}
        self.refs: dict[Any, tuple[_Worker, list[_Pending]]] = {}
        self.recorded: set[str] = set()
        self.generation = 0
        self.worker_deaths = 0
        self.kept_scratch: list[str] = []
        # an asyncio actor: a call in flight costs a coroutine, not a thread
        self._remote_worker = ray.remote(max_concurrency=self.per_worker + batch_size + 8, max_restarts=0)(BatchWorker)

    # --- workers ---------------------------------------------------------------------------

    def _start_worker(self, slot: int) -> _Worker:
        self.generation += 1
        if slot < 0:
            name = f"{WORKER_NAME_PREFIX}/{self.run_id}/quarantine.{self.generation}"
            concurrency, batch, cpus, in_flight = 1, 1, 0.0, 1
        else:
            name = f"{WORKER_NAME_PREFIX}/{self.run_id}/worker-{slot}.{self.generation}"
            concurrency, batch, cpus = self.per_worker, self.batch_size, self.worker_cpus
            in_flight = self.per_worker + self.batch_size
        handle = self._remote_worker.options(name=name, num_cpus=cpus, scheduling_strategy="SPREAD").remote(
            self.model,
            concurrency=concurrency,
            max_retries=self.max_retries,
            tools_factory=self.tools_factory,
            limiter=self.limiter,
            grant_batch=self.grant_batch,
            name=name,
            scratch_dir=self.scratch_dir,
        )
        worker = _Worker(slot, name, handle, in_flight, batch)
        self.workers[slot] = worker
        logger.debug("started %s", name)
        return worker

    def _worker_died(self, worker: _Worker, exc: BaseException) -> None:
        """Requeue everything ``worker`` held (:meth:`_dispatch` starts a replacement)."""
        if worker.dead:
            return
        worker.dead = True
        self.worker_deaths += 1
        if self.workers.get(worker.slot) is worker:
            del self.workers[worker.slot]
        with contextlib.suppress(Exception):
            self.ray.kill(worker.handle, no_restart=True)
        ray_exc = self.ray.exceptions
        if isinstance(exc, ray_exc.RayActorError) and exc.actor_init_failed:
            raise RuntimeError(f"a batch worker could not start: {exc}") from exc
        preempted = bool(getattr(exc, "preempted", False))
        message = _first_line(str(exc)) or type(exc).__name__
        held = 0
        for ref in list(worker.refs):
            _worker, batch = self.refs.pop(ref)
            for pending in batch:
                if pending.task.id in self.recorded:
                    continue
                held += 1
                self.stats.running -= 1
                if not preempted:
                    pending.crashes += 1
                pending.last_error = message
                pending.isolated = worker.slot < 0
                self._requeue(pending)
        worker.refs.clear()
        worker.in_flight = 0
        logger.warning("batch worker %s died holding %d task(s): %s", worker.name, held, message)

    def _requeue(self, pending: _Pending) -> None:
        if pending.crashes >= self.max_task_crashes:
            self._give_up.append(pending)
        elif pending.crashes >= self.max_task_crashes - 1:
            self.quarantine.append(pending)
        else:
            self.queue.appendleft(pending)

    # --- dispatch --------------------------------------------------------------------------

    def _dispatch(self) -> list[_Pending]:
        """Hand out batches round-robin while workers have room; returns the tasks started."""
        started: list[_Pending] = []
        if self.quarantine:
            worker = self.workers.get(-1) or self._start_worker(-1)
            if worker.in_flight == 0:
                started += self._send(worker, [self.quarantine.popleft()])
        if self.queue:  # replace dead workers (only while there is work for them)
            for slot in range(self.workers_wanted):
                if slot not in self.workers:
                    self._start_worker(slot)
        live = [w for w in self.workers.values() if w.slot >= 0]
        while self.queue:
            progressed = False
            for worker in live:
                room = worker.max_in_flight - worker.in_flight
                if room <= 0 or not self.queue:
                    continue
                # near the end, smaller batches spread the tail over the workers
                size = min(worker.batch_size, room, max(1, math.ceil(len(self.queue) / len(live))))
                batch = [self.queue.popleft() for _ in range(min(size, len(self.queue)))]
                started += self._send(worker, batch)
                progressed = True
            if not progressed:
                break
        return started

    def _send(self, worker: _Worker, batch: list[_Pending]) -> list[_Pending]:
        ref = worker.handle.run_batch.remote([p.task for p in batch])
        self.refs[ref] = (worker, batch)
        worker.refs.add(ref)
        worker.in_flight += len(batch)
        for pending in batch:
            pending.runs += 1
        self.stats.running += len(batch)
        return batch

    # --- the loop --------------------------------------------------------------------------

    async def run(self, pending: list[_Pending]) -> None:
        self.queue.extend(pending)
        while True:
            for started in self._dispatch():
                if started.runs == 1:
                    await _emit(self.progress, TaskStarted(started.task.id, self.stats))
            if self._give_up:
                await self._record_given_up()
                continue
            if not self.refs:
                if self.queue or self.quarantine:  # (cannot happen: _dispatch sent something)
                    raise RuntimeError("run_batch_ray: tasks are waiting but none could be dispatched")
                break
            ready = await trio.to_thread.run_sync(_wait_and_get, self.ray, list(self.refs), 0.5, abandon_on_cancel=True)
            finished: list[tuple[TaskResult, bytes | None, int]] = []
            fatal: BaseException | None = None
            for ref, value, exc in ready:
                entry = self.refs.get(ref)
                if entry is None:
                    continue  # its worker was already declared dead
                worker, batch = entry
                if exc is None:
                    del self.refs[ref]
                    worker.refs.discard(ref)
                    worker.in_flight -= len(batch)
                    runs = {p.task.id: p.runs for p in batch}
                    for result_json, data in value:
                        result = TaskResult.from_json(result_json)
                        if result.id in self.recorded or result.id not in runs:
                            continue
                        self.recorded.add(result.id)
                        self.stats.running -= 1
                        finished.append((result, data, runs[result.id]))
                    for p in batch:  # (defensive: a task the worker did not answer runs again)
                        if p.task.id not in self.recorded:
                            self.stats.running -= 1
                            self.queue.append(p)
                elif isinstance(exc, self.ray.exceptions.RayTaskError):
                    # a programming error in the worker (run_task re-raises those): stop, as run_batch does
                    fatal = fatal or exc.as_instanceof_cause()
                elif isinstance(exc, self.ray.exceptions.RayError):
                    try:
                        self._worker_died(worker, exc)
                    except RuntimeError as error:
                        fatal = fatal or error
                else:
                    fatal = fatal or exc
            if finished:  # what came back is recorded, even when the batch stops now
                await self._record(finished)
            if fatal is not None:
                raise fatal

    async def _record(self, finished: list[tuple[TaskResult, bytes | None, int]]) -> None:
        with trio.CancelScope(shield=True):
            results = await trio.to_thread.run_sync(_write_rollouts, self.out, finished)
            await trio.to_thread.run_sync(self.results.append_many, results)
            for result in results:
                self._count(result)
        for result in results:
            await _emit(self.progress, TaskFinished(result, self.stats))

    def _count(self, result: TaskResult) -> None:
        stats = self.stats
        if result.status == "completed":
            stats.completed += 1
        elif result.status == "failed":
            stats.failed += 1
        else:
            stats.aborted += 1
        stats.events += result.events
        stats.retries += result.retries
        stats.tool_calls += result.tool_calls
        stats.tokens += int(result.usage.get("total_tokens", 0))
        _add_usage(self.usage, result.usage)

    async def _record_given_up(self) -> None:
        given_up, self._give_up = self._give_up, []
        results = []
        for pending in given_up:
            if pending.task.id in self.recorded:
                continue
            self.recorded.add(pending.task.id)
            results.append(
                TaskResult(
                    id=pending.task.id,
                    status="failed",
                    error=(
                        f"WorkerCrashed: the worker process died {pending.crashes} "
                        f"time{'s' if pending.crashes > 1 else ''} while running this task"
                        f"{', the last time alone' if pending.isolated else ''} (last: {pending.last_error})"
                    ),
                    attempt=pending.runs,
                )
            )
        if not results:
            return
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self.results.append_many, results)
            for result in results:
                self._count(result)
        for result in results:
            await _emit(self.progress, TaskFinished(result, self.stats))

    def close(self) -> None:
        """Stop every worker (politely, then ``ray.kill``). Blocking: run in a thread."""
        ray = self.ray
        handles = [w.handle for w in self.workers.values() if not w.dead]
        refs = []
        for handle in handles:
            with contextlib.suppress(Exception):
                refs.append(handle.close.remote())
        if refs:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=5)
            for ref in ready:
                with contextlib.suppress(Exception):
                    info = ray.get(ref)
                    if info.get("kept"):
                        self.kept_scratch.append(info["kept"])
                    logger.info(
                        "batch worker %s: %d task(s) run, %.2f s CPU",
                        info.get("name"),
                        info.get("tasks_run", 0),
                        info.get("cpu_s", 0.0),
                        extra={"worker_info": info},
                    )
        for handle in handles:
            with contextlib.suppress(Exception):
                ray.kill(handle, no_restart=True)
        self.workers.clear()


def _connect(ray: Any, address: str | None, workers: int, init_kwargs: dict[str, Any] | None) -> bool:
    """Connect to (or start) a cluster; ``True`` when this call did it (so we disconnect)."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    if address is None:
        kwargs["num_cpus"] = workers
    else:
        kwargs["address"] = address
    kwargs.update(init_kwargs or {})
    ray.init(**kwargs)
    return True


async def run_batch_ray(
    tasks: Iterable[BatchTask],
    *,
    out_dir: str | os.PathLike[str],
    concurrency: int,
    model: ModelSettings,
    limiter_rpm: float | None = None,
    limiter_tpm: float | None = None,
    max_retries: int | None = None,
    progress: Progress = None,
    address: str | None = None,
    workers: int = 2,
    batch_size: int = 8,
    limiter_window: float = 60.0,
    limiter_name: str | None = None,
    grant_batch: int = 8,
    tools_factory: ToolsFactory | None = None,
    max_task_crashes: int = 3,
    worker_cpus: float = 1.0,
    init_kwargs: dict[str, Any] | None = None,
    scratch_dir: str | None = None,
) -> BatchSummary:
    """Run ``tasks`` over Ray workers, recording each in ``out_dir/results.jsonl`` exactly once
    (see the module docstring). Call it from Trio; Ray's blocking calls run in threads.

    ``concurrency``: sessions at once over the whole cluster (``concurrency // workers`` per
    worker, at least 1). ``workers``: worker actors (each asks for ``worker_cpus`` CPUs;
    spread over the nodes). ``batch_size``: tasks per hand-out. ``address``: the cluster to
    connect to (``"auto"``, ``"ray://host:10001"``…); ``None`` starts a local cluster of
    ``workers`` CPUs, shut down at the end — unless Ray is already initialised in this process,
    in which case that connection is used as it is and left open. ``init_kwargs``: more
    ``ray.init`` arguments (``runtime_env``, ``namespace``…). ``limiter_rpm`` /
    ``limiter_tpm`` / ``limiter_window``: the cluster-wide budget (:class:`RateLimiterActor`);
    ``limiter_name`` shares a named one; ``grant_batch``: permits asked for per round trip at
    most. ``max_task_crashes``: worker deaths a task may cause before it is given up.
    ``tools_factory(task, workspace)``: as for :func:`~actors.batch.run_task`, but it must be
    picklable (it runs on the workers). ``progress``: as for :func:`~actors.batch.run_batch`;
    ``TaskStarted`` means handed to a worker.

    Raises ``ValueError`` for bad arguments or duplicate task ids,
    :class:`~actors.batch.ResultsFileLocked` if another batch runs on ``out_dir``,
    ``RuntimeError`` if a worker cannot start, and a worker's programming error as it is.
    """
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not isinstance(max_task_crashes, int) or max_task_crashes < 1:
        raise ValueError(f"max_task_crashes must be an integer >= 1, got {max_task_crashes!r}")
    if not isinstance(model, ModelSettings):
        raise TypeError(
            f"run_batch_ray needs ModelSettings (workers start their own ModelActor), got {type(model).__name__}"
        )
    _WindowBudget(limiter_rpm, limiter_tpm, limiter_window)  # validates
    tasks = list(tasks)
    ids: set[str] = set()
    for task in tasks:
        if task.id in ids:
            raise ValueError(f"duplicate task id {task.id!r}")
        ids.add(task.id)
    ray = _ray()
    out = Path(out_dir)
    results = await trio.to_thread.run_sync(ResultsFile, out)
    try:
        done = results.completed_ids()
        pending = [_Pending(t) for t in tasks if t.id not in done]
        await trio.to_thread.run_sync(lambda: (out / ROLLOUTS_DIR).mkdir(parents=True, exist_ok=True))
        stats = BatchStats(total=len(tasks), skipped=len(tasks) - len(pending))
        usage: dict[str, int] = {}
        started = time.perf_counter()
        cpu_started = time.process_time()
        interrupted = True
        await _emit(progress, BatchStarted(stats, os.fspath(out), concurrency))
        try:
            if pending:
                owned = await trio.to_thread.run_sync(_connect, ray, address, workers, init_kwargs)
                limiter = None
                owns_limiter = False
                driver: _Driver | None = None
                try:
                    if limiter_rpm is not None or limiter_tpm is not None:
                        actor_class = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(RateLimiterActor)
                        if limiter_name is not None:
                            limiter = actor_class.options(
                                name=limiter_name, namespace=LIMITER_NAMESPACE, lifetime="detached", get_if_exists=True
                            ).remote(limiter_rpm, limiter_tpm, limiter_window)
                        else:
                            limiter = actor_class.remote(limiter_rpm, limiter_tpm, limiter_window)
                            owns_limiter = True
                    driver = _Driver(
                        ray,
                        out=out,
                        results=results,
                        stats=stats,
                        usage=usage,
                        progress=progress,
                        model=model,
                        concurrency=concurrency,
                        workers=workers,
                        batch_size=batch_size,
                        max_retries=max_retries,
                        tools_factory=tools_factory,
                        limiter=limiter,
                        grant_batch=grant_batch,
                        max_task_crashes=max_task_crashes,
                        worker_cpus=worker_cpus,
                        scratch_dir=scratch_dir,
                    )
                    await driver.run(pending)
                finally:
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(_shutdown, ray, driver, limiter if owns_limiter else None, owned)
                    if driver is not None:
                        for path in driver.kept_scratch:
                            logger.info("a batch worker left task workspaces in %s", path)
            interrupted = stats.pending > 0
        finally:
            stats.running = 0
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


def _shutdown(ray: Any, driver: _Driver | None, limiter: Any, owned: bool) -> None:
    try:
        if driver is not None:
            driver.close()
        if limiter is not None:
            with contextlib.suppress(Exception):
                ray.kill(limiter, no_restart=True)
    finally:
        if owned:
            ray.shutdown()
