"""CPU accounting of batch tasks (``TaskResult.cpu_time``): :func:`_start_meter` /
:func:`_stop_meter` around a task, and the Trio instrument that charges the thread's CPU.

Trio runs every session on one thread, so no OS counter separates tasks. While tasks run, a Trio
instrument reads the thread's CPU clock (``time.thread_time``) before every task step and charges
the time since the previous reading to the Trio task that ran: a Trio task started (directly or
not) by ``run_task`` — the session's turn runner, its tool and history actors, tool calls —
counts for that batch task; any other (the shared ModelActor's HTTP reads and SSE decoding, the
connection pool, the scheduler's I/O handling) is split evenly among the batch tasks running at
that moment. The figures add up to the Trio thread's CPU over the run; worker-thread file I/O
(rollout writes) and tool subprocesses are not included. The overhead is one clock read (< 1 µs)
per task step, only while a task runs.
"""

from __future__ import annotations

import time

import trio

__all__: list[str] = []


class _Meter:
    __slots__ = ("own", "share0", "value", "acct")

    def __init__(self, acct: _CpuAccountant) -> None:
        self.acct = acct
        self.own = 0.0
        self.share0 = acct.share
        self.value: float | None = None

    def stop(self) -> float:
        if self.value is None:
            self.acct.charge_current()
            self.value = self.own + (self.acct.share - self.share0)
            self.acct.active -= 1
        return self.value


class _CpuAccountant(trio.abc.Instrument):
    """See the module docstring. One per Trio run, installed while some meter is active."""

    def __init__(self) -> None:
        self.owner: dict[trio.lowlevel.Task, _Meter] = {}
        self.active = 0
        self.share = 0.0  # cumulative unowned CPU seconds per active meter
        self.last = time.thread_time()
        self.current: trio.lowlevel.Task | None = None

    def _charge(self, task: trio.lowlevel.Task | None, seconds: float) -> None:
        meter = self.owner.get(task) if task is not None else None
        if meter is not None and meter.value is None:
            meter.own += seconds
        elif self.active:
            self.share += seconds / self.active

    def charge_current(self) -> None:
        now = time.thread_time()
        self._charge(self.current, now - self.last)
        self.last = now

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        now = time.thread_time()
        self._charge(self.current, now - self.last)
        self.last = now
        self.current = task

    def before_io_wait(self, timeout: float) -> None:
        now = time.thread_time()
        self._charge(self.current, now - self.last)
        self.last = now
        self.current = None

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        nursery = task.parent_nursery
        if nursery is not None:
            meter = self.owner.get(nursery.parent_task)
            if meter is not None:
                self.owner[task] = meter

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self.owner.pop(task, None)


_ACCOUNTANT: trio.lowlevel.RunVar[_CpuAccountant | None] = trio.lowlevel.RunVar("batch_cpu_accountant", default=None)


def _start_meter() -> tuple[_Meter, _Meter | None]:
    """A meter for the current Trio task (and the meter it had before, to restore)."""
    acct = _ACCOUNTANT.get()
    if acct is None:
        acct = _CpuAccountant()
        _ACCOUNTANT.set(acct)
        trio.lowlevel.add_instrument(acct)
    acct.charge_current()
    meter = _Meter(acct)
    acct.active += 1
    task = trio.lowlevel.current_task()
    previous = acct.owner.get(task)
    acct.owner[task] = meter
    acct.current = task
    return meter, previous


def _stop_meter(meter: _Meter, previous: _Meter | None) -> float:
    value = meter.stop()
    acct = meter.acct
    task = trio.lowlevel.current_task()
    if previous is not None:
        acct.owner[task] = previous
    else:
        acct.owner.pop(task, None)
    if acct.active == 0 and _ACCOUNTANT.get() is acct:
        _ACCOUNTANT.set(None)
        try:
            trio.lowlevel.remove_instrument(acct)
        except KeyError:
            pass
    return value
