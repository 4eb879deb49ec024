"""The worker of the Ray backend: :class:`BatchWorker`, the body of a Ray actor (an asyncio actor
whose tasks run on one Trio loop in a thread of its own, :class:`_WorkerLoop`), and its scratch
directory (in ``/dev/shm`` by default; see the :mod:`actors.batch._ray` docstring).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import outcome
import trio

from actors.model import ModelSettings

from ._common import ROLLOUTS_DIR, WORKSPACES_DIR, ToolsFactory
from ._local import run_task
from ._mcp import BatchMcp, open_batch_mcp
from ._pool import ModelPool, open_model_pool
from ._ray_limiter import RayRateLimiter
from ._tasks import BatchTask, safe_id

if TYPE_CHECKING:
    from actors.tools.mcp import McpServer

__all__ = ["BatchWorker"]


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
        mcp_servers: Sequence[McpServer] = (),
    ) -> None:
        self.settings = settings
        self.mcp_servers = tuple(mcp_servers)
        self.mcp: BatchMcp | None = None
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
        async with (
            open_model_pool(self.settings) as pool,
            open_batch_mcp(self.mcp_servers) as mcp,
            trio.open_nursery() as nursery,
        ):
            self.pool = pool
            self.mcp = mcp
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
                mcp=self.mcp,
            )
        self.tasks_run += 1
        rollout = self.scratch / result.rollout if result.rollout is not None else None
        data = await trio.to_thread.run_sync(_take_file, rollout, self.scratch / WORKSPACES_DIR / safe_id(task.id))
        out[i] = (result.to_json(), data)


class BatchWorker:
    """A Ray actor body (wrapped with ``ray.remote`` by the driver): one Trio loop in a thread
    of its own, one shared model pool, the shared MCP servers (one process each per worker), up to
    ``concurrency`` tasks at once.

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
        mcp_servers: Sequence[McpServer] = (),
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
            mcp_servers=mcp_servers,
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
