"""The server's side of the conversation: elicitation, sampling and progress.

* ``elicit(server, message, requested_schema) -> ElicitAnswer`` answers ``elicitation/create``
  (form mode); without a callback every question is declined (URL mode is always declined).
* ``sample(server, messages, system_prompt, max_tokens) -> (text, model, usage)`` answers
  ``sampling/createMessage``; raising :class:`SamplingDeclined` (or any exception) sends the
  server an error; without a callback the client does not offer sampling and the SDK answers
  with an error. :func:`model_sampler` builds one from a model client or actor plus an approval
  predicate; :func:`open_model_sampler` from :class:`~actors.model.ModelSettings`.
* ``on_progress(ToolProgress)`` receives each ``notifications/progress`` of a running call.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import attrs
import mcp_types as types
import trio

from kernel.events import ToolProgress
from kernel.items import Message
from kernel.prompt import Prompt
from kernel.stream import Completed, ModelClient, OutputItemDone, OutputTextDelta, TokenUsage

if TYPE_CHECKING:
    from actors.model import ModelActor, ModelSettings

__all__ = [
    "ElicitAnswer",
    "ElicitFn",
    "SampleFn",
    "ProgressFn",
    "ApproveFn",
    "SamplingDeclined",
    "model_sampler",
    "open_model_sampler",
]

log = logging.getLogger(__name__)


@attrs.frozen
class ElicitAnswer:
    """The user's answer to an elicitation: ``"accept"`` with ``content`` (the fields of the
    requested schema), ``"decline"`` or ``"cancel"``."""

    action: Literal["accept", "decline", "cancel"]
    content: dict[str, Any] | None = None

    @classmethod
    def accept(cls, content: dict[str, Any]) -> ElicitAnswer:
        return cls("accept", dict(content))

    @classmethod
    def decline(cls) -> ElicitAnswer:
        return cls("decline")

    @classmethod
    def cancel(cls) -> ElicitAnswer:
        return cls("cancel")


class SamplingDeclined(Exception):
    """Raised by a ``sample`` callback to refuse a request (the server receives an error)."""


ElicitFn: TypeAlias = Callable[[str, str, dict[str, Any]], Awaitable["ElicitAnswer | types.ElicitResult"]]
"""``async (server_name, message, requested_schema) -> ElicitAnswer``."""

SampleFn: TypeAlias = Callable[[str, list[Message], "str | None", int], Awaitable[tuple[str, str, "TokenUsage | None"]]]
"""``async (server_name, messages, system_prompt, max_tokens) -> (text, model_name, usage)``."""

ProgressFn: TypeAlias = Callable[[ToolProgress], Awaitable[None]]
"""``async (event) -> None``: one ``notifications/progress`` of a running MCP tool call."""

ApproveFn: TypeAlias = Callable[[str, list[Message], "str | None"], "bool | Awaitable[bool]"]
"""``(server_name, messages, system_prompt) -> bool`` (or awaitable): whether to run a request."""


# --- conversions ----------------------------------------------------------------------------


def _content_text(block: Any) -> str:
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, types.ImageContent):
        return f"[image ({block.mime_type}) not shown]"
    if isinstance(block, types.AudioContent):
        return f"[audio ({block.mime_type}) not shown]"
    return f"[{getattr(block, 'type', type(block).__name__)} content not shown]"


def sampling_messages(messages: Sequence[types.SamplingMessage]) -> list[Message]:
    """The server's messages as kernel :class:`~kernel.items.Message` items (text only; other
    content is described in text)."""
    out: list[Message] = []
    for m in messages:
        blocks = m.content if isinstance(m.content, list) else [m.content]
        text = "\n".join(_content_text(b) for b in blocks)
        out.append(Message.assistant(text) if m.role == "assistant" else Message.user(text))
    return out


async def elicitation_result(
    server: str, elicit: ElicitFn | None, params: types.ElicitRequestParams
) -> types.ElicitResult | types.ErrorData:
    """Run ``elicit`` for one ``elicitation/create`` (declined without a callback)."""
    if elicit is None or not isinstance(params, types.ElicitRequestFormParams):
        return types.ElicitResult(action="decline")
    try:
        answer = await elicit(server, params.message, dict(params.requested_schema))
    except Exception as exc:
        log.warning("MCP server %r: the elicitation callback failed: %r", server, exc)
        return types.ErrorData(code=types.INTERNAL_ERROR, message=f"elicitation failed: {type(exc).__name__}")
    if isinstance(answer, types.ElicitResult):
        return answer
    content = answer.content if answer.action == "accept" else None
    return types.ElicitResult(action=answer.action, content=content)


async def sampling_result(
    server: str, sample: SampleFn, params: types.CreateMessageRequestParams
) -> types.CreateMessageResult | types.ErrorData:
    """Run ``sample`` for one ``sampling/createMessage``: its text as the assistant's reply, or
    an error when it declines or fails."""
    if params.tools:
        return types.ErrorData(code=types.INVALID_REQUEST, message="sampling with tools is not supported")
    try:
        text, model, _usage = await sample(
            server, sampling_messages(params.messages), params.system_prompt, params.max_tokens
        )
    except SamplingDeclined as exc:
        return types.ErrorData(code=types.INVALID_REQUEST, message=f"sampling declined: {exc or 'not approved'}")
    except Exception as exc:
        log.warning("MCP server %r: the sampling callback failed: %r", server, exc)
        return types.ErrorData(code=types.INTERNAL_ERROR, message=f"sampling failed: {type(exc).__name__}")
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text=text), model=model, stop_reason="endTurn"
    )


# --- a sampler served by a model ----------------------------------------------------------------


async def _approved(approve: ApproveFn, server: str, messages: list[Message], system: str | None) -> bool:
    verdict = approve(server, messages, system)
    if inspect.isawaitable(verdict):
        verdict = await verdict
    return bool(verdict)


async def _run_one(client: ModelClient, prompt: Prompt) -> tuple[str, TokenUsage | None]:
    text: list[str] = []
    final: str | None = None
    usage: TokenUsage | None = None
    async with client.stream(prompt) as batches:
        async for batch in batches:
            for event in batch:
                if isinstance(event, OutputTextDelta):
                    text.append(event.delta)
                elif isinstance(event, OutputItemDone) and isinstance(event.item, Message):
                    if event.item.role == "assistant":
                        final = (final or "") + event.item.text()
                elif isinstance(event, Completed) and event.usage is not None:
                    usage = event.usage
    return (final if final is not None else "".join(text)), usage


def model_sampler(
    model: ModelActor | ModelClient,
    approve: ApproveFn,
    *,
    model_name: str | None = None,
    default_instructions: str = "You are a helpful assistant.",
) -> SampleFn:
    """A ``sample`` callback that runs each approved request as one tool-less model request
    (the server's ``systemPrompt`` as instructions, else ``default_instructions``) and answers
    with the text; ``approve`` returning false declines. ``model``: a running
    :class:`~actors.model.ModelActor` (a client of its own is made) or any model client (e.g. a
    session's). The server's ``maxTokens`` bounds the response (``Prompt.max_output_tokens``)."""
    from actors.model import ModelActor

    client: ModelClient = model.client() if isinstance(model, ModelActor) else model
    name = model_name or getattr(getattr(client, "settings", None), "model", None) or getattr(client, "model", "")

    async def sample(
        server: str, messages: list[Message], system_prompt: str | None, max_tokens: int
    ) -> tuple[str, str, TokenUsage | None]:
        if not await _approved(approve, server, messages, system_prompt):
            raise SamplingDeclined("not approved")
        prompt = Prompt(
            input=messages, base_instructions=system_prompt or default_instructions, max_output_tokens=max_tokens
        )
        text, usage = await _run_one(client, prompt)
        return text, str(name or "unknown"), usage

    return sample


@asynccontextmanager
async def open_model_sampler(settings: ModelSettings, approve: ApproveFn) -> AsyncIterator[SampleFn]:
    """A :func:`model_sampler` on a :class:`~actors.model.ModelActor` of its own, run for the
    block."""
    from actors.model import ModelActor

    actor = ModelActor(settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        client = actor.client()
        try:
            yield model_sampler(client, approve, model_name=settings.model)
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()
            nursery.cancel_scope.cancel()
