"""The item model and its wire codec."""

import copy
import json

import pytest
from hypothesis import given

from kernel import (
    CustomToolCallOutput,
    FreeformTool,
    FunctionCall,
    FunctionCallOutput,
    FunctionCallOutputPayload,
    FunctionTool,
    McpToolCallOutput,
    Message,
    ToolSearchOutput,
    UnknownItem,
    UnknownTool,
    WireFormatError,
    item_from_wire,
    item_to_wire,
    items_from_wire,
    response_input_to_response_item,
    tool_from_wire,
    tool_to_wire,
)
from kernel.testing import odd_wire_items, tool_specs, wire_items


@given(wire_items())
def test_codec_round_trips_every_generated_item(wire: dict) -> None:
    before = copy.deepcopy(wire)
    item = item_from_wire(wire)
    assert item_to_wire(item) == before
    assert wire == before  # decoding does not mutate its input
    # and again from the encoded form: a fixed point
    assert item_to_wire(item_from_wire(item_to_wire(item))) == before
    json.dumps(item_to_wire(item))  # always JSON-serialisable


@given(odd_wire_items())
def test_malformed_items_raise_a_clear_error_naming_the_field(case: tuple) -> None:
    wire, field = case
    with pytest.raises(WireFormatError) as info:
        item_from_wire(wire)
    message = str(info.value)
    assert wire["type"] in message
    assert field in message


def test_error_messages_name_type_field_and_expected_form() -> None:
    with pytest.raises(WireFormatError, match=r"function_call: required field 'call_id' is missing"):
        item_from_wire({"type": "function_call", "name": "x", "arguments": "{}"})
    with pytest.raises(WireFormatError, match=r"function_call\.arguments: expected a string, got a number \(3\)"):
        item_from_wire({"type": "function_call", "name": "x", "arguments": 3, "call_id": "c"})
    with pytest.raises(WireFormatError, match=r"input\[1\]: message: required field 'role'"):
        items_from_wire([{"type": "message", "role": "user", "content": []}, {"type": "message", "content": []}])
    with pytest.raises(WireFormatError, match="expected an object"):
        item_from_wire(["not", "an", "object"])  # type: ignore[arg-type]


def test_unknown_types_and_fields_survive() -> None:
    wire = {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search", "query": "q"}}
    item = item_from_wire(wire)
    assert isinstance(item, UnknownItem) and item.type == "web_search_call"
    assert item_to_wire(item) == wire
    fc = {"type": "function_call", "call_id": "c", "name": "n", "arguments": "{}", "status": "completed", "id": None}
    decoded = item_from_wire(fc)
    assert isinstance(decoded, FunctionCall) and decoded.extra == {"status": "completed", "id": None}
    assert item_to_wire(decoded) == fc


def test_function_call_output_is_one_class_for_response_and_input_items() -> None:
    out = FunctionCallOutput("c1", FunctionCallOutputPayload.from_text("ok", success=False))
    assert item_to_wire(out) == {"type": "function_call_output", "call_id": "c1", "output": "ok"}  # success not sent
    assert response_input_to_response_item(out) is out
    items = FunctionCallOutputPayload.from_content_items(
        [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": " "}]
    )
    wire = item_to_wire(FunctionCallOutput("c2", items))
    assert wire["output"] == [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": " "}]
    assert items.to_text() == "a" and items.text_content() is None
    back = item_from_wire(wire)
    assert isinstance(back, FunctionCallOutput) and back.output.content_items() == items.content_items()


def test_input_items_share_the_codec() -> None:
    mcp = {
        "type": "mcp_tool_call_output",
        "call_id": "m1",
        "output": {"content": [{"type": "text", "text": "hi"}], "isError": True},
    }
    item = item_from_wire(mcp)
    assert isinstance(item, McpToolCallOutput) and item_to_wire(item) == mcp
    converted = response_input_to_response_item(item)
    assert isinstance(converted, FunctionCallOutput)
    assert converted.output.body == '[{"type":"text","text":"hi"}]' and converted.output.success is False
    structured = McpToolCallOutput(call_id="m2", output={"content": [], "structuredContent": {"a": 1}})
    assert response_input_to_response_item(structured).output.body == '{"a":1}'  # type: ignore[union-attr]
    tso = item_from_wire(
        {"type": "tool_search_output", "call_id": "t", "status": "completed", "execution": "client", "tools": []}
    )
    assert isinstance(tso, ToolSearchOutput) and response_input_to_response_item(tso) is tso
    assert response_input_to_response_item(CustomToolCallOutput("", FunctionCallOutputPayload.from_text("x"))) is None
    assert response_input_to_response_item(McpToolCallOutput(call_id="", output={})) is None


@given(tool_specs())
def test_tool_specs_round_trip(wire: dict) -> None:
    assert tool_to_wire(tool_from_wire(wire)) == wire


def test_tool_specs() -> None:
    fn = tool_from_wire(
        {"type": "function", "name": "shell", "description": "d", "strict": False, "parameters": {"type": "object"}}
    )
    assert isinstance(fn, FunctionTool) and fn.name == "shell"
    ff = tool_from_wire(
        {
            "type": "custom",
            "name": "apply_patch",
            "description": "p",
            "format": {"type": "grammar", "syntax": "lark", "definition": "start: x"},
        }
    )
    assert isinstance(ff, FreeformTool) and ff.format.definition == "start: x"
    assert isinstance(tool_from_wire({"type": "local_shell"}), UnknownTool)
    assert tool_to_wire(FreeformTool(name="apply_patch")) == {
        "type": "custom",
        "name": "apply_patch",
        "description": "",
        "format": {"type": "grammar", "syntax": "lark", "definition": ""},
    }
    with pytest.raises(WireFormatError, match=r"tool\.strict: expected a boolean"):
        tool_from_wire({"type": "function", "name": "x", "strict": "yes"})


def test_message_helpers() -> None:
    m = Message.assistant("hello")
    assert m.text() == "hello"
    assert item_to_wire(Message.user("q")) == {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "q"}],
    }
