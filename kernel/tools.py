"""The tool contract between the kernel and a host's tools.

Seed names: ``KernelToolCall`` → :class:`ToolCall`, ``KernelToolExecutor`` → :class:`ToolExecutor`,
``ToolCallError::{RespondToModel, Fatal}`` → :class:`RespondToModel` / :class:`FatalToolError`,
``CompletedResponseItem`` (``NonTool`` / ``ToolCall`` / ``ImmediateResponse``),
``execute_tool_call_with_default_output``, ``response_input_to_response_item``.

Cancellation: the seed passes a cancellation token to ``execute_tool_call``; here the call runs in
the caller's Trio cancel scope and is cancelled with it (``trio.Cancelled`` propagates).
"""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar, Union, runtime_checkable

import attrs

from .errors import FatalError
from .items import (
    CustomToolCallOutput,
    FunctionCallOutput,
    McpToolCallOutput,
    Message,
    ResponseInputItem,
    ResponseItem,
    ToolSearchOutput,
)

__all__ = [
    "ToolCall",
    "ToolExecutor",
    "RespondToModel",
    "FatalToolError",
    "CompletedResponseItem",
    "execute_tool_call_with_default_output",
    "response_input_to_response_item",
]


@runtime_checkable
class ToolCall(Protocol):
    """A host's parsed tool call. The kernel only needs its ``call_id`` and a way to build a
    model-visible error output for it."""

    @property
    def call_id(self) -> str:
        """The model's ``call_id`` for this call."""
        ...

    def error_response(self, message: str) -> ResponseInputItem:
        """The output item telling the model this call failed with ``message``."""
        ...


CallT = TypeVar("CallT", bound=ToolCall)
CallT_co = TypeVar("CallT_co", bound=ToolCall, covariant=True)


class RespondToModel(Exception):
    """A non-fatal tool failure: ``message`` becomes the call's output (``success: false``) and
    the turn goes on."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class FatalToolError(Exception):
    """A fatal tool failure: the turn ends with :class:`~kernel.errors.FatalError`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"Fatal error: {self.message}"


class CompletedResponseItem(Generic[CallT_co]):
    """How a host classifies a completed model output item (the seed's enum).

    * ``CompletedResponseItem.NonTool(item)`` — record it, nothing to run;
    * ``CompletedResponseItem.ToolCall(item, call)`` — record it and run ``call`` at once;
    * ``CompletedResponseItem.ImmediateResponse(item, response)`` — record the item and the
      canned ``response`` (an input item) without running anything.
    """

    __slots__ = ()
    item: ResponseItem

    NonTool: type[_NonTool]
    ToolCall: type[_ToolCallVariant[Any]]
    ImmediateResponse: type[_ImmediateResponse]


@attrs.frozen
class _NonTool(CompletedResponseItem[ToolCall]):
    item: ResponseItem


@attrs.frozen
class _ToolCallVariant(CompletedResponseItem[CallT_co]):
    item: ResponseItem
    call: CallT_co


@attrs.frozen
class _ImmediateResponse(CompletedResponseItem[ToolCall]):
    item: ResponseItem
    response: ResponseInputItem


_NonTool.__name__ = _NonTool.__qualname__ = "CompletedResponseItem.NonTool"
_ToolCallVariant.__name__ = _ToolCallVariant.__qualname__ = "CompletedResponseItem.ToolCall"
_ImmediateResponse.__name__ = _ImmediateResponse.__qualname__ = "CompletedResponseItem.ImmediateResponse"
CompletedResponseItem.NonTool = _NonTool
CompletedResponseItem.ToolCall = _ToolCallVariant
CompletedResponseItem.ImmediateResponse = _ImmediateResponse


class ToolExecutor(Protocol[CallT]):
    """A host's tools: classify completed items and execute calls.

    ``execute_tool_call`` returns the call's output item, or raises :class:`RespondToModel`
    (model-visible failure) or :class:`FatalToolError` (ends the turn). It runs inside the turn's
    cancel scope: an interrupt cancels it.
    """

    async def classify_response_item(self, item: ResponseItem) -> CompletedResponseItem[CallT]:
        """Decide whether ``item`` is a tool call this host runs."""
        ...

    async def execute_tool_call(self, call: CallT) -> ResponseInputItem:
        """Run ``call`` and return its output item."""
        ...


async def execute_tool_call_with_default_output(executor: ToolExecutor[CallT], call: CallT) -> ResponseInputItem:
    """Run ``call``; a :class:`RespondToModel` becomes ``call.error_response(message)``, a
    :class:`FatalToolError` raises :class:`~kernel.errors.FatalError` (``"Fatal error: <msg>"``).
    Cancellation propagates. Checkpoints if the executor does."""
    try:
        return await executor.execute_tool_call(call)
    except RespondToModel as exc:
        return call.error_response(exc.message)
    except FatalToolError as exc:
        raise FatalError(exc.message) from exc


def response_input_to_response_item(input_item: ResponseInputItem) -> ResponseItem | None:
    """The history item for a tool's output item, or ``None`` to skip it.

    Outputs with an empty ``call_id`` are skipped; an MCP tool-call output becomes a
    ``function_call_output`` (via ``as_function_call_output_payload``); messages are skipped
    (they are not tool outputs).
    """
    if isinstance(input_item, (FunctionCallOutput, CustomToolCallOutput)):
        return input_item if input_item.call_id else None
    if isinstance(input_item, McpToolCallOutput):
        if not input_item.call_id:
            return None
        return FunctionCallOutput(input_item.call_id, input_item.as_function_call_output_payload())
    if isinstance(input_item, ToolSearchOutput):
        return input_item if input_item.call_id else None
    if isinstance(input_item, Message):
        return None
    return None


AnyCompleted = Union[_NonTool, _ToolCallVariant[ToolCall], _ImmediateResponse]
