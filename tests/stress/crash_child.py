"""The child process of the SIGKILL crash test (``test_crash_process.py``).

``python crash_child.py ROLLOUT WIRE`` runs a session against an in-process scripted server
and keeps the rollout busy — every turn makes two requests of eight parallel tool calls with
small outputs, then answers — until it is killed. It prints one JSON line per record it saw
*acknowledged* (``record()`` / ``record_events()`` returned), written unbuffered with
``os.write`` so a line on the pipe means the acknowledgement happened.
The parent (a new process) then resumes the rollout and goes on.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import trio

from actors import ModelSettings, ToolRegistry, open_session
from actors.history._format import _json_default, _logged
from actors.scripted import FunctionCall, Reply, Script, Text, open_scripted_server
from kernel import Event, ResponseItem, event_to_dict, item_to_wire

KEY = "sk-test-CRASH-0123456789abcdef"


def emit(obj: Any) -> None:
    os.write(1, (json.dumps(obj, default=_json_default) + "\n").encode())


def wire(item: ResponseItem) -> dict[str, Any]:
    out = {"item": item_to_wire(item)}
    success = getattr(getattr(item, "output", None), "success", None)
    if success is not None:
        out["success"] = success
    return out


registry = ToolRegistry()


@registry.tool(parallel=True)
async def tiny(n: int) -> str:
    """Return a small output.

    Args:
        n: A number.
    """
    await trio.sleep(0.0005 * (n % 3))
    return f"out-{n}-" + "x" * (n % 7)


class AckItems:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def record(self, items: Sequence[ResponseItem]) -> None:
        await self.inner.record(items)
        for item in items:
            emit({"ack": "item", **wire(item)})

    async def prompt_input(self) -> list[ResponseItem]:
        result: list[ResponseItem] = await self.inner.prompt_input()
        return result


class AckEvents:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def record_events(self, events: Sequence[Event]) -> None:
        await self.inner.record_events(events)
        for event in events:
            if _logged(event):
                emit({"ack": "event", "event": event_to_dict(event)})

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def calls(turn: int, step: int) -> Reply:
    return Reply(items=[FunctionCall(f"c{turn}_{step}_{i}", "tiny", {"n": i + step}, chunk_size=3) for i in range(8)])


async def run(rollout: str, wire_name: str) -> None:
    replies = []
    for turn in range(200):
        replies += [calls(turn, 0), calls(turn, 1), Reply(items=[Text(f"turn {turn} done", chunk_size=4)])]
    async with open_scripted_server(Script(replies)) as server:
        settings = ModelSettings(base_url=server.base_url, model="m", api_key=KEY, wire=wire_name)  # type: ignore[arg-type]
        async with open_session(model=settings, tools=registry, rollout=rollout) as session:
            session.host.history = AckItems(session.host.history)
            session.host.events.history = AckEvents(session.host.events.history)  # type: ignore[attr-defined]
            emit({"ready": True})
            for turn in range(200):
                outcome = await session.run(f"turn {turn}")
                emit({"turn": outcome.turn_id, "status": outcome.status})


if __name__ == "__main__":
    trio.run(run, sys.argv[1], sys.argv[2])
