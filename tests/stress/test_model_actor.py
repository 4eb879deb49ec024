"""ModelActor regressions found by the stress suite: a TLS context built per actor (~50-150 ms of
CPU and a few hundred KiB per session: they now share one), and a shielded post-completion drain
that held a session's exit — even an abrupt cancel — for up to 0.5 s."""

from __future__ import annotations

import ssl
from typing import Any
from unittest import mock

import httpx
import trio
import trio.testing
from hypothesis import example, given, settings, strategies as st

from actors import ModelSettings, open_session
from actors.model import default_ssl_context, open_model_actor
from actors.scripted import Reply, Script, Stall, Text, open_scripted_server
from actors.scripted._render import render_chat, render_responses


@settings(max_examples=10)
@given(n=st.integers(2, 4), https=st.booleans())
@example(n=2, https=False).via("regression: a TLS context was built per actor, even for http:// loopback")
def test_model_actors_share_one_tls_context(n: int, https: bool) -> None:
    seen: list[Any] = []
    real = httpx.AsyncClient

    def spy(*args: Any, **kwargs: Any) -> httpx.AsyncClient:
        seen.append(kwargs.get("verify", True))
        return real(*args, **kwargs)

    async def main() -> None:
        base = "https://example.invalid/v1" if https else "http://127.0.0.1:9/v1"
        for _ in range(n):
            async with open_model_actor(ModelSettings(base_url=base, model="m")):
                pass

    with mock.patch("actors.model._http_sse.httpx.AsyncClient", spy):
        trio.run(main)
    assert len(seen) == n
    assert all(isinstance(v, ssl.SSLContext) for v in seen)
    assert all(v is default_ssl_context() for v in seen)
    assert default_ssl_context().verify_mode == ssl.CERT_REQUIRED and default_ssl_context().check_hostname


# --------------------------------------------------------------------------------------------
# Regression: after a completed response the ModelActor drains the body's tail so httpx can
# reuse the connection; that drain was shielded from cancellation, so leaving — or abruptly
# cancelling — a session whose server was slow to finish the body took the full 0.5 s cap.


async def _after_completed_response(stall: float, how: str, wire: str) -> tuple[float, int]:
    reply = Reply(items=[Text("hi", chunk_size=1)])
    rendered = (
        render_responses(reply, tag="0", model="m")
        if wire == "responses"
        else render_chat(reply, tag="0", model="m", include_usage=True)
    )
    slow_tail = Reply(
        items=[Text("hi", chunk_size=1)], faults=[Stall(after_events=len(rendered.events), seconds=stall)]
    )
    async with open_scripted_server(Script([slow_tail], cycle=True)) as server:
        model = ModelSettings(base_url=server.base_url, model="m", wire=wire)  # type: ignore[arg-type]
        with trio.CancelScope() as outer:
            async with open_session(model=model) as session:
                assert (await session.run("one")).status == "completed"
                if how == "next_turn":
                    assert (await session.run("two")).status == "completed"
                start = trio.current_time()
                if how == "cancel":
                    outer.cancel()
                    await trio.sleep_forever()
        return trio.current_time() - start, len(server.requests)


@settings(max_examples=20)
@given(
    stall=st.floats(0.6, 600),
    how=st.sampled_from(["close", "cancel", "next_turn"]),
    wire=st.sampled_from(["responses", "chat"]),
)
@example(stall=60.0, how="cancel", wire="responses").via(
    "regression: a shielded drain held an abrupt cancel of the session for 0.5 s"
)
@example(stall=60.0, how="close", wire="chat")
def test_leaving_a_session_is_prompt_while_a_completed_body_drains(stall: float, how: str, wire: str) -> None:
    elapsed, requests = trio.run(
        _after_completed_response, stall, how, wire, clock=trio.testing.MockClock(autojump_threshold=0)
    )
    assert elapsed < 0.05, f"leaving the session took {elapsed:.3f}s (virtual)"
    assert requests == (2 if how == "next_turn" else 1)
