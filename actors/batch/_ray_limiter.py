"""The cluster-wide rate limit of the Ray backend: :class:`RateLimiterActor` (one small async Ray
actor holding the budget, with the sliding-window rules of
:class:`~actors.batch.LocalRateLimiter`) and :class:`RayRateLimiter`, the
:class:`~actors.batch.RateLimiter` each worker uses to talk to it (batched grants, a local pool of
permits). The rules — permit lifetime, the ``2 × permit_ttl`` hold, named limiters — are in the
:mod:`actors.batch._ray` docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import trio

from ._limiter import _WindowBudget

__all__ = ["RateLimiterActor", "RayRateLimiter", "LIMITER_NAMESPACE"]

LIMITER_NAMESPACE = "agent-kernel"
"""The Ray namespace of named limiters (``limiter_name``): ``ray.get_actor(name,
namespace=LIMITER_NAMESPACE)``."""


def _ray() -> Any:
    """Import Ray (lazily: it is an optional extra)."""
    try:
        import ray
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "run_batch_ray needs Ray: pip install 'trio-agent-kernel[ray]' (or pip install ray)"
        ) from None
    return ray


class RateLimiterActor:
    """The cluster's request budget: an async Ray actor (one per batch, or one named actor
    shared by several drivers). Workers talk to it through :class:`RayRateLimiter`.

    :meth:`grant` waits (in arrival order) until one more request fits and then grants as many
    as fit, up to the ``n`` asked for; each granted request reserves ``estimate`` tokens, which
    the client's later ``records`` (tokens really used, oldest reservation first) replace.
    ``permit_ttl`` (default: a tenth of the window, at most 1 s): how long a client may keep a
    granted permit, from its arrival, before using it. A grant stays counted ``2 × permit_ttl``
    longer than the window (the keeping, plus as much for the answer's delivery), so the cap
    holds for the requests as sent, not only as granted.
    """

    def __init__(
        self,
        rpm: float | None,
        tpm: float | None,
        window: float = 60.0,
        *,
        permit_ttl: float | None = None,
        keep_log: int = 100_000,
    ) -> None:
        if permit_ttl is None:
            permit_ttl = min(1.0, window / 10) if window > 0 else 0.0
        self.permit_ttl = permit_ttl
        self._budget = _WindowBudget(rpm, tpm, window, hold=2 * permit_ttl)
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._log: deque[float] = deque(maxlen=keep_log)
        self.granted = 0
        self.calls = 0
        self.waited = 0

    def _apply(self, client: str, records: Sequence[int]) -> None:
        if records:
            now = time.monotonic()
            for used in records:
                self._budget.record(now, client, used)
            self._changed.set()

    async def grant(self, client: str, n: int, estimate: int = 0, records: Sequence[int] = ()) -> tuple[int, float]:
        """Apply ``records``, then wait for room and grant 1 to ``n`` requests. Returns how many,
        and ``permit_ttl``."""
        self._apply(client, records)
        self.calls += 1
        estimate = max(0, int(estimate))
        budget = self._budget
        async with self._lock:
            waited = False
            while True:
                now = time.monotonic()
                budget.expire(now)
                at = budget.ready_at(now, estimate)
                if at is None:
                    break
                waited = True
                self._changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=max(0.0, at - now))
            count = 0
            while count < max(1, n):
                if count and budget.ready_at(now, estimate) is not None:
                    break
                budget.admit(now, client, estimate)
                self._log.append(now)
                count += 1
            self.granted += count
            if waited:
                self.waited += 1
            return count, self.permit_ttl

    async def config(self) -> dict[str, Any]:
        """``rpm``, ``tpm``, ``window``, ``permit_ttl``."""
        b = self._budget
        return {"rpm": b.rpm, "tpm": b.tpm, "window": b.window, "permit_ttl": self.permit_ttl}

    async def report(self, client: str, records: Sequence[int]) -> None:
        """Apply token records without asking for anything."""
        self._apply(client, records)

    async def stats(self) -> dict[str, Any]:
        """Counters: ``granted`` requests, ``calls`` (grant round trips), ``waited`` (calls
        that had to wait), ``tokens_in_window``."""
        self._budget.expire(time.monotonic())
        return {
            "granted": self.granted,
            "calls": self.calls,
            "waited": self.waited,
            "tokens_in_window": self._budget.token_sum,
        }

    async def grant_times(self) -> list[float]:
        """When each request was granted (``time.monotonic()`` of the actor's node; the last
        ``keep_log``)."""
        return list(self._log)


class RayRateLimiter:
    """A :class:`~actors.batch.RateLimiter` for one worker process, backed by a
    :class:`RateLimiterActor` (see the :mod:`actors.batch._ray` docstring: batched grants, a
    local pool of permits taken in arrival order, records sent with the next grant request or by
    :meth:`run` every ``flush_interval`` seconds). Run :meth:`run` in the worker's nursery."""

    def __init__(self, actor: Any, *, client: str, grant_batch: int = 8, flush_interval: float = 0.25) -> None:
        if grant_batch < 1:
            raise ValueError(f"grant_batch must be >= 1, got {grant_batch!r}")
        self._actor = actor
        self.client = client
        self.grant_batch = grant_batch
        self.permit_ttl = math.inf  # the actor's, learnt from its first answer
        self.flush_interval = flush_interval
        self._permits: deque[float] = deque()
        self._records: list[int] = []
        self._lock = trio.Lock()
        self.admitted = 0
        self.round_trips = 0
        self.dropped = 0

    def __repr__(self) -> str:
        return f"RayRateLimiter(client={self.client!r}, grant_batch={self.grant_batch})"

    def _drop_stale(self, now: float) -> None:
        permits = self._permits
        while permits and now - permits[0] > self.permit_ttl:
            permits.popleft()
            self.dropped += 1
            self._records.append(0)

    async def acquire(self, estimated_tokens: int = 0) -> None:
        """Take a permit from the local pool, asking the actor for more when it is empty."""
        estimate = max(0, int(estimated_tokens))
        async with self._lock:
            while True:
                self._drop_stale(time.monotonic())
                if self._permits:
                    self._permits.popleft()
                    self.admitted += 1
                    return
                n = min(self.grant_batch, 1 + self._lock.statistics().tasks_waiting)
                records, self._records = self._records, []
                ref = self._actor.grant.remote(self.client, n, estimate, records)
                granted, self.permit_ttl = await trio.to_thread.run_sync(_ray().get, ref, abandon_on_cancel=True)
                self.round_trips += 1
                # a permit's age counts from its arrival (the first one is used at once)
                self._permits.extend([time.monotonic()] * granted)

    def record(self, tokens_used: int) -> None:
        """Queue the tokens used by an admitted request for the actor (which ignores them when
        it has no tpm limit)."""
        self._records.append(max(0, int(tokens_used)))

    async def run(self) -> None:
        """Flush queued records every ``flush_interval`` seconds (and drop stale permits)."""
        while True:
            await trio.sleep(self.flush_interval)
            if not self._lock.locked():
                self._drop_stale(time.monotonic())
            if self._records:
                records, self._records = self._records, []
                self._actor.report.remote(self.client, records)
