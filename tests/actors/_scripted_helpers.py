"""Shared helpers for the scripted-server tests: request bodies and a streamed response read to its end."""

from __future__ import annotations

import functools
import json
from typing import Any

import httpx
import trio

from actors.model._sse import SSEDecoder

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


async def first_line(proc: trio.Process) -> str:
    """The first line a scripted-server process prints (``listening on <url>``), within 20 s."""
    assert proc.stdout is not None
    with trio.fail_after(20):
        out = b""
        while b"\n" not in out:
            chunk = await proc.stdout.receive_some(1024)
            assert chunk, "the CLI exited before printing its line"
            out += chunk
    return out.decode().strip()
