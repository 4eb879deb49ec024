"""``wss://``: the WebSocket transport over TLS, against the scripted server behind a real TLS
terminator on loopback (a throwaway CA from ``trustme``): it streams a turn when the CA is trusted,
and fails with an error naming the endpoint (never the key) when it is not."""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing
import trustme

from actors.model import ModelActor, ModelSettings, WebSocketTransport
from actors.scripted import Reply, Script, Text, open_scripted_server
from actors.session import open_session
from kernel import RequestSent, StreamError

KEY = "sk-test-" + "tls0123456789abcdef"


async def _pipe(source: trio.abc.ReceiveStream, sink: trio.abc.SendStream) -> None:
    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(sink)


@asynccontextmanager
async def tls_terminator(backend_port: int, ca: trustme.CA) -> AsyncIterator[int]:
    """A TLS server on 127.0.0.1 forwarding the plain bytes to ``backend_port``; yields its port."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)

    async def handle(tls: trio.SSLStream[Any]) -> None:
        try:
            backend = await trio.open_tcp_stream("127.0.0.1", backend_port)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_pipe, tls, backend)
                nursery.start_soon(_pipe, backend, tls)
        except (trio.BrokenResourceError, ssl.SSLError, OSError):
            await trio.aclose_forcefully(tls)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_ssl_over_tcp, handle, 0, server_context, host="127.0.0.1")
        )
        yield listeners[0].transport_listener.socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def run_turn(base_url: str, client_context: ssl.SSLContext) -> tuple[Any, list[Any]]:
    settings = ModelSettings(base_url=base_url, model="m", api_key=KEY, transport="websocket", connect_timeout=5)
    actor = ModelActor(settings, transports=[WebSocketTransport(settings, ssl_context=client_context)])
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        async with open_session(model=actor) as session, session.stream("hello over tls") as turn:
            events = [e async for e in turn]
        nursery.cancel_scope.cancel()
    return turn.outcome, events


async def test_a_turn_streams_over_wss(autojump_clock: trio.testing.MockClock) -> None:
    ca = trustme.CA()
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    script = Script([Reply(items=[Text("secure hello")]), Reply(items=[Text("again")])])
    with trio.fail_after(30):
        async with open_scripted_server(script) as server, tls_terminator(server.port, ca) as port:
            outcome, events = await run_turn(f"https://127.0.0.1:{port}/v1", client_context)
            received = list(server.requests)
    assert outcome.status == "completed" and outcome.last_agent_message == "secure hello"
    assert [e.transport for e in events if isinstance(e, RequestSent)] == ["websocket"]
    assert received[0].transport == "websocket"
    assert "authorization" in received[0].headers  # (the server records it redacted)


async def test_an_untrusted_certificate_fails_naming_the_endpoint(autojump_clock: trio.testing.MockClock) -> None:
    ca = trustme.CA()
    stranger = ssl.create_default_context()  # does not trust the throwaway CA
    with trio.fail_after(30):
        async with open_scripted_server(Script([Reply(items=[Text("never")])])) as server:
            async with tls_terminator(server.port, ca) as port:
                outcome, _ = await run_turn(f"https://127.0.0.1:{port}/v1", stranger)
            assert not server.requests
    error = outcome.error
    assert outcome.status == "failed" and isinstance(error, StreamError)
    assert f"127.0.0.1:{port}" in str(error) and "CERTIFICATE_VERIFY_FAILED" in str(error)
    assert KEY not in str(error) and KEY not in repr(error)
