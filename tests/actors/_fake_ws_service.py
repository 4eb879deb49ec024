"""A Responses WebSocket-mode service for tests, on ``trio-websocket`` (an implementation independent
of the transport's own wsproto framing), keeping per-connection state as the real service does:
only the last response is remembered, a failed one is forgotten, an unknown
``previous_response_id`` is ``previous_response_not_found``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

Plan = Callable[["Received"], "list[dict[str, Any]] | str"]
"""What the service answers a request with: the events to send, or ``"drop"`` (close the TCP
connection after the first two events), ``"stall"`` (send two events, then nothing)."""


@attrs.define
class Received:
    """One ``response.create`` as the service saw it."""

    connection: int
    frame: dict[str, Any]
    full_input: list[Any]
    headers: dict[str, str]


@attrs.define(eq=False)
class FakeService:
    port: int = 0
    received: list[Received] = attrs.field(factory=list)
    frames: list[str] = attrs.field(factory=list)
    connections: int = 0
    refuse: int | None = None
    plan: Plan | None = None
    responses: int = 0
    refusals: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def handle(self, request: WebSocketRequest) -> None:
        if self.refuse is not None:
            self.refusals += 1
            await request.reject(self.refuse, body=b"no websocket here")
            return
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        ws = await request.accept()
        self.connections += 1
        conn = self.connections
        last: tuple[str, list[Any]] | None = None  # (response id, full input + output)
        try:
            while True:
                text = await ws.get_message()
                self.frames.append(text)
                frame = json.loads(text)
                prev = frame.get("previous_response_id")
                if prev is not None and (last is None or last[0] != prev):
                    last = None
                    await ws.send_message(
                        json.dumps(
                            _error(400, "previous_response_not_found", f"Previous response with id '{prev}' not found.")
                        )
                    )
                    continue
                full = (last[1] if prev is not None and last is not None else []) + list(frame.get("input", []))
                got = Received(conn, frame, full, headers)
                self.received.append(got)
                answer = self.plan(got) if self.plan is not None else text_reply("ok")
                self.responses += 1
                rid = f"resp_{self.responses}"
                if isinstance(answer, str):
                    events = _with_ids(text_reply("cut short"), rid)
                    for event in events[:2]:
                        await ws.send_message(json.dumps(event))
                    last = None
                    if answer == "drop":
                        await ws._stream.aclose()  # no close frame: a dropped TCP connection
                        return
                    await trio.sleep_forever()  # "stall"
                events = _with_ids(answer, rid)
                output = [e["item"] for e in events if e.get("type") == "response.output_item.done"]
                for event in events:
                    await ws.send_message(json.dumps(event))
                ok = events and events[-1].get("type") == "response.completed"
                last = (rid, full + [_no_id(i) for i in output]) if ok else None
        except ConnectionClosed:
            pass


def _no_id(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != "id"}


def _error(status: int, code: str, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "status": status,
        "error": {"type": "invalid_request_error", "code": code, "message": message, "param": None},
    }


def error_frame(status: int, code: str, message: str) -> list[dict[str, Any]]:
    """An answer that is one ``error`` frame."""
    return [_error(status, code, message)]


def _with_ids(events: list[dict[str, Any]], rid: str) -> list[dict[str, Any]]:
    out = []
    for event in events:
        event = dict(event)
        if "response" in event:
            event["response"] = {**event["response"], "id": rid}
        out.append(event)
    return out


def text_reply(text: str, item_id: str = "msg_1") -> list[dict[str, Any]]:
    """The events of a response answering ``text``."""
    item = {
        "type": "message",
        "role": "assistant",
        "id": item_id,
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    return [
        {"type": "response.created", "response": {"id": ""}},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**item, "content": [], "status": "in_progress"},
        },
        {
            "type": "response.output_text.delta",
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
            "delta": text,
        },
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {
            "type": "response.completed",
            "response": {"id": "", "usage": {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4}},
        },
    ]


def call_reply(call_id: str, name: str, arguments: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of a response calling one function tool."""
    item = {
        "type": "function_call",
        "id": "fc_" + call_id,
        "call_id": call_id,
        "name": name,
        "arguments": json.dumps(arguments),
        "status": "completed",
    }
    return [
        {"type": "response.created", "response": {"id": ""}},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": {"id": ""}},
    ]


@asynccontextmanager
async def open_fake_service(**kw: Any) -> AsyncIterator[FakeService]:
    """Serve on 127.0.0.1 (a free port) for the block."""
    service = FakeService(**kw)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, service.handle, "127.0.0.1", 0, None)
        service.port = server.port
        try:
            yield service
        finally:
            nursery.cancel_scope.cancel()
