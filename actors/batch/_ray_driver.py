"""The driver of the Ray backend (:class:`_Driver`): it starts the worker actors, hands tasks out
in batches, replaces dead workers and requeues what they held, quarantines and gives up poison
tasks, and alone writes the rollouts and ``results.jsonl`` (see the :mod:`actors.batch._ray`
docstring for the rules).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import uuid
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from actors.model import ModelSettings

from ._common import ROLLOUTS_DIR, Progress, ToolsFactory, _count_finished, _emit, _retire_stale_rollout, _Run
from ._ray_worker import BatchWorker
from ._results import TaskFinished, TaskResult, TaskStarted, _fsync_dir
from ._tasks import BatchTask

if TYPE_CHECKING:
    from actors.tools.mcp import McpServer

__all__ = ["WORKER_NAME_PREFIX"]

logger = logging.getLogger("actors.batch.ray")

WORKER_NAME_PREFIX = "agent-kernel-batch"
"""Worker actors are named ``agent-kernel-batch/<run id>/worker-<slot>.<generation>`` (the
quarantine worker ``…/quarantine.<generation>``) in the driver's Ray namespace:
``ray.util.list_named_actors()`` finds them, ``ray.get_actor(name).pid.remote()`` gives a
worker's process id."""


def _kill(ray: Any, handle: Any) -> None:
    """``ray.kill`` an actor, for good; an actor already gone is no error."""
    with contextlib.suppress(Exception):
        ray.kill(handle, no_restart=True)


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
        _fsync_dir(out / ROLLOUTS_DIR)
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


class _Recorder:
    """The driver's writing side: each task's rollout (fsynced) and then its record in
    ``results.jsonl`` — at most one per task id (:attr:`recorded`) — counted in the stats and
    reported to ``progress``."""

    def __init__(self, run: _Run, progress: Progress) -> None:
        self.out = run.out
        self.results = run.results
        self.stats = run.stats
        self.usage = run.usage
        self.progress = progress
        self.recorded: set[str] = set()

    async def record(self, finished: list[tuple[TaskResult, bytes | None, int]]) -> None:
        """Record results a worker sent back: ``(result, rollout bytes, runs)``."""
        with trio.CancelScope(shield=True):
            results = await trio.to_thread.run_sync(_write_rollouts, self.out, finished)
        await self._commit(results)

    async def give_up(self, given_up: list[_Pending]) -> None:
        """Record poison tasks as failed (``WorkerCrashed``), unless they have a record."""
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
        if results:
            await self._commit(results)

    async def _commit(self, results: list[TaskResult]) -> None:
        """Append ``results`` (shielded: a finished task's record is always written), count
        them, then report them."""
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self.results.append_many, results)
            for result in results:
                self._count(result)
        for result in results:
            await _emit(self.progress, TaskFinished(result, self.stats))

    def _count(self, result: TaskResult) -> None:
        stats = self.stats
        _count_finished(stats, self.usage, result)
        stats.events += result.events
        stats.retries += result.retries
        stats.tool_calls += result.tool_calls
        stats.tokens += int(result.usage.get("total_tokens", 0))


class _Driver:
    """One batch over the cluster: :meth:`run` hands out and records the pending tasks;
    :meth:`close` (blocking: in a thread) stops the workers."""

    def __init__(
        self,
        ray: Any,
        run: _Run,
        *,
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
        mcp_servers: Sequence[McpServer] = (),
    ) -> None:
        self.ray = ray
        self.scratch_dir = scratch_dir
        self.mcp_servers = tuple(mcp_servers)
        self.stats = run.stats
        self.progress = progress
        self.recorder = _Recorder(run, progress)
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
        self.recorded = self.recorder.recorded
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
            mcp_servers=self.mcp_servers,
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
        _kill(self.ray, worker.handle)
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
                given_up, self._give_up = self._give_up, []
                await self.recorder.give_up(given_up)
                continue
            if not self.refs:
                if self.queue or self.quarantine:  # (cannot happen: _dispatch sent something)
                    raise RuntimeError("run_batch_ray: tasks are waiting but none could be dispatched")
                break
            ready = await trio.to_thread.run_sync(_wait_and_get, self.ray, list(self.refs), 0.5, abandon_on_cancel=True)
            finished, fatal = self._take(ready)
            if finished:  # what came back is recorded, even when the batch stops now
                await self.recorder.record(finished)
            if fatal is not None:
                raise fatal

    def _take(
        self, ready: list[tuple[Any, Any, BaseException | None]]
    ) -> tuple[list[tuple[TaskResult, bytes | None, int]], BaseException | None]:
        """Sort out the calls that ended: the results to record (new ones only: the first
        record of a task wins), and the error that stops the batch, if any. A call lost with
        its worker requeues what it held."""
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
        return finished, fatal

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
            _kill(ray, handle)
        self.workers.clear()
