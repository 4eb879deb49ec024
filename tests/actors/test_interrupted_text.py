"""Over the scripted server: an interrupt mid-message keeps what the user saw. The rollout and
``session.history()`` hold the partial assistant message (status "incomplete"), ``resume`` reads
it back, and the next request sends it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors.history import resume
from actors.model import ModelSettings
from actors.scripted import Reply, Script, Stall, Text, open_scripted_server
from actors.session import Session, open_session
from kernel import Message, TextDelta, TurnAborted, TurnOutcome


def settings(base_url: str, **kw: Any) -> ModelSettings:
    return ModelSettings(base_url=base_url, model="scripted-model", api_key="sk-test", **kw)


async def interrupt_on_first_delta(session: Session, prompt: str) -> tuple[TurnOutcome, str]:
    """Submit ``prompt``, interrupt as soon as a text delta is seen; the outcome and the text seen."""
    async with session.subscribe() as events:
        handle = await session.submit(prompt)
        seen: list[Any] = []
        async for event in events:
            seen.append(event)
            if isinstance(event, TextDelta):
                session.interrupt()
            if isinstance(event, TurnAborted):
                break
        outcome = await handle.result()
    shown = "".join(e.delta for e in seen if isinstance(e, TextDelta))
    return outcome, shown


def incomplete(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text}],
        "status": "incomplete",
    }


@pytest.mark.parametrize("stall", [False, True])
async def test_interrupt_records_the_partial_message_everywhere(
    stall: bool, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rollout = tmp_path / "session.jsonl"
    text = Text("Let me check the files first.", chunk_size=4)
    first = (
        Reply(items=[text], faults=[Stall(after_events=7, seconds=60)])
        if stall
        else Reply(items=[text], delta_delay=1.0)
    )
    script = Script([first, Reply(items=[Text("ok")])])
    async with open_scripted_server(script) as server:
        async with open_session(model=settings(server.base_url), rollout=rollout) as session:
            outcome, shown = await interrupt_on_first_delta(session, "check")
            assert outcome.status == "aborted"
            assert shown and "Let me check the files first.".startswith(shown)
            history = await session.history()
            partial = history[-1]
            assert history[:-1] == [Message.user("check")]
            assert isinstance(partial, Message) and partial.role == "assistant"
            assert partial.text() == shown and partial.extra == {"status": "incomplete"}

        # the rollout holds it, before the turn's terminal record; resume reads it back
        lines = [json.loads(line) for line in rollout.read_text().splitlines()]
        kinds = [(rec["type"], (rec.get("item") or rec.get("event") or {}).get("type")) for rec in lines[1:]]
        assert kinds == [
            ("event", "turn_started"),
            ("item", "message"),
            ("event", "request_sent"),  # which transport served the request
            ("item", "message"),
            ("event", "turn_aborted"),
        ]
        assert lines[4]["item"] == {**incomplete(shown), "id": partial.id}
        resumed = await trio.to_thread.run_sync(resume, rollout)
        assert list(resumed.items) == history

        async with open_session(model=settings(server.base_url), rollout=rollout, resume=True) as session:
            assert await session.history() == history
            assert (await session.run("go on")).status == "completed"
    sent = server.requests[-1].body["input"]
    assert sent[:3] == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "check"}]},
        incomplete(shown),
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go on"}]},
    ]


async def test_chat_wire_sends_the_partial_text_as_an_assistant_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = Script(
        [Reply(items=[Text("partial reply here", chunk_size=3)], delta_delay=1.0), Reply(items=[Text("ok")])]
    )
    async with open_scripted_server(script) as server:
        async with open_session(model=settings(server.base_url, wire="chat")) as session:
            outcome, shown = await interrupt_on_first_delta(session, "hi")
            assert outcome.status == "aborted" and shown
            assert (await session.run("again")).status == "completed"
    messages = server.requests[-1].body["messages"]
    assert [m for m in messages if m["role"] != "system"][:3] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": shown},
        {"role": "user", "content": "again"},
    ]
