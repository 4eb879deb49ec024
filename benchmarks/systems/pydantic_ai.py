"""pydantic-ai (``pydantic-ai-slim[openai]``): ``agent.run_stream`` with ``OpenAIResponsesModel``
and an ``OpenAIProvider`` on an ``AsyncOpenAI`` client pointed at the local base URL; the text is
consumed with ``stream_text(delta=True, debounce_by=None)`` (every delta, no time-based
grouping). On asyncio.

Tools are ``Tool`` wrappers of an async no-op ``(x: int) -> "ok"``; pydantic-ai runs a response's
tool calls concurrently, then asks the model again.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from openai import AsyncOpenAI
from pydantic_ai import Agent, Tool
from pydantic_ai.messages import ToolReturnPart
from pydantic_ai.models.openai import OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider

from ._common import TOOL_COUNT, asyncio_concurrency, cpu, on_asyncio, run_cli, streaming_result, tool_names


def _tools() -> list[Tool[Any]]:
    tools = []
    for name in tool_names():

        async def noop(x: int) -> str:
            """Do nothing.

            Args:
                x: Ignored.
            """
            return "ok"

        tools.append(Tool(noop, name=name, takes_ctx=False))
    return tools


def _agent(params: dict[str, Any], tools: list[Tool[Any]] | None = None) -> tuple[Agent[None, str], AsyncOpenAI]:
    client = AsyncOpenAI(base_url=params["base_url"], api_key="sk-bench", max_retries=0)
    model = OpenAIResponsesModel("scripted-model", provider=OpenAIProvider(openai_client=client))
    return Agent(model, tools=tools or []), client


async def _run(agent: Agent[None, str], t0: float) -> tuple[int, float | None, Any]:
    """One run: (text deltas, seconds to the first, the messages)."""
    deltas = 0
    ttft = None
    async with agent.run_stream("go") as result:
        async for _ in result.stream_text(delta=True, debounce_by=None):
            deltas += 1
            if ttft is None:
                ttft = time.perf_counter() - t0
    return deltas, ttft, result.all_messages()


async def _ttft(agent: Agent[None, str], t0: float) -> float | None:
    return (await _run(agent, t0))[1]


def streaming(params: dict[str, Any]) -> dict[str, Any]:
    async def measure(agent: Agent[None, str]) -> dict[str, Any]:
        c0, t0 = cpu(), time.perf_counter()
        deltas, ttft, _ = await _run(agent, t0)
        used, wall = cpu() - c0, time.perf_counter() - t0
        return streaming_result(used, wall, ttft, deltas)

    return on_asyncio(lambda: _agent(params), measure)


def tool_turn(params: dict[str, Any]) -> dict[str, Any]:
    turns = int(params["turns"])

    async def measure(agent: Agent[None, str]) -> dict[str, Any]:
        c0, t0 = cpu(), time.perf_counter()
        for _ in range(turns):
            deltas, _, messages = await _run(agent, t0)
            returns = sum(isinstance(p, ToolReturnPart) for m in messages for p in m.parts)
            if returns != TOOL_COUNT or not deltas:
                raise RuntimeError(
                    f"expected {TOOL_COUNT} tool returns and an answer, got {returns} and {deltas} deltas"
                )
        return {"cpu_s": cpu() - c0, "wall_s": time.perf_counter() - t0, "turns": turns}

    return on_asyncio(lambda: _agent(params, _tools()), measure)


concurrency = asyncio_concurrency(_agent, _ttft)

SCENARIOS = {"streaming": streaming, "tool_turn": tool_turn, "concurrency": concurrency}

if __name__ == "__main__":
    sys.exit(run_cli(SCENARIOS, ("pydantic-ai-slim", "openai", "httpx", "pydantic")))
