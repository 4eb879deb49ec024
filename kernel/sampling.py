"""The retryable sampling loop (the seed's ``codex-rs/kernel/src/sampling.rs``; PROTOCOL §1).

Cancellation mapping: the seed passes a ``CancellationToken`` to ``prepare_sampling_request`` and a
child token to each ``run_single_sampling_request``. Here no token is passed anywhere: the loop runs
in the caller's Trio cancel scope, and cancelling that scope ends the loop wherever it waits (in
``prepare``, in a request, or in a backoff sleep) with ``trio.Cancelled``. A host that needs a
per-attempt scope opens one inside ``run_single_sampling_request``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

import attrs
import trio

from .errors import ContextWindowExceeded, KernelError, UsageLimitReached, backoff
from .items import ResponseItem
from .prompt import Prompt, PromptConfig, ToolConfig

__all__ = [
    "SamplingHost",
    "PreparedSamplingRequest",
    "SamplingRequestResult",
    "run_sampling_request_loop",
]

RuntimeT = TypeVar("RuntimeT")
ToolsT = TypeVar("ToolsT")
ClientSessionT = TypeVar("ClientSessionT")
ClientSessionT_contra = TypeVar("ClientSessionT_contra", contravariant=True)


@attrs.define
class PreparedSamplingRequest(Generic[RuntimeT, ToolsT]):
    """Retry-stable state built once per logical request (prompt settings, tool registration,
    per-request runtime and the host's tool executor), so retries only rebuild the prompt."""

    prompt_config: PromptConfig
    tool_config: ToolConfig
    runtime: RuntimeT
    tools: ToolsT


@attrs.frozen
class SamplingRequestResult:
    """The outcome of one logical sampling request: whether the model must be asked again (a tool
    call was made, or the host asked for it) and the last assistant message text, if any."""

    needs_follow_up: bool
    last_agent_message: str | None = None


class SamplingHost(Protocol[ClientSessionT_contra, RuntimeT, ToolsT]):
    """What a host plugs into :func:`run_sampling_request_loop` (the seed's ``SamplingLoopHost``).

    The host owns the concrete model transport, the tools, history and user-facing notices; the
    loop owns the retry policy.
    """

    async def prepare_sampling_request(
        self, input: Sequence[ResponseItem]
    ) -> PreparedSamplingRequest[RuntimeT, ToolsT]:
        """Build the retry-stable state for a request whose first prompt is ``input``."""
        ...

    async def history_prompt_input(self) -> list[ResponseItem]:
        """The prompt input rebuilt from history (used by every retry)."""
        ...

    async def run_single_sampling_request(
        self, runtime: RuntimeT, tools: ToolsT, client_session: ClientSessionT_contra, prompt: Prompt
    ) -> SamplingRequestResult:
        """Stream one response for ``prompt`` and run its tool calls; raise a
        :class:`~kernel.errors.KernelError` on failure."""
        ...

    def stream_max_retries(self) -> int:
        """Retry budget per transport."""
        ...

    def try_switch_fallback_transport(self, client_session: ClientSessionT_contra) -> bool:
        """Switch ``client_session`` to its fallback transport; ``False`` when there is none (or it
        is already in use)."""
        ...

    def should_notify_stream_retry(self, retries: int, err: KernelError) -> bool:
        """Whether retry number ``retries`` is worth a user-visible notice."""
        ...

    async def handle_context_window_exceeded(self) -> None:
        """Called before :class:`~kernel.errors.ContextWindowExceeded` propagates."""
        ...

    async def handle_usage_limit_reached(self, rate_limits: Any) -> None:
        """Called with the error's rate-limit snapshot before
        :class:`~kernel.errors.UsageLimitReached` propagates."""
        ...

    async def notify_fallback_to_http(self, err: KernelError) -> None:
        """Called after switching to the fallback transport."""
        ...

    async def notify_stream_retry(self, retries: int, max_retries: int, delay: float, err: KernelError) -> None:
        """Called before sleeping ``delay`` seconds for retry ``retries``/``max_retries``."""
        ...


async def run_sampling_request_loop(
    host: SamplingHost[ClientSessionT, Any, Any],
    client_session: ClientSessionT,
    initial_input: Sequence[ResponseItem],
    *,
    rng: random.Random | None = None,
) -> SamplingRequestResult:
    """Run one logical sampling request to a stable state, retrying as the seed does.

    * The first attempt uses ``initial_input``; every retry rebuilds the prompt from
      ``host.history_prompt_input()`` (a failed attempt may already have recorded items).
    * :class:`~kernel.errors.ContextWindowExceeded` and
      :class:`~kernel.errors.UsageLimitReached` run their host hook and propagate; any other
      non-retryable error propagates.
    * A retryable error is retried up to ``host.stream_max_retries()`` times, sleeping the
      server's requested delay (``err.retry_after``) or :func:`~kernel.errors.backoff`; when the
      budget is spent and ``host.try_switch_fallback_transport`` succeeds, the budget resets.

    ``rng`` seeds the backoff jitter. Always checkpoints (the host's calls and the sleeps do).
    Cancelling the caller's scope cancels the loop wherever it waits.
    """
    prepared = await host.prepare_sampling_request(initial_input)
    retries = 0
    first_input: Sequence[ResponseItem] | None = initial_input
    while True:
        if first_input is not None:
            prompt_input: Sequence[ResponseItem] = first_input
            first_input = None
        else:
            prompt_input = await host.history_prompt_input()
        prompt = prepared.prompt_config.build_prompt(prompt_input, prepared.tool_config)
        try:
            return await host.run_single_sampling_request(prepared.runtime, prepared.tools, client_session, prompt)
        except ContextWindowExceeded:
            await host.handle_context_window_exceeded()
            raise
        except UsageLimitReached as exc:
            await host.handle_usage_limit_reached(exc.rate_limits)
            raise
        except KernelError as exc:
            if not exc.retryable:
                raise
            err = exc

        max_retries = host.stream_max_retries()
        if retries >= max_retries and host.try_switch_fallback_transport(client_session):
            await host.notify_fallback_to_http(err)
            retries = 0
            continue
        if retries < max_retries:
            retries += 1
            # The seed honours a requested delay on stream errors; every retryable error here
            # carries the server's delay in ``retry_after`` (429 / 5xx Retry-After included):
            # when a server names a delay we never retry sooner (PROTOCOL §3).
            delay = err.retry_after if err.retry_after is not None else backoff(retries, rng)
            if host.should_notify_stream_retry(retries, err):
                await host.notify_stream_retry(retries, max_retries, delay, err)
            await trio.sleep(delay)
        else:
            raise err
