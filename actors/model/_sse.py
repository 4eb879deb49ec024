"""An incremental Server-Sent Events splitter: bytes in any split → complete events.

Handles an event across reads, many events in one read, ``\\r\\n`` and lone ``\\r`` line ends,
comment lines (``:``), multi-line ``data:`` fields and fields without a value. It is the first
stage of the per-event hot path, so the common shape (``event: x\\ndata: {...}\\n\\n``) is parsed
with a few ``bytes`` operations and no per-line objects.

A line longer than ``max_event_bytes`` (default 16 MiB) without an event boundary raises
:class:`SSEOverflow` (a clear error instead of unbounded memory). At end of stream,
:meth:`SSEDecoder.finish` discards an event left without its terminating blank line (the SSE
rule); :meth:`SSEDecoder.finish_event` hands it over instead, for a caller that can tell whether
it is complete.
"""

from __future__ import annotations

__all__ = ["SSEDecoder", "SSEOverflow", "DEFAULT_MAX_EVENT_BYTES"]

DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024


class SSEOverflow(ValueError):
    """An SSE event grew past the decoder's limit without ending."""


class SSEDecoder:
    """Feed bytes, get ``(event_name, data)`` pairs for every complete event.

    ``event_name`` is ``None`` when the event has no ``event:`` field; ``data`` is the bytes of
    its ``data:`` lines joined with ``\\n`` (events without data are skipped, as the SSE spec
    says). Not thread-safe; one decoder per stream.
    """

    __slots__ = ("_buf", "_pending_cr", "max_event_bytes")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._buf: bytes | bytearray = b""
        self._pending_cr = False
        self.max_event_bytes = max_event_bytes

    def feed(self, chunk: bytes) -> list[tuple[str | None, bytes]]:
        """Add ``chunk``; return the events it completed (possibly none).

        Linear in the bytes fed, however the stream is split: an incomplete event is kept in a
        ``bytearray`` that grows in place, and only the new bytes are searched for a boundary
        (the pending ones hold none). Re-joining and re-scanning the whole pending event on
        every read made a long line arriving in small reads quadratic — tens of seconds of CPU,
        blocking the event loop, before the size limit was reached."""
        if not chunk:  # an empty read changes nothing (it must not end a pending "\r\n")
            return []
        if b"\r" in chunk or self._pending_cr:
            chunk = self._normalize(chunk)
        pending = self._buf
        if pending:
            if type(pending) is not bytearray:
                pending = bytearray(pending)
            searched = len(pending) - 1  # a boundary may start on the last pending byte
            pending += chunk
            end = pending.rfind(b"\n\n", searched)
            if end < 0:
                self._buf = pending
                self._check_size(len(pending))
                return []
            buf = bytes(pending)
        else:
            buf = chunk
            end = buf.rfind(b"\n\n")
            if end < 0:
                self._buf = buf
                self._check_size(len(buf))
                return []
        self._buf = buf[end + 2 :]
        out: list[tuple[str | None, bytes]] = []
        for block in buf[:end].split(b"\n\n"):
            if not block:
                continue
            # fast path: "event: name\ndata: payload" with nothing else
            if block.startswith(b"event: "):
                nl = block.find(b"\n")
                if nl > 0 and block.startswith(b"data: ", nl + 1) and block.find(b"\n", nl + 1) < 0:
                    out.append((block[7:nl].decode("utf-8", "replace"), block[nl + 7 :]))
                    continue
            elif block.startswith(b"data: ") and b"\n" not in block:
                out.append((None, block[6:]))
                continue
            event = self._parse_block(block)
            if event is not None:
                out.append(event)
        return out

    def _check_size(self, size: int) -> None:
        if size > self.max_event_bytes:
            self._buf = b""
            raise SSEOverflow(f"SSE event exceeds {self.max_event_bytes} bytes without a blank line")

    def _normalize(self, chunk: bytes) -> bytes:
        # ``_pending_cr``: the previous read ended with "\r", already taken as a line end; a
        # "\n" opening this read is the second half of that "\r\n" and is dropped
        if self._pending_cr:
            self._pending_cr = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        self._pending_cr = chunk.endswith(b"\r")
        return chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

    @staticmethod
    def _parse_block(block: bytes) -> tuple[str | None, bytes] | None:
        name: str | None = None
        data: list[bytes] = []
        for line in block.split(b"\n"):
            if not line or line.startswith(b":"):
                continue
            field, sep, value = line.partition(b":")
            if sep and value.startswith(b" "):
                value = value[1:]
            if field == b"data":
                data.append(value)
            elif field == b"event":
                name = value.decode("utf-8", "replace")
            # "id" and "retry" are not used by these APIs
        if not data:
            return None
        return name, b"\n".join(data)

    def finish(self) -> bool:
        """End of stream. Returns ``True`` when an incomplete event was left over (the stream was
        cut mid-event); that event is discarded, as the SSE spec says."""
        rest = self._buf
        self._buf = b""
        self._pending_cr = False
        return bool(rest.strip(b"\n"))

    def finish_event(self) -> tuple[str | None, bytes] | None:
        """End of stream, keeping what :meth:`finish` discards: the event left over without its
        terminating blank line, parsed as if the blank line had come (``None`` when nothing but
        blank or comment lines was left). Whether that event is complete is the caller's call:
        the SSE framing cannot tell a last event whose blank line is missing from one cut
        mid-way (the Responses decoder keeps it only when its data is complete JSON)."""
        rest = self._buf
        self._buf = b""
        self._pending_cr = False
        block = bytes(rest).strip(b"\n")
        return self._parse_block(block) if block else None
