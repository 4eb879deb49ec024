"""The scripted server routes replies per conversation: keyed scripts (a cursor per session key)
and router callables, over real loopback HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from actors.model import ModelSettings, open_model_actor
from actors.scripted import (
    RecordedRequest,
    Reply,
    Script,
    ScriptError,
    SessionScripts,
    Text,
    load_script,
    open_scripted_server,
)
from actors.session import open_session

from ._scripted_helpers import BODY, CHAT_BODY, chat_chunks, first_line, post

REPO = Path(__file__).resolve().parents[2]
SECRET = "sk-test-SECRET-0123456789abcdef"
ROUNDS = 100


def text_of(streamed: Any) -> str:
    """The assistant text of a streamed Responses reply."""
    item = streamed.of("response.output_item.done")[0]["item"]
    return str(item["content"][0]["text"])


def settings(base_url: str, key: str | None, **kw: Any) -> ModelSettings:
    headers = (("X-Session-Id", key),) if key is not None else ()
    return ModelSettings(base_url=base_url, model="scripted-model", api_key=SECRET, extra_headers=headers, **kw)


def replies_for(name: str) -> list[Reply]:
    # different stream lengths and delays per session and round, so the two sessions' requests
    # interleave differently from round to round
    return [
        Reply(
            items=[Text(f"{name} reply {i}", chunk_size=1 + (i + len(name)) % 4)],
            delta_delay=((i * 7 + len(name)) % 3) * 0.01,
        )
        for i in range(ROUNDS)
    ]


async def test_two_concurrent_sessions_each_get_their_own_replies(autojump_clock: trio.testing.MockClock) -> None:
    scripts = Script.per_session({"alice": replies_for("alice"), "bob": replies_for("bob")})
    async with open_scripted_server(scripts) as server:
        async with (
            open_session(model=settings(server.base_url, "alice")) as alice,
            open_session(model=settings(server.base_url, "bob")) as bob,
        ):
            for i in range(ROUNDS):
                got: dict[str, Any] = {}

                async def turn(name: str, session: Any, i: int = i, got: dict[str, Any] = got) -> None:
                    got[name] = await session.run(f"{name} asks {i}")

                async with trio.open_nursery() as nursery:
                    # alternate who starts first
                    order = [("alice", alice), ("bob", bob)] if i % 2 else [("bob", bob), ("alice", alice)]
                    for name, session in order:
                        nursery.start_soon(turn, name, session)
                for name in ("alice", "bob"):
                    assert got[name].status == "completed", got[name]
                    assert got[name].last_agent_message == f"{name} reply {i}"
    assert server.served_by_session == {"alice": ROUNDS, "bob": ROUNDS}
    assert server.replies_served == 2 * ROUNDS
    # every request carried its session's key and was answered from that session's script
    for request in server.requests:
        assert request.session == request.headers["x-session-id"]
        assert request.headers["authorization"] == "Bearer [REDACTED]"
        assert f"{request.session} asks {request.reply_index}" in json.dumps(request.body["input"][-1])


async def test_shared_model_actor_and_chat_wire_route_by_key(autojump_clock: trio.testing.MockClock) -> None:
    """Two sessions sharing one ModelActor cannot set headers apart; two actors on the Chat wire
    can, and a mapping works as the script."""
    async with open_scripted_server({"a": ["A1", "A2"], "b": Script(["B1"], cycle=True)}) as server:
        async with (
            open_model_actor(settings(server.base_url, "a", wire="chat")) as actor_a,
            open_model_actor(settings(server.base_url, "b", wire="chat")) as actor_b,
            open_session(model=actor_a) as sa,
            open_session(model=actor_b) as sb,
        ):
            for expected_a, expected_b in (("A1", "B1"), ("A2", "B1"), ("Done.", "B1")):
                outcomes: dict[str, Any] = {}

                async def run(name: str, session: Any, outcomes: dict[str, Any] = outcomes) -> None:
                    outcomes[name] = await session.run("hi")

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(run, "a", sa)
                    nursery.start_soon(run, "b", sb)
                assert outcomes["a"].last_agent_message == expected_a
                assert outcomes["b"].last_agent_message == expected_b
    assert server.served_by_session == {"a": 3, "b": 3}
    assert {r.endpoint for r in server.requests} == {"chat"}


async def test_key_from_body_fields_and_custom_header() -> None:
    scripts = Script.per_session({"k1": ["one", "one again"], "k2": ["two"]}, header="X-Conversation")
    async with open_scripted_server(scripts) as server, httpx.AsyncClient() as client:
        got = await post(client, server.base_url + "/responses", {**BODY, "prompt_cache_key": "k1"})
        assert text_of(got) == "one"
        chunks = chat_chunks(await post(client, server.base_url + "/chat/completions", {**CHAT_BODY, "user": "k2"}))
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1] if c["choices"]) == "two"
        # the header wins over the body
        got = await post(
            client, server.base_url + "/responses", {**BODY, "prompt_cache_key": "k2"}, {"X-Conversation": "k1"}
        )
        assert text_of(got) == "one again"
        assert got.of("response.created")[0]["response"]["id"] == "resp_k1_1"
    assert [r.session for r in server.requests] == ["k1", "k2", "k1"]
    assert [r.reply_index for r in server.requests] == [0, 0, 1]


async def test_unknown_or_missing_key_is_a_clear_error(autojump_clock: trio.testing.MockClock) -> None:
    scripts = Script.per_session({"alice": ["hi alice"], "bob": ["hi bob"]})
    async with open_scripted_server(scripts) as server:
        async with httpx.AsyncClient() as client:
            unknown = await post(client, server.base_url + "/responses", headers={"X-Session-Id": "carol"})
            missing = await post(client, server.base_url + "/responses")
        assert unknown.status == 404
        error = json.loads(unknown.body)["error"]
        assert "'carol'" in error["message"] and "['alice', 'bob']" in error["message"]
        assert error["code"] == "unknown_session"
        assert missing.status == 400
        error = json.loads(missing.body)["error"]
        assert "x-session-id" in error["message"] and "['alice', 'bob']" in error["message"]
        # a session with a key that has no script fails its turn with the server's message
        async with open_session(model=settings(server.base_url, "carol")) as carol:
            outcome = await carol.run("hello?")
        assert outcome.status == "failed"
        assert "carol" in str(outcome.error)
        assert server.served_by_session == {}
        assert all(r.reply_index is None for r in server.requests)


async def test_router_sees_the_request_and_branches_on_the_body(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[RecordedRequest] = []

    def router(request: RecordedRequest) -> Reply | str:
        seen.append(request)
        last = request.body["input"][-1]
        asked = last["content"][0]["text"] if isinstance(last["content"], list) else last["content"]
        if "weather" in asked:
            return Reply(items=[Text("It is sunny.", chunk_size=3)])
        return f"You said: {asked} ({request.session})"

    async with open_scripted_server(router) as server:
        async with (
            open_session(model=settings(server.base_url, "s1")) as s1,
            open_session(model=settings(server.base_url, None)) as s2,
        ):
            assert (await s1.run("what is the weather?")).last_agent_message == "It is sunny."
            # no header: the key is the body's prompt_cache_key, which defaults to the session's id
            assert (await s2.run("hello")).last_agent_message == f"You said: hello ({s2.session_id})"
            assert (await s1.run("thanks")).last_agent_message == "You said: thanks (s1)"
    assert [r.session for r in seen] == ["s1", s2.session_id, "s1"]
    # (over the default transport, WebSocket: each request a response.create frame on the upgraded GET)
    assert all(r.transport == "websocket" and r.path == "/v1/responses" and r.reply_index is None for r in seen)
    assert all(r.headers["authorization"] == "Bearer [REDACTED]" for r in seen)
    assert SECRET not in repr(seen)
    assert server.replies_served == 3 and len(server.requests) == 3


async def test_router_exceptions_become_http_500() -> None:
    def router(request: RecordedRequest) -> Reply:
        if request.body.get("prompt_cache_key") == "bad":
            return 42  # type: ignore[return-value]
        raise LookupError("no reply for this one")

    async with open_scripted_server(router) as server, httpx.AsyncClient() as client:
        raised = await post(client, server.base_url + "/responses")
        wrong = await post(client, server.base_url + "/responses", {**BODY, "prompt_cache_key": "bad"})
        # the server keeps serving after a failing router
        again = await post(client, server.base_url + "/responses")
    assert raised.status == 500
    message = json.loads(raised.body)["error"]["message"]
    assert "router" in message and "LookupError: no reply for this one" in message
    assert wrong.status == 500
    assert "returned int, not a Reply" in json.loads(wrong.body)["error"]["message"]
    assert again.status == 500


KEYED_JSON = {
    "sessions": {
        "alice": {"replies": ["alice 1", {"items": [{"type": "text", "text": "alice 2"}]}], "model": "m-alice"},
        "bob": ["bob 1"],
    }
}


async def test_json_keyed_script(tmp_path: Path) -> None:
    path = tmp_path / "keyed.json"
    path.write_text(json.dumps(KEYED_JSON))
    scripts = load_script(path)
    assert isinstance(scripts, SessionScripts)
    assert SessionScripts.from_json(KEYED_JSON).header == "x-session-id"
    assert isinstance(load_script(["plain"]), Script)
    async with open_scripted_server(scripts) as server, httpx.AsyncClient() as client:
        url = server.base_url + "/responses"
        b1 = await post(client, url, headers={"X-Session-Id": "bob"})
        a1 = await post(client, url, headers={"X-Session-Id": "alice"})
        a2 = await post(client, url, headers={"X-Session-Id": "alice"})
        b2 = await post(client, url, headers={"X-Session-Id": "bob"})
    assert [text_of(s) for s in (b1, a1, a2, b2)] == ["bob 1", "alice 1", "alice 2", "Done."]
    assert a1.of("response.created")[0]["response"]["model"] == "m-alice"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"sessions": {}}, "no sessions"),
        ({"sessions": {"a": ["x"]}, "cycle": True}, r"unknown key\(s\) \['cycle'\]"),
        ({"sessions": {"a": {"replies": [{"itemz": []}]}}}, r"sessions\['a'\]\.replies\[0\]: unknown key"),
        ({"sessions": {"a": {"replies": "x"}}}, r"sessions\['a'\]\.replies: expected a list"),
        ({"sessions": ["a"]}, "script.sessions: expected a JSON object"),
        ({"sessions": {"a": []}, "header": "bad header"}, "not an HTTP header name"),
    ],
)
def test_json_keyed_script_errors_name_the_place(bad: Any, message: str) -> None:
    with pytest.raises(ScriptError, match=message):
        load_script(bad)


def test_script_from_json_refuses_the_keyed_form_and_bad_python_forms() -> None:
    with pytest.raises(ScriptError, match="load_script"):
        Script.from_json(KEYED_JSON)
    with pytest.raises(ScriptError, match="no sessions"):
        Script.per_session({})
    with pytest.raises(ScriptError, match="non-empty string"):
        Script.per_session({"": ["x"]})
    with pytest.raises(ScriptError, match="expected a Script or a list of replies"):
        Script.per_session({"a": "just a string"})


async def test_open_scripted_server_rejects_other_values() -> None:
    with pytest.raises(TypeError, match="got int"):
        async with open_scripted_server(42):  # type: ignore[arg-type]
            pass


async def test_cli_serves_a_keyed_script(tmp_path: Path) -> None:
    path = tmp_path / "keyed.json"
    path.write_text(json.dumps(KEYED_JSON))
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "actors.scripted", "--port", "0", "--script", str(path)],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        url = (await first_line(proc)).removeprefix("listening on ") + "/v1/responses"
        async with httpx.AsyncClient() as client:
            bob = await post(client, url, headers={"X-Session-Id": "bob"})
            carol = await post(client, url, headers={"X-Session-Id": "carol"})
        assert text_of(bob) == "bob 1"
        assert carol.status == 404 and "carol" in carol.body.decode()
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
