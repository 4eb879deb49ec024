"""The tool actor: :class:`ToolActor` runs the calls of a :class:`~actors.tools.ToolRegistry`.

:class:`ToolActor` is one Trio task that implements the kernel's :class:`~kernel.ToolExecutor` by
messaging: ``execute_tool_call`` sends a request on a memory channel and waits for its reply; the
actor runs every call in a task of its own nursery, so calls run concurrently. Parallel-safe tools
(``parallel=True``) share access; the others take an exclusive turn (a readers/writer lock, first
come first served, so a waiting exclusive call is never starved by a stream of parallel ones). If
the waiting caller is cancelled, that call's task is cancelled (and only that one); if the actor
stops, waiting callers get :class:`ToolActorClosed` instead of hanging.

Any exception a tool raises becomes a :class:`~kernel.RespondToModel` (``"tool 'x' failed:
ValueError: ..."``), except that a tool's own :class:`~kernel.RespondToModel` and
:class:`~kernel.FatalToolError` pass through unchanged.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from kernel.items import (
    CustomToolCall,
    CustomToolCallOutput,
    FunctionCall,
    FunctionCallOutput,
    FunctionCallOutputPayload,
    ResponseInputItem,
    ResponseItem,
)
from kernel.tools import CompletedResponseItem, FatalToolError, RespondToModel

from ._registry import Tool, ToolRegistry

__all__ = ["ToolInvocation", "ToolActor", "ToolActorClosed", "open_tool_actor"]


# =============================================================================================
# The call object
# =============================================================================================


@attrs.frozen(eq=False)
class ToolInvocation:
    """A classified call (implements :class:`~kernel.ToolCall`): ``payload`` is the JSON
    ``arguments`` of a function call or the raw ``input`` of a custom call; ``tool`` is the
    registered tool, or ``None`` for an unknown name."""

    call_id: str
    name: str
    payload: str
    custom: bool
    tool: Tool | None

    def output(self, payload: FunctionCallOutputPayload) -> ResponseInputItem:
        """This call's output item carrying ``payload``: a ``custom_tool_call_output`` for a custom
        call, a ``function_call_output`` otherwise."""
        if self.custom:
            return CustomToolCallOutput(self.call_id, payload)
        return FunctionCallOutput(self.call_id, payload)

    def error_response(self, message: str) -> ResponseInputItem:
        """The output telling the model this call failed (``success: false``)."""
        return self.output(FunctionCallOutputPayload(message, False))


# =============================================================================================
# The actor
# =============================================================================================


class ToolActorClosed(FatalToolError):
    """The :class:`ToolActor` is not running (not started yet, or stopped while the call waited).

    A :class:`~kernel.FatalToolError`: the turn ends with a clear error rather than hanging.
    """


class _SharedExclusiveLock:
    """A readers/writer lock, first come first served: a request that cannot be granted at once
    queues, and consecutive shared requests at the head of the queue are granted together. So a
    queued exclusive request is never overtaken by later shared ones (fair to writers), and vice
    versa. Acquire does not checkpoint when the lock is free."""

    __slots__ = ("_readers", "_writer", "_queue")

    def __init__(self) -> None:
        self._readers = 0
        self._writer = False
        self._queue: collections.deque[_Waiter] = collections.deque()

    def enqueue(self, exclusive: bool) -> _Waiter:
        """Take a place in line now (synchronously, so places follow arrival order, not the
        random order in which Trio first runs the tasks): granted at once when possible."""
        waiter = _Waiter(exclusive)
        if not self._queue and not self._writer and not (exclusive and self._readers):
            if exclusive:
                self._writer = True
            else:
                self._readers += 1
            waiter.granted = True
        else:
            self._queue.append(waiter)
        return waiter

    async def wait(self, waiter: _Waiter) -> None:
        """Wait until ``waiter`` is granted. Does not checkpoint when it already is. Cancelled
        while queued: leaves the line (or gives the grant back)."""
        if waiter.granted:
            return
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self.release(waiter.exclusive)
            else:
                self._queue.remove(waiter)
                self._grant()
            raise

    async def acquire(self, exclusive: bool) -> None:
        """:meth:`enqueue` then :meth:`wait`."""
        await self.wait(self.enqueue(exclusive))

    def release(self, exclusive: bool) -> None:
        if exclusive:
            self._writer = False
        else:
            self._readers -= 1
        if self._queue:
            self._grant()

    def _grant(self) -> None:
        queue = self._queue
        while queue and not self._writer:
            head = queue[0]
            if head.exclusive:
                if self._readers:
                    return
                self._writer = True
            else:
                self._readers += 1
            queue.popleft()
            head.granted = True
            head.event.set()

    def statistics(self) -> tuple[int, bool, int]:
        """(shared holders, exclusive held, waiting) — for tests and debugging."""
        return self._readers, self._writer, len(self._queue)


class _Waiter:
    __slots__ = ("exclusive", "event", "granted")

    def __init__(self, exclusive: bool) -> None:
        self.exclusive = exclusive
        self.event = trio.Event()
        self.granted = False


class _Request:
    """One call sent to the actor: the parsed arguments, the call's cancel scope, and a one-shot
    reply slot.

    The reply is not a memory channel: it has exactly one writer and one reader, so the actor
    stores ``output`` / ``error`` and wakes the parked caller with
    :func:`trio.lowlevel.reschedule` (measured: a channel pair or a :class:`trio.Event` per call
    costs more). If the caller is cancelled while parked, :meth:`abort` cancels the call's scope
    and keeps the caller parked until the call's task has ended; the caller then raises its
    cancellation (``raise_cancel``), so no call outlives its caller.
    """

    __slots__ = ("call", "tool", "args", "kwargs", "scope", "output", "error", "finished", "task", "raise_cancel")

    def __init__(self, call: ToolInvocation, tool: Tool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.call = call
        self.tool = tool
        self.args = args
        self.kwargs = kwargs
        self.scope = trio.CancelScope()
        self.output: ResponseInputItem | None = None
        self.error: BaseException | None = None
        self.finished = False
        self.task: trio.lowlevel.Task | None = None
        self.raise_cancel: Callable[[], Any] | None = None

    def finish(self) -> None:
        """Mark the reply ready and wake the caller if it is parked (exactly once)."""
        self.finished = True
        task = self.task
        if task is not None:
            self.task = None
            trio.lowlevel.reschedule(task)

    def abort(self, raise_cancel: Callable[[], Any]) -> trio.lowlevel.Abort:
        self.raise_cancel = raise_cancel
        self.scope.cancel()
        return trio.lowlevel.Abort.FAILED


def _unwrap_group(exc: BaseException) -> BaseException:
    """A tool's nursery wraps its errors in groups: a lone leaf is the real error."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class ToolActor:
    """Runs a :class:`ToolRegistry`'s tools; implements :class:`~kernel.ToolExecutor`.

    Start it in a nursery (``await nursery.start(actor.run)``) or with :func:`open_tool_actor`.
    An actor runs once. Requests wait in a memory channel of ``buffer`` entries; when it is full,
    ``execute_tool_call`` waits for room (the actor only hands each request to a new task, so the
    buffer drains at once unless the event loop is saturated).
    """

    def __init__(self, registry: ToolRegistry, *, buffer: int = 64) -> None:
        self.registry = registry
        self._buffer = buffer
        self._send: trio.MemorySendChannel[_Request] | None = None
        self._receive: trio.MemoryReceiveChannel[_Request] | None = None
        self._nursery: trio.Nursery | None = None
        self._lock = _SharedExclusiveLock()
        self._ran = False
        self._stopped = False
        self._closing = False
        self.calls_started = 0
        self.calls_finished = 0

    def _open_channel(self) -> trio.MemorySendChannel[_Request]:
        send, self._receive = trio.open_memory_channel[_Request](self._buffer)
        self._send = send
        if self._closing:
            send.close()
        return send

    # --- lifecycle ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The actor's task: receive calls and run each in a task of its own nursery.

        Returns after :meth:`close` once the calls in flight have finished; when cancelled, the
        calls in flight are cancelled and their callers (and any whose request was still queued)
        get :class:`ToolActorClosed`. Raises :class:`RuntimeError` if run twice.
        """
        if self._ran or self._stopped:
            raise RuntimeError("ToolActor.run: an actor runs once; create a new ToolActor")
        self._ran = True
        send = self._send if self._send is not None else self._open_channel()
        receive = self._receive
        assert receive is not None
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                start = nursery.start_soon
                run_call = self._run_call
                lock = self._lock
                receive_nowait = receive.receive_nowait
                while True:
                    try:
                        request = await receive.receive()
                    except trio.EndOfChannel:
                        break
                    start(run_call, request, lock.enqueue(not request.tool.parallel))
                    # drain what else is queued without a schedule point per request: a turn
                    # sends its calls together, and every receive() is a full scheduler pass
                    while True:
                        try:
                            request = receive_nowait()
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                        start(run_call, request, lock.enqueue(not request.tool.parallel))
        finally:
            self._stopped = True
            # Requests still queued were never started: answer them now. No checkpoint between
            # this drain and closing the channels, so no request can slip in unanswered.
            while True:
                try:
                    request = receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                request.error = ToolActorClosed("the tool actor stopped before this call started")
                request.finish()
            receive.close()
            send.close()

    def start_on_demand(self, nursery: trio.Nursery) -> None:
        """Run the actor in ``nursery``, starting it at the first call that needs it rather than
        now: a session whose model never calls a tool spends no task on its tools. Does not
        checkpoint; raises :class:`RuntimeError` if the actor has already run."""
        if self._ran or self._stopped:
            raise RuntimeError("ToolActor.start_on_demand: an actor runs once; create a new ToolActor")
        self._nursery = nursery

    def close(self) -> None:
        """Stop accepting calls; :meth:`run` returns once the calls in flight finish. Calls made
        after this get :class:`ToolActorClosed`. Idempotent; does not checkpoint."""
        self._closing = True
        if self._send is not None:
            self._send.close()

    @property
    def running(self) -> bool:
        """Whether the actor accepts calls."""
        return (self._send is not None or self._nursery is not None) and not self._stopped and not self._closing

    # --- ToolExecutor ---------------------------------------------------------------------

    async def classify_response_item(self, item: ResponseItem) -> CompletedResponseItem[ToolInvocation]:
        """Function calls and custom tool calls are tool calls (an unknown name too: running it
        answers "unknown tool"); every other item is not. Local: no message to the actor; does
        not checkpoint."""
        call: ToolInvocation
        if isinstance(item, FunctionCall):
            call = ToolInvocation(item.call_id, item.name, item.arguments, False, self.registry.get(item.name))
        elif isinstance(item, CustomToolCall):
            call = ToolInvocation(item.call_id, item.name, item.input, True, self.registry.get(item.name))
        else:
            return CompletedResponseItem.NonTool(item)  # type: ignore[return-value]
        return CompletedResponseItem.ToolCall(item, call)

    async def execute_tool_call(self, call: ToolInvocation) -> ResponseInputItem:
        """Run ``call`` in the actor and return its output item. Always checkpoints.

        Raises :class:`~kernel.RespondToModel` for an unknown tool, invalid arguments, or a tool
        that raised (``"tool 'x' failed: ValueError: ..."``); a tool's own
        :class:`~kernel.RespondToModel` / :class:`~kernel.FatalToolError` pass through;
        :class:`ToolActorClosed` if the actor is not running or stops while the call waits. If
        the caller is cancelled, the call's task in the actor is cancelled and this waits
        (shielded) until it has ended before re-raising ``trio.Cancelled``.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        tool = call.tool
        if tool is None:
            await trio.lowlevel.checkpoint()
            raise RespondToModel(f"unknown tool {call.name!r}")
        if call.custom != tool.freeform:
            await trio.lowlevel.checkpoint()
            if tool.freeform:
                raise RespondToModel(
                    f"tool {call.name!r} is a freeform tool: send its input as raw text, not JSON arguments"
                )
            raise RespondToModel(f"tool {call.name!r} is a function tool: call it with JSON arguments")
        try:
            args, kwargs = tool.parse_arguments(call.payload)
        except RespondToModel:
            await trio.lowlevel.checkpoint()
            raise
        request = _Request(call, tool, args, kwargs)
        send = self._send
        if send is None and self._nursery is not None and not self._stopped:
            send = self._open_channel()  # started on demand: queue this call, then start the task
            try:
                self._nursery.start_soon(self.run)
            except RuntimeError:  # the nursery is closed: the session is ending
                self._stopped = True
                send.close()
        if send is None:
            await trio.lowlevel.checkpoint()
            raise ToolActorClosed(
                "the tool actor is not running: start it with `await nursery.start(actor.run)` "
                "or `async with open_tool_actor(registry) as tools:`"
            )
        try:
            try:
                send.send_nowait(request)
            except trio.WouldBlock:
                await send.send(request)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            await trio.lowlevel.checkpoint()
            raise ToolActorClosed("the tool actor has stopped; calls can no longer run") from None
        if request.finished:  # only if send() blocked and the call ran meanwhile
            await trio.lowlevel.checkpoint()
        else:
            request.task = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(request.abort)
        if request.raise_cancel is not None:  # we were cancelled; the call's task has ended
            request.raise_cancel()
        if request.error is not None:
            raise request.error
        assert request.output is not None
        return request.output

    # --- the call task --------------------------------------------------------------------

    async def _run_call(self, request: _Request, place: _Waiter) -> None:
        tool = request.tool
        exclusive = place.exclusive
        lock = self._lock
        self.calls_started += 1
        try:
            with request.scope:
                await lock.wait(place)
                try:
                    payload = await tool.invoke(request.args, request.kwargs)
                finally:
                    lock.release(exclusive)
                request.output = request.call.output(payload)
            if request.output is None:  # the caller cancelled us; it re-raises its own Cancelled
                request.error = RespondToModel(f"tool {tool.name!r} was cancelled")
        except trio.Cancelled:
            request.error = ToolActorClosed(f"the tool actor stopped while tool {tool.name!r} was running")
            raise
        except Exception as raw:
            exc = _unwrap_group(raw)
            if isinstance(exc, (RespondToModel, FatalToolError)):
                request.error = exc
            else:
                request.error = RespondToModel(f"tool {tool.name!r} failed: {type(exc).__name__}: {exc}")
        finally:
            if request.output is None and request.error is None:
                request.error = ToolActorClosed(f"the tool actor stopped while tool {tool.name!r} was running")
            self.calls_finished += 1
            request.finish()


@asynccontextmanager
async def open_tool_actor(registry: ToolRegistry, *, buffer: int = 64) -> AsyncIterator[ToolActor]:
    """Start a :class:`ToolActor` for ``registry`` in a nursery of its own; on exit the actor is
    cancelled (calls still in flight end, their callers get :class:`ToolActorClosed`)."""
    actor = ToolActor(registry, buffer=buffer)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        try:
            yield actor
        finally:
            nursery.cancel_scope.cancel()
