"""session.stream(input): one turn's events, over the scripted server on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from actors import ModelSettings, open_model_actor, open_session
from actors.scripted import Reply, Script, Text, open_scripted_server
from kernel import TextDelta, TurnCompleted, TurnStarted


def settings(base_url: str) -> ModelSettings:
    return ModelSettings(base_url=base_url, model="scripted-model")


def text_of(events: list[Any]) -> str:
    return "".join(e.delta for e in events if isinstance(e, TextDelta))


async def test_a_turn_stream_holds_only_its_turn_and_ends_by_itself(autojump_clock: trio.testing.MockClock) -> None:
    script = Script([Reply(items=[Text("first answer", chunk_size=3)]), Reply(items=[Text("second", chunk_size=2)])])
    async with open_scripted_server(script) as server, open_session(model=settings(server.base_url)) as session:
        await session.run("one")
        async with session.stream("two", turn_id="t-2") as turn:
            events = [e async for e in turn]
        assert turn.outcome is not None and turn.outcome.status == "completed"
    assert isinstance(events[0], TurnStarted) and events[0].turn_id == "t-2"
    assert isinstance(events[-1], TurnCompleted) and events[-1].turn_id == "t-2"
    assert text_of(events) == "second"
    assert {e.turn_id for e in events} == {"t-2"}  # every event carries its turn's id


async def test_a_queued_turn_stream_skips_the_turn_before_it(autojump_clock: trio.testing.MockClock) -> None:
    script = Script([Reply(items=[Text("slow one", chunk_size=1)], delta_delay=0.5), Reply(items=[Text("mine")])])
    async with open_scripted_server(script) as server, open_session(model=settings(server.base_url)) as session:
        first = await session.submit("first")
        async with session.stream("second") as turn:
            events = [e async for e in turn]
        assert (await first.result()).status == "completed"
    assert text_of(events) == "mine"
    assert [type(e) for e in events if isinstance(e, (TurnStarted, TurnCompleted))] == [TurnStarted, TurnCompleted]


async def test_two_sessions_on_one_actor_each_see_their_own_turn(autojump_clock: trio.testing.MockClock) -> None:
    scripts = {
        "alice": Script([Reply(items=[Text("for alice " * 5, chunk_size=4)], delta_delay=0.01)]),
        "bob": Script([Reply(items=[Text("for bob " * 5, chunk_size=3)], delta_delay=0.013)]),
    }
    seen: dict[str, list[Any]] = {}
    async with open_scripted_server(scripts) as server, open_model_actor(settings(server.base_url)) as actor:

        async def converse(name: str) -> None:
            async with open_session(model=actor, session_id=name) as session:  # its id keys the script
                async with session.stream(f"hi, I am {name}") as turn:
                    seen[name] = [e async for e in turn]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(converse, "alice")
            nursery.start_soon(converse, "bob")
    assert text_of(seen["alice"]) == "for alice " * 5
    assert text_of(seen["bob"]) == "for bob " * 5
    for name, events in seen.items():
        ids = {e.turn_id for e in events}
        assert len(ids) == 1 and "" not in ids, (name, ids)
        assert any(isinstance(e, TextDelta) for e in events)


async def test_leaving_early_interrupts_unless_asked_not_to(autojump_clock: trio.testing.MockClock) -> None:
    long = Reply(items=[Text("a long answer " * 20, chunk_size=2)], delta_delay=0.05)
    async with open_scripted_server(Script([long, long])) as server:
        async with open_session(model=settings(server.base_url)) as session:
            async with session.stream("go") as turn:
                async for event in turn:
                    if isinstance(event, TextDelta):
                        break
            outcome = await turn.result()
            assert outcome.status == "aborted"
            async with session.stream("again", interrupt_on_exit=False) as turn:
                async for event in turn:
                    if isinstance(event, TextDelta):
                        break
                outcome = await turn.result()
            assert outcome.status == "completed"


async def test_the_outcome_is_set_as_soon_as_the_loop_ends(autojump_clock: trio.testing.MockClock) -> None:
    async with open_scripted_server(Script([Reply(items=[Text("done")])])) as server:
        async with open_session(model=settings(server.base_url)) as session:
            async with session.stream("go") as turn:
                async for _ in turn:
                    pass
                assert turn.outcome is not None and turn.outcome.status == "completed"
