"""Batch throughput: one process (:func:`actors.batch.run_batch`) vs Ray workers
(:func:`actors.batch._ray.run_batch_ray`) on the same tasks and the same scripted server.

The scripted model server runs in its own process; every task is one turn whose reply streams
``--deltas`` text deltas (``--delta-delay`` seconds apart: model latency). Each mode writes a
fresh output directory (results.jsonl + rollouts). Figures per mode: wall time, tasks/s, the
driver's CPU, the Ray workers' CPU (each worker reports its process CPU when it closes), the mean
per-task CPU (``TaskResult.cpu_time``), and the machine's CPU over the run (``/proc/stat``, Linux
only: *every* process on the machine, so only meaningful on an otherwise idle machine). Ray's own
start (``ray.init``) is measured apart; the Ray figures include starting the worker actors.

``python -m benchmarks.bench_batch_ray [--tasks 1000] [--concurrency 100] [--workers 2] [--json]``
(needs Ray: ``pip install ray``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import trio

from actors.batch import BatchTask, read_results, run_batch
from actors.model import ModelSettings


@contextmanager
def scripted_server_process(script: dict[str, Any]) -> Iterator[str]:
    """``python -m actors.scripted`` on a free loopback port; yields its base URL."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(script, f)
        path = f.name
    proc = subprocess.Popen(
        [sys.executable, "-m", "actors.scripted", "--port", "0", "--script", path], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"scripted server did not start: {line!r}")
        yield line.removeprefix("listening on ").rstrip("/") + "/v1"
    finally:
        proc.terminate()
        proc.wait(10)
        os.unlink(path)


def _machine_cpu() -> float | None:
    """CPU seconds used by the whole machine so far (user + nice + system + irq + softirq)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    return (user + nice + system + irq + softirq) / ticks


def _script(deltas: int, delay: float) -> dict[str, Any]:
    text = "x" * (deltas * 4)
    return {"default": {"items": [{"type": "text", "text": text, "chunk_size": 4}], "delta_delay": delay}}


class _WorkerCpu(logging.Handler):
    """Collects the CPU the Ray workers report when they close (``actors.batch.ray`` log)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.cpu = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        info = getattr(record, "worker_info", None)
        if info:
            self.cpu += float(info.get("cpu_s", 0.0))


async def _measure(mode: str, run: Any, tasks: list[BatchTask], out: str) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    workers = _WorkerCpu()
    log = logging.getLogger("actors.batch.ray")
    log.addHandler(workers)
    log.setLevel(logging.INFO)
    cpu0, wall0 = _machine_cpu(), time.perf_counter()
    try:
        summary = await run(tasks, out)
    finally:
        log.removeHandler(workers)
    wall = time.perf_counter() - wall0
    cpu1 = _machine_cpu()
    records = read_results(out)
    assert len(records) == len({r.id for r in records}) == len(tasks), "not exactly one record per task"
    return {
        "mode": mode,
        "tasks": len(tasks),
        "completed": summary.completed,
        "wall_s": round(wall, 3),
        "tasks_per_s": round(len(tasks) / wall, 1),
        "driver_cpu_s": round(summary.cpu_time, 3),
        "workers_cpu_s": round(workers.cpu, 3),
        "machine_cpu_s": round(cpu1 - cpu0, 3) if cpu0 is not None and cpu1 is not None else None,
        "task_cpu_ms_mean": round(1000 * sum(r.cpu_time for r in records) / len(records), 2),
    }


def measure(
    tasks_n: int, concurrency: int, workers: list[int], deltas: int, delay: float, batch_size: int
) -> dict[str, Any]:
    import ray

    tasks = [BatchTask(id=f"t{i:05d}", input=f"task {i}") for i in range(tasks_n)]
    out_root = tempfile.mkdtemp(prefix="bench-batch-ray-")
    rows: list[dict[str, Any]] = []
    try:
        with scripted_server_process(_script(deltas, delay)) as base_url:
            model = ModelSettings(base_url=base_url, model="scripted-model", transport="http")

            async def main() -> float:
                async def local(ts: list[BatchTask], out: str) -> Any:
                    return await run_batch(ts, out_dir=out, concurrency=concurrency, model=model)

                rows.append(await _measure("one process", local, tasks, os.path.join(out_root, "local")))
                t0 = time.perf_counter()
                await trio.to_thread.run_sync(
                    lambda: ray.init(num_cpus=max(workers), include_dashboard=False, logging_level=logging.WARNING)
                )
                init = time.perf_counter() - t0
                from actors.batch._ray import run_batch_ray

                for n in workers:

                    async def on_ray(ts: list[BatchTask], out: str, n: int = n) -> Any:
                        return await run_batch_ray(
                            ts, out_dir=out, concurrency=concurrency, model=model, workers=n, batch_size=batch_size
                        )

                    rows.append(
                        await _measure(
                            f"ray, {n} worker{'s' if n > 1 else ''}", on_ray, tasks, os.path.join(out_root, f"ray{n}")
                        )
                    )
                return init

            try:
                init = trio.run(main)
            finally:
                ray.shutdown()
    finally:
        shutil.rmtree(out_root, ignore_errors=True)
    return {
        "tasks": tasks_n,
        "concurrency": concurrency,
        "deltas_per_task": deltas,
        "delta_delay_s": delay,
        "cpus": os.cpu_count(),
        "ray_init_s": round(init, 2),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="batch throughput: one process vs Ray workers")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--workers", default="1,2", help="Ray worker counts to measure (comma-separated)")
    parser.add_argument("--deltas", type=int, default=10, help="text deltas per reply")
    parser.add_argument("--delta-delay", type=float, default=0.01, help="seconds between deltas (model latency)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    result = measure(args.tasks, args.concurrency, workers, args.deltas, args.delta_delay, args.batch_size)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['tasks']} tasks, concurrency {result['concurrency']}, {result['deltas_per_task']} deltas "
            f"{result['delta_delay_s']}s apart, {result['cpus']} CPUs; ray.init {result['ray_init_s']} s (not counted)"
        )
        print(
            f"{'mode':<16} {'wall s':>8} {'tasks/s':>8} {'driver CPU s':>13} {'workers CPU s':>14} {'task CPU ms':>12} {'machine CPU s':>14}"
        )
        for r in result["rows"]:
            print(
                f"{r['mode']:<16} {r['wall_s']:>8} {r['tasks_per_s']:>8} {r['driver_cpu_s']:>13} {r['workers_cpu_s']:>14} "
                f"{r['task_cpu_ms_mean']:>12} {r['machine_cpu_s'] if r['machine_cpu_s'] is not None else '-':>14}"
            )
    return result


if __name__ == "__main__":
    main()
