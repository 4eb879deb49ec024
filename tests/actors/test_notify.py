"""Notifier: fan-out, slow-subscriber policy (coalesce text, never drop lifecycle), close."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given, strategies as st

from actors.notify import NotificationActor, Notifier, Subscription
from kernel import TurnHost, run_turn
from kernel.events import (
    Event,
    EventSink,
    ItemCompleted,
    ReasoningDelta,
    TextDelta,
    ToolInputDelta,
    TurnCompleted,
    TurnStarted,
)
from kernel.items import Message
from kernel.testing import (
    FunctionTools,
    InMemoryHistory,
    RecordingSink,
    ScriptedModel,
    text_response,
    tool_call_response,
)

# -- reference model of the policy ------------------------------------------------------------


def _key(e: Event) -> tuple[Any, ...]:
    return (type(e).__name__, e.item_id, getattr(e, "kind", None))  # type: ignore[union-attr]


def canonical(events: Sequence[Event]) -> list[Any]:
    """What coalescing must preserve: ``[segment, lifecycle, segment, lifecycle, ..., segment]``
    where a segment maps (type, item, kind) to its text, a section break written as ``|``."""
    out: list[Any] = [{}]
    for e in events:
        if type(e).lifecycle:
            out.append(e)
            out.append({})
        else:
            seg = out[-1]
            text = ("|" if getattr(e, "section_break", False) else "") + e.delta  # type: ignore[union-attr]
            seg[_key(e)] = seg.get(_key(e), "") + text
    return out


def is_prefix(got: list[Any], want: list[Any]) -> bool:
    """``got`` (canonical) is what a subscriber detached part-way may have seen of ``want``."""
    if len(got) > len(want):
        return False
    *whole, last = got
    if whole != want[: len(whole)]:
        return False
    target = want[len(whole)]
    return all(target.get(k, "").startswith(v) for k, v in last.items())


def irreducible(events: Sequence[Event]) -> int:
    """How many entries remain when everything mergeable within a segment is merged."""
    n = 0
    open_keys: set[Any] = set()
    for e in events:
        if type(e).lifecycle:
            n += 1
            open_keys.clear()
        elif getattr(e, "section_break", False) or _key(e) not in open_keys:
            n += 1
            open_keys.add(_key(e))
    return n


def bound(sub: Subscription, since_attach: Sequence[Event]) -> int:
    """The documented hard bound on a subscriber's buffer."""
    return max(sub.max_buffer, 2 * irreducible(since_attach))


def lifecycle(events: Sequence[Event]) -> list[Event]:
    return [e for e in events if type(e).lifecycle]


def text(events: Sequence[Event]) -> str:
    return "".join(e.delta for e in events if not type(e).lifecycle)  # type: ignore[union-attr]


_ids = itertools.count()


def delta(item: str = "m1") -> TextDelta:
    return TextDelta(item, f"{next(_ids)},")


def mark(name: str = "t") -> TurnStarted:
    return TurnStarted(f"{name}{next(_ids)}")


# -- basics -----------------------------------------------------------------------------------


async def test_is_an_event_sink_and_publish_never_checkpoints() -> None:
    sink: EventSink = Notifier()
    assert NotificationActor is Notifier
    with trio.testing.assert_no_checkpoints():
        await sink.publish([delta()])
        await sink.publish([])


async def test_every_subscriber_sees_every_event_in_order() -> None:
    events: list[Event] = [mark(), delta(), delta(), ReasoningDelta("r", "x"), mark(), delta("m2")]
    got: list[list[Event]] = [[], [], []]
    async with Notifier() as notifier, trio.open_nursery() as nursery:

        async def by_event(out: list[Event], task_status: trio.TaskStatus[None]) -> None:
            async with notifier.subscribe() as sub:
                task_status.started()
                async for e in sub:
                    out.append(e)

        async def by_batch(out: list[Event], task_status: trio.TaskStatus[None]) -> None:
            async with notifier.subscribe() as sub:
                task_status.started()
                async for batch in sub.batches():
                    assert batch
                    out.extend(batch)

        await nursery.start(by_event, got[0])
        await nursery.start(by_batch, got[1])
        await nursery.start(by_event, got[2])
        assert notifier.subscriber_count == 3
        for i in range(0, len(events), 2):
            await notifier.publish(events[i : i + 2])
            if i == 2:
                await trio.testing.wait_all_tasks_blocked()
        notifier.close()
    assert got == [events, events, events]


async def test_caller_may_reuse_the_published_list() -> None:
    async with Notifier() as notifier, notifier.subscribe() as sub:
        out: list[Event] = [delta(), mark()]
        expected = list(out)
        await notifier.publish(out)
        out.clear()
        assert sub.take_nowait() == expected


async def test_stalled_subscriber_does_not_block_publish_and_loses_no_text() -> None:
    published: list[Event] = []
    notifier = Notifier(max_buffer=64)
    async with notifier, notifier.subscribe() as stalled, notifier.subscribe() as reader:
        reader_got: list[Event] = []
        biggest = 0
        with trio.testing.assert_no_checkpoints():
            for i in range(100_000):
                if i % 5_000 == 0:  # a few lifecycle events: a turn per 5,000 deltas
                    batch: list[Event] = [mark("turn"), delta(f"m{i}")]
                elif i % 7 == 0:  # reasoning interleaved with text (another item and kind)
                    batch = [ReasoningDelta(f"r{i // 5_000}", f"{i};", "summary")]
                else:
                    batch = [delta(f"m{i - i % 5_000}")]
                await notifier.publish(batch)
                published.extend(batch)
                biggest = max(biggest, stalled.buffered)
                if i % 10 == 0:
                    reader_got.extend(reader.take_nowait())
        assert stalled.buffered <= bound(stalled, published)
        assert biggest <= bound(stalled, published) <= 2 * 64
        assert stalled.coalesced > 99_000
        # it resumes
        got = await stalled.receive_batch()
        reader_got.extend(reader.take_nowait())
    assert lifecycle(got) == lifecycle(published)
    assert canonical(got) == canonical(published)
    assert len(got) + stalled.coalesced == len(published)
    # one item's text, one kind at a time, in one segment: the concatenation is exact
    assert "".join(e.delta for e in got if type(e) is TextDelta) == "".join(
        e.delta for e in published if type(e) is TextDelta
    )
    assert reader_got == published  # the reader kept up: nothing of its was merged
    assert reader.coalesced == 0


async def test_concatenated_text_is_exact_for_a_single_stream() -> None:
    published = [delta() for _ in range(10_000)]
    async with Notifier(max_buffer=8) as notifier, notifier.subscribe() as sub:
        for i in range(0, len(published), 3):
            await notifier.publish(published[i : i + 3])
            assert sub.buffered <= 8
        got = await sub.receive_batch()
    assert text(got) == text(published)
    assert len(got) <= 8


async def test_section_breaks_survive_coalescing() -> None:
    published: list[Event] = []
    for section in range(3):
        published.append(ReasoningDelta("r", "", "summary", section_break=True))
        published.extend(ReasoningDelta("r", f"s{section}.{i} ") for i in range(50))
    async with Notifier(max_buffer=4) as notifier, notifier.subscribe() as sub:
        for e in published:
            await notifier.publish([e])
        got = sub.take_nowait()
    assert canonical(got) == canonical(published)
    breaks = [e for e in got if e.section_break]  # type: ignore[union-attr]
    assert [e.delta[:5] for e in breaks] == ["s0.0 ", "s1.0 ", "s2.0 "]  # type: ignore[union-attr]
    assert len(got) <= 4


async def test_interleaved_items_merge_within_a_segment_only() -> None:
    a = [TextDelta("a", f"a{i}") for i in range(20)]
    b = [ToolInputDelta("b", f"b{i}") for i in range(20)]
    published: list[Event] = [x for pair in zip(a, b) for x in pair]
    published.insert(10, mark())
    async with Notifier(max_buffer=4) as notifier, notifier.subscribe() as sub:
        await notifier.publish(published)
        got = sub.take_nowait()
    assert canonical(got) == canonical(published)
    assert len(got) == irreducible(published) == 5
    assert lifecycle(got) == lifecycle(published)


async def test_lifecycle_events_are_never_coalesced_or_dropped() -> None:
    item = Message(role="assistant", content=[])
    published: list[Event] = []
    for i in range(500):
        published += [delta("m"), ItemCompleted(item), delta("m"), TurnCompleted(str(i), None)]
    limit = max(4, 2 * irreducible(published))
    async with Notifier(max_buffer=4) as notifier, notifier.subscribe() as sub:
        for e in published:
            await notifier.publish([e])
            assert sub.buffered <= limit
        got = sub.take_nowait()
    assert got == published  # nothing could merge: deltas are separated by lifecycle events


async def test_a_real_turn_publishing_through_the_notifier() -> None:
    """The module docstring's shape: a reader attached before the turn, closed after it."""
    recorded = RecordingSink()
    got: list[Event] = []

    async def show(notifier: Notifier, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with notifier.subscribe() as events:
            task_status.started()
            async for event in events:
                got.append(event)

    async def echo(args: dict[str, Any]) -> str:
        return str(args)

    async with Notifier() as notifier, trio.open_nursery() as nursery:

        class Tee:
            async def publish(self, events: Sequence[Event]) -> None:
                await recorded.publish(events)
                await notifier.publish(events)

        await nursery.start(show, notifier)
        stalled = await notifier.subscribe(max_buffer=4).__aenter__()
        model = ScriptedModel([tool_call_response(("c1", "echo", {"a": 1})), text_response("x" * 3000, chunks=1000)])
        host = TurnHost(model, FunctionTools({"echo": echo}), InMemoryHistory(), Tee())
        outcome = await run_turn(host, [Message.user("hi")])
        assert outcome.last_agent_message == "x" * 3000
        notifier.close()
    assert got == recorded.events
    assert sum(type(e) is TextDelta for e in got) == 1000
    late = stalled.take_nowait()
    assert canonical(late) == canonical(recorded.events)
    assert len(late) < 20


# -- attach / detach / close ------------------------------------------------------------------


async def test_subscribe_and_unsubscribe_mid_stream() -> None:
    first: list[Event] = [mark()]
    second: list[Event] = [delta(), mark()]
    third: list[Event] = [delta()]
    async with Notifier() as notifier:
        async with notifier.subscribe() as early:
            await notifier.publish(first)
            async with notifier.subscribe() as late:
                await notifier.publish(second)
                assert late.take_nowait() == second
            assert notifier.subscriber_count == 1
            with pytest.raises(trio.ClosedResourceError):
                late.take_nowait()
            with pytest.raises(trio.ClosedResourceError):
                await late.receive_batch()
            with pytest.raises(trio.ClosedResourceError):
                async for _ in late:
                    pass
            await notifier.publish(third)
            assert early.take_nowait() == first + second + third
        assert notifier.subscriber_count == 0
        await notifier.publish(third)  # nobody listening: fine


async def test_detach_wakes_a_waiting_reader() -> None:
    async with Notifier() as notifier:
        sub = notifier.subscribe()
        async with sub:

            async def reader() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await sub.receive_batch()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                sub.close()
        with pytest.raises(trio.ClosedResourceError):
            async with sub:  # a subscription attaches once
                pass


async def test_close_ends_iterators_after_delivering_what_is_buffered() -> None:
    published: list[Event] = [mark(), delta(), delta()]
    got: list[list[Event]] = [[], []]
    notifier = Notifier()
    async with trio.open_nursery() as nursery:

        async def by_event(task_status: trio.TaskStatus[None]) -> None:
            async with notifier.subscribe() as sub:
                task_status.started()
                async for e in sub:
                    got[0].append(e)

        async def by_batch(task_status: trio.TaskStatus[None]) -> None:
            async with notifier.subscribe() as sub:
                task_status.started()
                async for batch in sub.batches():
                    got[1].extend(batch)

        await nursery.start(by_event)
        await nursery.start(by_batch)
        await notifier.publish(published[:1])
        await trio.testing.wait_all_tasks_blocked()  # both are waiting on an empty buffer
        await notifier.publish(published[1:])
        notifier.close()  # before they ran: they still get the rest, then end
    assert got == [published, published]
    with pytest.raises(trio.ClosedResourceError):
        await notifier.publish(published)
    with pytest.raises(trio.ClosedResourceError):
        async with notifier.subscribe():
            pass
    notifier.close()  # idempotent


async def test_receive_checkpoints_and_cancellation_loses_nothing() -> None:
    async with Notifier() as notifier, notifier.subscribe() as sub:
        with trio.CancelScope() as scope:
            scope.cancel()
            await sub.receive_batch()  # cancelled while waiting
        await notifier.publish([e := delta()])
        with trio.CancelScope() as scope:
            scope.cancel()
            await sub.receive_batch()  # cancelled at the checkpoint before taking
        assert scope.cancelled_caught
        with trio.testing.assert_checkpoints():
            assert await sub.receive_batch() == [e]
        notifier.close()
        with trio.testing.assert_checkpoints(), pytest.raises(trio.EndOfChannel):
            await sub.receive_batch()


async def test_bad_max_buffer_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_buffer"):
        Notifier(max_buffer=0)
    with pytest.raises(ValueError, match="max_buffer"):
        Notifier().subscribe(max_buffer=-3)


# -- random interleavings ---------------------------------------------------------------------

_delta_templates = st.one_of(
    st.builds(lambda i: ("text", i), st.sampled_from("ab")),
    st.builds(lambda i: ("tool", i), st.sampled_from("ab")),
    st.builds(lambda i, k: ("reason", i, k), st.sampled_from("ab"), st.sampled_from(["summary", "content"])),
    st.builds(lambda i, k: ("break", i, k), st.sampled_from("ab"), st.sampled_from(["summary", "content"])),
)
_templates = st.one_of(_delta_templates, _delta_templates, st.just(("life",)))
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.lists(_templates, max_size=6)),
        st.tuples(st.just("publish"), st.lists(_templates, max_size=6)),
        st.tuples(st.just("publish"), st.lists(_templates, min_size=10, max_size=40)),
        st.tuples(st.just("attach"), st.sampled_from(["events", "batches", "stalled"]), st.integers(1, 8)),
        st.tuples(st.just("detach"), st.integers(0, 7)),
        st.tuples(st.just("resume"), st.integers(0, 7)),
        st.tuples(st.just("settle")),
    ),
    max_size=60,
)


def _make(template: tuple[Any, ...], n: int) -> Event:
    tag = template[0]
    if tag == "text":
        return TextDelta(template[1], f"{n},")
    if tag == "tool":
        return ToolInputDelta(template[1], f"{n},")
    if tag == "reason":
        return ReasoningDelta(template[1], f"{n},", template[2])
    if tag == "break":
        return ReasoningDelta(template[1], "", template[2], section_break=True)
    return TurnStarted(f"L{n}")


@attrs.define
class _Consumer:
    mode: str
    start: int
    gate: trio.Event = attrs.field(factory=trio.Event)
    got: list[Event] = attrs.Factory(list)
    sub: Subscription | None = None
    scope: trio.CancelScope | None = None
    cancelled: bool = False
    end: int | None = None  # where it detached, if it did


@given(_ops)
async def test_random_publish_consume_interleavings(ops: list[tuple[Any, ...]]) -> None:
    notifier = Notifier()
    published: list[Event] = []
    consumers: list[_Consumer] = []
    counter = itertools.count()

    async def consume(c: _Consumer, max_buffer: int, task_status: trio.TaskStatus[None]) -> None:
        with trio.CancelScope() as scope:
            async with notifier.subscribe(max_buffer=max_buffer) as sub:
                c.sub, c.scope = sub, scope
                task_status.started()
                await c.gate.wait()
                if c.mode == "batches":
                    async for batch in sub.batches():
                        assert batch
                        c.got.extend(batch)
                else:
                    async for e in sub:
                        c.got.append(e)
        if scope.cancelled_caught:
            c.end = len(published)  # detached now (not when cancel() was called)

    async with trio.open_nursery() as nursery:
        for op in ops:
            if op[0] == "publish":
                batch = [_make(t, next(counter)) for t in op[1]]
                await notifier.publish(batch)
                published.extend(batch)
                for c in consumers:
                    if not c.cancelled and not c.gate.is_set():
                        assert c.sub is not None
                        assert c.sub.buffered <= bound(c.sub, published[c.start :])
            elif op[0] == "attach":
                c = _Consumer(op[1], len(published))
                if op[1] != "stalled":
                    c.gate.set()
                consumers.append(c)
                await nursery.start(consume, c, op[2])
            elif op[0] in ("detach", "resume") and consumers:
                c = consumers[op[1] % len(consumers)]
                if op[0] == "resume":
                    c.gate.set()
                elif not c.cancelled:
                    assert c.scope is not None
                    c.scope.cancel()
                    c.cancelled = True
            elif op[0] == "settle":
                await trio.testing.wait_all_tasks_blocked()
        notifier.close()
        for c in consumers:
            c.gate.set()

    for c in consumers:
        assert c.sub is not None
        window = published[c.start : c.end]
        if c.end is None:
            assert lifecycle(c.got) == lifecycle(window)
            assert canonical(c.got) == canonical(window)
            assert len(c.got) + c.sub.coalesced == len(window)
            if c.sub.coalesced == 0:
                assert c.got == window
        else:
            assert is_prefix(canonical(c.got), canonical(window))
