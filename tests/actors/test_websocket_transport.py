"""The Responses WebSocket transport against an independent WebSocket server (trio-websocket) that
keeps per-connection response state as the real service does: incremental input, resends that
spend no retry budget, faults, fallback to HTTP, and the API key only in the upgrade header."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from actors import ModelSettings, open_session
from actors.model import HttpSseTransport, ModelActor
from actors.model._websocket import WebSocketTransport, websocket_url
from actors.scripted import Reply, Script, Text, open_scripted_server
from actors.tools import tool
from kernel import ContextWindowExceeded, FallbackWarning, InvalidRequest, RateLimited, StreamRetry

from ._fake_ws_service import Received, call_reply, error_frame, open_fake_service, text_reply

KEY = "test-key-for-the-upgrade-only"


def ws_settings(base_url: str, **kw: Any) -> ModelSettings:
    return ModelSettings(base_url=base_url, model="m", api_key=KEY, transport="websocket", **kw)


@tool
def look(part: int) -> str:
    """Look at one part."""
    return f"part {part} looks fine"


def test_the_url_comes_from_the_base_url() -> None:
    assert websocket_url("http://h:8/v1") == "ws://h:8/v1/responses"
    assert websocket_url("https://api.example.com/v1/") == "wss://api.example.com/v1/responses"


async def run_turns(
    settings: ModelSettings, transports: list[Any], inputs: list[str], **kw: Any
) -> tuple[list[Any], list[Any]]:
    """Run ``inputs`` as turns of one session on an actor with ``transports``: (outcomes, events)."""
    actor = ModelActor(settings, transports=transports)
    outcomes: list[Any] = []
    events: list[Any] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        async with open_session(model=actor, **kw) as session:
            for text in inputs:
                async with session.stream(text) as turn:
                    events += [e async for e in turn]
                outcomes.append(turn.outcome)
        nursery.cancel_scope.cancel()
    return outcomes, events


def tool_loop(calls: int) -> Any:
    """A plan: ``calls`` tool calls in a row, then an answer; per turn (the user message resets)."""

    def plan(got: Received) -> Any:
        since_user = 0
        for item in reversed(got.full_input):
            if item.get("role") == "user":
                break
            since_user += item.get("type") == "function_call_output"
        if since_user < calls:
            return call_reply(f"c{len(got.full_input)}", "look", {"part": since_user})
        return text_reply(f"done after {since_user}")

    return plan


async def test_follow_ups_send_only_new_items_on_one_connection(autojump_clock: trio.testing.MockClock) -> None:
    async with open_fake_service(plan=tool_loop(3)) as service:
        settings = ws_settings(service.base_url)
        transport = WebSocketTransport(settings)
        outcomes, _ = await run_turns(settings, [transport], ["check", "again"], tools=[look])
    assert [o.status for o in outcomes] == ["completed", "completed"]
    assert [o.last_agent_message for o in outcomes] == ["done after 3", "done after 3"]
    assert service.connections == 1 and transport.connections_opened == 1
    frames = [r.frame for r in service.received]
    assert len(frames) == 8 and transport.requests == 8
    assert "previous_response_id" not in frames[0]
    for frame in frames[1:]:  # every later request: the chain plus only the new items
        assert frame["previous_response_id"].startswith("resp_")
        assert len(frame["input"]) == 1  # a tool output, or the next user message
    assert transport.incremental_requests == 7
    # what the service reconstructed is what HTTP would have sent in full
    last = service.received[-1].full_input
    assert [i.get("type", "message") for i in last].count("function_call_output") == 6
    assert frames[0]["type"] == "response.create" and "stream" not in frames[0]


async def test_the_key_is_only_in_the_upgrade_header(autojump_clock: trio.testing.MockClock) -> None:
    async with open_fake_service(plan=tool_loop(1)) as service:
        settings = ws_settings(service.base_url)
        outcomes, events = await run_turns(settings, [WebSocketTransport(settings)], ["go"], tools=[look])
    assert outcomes[0].status == "completed"
    assert service.received[0].headers["authorization"] == f"Bearer {KEY}"
    assert not any(KEY in frame for frame in service.frames)
    assert not any(KEY in repr(e) for e in events)


async def test_an_unknown_previous_response_resends_in_full_without_a_retry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_fake_service(plan=tool_loop(0)) as service:
        settings = ws_settings(service.base_url)
        transport = WebSocketTransport(settings)
        actor = ModelActor(settings, transports=[transport])
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            async with open_session(model=actor) as session:
                assert (await session.run("one")).status == "completed"
                state = session.host.model.inner._states[0]  # type: ignore[attr-defined]
                state.response_id = "resp_the_server_forgot"  # as after a server-side eviction
                async with session.stream("two") as turn:
                    events = [e async for e in turn]
            nursery.cancel_scope.cancel()
    assert turn.outcome is not None and turn.outcome.status == "completed"
    assert not any(isinstance(e, StreamRetry) for e in events)
    frames = [r.frame for r in service.received]
    assert len(frames) == 2 and "previous_response_id" not in frames[1]
    assert [i.get("role") for i in frames[1]["input"] if i.get("role")] == ["user", "assistant", "user"]


async def test_a_drop_mid_stream_retries_on_a_new_connection_with_the_full_input(
    autojump_clock: trio.testing.MockClock,
) -> None:
    answers = iter([text_reply("first"), "drop", text_reply("second")])
    async with open_fake_service(plan=lambda got: next(answers)) as service:
        settings = ws_settings(service.base_url)
        transport = WebSocketTransport(settings)
        outcomes, events = await run_turns(settings, [transport], ["a", "b"])
    assert [o.last_agent_message for o in outcomes] == ["first", "second"]
    assert service.connections == 2
    retried = service.received[2]
    assert retried.connection == 2 and "previous_response_id" not in retried.frame  # full input again
    assert sum(isinstance(e, StreamRetry) for e in events) == 1


async def test_a_stalled_stream_hits_the_idle_timeout(autojump_clock: trio.testing.MockClock) -> None:
    answers = iter(["stall", text_reply("after the stall")])
    async with open_fake_service(plan=lambda got: next(answers)) as service:
        settings = ws_settings(service.base_url, idle_timeout=5.0)
        outcomes, events = await run_turns(settings, [WebSocketTransport(settings)], ["a"])
    assert outcomes[0].last_agent_message == "after the stall"
    retry = next(e for e in events if isinstance(e, StreamRetry))
    assert "idle timeout" in retry.error and service.connections == 2


@pytest.mark.parametrize(
    ("frame", "error_type", "attempts"),
    [
        (
            error_frame(400, "context_length_exceeded", "Your input exceeds the context window."),
            ContextWindowExceeded,
            1,
        ),
        (error_frame(400, "invalid_value", "Bad value."), InvalidRequest, 1),
        (error_frame(429, "rate_limit_exceeded", "Slow down. Please try again in 1s."), RateLimited, 3),
    ],
)
async def test_error_frames_map_like_http_errors(
    autojump_clock: trio.testing.MockClock, frame: Any, error_type: type[Exception], attempts: int
) -> None:
    async with open_fake_service(plan=lambda got: frame) as service:
        settings = ws_settings(service.base_url, stream_max_retries=2)
        outcomes, _ = await run_turns(settings, [WebSocketTransport(settings)], ["a"])
    assert isinstance(outcomes[0].error, error_type)
    assert len(service.received) == attempts
    assert service.connections == 1  # an error frame leaves the connection usable


async def test_a_refused_upgrade_without_fallback_names_the_endpoint(autojump_clock: trio.testing.MockClock) -> None:
    async with open_fake_service(refuse=404) as service:
        settings = ws_settings(service.base_url)
        outcomes, _ = await run_turns(settings, [WebSocketTransport(settings)], ["a"])
    error = outcomes[0].error
    assert isinstance(error, InvalidRequest) and "HTTP 404" in str(error) and str(service.port) in str(error)


async def test_a_refused_upgrade_goes_to_http_at_once_and_is_remembered(autojump_clock: trio.testing.MockClock) -> None:
    script = Script([Reply(items=[Text("over http")]), Reply(items=[Text("http again")])])
    async with open_fake_service(refuse=426) as service, open_scripted_server(script) as http_server:
        settings = ws_settings(service.base_url)
        http = HttpSseTransport(ModelSettings(base_url=http_server.base_url, model="m", transport="http"))
        ws = WebSocketTransport(settings, fallback=http)
        outcomes, events = await run_turns(settings, [ws, http], ["a", "b"])
        assert ws.refused and service.refusals == 1  # the second request did not try again
        # another actor asks again: by then a different server may listen on that host and port
        assert not WebSocketTransport(settings, fallback=http).refused
    assert [o.last_agent_message for o in outcomes] == ["over http", "http again"]
    assert ws.http_fallbacks == 2 and ws.connections_opened == 0
    assert not any(isinstance(e, (StreamRetry, FallbackWarning)) for e in events)


async def test_every_socket_failing_falls_back_after_the_budget(autojump_clock: trio.testing.MockClock) -> None:
    script = Script([Reply(items=[Text("saved by http")]), Reply(items=[Text("still http")])])
    async with open_fake_service(plan=lambda got: "drop") as service, open_scripted_server(script) as http_server:
        settings = ws_settings(service.base_url, stream_max_retries=2)
        http = HttpSseTransport(ModelSettings(base_url=http_server.base_url, model="m", transport="http"))
        outcomes, events = await run_turns(settings, [WebSocketTransport(settings, fallback=http), http], ["a", "b"])
    assert [o.last_agent_message for o in outcomes] == ["saved by http", "still http"]
    assert len(service.received) == 3  # the first attempt and 2 retries, then HTTP for good
    warnings = [e for e in events if isinstance(e, FallbackWarning)]
    assert len(warnings) == 1 and "Falling back from WebSockets to HTTPS transport" in warnings[0].message
