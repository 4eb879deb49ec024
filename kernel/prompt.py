"""The prompt of one model request, and the retry-stable settings it is rebuilt from.

Seed names: ``Prompt``, ``PromptConfig``, ``ToolConfig``, ``PromptConfig::build_prompt``,
``Prompt::get_formatted_input`` (here :meth:`Prompt.formatted_input`).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import attrs

from .items import (
    CustomToolCall,
    CustomToolCallOutput,
    FreeformTool,
    FunctionCall,
    FunctionCallOutput,
    FunctionCallOutputPayload,
    LocalShellCall,
    ResponseItem,
    ToolSpec,
)

__all__ = [
    "Prompt",
    "PromptConfig",
    "ToolConfig",
    "DEFAULT_BASE_INSTRUCTIONS",
    "format_f32",
]

DEFAULT_BASE_INSTRUCTIONS = (
    "You are a coding agent running in a terminal-based harness. Work in the user's workspace with "
    "the tools you are given: inspect before you change, keep changes minimal and correct, run "
    "commands to verify your work, and finish with a short summary of what you did."
)
"""Base instructions used when a host sets none."""


def _tuple(value: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class ToolConfig:
    """Retry-stable tool registration for one logical request: the tools shown to the model and
    whether it may call them in parallel. ``ToolConfig()`` has no tools and no parallel calls."""

    tools: Sequence[ToolSpec] = attrs.field(default=(), converter=_tuple)
    parallel_tool_calls: bool = False


@attrs.frozen(kw_only=True)
class Prompt:
    """The payload of one model request.

    Construct with keywords; the defaults are the seed's (no input, no tools, no parallel calls,
    the default base instructions, no personality, no output schema, strict schema).
    """

    input: Sequence[ResponseItem] = attrs.field(default=(), converter=_tuple)
    tools: Sequence[ToolSpec] = attrs.field(default=(), converter=_tuple)
    parallel_tool_calls: bool = False
    base_instructions: str = DEFAULT_BASE_INSTRUCTIONS
    personality: str | None = None
    output_schema: Mapping[str, Any] | None = None
    output_schema_strict: bool = True
    prompt_cache_key: str | None = None
    """Sent as the Responses API's ``prompt_cache_key`` (requests sharing it share a prompt cache;
    a session uses its ``session_id`` by default)."""
    max_output_tokens: int | None = None
    """An upper bound on the response's tokens, reasoning included (Responses
    ``max_output_tokens``, at least 16 there; Chat ``max_completion_tokens``); ``None``: the
    model's own limit. A response cut short by it ends ``incomplete`` (an
    :class:`~kernel.errors.IncompleteResponse`)."""

    def formatted_input(self) -> list[ResponseItem]:
        """The input as sent to the model.

        When a freeform ``apply_patch`` tool is present, the JSON outputs of shell-family calls
        (``shell``, ``container.exec``, ``apply_patch`` as function or custom call, local shell
        calls keyed by ``call_id`` or ``id``) are re-serialised as text::

            Exit code: 0
            Wall time: 0.5 seconds
            Total output lines: 120     (only when the output began with that header)
            Output:
            ...

        Everything else is returned untouched. Idempotent. Does not mutate ``self``.
        """
        items = list(self.input)
        if any(isinstance(t, FreeformTool) and t.name == "apply_patch" for t in self.tools):
            _reserialize_shell_outputs(items)
        return items


@attrs.frozen(kw_only=True)
class PromptConfig:
    """Retry-stable prompt settings used to rebuild a :class:`Prompt` after tool calls or stream
    retries. ``PromptConfig()`` uses the seed's defaults."""

    base_instructions: str = DEFAULT_BASE_INSTRUCTIONS
    personality: str | None = None
    output_schema: Mapping[str, Any] | None = None
    output_schema_strict: bool = True
    prompt_cache_key: str | None = None
    max_output_tokens: int | None = None

    def build_prompt(self, input: Iterable[ResponseItem], tool_config: ToolConfig) -> Prompt:
        """A prompt of ``input`` with these settings and ``tool_config``'s tools."""
        return Prompt(
            input=input,
            tools=tool_config.tools,
            parallel_tool_calls=tool_config.parallel_tool_calls,
            base_instructions=self.base_instructions,
            personality=self.personality,
            output_schema=self.output_schema,
            output_schema_strict=self.output_schema_strict,
            prompt_cache_key=self.prompt_cache_key,
            max_output_tokens=self.max_output_tokens,
        )


# --- the seed's shell-output re-serialisation ------------------------------------------------

_SHELL_TOOL_NAMES = frozenset({"shell", "container.exec"})


def _reserialize_shell_outputs(items: list[ResponseItem]) -> None:
    shell_call_ids: set[str] = set()
    for index, item in enumerate(items):
        if isinstance(item, LocalShellCall):
            identifier = item.call_id if item.call_id is not None else item.id
            if identifier is not None:
                shell_call_ids.add(identifier)
        elif isinstance(item, CustomToolCall):
            if item.name == "apply_patch":
                shell_call_ids.add(item.call_id)
        elif isinstance(item, FunctionCall):
            if item.name in _SHELL_TOOL_NAMES or item.name == "apply_patch":
                shell_call_ids.add(item.call_id)
        elif isinstance(item, (FunctionCallOutput, CustomToolCallOutput)):
            if item.call_id in shell_call_ids:
                shell_call_ids.discard(item.call_id)
                text = item.output.text_content()
                structured = _parse_structured_shell_output(text) if text is not None else None
                if structured is not None:
                    payload = FunctionCallOutputPayload(structured, item.output.success)
                    items[index] = attrs.evolve(item, output=payload)


class _NotSerdeJson(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NotSerdeJson(name)  # serde_json rejects NaN / Infinity literals


def _pairs_no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out and key in ("output", "metadata", "exit_code", "duration_seconds"):
            raise _NotSerdeJson(f"duplicate field {key}")  # serde derive rejects known duplicates
        out[key] = value
    return out


def _parse_structured_shell_output(raw: str) -> str | None:
    """The seed's ``parse_structured_shell_output``: serde's rules for
    ``{"output": String, "metadata": {"exit_code": i32, "duration_seconds": f32}}``."""
    try:
        parsed = json.loads(raw, parse_constant=_reject_constant, object_pairs_hook=_pairs_no_duplicate_keys)
    except (ValueError, RecursionError):
        return None
    if not isinstance(parsed, dict):
        return None
    output = parsed.get("output")
    metadata = parsed.get("metadata")
    if not isinstance(output, str) or not isinstance(metadata, dict):
        return None
    exit_code = metadata.get("exit_code")
    duration = metadata.get("duration_seconds")
    if not isinstance(exit_code, int) or isinstance(exit_code, bool):
        return None
    if not -(2**31) <= exit_code < 2**31:
        return None
    if isinstance(duration, bool) or not isinstance(duration, (int, float)):
        return None
    if isinstance(duration, float) and not math.isfinite(duration):
        return None
    sections = [f"Exit code: {exit_code}", f"Wall time: {format_f32(duration)} seconds"]
    stripped = _strip_total_output_header(output)
    if stripped is not None:
        output, total_lines = stripped
        sections.append(f"Total output lines: {total_lines}")
    sections.append("Output:")
    sections.append(output)
    return "\n".join(sections)


def _strip_total_output_header(output: str) -> tuple[str, int] | None:
    prefix = "Total output lines: "
    if not output.startswith(prefix):
        return None
    segment, sep, remainder = output[len(prefix) :].partition("\n")
    if not sep:
        return None
    total = _parse_u32(segment)
    if total is None:
        return None
    if remainder.startswith("\n"):
        remainder = remainder[1:]
    return remainder, total


def _parse_u32(text: str) -> int | None:
    """Rust's ``str::parse::<u32>``: optional ``+``, then ASCII digits only, in range."""
    digits = text[1:] if text.startswith("+") else text
    if not digits or not all("0" <= c <= "9" for c in digits):
        return None
    value = int(digits)
    return value if value < 2**32 else None


def format_f32(value: float) -> str:
    """Format a number as Rust's ``Display`` for ``f32`` does.

    The value is first rounded to ``f32``; the result is the shortest decimal that reads back as
    that ``f32``, in positional notation (never an exponent), with no trailing ``.0``:
    ``2.0 → "2"``, ``0.5 → "0.5"``, ``0.1 → "0.1"``, ``1e20 → "100000000000000000000"``.
    """
    try:
        f32 = struct.unpack("<f", struct.pack("<f", float(value)))[0]
    except OverflowError:
        f32 = math.copysign(math.inf, value)
    if math.isnan(f32):
        return "NaN"
    if math.isinf(f32):
        return "inf" if f32 > 0 else "-inf"
    if f32 == 0.0:
        return "-0" if math.copysign(1.0, f32) < 0 else "0"
    shortest = None
    for digits in range(1, 10):
        candidate = f"{f32:.{digits}g}"
        try:
            reread = struct.unpack("<f", struct.pack("<f", float(candidate)))[0]
        except OverflowError:  # rounded past f32::MAX
            continue
        if reread == f32:
            shortest = candidate
            break
    assert shortest is not None  # 9 significant digits always round-trip an f32
    text = format(Decimal(shortest), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text
