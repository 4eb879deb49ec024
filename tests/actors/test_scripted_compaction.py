"""The scripted server's context window and compaction (PROTOCOL §6) over real loopback sockets:
window refusals on each wire (not consuming replies), usage estimates, ``/v1/responses/compact``
and its faults, and server-side compaction from ``context_management``."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio
from trio_websocket import open_websocket_url

from actors.scripted import (
    WINDOW_MESSAGE,
    FunctionCall,
    HttpError,
    Reply,
    Script,
    ScriptError,
    ServerOptions,
    Text,
    Usage,
    compaction_item,
    estimate_tokens,
    is_compaction,
    load_script,
    open_scripted_server,
)
from kernel.items import item_from_wire, item_to_wire

from ._scripted_helpers import CHAT_BODY, chat_chunks, first_line, post

REPO = Path(__file__).resolve().parents[2]
TERMINAL = ("response.completed", "response.failed", "response.incomplete", "error")


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}


def call_output(call_id: str, output: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def body(input: Any, **fields: Any) -> dict[str, Any]:
    return {"model": "m", "input": input, "stream": True, **fields}


def long_history(n: int, size: int = 400) -> list[dict[str, Any]]:
    """A conversation of ``n`` rounds whose tool outputs are ``size`` characters each."""
    items: list[dict[str, Any]] = []
    for i in range(n):
        items += [user(f"question {i}"), call_output(f"call_{i}", "x" * size), assistant(f"answer {i}")]
    return items


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


# ---- the estimate --------------------------------------------------------------------------------


def test_estimate_is_json_bytes_over_four_rounded_up() -> None:
    items = [user("héllo"), assistant("hi")]
    size = len(json.dumps(items, separators=(",", ":"), ensure_ascii=False).encode())
    assert estimate_tokens(items) == math.ceil(size / 4)
    # instructions count as their JSON; a string input is one user message
    assert estimate_tokens(items, "be brief") == math.ceil((size + len(b'"be brief"')) / 4)
    assert estimate_tokens("hi") == estimate_tokens([user("hi")])
    assert estimate_tokens(None) == estimate_tokens([]) == 1  # "[]"


def test_a_compaction_item_counts_small_and_stands_for_what_it_summarised() -> None:
    history = long_history(20)
    item = compaction_item(history)
    assert is_compaction(item) and item["type"] == "compaction" and item["id"].startswith("cmp_")
    assert compaction_item(history) == item  # deterministic
    users = [i for i in history if i.get("role") == "user"]
    compacted = [*users, item]
    expected = len(msgspec.json.encode(users)) + len(item["encrypted_content"])
    assert estimate_tokens(compacted) == math.ceil(expected / 4)
    # the items before the latest compaction item count only as their user messages
    assert estimate_tokens([*history, item]) == estimate_tokens(compacted)
    after = [user("next")]
    assert estimate_tokens([*history, item, *after]) == math.ceil(
        (len(msgspec.json.encode([*users, *after])) + len(item["encrypted_content"])) / 4
    )
    assert estimate_tokens(compacted) * 10 < estimate_tokens(history)


# ---- the window, on each wire --------------------------------------------------------------------


async def test_responses_over_the_window_is_refused_without_consuming_a_reply() -> None:
    small, big = [user("hi")], long_history(5)
    window = estimate_tokens(big) - 1
    script = Script([Reply(items=[Text("first")]), Reply(items=[Text("second")])])
    async with open_scripted_server(script, context_window=window) as server, httpx.AsyncClient() as client:
        url = server.base_url + "/responses"
        ok = await post(client, url, body(small))
        refused = await client.post(url, json=body(big))
        again = await post(client, url, body(small))

    assert text_of(ok.events) == "first"
    assert refused.status_code == 400
    assert refused.headers["content-type"] == "application/json"
    assert refused.json() == {
        "error": {
            "message": WINDOW_MESSAGE,
            "type": "invalid_request_error",
            "param": "input",
            "code": "context_length_exceeded",
        }
    }
    assert (
        WINDOW_MESSAGE == "Your input exceeds the context window of this model. Please adjust your input and try again."
    )
    assert text_of(again.events) == "second"  # the refusal consumed nothing
    assert server.window_refusals == 1
    assert server.replies_served == 2
    record = server.requests[1]
    assert record.window_refused and record.reply_index is None
    assert record.input_tokens == estimate_tokens(big) == window + 1
    assert [r.window_refused for r in server.requests] == [False, True, False]
    assert [r.reply_index for r in server.requests] == [0, None, 1]
    assert server.requests[0].input_tokens == estimate_tokens(small)


async def test_an_input_exactly_at_the_window_is_accepted() -> None:
    big = long_history(5)
    async with open_scripted_server(context_window=estimate_tokens(big)) as server, httpx.AsyncClient() as client:
        at_limit = await post(client, server.base_url + "/responses", body(big))
        over = await client.post(server.base_url + "/responses", json=body([*big, user("")]))
    assert at_limit.status == 200 and over.status_code == 400
    assert server.window_refusals == 1 and server.replies_served == 1


async def test_instructions_count_towards_the_window() -> None:
    items = [user("hi")]
    window = estimate_tokens(items) + 2
    async with open_scripted_server(context_window=window) as server, httpx.AsyncClient() as client:
        url = server.base_url + "/responses"
        fits = await post(client, url, body(items, instructions="ok"))
        refused = await client.post(url, json=body(items, instructions="a much longer system prompt"))
    assert fits.status == 200 and refused.status_code == 400
    assert server.requests[1].input_tokens == estimate_tokens(items, "a much longer system prompt")


async def test_chat_over_the_window_is_refused_with_openai_wording() -> None:
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "y" * 400}]
    tokens = estimate_tokens(messages)
    script = Script([Reply(items=[Text("only")])])
    async with open_scripted_server(script, context_window=50) as server, httpx.AsyncClient() as client:
        url = server.base_url + "/chat/completions"
        refused = await client.post(url, json={**CHAT_BODY, "messages": messages})
        ok = await post(client, url, CHAT_BODY)
    assert refused.status_code == 400
    assert refused.json() == {
        "error": {
            "message": f"This model's maximum context length is 50 tokens. However, your messages resulted in "
            f"{tokens} tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chat_chunks(ok)[:-1] if c["choices"])
    assert content == "only"
    assert server.window_refusals == 1 and server.requests[0].window_refused
    assert server.requests[0].endpoint == "chat" and server.requests[0].input_tokens == tokens


async def receive_response(ws: Any) -> list[dict[str, Any]]:
    events = [json.loads(await ws.get_message())]
    while events[-1]["type"] not in TERMINAL:
        events.append(json.loads(await ws.get_message()))
    return events


async def test_websocket_counts_the_full_reconstructed_input() -> None:
    first = long_history(3)
    script = Script([Reply(items=[Text("one")]), Reply(items=[Text("two")])])
    # the first request fits; the chain (its input + output) plus a small new input does not
    window = estimate_tokens(first) + 10
    async with open_scripted_server(script, context_window=window) as server:
        async with open_websocket_url(server.websocket_url) as ws:
            await ws.send_message(json.dumps({"type": "response.create", "model": "m", "input": first}))
            one = await receive_response(ws)
            response_id = one[-1]["response"]["id"]
            follow = {
                "type": "response.create",
                "model": "m",
                "previous_response_id": response_id,
                "input": [user("and now? " + "z" * 40)],
            }
            await ws.send_message(json.dumps(follow))
            error = json.loads(await ws.get_message())
            # the refused request forgot the chain; a full small input gets the next reply
            await ws.send_message(json.dumps({"type": "response.create", "model": "m", "input": "hi"}))
            two = await receive_response(ws)

    assert text_of(one) == "one" and text_of(two) == "two"
    assert error == {
        "type": "error",
        "status": 400,
        "error": {
            "type": "invalid_request_error",
            "code": "context_length_exceeded",
            "message": WINDOW_MESSAGE,
            "param": "input",
        },
    }
    refused = server.requests[1]
    assert refused.transport == "websocket" and refused.window_refused
    assert refused.full_input is not None and len(refused.full_input) == len(first) + 2
    assert refused.input_tokens == estimate_tokens(refused.full_input) > window
    assert estimate_tokens(follow["input"]) < window  # only the full input is over
    assert server.window_refusals == 1 and server.replies_served == 2


async def test_sessions_and_routers_are_not_consulted_for_a_refused_request() -> None:
    calls: list[Any] = []

    def router(request: Any) -> str:
        calls.append(request)
        return "routed"

    async with open_scripted_server(router, context_window=20) as server, httpx.AsyncClient() as client:
        url = server.base_url + "/responses"
        refused = await client.post(url, json=body(long_history(1)))
        ok = await post(client, url, body("hi"))
    assert refused.status_code == 400 and text_of(ok.events) == "routed"
    assert len(calls) == 1 and calls[0].input_tokens == estimate_tokens("hi")

    sessions = {"alice": [Reply(items=[Text("a1")])]}
    headers = {"X-Session-Id": "alice"}
    async with open_scripted_server(sessions, context_window=20) as server, httpx.AsyncClient() as client:
        url = server.base_url + "/responses"
        refused = await client.post(url, json=body(long_history(1)), headers=headers)
        ok = await post(client, url, body("hi"), headers=headers)
    assert refused.status_code == 400 and text_of(ok.events) == "a1"
    assert server.served_by_session == {"alice": 1} and server.requests[0].session == "alice"


# ---- usage ---------------------------------------------------------------------------------------


async def test_usage_reports_the_estimate_when_the_reply_sets_none() -> None:
    explicit = Usage(input_tokens=7, output_tokens=3)
    script = Script([Reply(items=[Text("a")]), Reply(items=[Text("b")], usage=explicit), Reply(items=[Text("c")])])
    items = long_history(2)
    async with open_scripted_server(script, context_window=10_000) as server, httpx.AsyncClient() as client:
        url = server.base_url + "/responses"
        estimated = await post(client, url, body(items))
        scripted = await post(client, url, body(items))
        chat = await post(
            client, server.base_url + "/chat/completions", {**CHAT_BODY, "stream_options": {"include_usage": True}}
        )

    usage = estimated.of("response.completed")[0]["response"]["usage"]
    assert usage["input_tokens"] == estimate_tokens(items) and usage["total_tokens"] == usage["input_tokens"]
    assert scripted.of("response.completed")[0]["response"]["usage"]["input_tokens"] == 7
    usage_chunk = chat_chunks(chat)[-2]
    assert usage_chunk["usage"]["prompt_tokens"] == estimate_tokens(CHAT_BODY["messages"])
    assert server.requests[2].input_tokens == estimate_tokens(CHAT_BODY["messages"])


async def test_usage_is_left_alone_without_a_window_unless_asked() -> None:
    items = [user("hello there")]
    async with open_scripted_server() as server, httpx.AsyncClient() as client:
        plain = await post(client, server.base_url + "/responses", body(items))
    assert plain.of("response.completed")[0]["response"]["usage"]["input_tokens"] == 0
    assert server.requests[0].input_tokens == estimate_tokens(items)  # recorded all the same

    async with open_scripted_server(estimate_usage=True) as server, httpx.AsyncClient() as client:
        asked = await post(client, server.base_url + "/responses", body(items))
    assert asked.of("response.completed")[0]["response"]["usage"]["input_tokens"] == estimate_tokens(items)

    async with open_scripted_server(context_window=100, estimate_usage=False) as server, httpx.AsyncClient() as client:
        off = await post(client, server.base_url + "/responses", body(items))
    assert off.of("response.completed")[0]["response"]["usage"]["input_tokens"] == 0


# ---- POST /v1/responses/compact ------------------------------------------------------------------


async def test_compact_returns_user_messages_and_a_compaction_item_that_fits_the_window() -> None:
    history = long_history(6)
    window = estimate_tokens(history) // 2
    script = Script([Reply(items=[Text("after compaction")])])
    async with open_scripted_server(script, context_window=window) as server, httpx.AsyncClient() as client:
        refused = await client.post(server.base_url + "/responses", json=body(history))
        compacted = await client.post(
            server.base_url + "/responses/compact",
            json={"model": "m", "input": history, "instructions": "be helpful"},
        )
        answer = compacted.json()
        # the client decodes the output into its items and sends them back
        items = [item_from_wire(i) for i in answer["output"]]
        resent = [item_to_wire(i) for i in items]
        nxt = [*resent, user("continue")]
        ok = await post(client, server.base_url + "/responses", body(nxt))

    assert refused.status_code == 400
    assert compacted.status_code == 200 and compacted.headers["content-type"] == "application/json"
    assert answer["object"] == "response.compaction" and answer["id"].startswith("cmp_")
    assert isinstance(answer["created_at"], int)
    output = answer["output"]
    users = [i for i in history if i.get("role") == "user"]
    assert output[:-1] == users  # verbatim, in order
    item = output[-1]
    assert list(item) == ["type", "id", "encrypted_content"]
    assert item["type"] == "compaction" and item["id"].startswith("cmp_")
    assert item == compaction_item(history)
    assert answer["usage"]["input_tokens"] == estimate_tokens(history, "be helpful")
    assert answer["usage"]["output_tokens"] == math.ceil(len(item["encrypted_content"]) / 4)
    assert answer["usage"]["total_tokens"] == answer["usage"]["input_tokens"] + answer["usage"]["output_tokens"]

    # round-trip byte-for-byte: through the kernel's codec, and on the wire
    assert resent == output
    assert msgspec.json.encode(item_to_wire(item_from_wire(item))) == msgspec.json.encode(item)
    assert msgspec.json.encode(item) in compacted.content
    assert server.requests[-1].body["input"][len(users)] == item

    assert text_of(ok.events) == "after compaction"  # the compaction consumed no reply
    assert estimate_tokens(nxt) <= window
    assert server.requests[-1].input_tokens == estimate_tokens(nxt)
    assert server.compact_requests == 1 and server.compactions == 1 and server.replies_served == 1
    record = server.requests[1]
    assert record.endpoint == "compact" and record.path == "/v1/responses/compact"
    assert record.reply_index is None and record.input_tokens == estimate_tokens(history, "be helpful")


async def test_compact_takes_a_string_input_and_needs_no_stream_flag() -> None:
    async with open_scripted_server() as server, httpx.AsyncClient() as client:
        answer = await client.post(server.base_url + "/responses/compact", json={"model": "m", "input": "hello"})
        bad = await client.post(server.base_url + "/responses/compact", json={"model": "m", "input": 3})
        not_json = await client.post(server.base_url + "/responses/compact", content=b"{nope")
    assert answer.status_code == 200
    assert answer.json()["output"][0] == user("hello") and is_compaction(answer.json()["output"][1])
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"
    assert not_json.status_code == 400
    assert server.compact_requests == 3 and server.compactions == 1


async def test_compact_disabled_is_a_404() -> None:
    async with open_scripted_server(compact=False) as server, httpx.AsyncClient() as client:
        missing = await client.post(server.base_url + "/responses/compact", json={"model": "m", "input": []})
        ok = await post(client, server.base_url + "/responses", body("hi"))
    assert missing.status_code == 404 and "no route" in missing.json()["error"]["message"]
    assert ok.status == 200
    assert server.compact_requests == 1 and server.compactions == 0
    assert server.requests[0].endpoint == "compact"


async def test_compact_errors_are_served_in_order() -> None:
    errors = [HttpError.server_error(503, retry_after=2), None, HttpError.rate_limited(try_again_in=1.5)]
    request = {"model": "m", "input": long_history(1)}
    async with open_scripted_server(compact_errors=errors) as server, httpx.AsyncClient() as client:
        url = server.base_url + "/responses/compact"
        answers = [await client.post(url, json=request) for _ in range(4)]
        ok = await post(client, server.base_url + "/responses", body("hi"))
    assert [a.status_code for a in answers] == [503, 200, 429, 200]
    assert answers[0].headers["retry-after"] == "2"
    assert answers[2].json()["error"]["code"] == "rate_limit_exceeded"
    assert answers[1].json()["output"] == answers[3].json()["output"]
    assert [answers[1].json()["id"], answers[3].json()["id"]] == ["cmp_resp_1", "cmp_resp_2"]
    assert text_of(ok.events) == "Done."
    assert server.compact_requests == 4 and server.compactions == 2 and server.replies_served == 1


# ---- server-side compaction ----------------------------------------------------------------------


async def test_context_management_past_the_threshold_emits_a_compaction_item() -> None:
    history = long_history(4)
    threshold = estimate_tokens(history) - 1
    management = [{"type": "compaction", "compact_threshold": threshold}]
    reply = Reply(items=[Text("answer"), FunctionCall("call_9", "shell", {"command": ["ls"]})])
    script = Script([reply], cycle=True)
    async with open_scripted_server(script, estimate_usage=True) as server, httpx.AsyncClient() as client:
        url = server.base_url + "/responses"
        below = await post(client, url, body(history[:-3], context_management=management))
        past = await post(client, url, body(history, context_management=management))

    assert [e["item"]["type"] for e in below.of("response.output_item.added")] == ["message", "function_call"]
    added = past.of("response.output_item.added")
    done = past.of("response.output_item.done")
    assert [e["item"]["type"] for e in added] == ["compaction", "message", "function_call"]
    assert [e["output_index"] for e in done] == [0, 1, 2]
    item = done[0]["item"]
    assert item == added[0]["item"] == compaction_item(history)
    completed = past.of("response.completed")[0]["response"]
    assert completed["output"][0] == item
    # the reply's own items keep their ids
    below_output = below.of("response.completed")[0]["response"]["output"]
    assert [o["id"] for o in completed["output"][1:]] == [o["id"] for o in below_output] == ["msg_0_0", "fc_0_1"]
    # usage: the compacted input
    assert completed["usage"]["input_tokens"] == estimate_tokens([*history, item]) < threshold
    assert server.server_compactions == 1
    assert server.requests[1].input_tokens == estimate_tokens(history)  # as sent


async def test_server_side_compaction_keeps_a_websocket_chain_in_the_window() -> None:
    history = long_history(6)
    window = estimate_tokens(history) + 20
    management = [{"type": "compaction", "compact_threshold": window // 2}]
    script = Script([Reply(items=[Text("one")]), Reply(items=[Text("two")])])
    async with open_scripted_server(script, context_window=window) as server:
        async with open_websocket_url(server.websocket_url) as ws:
            create = {"type": "response.create", "model": "m", "context_management": management}
            await ws.send_message(json.dumps({**create, "input": history}))
            one = await receive_response(ws)
            more = [call_output("call_x", "w" * 300)]
            await ws.send_message(
                json.dumps({**create, "previous_response_id": one[-1]["response"]["id"], "input": more})
            )
            two = await receive_response(ws)

    output = one[-1]["response"]["output"]
    assert output[0]["type"] == "compaction" and text_of(one) == "one"
    # without the compaction item the chain would be over the window; with it, it fits
    chain = server.requests[1].full_input
    assert chain is not None and chain[len(history)] == output[0]
    without = [i for i in chain if not is_compaction(i)]
    assert estimate_tokens(without) > window >= estimate_tokens(chain)
    assert two[-1]["type"] == "response.completed" and text_of(two) == "two"
    assert server.window_refusals == 0 and server.server_compactions == 1


async def test_server_side_compaction_comes_before_the_window() -> None:
    history = long_history(6)
    window = estimate_tokens(history) // 2
    management = [{"type": "compaction"}]  # no threshold: the context window
    async with open_scripted_server(context_window=window) as server, httpx.AsyncClient() as client:
        url = server.base_url + "/responses"
        compacted = await post(client, url, body(history, context_management=management))
        refused = await client.post(url, json=body(history))
    assert compacted.status == 200 and compacted.of("response.output_item.done")[0]["item"]["type"] == "compaction"
    assert refused.status_code == 400
    assert server.server_compactions == 1 and server.window_refusals == 1


@pytest.mark.parametrize(
    "management",
    [
        {"type": "compaction"},
        [1],
        [{"type": "compaction", "compact_threshold": "big"}],
        [{"type": "compaction", "compact_threshold": 0}],
    ],
)
async def test_malformed_context_management_is_a_400(management: Any) -> None:
    async with open_scripted_server() as server, httpx.AsyncClient() as client:
        answer = await client.post(server.base_url + "/responses", json=body("hi", context_management=management))
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"].startswith("context_management")
    assert server.replies_served == 0 and server.window_refusals == 0


async def test_other_context_management_entries_are_ignored() -> None:
    management = [{"type": "something_else", "x": 1}]
    async with open_scripted_server() as server, httpx.AsyncClient() as client:
        ok = await post(client, server.base_url + "/responses", body(long_history(3), context_management=management))
    assert ok.status == 200 and server.server_compactions == 0


# ---- options: Python, JSON and the CLI -----------------------------------------------------------


def test_json_server_options() -> None:
    script = Script.from_json(
        {
            "replies": ["hi"],
            "context_window": 500,
            "estimate_usage": False,
            "compact": False,
            "compact_errors": [{"kind": "server_error", "status": 502}, None],
        }
    )
    assert script.server == ServerOptions(
        context_window=500, estimate_usage=False, compact=False, compact_errors=[HttpError.server_error(502), None]
    )
    keyed = load_script({"sessions": {"a": ["x"]}, "context_window": 9})
    assert keyed.server.context_window == 9
    with pytest.raises(ScriptError, match="top level"):
        load_script({"sessions": {"a": {"replies": [], "context_window": 9}}})
    with pytest.raises(ScriptError, match=r"compact_errors\[0\].*HTTP error"):
        Script.from_json({"compact_errors": [{"kind": "stall", "after_events": 1, "seconds": 1}]})
    with pytest.raises(ScriptError, match="context_window"):
        Script.from_json({"context_window": 0})
    with pytest.raises(ScriptError, match="compact"):
        Script.from_json({"compact": "yes"})


async def test_script_options_apply_and_arguments_override_them() -> None:
    script = Script(["a", "b"], server=ServerOptions(context_window=5, compact=False))
    async with open_scripted_server(script) as server:
        assert server.context_window == 5 and not server.compact and server.estimate_usage
    async with open_scripted_server(script, context_window=50, compact=True) as server:
        assert server.context_window == 50 and server.compact
    with pytest.raises(ValueError, match="context_window"):
        async with open_scripted_server(context_window=-1):
            pass


async def test_cli_context_window_and_no_compact(tmp_path: Path) -> None:
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"replies": ["from the cli"], "context_window": 100_000}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "actors.scripted", "--port", "0", "--script", str(path)]
    proc = await trio.lowlevel.open_process(
        [*argv, "--context-window", "20", "--no-compact"], stdout=subprocess.PIPE, cwd=REPO, env=env
    )
    try:
        url = (await first_line(proc)).removeprefix("listening on ")
        async with httpx.AsyncClient() as client:
            refused = await client.post(url + "/v1/responses", json=body(long_history(1)))
            missing = await client.post(url + "/v1/responses/compact", json={"model": "m", "input": []})
            ok = await post(client, url + "/v1/responses", body("hi"))
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "context_length_exceeded"
        assert missing.status_code == 404
        assert text_of(ok.events) == "from the cli"
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
