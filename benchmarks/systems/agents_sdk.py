"""The OpenAI Agents SDK (``openai-agents``): ``Runner.run_streamed`` with an ``Agent`` whose model
is ``OpenAIResponsesModel`` on an ``AsyncOpenAI(base_url=..., api_key=...)`` client; tracing
disabled; every event of ``stream_events()`` consumed. On asyncio.

Tools are ``function_tool`` wrappers of an async no-op ``(x: int) -> "ok"``; the SDK runs a turn's
function calls concurrently, then asks the model again (``tool_use_behavior="run_llm_again"``).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from agents import Agent, OpenAIResponsesModel, RunConfig, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

from ._common import TOOL_COUNT, cpu, gather_batches, run_cli, tool_names, warmed

set_tracing_disabled(True)
_RUN_CONFIG = RunConfig(tracing_disabled=True)
_DELTA = "response.output_text.delta"


def _tools() -> list[Any]:
    tools = []
    for name in tool_names():

        async def noop(x: int) -> str:
            """Do nothing.

            Args:
                x: Ignored.
            """
            return "ok"

        tools.append(function_tool(noop, name_override=name))
    return tools


def _agent(params: dict[str, Any], tools: list[Any] | None = None) -> tuple[Agent[Any], AsyncOpenAI]:
    client = AsyncOpenAI(base_url=params["base_url"], api_key="sk-bench", max_retries=0)
    return Agent(name="bench", model=OpenAIResponsesModel("scripted-model", client), tools=tools or []), client


async def _run(agent: Agent[Any], t0: float) -> tuple[int, int, float | None, int, Any]:
    """One run: (stream events, text deltas, seconds to the first, tool outputs, final output)."""
    events = deltas = outputs = 0
    ttft = None
    result = Runner.run_streamed(agent, "go", run_config=_RUN_CONFIG)
    async for event in result.stream_events():
        events += 1
        if event.type == "raw_response_event":
            if event.data.type == _DELTA:
                deltas += 1
                if ttft is None:
                    ttft = time.perf_counter() - t0
        elif event.type == "run_item_stream_event" and event.name == "tool_output":
            outputs += 1
    return events, deltas, ttft, outputs, result.final_output


def streaming(params: dict[str, Any]) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        agent, client = _agent(params)
        try:
            c0, t0 = cpu(), time.perf_counter()
            events, deltas, ttft, _, _ = await _run(agent, t0)
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


def tool_turn(params: dict[str, Any]) -> dict[str, Any]:
    turns = int(params["turns"])

    async def main() -> dict[str, Any]:
        agent, client = _agent(params, _tools())
        try:
            c0, t0 = cpu(), time.perf_counter()
            for _ in range(turns):
                _, deltas, _, outputs, final = await _run(agent, t0)
                if outputs != TOOL_COUNT or not final:
                    raise RuntimeError(f"expected {TOOL_COUNT} tool outputs and an answer, got {outputs} and {final!r}")
            return {"cpu_s": cpu() - c0, "wall_s": time.perf_counter() - t0, "turns": turns}
        finally:
            await client.close()

    return asyncio.run(main())


def _concurrency(params: dict[str, Any], n: int) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        agent, client = _agent(params)

        async def one(t0: float) -> float | None:
            return (await _run(agent, t0))[2]

        try:
            return await gather_batches(params, n, one)
        finally:
            await client.close()

    return asyncio.run(main())


concurrency = warmed(_concurrency)

SCENARIOS = {"streaming": streaming, "tool_turn": tool_turn, "concurrency": concurrency}

if __name__ == "__main__":
    sys.exit(run_cli(SCENARIOS, ("openai-agents", "openai", "httpx", "pydantic")))
