"""ShardedTransport: many concurrent streams spread over small pools, over real loopback HTTP."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack

import httpx
import pytest
import trio
import trio.testing

from actors.model import ModelSettings, open_model_actor
from actors.model._pool import ShardedTransport
from actors.scripted import Reply, Script, Text, open_scripted_server
from actors.session import open_session

BODY = json.dumps({"model": "m", "input": [], "stream": True}).encode()


async def test_concurrent_streams_open_shards_and_hand_their_slots_back(autojump_clock: trio.testing.MockClock) -> None:
    script = Script([Reply(items=[Text("hello there", chunk_size=3)])], cycle=True)
    async with open_scripted_server(script) as server:
        transport = ShardedTransport(shard_size=4)
        async with httpx.AsyncClient(transport=transport) as http, AsyncExitStack() as streams:
            url = server.base_url + "/responses"
            responses = [await streams.enter_async_context(http.stream("POST", url, content=BODY)) for _ in range(10)]
            assert all(r.status_code == 200 for r in responses)
            assert transport.in_flight == 10 and transport.shards == 3  # 4 + 4 + 2
            assert max(s.in_flight for s in transport._shards) <= 4
            body = b"".join([chunk async for chunk in responses[0].aiter_raw()])
            assert b"response.completed" in body
            await responses[0].aclose()
            await responses[0].aclose()  # closing twice hands the slot back once
            assert transport.in_flight == 9
            # the freed slot is used before another shard opens
            async with http.stream("POST", url, content=BODY) as again:
                assert again.status_code == 200 and transport.shards == 3 and transport.in_flight == 10
            await streams.aclose()
            assert transport.in_flight == 0
            opened = server.connections_opened
            for _ in range(3):  # sequential requests reuse an idle connection
                async with http.stream("POST", url, content=BODY) as r:
                    await r.aread()
            assert server.connections_opened == opened
        with pytest.raises(RuntimeError, match="after aclose"):
            await transport.handle_async_request(httpx.Request("POST", url, content=BODY))


async def test_a_failed_request_hands_its_slot_back() -> None:
    with trio.socket.socket() as sock:  # a port with nothing listening
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    transport = ShardedTransport(shard_size=2)
    async with httpx.AsyncClient(transport=transport) as http:
        for _ in range(5):
            with pytest.raises(httpx.ConnectError):
                await http.post(f"http://127.0.0.1:{port}/v1/responses", content=BODY)
        assert transport.in_flight == 0 and transport.shards == 1


def test_shard_size_is_checked() -> None:
    with pytest.raises(ValueError, match="shard_size"):
        ShardedTransport(shard_size=0)


async def test_hundreds_of_sessions_on_one_model_actor(autojump_clock: trio.testing.MockClock) -> None:
    script = Script([Reply(items=[Text("many at once", chunk_size=4)])], cycle=True)
    async with open_scripted_server(script, record_requests=False) as server:
        model = ModelSettings(base_url=server.base_url, model="m")
        async with open_model_actor(model) as actor:
            statuses: list[str] = []

            async def one() -> None:
                async with open_session(model=actor) as session:
                    statuses.append((await session.run("hi")).status)

            async with trio.open_nursery() as nursery:
                for _ in range(300):
                    nursery.start_soon(one)
    assert statuses == ["completed"] * 300
    assert server.connections_opened <= 300
