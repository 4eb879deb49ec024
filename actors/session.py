"""The session: wires the actors and exposes ``submit``, ``interrupt``, ``subscribe``, ``history``.

::

    async with open_session(model=ModelSettings(base_url=..., model=...), tools=registry,
                            rollout="session.jsonl") as session:
        async with session.subscribe() as events:
            handle = await session.submit("list the files")
            async for event in events:
                ...                                   # TextDelta, ToolCallStarted, TurnCompleted...
                if isinstance(event, TurnCompleted): break
        outcome = await handle.result()               # TurnOutcome(status="completed", ...)

One nursery holds everything the session starts — the ModelActor (unless a shared one is passed),
the ToolActor, the HistoryActor and the turn runner; the Notifier needs no task. Leaving the
``async with`` cancels the running turn (its calls in flight get aborted outputs, recorded before
the history closes) and every actor: no task outlives the session.

To keep a session beyond one block, run it in a nursery: ``session = await
nursery.start(functools.partial(run_session, model=..., rollout=...))``; it lives until
``await session.aclose()`` (graceful: the running turn is interrupted and records its aborted
outputs, then the rollout is flushed and closed) or until the nursery is cancelled.
``session.closed`` and ``await session.wait_closed()`` tell when it ended. ``resume="auto"``
creates the rollout or resumes it; errors while opening are raised as themselves, not as
exception groups.

An idle session costs little: the ToolActor starts at the first tool call, the turn runner runs
only while turns are queued, and an in-memory history (no rollout) needs no task.

Secrets stay out of every record: a :class:`~actors.secrets.Redactor` (by default the model's API
key and secret headers plus the secret-looking environment variables) scrubs tool outputs before
the history, the events and the rollout see them, model errors, and turn failures (``redact``).

Turns run one at a time, in submission order. The session's host is :class:`kernel.TurnHost`: it
shows "Reconnecting... n/max" and the fallback warning as events, records token usage and
rate-limit snapshots, and marks the context full on ``ContextWindowExceeded``. Lifecycle events
also go to the rollout.
"""

from __future__ import annotations

import collections
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Literal

import attrs
import trio

from kernel.events import (
    Event,
    FallbackWarning,
    StreamRetry,
    TokenUsageUpdated,
    ToolProgress,
    TurnAborted,
    TurnCompleted,
    TurnFailed,
)
from kernel.items import Message, ResponseItem
from kernel.prompt import PromptConfig, ToolConfig
from kernel.stream import ModelClient, TokenUsage
from kernel.turn import Turn, TurnHost, TurnOutcome

from .compaction import SessionCompactor
from .history import HistoryClient, SessionMeta, open_history
from .model import HttpModelClient, ModelActor, ModelSettings
from .notify import Notifier, Subscription
from .secrets import RedactingClient, RedactingToolExecutor, Redactor
from .tools import Tool, ToolActor, ToolRegistry

if TYPE_CHECKING:
    from .tools.approvals import Approvals
    from .tools.mcp import ApproveFn, ElicitFn, McpServer, McpToolRegistry, McpTools

__all__ = ["Session", "TurnHandle", "TurnStream", "open_session", "run_session"]


_TERMINAL = (TurnCompleted, TurnAborted, TurnFailed)


class TurnStream:
    """One turn's events, from :meth:`Session.stream`: an async iterator that yields the events
    from the turn's ``TurnStarted`` to its terminal event and then stops. ``turn_id`` names the
    turn; ``outcome`` is its :class:`~kernel.turn.TurnOutcome` once it ended (else ``None``)."""

    __slots__ = ("handle", "_events", "_ended")

    def __init__(self, handle: TurnHandle, events: Subscription) -> None:
        self.handle = handle
        self._events = events
        self._ended = False

    @property
    def turn_id(self) -> str:
        """The turn's id."""
        return self.handle.turn_id

    @property
    def outcome(self) -> TurnOutcome | None:
        """The turn's outcome once it ended."""
        return self.handle.outcome

    async def result(self) -> TurnOutcome:
        """Wait for the turn to end and return its outcome (without consuming events)."""
        return await self.handle.result()

    def interrupt(self) -> None:
        """Interrupt the turn (running or still queued)."""
        self.handle.interrupt()

    def __aiter__(self) -> TurnStream:
        return self

    async def __anext__(self) -> Event:
        if self._ended:
            # the terminal event is published just before the runner stores the outcome: wait
            # for it, so ``outcome`` is set once the loop is over
            await self.handle.result()
            raise StopAsyncIteration
        tid = self.handle.turn_id
        while True:
            try:
                event = await self._events.__anext__()
            except StopAsyncIteration:  # the session closed: a queued turn may never have started
                self._ended = True
                raise
            if event.turn_id != tid:  # every event carries its turn's id
                continue
            if type(event) in _TERMINAL:
                self._ended = True  # (possibly without a start: interrupted while queued)
            return event


@attrs.define(eq=False)
class TurnHandle:
    """A submitted turn. ``await handle.result()`` waits for its :class:`~kernel.TurnOutcome`."""

    turn_id: str
    input: list[ResponseItem]
    _done: trio.Event = attrs.field(factory=trio.Event)
    _turn: Turn | None = None
    outcome: TurnOutcome | None = None
    cancelled: bool = False

    async def result(self) -> TurnOutcome:
        """Wait for the turn to end and return its outcome. A turn dropped before it started
        (the session closed first) ends ``aborted``."""
        await self._done.wait()
        assert self.outcome is not None
        return self.outcome

    @property
    def done(self) -> bool:
        """Whether the turn has ended."""
        return self._done.is_set()

    def interrupt(self) -> None:
        """Interrupt this turn (running or still queued)."""
        self.cancelled = True
        if self._turn is not None:
            self._turn.interrupt()


class _SessionSink:
    """The turn's event sink: every event to the notifier, lifecycle events also to the rollout
    (when there is one: without a file there is nothing to write, so no history call)."""

    __slots__ = ("notifier", "history", "logs")

    def __init__(self, notifier: Notifier, history: HistoryClient) -> None:
        self.notifier = notifier
        self.history = history
        self.logs = history.rollout is not None

    async def publish(self, events: Sequence[Event]) -> None:
        self.notifier.publish_nowait(events)
        if self.logs:
            lifecycle = [e for e in events if e.lifecycle]
            if lifecycle:
                await self.history.record_events(lifecycle)


class _RedactingSink(_SessionSink):
    """A :class:`_SessionSink` that scrubs the events carrying error text (turn failures, retry
    notices, fallback warnings) before anything sees them. Tool outputs arrive scrubbed already
    (:class:`~actors.secrets.RedactingToolExecutor`); deltas are only type-checked."""

    __slots__ = ("redactor",)

    def __init__(self, notifier: Notifier, history: HistoryClient, redactor: Redactor) -> None:
        super().__init__(notifier, history)
        self.redactor = redactor

    async def publish(self, events: Sequence[Event]) -> None:
        for event in events:
            if type(event) in _ERROR_EVENTS:
                events = [self._scrub(e) for e in events]
                break
        await super().publish(events)

    def _scrub(self, event: Event) -> Event:
        redact = self.redactor.redact
        if isinstance(event, TurnFailed):
            return attrs.evolve(event, error=redact(event.error))
        if isinstance(event, StreamRetry):
            return attrs.evolve(event, message=redact(event.message), error=redact(event.error))
        if isinstance(event, FallbackWarning):
            return attrs.evolve(event, message=redact(event.message))
        return event


_ERROR_EVENTS: frozenset[type] = frozenset({TurnFailed, StreamRetry, FallbackWarning})


class Session:
    """A running session (made by :func:`open_session`; do not construct directly)."""

    def __init__(
        self,
        *,
        host: TurnHost[Any],
        history: HistoryClient,
        notifier: Notifier,
        session_id: str,
        redactor: Redactor | None = None,
    ) -> None:
        self.host = host
        self._history = history
        self.notifier = notifier
        self.session_id = session_id
        self.redactor = redactor if redactor is not None else Redactor()
        """The secrets this session scrubs from everything it records."""
        self._queue: collections.deque[TurnHandle] = collections.deque()
        self._turns: trio.Nursery | None = None  # set by open_session
        self._runner = False  # a runner task is draining the queue
        self._current: TurnHandle | None = None
        self._closed = False  # closing began: submit() refuses
        self._closed_event = trio.Event()  # closing ended: see wait_closed()
        self._close_hooks: list[Callable[[], None]] = []  # stop what open_session started

    # --- public API ----------------------------------------------------------------------

    async def submit(
        self, input: str | ResponseItem | Iterable[ResponseItem], *, turn_id: str | None = None
    ) -> TurnHandle:
        """Queue a turn; a string becomes a user message. Returns at once (checkpoints) with a
        :class:`TurnHandle`. Raises :class:`trio.ClosedResourceError` after the session closed."""
        if isinstance(input, str):
            items: list[ResponseItem] = [Message.user(input)]
        elif isinstance(input, Iterable) and not isinstance(input, (bytes, dict)):
            items = list(input)
        else:
            items = [input]  # type: ignore[list-item]
        if self._closed:
            raise trio.ClosedResourceError("submit() on a closed session")
        handle = TurnHandle(turn_id or f"turn-{uuid.uuid4().hex[:12]}", items)
        self._queue.append(handle)
        if not self._runner:
            assert self._turns is not None
            self._runner = True
            self._turns.start_soon(self._run_turns)
        await trio.lowlevel.checkpoint()
        return handle

    async def run(self, input: str | ResponseItem | Iterable[ResponseItem]) -> TurnOutcome:
        """``submit`` and wait for the outcome."""
        handle = await self.submit(input)
        return await handle.result()

    def interrupt(self) -> None:
        """Interrupt the running turn (calls in flight get aborted outputs). Queued turns stay
        queued. Does nothing when idle."""
        if self._current is not None:
            self._current.interrupt()

    @asynccontextmanager
    async def stream(
        self,
        input: str | ResponseItem | Iterable[ResponseItem],
        *,
        turn_id: str | None = None,
        interrupt_on_exit: bool = True,
        max_buffer: int | None = None,
    ) -> AsyncIterator[TurnStream]:
        """Submit a turn and iterate its events only::

            async with session.stream("fix the test") as turn:
                async for event in turn:
                    ...
            print(turn.outcome)

        The iteration starts at the turn's ``TurnStarted`` (events of turns queued before it are
        skipped) and ends after its terminal event (``TurnCompleted`` / ``TurnAborted`` /
        ``TurnFailed``). Leaving the block before the turn ended interrupts it, unless
        ``interrupt_on_exit=False`` (then it runs on; await ``turn.result()`` inside the block to
        wait for it). ``max_buffer`` bounds the subscription (see :meth:`subscribe`). Raises
        :class:`trio.ClosedResourceError` on a closed session; checkpoints."""
        async with self.notifier.subscribe(max_buffer=max_buffer) as events:
            handle = await self.submit(input, turn_id=turn_id)
            turn = TurnStream(handle, events)
            try:
                yield turn
            finally:
                if interrupt_on_exit and not handle.done:
                    handle.interrupt()

    def subscribe(self, *, max_buffer: int | None = None) -> Subscription:
        """Events from now on: ``async with session.subscribe() as events: async for e in events``.
        A slow subscriber never slows the turn (see :class:`actors.notify.Notifier`)."""
        return self.notifier.subscribe(max_buffer=max_buffer)

    async def history(self) -> list[ResponseItem]:
        """The conversation so far (a copy)."""
        return await self._history.items()

    @property
    def total_usage(self) -> TokenUsage:
        """Token usage summed over the session's responses."""
        return self.host.total_usage

    async def compact(self) -> bool:
        """Compact the history now (``ModelSettings.compaction`` says how; see
        :mod:`actors.compaction`): ``True`` when it was replaced. Only between turns: raises
        ``RuntimeError`` while a turn runs or is queued, ``RuntimeError`` when the session's model
        is a bare :class:`~kernel.stream.ModelClient` (no settings to compact with), and
        :class:`~actors.compaction.CompactionFailed` when compacting failed (the history is then
        unchanged)."""
        compactor = self.host.compactor
        if not isinstance(compactor, SessionCompactor):
            raise RuntimeError("compact() needs a session opened with ModelSettings or a ModelActor")
        if self._current is not None or self._queue:
            raise RuntimeError("compact() runs between turns: a turn is running or queued")
        return await compactor.compact(reason="manual")

    @property
    def context_full(self) -> bool:
        """Set when the model reported the context window exceeded."""
        return self.host.context_full

    @property
    def rollout(self) -> str | None:
        """The rollout file's path, if any."""
        path = self._history.rollout
        return os.fspath(path) if path is not None else None

    @property
    def closed(self) -> bool:
        """Whether the session has closed: :meth:`aclose` finished, or the ``async with`` block
        (or the nursery running :func:`run_session`) ended. :meth:`submit` refuses as soon as
        closing begins."""
        return self._closed_event.is_set()

    async def wait_closed(self) -> None:
        """Wait until :attr:`closed` (returns at once if it is; checkpoints). Also returns when
        the session died (its actors failed): the error then goes to whoever opened it."""
        await self._closed_event.wait()

    async def aclose(self) -> None:
        """Close gracefully: queued turns end ``aborted``, the running turn is interrupted and
        records its aborted outputs, then the rollout is fsynced and closed, the session's own
        actors stop and subscriptions end. Idempotent (a second call waits for the first);
        checkpoints. Called inside the ``async with`` block, the block goes on (later
        :meth:`submit` calls raise :class:`trio.ClosedResourceError`, :meth:`history`
        :class:`~actors.history.HistoryClosed`); in :func:`run_session` it
        ends the session's task. If cancelled, the rest is done when the block or task ends.
        Raises :class:`~actors.history.RolloutError` if the final flush failed."""
        if self._closed:
            await self.wait_closed()
            return
        self._close()
        current = self._current
        if current is not None:
            current.interrupt()
            await current._done.wait()
        try:
            await self._history.aclose()
        finally:
            self._shutdown()

    # --- the turn runner -----------------------------------------------------------------

    async def _run_turns(self) -> None:
        """Run queued turns one at a time; return when the queue is empty (``submit`` starts a
        runner again)."""
        queue = self._queue
        try:
            while queue:
                handle = queue.popleft()
                turn = Turn(self.host, handle.input, turn_id=handle.turn_id)
                handle._turn = turn
                if handle.cancelled:
                    turn.interrupt()
                self._current = handle
                try:
                    handle.outcome = await turn.run()
                finally:
                    self._current = None
                    handle.outcome = handle.outcome or turn.outcome
                    if handle.outcome is not None and handle.outcome.error is not None:
                        self.redactor.redact_exception(handle.outcome.error)
                    handle._done.set()
        finally:
            self._runner = False

    def _shutdown(self) -> None:
        """Stop what open_session started and mark the session closed. Does not checkpoint. (The
        turn runner has left by now; the turns nursery also holds the caller's block, so it is
        not cancelled here.)"""
        for hook in self._close_hooks:
            hook()
        self.notifier.close()
        self._closed_event.set()

    def _close(self) -> None:
        self._closed = True
        # turns never started end as aborted, so no one waits forever
        while self._queue:
            handle = self._queue.popleft()
            handle.outcome = TurnOutcome(handle.turn_id, "aborted")
            handle._done.set()


async def _enter_mcp(
    stack: AsyncExitStack,
    servers: Iterable[McpServer | McpTools],
    registry: ToolRegistry,
    *,
    client: ModelClient,
    model_name: str,
    elicit: ElicitFn | None,
    approve: ApproveFn | None,
    approvals: Approvals | None,
    host: Callable[[], TurnHost[Any]],
) -> McpToolRegistry:
    """Start the session's own MCP servers on ``stack`` and return ``registry`` with their tools
    and those of the shared (already running) :class:`McpTools` added. Progress events and the
    usage of sampling requests go to the session's turn host (tagged with the running turn)."""
    from .tools.mcp import McpServer, McpToolRegistry, McpTools, model_sampler, open_mcp_tools

    own: list[McpServer] = []
    shared: list[McpTools] = []
    for server in servers:
        if isinstance(server, McpServer):
            own.append(server)
        elif isinstance(server, McpTools):
            shared.append(server)
        else:
            raise TypeError(f"open_session(mcp_servers=...): expected McpServer or McpTools items, got {server!r}")

    async def progress(event: ToolProgress) -> None:
        await host().publish([event])

    sample = None
    if approve is not None:
        sampler = model_sampler(client, approve, model_name=model_name)

        async def sample(
            server: str, messages: list[Message], system: str | None, max_tokens: int
        ) -> tuple[str, str, TokenUsage | None]:
            text, name, usage = await sampler(server, messages, system, max_tokens)
            if usage is not None:  # a server's sampling request counts in the session's usage
                turn_host = host()
                turn_host.total_usage = turn_host.total_usage + usage
                await turn_host.publish([TokenUsageUpdated(usage, turn_host.total_usage)])
            return text, name, usage

    sources = list(shared)
    if own:
        reserved = set(registry.names())
        mine = await stack.enter_async_context(
            open_mcp_tools(own, reserved_names=reserved, elicit=elicit, sample=sample)
        )
        sources.insert(0, mine)
    tools = McpToolRegistry(registry, sources, on_progress=progress, approvals=approvals)
    stack.callback(tools.detach)
    return tools


def _with_cache_key(config: PromptConfig, session_id: str) -> PromptConfig:
    """``config`` with the session's id as its ``prompt_cache_key`` unless it names one."""
    if config.prompt_cache_key is not None or not session_id:
        return config
    return attrs.evolve(config, prompt_cache_key=session_id)


def _registry_of(tools: ToolRegistry | Iterable[Tool | Callable[..., Any]] | None) -> ToolRegistry:
    if isinstance(tools, ToolRegistry):
        return tools
    registry = ToolRegistry()
    for t in tools or ():
        registry.add(t)
    return registry


def _redactor_for(redact: Redactor | Iterable[str] | None, settings: ModelSettings | None) -> Redactor:
    if isinstance(redact, Redactor):
        return redact
    if isinstance(redact, str):
        raise TypeError("open_session(redact=...) takes a Redactor or an iterable of values, not one string")
    return Redactor.from_settings(settings, extra=redact or ())


Resume = bool | Literal["auto"]

_NO_STACK: nullcontext[None] = nullcontext()
"""The exit stack of a session without MCP servers: nothing to enter (reusable, stateless)."""
"""``open_session(resume=...)``: ``False`` (create), ``True`` (continue) or ``"auto"`` (either)."""


def _resolve_resume(resume: Resume, rollout: str | os.PathLike[str] | None) -> bool:
    if resume == "auto":
        return rollout is not None and os.path.lexists(rollout)
    if not isinstance(resume, bool):
        raise ValueError(f'open_session(resume={resume!r}): use True, False or "auto"')
    return resume


def _only_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The single exception at the bottom of nested groups, or ``None`` if there are several."""
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        if len(leaf.exceptions) != 1:
            return None
        leaf = leaf.exceptions[0]
    return leaf


async def _run_owned_model(
    actor: ModelActor, scope: trio.CancelScope, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    with scope:
        await actor.run(task_status=task_status)


@asynccontextmanager
async def open_session(
    *,
    model: ModelSettings | ModelActor | ModelClient,
    tools: ToolRegistry | Iterable[Tool | Callable[..., Any]] | None = None,
    rollout: str | os.PathLike[str] | None = None,
    resume: Resume = False,
    session_id: str | None = None,
    prompt_config: PromptConfig | None = None,
    parallel_tool_calls: bool = True,
    max_retries: int | None = None,
    cwd: str | os.PathLike[str] | None = None,
    max_buffer: int | None = None,
    redact: Redactor | Iterable[str] | None = None,
    mcp_servers: Iterable[McpServer | McpTools] | None = None,
    mcp_elicit: ElicitFn | None = None,
    mcp_sample_approve: ApproveFn | None = None,
    mcp_approvals: Approvals | None = None,
) -> AsyncIterator[Session]:
    """Start a session; everything it started is cancelled when the block exits.

    ``model``: :class:`~actors.model.ModelSettings` (the session runs its own ModelActor), a
    running :class:`~actors.model.ModelActor` (shared: one HTTP client for many sessions), or any
    :class:`kernel.ModelClient`. ``tools``: a :class:`~actors.tools.ToolRegistry` or tools /
    functions to register. ``rollout``: a JSONL file to write. ``resume``: ``False`` creates it
    (``FileExistsError`` if it exists), ``True`` continues an existing one, repairing dangling
    calls, ``"auto"`` resumes when the file exists and creates it otherwise. ``max_retries``
    defaults to the model settings' ``stream_max_retries`` (5).

    ``session_id``: recorded in a new rollout's header and exposed as
    :attr:`Session.session_id` (default: a random UUID), and the default ``prompt_cache_key`` of its requests. When resuming, the rollout's own id is
    kept; a different ``session_id`` raises ``ValueError`` naming the file.

    ``redact``: the secrets scrubbed from tool outputs, model errors and turn failures before the
    history, the events or the rollout record them. Default (``None``):
    :meth:`Redactor.from_settings <actors.secrets.Redactor.from_settings>` of the model settings
    (when ``model`` is settings or a ModelActor) and the environment; an iterable of values adds
    to that default; a :class:`~actors.secrets.Redactor` replaces it (``Redactor()``: scrub
    nothing). Without secrets nothing is wrapped.

    ``mcp_servers``: :class:`~actors.tools.mcp.McpServer` configurations, whose servers start
    (concurrently) in the session's nursery before the block is entered and stop when the session
    ends, and/or running :class:`~actors.tools.mcp.McpTools` (from
    :func:`~actors.tools.mcp.open_mcp_tools`) shared with other sessions, which the session only
    uses. Their tools are added to the session's tools (a registry passed as ``tools`` is copied,
    not changed). A server that fails to start does not fail the session (see
    :mod:`actors.tools.mcp`). Progress notifications of this session's calls are published as
    :class:`~kernel.ToolProgress` events. For its own servers: ``mcp_elicit`` answers a server's
    questions to the user (``elicitation/create``; without it they are declined);
    ``mcp_sample_approve`` lets servers sample through this session's model
    (``sampling/createMessage``), each request approved by it (without it, sampling is refused),
    its usage counted in the session's :attr:`~Session.total_usage`. A shared server's questions
    and sampling requests go to the callbacks its :class:`~actors.tools.mcp.McpTools` was opened
    with (a request on a shared connection cannot be told apart by session). ``mcp_approvals``:
    the approval policy and approver consulted before each MCP tool call (its server's
    annotations decide, see :class:`~actors.tools.approvals.ApprovalPolicy`; default: none, every
    call runs).

    Errors while opening are raised as themselves, never wrapped in an ``ExceptionGroup``:
    ``FileNotFoundError`` (``resume=True``, no rollout), ``FileExistsError``,
    :class:`~actors.history.RolloutError` (a corrupt rollout), other ``OSError`` (unreadable
    file), each naming the file; errors from starting the model actor likewise. To keep a session
    beyond one block, run it in a nursery with :func:`run_session`; to end it early, await
    :meth:`Session.aclose`.
    """
    registry = _registry_of(tools)
    mcp_servers = list(mcp_servers or ())
    settings = model.settings if isinstance(model, ModelActor) else model if isinstance(model, ModelSettings) else None
    redactor = _redactor_for(redact, settings)
    model_name = settings.model if settings is not None else getattr(model, "model", "")
    resuming = _resolve_resume(resume, rollout)
    meta = (
        None
        if resuming
        else SessionMeta.new(
            model=model_name, cwd=os.fspath(cwd) if cwd is not None else os.getcwd(), session_id=session_id
        )
    )
    retries = max_retries if max_retries is not None else (settings.stream_max_retries if settings else 5)
    notifier = Notifier() if max_buffer is None else Notifier(max_buffer=max_buffer)
    session: Session | None = None
    opened = False
    own_client: HttpModelClient | None = None  # closed with the session (its WebSocket, if any)
    try:
        async with trio.open_nursery() as nursery:
            try:
                model_scope: trio.CancelScope | None = None  # the session's own ModelActor's
                if isinstance(model, ModelSettings):
                    model_scope = trio.CancelScope()
                    actor = ModelActor(model)
                    await nursery.start(_run_owned_model, actor, model_scope)
                    own_client = actor.client()
                    client: ModelClient = own_client
                elif isinstance(model, ModelActor):
                    own_client = model.client()
                    client = own_client
                else:
                    client = model
                if redactor:
                    client = RedactingClient(client, redactor, model=model_name)
                async with (
                    open_history(rollout=rollout, session_meta=meta, resume=resuming) as history,
                    # inside the history's: the MCP servers' nursery (entered later) closes first
                    # (a session without MCP servers skips it: ~0.8 KiB per idle session)
                    AsyncExitStack() if mcp_servers else _NO_STACK as nursery_stack,
                ):
                    if resuming and session_id is not None and session_id != history.meta.session_id:
                        raise ValueError(
                            f"open_session(session_id={session_id!r}): the rollout {os.fspath(rollout or '')!r} "
                            f"belongs to session {history.meta.session_id!r}; pass its id or session_id=None"
                        )
                    sink = _RedactingSink(notifier, history, redactor) if redactor else _SessionSink(notifier, history)
                    mcp_registry: McpToolRegistry | None = None
                    if mcp_servers:
                        assert isinstance(nursery_stack, AsyncExitStack)
                        registry = mcp_registry = await _enter_mcp(
                            nursery_stack,
                            mcp_servers,
                            registry,
                            client=client,
                            model_name=model_name,
                            elicit=mcp_elicit,
                            approve=mcp_sample_approve,
                            approvals=mcp_approvals,
                            host=lambda: host,
                        )
                    tool_actor = ToolActor(registry)
                    tool_actor.start_on_demand(nursery)
                    host: TurnHost[Any] = TurnHost(
                        client,
                        RedactingToolExecutor(tool_actor, redactor) if redactor else tool_actor,
                        history,
                        sink,
                        prompt_config=_with_cache_key(prompt_config or PromptConfig(), history.meta.session_id),
                        tool_config=registry.tool_config(parallel_tool_calls=parallel_tool_calls)
                        if len(registry)
                        else ToolConfig(),
                        max_retries=retries,
                    )
                    if settings is not None and settings.compaction != "off":
                        # (the actor serves remote compaction over its HTTP transport)
                        serving = actor if isinstance(model, ModelSettings) else model
                        host.compactor = SessionCompactor(
                            host, history, settings, serving if isinstance(serving, ModelActor) else None
                        )
                    session = Session(
                        host=host,
                        history=history,
                        notifier=notifier,
                        session_id=history.meta.session_id,
                        redactor=redactor,
                    )
                    session._close_hooks.append(tool_actor.close)
                    if model_scope is not None:
                        session._close_hooks.append(model_scope.cancel)
                    if mcp_registry is not None:
                        tools_now = mcp_registry

                        def _sync_tools() -> None:
                            host.tool_config = (
                                tools_now.tool_config(parallel_tool_calls=parallel_tool_calls)
                                if len(tools_now)
                                else ToolConfig()
                            )

                        tools_now.on_change.append(_sync_tools)
                    async with trio.open_nursery() as turns:
                        session._turns = turns
                        opened = True
                        try:
                            yield session
                        finally:
                            session._close()
                            turns.cancel_scope.cancel()
            finally:
                notifier.close()
                if own_client is not None:
                    with trio.CancelScope(shield=True):
                        await own_client.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # an error while opening comes out of the nurseries above (and the model actor's):
        # raise it as itself, so `except FileNotFoundError` / `except RolloutError` work
        leaf = None if opened else _only_leaf(group)
        if leaf is None:
            raise
        raise leaf from leaf.__cause__
    finally:
        if session is not None:
            session._closed_event.set()


async def run_session(
    *,
    model: ModelSettings | ModelActor | ModelClient,
    tools: ToolRegistry | Iterable[Tool | Callable[..., Any]] | None = None,
    rollout: str | os.PathLike[str] | None = None,
    resume: Resume = False,
    session_id: str | None = None,
    prompt_config: PromptConfig | None = None,
    parallel_tool_calls: bool = True,
    max_retries: int | None = None,
    cwd: str | os.PathLike[str] | None = None,
    max_buffer: int | None = None,
    redact: Redactor | Iterable[str] | None = None,
    mcp_servers: Iterable[McpServer | McpTools] | None = None,
    mcp_elicit: ElicitFn | None = None,
    mcp_sample_approve: ApproveFn | None = None,
    mcp_approvals: Approvals | None = None,
    task_status: trio.TaskStatus[Session] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a session as a task of the caller's nursery, so it outlives the function that opened
    it::

        session = await nursery.start(functools.partial(run_session, model=..., rollout=path))
        ...                                   # later, elsewhere
        await session.aclose()                # or cancel the nursery

    Arguments as for :func:`open_session`, whose opening errors ``nursery.start`` raises as
    themselves. Returns once :meth:`Session.aclose` finished; cancellation closes the session as
    leaving :func:`open_session`'s block does (the running turn records aborted outputs)."""
    async with open_session(
        model=model,
        tools=tools,
        rollout=rollout,
        resume=resume,
        session_id=session_id,
        prompt_config=prompt_config,
        parallel_tool_calls=parallel_tool_calls,
        max_retries=max_retries,
        cwd=cwd,
        max_buffer=max_buffer,
        redact=redact,
        mcp_servers=mcp_servers,
        mcp_elicit=mcp_elicit,
        mcp_sample_approve=mcp_sample_approve,
        mcp_approvals=mcp_approvals,
    ) as session:
        task_status.started(session)
        await session.wait_closed()
