"""Shared helpers for the Responses API decoder tests: fixture streams, SSE builders, and random splits.

Fixtures under ``fixtures/*.sse`` are complete streams shaped like the official API's streaming
examples (``event:`` + ``data:`` pairs, ``sequence_number`` on every event, the full response
object on lifecycle events).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from actors.model._responses import ResponsesStreamDecoder
from kernel.errors import KernelError

FIXTURES = Path(__file__).parent / "fixtures"
ALL_FIXTURES = sorted(p.name for p in FIXTURES.glob("*.sse"))


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def run(chunks: list[bytes], **kw: Any) -> tuple[list[Any], KernelError | None, ResponsesStreamDecoder]:
    """Feed ``chunks`` then EOF; return (events, error, decoder). Fails the test if anything
    but a list comes out of ``feed``."""
    dec = ResponsesStreamDecoder(**kw)
    events: list[Any] = []
    for chunk in chunks:
        out = dec.feed(chunk)
        assert isinstance(out, list)
        events.extend(out)
    dec.finish()
    assert dec.done
    return events, dec.error, dec


def sse(*events: dict[str, Any], name: bool = True) -> bytes:
    parts = []
    for i, e in enumerate(events):
        e = {**e}
        e.setdefault("sequence_number", i)
        head = f"event: {e['type']}\n" if name and "type" in e else ""
        parts.append(f"{head}data: {json.dumps(e)}\n\n")
    return "".join(parts).encode()


def raw_event(event: str | None, data: str) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


COMPLETED = {"type": "response.completed", "response": {"id": "resp_x", "status": "completed"}}


@st.composite
def cut_points(draw: st.DrawFn, size: int) -> list[int]:
    cuts = draw(st.lists(st.integers(0, size), max_size=40))
    if draw(st.booleans()):  # sometimes: many tiny reads
        step = draw(st.integers(1, 7))
        cuts += list(range(0, size, step))
    return sorted(set(cuts))


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]
