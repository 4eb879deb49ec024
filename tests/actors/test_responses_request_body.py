"""The Responses API request body (PROTOCOL §2): what a Prompt and the model options become on the wire."""

from __future__ import annotations

import json
from typing import Any

from actors.model._responses import (
    OUTPUT_SCHEMA_NAME,
    responses_request_body,
)
from kernel.items import (
    FreeformTool,
    FunctionCall,
    FunctionCallOutput,
    FunctionCallOutputPayload,
    FunctionTool,
    Message,
    item_from_wire,
    item_to_wire,
    tool_to_wire,
)
from kernel.prompt import Prompt

# ---------------------------------------------------------------------------------------------
# request body (PROTOCOL §2)
# ---------------------------------------------------------------------------------------------


def _prompt(**kw: Any) -> Prompt:
    tools = (
        FunctionTool(
            name="shell",
            description="Run a command",
            parameters={"type": "object", "properties": {"cmd": {"type": "string"}}},
        ),
        FreeformTool(name="apply_patch", description="Apply a patch"),
    )
    items = (
        Message.user("hello"),
        FunctionCall(call_id="c1", name="shell", arguments='{"cmd":"ls"}'),
        FunctionCallOutput("c1", FunctionCallOutputPayload.from_text("a\nb", success=True)),
    )
    return Prompt(input=items, tools=tools, parallel_tool_calls=True, base_instructions="Be brief.", **kw)


def test_request_body_minimal() -> None:
    prompt = _prompt()
    body = responses_request_body(prompt, model="gpt-5-codex")
    assert body == {
        "model": "gpt-5-codex",
        "instructions": "Be brief.",
        "input": [item_to_wire(i) for i in prompt.formatted_input()],
        "tools": [tool_to_wire(t) for t in prompt.tools],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "store": False,
        "stream": True,
        "include": [],
    }
    assert "reasoning" not in body and "text" not in body and "prompt_cache_key" not in body
    assert body["input"][2] == {"type": "function_call_output", "call_id": "c1", "output": "a\nb"}
    json.dumps(body)  # serialisable


def test_request_body_with_reasoning_schema_verbosity_and_cache_key() -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    prompt = _prompt(output_schema=schema, output_schema_strict=False)
    body = responses_request_body(
        prompt, model="m", reasoning_effort="high", prompt_cache_key="conv-1", verbosity="low"
    )
    assert body["reasoning"] == {"effort": "high", "summary": "auto"}
    assert body["include"] == ["reasoning.encrypted_content"]
    assert body["text"] == {
        "verbosity": "low",
        "format": {"type": "json_schema", "name": OUTPUT_SCHEMA_NAME, "schema": schema, "strict": False},
    }
    assert body["prompt_cache_key"] == "conv-1"
    assert OUTPUT_SCHEMA_NAME == "codex_output_schema"


def test_request_body_reasoning_without_summary() -> None:
    body = responses_request_body(_prompt(), model="m", reasoning_effort="low", reasoning_summary=None)
    assert body["reasoning"] == {"effort": "low"}


def test_request_body_uses_formatted_input() -> None:
    """With a freeform apply_patch tool, shell outputs are re-serialised (Prompt.formatted_input)."""
    out = json.dumps({"output": "hi\n", "metadata": {"exit_code": 0, "duration_seconds": 0.5}})
    prompt = Prompt(
        input=(
            FunctionCall(call_id="c1", name="shell", arguments="{}"),
            FunctionCallOutput("c1", FunctionCallOutputPayload.from_text(out)),
        ),
        tools=(FreeformTool(name="apply_patch"),),
    )
    body = responses_request_body(prompt, model="m")
    assert body["input"][1]["output"] == "Exit code: 0\nWall time: 0.5 seconds\nOutput:\nhi\n"


def test_request_body_round_trips_items() -> None:
    prompt = _prompt()
    body = responses_request_body(prompt, model="m")
    assert [item_from_wire(i) for i in json.loads(json.dumps(body["input"]))] == [
        item_from_wire(item_to_wire(i)) for i in prompt.formatted_input()
    ]


def test_request_body_bounds_the_output_on_both_wires() -> None:
    """``Prompt.max_output_tokens``: the Responses wire's ``max_output_tokens`` (at least the API's
    16), the Chat wire's ``max_completion_tokens`` (not the deprecated ``max_tokens``); absent
    when unset."""
    from actors.model._chat_request import chat_request_body
    from kernel.prompt import PromptConfig, ToolConfig

    asked = Prompt(input=[], max_output_tokens=50)
    assert responses_request_body(asked, model="m")["max_output_tokens"] == 50
    assert responses_request_body(Prompt(max_output_tokens=5), model="m")["max_output_tokens"] == 16
    assert "max_output_tokens" not in responses_request_body(Prompt(), model="m")
    chat = chat_request_body(asked, model="m")
    assert chat["max_completion_tokens"] == 50 and "max_tokens" not in chat
    assert "max_completion_tokens" not in chat_request_body(Prompt(), model="m")
    built = PromptConfig(max_output_tokens=200).build_prompt([], ToolConfig())
    assert built.max_output_tokens == 200
