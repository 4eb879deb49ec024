"""The scripted model server's Responses WebSocket mode (PROTOCOL §5) over real loopback sockets:
streams, per-connection chaining, faults, refusals, and the official openai SDK as a client."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Sequence
from typing import Any

import h11
import httpx
import openai
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)

from actors.scripted import (
    REDACTED,
    Disconnect,
    ErrorEvent,
    Failed,
    FunctionCall,
    HttpError,
    Incomplete,
    Malformed,
    RecordedRequest,
    RefuseUpgrade,
    Reply,
    Script,
    ScriptedServer,
    ScriptError,
    Stall,
    Text,
    WebSocketClose,
    WebSocketConnectionLimit,
    open_scripted_server,
)

from ._scripted_helpers import BODY, post

TERMINAL = ("response.completed", "response.failed", "response.incomplete", "error")
LIMIT_MESSAGE = (
    "Responses websocket connection limit reached (60 minutes). Create a new websocket connection to continue."
)


def create(**fields: Any) -> dict[str, Any]:
    """A ``response.create`` frame's JSON."""
    return {"type": "response.create", "model": "m", "input": [], **fields}


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": text}


class WsClient:
    """A minimal WebSocket client on wsproto over a Trio TCP stream: sees every frame, the close
    frame (or its absence) and partial frames, as the faults need."""

    def __init__(self, stream: trio.SocketStream, ws: WSConnection) -> None:
        self.stream = stream
        self.ws = ws
        self.queue: deque[tuple[str, Any]] = deque()
        self.close: CloseConnection | None = None
        self.eof = False
        self.received = 0
        self._text: list[str] = []

    @classmethod
    async def connect(cls, server: ScriptedServer, headers: Sequence[tuple[str, str]] = ()) -> WsClient:
        stream = await trio.open_tcp_stream(server.host, server.port)
        ws = WSConnection(ConnectionType.CLIENT)
        extra = [(k.encode(), v.encode()) for k, v in [("Authorization", "Bearer test-key"), *headers]]
        await stream.send_all(
            ws.send(Request(host=f"{server.host}:{server.port}", target="/v1/responses", extra_headers=extra))
        )
        with trio.fail_after(30):
            while True:
                ws.receive_data(await stream.receive_some(65536))
                for event in ws.events():
                    if isinstance(event, AcceptConnection):
                        return cls(stream, ws)
                    if isinstance(event, RejectConnection):
                        raise AssertionError(f"upgrade refused with {event.status_code}")

    async def send(self, obj: Any) -> None:
        data = obj if isinstance(obj, str) else json.dumps(obj)
        await self.stream.send_all(self.ws.send(TextMessage(data=data)))

    async def send_event(self, event: Any) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def next(self, timeout: float = 60) -> tuple[str, Any] | None:
        """The next ``("text", str)`` / ``("pong", bytes)`` / ``("close", CloseConnection)``, or
        ``None`` at EOF."""
        with trio.fail_after(timeout):
            while not self.queue and not self.eof:
                data = await self.stream.receive_some(65536)
                if not data:
                    self.eof = True
                    break
                self.received += len(data)
                self.ws.receive_data(data)
                for event in self.ws.events():
                    if isinstance(event, TextMessage):
                        self._text.append(event.data)
                        if event.message_finished:
                            self.queue.append(("text", "".join(self._text)))
                            self._text.clear()
                    elif isinstance(event, Pong):
                        self.queue.append(("pong", bytes(event.payload)))
                    elif isinstance(event, Ping):
                        await self.send_event(event.response())
                    elif isinstance(event, CloseConnection):
                        self.close = event
                        if self.ws.state is ConnectionState.REMOTE_CLOSING:
                            await self.send_event(event.response())
                        self.queue.append(("close", event))
        return self.queue.popleft() if self.queue else None

    async def recv_text(self) -> str:
        got = await self.next()
        assert got is not None and got[0] == "text", got
        return str(got[1])

    async def recv(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(await self.recv_text())
        return result

    async def response(self) -> list[dict[str, Any]]:
        """Every event up to and including the terminal one."""
        events = [await self.recv()]
        while events[-1]["type"] not in TERMINAL:
            events.append(await self.recv())
        return events

    async def events_until_end(self) -> list[dict[str, Any]]:
        """Every text frame's JSON until the connection ends (close frame or EOF)."""
        events = []
        while (got := await self.next()) is not None and got[0] == "text":
            events.append(json.loads(got[1]))
        return events

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


def texts(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


def output_of(events: list[dict[str, Any]]) -> list[Any]:
    output: list[Any] = events[-1]["response"]["output"]
    return output


# ---- streams -----------------------------------------------------------------------------------


async def test_same_events_as_sse_and_http_alongside() -> None:
    reply = Reply(
        items=[Text("Hello world", chunk_size=4), FunctionCall("call_1", "shell", {"command": ["ls"]}, chunk_size=5)]
    )
    async with open_scripted_server(Script([reply], cycle=True)) as server, httpx.AsyncClient() as http:
        url = server.websocket_url
        async with open_websocket_url(url, extra_headers=[(b"Authorization", b"Bearer test-key")]) as ws:
            await ws.send_message(json.dumps(create(input="hi")))
            ws_events: list[dict[str, Any]] = []
            while not ws_events or ws_events[-1]["type"] not in TERMINAL:
                ws_events.append(json.loads(await ws.get_message()))
            # HTTP on the same port while the WebSocket stays open
            sse = await post(http, server.base_url + "/responses")
            assert sse.status == 200
            await ws.send_message(json.dumps(create(input="again")))
            second = [json.loads(await ws.get_message())]
            while second[-1]["type"] not in TERMINAL:
                second.append(json.loads(await ws.get_message()))

    assert ws_events == sse.events  # one render, two framings
    assert [e["type"] for e in ws_events][:2] == ["response.created", "response.in_progress"]
    assert ws_events[-1]["type"] == "response.completed"
    assert texts(ws_events) == "Hello world"
    assert second == ws_events

    assert server.websocket_connections_opened == 1
    assert server.replies_served == 3
    first, via_http, third = server.requests
    assert (first.transport, first.method, first.path, first.endpoint) == (
        "websocket",
        "GET",
        "/v1/responses",
        "responses",
    )
    assert first.headers["authorization"] == f"Bearer {REDACTED}"
    assert first.headers["upgrade"] == "websocket"
    assert first.body == create(input="hi")
    assert first.full_input == [user("hi")]
    assert first.reply_index == 0
    assert (via_http.transport, via_http.method) == ("http", "POST")
    assert via_http.full_input == BODY["input"]
    assert third.transport == "websocket" and third.full_input == [user("again")]


async def test_raw_client_and_request_queue() -> None:
    """Two requests sent back to back are answered one after the other, in order."""
    script = Script([Reply(items=[Text("one", chunk_size=1)]), Reply(items=[Text("two", chunk_size=1)])])
    async with open_scripted_server(script) as server:
        client = await WsClient.connect(server)
        await client.send(create(input="a"))
        await client.send(create(input="b"))
        first, second = await client.response(), await client.response()
        await client.aclose()
    assert (texts(first), texts(second)) == ("one", "two")
    assert [r.reply_index for r in server.requests] == [0, 1]


# ---- per-connection chaining -------------------------------------------------------------------


async def test_chaining_with_previous_response_id() -> None:
    script = Script([Reply(items=["first answer"]), Reply(items=["second answer"]), Reply(items=["third"])])
    async with open_scripted_server(script) as server:
        client = await WsClient.connect(server)
        await client.send(create(input=[user("q1")], instructions="be brief"))
        first = await client.response()
        first_id = first[-1]["response"]["id"]

        await client.send(create(input=[user("q2")], previous_response_id=first_id))
        second = await client.response()
        assert texts(second) == "second answer"

        # only the most recent response is remembered
        await client.send(create(input=[user("q3")], previous_response_id=first_id))
        not_found = await client.recv()
        assert not_found == {
            "type": "error",
            "status": 400,
            "error": {
                "type": "invalid_request_error",
                "code": "previous_response_not_found",
                "message": f"Previous response with id '{first_id}' not found.",
                "param": "previous_response_id",
            },
        }
        # the connection stays open: the full input works
        full = [user("q1"), *output_of(first), user("q2"), *output_of(second), user("q3")]
        await client.send(create(input=full))
        third = await client.response()
        await client.aclose()

    assert texts(third) == "third"
    incremental = server.requests[1]
    assert incremental.body["input"] == [user("q2")]
    assert incremental.full_input == [user("q1"), *output_of(first), user("q2")]
    assert server.requests[2].reply_index is None and server.requests[2].full_input is None
    assert server.requests[3].full_input == full
    assert server.replies_served == 3  # previous_response_not_found consumed no reply


async def test_unknown_previous_response_on_a_new_connection() -> None:
    async with open_scripted_server(Script(["a"])) as server:
        client = await WsClient.connect(server)
        await client.send(create(input="x"))
        done = await client.response()
        await client.aclose()
        # the chain lives in the connection: a new one does not know it
        other = await WsClient.connect(server)
        await other.send(create(input="y", previous_response_id=done[-1]["response"]["id"]))
        frame = await other.recv()
        await other.aclose()
    assert frame["error"]["code"] == "previous_response_not_found"


@pytest.mark.parametrize(
    "fault",
    [
        Failed("server_error", "boom"),
        Incomplete("max_output_tokens"),
        ErrorEvent("server_error", "oops"),
        HttpError.server_error(503),
    ],
)
async def test_a_failed_response_forgets_the_chain(fault: Any) -> None:
    script = Script([Reply(items=["ok"]), Reply(items=["partial"], faults=[fault]), Reply(items=["after"])])
    async with open_scripted_server(script) as server:
        client = await WsClient.connect(server)
        await client.send(create(input="a"))
        first_id = (await client.response())[-1]["response"]["id"]
        await client.send(create(input="b", previous_response_id=first_id))
        failed = await client.response()
        await client.send(create(input="c", previous_response_id=first_id))
        frame = await client.recv()
        failed_id = next((e["response"]["id"] for e in failed if "response" in e), None)
        if failed_id is not None:
            await client.send(create(input="c", previous_response_id=failed_id))
            assert (await client.recv())["error"]["code"] == "previous_response_not_found"
        await client.aclose()
    assert failed[-1]["type"] in ("response.failed", "response.incomplete", "error")
    assert frame["error"]["code"] == "previous_response_not_found"


async def test_generate_false_warms_up_without_a_reply() -> None:
    async with open_scripted_server(Script(["the answer"])) as server:
        client = await WsClient.connect(server)
        await client.send(create(input=[user("context")], generate=False, tools=[]))
        warm = await client.response()
        assert server.replies_served == 0
        await client.send(create(input=[user("question")], previous_response_id=warm[-1]["response"]["id"]))
        answer = await client.response()
        await client.aclose()
    assert [e["type"] for e in warm] == ["response.created", "response.in_progress", "response.completed"]
    assert output_of(warm) == []
    assert texts(answer) == "the answer"
    warm_request, request = server.requests
    assert warm_request.reply_index is None and warm_request.body["generate"] is False
    assert request.reply_index == 0
    assert request.full_input == [user("context"), user("question")]


# ---- errors ------------------------------------------------------------------------------------


async def test_http_errors_become_error_frames() -> None:
    script = Script(
        [
            Reply(faults=[HttpError.rate_limited(retry_after=2)], headers={"x-codex-primary-used-percent": "99"}),
            Reply(faults=[HttpError.usage_limit_reached(plan_type="pro", resets_at=1_700_000_000)]),
            Reply(faults=[HttpError(status=418, message="teapot", code="brew", body="plain text")]),
            "still open",
        ]
    )
    async with open_scripted_server(script) as server:
        client = await WsClient.connect(server)
        frames = []
        for _ in range(3):
            await client.send(create())
            frames.append(await client.recv())
        await client.send(create())
        after = await client.response()
        await client.aclose()
    assert frames[0] == {
        "type": "error",
        "status": 429,
        "error": {
            "type": "requests",
            "code": "rate_limit_exceeded",
            "message": "Rate limit reached for requests in organization org-scripted.",
            "param": None,
        },
        "headers": {"x-codex-primary-used-percent": "99", "retry-after": "2"},
    }
    assert frames[1] == {
        "type": "error",
        "status": 429,
        "error": {
            "type": "usage_limit_reached",
            "message": "The usage limit has been reached",
            "plan_type": "pro",
            "resets_at": 1_700_000_000,
        },
    }
    assert frames[2]["status"] == 418 and frames[2]["error"]["message"] == "plain text"
    assert texts(after) == "still open"


async def test_invalid_frames_are_answered_and_the_connection_stays() -> None:
    async with open_scripted_server(Script(["fine"])) as server:
        client = await WsClient.connect(server)
        await client.send("{not json")
        bad_json = await client.recv()
        await client.send({"type": "response.steer", "input": []})
        wrong_type = await client.recv()
        await client.send_event(BytesMessage(data=b"\x00"))
        binary = await client.recv()
        await client.send(create(background=True))
        background = await client.recv()
        await client.send(create())
        ok = await client.response()
        await client.aclose()
    assert bad_json["status"] == 400 and bad_json["error"]["code"] == "invalid_json"
    assert wrong_type["error"]["param"] == "type"
    assert binary["status"] == 400
    assert background["error"]["param"] == "background"
    assert texts(ok) == "fine"
    assert server.replies_served == 1


async def test_terminal_faults_send_the_same_events_as_http() -> None:
    script = Script(
        [Reply(items=["x"], faults=[Failed("context_length_exceeded", "too long")])],
        cycle=True,
    )
    async with open_scripted_server(script) as server, httpx.AsyncClient() as http:
        client = await WsClient.connect(server)
        await client.send(create())
        events = await client.response()
        await client.aclose()
        sse = await post(http, server.base_url + "/responses")
    assert events == sse.events
    assert events[-1]["response"]["error"] == {"code": "context_length_exceeded", "message": "too long"}


# ---- transport faults --------------------------------------------------------------------------


async def test_disconnect_drops_the_connection_without_a_close_frame() -> None:
    script = Script(
        [
            Reply(items=[Text("Hello world", chunk_size=1)], faults=[Disconnect(after_events=3)]),
            Reply(items=[Text("Hello world", chunk_size=1)], faults=[Disconnect(after_events=3, mid_event=True)]),
        ]
    )
    async with open_scripted_server(script) as server:
        client = await WsClient.connect(server)
        await client.send(create())
        dropped = await client.events_until_end()
        assert client.eof and client.close is None
        client2 = await WsClient.connect(server)
        await client2.send(create())
        cut = await client2.events_until_end()
        assert client2.eof and client2.close is None
    assert [e["type"] for e in dropped] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert [e["type"] for e in cut] == [e["type"] for e in dropped]
    assert client2.received > client.received  # the first half of the fourth frame


async def test_clean_disconnect_keeps_the_connection_open() -> None:
    script = Script([Reply(items=[Text("abc", chunk_size=1)], faults=[Disconnect(after_events=2, clean=True)]), "next"])
    async with open_scripted_server(script) as server:
        client = await WsClient.connect(server)
        await client.send(create())
        started = [await client.recv(), await client.recv()]
        await client.send(create(input="again"))
        following = await client.response()
        await client.aclose()
    assert [e["type"] for e in started] == ["response.created", "response.in_progress"]
    assert following[0]["type"] == "response.created" and texts(following) == "next"


async def test_malformed_frame_then_the_stream_goes_on() -> None:
    script = Script([Reply(items=[Text("Hello", chunk_size=1)], faults=[Malformed(after_events=3, data="{oops")])])
    async with open_scripted_server(script) as server:
        client = await WsClient.connect(server)
        await client.send(create())
        raw = [await client.recv_text() for _ in range(4)]
        rest = await client.response()
        await client.aclose()
    assert raw[3] == "{oops"
    assert texts([json.loads(r) for r in raw[:3]] + rest) == "Hello"


async def test_stall_answers_pings(autojump_clock: trio.testing.MockClock) -> None:
    script = Script([Reply(items=[Text("Hello", chunk_size=1)], faults=[Stall(after_events=2, seconds=30)])])
    async with open_scripted_server(script) as server:
        client = await WsClient.connect(server)
        await client.send(create())
        head = [await client.recv(), await client.recv()]
        start = trio.current_time()
        await client.send_event(Ping(payload=b"alive?"))
        assert await client.next() == ("pong", b"alive?")
        assert trio.current_time() - start < 1
        rest = await client.response()
        await client.aclose()
    assert trio.current_time() - start == pytest.approx(30.0)
    assert texts(head + rest) == "Hello"


async def test_delta_delay_over_websocket(autojump_clock: trio.testing.MockClock) -> None:
    script = Script([Reply(items=[Text("abcde", chunk_size=1)], delta_delay=1.0)])
    async with open_scripted_server(script) as server:
        client = await WsClient.connect(server)
        start = trio.current_time()
        await client.send(create())
        events = await client.response()
        await client.aclose()
    assert texts(events) == "abcde"
    assert trio.current_time() - start == pytest.approx(5.0)


async def test_websocket_close_fault_sends_the_close_code() -> None:
    script = Script(
        [Reply(items=[Text("Hello", chunk_size=1)], faults=[WebSocketClose(after_events=3, reason="boom")])]
    )
    async with open_scripted_server(script) as server:
        client = await WsClient.connect(server)
        await client.send(create())
        events = await client.events_until_end()
        assert client.close is not None
        assert (client.close.code, client.close.reason) == (1011, "boom")
        assert await client.next() is None  # the server closes the socket after our close reply
    assert len(events) == 3


async def test_websocket_close_with_trio_websocket() -> None:
    script = Script([Reply(items=["x"], faults=[WebSocketClose(after_events=1, code=1013)])])
    async with open_scripted_server(script) as server:
        async with open_websocket_url(server.websocket_url) as ws:
            await ws.send_message(json.dumps(create()))
            assert json.loads(await ws.get_message())["type"] == "response.created"
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
    reason = closed.value.reason
    assert reason is not None and reason.code == 1013


async def test_connection_limit_fault() -> None:
    script = Script([Reply(faults=[WebSocketConnectionLimit()]), "fresh"])
    async with open_scripted_server(script) as server:
        client = await WsClient.connect(server)
        await client.send(create())
        frame = await client.recv()
        assert await client.next() == ("close", client.close)
        assert client.close is not None and client.close.code == 1000
        assert await client.next() is None
        again = await WsClient.connect(server)
        await again.send(create())
        fresh = await again.response()
        await again.aclose()
    assert frame == {
        "type": "error",
        "status": 400,
        "error": {
            "type": "invalid_request_error",
            "code": "websocket_connection_limit_reached",
            "message": LIMIT_MESSAGE,
            "param": None,
        },
    }
    assert texts(fresh) == "fresh"
    assert server.websocket_connections_opened == 2


async def test_connection_limit_without_close_frame() -> None:
    async with open_scripted_server(Script([Reply(faults=[WebSocketConnectionLimit(close_code=None)])])) as server:
        client = await WsClient.connect(server)
        await client.send(create())
        assert (await client.recv())["error"]["code"] == "websocket_connection_limit_reached"
        assert await client.next() is None and client.close is None


async def test_max_age_option(autojump_clock: trio.testing.MockClock) -> None:
    async with open_scripted_server(Script(["a", "b"]), websocket_max_age=3600) as server:
        client = await WsClient.connect(server)
        await client.send(create())
        first = await client.response()
        await trio.sleep(3600)
        await client.send(create(previous_response_id=first[-1]["response"]["id"]))
        frame = await client.recv()
        closed = await client.next()
    assert frame["error"]["code"] == "websocket_connection_limit_reached"
    assert closed is not None and closed[0] == "close"
    assert server.replies_served == 1
    assert len(server.requests) == 2


# ---- refusals ----------------------------------------------------------------------------------


async def _upgrade_then_post(server: ScriptedServer) -> tuple[h11.Response, bytes, h11.Response, bytes]:
    """On one connection: a WebSocket upgrade request, then (when refused) a streaming POST."""
    stream = await trio.open_tcp_stream(server.host, server.port)
    conn = h11.Connection(h11.CLIENT)
    headers = [
        ("Host", f"{server.host}:{server.port}"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ]

    async def read_response() -> tuple[h11.Response, bytes]:
        body = b""
        head: h11.Response | None = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return head, body
            else:
                raise AssertionError(event)

    with trio.fail_after(30):
        await stream.send_all(conn.send(h11.Request(method="GET", target="/v1/responses", headers=headers)) or b"")
        await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
        refused, refused_body = await read_response()
        conn.start_next_cycle()
        payload = json.dumps(BODY).encode()
        post_headers = [("Host", "x"), ("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        await stream.send_all(
            conn.send(h11.Request(method="POST", target="/v1/responses", headers=post_headers)) or b""
        )
        await stream.send_all((conn.send(h11.Data(data=payload)) or b"") + (conn.send(h11.EndOfMessage()) or b""))
        ok, ok_body = await read_response()
    await stream.aclose()
    return refused, refused_body, ok, ok_body


@pytest.mark.parametrize(("option", "status"), [(False, 426), (RefuseUpgrade(status=404, message="no"), 404)])
async def test_refuse_option_keeps_http(option: bool | RefuseUpgrade, status: int) -> None:
    async with open_scripted_server(Script(["over http"]), websocket=option) as server:
        refused, body, ok, sse = await _upgrade_then_post(server)
    assert refused.status_code == status
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert ok.status_code == 200 and b"over http" in sse
    assert (server.upgrades_refused, server.websocket_connections_opened) == (1, 0)
    assert [r.transport for r in server.requests] == ["http"]


async def test_refuse_upgrade_fault_is_per_attempt() -> None:
    script = Script([Reply(faults=[RefuseUpgrade(status=405)]), "via http", Reply(faults=[RefuseUpgrade()]), "ws"])
    async with open_scripted_server(script) as server, httpx.AsyncClient() as http:
        refused, _body, ok, sse = await _upgrade_then_post(server)
        assert (refused.status_code, ok.status_code) == (405, 200) and b"via http" in sse
        # an HTTP request that reaches a refusal reply is a script mismatch
        mismatch = await post(http, server.base_url + "/responses")
        client = await WsClient.connect(server)  # the refusal was consumed by the POST
        await client.send(create())
        events = await client.response()
        await client.aclose()
    assert mismatch.status == 500 and json.loads(mismatch.body)["error"]["code"] == "script_mismatch"
    assert texts(events) == "ws"
    assert server.upgrades_refused == 1
    assert [r.reply_index for r in server.requests] == [1, 2, 3]


async def test_refuse_upgrade_per_session_header() -> None:
    scripts: dict[str, list[Reply | str]] = {"alice": [Reply(faults=[RefuseUpgrade()]), "hi alice"], "bob": ["hi bob"]}
    async with open_scripted_server(scripts) as server:
        with pytest.raises(AssertionError, match="refused with 426"):
            await WsClient.connect(server, headers=[("X-Session-Id", "alice")])
        bob = await WsClient.connect(server, headers=[("X-Session-Id", "bob")])
        await bob.send(create())
        assert texts(await bob.response()) == "hi bob"
        await bob.aclose()
        alice = await WsClient.connect(server, headers=[("X-Session-Id", "alice")])
        await alice.send(create())
        assert texts(await alice.response()) == "hi alice"
        await alice.aclose()
    assert server.served_by_session == {"alice": 2, "bob": 1}
    assert [r.session for r in server.requests] == ["bob", "alice"]


async def test_bad_handshake_is_refused() -> None:
    async with open_scripted_server() as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        await stream.send_all(
            b"GET /v1/responses HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )
        with trio.fail_after(30):
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive_some(65536)
        await stream.aclose()
    assert data.startswith(b"HTTP/1.1 400 ")
    assert server.upgrades_refused == 1


# ---- control frames, sessions, router ----------------------------------------------------------


async def test_ping_and_client_close() -> None:
    async with open_scripted_server() as server:
        client = await WsClient.connect(server)
        await client.send_event(Ping(payload=b"p1"))
        assert await client.next() == ("pong", b"p1")
        await client.send_event(CloseConnection(code=1000, reason="bye"))
        got = await client.next()
        assert got is not None and got[0] == "close" and got[1].code == 1000
        assert await client.next() is None  # then the server closes the socket


async def test_client_close_mid_response(autojump_clock: trio.testing.MockClock) -> None:
    script = Script([Reply(items=[Text("abcdef", chunk_size=1)], delta_delay=10)])
    async with open_scripted_server(script) as server:
        client = await WsClient.connect(server)
        start = trio.current_time()
        await client.send(create())
        assert [(await client.recv())["type"] for _ in range(4)][-1] == "response.content_part.added"
        await client.send_event(CloseConnection(code=1001))
        got = await client.next()
        assert got is not None and got[0] == "close" and got[1].code == 1001
        assert await client.next() is None
        assert trio.current_time() - start < 20  # not the rest of the deltas' delays


async def test_per_session_scripts_and_router() -> None:
    scripts = {"alice": ["a1", "a2"], "bob": ["b1"]}
    async with open_scripted_server(scripts) as server:
        by_header = await WsClient.connect(server, headers=[("X-Session-Id", "alice")])
        by_body = await WsClient.connect(server)
        await by_body.send(create(prompt_cache_key="bob"))
        await by_header.send(create())
        assert texts(await by_body.response()) == "b1"
        assert texts(await by_header.response()) == "a1"
        await by_body.send(create())  # no key: the error frame names the known sessions
        missing = await by_body.recv()
        await by_header.aclose()
        await by_body.aclose()
    assert missing["status"] == 400 and missing["error"]["code"] == "missing_session"

    seen: list[RecordedRequest] = []

    def router(request: RecordedRequest) -> str:
        seen.append(request)
        return f"echo {request.full_input[-1]['content'] if request.full_input else ''}"

    async with open_scripted_server(router) as server:
        client = await WsClient.connect(server)
        await client.send(create(input="ping"))
        first = await client.response()
        await client.send(create(input="pong", previous_response_id=first[-1]["response"]["id"]))
        second = await client.response()
        await client.aclose()
    assert (texts(first), texts(second)) == ("echo ping", "echo pong")
    assert [r.transport for r in seen] == ["websocket", "websocket"]
    assert len(seen[1].full_input or []) == 3


# ---- HTTP side of the new faults, and the script format ----------------------------------------


async def test_new_faults_on_http() -> None:
    script = Script(
        [
            Reply(items=[Text("Hello", chunk_size=1)], faults=[WebSocketClose(after_events=2)]),
            Reply(faults=[WebSocketConnectionLimit()]),
        ]
    )
    async with open_scripted_server(script) as server, httpx.AsyncClient() as http:
        dropped = await post(http, server.base_url + "/responses")
        limited = await post(http, server.base_url + "/responses")
    assert isinstance(dropped.error, httpx.RemoteProtocolError) and len(dropped.raw) == 2
    assert limited.status == 400
    assert json.loads(limited.body)["error"]["code"] == "websocket_connection_limit_reached"


def test_json_script_faults() -> None:
    script = Script.from_json(
        [
            {"faults": [{"kind": "websocket_close", "after_events": 2, "code": 1011, "reason": "x"}]},
            {"faults": [{"kind": "refuse_upgrade", "status": 404}]},
            {"faults": [{"kind": "websocket_connection_limit", "close_code": None}]},
            {"faults": [{"kind": "websocket_connection_limit"}]},
        ]
    )
    assert script.replies[0].faults == (WebSocketClose(after_events=2, code=1011, reason="x"),)
    assert script.replies[1].refuse_upgrade == RefuseUpgrade(status=404)
    assert script.replies[2].connection_limit == WebSocketConnectionLimit(close_code=None)
    assert script.replies[3].connection_limit == WebSocketConnectionLimit()
    with pytest.raises(ScriptError, match=r"replies\[0\].faults\[0\].*code"):
        Script.from_json([{"faults": [{"kind": "websocket_close", "code": 1006}]}])
    with pytest.raises(ScriptError, match="unknown key"):
        Script.from_json([{"faults": [{"kind": "refuse_upgrade", "after_events": 1}]}])


def test_invalid_websocket_fault_values() -> None:
    with pytest.raises(ScriptError, match="stands alone"):
        Reply(items=["x"], faults=[RefuseUpgrade(), Stall(after_events=1, seconds=1)])
    with pytest.raises(ScriptError, match="stands alone"):
        Reply(faults=[WebSocketConnectionLimit(), Failed()])
    with pytest.raises(ScriptError, match="Disconnect / WebSocketClose"):
        Reply(faults=[Disconnect(after_events=1), WebSocketClose(after_events=2)])
    with pytest.raises(ScriptError, match="status"):
        RefuseUpgrade(status=101)
    with pytest.raises(ScriptError, match="close code"):
        WebSocketClose(code=999)
    with pytest.raises(ScriptError, match="123 bytes"):
        WebSocketClose(reason="x" * 124)


# ---- the official openai SDK as an independent client -----------------------------------------


def _sdk_conversation(base_url: str) -> list[list[Any]]:
    """Two responses over one ``client.responses.connect()`` connection, the second incremental."""
    client = openai.OpenAI(base_url=base_url, api_key="test-key", max_retries=0)
    responses: list[list[Any]] = []
    with client.responses.connect() as connection:
        connection.response.create(model="m", input="hi", store=False)
        events: list[Any] = []
        for event in connection:
            events.append(event)
            if event.type in TERMINAL:
                break
        responses.append(events)
        connection.response.create(
            model="m", input=[{"role": "user", "content": "more"}], previous_response_id=events[-1].response.id
        )
        events = []
        for event in connection:
            events.append(event)
            if event.type in TERMINAL:
                break
        responses.append(events)
        connection.response.create(model="m", input="x", previous_response_id="resp_unknown")
        responses.append([connection.recv()])
    return responses


async def test_openai_sdk_client() -> None:
    script = Script(
        [
            Reply(items=[Text("Hello from the socket", chunk_size=3), FunctionCall("call_1", "shell", {"c": 1})]),
            Reply(items=[Text("second", chunk_size=2)]),
        ]
    )
    async with open_scripted_server(script) as server:
        with trio.fail_after(60):
            first, second, third = await trio.to_thread.run_sync(_sdk_conversation, server.base_url)
    types = [e.type for e in first]
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    assert "".join(e.delta for e in first if e.type == "response.output_text.delta") == "Hello from the socket"
    assert first[-1].response.output_text == "Hello from the socket"
    assert first[-1].response.output[1].arguments == '{"c":1}'
    assert second[-1].type == "response.completed" and second[-1].response.output_text == "second"
    assert third[0].type == "error"
    assert third[0].error.code == "previous_response_not_found"
    assert server.websocket_connections_opened == 1
    sent = server.requests
    assert sent[0].headers["authorization"] == f"Bearer {REDACTED}"
    assert sent[0].body == {"type": "response.create", "model": "m", "input": "hi", "store": False}
    chain = sent[1].full_input
    assert chain is not None and len(chain) == 4
    assert chain[0] == user("hi") and chain[3] == {"role": "user", "content": "more"}
    assert [item["id"] for item in chain[1:3]] == [item.id for item in first[-1].response.output]
