"""What a stress machine is built from: :class:`StressConfig`, the :class:`SessionSpec` a session
factory is asked to open, the counters (:class:`StressStats`, :data:`STATS`) and the chaos tools
(:func:`chaos_registry`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import attrs
import trio

from kernel import FatalToolError, RespondToModel
from kernel.testing import INJECTION_TEXTS

from ..model import ModelSettings
from ..session import Session, open_session
from ..tools import ToolRegistry

STRESS_API_KEY = "sk-test-STRESS-9f8e7d6c5b4a39281706"
"""The API key the stress sessions use; the scripted server echoes it in error bodies and the
machine checks it never shows up anywhere the kernel writes."""


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
    mcp_servers: tuple[Any, ...] = ()
    """MCP servers (:class:`~actors.tools.mcp.McpServer`) to give the session (``StressConfig.mcp``)."""


SessionFactory = Callable[[SessionSpec], AbstractAsyncContextManager[Session]]
"""Opens a session for a :class:`SessionSpec`: an async context manager yielding a
:class:`~actors.session.Session` (so ``open_session`` with your own prompt config, tools…)."""


def default_session_factory(spec: SessionSpec) -> AbstractAsyncContextManager[Session]:
    """``open_session`` with the spec's model, tools, rollout, retry budget, buffer bound and MCP
    servers."""
    return open_session(
        model=spec.model,
        tools=spec.tools,
        rollout=spec.rollout,
        resume=spec.resume,
        max_retries=spec.max_retries,
        max_buffer=spec.max_buffer,
        mcp_servers=spec.mcp_servers or None,
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
    transports: Counter[str] = attrs.field(factory=Counter)
    """Sessions opened, by ``wire:transport`` setting (``responses:auto``…)."""
    attempts_by_transport: Counter[str] = attrs.field(factory=Counter)
    """Kernel attempts, by the transport they went over."""
    requests_by_transport: Counter[str] = attrs.field(factory=Counter)
    """Requests the scripted server received, by transport (resends included)."""
    incremental_requests: int = 0
    """WebSocket requests sent incrementally (``previous_response_id``, only the new items)."""
    websocket_resends: int = 0
    """Requests the WebSocket transport sent again without spending the retry budget."""
    fallbacks: int = 0
    """Sessions that fell back from WebSocket to HTTP (one ``FallbackWarning`` each)."""
    quiet_retries: int = 0
    """Retries announced by no ``StreamRetry`` (the first one while a fallback is left)."""
    rate_limit_snapshots: Counter[str] = attrs.field(factory=Counter)
    """Attempts whose stream carried a rate-limit snapshot, by transport."""
    compactions: Counter[str] = attrs.field(factory=Counter)
    """Compactions that replaced the history, by ``mode:reason`` (``local:window``…)."""
    compaction_failures: Counter[str] = attrs.field(factory=Counter)
    """Compactions that failed (the history unchanged), by reason."""
    compaction_settings: Counter[str] = attrs.field(factory=Counter)
    """Sessions opened, by ``ModelSettings.compaction`` and whether the server had a small window."""
    summary_requests: int = 0
    """Local compactions' summary requests (the model asked for a summary: not turn attempts)."""
    compact_requests: int = 0
    """``POST /responses/compact`` requests the server received (remote compactions)."""
    window_refusals: int = 0
    """Requests of turns the server refused for its context window."""
    window_retries: int = 0
    """Requests retried once, outside the budget, after a window refusal compaction answered."""
    request_tokens: Counter[str] = attrs.field(factory=Counter)
    """Turn requests the server received, by its estimate of their input (tokens)."""
    crash_during_compaction: Counter[str] = attrs.field(factory=Counter)
    """Hard crashes while a replacement was being written, by what the rollout held (old / new)."""
    mcp_calls: Counter[str] = attrs.field(factory=Counter)
    """MCP tool calls checked, by ``mode:status`` (``mcp_ok:ok``, ``mcp_crash:error``…)."""
    mcp_progress_events: int = 0
    """``ToolProgress`` events of MCP calls, each checked to carry its turn's id."""
    mcp_sessions_checked: int = 0
    """Sessions after whose end no MCP server process of theirs was left running."""

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
    checked like any other). ``wires``: the model protocols to draw from; ``transports``: the
    ``ModelSettings.transport`` values to draw from on the Responses wire (``"http"``,
    ``"websocket"``, ``"auto"``: WebSocket with HTTP as the fallback, or ``"refused"``: ``"auto"``
    against a server that refuses every WebSocket upgrade, as vLLM and most proxies do — every
    request goes over HTTP from the first, the refusal remembered by the session's actor; the Chat
    wire is always HTTP). ``max_retries``: the range the retry budget is drawn from. ``step_count``: rules per
    example.
    """

    session_factory: SessionFactory = default_session_factory
    tools: ToolRegistry | None = None
    tool_calls: Any = None
    wires: tuple[str, ...] = ("responses", "chat")
    transports: tuple[str, ...] = attrs.field(default=("http", "websocket", "auto", "refused"))
    max_retries: tuple[int, int] = (0, 3)
    idle_timeout: float = 0.2
    backoff_scale: float = 0.01
    task_timeout: float = 60.0
    step_count: int = 12
    api_key: str = STRESS_API_KEY
    stats: StressStats = STATS
    max_examples: int | None = None
    """Examples per run; default: 30 % of the active Hypothesis profile's ``max_examples``."""
    compaction: bool = True
    """Draw ``ModelSettings.compaction`` per session among ``"off"``, ``"auto"`` (remote on the
    Responses wire, local on Chat) and ``"local"``, sometimes with a small context window (on the
    scripted server and in the settings), and compact on demand between turns; ``False``: every
    session has ``compaction="off"`` and no window."""
    mcp: bool = False
    """Give every session a real MCP server process (the stdlib stub
    :mod:`actors.testing._mcp_stub`, as ``SessionSpec.mcp_servers``; a session factory of your own
    must pass them on) and let the scripted model call its tools: ``mcp__stress__echo`` (ok,
    error, slow, progress, hang, crash: the server process exits mid-call and is restarted on
    the next call) and ``mcp__stress__count``. Checked: each call's output follows its mode,
    progress events carry their turn's id and come before the call's end, and once a session
    has ended (closed, crashed or cancelled) no server process of it is left running."""
    mcp_tool_timeout: float = 5.0
    """The stub server's per-call timeout (a hanging call is interrupted long before)."""
    context_windows: tuple[int, ...] = (500, 800, 1500)
    """The small context windows (tokens) drawn when compaction is on (the machine's histories
    grow to a few thousand estimated tokens in an example: these make the server refuse and the
    session compact sometimes, not always)."""

    @transports.validator
    def _check_transports(self, _attribute: Any, value: tuple[str, ...]) -> None:
        unknown = set(value) - {"http", "websocket", "auto", "refused"}
        if not value or unknown:
            raise ValueError(
                f"StressConfig.transports: one or more of 'http', 'websocket', 'auto', 'refused', got {value!r}"
            )


# =============================================================================================
# Chaos tools
# =============================================================================================


FATAL_RAISED: trio.lowlevel.RunVar[Callable[[], None] | None] = trio.lowlevel.RunVar(
    "stress_fatal_raised", default=None
)
"""Called (if set, in this ``trio.run``) by a chaos tool the moment it raises ``FatalToolError``,
in the tool's own task. The machine uses it to learn when a fatal call ended, because the turn
only sees it one scheduler hop later, when the waiting call is rescheduled with the error."""


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
        hook = FATAL_RAISED.get()
        if hook is not None:
            hook()
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
