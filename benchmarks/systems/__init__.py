"""The benchmarked systems: one module each, run in a subprocess of its own by the harness.

This file only describes them (no heavy import): a label, the distributions a system needs
(absent → "skipped (not installed)"), the distributions whose versions the report states, and
the scenarios the module implements.
"""

from __future__ import annotations

from importlib import metadata

import attrs

__all__ = ["System", "SYSTEMS", "installed", "missing"]


@attrs.frozen
class System:
    name: str
    label: str
    requires: tuple[str, ...]
    """Distributions that must be installed for the system to run."""
    scenarios: tuple[str, ...]
    note: str = ""

    @property
    def module(self) -> str:
        return f"benchmarks.systems.{self.name}"


SYSTEMS: dict[str, System] = {
    s.name: s
    for s in (
        System(
            "floor",
            "floor (httpx lines + json.loads)",
            ("httpx", "trio"),
            ("streaming", "tool_turn", "concurrency"),
            "raw httpx aiter_lines + json.loads on every data line, on Trio; the tool turn is a "
            "hand-written loop (stream, run the calls in a nursery, post the outputs)",
        ),
        System(
            "kernel",
            "trio-agent-kernel",
            ("trio-agent-kernel", "trio", "httpx", "msgspec"),
            ("streaming", "tool_turn", "concurrency", "idle"),
            "open_session + one subscriber consuming every event; tool turn: a fresh session per "
            "turn, one shared ModelActor",
        ),
        System(
            "openai_sdk",
            "openai SDK (AsyncOpenAI)",
            ("openai",),
            ("streaming", "tool_turn", "concurrency"),
            "client.responses.create(stream=True) on asyncio; the tool turn is a hand-written "
            "loop (stream, asyncio.gather the calls, post the outputs)",
        ),
        System(
            "agents_sdk",
            "OpenAI Agents SDK",
            ("openai-agents", "openai"),
            ("streaming", "tool_turn", "concurrency"),
            "Runner.run_streamed + stream_events(), OpenAIResponsesModel on AsyncOpenAI, tracing disabled",
        ),
        System(
            "pydantic_ai",
            "pydantic-ai",
            ("pydantic-ai-slim", "openai"),
            ("streaming", "tool_turn", "concurrency"),
            "agent.run_stream + stream_text(delta=True, debounce_by=None), OpenAIResponsesModel "
            "with an OpenAIProvider on AsyncOpenAI",
        ),
    )
}


def missing(system: System) -> tuple[str, ...]:
    """The distributions the system needs that are not installed."""
    absent = []
    for dist in system.requires:
        try:
            metadata.version(dist)
        except metadata.PackageNotFoundError:
            absent.append(dist)
    return tuple(absent)


def installed(system: System) -> bool:
    """Whether every distribution the system needs is installed."""
    return not missing(system)
