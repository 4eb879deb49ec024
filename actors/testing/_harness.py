"""The harness around a running session: the Trio thread every rule calls into, the records of
one session generation (:class:`_Gen`: its attempts, tasks, events, crash), and the wrappers
around the host's model client, history and event sink that fill them in."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from kernel import (
    CompactionFinished,
    CompactionStarted,
    Completed,
    Event,
    FallbackWarning,
    KernelError,
    ResponseItem,
    ToolCallFinished,
    ToolCallStarted,
    TurnAborted,
    TurnCompleted,
    TurnFailed,
    TurnStarted,
)
from kernel.compaction import COMPACTION_PROMPT
from kernel.items import Message
from kernel.prompt import Prompt
from kernel.stream import FallbackTransport, RateLimitsSnapshot, TransportUsed
from kernel.testing import well_formed_violations

from ..history import resume
from ..model import ModelSettings
from ..model._wire import encode_body
from ..scripted import RecordedRequest, Reply, ScriptedServer
from ..session import Session, TurnHandle
from ._faults import _TRIGGER_EVENTS, _ReplySpec, _Trigger

_FINALS = (TurnCompleted, TurnAborted, TurnFailed)


# =============================================================================================
# The Trio thread
# =============================================================================================


class _TrioThread:
    """One ``trio.run`` in a daemon thread; :meth:`call` runs an async function in it."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._exc: BaseException | None = None
        self.token: trio.lowlevel.TrioToken | None = None
        self.nursery: trio.Nursery | None = None
        self._thread = threading.Thread(target=self._main, name="stress-trio", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._exc is not None:
            raise self._exc

    def _main(self) -> None:
        try:
            trio.run(self._amain)
        except BaseException as exc:
            self._exc = exc
        finally:
            self._ready.set()

    async def _amain(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._exc is not None:
            raise self._exc
        return trio.from_thread.run(fn, *args, trio_token=self.token)

    def close(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._stop.set, trio_token=self.token)
            self._thread.join(30)
        if self._exc is not None:
            raise self._exc


def live_processes(tag: str) -> list[int] | None:
    """The pids of running (not zombie) processes with ``tag`` as an argument; ``None`` where
    there is no ``/proc`` to look in."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if tag.encode() in argv and state != "Z":
            found.append(int(entry.name))
    return found


def _all_tasks() -> list[trio.lowlevel.Task]:
    out: list[trio.lowlevel.Task] = []
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        if task is None:
            continue
        out.append(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return out


_PER_TURN_TASKS = re.compile(r"(TurnHost\._run_call|ToolActor\._run_call|ModelActor\._serve)$")


# =============================================================================================
# Instrumentation: what the machine sees of a running session
# =============================================================================================


@attrs.define(eq=False)
class _Attempt:
    turn_id: str | None
    begin_seq: int
    prompt: Prompt
    expected: list[ResponseItem]
    body: Any
    transport: str = "http"  # the transport it went over ("http" | "websocket")
    requests_before: int = 0  # how many requests the server had recorded when it began
    started: float = 0.0
    ended: float | None = None
    completed: bool = False
    outcome: str = "open"  # "completed" | error class name | "cancelled"
    error: KernelError | None = None
    end_seq: int | None = None  # when the outcome was decided
    rate_limits_seen: bool = False  # its stream carried a rate-limit snapshot
    transport_used: TransportUsed | None = None  # what its stream said served it
    summary: bool = False  # a local compaction's summary request (not a turn attempt)
    leg: int = 0  # the position in the session's transport order: 1 once it fell back to HTTP

    @property
    def error_text(self) -> str:
        """The text of the error it ended with (a stream that simply ended before its terminal
        event raises no error of its own: the turn raises "stream closed before response.completed")."""
        if self.error is None and self.outcome == "StreamError":
            return "stream closed before response.completed"
        return str(self.error)


@attrs.define(eq=False)
class _Task:
    tid: str
    gen: int
    replies: list[Reply]
    specs: list[_ReplySpec]
    base_index: int
    trigger: _Trigger | None = None
    handle: TurnHandle | None = None
    started_seq: int | None = None
    final_seq: int | None = None
    interrupt_seq: int | None = None
    interrupt_kind: str | None = None
    fatal_seq: int | None = None  # a fatal ToolCallFinished was published
    fatal_raised_seq: int | None = None  # a chaos tool raised FatalToolError (in its own task)
    final_acked: bool = False  # the final event's write was acknowledged (publish returned)
    crashed: bool = False
    queued_interrupt: bool = False
    compaction_failed_seq: int | None = None  # a compaction in the turn published its failure


@attrs.define(eq=False)
class _Crash:
    kind: str
    data: bytes | None
    file_items: list[ResponseItem]
    acked_size: int
    task: _Task | None
    decided: bool = False  # the turn had already published its final event
    seq: int = 0  # when the crash landed (compared with when the turn's outcome was decided)
    replacing: list[ResponseItem] | None = None  # a compaction's replacement being written then


@attrs.define(eq=False)
class _Compaction:
    """One compaction, from its ``CompactionStarted`` to its ``CompactionFinished``."""

    tid: str | None  # the turn it ran in (``None``: on demand, between turns)
    reason: str
    start_seq: int
    finish_seq: int | None = None
    mode: str | None = None
    error: str | None = None


@attrs.define(eq=False)
class _Sub:
    sub: Any
    mode: str
    attach_index: int
    max_buffer: int
    received: list[Event] = attrs.field(factory=list)
    scope: trio.CancelScope | None = None
    max_batch: int = 0


@attrs.define(eq=False)
class _Gen:
    no: int
    rollout: Path
    resume: bool
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    close_requested: trio.Event = attrs.field(factory=trio.Event)
    closed: trio.Event = attrs.field(factory=trio.Event)
    server: ScriptedServer | None = None
    settings: ModelSettings | None = None
    transport: str = "http"  # the session's ModelSettings.transport ("auto" | "websocket" | "http"), or
    # "refused": "auto" against a server refusing every upgrade (HTTP on the wire from the start)
    fallback_seq: int | None = None  # when its FallbackWarning was published (switched to HTTP)
    fallbacks: int = 0  # FallbackWarning events published
    session: Session | None = None
    aux: trio.Nursery | None = None
    base: list[ResponseItem] = attrs.field(factory=list)
    file_items: list[ResponseItem] = attrs.field(factory=list)
    acked: list[ResponseItem] = attrs.field(factory=list)
    acked_size: int = 0
    events: list[Event] = attrs.field(factory=list)
    attempts: list[_Attempt] = attrs.field(factory=list)
    tasks: dict[str, _Task] = attrs.field(factory=dict)
    current: _Task | None = None
    triggers: list[tuple[_Trigger, Callable[[], None]]] = attrs.field(factory=list)
    counts: Counter[str] = attrs.field(factory=Counter)
    seq: int = 0
    crash: _Crash | None = None
    error: BaseException | None = None
    subs: list[_Sub] = attrs.field(factory=list)
    max_batch: int = 0
    baseline: set[int] = attrs.field(factory=set)
    installed: list[Reply] = attrs.field(factory=list)
    reply_owner: dict[int, _ReplySpec] = attrs.field(factory=dict)
    all_acked: list[ResponseItem] = attrs.field(factory=list)  # every item acknowledged, compactions or not
    replacing: list[ResponseItem] | None = None  # a compaction's replacement being written now
    compactions: list[_Compaction] = attrs.field(factory=list)
    violations: list[str] = attrs.field(factory=list)  # found where raising would not reach the machine
    mcp_tag: str | None = None  # the argv marker of this generation's MCP server processes
    mcp_crashed: bool = False  # a task of this generation asked the MCP server to crash

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def on_fatal_raised(self) -> None:
        """A chaos tool of the current turn is raising ``FatalToolError`` (see
        :data:`~actors.testing._config.FATAL_RAISED`)."""
        task = self.current
        if task is not None and task.fatal_raised_seq is None:
            task.fatal_raised_seq = self.next_seq()

    def current_transport(self) -> str:
        """The transport the session's next request goes over: the first of its ``transport``
        setting until a FallbackWarning says it switched to HTTP."""
        if self.transport == "websocket" or (self.transport == "auto" and self.fallback_seq is None):
            return "websocket"
        return "http"

    def on_acked(self) -> None:
        with contextlib.suppress(OSError):
            self.acked_size = max(self.acked_size, os.stat(self.rollout).st_size)


class _AckHistory:
    """Wraps the host's history: an item counts as acknowledged once ``record()`` returned."""

    def __init__(self, inner: Any, gen: _Gen) -> None:
        self.inner = inner
        self.gen = gen

    async def record(self, items: Sequence[ResponseItem]) -> None:
        items = list(items)
        await self.inner.record(items)
        self.gen.acked.extend(items)
        self.gen.all_acked.extend(items)
        self.gen.file_items.extend(items)
        self.gen.on_acked()

    async def replace(self, items: Sequence[ResponseItem], **kwargs: Any) -> None:
        """A compaction replaces the history: once ``replace()`` returned, the acknowledged history
        restarts from ``items`` (old history or new on a crash meanwhile, never a mix). The
        replacement must be well-formed and keep the latest user message."""
        gen = self.gen
        items = list(items)
        old = gen.base + gen.acked
        problems = well_formed_violations(items)
        if problems:
            gen.violations.append(f"a compaction's replacement history is not well-formed: {problems}")
        latest = _latest_user_text(old)
        if latest is not None and latest not in [_user_text(i) for i in items]:
            gen.violations.append(f"a compaction's replacement lost the latest user message {latest!r}")
        gen.replacing = items
        try:
            await self.inner.replace(items, **kwargs)
        finally:
            gen.replacing = None
        gen.base = []
        gen.acked = list(items)
        gen.file_items = list(items)
        gen.on_acked()

    async def prompt_input(self) -> list[ResponseItem]:
        result: list[ResponseItem] = await self.inner.prompt_input()
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _AttemptIterator:
    def __init__(self, inner: Any, attempt: _Attempt, gen: _Gen) -> None:
        self.inner = inner
        self.attempt = attempt
        self.gen = gen

    def __aiter__(self) -> _AttemptIterator:
        return self

    async def __anext__(self) -> Sequence[Any]:
        attempt = self.attempt
        try:
            batch: Sequence[Any] = await self.inner.__anext__()
        except StopAsyncIteration:
            attempt.outcome = "completed" if attempt.completed else "StreamError"
            raise
        except KernelError as exc:
            attempt.outcome = type(exc).__name__
            attempt.error = exc
            attempt.end_seq = self.gen.next_seq()
            raise
        for event in batch:
            kind = type(event)
            if kind is Completed:
                attempt.completed = True
                attempt.end_seq = self.gen.next_seq()
            elif kind is RateLimitsSnapshot:
                attempt.rate_limits_seen = True
            elif kind is TransportUsed:
                attempt.transport_used = event
        return batch


class _RecordingClient:
    """Wraps the host's model client: records every attempt, its prompt, its transport and its
    outcome. Forwards :class:`kernel.stream.FallbackTransport` (the switch to HTTP, and the quiet
    first retry while a fallback is left, depend on it)."""

    def __init__(self, inner: Any, gen: _Gen) -> None:
        self.inner = inner
        self.gen = gen

    def has_fallback(self) -> bool:
        return isinstance(self.inner, FallbackTransport) and self.inner.has_fallback()

    def try_switch_fallback_transport(self) -> bool:
        return isinstance(self.inner, FallbackTransport) and self.inner.try_switch_fallback_transport()

    @asynccontextmanager
    async def stream(self, prompt: Prompt) -> AsyncIterator[Any]:
        gen = self.gen
        assert gen.settings is not None
        attempt = _Attempt(
            gen.current.tid if gen.current is not None else None,
            gen.next_seq(),
            prompt,
            gen.base + gen.acked,
            json.loads(encode_body(gen.settings, prompt)),
            gen.current_transport(),
            len(gen.server.requests) if gen.server is not None else 0,
            summary=_is_summary_prompt(list(prompt.input)),
            leg=0 if gen.fallback_seq is None else 1,
        )
        async with self.inner.stream(prompt) as batches:
            # counted only once handed to the transport
            gen.attempts.append(attempt)
            attempt.started = trio.current_time()
            try:
                yield _AttemptIterator(batches, attempt, gen)
            finally:
                attempt.ended = trio.current_time()
                if attempt.end_seq is None:
                    attempt.end_seq = gen.next_seq()
                if attempt.outcome == "open":
                    attempt.outcome = "completed" if attempt.completed else "cancelled"


class _WatchingSink:
    """Wraps the host's event sink: logs every event, fires triggers, tracks acked file size."""

    def __init__(self, inner: Any, gen: _Gen) -> None:
        self.inner = inner
        self.gen = gen

    async def publish(self, events: Sequence[Event]) -> None:
        gen = self.gen
        events = list(events)
        gen.max_batch = max(gen.max_batch, len(events))
        for sub in gen.subs:
            sub.max_batch = max(sub.max_batch, len(events))
        for event in events:
            seq = gen.next_seq()
            gen.events.append(event)
            kind = type(event)
            if isinstance(event, TurnStarted):
                task = gen.tasks.get(event.turn_id)
                gen.current = task
                if task is not None:
                    task.started_seq = seq
            elif isinstance(event, CompactionStarted):
                tid = gen.current.tid if gen.current is not None else None
                gen.compactions.append(_Compaction(tid, event.reason, seq))
            elif isinstance(event, CompactionFinished):
                if gen.compactions and gen.compactions[-1].finish_seq is None:
                    done_ = gen.compactions[-1]
                    done_.finish_seq, done_.mode, done_.error = seq, event.mode, event.error
                    if event.error is not None and gen.current is not None:
                        if gen.current.compaction_failed_seq is None:
                            gen.current.compaction_failed_seq = seq
            elif isinstance(event, FallbackWarning):
                gen.fallbacks += 1
                if gen.fallback_seq is None:
                    gen.fallback_seq = seq
            elif isinstance(event, ToolCallFinished) and event.status == "fatal":
                if gen.current is not None and gen.current.fatal_seq is None:
                    gen.current.fatal_seq = seq
            elif isinstance(event, _FINALS):
                task = gen.tasks.get(event.turn_id)
                if task is not None:
                    task.final_seq = seq
                gen.current = None
            gen.counts[kind.__name__] += 1
            if gen.triggers:
                self._fire(event)
        await self.inner.publish(events)
        if any(e.lifecycle for e in events):
            gen.on_acked()
            for event in events:
                if isinstance(event, _FINALS):
                    done = gen.tasks.get(event.turn_id)
                    if done is not None:
                        done.final_acked = True

    def _fire(self, event: Event) -> None:
        gen = self.gen
        if gen.crash is not None or gen.close_requested.is_set():
            # The generation is going down, so nothing fires any more. This matters: a crash
            # cancels ``gen.scope``, the aux nursery exits at once, and the turn can still
            # publish afterwards, e.g. a ToolCallStarted whose history record was shielded. A
            # delayed trigger (like the "hang" interrupt) would then call ``aux.start_soon``,
            # which raises RuntimeError("Nursery is closed to new arrivals") inside
            # ``publish``. At that point the batch is already in ``gen.events`` but never
            # reached the notifier. The subscriber check then reported events as "lost" by
            # the notifier, and the harness's RuntimeError (replaced by Cancelled in the
            # stream's cleanup) went unseen.
            gen.triggers = []
            return
        keep = []
        for trigger, action in gen.triggers:
            hit = False
            if trigger.on == "hang":
                hit = isinstance(event, ToolCallStarted) and '"mode": "hang"' in getattr(event.item, "arguments", "")
            elif isinstance(event, _TRIGGER_EVENTS[trigger.on]):
                gen.counts["trigger:" + trigger.on] += 1
                hit = gen.counts["trigger:" + trigger.on] == trigger.nth
            if not hit:
                keep.append((trigger, action))
                continue
            if trigger.delay is None:
                action()
            else:
                assert gen.aux is not None
                gen.aux.start_soon(_after, trigger.delay, action)
        gen.triggers = keep


async def _after(delay: float, action: Callable[[], None]) -> None:
    await trio.sleep(delay)
    action()


def _user_text(item: Any) -> str | None:
    """A user message's text (``None`` for any other item)."""
    if isinstance(item, Message) and item.role == "user":
        return item.text()
    return None


def _latest_user_text(items: Sequence[ResponseItem]) -> str | None:
    """The text of the latest task prompt in ``items`` (compaction summaries and handoff notes
    are not task prompts)."""
    for item in reversed(items):
        text = _user_text(item)
        if text is not None and re.match(r"task g\d+t\d+:", text):
            return text
    return None


def _is_summary_prompt(items: Sequence[ResponseItem]) -> bool:
    """Whether a prompt's last user message is the compaction prompt (a local summary request)."""
    for item in reversed(items):
        text = _user_text(item)
        if text is not None:
            return text == COMPACTION_PROMPT
    return False


def _wire_user_text(item: Any) -> str | None:
    if not isinstance(item, dict) or item.get("role") != "user":
        return None
    content = item.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return None


def is_summary_request(request: RecordedRequest) -> bool:
    """A streaming request whose last user message is :data:`~kernel.compaction.COMPACTION_PROMPT`
    (a local compaction's summary request)."""
    body = request.body
    if request.full_input is not None:
        items: Any = request.full_input
    elif isinstance(body, dict):
        items = body.get("input") if "input" in body else body.get("messages")
    else:
        items = None
    if not isinstance(items, list):
        return False
    for item in reversed(items):
        text = _wire_user_text(item)
        if text is not None:
            return text == COMPACTION_PROMPT
    return False


def _task_of(request: RecordedRequest) -> str | None:
    """The task a request the server received belongs to: the last task prompt in its whole input
    (an incremental WebSocket request's own input may not repeat it)."""
    found = re.findall(r"task (g\d+t\d+):", json.dumps(request.full_input or request.body))
    return found[-1] if found else None


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------


class _ListHandler(logging.Handler):
    def __init__(self, out: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        self.out.append(record)


def _format(record: logging.LogRecord) -> str:
    try:
        text = record.getMessage()
    except Exception:
        text = str(record.msg)
    if record.exc_info:
        text += logging.Formatter().formatException(record.exc_info)
    return text


def _quiet_resume(path: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return resume(path)


async def _call_sync(fn: Callable[[], Any]) -> Any:
    return fn()


async def _trickle(entry: _Sub) -> None:
    assert entry.scope is not None
    with entry.scope:
        try:
            async for batch in entry.sub.batches():
                entry.received.extend(batch)
                await trio.sleep(0.003)
        except trio.ClosedResourceError:
            pass
