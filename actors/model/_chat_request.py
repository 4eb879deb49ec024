"""The Chat Completions request body: :func:`chat_request_body` turns a
:class:`~kernel.prompt.Prompt` into a streaming ``/chat/completions`` body."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kernel.items import (
    CustomToolCall,
    CustomToolCallOutput,
    FreeformTool,
    FunctionCall,
    FunctionCallOutput,
    FunctionTool,
    LocalShellCall,
    McpToolCallOutput,
    Message,
)
from kernel.prompt import Prompt

from ._chat_errors import _json_text, _json_text_safe

__all__ = ["chat_request_body", "freeform_tool_names"]


def freeform_tool_names(prompt: Prompt) -> frozenset[str]:
    """Names of ``prompt``'s freeform (custom) tools, which the request sends as functions."""
    return frozenset(t.name for t in prompt.tools if isinstance(t, FreeformTool))


def chat_request_body(
    prompt: Prompt,
    *,
    model: str,
    include_usage: bool = True,
    developer_role: str = "system",
) -> dict[str, Any]:
    """The JSON body of a streaming ``POST /chat/completions`` for ``prompt``.

    ``{"model", "messages", "stream": true, "stream_options": {"include_usage": true},
    "tools"?, "parallel_tool_calls"?, "response_format"?}``:

    * ``messages``: a ``system`` message with the base instructions, then
      ``prompt.formatted_input()``: user / system messages keep their role (``developer``
      messages get ``developer_role``, ``"system"`` by default because most local chat templates
      reject other roles; pass ``"developer"`` for OpenAI itself) with their text parts joined
      (an array of ``text`` / ``image_url`` parts when the message has images); assistant
      messages become ``{"role": "assistant", "content": text}``; consecutive function calls,
      custom tool calls (as functions with arguments ``{"input": string}``) and local shell calls
      (as ``local_shell`` with the action as arguments) become one assistant message with
      ``tool_calls``, merged into a directly preceding assistant message; outputs become
      ``{"role": "tool", "tool_call_id", "content": text}``. Reasoning and other item kinds are
      dropped.
    * ``tools`` (only when there are any): function tools as
      ``{"type": "function", "function": {"name", "description", "parameters"}}`` (plus
      ``strict`` when set); freeform tools as functions taking ``{"input": string}`` whose
      description names the grammar; other kinds dropped. ``parallel_tool_calls`` is sent with
      them.
    * ``response_format``: a ``json_schema`` format when the prompt has an output schema.

    Does not mutate ``prompt``; the result shares no mutable state with it except JSON-schema
    mappings, which it does not copy.
    """
    messages: list[dict[str, Any]] = []
    if prompt.base_instructions:
        messages.append({"role": "system", "content": prompt.base_instructions})
    for item in prompt.formatted_input():
        if isinstance(item, Message):
            if item.role == "assistant":
                messages.append({"role": "assistant", "content": item.text()})
            else:
                role = developer_role if item.role == "developer" else item.role
                messages.append({"role": role, "content": _user_content(item.content)})
        elif isinstance(item, FunctionCall):
            _append_tool_call(messages, item.call_id, item.name, item.arguments)
        elif isinstance(item, CustomToolCall):
            _append_tool_call(messages, item.call_id, item.name, _json_text({"input": item.input}))
        elif isinstance(item, LocalShellCall):
            call_id = item.call_id if item.call_id is not None else item.id
            if call_id is not None:
                _append_tool_call(messages, call_id, "local_shell", _json_text_safe(item.action))
        elif isinstance(item, (FunctionCallOutput, CustomToolCallOutput)):
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output.to_text() or ""})
        elif isinstance(item, McpToolCallOutput):
            text = item.as_function_call_output_payload().to_text() or ""
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": text})
        # Reasoning, tool search and unknown items have no Chat Completions form: dropped.

    body: dict[str, Any] = {"model": model, "messages": messages, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    tools = [t for t in (_tool_spec(tool) for tool in prompt.tools) if t is not None]
    if tools:
        body["tools"] = tools
        body["parallel_tool_calls"] = prompt.parallel_tool_calls
    if prompt.output_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": "output_schema",
                "schema": prompt.output_schema,
                "strict": prompt.output_schema_strict,
            },
        }
    return body


def _user_content(content: Sequence[Mapping[str, Any]]) -> str | list[dict[str, Any]]:
    texts: list[str] = []
    has_image = False
    for part in content:
        kind = part.get("type")
        if kind in ("input_text", "output_text"):
            texts.append(str(part.get("text", "")))
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            has_image = True
    if not has_image:
        return "".join(texts)
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type")
        if kind in ("input_text", "output_text"):
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
    return parts


def _append_tool_call(messages: list[dict[str, Any]], call_id: str, name: str, arguments: str) -> None:
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
    else:
        # "" rather than null: some local chat templates string-process the content
        messages.append({"role": "assistant", "content": "", "tool_calls": [call]})


def _tool_spec(tool: Any) -> dict[str, Any] | None:
    if isinstance(tool, FunctionTool):
        fn: dict[str, Any] = {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        }
        if tool.strict:
            fn["strict"] = True
        return {"type": "function", "function": fn}
    if isinstance(tool, FreeformTool):
        input_doc = "The raw freeform input (plain text, not JSON-encoded)."
        if tool.format.definition:
            input_doc += f" It must match this {tool.format.syntax} grammar:\n{tool.format.definition}"
        description = tool.description
        description = (description + "\n\n" if description else "") + (
            "This is a freeform tool: put its whole input, as text, in the `input` string."
        )
        return {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": description,
                "parameters": {
                    "type": "object",
                    "properties": {"input": {"type": "string", "description": input_doc}},
                    "required": ["input"],
                    "additionalProperties": False,
                },
            },
        }
    return None
