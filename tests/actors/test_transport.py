"""The ModelTransport seam: a ModelActor over several transports, primary first, and the sticky
per-session fallback the kernel's sampling loop decides (real HTTP over loopback for the fallback)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from actors import HttpSseTransport, ModelActor, ModelSettings, ModelTransport, open_model_actor, open_session
from actors.model import StreamRequest, deliver_batch
from actors.scripted import Reply, Script, Text, open_scripted_server
from kernel import FallbackWarning, Message, Prompt, StreamError, StreamRetry, TurnCompleted
from kernel.stream import Completed, FallbackTransport, OutputTextDelta


class BrokenTransport:
    """A primary transport that never gets through (a WebSocket that keeps dropping)."""

    name = "broken"

    def __init__(self) -> None:
        self.opened = self.closed = False
        self.attempts = 0
        self.states: list[Any] = []

    @asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        self.opened = True
        try:
            yield
        finally:
            self.closed = True

    def session_state(self) -> dict[str, int]:
        return {"attempts": 0}

    async def stream(self, request: StreamRequest) -> None:
        self.attempts += 1
        request.state["attempts"] += 1
        self.states.append(request.state)
        await trio.sleep(0.01)
        raise StreamError("socket closed before response.completed")


class CannedTransport:
    """A transport with no network at all: answers every request with the same text."""

    name = "canned"

    def __init__(self, text: str) -> None:
        self.text = text
        self.bodies: list[dict[str, Any]] = []

    @asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        yield

    def session_state(self) -> None:
        return None

    async def stream(self, request: StreamRequest) -> None:
        self.bodies.append(request.body)
        await deliver_batch(request, [OutputTextDelta("msg_1", self.text)], None)
        await deliver_batch(request, [Completed("resp_1", None)], None)


def settings(base_url: str = "http://127.0.0.1:1") -> ModelSettings:
    return ModelSettings(base_url=base_url, model="scripted-model", stream_max_retries=2)


def test_the_default_actor_is_websocket_then_http_on_the_responses_wire() -> None:
    actor = ModelActor(settings())
    assert [t.name for t in actor.transports] == ["websocket", "http"]
    assert isinstance(actor.transports[1], HttpSseTransport)
    assert all(isinstance(t, ModelTransport) for t in actor.transports)
    client = actor.client()
    assert isinstance(client, FallbackTransport)
    assert client.has_fallback() and client.try_switch_fallback_transport()
    assert client.transport is actor.transports[1] and not client.has_fallback()


@pytest.mark.parametrize(
    ("kw", "names"),
    [
        ({"transport": "http"}, ["http"]),
        ({"transport": "websocket"}, ["websocket"]),
        ({"wire": "chat"}, ["http"]),  # the Chat wire is HTTP only, "auto" included
    ],
)
def test_the_transport_setting_chooses_the_transports(kw: dict[str, Any], names: list[str]) -> None:
    actor = ModelActor(ModelSettings(base_url="http://127.0.0.1:1/v1", model="m", **kw))
    assert [t.name for t in actor.transports] == names
    client = actor.client()
    assert not client.has_fallback() and not client.try_switch_fallback_transport()


def test_bad_transport_settings_are_named() -> None:
    with pytest.raises(ValueError, match="transport must be 'auto', 'websocket' or 'http'"):
        ModelSettings(base_url="http://h/v1", model="m", transport="carrier-pigeon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs wire='responses'"):
        ModelSettings(base_url="http://h/v1", model="m", transport="websocket", wire="chat")
    with pytest.raises(ValueError, match="max_retry_after"):
        ModelSettings(base_url="http://h/v1", model="m", max_retry_after=float("inf"))


def test_bad_transport_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="at least one transport"):
        ModelActor(settings(), transports=[])
    with pytest.raises(ValueError, match="http_client or transports"):
        import httpx

        ModelActor(settings(), transports=[CannedTransport("x")], http_client=httpx.AsyncClient())


async def test_a_transport_without_network_streams_through_the_actor() -> None:
    canned = CannedTransport("hello")
    async with open_model_actor(settings(), transports=[canned]) as actor:
        async with actor.client().stream(Prompt(input=[Message.user("hi")])) as batches:
            events = [e async for batch in batches for e in batch]
    assert [type(e).__name__ for e in events] == ["TextDelta", "Completed"]
    assert canned.bodies[0]["model"] == "scripted-model" and canned.bodies[0]["stream"] is True


async def test_budget_spent_on_the_primary_falls_back_to_http_for_good(autojump_clock: trio.testing.MockClock) -> None:
    script = Script([Reply(items=[Text("over HTTP")]), Reply(items=[Text("still HTTP")])])
    broken = BrokenTransport()
    async with open_scripted_server(script) as server:
        s = settings(server.base_url)
        async with open_model_actor(s, transports=[broken, HttpSseTransport(s)]) as actor:
            assert broken.opened
            async with open_session(model=actor) as session:
                async with session.subscribe() as sub:
                    first = await session.run("hello")
                    second = await session.run("again")
                    events = sub.take_nowait()
    assert broken.closed
    # the budget (2 retries) is spent on the primary: 3 attempts, then one switch, never back
    assert broken.attempts == 3 and broken.states[0] is broken.states[-1] and broken.states[0]["attempts"] == 3
    assert first.status == "completed" and first.last_agent_message == "over HTTP"
    assert second.status == "completed" and second.last_agent_message == "still HTTP"
    assert len(server.requests) == 2
    warnings = [e for e in events if isinstance(e, FallbackWarning)]
    assert len(warnings) == 1 and "socket closed" in warnings[0].message
    # quiet on the first retry while a fallback exists (a single blip stays silent)
    assert [e.retries for e in events if isinstance(e, StreamRetry)] == [2]
    assert sum(isinstance(e, TurnCompleted) for e in events) == 2


async def test_fallback_is_per_session(autojump_clock: trio.testing.MockClock) -> None:
    canned = CannedTransport("primary")
    broken = BrokenTransport()
    async with open_model_actor(settings(), transports=[broken, canned]) as actor:
        fell_back = actor.client()
        assert fell_back.has_fallback() and fell_back.try_switch_fallback_transport()
        assert fell_back.transport is canned and not fell_back.has_fallback()
        fresh = actor.client()
        assert fresh.transport is broken
        async with fell_back.stream(Prompt(input=[Message.user("hi")])) as batches:
            assert [type(e).__name__ async for b in batches for e in b] == ["TextDelta", "Completed"]
        with pytest.raises(StreamError, match="socket closed"):
            async with fresh.stream(Prompt(input=[Message.user("hi")])) as batches:
                async for _ in batches:
                    pass
