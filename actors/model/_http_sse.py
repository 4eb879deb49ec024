"""The HTTP+SSE model transport: ``POST {base_url}/responses`` (or ``/chat/completions``) with
``stream: true``, the response read as server-sent events.

One ``httpx.AsyncClient`` per transport (so per ModelActor), over small sharded connection pools
(:class:`~actors.model._pool.ShardedTransport`); the API key lives only in its default headers, so
it never appears in a repr, an error message, a log line or an event. HTTP statuses and error
bodies are mapped as PROTOCOL §3 says; connect/read errors, EOF before completion and the idle
timeout (no byte for ``idle_timeout`` seconds) are :class:`~kernel.errors.StreamError`.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import trio

from kernel.errors import StreamError
from kernel.stream import ModelEvent, TransportUsed

from ._http_errors import error_from_http, rate_limits_from_headers, redact
from ._pool import ShardedTransport
from ._wire import encode_json
from .transport import StreamRequest, pump_stream

if TYPE_CHECKING:
    from ._actor import ModelSettings

__all__ = ["HttpSseTransport", "default_ssl_context"]

_MAX_ERROR_BODY = 64 * 1024
_SERVED_BY_HTTP = TransportUsed("http")


class HttpSseTransport:
    """Responses or Chat Completions streaming over HTTP with server-sent events (the primary
    transport). ``http_client``: use this client (its pool, proxies, TLS) instead of building one;
    it is not closed by the transport."""

    name = "http"

    def __init__(self, settings: ModelSettings, *, http_client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self._given_client = http_client
        self._http: httpx.AsyncClient | None = http_client
        headers = {"Accept": "text/event-stream", "Accept-Encoding": "identity", "Content-Type": "application/json"}
        if settings.api_key:
            headers["Authorization"] = f"Bearer {settings.api_key}"
        headers.update(dict(settings.extra_headers))
        self._headers = headers

    def __repr__(self) -> str:
        return f"HttpSseTransport(endpoint={self.settings.endpoint!r})"

    @asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        """Build the client (unless one was given) and close it when the actor ends."""
        if self._given_client is not None:
            yield
            return
        s = self.settings
        timeout = httpx.Timeout(connect=s.connect_timeout, read=None, write=s.connect_timeout, pool=None)
        # several small connection pools: one httpcore pool's per-request work grows with its open
        # connections (see actors.model._pool)
        pool = ShardedTransport(verify=default_ssl_context())
        self._http = http = httpx.AsyncClient(timeout=timeout, transport=pool, verify=default_ssl_context())
        try:
            yield
        finally:
            self._http = None
            with trio.CancelScope(shield=True):
                await http.aclose()

    def session_state(self) -> None:
        """HTTP keeps no per-session state."""
        return None

    async def stream(self, request: StreamRequest) -> None:
        """POST the body and pump the SSE response into the request's reply channel."""
        http = self._http
        if http is None:
            raise StreamError("the HTTP transport is not open")
        try:
            await self._stream(http, request)
        except httpx.HTTPError as exc:
            raise StreamError(self._describe(exc)) from None

    async def _stream(self, http: httpx.AsyncClient, request: StreamRequest) -> None:
        s = self.settings
        body = encode_json(request.body)
        async with http.stream("POST", s.endpoint, content=body, headers=self._headers) as response:
            if response.status_code >= 400:
                raise error_from_http(
                    response.status_code,
                    response.headers,
                    await _read_limited(response),
                    wire=s.wire,
                    max_retry_after=s.max_retry_after,
                )
            first: list[ModelEvent] = [_SERVED_BY_HTTP]
            limits = rate_limits_from_headers(response.headers)
            if limits is not None:
                first.append(limits)
            chunks = response.aiter_raw()
            if await pump_stream(request, chunks.__anext__, s.idle_timeout, first):
                await _drain_for_reuse(chunks)

    async def post_json(self, path: str, body: dict[str, Any]) -> Any:
        """``POST {base_url}/{path}`` with a JSON body, not streamed (``responses/compact``): the
        parsed JSON answer; an HTTP error is raised as the kernel error the table maps it to,
        a connection failure as :class:`StreamError` naming the host."""
        http = self._http
        if http is None:
            raise StreamError("the HTTP transport is not open")
        s = self.settings
        url = s.base_url.rstrip("/") + "/" + path
        headers = {**self._headers, "Accept": "application/json"}
        try:
            response = await http.post(url, content=encode_json(body), headers=headers)
            if response.status_code >= 400:
                raise error_from_http(
                    response.status_code, response.headers, response.content[:_MAX_ERROR_BODY], wire=s.wire
                )
            return msgspec.json.decode(response.content)
        except httpx.HTTPError as exc:
            raise StreamError(self._describe(exc)) from None
        except msgspec.DecodeError as exc:
            raise StreamError(f"{url} answered with a body that is not JSON: {exc}") from None

    def _describe(self, exc: httpx.HTTPError) -> str:
        """The :class:`StreamError` text for a network failure, naming the ``host:port`` it was
        talking to ("ConnectError: cannot reach no-such-host.invalid:80: [Errno -2] Name or
        service not known"). Built from the request URL's host and port only (never its user
        info, path or query, never a header): the API key cannot appear, and the exception text
        is redacted on top."""
        kind = type(exc).__name__
        text = str(exc) or kind
        if self.settings.api_key:
            text = text.replace(self.settings.api_key, "[redacted]")
        try:
            url = exc.request.url
        except RuntimeError:  # raised before a request existed
            url = httpx.URL(self.settings.endpoint)
        host = url.host or "?"
        if ":" in host:
            host = f"[{host}]"  # an IPv6 literal
        port = url.port or {"https": 443, "http": 80}.get(url.scheme)
        where = f"{host}:{port}" if port else host
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return redact(f"{kind}: cannot reach {where}: {text}")
        return redact(f"{kind} (from {where}): {text}")


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """The TLS context every :class:`HttpSseTransport` that builds its own client uses: httpx's
    default (certifi roots, ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` honoured), built once per
    process. Loading the CA bundle costs ~50-150 ms of CPU and a few hundred KiB, so building
    one per actor made every session open pay for it (SSLContext is safe to share)."""
    return httpx.create_ssl_context()


async def _drain_for_reuse(chunks: AsyncIterator[bytes]) -> None:
    """Read what is left of a completed response (normally just the chunked-encoding trailer) so
    httpx returns the connection to the pool instead of closing it: without this every request
    paid a new TCP (and TLS) handshake. Capped at 0.5 s. Not shielded: the client does not cancel a
    completed request when it leaves the stream (``StreamRequest.completed``), so the drain survives
    the turn moving on, while closing the session or the actor still stops it at once (a shielded
    drain held a session's exit, even an abrupt cancel, for up to 0.5 s behind a slow trailer)."""
    with trio.move_on_after(0.5):
        try:
            async for _ in chunks:
                pass
        except httpx.HTTPError:
            pass  # the connection is closed instead; the response was already complete


async def _read_limited(response: httpx.Response) -> bytes:
    out = bytearray()
    async for chunk in response.aiter_raw():
        out += chunk
        if len(out) > _MAX_ERROR_BODY:
            break
    return bytes(out[:_MAX_ERROR_BODY])
