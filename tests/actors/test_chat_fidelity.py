"""Chat Completions fidelity: what the decoder used to drop or fail on (refusals, legacy
``function_call``, usage after ``length``, Mistral array content, other reasoning shapes, Groq's
``x_groq.usage``, ``url_citation`` annotations), what the request builder used to drop (refusals,
reasoning details, legacy calls, untyped "easy" messages), a conformance test over chunks built
from the official ``openai`` SDK's types, and a few of these end to end over the scripted server
on loopback."""

from __future__ import annotations

import json
import types
import typing
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal, Union, get_args, get_origin

import httpx
import pydantic
import pytest
import trio
import trio.testing
from hypothesis import given, settings, strategies as st

from actors.model import ModelSettings
from actors.model._chat import ChatStreamDecoder, chat_request_body
from actors.model._chat_request import LEGACY_CALL_PREFIX
from actors.scripted import Incomplete, Malformed, Reply, Script, Text, Usage, open_scripted_server
from actors.session import Session, open_session
from actors.tools import ToolRegistry
from kernel.errors import IncompleteResponse
from kernel.items import (
    CustomToolCall,
    CustomToolCallOutput,
    FreeformTool,
    FunctionCall,
    FunctionCallOutput,
    FunctionCallOutputPayload,
    Message,
    Reasoning,
    UnknownItem,
    item_from_wire,
)
from kernel.prompt import Prompt
from kernel.stream import (
    Completed,
    Created,
    ModelEvent,
    OutputItemAdded,
    OutputItemDone,
    OutputTextDelta,
    ReasoningContentDelta,
    ReasoningSummaryDelta,
    ReasoningSummaryPartAdded,
    TokenUsage,
    ToolCallInputDelta,
)

from ._replay_helpers import feed_in_pieces
from ._scripted_helpers import CHAT_BODY, post

# --- helpers ---------------------------------------------------------------------------------


def sse(*chunks: Any, done: bool = True) -> bytes:
    """``data: <json>`` events (strings sent raw), then ``data: [DONE]``."""
    parts = [f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n".encode() for c in chunks]
    if done:
        parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **top: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
    }
    out.update(top)
    return out


def decode(
    body: bytes, cuts: list[int] | None = None, *, decoder: ChatStreamDecoder | None = None
) -> tuple[list[ModelEvent], ChatStreamDecoder]:
    d = decoder or ChatStreamDecoder()
    return feed_in_pieces(d, body, cuts), d


def done_items(events: list[ModelEvent]) -> list[Any]:
    return [e.item for e in events if isinstance(e, OutputItemDone)]


def of(events: list[ModelEvent], cls: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


USAGE = {"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
USAGE_10_5 = TokenUsage(input_tokens=10, output_tokens=5, total_tokens=15)


def messages_of(*items: Any, tools: list[Any] | None = None) -> list[dict[str, Any]]:
    prompt = Prompt(input=list(items), tools=tools or [], base_instructions="")
    return chat_request_body(prompt, model="m")["messages"]  # type: ignore[no-any-return]


# --- refusals --------------------------------------------------------------------------------

REFUSAL_BODY = sse(
    chunk({"role": "assistant", "content": None, "refusal": ""}),
    chunk({"refusal": "I'm sorry, "}),
    chunk({"refusal": "I can't help with that."}),
    chunk({}, "stop"),
    USAGE,
)


def test_a_refusal_only_stream_yields_a_message_with_a_refusal_part() -> None:
    events, d = decode(REFUSAL_BODY)
    assert d.error is None and d.done
    assert events[:2] == [
        Created("chatcmpl-1"),
        OutputItemAdded(Message(role="assistant", content=(), id="msg_chatcmpl-1")),
    ]
    assert not of(events, OutputTextDelta)
    assert done_items(events) == [
        Message(
            role="assistant",
            content=({"type": "refusal", "refusal": "I'm sorry, I can't help with that."},),
            id="msg_chatcmpl-1",
        )
    ]
    assert events[-1] == Completed("chatcmpl-1", USAGE_10_5)


def test_text_and_refusal_become_two_parts_in_order() -> None:
    events, _ = decode(sse(chunk({"refusal": "No."}), chunk({"content": "Note: "}), chunk({}, "stop")))
    (message,) = done_items(events)
    assert message.content == (
        {"type": "output_text", "text": "Note: "},
        {"type": "refusal", "refusal": "No."},
    )


def test_empty_refusal_fields_are_not_a_refusal() -> None:
    # Snowflake sends "refusal": "" on every chunk
    events, _ = decode(sse(chunk({"content": "hi", "refusal": ""}), chunk({"refusal": ""}, "stop")))
    assert done_items(events) == [Message.assistant("hi", id="msg_chatcmpl-1")]


def test_a_refusal_in_history_is_sent_back_as_the_refusal_field(monkeypatch: pytest.MonkeyPatch) -> None:
    refusal_only = Message(role="assistant", content=({"type": "refusal", "refusal": "I can't."},))
    both = Message(
        role="assistant",
        content=({"type": "output_text", "text": "Partly: "}, {"type": "refusal", "refusal": "no more."}),
    )
    # whatever Message.text() returns (it may come to include refusals), content is the text parts
    monkeypatch.setattr(Message, "text", lambda self: "text() must not be used")
    assert messages_of(Message.user("q"), refusal_only, both) == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "refusal": "I can't."},
        {"role": "assistant", "content": "Partly: ", "refusal": "no more."},
    ]


# --- legacy function_call ---------------------------------------------------------------------

LEGACY_BODY = sse(
    chunk({"role": "assistant", "content": None, "function_call": {"name": "repl", "arguments": ""}}),
    chunk({"function_call": {"arguments": '{"code": '}}),
    chunk({"function_call": {"arguments": '"print(1)"}'}}),
    chunk({}, "function_call"),
    USAGE,
)
LEGACY_ID = LEGACY_CALL_PREFIX + "chatcmpl-1_0"


def test_a_legacy_function_call_is_decoded_with_a_stable_synthetic_id() -> None:
    events, d = decode(LEGACY_BODY)
    assert d.error is None and d.done
    assert of(events, OutputItemAdded) == [OutputItemAdded(FunctionCall(call_id=LEGACY_ID, name="repl", arguments=""))]
    assert of(events, ToolCallInputDelta) == [
        ToolCallInputDelta(LEGACY_ID, '{"code": '),
        ToolCallInputDelta(LEGACY_ID, '"print(1)"}'),
    ]
    assert done_items(events) == [FunctionCall(call_id=LEGACY_ID, name="repl", arguments='{"code": "print(1)"}')]
    assert done_items(decode(LEGACY_BODY)[0]) == done_items(events)  # deterministic


def test_legacy_calls_several_segments_given_ids_and_custom_tools() -> None:
    body = sse(
        chunk({"function_call": {"name": "a", "arguments": "{}"}}),
        chunk({"function_call": {"name": "b", "arguments": "{}"}}),  # a new name after a whole call
        chunk({}, "function_call"),
        chunk({"function_call": {"name": "apply_patch", "arguments": '{"input": "P"}'}}, "function_call"),
        chunk({"function_call": {"name": "c", "id": "given", "arguments": {"k": 1}}}, "function_call"),
    )
    prompt = Prompt(tools=[FreeformTool(name="apply_patch")])
    events, d = decode(body, decoder=ChatStreamDecoder.for_prompt(prompt))
    assert d.error is None
    assert done_items(events) == [
        FunctionCall(call_id=LEGACY_ID, name="a", arguments="{}"),
        FunctionCall(call_id=LEGACY_CALL_PREFIX + "chatcmpl-1_1", name="b", arguments="{}"),
        CustomToolCall(call_id=LEGACY_CALL_PREFIX + "chatcmpl-1_0_1", name="apply_patch", input="P"),  # segment 1
        FunctionCall(call_id="given", name="c", arguments='{"k":1}'),
    ]


def test_a_legacy_call_goes_back_in_the_legacy_form_with_its_output() -> None:
    events, _ = decode(
        sse(
            chunk({"content": "Running."}),
            chunk({"function_call": {"name": "repl", "arguments": '{"code": "1"}'}}),
            chunk({}, "function_call"),
        )
    )
    items = done_items(events)
    call = items[-1]
    assert isinstance(call, FunctionCall) and call.call_id.startswith(LEGACY_CALL_PREFIX)
    output = FunctionCallOutput(call.call_id, FunctionCallOutputPayload.from_text("1"))
    assert messages_of(Message.user("go"), *items, output) == [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "Running.", "function_call": {"name": "repl", "arguments": '{"code": "1"}'}},
        {"role": "function", "name": "repl", "content": "1"},
    ]
    # a custom tool decoded from a legacy call goes back the same way
    custom = CustomToolCall(call_id=LEGACY_CALL_PREFIX + "x", name="apply_patch", input="P")
    custom_out = CustomToolCallOutput(custom.call_id, FunctionCallOutputPayload.from_text("Done!"))
    assert messages_of(custom, custom_out)[-2:] == [
        {"role": "assistant", "content": "", "function_call": {"name": "apply_patch", "arguments": '{"input":"P"}'}},
        {"role": "function", "name": "apply_patch", "content": "Done!"},
    ]


def test_a_legacy_call_never_merges_with_tool_calls() -> None:
    call = FunctionCall(call_id="c1", name="f", arguments="{}")
    legacy = FunctionCall(call_id=LEGACY_CALL_PREFIX + "1", name="g", arguments="{}")
    messages = messages_of(call, legacy)
    assert messages == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "assistant", "content": "", "function_call": {"name": "g", "arguments": "{}"}},
    ]


# --- usage after finish_reason "length" ------------------------------------------------------


@pytest.mark.parametrize("reason, detail", [("length", "max_output_tokens"), ("content_filter", "content_filter")])
def test_usage_after_a_truncating_finish_reason_is_read(reason: str, detail: str) -> None:
    body = sse(chunk({"content": "half"}), chunk({}, reason), USAGE)
    events, d = decode(body)
    assert isinstance(d.error, IncompleteResponse) and d.error.reason == detail
    assert d.usage == USAGE_10_5 and not d.done
    assert done_items(events) == [Message.assistant("half", id="msg_chatcmpl-1")]
    # at EOF without [DONE] too, and whatever comes between is read for its usage only
    body = sse(
        chunk({"content": "half"}),
        chunk({}, reason),
        chunk({"content": "more"}, "stop"),
        {"error": {"message": "Token limit reached", "code": 400}},
        "not json",
        USAGE,
        done=False,
    )
    events, d = decode(body)
    assert isinstance(d.error, IncompleteResponse) and d.error.reason == detail
    assert d.usage == USAGE_10_5
    assert done_items(events) == [Message.assistant("half", id="msg_chatcmpl-1")]


def test_the_incomplete_error_is_set_only_at_the_end() -> None:
    d = ChatStreamDecoder()
    d.feed(sse(chunk({"content": "x"}, "length"), done=False))
    assert d.error is None and not d.done  # the usage chunk may still come
    d.feed(sse(USAGE))
    assert isinstance(d.error, IncompleteResponse) and d.usage == USAGE_10_5


# --- Mistral: delta.content as an array of typed parts ------------------------------------------


def test_array_content_text_and_thinking_parts() -> None:
    body = sse(
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": [{"type": "thinking", "thinking": [{"type": "text", "text": "Okay"}]}]}),
        chunk({"content": [{"type": "thinking", "thinking": [{"type": "text", "text": ", think."}]}]}),
        chunk({"content": [{"type": "text", "text": "Hello"}]}),
        chunk({"content": [{"type": "text", "text": " world"}, {"type": "image_url", "image_url": "x"}, 3, None]}),
        chunk({"content": "!"}, "stop"),
        USAGE,
    )
    events, d = decode(body)
    assert d.error is None and d.done
    assert [e.delta for e in of(events, ReasoningContentDelta)] == ["Okay", ", think."]
    assert [e.delta for e in of(events, OutputTextDelta)] == ["Hello", " world", "!"]
    assert done_items(events) == [
        Reasoning(id="rs_chatcmpl-1", content=({"type": "reasoning_text", "text": "Okay, think."},)),
        Message.assistant("Hello world!", id="msg_chatcmpl-1"),
    ]


def test_array_content_thinking_as_a_string_and_untyped_text_parts() -> None:
    body = sse(chunk({"content": [{"type": "thinking", "thinking": "hm"}, {"text": "ok"}, "!"]}, "stop"))
    events, d = decode(body)
    assert d.error is None
    assert done_items(events) == [
        Reasoning(id="rs_chatcmpl-1", content=({"type": "reasoning_text", "text": "hm"},)),
        Message.assistant("ok!", id="msg_chatcmpl-1"),
    ]


# --- other reasoning shapes --------------------------------------------------------------------


def test_openrouter_reasoning_string_and_details_are_not_doubled_and_signatures_kept() -> None:
    def rd(**entry: Any) -> dict[str, Any]:
        return {"type": "reasoning.text", "format": "anthropic-claude-v1", "index": 0, **entry}

    body = sse(
        chunk({"role": "assistant", "content": "", "reasoning": None, "reasoning_details": []}),
        chunk({"content": "", "reasoning_details": [rd(text="", signature="")]}),
        chunk({"content": "", "reasoning": "This", "reasoning_details": [rd(text="This")]}),
        chunk({"content": "", "reasoning": " is easy.", "reasoning_details": [rd(text=" is easy.")]}),
        chunk({"content": "", "reasoning": None, "reasoning_details": [rd(signature="U0lH")]}),
        chunk({"content": "", "reasoning_details": [{"type": "reasoning.encrypted", "data": "ZW5j", "index": 1}]}),
        chunk({"content": "4", "reasoning": None, "reasoning_details": []}),
        chunk({}, "stop"),
    )
    events, d = decode(body)
    assert d.error is None
    assert [e.delta for e in of(events, ReasoningContentDelta)] == ["This", " is easy."]
    reasoning, message = done_items(events)
    assert reasoning == Reasoning(
        id="rs_chatcmpl-1",
        content=({"type": "reasoning_text", "text": "This is easy."},),
        extra={
            "reasoning_details": [
                rd(text="This is easy.", signature="U0lH"),
                {"type": "reasoning.encrypted", "data": "ZW5j", "index": 1},
            ]
        },
    )
    assert message == Message.assistant("4", id="msg_chatcmpl-1")


def test_reasoning_details_alone_give_the_reasoning_text_and_summaries() -> None:
    body = sse(
        chunk({"reasoning_details": [{"type": "reasoning.text", "text": "15", "id": "r1", "index": 0}]}),
        chunk({"reasoning_details": [{"type": "reasoning.text", "text": " * 27", "id": "r1", "index": 0}]}),
        chunk({"reasoning_details": [{"type": "reasoning.summary", "summary": "**Plan", "index": 1}]}),
        chunk({"reasoning_details": [{"type": "reasoning.summary", "summary": "**", "index": 1}]}),
        chunk({"reasoning_details": [{"type": "reasoning.summary", "summary": "Check"}]}),
        chunk({"reasoning_details": [{"type": "reasoning.summary", "summary": " it"}]}),  # continues: no index
        chunk({"reasoning_details": [{"type": "reasoning.encrypted", "data": "QUJD"}]}),
        chunk({"reasoning_details": [{"type": "reasoning.encrypted", "data": "REVG"}]}),  # never merged
        chunk({"content": "405", "reasoning_details": ["junk", 3]}, "stop"),
    )
    events, d = decode(body)
    assert d.error is None
    rs = "rs_chatcmpl-1"
    assert [e for e in events if isinstance(e, (ReasoningContentDelta, ReasoningSummaryDelta))] == [
        ReasoningContentDelta(rs, "15"),
        ReasoningContentDelta(rs, " * 27"),
        ReasoningSummaryDelta(rs, "**Plan", 0),
        ReasoningSummaryDelta(rs, "**", 0),
        ReasoningSummaryDelta(rs, "Check", 1),
        ReasoningSummaryDelta(rs, " it", 1),
    ]
    assert of(events, ReasoningSummaryPartAdded) == [ReasoningSummaryPartAdded(rs, 0), ReasoningSummaryPartAdded(rs, 1)]
    reasoning = done_items(events)[0]
    assert reasoning.content == ({"type": "reasoning_text", "text": "15 * 27"},)
    assert reasoning.summary == (
        {"type": "summary_text", "text": "**Plan**"},
        {"type": "summary_text", "text": "Check it"},
    )
    assert reasoning.extra["reasoning_details"] == [
        {"type": "reasoning.text", "text": "15 * 27", "id": "r1", "index": 0},
        {"type": "reasoning.summary", "summary": "**Plan**", "index": 1},
        {"type": "reasoning.summary", "summary": "Check it"},
        {"type": "reasoning.encrypted", "data": "QUJD"},
        {"type": "reasoning.encrypted", "data": "REVG"},
    ]


def test_encrypted_only_reasoning_is_still_an_item() -> None:
    entry = {"type": "reasoning.encrypted", "data": "b64==", "id": "rs_1", "format": "openai-responses-v1", "index": 0}
    events, d = decode(sse(chunk({"reasoning_details": [entry]}), chunk({"content": "hi"}, "stop")))
    assert d.error is None and not of(events, ReasoningContentDelta)
    assert done_items(events)[0] == Reasoning(id="rs_chatcmpl-1", extra={"reasoning_details": [entry]})


@pytest.mark.parametrize(
    "shape",
    [
        {"text": "thinking"},
        {"content": "thinking"},
        {"content": [{"type": "text", "text": "think"}, {"type": "text", "text": "ing"}]},
        {"thinking": "thinking"},
    ],
)
def test_reasoning_as_an_object(shape: dict[str, Any]) -> None:
    events, d = decode(sse(chunk({"reasoning": shape}), chunk({"reasoning": {"other": 1}}), chunk({}, "stop")))
    assert d.error is None
    assert done_items(events) == [
        Reasoning(id="rs_chatcmpl-1", content=({"type": "reasoning_text", "text": "thinking"},))
    ]


def test_message_in_a_final_chunk_is_read_once() -> None:
    final = {"role": "assistant", "content": "Hello there!", "reasoning": "Greet back."}
    streamed = sse(chunk({"content": "Hello"}), chunk({"content": " there!"}), chunk(None, "stop"))
    body = streamed.replace(b'"delta": {}', b'"message": ' + json.dumps(final).encode())
    events, d = decode(body)
    assert d.error is None
    assert done_items(events) == [
        Reasoning(id="rs_chatcmpl-1", content=({"type": "reasoning_text", "text": "Greet back."},)),
        Message.assistant("Hello there!", id="msg_chatcmpl-1"),  # not doubled
    ]
    # a final chunk with only a message, every kind of part
    only = {
        "id": "x",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "4",
                    "reasoning_content": "2+2",
                    "refusal": None,
                    "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                },
                "finish_reason": "tool_calls",
            }
        ],
    }
    events, d = decode(sse(only))
    assert d.error is None
    assert done_items(events) == [
        Reasoning(id="rs_x", content=({"type": "reasoning_text", "text": "2+2"},)),
        Message.assistant("4", id="msg_x"),
        FunctionCall(call_id="c", name="f", arguments="{}"),
    ]


def test_reasoning_details_are_sent_back_on_the_next_assistant_message() -> None:
    details = [
        {"type": "reasoning.text", "text": "Think.", "signature": "U0lH", "format": "anthropic-claude-v1", "index": 0},
        {"type": "reasoning.encrypted", "data": "ZW5j", "index": 1},
    ]
    reasoning = Reasoning(
        id="rs_1", content=({"type": "reasoning_text", "text": "Think."},), extra={"reasoning_details": details}
    )
    call = FunctionCall(call_id="c1", name="f", arguments="{}")
    output = FunctionCallOutput("c1", FunctionCallOutputPayload.from_text("ok"))
    plain = Reasoning(id="rs_2", content=({"type": "reasoning_text", "text": "no details"},))
    assert messages_of(
        Message.user("q"),
        Message.assistant("Earlier."),
        reasoning,  # a new response: its calls do not merge into the earlier message
        call,
        output,
        plain,
        Message.assistant("Done."),
        Reasoning(id="rs_3", extra={"reasoning_details": [{"type": "reasoning.encrypted", "data": "x"}]}),
        Message.user("next"),  # the details of a response without output are dropped
    ) == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "Earlier."},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            "reasoning_details": details,
        },
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        {"role": "assistant", "content": "Done."},
        {"role": "user", "content": "next"},
    ]
    # text then calls of one response: one message carrying the details
    assert messages_of(reasoning, Message.assistant("Calling."), call) == [
        {
            "role": "assistant",
            "content": "Calling.",
            "reasoning_details": details,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        }
    ]


def test_decoded_reasoning_details_round_trip_through_the_request_body() -> None:
    entry = {"type": "reasoning.text", "text": "hm", "signature": "c2ln", "index": 0}
    events, _ = decode(sse(chunk({"reasoning": "hm", "reasoning_details": [entry]}), chunk({"content": "A"}, "stop")))
    messages = messages_of(Message.user("q"), *done_items(events))
    assert messages[-1] == {"role": "assistant", "content": "A", "reasoning_details": [entry]}
    json.dumps(messages)


# --- usage under x_groq ------------------------------------------------------------------------


def test_groq_usage_under_x_groq_is_read() -> None:
    x_groq = {"id": "req_1", "usage": {"prompt_tokens": 18, "completion_tokens": 439, "total_tokens": 457}}
    events, d = decode(sse(chunk({"content": "hi"}), chunk({}, "stop", x_groq=x_groq)))
    assert d.error is None and events[-1] == Completed("chatcmpl-1", TokenUsage(18, 0, 439, 0, 457))
    # the top-level usage wins when both are sent; a malformed x_groq is ignored
    top = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    events, _ = decode(sse(chunk({}, "stop", x_groq=x_groq, usage=top)))
    assert events[-1] == Completed("chatcmpl-1", TokenUsage(1, 0, 2, 0, 3))
    events, d = decode(sse(chunk({}, "stop", x_groq="nope"), chunk({}, x_groq={"usage": 5})))
    assert d.error is None and events[-1] == Completed("chatcmpl-1", None)


# --- annotations -------------------------------------------------------------------------------


def test_url_citations_are_kept_on_the_output_text_part() -> None:
    cite = {"url": "https://a.example/x", "title": "A", "start_index": 0, "end_index": 5, "content": "snippet"}
    other = {"type": "file_citation", "file_citation": {"file_id": "f1", "index": 2}}
    body = sse(
        chunk({"content": "Hello"}),
        chunk({"content": "", "annotations": [{"type": "url_citation", "url_citation": cite}]}),
        chunk({"annotations": [{"type": "url_citation", "url_citation": cite}, other, "junk"]}),  # a repeat
        chunk({}, "stop"),
    )
    events, d = decode(body)
    assert d.error is None
    assert done_items(events) == [
        Message(
            role="assistant",
            content=(
                {
                    "type": "output_text",
                    "text": "Hello",
                    "annotations": [
                        {
                            "type": "url_citation",
                            "url": "https://a.example/x",
                            "title": "A",
                            "start_index": 0,
                            "end_index": 5,
                        },
                        {"type": "file_citation", "file_id": "f1", "index": 2},
                    ],
                },
            ),
            id="msg_chatcmpl-1",
        )
    ]
    # annotations without text still make a message; the request sends its (empty) text only
    events, _ = decode(sse(chunk({"annotations": [{"type": "url_citation", "url_citation": cite}]}, "stop")))
    (message,) = done_items(events)
    assert message.content[0]["text"] == "" and len(message.content[0]["annotations"]) == 1
    assert messages_of(message) == [{"role": "assistant", "content": ""}]


# --- untyped "easy" messages -------------------------------------------------------------------


EASY = [
    ({"role": "user", "content": "hello"}, {"role": "user", "content": "hello"}),
    ({"role": "developer", "content": "be brief"}, {"role": "system", "content": "be brief"}),
    (
        {"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
        {"role": "user", "content": "ab"},
    ),
    ({"role": "assistant", "content": "earlier answer"}, {"role": "assistant", "content": "earlier answer"}),
    (
        {"role": "assistant", "content": [{"type": "output_text", "text": "x"}, {"type": "refusal", "refusal": "r"}]},
        {"role": "assistant", "content": "x", "refusal": "r"},
    ),
    (
        {"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,AA"}]},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]},
    ),
]


@pytest.mark.parametrize("wire, sent", EASY)
def test_untyped_easy_messages_are_sent(wire: dict[str, Any], sent: dict[str, Any]) -> None:
    # decoded by the item codec (a Message, or an UnknownItem before it knew easy messages) ...
    assert messages_of(item_from_wire(wire)) == [sent]
    # ... or kept whole as an unknown item (older rollouts, hosts building items directly)
    assert messages_of(UnknownItem(wire)) == [sent]


def test_unknown_items_that_are_not_messages_are_dropped() -> None:
    assert (
        messages_of(
            UnknownItem({"role": "user", "content": 5}),
            UnknownItem({"content": "no role"}),
            UnknownItem({"type": "web_search_call", "role": "user", "content": "typed: not a message"}),
        )
        == []
    )


# --- any split ---------------------------------------------------------------------------------

SPLIT_BODIES = [
    REFUSAL_BODY,
    LEGACY_BODY,
    sse(
        chunk({"content": [{"type": "thinking", "thinking": [{"type": "text", "text": "ünï"}]}]}),
        chunk({"reasoning_details": [{"type": "reasoning.text", "text": "t", "signature": "s", "index": 0}]}),
        chunk(
            {
                "content": [{"type": "text", "text": "añswer"}],
                "annotations": [{"type": "url_citation", "url_citation": {"url": "u"}}],
            }
        ),
        chunk({}, "stop", x_groq={"usage": {"prompt_tokens": 3, "completion_tokens": 4}}),
    ),
    sse(chunk({"content": "x"}), chunk({}, "length"), USAGE),
]


@settings(max_examples=60)
@given(st.sampled_from(SPLIT_BODIES), st.data())
def test_any_split_gives_the_same_events(body: bytes, data: st.DataObject) -> None:
    whole, d1 = decode(body)
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=30))
    split, d2 = decode(body, cuts)
    assert split == whole
    assert repr(d1.error) == repr(d2.error) and d1.usage == d2.usage


# --- conformance: chunks built from the official SDK's types ----------------------------------

Mode = Literal["all", "required", "null"]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, pydantic.BaseModel)


def build_sample(tp: Any, mode: Mode, variant: int, depth: int = 0) -> Any:
    """A JSON value valid for the type ``tp`` (a pydantic model, Literal, Union / Optional, list,
    dict or scalar). ``mode``: ``"all"`` fills every field, ``"required"`` only the required
    ones, ``"null"`` sets every field that may be null to null. ``variant`` picks among Literal
    values and Union members."""
    if depth > 12:
        raise RecursionError(f"sample of {tp!r} nests too deep")
    origin, args = get_origin(tp), get_args(tp)
    if origin is typing.Annotated:
        return build_sample(args[0], mode, variant, depth + 1)
    if tp is type(None):
        return None
    if origin is Literal:
        return args[variant % len(args)]
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if mode == "null" and len(members) < len(args):
            return None
        return build_sample(members[variant % len(members)], mode, variant, depth + 1)
    if origin is list or tp is list:
        item = args[0] if args else str
        return [build_sample(item, mode, variant, depth + 1)]
    if origin is dict or tp is dict:
        return {"key": build_sample(args[1], mode, variant, depth + 1)} if args else {"key": "value"}
    if _is_model(tp):
        out: dict[str, Any] = {}
        for name, field in tp.model_fields.items():
            if mode == "required" and not field.is_required():
                continue
            out[field.alias or name] = build_sample(field.annotation, mode, variant, depth + 1)
        return out
    if tp is bool:
        return bool(variant % 2)
    if tp is int:
        return 0  # index 0: the choice the decoder reads
    if tp is float:
        return 0.5
    if tp is str:
        return f"s{variant}"
    if tp is object or tp is Any:
        return "x"
    raise TypeError(f"no sample for {tp!r}")


def _samples() -> list[tuple[str, dict[str, Any]]]:
    from openai.types.chat import ChatCompletionChunk

    out = []
    for mode in ("all", "required", "null"):
        for variant in range(6):  # every finish_reason, role, service tier...
            sample = build_sample(ChatCompletionChunk, mode, variant)
            ChatCompletionChunk.model_validate(sample)  # valid per the SDK
            out.append((f"{mode}-{variant}", sample))
    return out


SDK_SAMPLES = _samples()


@pytest.mark.parametrize("name, sample", SDK_SAMPLES, ids=[n for n, _ in SDK_SAMPLES])
def test_sdk_chunk_samples_decode_without_error(name: str, sample: dict[str, Any]) -> None:
    reasons = [c.get("finish_reason") for c in sample["choices"] if c.get("index", 0) == 0]
    truncated = any(r in ("length", "content_filter") for r in reasons)
    for body in (sse(sample), sse(sample, sample), sse(sample, done=False)):
        events, d = decode(body)
        if truncated:
            assert isinstance(d.error, IncompleteResponse), (name, d.error)
        elif b"[DONE]" in body or any(reasons):
            assert d.error is None and d.done, (name, d.error)
            assert isinstance(events[-1], Completed)
        else:  # no finish_reason, no [DONE]: a failed stream, never a crash
            assert d.error is not None and "internal decoder failure" not in str(d.error)
    events, _ = decode(sse(sample))
    delta = sample["choices"][0]["delta"]
    if delta.get("content") and not truncated:
        assert "".join(e.delta for e in of(events, OutputTextDelta)) == delta["content"]
    if delta.get("refusal") and not truncated:
        assert any(p.get("type") == "refusal" for i in done_items(events) if isinstance(i, Message) for p in i.content)


def test_the_sample_builder_covers_the_optional_fields() -> None:
    all_fields = dict(SDK_SAMPLES)["all-0"]
    delta = all_fields["choices"][0]["delta"]
    assert {"content", "refusal", "function_call", "tool_calls", "role"} <= set(delta)
    assert "usage" in all_fields and all_fields["usage"] is not None
    assert all(v is None for k, v in dict(SDK_SAMPLES)["null-0"]["choices"][0]["delta"].items())
    assert set(dict(SDK_SAMPLES)["required-0"]) == {"id", "choices", "created", "model", "object"}


# --- end to end over the scripted server --------------------------------------------------------

registry = ToolRegistry()


@registry.tool
async def echo(text: str) -> str:
    """Echo the text back.

    Args:
        text: What to echo.
    """
    return f"echo: {text}"


def raw_reply(*chunks: Any) -> Reply:
    """A reply whose stream is ``chunks`` (then ``[DONE]``) sent as they are, after the server's
    first chunk; what the server renders after them is never read (the decoder stops at
    ``[DONE]``)."""
    raw = [c if isinstance(c, str) else json.dumps(c) for c in (*chunks, "[DONE]")]
    return Reply(faults=[Malformed(after_events=1, data=data) for data in raw])


@asynccontextmanager
async def chat_session(script: Script) -> AsyncIterator[tuple[Any, Session]]:
    async with open_scripted_server(script) as server:
        model = ModelSettings(base_url=server.base_url, model="scripted-model", wire="chat")
        async with open_session(model=model, tools=registry) as session:
            yield server, session


async def test_e2e_refusal_is_recorded_and_sent_back(autojump_clock: trio.testing.MockClock) -> None:
    refusal = "I'm sorry, I can't assist with that request."
    script = Script(
        [
            raw_reply(chunk({"refusal": refusal[:10]}), chunk({"refusal": refusal[10:]}), chunk({}, "stop")),
            Reply(items=[Text("ok")]),
        ]
    )
    async with chat_session(script) as (server, session):
        first = await session.run("do the bad thing")
        await session.run("never mind")
        history = await session.history()
    assert first.status == "completed"
    refused = [i for i in history if isinstance(i, Message) and i.role == "assistant"][0]
    assert refused.content == ({"type": "refusal", "refusal": refusal},)
    messages = server.requests[1].body["messages"]
    assert {"role": "assistant", "content": None, "refusal": refusal} in messages


async def test_e2e_legacy_function_call_runs_and_its_output_matches(autojump_clock: trio.testing.MockClock) -> None:
    script = Script(
        [
            raw_reply(
                chunk({"role": "assistant", "content": None, "function_call": {"name": "echo", "arguments": ""}}),
                chunk({"function_call": {"arguments": '{"text": '}}),
                chunk({"function_call": {"arguments": '"hi"}'}}),
                chunk({}, "function_call"),
            ),
            Reply(items=[Text("all done", chunk_size=3)]),
        ]
    )
    async with chat_session(script) as (server, session):
        outcome = await session.run("echo hi")
        history = await session.history()
    assert outcome.status == "completed" and outcome.last_agent_message == "all done"
    call = next(i for i in history if isinstance(i, FunctionCall))
    output = next(i for i in history if isinstance(i, FunctionCallOutput))
    assert call.call_id.startswith(LEGACY_CALL_PREFIX) and output.call_id == call.call_id
    messages = server.requests[1].body["messages"]
    assert messages[-2:] == [
        {"role": "assistant", "content": "", "function_call": {"name": "echo", "arguments": '{"text": "hi"}'}},
        {"role": "function", "name": "echo", "content": "echo: hi"},
    ]


async def test_e2e_reasoning_details_and_groq_usage_round_trip(autojump_clock: trio.testing.MockClock) -> None:
    def rd(**entry: Any) -> dict[str, Any]:
        return {"type": "reasoning.text", "format": "anthropic-claude-v1", "index": 0, **entry}

    x_groq = {"id": "req_1", "usage": {"prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37}}
    script = Script(
        [
            raw_reply(
                chunk({"reasoning": "Use echo.", "reasoning_details": [rd(text="Use echo.", signature="")]}),
                chunk({"reasoning_details": [rd(signature="U0lHTkFUVVJF")]}),
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_e1",
                                "type": "function",
                                "function": {"name": "echo", "arguments": '{"text":"x"}'},
                            }
                        ]
                    }
                ),
                chunk({}, "tool_calls", x_groq=x_groq),
            ),
            raw_reply(
                chunk({"content": [{"type": "thinking", "thinking": [{"type": "text", "text": "Echoed."}]}]}),
                chunk({"content": [{"type": "text", "text": "It said "}]}),
                chunk({"content": [{"type": "text", "text": "echo: x"}]}, "stop"),
            ),
        ]
    )
    async with chat_session(script) as (server, session):
        outcome = await session.run("go")
        history = await session.history()
    assert outcome.status == "completed" and outcome.last_agent_message == "It said echo: x"
    reasonings = [i for i in history if isinstance(i, Reasoning)]
    assert reasonings[0].extra["reasoning_details"] == [rd(text="Use echo.", signature="U0lHTkFUVVJF")]
    assert reasonings[1].content == ({"type": "reasoning_text", "text": "Echoed."},)
    sent = server.requests[1].body["messages"]
    assert sent[-2:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "call_e1", "type": "function", "function": {"name": "echo", "arguments": '{"text":"x"}'}}
            ],
            "reasoning_details": [rd(text="Use echo.", signature="U0lHTkFUVVJF")],
        },
        {"role": "tool", "tool_call_id": "call_e1", "content": "echo: x"},
    ]


async def test_e2e_usage_after_length_over_http() -> None:
    usage = Usage(input_tokens=79, output_tokens=1)
    script = Script([Reply(items=[Text('{"', chunk_size=1)], faults=[Incomplete()], usage=usage)])
    body = {**CHAT_BODY, "stream_options": {"include_usage": True}}
    async with open_scripted_server(script) as server, httpx.AsyncClient() as client:
        got = await post(client, server.base_url + "/chat/completions", body)
    assert b'"finish_reason":"length"' in got.body and b'"usage"' in got.body
    events, d = decode(got.body, list(range(0, len(got.body), 7)))
    assert isinstance(d.error, IncompleteResponse) and d.error.reason == "max_output_tokens"
    assert d.usage == TokenUsage(input_tokens=79, output_tokens=1, total_tokens=80)
    assert [i.text() for i in done_items(events)] == ['{"']
