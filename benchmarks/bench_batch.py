"""Batch benchmark: tasks/s and CPU per task at 1, 10, 100 and 1,000 concurrent sessions in one
process.

The scripted model server runs in a process of its own (``python -m actors.scripted``), so this
process's CPU time (``time.process_time``) is the batch driver's alone: every session, the one
shared ModelActor (real HTTP over loopback), the rollouts and the exactly-once results file.
Each task is one turn: a short streamed answer (a few text deltas, about 12 SSE events) and its
usage. Each concurrency level runs in a fresh ``trio.run`` with a fresh output directory, after
one warm-up batch.

Reported per level: tasks, wall time, tasks/s, driver CPU ms per task (``BatchSummary.cpu_time``
÷ tasks), the server process's CPU ms per task (from ``/proc``, Linux only: the other side of
the loopback, to see which side is the bottleneck), the mean of the per-task ``cpu_time``
attribution, events/s, and p50/p99 task latency.

    python -m benchmarks.bench_batch            # 1, 10, 100, 1000 sessions (~1-2 minutes)
    python -m benchmarks.bench_batch --quick    # fewer tasks per level (a smoke test, ~20 s)
    python -m benchmarks.bench_batch --levels 100,1000 --tasks 5000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio

from actors.batch import BatchTask, read_results, run_batch
from actors.model import ModelSettings

LEVELS = (1, 10, 100, 1000)
FULL_TASKS = {1: 300, 10: 1500, 100: 4000, 1000: 8000}
QUICK_TASKS = {1: 40, 10: 200, 100: 600, 1000: 2000}

SCRIPT: dict[str, Any] = {
    "default": {
        "items": [{"type": "text", "text": "The answer is 42, as computed.", "chunk_size": 6}],
        "usage": {"input_tokens": 120, "output_tokens": 9},
    }
}


@contextmanager
def server_process(script: dict[str, Any]) -> Iterator[tuple[str, int]]:
    """``python -m actors.scripted`` on a free loopback port: yields (base URL, pid)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(script, f)
        path = f.name
    proc = subprocess.Popen(
        [sys.executable, "-m", "actors.scripted", "--port", "0", "--script", path],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"scripted server did not start: {line!r}")
        yield line.removeprefix("listening on ").rstrip("/") + "/v1", proc.pid
    finally:
        proc.terminate()
        proc.wait(10)
        os.unlink(path)


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (Linux ``/proc``), else ``None``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


async def one_level(base_url: str, concurrency: int, tasks: int, out_dir: Path) -> dict[str, Any]:
    batch = [BatchTask(id=f"task-{i:06d}", input=f"What is 6 x 7? (#{i})") for i in range(tasks)]
    settings = ModelSettings(base_url=base_url, model="scripted-model", transport="http")
    summary = await run_batch(batch, out_dir=out_dir, concurrency=concurrency, model=settings)
    if summary.completed != tasks:
        raise RuntimeError(f"only {summary.completed} of {tasks} tasks completed: {summary.to_json()}")
    return summary.to_json()


def measure(levels: tuple[int, ...], sizes: dict[int, int], keep: bool = False) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with server_process(SCRIPT) as (base_url, pid), tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        trio.run(one_level, base_url, 10, 50, Path(tmp) / "warmup")  # imports, first connections
        for level in levels:
            n = sizes.get(level, max(100, 4 * level))
            out = Path(tmp) / f"c{level}"
            server_before = process_cpu(pid)
            summary = trio.run(one_level, base_url, level, n, out)
            server_after = process_cpu(pid)
            results = read_results(out)
            latencies = sorted(r.wall_time for r in results)
            attributed = [r.cpu_time for r in results]
            row = {
                "concurrency": level,
                "tasks": n,
                "wall_s": summary["wall_time"],
                "tasks_per_s": summary["tasks_per_s"],
                "driver_cpu_ms_per_task": summary["cpu_per_task"] * 1e3,
                "driver_cpu_utilisation": summary["cpu_time"] / summary["wall_time"],
                "attributed_cpu_ms_per_task": statistics.fmean(attributed) * 1e3,
                "server_cpu_ms_per_task": (
                    (server_after - server_before) / n * 1e3
                    if server_before is not None and server_after is not None
                    else None
                ),
                "events_per_s": summary["events_per_s"],
                "events_per_task": summary["events"] / n,
                "latency_p50_ms": latencies[len(latencies) // 2] * 1e3,
                "latency_p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3,
            }
            rows.append(row)
            print(_format(row), file=sys.stderr, flush=True)
    return rows


def _format(row: dict[str, Any]) -> str:
    server = row["server_cpu_ms_per_task"]
    return (
        f"{row['concurrency']:>5} sessions  {row['tasks']:>6} tasks  {row['wall_s']:7.2f} s  "
        f"{row['tasks_per_s']:8.1f} tasks/s  driver CPU {row['driver_cpu_ms_per_task']:6.2f} ms/task "
        f"({row['driver_cpu_utilisation'] * 100:3.0f}% of a core)  "
        f"server CPU {'n/a' if server is None else f'{server:5.2f}'} ms/task  "
        f"{row['events_per_s']:9.0f} events/s  p50 {row['latency_p50_ms']:7.1f} ms  p99 {row['latency_p99_ms']:7.1f} ms"
    )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description="batch runs: tasks/s and CPU per task vs concurrency")
    parser.add_argument("--quick", action="store_true", help="fewer tasks per level (a smoke test)")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)), help="comma-separated concurrency levels")
    parser.add_argument("--tasks", type=int, help="tasks per level (default: by level)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON on stdout")
    args = parser.parse_args(argv)
    levels = tuple(int(x) for x in args.levels.split(",") if x.strip())
    sizes = dict(QUICK_TASKS if args.quick else FULL_TASKS)
    if args.tasks:
        sizes = {level: args.tasks for level in levels}
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; server in its own process", file=sys.stderr)
    rows = measure(levels, sizes)
    if args.json:
        print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
