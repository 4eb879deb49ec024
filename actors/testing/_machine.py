"""Stress-test a session under random faults, interrupts and crashes (needs the ``test`` extra).

:func:`session_stress_machine` builds a Hypothesis ``RuleBasedStateMachine`` that drives a real
:class:`~actors.session.Session` — made by *your* ``session_factory`` — against the scripted
model server on 127.0.0.1, with a chaos tool set plus your own tools, and checks the kernel's
guarantees after every step::

    from actors.testing import StressConfig, session_stress_machine

    TestMySession = session_stress_machine(StressConfig(session_factory=my_factory)).TestCase

**Rules.** Run a task whose model replies carry random faults (drops at random event offsets,
429 with 0–50 ms delays, 5xx, stalls beyond the idle timeout, context-window and usage-limit
errors, malformed SSE, ``response.failed`` / ``error`` / ``incomplete`` terminals) and tool calls
that succeed, fail model-visibly (``RespondToModel``, an unexpected exception, bad arguments, an
unknown tool), fail fatally (``FatalToolError``) or hang; interrupt it at a random point (on a
text delta = mid-stream, on a tool start = mid-tool, on a retry notice = during the backoff sleep,
at once or after a few ms); crash the session mid-task — either a *hard* crash (the rollout file
as the OS had it at that instant, optionally torn after the last acknowledged write, is all that
survives) or an *abrupt cancel* of the session's scope — then ``resume`` from the rollout; restart
cleanly; attach and detach slow subscribers (stalled or trickling); queue a turn and interrupt it
before it starts.

**Invariants** (checked after every step and after every task):

* every tool call in history has exactly one output, after it; history is well-formed;
* every prompt sent to the model is the history at that moment (so every retry re-sends it), and
  what the scripted server received (``server.requests[i].body``) is exactly that prompt;
* ``actors.history.resume(rollout).items`` equals the in-memory history; after a crash,
  everything whose ``record()`` had returned is in the resumed history, in order, and dangling
  calls are repaired; after an abrupt cancel nothing even needs repair;
* attempts per logical request ≤ retry budget + 1; a retryable failure is retried (after at
  least the delay the server named) until the budget is spent; non-retryable errors are not;
  each attempt's outcome is what the served reply must produce (a 429 is ``RateLimited``…);
* every turn that started ends with exactly one of ``TurnCompleted`` / ``TurnAborted`` /
  ``TurnFailed``, in the events and in the rollout; every ``ToolCallStarted`` gets one
  ``ToolCallFinished``; an interrupted turn ends aborted and makes no new model request;
* no task outlives its turn (tool calls, model requests) or its session;
* subscriber buffers stay within the notifier's documented bound and lose no text;
* the API key (echoed by the scripted server in its error bodies) appears in no event, rollout,
  outcome, log record or warning; tool output that looks like a rollout record or an SSE event
  stays one output item.

**How it runs.** Each example runs one ``trio.run`` in a thread of its own; every rule is a
``trio.from_thread.run`` call into it, so the session, its sockets and its actors live across
rules. The clock is real: a mock clock's autojump would fire the idle timeout while the rollout
is being written in worker threads (``trio.to_thread``) or loopback bytes are in flight. Real
delays are kept tiny instead: Retry-After 0–50 ms, backoff scaled by
:class:`kernel.testing.FastBackoff`, idle timeout 0.2 s (a stall beyond it costs 0.2 s), tool
sleeps ≤ 50 ms. :data:`STATS` counts what was exercised (faults served by kind, interrupts,
crashes survived, acknowledged items checked after crashes).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import threading
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from kernel import (
    Completed,
    Event,
    FatalToolError,
    ItemCompleted,
    KernelError,
    ReasoningDelta,
    RespondToModel,
    ResponseItem,
    StreamRetry,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolInputDelta,
    TurnAborted,
    TurnCompleted,
    TurnFailed,
    TurnStarted,
    event_to_dict,
    item_to_wire,
)
from kernel import (
    CustomToolCall as KCustomToolCall,
)
from kernel import (
    FunctionCall as KFunctionCall,
)
from kernel.prompt import Prompt
from kernel.testing import INJECTION_TEXTS, FastBackoff, well_formed_violations

from ..history import ABORTED_OUTPUT_TEXT, resume
from ..model import ModelSettings
from ..model._actor import _encode_body
from ..scripted import (
    CustomToolCall,
    Disconnect,
    ErrorEvent,
    Failed,
    FunctionCall,
    HttpError,
    Incomplete,
    Malformed,
    Reasoning,
    Reply,
    Script,
    ScriptedServer,
    Stall,
    Text,
    open_scripted_server,
    rate_limit_headers,
)
from ..scripted._render import render_chat, render_responses
from ..session import Session, TurnHandle, open_session
from ..tools import ToolRegistry

__all__ = [
    "STRESS_API_KEY",
    "SessionSpec",
    "SessionFactory",
    "default_session_factory",
    "StressConfig",
    "StressStats",
    "STATS",
    "chaos_registry",
    "task_plans",
    "session_stress_machine",
    "FAILURES",
]

STRESS_API_KEY = "sk-test-STRESS-9f8e7d6c5b4a39281706"
"""The API key the stress sessions use; the scripted server echoes it in error bodies and the
machine checks it never shows up anywhere the kernel writes."""

_RETRYABLE = frozenset({"StreamError", "ServerError", "RateLimited"})
_FINALS = (TurnCompleted, TurnAborted, TurnFailed)
_DONE = Reply(items=[Text("Done.")])


# =============================================================================================
# Configuration and statistics
# =============================================================================================


@attrs.frozen
class SessionSpec:
    """What a session factory is asked to open."""

    model: ModelSettings
    tools: ToolRegistry
    rollout: Path
    resume: bool
    max_retries: int
    max_buffer: int


SessionFactory = Callable[[SessionSpec], AbstractAsyncContextManager[Session]]
"""Opens a session for a :class:`SessionSpec`: an async context manager yielding a
:class:`~actors.session.Session` (so ``open_session`` with your own prompt config, tools…)."""


def default_session_factory(spec: SessionSpec) -> AbstractAsyncContextManager[Session]:
    """``open_session`` with the spec's model, tools, rollout, retry budget and buffer bound."""
    return open_session(
        model=spec.model,
        tools=spec.tools,
        rollout=spec.rollout,
        resume=spec.resume,
        max_retries=spec.max_retries,
        max_buffer=spec.max_buffer,
    )


@attrs.define
class StressStats:
    """What the stress machines exercised (summed over every example of every machine)."""

    examples: int = 0
    steps: int = 0
    tasks: int = 0
    attempts: int = 0
    outcomes: Counter[str] = attrs.field(factory=Counter)
    faults_served: Counter[str] = attrs.field(factory=Counter)
    tool_modes: Counter[str] = attrs.field(factory=Counter)
    interrupts: Counter[str] = attrs.field(factory=Counter)
    crashes: Counter[str] = attrs.field(factory=Counter)
    acked_items_checked_after_crash: int = 0
    repaired_calls: int = 0
    torn_rollouts: int = 0
    restarts: int = 0
    subscribers: Counter[str] = attrs.field(factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counts."""
        return {k: dict(v) if isinstance(v, Counter) else v for k, v in attrs.asdict(self, recurse=False).items()}


STATS = StressStats()
"""Counts of everything the stress machines did in this process."""


@attrs.frozen(kw_only=True)
class StressConfig:
    """How :func:`session_stress_machine` builds its machine.

    ``session_factory`` opens your session (default: ``open_session``); ``tools`` are your own
    tools, added to the chaos tools; ``tool_calls`` is a strategy of ``(name, arguments_json)``
    the scripted model calls them with (their outputs, success or model-visible failure, are
    checked like any other). ``wires``: the model protocols to draw from. ``max_retries``: the
    range the retry budget is drawn from. ``step_count``: rules per example.
    """

    session_factory: SessionFactory = default_session_factory
    tools: ToolRegistry | None = None
    tool_calls: Any = None
    wires: tuple[str, ...] = ("responses", "chat")
    max_retries: tuple[int, int] = (0, 3)
    idle_timeout: float = 0.2
    backoff_scale: float = 0.01
    task_timeout: float = 60.0
    step_count: int = 12
    api_key: str = STRESS_API_KEY
    stats: StressStats = STATS
    max_examples: int | None = None
    """Examples per run; default: 30 % of the active Hypothesis profile's ``max_examples``."""


# =============================================================================================
# Chaos tools
# =============================================================================================


async def _chaos(mode: str, seconds: float, payload: str) -> str:
    if seconds > 0:
        await trio.sleep(min(seconds, 0.05))
    else:
        await trio.lowlevel.checkpoint()
    if mode == "ok":
        return payload
    if mode == "respond":
        raise RespondToModel(f"chaos refused: {payload}")
    if mode == "fatal":
        raise FatalToolError(f"chaos fatal: {payload}")
    if mode == "boom":
        raise ValueError(f"chaos boom: {payload}")
    if mode == "hang":
        await trio.sleep_forever()
    if mode == "inject":
        return payload + "".join(INJECTION_TEXTS)
    return f"unknown mode {mode}"


def chaos_registry(extra: ToolRegistry | None = None) -> ToolRegistry:
    """The chaos tools — ``chaos`` (parallel-safe) and ``chaos_x`` (exclusive) — plus ``extra``.

    Both take ``mode``: ``"ok"`` (returns ``payload``), ``"respond"`` (``RespondToModel``),
    ``"fatal"`` (``FatalToolError``), ``"boom"`` (``ValueError``: a tool breaking its contract),
    ``"hang"`` (never returns), ``"inject"`` (returns text that looks like rollout records and SSE
    events); ``seconds`` sleeps first (at most 50 ms)."""
    registry = ToolRegistry()

    @registry.tool(parallel=True)
    async def chaos(mode: str = "ok", seconds: float = 0.0, payload: str = "") -> str:
        """A parallel-safe tool that misbehaves on request.

        Args:
            mode: ok, respond, fatal, boom, hang or inject.
            seconds: Sleep this long first.
            payload: Text to return.
        """
        return await _chaos(mode, seconds, payload)

    @registry.tool(parallel=False)
    async def chaos_x(mode: str = "ok", seconds: float = 0.0, payload: str = "") -> str:
        """An exclusive tool that misbehaves on request.

        Args:
            mode: ok, respond, fatal, boom, hang or inject.
            seconds: Sleep this long first.
            payload: Text to return.
        """
        return await _chaos(mode, seconds, payload)

    if extra is not None:
        for t in extra:
            registry.add(t)
    return registry


# =============================================================================================
# Plans: what the scripted model does for one task
# =============================================================================================

_FAULT_MENU = (
    ["none"] * 14
    + ["drop", "drop", "drop_mid_event", "drop_clean", "malformed", "malformed", "stall_short"]
    + ["rate_limited", "rate_limited", "rate_limited_message", "server_error", "server_error_delay"]
    + ["failed_retryable", "failed_rate_limit", "error_event"]
    + ["context_window_http", "context_window_failed", "usage_limit", "failed_quota", "incomplete"]
    + ["unauthorized", "invalid_request", "stall_timeout"]
)
_TOOL_MODES = ["ok"] * 8 + ["respond", "boom", "inject", "fatal", "hang", "slow"]


@attrs.frozen
class _CallSpec:
    tool: str
    arguments: str
    custom: bool = False
    mode: str = "ok"


@attrs.frozen
class _ReplySpec:
    reply: Reply  # call ids are placeholders until the plan is installed
    fault: str
    calls: tuple[_CallSpec, ...]


def _secret_texts(key: str) -> Any:
    return st.sampled_from(
        [
            f"Incorrect API key provided: {key}.",
            f"key={key} is not valid",
            f'{{"api_key": "{key}"}}',
            f"Authorization: Bearer {key}",
            f"token {key} rejected",
        ]
    )


@st.composite
def _faults(draw: Any, key: str, idle: float, n_hint: int) -> tuple[str, list[Any]]:
    kind = draw(st.sampled_from(_FAULT_MENU))
    secret = draw(_secret_texts(key))
    at = draw(st.integers(0, max(1, n_hint)))
    delay = draw(st.sampled_from([0.0, 0.001, 0.01, 0.02, 0.05]))
    if kind == "none":
        return kind, []
    if kind == "drop":
        return kind, [Disconnect(after_events=at)]
    if kind == "drop_mid_event":
        return kind, [Disconnect(after_events=at, mid_event=True)]
    if kind == "drop_clean":
        return kind, [Disconnect(after_events=at, clean=True)]
    if kind == "malformed":
        data = draw(st.sampled_from(["{not json", "[1, 2", '{"a": ', "nul", "{not json " + key]))
        return kind, [Malformed(after_events=at, data=data)]
    if kind == "stall_short":
        return kind, [Stall(after_events=at, seconds=min(0.02, idle / 10))]
    if kind == "stall_timeout":
        return kind, [Stall(after_events=at, seconds=idle + 0.1)]
    if kind == "rate_limited":
        return kind, [
            HttpError(
                status=429,
                message=f"Rate limit reached. {secret}",
                type="requests",
                code="rate_limit_exceeded",
                retry_after=delay,
            )
        ]
    if kind == "rate_limited_message":
        return kind, [
            HttpError.rate_limited(message=f"Rate limit reached ({secret}). Please try again in {int(delay * 1000)}ms.")
        ]
    if kind == "server_error":
        return kind, [HttpError.server_error(draw(st.sampled_from([500, 502, 503])), message=f"overloaded {secret}")]
    if kind == "server_error_delay":
        return kind, [HttpError.server_error(503, retry_after=delay, message=f"overloaded {secret}")]
    if kind == "failed_retryable":
        return kind, [Failed("server_error", f"The model failed ({secret}).")]
    if kind == "failed_rate_limit":
        return kind, [
            Failed("rate_limit_exceeded", f"Rate limit ({secret}). Please try again in {int(delay * 1000)}ms.")
        ]
    if kind == "error_event":
        return kind, [ErrorEvent("server_error", f"stream error {secret}")]
    if kind == "context_window_http":
        return kind, [HttpError.context_length_exceeded(message=f"Your input exceeds the context window. {secret}")]
    if kind == "context_window_failed":
        return kind, [Failed("context_length_exceeded", f"too long {secret}")]
    if kind == "usage_limit":
        return kind, [
            HttpError.usage_limit_reached(
                message=f"usage limit {secret}",
                headers=rate_limit_headers(primary_used_percent=100, primary_window_minutes=300),
            )
        ]
    if kind == "failed_quota":
        return kind, [Failed("insufficient_quota", f"no quota {secret}")]
    if kind == "incomplete":
        return kind, [Incomplete(draw(st.sampled_from(["max_output_tokens", "content_filter"])))]
    if kind == "unauthorized":
        return kind, [HttpError.unauthorized(message=secret)]
    if kind == "invalid_request":
        return kind, [
            HttpError(
                status=draw(st.sampled_from([400, 404, 422])),
                message=f"bad request {secret}",
                type="invalid_request_error",
            )
        ]
    raise AssertionError(kind)


@st.composite
def _calls(draw: Any, user_calls: Any) -> _CallSpec:
    kind = draw(
        st.sampled_from(
            ["chaos"] * 6
            + ["chaos_x"] * 2
            + ["unknown", "bad_json", "as_custom"]
            + (["user"] * 2 if user_calls is not None else [])
        )
    )
    if kind == "user":
        name, arguments = draw(user_calls)
        return _CallSpec(name, arguments, mode="user")
    if kind == "unknown":
        return _CallSpec("no_such_tool", "{}", mode="unknown")
    if kind == "bad_json":
        return _CallSpec("chaos", '{"mode": "ok", ', mode="bad_json")
    if kind == "as_custom":
        return _CallSpec("chaos", "free text", custom=True, mode="as_custom")
    mode = draw(st.sampled_from(_TOOL_MODES))
    seconds = draw(st.sampled_from([0.0, 0.0, 0.001, 0.01])) if mode != "slow" else draw(st.sampled_from([0.02, 0.05]))
    payload = draw(st.text(max_size=12) | st.sampled_from(INJECTION_TEXTS))
    args = json.dumps({"mode": "ok" if mode == "slow" else mode, "seconds": seconds, "payload": payload})
    return _CallSpec(kind, args, mode=mode)


@st.composite
def _replies(draw: Any, key: str, idle: float, user_calls: Any) -> _ReplySpec:
    items: list[Any] = []
    if draw(st.integers(0, 5)) == 0:
        items.append(
            Reasoning(
                summary=draw(st.lists(st.text(max_size=10), min_size=1, max_size=2)), chunk_size=draw(st.integers(0, 3))
            )
        )
    if draw(st.booleans()):
        text = draw(st.text(max_size=30) | st.sampled_from(INJECTION_TEXTS) | st.just("x" * 200))
        items.append(Text(text, chunk_size=draw(st.integers(0, 6))))
    calls = tuple(draw(st.lists(_calls(user_calls), max_size=3)))
    for call in calls:
        chunk = draw(st.integers(0, 6))
        if call.custom:
            items.append(CustomToolCall("?", call.tool, call.arguments, chunk_size=chunk))
        else:
            items.append(FunctionCall("?", call.tool, call.arguments, chunk_size=chunk))
    if calls and draw(st.integers(0, 3)) == 0:
        items.append(Text(draw(st.text(max_size=10)), chunk_size=2))
    fault, faults = draw(_faults(key, idle, 3 + 4 * len(items)))
    return _ReplySpec(Reply(items=items, faults=faults), fault, calls)


def task_plans(*, key: str = STRESS_API_KEY, idle: float = 0.2, user_calls: Any = None, max_replies: int = 4) -> Any:
    """Lists of scripted replies for one task (the server's default "Done." follows them)."""
    return st.integers(0, 9).flatmap(
        lambda n: st.lists(_replies(key, idle, user_calls), min_size=0 if n == 0 else 1, max_size=max_replies)
    )


@attrs.frozen
class _Trigger:
    """Fire on the ``nth`` event of kind ``on`` — at once, inside the turn's publish (``delay``
    ``None``), or from another task after ``delay`` real seconds."""

    on: str
    nth: int
    delay: float | None


_TRIGGER_EVENTS: dict[str, tuple[type, ...]] = {
    "text": (TextDelta,),
    "tool_input": (ToolInputDelta,),
    "tool_started": (ToolCallStarted,),
    "tool_finished": (ToolCallFinished,),
    "retry": (StreamRetry,),
    "item": (ItemCompleted,),
    "reasoning": (ReasoningDelta,),
}

_triggers = st.builds(
    _Trigger,
    st.sampled_from(
        [
            "text",
            "text",
            "item",
            "item",
            "tool_started",
            "tool_started",
            "retry",
            "tool_finished",
            "tool_input",
            "reasoning",
        ]
    ),
    st.sampled_from([1, 1, 1, 2, 3]),
    st.none() | st.sampled_from([0.0, 0.001, 0.005, 0.02]),
)


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
    started: float = 0.0
    ended: float | None = None
    completed: bool = False
    outcome: str = "open"  # "completed" | error class name | "cancelled"
    error: KernelError | None = None
    end_seq: int | None = None  # when the outcome was decided


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
    fatal_seq: int | None = None
    final_acked: bool = False  # the final event's write was acknowledged (publish returned)
    crashed: bool = False
    queued_interrupt: bool = False


@attrs.define(eq=False)
class _Crash:
    kind: str
    data: bytes | None
    file_items: list[ResponseItem]
    acked_size: int
    task: _Task | None
    decided: bool = False  # the turn had already published its final event


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

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

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
        self.gen.file_items.extend(items)
        self.gen.on_acked()

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
            if type(event) is Completed:
                attempt.completed = True
                attempt.end_seq = self.gen.next_seq()
        return batch


class _RecordingClient:
    """Wraps the host's model client: records every attempt, its prompt and its outcome."""

    def __init__(self, inner: Any, gen: _Gen) -> None:
        self.inner = inner
        self.gen = gen

    @asynccontextmanager
    async def stream(self, prompt: Prompt) -> AsyncIterator[Any]:
        gen = self.gen
        assert gen.settings is not None
        attempt = _Attempt(
            gen.current.tid if gen.current is not None else None,
            gen.next_seq(),
            prompt,
            gen.base + gen.acked,
            json.loads(_encode_body(gen.settings, prompt)),
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


def _task_of(body: Any) -> str | None:
    found = re.findall(r"task (g\d+t\d+):", json.dumps(body))
    return found[-1] if found else None


# =============================================================================================
# Expected outcomes of one served reply
# =============================================================================================


def _http_class(error: HttpError) -> str:
    body = error.body if isinstance(error.body, dict) else {"error": {"type": error.type, "code": error.code}}
    err = body.get("error") if isinstance(body, dict) else None
    names = {err.get("type"), err.get("code")} if isinstance(err, dict) else set()
    status = error.status
    if "context_length_exceeded" in names and 400 <= status < 500:
        return "ContextWindowExceeded"
    if status == 429:
        if "usage_limit_reached" in names:
            return "UsageLimitReached"
        return "RateLimited"
    if status >= 500:
        return "ServerError"
    if status in (401, 403):
        return "Unauthorized"
    if status in (408, 409):
        return "StreamError"
    return "InvalidRequest"


def _terminal_class(fault: Any, wire: str) -> str:
    if isinstance(fault, Incomplete):
        return "IncompleteResponse"
    code = fault.code
    if code == "context_length_exceeded":
        return "ContextWindowExceeded"
    if code == "insufficient_quota":
        return "QuotaExceeded"
    if code == "rate_limit_exceeded" and wire == "chat":
        return "RateLimited"
    return "StreamError"


def _allowed_outcomes(reply: Reply, wire: str, idle: float) -> set[str]:
    """The outcomes an attempt served ``reply`` may end with (``"cancelled"`` is judged apart)."""
    http = reply.http_error
    if http is not None:
        return {_http_class(http)}
    if wire == "responses":
        rendered = render_responses(reply, tag="x", model="m")
        n = len(rendered.events)
        decided = n - 1  # the terminal event
    else:
        rendered = render_chat(reply, tag="x", model="m", include_usage=True)
        n = len(rendered.events)
        finish = [i for i, e in enumerate(rendered.events) if b'"finish_reason":"' in e or b'"error":{' in e]
        decided = finish[-1] if finish else n - 1
    terminal = reply.terminal
    natural = {_terminal_class(terminal, wire)} if terminal is not None else {"completed"}
    if wire == "chat" and isinstance(terminal, Incomplete):
        natural = {"IncompleteResponse"}
    allowed: set[str] = set()
    broken_before = False
    broken_after = False
    for fault in reply.transport_faults:
        pos = min(fault.after_events, n)
        breaks = isinstance(fault, (Disconnect, Malformed)) or (isinstance(fault, Stall) and fault.seconds > idle)
        if isinstance(fault, Stall):
            allowed.add("StreamError")  # real time: a loaded machine may stall past the timeout
        if not breaks or pos >= n:
            continue
        if pos <= decided:
            broken_before = True
        else:
            broken_after = True
    if broken_before:
        return allowed | {"StreamError"}
    allowed |= natural
    if broken_after:
        allowed.add("StreamError")
    return allowed


def _fault_of(reply: Reply) -> str:
    http = reply.http_error
    if http is not None:
        return f"http_{http.status}_{_http_class(http)}"
    parts = []
    for f in reply.transport_faults:
        parts.append(type(f).__name__.lower())
    if reply.terminal is not None:
        parts.append(
            type(reply.terminal).__name__.lower()
            + ":"
            + getattr(reply.terminal, "code", getattr(reply.terminal, "reason", ""))
        )
    return "+".join(parts) or "none"


# =============================================================================================
# Checks
# =============================================================================================


FAILURES: list[str] = []
"""Every check failure, as it happened (real time makes some runs non-reproducible: when a replay
diverges Hypothesis may report only that, so the original message is kept here too; set
``STRESS_FAILURE_LOG`` to a file path to have them appended there)."""


def _fail(message: str) -> None:
    FAILURES.append(message)
    path = os.environ.get("STRESS_FAILURE_LOG")
    if path:
        with contextlib.suppress(OSError), open(path, "a", encoding="utf-8") as f:
            f.write(message.replace(STRESS_API_KEY, "<KEY>") + "\n")
    raise AssertionError(message)


def _check_wire_input(body: Any, wire: str, where: str) -> None:
    """What the server received is well-formed: no output without a call, no call without an
    output."""
    if wire == "responses":
        calls: dict[str, int] = {}
        answered: set[str] = set()
        for i, item in enumerate(body.get("input", [])):
            t = item.get("type")
            if t in ("function_call", "custom_tool_call"):
                calls[item["call_id"]] = i
            elif t in ("function_call_output", "custom_tool_call_output"):
                cid = item["call_id"]
                if cid not in calls or cid in answered:
                    _fail(f"{where}: output {cid!r} without a call (or twice) in what the model received")
                answered.add(cid)
        missing = set(calls) - answered
        if missing:
            _fail(f"{where}: calls {sorted(missing)} without outputs in what the model received")
    else:
        open_ids: set[str] = set()
        answered = set()
        for msg in body.get("messages", []):
            for call in msg.get("tool_calls") or []:
                open_ids.add(call["id"])
            if msg.get("role") == "tool":
                cid = msg.get("tool_call_id")
                if cid not in open_ids or cid in answered:
                    _fail(f"{where}: tool message {cid!r} without a call (or twice) in what the model received")
                answered.add(cid)
        if open_ids - answered:
            _fail(f"{where}: tool calls {sorted(open_ids - answered)} without tool messages")


def _per_item_text(events: Iterable[Event]) -> tuple[list[Any], dict[tuple[str, str, str], str]]:
    lifecycle: list[Any] = []
    text: dict[tuple[str, str, str], str] = {}
    for e in events:
        if e.lifecycle:
            lifecycle.append(e)
        else:
            key = (type(e).__name__, e.item_id, getattr(e, "kind", ""))  # type: ignore[union-attr]
            text[key] = text.get(key, "") + e.delta  # type: ignore[union-attr]
    return lifecycle, text


# =============================================================================================
# The machine
# =============================================================================================


def session_stress_machine(config: StressConfig | None = None) -> type[RuleBasedStateMachine]:
    """A ``RuleBasedStateMachine`` class stress-testing sessions made by
    ``config.session_factory`` (see the module docstring). Use its ``TestCase`` attribute as a
    pytest / unittest test class."""
    cfg = config or StressConfig()
    stats = cfg.stats
    registry = chaos_registry(cfg.tools)
    key = cfg.api_key
    plans = task_plans(key=key, idle=cfg.idle_timeout, user_calls=cfg.tool_calls)
    user_tool_names = frozenset(cfg.tools.names()) if cfg.tools is not None else frozenset()

    class SessionStress(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.runner = _TrioThread()
            self.dir = Path(tempfile.mkdtemp(prefix="stress-"))
            self.gen: _Gen | None = None
            self.gen_no = 0
            self.task_no = 0
            self.files: list[Path] = []
            self.crashed_turns: set[str] = set()
            self.outcomes: list[Any] = []
            self.wire = "responses"
            self.max_retries = 0
            self.max_buffer = 64
            self.seed = 0
            self.log_records: list[logging.LogRecord] = []
            self._handler = _ListHandler(self.log_records)
            self._root_level = logging.getLogger().level
            logging.getLogger().addHandler(self._handler)
            logging.getLogger().setLevel(logging.DEBUG)
            self._warnings = warnings.catch_warnings(record=True)
            self.warned = self._warnings.__enter__()
            warnings.simplefilter("always")
            self._scanned_events = 0
            stats.examples += 1

        # ---- generations ---------------------------------------------------------------------

        @initialize(
            wire=st.sampled_from(cfg.wires),
            max_retries=st.integers(*cfg.max_retries),
            max_buffer=st.sampled_from([1, 4, 16, 64, 1024]),
            seed=st.integers(0, 2**32 - 1),
        )
        def open_first(self, wire: str, max_retries: int, max_buffer: int, seed: int) -> None:
            self.wire, self.max_retries, self.max_buffer, self.seed = wire, max_retries, max_buffer, seed
            self.runner.call(self._open, self.dir / "rollout-0.jsonl", False)

        async def _open(self, rollout: Path, resume_: bool) -> None:
            baseline = {id(t) for t in _all_tasks()}
            before = None
            if resume_:
                before = await trio.to_thread.run_sync(_quiet_resume, rollout)
            gen = _Gen(self.gen_no, rollout, resume_)
            self.gen_no += 1
            gen.baseline = baseline
            self.files.append(rollout)
            assert self.runner.nursery is not None
            await self.runner.nursery.start(self._hold, gen)
            self.gen = gen
            assert gen.session is not None
            history = await gen.session.history()
            if before is not None:
                if history != list(before.items):
                    _fail("a resumed session's history differs from resume(rollout).items")
                gen.file_items = list(before.recorded) + list(before.added)
                stats.repaired_calls += len(before.added)
            gen.base = history
            gen.on_acked()
            after = await trio.to_thread.run_sync(_quiet_resume, rollout)
            if list(after.items) != history or after.added:
                _fail("after resume the rollout does not replay to the session's history")

        async def _hold(self, gen: _Gen, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            started = False
            try:
                with gen.scope:
                    async with open_scripted_server(Script(default=_DONE)) as server:
                        gen.server = server
                        gen.settings = ModelSettings(
                            base_url=server.base_url,
                            model="stress-model",
                            api_key=key,
                            wire=self.wire,  # type: ignore[arg-type]
                            idle_timeout=cfg.idle_timeout,
                            stream_max_retries=self.max_retries,
                        )
                        spec = SessionSpec(
                            gen.settings, registry, gen.rollout, gen.resume, self.max_retries, self.max_buffer
                        )
                        async with cfg.session_factory(spec) as session:
                            gen.session = session
                            host = session.host
                            host.rng = FastBackoff(cfg.backoff_scale, self.seed + gen.no)
                            host.model = _RecordingClient(host.model, gen)
                            host.history = _AckHistory(host.history, gen)
                            host.events = _WatchingSink(host.events, gen)
                            async with trio.open_nursery() as aux:
                                gen.aux = aux
                                started = True
                                task_status.started()
                                await gen.close_requested.wait()
                                aux.cancel_scope.cancel()
            except Exception as exc:
                gen.error = exc
                if not started:
                    raise
            finally:
                gen.closed.set()

        async def _close(self, how: str) -> None:
            """Close the generation: ``"clean"`` (leave the block) or ``"cancel"`` (abruptly)."""
            gen = self.gen
            assert gen is not None
            await self._check_subscribers()
            if how == "clean":
                gen.close_requested.set()
            else:
                gen.scope.cancel()
            with trio.fail_after(cfg.task_timeout):
                await gen.closed.wait()
            await self._check_subscribers(detach=True)
            if gen.error is not None:
                raise AssertionError(f"the session raised on close: {gen.error!r}") from gen.error
            await trio.testing.wait_all_tasks_blocked(0.001)
            left = [t for t in _all_tasks() if id(t) not in gen.baseline and t is not trio.lowlevel.current_task()]
            if left:
                _fail(f"tasks outlived their session: {[t.name for t in left]}")

        # ---- rules -------------------------------------------------------------------------------

        @rule(plan=plans)
        def run_task(self, plan: list[_ReplySpec]) -> None:
            stats.steps += 1
            self.runner.call(self._run_task, plan, None, None)

        @rule(plan=plans, trigger=_triggers)
        def interrupt_task(self, plan: list[_ReplySpec], trigger: _Trigger) -> None:
            """Interrupt mid-stream (text), mid-tool (tool started), during the backoff sleep
            (retry notice)… at once or a few ms later."""
            stats.steps += 1
            self.runner.call(self._run_task, plan, trigger, None)

        @rule(
            plan=plans, trigger=_triggers, kind=st.sampled_from(["snapshot", "snapshot", "cancel"]), cut=st.floats(0, 1)
        )
        def crash_during_task(self, plan: list[_ReplySpec], trigger: _Trigger, kind: str, cut: float) -> None:
            stats.steps += 1
            self.runner.call(self._run_task, plan, trigger, kind)
            self.runner.call(self._after_crash, cut)

        @rule()
        def restart(self) -> None:
            stats.steps += 1
            stats.restarts += 1
            gen = self.gen
            assert gen is not None
            self.runner.call(self._close, "clean")
            self.runner.call(self._open, gen.rollout, True)

        @rule(mode=st.sampled_from(["stalled", "trickle"]), max_buffer=st.sampled_from([1, 2, 8, 32]))
        def attach_subscriber(self, mode: str, max_buffer: int) -> None:
            stats.steps += 1
            stats.subscribers[mode] += 1
            self.runner.call(self._attach, mode, max_buffer)

        @precondition(lambda self: self.gen is not None and bool(self.gen.subs))
        @rule(data=st.data())
        def detach_subscriber(self, data: Any) -> None:
            stats.steps += 1
            assert self.gen is not None
            index = data.draw(st.integers(0, len(self.gen.subs) - 1))
            self.runner.call(self._detach, index)

        @rule(plan=plans)
        def queue_and_interrupt_a_waiting_turn(self, plan: list[_ReplySpec]) -> None:
            stats.steps += 1
            self.runner.call(self._run_task, plan, None, None, True)

        @rule()
        def interrupt_while_idle(self) -> None:
            stats.steps += 1
            assert self.gen is not None and self.gen.session is not None
            self.runner.call(_call_sync, self.gen.session.interrupt)

        # ---- tasks -------------------------------------------------------------------------------

        def _materialize(self, gen: _Gen, tid: str, plan: list[_ReplySpec]) -> tuple[list[Reply], list[_ReplySpec]]:
            replies: list[Reply] = []
            for r, spec in enumerate(plan):
                items = []
                c = 0
                for item in spec.reply.items:
                    if isinstance(item, (FunctionCall, CustomToolCall)):
                        item = attrs.evolve(item, call_id=f"{tid}r{r}c{c}")
                        c += 1
                    items.append(item)
                replies.append(attrs.evolve(spec.reply, items=items))
            return replies, plan

        def _install(self, gen: _Gen, replies: list[Reply], specs: list[_ReplySpec]) -> int:
            server = gen.server
            assert server is not None
            served = server.replies_served
            base = len(gen.installed)
            if base < served:
                gen.installed.extend([_DONE] * (served - base))
                base = served
            else:
                base = served
                del gen.installed[served:]
            gen.installed.extend(replies)
            for j, spec in enumerate(specs):
                gen.reply_owner[base + j] = spec
            server.script = Script(gen.installed, default=_DONE, model=server.script.model)
            return base

        async def _run_task(
            self, plan: list[_ReplySpec], trigger: _Trigger | None, crash: str | None, queue_second: bool = False
        ) -> None:
            gen = self.gen
            assert gen is not None and gen.session is not None
            session = gen.session
            self.task_no += 1
            tid = f"g{gen.no}t{self.task_no}"
            replies, specs = self._materialize(gen, tid, plan)
            base = self._install(gen, replies, specs)
            task = _Task(tid, gen.no, replies, specs, base, trigger)
            gen.tasks[tid] = task
            stats.tasks += 1
            for spec in specs:
                for call in spec.calls:
                    stats.tool_modes[call.mode] += 1
            gen.counts.clear()
            gen.triggers = [(_Trigger("hang", 1, 0.005), lambda: self._interrupt(task, "hang"))]
            if trigger is not None:
                if crash is None:
                    gen.triggers.append((trigger, lambda: self._interrupt(task, trigger.on)))
                else:
                    gen.triggers.append((trigger, lambda: self._crash(task, crash)))
            second: _Task | None = None
            task.handle = await session.submit(f"task {tid}: do the thing", turn_id=tid)
            if queue_second:
                self.task_no += 1
                sid = f"g{gen.no}t{self.task_no}"
                second = _Task(sid, gen.no, [], [], base, None, queued_interrupt=True)
                gen.tasks[sid] = second
                stats.tasks += 1
                second.handle = await session.submit(f"task {sid}: never runs", turn_id=sid)
                second.handle.interrupt()
            with trio.move_on_after(cfg.task_timeout) as watchdog:
                await task.handle.result()
                if second is not None:
                    await second.handle.result()  # type: ignore[union-attr]
            if watchdog.cancelled_caught:
                _fail(f"task {tid} did not end within {cfg.task_timeout}s (a hang): events {gen.events[-20:]!r}")
            if crash is not None and gen.crash is None:
                self._crash(task, crash)  # the trigger never fired: crash right after the turn
            gen.triggers = []
            if gen.crash is not None:
                return
            await trio.testing.wait_all_tasks_blocked(0.001)
            self._check_task(gen, task)
            if second is not None:
                self._check_task(gen, second)
            left = [t.name for t in _all_tasks() if _PER_TURN_TASKS.search(t.name) and not t.name.endswith("_serve")]
            if left:
                _fail(f"per-turn tasks outlived their turn: {left}")
            # a model request may still drain a completed body for connection reuse: capped at 0.5 s
            with trio.move_on_after(2.0):
                while any(t.name.endswith("ModelActor._serve") for t in _all_tasks()):  # noqa: ASYNC110 (polls other tasks)
                    await trio.sleep(0.01)
            left = [t.name for t in _all_tasks() if t.name.endswith("ModelActor._serve")]
            if left:
                _fail(f"model requests outlived their turn by 2 s: {left}")

        def _interrupt(self, task: _Task, why: str) -> None:
            gen = self.gen
            assert gen is not None
            if task.handle is None or task.handle.done or task.final_seq is not None or task.started_seq is None:
                stats.interrupts["too_late:" + why] += 1
                return
            task.interrupt_seq = gen.next_seq()
            task.interrupt_kind = why
            stats.interrupts[why] += 1
            task.handle.interrupt()

        def _crash(self, task: _Task, kind: str) -> None:
            gen = self.gen
            assert gen is not None
            if gen.crash is not None:
                return
            data = gen.rollout.read_bytes() if kind == "snapshot" else None
            in_turn = task.started_seq is not None and not task.final_acked
            gen.crash = _Crash(
                kind, data, list(gen.file_items), gen.acked_size, task if in_turn else None, task.final_seq is not None
            )
            if in_turn:
                task.crashed = True
            stats.crashes[kind + (":mid-turn" if in_turn else ":idle")] += 1
            gen.scope.cancel()

        async def _after_crash(self, cut: float) -> None:
            gen = self.gen
            assert gen is not None and gen.crash is not None
            crash = gen.crash
            await self._close("cancel")
            task = crash.task
            if crash.kind == "cancel":
                # an abrupt cancel is still structured: cleanup recorded aborted outputs and the
                # final event; the file replays to exactly what the session had acknowledged
                if task is not None and not crash.decided:
                    outcome = task.handle.outcome if task.handle else None
                    if outcome is None or outcome.status != "aborted":
                        _fail(f"a turn cancelled with its session ended {outcome!r}, not aborted")
                resumed = await trio.to_thread.run_sync(_quiet_resume, gen.rollout)
                if list(resumed.items) != gen.base + gen.acked:
                    _fail("after an abrupt cancel the rollout does not replay to the acknowledged history")
                if resumed.added or resumed.dropped:
                    _fail(f"an abrupt cancel left dangling calls: {resumed.added!r}")
                stats.acked_items_checked_after_crash += len(gen.acked)
                await self._open(gen.rollout, True)
                return
            # a hard crash: only the bytes the OS had survive, possibly torn after the last ack
            assert crash.data is not None
            data = crash.data
            size = (
                crash.acked_size + int((len(data) - crash.acked_size) * cut)
                if len(data) > crash.acked_size
                else len(data)
            )
            torn = data[:size]
            path = self.dir / f"rollout-{self.gen_no}.jsonl"
            path.write_bytes(torn)
            resumed = await trio.to_thread.run_sync(_quiet_resume, path)
            if resumed.torn_line is not None:
                stats.torn_rollouts += 1
            acked = crash.file_items
            if list(resumed.recorded[: len(acked)]) != acked:
                _fail(f"a hard crash lost acknowledged items: {len(acked)} acked, resumed {len(resumed.recorded)}")
            problems = well_formed_violations(list(resumed.items))
            if problems:
                _fail(f"resume after a hard crash is not well-formed: {problems}")
            for item in resumed.added:
                output = getattr(item, "output", None)
                if (
                    getattr(output, "body", None) != ABORTED_OUTPUT_TEXT
                    or getattr(output, "success", None) is not False
                ):
                    _fail(f"a dangling call was repaired with {item!r}")
            stats.acked_items_checked_after_crash += len(acked)
            if task is not None:
                self.crashed_turns.add(task.tid)
            await self._open(path, True)

        # ---- subscribers ---------------------------------------------------------------------

        async def _attach(self, mode: str, max_buffer: int) -> None:
            gen = self.gen
            assert gen is not None and gen.session is not None and gen.aux is not None
            sub = gen.session.subscribe(max_buffer=max_buffer)
            await sub.__aenter__()
            entry = _Sub(sub, mode, len(gen.events), max_buffer)
            gen.subs.append(entry)
            if mode == "trickle":
                entry.scope = trio.CancelScope()
                gen.aux.start_soon(_trickle, entry)

        async def _detach(self, index: int) -> None:
            gen = self.gen
            assert gen is not None
            entry = gen.subs.pop(index)
            self._verify_sub(gen, entry)

        def _verify_sub(self, gen: _Gen, entry: _Sub) -> None:
            if entry.scope is not None:
                entry.scope.cancel()
            try:
                rest = entry.sub.take_nowait()
            except trio.ClosedResourceError:
                rest = []
            entry.sub.close()
            got = entry.received + rest
            want = gen.events[entry.attach_index :]
            life_got, text_got = _per_item_text(got)
            life_want, text_want = _per_item_text(want)
            if life_got != life_want:
                _fail(f"a {entry.mode} subscriber lost or reordered lifecycle events")
            if text_got != text_want:
                _fail(f"a {entry.mode} subscriber lost text: {text_got!r} != {text_want!r}")

        async def _check_subscribers(self, detach: bool = False) -> None:
            gen = self.gen
            if gen is None:
                return
            for entry in gen.subs:
                since = gen.events[entry.attach_index :]
                lifecycle = sum(1 for e in since if e.lifecycle or (isinstance(e, ReasoningDelta) and e.section_break))
                bound = max(entry.max_buffer, 2 * (3 * lifecycle + 2)) + entry.max_batch
                if entry.sub.buffered > bound:
                    _fail(f"a {entry.mode} subscriber holds {entry.sub.buffered} events, over its bound {bound}")
            if detach:
                for entry in gen.subs:
                    self._verify_sub(gen, entry)
                gen.subs = []

        # ---- checks --------------------------------------------------------------------------

        def _check_task(self, gen: _Gen, task: _Task) -> None:
            assert task.handle is not None
            outcome = task.handle.outcome
            assert outcome is not None
            self.outcomes.append(outcome)
            label = outcome.status if outcome.error is None else f"failed:{type(outcome.error).__name__}"
            stats.outcomes[label] += 1
            attempts = [a for a in gen.attempts if a.turn_id == task.tid]
            stats.attempts += len(attempts)
            if task.queued_interrupt:
                if outcome.status != "aborted" or attempts:
                    _fail(f"a turn interrupted while queued ended {outcome.status} after {len(attempts)} requests")
                return
            interrupted = task.interrupt_seq is not None
            # an interrupt stops the turn: it ends aborted and sends nothing more to the model
            if interrupted:
                late = [a for a in attempts if a.begin_seq > task.interrupt_seq]  # type: ignore[operator]
                if late:
                    _fail(f"{task.tid}: {len(late)} model requests began after the interrupt")
                if outcome.status != "aborted":
                    # only when the outcome was decided before the interrupt landed
                    # (e.g. it landed in the cancel-shielded schedule point of the request's
                    # nursery exit, after the last response completed and its stream closed:
                    # nothing was left to stop)
                    err = outcome.error
                    decided = None
                    if err is not None and type(err).__name__ == "FatalError":
                        decided = task.fatal_seq
                    elif err is not None:
                        decided = next((a.end_seq for a in attempts if a.error is err), None)
                    elif attempts and attempts[-1].outcome == "completed":
                        decided = attempts[-1].end_seq
                    if decided is None or decided > task.interrupt_seq:  # type: ignore[operator]
                        _fail(
                            f"{task.tid}: interrupted ({task.interrupt_kind}) but ended {outcome.status} ({outcome.error!r})"
                        )
            elif outcome.status == "aborted":
                _fail(f"{task.tid}: aborted without an interrupt")
            # retries: runs of attempts, each ending at a completed attempt or the turn's end
            runs: list[list[_Attempt]] = [[]]
            for a in attempts:
                runs[-1].append(a)
                if a.outcome == "completed":
                    runs.append([])
            if not runs[-1]:
                runs.pop()
            for n, run in enumerate(runs):
                if len(run) > self.max_retries + 1:
                    _fail(f"{task.tid}: {len(run)} attempts for one request, budget {self.max_retries}")
                for a in run[:-1]:
                    if a.outcome not in _RETRYABLE:
                        _fail(f"{task.tid}: retried after a {a.outcome} (not retryable)")
                last = run[-1]
                fatal = outcome.error is not None and type(outcome.error).__name__ == "FatalError"
                if last.outcome in _RETRYABLE and n == len(runs) - 1 and not interrupted and not fatal:
                    if outcome.status != "failed" or len(run) != self.max_retries + 1:
                        _fail(
                            f"{task.tid}: gave up after {len(run)} retryable failures (budget {self.max_retries}), outcome {outcome!r}"
                        )
            retries = [e for e, seq in _with_seq(gen, task) if isinstance(e, StreamRetry)]
            expected_retries = sum(len(r) - 1 for r in runs)
            if not (expected_retries <= len(retries) <= expected_retries + (1 if interrupted else 0)):
                _fail(f"{task.tid}: {len(retries)} retry notices for {expected_retries} retries")
            for e in retries:
                if (
                    not (1 <= e.retries <= self.max_retries)
                    or e.message != f"Reconnecting... {e.retries}/{self.max_retries}"
                ):
                    _fail(f"{task.tid}: bad retry notice {e!r}")
            # a retry waits at least what the failure asked for
            flat = [a for run in runs for a in run]
            for a, b in zip(flat, flat[1:]):
                if a.outcome in _RETRYABLE and a.error is not None and a.error.retry_after is not None:
                    assert a.ended is not None
                    if b.started + 0.002 < a.ended + a.error.retry_after:
                        _fail(
                            f"{task.tid}: retried {b.started - a.ended:.4f}s after an error asking for {a.error.retry_after}s"
                        )
            # the outcome follows from the last attempt
            if outcome.status == "completed":
                if not attempts or attempts[-1].outcome != "completed":
                    _fail(
                        f"{task.tid}: completed but its last attempt ended {attempts[-1].outcome if attempts else None}"
                    )
            elif outcome.status == "failed":
                err = outcome.error
                assert err is not None
                if type(err).__name__ == "FatalError":
                    fatal_calls = [
                        i
                        for i in gen.acked
                        if isinstance(i, KFunctionCall)
                        and i.call_id.startswith(task.tid)
                        and ('"mode": "fatal"' in i.arguments or i.name in user_tool_names)
                    ]
                    if not fatal_calls:
                        _fail(f"{task.tid}: FatalError {err} without a fatal tool call")
                elif not attempts or attempts[-1].error is not err:
                    _fail(f"{task.tid}: failed with {err!r}, not the last attempt's error")
                if type(err).__name__ == "ContextWindowExceeded" and (
                    not gen.session.context_full  # type: ignore[union-attr]
                    or not gen.counts["ContextWindowFull"]
                ):
                    _fail(f"{task.tid}: context window exceeded but the host was not told")
            # what the server received: exactly the prompts, each the history at that moment
            wire = self.wire
            for a in attempts:
                if list(a.prompt.input) != a.expected:
                    _fail(f"{task.tid}: a prompt is not the history at that moment (retries must re-send history)")
            server = gen.server
            assert server is not None
            mine = [(i, r) for i, r in enumerate(server.requests) if _task_of(r.body) == task.tid]
            j = 0
            for i, request in mine:
                _check_wire_input(request.body, wire, f"{task.tid} request {i}")
                while j < len(attempts) and attempts[j].body != request.body:
                    j += 1
                if j == len(attempts):
                    _fail(f"{task.tid}: the server received a request no attempt sent")
                a = attempts[j]
                j += 1
                ri = request.reply_index
                reply = gen.installed[ri] if ri is not None and ri < len(gen.installed) else _DONE
                stats.faults_served[_fault_of(reply)] += 1
                allowed = _allowed_outcomes(reply, wire, cfg.idle_timeout)
                if a.outcome == "cancelled":
                    if not (
                        interrupted or (outcome.error is not None and type(outcome.error).__name__ == "FatalError")
                    ):
                        _fail(f"{task.tid}: an attempt was cancelled without an interrupt or a fatal tool")
                elif a.outcome == "StreamError" and "idle timeout" in str(a.error) and a.outcome not in allowed:
                    stats.outcomes["spurious_idle_timeout"] += 1  # real time: the machine stalled
                elif a.outcome not in allowed:
                    _fail(
                        f"{task.tid}: served {_fault_of(reply)} ({wire}), the attempt ended {a.outcome} "
                        f"({a.error!r}); expected one of {sorted(allowed)}"
                    )
            # tool calls: hangs end aborted; every started call finished exactly once
            for event, _ in _with_seq(gen, task):
                if isinstance(event, ToolCallFinished) and '"mode": "hang"' in _arguments_of(gen, event.call_id):
                    if event.status != "aborted":
                        _fail(f"{task.tid}: a hanging tool call ended {event.status}")

        @invariant()
        def session_invariants(self) -> None:
            if self.gen is None:
                return
            self.runner.call(self._invariants)

        async def _invariants(self) -> None:
            gen = self.gen
            assert gen is not None and gen.session is not None
            history = await gen.session.history()
            if history != gen.base + gen.acked:
                _fail("the session's history is not what was acknowledged")
            problems = well_formed_violations(history)
            if problems:
                _fail(f"history is not well-formed: {problems}")
            resumed = await trio.to_thread.run_sync(_quiet_resume, gen.rollout)
            if list(resumed.items) != history or resumed.added or resumed.dropped:
                _fail("rollout replay differs from the in-memory history")
            # events: each turn once started, once finished, its final event last
            finals: Counter[str] = Counter()
            starts: Counter[str] = Counter()
            open_calls: Counter[str] = Counter()
            for e in gen.events:
                if isinstance(e, TurnStarted):
                    starts[e.turn_id] += 1
                elif isinstance(e, _FINALS):
                    finals[e.turn_id] += 1
                elif isinstance(e, ToolCallStarted):
                    open_calls[e.call_id] += 1
                elif isinstance(e, ToolCallFinished):
                    open_calls[e.call_id] -= 1
            if any(v != 1 for v in starts.values()) or starts != finals:
                _fail(f"turns without exactly one start and one final event: {starts} vs {finals}")
            if any(open_calls.values()):
                _fail(f"tool calls without exactly one finish: {+open_calls} {-open_calls}")
            self._check_rollout_events(resumed.events)
            await self._check_subscribers()
            self._scan_secrets(gen)
            assert gen.server is not None and gen.server.host == "127.0.0.1"

        def _check_rollout_events(self, events: Sequence[Any]) -> None:
            starts: Counter[str] = Counter()
            finals: Counter[str] = Counter()
            for e in events:
                if e.get("type") == "turn_started":
                    starts[e["turn_id"]] += 1
                elif e.get("type") in ("turn_completed", "turn_aborted", "turn_failed"):
                    finals[e["turn_id"]] += 1
            for tid, n in starts.items():
                want = {0, 1} if tid in self.crashed_turns else {1}
                if n != 1 or finals[tid] not in want:
                    _fail(f"rollout: turn {tid} started {n}x and ended {finals[tid]}x")
            if set(finals) - set(starts):
                _fail(f"rollout: final events without a start: {set(finals) - set(starts)}")

        def _scan_secrets(self, gen: _Gen) -> None:
            for e in gen.events[self._scanned_events :]:
                if key in repr(e) or (e.lifecycle and key in json.dumps(event_to_dict(e), default=repr)):
                    _fail(f"the API key leaked into an event: {type(e).__name__}")
            self._scanned_events = len(gen.events)
            for outcome in self.outcomes:
                if outcome.error is not None and (key in str(outcome.error) or key in repr(outcome.error)):
                    _fail("the API key leaked into a turn's error")
            for record in self.log_records:
                if key in _format(record):
                    _fail(f"the API key leaked into a log record of {record.name}")
            for w in self.warned:
                if key in str(w.message):
                    _fail("the API key leaked into a warning")
            assert gen.server is not None
            for request in gen.server.requests:
                if key in json.dumps(request.headers) or key in json.dumps(request.body):
                    _fail("the API key reached the server outside the Authorization header")

        def teardown(self) -> None:
            try:
                if self.gen is not None and not self.gen.closed.is_set():
                    self.runner.call(self._close, "clean")
                    self.gen = None
                for path in self.files:
                    if path.exists() and key.encode() in path.read_bytes():
                        _fail(f"the API key leaked into the rollout {path.name}")
            finally:
                with contextlib.suppress(Exception):
                    self.runner.close()
                self._warnings.__exit__(None, None, None)
                logging.getLogger().removeHandler(self._handler)
                logging.getLogger().setLevel(self._root_level)
                for path in self.files:
                    with contextlib.suppress(OSError):
                        path.unlink()
                with contextlib.suppress(OSError):
                    for leftover in self.dir.iterdir():
                        leftover.unlink()
                    self.dir.rmdir()

    active = hypothesis_settings.default
    assert active is not None
    default_examples = max(1, active.max_examples * 30 // 100)
    SessionStress.TestCase.settings = hypothesis_settings(
        active,
        max_examples=cfg.max_examples or default_examples,
        stateful_step_count=cfg.step_count,
        deadline=None,
    )
    return SessionStress


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


def _with_seq(gen: _Gen, task: _Task) -> list[tuple[Event, int]]:
    """The events of ``task``'s turn (from its TurnStarted to its final event)."""
    out = []
    inside = False
    for e in gen.events:
        if isinstance(e, TurnStarted):
            inside = e.turn_id == task.tid
        if inside:
            out.append((e, 0))
        if isinstance(e, _FINALS) and e.turn_id == task.tid:
            inside = False
    return out


def _arguments_of(gen: _Gen, call_id: str) -> str:
    for item in gen.acked:
        if isinstance(item, KFunctionCall) and item.call_id == call_id:
            return item.arguments
        if isinstance(item, KCustomToolCall) and item.call_id == call_id:
            return item.input
    return ""


async def _trickle(entry: _Sub) -> None:
    assert entry.scope is not None
    with entry.scope:
        try:
            async for batch in entry.sub.batches():
                entry.received.extend(batch)
                await trio.sleep(0.003)
        except trio.ClosedResourceError:
            pass


_ = (item_to_wire,)
