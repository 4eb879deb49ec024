"""Fan-out of kernel events to any number of subscribers, with bounded buffers.

:class:`Notifier` (also exported as :class:`NotificationActor`, the name the design uses) is the
session's :class:`~kernel.events.EventSink`: the turn calls ``await notifier.publish(batch)`` and
every attached :class:`Subscription` receives the batch, in order::

    async def show(notifier: Notifier, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with notifier.subscribe() as events:    # attached here; detached on exit
            task_status.started()
            async for event in events:                # one event at a time; or
                print(event)                          # `async for batch in events.batches()`

    async with Notifier() as notifier, trio.open_nursery() as nursery:
        await nursery.start(show, notifier)           # attached before the first event
        await run_turn(events=notifier)               # the turn publishes through the notifier
        notifier.close()                              # show() gets the rest, then its loop ends

Slow subscribers never block the turn; text is coalesced, never lost; lifecycle events are never
dropped. The whole policy is in :class:`Notifier`'s docstring.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Final

import trio

from kernel.events import Event

from ._coalesce import _Entry, _Run, coalesce

__all__ = ["Notifier", "NotificationActor", "Subscription", "DEFAULT_MAX_BUFFER"]

DEFAULT_MAX_BUFFER: Final = 1024
"""A subscriber's default soft bound, in buffered events."""

# Subscription states.
_OPEN: Final = 0
_ENDED: Final = 1  # the notifier closed: deliver what is buffered, then end
_DETACHED: Final = 2  # the subscriber left: nothing more is delivered


class _ClosedOnExit:
    """Leaving ``async with`` and :meth:`aclose` both just :meth:`close` (no checkpoint)."""

    __slots__ = ()

    def close(self) -> None:
        raise NotImplementedError

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.close()

    async def aclose(self) -> None:
        """Like :meth:`close`. Does not checkpoint."""
        self.close()


class Subscription(_ClosedOnExit):
    """One subscriber's view of a :class:`Notifier`: a bounded buffer and a way to wait on it.

    Made by :meth:`Notifier.subscribe`. ``async with`` attaches it (without a checkpoint: it sees
    every event published after that point) and detaches it on exit. Inside, it is an async
    iterator of events (``async for event in sub``) and :meth:`batches` is an async iterator of
    lists of events; both read the same buffer, in order, and may be mixed.

    Checkpoints: waiting for events (:meth:`receive_batch`, and the iterators whenever they go
    back to the buffer) always checkpoints, once per batch taken; the event iterator hands out
    the rest of a taken batch without checkpointing. Cancellation never loses an event: events
    leave the buffer only after the last checkpoint.

    When the notifier closes, the iterators end (and :meth:`receive_batch` raises
    :class:`trio.EndOfChannel`) once everything buffered was delivered. After the subscription
    is detached, reading raises :class:`trio.ClosedResourceError`.
    """

    __slots__ = (
        "_notifier",
        "_buf",
        "_limit",
        "_runs",
        "_parked",
        "_state",
        "_local",
        "_pos",
        "max_buffer",
        "coalesced",
    )

    def __init__(self, notifier: Notifier, max_buffer: int) -> None:
        self._notifier = notifier
        self._buf: list[_Entry] = []
        # compaction threshold: max_buffer, raised while the buffer holds much that cannot merge
        self._limit = max_buffer
        self._runs = False  # the buffer holds merged runs (to build when taken)
        # tasks waiting for events: a plain list and reschedule(), because publish wakes a
        # keeping-up reader on every batch and ParkingLot.unpark_all measured ~3 µs dearer
        self._parked: list[trio.lowlevel.Task] = []
        self._state = _OPEN
        self._local: list[Event] = []  # the batch the event iterator is handing out
        self._pos = 0
        self.max_buffer = max_buffer
        """The soft bound on buffered events (see :class:`Notifier`)."""
        self.coalesced = 0
        """How many published events were merged into others for this subscriber (so far)."""

    # -- attach / detach -------------------------------------------------------------------

    async def __aenter__(self) -> Subscription:
        """Attach to the notifier. Does not checkpoint. Raises :class:`trio.ClosedResourceError`
        if the notifier is closed or this subscription was used before."""
        self._notifier._attach(self)
        return self

    def close(self) -> None:
        """Detach: stop receiving, drop what is buffered, wake any task waiting on this
        subscription (it raises :class:`trio.ClosedResourceError`). Idempotent."""
        if self._state == _DETACHED:
            return
        self._notifier._detach(self)
        self._state = _DETACHED
        self._buf = []
        self._local = []
        self._pos = 0
        self._wake()

    # -- reading ---------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """How many events are waiting to be read: the buffer (a merged run counts as one) plus
        what the event iterator took and has not handed out yet."""
        return len(self._buf) + len(self._local) - self._pos

    def take_nowait(self) -> list[Event]:
        """Everything buffered now, in order (possibly empty). Never blocks, no checkpoint.
        Raises :class:`trio.ClosedResourceError` if the subscription is detached."""
        if self._state == _DETACHED:
            raise trio.ClosedResourceError("this subscription was detached; subscribe again")
        rest = self._local[self._pos :] if self._pos < len(self._local) else []
        self._local = []
        self._pos = 0
        if self._buf:
            rest.extend(self._drain())
        return rest

    async def receive_batch(self) -> list[Event]:
        """Wait for events and return all that are buffered (at least one), in order.

        Always checkpoints. Raises :class:`trio.EndOfChannel` when the notifier closed and
        everything was delivered, :class:`trio.ClosedResourceError` if detached.
        """
        if self._pos < len(self._local):
            await trio.lowlevel.checkpoint()
            return self.take_nowait()
        return await self._wait_batch()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        local = self._local
        pos = self._pos
        if pos < len(local):
            self._pos = pos + 1
            return local[pos]
        try:
            batch = await self._wait_batch()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
        self._local = batch
        self._pos = 1
        return batch[0]

    def batches(self) -> _Batches:
        """An async iterator of non-empty lists of events (everything buffered at each wake)."""
        return _Batches(self)

    async def _wait_batch(self) -> list[Event]:
        checkpointed = False
        while True:
            state = self._state
            if state == _DETACHED:
                if not checkpointed:
                    await trio.lowlevel.checkpoint()
                raise trio.ClosedResourceError("this subscription was detached; subscribe again")
            if self._buf:
                if checkpointed:
                    return self._drain()
                # checkpoint before taking: a cancellation here leaves the events buffered
                await trio.lowlevel.checkpoint()
            elif state == _ENDED:
                if checkpointed:
                    raise trio.EndOfChannel
                await trio.lowlevel.checkpoint()
            else:
                await self._park()
            checkpointed = True

    def _drain(self) -> list[Event]:
        buf = self._buf
        self._buf = []
        self._limit = self.max_buffer
        if self._runs:
            self._runs = False
            return [e.build() if type(e) is _Run else e for e in buf]  # type: ignore[misc]
        return buf  # type: ignore[return-value]

    async def _park(self) -> None:
        task = trio.lowlevel.current_task()
        parked = self._parked
        parked.append(task)

        def abort(_: object) -> trio.lowlevel.Abort:
            parked.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _wake(self) -> None:
        parked = self._parked
        if parked:
            self._parked = []
            for task in parked:
                trio.lowlevel.reschedule(task)

    # -- coalescing ------------------------------------------------------------------------

    def _compact(self) -> None:
        """Called by publish when the buffer passed its threshold (see ``_coalesce``). Amortised
        O(1) per event: the next threshold is at least twice what remains, so each entry is
        rescanned O(1) times before the subscriber takes it."""
        out, merged = coalesce(self._buf, self.max_buffer)
        self._buf = out
        if merged:
            self._runs = True
            self.coalesced += merged
        # What is left cannot merge further now (lifecycle events, one run per item and kind
        # per segment); let it grow to twice that before rescanning, so rescans stay amortised.
        self._limit = max(self.max_buffer, 2 * len(out))


class _Batches:
    """``Subscription.batches()``: an async iterator of lists of events."""

    __slots__ = ("_sub",)

    def __init__(self, sub: Subscription) -> None:
        self._sub = sub

    def __aiter__(self) -> _Batches:
        return self

    async def __anext__(self) -> list[Event]:
        try:
            return await self._sub.receive_batch()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


class Notifier(_ClosedOnExit):
    """Fan-out of kernel events to subscribers; the session's :class:`~kernel.events.EventSink`.

    **Policy for slow subscribers.**

    * A slow subscriber never blocks the turn: :meth:`publish` never waits on any subscriber
      (it never even checkpoints). It appends the batch to each subscriber's buffer and wakes
      the subscribers that are waiting.
    * Each subscriber has a buffer with a soft bound of ``max_buffer`` events (per notifier, or
      per subscription). When a publish takes a buffer past its threshold, consecutive deltas
      (:class:`~kernel.events.TextDelta`, :class:`~kernel.events.ReasoningDelta`,
      :class:`~kernel.events.ToolInputDelta`) of the same item and kind are **coalesced** into
      one event whose ``delta`` is their concatenation: the text a subscriber sees is never
      lost, only merged into fewer events. A reasoning ``section_break`` starts a new merged
      event (the deltas after it merge into it), so section boundaries survive.
    * If the buffer is still over half its bound, the oldest deltas are merged further: each
      into the earlier delta of the same item and kind within the same *segment* (the span
      between two lifecycle events). Each item's text stays in order and no text crosses a
      lifecycle event; only the interleaving of *different* items' deltas inside one segment is
      lost — and the model streams one item at a time, so in practice this pass finds nothing.
    * Lifecycle events (everything else: turn and item started/completed, tool calls, retries,
      usage, …) are never dropped and never coalesced; they may push a buffer over its soft
      bound.
    * Order per subscriber is preserved (within the limits above). A subscriber sees the events
      published from its attach time on. :meth:`close` ends every subscriber's iterator
      cleanly, after it has delivered what was buffered.

    **Memory bound.** After coalescing, a buffer holds at most one event per lifecycle event,
    per reasoning section break, and per (item, kind) in each segment, all O(items) per turn;
    the threshold that triggers the next coalescing is ``max(max_buffer, 2 × that)``, so a
    stalled subscriber's buffer stays within ``max(max_buffer, 2 × O(items))`` events however
    many deltas stream. The *bytes* of text are not bounded by the count: the policy promises
    not to lose text, so a subscriber that never reads keeps the text published since (what
    history keeps anyway). A subscriber that stops reading for good should detach (leave its
    ``async with``).

    **Why no actor task.** Publishing is an append to each subscriber's list plus a wake-up;
    a task in between would add a channel hop (~8 µs) and a context switch per batch, and it
    would still need these per-subscriber buffers to never block. So the notifier is a plain
    fan-out object with no tasks of its own: each subscriber's reading runs in the subscriber's
    own task, which owns its ``async with``; nothing outlives its owner. Cost: O(subscribers)
    per batch and a C-level ``list.extend`` per event; coalescing is amortised O(1) per event.

    ``async with Notifier() as notifier:`` closes it on exit. Not thread-safe (one Trio run).
    """

    __slots__ = ("_subs", "_closed", "max_buffer")

    def __init__(self, *, max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        """``max_buffer``: default soft bound of each subscriber's buffer, in events (≥ 1)."""
        _check_max_buffer(max_buffer)
        self.max_buffer = max_buffer
        # a tuple, replaced on attach/detach: publish iterates it without copying
        self._subs: tuple[Subscription, ...] = ()
        self._closed = False

    async def __aenter__(self) -> Notifier:
        return self

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def subscriber_count(self) -> int:
        """How many subscriptions are attached."""
        return len(self._subs)

    def subscribe(self, *, max_buffer: int | None = None) -> Subscription:
        """A new :class:`Subscription` (attached by its ``async with``; detached on exit).

        ``max_buffer`` overrides the notifier's soft bound for this subscriber (≥ 1).
        """
        if max_buffer is None:
            max_buffer = self.max_buffer
        else:
            _check_max_buffer(max_buffer)
        return Subscription(self, max_buffer)

    async def publish(self, events: Sequence[Event]) -> None:
        """Deliver ``events`` (in order) to every attached subscriber: the
        :class:`~kernel.events.EventSink` method.

        **Does not checkpoint**: it never waits, never raises :class:`trio.Cancelled`, so a
        publish always delivers, even from a cancelled scope. The events are copied out of
        ``events``, which the caller may reuse at once. Raises :class:`trio.ClosedResourceError`
        after :meth:`close`.
        """
        self.publish_nowait(events)

    def publish_nowait(self, events: Sequence[Event]) -> None:
        """Synchronous :meth:`publish`."""
        if self._closed:
            raise trio.ClosedResourceError("publish() on a closed Notifier; publish before closing it")
        if not events:
            return
        # hot path: one call per batch from the turn, every streamed delta goes through here
        for sub in self._subs:
            buf = sub._buf
            buf.extend(events)
            if len(buf) > sub._limit:
                sub._compact()
            if sub._parked:
                sub._wake()

    def close(self) -> None:
        """End every subscription (each delivers what it has buffered, then ends) and refuse
        further publishing and subscribing. Idempotent; does not checkpoint."""
        if self._closed:
            return
        self._closed = True
        subs, self._subs = self._subs, ()
        for sub in subs:
            if sub._state == _OPEN:
                sub._state = _ENDED
            sub._wake()

    def _attach(self, sub: Subscription) -> None:
        if self._closed:
            raise trio.ClosedResourceError("subscribe() on a closed Notifier")
        if sub._state != _OPEN or sub in self._subs:
            raise trio.ClosedResourceError("a Subscription attaches once; call subscribe() again")
        self._subs = (*self._subs, sub)

    def _detach(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs = tuple(s for s in self._subs if s is not sub)


NotificationActor = Notifier
"""The design's name for :class:`Notifier` (it needs no task of its own; see there)."""


def _check_max_buffer(max_buffer: int) -> None:
    if not isinstance(max_buffer, int) or isinstance(max_buffer, bool) or max_buffer < 1:
        raise ValueError(f"max_buffer must be an int >= 1 (events per subscriber), got {max_buffer!r}")
