"""Context compaction for a session: the :class:`kernel.turn.Compactor` a session plugs into its turn
host, so a conversation outlives the model's context window.

**When.** Before a request whose estimated input (the last response's reported input tokens plus
bytes/4 of what was added since: :func:`kernel.compaction.estimate_input_tokens`) reaches
``ModelSettings.auto_compact_tokens`` (default 0.9 × ``context_window`` when that is known), and
after a request is refused with ``context_length_exceeded`` — then the request is retried once,
without spending the retry budget. On demand: :meth:`SessionCompactor.compact` (``session.compact()``).
Compaction runs between requests, so a tool call and its output are never split.

**How** (``ModelSettings.compaction``):

* ``"remote"`` — ``POST {base_url}/responses/compact``; its output (the user messages and an opaque
  ``compaction`` item) becomes the history, verbatim (the item round-trips byte-for-byte);
* ``"local"`` — the model itself is asked for a summary (:data:`kernel.compaction.COMPACTION_PROMPT`,
  no tools), and the history becomes the recent user messages within a budget plus that summary
  (:func:`kernel.compaction.build_compacted_history`, as codex builds it);
* ``"auto"`` — remote on the Responses wire until the endpoint answers 404/405 (then local: for
  every session of the ModelActor, which remembers it, or for the session when its model is a bare
  client), local on the Chat wire;
* ``"server"`` — the service compacts (``context_management`` on each request, see
  :mod:`actors.model`); on a refusal anyway, local;
* ``"off"`` — a refusal fails the turn (the seed's behaviour).

The replacement goes to the history with :meth:`~actors.history.HistoryActor.replace` (one durable
``compacted`` rollout record; a resume starts from it). A compaction that fails (the summary
request failed, the endpoint refused) or cannot shrink the history leaves the history unchanged and
the turn fails with a :class:`CompactionFailed` naming why. Events: :class:`~kernel.CompactionStarted`
and :class:`~kernel.CompactionFinished`; the summary request's usage counts in the turn's totals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import trio

from kernel import events as ev
from kernel.compaction import (
    COMPACTION_PROMPT,
    DEFAULT_USER_MESSAGE_BUDGET_TOKENS,
    build_compacted_history,
    compact_threshold,
    drop_before_last_compaction,
    estimate_input_tokens,
    estimate_tokens,
    replacement_from_remote,
    should_compact,
    trim_to_budget,
)
from kernel.errors import ContextWindowExceeded, InvalidRequest, KernelError, WireFormatError
from kernel.items import Message, ResponseItem
from kernel.prompt import ToolConfig
from kernel.stream import Completed, OutputItemDone, OutputTextDelta
from kernel.turn import TurnHost

from .model import HttpSseTransport, ModelActor, ModelSettings
from .model._responses import input_wire

__all__ = ["SessionCompactor", "CompactionFailed"]


class CompactionFailed(ContextWindowExceeded):
    """The history outgrew the window and compacting it did not help (the message says why)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


@attrs.define(eq=False)
class SessionCompactor:
    """A session's :class:`kernel.turn.Compactor` (see the module docstring). ``history`` has
    ``replace(items, reason=, tokens_before=, tokens_after=)``; ``actor`` (when the session's model
    is a :class:`ModelActor`) serves the remote call over its HTTP transport."""

    host: TurnHost[Any]
    history: Any
    settings: ModelSettings
    actor: ModelActor | None = None
    compactions: int = 0
    no_route: bool = False
    """The endpoint answered ``/responses/compact`` with 404/405 (without an actor to remember it)."""
    _last_total_input: int = 0
    _last_len: int | None = None

    @property
    def threshold(self) -> int | None:
        """The estimate at which a request is compacted first (``None``: only on refusal)."""
        s = self.settings
        if s.compaction in ("off", "server"):
            return None
        return compact_threshold(s.context_window, s.auto_compact_tokens)

    def _estimate(self, items: Sequence[ResponseItem]) -> int:
        """The input estimate: the last response's reported input tokens (from the host's running
        total) plus bytes/4 of the items added since."""
        total = self.host.total_usage.input_tokens
        last_input = total - self._last_total_input if total > self._last_total_input else None
        self._last_total_input = total
        since = self._last_len if (last_input is not None and self._last_len is not None) else 0
        estimate = estimate_input_tokens(last_input, since, items)
        self._last_len = len(items)
        return estimate

    # --- kernel.turn.Compactor -----------------------------------------------------------------

    async def before_request(self, items: Sequence[ResponseItem]) -> bool:
        """Compact when the estimate reaches the threshold (server mode: drop what precedes the
        service's latest compaction item instead)."""
        if self.settings.compaction == "server":
            return await self._drop_compacted(items)
        threshold = self.threshold
        if threshold is None:
            return False
        estimate = self._estimate(items)
        if not should_compact(estimate, threshold):
            return False
        return await self.compact(items, reason="threshold", tokens_before=estimate)

    async def _drop_compacted(self, items: Sequence[ResponseItem]) -> bool:
        kept = drop_before_last_compaction(items)
        if len(kept) == len(items):
            return False
        before, after = estimate_tokens(items), estimate_tokens(kept)
        await self.host.publish([ev.CompactionStarted("server", before)])
        with trio.CancelScope(shield=True):
            await self.history.replace(kept, reason="server", tokens_before=before, tokens_after=after)
        self.compactions += 1
        self._last_len = None
        await self.host.publish([ev.CompactionFinished("server", len(items), len(kept), before, after)])
        return True

    async def after_window_exceeded(self, items: Sequence[ResponseItem]) -> bool:
        """Compact after a refusal (unless compaction is off)."""
        if self.settings.compaction == "off":
            return False
        return await self.compact(items, reason="window")

    # --- the work --------------------------------------------------------------------------------

    async def compact(
        self, items: Sequence[ResponseItem] | None = None, *, reason: str = "manual", tokens_before: int | None = None
    ) -> bool:
        """Compact the history (``items``: what it holds now, read when not given). ``True``
        when it was replaced; raises :class:`CompactionFailed` when it could not be."""
        if items is None:
            items = await self.history.prompt_input()
        before = tokens_before if tokens_before is not None else estimate_tokens(items)
        await self.host.publish([ev.CompactionStarted(reason, before)])
        mode = "local"
        try:
            replacement: list[ResponseItem] | None = None
            if self._remote_allowed():
                replacement = await self._remote(items)
                mode = "remote"
            if replacement is None:
                mode = "local"
                replacement = await self._local(items)
            after = estimate_tokens(replacement)
            if after >= before and reason != "manual":
                raise CompactionFailed(
                    f"compaction could not shrink the history ({before} → {after} estimated tokens): "
                    "the conversation does not fit the model's context window"
                )
            with trio.CancelScope(shield=True):
                await self.history.replace(replacement, reason=reason, tokens_before=before, tokens_after=after)
        except KernelError as exc:
            failed = exc if isinstance(exc, CompactionFailed) else CompactionFailed(f"compaction failed: {exc}")
            await self.host.publish([ev.CompactionFinished(mode, len(items), len(items), before, before, str(failed))])
            raise failed from exc
        self.compactions += 1
        self._last_len = None  # the next estimate starts from the replacement
        self._last_total_input = self.host.total_usage.input_tokens
        self.host.context_full = False
        await self.host.publish([ev.CompactionFinished(mode, len(items), len(replacement), before, after)])
        return True

    def _remote_allowed(self) -> bool:
        s = self.settings
        if s.wire != "responses" or s.compaction not in ("auto", "remote"):
            return False
        if s.compaction == "remote":
            return True
        return not (self.no_route or (self.actor is not None and self.actor.compact_route is False))

    def _http(self) -> HttpSseTransport | None:
        if self.actor is None:
            return None
        for transport in self.actor.transports:
            if isinstance(transport, HttpSseTransport):
                return transport
            fallback = getattr(transport, "fallback", None)
            if isinstance(fallback, HttpSseTransport):
                return fallback
        return None

    async def _remote(self, items: Sequence[ResponseItem]) -> list[ResponseItem] | None:
        """``POST /responses/compact``; ``None`` when the endpoint has no such route (auto mode
        then goes local, and remembers it)."""
        http = self._http()
        if http is None:  # a WebSocket-only actor: a client of its own for this one call
            own = HttpSseTransport(self.settings)
            async with own.open():
                return await self._remote_over(own, items)
        return await self._remote_over(http, items)

    async def _remote_over(self, http: HttpSseTransport, items: Sequence[ResponseItem]) -> list[ResponseItem] | None:
        prompt = self.host.prompt_config.build_prompt(items, ToolConfig())
        body = {
            "model": self.settings.model,
            "input": [input_wire(item) for item in prompt.formatted_input()],
            "instructions": prompt.base_instructions,
        }
        try:
            answer = await http.post_json("responses/compact", body)
        except InvalidRequest as exc:
            if self.settings.compaction == "auto" and exc.http_status in (404, 405):
                self.no_route = True
                if self.actor is not None:
                    self.actor.compact_route = False
                return None
            raise
        output = answer.get("output") if isinstance(answer, dict) else None
        try:
            replacement = replacement_from_remote(output if isinstance(output, list) else [])
        except WireFormatError as exc:
            raise CompactionFailed(f"the /responses/compact answer is unusable: {exc}") from None
        if self.actor is not None:
            self.actor.compact_route = True
        await self._count_usage(answer.get("usage") if isinstance(answer, dict) else None)
        return replacement

    async def _local(self, items: Sequence[ResponseItem]) -> list[ResponseItem]:
        """Ask the model for a summary (no tools) and build the replacement history around it."""
        source = list(items)
        limit = self.threshold
        if limit is not None:
            source = trim_to_budget(source, max(1, limit - estimate_tokens([Message.user(COMPACTION_PROMPT)])))
        for attempt in range(2):
            try:
                summary = await self._summarise(source)
                break
            except ContextWindowExceeded:
                if attempt or len(source) < 2:
                    raise
                source = trim_to_budget(source, max(1, estimate_tokens(source) // 2))  # the oldest half goes
        budget = min(DEFAULT_USER_MESSAGE_BUDGET_TOKENS, (limit or DEFAULT_USER_MESSAGE_BUDGET_TOKENS * 4) // 4)
        return build_compacted_history((), items, summary, budget_tokens=budget)

    async def _summarise(self, items: Sequence[ResponseItem]) -> str:
        prompt = self.host.prompt_config.build_prompt([*items, Message.user(COMPACTION_PROMPT)], ToolConfig())
        text: list[str] = []
        final: str | None = None
        async with self.host.model.stream(prompt) as batches:
            async for batch in batches:
                for event in batch:
                    kind = type(event)
                    if kind is OutputTextDelta:
                        text.append(event.delta)  # type: ignore[union-attr]
                    elif kind is OutputItemDone and isinstance(event.item, Message):  # type: ignore[union-attr]
                        if event.item.role == "assistant":  # type: ignore[union-attr]
                            final = (final or "") + event.item.text()  # type: ignore[union-attr]
                    elif kind is Completed:
                        usage = event.usage  # type: ignore[union-attr]
                        if usage is not None:
                            self.host.total_usage = self.host.total_usage + usage
                            await self.host.publish([ev.TokenUsageUpdated(usage, self.host.total_usage)])
        summary = final if final is not None else "".join(text)
        if not summary.strip():
            raise CompactionFailed("the model returned an empty summary")
        return summary

    async def _count_usage(self, usage: Any) -> None:
        from kernel.stream import TokenUsage

        parsed = TokenUsage.from_wire(usage)
        if parsed is not None:
            self.host.total_usage = self.host.total_usage + parsed
            await self.host.publish([ev.TokenUsageUpdated(parsed, self.host.total_usage)])
