"""What the decoder tests of both wires share: feeding a body to a decoder in pieces."""

from __future__ import annotations

import random
from typing import Any

from kernel.stream import ModelEvent


def feed_in_pieces(decoder: Any, body: bytes, cuts: list[int] | None = None) -> list[ModelEvent]:
    """The events ``decoder`` gives for ``body`` fed in pieces ending at ``cuts`` (then the rest,
    then ``finish()``)."""
    events: list[ModelEvent] = []
    start = 0
    for cut in sorted(cuts or []):
        events += decoder.feed(body[start:cut])
        start = cut
    events += decoder.feed(body[start:])
    events += decoder.finish()
    return events


def random_cuts(size: int, rng: random.Random, max_piece: int) -> list[int]:
    """Cut points splitting ``size`` bytes into pieces of 1 to ``max_piece`` bytes."""
    cuts: list[int] = []
    at = 0
    while at < size:
        at += rng.randint(1, max_piece)
        cuts.append(min(at, size))
    return cuts
