"""Property tests of *your* host with the kernel's strategies: copy this file next to your tests.

Run: python -m pytest examples/test_my_host.py   (HYPOTHESIS_PROFILE=... for more examples)
"""

import json

import trio
import trio.testing
from hypothesis import given, settings, strategies as st

from actors import ToolRegistry, open_session, open_tool_actor
from actors.testing import SessionSpec, StressConfig, session_stress_machine
from kernel import Message, TurnHost, run_turn
from kernel.testing import (
    FastBackoff,
    InMemoryHistory,
    RecordingSink,
    ScriptedModel,
    ScriptedResponse,
    assert_well_formed,
    fault_schedules,
    text_response,
    tool_call_response,
)

# --- your tools (here: one) ------------------------------------------------------------------
my_tools = ToolRegistry()


@my_tools.tool(parallel=True)
async def add(a: int, b: int) -> str:
    """Add two integers.

    Args:
        a: The first.
        b: The second.
    """
    return str(a + b)


# --- 1. the turn loop against your tools, in memory, under random fault schedules ------------
@settings(max_examples=50, deadline=None)
@given(schedule=fault_schedules(max_size=6), budget=st.integers(0, 3))
def test_my_tools_under_random_faults(schedule, budget):
    # one faulty attempt per scheduled fault, then the model calls the tool and answers
    faulty = [ScriptedResponse(fault=fault) for fault in schedule if fault.kind != "ok"]
    model = ScriptedModel(faulty + [tool_call_response(("c1", "add", {"a": 2, "b": 3})), text_response("5")])
    history, sink = InMemoryHistory(), RecordingSink()

    async def main():
        async with open_tool_actor(my_tools) as tools:
            host = TurnHost(
                model,
                tools,
                history,
                sink,
                tool_config=my_tools.tool_config(),
                max_retries=budget,
                rng=FastBackoff(seed=0),
            )
            return await run_turn(host, [Message.user("2 + 3?")])

    outcome = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert_well_formed(history.items)  # every call has exactly one output, after it
    # it completes exactly when every fault was retryable and the retry budget covered them all
    if all(r.fault.retryable for r in faulty) and len(faulty) <= budget:
        assert outcome.status == "completed" and outcome.last_agent_message == "5"
        assert sum(model.attempts_per_transport.values()) == len(faulty) + 2
    else:  # otherwise it fails with the kernel error of the fault that ended it
        assert outcome.status == "failed" and outcome.error is not None


# --- 2. the stateful stress machine against your session factory and tools --------------------
def my_session(spec: SessionSpec):
    # your open_session call: your prompt config, your tools, the spec's model/rollout/limits
    return open_session(
        model=spec.model,
        tools=spec.tools,
        rollout=spec.rollout,
        resume=spec.resume,
        max_retries=spec.max_retries,
        max_buffer=spec.max_buffer,
    )


add_calls = st.tuples(
    st.just("add"), st.builds(lambda a, b: json.dumps({"a": a, "b": b}), st.integers(), st.integers())
)

TestMySession = session_stress_machine(
    StressConfig(session_factory=my_session, tools=my_tools, tool_calls=add_calls, max_examples=5, step_count=6)
).TestCase
