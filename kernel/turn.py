"""The default single sampling request and the turn supervisor, written against protocols only.

:class:`TurnHost` implements :class:`~kernel.sampling.SamplingHost` from four small parts a host
plugs in: a :class:`~kernel.stream.ModelClient`, a :class:`~kernel.tools.ToolExecutor`, a
:class:`History` and an :class:`~kernel.events.EventSink`. Its
:meth:`~TurnHost.run_single_sampling_request` streams one response, classifies each completed item,
starts every tool call the moment its item is complete (concurrently, in a nursery, while the
stream goes on), drains them, and records their outputs in call order.

:class:`Turn` repeats sampling requests while a follow-up is needed and owns the turn's cancel
scope: :meth:`Turn.interrupt` (or cancelling any enclosing scope) stops the stream and the running
tools, and every call that has no output yet gets an "aborted" output, so history stays
well-formed. Outputs are recorded under a shielded scope so an interrupt cannot lose them. An
assistant message cut off mid-stream is recorded too, as far as its text deltas were published: an
assistant :class:`~kernel.items.Message` with ``status: "incomplete"`` (see
:func:`partial_message`), before the aborted outputs, so what the user saw is what the model sees
next.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from typing import Any, Generic, Literal, Protocol

import attrs
import trio

from . import events as ev
from .errors import ContextWindowExceeded, FatalError, KernelError, StreamError
from .items import (
    CustomToolCall,
    CustomToolCallOutput,
    FunctionCall,
    FunctionCallOutput,
    LocalShellCall,
    Message,
    ResponseInputItem,
    ResponseItem,
)
from .prompt import Prompt, PromptConfig, ToolConfig
from .sampling import PreparedSamplingRequest, SamplingRequestResult, run_sampling_request_loop
from .stream import (
    Completed,
    Created,
    FallbackTransport,
    ModelClient,
    OutputItemAdded,
    OutputItemDone,
    OutputTextDelta,
    RateLimitsSnapshot,
    ReasoningContentDelta,
    ReasoningSummaryDelta,
    ReasoningSummaryPartAdded,
    TokenUsage,
    ToolCallInputDelta,
    TransportUsed,
)
from .tools import (
    CallT,
    CompletedResponseItem,
    ToolExecutor,
    execute_tool_call_with_default_output,
    response_input_to_response_item,
)

__all__ = [
    "History",
    "TurnHost",
    "Turn",
    "TurnOutcome",
    "run_turn",
    "aborted_output_text",
    "partial_message",
    "SHELL_TOOL_NAMES",
    "Compactor",
]

SHELL_TOOL_NAMES = frozenset({"shell", "container.exec", "local_shell", "shell_command", "exec_command"})
"""Tools whose interrupted calls get the shell-style aborted text."""


class Compactor(Protocol):
    """What shortens a turn's history when it outgrows the context window (a host plugs one in as
    :attr:`TurnHost.compactor`; see ``actors.compaction``). Both calls run between sampling
    requests, so a tool call and its output are never split by a compaction."""

    async def before_request(self, items: Sequence[ResponseItem]) -> bool:
        """Called with the next request's input: compact when its estimate passes the threshold;
        ``True`` when the history was replaced."""
        ...

    async def after_window_exceeded(self, items: Sequence[ResponseItem]) -> bool:
        """Called when the request with this input was refused with
        :class:`~kernel.errors.ContextWindowExceeded`: compact if possible; ``True`` retries the
        request once (the retry budget is not spent)."""
        ...


class History(Protocol):
    """The conversation log a turn records into and rebuilds prompts from."""

    async def record(self, items: Sequence[ResponseItem]) -> None:
        """Append ``items`` (in order)."""
        ...

    async def prompt_input(self) -> list[ResponseItem]:
        """The items to send as the next prompt's input."""
        ...


def aborted_output_text(item: ResponseItem, seconds: float) -> str:
    """Codex's text for a call cut off by the user: ``"aborted by user after 1.2s"``, or for
    shell-family tools ``"Wall time: 1.2 seconds\\naborted by user"``."""
    shell = isinstance(item, LocalShellCall) or (isinstance(item, FunctionCall) and item.name in SHELL_TOOL_NAMES)
    if shell:
        return f"Wall time: {seconds:.1f} seconds\naborted by user"
    return f"aborted by user after {seconds:.1f}s"


def partial_message(deltas: Sequence[OutputTextDelta]) -> Message | None:
    """The assistant message an interrupt cut off, from the text deltas published for it.

    The message is the item of the last delta: its text is the concatenation of that item's
    deltas, in order; it is recorded as ``{"type": "message", "role": "assistant", "content":
    [{"type": "output_text", "text": ...}], "status": "incomplete"}`` (``id`` is the delta's
    ``item_id``; the Responses request body drops ids). ``None`` when there are no deltas or their
    text is empty. Does not raise; does not checkpoint.
    """
    if not deltas:
        return None
    item_id = deltas[-1].item_id
    text = "".join([d.delta for d in deltas if d.item_id == item_id])
    if not text:
        return None
    return Message(
        role="assistant",
        content=({"type": "output_text", "text": text},),
        id=item_id,
        extra={"status": "incomplete"},
    )


def _call_name(item: ResponseItem) -> str:
    if isinstance(item, (FunctionCall, CustomToolCall)):
        return item.name
    if isinstance(item, LocalShellCall):
        return "local_shell"
    return type(item).__name__


def _with_success(output: ResponseInputItem, success: bool) -> ResponseInputItem:
    if isinstance(output, (FunctionCallOutput, CustomToolCallOutput)) and output.output.success is None:
        return attrs.evolve(output, output=attrs.evolve(output.output, success=success))
    return output


@attrs.define(eq=False)
class _InFlight:
    """One tool call of the current request, in call order."""

    item: ResponseItem
    call: Any
    started: float
    output: ResponseInputItem | None = None


@attrs.define(eq=False)
class TurnHost(Generic[CallT]):
    """The default :class:`~kernel.sampling.SamplingHost`, built from protocols.

    ``model`` is the client session passed through the loop; if it implements
    :class:`~kernel.stream.FallbackTransport` the loop may switch it once the budget is spent.
    ``max_retries`` is the per-transport retry budget (codex: 5). Token usage and rate limits are
    accumulated in ``total_usage`` / ``rate_limits``; ``context_full`` is set on
    :class:`~kernel.errors.ContextWindowExceeded`.
    """

    model: ModelClient
    tools: ToolExecutor[CallT]
    history: History
    events: ev.EventSink
    prompt_config: PromptConfig = attrs.field(factory=PromptConfig)
    tool_config: ToolConfig = attrs.field(factory=ToolConfig)
    max_retries: int = 5
    rng: random.Random | None = None
    clock: Callable[[], float] = trio.current_time
    total_usage: TokenUsage = attrs.field(factory=TokenUsage)
    rate_limits: Any = None
    context_full: bool = False
    compactor: Compactor | None = None
    """Shortens the history when it outgrows the window (``None``: the turn fails instead)."""
    turn_id: str = ""
    """The running turn's id, stamped on every event this host publishes (:class:`Turn` sets it)."""

    async def publish(self, events: list[ev.Event]) -> None:
        """Stamp ``events`` with :attr:`turn_id` and hand them to the sink (one mechanism for every
        event of a turn, the decoder's deltas included). Checkpoints as the sink does."""
        turn_id = self.turn_id
        for event in events:
            _set(event, "turn_id", turn_id)
        await self.events.publish(events)

    # --- SamplingHost --------------------------------------------------------------------

    async def prepare_sampling_request(
        self, input: Sequence[ResponseItem]
    ) -> PreparedSamplingRequest[None, ToolExecutor[CallT]]:
        """Retry-stable state: this host's prompt and tool configs and its executor. Does not
        checkpoint."""
        return PreparedSamplingRequest(self.prompt_config, self.tool_config, None, self.tools)

    async def history_prompt_input(self) -> list[ResponseItem]:
        """``history.prompt_input()``."""
        return await self.history.prompt_input()

    def stream_max_retries(self) -> int:
        """``max_retries``."""
        return self.max_retries

    def try_switch_fallback_transport(self, client_session: Any) -> bool:
        """Delegates to the client when it is a :class:`~kernel.stream.FallbackTransport`."""
        if isinstance(client_session, FallbackTransport):
            return client_session.try_switch_fallback_transport()
        return False

    def should_notify_stream_retry(self, retries: int, err: KernelError) -> bool:
        """Quiet on the first retry when a fallback transport exists (a single blip stays
        silent); otherwise always."""
        has_fallback = isinstance(self.model, FallbackTransport) and self.model.has_fallback()
        # a wait the server asked for is always shown (the user sees why nothing happens)
        return retries > 1 or not has_fallback or (err.retry_after or 0.0) > 0

    async def handle_context_window_exceeded(self) -> None:
        """Mark the context full and tell the UI."""
        self.context_full = True
        await self.publish([ev.ContextWindowFull()])

    async def handle_usage_limit_reached(self, rate_limits: Any) -> None:
        """Record the snapshot and tell the UI."""
        if rate_limits is not None:
            self.rate_limits = rate_limits
            await self.publish([ev.RateLimitsUpdated(rate_limits)])

    async def notify_fallback_to_http(self, err: KernelError) -> None:
        """A :class:`~kernel.events.FallbackWarning`."""
        await self.publish([ev.FallbackWarning(f"Falling back from WebSockets to HTTPS transport. {err}")])

    async def notify_stream_retry(self, retries: int, max_retries: int, delay: float, err: KernelError) -> None:
        """A :class:`~kernel.events.StreamRetry` ("Reconnecting... n/max")."""
        await self.publish(
            [ev.StreamRetry(f"Reconnecting... {retries}/{max_retries}", retries, max_retries, delay, str(err))]
        )

    async def run_single_sampling_request(
        self, runtime: Any, tools: ToolExecutor[CallT], client_session: ModelClient, prompt: Prompt
    ) -> SamplingRequestResult:
        """Stream one response and run its tool calls (PROTOCOL §1).

        Tool calls start as soon as their item is complete and run concurrently with the stream.
        On a stream failure the calls already started are drained (their outputs recorded) before
        the error propagates, so a retry's history is complete. On cancellation (or a fatal tool
        error) every call without an output gets an aborted one. Outputs are recorded in call
        order. On cancellation an assistant message whose text was streaming (deltas published,
        no ``output_item.done``) is first recorded as an incomplete message
        (:func:`partial_message`); a stream error or a fatal tool error records no partial text.
        """
        in_flight: list[_InFlight] = []
        state = _RequestState()
        error: KernelError | None = None
        aborted = False
        try:
            with trio.CancelScope() as request_scope:
                state.scope = request_scope
                async with trio.open_nursery() as nursery:
                    try:
                        await self._consume_stream(tools, client_session, prompt, nursery, in_flight, state)
                    except KernelError as exc:
                        # drain: the calls already started finish (the nursery waits for them)
                        error = exc
        except BaseException:
            aborted = True  # cancelled (interrupt or an enclosing scope): the turn ends aborted
            raise
        finally:
            if aborted and state.shown:
                await self._record_partial(state)
            # every exit, cancellation included: each call gets exactly one output, in call order
            await self._record_outputs(in_flight, state)
        if state.fatal is not None:
            raise state.fatal
        if error is not None:
            raise error
        return SamplingRequestResult(state.needs_follow_up, state.last_agent_message)

    # --- internals -------------------------------------------------------------------------

    async def _consume_stream(
        self,
        tools: ToolExecutor[CallT],
        client: ModelClient,
        prompt: Prompt,
        nursery: trio.Nursery,
        in_flight: list[_InFlight],
        state: _RequestState,
    ) -> None:
        partial = state.partial  # the text deltas of the message streaming now (cleared on its done)
        try:
            async with client.stream(prompt) as batches:
                async for batch in batches:
                    out: list[ev.Event] = []
                    for event in batch:
                        # hot path: deltas first, with exact-type checks
                        kind = type(event)
                        if kind is OutputTextDelta:  # the same class as ev.TextDelta: forwarded
                            out.append(event)  # type: ignore[arg-type]
                            partial.append(event)  # type: ignore[arg-type]
                        elif kind is OutputItemDone:
                            await self._on_item_done(event.item, tools, nursery, in_flight, state, out)  # type: ignore[union-attr]
                        elif kind is ToolCallInputDelta:  # the same class as ev.ToolInputDelta
                            out.append(event)  # type: ignore[arg-type]
                        elif kind is ReasoningSummaryDelta:
                            out.append(ev.ReasoningDelta(event.item_id, event.delta, "summary"))  # type: ignore[union-attr]
                        elif kind is ReasoningContentDelta:
                            out.append(ev.ReasoningDelta(event.item_id, event.delta, "content"))  # type: ignore[union-attr]
                        elif kind is ReasoningSummaryPartAdded:
                            out.append(ev.ReasoningDelta(event.item_id, "", "summary", True))  # type: ignore[union-attr]
                        elif kind is OutputItemAdded:
                            out.append(ev.ItemStarted(event.item))  # type: ignore[union-attr]
                        elif kind is Completed:
                            usage = event.usage  # type: ignore[union-attr]
                            if usage is not None:
                                self.total_usage = self.total_usage + usage
                                out.append(ev.TokenUsageUpdated(usage, self.total_usage))
                            if event.end_turn is False:  # type: ignore[union-attr]
                                state.needs_follow_up = True
                            state.completed = True
                            break
                        elif kind is RateLimitsSnapshot:
                            self.rate_limits = event
                            out.append(ev.RateLimitsUpdated(event))
                        elif kind is TransportUsed:
                            out.append(ev.RequestSent(event.name, event.incremental))  # type: ignore[union-attr]
                        elif kind is Created:
                            pass
                    if out:
                        state.shown = len(partial)  # handed to the sink: the user may see them
                        await self.publish(out)
                    if state.completed:
                        break
        except KernelError:
            raise
        except (OSError, ValueError) as exc:  # a transport that leaked a raw error
            raise StreamError(f"model stream failed: {type(exc).__name__}: {exc}") from exc
        if not state.completed:
            raise StreamError("stream closed before response.completed")

    async def _on_item_done(
        self,
        item: ResponseItem,
        tools: ToolExecutor[CallT],
        nursery: trio.Nursery,
        in_flight: list[_InFlight],
        state: _RequestState,
        out: list[ev.Event],
    ) -> None:
        classified = await tools.classify_response_item(item)
        if isinstance(classified, CompletedResponseItem.ToolCall):
            slot = _InFlight(classified.item, classified.call, self.clock())
            # atomic: a recorded call is always tracked, so it always gets an output
            with trio.CancelScope(shield=True):
                await self.history.record([classified.item])
                in_flight.append(slot)
            state.needs_follow_up = True
            out.append(ev.ItemCompleted(classified.item))
            out.append(ev.ToolCallStarted(classified.call.call_id, _call_name(classified.item), classified.item))
            # publish before starting so "started" always precedes "finished"
            state.shown = len(state.partial)
            await self.publish(out)
            out.clear()
            nursery.start_soon(self._run_call, tools, slot, state)
        elif isinstance(classified, CompletedResponseItem.ImmediateResponse):
            recorded: list[ResponseItem] = [classified.item]
            response_item = response_input_to_response_item(classified.response)
            if response_item is not None:
                recorded.append(response_item)
            await self.history.record(recorded)
            out.append(ev.ItemCompleted(classified.item))
            state.needs_follow_up = True
        else:
            await self.history.record([classified.item])
            if isinstance(item, Message) and state.partial:
                # the streaming message is recorded whole: its deltas are no longer partial
                state.partial.clear()
                state.shown = 0
            out.append(ev.ItemCompleted(classified.item))
            if isinstance(item, Message) and item.role == "assistant":
                text = item.text()
                if text:
                    state.last_agent_message = text

    async def _run_call(self, tools: ToolExecutor[CallT], slot: _InFlight, state: _RequestState) -> None:
        status = "ok"
        try:
            output = await execute_tool_call_with_default_output(tools, slot.call)
        except FatalError as exc:
            status = "fatal"
            output = _with_success(slot.call.error_response(str(exc)), False)
            state.fail(exc)
        except (trio.Cancelled, KeyboardInterrupt):
            raise
        except Exception as exc:  # a tool that broke its contract: the turn ends, history stays whole
            status = "fatal"
            fatal = FatalError(f"tool {_call_name(slot.item)!r} raised {type(exc).__name__}: {exc}")
            fatal.__cause__ = exc
            output = _with_success(slot.call.error_response(str(fatal)), False)
            state.fail(fatal)
        else:
            success = None
            if isinstance(output, (FunctionCallOutput, CustomToolCallOutput)):
                success = output.output.success
            if success is False:
                status = "error"
        slot.output = output
        with trio.CancelScope(shield=True):
            await self.publish([ev.ToolCallFinished(slot.call.call_id, output, status, self.clock() - slot.started)])

    async def _record_partial(self, state: _RequestState) -> None:
        """Record the interrupted message's published text as an incomplete message. Shielded."""
        message = partial_message(state.partial[: state.shown])
        if message is not None:
            with trio.CancelScope(shield=True):
                await self.history.record([message])

    async def _record_outputs(self, in_flight: list[_InFlight], state: _RequestState) -> None:
        """Record every call's output in call order; calls without one get an aborted output.
        Shielded: an interrupt must not lose outputs."""
        if not in_flight:
            return
        with trio.CancelScope(shield=True):
            now = self.clock()
            recorded: list[ResponseItem] = []
            finished: list[ev.Event] = []
            for slot in in_flight:
                output = slot.output
                if output is None:
                    output = _with_success(
                        slot.call.error_response(aborted_output_text(slot.item, now - slot.started)), False
                    )
                    slot.output = output
                    finished.append(ev.ToolCallFinished(slot.call.call_id, output, "aborted", now - slot.started))
                item = response_input_to_response_item(output)
                if item is not None:
                    recorded.append(item)
            await self.history.record(recorded)
            if finished:
                await self.publish(finished)


@attrs.define(eq=False)
class _RequestState:
    needs_follow_up: bool = False
    last_agent_message: str | None = None
    completed: bool = False
    fatal: FatalError | None = None
    scope: trio.CancelScope | None = None
    partial: list[OutputTextDelta] = attrs.field(factory=list)
    """Text deltas since the last completed message (the one streaming now)."""
    shown: int = 0
    """How many of ``partial`` were handed to the event sink."""

    def fail(self, exc: FatalError) -> None:
        """A fatal tool error: stop the stream and the other calls."""
        if self.fatal is None:
            self.fatal = exc
        if self.scope is not None:
            self.scope.cancel()


@attrs.frozen
class TurnOutcome:
    """How a turn ended: ``status`` is ``"completed"``, ``"aborted"`` or ``"failed"`` (then
    ``error`` is the kernel error)."""

    turn_id: str
    status: Literal["completed", "aborted", "failed"]
    last_agent_message: str | None = None
    error: KernelError | None = None


_turn_ids = itertools.count(1)
_set = object.__setattr__  # events are frozen: the turn id is stamped once, before the sink sees them


class Turn:
    """One turn: record the user's input, then sample while a follow-up is needed.

    ``await turn.run()`` returns a :class:`TurnOutcome` and publishes exactly one of
    :class:`~kernel.events.TurnCompleted`, :class:`~kernel.events.TurnAborted`,
    :class:`~kernel.events.TurnFailed`. :meth:`interrupt` may be called from any task at any time
    (before or during ``run``). If an *enclosing* scope is cancelled, the turn still records
    aborted outputs and publishes ``TurnAborted``, then lets ``trio.Cancelled`` propagate.
    """

    def __init__(self, host: TurnHost[Any], input: Sequence[ResponseItem], *, turn_id: str | None = None) -> None:
        self.host = host
        self.input = list(input)
        self.turn_id = turn_id or f"turn-{next(_turn_ids)}"
        self._scope = trio.CancelScope()
        self.outcome: TurnOutcome | None = None

    def interrupt(self) -> None:
        """Cancel the turn: the stream and the running tools stop; aborted outputs are recorded."""
        self._scope.cancel()

    async def run(self) -> TurnOutcome:
        """Run the turn to its end. Checkpoints."""
        host = self.host
        last: str | None = None
        outcome: TurnOutcome | None = None
        host.turn_id = self.turn_id
        try:
            with trio.CancelScope(shield=True):
                # accepted input is recorded even if an interrupt is already pending
                await host.publish([ev.TurnStarted(self.turn_id)])
                if self.input:
                    await host.history.record(self.input)
            with self._scope:
                while True:
                    prompt_input = await host.history.prompt_input()
                    compactor = host.compactor
                    if compactor is not None and await compactor.before_request(prompt_input):
                        prompt_input = await host.history.prompt_input()
                    try:
                        result = await run_sampling_request_loop(host, host.model, prompt_input, rng=host.rng)
                    except ContextWindowExceeded:
                        # refused for the window: compact and retry this request once
                        if compactor is None or not await compactor.after_window_exceeded(prompt_input):
                            raise
                        host.context_full = False
                        prompt_input = await host.history.prompt_input()
                        result = await run_sampling_request_loop(host, host.model, prompt_input, rng=host.rng)
                    if result.last_agent_message is not None:
                        last = result.last_agent_message
                    if not result.needs_follow_up:
                        break
            status: Literal["completed", "aborted"] = "aborted" if self._scope.cancelled_caught else "completed"
            outcome = TurnOutcome(self.turn_id, status, last)
        except KernelError as exc:
            outcome = TurnOutcome(self.turn_id, "failed", last, exc)
        finally:
            # exactly one final event, whatever ends the turn: an enclosing cancellation (possibly
            # inside an exception group) or any other BaseException counts as aborted
            final = outcome or TurnOutcome(self.turn_id, "aborted", last)
            self.outcome = final
            with trio.CancelScope(shield=True):
                await host.publish([_final_event(final, "interrupted" if outcome else "cancelled")])
        return final


def _final_event(outcome: TurnOutcome, reason: str) -> ev.Event:
    if outcome.status == "completed":
        return ev.TurnCompleted(outcome.turn_id, outcome.last_agent_message)
    if outcome.status == "aborted":
        return ev.TurnAborted(outcome.turn_id, reason)
    assert outcome.error is not None
    return ev.TurnFailed(outcome.turn_id, str(outcome.error), type(outcome.error).__name__)


async def run_turn(host: TurnHost[Any], input: Sequence[ResponseItem], *, turn_id: str | None = None) -> TurnOutcome:
    """Run one :class:`Turn` of ``input`` on ``host`` and return its outcome."""
    return await Turn(host, input, turn_id=turn_id).run()
