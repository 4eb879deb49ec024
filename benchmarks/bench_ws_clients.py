"""Which WebSocket client for the Responses WebSocket transport: client CPU per received frame.

A server in its own process (trio-websocket) answers each text message with ``--frames`` text
frames shaped like ``response.output_text.delta`` events (~150 bytes), 16 per socket write (as
the scripted server writes events). Three clients under
``trio.run`` read them all, alternating, ``--runs`` times each; the figure is this process's CPU
time per frame (median), receive loop only:

* **kernel** — the transport's own :class:`actors.model._ws_conn.WsConnection` (h11 for the
  upgrade, frames by hand, read in the caller's task, one batch per network read);
* **wsproto** — ``wsproto`` driven the same way (its events, its UTF-8 decoding);
* **trio-websocket** — ``open_websocket_url`` / ``get_message()`` (a background reader task and
  a message channel);
* **httpx2** — ``httpx2.AsyncClient().websocket()`` / ``receive_text()`` (anyio under Trio).

``python -m benchmarks.bench_ws_clients [--frames 20000] [--runs 5]``
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

_SERVER = r"""
import json, sys, trio
from trio_websocket import serve_websocket, ConnectionClosed
FRAME = json.dumps({"type": "response.output_text.delta", "item_id": "msg_0123456789", "output_index": 0,
                    "content_index": 0, "delta": "Hello there, ", "sequence_number": 12345, "logprobs": []})
RAW = bytes([0x81, 126]) + len(FRAME).to_bytes(2, "big") + FRAME.encode()  # one unmasked text frame
async def handler(request):
    ws = await request.accept()
    try:
        while True:
            n = int(await ws.get_message())
            # 16 frames per write, as the scripted server writes 16 events (the framing is RFC 6455's)
            for i in range(0, n, 16):
                await ws._stream.send_all(RAW * min(16, n - i))
            await ws.send_message("end")
    except ConnectionClosed:
        pass
async def main():
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        print(server.port, flush=True)
trio.run(main)
"""


async def _kernel(port: int, frames: int) -> float:
    from actors.model._ws_conn import connect_ws

    conn = await connect_ws("127.0.0.1", port, "/", (), ssl_context=None, timeout=10)
    cpu = time.process_time()
    await conn.send_text(str(frames))
    got = 0
    done = False
    while not done:
        for text in await conn.receive_texts():
            if text == b"end":
                done = True
            else:
                got += 1
    cpu = time.process_time() - cpu
    await conn.aclose()
    assert got == frames
    return cpu


async def _wsproto(port: int, frames: int) -> float:
    """wsproto driven the way the transport reads: in the caller's task, one batch per read."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, CloseConnection, Ping, Request, TextMessage

    stream = await trio.open_tcp_stream("127.0.0.1", port)
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host=f"127.0.0.1:{port}", target="/")))
    accepted = False
    while not accepted:
        ws.receive_data(await stream.receive_some(65536))
        accepted = any(isinstance(e, AcceptConnection) for e in ws.events())
    cpu = time.process_time()
    await stream.send_all(ws.send(TextMessage(data=str(frames))))
    got = 0
    parts: list[str] = []
    done = False
    while not done:
        ws.receive_data(await stream.receive_some(65536))
        for event in ws.events():
            if isinstance(event, TextMessage):
                parts.append(event.data)
                if event.message_finished:
                    text = "".join(parts)
                    parts.clear()
                    if text == "end":
                        done = True
                    else:
                        got += 1
            elif isinstance(event, Ping):
                await stream.send_all(ws.send(event.response()))
    cpu = time.process_time() - cpu
    await stream.send_all(ws.send(CloseConnection(code=1000)))
    await stream.aclose()
    assert got == frames
    return cpu


async def _trio_websocket(port: int, frames: int) -> float:
    from trio_websocket import open_websocket_url

    async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
        cpu = time.process_time()
        await ws.send_message(str(frames))
        got = 0
        while (await ws.get_message()) != "end":
            got += 1
        cpu = time.process_time() - cpu
    assert got == frames
    return cpu


async def _httpx2(port: int, frames: int) -> float:
    import httpx2

    async with httpx2.AsyncClient() as client, client.websocket(f"ws://127.0.0.1:{port}/") as ws:
        cpu = time.process_time()
        await ws.send_text(str(frames))
        got = 0
        while (await ws.receive_text()) != "end":
            got += 1
        cpu = time.process_time() - cpu
    assert got == frames
    return cpu


CLIENTS: dict[str, Callable[[int, int], Awaitable[float]]] = {
    "kernel": _kernel,
    "wsproto": _wsproto,
    "trio-websocket": _trio_websocket,
    "httpx2": _httpx2,
}


def measure(frames: int = 20000, runs: int = 5) -> dict[str, Any]:
    """CPU µs per frame for each client (median of ``runs``), and each one's ratio to the kernel's."""
    server = subprocess.Popen([sys.executable, "-c", _SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        samples: dict[str, list[float]] = {name: [] for name in CLIENTS}
        errors: dict[str, str] = {}
        for _ in range(runs):
            for name, client in CLIENTS.items():
                if name in errors:
                    continue
                try:
                    samples[name].append(trio.run(client, port, frames) * 1e6 / frames)
                except Exception as exc:  # a client missing here is reported, not fatal
                    errors[name] = f"{type(exc).__name__}: {exc}"
    finally:
        server.terminate()
        server.wait()
    out: dict[str, Any] = {"frames": frames, "runs": runs, "cpu_us_per_frame": {}, "errors": errors}
    for name, values in samples.items():
        if values:
            out["cpu_us_per_frame"][name] = statistics.median(values)
    base = out["cpu_us_per_frame"].get("kernel")
    if base:
        out["ratio_to_kernel"] = {name: v / base for name, v in out["cpu_us_per_frame"].items()}
    return out


def main(argv: list[str] | None = None) -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_ws_clients")
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    result = measure(args.frames, args.runs)
    for name, value in result["cpu_us_per_frame"].items():
        ratio = result.get("ratio_to_kernel", {}).get(name, float("nan"))
        print(f"{name:>15}: {value:6.2f} µs CPU per frame ({ratio:.2f}x the kernel's)")
    for name, error in result["errors"].items():
        print(f"{name:>15}: failed: {error}")


if __name__ == "__main__":
    main()
