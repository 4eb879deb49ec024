"""The scripted model server, over real HTTP on loopback (httpx, the official SDK, the CLI)."""

from __future__ import annotations

import functools
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

from actors.model._sse import SSEDecoder
from actors.scripted import (
    REDACTED,
    CustomToolCall,
    Disconnect,
    ErrorEvent,
    Failed,
    FunctionCall,
    HttpError,
    Incomplete,
    Malformed,
    RawItem,
    Reasoning,
    Reply,
    Script,
    ScriptError,
    Stall,
    Text,
    Usage,
    open_scripted_server,
    rate_limit_headers,
)

REPO = Path(__file__).resolve().parents[2]
BODY = {"model": "m", "input": [], "stream": True}
CHAT_BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


class Streamed:
    """A streamed response read to its end (or to the transport error that ended it)."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: httpx.Headers = httpx.Headers()
        self.raw: list[tuple[str | None, bytes]] = []
        self.body = b""
        self.error: Exception | None = None
        self.partial_event = False

    @functools.cached_property
    def events(self) -> list[dict[str, Any]]:
        """Every event's JSON (Responses API); read it only after the stream ended."""
        return [json.loads(data) for _name, data in self.raw]

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == type_]


async def post(
    client: httpx.AsyncClient,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> Streamed:
    out = Streamed()
    decoder = SSEDecoder()
    try:
        async with client.stream("POST", url, json=BODY if body is None else body, headers=headers) as response:
            out.status, out.headers = response.status_code, response.headers
            async for chunk in response.aiter_bytes():
                out.body += chunk
                out.raw += decoder.feed(chunk)
    except httpx.TransportError as exc:
        out.error = exc
    out.partial_event = decoder.finish()
    return out


def chat_chunks(streamed: Streamed) -> list[Any]:
    """The Chat Completions chunks' JSON; ``"[DONE]"`` stays a string."""
    return [data.decode() if data == b"[DONE]" else json.loads(data) for _name, data in streamed.raw]


# ---- Responses API streaming -----------------------------------------------------------------


async def test_text_streams_as_deltas_and_reassembles() -> None:
    usage = Usage(input_tokens=1200, cached_tokens=1024, output_tokens=300, reasoning_tokens=128)
    script = Script([Reply(items=[Text("Hello world", chunk_size=5)], usage=usage)])
    async with open_scripted_server(script) as server, httpx.AsyncClient() as client:
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1" and server.port > 0
        got = await post(client, server.base_url + "/responses")
    assert got.status == 200 and got.error is None
    assert got.headers["content-type"].startswith("text/event-stream")
    assert got.headers["transfer-encoding"] == "chunked"
    types = [e["type"] for e in got.events]
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [name for name, _ in got.raw] == types  # `event:` repeats the JSON's type
    assert [e["sequence_number"] for e in got.events] == list(range(len(types)))
    assert [e["delta"] for e in got.of("response.output_text.delta")] == ["Hello", " worl", "d"]
    item = got.of("response.output_item.done")[0]["item"]
    assert item["type"] == "message" and item["role"] == "assistant"
    assert item["content"][0]["text"] == "Hello world" and item["id"].startswith("msg_")
    completed = got.of("response.completed")[0]["response"]
    assert completed["status"] == "completed" and completed["output"] == [item]
    assert completed["usage"] == {
        "input_tokens": 1200,
        "input_tokens_details": {"cached_tokens": 1024},
        "output_tokens": 300,
        "output_tokens_details": {"reasoning_tokens": 128},
        "total_tokens": 1500,
    }
    assert completed["id"] == got.events[0]["response"]["id"]


async def test_tool_calls_and_reasoning_stream_and_reassemble() -> None:
    args = json.dumps({"cmd": ["bash", "-lc", "ls -la"], "workdir": "/tmp/ünï"})
    patch = "*** Begin Patch\n*** Add File: a.txt\n+hello\n*** End Patch\n"
    script = Script(
        [
            Reply(
                items=[
                    Reasoning(
                        ["First **section**", "Second"],
                        chunk_size=4,
                        content="raw thoughts",
                        encrypted_content="enc",
                    ),
                    FunctionCall("call_1", "shell", args, chunk_size=7),
                    CustomToolCall("call_2", "apply_patch", patch, chunk_size=9),
                    RawItem({"type": "web_search_call", "id": "ws_1", "status": "completed"}),
                ],
                end_turn=False,
            )
        ]
    )
    async with open_scripted_server(script) as server, httpx.AsyncClient() as client:
        got = await post(client, server.base_url + "/responses")
    done = [e["item"] for e in got.of("response.output_item.done")]
    reasoning, call, custom, raw = done
    assert reasoning == {
        "id": reasoning["id"],
        "type": "reasoning",
        "summary": [
            {"type": "summary_text", "text": "First **section**"},
            {"type": "summary_text", "text": "Second"},
        ],
        "encrypted_content": "enc",
        "content": [{"type": "reasoning_text", "text": "raw thoughts"}],
    }
    raw_deltas = got.of("response.reasoning_text.delta")
    assert [d["delta"] for d in raw_deltas] == ["raw ", "thou", "ghts"]
    parts = got.of("response.reasoning_summary_part.added")
    assert [p["summary_index"] for p in parts] == [0, 1]
    summary_deltas = got.of("response.reasoning_summary_text.delta")
    assert "".join(d["delta"] for d in summary_deltas if d["summary_index"] == 0) == "First **section**"

    arg_deltas = got.of("response.function_call_arguments.delta")
    assert len(arg_deltas) > 1 and "".join(d["delta"] for d in arg_deltas) == args
    assert got.of("response.function_call_arguments.done")[0]["arguments"] == args
    assert call == {
        "id": call["id"],
        "type": "function_call",
        "status": "completed",
        "call_id": "call_1",
        "name": "shell",
        "arguments": args,
    }
    assert call["id"].startswith("fc_") and {d["item_id"] for d in arg_deltas} == {call["id"]}

    input_deltas = got.of("response.custom_tool_call_input.delta")
    assert "".join(d["delta"] for d in input_deltas) == patch
    assert got.of("response.custom_tool_call_input.done")[0]["input"] == patch
    assert custom["type"] == "custom_tool_call" and custom["input"] == patch
    assert custom["call_id"] == "call_2" and custom["name"] == "apply_patch"
    assert raw == {"type": "web_search_call", "id": "ws_1", "status": "completed"}

    completed = got.of("response.completed")[0]["response"]
    assert completed["output"] == done and completed["end_turn"] is False
    added = got.of("response.output_item.added")
    assert [a["output_index"] for a in added] == [0, 1, 2, 3]


async def test_many_small_deltas() -> None:
    text = "abcdefghij" * 500
    script = Script([Reply(items=[Text(text, chunk_size=1)])])
    async with open_scripted_server(script) as server, httpx.AsyncClient() as client:
        got = await post(client, server.base_url + "/responses")
    deltas = got.of("response.output_text.delta")
    assert len(deltas) == 5000 and "".join(d["delta"] for d in deltas) == text


async def test_events_per_write_does_not_change_the_stream() -> None:
    reply = Reply(items=[Text("a fairly long text " * 20, chunk_size=3)], response_id="resp_x")
    bodies = []
    for per_write in (1, 16, 1000):
        async with open_scripted_server(Script([reply]), events_per_write=per_write) as server:
            async with httpx.AsyncClient() as client:
                got = await post(client, server.base_url + "/responses")
        events = got.events
        for e in events:
            e.get("response", {}).pop("created_at", None)
        bodies.append(events)
    assert bodies[0] == bodies[1] == bodies[2]


async def test_cursor_default_reply_and_cycle() -> None:
    script = Script([Reply(items=[Text("one")]), "two"])
    async with open_scripted_server(script) as server, httpx.AsyncClient() as client:
        texts = []
        for _ in range(4):
            got = await post(client, server.base_url + "/responses")
            texts.append(got.of("response.output_item.done")[0]["item"]["content"][0]["text"])
        assert texts == ["one", "two", "Done.", "Done."]
        assert [r.reply_index for r in server.requests] == [0, 1, None, None]
        assert server.replies_served == 4
        assert server.connections_opened == 1  # keep-alive

    cycling = Script(["a", "b"], cycle=True)
    async with open_scripted_server(cycling) as server, httpx.AsyncClient() as client:
        texts = []
        for _ in range(5):
            got = await post(client, server.base_url + "/responses")
            texts.append(got.of("response.output_item.done")[0]["item"]["content"][0]["text"])
        assert texts == ["a", "b", "a", "b", "a"]


async def test_requests_are_recorded_with_secrets_redacted() -> None:
    async with open_scripted_server(Script(["x", "y"])) as server, httpx.AsyncClient() as client:
        await post(
            client,
            server.base_url + "/responses?debug=1",
            headers={"Authorization": "Bearer sk-very-secret", "x-api-key": "sk-other-secret"},
        )
        await post(client, server.base_url + "/chat/completions", CHAT_BODY)
    first, second = server.requests
    assert first.method == "POST" and first.path == "/v1/responses"
    assert first.endpoint == "responses" and second.endpoint == "chat"
    assert first.body == BODY and second.body == CHAT_BODY
    assert first.headers["authorization"] == f"Bearer {REDACTED}"
    assert first.headers["x-api-key"] == REDACTED
    assert first.headers["content-type"] == "application/json"
    assert "secret" not in repr(server.requests)


async def test_unknown_path_and_non_streaming_requests_consume_no_reply() -> None:
    async with open_scripted_server(Script(["first"])) as server, httpx.AsyncClient() as client:
        missing = await client.post(server.url + "/v1/embeddings", json={})
        assert missing.status_code == 404 and "no route" in missing.json()["error"]["message"]
        unstreamed = await client.post(server.base_url + "/responses", json={"stream": False})
        assert unstreamed.status_code == 400 and "stream" in unstreamed.json()["error"]["message"]
        not_json = await client.post(server.base_url + "/responses", content=b"{nope")
        assert not_json.status_code == 400
        got = await post(client, server.base_url + "/responses")
        assert got.of("response.output_item.done")[0]["item"]["content"][0]["text"] == "first"
        assert [r.reply_index for r in server.requests] == [None, None, None, 0]


async def test_errors_in_the_block_are_not_wrapped() -> None:
    with pytest.raises(KeyError):
        async with open_scripted_server() as server:
            assert server.host == "127.0.0.1"
            raise KeyError("from the body")


async def test_bad_http_gets_400_and_server_lives_on() -> None:
    async with open_scripted_server(Script(["ok"])) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
        reply = b""
        while chunk := await stream.receive_some(4096):
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 400")
        await stream.aclose()
        async with httpx.AsyncClient() as client:
            got = await post(client, server.base_url + "/responses")
        assert got.of("response.completed")


async def test_concurrent_sessions() -> None:
    script = Script([Reply(items=[Text("concurrent text " * 8, chunk_size=2)])], cycle=True)
    limits = httpx.Limits(max_connections=20)
    async with open_scripted_server(script) as server, httpx.AsyncClient(limits=limits) as client:
        results: list[Streamed] = []

        async def one() -> None:
            results.append(await post(client, server.base_url + "/responses"))

        async with trio.open_nursery() as nursery:
            for _ in range(40):
                nursery.start_soon(one)
    assert len(results) == 40 and server.connections_opened <= 20
    for got in results:
        assert "".join(d["delta"] for d in got.of("response.output_text.delta")) == "concurrent text " * 8


# ---- faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status", "error", "headers"),
    [
        (
            HttpError.rate_limited(retry_after=2),
            429,
            {"code": "rate_limit_exceeded"},
            {"retry-after": "2"},
        ),
        (
            HttpError.rate_limited(try_again_in=1.5),
            429,
            {"code": "rate_limit_exceeded"},
            {},
        ),
        (
            HttpError.usage_limit_reached(plan_type="pro", resets_at=1_700_000_000),
            429,
            {
                "type": "usage_limit_reached",
                "message": "The usage limit has been reached",
                "plan_type": "pro",
                "resets_at": 1_700_000_000,
            },
            {},
        ),
        (HttpError.server_error(), 500, {"type": "server_error"}, {}),
        (
            HttpError.server_error(503, retry_after=1),
            503,
            {"type": "server_error"},
            {"retry-after": "1"},
        ),
        (HttpError.context_length_exceeded(), 400, {"code": "context_length_exceeded"}, {}),
        (HttpError.unauthorized(), 401, {"code": "invalid_api_key"}, {}),
        (
            HttpError(
                status=418,
                message="teapot",
                type="weird",
                code="brew",
                headers={"retry-after-ms": "28"},
            ),
            418,
            {"message": "teapot", "type": "weird", "code": "brew", "param": None},
            {"retry-after-ms": "28"},
        ),
    ],
)
async def test_http_errors(fault: HttpError, status: int, error: dict[str, Any], headers: dict[str, str]) -> None:
    limits = rate_limit_headers(primary_used_percent=100, primary_window_minutes=300)
    script = Script([Reply(faults=[fault], headers=limits)] * 2 + [Reply(items=["after"])])
    async with open_scripted_server(script) as server, httpx.AsyncClient() as client:
        for endpoint, body in (("/responses", BODY), ("/chat/completions", CHAT_BODY)):
            response = await client.post(server.base_url + endpoint, json=body)
            assert response.status_code == status
            assert response.headers["content-type"] == "application/json"
            assert response.headers["x-codex-primary-used-percent"] == "100"
            assert response.headers["x-codex-primary-window-minutes"] == "300"
            for name, value in headers.items():
                assert response.headers[name] == value
            got = response.json()["error"]
            assert got.items() >= error.items()
            if fault.status == 429 and fault.code == "rate_limit_exceeded" and fault.retry_after is None:
                assert "Please try again in 1.5s." in got["message"]
        # the connection stays usable after an error response
        after = await post(client, server.base_url + "/responses")
        assert after.of("response.completed") and server.connections_opened == 1


async def test_http_error_with_raw_body() -> None:
    script = Script([Reply(faults=[HttpError(status=502, body="<html>bad gateway</html>")])])
    async with open_scripted_server(script) as server, httpx.AsyncClient() as client:
        response = await client.post(server.base_url + "/responses", json=BODY)
    assert response.status_code == 502 and response.text == "<html>bad gateway</html>"


@pytest.mark.parametrize(
    "code",
    [
        "context_length_exceeded",
        "insufficient_quota",
        "usage_not_included",
        "rate_limit_exceeded",
        "server_error",
    ],
)
async def test_response_failed(code: str) -> None:
    message = "Rate limit reached for gpt. Please try again in 28ms." if code.startswith("rate") else code
    script = Script([Reply(items=[Text("partial")], faults=[Failed(code, message)])])
    async with open_scripted_server(script) as server, httpx.AsyncClient() as client:
        got = await post(client, server.base_url + "/responses")
    assert got.error is None and not got.of("response.completed")
    last = got.events[-1]
    assert last["type"] == "response.failed"
    assert last["response"]["status"] == "failed"
    assert last["response"]["error"] == {"code": code, "message": message}
    assert got.of("response.output_item.done")  # the items came first


async def test_response_incomplete_and_error_event() -> None:
    script = Script(
        [
            Reply(items=[Text("cut")], faults=[Incomplete("max_output_tokens")]),
            Reply(faults=[ErrorEvent("server_is_overloaded", "busy")]),
        ]
    )
    async with open_scripted_server(script) as server, httpx.AsyncClient() as client:
        incomplete = await post(client, server.base_url + "/responses")
        error = await post(client, server.base_url + "/responses")
    last = incomplete.events[-1]
    assert last["type"] == "response.incomplete" and last["response"]["status"] == "incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert error.events[-1] == {
        "type": "error",
        "sequence_number": 2,
        "code": "server_is_overloaded",
        "message": "busy",
        "param": None,
    }


async def test_disconnect_after_events() -> None:
    script = Script(
        [
            Reply(items=[Text("Hello world", chunk_size=2)], faults=[Disconnect(after_events=5)]),
            Reply(
                items=[Text("Hello world", chunk_size=2)],
                faults=[Disconnect(after_events=5, mid_event=True)],
            ),
            Reply(
                items=[Text("Hello world", chunk_size=2)],
                faults=[Disconnect(after_events=5, clean=True)],
            ),
            "after",
        ]
    )
    async with open_scripted_server(script) as server, httpx.AsyncClient() as client:
        abrupt = await post(client, server.base_url + "/responses")
        assert isinstance(abrupt.error, httpx.RemoteProtocolError)
        assert len(abrupt.raw) == 5 and not abrupt.partial_event

        mid = await post(client, server.base_url + "/responses")
        assert isinstance(mid.error, httpx.RemoteProtocolError)
        assert len(mid.raw) == 5 and mid.partial_event  # half an event was left over
        assert mid.body.endswith(b"\n\n") is False

        clean = await post(client, server.base_url + "/responses")
        assert clean.error is None and clean.status == 200
        assert len(clean.raw) == 5 and not clean.of("response.completed")

        after = await post(client, server.base_url + "/responses")
        assert after.of("response.completed")


async def test_malformed_event() -> None:
    script = Script([Reply(items=[Text("Hello world", chunk_size=5)], faults=[Malformed(after_events=4)])])
    async with open_scripted_server(script) as server, httpx.AsyncClient() as client:
        got = await post(client, server.base_url + "/responses")
    assert got.raw[4] == ("response.output_text.delta", b"{not json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(got.raw[4][1])
    rest = [json.loads(data) for _name, data in got.raw[:4] + got.raw[5:]]
    assert rest[-1]["type"] == "response.completed"  # the stream goes on after it


async def test_stall_longer_than_the_read_timeout(autojump_clock: trio.testing.MockClock) -> None:
    script = Script(
        [
            Reply(
                items=[Text("Hello world", chunk_size=5)],
                faults=[Stall(after_events=3, seconds=30)],
            )
        ]
    )
    async with open_scripted_server(script) as server:
        async with httpx.AsyncClient(timeout=httpx.Timeout(5.0)) as client:
            start = trio.current_time()
            got = await post(client, server.base_url + "/responses")
    assert isinstance(got.error, httpx.ReadTimeout) and len(got.raw) == 3
    assert 5 <= trio.current_time() - start < 30


async def test_short_stall_then_the_stream_goes_on(autojump_clock: trio.testing.MockClock) -> None:
    script = Script([Reply(items=[Text("Hello world", chunk_size=5)], faults=[Stall(after_events=3, seconds=4)])])
    async with open_scripted_server(script) as server:
        async with httpx.AsyncClient(timeout=httpx.Timeout(5.0)) as client:
            start = trio.current_time()
            got = await post(client, server.base_url + "/responses")
    assert got.error is None and got.of("response.completed")
    assert 4 <= trio.current_time() - start < 5


async def test_delta_delay(autojump_clock: trio.testing.MockClock) -> None:
    script = Script([Reply(items=[Text("abcdefghij", chunk_size=1)], delta_delay=0.5)])
    async with open_scripted_server(script) as server, httpx.AsyncClient() as client:
        start = trio.current_time()
        got = await post(client, server.base_url + "/responses")
    assert "".join(d["delta"] for d in got.of("response.output_text.delta")) == "abcdefghij"
    assert trio.current_time() - start == pytest.approx(5.0)


async def test_rate_limit_headers_on_a_stream() -> None:
    headers = rate_limit_headers(primary_used_percent=42.5, secondary_reset_after_seconds=3600)
    script = Script([Reply(items=["hi"], headers=headers)])
    async with open_scripted_server(script) as server, httpx.AsyncClient() as client:
        got = await post(client, server.base_url + "/responses")
    assert got.headers["x-codex-primary-used-percent"] == "42.5"
    assert got.headers["x-codex-secondary-reset-after-seconds"] == "3600"


def test_invalid_fault_combinations() -> None:
    with pytest.raises(ScriptError, match="HttpError"):
        Reply(faults=[HttpError.server_error(), Stall(after_events=1, seconds=1)])
    with pytest.raises(ScriptError, match="at most one"):
        Reply(faults=[Failed(), Incomplete()])
    with pytest.raises(ScriptError, match="status"):
        HttpError(status=200)


# ---- Chat Completions ----------------------------------------------------------------------------


async def test_chat_text_and_usage() -> None:
    usage = Usage(input_tokens=10, output_tokens=5)
    script = Script([Reply(items=[Text("Hello world", chunk_size=4)], usage=usage), "again"])
    body = {**CHAT_BODY, "stream_options": {"include_usage": True}}
    async with open_scripted_server(script) as server, httpx.AsyncClient() as client:
        got = await post(client, server.base_url + "/chat/completions", body)
        plain = await post(client, server.base_url + "/chat/completions", CHAT_BODY)
    chunks = chat_chunks(got)
    assert all(name is None for name, _ in got.raw)
    assert chunks[-1] == "[DONE]"
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks[1:-3]]
    assert pieces == ["Hell", "o wo", "rld"]
    assert chunks[-3]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-2]["choices"] == []
    assert chunks[-2]["usage"]["prompt_tokens"] == 10
    assert chunks[-2]["usage"]["completion_tokens"] == 5
    assert chunks[-2]["usage"]["total_tokens"] == 15
    plain_chunks = chat_chunks(plain)
    assert plain_chunks[-1] == "[DONE]" and all("usage" not in c for c in plain_chunks[:-1])


async def test_chat_tool_call_fragments() -> None:
    script = Script(
        [
            Reply(
                items=[
                    FunctionCall("call_1", "shell", '{"cmd":"ls -la"}', chunk_size=5),
                    CustomToolCall("call_2", "apply_patch", "*** Begin Patch", chunk_size=6),
                ]
            )
        ]
    )
    async with open_scripted_server(script) as server, httpx.AsyncClient() as client:
        got = await post(client, server.base_url + "/chat/completions", CHAT_BODY)
    chunks = chat_chunks(got)
    assert chunks[-1] == "[DONE]" and chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks[1:-2]:
        for frag in chunk["choices"][0]["delta"]["tool_calls"]:
            call = calls.setdefault(frag["index"], {"arguments": ""})
            if "id" in frag:
                assert not call.get("id")  # id and name come once, in the first fragment
                call["id"], call["name"] = frag["id"], frag["function"]["name"]
            call["arguments"] += frag["function"]["arguments"]
    assert calls == {
        0: {"id": "call_1", "name": "shell", "arguments": '{"cmd":"ls -la"}'},
        1: {"id": "call_2", "name": "apply_patch", "arguments": "*** Begin Patch"},
    }


async def test_chat_faults() -> None:
    script = Script(
        [
            Reply(items=["cut"], faults=[Incomplete()]),
            Reply(items=["x"], faults=[Failed("server_error", "boom")]),
            Reply(items=[Text("Hello world", chunk_size=1)], faults=[Disconnect(after_events=3)]),
            Reply(items=[Text("Hello", chunk_size=1)], faults=[Malformed(after_events=2)]),
        ]
    )
    async with open_scripted_server(script) as server, httpx.AsyncClient() as client:
        url = server.base_url + "/chat/completions"
        incomplete = chat_chunks(await post(client, url, CHAT_BODY))
        assert incomplete[-2]["choices"][0]["finish_reason"] == "length"
        assert incomplete[-1] == "[DONE]"

        failed = chat_chunks(await post(client, url, CHAT_BODY))
        assert failed[-1] == {
            "error": {
                "message": "boom",
                "type": "server_error",
                "param": None,
                "code": "server_error",
            }
        }

        dropped = await post(client, url, CHAT_BODY)
        assert isinstance(dropped.error, httpx.RemoteProtocolError) and len(dropped.raw) == 3

        malformed = await post(client, url, CHAT_BODY)
        assert malformed.raw[2] == (None, b"{not json")
        assert malformed.raw[-1] == (None, b"[DONE]")


# ---- JSON scripts and the CLI --------------------------------------------------------------------

JSON_SCRIPT: dict[str, Any] = {
    "model": "gpt-scripted",
    "cycle": True,
    "default": "bye",
    "replies": [
        "plain text",
        {
            "items": [
                {"type": "reasoning", "summary": ["thinking"], "chunk_size": 3},
                {"type": "text", "text": "Hello world", "chunk_size": 5, "phase": "final_answer"},
                {
                    "type": "function_call",
                    "call_id": "call_1",
                    "name": "shell",
                    "arguments": {"cmd": "ls"},
                },
                {
                    "type": "custom_tool_call",
                    "call_id": "call_2",
                    "name": "apply_patch",
                    "input": "p",
                },
                {"type": "raw", "item": {"type": "web_search_call", "id": "ws_1"}},
            ],
            "usage": {
                "input_tokens": 10,
                "cached_tokens": 2,
                "output_tokens": 5,
                "reasoning_tokens": 1,
            },
            "end_turn": True,
            "headers": {"x-codex-primary-used-percent": 12},
            "delta_delay": 0.25,
            "events_per_write": 4,
        },
        {"faults": [{"kind": "rate_limited", "retry_after": 1.5}]},
        {"faults": [{"kind": "usage_limit_reached", "plan_type": "team", "resets_at": 123}]},
        {
            "faults": [
                {
                    "kind": "http_error",
                    "status": 503,
                    "message": "overloaded",
                    "type": "server_error",
                }
            ]
        },
        {"faults": [{"kind": "context_length_exceeded"}]},
        {
            "faults": [
                {"kind": "server_error", "status": 502},
            ]
        },
        {"faults": [{"kind": "unauthorized"}]},
        {
            "items": ["x"],
            "faults": [{"kind": "failed", "code": "insufficient_quota", "message": "no"}],
        },
        {"faults": [{"kind": "incomplete", "reason": "content_filter"}]},
        {"faults": [{"kind": "error_event", "code": "c", "message": "m"}]},
        {
            "faults": [
                {"kind": "malformed", "after_events": 1},
                {"kind": "stall", "after_events": 2, "seconds": 3},
                {"kind": "disconnect", "after_events": 3, "mid_event": True},
            ]
        },
    ],
}

PY_SCRIPT = Script(
    [
        Reply(items=[Text("plain text")]),
        Reply(
            items=[
                Reasoning(["thinking"], chunk_size=3),
                Text("Hello world", chunk_size=5, phase="final_answer"),
                FunctionCall("call_1", "shell", '{"cmd":"ls"}'),
                CustomToolCall("call_2", "apply_patch", "p"),
                RawItem({"type": "web_search_call", "id": "ws_1"}),
            ],
            usage=Usage(input_tokens=10, cached_tokens=2, output_tokens=5, reasoning_tokens=1),
            end_turn=True,
            headers={"x-codex-primary-used-percent": "12"},
            delta_delay=0.25,
            events_per_write=4,
        ),
        Reply(faults=[HttpError.rate_limited(retry_after=1.5)]),
        Reply(faults=[HttpError.usage_limit_reached(plan_type="team", resets_at=123)]),
        Reply(faults=[HttpError(status=503, message="overloaded", type="server_error")]),
        Reply(faults=[HttpError.context_length_exceeded()]),
        Reply(faults=[HttpError.server_error(502)]),
        Reply(faults=[HttpError.unauthorized()]),
        Reply(items=["x"], faults=[Failed("insufficient_quota", "no")]),
        Reply(faults=[Incomplete("content_filter")]),
        Reply(faults=[ErrorEvent("c", "m")]),
        Reply(
            faults=[
                Malformed(after_events=1),
                Stall(after_events=2, seconds=3),
                Disconnect(after_events=3, mid_event=True),
            ]
        ),
    ],
    cycle=True,
    default=Reply(items=[Text("bye")]),
    model="gpt-scripted",
)


def test_json_script_matches_the_python_form(tmp_path: Path) -> None:
    assert Script.from_json(JSON_SCRIPT) == PY_SCRIPT
    path = tmp_path / "script.json"
    path.write_text(json.dumps(JSON_SCRIPT))
    assert Script.from_json(path) == PY_SCRIPT
    assert Script.from_json(str(path)) == PY_SCRIPT
    assert Script.from_json(["a", {"items": ["b"]}]) == Script(["a", "b"])


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"replies": [{"itemz": []}]}, r"replies\[0\]: unknown key\(s\) \['itemz'\]"),
        ({"replies": [{"faults": [{"kind": "stal"}]}]}, r"replies\[0\]\.faults\[0\]: kind 'stal'"),
        (
            {"replies": [{"items": [{"type": "text"}]}]},
            r"replies\[0\]\.items\[0\]: missing key\(s\) \['text'\]",
        ),
        (
            {"replies": [{"faults": [{"kind": "stall", "after_events": 1, "seconds": -1}]}]},
            "seconds must be >= 0",
        ),
        ({"replies": "nope"}, "expected a list"),
        (42, "expected a JSON object"),
    ],
)
def test_json_script_errors_name_the_place(bad: Any, message: str) -> None:
    with pytest.raises(ScriptError, match=message):
        Script.from_json(bad)


async def test_cli_serves_a_script(tmp_path: Path) -> None:
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"replies": [{"items": [{"type": "text", "text": "from the cli", "chunk_size": 4}]}]}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "actors.scripted", "--port", "0", "--script", str(path)],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env=env,
    )
    try:
        assert proc.stdout is not None
        with trio.fail_after(20):
            out = b""
            while b"\n" not in out:
                chunk = await proc.stdout.receive_some(1024)
                assert chunk, "the CLI exited before printing its line"
                out += chunk
        line = out.decode().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ")
        async with httpx.AsyncClient() as client:
            got = await post(client, url + "/v1/responses")
        item = got.of("response.output_item.done")[0]["item"]
        assert item["content"][0]["text"] == "from the cli"
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await proc.wait() == 0
        assert await proc.stdout.receive_some(1024) == b""  # exactly one line
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# ---- the official SDK ----------------------------------------------------------------------------


async def test_openai_sdk_consumes_both_streams() -> None:
    openai = pytest.importorskip("openai")
    reply = Reply(
        items=[
            Reasoning(["Looking."], chunk_size=3),
            Text("Hello world", chunk_size=5),
            FunctionCall("call_1", "shell", '{"cmd":"ls"}', chunk_size=4),
        ],
        usage=Usage(input_tokens=10, output_tokens=5),
    )
    script = Script([reply], cycle=True)

    def drive(base_url: str) -> dict[str, Any]:
        client = openai.OpenAI(base_url=base_url, api_key="sk-test-key", max_retries=0)
        with client.responses.stream(model="m", input="hi") as stream:
            deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
            final = stream.get_final_response()
        calls = [(o.call_id, o.name, o.arguments) for o in final.output if o.type == "function_call"]
        with client.chat.completions.stream(
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            stream_options={"include_usage": True},
        ) as chat:
            for _event in chat:
                pass
            completion = chat.get_final_completion()
        message = completion.choices[0].message
        return {
            "responses": (final.output_text, "".join(deltas), calls, final.usage.total_tokens),
            "chat": (
                message.content,
                [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []],
                completion.choices[0].finish_reason,
                completion.usage.total_tokens if completion.usage else None,
            ),
        }

    async with open_scripted_server(script) as server:
        seen = await trio.to_thread.run_sync(drive, server.base_url)
    calls = [("call_1", "shell", '{"cmd":"ls"}')]
    assert seen["responses"] == ("Hello world", "Hello world", calls, 15)
    assert seen["chat"] == ("Hello world", calls, "tool_calls", 15)
    assert all(r.headers["authorization"] == f"Bearer {REDACTED}" for r in server.requests)
