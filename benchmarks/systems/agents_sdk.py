"""The OpenAI Agents SDK (``openai-agents``): ``Runner.run_streamed`` with an ``Agent`` whose model
is ``OpenAIResponsesModel`` on an ``AsyncOpenAI(base_url=..., api_key=...)`` client; tracing
disabled; every event of ``stream_events()`` consumed. On asyncio.

Tools are ``function_tool`` wrappers of an async no-op ``(x: int) -> "ok"``; the SDK runs a turn's
function calls concurrently, then asks the model again (``tool_use_behavior="run_llm_again"``).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from agents import Agent, OpenAIResponsesModel, RunConfig, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

from ._common import TEXT_DELTA, TOOL_COUNT, asyncio_concurrency, cpu, on_asyncio, run_cli, streaming_result, tool_names

set_tracing_disabled(True)
_RUN_CONFIG = RunConfig(tracing_disabled=True)


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
            if event.data.type == TEXT_DELTA:
                deltas += 1
                if ttft is None:
                    ttft = time.perf_counter() - t0
        elif event.type == "run_item_stream_event" and event.name == "tool_output":
            outputs += 1
    return events, deltas, ttft, outputs, result.final_output


async def _ttft(agent: Agent[Any], t0: float) -> float | None:
    return (await _run(agent, t0))[2]


def streaming(params: dict[str, Any]) -> dict[str, Any]:
    async def measure(agent: Agent[Any]) -> dict[str, Any]:
        c0, t0 = cpu(), time.perf_counter()
        events, deltas, ttft, _, _ = await _run(agent, t0)
        used, wall = cpu() - c0, time.perf_counter() - t0
        return streaming_result(used, wall, ttft, deltas, events)

    return on_asyncio(lambda: _agent(params), measure)


def tool_turn(params: dict[str, Any]) -> dict[str, Any]:
    turns = int(params["turns"])

    async def measure(agent: Agent[Any]) -> dict[str, Any]:
        c0, t0 = cpu(), time.perf_counter()
        for _ in range(turns):
            _, deltas, _, outputs, final = await _run(agent, t0)
            if outputs != TOOL_COUNT or not final:
                raise RuntimeError(f"expected {TOOL_COUNT} tool outputs and an answer, got {outputs} and {final!r}")
        return {"cpu_s": cpu() - c0, "wall_s": time.perf_counter() - t0, "turns": turns}

    return on_asyncio(lambda: _agent(params, _tools()), measure)


concurrency = asyncio_concurrency(_agent, _ttft)

SCENARIOS = {"streaming": streaming, "tool_turn": tool_turn, "concurrency": concurrency}

if __name__ == "__main__":
    sys.exit(run_cli(SCENARIOS, ("openai-agents", "openai", "httpx", "pydantic")))
