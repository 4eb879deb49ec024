"""The scripted model server's streams over real HTTP on loopback: Responses, Chat Completions, the official SDK."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio

from actors.scripted import (
    REDACTED,
    CustomToolCall,
    FunctionCall,
    RawItem,
    Reasoning,
    Reply,
    Script,
    Text,
    Usage,
    open_scripted_server,
)

from ._scripted_helpers import BODY, CHAT_BODY, Streamed, chat_chunks, post

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
