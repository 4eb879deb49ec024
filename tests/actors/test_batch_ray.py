"""The Ray backend (``actors.batch._ray``) on a local cluster: exactly one record per task with
two workers while one is SIGKILLed mid-run (and a resumed run skipping what is recorded), a
poison task that kills every worker it runs on, the cluster-wide rate limit; the limiter's
window rules and a slow-round-trip regression without worker processes.

One local cluster (2 CPUs, no dashboard) serves the whole module — starting Ray costs 10-20 s on
a small machine, and every batch run starts its worker processes (2-5 s), so the scenarios are
few and combined — and one scripted model server runs as a subprocess (the workers are other
processes: they reach it over loopback). Skipped when Ray is not installed; deselect with
``-m "not ray"``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

ray = pytest.importorskip("ray")

from actors.batch import BatchTask, ResultsFile, TaskFinished, TaskResult, read_results  # noqa: E402
from actors.batch._ray import LIMITER_NAMESPACE, WORKER_NAME_PREFIX, RayRateLimiter, _WindowBudget, run_batch_ray  # noqa: E402
from actors.model import ModelSettings  # noqa: E402

pytestmark = pytest.mark.ray

TEXT = "Hello from the scripted model."


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The scripted server as a process; each reply streams 6 deltas 20 ms apart (~0.12 s a task)."""
    script = tmp_path_factory.mktemp("script") / "script.json"
    script.write_text(
        json.dumps({"default": {"items": [{"type": "text", "text": TEXT, "chunk_size": 5}], "delta_delay": 0.02}})
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "actors.scripted", "--port", "0", "--script", os.fspath(script)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on "), line
        yield line.removeprefix("listening on ") + "/v1"
    finally:
        proc.terminate()
        proc.wait(10)


def _tasks(n: int, **metadata: Any) -> list[BatchTask]:
    return [BatchTask(id=f"task-{i:04d}", input=f"task {i}", metadata=dict(metadata)) for i in range(n)]


def _check_exactly_once(out: Path, tasks: list[BatchTask]) -> list[Any]:
    records = read_results(out)
    ids = [r.id for r in records]
    assert len(ids) == len(set(ids)), "a task was recorded twice"
    assert sorted(ids) == sorted(t.id for t in tasks), "a task was lost"
    for r in records:
        if r.status == "completed":
            assert r.final_message == TEXT
            assert r.rollout is not None
            lines = (out / r.rollout).read_text().splitlines()
            assert json.loads(lines[0])["type"] == "session_meta"
            assert any('"type":"item"' in line.replace(" ", "") for line in lines)
    return records


async def _kill_a_worker_when(out: Path, min_records: int, killed: dict[str, Any]) -> None:
    """Once ``min_records`` results exist, SIGKILL one worker process (its pid from the actor)."""
    while len(read_results(out)) < min_records:
        await trio.sleep(0.01)

    def find_and_kill() -> None:
        names = [n for n in ray.util.list_named_actors() if n.startswith(WORKER_NAME_PREFIX)]
        victim = sorted(n for n in names if "/worker-" in n)[0]
        pid = ray.get(ray.get_actor(victim).pid.remote())
        killed["records_before"] = len(read_results(out))
        os.kill(pid, signal.SIGKILL)
        killed["pid"] = pid

    await trio.to_thread.run_sync(find_and_kill)


async def test_200_tasks_two_workers_one_killed_mid_run_exactly_once(
    ray_cluster: None, server_url: str, tmp_path: Path
) -> None:
    """200 tasks (10 already recorded by an earlier run) over 2 workers; one worker process is
    SIGKILLed once 40 records exist: exactly 200 records, none lost, none doubled."""
    tasks = _tasks(200)
    with ResultsFile(tmp_path) as results:
        results.append_many(TaskResult(id=t.id, status="failed", error="an earlier run") for t in tasks[:10])
    events: list[Any] = []
    killed: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_kill_a_worker_when, tmp_path, 40, killed)
        summary = await run_batch_ray(
            tasks,
            out_dir=tmp_path,
            concurrency=40,
            model=ModelSettings(base_url=server_url, model="scripted-model"),
            workers=2,
            batch_size=8,
            progress=events.append,
        )
        nursery.cancel_scope.cancel()
    assert killed, "the run ended before a worker could be killed"
    assert killed["records_before"] < 200
    with pytest.raises(ProcessLookupError):
        os.kill(killed["pid"], 0)
    assert (summary.skipped, summary.completed, summary.failed, summary.interrupted) == (10, 190, 0, False)
    assert summary.events == 190 * 11  # per task: started, request sent, item, deltas, usage, completed...
    records = _check_exactly_once(tmp_path, tasks)
    assert [r.status for r in records] == ["failed"] * 10 + ["completed"] * 190  # the earlier ten untouched
    assert sum(isinstance(e, TaskFinished) for e in events) == 190
    assert all(r.cpu_time > 0 for r in records[10:])  # measured on the workers
    rerun = [r for r in records if r.attempt > 1]
    assert rerun, "the killed worker held no task?"
    assert {r.attempt for r in rerun} == {2}

    # run again: everything is skipped, nothing is started or written
    again = await run_batch_ray(
        tasks, out_dir=tmp_path, concurrency=40, model=ModelSettings(base_url=server_url, model="scripted-model")
    )
    assert (again.skipped, again.finished) == (200, 0)
    assert len(read_results(tmp_path)) == 200


async def test_a_poison_task_is_given_up_after_killing_its_workers(
    ray_cluster: None, server_url: str, tmp_path: Path
) -> None:
    def poison_tools(task: BatchTask, workspace: Any) -> list[Any]:
        """Kills its worker process for the poison task (runs on the workers: a closure, so
        Ray pickles it by value)."""
        if task.metadata.get("poison"):
            os.kill(os.getpid(), signal.SIGKILL)
        return []

    tasks = _tasks(12) + [BatchTask(id="poison", input="boom", metadata={"poison": True})]
    summary = await run_batch_ray(
        tasks,
        out_dir=tmp_path,
        concurrency=4,
        model=ModelSettings(base_url=server_url, model="scripted-model"),
        workers=2,
        batch_size=1,
        tools_factory=poison_tools,
        max_task_crashes=2,  # one death in company, then alone: the second death gives it up
    )
    records = {r.id: r for r in _check_exactly_once(tmp_path, tasks)}
    poison = records.pop("poison")
    assert poison.status == "failed"
    assert poison.error is not None and poison.error.startswith("WorkerCrashed: the worker process died 2 times")
    assert poison.attempt == 2
    assert {r.status for r in records.values()} == {"completed"}, "an innocent task was given up"
    assert (summary.completed, summary.failed) == (12, 1)


async def test_cluster_wide_rate_limit_caps_requests(ray_cluster: None, server_url: str, tmp_path: Path) -> None:
    # 5 requests per 0.5 s over the whole cluster (a tiny-scale rpm): 20 one-request tasks need >= 1.5 s
    rpm, window, n = 5, 0.5, 20
    name = f"test-limiter-{os.getpid()}"
    started = time.monotonic()
    summary = await run_batch_ray(
        _tasks(n),
        out_dir=tmp_path,
        concurrency=20,
        model=ModelSettings(base_url=server_url, model="scripted-model"),
        workers=2,
        limiter_rpm=rpm,
        limiter_tpm=10**9,  # exercises the token reports too
        limiter_window=window,
        limiter_name=name,  # named: it outlives the run, so we can read its log
    )
    elapsed = time.monotonic() - started
    assert summary.completed == n
    limiter = ray.get_actor(name, namespace=LIMITER_NAMESPACE)
    try:
        grants = sorted(ray.get(limiter.grant_times.remote()))
        stats = ray.get(limiter.stats.remote())
    finally:
        ray.kill(limiter)
    assert {r.attempt for r in read_results(tmp_path)} == {1}
    # every request had a grant (a permit left unused too long is dropped: then there are more)
    assert len(grants) >= n
    # any `window` seconds hold at most `rpm` grants — hence at most `rpm` requests: a grant
    # stays counted `permit_ttl` longer than the window, the longest a worker may keep it
    for i in range(len(grants) - rpm):
        assert grants[i + rpm] - grants[i] >= window - 1e-6, (i, grants)
    assert elapsed >= (n - rpm) / rpm * window
    assert stats["waited"] >= 1


def test_window_budget_matches_the_local_limiter_rules() -> None:
    budget = _WindowBudget(rpm=2, tpm=100, window=10.0)
    assert budget.ready_at(0.0, 10) is None
    budget.admit(0.0, "a", 10)
    budget.admit(1.0, "b", 10)
    assert budget.ready_at(1.0, 10) == pytest.approx(10.0)  # rpm: the third waits for the first to leave
    budget.record(1.5, "a", 95)  # a's request really used 95 tokens
    budget.expire(10.0)
    assert budget.token_sum == 10  # a's left the window, b's estimate remains
    assert budget.ready_at(10.0, 95) == pytest.approx(11.0)  # tpm: 10 + 95 > 100 until b leaves
    budget.expire(11.0)
    assert budget.ready_at(11.0, 500) is None  # alone, a request bigger than the budget still runs
    with pytest.raises(ValueError):
        _WindowBudget(rpm=0, tpm=None, window=60)


async def test_permits_are_not_stale_on_arrival_however_slow_the_round_trip(ray_cluster: None) -> None:
    """Regression: with a round trip longer than ``permit_ttl`` every permit used to be dropped
    as stale the moment it arrived, and the worker asked again forever."""

    class SlowGrants:  # stands in for the actor handle: `.grant.remote(...)` -> an ObjectRef
        def __init__(self) -> None:
            self.grant = self
            self.calls = 0

        def remote(self, client: str, n: int, estimate: int, records: list[int]) -> Any:
            self.calls += 1
            time.sleep(0.1)  # > permit_ttl
            return ray.put((n, 0.05))

    actor = SlowGrants()
    limiter = RayRateLimiter(actor, client="test", grant_batch=4)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(limiter.acquire, 10)
    assert limiter.admitted == 6
    assert actor.calls <= 6


async def test_a_shared_mcp_server_runs_once_per_worker(ray_cluster: None, tmp_path: Path) -> None:
    """Each worker starts the shared MCP server once and its sessions share it: the per-process
    counts of 12 tasks over 2 workers are two runs 1..k (not twelve 1s); none outlives the batch."""
    from collections import Counter

    from actors.scripted import open_scripted_server
    from actors.testing._mcp_stub import stub_command
    from actors.tools.mcp import McpServer

    from .test_batch_mcp import router
    from .test_mcp_shared import stub_pids

    tag = f"ray-mcp-{os.getpid()}"
    command = stub_command(tag)
    tasks = [BatchTask(id=f"t{n}", input=f"{n} mcp__counter__count") for n in range(12)]
    async with open_scripted_server(router) as server:
        summary = await run_batch_ray(
            tasks,
            out_dir=tmp_path,
            concurrency=4,
            model=ModelSettings(base_url=server.base_url, model="m", transport="http"),
            workers=2,
            batch_size=2,
            mcp_servers=[McpServer.stdio("counter", command[0], command[1:])],
        )
    assert summary.completed == 12
    counts = Counter(int(r.final_message.split("count=")[1].split()[0]) for r in read_results(tmp_path))
    assert 1 <= counts[1] <= 2 and max(counts.values()) <= 2 and sum(counts.values()) == 12
    assert stub_pids(tag) == []
