"""What every system module shares: the command line, the worker protocol, the probes.

A system module (``benchmarks/systems/<name>.py``) defines one function per scenario it supports,
``def streaming(params: dict) -> dict`` and so on, each doing **one measured run** and returning
its figures (CPU seconds from ``time.process_time`` in this process, wall seconds, counts), and
ends with ``sys.exit(run_cli(SCENARIOS))``. Two ways to run it:

* ``python -m benchmarks.systems.kernel --base-url URL --scenario streaming --params '{"deltas": 2000}'
  --runs 5 --json`` — one warm-up run, then ``--runs`` measured runs; prints one JSON object
  ``{"system", "scenario", "params", "samples": [...], "versions": {...}}``.
* ``--serve`` — the harness's worker protocol: after start-up the process prints
  ``@@bench {"ready": true, ...}``; each ``run {JSON}`` line on stdin runs one measurement of
  ``JSON["scenario"]`` (default ``--scenario``) with the other keys as parameters over
  ``--params`` (``base_url`` included), and prints ``@@bench {"ok": true, "result": {...}}`` (or
  ``{"ok": false, "error": "..."}``); ``quit`` or end of input exits. The harness keeps one worker
  per system alive across the streaming and tool-turn scenarios and interleaves their runs
  (round-robin), so slow drift in the machine's load spreads over every system alike.

Only lines starting with ``@@bench `` are protocol; anything else a library prints is ignored.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from importlib import metadata
from typing import Any, Protocol, TypeVar

__all__ = [
    "PREFIX",
    "RESPONSES_TOOLS",
    "TEXT_DELTA",
    "TOOL_COUNT",
    "USER_MESSAGE",
    "Scenario",
    "asyncio_concurrency",
    "baseline_rss",
    "concurrency_result",
    "cpu",
    "current_rss",
    "emit",
    "gather_batches",
    "more_batches",
    "on_asyncio",
    "peak_rss",
    "percentile",
    "reset_peak_rss",
    "run_cli",
    "streaming_result",
    "tool_names",
    "versions",
    "warmed",
]

PREFIX = "@@bench "
TOOL_COUNT = 10
"""The tool-turn scenario's tools: ``noop_0`` … ``noop_9``, each ``(x: int) -> "ok"``."""

Scenario = Callable[[dict[str, Any]], dict[str, Any]]

cpu = time.process_time
"""This process's CPU time (user + system, every thread), in seconds."""

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def tool_names() -> list[str]:
    """The names of the tool-turn scenario's no-op tools."""
    return [f"noop_{i}" for i in range(TOOL_COUNT)]


USER_MESSAGE: dict[str, Any] = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go"}]}
"""The user's message every scenario sends, as a Responses API input item (for the clients that
write the request themselves)."""

RESPONSES_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": name,
        "description": "Do nothing.",
        "parameters": {
            "type": "object",
            "properties": {"x": {"type": "integer"}},
            "required": ["x"],
            "additionalProperties": False,
        },
        "strict": False,
    }
    for name in tool_names()
]
"""The tool-turn scenario's tools as Responses API function definitions."""

TEXT_DELTA = "response.output_text.delta"
"""The type of the SSE event that carries a text delta."""


def streaming_result(
    cpu_s: float, wall_s: float, ttft_s: float | None, deltas: int, events: int | None = None
) -> dict[str, Any]:
    """The streaming scenario's figures for one run (built after the clocks were read):
    ``events_seen`` only for the systems that see every SSE event."""
    out: dict[str, Any] = {"cpu_s": cpu_s, "wall_s": wall_s, "ttft_s": ttft_s}
    if events is not None:
        out["events_seen"] = events
    out["deltas_seen"] = deltas
    return out


def current_rss() -> int:
    """Resident set size now, in bytes (``/proc/self/statm``; peak RSS where there is no /proc)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return peak_rss()


def peak_rss() -> int:
    """Peak resident set size of this process so far, in bytes (``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux ``/proc/self/clear_refs``, value
    5), so that :func:`peak_rss` measures one run; returns whether it worked."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def baseline_rss() -> int:
    """Collect garbage, reset the peak RSS to the current RSS, and return the current RSS: the
    baseline of a memory measurement."""
    gc.collect()
    reset_peak_rss()
    return current_rss()


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``values``, linear interpolation (numpy's default)."""
    if not values:
        return float("nan")
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def concurrency_result(
    n: int, cpu_s: float, wall_s: float, ttfts: list[float], rss_before: int, *, batches: int = 1, **extra: Any
) -> dict[str, Any]:
    """The concurrency scenario's figures for one run of ``batches`` batches of ``n`` sessions at
    once (``cpu_s`` and ``wall_s`` summed over the batches; ``ttfts`` in seconds, one per
    session, each from its batch's start)."""
    if len(ttfts) != n * batches:
        raise RuntimeError(f"{n * batches - len(ttfts)} of {n * batches} sessions saw no text")
    return {
        "sessions": n,
        "batches": batches,
        "cpu_s": cpu_s,
        "wall_s": wall_s,
        "ttft_p50_s": percentile(ttfts, 0.5),
        "ttft_p99_s": percentile(ttfts, 0.99),
        "ttft_max_s": max(ttfts),
        "rss_before": rss_before,
        "peak_rss": peak_rss(),
        **extra,
    }


def more_batches(params: Mapping[str, Any], done: int, wall_s: float) -> bool:
    """Whether a concurrency run goes on with another batch: it runs at least
    ``params["batches"]`` batches (enough events) and streams for at least
    ``params["min_wall_s"]`` seconds (a run of a fraction of a second measures noise)."""
    return done < int(params.get("batches", 1)) or wall_s < float(params.get("min_wall_s", 0.0))


async def gather_batches(
    params: Mapping[str, Any], n: int, one: Callable[[float], Awaitable[float | None]]
) -> dict[str, Any]:
    """The asyncio peers' concurrency run: batches of ``n`` calls ``one(t0)`` at once
    (``asyncio.gather``) while :func:`more_batches` says so; ``one`` returns its time to first
    token in seconds (``None``: it saw no text)."""
    import asyncio

    ttfts: list[float] = []
    used = wall = 0.0
    base = baseline_rss()
    batches = 0
    while more_batches(params, batches, wall):
        batches += 1
        c0, t0 = cpu(), time.perf_counter()
        out = await asyncio.gather(*(one(t0) for _ in range(n)))
        wall, used = wall + time.perf_counter() - t0, used + cpu() - c0
        ttfts += [t if t is not None else float("nan") for t in out]
    return concurrency_result(n, used, wall, ttfts, base, batches=batches)


class _Closing(Protocol):
    async def close(self) -> None: ...


T = TypeVar("T")


def on_asyncio(
    open_: Callable[[], tuple[T, _Closing]], body: Callable[[T], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """An asyncio peer's run: under ``asyncio.run``, ``thing, client = open_()`` (not timed),
    then ``await body(thing)`` (which times what it measures); the client is closed after."""
    import asyncio

    async def main() -> dict[str, Any]:
        thing, client = open_()
        try:
            return await body(thing)
        finally:
            await client.close()

    return asyncio.run(main())


def asyncio_concurrency(
    open_: Callable[[dict[str, Any]], tuple[T, _Closing]], ttft: Callable[[T, float], Awaitable[float | None]]
) -> Scenario:
    """An asyncio peer's concurrency scenario (:func:`warmed`): :func:`gather_batches` of
    ``ttft(thing, t0)`` calls — one session each, returning its time to first token — with
    ``thing, client = open_(params)`` shared by all of them."""

    def run(params: dict[str, Any], n: int) -> dict[str, Any]:
        return on_asyncio(lambda: open_(params), lambda thing: gather_batches(params, n, partial(ttft, thing)))

    return warmed(run)


def warmed(run: Callable[[dict[str, Any], int], dict[str, Any]]) -> Scenario:
    """The concurrency scenario from ``run(params, n)``: a one-session warm-up (imports, lazy
    set-up, little memory), then the measured run with ``params["sessions"]`` sessions. The
    harness starts a fresh process for every measured run, so the peak RSS is this run's own."""

    def scenario(params: dict[str, Any]) -> dict[str, Any]:
        run({**params, "batches": 1, "min_wall_s": 0.0}, 1)
        return run(params, int(params["sessions"]))

    return scenario


def versions(dists: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of the given distributions (``"not installed"`` when absent)."""
    out = {}
    for d in dists:
        try:
            out[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            out[d] = "not installed"
    return out


def emit(obj: Mapping[str, Any]) -> None:
    """Print one protocol line."""
    sys.stdout.write(PREFIX + json.dumps(obj) + "\n")
    sys.stdout.flush()


def _one(fn: Scenario, params: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"ok": True, "result": fn(params)}
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        tb = traceback.format_exc(limit=8)
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": tb}


def run_cli(scenarios: Mapping[str, Scenario], dists: tuple[str, ...] = (), argv: list[str] | None = None) -> int:
    """The command line of a system module (see the module docstring). Returns the exit status."""
    parser = argparse.ArgumentParser(description="One benchmarked system (see benchmarks.systems._common).")
    parser.add_argument("--base-url", help="the scripted server's base URL (http://127.0.0.1:PORT/v1)")
    parser.add_argument("--scenario", choices=sorted(scenarios))
    parser.add_argument("--params", default="{}", help="scenario parameters, a JSON object")
    parser.add_argument("--runs", type=int, default=1, help="measured runs after one warm-up run")
    parser.add_argument("--no-warmup", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default output)")
    parser.add_argument("--serve", action="store_true", help="the harness's worker protocol on stdin/stdout")
    args = parser.parse_args(argv)
    params = dict(json.loads(args.params))
    if args.base_url:
        params["base_url"] = args.base_url
    if args.serve:
        emit({"ready": True, "pid": os.getpid(), "versions": versions(dists), "rss": current_rss()})
        for line in sys.stdin:
            command, _, rest = line.strip().partition(" ")
            if command == "run":
                given = json.loads(rest) if rest else {}
                scenario = given.pop("scenario", args.scenario)
                if scenario not in scenarios:
                    emit({"ok": False, "error": f"this system has no scenario {scenario!r}"})
                    continue
                emit(_one(scenarios[scenario], {**params, **given}))
            elif command in ("quit", ""):
                break
        return 0
    if not args.scenario or not args.base_url:
        parser.error("--scenario and --base-url are required (except with --serve)")
    fn = scenarios[args.scenario]
    if not args.no_warmup:
        warm = _one(fn, params)
        if not warm["ok"]:
            print(json.dumps({"scenario": args.scenario, "error": warm["error"]}))
            return 1
    samples = []
    for _ in range(args.runs):
        r = _one(fn, params)
        if not r["ok"]:
            print(json.dumps({"scenario": args.scenario, "error": r["error"]}))
            return 1
        samples.append(r["result"])
    out = {"scenario": args.scenario, "params": params, "samples": samples, "versions": versions(dists)}
    print(json.dumps(out))
    return 0
