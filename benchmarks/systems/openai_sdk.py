"""The official ``openai`` SDK: ``AsyncOpenAI().responses.create(stream=True)`` and its typed
event iterator, on asyncio (peers may use asyncio; only the kernel must not).

The tool turn is the hand-written loop a user of the bare SDK writes: stream, collect the
``function_call`` items, ``asyncio.gather`` the ten no-op tools, post the outputs, stream the
answer. A reference point between the floor and the agent frameworks.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from openai import AsyncOpenAI

from ._common import (
    RESPONSES_TOOLS,
    TEXT_DELTA,
    TOOL_COUNT,
    USER_MESSAGE,
    asyncio_concurrency,
    cpu,
    on_asyncio,
    run_cli,
    streaming_result,
)


def _client(params: dict[str, Any]) -> tuple[AsyncOpenAI, AsyncOpenAI]:
    """The client, twice: the thing the scenario uses, and what :func:`on_asyncio` closes."""
    client = AsyncOpenAI(base_url=params["base_url"], api_key="sk-bench", max_retries=0)
    return client, client


async def _stream(client: AsyncOpenAI, t0: float, **kwargs: Any) -> tuple[int, int, float | None, list[Any]]:
    events = deltas = 0
    ttft = None
    calls: list[Any] = []
    stream = await client.responses.create(model="scripted-model", stream=True, **kwargs)
    async for event in stream:
        events += 1
        if event.type == TEXT_DELTA:
            deltas += 1
            if ttft is None:
                ttft = time.perf_counter() - t0
        elif event.type == "response.output_item.done" and event.item.type == "function_call":
            calls.append(event.item)
    return events, deltas, ttft, calls


async def _ttft(client: AsyncOpenAI, t0: float) -> float | None:
    return (await _stream(client, t0, input=[USER_MESSAGE]))[2]


def streaming(params: dict[str, Any]) -> dict[str, Any]:
    async def measure(client: AsyncOpenAI) -> dict[str, Any]:
        c0, t0 = cpu(), time.perf_counter()
        events, deltas, ttft, _ = await _stream(client, t0, input=[USER_MESSAGE])
        used, wall = cpu() - c0, time.perf_counter() - t0
        return streaming_result(used, wall, ttft, deltas, events)

    return on_asyncio(lambda: _client(params), measure)


async def _noop(x: int) -> str:
    return "ok"


async def _turn(client: AsyncOpenAI) -> None:
    _, _, _, calls = await _stream(client, 0.0, input=[USER_MESSAGE], tools=RESPONSES_TOOLS, parallel_tool_calls=True)
    if len(calls) != TOOL_COUNT:
        raise RuntimeError(f"expected {TOOL_COUNT} calls, got {len(calls)}")
    results = await asyncio.gather(*(_noop(**json.loads(c.arguments)) for c in calls))
    follow: list[Any] = [USER_MESSAGE]
    follow += [{"type": "function_call", "call_id": c.call_id, "name": c.name, "arguments": c.arguments} for c in calls]
    follow += [{"type": "function_call_output", "call_id": c.call_id, "output": r} for c, r in zip(calls, results)]
    _, deltas, _, calls = await _stream(client, 0.0, input=follow, tools=RESPONSES_TOOLS, parallel_tool_calls=True)
    if calls or not deltas:
        raise RuntimeError("the follow-up should be a plain answer")


def tool_turn(params: dict[str, Any]) -> dict[str, Any]:
    turns = int(params["turns"])

    async def measure(client: AsyncOpenAI) -> dict[str, Any]:
        c0, t0 = cpu(), time.perf_counter()
        for _ in range(turns):
            await _turn(client)
        return {"cpu_s": cpu() - c0, "wall_s": time.perf_counter() - t0, "turns": turns}

    return on_asyncio(lambda: _client(params), measure)


concurrency = asyncio_concurrency(_client, _ttft)

SCENARIOS = {"streaming": streaming, "tool_turn": tool_turn, "concurrency": concurrency}

if __name__ == "__main__":
    sys.exit(run_cli(SCENARIOS, ("openai", "httpx", "pydantic")))
