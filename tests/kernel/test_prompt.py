"""Prompt, PromptConfig, ToolConfig and the seed's shell-output re-serialisation."""

import json

import pytest
from hypothesis import given, strategies as st

from kernel import (
    DEFAULT_BASE_INSTRUCTIONS,
    CustomToolCall,
    CustomToolCallOutput,
    FreeformTool,
    FunctionCall,
    FunctionCallOutput,
    FunctionCallOutputPayload,
    FunctionTool,
    LocalShellCall,
    Message,
    Prompt,
    PromptConfig,
    ToolConfig,
    format_f32,
)
from kernel.testing import prompts

APPLY_PATCH = FreeformTool(name="apply_patch", description="patch")


def shell_json(output: str, code: int = 0, dur: float = 0.5) -> str:
    return json.dumps({"output": output, "metadata": {"exit_code": code, "duration_seconds": dur}})


def formatted(items: list, tools: list | None = None) -> list:
    return Prompt(input=items, tools=tools if tools is not None else [APPLY_PATCH]).formatted_input()


def test_defaults_match_the_seed() -> None:
    p = Prompt()
    assert (p.input, p.tools, p.parallel_tool_calls, p.personality, p.output_schema, p.output_schema_strict) == (
        (),
        (),
        False,
        None,
        None,
        True,
    )
    assert p.base_instructions == DEFAULT_BASE_INSTRUCTIONS
    c = PromptConfig()
    assert (c.personality, c.output_schema, c.output_schema_strict) == (None, None, True)
    t = ToolConfig()
    assert (t.tools, t.parallel_tool_calls) == ((), False)


def test_build_prompt_copies_config_and_tools() -> None:
    cfg = PromptConfig(
        base_instructions="be brief",
        personality="friendly",
        output_schema={"type": "object"},
        output_schema_strict=False,
    )
    tools = ToolConfig(tools=[FunctionTool(name="shell")], parallel_tool_calls=True)
    p = cfg.build_prompt([Message.user("hi")], tools)
    assert p == Prompt(
        input=[Message.user("hi")],
        tools=[FunctionTool(name="shell")],
        parallel_tool_calls=True,
        base_instructions="be brief",
        personality="friendly",
        output_schema={"type": "object"},
        output_schema_strict=False,
    )


@pytest.mark.parametrize(
    "value, text",
    [
        (2.0, "2"),
        (0.5, "0.5"),
        (0.1, "0.1"),
        (1.25, "1.25"),
        (0, "0"),
        (3, "3"),
        (123.456, "123.456"),
        (1e20, "100000000000000000000"),
        (1e-7, "0.0000001"),
        (0.30000001192092896, "0.3"),
        (16777217, "16777216"),
        (-0.0, "-0"),
        (1e39, "inf"),
        (3.4028235e38, "340282350000000000000000000000000000000"),
    ],
)
def test_format_f32_matches_rust_display(value: float, text: str) -> None:
    assert format_f32(value) == text


def test_total_output_lines_header_is_lifted() -> None:
    out = formatted(
        [
            FunctionCall(call_id="c", name="shell", arguments="{}"),
            FunctionCallOutput(
                "c",
                FunctionCallOutputPayload.from_text(shell_json("Total output lines: 120\n\nhead\n...\ntail", 1, 2.0)),
            ),
        ]
    )
    assert out[1].output.body == "Exit code: 1\nWall time: 2 seconds\nTotal output lines: 120\nOutput:\nhead\n...\ntail"


@pytest.mark.parametrize(
    "output, expected_tail",
    [
        ("Total output lines: 12", "Output:\nTotal output lines: 12"),  # no newline: not a header
        ("Total output lines: x\nrest", "Output:\nTotal output lines: x\nrest"),
        ("Total output lines: +7\nrest", "Total output lines: 7\nOutput:\nrest"),  # Rust's u32 parse accepts '+'
        ("Total output lines: 4294967296\nr", "Output:\nTotal output lines: 4294967296\nr"),  # > u32
        ("Total output lines: 3\n\n\nx", "Total output lines: 3\nOutput:\n\nx"),  # one blank line removed
    ],
)
def test_header_edge_cases(output: str, expected_tail: str) -> None:
    out = formatted(
        [
            FunctionCall(call_id="c", name="container.exec", arguments="{}"),
            FunctionCallOutput("c", FunctionCallOutputPayload.from_text(shell_json(output))),
        ]
    )
    assert out[1].output.body.endswith(expected_tail)


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        '{"output": "x"}',
        '{"output": 1, "metadata": {"exit_code": 0, "duration_seconds": 1}}',
        '{"output": "x", "metadata": {"exit_code": 1.5, "duration_seconds": 1}}',
        '{"output": "x", "metadata": {"exit_code": true, "duration_seconds": 1}}',
        '{"output": "x", "metadata": {"exit_code": 2147483648, "duration_seconds": 1}}',
        '{"output": "x", "metadata": {"exit_code": 0, "duration_seconds": NaN}}',
        '{"output": "x", "metadata": {"exit_code": 0, "duration_seconds": "1"}}',
        '{"output": "x", "output": "y", "metadata": {"exit_code": 0, "duration_seconds": 1}}',
        "[1, 2]",
    ],
)
def test_outputs_serde_would_reject_are_untouched(raw: str) -> None:
    items = [
        FunctionCall(call_id="c", name="shell", arguments="{}"),
        FunctionCallOutput("c", FunctionCallOutputPayload.from_text(raw)),
    ]
    assert formatted(items) == items


def test_local_shell_calls_keyed_by_call_id_or_id_and_unknown_fields_ignored() -> None:
    raw = '{"output": "o", "metadata": {"exit_code": 0, "duration_seconds": 1, "extra": 1}, "more": true}'
    items = [
        LocalShellCall(status="completed", action={"type": "exec", "command": ["ls"]}, call_id="a"),
        FunctionCallOutput("a", FunctionCallOutputPayload.from_text(raw)),
        LocalShellCall(status="completed", action={"type": "exec", "command": ["ls"]}, id="b"),
        FunctionCallOutput("b", FunctionCallOutputPayload.from_text(raw)),
        FunctionCall(call_id="d", name="apply_patch", arguments="{}"),
        FunctionCallOutput("d", FunctionCallOutputPayload.from_text(raw)),
    ]
    out = formatted(items)
    for i in (1, 3, 5):
        assert out[i].output.body == "Exit code: 0\nWall time: 1 seconds\nOutput:\no"


def test_untouched_without_freeform_apply_patch_and_for_other_tools() -> None:
    raw = shell_json("x")
    items = [
        FunctionCall(call_id="c", name="shell", arguments="{}"),
        FunctionCallOutput("c", FunctionCallOutputPayload.from_text(raw)),
        FunctionCall(call_id="r", name="read", arguments="{}"),
        FunctionCallOutput("r", FunctionCallOutputPayload.from_text(raw)),
    ]
    assert formatted(items, tools=[]) == items
    assert formatted(items, tools=[FunctionTool(name="apply_patch")]) == items  # function, not freeform
    out = formatted(items)
    assert out[3] == items[3]  # not a shell-family call
    # an output before its call, or a second output for the same call, is not re-serialised
    reversed_items = [items[1], items[0]]
    assert formatted(reversed_items) == reversed_items
    twice = [items[0], items[1], items[1]]
    assert formatted(twice)[2] == items[1]


def test_success_flag_is_kept() -> None:
    items = [
        CustomToolCall(call_id="p", name="apply_patch", input="*** Begin Patch"),
        CustomToolCallOutput("p", FunctionCallOutputPayload.from_text(shell_json("ok"), success=False)),
    ]
    assert formatted(items)[1].output.success is False


SHELL_NAMES = {"shell", "container.exec", "apply_patch"}


def _is_shell_family_output(prompt: Prompt, index: int) -> bool:
    item = prompt.input[index]
    if not isinstance(item, (FunctionCallOutput, CustomToolCallOutput)):
        return False
    for earlier in prompt.input[:index]:
        if isinstance(earlier, FunctionCall) and earlier.call_id == item.call_id and earlier.name in SHELL_NAMES:
            return True
        if isinstance(earlier, CustomToolCall) and earlier.call_id == item.call_id and earlier.name == "apply_patch":
            return True
        if isinstance(earlier, LocalShellCall) and item.call_id in (earlier.call_id or earlier.id,):
            return True
    return False


@given(prompts())
def test_formatted_input_changes_only_shell_family_outputs_and_is_idempotent(prompt: Prompt) -> None:
    out = prompt.formatted_input()
    assert len(out) == len(prompt.input)
    has_patch = any(isinstance(t, FreeformTool) and t.name == "apply_patch" for t in prompt.tools)
    for i, (before, after) in enumerate(zip(prompt.input, out)):
        if before != after:
            assert has_patch and _is_shell_family_output(prompt, i)
            assert type(after) is type(before) and after.call_id == before.call_id
            assert after.output.body.startswith("Exit code: ")
    again = Prompt(input=out, tools=prompt.tools).formatted_input()
    assert again == out
    assert list(prompt.input) == list(prompt.input)  # the prompt itself is unchanged (frozen)


@given(st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_format_f32_round_trips(value: float) -> None:
    import struct

    text = format_f32(value)
    assert "e" not in text and not text.endswith(".0")
    assert struct.unpack("<f", struct.pack("<f", float(text)))[0] == value
