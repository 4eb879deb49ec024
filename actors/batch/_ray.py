"""The Ray backend of batch runs: :func:`run_batch_ray` spreads a batch over a Ray cluster (the
optional ``ray`` extra; Ray is imported only by the ``_ray*`` modules, lazily, so everything else
works without it). This module holds :func:`run_batch_ray` and the rules below; the parts are in
``_ray_driver`` (the driver), ``_ray_worker`` (the worker actor) and ``_ray_limiter`` (the
cluster-wide limiter).

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

import logging
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from actors.model import ModelSettings

from ._common import Progress, ToolsFactory, _check_count, _open_run, _unique_tasks
from ._limiter import _WindowBudget
from ._ray_driver import WORKER_NAME_PREFIX, _Driver, _kill, _Pending
from ._ray_limiter import LIMITER_NAMESPACE, RateLimiterActor, RayRateLimiter, _ray
from ._results import BatchSummary
from ._tasks import BatchTask

if TYPE_CHECKING:
    from actors.tools.mcp import McpServer

__all__ = ["run_batch_ray", "RateLimiterActor", "RayRateLimiter", "WORKER_NAME_PREFIX", "LIMITER_NAMESPACE"]

logger = logging.getLogger("actors.batch.ray")


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


def _start_limiter(ray: Any, rpm: float | None, tpm: float | None, window: float, name: str | None) -> tuple[Any, bool]:
    """The cluster-wide limiter actor (``None`` without rates), and whether this run owns it
    (a named one is shared: found or created, detached, and left running)."""
    if rpm is None and tpm is None:
        return None, False
    actor_class = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(RateLimiterActor)
    if name is not None:
        options = actor_class.options(name=name, namespace=LIMITER_NAMESPACE, lifetime="detached", get_if_exists=True)
        return options.remote(rpm, tpm, window), False
    return actor_class.remote(rpm, tpm, window), True


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
    mcp_servers: Sequence[McpServer] = (),
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
    picklable (it runs on the workers). ``mcp_servers``: as for :func:`~actors.batch.run_batch`,
    each ``shared`` server running once per worker. ``progress``: as for :func:`~actors.batch.run_batch`;
    ``TaskStarted`` means handed to a worker.

    Raises ``ValueError`` for bad arguments or duplicate task ids,
    :class:`~actors.batch.ResultsFileLocked` if another batch runs on ``out_dir``,
    ``RuntimeError`` if a worker cannot start, and a worker's programming error as it is.
    """
    for name, value in (
        ("concurrency", concurrency),
        ("workers", workers),
        ("batch_size", batch_size),
        ("max_task_crashes", max_task_crashes),
    ):
        _check_count(name, value)
    if not isinstance(model, ModelSettings):
        raise TypeError(
            f"run_batch_ray needs ModelSettings (workers start their own ModelActor), got {type(model).__name__}"
        )
    _WindowBudget(limiter_rpm, limiter_tpm, limiter_window)  # validates
    tasks = _unique_tasks(tasks)
    ray = _ray()
    async with _open_run(tasks, out_dir, concurrency=concurrency, progress=progress) as run:
        if run.pending:
            owned = await trio.to_thread.run_sync(_connect, ray, address, workers, init_kwargs)
            limiter = None
            owns_limiter = False
            driver: _Driver | None = None
            try:
                limiter, owns_limiter = _start_limiter(ray, limiter_rpm, limiter_tpm, limiter_window, limiter_name)
                driver = _Driver(
                    ray,
                    run,
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
                    mcp_servers=mcp_servers,
                )
                await driver.run([_Pending(t) for t in run.pending])
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(_shutdown, ray, driver, limiter if owns_limiter else None, owned)
                if driver is not None:
                    for path in driver.kept_scratch:
                        logger.info("a batch worker left task workspaces in %s", path)
    assert run.summary is not None
    return run.summary


def _shutdown(ray: Any, driver: _Driver | None, limiter: Any, owned: bool) -> None:
    try:
        if driver is not None:
            driver.close()
        if limiter is not None:
            _kill(ray, limiter)
    finally:
        if owned:
            ray.shutdown()
