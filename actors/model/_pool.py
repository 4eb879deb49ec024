"""A connection pool that stays cheap with thousands of concurrent streams.

httpcore's ``AsyncConnectionPool`` rescans every connection (and, for each idle one, every
connection again) each time a request starts or a response closes: with N open streams on one
pool a request costs O(N) to O(N²) work, and 1,000 concurrent sessions on one client spent more
CPU in the pool than in decoding (measured: 25 of 74 profiled seconds). :class:`ShardedTransport`
spreads requests over several small httpcore pools ("shards"), each kept near ``shard_size``
requests in flight: a request goes to the least loaded shard, and a new shard opens only when
every shard is full. Per-request pool work is then bounded by the shard size, whatever the total.

Shards open lazily (an actor that never sends a request builds none) and an idle connection is
reused from whichever shard it sits in, so sequential requests still share one TCP connection.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx

__all__ = ["ShardedTransport"]


class _Shard:
    __slots__ = ("transport", "in_flight")

    def __init__(self, transport: httpx.AsyncHTTPTransport) -> None:
        self.transport = transport
        self.in_flight = 0


class _CountedStream(httpx.AsyncByteStream):
    """The response body, handing its shard's slot back when closed. Iteration goes straight to
    the wrapped stream (no extra frame per chunk)."""

    __slots__ = ("_stream", "_shard")

    def __init__(self, stream: httpx.AsyncByteStream, shard: _Shard) -> None:
        self._stream = stream
        self._shard: _Shard | None = shard

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        shard, self._shard = self._shard, None
        try:
            await self._stream.aclose()
        finally:
            if shard is not None:
                shard.in_flight -= 1


class ShardedTransport(httpx.AsyncBaseTransport):
    """An ``httpx`` transport over several small connection pools (see the module docstring).

    ``shard_size``: requests in flight per shard before another shard opens (and each shard's
    keep-alive cap); 8 measured best at 1,000 concurrent streams (8: ~46k events/s, 32: ~40k,
    64: ~35k, one pool: ~14k). ``verify``: the TLS context every shard uses.
    """

    def __init__(self, *, verify: ssl.SSLContext | bool = True, shard_size: int = 8) -> None:
        if shard_size < 1:
            raise ValueError(f"ShardedTransport.shard_size must be at least 1, got {shard_size!r}")
        self.shard_size = shard_size
        self._verify = verify
        self._shards: list[_Shard] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"ShardedTransport(shards={len(self._shards)}, in_flight={self.in_flight})"

    @property
    def in_flight(self) -> int:
        """Responses started and not yet closed."""
        return sum(s.in_flight for s in self._shards)

    @property
    def shards(self) -> int:
        """How many shards (connection pools) are open."""
        return len(self._shards)

    def _pick(self) -> _Shard:
        best: _Shard | None = None
        for shard in self._shards:
            if best is None or shard.in_flight < best.in_flight:
                best = shard
                if not shard.in_flight:
                    break
        if best is None or best.in_flight >= self.shard_size:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=self.shard_size)
            best = _Shard(httpx.AsyncHTTPTransport(verify=self._verify, limits=limits))
            self._shards.append(best)
        return best

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("ShardedTransport used after aclose()")
        shard = self._pick()
        shard.in_flight += 1
        try:
            response = await shard.transport.handle_async_request(request)
        except BaseException:
            shard.in_flight -= 1
            raise
        stream: Any = response.stream
        response.stream = _CountedStream(stream, shard)
        return response

    async def aclose(self) -> None:
        self._closed = True
        shards, self._shards = self._shards, []
        for shard in shards:
            await shard.transport.aclose()
