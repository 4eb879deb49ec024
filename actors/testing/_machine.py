"""Stress-test a session under random faults, interrupts and crashes (needs the ``test`` extra).

:func:`session_stress_machine` builds a Hypothesis ``RuleBasedStateMachine`` that drives a real
:class:`~actors.session.Session` — made by *your* ``session_factory`` — against the scripted
model server on 127.0.0.1, with a chaos tool set plus your own tools, and checks the kernel's
guarantees after every step::

    from actors.testing import StressConfig, session_stress_machine

    TestMySession = session_stress_machine(StressConfig(session_factory=my_factory)).TestCase

The machine is :class:`SessionStressMachine`; ``session_stress_machine(config)`` returns a subclass
bound to ``config`` (subclass it in turn to add your own ``@invariant``). The parts live beside it:
``_config`` (configuration, counters, chaos tools), ``_faults`` (what a model reply can do and what
it must produce), ``_harness`` (the Trio thread and the instrumented session), ``_invariants`` (the
checks listed below).

**Sessions.** Each example draws the session's wire (``config.wires``), its transport
(``config.transports`` on the Responses wire: ``"http"``, ``"websocket"``, or ``"auto"`` =
WebSocket with HTTP as the fallback; the Chat wire is HTTP), its retry budget, buffer bound and
backoff seed; every generation (resume, restart) reopens it with the same settings, so an
``"auto"`` session starts on WebSocket again. With ``config.compaction`` (the default) it also
draws ``ModelSettings.compaction`` (``"off"``, ``"auto"``: remote via ``/responses/compact`` on
the Responses wire, local on Chat; or ``"local"``: a summary request) and sometimes a small
context window (``config.context_windows``) for the scripted server, which refuses a larger
request with ``context_length_exceeded``; the session knows that window (it compacts before a
request past 90 % of it, and after a refusal) or not (it compacts only after a refusal). The
``"refused"`` transport is ``"auto"`` against a server refusing every upgrade: HTTP from the
first request, the refusal asked once per session (its actor remembers it), and otherwise the
same budget, quiet first retry and fallback rules as ``"auto"``. With
``config.mcp`` every generation also gets a real MCP server process (the stdlib stub
:mod:`actors.testing._mcp_stub`, tagged per generation), whose tools the model calls: echo (ok,
error, slow, progress, hang, crash) and count; once a generation ended — closed, crashed or
cancelled — no process with its tag may be running.

**Rules.** Run a task whose model replies carry random faults (drops before the first event, at
random event offsets or after the terminal one, clean stops, WebSocket close frames and
connection limits, 429 with 0–50 ms delays, 5xx, stalls beyond the idle timeout, context-window
and usage-limit errors, malformed events, ``response.failed`` / ``error`` / ``incomplete``
terminals; sometimes rate-limit headers, or one event per write) and tool calls
that succeed, fail model-visibly (``RespondToModel``, an unexpected exception, bad arguments, an
unknown tool), fail fatally (``FatalToolError``) or hang; interrupt it at a random point (on a
text delta = mid-stream, on a tool start = mid-tool, on a retry notice = during the backoff sleep,
at once or after a few ms); crash the session mid-task — either a *hard* crash (the rollout file
as the OS had it at that instant, optionally torn after the last acknowledged write, is all that
survives) or an *abrupt cancel* of the session's scope — then ``resume`` from the rollout; restart
cleanly; attach and detach slow subscribers (stalled or trickling); queue a turn and interrupt it
before it starts; compact on demand between turns (``session.compact()``: the history is replaced,
or ``CompactionFailed`` leaves it unchanged, with one failed ``CompactionFinished``).

**Invariants** (checked after every step and after every task):

* every tool call in history has exactly one output, after it; history is well-formed;
* a compaction replaces the history (``replace()``): the acknowledged history restarts from the
  replacement, which is well-formed and keeps the latest task prompt; a compaction that failed
  left the history unchanged, and a turn failing with ``CompactionFailed`` had one fail;
* every prompt sent to the model is the history at that moment (so every retry re-sends it), and
  what the scripted server received is exactly that prompt, over the attempt's transport: the HTTP
  body as sent; for a WebSocket ``response.create`` its whole input (``full_input``: the chain the
  server remembered for ``previous_response_id``, then the frame's own input) and its other fields
  (the body without ``stream`` / ``background``); the transport the stream names
  (``TransportUsed``) is the attempt's, incremental exactly when the frame continued a response;
* each attempt owns the consecutive requests the server recorded for it, sent after it began:
  all but the last are the WebSocket transport's budget-free resends (a drop before any event on a
  reused connection, ``websocket_connection_limit_reached``, ``previous_response_not_found``:
  their fault did not end the attempt); an attempt owns none only if it was cancelled first or a
  stall the server left on its connection timed it out unread;
* ``actors.history.resume(rollout).items`` equals the in-memory history; after a crash,
  everything whose ``record()`` had returned since the last acknowledged compaction (starting
  with its replacement) is in the resumed history, in order, and dangling calls are repaired; a
  compaction being written at a hard crash leaves exactly the old history or exactly the new one;
  after an abrupt cancel nothing even needs repair;
* a local compaction's summary request (its last user message is
  :data:`kernel.compaction.COMPACTION_PROMPT`) and a ``/responses/compact`` request are no turn
  attempts (left out of the matching, counted apart); a request refused for the window that a
  compaction answered is retried once, outside the retry budget (a run of its own), never twice;
* attempts per logical request ≤ retry budget + 1 on each transport; a retryable failure is
  retried (after at least the delay the server named) until the budget is spent; non-retryable
  errors are not; under ``"auto"`` a request moves to HTTP only once it spent its budget on
  WebSocket (with exactly one ``FallbackWarning``, at most one per session, none otherwise; the
  first HTTP attempt goes at once), its retries restart at 0 there, and it gives up only on HTTP;
* one ``StreamRetry`` per announced retry, numbered per transport: the first retry on a
  transport with a fallback left is quiet unless the error asked for a delay
  (``TurnHost.should_notify_stream_retry``);
* each attempt's outcome is what the served reply must produce on its transport (a 429 is
  ``RateLimited``…): as on HTTP, except the differences listed in one table,
  :data:`actors.testing._faults.TRANSPORT_DIFFERENCES` (a clean stop is an idle timeout on
  WebSocket; rate-limit headers reach the stream on HTTP only; what a reply leaves on a WebSocket
  connection after its terminal event reaches that connection's next request…);
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
crashes survived, acknowledged items checked after crashes, sessions per transport, attempts and
requests per transport, incremental requests, budget-free resends, fallbacks, quiet retries,
compactions by ``mode:reason``, failed ones by cause, summary and ``/responses/compact`` requests,
window refusals and retries, request sizes, crashes during a compaction).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import attrs
import trio
import trio.testing
from hypothesis import settings as hypothesis_settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from kernel.testing import FastBackoff

from ..compaction import CompactionFailed, SessionCompactor
from ..model import ModelSettings
from ..scripted import CustomToolCall, FunctionCall, RefuseUpgrade, Reply, Script, open_scripted_server
from ..tools import ToolRegistry
from ._config import FATAL_RAISED, SessionSpec, StressConfig, chaos_registry
from ._faults import _DONE, MCP_SERVER, _ReplySpec, _Trigger, _triggers, task_plans
from ._harness import (
    _AckHistory,
    _all_tasks,
    _call_sync,
    _Crash,
    _Gen,
    _ListHandler,
    _quiet_resume,
    _RecordingClient,
    _Sub,
    _Task,
    _trickle,
    _TrioThread,
    _WatchingSink,
    live_processes,
)
from ._invariants import (
    _fail,
    _why,
    check_cancelled_turn,
    check_history,
    check_replay,
    check_replay_after_cancel,
    check_replay_after_hard_crash,
    check_rollout_events,
    check_session_tasks_ended,
    check_subscriber_bounds,
    check_subscriber_received,
    check_task,
    check_turn_events,
    check_turn_tasks_ended,
    scan_rollouts,
    scan_secrets,
)


def _per_config(strategy_of: Callable[[Any], Any]) -> Any:
    """The strategy ``strategy_of(machine)`` of the running machine (it depends on the machine's
    :class:`StressConfig`). ``st.runner()`` draws nothing, so the examples are the ones that
    strategy would generate if it were given directly."""
    return st.runner().flatmap(strategy_of)


_PLANS = _per_config(lambda machine: machine.plans)
"""One task's scripted replies, for the running machine's config (all task rules share it)."""


class SessionStressMachine(RuleBasedStateMachine):
    """The session stress machine (see the module docstring): its rules, invariants and lifecycle.

    It runs bound to a :class:`StressConfig`: :func:`session_stress_machine` returns a subclass
    setting :attr:`config` and what follows from it (:attr:`registry`, :attr:`plans`,
    :attr:`user_tool_names`). Subclass that one to add your own ``@invariant`` or ``@rule``
    (``self.gen`` is the current session generation, ``self.runner.call`` runs an async function
    in the machine's Trio thread).
    """

    config: ClassVar[StressConfig]
    """What the machine runs against."""
    registry: ClassVar[ToolRegistry]
    """The chaos tools plus ``config.tools``."""
    plans: ClassVar[Any]
    """The strategy of one task's scripted replies (:func:`task_plans` for ``config``)."""
    user_tool_names: ClassVar[frozenset[str]]
    """The names of ``config.tools`` (a fatal error from one of them is expected)."""
    test_settings: ClassVar[hypothesis_settings | None] = None
    """The settings of ``TestCase`` (examples, steps per example); a subclass gets them too."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.test_settings is not None:
            cls.TestCase.settings = cls.test_settings

    def __init__(self) -> None:
        if not hasattr(type(self), "config"):
            raise TypeError("SessionStressMachine runs bound to a StressConfig: use session_stress_machine(config)")
        super().__init__()
        self.stats = self.config.stats
        self.key = self.config.api_key
        self.runner = _TrioThread()
        self.dir = Path(tempfile.mkdtemp(prefix="stress-"))
        self.gen: _Gen | None = None
        self.gen_no = 0
        self.task_no = 0
        self.files: list[Path] = []
        self.crashed_turns: set[str] = set()
        self.outcomes: list[Any] = []
        self.wire = "responses"
        self.transport = "http"
        self.max_retries = 0
        self.max_buffer = 64
        self.seed = 0
        self.compaction = "off"
        self.window: int | None = None
        self.known_window: int | None = None
        self.log_records: list[logging.LogRecord] = []
        self._handler = _ListHandler(self.log_records)
        self._root_level = logging.getLogger().level
        logging.getLogger().addHandler(self._handler)
        logging.getLogger().setLevel(logging.DEBUG)
        self._warnings = warnings.catch_warnings(record=True)
        self.warned = self._warnings.__enter__()
        warnings.simplefilter("always")
        self._scanned_events = 0
        self.stats.examples += 1

    # ---- generations -------------------------------------------------------------------------

    @initialize(
        wire=_per_config(lambda machine: st.sampled_from(machine.config.wires)),
        transport=_per_config(lambda machine: st.sampled_from(machine.config.transports)),
        max_retries=_per_config(lambda machine: st.integers(*machine.config.max_retries)),
        max_buffer=st.sampled_from([1, 4, 16, 64, 1024]),
        seed=st.integers(0, 2**32 - 1),
        compaction=_per_config(
            lambda machine: st.sampled_from(["off", "auto", "auto", "local"] if machine.config.compaction else ["off"])
        ),
        window=_per_config(
            lambda machine: (
                st.none() | st.sampled_from(machine.config.context_windows) if machine.config.compaction else st.none()
            )
        ),
        window_known=st.booleans(),
    )
    def open_first(
        self,
        wire: str,
        transport: str,
        max_retries: int,
        max_buffer: int,
        seed: int,
        compaction: str,
        window: int | None,
        window_known: bool,
    ) -> None:
        self.wire, self.max_retries, self.max_buffer, self.seed = wire, max_retries, max_buffer, seed
        self.compaction = compaction
        self.window = window if compaction != "off" else None
        # the session knows the window (it compacts past 90 % of it, and after a refusal) or not
        # (it compacts only when the server refuses a request)
        self.known_window = self.window if window_known else None
        self.transport = transport if wire == "responses" else "http"  # Chat Completions: HTTP only
        self.runner.call(self._open, self.dir / "rollout-0.jsonl", False)

    async def _open(self, rollout: Path, resume_: bool) -> None:
        baseline = {id(t) for t in _all_tasks()}
        before = None
        if resume_:
            before = await trio.to_thread.run_sync(_quiet_resume, rollout)
        gen = _Gen(self.gen_no, rollout, resume_, transport=self.transport)
        self.stats.transports[f"{self.wire}:{self.transport}"] += 1
        self.stats.compaction_settings[
            f"{self.compaction}:{'window' if self.window else 'no-window'}{'' if self.known_window or not self.window else '-unknown'}"
        ] += 1
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
            self.stats.repaired_calls += len(before.added)
        gen.base = history
        gen.on_acked()
        after = await trio.to_thread.run_sync(_quiet_resume, rollout)
        if list(after.items) != history or after.added:
            _fail("after resume the rollout does not replay to the session's history")

    async def _hold(self, gen: _Gen, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run generation ``gen``: the scripted server and the session, instrumented, until closed."""
        cfg = self.config
        started = False
        FATAL_RAISED.set(gen.on_fatal_raised)
        try:
            with gen.scope:
                async with open_scripted_server(
                    Script(default=_DONE),
                    context_window=self.window,
                    websocket=RefuseUpgrade() if self.transport == "refused" else True,
                ) as server:
                    gen.server = server
                    gen.settings = ModelSettings(
                        base_url=server.base_url,
                        model="stress-model",
                        api_key=self.key,
                        wire=self.wire,  # type: ignore[arg-type]
                        idle_timeout=cfg.idle_timeout,
                        stream_max_retries=self.max_retries,
                        transport="auto" if self.transport == "refused" else self.transport,  # type: ignore[arg-type]
                        # "off": a window refusal fails the turn; otherwise the session compacts
                        # (before a request past 90 % of the window, after a refusal, on demand)
                        compaction=self.compaction,  # type: ignore[arg-type]
                        context_window=self.known_window,
                    )
                    spec = SessionSpec(
                        gen.settings,
                        self.registry,
                        gen.rollout,
                        gen.resume,
                        self.max_retries,
                        self.max_buffer,
                        self._mcp_servers(gen),
                    )
                    async with cfg.session_factory(spec) as session:
                        gen.session = session
                        host = session.host
                        host.rng = FastBackoff(cfg.backoff_scale, self.seed + gen.no)
                        host.model = _RecordingClient(host.model, gen)
                        host.history = _AckHistory(host.history, gen)
                        if isinstance(host.compactor, SessionCompactor):
                            host.compactor.history = host.history  # its replace() is acknowledged too
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

    def _mcp_servers(self, gen: _Gen) -> tuple[Any, ...]:
        """The MCP stub server of generation ``gen`` (none unless ``config.mcp``), its processes
        marked with a tag of their own so the machine can look for them once the session ended."""
        if not self.config.mcp:
            return ()
        from ..tools.mcp import McpServer
        from ._mcp_stub import stub_command

        gen.mcp_tag = f"stress-mcp-{os.getpid()}-{self.dir.name}-g{gen.no}"
        command = stub_command(gen.mcp_tag)
        return (McpServer.stdio(MCP_SERVER, command[0], command[1:], tool_timeout=self.config.mcp_tool_timeout),)

    def _check_mcp_processes(self, gen: _Gen) -> None:
        """No MCP server process of the ended generation ``gen`` is left running."""
        if gen.mcp_tag is None:
            return
        left = live_processes(gen.mcp_tag)
        if left:
            _fail(f"MCP server processes {left} outlived their session (generation {gen.no})")
        if left is not None:
            self.stats.mcp_sessions_checked += 1

    async def _close(self, how: str) -> None:
        """Close the generation: ``"clean"`` (leave the block) or ``"cancel"`` (abruptly)."""
        gen = self.gen
        assert gen is not None
        await self._check_subscribers()
        if how == "clean":
            gen.close_requested.set()
        else:
            gen.scope.cancel()
        with trio.fail_after(self.config.task_timeout):
            await gen.closed.wait()
        self._check_mcp_processes(gen)
        if gen.transport == "refused" and gen.server is not None and gen.server.upgrades_refused > 1:
            # the session's actor remembers the refusal: every later request goes straight to HTTP
            _fail(f"the server refused {gen.server.upgrades_refused} WebSocket upgrades of one session")
        await self._check_subscribers(detach=True)
        if gen.error is not None:
            raise AssertionError(f"the session raised on close: {gen.error!r}") from gen.error
        await trio.testing.wait_all_tasks_blocked(0.001)
        check_session_tasks_ended(gen.baseline)

    # ---- rules -------------------------------------------------------------------------------

    @rule(plan=_PLANS)
    def run_task(self, plan: list[_ReplySpec]) -> None:
        self.stats.steps += 1
        self.runner.call(self._run_task, plan, None, None)

    @rule(plan=_PLANS, trigger=_triggers)
    def interrupt_task(self, plan: list[_ReplySpec], trigger: _Trigger) -> None:
        """Interrupt mid-stream (text), mid-tool (tool started), during the backoff sleep
        (retry notice)… at once or a few ms later."""
        self.stats.steps += 1
        self.runner.call(self._run_task, plan, trigger, None)

    @rule(
        plan=_PLANS,
        trigger=_triggers,
        kind=st.sampled_from(["snapshot", "snapshot", "cancel"]),
        cut=st.floats(0, 1),
    )
    def crash_during_task(self, plan: list[_ReplySpec], trigger: _Trigger, kind: str, cut: float) -> None:
        self.stats.steps += 1
        self.runner.call(self._run_task, plan, trigger, kind)
        self.runner.call(self._after_crash, cut)

    @rule()
    def restart(self) -> None:
        self.stats.steps += 1
        self.stats.restarts += 1
        gen = self.gen
        assert gen is not None
        self.runner.call(self._close, "clean")
        self.runner.call(self._open, gen.rollout, True)

    @rule(mode=st.sampled_from(["stalled", "trickle"]), max_buffer=st.sampled_from([1, 2, 8, 32]))
    def attach_subscriber(self, mode: str, max_buffer: int) -> None:
        self.stats.steps += 1
        self.stats.subscribers[mode] += 1
        self.runner.call(self._attach, mode, max_buffer)

    @precondition(lambda self: self.gen is not None and bool(self.gen.subs))
    @rule(data=st.data())
    def detach_subscriber(self, data: Any) -> None:
        self.stats.steps += 1
        assert self.gen is not None
        index = data.draw(st.integers(0, len(self.gen.subs) - 1))
        self.runner.call(self._detach, index)

    @rule(plan=_PLANS)
    def queue_and_interrupt_a_waiting_turn(self, plan: list[_ReplySpec]) -> None:
        self.stats.steps += 1
        self.runner.call(self._run_task, plan, None, None, True)

    @precondition(lambda self: self.compaction != "off")
    @rule()
    def compact_between_turns(self) -> None:
        """``session.compact()`` between turns: the history is replaced (and acknowledged from
        there on), or ``CompactionFailed`` leaves it unchanged."""
        self.stats.steps += 1
        self.runner.call(self._compact)

    async def _compact(self) -> None:
        gen = self.gen
        assert gen is not None and gen.session is not None
        session = gen.session
        before = await session.history()
        n, n_attempts = len(gen.compactions), len(gen.attempts)
        assert gen.server is not None
        n_requests = len(gen.server.requests)
        try:
            with trio.fail_after(self.config.task_timeout):
                replaced = await session.compact()
        except CompactionFailed as exc:
            self._count_manual(gen, n_attempts, n_requests)
            after = await session.history()
            if after != before:
                _fail(f"session.compact() failed ({exc}) but changed the history")
            finished = [c for c in gen.compactions[n:] if c.finish_seq is not None]
            if len(finished) != 1 or finished[0].error is None:
                _fail(f"session.compact() failed ({exc}) without one failed CompactionFinished")
            self.stats.compaction_failures[f"manual:{_why(str(exc))}"] += 1
            return
        self._count_manual(gen, n_attempts, n_requests)
        after = await session.history()
        done = [c for c in gen.compactions[n:] if c.finish_seq is not None]
        if not replaced or len(done) != 1 or done[0].error is not None:
            _fail(f"session.compact() returned {replaced!r} after {done!r}")
        if after != gen.base + gen.acked or gen.base:
            _fail("after session.compact() the history is not the acknowledged replacement")
        self.stats.compactions[f"{done[0].mode}:manual"] += 1

    def _count_manual(self, gen: _Gen, n_attempts: int, n_requests: int) -> None:
        """Count an on-demand compaction's requests; it made no turn attempt."""
        assert gen.server is not None
        attempts = gen.attempts[n_attempts:]
        if any(not a.summary or a.outcome == "open" for a in attempts):
            _fail(f"session.compact() made requests other than one summary, or left one open: {attempts!r}")
        self.stats.summary_requests += len(attempts)
        self.stats.compact_requests += sum(1 for r in gen.server.requests[n_requests:] if r.endpoint == "compact")

    @rule()
    def interrupt_while_idle(self) -> None:
        self.stats.steps += 1
        assert self.gen is not None and self.gen.session is not None
        self.runner.call(_call_sync, self.gen.session.interrupt)

    # ---- tasks -------------------------------------------------------------------------------

    def _materialize(self, gen: _Gen, tid: str, plan: list[_ReplySpec]) -> tuple[list[Reply], list[_ReplySpec]]:
        """The plan's replies with real call ids (``<tid>r<reply>c<call>``)."""
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
        """Script the server to serve ``replies`` next; returns the index of the first."""
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
        """Run one task on ``plan``: interrupt or crash it when ``trigger`` fires; with
        ``queue_second``, queue a second turn and interrupt it before it starts. Then check both."""
        gen = self.gen
        assert gen is not None and gen.session is not None
        session = gen.session
        stats = self.stats
        task_timeout = self.config.task_timeout
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
                if call.mode == "mcp_crash":
                    gen.mcp_crashed = True  # from here on, a call may find the server restarting
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
        with trio.move_on_after(task_timeout) as watchdog:
            await task.handle.result()
            if second is not None:
                await second.handle.result()  # type: ignore[union-attr]
        if watchdog.cancelled_caught:
            _fail(f"task {tid} did not end within {task_timeout}s (a hang): events {gen.events[-20:]!r}")
        if crash is not None and gen.crash is None:
            self._crash(task, crash)  # the trigger never fired: crash right after the turn
        gen.triggers = []
        if gen.crash is not None:
            return
        await trio.testing.wait_all_tasks_blocked(0.001)
        self._check_task(gen, task)
        if second is not None:
            self._check_task(gen, second)
        await check_turn_tasks_ended()

    def _interrupt(self, task: _Task, why: str) -> None:
        gen = self.gen
        assert gen is not None
        if task.handle is None or task.handle.done or task.final_seq is not None or task.started_seq is None:
            self.stats.interrupts["too_late:" + why] += 1
            return
        task.interrupt_seq = gen.next_seq()
        task.interrupt_kind = why
        self.stats.interrupts[why] += 1
        task.handle.interrupt()

    def _crash(self, task: _Task, kind: str) -> None:
        """Crash now: ``"snapshot"`` keeps the rollout's bytes as they are (a hard crash),
        ``"cancel"`` cancels the session's scope."""
        gen = self.gen
        assert gen is not None
        if gen.crash is not None:
            return
        data = gen.rollout.read_bytes() if kind == "snapshot" else None
        in_turn = task.started_seq is not None and not task.final_acked
        gen.crash = _Crash(
            kind,
            data,
            list(gen.file_items),
            gen.acked_size,
            task if in_turn else None,
            task.final_seq is not None,
            gen.next_seq(),
            list(gen.replacing) if gen.replacing is not None else None,
        )
        if in_turn:
            task.crashed = True
        self.stats.crashes[kind + (":mid-turn" if in_turn else ":idle")] += 1
        gen.scope.cancel()

    async def _after_crash(self, cut: float) -> None:
        """Close the crashed generation, check what survived and resume from it."""
        gen = self.gen
        assert gen is not None and gen.crash is not None
        crash = gen.crash
        await self._close("cancel")
        if crash.kind == "cancel":
            # an abrupt cancel is still structured: cleanup recorded aborted outputs and the
            # final event; the file replays to exactly what the session had acknowledged
            check_cancelled_turn(gen, crash)
            resumed = await trio.to_thread.run_sync(_quiet_resume, gen.rollout)
            check_replay_after_cancel(gen, resumed)
            self.stats.acked_items_checked_after_crash += len(gen.acked)
            await self._open(gen.rollout, True)
            return
        # a hard crash: only the bytes the OS had survive, possibly torn after the last ack
        assert crash.data is not None
        data = crash.data
        size = (
            crash.acked_size + int((len(data) - crash.acked_size) * cut) if len(data) > crash.acked_size else len(data)
        )
        torn = data[:size]
        path = self.dir / f"rollout-{self.gen_no}.jsonl"
        path.write_bytes(torn)
        resumed = await trio.to_thread.run_sync(_quiet_resume, path)
        if resumed.torn_line is not None:
            self.stats.torn_rollouts += 1
        check_replay_after_hard_crash(crash, resumed, self.stats)
        self.stats.acked_items_checked_after_crash += len(crash.file_items)
        if crash.task is not None:
            self.crashed_turns.add(crash.task.tid)
        await self._open(path, True)

    def _check_task(self, gen: _Gen, task: _Task) -> None:
        assert task.handle is not None
        outcome = task.handle.outcome
        assert outcome is not None
        self.outcomes.append(outcome)
        check_task(
            gen,
            task,
            wire=self.wire,
            max_retries=self.max_retries,
            idle=self.config.idle_timeout,
            user_tool_names=self.user_tool_names,
            stats=self.stats,
        )

    # ---- subscribers -------------------------------------------------------------------------

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
        """Close the subscriber and check it received everything since it attached."""
        if entry.scope is not None:
            entry.scope.cancel()
        try:
            rest = entry.sub.take_nowait()
        except trio.ClosedResourceError:
            rest = []
        entry.sub.close()
        check_subscriber_received(entry, entry.received + rest, gen.events[entry.attach_index :])

    async def _check_subscribers(self, detach: bool = False) -> None:
        gen = self.gen
        if gen is None:
            return
        check_subscriber_bounds(gen)
        if detach:
            for entry in gen.subs:
                self._verify_sub(gen, entry)
            gen.subs = []

    # ---- invariants --------------------------------------------------------------------------

    @invariant()
    def session_invariants(self) -> None:
        if self.gen is None:
            return
        self.runner.call(self._invariants)

    async def _invariants(self) -> None:
        gen = self.gen
        assert gen is not None and gen.session is not None
        history = await gen.session.history()
        if gen.violations:
            _fail(gen.violations[0])
        check_history(gen, history)
        resumed = await trio.to_thread.run_sync(_quiet_resume, gen.rollout)
        check_replay(resumed, history)
        check_turn_events(gen.events)
        check_rollout_events(resumed.events, self.crashed_turns)
        await self._check_subscribers()
        scan_secrets(self.key, gen, gen.events[self._scanned_events :], self.outcomes, self.log_records, self.warned)
        self._scanned_events = len(gen.events)
        assert gen.server is not None and gen.server.host == "127.0.0.1"

    def teardown(self) -> None:
        try:
            if self.gen is not None and not self.gen.closed.is_set():
                self.runner.call(self._close, "clean")
                self.gen = None
            scan_rollouts(self.key, self.files)
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


def session_stress_machine(config: StressConfig | None = None) -> type[SessionStressMachine]:
    """A ``RuleBasedStateMachine`` class stress-testing sessions made by
    ``config.session_factory`` (see the module docstring): a subclass of
    :class:`SessionStressMachine` bound to ``config``. Use its ``TestCase`` attribute as a
    pytest / unittest test class."""
    cfg = config or StressConfig()

    class SessionStress(SessionStressMachine):
        config = cfg
        registry = chaos_registry(cfg.tools)
        plans = task_plans(key=cfg.api_key, idle=cfg.idle_timeout, user_calls=cfg.tool_calls, mcp=cfg.mcp)
        user_tool_names = frozenset(cfg.tools.names()) if cfg.tools is not None else frozenset()
        test_settings = _test_settings(cfg)

    return SessionStress


def _test_settings(cfg: StressConfig) -> hypothesis_settings:
    """The active Hypothesis profile with ``cfg``'s examples (default: 30 % of the profile's) and
    steps per example, and no deadline."""
    active = hypothesis_settings.default
    assert active is not None
    default_examples = max(1, active.max_examples * 30 // 100)
    return hypothesis_settings(
        active,
        max_examples=cfg.max_examples or default_examples,
        stateful_step_count=cfg.step_count,
        deadline=None,
    )
