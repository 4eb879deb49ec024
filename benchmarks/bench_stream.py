"""Streaming benchmark: one session streaming a 20,000-delta response vs the floor.

The scripted model server runs in its own process (``python -m actors.scripted``), so this
process's CPU time (``time.process_time``) is the client's alone. Two clients read the same bytes:

* **floor** — httpx ``aiter_lines()`` over the SSE stream and ``json.loads`` on every ``data:``
  line (what any client must at least do);
* **kernel** — ``open_session`` with the HTTP ModelActor, the turn, the notifier and one subscriber
  that consumes every event (text deltas included).

Each figure is CPU µs per SSE event, median of ``--runs`` runs (min and max shown); the ratio is
kernel / floor measured in the same run. ``python -m benchmarks.bench_stream [--deltas N]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import httpx
import trio

from actors.model import ModelSettings
from actors.session import open_session
from kernel import Message, TurnCompleted, TurnFailed
from kernel.events import TextDelta

from .harness import scripted_server_process, streaming_script

__all__ = ["floor_run", "kernel_run", "measure", "main", "scripted_server_process", "streaming_script"]


async def floor_run(base_url: str) -> tuple[float, int]:
    """CPU seconds and SSE events for httpx lines + json.loads."""
    body = {
        "model": "m",
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go"}]}],
        "stream": True,
    }
    async with httpx.AsyncClient(timeout=None) as client:
        start = time.process_time()
        events = 0
        async with client.stream("POST", base_url + "/responses", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    json.loads(line[6:])
                    events += 1
        return time.process_time() - start, events


async def kernel_run(base_url: str, transport: str = "http") -> tuple[float, int]:
    """CPU seconds and text deltas for a session turn consumed by one subscriber (over
    ``transport``: HTTP+SSE, as the floor reads the same bytes, unless asked otherwise)."""
    settings = ModelSettings(base_url=base_url, model="m", api_key="sk-bench", transport=transport)  # type: ignore[arg-type]
    async with open_session(model=settings) as session:
        start = time.process_time()
        deltas = 0
        async with session.subscribe() as events:
            await session.submit([Message.user("go")])
            async for event in events:
                if type(event) is TextDelta:
                    deltas += 1
                elif isinstance(event, (TurnCompleted, TurnFailed)):
                    break
        return time.process_time() - start, deltas


def measure(deltas: int, runs: int) -> dict[str, Any]:
    """Run both clients ``runs`` times, interleaved, against one server process."""
    with scripted_server_process(streaming_script(deltas)) as server:
        base_url = server.base_url
        floor: list[float] = []
        kernel: list[float] = []
        sse_events = 0
        trio.run(floor_run, base_url)  # warm-up (imports, connection set-up)
        trio.run(kernel_run, base_url)
        for _ in range(runs):
            cpu, sse_events = trio.run(floor_run, base_url)
            floor.append(cpu / sse_events)
            cpu, seen = trio.run(kernel_run, base_url)
            kernel.append(cpu / sse_events)
        fl, ke = statistics.median(floor), statistics.median(kernel)
        return {
            "deltas": deltas,
            "sse_events": sse_events,
            "deltas_seen_by_subscriber": seen,
            "floor_us_per_event": {"median": fl * 1e6, "min": min(floor) * 1e6, "max": max(floor) * 1e6},
            "kernel_us_per_event": {"median": ke * 1e6, "min": min(kernel) * 1e6, "max": max(kernel) * 1e6},
            "ratio_kernel_to_floor": ke / fl,
        }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="kernel vs floor: CPU per streamed event")
    parser.add_argument("--deltas", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = measure(args.deltas, args.runs)
    if args.json:
        print(json.dumps(result))
    else:
        f, k = result["floor_us_per_event"], result["kernel_us_per_event"]
        print(f"{result['sse_events']} SSE events per run, {args.runs} runs")
        print(f"floor  (httpx lines + json.loads): {f['median']:.2f} µs/event (min {f['min']:.2f}, max {f['max']:.2f})")
        print(f"kernel (session + subscriber):     {k['median']:.2f} µs/event (min {k['min']:.2f}, max {k['max']:.2f})")
        print(f"ratio kernel/floor: {result['ratio_kernel_to_floor']:.2f}")
    return result


if __name__ == "__main__":
    main()
