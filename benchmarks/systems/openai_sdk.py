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

from ._common import TOOL_COUNT, cpu, gather_batches, run_cli, tool_names, warmed

_USER = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go"}]}
_TOOLS: list[Any] = [
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
_DELTA = "response.output_text.delta"


def _client(params: dict[str, Any]) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=params["base_url"], api_key="sk-bench", max_retries=0)


async def _stream(client: AsyncOpenAI, t0: float, **kwargs: Any) -> tuple[int, int, float | None, list[Any]]:
    events = deltas = 0
    ttft = None
    calls: list[Any] = []
    stream = await client.responses.create(model="scripted-model", stream=True, **kwargs)
    async for event in stream:
        events += 1
        if event.type == _DELTA:
            deltas += 1
            if ttft is None:
                ttft = time.perf_counter() - t0
        elif event.type == "response.output_item.done" and event.item.type == "function_call":
            calls.append(event.item)
    return events, deltas, ttft, calls


def streaming(params: dict[str, Any]) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        client = _client(params)
        try:
            c0, t0 = cpu(), time.perf_counter()
            events, deltas, ttft, _ = await _stream(client, t0, input=[_USER])
            return {
                "cpu_s": cpu() - c0,
                "wall_s": time.perf_counter() - t0,
                "ttft_s": ttft,
                "events_seen": events,
                "deltas_seen": deltas,
            }
        finally:
            await client.close()

    return asyncio.run(main())


async def _noop(x: int) -> str:
    return "ok"


async def _turn(client: AsyncOpenAI) -> None:
    _, _, _, calls = await _stream(client, 0.0, input=[_USER], tools=_TOOLS, parallel_tool_calls=True)
    if len(calls) != TOOL_COUNT:
        raise RuntimeError(f"expected {TOOL_COUNT} calls, got {len(calls)}")
    results = await asyncio.gather(*(_noop(**json.loads(c.arguments)) for c in calls))
    follow: list[Any] = [_USER]
    follow += [{"type": "function_call", "call_id": c.call_id, "name": c.name, "arguments": c.arguments} for c in calls]
    follow += [{"type": "function_call_output", "call_id": c.call_id, "output": r} for c, r in zip(calls, results)]
    _, deltas, _, calls = await _stream(client, 0.0, input=follow, tools=_TOOLS, parallel_tool_calls=True)
    if calls or not deltas:
        raise RuntimeError("the follow-up should be a plain answer")


def tool_turn(params: dict[str, Any]) -> dict[str, Any]:
    turns = int(params["turns"])

    async def main() -> dict[str, Any]:
        client = _client(params)
        try:
            c0, t0 = cpu(), time.perf_counter()
            for _ in range(turns):
                await _turn(client)
            return {"cpu_s": cpu() - c0, "wall_s": time.perf_counter() - t0, "turns": turns}
        finally:
            await client.close()

    return asyncio.run(main())


def _concurrency(params: dict[str, Any], n: int) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        client = _client(params)

        async def one(t0: float) -> float | None:
            return (await _stream(client, t0, input=[_USER]))[2]

        try:
            return await gather_batches(params, n, one)
        finally:
            await client.close()

    return asyncio.run(main())


concurrency = warmed(_concurrency)

SCENARIOS = {"streaming": streaming, "tool_turn": tool_turn, "concurrency": concurrency}

if __name__ == "__main__":
    sys.exit(run_cli(SCENARIOS, ("openai", "httpx", "pydantic")))
