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

import trio

from kernel import (
    CustomToolCall as KCustomToolCall,
    Event,
    FunctionCall as KFunctionCall,
    ReasoningDelta,
    ResponseItem,
    StreamRetry,
    ToolCallFinished,
    ToolCallStarted,
    TurnStarted,
    event_to_dict,
)
from kernel.testing import well_formed_violations

from ..history import ABORTED_OUTPUT_TEXT
from ._config import STRESS_API_KEY, StressStats
from ._faults import _DONE, _allowed_outcomes, _fault_of
from ._harness import _FINALS, _PER_TURN_TASKS, _all_tasks, _Attempt, _Crash, _format, _Gen, _Sub, _Task, _task_of

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
    """Everything a finished ``task`` must satisfy, given the retry budget and wire it ran with
    (counts its outcome and attempts in ``stats``)."""
    assert task.handle is not None
    outcome = task.handle.outcome
    assert outcome is not None
    label = outcome.status if outcome.error is None else f"failed:{type(outcome.error).__name__}"
    stats.outcomes[label] += 1
    attempts = [a for a in gen.attempts if a.turn_id == task.tid]
    stats.attempts += len(attempts)
    if task.queued_interrupt:
        if outcome.status != "aborted" or attempts:
            _fail(f"a turn interrupted while queued ended {outcome.status} after {len(attempts)} requests")
        return
    interrupted = task.interrupt_seq is not None
    if interrupted:
        _check_interrupted(task, outcome, attempts)
    elif outcome.status == "aborted":
        _fail(f"{task.tid}: aborted without an interrupt")
    runs = _retry_runs(attempts)
    _check_retry_budget(task, outcome, runs, max_retries, interrupted)
    _check_retry_notices(gen, task, runs, max_retries, interrupted)
    _check_retry_delays(task, runs)
    _check_outcome(gen, task, outcome, attempts, user_tool_names)
    _check_prompts(task, attempts)
    _check_served(gen, task, outcome, attempts, wire, idle, interrupted, stats)
    _check_hangs(gen, task)


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
    if err is not None:
        return next((a.end_seq for a in attempts if a.error is err), None)
    if attempts and attempts[-1].outcome == "completed":
        return attempts[-1].end_seq
    return None


def _retry_runs(attempts: list[_Attempt]) -> list[list[_Attempt]]:
    """The attempts in runs, each ending at a completed attempt or the turn's end."""
    runs: list[list[_Attempt]] = [[]]
    for a in attempts:
        runs[-1].append(a)
        if a.outcome == "completed":
            runs.append([])
    if not runs[-1]:
        runs.pop()
    return runs


def _check_retry_budget(
    task: _Task, outcome: Any, runs: list[list[_Attempt]], max_retries: int, interrupted: bool
) -> None:
    """Attempts per request ≤ budget + 1; only retryable failures are retried, until the budget
    is spent."""
    for n, run in enumerate(runs):
        if len(run) > max_retries + 1:
            _fail(f"{task.tid}: {len(run)} attempts for one request, budget {max_retries}")
        for a in run[:-1]:
            if a.outcome not in _RETRYABLE:
                _fail(f"{task.tid}: retried after a {a.outcome} (not retryable)")
        last = run[-1]
        fatal = outcome.error is not None and type(outcome.error).__name__ == "FatalError"
        if last.outcome in _RETRYABLE and n == len(runs) - 1 and not interrupted and not fatal:
            if outcome.status != "failed" or len(run) != max_retries + 1:
                _fail(
                    f"{task.tid}: gave up after {len(run)} retryable failures (budget {max_retries}), outcome {outcome!r}"
                )


def _check_retry_notices(
    gen: _Gen, task: _Task, runs: list[list[_Attempt]], max_retries: int, interrupted: bool
) -> None:
    """One ``StreamRetry`` per retry (one more if interrupted in the backoff), each well-counted."""
    retries = [e for e, seq in _with_seq(gen, task) if isinstance(e, StreamRetry)]
    expected_retries = sum(len(r) - 1 for r in runs)
    if not (expected_retries <= len(retries) <= expected_retries + (1 if interrupted else 0)):
        _fail(f"{task.tid}: {len(retries)} retry notices for {expected_retries} retries")
    for e in retries:
        if not (1 <= e.retries <= max_retries) or e.message != f"Reconnecting... {e.retries}/{max_retries}":
            _fail(f"{task.tid}: bad retry notice {e!r}")


def _check_retry_delays(task: _Task, runs: list[list[_Attempt]]) -> None:
    """A retry waits at least what the failure asked for."""
    flat = [a for run in runs for a in run]
    for a, b in zip(flat, flat[1:]):
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


def _check_prompts(task: _Task, attempts: list[_Attempt]) -> None:
    """Every prompt is the history at that moment (so every retry re-sends it)."""
    for a in attempts:
        if list(a.prompt.input) != a.expected:
            _fail(f"{task.tid}: a prompt is not the history at that moment (retries must re-send history)")


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
    """What the server received is exactly the prompts sent, well-formed, and each attempt ended
    as the reply it was served must make it end (counts the faults served)."""
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
        allowed = _allowed_outcomes(reply, wire, idle)
        if a.outcome == "cancelled":
            if not (interrupted or (outcome.error is not None and type(outcome.error).__name__ == "FatalError")):
                _fail(f"{task.tid}: an attempt was cancelled without an interrupt or a fatal tool")
        elif a.outcome == "StreamError" and "idle timeout" in str(a.error) and a.outcome not in allowed:
            stats.outcomes["spurious_idle_timeout"] += 1  # real time: the machine stalled
        elif a.outcome not in allowed:
            _fail(
                f"{task.tid}: served {_fault_of(reply)} ({wire}), the attempt ended {a.outcome} "
                f"({a.error!r}); expected one of {sorted(allowed)}"
            )


def _check_hangs(gen: _Gen, task: _Task) -> None:
    """A hanging tool call ends aborted."""
    for event, _ in _with_seq(gen, task):
        if isinstance(event, ToolCallFinished) and '"mode": "hang"' in _arguments_of(gen, event.call_id):
            if event.status != "aborted":
                _fail(f"{task.tid}: a hanging tool call ended {event.status}")


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
    for item in gen.acked:
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
    attempts = [a for a in gen.attempts if a.turn_id == task.tid]
    decided = None if outcome is None else _decided_seq(task, outcome, attempts)
    if decided is None or decided > crash.seq:
        _fail(f"a turn cancelled with its session ended {outcome!r}, not aborted")


def check_replay_after_cancel(gen: _Gen, resumed: Any) -> None:
    """After an abrupt cancel the rollout replays to exactly the acknowledged history."""
    if list(resumed.items) != gen.base + gen.acked:
        _fail("after an abrupt cancel the rollout does not replay to the acknowledged history")
    if resumed.added or resumed.dropped:
        _fail(f"an abrupt cancel left dangling calls: {resumed.added!r}")


def check_replay_after_hard_crash(crash: _Crash, resumed: Any) -> None:
    """Everything acknowledged before a hard crash is resumed, in order, well-formed, with
    dangling calls repaired as aborted."""
    acked = crash.file_items
    if list(resumed.recorded[: len(acked)]) != acked:
        _fail(f"a hard crash lost acknowledged items: {len(acked)} acked, resumed {len(resumed.recorded)}")
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
