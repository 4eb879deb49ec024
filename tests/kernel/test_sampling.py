"""The sampling loop against the seed's semantics, under random fault schedules (MockClock)."""

from __future__ import annotations

import random
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import example, given, strategies as st

from kernel import (
    ContextWindowExceeded,
    KernelError,
    Message,
    PreparedSamplingRequest,
    Prompt,
    PromptConfig,
    SamplingRequestResult,
    ToolConfig,
    UsageLimitReached,
    run_sampling_request_loop,
)
from kernel.testing import Fault, fault_schedules

INITIAL = [Message.user("initial")]
HISTORY = [Message.user("initial"), Message.assistant("recorded")]


@attrs.define
class Session:
    transport: str = "primary"
    has_fallback: bool = True


@attrs.define
class FakeHost:
    schedule: list[Fault]
    max_retries: int
    notify_first: bool = True
    log: list[tuple[Any, ...]] = attrs.field(factory=list)
    attempt: int = 0

    async def prepare_sampling_request(self, input: Any) -> PreparedSamplingRequest[str, str]:
        self.log.append(("prepare", tuple(input)))
        await trio.lowlevel.checkpoint()
        return PreparedSamplingRequest(PromptConfig(), ToolConfig(), "runtime", "tools")

    async def history_prompt_input(self) -> list[Any]:
        self.log.append(("history",))
        await trio.lowlevel.checkpoint()
        return list(HISTORY)

    async def run_single_sampling_request(
        self, runtime: str, tools: str, session: Session, prompt: Prompt
    ) -> SamplingRequestResult:
        assert (runtime, tools) == ("runtime", "tools")
        fault = self.schedule[self.attempt] if self.attempt < len(self.schedule) else Fault("ok")
        self.attempt += 1
        self.log.append(("run", tuple(prompt.input), session.transport, trio.current_time()))
        await trio.lowlevel.checkpoint()
        err = fault.to_error()
        if err is not None:
            raise err
        return SamplingRequestResult(needs_follow_up=False, last_agent_message="ok")

    def stream_max_retries(self) -> int:
        return self.max_retries

    def try_switch_fallback_transport(self, session: Session) -> bool:
        self.log.append(("try_switch",))
        if session.has_fallback and session.transport == "primary":
            session.transport = "fallback"
            return True
        return False

    def should_notify_stream_retry(self, retries: int, err: KernelError) -> bool:
        self.log.append(("should_notify", retries))
        return self.notify_first or retries > 1

    async def handle_context_window_exceeded(self) -> None:
        self.log.append(("context_window",))

    async def handle_usage_limit_reached(self, rate_limits: Any) -> None:
        self.log.append(("usage_limit", rate_limits))

    async def notify_fallback_to_http(self, err: KernelError) -> None:
        self.log.append(("fallback", str(err)))

    async def notify_stream_retry(self, retries: int, max_retries: int, delay: float, err: KernelError) -> None:
        self.log.append(("notify", retries, max_retries, delay, trio.current_time()))


def expected_log(
    schedule: list[Fault], max_retries: int, has_fallback: bool, notify_first: bool
) -> tuple[list[tuple[Any, ...]], str]:
    """The seed's pseudocode (PROTOCOL §1) written out as a plain simulation; delays are left as
    None for backoff (checked separately) and times are not modelled."""
    log: list[tuple[Any, ...]] = [("prepare", tuple(INITIAL))]
    retries, first, transport, attempt = 0, True, "primary", 0
    while True:
        if not first:
            log.append(("history",))
        prompt_input = tuple(INITIAL) if first else tuple(HISTORY)
        first = False
        fault = schedule[attempt] if attempt < len(schedule) else Fault("ok")
        attempt += 1
        log.append(("run", prompt_input, transport))
        err = fault.to_error()
        if err is None:
            return log, "ok"
        if isinstance(err, ContextWindowExceeded):
            log.append(("context_window",))
            return log, type(err).__name__
        if isinstance(err, UsageLimitReached):
            log.append(("usage_limit", err.rate_limits))
            return log, type(err).__name__
        if not err.retryable:
            return log, type(err).__name__
        if retries >= max_retries:
            log.append(("try_switch",))
            if has_fallback and transport == "primary":
                transport = "fallback"
                log.append(("fallback", str(err)))
                retries = 0
                continue
        if retries < max_retries:
            retries += 1
            log.append(("should_notify", retries))
            if notify_first or retries > 1:
                log.append(("notify", retries, max_retries, err.retry_after))
        else:
            return log, type(err).__name__


def strip_times(log: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    out = []
    for entry in log:
        if entry[0] == "run":
            out.append(entry[:3])
        elif entry[0] == "notify":
            out.append(entry[:3] + ((entry[3] if entry[3] is not None else None),))
        else:
            out.append(entry)
    return out


@given(
    schedule=fault_schedules(),
    max_retries=st.integers(0, 4),
    has_fallback=st.booleans(),
    notify_first=st.booleans(),
    seed=st.integers(0, 2**16),
)
@example(
    schedule=[Fault("stream", None, 0)] * 3 + [Fault("stream_delay", 0.0, 0), Fault("stream", None, 0)],
    max_retries=2,
    has_fallback=True,
    notify_first=False,
    seed=0,
).via("regression (test): two attempts 0 s apart have equal records; the check looked up the wrong fault")
def test_loop_follows_the_seed_under_random_faults(
    schedule: list[Fault], max_retries: int, has_fallback: bool, notify_first: bool, seed: int
) -> None:
    host = FakeHost(schedule, max_retries, notify_first)
    session = Session(has_fallback=has_fallback)
    outcome: list[str] = []

    async def main() -> None:
        try:
            result = await run_sampling_request_loop(host, session, INITIAL, rng=random.Random(seed))
            assert result == SamplingRequestResult(False, "ok")
            outcome.append("ok")
        except KernelError as exc:
            outcome.append(type(exc).__name__)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    want_log, want_outcome = expected_log(schedule, max_retries, has_fallback, notify_first)
    assert outcome == [want_outcome]

    # hook calls exactly as the seed makes them (delays: requested ones exactly)
    got = strip_times(host.log)
    for g, w in zip(got, want_log):
        if g[0] == "notify" and w[3] is None:
            assert g[:3] == w[:3]
        else:
            assert g == w
    assert len(got) == len(want_log)

    runs = [e for e in host.log if e[0] == "run"]
    # at most max_retries + 1 attempts per transport
    for transport in ("primary", "fallback"):
        assert sum(1 for r in runs if r[2] == transport) <= max_retries + 1
    # the first attempt uses the caller's input, every retry rebuilds from history
    assert runs[0][1] == tuple(INITIAL)
    assert all(r[1] == tuple(HISTORY) for r in runs[1:])
    # switch to the fallback transport only once the budget is spent
    switch_at = next((i for i, r in enumerate(runs) if r[2] == "fallback"), None)
    if switch_at is not None:
        assert switch_at == max_retries + 1
    # the time between attempts is exactly the delay (requested, or backoff within bounds)
    retries = 0
    transport = "primary"
    for attempt, (prev, nxt) in enumerate(zip(runs, runs[1:])):
        gap = nxt[3] - prev[3]
        if nxt[2] != transport:  # fallback switch: no sleep
            transport, retries = nxt[2], 0
            assert gap == 0
            continue
        retries += 1
        fault = schedule[attempt]  # (not runs.index(prev): two attempts 0 s apart have equal records)
        if fault.delay is not None:
            assert gap == pytest.approx(fault.delay)
        else:
            base = 0.2 * 2 ** (retries - 1)
            assert 0.9 * base - 1e-9 <= gap <= 1.1 * base + 1e-9
    # notified delays equal the slept delays
    for i, note in enumerate(host.log):
        if note[0] == "notify":
            next_run = next(e for e in host.log[i:] if e[0] == "run")
            assert next_run[3] - note[4] == pytest.approx(note[3])


async def test_cancelling_the_callers_scope_cancels_the_backoff_sleep(autojump_clock: trio.testing.MockClock) -> None:
    host = FakeHost([Fault("stream")] * 10, max_retries=5)
    with trio.move_on_after(0.1) as scope:  # first backoff is >= 0.18 s
        await run_sampling_request_loop(host, Session(has_fallback=False), INITIAL)
    assert scope.cancelled_caught
    assert [e[0] for e in host.log].count("run") == 1


async def test_cancelling_the_callers_scope_cancels_a_request() -> None:
    class Hanging(FakeHost):
        async def run_single_sampling_request(self, *args: Any) -> SamplingRequestResult:
            await trio.sleep_forever()
            raise AssertionError

    with trio.move_on_after(0) as scope:
        await run_sampling_request_loop(Hanging([], 5), Session(), INITIAL)
    assert scope.cancelled_caught


async def test_requested_delay_wins_over_backoff(autojump_clock: trio.testing.MockClock) -> None:
    host = FakeHost([Fault("rate_limited", delay=7.5), Fault("server_delay", delay=0.25)], max_retries=5)
    start = trio.current_time()
    await run_sampling_request_loop(host, Session(), INITIAL)
    assert trio.current_time() - start == pytest.approx(7.75)
