"""The seed's four tests (codex-rs/kernel), ported against the names ``kernel`` exports."""

import pytest

from kernel import (
    CompletedResponseItem,
    CustomToolCall,
    CustomToolCallOutput,
    FatalError,
    FatalToolError,
    FreeformTool,
    FreeformToolFormat,
    FunctionCall,
    FunctionCallOutput,
    FunctionCallOutputPayload,
    Prompt,
    RespondToModel,
    execute_tool_call_with_default_output,
    response_input_to_response_item,
)


def test_reserializes_shell_outputs_for_function_and_custom_tool_calls() -> None:
    raw_output = '{"output":"hello","metadata":{"exit_code":0,"duration_seconds":0.5}}'
    expected_output = "Exit code: 0\nWall time: 0.5 seconds\nOutput:\nhello"
    prompt = Prompt(
        input=[
            FunctionCall(id=None, name="shell", namespace=None, arguments="{}", call_id="call-1"),
            FunctionCallOutput("call-1", FunctionCallOutputPayload.from_text(raw_output)),
            CustomToolCall(id=None, status=None, call_id="call-2", name="apply_patch", input="*** Begin Patch"),
            CustomToolCallOutput("call-2", FunctionCallOutputPayload.from_text(raw_output), name=None),
        ],
        tools=[
            FreeformTool(
                name="apply_patch",
                description="patch",
                format=FreeformToolFormat(type="grammar", syntax="lark", definition="patch"),
            )
        ],
    )

    assert prompt.formatted_input() == [
        FunctionCall(id=None, name="shell", namespace=None, arguments="{}", call_id="call-1"),
        FunctionCallOutput("call-1", FunctionCallOutputPayload.from_text(expected_output)),
        CustomToolCall(id=None, status=None, call_id="call-2", name="apply_patch", input="*** Begin Patch"),
        CustomToolCallOutput("call-2", FunctionCallOutputPayload.from_text(expected_output), name=None),
    ]


class _TestCall:
    def __init__(self, call_id: str) -> None:
        self.call_id = call_id

    def error_response(self, message: str) -> FunctionCallOutput:
        return FunctionCallOutput(self.call_id, FunctionCallOutputPayload.from_text(message))


class _TestExecutor:
    async def classify_response_item(self, item):  # type: ignore[no-untyped-def]
        return CompletedResponseItem.NonTool(item)

    async def execute_tool_call(self, call: _TestCall) -> FunctionCallOutput:
        if call.call_id == "ok":
            return FunctionCallOutput(call.call_id, FunctionCallOutputPayload.from_text("done"))
        if call.call_id == "retry":
            raise RespondToModel("try again")
        raise FatalToolError("boom")


async def test_execute_tool_call_with_default_output_surfaces_non_fatal_errors() -> None:
    response = await execute_tool_call_with_default_output(_TestExecutor(), _TestCall("retry"))
    assert response == FunctionCallOutput("retry", FunctionCallOutputPayload.from_text("try again"))


async def test_execute_tool_call_with_default_output_propagates_fatal_errors() -> None:
    with pytest.raises(FatalError) as info:
        await execute_tool_call_with_default_output(_TestExecutor(), _TestCall("fatal"))
    assert str(info.value) == "Fatal error: boom"


def test_response_input_to_response_item_skips_empty_call_ids() -> None:
    item = response_input_to_response_item(FunctionCallOutput("", FunctionCallOutputPayload.from_text("boom")))
    assert item is None
