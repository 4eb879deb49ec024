"""This kernel: ``open_session`` (ModelActor over HTTP/SSE, the turn, the ToolActor, the
HistoryActor, the notifier) and one subscriber that consumes every event, text deltas included.

* streaming — one session, one turn; the subscriber counts every ``TextDelta``.
* tool_turn — one shared ``ModelActor`` (one HTTP client); each turn is a fresh session with the
  ten ``@registry.tool(parallel=True)`` no-op tools: the model calls all ten, the ToolActor runs
  them, the follow-up answers. A fresh conversation per turn, as the peers' ``Runner.run_streamed``
  / ``agent.run_stream`` calls are.
* concurrency — N sessions sharing one ``ModelActor``, each with a subscriber, all submitted at once.
* idle — N open, idle sessions sharing one ``ModelActor``: RSS delta / N.
"""

from __future__ import annotations

import gc
import sys
import time
from typing import Any

import trio

from actors.model import ModelSettings, open_model_actor
from actors.session import Session, open_session
from actors.tools import ToolRegistry, tool
from kernel import TurnAborted, TurnCompleted, TurnFailed
from kernel.events import TextDelta

from ._common import (
    TOOL_COUNT,
    baseline_rss,
    concurrency_result,
    cpu,
    current_rss,
    more_batches,
    peak_rss,
    run_cli,
    streaming_result,
    tool_names,
    warmed,
)

_END = (TurnCompleted, TurnFailed, TurnAborted)


def _settings(params: dict[str, Any]) -> ModelSettings:
    # HTTP+SSE: the floor and the peers are measured over it (WebSocket: benchmarks/bench_ws.py)
    return ModelSettings(base_url=params["base_url"], model="scripted-model", api_key="sk-bench", transport="http")


async def _consume(session: Session, t0: float) -> tuple[int, float | None, Any]:
    """Subscribe, submit "go", consume every event to the end of the turn: (text deltas seen,
    seconds from ``t0`` to the first one, the final event)."""
    deltas = 0
    ttft = None
    async with session.subscribe() as events:
        await session.submit("go")
        async for event in events:
            if type(event) is TextDelta:
                if ttft is None:
                    ttft = time.perf_counter() - t0
                deltas += 1
            elif isinstance(event, _END):
                return deltas, ttft, event
    raise RuntimeError("the subscription ended before the turn did")


def _check(end: Any) -> None:
    if not isinstance(end, TurnCompleted):
        raise RuntimeError(f"turn did not complete: {end!r}")


def streaming(params: dict[str, Any]) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        async with open_session(model=_settings(params)) as session:
            c0, t0 = cpu(), time.perf_counter()
            deltas, ttft, end = await _consume(session, t0)
            used, wall = cpu() - c0, time.perf_counter() - t0
        _check(end)
        return streaming_result(used, wall, ttft, deltas)

    return trio.run(main)


def _registry() -> ToolRegistry:
    registry = ToolRegistry()
    for name in tool_names():

        async def noop(x: int) -> str:
            """Do nothing.

            Args:
                x: Ignored.
            """
            return "ok"

        registry.add(tool(noop, name=name, parallel=True))
    return registry


def tool_turn(params: dict[str, Any]) -> dict[str, Any]:
    turns = int(params["turns"])
    registry = _registry()

    async def main() -> dict[str, Any]:
        async with open_model_actor(_settings(params)) as actor:
            c0, t0 = cpu(), time.perf_counter()
            for _ in range(turns):
                async with open_session(model=actor, tools=registry) as session:
                    _, _, end = await _consume(session, t0)
                    _check(end)
                    items = len(await session.history())
                    if items != 2 + 2 * TOOL_COUNT:  # the user's message, the calls, their outputs, the answer
                        raise RuntimeError(f"unexpected history of {items} items")
            return {"cpu_s": cpu() - c0, "wall_s": time.perf_counter() - t0, "turns": turns}

    return trio.run(main)


def _concurrency(params: dict[str, Any], n: int) -> dict[str, Any]:

    async def batch(actor: Any, ttfts: list[float]) -> tuple[float, float]:
        """N sessions opened (not timed), then one turn each, all at once: (CPU s, wall s)."""
        start = trio.Event()
        failures: list[Any] = []
        t0 = 0.0

        async def one(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            async with open_session(model=actor) as session:
                task_status.started()
                await start.wait()
                _, ttft, end = await _consume(session, t0)
                ttfts.append(ttft if ttft is not None else float("nan"))
                if not isinstance(end, TurnCompleted):
                    failures.append(end)

        async with trio.open_nursery() as nursery:
            for _ in range(n):
                await nursery.start(one)
            c0, t0 = cpu(), time.perf_counter()
            start.set()
        wall, used = time.perf_counter() - t0, cpu() - c0
        if failures:
            raise RuntimeError(f"{len(failures)} of {n} turns did not complete, e.g. {failures[0]!r}")
        return used, wall

    async def main() -> dict[str, Any]:
        ttfts: list[float] = []
        used = wall = 0.0
        async with open_model_actor(_settings(params)) as actor:
            base = baseline_rss()
            batches = 0
            while more_batches(params, batches, wall):
                batches += 1
                c, w = await batch(actor, ttfts)
                used, wall = used + c, wall + w
        return concurrency_result(n, used, wall, ttfts, base, batches=batches)

    return trio.run(main)


def idle(params: dict[str, Any]) -> dict[str, Any]:
    """RSS per open idle session; with ``"tasks_only": true``, per bare task waiting on an event
    (the cost of the benchmark's own holder task, for reference)."""
    n = int(params["sessions"])
    tasks_only = bool(params.get("tasks_only", False))

    async def main() -> dict[str, Any]:
        async with open_model_actor(_settings(params)) as actor:
            async with open_session(model=actor):  # warm-up: lazy imports and caches
                pass
            release = trio.Event()

            async def hold(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                if tasks_only:
                    task_status.started()
                    await release.wait()
                    return
                async with open_session(model=actor):
                    task_status.started()
                    await release.wait()

            gc.collect()
            base = current_rss()
            c0 = cpu()
            async with trio.open_nursery() as nursery:
                for _ in range(n):
                    await nursery.start(hold)
                open_cpu = cpu() - c0
                gc.collect()
                rss = current_rss()
                release.set()
        return {
            "sessions": n,
            "tasks_only": tasks_only,
            "rss_before": base,
            "rss_open": rss,
            "rss_per_session": (rss - base) / n,
            "peak_rss": peak_rss(),
            "open_cpu_s": open_cpu,
        }

    return trio.run(main)


concurrency = warmed(_concurrency)

SCENARIOS = {"streaming": streaming, "tool_turn": tool_turn, "concurrency": concurrency, "idle": idle}

if __name__ == "__main__":
    sys.exit(run_cli(SCENARIOS, ("trio-agent-kernel", "trio", "httpx", "h11", "msgspec", "attrs")))
