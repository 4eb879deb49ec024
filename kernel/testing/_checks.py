"""Checks on a history: every tool call has exactly one output after it."""

from __future__ import annotations

from collections.abc import Sequence

from ..items import (
    CustomToolCall,
    CustomToolCallOutput,
    FunctionCall,
    FunctionCallOutput,
    ResponseItem,
)

_CALL_TYPES = (FunctionCall, CustomToolCall)

__all__ = ["well_formed_violations", "assert_well_formed"]


def _is_call(item: ResponseItem) -> str | None:
    from ..items import LocalShellCall

    if isinstance(item, _CALL_TYPES):
        return item.call_id or None
    if isinstance(item, LocalShellCall):
        return item.call_id or None
    return None


def _is_output(item: ResponseItem) -> str | None:
    from ..items import McpToolCallOutput

    if isinstance(item, (FunctionCallOutput, CustomToolCallOutput, McpToolCallOutput)):
        return item.call_id
    return None


def well_formed_violations(items: Sequence[ResponseItem], *, require_outputs: bool = True) -> list[str]:
    """What is wrong with a history handed to the model (empty when nothing is):

    * an output whose call did not come before it (``"output without a call"``);
    * a second output for one call, or a second call with the same ``call_id``;
    * with ``require_outputs`` (the state after a turn ended): a call without an output.
    """
    problems: list[str] = []
    open_calls: dict[str, int] = {}
    answered: set[str] = set()
    for i, item in enumerate(items):
        call_id = _is_call(item)
        if call_id is not None:
            if call_id in open_calls or call_id in answered:
                problems.append(f"item {i}: a second call with call_id {call_id!r}")
            open_calls[call_id] = i
            continue
        out_id = _is_output(item)
        if out_id is not None:
            if out_id in answered:
                problems.append(f"item {i}: a second output for call {out_id!r}")
            elif out_id not in open_calls:
                problems.append(f"item {i}: output without a call ({out_id!r})")
            else:
                del open_calls[out_id]
                answered.add(out_id)
    if require_outputs:
        for call_id, i in open_calls.items():
            problems.append(f"item {i}: call {call_id!r} has no output")
    return problems


def assert_well_formed(items: Sequence[ResponseItem], *, require_outputs: bool = True) -> None:
    """Raise ``AssertionError`` listing :func:`well_formed_violations`."""
    problems = well_formed_violations(items, require_outputs=require_outputs)
    if problems:
        raise AssertionError("history is not well-formed:\n  " + "\n  ".join(problems))
