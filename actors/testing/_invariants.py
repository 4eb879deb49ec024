"""The checks the stress machine makes (see the *Invariants* list in :mod:`actors.testing._machine`).

Every failed check goes through :func:`_fail`, which keeps its message in :data:`FAILURES`.
:func:`check_task` judges one finished task (interrupt, retries, outcome, what the server received,
hanging tools); the ``check_*`` functions after it judge the session between steps (history,
events, rollout, subscribers), its recovery after a crash, and :func:`scan_secrets` looks for the
API key everywhere the kernel writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from kernel import (
    CustomToolCall as KCustomToolCall,
    Event,
    FallbackWarning,
    FunctionCall as KFunctionCall,
    FunctionCallOutput,
    KernelError,
    ReasoningDelta,
    ResponseItem,
    StreamRetry,
    ToolCallFinished,
    ToolCallStarted,
    ToolProgress,
    TurnStarted,
    event_to_dict,
)
from kernel.testing import well_formed_violations

from ..history import ABORTED_OUTPUT_TEXT
from ..scripted import RecordedRequest, Reply
from ._config import STRESS_API_KEY, StressStats
from ._faults import _DONE, _REFUSED, MCP_SERVER, _Expect, _expect, _fault_of
from ._harness import (
    _FINALS,
    _PER_TURN_TASKS,
    _all_tasks,
    _Attempt,
    _Compaction,
    _Crash,
    _format,
    _Gen,
    _Sub,
    _Task,
    _task_of,
    is_summary_request,
)

_RETRYABLE = frozenset({"StreamError", "ServerError", "RateLimited"})

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


# =============================================================================================
# One finished task
# =============================================================================================


def check_task(
    gen: _Gen,
    task: _Task,
    *,
    wire: str,
    max_retries: int,
    idle: float,
    user_tool_names: frozenset[str],
    stats: StressStats,
) -> None:
    """Everything a finished ``task`` must satisfy, given the retry budget, wire and transport
    (``gen.transport``) it ran with (counts its outcome and attempts in ``stats``)."""
    assert task.handle is not None
    outcome = task.handle.outcome
    assert outcome is not None
    label = outcome.status if outcome.error is None else f"failed:{type(outcome.error).__name__}"
    stats.outcomes[label] += 1
    attempts = [a for a in gen.attempts if a.turn_id == task.tid and not a.summary]
    stats.summary_requests += sum(1 for a in gen.attempts if a.turn_id == task.tid and a.summary)
    compactions = [c for c in gen.compactions if c.tid == task.tid]
    for c in compactions:
        if c.finish_seq is None:
            continue
        if c.error is None:
            stats.compactions[f"{c.mode}:{c.reason}"] += 1
        else:
            stats.compaction_failures[f"{c.reason}:{_why(c.error)}"] += 1
    stats.attempts += len(attempts)
    for a in attempts:
        stats.attempts_by_transport[a.transport] += 1
    if task.queued_interrupt:
        if outcome.status != "aborted" or attempts:
            _fail(f"a turn interrupted while queued ended {outcome.status} after {len(attempts)} requests")
        return
    interrupted = task.interrupt_seq is not None
    if interrupted:
        _check_interrupted(task, outcome, attempts)
    elif outcome.status == "aborted":
        tail = [e for e in gen.events if getattr(e, "turn_id", None) == task.tid][-12:]
        _fail(f"{task.tid}: aborted without an interrupt (gen error {gen.error!r}); its last events: {tail!r}")
    runs = _retry_runs(attempts, compactions)
    stats.window_retries += _check_window_retries(task, runs, compactions)
    order = _TRANSPORT_ORDER[gen.transport]
    _check_retry_budget(task, outcome, runs, max_retries, interrupted, order)
    _check_fallback(gen, task, runs, max_retries, interrupted, order, stats)
    _check_retry_notices(gen, task, runs, max_retries, interrupted, order, stats)
    _check_retry_delays(task, runs)
    _check_outcome(gen, task, outcome, attempts, user_tool_names)
    _check_prompts(task, attempts)
    _check_served(gen, task, outcome, attempts, wire, idle, interrupted, stats)
    _check_hangs(gen, task)
    _check_mcp_calls(gen, task, stats)


_TRANSPORT_ORDER: dict[str, tuple[str, ...]] = {
    "http": ("http",),
    "websocket": ("websocket",),
    "auto": ("websocket", "http"),
    "refused": ("http", "http"),
}
"""The transports a session's requests go over, by ``ModelSettings.transport``, in the order it
moves through them (``"auto"``: WebSocket, then HTTP for good once a request spent its WebSocket
retry budget). The Chat wire is always ``"http"``."""


def _check_interrupted(task: _Task, outcome: Any, attempts: list[_Attempt]) -> None:
    """An interrupt stops the turn: it ends aborted and sends nothing more to the model."""
    interrupt_seq = task.interrupt_seq
    assert interrupt_seq is not None
    late = [a for a in attempts if a.begin_seq > interrupt_seq]
    if late:
        _fail(f"{task.tid}: {len(late)} model requests began after the interrupt")
    if outcome.status != "aborted":
        # only when the outcome was decided before the interrupt landed
        # (e.g. it landed in the cancel-shielded schedule point of the request's
        # nursery exit, after the last response completed and its stream closed:
        # nothing was left to stop)
        decided = _decided_seq(task, outcome, attempts)
        if decided is None or decided > interrupt_seq:
            _fail(f"{task.tid}: interrupted ({task.interrupt_kind}) but ended {outcome.status} ({outcome.error!r})")


def _decided_seq(task: _Task, outcome: Any, attempts: list[_Attempt]) -> int | None:
    """When a non-aborted ``outcome`` became final: a fatal tool call ending, the end of the
    attempt whose error the turn failed with, or the end of the last (completed) attempt;
    ``None`` if nothing recorded decides it.

    A fatal call ends when the tool raises, in the ToolActor's task (``fatal_raised_seq``,
    recorded for the chaos tools). Its ``ToolCallFinished`` (``fatal_seq``, the only mark for
    other tools) comes one scheduler hop later, once the turn's waiting task has been
    rescheduled with the error. An interrupt landing in that hop finds the caller already
    rescheduled, not parked, so there is nothing left to abort, and the turn rightly fails
    (Trio may run the tool's task and the interrupting task in either order within one tick). If
    the interrupt lands first, the tool is cancelled at its checkpoint and the turn ends aborted.

    A cancel that lands after the deciding point leaves nothing to stop. The request only drains
    the calls already started (the nursery's exit does not raise Cancelled) and records their
    outputs under a shield. Then the error propagates (or the turn returns). A host hook on the
    way (``handle_context_window_exceeded``…) that checkpoints may still make the turn
    ``aborted``, and ``aborted`` is accepted anyway."""
    err = outcome.error
    if err is not None and type(err).__name__ == "FatalError":
        marks = [s for s in (task.fatal_raised_seq, task.fatal_seq) if s is not None]
        return min(marks) if marks else None
    if err is not None and type(err).__name__ == "CompactionFailed":
        # decided when the compaction's own request failed (or, failing without one, when its
        # failure was published)
        return task.compaction_failed_seq
    if err is not None:
        return next((a.end_seq for a in attempts if a.error is err), None)
    if attempts and attempts[-1].outcome == "completed":
        return attempts[-1].end_seq
    return None


def _retry_runs(attempts: list[_Attempt], compactions: Sequence[_Compaction] = ()) -> list[list[_Attempt]]:
    """The attempts in runs (one logical request each, with its own retry budget), each ending at
    a completed attempt, at a window refusal that a compaction answered (the request is then
    retried once, outside the budget: a run of its own), or at the turn's end."""
    runs: list[list[_Attempt]] = [[]]
    for k, a in enumerate(attempts):
        runs[-1].append(a)
        if a.outcome == "completed" or _window_compacted(a, attempts[k + 1 : k + 2], compactions):
            runs.append([])
    if not runs[-1]:
        runs.pop()
    return runs


def _window_compacted(a: _Attempt, following: list[_Attempt], compactions: Sequence[_Compaction]) -> bool:
    """Whether attempt ``a`` was refused for the window and a compaction for that reason replaced
    the history before the next attempt."""
    if a.outcome != "ContextWindowExceeded" or a.end_seq is None:
        return False
    until = following[0].begin_seq if following else None
    return any(
        c.reason == "window"
        and c.error is None
        and c.start_seq > a.end_seq
        and c.finish_seq is not None
        and (until is None or c.finish_seq < until)
        for c in compactions
    )


def _check_window_retries(task: _Task, runs: list[list[_Attempt]], compactions: Sequence[_Compaction]) -> int:
    """A window refusal is answered by one compaction and one retry of the request: never two in
    a row for one request. Returns the retries."""
    retries = 0
    retried = False
    for n, run in enumerate(runs):
        window = _window_compacted(run[-1], runs[n + 1][:1] if n + 1 < len(runs) else [], compactions)
        if window and retried:
            _fail(f"{task.tid}: a request refused for the window was compacted and retried twice")
        retries += window
        retried = window
    failed = [c for c in compactions if c.reason == "window" and c.finish_seq is not None]
    if len(failed) > retries + sum(1 for c in failed if c.error is not None):
        _fail(f"{task.tid}: {len(failed)} window compactions for {retries} retries")
    return retries


def _segments(run: list[_Attempt]) -> list[list[_Attempt]]:
    """A run's attempts per leg of the transport order, in order (two segments when it fell back
    to HTTP; a leg, not a transport name: under ``"refused"`` both legs go over HTTP)."""
    segments: list[list[_Attempt]] = []
    for a in run:
        if not segments or (segments[-1][-1].leg, segments[-1][-1].transport) != (a.leg, a.transport):
            segments.append([])
        segments[-1].append(a)
    return segments


def _check_retry_budget(
    task: _Task,
    outcome: Any,
    runs: list[list[_Attempt]],
    max_retries: int,
    interrupted: bool,
    order: tuple[str, ...],
) -> None:
    """Attempts per request ≤ budget + 1 on each transport; only retryable failures are retried,
    until the budget is spent; a request moves to the fallback transport only once it spent its
    budget on the first, and gives up only on the last."""
    fatal = outcome.error is not None and type(outcome.error).__name__ == "FatalError"
    seen: list[int] = []
    for n, run in enumerate(runs):
        for a in run[:-1]:
            if a.outcome not in _RETRYABLE:
                _fail(f"{task.tid}: retried after a {a.outcome} (not retryable)")
        segments = _segments(run)
        for k, segment in enumerate(segments):
            transport, leg = segment[0].transport, segment[0].leg
            if leg >= len(order) or transport != order[leg] or (seen and leg < seen[-1]):
                _fail(f"{task.tid}: a request went over {transport} (leg {leg}) after legs {seen} (transports {order})")
            seen.append(leg)
            if len(segment) > max_retries + 1:
                _fail(f"{task.tid}: {len(segment)} attempts on {transport} for one request, budget {max_retries}")
            if k < len(segments) - 1 and len(segment) != max_retries + 1:
                _fail(
                    f"{task.tid}: switched from {transport} after {len(segment)} attempts, budget {max_retries} "
                    "(a session falls back only once the budget is spent)"
                )
        last, segment = run[-1], segments[-1]
        if last.outcome in _RETRYABLE and n == len(runs) - 1 and not interrupted and not fatal:
            if outcome.status != "failed" or len(segment) != max_retries + 1:
                _fail(
                    f"{task.tid}: gave up after {len(segment)} retryable failures on {last.transport} "
                    f"(budget {max_retries}), outcome {outcome!r}"
                )
            if last.leg != len(order) - 1:
                _fail(f"{task.tid}: gave up on {last.transport} with a fallback left ({order})")


def _check_fallback(
    gen: _Gen,
    task: _Task,
    runs: list[list[_Attempt]],
    max_retries: int,
    interrupted: bool,
    order: tuple[str, ...],
    stats: StressStats,
) -> None:
    """One ``FallbackWarning`` when a request of the task moved to HTTP, none otherwise (one more
    if the interrupt landed right after it, before the first HTTP attempt); at most one per
    session, and only with a fallback to move to."""
    warnings_ = [e for e, _ in _with_seq(gen, task) if isinstance(e, FallbackWarning)]
    stats.fallbacks += len(warnings_)
    switches = sum(len(_segments(run)) - 1 for run in runs)
    expected = {switches}
    if interrupted and runs:
        tail = _segments(runs[-1])[-1]
        if tail[0].leg < len(order) - 1 and len(tail) == max_retries + 1 and all(a.outcome in _RETRYABLE for a in tail):
            expected.add(switches + 1)  # interrupted after the warning, before the HTTP attempt
    if len(warnings_) not in expected:
        _fail(f"{task.tid}: {len(warnings_)} fallback warnings for {switches} switches to HTTP ({gen.transport})")
    if warnings_ and len(order) < 2:
        _fail(f"{task.tid}: a fallback warning with transport={gen.transport!r}")
    if gen.fallbacks > 1:
        _fail(f"{task.tid}: {gen.fallbacks} fallback warnings in one session (it falls back once, for good)")
    for w in warnings_:
        if not w.message.startswith("Falling back from WebSockets to HTTPS transport. "):
            _fail(f"{task.tid}: bad fallback warning {w!r}")


def _notified(retry: int, error: KernelError | None, has_fallback: bool) -> bool:
    """Whether retry number ``retry`` after ``error`` is announced (``TurnHost.should_notify_stream_retry``):
    the first retry is quiet while a fallback transport is left, unless the server asked for a
    delay."""
    retry_after = error.retry_after if error is not None else None
    return retry > 1 or not has_fallback or (retry_after or 0.0) > 0


def _check_retry_notices(
    gen: _Gen,
    task: _Task,
    runs: list[list[_Attempt]],
    max_retries: int,
    interrupted: bool,
    order: tuple[str, ...],
    stats: StressStats,
) -> None:
    """One ``StreamRetry`` per announced retry, numbered per transport (the budget restarts after
    a fallback), in order: retry ``r`` on a transport follows its ``r``-th failed attempt, and the
    first one is quiet while a fallback is left (unless the error asked for a delay). One more if
    interrupted in the backoff after it."""
    notices = [e for e, _ in _with_seq(gen, task) if isinstance(e, StreamRetry)]
    expected: list[int] = []
    extra: list[int] = []
    for run in runs:
        for segment in _segments(run):
            has_fallback = segment[0].leg < len(order) - 1
            for r in range(1, len(segment)):
                if _notified(r, segment[r - 1].error, has_fallback):
                    expected.append(r)
                else:
                    stats.quiet_retries += 1
    if interrupted and runs:
        tail = _segments(runs[-1])[-1]
        m, last = len(tail), tail[-1]
        if last.outcome in _RETRYABLE and m <= max_retries and _notified(m, last.error, tail[0].leg < len(order) - 1):
            extra = [m]
    got = [e.retries for e in notices]
    if got != expected and not (interrupted and got == expected + extra):
        _fail(f"{task.tid}: retry notices {got}, expected {expected} (+{extra} if interrupted in the backoff)")
    for e in notices:
        if not (1 <= e.retries <= max_retries) or e.message != f"Reconnecting... {e.retries}/{max_retries}":
            _fail(f"{task.tid}: bad retry notice {e!r}")


def _check_retry_delays(task: _Task, runs: list[list[_Attempt]]) -> None:
    """A retry waits at least what the failure asked for. The first attempt on the fallback
    transport is not a retry: the sampling loop switches at once (as the seed does), whatever the
    last WebSocket error asked for."""
    flat = [a for run in runs for a in run]
    for a, b in zip(flat, flat[1:]):
        if (a.leg, a.transport) != (b.leg, b.transport):
            continue
        if a.outcome in _RETRYABLE and a.error is not None and a.error.retry_after is not None:
            assert a.ended is not None
            if b.started + 0.002 < a.ended + a.error.retry_after:
                _fail(
                    f"{task.tid}: retried {b.started - a.ended:.4f}s after an error asking for {a.error.retry_after}s"
                )


def _check_outcome(
    gen: _Gen, task: _Task, outcome: Any, attempts: list[_Attempt], user_tool_names: frozenset[str]
) -> None:
    """The outcome follows from the last attempt (or a fatal tool call)."""
    if outcome.status == "completed":
        if not attempts or attempts[-1].outcome != "completed":
            _fail(f"{task.tid}: completed but its last attempt ended {attempts[-1].outcome if attempts else None}")
    elif outcome.status == "failed":
        err = outcome.error
        assert err is not None
        if type(err).__name__ == "FatalError":
            fatal_calls = [
                i
                for i in gen.all_acked
                if isinstance(i, KFunctionCall)
                and i.call_id.startswith(task.tid)
                and ('"mode": "fatal"' in i.arguments or i.name in user_tool_names)
            ]
            if not fatal_calls:
                _fail(f"{task.tid}: FatalError {err} without a fatal tool call")
        elif type(err).__name__ == "CompactionFailed":
            failed = [c for c in gen.compactions if c.tid == task.tid and c.error is not None]
            if not failed or failed[-1].error != str(err):
                _fail(f"{task.tid}: failed with {err!r} but no compaction of the turn failed so")
        elif not attempts or attempts[-1].error is not err:
            _fail(f"{task.tid}: failed with {err!r}, not the last attempt's error")
        if type(err).__name__ == "ContextWindowExceeded" and (
            not gen.session.context_full  # type: ignore[union-attr]
            or not gen.counts["ContextWindowFull"]
        ):
            _fail(f"{task.tid}: context window exceeded but the host was not told")


def _check_prompts(task: _Task, attempts: list[_Attempt]) -> None:
    """Every prompt is the history at that moment (so every retry re-sends it)."""
    for a in attempts:
        if list(a.prompt.input) != a.expected:
            _fail(f"{task.tid}: a prompt is not the history at that moment (retries must re-send history)")


# ---------------------------------------------------------------------------------------------
# What the server received
# ---------------------------------------------------------------------------------------------

_NOT_SENT_OVER_WEBSOCKET = frozenset({"stream", "background"})
_FRAME_ONLY = frozenset({"type", "previous_response_id"})


def _refused(request: RecordedRequest) -> bool:
    """A WebSocket request continuing a response the server did not remember: answered
    ``previous_response_not_found`` before its input was read (no ``full_input``, no reply)."""
    body = request.body
    return (
        request.transport == "websocket"
        and isinstance(body, dict)
        and "previous_response_id" in body
        and request.full_input is None
    )


def _received(request: RecordedRequest) -> Any:
    """The request the server received, as the attempt's body to compare with: an HTTP body as
    is; a WebSocket frame without ``type`` / ``previous_response_id``, with its whole input (the
    server's remembered chain, whose output items keep the ids the client never sends back with
    ``store: false``, then the frame's own input)."""
    body = request.body
    if request.transport != "websocket" or not isinstance(body, dict) or request.full_input is None:
        return body
    own = body.get("input")
    full = request.full_input
    n_chain = len(full) - (len(own) if isinstance(own, list) else 1)
    chain = [
        {k: v for k, v in item.items() if k != "id"} if isinstance(item, dict) else item for item in full[:n_chain]
    ]
    out = {k: v for k, v in body.items() if k not in _FRAME_ONLY}
    out["input"] = chain + full[n_chain:]
    return out


def _sent(attempt: _Attempt, transport: str) -> Any:
    """What ``attempt`` sent, as the server must have received it over ``transport``."""
    if transport != "websocket":
        return attempt.body
    return {k: v for k, v in attempt.body.items() if k not in _NOT_SENT_OVER_WEBSOCKET}


def _same_request(request: RecordedRequest, attempt: _Attempt) -> bool:
    """Whether ``request`` is what ``attempt`` sent (a refused continuation: its fields and, as its
    input, the end of the attempt's input)."""
    sent = _sent(attempt, request.transport)
    if not _refused(request):
        return bool(_received(request) == sent)
    frame = {k: v for k, v in request.body.items() if k not in _FRAME_ONLY}
    own, full = frame.pop("input", None), sent.get("input")
    rest = {k: v for k, v in sent.items() if k != "input"}
    return frame == rest and isinstance(own, list) and isinstance(full, list) and full[len(full) - len(own) :] == own


def _reply_of(gen: _Gen, request: RecordedRequest) -> Reply:
    ri = request.reply_index
    return gen.installed[ri] if ri is not None and ri < len(gen.installed) else _DONE


def _previous_on_websocket(gen: _Gen, index: int, wire: str, idle: float) -> _Expect | None:
    """What the reply to the server's request ``index - 1``, if it went over WebSocket and
    completed, leaves on its connection for the next request there (``carry`` / ``forgets`` in
    :data:`~._faults.TRANSPORT_DIFFERENCES`)."""
    server = gen.server
    assert server is not None
    if index <= 0 or index > len(server.requests):
        return None
    index -= 1
    while index > 0 and server.requests[index].endpoint == "compact":
        index -= 1  # a remote compaction goes over HTTP: the WebSocket connection stays as it was
    previous = server.requests[index]
    if previous.transport != "websocket" or _refused(previous) or previous.window_refused:
        return None
    expect = _expect(_reply_of(gen, previous), wire, idle, "websocket")
    if "completed" not in expect.outcomes:
        return None  # a response that did not complete drops its connection
    return expect


def _carried(gen: _Gen, index: int, wire: str, idle: float) -> _Expect | None:
    expect = _previous_on_websocket(gen, index, wire, idle)
    return expect if expect is not None and expect.carry else None


@attrs.frozen
class _Served:
    """One request the server received for a task, and what the checks need of it."""

    index: int
    request: RecordedRequest
    reply: Reply
    expect: _Expect
    carry: frozenset[str]
    fault: str


def _why(error: str) -> str:
    """A failed compaction's cause, for the stats."""
    if "could not shrink" in error:
        return "no-shrink"
    if "empty summary" in error:
        return "empty-summary"
    return "request-failed"


def _bucket(tokens: int) -> str:
    """A request size bucket for the stats (``<250``, ``<500``, ``<1000``, ``<2000``, ``<4000``, ``>=4000``)."""
    for bound in (250, 500, 1000, 2000, 4000):
        if tokens < bound:
            return f"<{bound}"
    return ">=4000"


_WINDOW_REFUSED = _Expect(frozenset({"ContextWindowExceeded"}), None, False, frozenset(), False, False, False)
"""A request the server refused for its context window (it consumed no reply)."""


def _tasks_of(requests: Sequence[RecordedRequest]) -> list[str | None]:
    """The task of each request; a refused continuation belongs to the request resending it (the
    next one), its own input may name no task."""
    tids: list[str | None] = [None] * len(requests)
    for i in range(len(requests) - 1, -1, -1):
        if _refused(requests[i]):
            tids[i] = tids[i + 1] if i + 1 < len(requests) else _task_of(requests[i])
        else:
            tids[i] = _task_of(requests[i])
    return tids


def _check_served(
    gen: _Gen,
    task: _Task,
    outcome: Any,
    attempts: list[_Attempt],
    wire: str,
    idle: float,
    interrupted: bool,
    stats: StressStats,
) -> None:
    """What the server received is exactly the prompts sent, well-formed, over the transport
    each attempt went over, and each attempt ended as the reply it was served must make it end
    on that transport (counts the faults served)."""
    server = gen.server
    assert server is not None
    served: list[_Served] = []
    for i, (request, tid) in enumerate(zip(server.requests, _tasks_of(server.requests))):
        if tid != task.tid:
            continue
        if request.endpoint == "compact":
            stats.compact_requests += 1  # a remote compaction, not a turn attempt
            continue
        if is_summary_request(request):
            continue  # a local compaction's summary request, not a turn attempt
        where = f"{task.tid} request {i}"
        if request.input_tokens is not None:
            stats.request_tokens[_bucket(request.input_tokens)] += 1
        if request.window_refused:
            stats.window_refusals += 1
            served.append(_Served(i, request, _DONE, _WINDOW_REFUSED, frozenset(), "window_refused"))
            continue
        if _refused(request):
            previous = _previous_on_websocket(gen, i, wire, idle)
            if previous is None or not previous.forgets:
                _fail(
                    f"{where}: the server refused to continue a response it should remember (previous_response_not_found)"
                )
            served.append(_Served(i, request, _DONE, _REFUSED, frozenset(), "previous_response_not_found"))
            continue
        _check_wire_input(_received(request), wire, where)
        reply = _reply_of(gen, request)
        carried = _carried(gen, i, wire, idle) if request.transport == "websocket" else None
        expect = _expect(reply, wire, idle, request.transport)
        carry = carried.carry if carried is not None else frozenset()
        served.append(_Served(i, request, reply, expect, carry, _fault_of(reply)))
    cancel_ok = interrupted or (outcome.error is not None and type(outcome.error).__name__ == "FatalError")
    alignment = _align(gen, task, served, attempts, wire, idle, cancel_ok)
    for s, a, role in alignment:
        stats.faults_served[s.fault] += 1
        stats.requests_by_transport[s.request.transport] += 1
        if isinstance(s.request.body, dict) and "previous_response_id" in s.request.body and not _refused(s.request):
            stats.incremental_requests += 1
        if role == "resent":
            stats.websocket_resends += 1
        elif a.outcome == "StreamError" and "idle timeout" in str(a.error) and a.outcome not in s.expect.outcomes:
            stats.outcomes["spurious_idle_timeout"] += 1  # real time: the machine stalled (or carried over)
        if a.rate_limits_seen and role == "final":
            stats.rate_limit_snapshots[a.transport] += 1


def _align(
    gen: _Gen,
    task: _Task,
    served: list[_Served],
    attempts: list[_Attempt],
    wire: str,
    idle: float,
    cancel_ok: bool,
) -> list[tuple[_Served, _Attempt, str]]:
    """Match the requests the server received for ``task`` with the attempts, in order: each
    attempt owns zero or more consecutive requests, all sent after it began, over its transport,
    equal to what it sent. Every request but an attempt's last must be one its transport resends
    without spending the budget (``resend`` in :data:`~._faults.TRANSPORT_DIFFERENCES`: its fault did
    not end the attempt); the last must have made the attempt end as it did. An attempt owns no
    request only when it was cancelled before the server read it, or when the previous response
    on its connection left it to time out unread (``unrecorded``). Returns ``(request, attempt,
    "resent" | "final")`` triples, with as few resends as the records allow; fails with the deepest
    mismatch when no match exists."""
    n_req, n_att = len(served), len(attempts)
    deepest: list[tuple[int, str]] = [(-1, "")]

    def note(p: int, why: str) -> None:
        if p > deepest[0][0]:
            deepest[0] = (p, why)

    def owns(s: _Served, a: _Attempt) -> str | None:
        if s.request.transport != a.transport:
            return f"request {s.index} went over {s.request.transport}, the attempt over {a.transport}"
        if s.index < a.requests_before:
            return f"request {s.index} was received before the attempt began"
        if not _same_request(s.request, a):
            return f"request {s.index} is not what the attempt sent"
        return None

    def ended_as_served(s: _Served, a: _Attempt) -> str | None:
        allowed = s.expect.outcomes | s.carry
        if a.outcome == "cancelled":
            return None if cancel_ok else "an attempt was cancelled without an interrupt or a fatal tool"
        if a.outcome == "StreamError" and "idle timeout" in str(a.error) and a.outcome not in allowed:
            return None  # real time: the machine stalled
        if a.outcome not in allowed:
            return (
                f"served {s.fault} ({wire}, {a.transport}), the attempt ended {a.outcome} "
                f"({a.error!r}); expected one of {sorted(allowed)}"
            )
        says = s.expect.says
        if (
            says is not None
            and a.outcome in s.expect.outcomes
            and a.outcome not in s.carry
            and says not in a.error_text
        ):
            return f"served {s.fault} over {a.transport}: the attempt's error {a.error!r} does not say {says!r}"
        used = a.transport_used
        incremental = isinstance(s.request.body, dict) and "previous_response_id" in s.request.body
        if used is not None and (used.name != a.transport or used.incremental != incremental):
            return (
                f"request {s.index} went over {s.request.transport} (incremental: {incremental}), the stream "
                f"says {used!r}, the attempt's transport is {a.transport}"
            )
        want = s.expect.rate_limits
        if a.rate_limits_seen and not want:
            return f"served {s.fault} over {a.transport}: a rate-limit snapshot in the stream"
        if want and a.outcome == "completed" and not a.rate_limits_seen:
            return f"served {s.fault} with rate-limit headers over {a.transport}: no snapshot"
        return None

    def unrecorded(a: _Attempt) -> str | None:
        if a.outcome == "cancelled":
            return None if cancel_ok else "an attempt was cancelled without an interrupt or a fatal tool"
        if a.transport == "websocket":
            carried = _carried(gen, a.requests_before, wire, idle)
            if carried is not None and carried.unrecorded and a.outcome in carried.carry:
                return None
        return f"an attempt ({a.transport}) ended {a.outcome} ({a.error!r}) but the server received no request of it"

    memo: dict[tuple[int, int], list[tuple[int, str]] | None] = {}

    def solve(p: int, q: int) -> list[tuple[int, str]] | None:
        """Requests ``p:`` onto attempts ``q:``: the (attempt, role) of each request, or None."""
        key = (p, q)
        if key in memo:
            return memo[key]
        result: list[tuple[int, str]] | None = None
        if q == n_att:
            if p == n_req:
                result = []
            else:
                note(p, f"the server received request {served[p].index}, which no attempt sent")
        else:
            a = attempts[q]
            why = unrecorded(a)
            if why is None:
                result = solve(p, q + 1)
            elif p == n_req:
                note(p, why)
            if result is None and p < n_req:
                s = served[p]
                mismatch = owns(s, a)
                if mismatch is not None:
                    note(p, mismatch)
                else:
                    why = ended_as_served(s, a)
                    if why is not None:
                        note(p, why)
                    else:
                        rest = solve(p + 1, q + 1)
                        if rest is not None:
                            result = [(q, "final"), *rest]
                    if result is None and s.expect.resend and p + 1 < n_req:
                        rest = solve(p + 1, q)  # resent: the next request is the same attempt's
                        if rest is not None:
                            result = [(q, "resent"), *rest]
        memo[key] = result
        return result

    roles = solve(0, 0)
    if roles is None:
        _fail(f"{task.tid}: {deepest[0][1]}")
    assert roles is not None
    return [(s, attempts[q], role) for s, (q, role) in zip(served, roles)]


def _check_hangs(gen: _Gen, task: _Task) -> None:
    """A hanging tool call ends aborted (or, for one on the MCP stub server, with the error that
    names the server, when a call crashed the server under it)."""
    for event, _ in _with_seq(gen, task):
        if isinstance(event, ToolCallFinished) and '"mode": "hang"' in _arguments_of(gen, event.call_id):
            if event.status == "aborted":
                continue
            text = event.output.output.to_text() if isinstance(event.output, FunctionCallOutput) else None
            if gen.mcp_crashed and f"MCP server {MCP_SERVER!r}" in (text or ""):
                continue
            _fail(f"{task.tid}: a hanging tool call ended {event.status}: {text!r}")


def _check_mcp_calls(gen: _Gen, task: _Task, stats: StressStats) -> None:
    """Each call to the MCP stub server got the output its mode asks for (or the server-failure
    error that names the server, once a call of the generation crashed it; or an aborted output),
    and the calls' progress events carry the turn's id and come before the call's end."""
    calls: dict[str, Any] = {}
    for r, spec in enumerate(task.specs):
        for c, call in enumerate(spec.calls):
            if call.mode.startswith("mcp_"):
                calls[f"{task.tid}r{r}c{c}"] = call
    if not calls:
        return
    events = [e for e, _ in _with_seq(gen, task)]
    progress_seen = progress_min = progress_max = 0
    for event in events:
        if isinstance(event, ToolProgress):
            progress_seen += 1
            stats.mcp_progress_events += 1
            if event.turn_id != task.tid or event.server != MCP_SERVER or event.name != f"mcp__{MCP_SERVER}__echo":
                _fail(f"{task.tid}: a progress event of another call or turn: {event!r}")
            continue
        if not isinstance(event, ToolCallFinished) or event.call_id not in calls:
            continue
        call = calls[event.call_id]
        mode = call.mode
        stats.mcp_calls[f"{mode}:{event.status}"] += 1
        if event.status == "aborted":  # an interrupt or a crash of the machine's own
            progress_max += 2 if mode == "mcp_progress" else 0
            continue
        text = event.output.output.to_text() if isinstance(event.output, FunctionCallOutput) else None
        text = text or ""
        payload = json.loads(call.arguments).get("payload", "")
        server_failed = f"MCP server {MCP_SERVER!r}" in text
        if server_failed and (gen.mcp_crashed or mode == "mcp_crash"):
            continue
        if mode in ("mcp_ok", "mcp_slow", "mcp_progress"):
            ok = event.status == "ok" and text == payload
            if mode == "mcp_progress" and ok:
                progress_min += 1  # (a notification overtaken by a higher one is dropped)
                progress_max += 2
        elif mode == "mcp_error":
            ok = text.endswith("stub error: " + payload)
        elif mode == "mcp_count":
            ok = event.status == "ok" and text.startswith("count=") and text.endswith(f" payload={payload}")
        else:  # mcp_crash must fail, naming the server; mcp_hang is _check_hangs'
            ok = mode == "mcp_hang"
        if not ok:
            _fail(f"{task.tid}: MCP call {event.call_id} ({mode}, payload {payload!r}) ended {event.status}: {text!r}")
    # one or two events per progress call that answered, published while it ran (none for a call
    # that failed; 0 to 2 for one cut short)
    if not progress_min <= progress_seen <= progress_max:
        _fail(f"{task.tid}: {progress_seen} MCP progress events, expected {progress_min} to {progress_max}")


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
    for item in gen.all_acked:
        if isinstance(item, KFunctionCall) and item.call_id == call_id:
            return item.arguments
        if isinstance(item, KCustomToolCall) and item.call_id == call_id:
            return item.input
    return ""


# =============================================================================================
# Tasks: none outlives its turn or its session
# =============================================================================================


async def check_turn_tasks_ended() -> None:
    """No per-turn task (tool call, model request) outlives its turn; a model request may still
    drain a completed body for connection reuse (capped at 0.5 s): it gets 2 s."""
    left = [t.name for t in _all_tasks() if _PER_TURN_TASKS.search(t.name) and not t.name.endswith("_serve")]
    if left:
        _fail(f"per-turn tasks outlived their turn: {left}")
    with trio.move_on_after(2.0):
        while any(t.name.endswith("ModelActor._serve") for t in _all_tasks()):  # noqa: ASYNC110 (polls other tasks)
            await trio.sleep(0.01)
    left = [t.name for t in _all_tasks() if t.name.endswith("ModelActor._serve")]
    if left:
        _fail(f"model requests outlived their turn by 2 s: {left}")


def check_session_tasks_ended(baseline: set[int]) -> None:
    """No task started since ``baseline`` (the ids of the tasks before the session opened) is left."""
    left = [t for t in _all_tasks() if id(t) not in baseline and t is not trio.lowlevel.current_task()]
    if left:
        _fail(f"tasks outlived their session: {[t.name for t in left]}")


# =============================================================================================
# The session between steps
# =============================================================================================


def check_history(gen: _Gen, history: list[ResponseItem]) -> None:
    """The session's history is what was acknowledged, and well-formed."""
    if history != gen.base + gen.acked:
        _fail("the session's history is not what was acknowledged")
    problems = well_formed_violations(history)
    if problems:
        _fail(f"history is not well-formed: {problems}")


def check_replay(resumed: Any, history: list[ResponseItem]) -> None:
    """``resume(rollout)`` replays to the in-memory history, with nothing to repair."""
    if list(resumed.items) != history or resumed.added or resumed.dropped:
        _fail("rollout replay differs from the in-memory history")


def check_turn_events(events: Sequence[Event]) -> None:
    """Each turn once started, once finished; each started tool call finished once."""
    finals: Counter[str] = Counter()
    starts: Counter[str] = Counter()
    open_calls: Counter[str] = Counter()
    for e in events:
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


def check_rollout_events(events: Sequence[Any], crashed_turns: set[str]) -> None:
    """In the rollout, each turn started once ends once (a turn cut by a hard crash: at most once)."""
    starts: Counter[str] = Counter()
    finals: Counter[str] = Counter()
    for e in events:
        if e.get("type") == "turn_started":
            starts[e["turn_id"]] += 1
        elif e.get("type") in ("turn_completed", "turn_aborted", "turn_failed"):
            finals[e["turn_id"]] += 1
    for tid, n in starts.items():
        want = {0, 1} if tid in crashed_turns else {1}
        if n != 1 or finals[tid] not in want:
            _fail(f"rollout: turn {tid} started {n}x and ended {finals[tid]}x")
    if set(finals) - set(starts):
        _fail(f"rollout: final events without a start: {set(finals) - set(starts)}")


# =============================================================================================
# Subscribers
# =============================================================================================


def check_subscriber_bounds(gen: _Gen) -> None:
    """Every subscriber's buffer stays within the notifier's documented bound."""
    for entry in gen.subs:
        since = gen.events[entry.attach_index :]
        lifecycle = sum(1 for e in since if e.lifecycle or (isinstance(e, ReasoningDelta) and e.section_break))
        bound = max(entry.max_buffer, 2 * (3 * lifecycle + 2)) + entry.max_batch
        if entry.sub.buffered > bound:
            _fail(f"a {entry.mode} subscriber holds {entry.sub.buffered} events, over its bound {bound}")


def check_subscriber_received(entry: _Sub, got: list[Event], want: list[Event]) -> None:
    """A subscriber got every lifecycle event in order and all the text (deltas may coalesce)."""
    life_got, text_got = _per_item_text(got)
    life_want, text_want = _per_item_text(want)
    if life_got != life_want:
        _fail(f"a {entry.mode} subscriber lost or reordered lifecycle events")
    if text_got != text_want:
        _fail(f"a {entry.mode} subscriber lost text: {text_got!r} != {text_want!r}")


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
# Recovery after a crash
# =============================================================================================


def check_cancelled_turn(gen: _Gen, crash: _Crash) -> None:
    """A turn cancelled with its session ends aborted, unless its outcome was decided before the
    cancel landed.

    "Decided" is what it is for an interrupt (see :func:`_check_interrupted`): an enclosing
    cancel reaches the turn exactly as an interrupt does. A turn whose final event was already
    published is decided. So is one whose model attempt had already failed for good (a
    non-retryable error, or a retryable one with the budget spent), one a fatal tool call had
    already failed, or one whose last response had already completed. Example: a reply carries a
    tool call and then ``response.failed`` (insufficient_quota). The request drains the
    call already started before it re-raises QuotaExceeded, and a cancel landing during the drain
    (on its ToolCallFinished) stops nothing. The turn correctly ends ``failed`` with the error
    the host must see, not ``aborted``. The check stays strict: a turn that had
    not ended, or whose deciding event came after the cancel, must end aborted.
    """
    task = crash.task
    if task is None or crash.decided:
        return
    outcome = task.handle.outcome if task.handle else None
    if outcome is not None and outcome.status == "aborted":
        return
    attempts = [a for a in gen.attempts if a.turn_id == task.tid and not a.summary]
    decided = None if outcome is None else _decided_seq(task, outcome, attempts)
    if decided is None or decided > crash.seq:
        _fail(f"a turn cancelled with its session ended {outcome!r}, not aborted")


def check_replay_after_cancel(gen: _Gen, resumed: Any) -> None:
    """After an abrupt cancel the rollout replays to exactly the acknowledged history."""
    if list(resumed.items) != gen.base + gen.acked:
        _fail("after an abrupt cancel the rollout does not replay to the acknowledged history")
    if resumed.added or resumed.dropped:
        _fail(f"an abrupt cancel left dangling calls: {resumed.added!r}")


def check_replay_after_hard_crash(crash: _Crash, resumed: Any, stats: StressStats | None = None) -> None:
    """Everything acknowledged before a hard crash is resumed, in order, well-formed, with
    dangling calls repaired as aborted. The acknowledged items restart at each acknowledged
    compaction (its replacement); a compaction being written at the crash leaves the old history
    or the new one, never a mix."""
    acked = crash.file_items
    recorded = list(resumed.recorded)
    new = crash.replacing
    if new is not None and recorded == new:
        if stats is not None:
            stats.crash_during_compaction["new"] += 1
    elif recorded[: len(acked)] != acked:
        _fail(
            f"a hard crash lost acknowledged items: {len(acked)} acked, resumed {len(resumed.recorded)}"
            + (" (a compaction in flight: neither the old history nor the new one)" if new is not None else "")
        )
    elif new is not None and stats is not None:
        stats.crash_during_compaction["old"] += 1
    problems = well_formed_violations(list(resumed.items))
    if problems:
        _fail(f"resume after a hard crash is not well-formed: {problems}")
    for item in resumed.added:
        output = getattr(item, "output", None)
        if getattr(output, "body", None) != ABORTED_OUTPUT_TEXT or getattr(output, "success", None) is not False:
            _fail(f"a dangling call was repaired with {item!r}")


# =============================================================================================
# Secrets
# =============================================================================================


def scan_secrets(
    key: str,
    gen: _Gen,
    events: Sequence[Event],
    outcomes: Sequence[Any],
    log_records: Sequence[logging.LogRecord],
    warned: Sequence[warnings.WarningMessage],
) -> None:
    """The API key is in no event (of ``events``: the ones not scanned yet), turn error, log
    record or warning, and reached the server only in the Authorization header."""
    for e in events:
        if key in repr(e) or (e.lifecycle and key in json.dumps(event_to_dict(e), default=repr)):
            _fail(f"the API key leaked into an event: {type(e).__name__}")
    for outcome in outcomes:
        if outcome.error is not None and (key in str(outcome.error) or key in repr(outcome.error)):
            _fail("the API key leaked into a turn's error")
    for record in log_records:
        if key in _format(record):
            _fail(f"the API key leaked into a log record of {record.name}")
    for w in warned:
        if key in str(w.message):
            _fail("the API key leaked into a warning")
    assert gen.server is not None
    for request in gen.server.requests:
        if key in json.dumps(request.headers) or key in json.dumps(request.body):
            _fail("the API key reached the server outside the Authorization header")


def scan_rollouts(key: str, files: Iterable[Path]) -> None:
    """The API key is in none of the rollout files."""
    for path in files:
        if path.exists() and key.encode() in path.read_bytes():
            _fail(f"the API key leaked into the rollout {path.name}")
