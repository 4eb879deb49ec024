"""Request budgets: a :class:`RateLimiter` protocol, the in-process :class:`LocalRateLimiter`, and
:class:`RateLimitedModel`, which puts any :class:`kernel.ModelClient` behind a limiter.

Every model request of every session goes through ``await limiter.acquire(estimate)`` before it
is sent — retries included, because each retry is a new ``stream()`` — and
``limiter.record(tokens_used)`` once it ends (with the response's ``total_tokens``, or 0 when it
failed before ``response.completed``). One limiter is shared by all the sessions of a batch, so a
thousand sessions cannot stampede an endpoint; the Ray backend implements the same protocol with
one small actor for the whole cluster.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol, runtime_checkable

import trio

from kernel import Completed, ModelClient, ModelEvent, Prompt, item_to_wire

__all__ = ["RateLimiter", "LocalRateLimiter", "RateLimitedModel", "estimate_prompt_tokens"]


@runtime_checkable
class RateLimiter(Protocol):
    """A request budget shared by many sessions."""

    async def acquire(self, estimated_tokens: int = 0) -> None:
        """Wait until one more request (of about ``estimated_tokens`` tokens) fits the budget,
        and count it. Called before every model request."""
        ...

    def record(self, tokens_used: int) -> None:
        """The request that :meth:`acquire` admitted ended having used ``tokens_used`` tokens
        (0 if it failed before completing). Called exactly once per :meth:`acquire`."""
        ...


class _Reservation:
    __slots__ = ("time", "tokens", "in_window")

    def __init__(self, time: float, tokens: int) -> None:
        self.time = time
        self.tokens = tokens
        self.in_window = True


class _WindowBudget:
    """The sliding-window rules of :class:`LocalRateLimiter` (and of the Ray batch's cluster-wide
    limiter), synchronous: token reservations pair with their records per client (each Ray
    worker reports its own; a local limiter is one client).

    ``hold``: a grant stays counted ``hold`` seconds longer than the window, because its
    request may be sent up to ``hold`` seconds after the grant (a permit waiting in a worker's
    pool): then the requests *sent* in any window are within the budget too."""

    def __init__(
        self, rpm: float | None, tpm: float | None, window: float, hold: float = 0.0, *, owner: str = "limiter"
    ) -> None:
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{owner}.{name} must be a positive number or None, got {value!r}")
        if not (window > 0 and math.isfinite(window)):
            raise ValueError(f"{owner}.window must be a positive number of seconds, got {window!r}")
        if not (hold >= 0 and math.isfinite(hold)):
            raise ValueError(f"{owner}.hold must be a non-negative number of seconds, got {hold!r}")
        self.hold = hold
        self.rpm = rpm
        self.tpm = tpm
        self.window = window
        if rpm is not None:
            self.req_capacity = max(1, math.floor(rpm))
            self.req_window = window * self.req_capacity / rpm
        else:
            self.req_capacity = 0
            self.req_window = window
        self._requests: deque[float] = deque()
        self._tokens: deque[_Reservation] = deque()
        self.token_sum = 0
        self._unrecorded: dict[str, deque[_Reservation]] = {}

    def expire(self, now: float) -> None:
        requests = self._requests
        horizon = now - self.req_window - self.hold + 1e-9
        while requests and requests[0] <= horizon:
            requests.popleft()
        tokens = self._tokens
        horizon = now - self.window - self.hold + 1e-9
        while tokens and tokens[0].time <= horizon:
            r = tokens.popleft()
            r.in_window = False
            self.token_sum -= r.tokens

    def ready_at(self, now: float, estimate: int) -> float | None:
        """``None`` when one more request fits now, else when it may fit."""
        at: float | None = None
        if self.rpm is not None and len(self._requests) >= self.req_capacity:
            at = self._requests[len(self._requests) - self.req_capacity] + self.req_window + self.hold
        if self.tpm is not None and self._tokens and self.token_sum + estimate > self.tpm:
            need = self.token_sum + estimate - self.tpm
            freed = 0
            when = self._tokens[-1].time
            for r in self._tokens:
                freed += r.tokens
                if freed >= need:
                    when = r.time
                    break
            token_at = when + self.window + self.hold
            at = token_at if at is None else max(at, token_at)
        return at

    def admit(self, now: float, client: str, estimate: int) -> None:
        if self.rpm is not None:
            self._requests.append(now)
        if self.tpm is not None:
            r = _Reservation(now, estimate)
            self._tokens.append(r)
            self.token_sum += estimate
            self._unrecorded.setdefault(client, deque()).append(r)

    def record(self, now: float, client: str, used: int) -> None:
        if self.tpm is None:
            return
        used = max(0, int(used))
        pending = self._unrecorded.get(client)
        if pending:
            r = pending.popleft()
            if r.in_window:
                self.token_sum += used - r.tokens
            r.tokens = used
        else:
            r = _Reservation(now, used)
            self._tokens.append(r)
            self.token_sum += used


class LocalRateLimiter:
    """Requests per minute and tokens per minute, over a sliding window, for one process.

    * **rpm**: at most ``rpm`` requests admitted in any ``window`` seconds (60 by default). For a
      fractional or sub-1 rate, at most ``max(1, floor(rpm))`` requests in any
      ``window × max(1, floor(rpm)) / rpm`` seconds (``rpm=0.5``: one request per 120 s).
    * **tpm**: a request is admitted when the tokens counted in the last ``window`` seconds plus
      its estimate are at most ``tpm`` (or nothing is counted: a request bigger than the budget
      still runs, alone). Its estimate is counted at once (reserved) and replaced by the tokens
      it really used when :meth:`record` is called (records pair with reservations oldest
      first), so a burst of sessions cannot overshoot the budget while their responses stream.
    * **Fair**: waiting requests are admitted strictly in arrival order (a FIFO ``trio.Lock``),
      whatever session they come from; a small request never overtakes a big one.

    ``None`` disables a limit. ``clock`` must advance with Trio's clock (``trio.current_time``,
    the default, also under a ``MockClock``): waiting uses Trio sleeps. Counters:
    ``admitted`` (requests admitted), ``waited`` (requests admitted later than they asked).
    """

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        clock: Callable[[], float] = trio.current_time,
        window: float = 60.0,
    ) -> None:
        self._budget = _WindowBudget(rpm, tpm, window, owner="LocalRateLimiter")
        self.rpm = rpm
        self.tpm = tpm
        self.window = window
        self._clock = clock
        self._lock = trio.Lock()
        self._changed = trio.Event()
        self.admitted = 0
        self.waited = 0

    def __repr__(self) -> str:
        return f"LocalRateLimiter(rpm={self.rpm!r}, tpm={self.tpm!r}, window={self.window!r})"

    @property
    def tokens_in_window(self) -> int:
        """Tokens counted in the current window (reservations included)."""
        self._budget.expire(self._clock())
        return self._budget.token_sum

    async def acquire(self, estimated_tokens: int = 0) -> None:
        """Wait for room in the budget (in arrival order) and count the request. Checkpoints;
        cancellation while waiting leaves nothing counted."""
        estimate = max(0, int(estimated_tokens))
        budget = self._budget
        arrived = self._clock()
        async with self._lock:
            while True:
                now = self._clock()
                budget.expire(now)
                at = budget.ready_at(now, estimate)
                if at is None:
                    break
                if self._changed.is_set():
                    self._changed = trio.Event()
                with trio.move_on_after(max(0.0, at - now)):
                    await self._changed.wait()  # a record() may free tokens before `at`
            now = self._clock()
            budget.admit(now, "", estimate)
            self.admitted += 1
            if now > arrived:
                self.waited += 1

    def record(self, tokens_used: int) -> None:
        """Replace the oldest unrecorded reservation's estimate with ``tokens_used`` (or count
        ``tokens_used`` now if nothing is reserved)."""
        if self.tpm is None:
            return
        self._budget.record(self._clock(), "", tokens_used)
        self._changed.set()


def estimate_prompt_tokens(prompt: Prompt) -> int:
    """A rough token count of ``prompt``'s instructions and input: characters / 4."""
    chars = len(prompt.base_instructions or "")
    try:
        chars += len(json.dumps([item_to_wire(i) for i in prompt.input], ensure_ascii=False))
    except (TypeError, ValueError):
        pass
    return chars // 4


class RateLimitedModel:
    """A :class:`kernel.ModelClient` that asks ``limiter`` before every ``stream()``.

    The estimate passed to :meth:`RateLimiter.acquire` is the previous response's
    ``total_tokens`` of this client (a session's next prompt is at least as long), or for the
    first request :func:`estimate_prompt_tokens`. After the stream ends — completed, failed or
    cancelled — ``limiter.record()`` gets the response's ``total_tokens`` (0 without
    ``response.completed``). Other attributes (``settings``, ``model``, the fallback-transport
    methods) are the wrapped client's.
    """

    def __init__(self, client: ModelClient, limiter: RateLimiter) -> None:
        self.client = client
        self.limiter = limiter
        self.last_tokens: int | None = None

    def __getattr__(self, name: str) -> Any:
        if name in ("client", "limiter", "last_tokens"):
            raise AttributeError(name)
        return getattr(self.client, name)

    def __repr__(self) -> str:
        return f"RateLimitedModel({self.client!r}, {self.limiter!r})"

    @asynccontextmanager
    async def stream(self, prompt: Prompt) -> AsyncIterator[AsyncIterator[Sequence[ModelEvent]]]:
        """Acquire, then stream from the wrapped client; record the usage on the way out."""
        estimate = self.last_tokens if self.last_tokens is not None else estimate_prompt_tokens(prompt)
        await self.limiter.acquire(estimate)
        watch = _UsageWatch(None)
        try:
            async with self.client.stream(prompt) as batches:
                watch.inner = batches
                yield watch
        finally:
            used = watch.tokens
            if used is not None:
                self.last_tokens = used
            self.limiter.record(used or 0)


class _UsageWatch:
    """Passes batches through and keeps the ``total_tokens`` of a ``Completed`` event (the last
    event of its batch: a response ends with it)."""

    __slots__ = ("inner", "tokens")

    def __init__(self, inner: AsyncIterator[Sequence[ModelEvent]] | None) -> None:
        self.inner = inner
        self.tokens: int | None = None

    def __aiter__(self) -> _UsageWatch:
        return self

    async def __anext__(self) -> Sequence[ModelEvent]:
        assert self.inner is not None
        batch = await self.inner.__anext__()
        if batch:
            last = batch[-1]
            if type(last) is Completed:
                usage = last.usage
                self.tokens = usage.total_tokens if usage is not None else 0
        return batch
