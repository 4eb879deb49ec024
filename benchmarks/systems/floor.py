"""The floor: what any client must at least do — read the SSE lines with httpx and JSON-decode
every ``data:`` line (``json.loads``), on Trio. No object model, no events, no bookkeeping.

The tool turn is the minimal hand-written loop: stream the first response, collect the
``function_call`` items from ``response.output_item.done``, run the ten no-op tools at once in a
nursery, post the conversation with the outputs, stream the answer.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import httpx
import trio

from ._common import (
    RESPONSES_TOOLS,
    TEXT_DELTA,
    TOOL_COUNT,
    USER_MESSAGE,
    baseline_rss,
    concurrency_result,
    cpu,
    more_batches,
    run_cli,
    streaming_result,
    warmed,
)


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=None, max_keepalive_connections=2000))


async def _stream(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], t0: float
) -> tuple[int, int, float | None, list[Any]]:
    """POST and read one response: (SSE events, text deltas, seconds to the first delta, the
    function calls it made)."""
    events = deltas = 0
    ttft = None
    calls: list[Any] = []
    async with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                obj = json.loads(line[6:])
                events += 1
                kind = obj["type"]
                if kind == TEXT_DELTA:
                    deltas += 1
                    if ttft is None:
                        ttft = time.perf_counter() - t0
                elif kind == "response.output_item.done" and obj["item"]["type"] == "function_call":
                    calls.append(obj["item"])
    return events, deltas, ttft, calls


def streaming(params: dict[str, Any]) -> dict[str, Any]:
    url = params["base_url"] + "/responses"
    body = {"model": "scripted-model", "input": [USER_MESSAGE], "stream": True}

    async def main() -> dict[str, Any]:
        async with _client() as client:
            c0, t0 = cpu(), time.perf_counter()
            events, deltas, ttft, _ = await _stream(client, url, body, t0)
            used, wall = cpu() - c0, time.perf_counter() - t0
            return streaming_result(used, wall, ttft, deltas, events)

    return trio.run(main)


async def _noop(x: int) -> str:
    return "ok"


async def _turn(client: httpx.AsyncClient, url: str) -> None:
    body: dict[str, Any] = {
        "model": "scripted-model",
        "input": [USER_MESSAGE],
        "tools": RESPONSES_TOOLS,
        "parallel_tool_calls": True,
        "stream": True,
    }
    _, _, _, calls = await _stream(client, url, body, 0.0)
    if len(calls) != TOOL_COUNT:
        raise RuntimeError(f"expected {TOOL_COUNT} calls, got {len(calls)}")
    outputs: list[Any] = [None] * len(calls)

    async def run(i: int, call: Any) -> None:
        result = await _noop(**json.loads(call["arguments"]))
        outputs[i] = {"type": "function_call_output", "call_id": call["call_id"], "output": result}

    async with trio.open_nursery() as nursery:
        for i, call in enumerate(calls):
            nursery.start_soon(run, i, call)
    body = {**body, "input": [USER_MESSAGE, *calls, *outputs]}
    _, deltas, _, calls = await _stream(client, url, body, 0.0)
    if calls or not deltas:
        raise RuntimeError("the follow-up should be a plain answer")


def tool_turn(params: dict[str, Any]) -> dict[str, Any]:
    url = params["base_url"] + "/responses"
    turns = int(params["turns"])

    async def main() -> dict[str, Any]:
        async with _client() as client:
            c0, t0 = cpu(), time.perf_counter()
            for _ in range(turns):
                await _turn(client, url)
            return {"cpu_s": cpu() - c0, "wall_s": time.perf_counter() - t0, "turns": turns}

    return trio.run(main)


def _concurrency(params: dict[str, Any], n: int) -> dict[str, Any]:
    url = params["base_url"] + "/responses"
    body = {"model": "scripted-model", "input": [USER_MESSAGE], "stream": True}

    async def main() -> dict[str, Any]:
        ttfts: list[float] = []
        used = wall = 0.0
        async with _client() as client:
            base = baseline_rss()
            batches = 0
            while more_batches(params, batches, wall):
                batches += 1

                async def one() -> None:
                    _, _, ttft, _ = await _stream(client, url, body, t0)  # noqa: B023 (awaited in the iteration that binds t0)
                    ttfts.append(ttft if ttft is not None else float("nan"))

                c0, t0 = cpu(), time.perf_counter()
                async with trio.open_nursery() as nursery:
                    for _ in range(n):
                        nursery.start_soon(one)
                wall, used = wall + time.perf_counter() - t0, used + cpu() - c0
        return concurrency_result(n, used, wall, ttfts, base, batches=batches)

    return trio.run(main)


concurrency = warmed(_concurrency)

SCENARIOS = {"streaming": streaming, "tool_turn": tool_turn, "concurrency": concurrency}

if __name__ == "__main__":
    sys.exit(run_cli(SCENARIOS, ("httpx", "trio")))
