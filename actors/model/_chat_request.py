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
    Reasoning,
    UnknownItem,
)
from kernel.prompt import Prompt

from ._chat_errors import _json_text, _json_text_safe

__all__ = ["chat_request_body", "freeform_tool_names", "LEGACY_CALL_PREFIX"]

LEGACY_CALL_PREFIX = "legacy_function_call_"
"""The ``call_id`` prefix the stream decoder gives a call it decoded from a legacy
``delta.function_call`` (which has no id). The request builder sends such a call back in the
legacy form (the assistant message's ``function_call``, its output as a ``role: "function"``
message naming it), which is the only way a legacy call and its output can be matched."""


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
    "max_completion_tokens"?, "tools"?, "parallel_tool_calls"?, "response_format"?}``:

    * ``messages``: a ``system`` message with the base instructions, then
      ``prompt.formatted_input()``: user / system messages keep their role (``developer``
      messages get ``developer_role``, ``"system"`` by default because most local chat templates
      reject other roles; pass ``"developer"`` for OpenAI itself) with their text parts joined
      (an array of ``text`` / ``image_url`` parts when the message has images); an untyped
      "easy" message (``{"role", "content": string or parts}``) held as an unknown item is sent
      likewise;
      assistant messages become ``{"role": "assistant", "content": text}`` (the ``output_text``
      parts; a ``refusal`` part is sent as ``"refusal"``, with ``"content": null`` when there is
      no text); consecutive function calls, custom tool calls (as functions with arguments
      ``{"input": string}``) and local shell calls (as ``local_shell`` with the action as
      arguments) become one assistant message with ``tool_calls``, merged into a directly
      preceding assistant message; outputs become ``{"role": "tool", "tool_call_id", "content":
      text}``. A call decoded from a legacy ``function_call`` (id prefix
      :data:`LEGACY_CALL_PREFIX`) goes back as the assistant message's ``function_call`` and its
      output as ``{"role": "function", "name", "content"}``. A reasoning item's
      ``extra["reasoning_details"]`` (OpenRouter / Snowflake reasoning, with its signatures and
      encrypted entries) is sent as the ``reasoning_details`` of the next assistant message;
      other reasoning, and other item kinds, are dropped.
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
    history = _History(messages, developer_role)
    for item in prompt.formatted_input():
        if isinstance(item, Message):
            if item.role == "assistant":
                history.assistant(_output_text(item.content), _refusal(item.content))
            else:
                history.other(item.role, _user_content(item.content))
        elif isinstance(item, FunctionCall):
            history.tool_call(item.call_id, item.name, item.arguments)
        elif isinstance(item, CustomToolCall):
            history.tool_call(item.call_id, item.name, _json_text({"input": item.input}))
        elif isinstance(item, LocalShellCall):
            call_id = item.call_id if item.call_id is not None else item.id
            if call_id is not None:
                history.tool_call(call_id, "local_shell", _json_text_safe(item.action))
        elif isinstance(item, (FunctionCallOutput, CustomToolCallOutput)):
            history.tool_output(item.call_id, item.output.to_text() or "")
        elif isinstance(item, McpToolCallOutput):
            history.tool_output(item.call_id, item.as_function_call_output_payload().to_text() or "")
        elif isinstance(item, Reasoning):
            history.reasoning(item)
        elif isinstance(item, UnknownItem):
            history.easy_message(item.data)
        # Tool search and other items have no Chat Completions form: dropped.

    body: dict[str, Any] = {"model": model, "messages": messages, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    if prompt.max_output_tokens is not None:
        # (not the deprecated max_tokens, which reasoning models refuse)
        body["max_completion_tokens"] = prompt.max_output_tokens
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


class _History:
    """The ``messages`` array being built, and what pairing calls with outputs needs: the
    names of legacy calls (their output names them) and the reasoning details waiting for the
    next assistant message."""

    __slots__ = ("messages", "developer_role", "legacy_names", "details")

    def __init__(self, messages: list[dict[str, Any]], developer_role: str) -> None:
        self.messages = messages
        self.developer_role = developer_role
        self.legacy_names: dict[str, str] = {}
        self.details: list[Any] | None = None

    def other(self, role: str, content: str | list[dict[str, Any]]) -> None:
        """A user / system / developer message (it ends the assistant turn: reasoning details
        not sent by then belong to no message)."""
        self.details = None
        self.messages.append({"role": self.developer_role if role == "developer" else role, "content": content})

    def assistant(self, text: str, refusal: str) -> None:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if refusal:
            message["refusal"] = refusal
            if not text:
                message["content"] = None  # as the API itself returns a refusal
        self._take_details(message)
        self.messages.append(message)

    def reasoning(self, item: Reasoning) -> None:
        details = item.extra.get("reasoning_details") if item.extra else None
        if isinstance(details, (list, tuple)) and details:
            # copied (one level): the body shares no mutable state with the prompt
            copies = [dict(d) if isinstance(d, Mapping) else d for d in details]
            self.details = [*(self.details or ()), *copies]

    def tool_call(self, call_id: str, name: str, arguments: str) -> None:
        messages = self.messages
        last = messages[-1] if messages else None
        # pending reasoning details start a new response: its calls do not join an earlier message
        can_merge = (
            last is not None and last["role"] == "assistant" and "function_call" not in last and self.details is None
        )
        if call_id.startswith(LEGACY_CALL_PREFIX):
            self.legacy_names[call_id] = name
            function_call = {"name": name, "arguments": arguments}
            if last is not None and can_merge and "tool_calls" not in last:
                last["function_call"] = function_call
                self._take_details(last)
            else:
                message: dict[str, Any] = {"role": "assistant", "content": "", "function_call": function_call}
                self._take_details(message)
                messages.append(message)
            return
        call: dict[str, Any] = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        if last is not None and can_merge:
            last.setdefault("tool_calls", []).append(call)
            self._take_details(last)
        else:
            # "" rather than null: some local chat templates string-process the content
            fresh: dict[str, Any] = {"role": "assistant", "content": "", "tool_calls": [call]}
            self._take_details(fresh)
            messages.append(fresh)

    def tool_output(self, call_id: str, text: str) -> None:
        name = self.legacy_names.get(call_id)
        if name is not None:
            self.messages.append({"role": "function", "name": name, "content": text})
        else:
            self.messages.append({"role": "tool", "tool_call_id": call_id, "content": text})

    def easy_message(self, data: Mapping[str, Any]) -> None:
        """An untyped ``{"role", "content"}`` input message (the SDK's "easy input message");
        other unknown items are dropped."""
        role, content = data.get("role"), data.get("content")
        if "type" in data or not isinstance(role, str):
            return
        if isinstance(content, str):
            parts: Sequence[Mapping[str, Any]] = (
                {"type": "output_text" if role == "assistant" else "input_text", "text": content},
            )
        elif isinstance(content, list):
            parts = [p for p in content if isinstance(p, Mapping)]
        else:
            return
        if role == "assistant":
            self.assistant(_output_text(parts), _refusal(parts))
        else:
            self.other(role, _user_content(parts))

    def _take_details(self, message: dict[str, Any]) -> None:
        if self.details is not None:
            message["reasoning_details"] = [*message.get("reasoning_details", ()), *self.details]
            self.details = None


_TEXT_PARTS = ("input_text", "output_text", "text")


def _output_text(content: Sequence[Mapping[str, Any]]) -> str:
    """The text of an assistant message: its text parts joined (not its refusal)."""
    return "".join(str(part.get("text", "")) for part in content if part.get("type") in _TEXT_PARTS)


def _refusal(content: Sequence[Mapping[str, Any]]) -> str:
    return "".join(str(part.get("refusal", "")) for part in content if part.get("type") == "refusal")


def _user_content(content: Sequence[Mapping[str, Any]]) -> str | list[dict[str, Any]]:
    texts: list[str] = []
    has_image = False
    for part in content:
        kind = part.get("type")
        if kind in _TEXT_PARTS:
            texts.append(str(part.get("text", "")))
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            has_image = True
    if not has_image:
        return "".join(texts)
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type")
        if kind in _TEXT_PARTS:
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
    return parts


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
