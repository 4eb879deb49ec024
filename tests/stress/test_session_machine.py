"""The stateful stress test: a real session over loopback under random faults, interrupts,
crashes and slow subscribers, over each transport (HTTP, WebSocket, and ``"auto"``: WebSocket
falling back to HTTP; drawn per session with the wire). The machine lives in
:mod:`actors.testing` so users can run it against their own session factory and tools; the second
machine here does exactly that."""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager

from hypothesis import strategies as st

from actors import ToolRegistry, open_session
from actors.session import Session
from actors.testing import STATS, SessionSpec, StressConfig, session_stress_machine
from kernel import PromptConfig, RespondToModel

from ._profile import examples

# with compaction steps (the default) and the MCP stub server in every session
SessionStress = session_stress_machine(StressConfig(stats=STATS, max_examples=examples(30, 1000), mcp=True))

TestSessionStress = SessionStress.TestCase


# --- the reuse path: a user's own session factory and tools ---------------------------------

user_tools = ToolRegistry()
_store: dict[str, str] = {}


@user_tools.tool(parallel=False)
async def remember(key: str, value: str = "") -> str:
    """Store a value, or read it back when ``value`` is empty.

    Args:
        key: The slot.
        value: What to store.
    """
    if not key:
        raise RespondToModel("key must not be empty")
    if value:
        _store[key] = value
        return "stored"
    return _store.get(key, "<nothing>")


def my_session(spec: SessionSpec) -> AbstractAsyncContextManager[Session]:
    return open_session(
        model=spec.model,
        tools=spec.tools,
        rollout=spec.rollout,
        resume=spec.resume,
        max_retries=spec.max_retries,
        max_buffer=spec.max_buffer,
        prompt_config=PromptConfig(base_instructions="You are a careful assistant."),
    )


remember_calls = st.tuples(
    st.just("remember"),
    st.builds(lambda k, v: json.dumps({"key": k, "value": v}), st.sampled_from(["", "a", "b"]), st.text(max_size=6)),
)

UserStress = session_stress_machine(
    StressConfig(
        session_factory=my_session,
        tools=user_tools,
        tool_calls=remember_calls,
        wires=("responses",),
        stats=STATS,
        max_examples=examples(5, 200),
        step_count=8,
    )
)

TestUserSessionStress = UserStress.TestCase
