"""Micro-benchmark: the kernel loop's own CPU overhead, with an in-memory model.

Measures process CPU time (``time.process_time``) of

* a sampling request: one turn whose single response is one assistant message (a minimal
  in-memory stream: created, item done, completed), and
* a tool call: the extra CPU of a turn whose first response calls 10 no-op tools in parallel
  (then answers), minus the two plain requests it makes, divided by 10.

Each figure is the median over ``--repeats`` runs of ``--turns`` turns. Run:
``python -m benchmarks.bench_kernel``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import trio

from kernel import Message, TurnHost, run_turn
from kernel.testing import FunctionTools, InMemoryHistory, ScriptedModel, text_response, tool_call_response


class _NullSink:
    async def publish(self, events: Any) -> None:
        pass


async def _noop(args: Any) -> str:
    return "ok"


def _measure(turns: int, with_tools: bool) -> float:
    responses = []
    for _ in range(turns):
        if with_tools:
            responses.append(tool_call_response(*[(f"c{i}", "noop", "{}") for i in range(10)]))
        responses.append(text_response("done"))

    async def main() -> float:
        host = TurnHost(ScriptedModel(responses), FunctionTools({"noop": _noop}), InMemoryHistory(), _NullSink())
        start = time.process_time()
        for _ in range(turns):
            host.history.items.clear()  # type: ignore[attr-defined]
            await run_turn(host, [Message.user("go")])
        return time.process_time() - start

    return trio.run(main)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    plain = [_measure(args.turns, False) / args.turns for _ in range(args.repeats)]
    tools = [_measure(args.turns, True) / args.turns for _ in range(args.repeats)]
    per_request = statistics.median(plain)
    per_tool_call = (statistics.median(tools) - 2 * per_request) / 10
    result = {
        "sampling_request_us": per_request * 1e6,
        "sampling_request_us_min": min(plain) * 1e6,
        "sampling_request_us_max": max(plain) * 1e6,
        "tool_turn_us": statistics.median(tools) * 1e6,
        "tool_call_us": per_tool_call * 1e6,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"sampling request (1 turn, 1 request): median {result['sampling_request_us']:.1f} µs CPU "
            f"(min {result['sampling_request_us_min']:.1f}, max {result['sampling_request_us_max']:.1f})"
        )
        print(f"tool turn (10 parallel no-op calls + follow-up): median {result['tool_turn_us']:.1f} µs CPU")
        print(f"per tool call overhead: {result['tool_call_us']:.1f} µs CPU")
    return result


if __name__ == "__main__":
    main()
