"""Coalescing a subscriber's buffer: merging streamed deltas so a slow subscriber's buffer stays
bounded without losing text (the policy is in :class:`~actors.notify.Notifier`'s docstring).

A buffer holds events and :class:`_Run` entries (deltas already merged, joined only when the
subscriber takes them). :func:`coalesce` is what :meth:`Subscription._compact` runs: first
:func:`_merge_adjacent`, then, only if that was not enough, :func:`_merge_in_segments`.
"""

from __future__ import annotations

from typing import Union

import attrs

from kernel.events import Event, ReasoningDelta

_Key = tuple[type, str, str | None]


class _Run:
    """Consecutive (or, under pressure, same-segment) deltas of one item and kind, merged.

    Holds the parts instead of a growing string: merging ``n`` deltas one by one into a string
    would copy O(n²) bytes; the parts are joined once, when the subscriber takes the run.
    """

    __slots__ = ("first", "key", "brk", "parts")

    def __init__(self, first: Event, key: _Key, brk: bool) -> None:
        self.first = first
        self.key = key
        self.brk = brk
        self.parts: list[str] = [first.delta]  # type: ignore[union-attr]

    def absorb(self, entry: Event | _Run) -> None:
        if type(entry) is _Run:
            self.parts.extend(entry.parts)
        else:
            self.parts.append(entry.delta)  # type: ignore[union-attr]

    def build(self) -> Event:
        return attrs.evolve(self.first, delta="".join(self.parts))  # type: ignore[arg-type]


_Entry = Union[Event, _Run]


def _key_of(entry: Event) -> tuple[_Key, bool]:
    """(merge key, starts a new section) of a delta event."""
    kind = type(entry)
    if kind is ReasoningDelta:
        return (kind, entry.item_id, entry.kind), entry.section_break  # type: ignore[union-attr]
    return (kind, entry.item_id, None), False  # type: ignore[union-attr]


def coalesce(buf: list[_Entry], max_buffer: int) -> tuple[list[_Entry], int]:
    """``buf`` with its deltas merged, and how many entries were merged away.

    Merges adjacent deltas of the same item and kind; if more than ``max_buffer // 2`` entries
    are left, merges the oldest further within their segments until that many are left (or
    nothing more can merge).
    """
    out, merged = _merge_adjacent(buf)
    target = max_buffer // 2
    if len(out) > target:
        out, more = _merge_in_segments(out, len(out) - target)
        merged += more
    return out, merged


def _merge_adjacent(buf: list[_Entry]) -> tuple[list[_Entry], int]:
    """Pass 1: merge adjacent deltas of the same item and kind. Order is exactly preserved.

    A section break never merges into what precedes it (it would lose the break); the deltas
    after it merge into it. (Key computation and merging inlined, for a run and for a delta
    alike: under a stalled subscriber this loop runs about once per published delta.)
    """
    merged = 0
    out: list[_Entry] = []
    append = out.append
    prev: _Key | None = None  # key of out[-1] if it is a delta or a run
    prev_brk = False
    run: _Run | None = None  # out[-1] if it is a run
    for e in buf:
        kind = type(e)
        if kind is _Run:
            key, brk = e.key, e.brk  # type: ignore[union-attr]
            if key == prev and not brk:
                if run is None:
                    run = out[-1] = _Run(out[-1], key, prev_brk)  # type: ignore[arg-type]
                run.parts.extend(e.parts)  # type: ignore[union-attr]
                merged += 1
            else:
                append(e)
                prev, prev_brk, run = key, brk, e  # type: ignore[assignment]
            continue
        if kind.lifecycle:  # type: ignore[union-attr]
            append(e)
            prev = run = None
            continue
        if kind is ReasoningDelta:
            key = (kind, e.item_id, e.kind)  # type: ignore[union-attr]
            brk = e.section_break  # type: ignore[union-attr]
        else:
            key = (kind, e.item_id, None)  # type: ignore[union-attr]
            brk = False
        if key == prev and not brk:
            if run is None:
                run = out[-1] = _Run(out[-1], key, prev_brk)  # type: ignore[arg-type]
            run.parts.append(e.delta)  # type: ignore[union-attr]
            merged += 1
        else:
            append(e)
            prev, prev_brk, run = key, brk, None
    return out, merged


def _merge_in_segments(out: list[_Entry], excess: int) -> tuple[list[_Entry], int]:
    """Pass 2 (rare: deltas of several items interleaved with no lifecycle event between).

    Oldest first, merge each delta into the earlier entry of its item and kind in the same
    segment (between two lifecycle events), until ``excess`` entries were merged away. Each
    item's text stays in order and never crosses a lifecycle event; only the interleaving of
    different items' deltas within a segment is lost.
    """
    merged = 0
    out2: list[_Entry] = []
    open_: dict[_Key, int] = {}
    i = 0
    n = len(out)
    while i < n and excess > 0:
        e = out[i]
        i += 1
        kind = type(e)
        if kind is _Run:
            key, brk = e.key, e.brk  # type: ignore[union-attr]
        elif kind.lifecycle:  # type: ignore[union-attr]
            out2.append(e)
            open_.clear()
            continue
        else:
            key, brk = _key_of(e)  # type: ignore[arg-type]
        if not brk:
            j = open_.get(key)
            if j is not None:
                into = out2[j]
                if type(into) is not _Run:
                    into = out2[j] = _Run(into, key, _key_of(into)[1])  # type: ignore[arg-type]
                into.absorb(e)
                merged += 1
                excess -= 1
                continue
        open_[key] = len(out2)
        out2.append(e)
    if i < n:
        out2.extend(out[i:])
    return out2, merged
