"""WebSocket vs HTTP on a long tool loop: one session, ``--calls`` sequential tool calls (50), each
tool output ``--output-kib`` KiB (4), so the history grows to ~200 KB by the last request.

The scripted model server runs in its own process (``python -m actors.scripted``), so this
process's CPU time is the client's alone. Both transports run the same script in the same run,
alternating, ``--runs`` times each. Per follow-up request (every request after the first):

* **bytes sent** — the request as it goes on the wire: the HTTP body, or the ``response.create``
  frame (incremental input: ``previous_response_id`` and only the new items);
* **client CPU** — process CPU time of the whole turn divided by its requests;
* **wall per turn** — the whole 51-request turn.

Then streaming: one session, one response of ``--deltas`` text deltas (20,000), client CPU per delta
over each transport (what the HTTP streaming benchmark measures, over WebSocket too).

``python -m benchmarks.bench_ws [--calls 50] [--output-kib 4] [--deltas 20000] [--runs 3] [--json FILE] [--quiet]``

Progress goes to stderr (``--quiet``: none). ``python -m benchmarks --only websocket`` runs this module in a
subprocess of its own and puts the figures in the benchmark report.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import trio

from actors.model import HttpSseTransport, ModelActor, ModelSettings
from actors.model._websocket import WebSocketTransport
from actors.model._wire import encode_json
from actors.model.transport import StreamRequest
from actors.session import open_session
from actors.tools import tool

from .bench_stream import kernel_run
from .harness import scripted_server_process, streaming_script

__all__ = ["measure", "main", "tool_loop_script"]

Log = Callable[[str], None]


def _silent(_message: str) -> None:
    pass


def tool_loop_script(calls: int) -> dict[str, Any]:
    """``calls`` replies that each call ``read`` once, then a final answer."""
    replies: list[Any] = [
        {"items": [{"type": "function_call", "call_id": f"call_{i}", "name": "read", "arguments": {"part": i}}]}
        for i in range(calls)
    ]
    replies.append("All parts read.")
    return {"replies": replies}


class _CountingHttp(HttpSseTransport):
    """The HTTP transport, recording the size of every body it sends."""

    def __init__(self, settings: ModelSettings) -> None:
        super().__init__(settings)
        self.sizes: list[int] = []

    async def stream(self, request: StreamRequest) -> None:
        self.sizes.append(len(encode_json(request.body)))
        await super().stream(request)


class _CountingWs(WebSocketTransport):
    """The WebSocket transport, recording the size of every ``response.create`` frame it sends."""

    def __init__(self, settings: ModelSettings) -> None:
        super().__init__(settings)
        self.sizes: list[int] = []

    async def stream(self, request: StreamRequest) -> None:
        before = self.bytes_sent
        try:
            await super().stream(request)
        finally:
            self.sizes.append(self.bytes_sent - before)


async def _turn(base_url: str, transport: str, output_kib: int) -> dict[str, float]:
    settings = ModelSettings(base_url=base_url, model="scripted-model", api_key="bench-key", transport="http")
    chunk = ("0123456789abcdef" * 64)[:1024]

    @tool
    def read(part: int) -> str:
        """Read one part of the document."""
        return f"part {part}: " + chunk * output_kib

    counting: _CountingHttp | _CountingWs = (
        _CountingWs(settings) if transport == "websocket" else _CountingHttp(settings)
    )
    actor = ModelActor(settings, transports=[counting])
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        async with open_session(model=actor, tools=[read]) as session:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            outcome = await session.run("read every part")
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        nursery.cancel_scope.cancel()
    if outcome.status != "completed":
        raise RuntimeError(f"the {transport} turn ended {outcome.status}: {outcome.error}")
    sizes = counting.sizes
    follow_ups = sizes[1:] or sizes
    return {
        "requests": len(sizes),
        "incremental": getattr(counting, "incremental_requests", 0),
        "bytes_first_request": sizes[0],
        "bytes_per_follow_up": statistics.mean(follow_ups),
        "bytes_last_request": sizes[-1],
        "cpu_ms_per_request": cpu * 1000 / len(sizes),
        "wall_ms_per_turn": wall * 1000,
    }


def measure(calls: int = 50, output_kib: int = 4, runs: int = 3, log: Log = _silent) -> dict[str, Any]:
    """Run both transports ``runs`` times each, alternating; medians and ratios (ws / http)."""
    rows: dict[str, list[dict[str, float]]] = {"http": [], "websocket": []}
    for r in range(runs):
        for transport in ("http", "websocket"):
            # a fresh server per run: the script's cursor is consumed by one turn
            with scripted_server_process(tool_loop_script(calls)) as server:
                rows[transport].append(trio.run(_turn, server.base_url, transport, output_kib))
        log(f"    tool loop round {r + 1}/{runs} done (load {os.getloadavg()[0]:.2f})")
    out: dict[str, Any] = {"calls": calls, "output_kib": output_kib, "runs": runs}
    for transport, results in rows.items():
        out[transport] = {key: statistics.median(r[key] for r in results) for key in results[0]}
    http, ws = out["http"], out["websocket"]
    out["ratios"] = {
        "bytes_per_request": ws["bytes_per_follow_up"] / http["bytes_per_follow_up"],
        "cpu_per_request": ws["cpu_ms_per_request"] / http["cpu_ms_per_request"],
        "wall_per_turn": ws["wall_ms_per_turn"] / http["wall_ms_per_turn"],
    }
    return out


def measure_streaming(deltas: int = 20_000, runs: int = 3, log: Log = _silent) -> dict[str, Any]:
    """Client CPU µs per streamed delta over each transport (median of ``runs``, alternating; a
    fresh server and a warm-up turn per run)."""
    samples: dict[str, list[float]] = {"http": [], "websocket": []}
    for r in range(runs):
        for transport in samples:
            with scripted_server_process(streaming_script(deltas)) as server:
                trio.run(kernel_run, server.base_url, transport)  # warm-up: imports, the first connection
            with scripted_server_process(streaming_script(deltas)) as server:
                cpu, seen = trio.run(kernel_run, server.base_url, transport)
            samples[transport].append(cpu * 1e6 / max(1, seen))
        log(f"    streaming round {r + 1}/{runs} done (load {os.getloadavg()[0]:.2f})")
    out: dict[str, Any] = {name: statistics.median(v) for name, v in samples.items()}
    out["ratio"] = out["websocket"] / out["http"]
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line: print the figures (and write them as JSON with ``--json``)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_ws", description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--output-kib", type=int, default=4)
    parser.add_argument("--deltas", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    result = measure(args.calls, args.output_kib, args.runs, log)
    for transport in ("http", "websocket"):
        r = result[transport]
        print(
            f"{transport:>9}: {r['requests']:.0f} requests ({r['incremental']:.0f} incremental), "
            f"{r['bytes_per_follow_up'] / 1024:.1f} KiB sent per request, "
            f"{r['cpu_ms_per_request']:.2f} ms client CPU per request, {r['wall_ms_per_turn']:.0f} ms per turn"
        )
    ratios = result["ratios"]
    print(
        f"websocket / http: bytes per request {ratios['bytes_per_request']:.3f}, "
        f"CPU per request {ratios['cpu_per_request']:.2f}, wall per turn {ratios['wall_per_turn']:.2f}"
    )
    streaming = measure_streaming(args.deltas, args.runs, log)
    result["streaming_us_per_delta"] = streaming
    print(
        f"streaming {args.deltas} deltas: http {streaming['http']:.2f} µs CPU per delta, websocket "
        f"{streaming['websocket']:.2f} µs ({streaming['ratio']:.2f}x)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
