"""The scripted model server's fault injection over real HTTP: HTTP errors, failed streams, drops, stalls."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio

from actors.scripted import (
    Disconnect,
    ErrorEvent,
    Failed,
    HttpError,
    Incomplete,
    Malformed,
    Reply,
    Script,
    ScriptError,
    Stall,
    Text,
    open_scripted_server,
    rate_limit_headers,
)

from ._scripted_helpers import BODY, CHAT_BODY, chat_chunks, post

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
