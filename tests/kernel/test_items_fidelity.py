"""Protocol fidelity of the item codec (the SDK's optional fields and shorthand forms), byte-for-byte."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest

from kernel import WireFormatError
from kernel.items import (
    FunctionCall,
    FunctionCallOutput,
    FunctionCallOutputPayload,
    Message,
    ToolSearchCall,
    ToolSearchOutput,
    UnknownItem,
    WireForm,
    item_from_wire,
    item_to_wire,
    items_from_wire,
)


def same_bytes(item: Any, wire: dict[str, Any]) -> bool:
    return json.dumps(item_to_wire(item)) == json.dumps(wire)


# ---- function_call_output without call_id ------------------------------------------------------


@pytest.mark.parametrize(
    "wire",
    [
        {"type": "function_call_output", "output": "done"},
        {"output": "done", "type": "function_call_output", "id": "fco_1", "status": "completed"},
        {"type": "function_call_output", "call_id": None, "output": [{"type": "input_text", "text": "a"}]},
        {"type": "function_call_output", "call_id": "", "output": "empty id"},
    ],
)
def test_function_call_output_call_id_is_optional_and_round_trips(wire: dict[str, Any]) -> None:
    item = item_from_wire(wire)
    assert isinstance(item, FunctionCallOutput) and item.call_id == ""  # no call to pair with
    assert same_bytes(item, wire)
    assert item_from_wire(item_to_wire(item)) == item


def test_function_call_output_built_in_code_still_sends_its_call_id() -> None:
    assert item_to_wire(FunctionCallOutput("", FunctionCallOutputPayload.from_text("x"))) == {
        "type": "function_call_output",
        "call_id": "",
        "output": "x",
    }
    decoded = item_from_wire({"type": "function_call_output", "output": "x"})
    assert isinstance(decoded, FunctionCallOutput)
    paired = attrs.evolve(decoded, call_id="call_9")  # a call id set later is sent
    assert item_to_wire(paired) == {"type": "function_call_output", "output": "x", "call_id": "call_9"}


# ---- the SDK's easy input message --------------------------------------------------------------


@pytest.mark.parametrize(
    "wire",
    [
        {"type": "message", "role": "user", "content": "hello"},
        {"role": "user", "content": "hello"},
        {"content": "hi there", "role": "assistant", "phase": "final_answer", "type": "message"},
        {"role": "developer", "content": ""},
        {"role": "system", "content": "be brief", "phase": None},
        {"role": "user", "content": [{"type": "input_text", "text": "typed parts, no type"}]},
    ],
)
def test_easy_input_message_round_trips_byte_for_byte(wire: dict[str, Any]) -> None:
    item = item_from_wire(wire)
    assert isinstance(item, Message) and item.role == wire["role"]
    assert same_bytes(item, wire)
    assert item_from_wire(item_to_wire(item)) == item
    assert items_from_wire([wire]) == [item]


def test_easy_message_content_is_one_text_part() -> None:
    user = item_from_wire({"role": "user", "content": "hello"})
    assert isinstance(user, Message)
    assert user.content == ({"type": "input_text", "text": "hello"},) and user.text() == "hello"
    assert user == Message.user("hello")  # the layout is not part of equality
    assistant = item_from_wire({"type": "message", "role": "assistant", "content": "sure"})
    assert assistant == Message.assistant("sure") and assistant.text() == "sure"
    # once the content is no longer that one text part, it is sent as parts
    longer = attrs.evolve(user, content=(*user.content, {"type": "input_text", "text": "!"}))
    assert item_to_wire(longer) == {"role": "user", "content": list(longer.content)}


def test_untyped_objects_that_are_not_messages_stay_opaque() -> None:
    for wire in (
        {"id": "msg_1"},  # an item reference without its type
        {"id": "msg_1", "type": None},  # ... or with a null type
        {"role": "user"},
        {"role": 3, "content": "x"},
        {"role": "user", "content": 5},
    ):
        item = item_from_wire(wire)
        assert isinstance(item, UnknownItem) and item_to_wire(item) == wire


def test_a_malformed_typed_message_names_the_content_field() -> None:
    with pytest.raises(WireFormatError, match=r"message\.content: expected a string or an array, got a number"):
        item_from_wire({"type": "message", "role": "user", "content": 5})
    with pytest.raises(WireFormatError, match=r"message: required field 'content' is missing"):
        item_from_wire({"type": "message", "role": "user"})


# ---- tool search items without execution / status ----------------------------------------------


def test_tool_search_call_without_execution() -> None:
    wire = {"type": "tool_search_call", "arguments": {"query": "weather"}, "call_id": "ts_1"}
    item = item_from_wire(wire)
    assert isinstance(item, ToolSearchCall) and item.execution is None and item.arguments == {"query": "weather"}
    assert same_bytes(item, wire)


def test_tool_search_output_without_status_or_execution() -> None:
    wire: dict[str, Any]
    for wire in (
        {"type": "tool_search_output", "tools": [], "execution": "client"},
        {"type": "tool_search_output", "tools": [{"type": "function", "name": "f"}]},
        {"type": "tool_search_output", "tools": [], "status": None, "execution": None},
    ):
        item = item_from_wire(wire)
        assert isinstance(item, ToolSearchOutput) and item.status is None
        assert same_bytes(item, wire)


# ---- refusals ------------------------------------------------------------------------------


def test_text_includes_refusals_in_content_order() -> None:
    refusal = item_from_wire(
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "refusal", "refusal": "I can't help with that."}],
        }
    )
    assert isinstance(refusal, Message) and refusal.text() == "I can't help with that."
    mixed = Message(
        role="assistant",
        content=(
            {"type": "output_text", "text": "Part one. "},
            {"type": "refusal", "refusal": "No more."},
            {"type": "input_image", "image_url": "data:,"},
        ),
    )
    assert mixed.text() == "Part one. No more."


# ---- key order: the decoded layout is kept ----------------------------------------------------


def test_key_order_is_kept_and_canonical_without_a_wire_form() -> None:
    wire = {
        "arguments": "{}",
        "call_id": "call_1",
        "name": "shell",
        "type": "function_call",
        "id": "fc_1",
        "status": "completed",
    }
    item = item_from_wire(wire)
    assert isinstance(item, FunctionCall) and item.wire_form == WireForm(tuple(wire))
    assert same_bytes(item, wire)
    built = FunctionCall(call_id="call_1", name="shell", arguments="{}", id="fc_1", extra={"status": "completed"})
    assert built == item and built.wire_form is None and repr(built) == repr(item)
    assert list(item_to_wire(built)) == ["type", "call_id", "name", "arguments", "id", "status"]
    # a field changed later keeps its place; one set later goes last
    renamed = attrs.evolve(item, name="exec", namespace="tools")
    assert list(item_to_wire(renamed)) == [*wire, "namespace"] and item_to_wire(renamed)["name"] == "exec"
    dropped = attrs.evolve(item, id=None)
    assert list(item_to_wire(dropped)) == ["arguments", "call_id", "name", "type", "status"]
