"""The Chat Completions wire: stream decoding (any split, faults, server quirks) and request bodies."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, strategies as st

from actors.model._chat import ChatStreamDecoder, chat_error, chat_request_body
from kernel.errors import (
    ContextWindowExceeded,
    IncompleteResponse,
    InvalidRequest,
    KernelError,
    QuotaExceeded,
    RateLimited,
    ServerError,
    StreamError,
    UsageLimitReached,
)
from kernel.items import (
    CustomToolCall,
    CustomToolCallOutput,
    FreeformTool,
    FreeformToolFormat,
    FunctionCall,
    FunctionCallOutput,
    FunctionCallOutputPayload,
    FunctionTool,
    Message,
    Reasoning,
    UnknownItem,
    UnknownTool,
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
    TokenUsage,
    ToolCallInputDelta,
)

from ._replay_helpers import feed_in_pieces

# --- helpers ---------------------------------------------------------------------------------


def sse(*chunks: Any, done: bool = True, crlf: bool = False) -> bytes:
    """An SSE body of ``data: <json>`` events (strings are sent raw), then ``data: [DONE]``."""
    parts = [f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n".encode() for c in chunks]
    if done:
        parts.append(b"data: [DONE]\n\n")
    body = b"".join(parts)
    return body.replace(b"\n", b"\r\n") if crlf else body


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


def tc(index: int | None, *, id: str | None = None, name: str | None = None, args: str | None = None) -> dict[str, Any]:
    frag: dict[str, Any] = {}
    if index is not None:
        frag["index"] = index
    if id is not None:
        frag["id"] = id
        frag["type"] = "function"
    fn: dict[str, Any] = {}
    if name is not None:
        fn["name"] = name
    if args is not None:
        fn["arguments"] = args
    if fn:
        frag["function"] = fn
    return frag


USAGE = {"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


def decode(
    body: bytes, cuts: list[int] | None = None, *, decoder: ChatStreamDecoder | None = None
) -> tuple[list[ModelEvent], ChatStreamDecoder]:
    d = decoder or ChatStreamDecoder()
    return feed_in_pieces(d, body, cuts), d


def done_items(events: list[ModelEvent]) -> list[Any]:
    return [e.item for e in events if isinstance(e, OutputItemDone)]


# --- happy paths -----------------------------------------------------------------------------


TEXT_BODY = sse(
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hel"}),
    chunk({"content": "lo, "}),
    chunk({"content": "world"}),
    chunk({}, "stop"),
    USAGE,
)


def test_text_stream_reassembles() -> None:
    events, d = decode(TEXT_BODY)
    assert d.error is None and d.done
    assert events == [
        Created("chatcmpl-1"),
        OutputItemAdded(Message(role="assistant", content=(), id="msg_chatcmpl-1")),
        OutputTextDelta("msg_chatcmpl-1", "Hel"),
        OutputTextDelta("msg_chatcmpl-1", "lo, "),
        OutputTextDelta("msg_chatcmpl-1", "world"),
        OutputItemDone(Message.assistant("Hello, world", id="msg_chatcmpl-1")),
        Completed("chatcmpl-1", TokenUsage(input_tokens=10, output_tokens=5, total_tokens=15)),
    ]


TOOL_BODY = sse(
    chunk({"role": "assistant", "content": "Running both."}),
    chunk({"tool_calls": [tc(0, id="call_a", name="shell", args="")]}),
    chunk({"tool_calls": [tc(1, id="call_b", name="read_file", args='{"pa')]}),
    chunk({"tool_calls": [tc(0, args='{"cmd":')]}),
    chunk({"tool_calls": [tc(1, args='th":"x"}'), tc(0, args='["ls"]}')]}),
    chunk({}, "tool_calls"),
    USAGE,
)


def test_interleaved_tool_call_fragments_reassemble_in_index_order() -> None:
    events, d = decode(TOOL_BODY)
    assert d.error is None and d.done
    assert [e for e in events if isinstance(e, ToolCallInputDelta)] == [
        ToolCallInputDelta("call_b", '{"pa'),
        ToolCallInputDelta("call_a", '{"cmd":'),
        ToolCallInputDelta("call_b", 'th":"x"}'),
        ToolCallInputDelta("call_a", '["ls"]}'),
    ]
    added = [e.item for e in events if isinstance(e, OutputItemAdded)]
    assert [type(i) for i in added] == [Message, FunctionCall, FunctionCall]
    assert done_items(events) == [
        Message.assistant("Running both.", id="msg_chatcmpl-1"),
        FunctionCall(call_id="call_a", name="shell", arguments='{"cmd":["ls"]}', id=None),
        FunctionCall(call_id="call_b", name="read_file", arguments='{"path":"x"}', id=None),
    ]
    # items are done when finish_reason arrives, before usage and [DONE]
    assert isinstance(events[-1], Completed)
    assert events[-1].usage == TokenUsage(input_tokens=10, output_tokens=5, total_tokens=15)


def test_usage_is_optional_and_cached_tokens_are_read() -> None:
    events, _ = decode(sse(chunk({"content": "x"}), chunk({}, "stop")))
    assert events[-1] == Completed("chatcmpl-1", None)
    usage = {
        "choices": [],
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 20,
            "total_tokens": 120,
            "prompt_tokens_details": {"cached_tokens": 64},
            "completion_tokens_details": {"reasoning_tokens": 7},
        },
    }
    events, _ = decode(sse(chunk({"content": "x"}), chunk({}, "stop"), usage))
    assert events[-1] == Completed("chatcmpl-1", TokenUsage(100, 64, 20, 7, 120))


def test_reasoning_deltas_both_spellings() -> None:
    for key in ("reasoning_content", "reasoning"):
        events, d = decode(
            sse(
                chunk({key: "think "}),
                chunk({key: "hard", "content": None}),
                chunk({"content": "ok"}),
                chunk({}, "stop"),
            )
        )
        assert d.error is None
        assert [e for e in events if isinstance(e, ReasoningContentDelta)] == [
            ReasoningContentDelta("rs_chatcmpl-1", "think "),
            ReasoningContentDelta("rs_chatcmpl-1", "hard"),
        ]
        items = done_items(events)
        assert isinstance(items[0], Reasoning) and items[0].content == (
            {"type": "reasoning_text", "text": "think hard"},
        )
        assert items[1] == Message.assistant("ok", id="msg_chatcmpl-1")


def test_vllm_sending_both_reasoning_fields_is_not_duplicated() -> None:
    events, _ = decode(sse(chunk({"reasoning_content": "a", "reasoning": "a"}), chunk({}, "stop")))
    assert [e.delta for e in events if isinstance(e, ReasoningContentDelta)] == ["a"]


# --- any split -------------------------------------------------------------------------------

ALL_BODIES = [TEXT_BODY, TOOL_BODY, TEXT_BODY.replace(b"\n", b"\r\n"), TOOL_BODY.replace(b"\n", b"\r\n")]


@given(st.sampled_from(ALL_BODIES), st.data())
def test_any_split_gives_the_same_events(body: bytes, data: st.DataObject) -> None:
    whole, _ = decode(body)
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=40))
    split, d = decode(body, cuts)
    assert split == whole
    assert d.error is None and d.done


@given(st.sampled_from([TEXT_BODY, TOOL_BODY]))
def test_one_byte_at_a_time(body: bytes) -> None:
    whole, _ = decode(body)
    assert decode(body, list(range(len(body))))[0] == whole


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)


@given(
    text_pieces=st.lists(_text, max_size=6),
    calls=st.lists(st.lists(_text, min_size=1, max_size=4), max_size=3),
    order=st.randoms(use_true_random=False),
    cuts=st.lists(st.integers(0, 5000), max_size=10),
)
def test_generated_streams_reassemble(
    text_pieces: list[str], calls: list[list[str]], order: Any, cuts: list[int]
) -> None:
    chunks: list[Any] = [chunk({"content": p}) for p in text_pieces]
    # fragments of all calls, interleaved at random but in order within each call
    queues = [
        [tc(i, id=f"call_{i}", name=f"tool{i}", args=frags[0])] + [tc(i, args=f) for f in frags[1:]]
        for i, frags in enumerate(calls)
    ]
    while any(queues):
        q = order.choice([q for q in queues if q])
        chunks.append(chunk({"tool_calls": [q.pop(0)]}))
    chunks.append(chunk({}, "tool_calls" if calls else "stop"))
    body = sse(*chunks)
    events, d = decode(body, [c for c in cuts if c <= len(body)])
    assert d.error is None and d.done
    items = done_items(events)
    text = "".join(text_pieces)
    expected: list[Any] = [Message.assistant(text, id="msg_chatcmpl-1")] if text else []
    expected += [
        FunctionCall(call_id=f"call_{i}", name=f"tool{i}", arguments="".join(frags) if "".join(frags).strip() else "{}")
        for i, frags in enumerate(calls)
    ]
    assert items == expected
    assert "".join(e.delta for e in events if isinstance(e, OutputTextDelta)) == text


# --- broken streams --------------------------------------------------------------------------


def test_missing_done_and_finish_reason_is_a_stream_error() -> None:
    body = sse(chunk({"content": "partial answer"}), done=False)
    d = ChatStreamDecoder()
    events = d.feed(body)
    assert d.error is None and not d.done
    assert d.finish() == []
    assert isinstance(d.error, StreamError) and d.error.retryable
    assert "[DONE]" in str(d.error) and "finish_reason" in str(d.error)
    # the deltas were delivered, but no item was completed: the loop retries
    assert not done_items(events)


def test_cut_mid_event_is_reported() -> None:
    body = sse(chunk({"content": "a"}), done=False) + b'data: {"choices":[{"delta":{"cont'
    _, d = decode(body)
    assert isinstance(d.error, StreamError) and "cut mid-event" in str(d.error)


def test_finish_reason_without_done_completes_at_eof() -> None:
    events, d = decode(sse(chunk({"content": "hi"}, "stop"), USAGE, done=False))
    assert d.error is None and d.done
    assert done_items(events) == [Message.assistant("hi", id="msg_chatcmpl-1")]
    assert isinstance(events[-1], Completed) and events[-1].usage is not None


def test_done_without_finish_reason_flushes_items() -> None:
    events, d = decode(sse(chunk({"content": "hi", "tool_calls": [tc(0, id="c", name="f", args="{}")]})))
    assert d.error is None
    assert done_items(events) == [
        Message.assistant("hi", id="msg_chatcmpl-1"),
        FunctionCall(call_id="c", name="f", arguments="{}"),
    ]
    assert isinstance(events[-1], Completed)


def test_invalid_json_is_a_stream_error_keeping_earlier_events() -> None:
    body = sse(chunk({"content": "a"}), '{"choices": [', chunk({"content": "b"}))
    d = ChatStreamDecoder()
    events = d.feed(body)
    assert [e.delta for e in events if isinstance(e, OutputTextDelta)] == ["a"]
    assert isinstance(d.error, StreamError) and "not valid JSON" in str(d.error)
    assert d.feed(sse(chunk({"content": "c"}))) == []
    assert d.finish() == [] and not d.done


@pytest.mark.parametrize(
    "bad, where",
    [
        ("[1, 2]", "Expected `object`"),
        ('{"choices": "nope"}', "choices"),
        ('{"choices": [{"delta": {"content": 5}}]}', "content"),
        ('{"choices": [{"delta": {"tool_calls": [{"index": "0"}]}}]}', "index"),
        ('{"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"name": 3}}]}}]}', "name"),
    ],
)
def test_wrong_shape_is_a_stream_error_naming_the_field(bad: str, where: str) -> None:
    _, d = decode(sse(chunk({"content": "a"}), bad))
    assert isinstance(d.error, StreamError)
    assert "wrong shape" in str(d.error) and where in str(d.error)


@pytest.mark.parametrize(
    "error, cls",
    [
        (
            {"message": "too long", "type": "invalid_request_error", "code": "context_length_exceeded"},
            ContextWindowExceeded,
        ),
        (
            {
                "message": "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.",
                "type": "BadRequestError",
                "code": 400,
            },
            ContextWindowExceeded,
        ),
        (
            {
                "code": 400,
                "message": "the request exceeds the available context size",
                "type": "exceed_context_size_error",
            },
            ContextWindowExceeded,
        ),
        ({"message": "quota", "code": "insufficient_quota"}, QuotaExceeded),
        ({"message": "limit", "type": "usage_limit_reached"}, UsageLimitReached),
        ({"message": "bad param", "type": "BadRequestError", "code": 400}, InvalidRequest),
        ({"message": "boom", "type": "server_error", "code": 500}, ServerError),
        ({"message": "overloaded", "type": "server_error"}, StreamError),
        ("plain string error", StreamError),
    ],
)
def test_error_object_in_a_chunk_maps_to_its_kernel_error(error: Any, cls: type[KernelError]) -> None:
    events, d = decode(sse(chunk({"content": "a"}), {"error": error}, chunk({"content": "b"})))
    assert type(d.error) is cls
    assert [e.delta for e in events if isinstance(e, OutputTextDelta)] == ["a"]
    assert not d.done


def test_rate_limit_error_carries_the_requested_delay() -> None:
    _, d = decode(
        sse({"error": {"message": "Rate limit reached. Please try again in 1.898s.", "code": "rate_limit_exceeded"}})
    )
    assert isinstance(d.error, RateLimited) and d.error.retry_after == pytest.approx(1.898)
    err = chat_error({"message": "busy, try again in 28ms", "type": "server_error"})
    assert isinstance(err, StreamError) and err.retry_after == pytest.approx(0.028)


def test_error_event_name() -> None:
    body = b'data: {"choices":[{"delta":{"content":"a"}}]}\n\nevent: error\ndata: {"message":"context_length_exceeded","code":"context_length_exceeded"}\n\n'
    _, d = decode(body)
    assert isinstance(d.error, ContextWindowExceeded)
    _, d = decode(b"event: error\ndata: upstream went away\n\n")
    assert isinstance(d.error, StreamError) and "upstream went away" in str(d.error)


@pytest.mark.parametrize("reason, detail", [("length", "max_output_tokens"), ("content_filter", "content_filter")])
def test_truncated_finish_reasons_are_incomplete(reason: str, detail: str) -> None:
    events, d = decode(
        sse(chunk({"content": "half", "tool_calls": [tc(0, id="c", name="f", args='{"a"')]}), chunk({}, reason))
    )
    assert isinstance(d.error, IncompleteResponse) and d.error.reason == detail
    # the text is kept as an item; a call cut mid-arguments is not executed
    assert done_items(events) == [Message.assistant("half", id="msg_chatcmpl-1")]


@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=8))
def test_random_bytes_never_raise(body: bytes, cuts: list[int]) -> None:
    events, d = decode(body, [c for c in cuts if c <= len(body)])
    assert isinstance(events, list)
    if d.error is not None:
        assert isinstance(d.error, KernelError)
        assert "internal decoder failure" not in str(d.error)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "index",
                    "delta",
                    "content",
                    "tool_calls",
                    "function",
                    "name",
                    "arguments",
                    "choices",
                    "finish_reason",
                    "usage",
                    "error",
                    "reasoning",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@given(st.lists(_json_values, max_size=6), st.booleans())
def test_random_json_chunks_never_raise(values: list[Any], done: bool) -> None:
    _, d = decode(sse(*[json.dumps(v) for v in values], done=done))
    if d.error is not None:
        assert "internal decoder failure" not in str(d.error)
    else:
        assert d.done


# --- server quirks ---------------------------------------------------------------------------


def test_finish_reason_in_the_content_chunk_and_null_fields() -> None:
    body = sse(
        {
            "id": "x",
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": None, "tool_calls": None, "reasoning_content": None},
                    "finish_reason": None,
                }
            ],
            "usage": None,
        },
        {"id": "x", "choices": [{"delta": {"content": "all at once"}, "finish_reason": "stop"}]},
        {"id": "x", "choices": [{"index": 0, "delta": None, "finish_reason": None, "logprobs": None}]},
    )
    events, d = decode(body)
    assert d.error is None
    assert done_items(events) == [Message.assistant("all at once", id="msg_x")]


def test_missing_index_and_missing_ids() -> None:
    # Each call sent whole without index (some Ollama / Gemini-compatible servers), no ids.
    body = sse(
        chunk({"tool_calls": [tc(None, name="a", args='{"x":1}'), tc(None, name="b", args="")]}),
        chunk({"tool_calls": [tc(None, args='{"y":')]}),  # continues the last call
        chunk({"tool_calls": [tc(None, args="2}")]}),
        chunk({}, "tool_calls"),
    )
    events, d = decode(body)
    assert d.error is None
    assert done_items(events) == [
        FunctionCall(call_id="call_chatcmpl-1_0", name="a", arguments='{"x":1}'),
        FunctionCall(call_id="call_chatcmpl-1_1", name="b", arguments='{"y":2}'),
    ]
    again, _ = decode(body)
    assert done_items(again) == done_items(events)  # synthetic ids are deterministic


def test_missing_index_with_ids_and_object_arguments() -> None:
    body = sse(
        chunk({"tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": {"k": "v"}}}]}),
        chunk({"tool_calls": [{"id": "c2", "function": {"name": "f"}}]}),
        chunk({}, "tool_calls"),
    )
    events, d = decode(body)
    assert d.error is None
    assert done_items(events) == [
        FunctionCall(call_id="c1", name="f", arguments='{"k":"v"}'),
        FunctionCall(call_id="c2", name="f", arguments="{}"),
    ]


def test_comments_keepalives_and_other_choices_are_ignored() -> None:
    body = (
        b": keep-alive\n\n"
        + sse(
            {"id": "x", "choices": [{"index": 1, "delta": {"content": "other choice"}}]},
            {"id": "x", "choices": [{"index": 0, "delta": {"content": "mine"}}]},
            {"id": "x", "object": "chat.completion.chunk"},
            {"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            done=False,
        )
        + b": ping\n\n"
        + b"data: [DONE]\n\n"
    )
    events, d = decode(body)
    assert d.error is None and d.done
    assert done_items(events) == [Message.assistant("mine", id="msg_x")]


def test_content_after_finish_reason_gets_a_new_item() -> None:
    events, d = decode(sse(chunk({"content": "one"}, "stop"), chunk({"content": "two"}, "stop")))
    assert d.error is None
    assert done_items(events) == [
        Message.assistant("one", id="msg_chatcmpl-1"),
        Message.assistant("two", id="msg_chatcmpl-1_1"),
    ]


def test_nothing_after_done_is_read() -> None:
    d = ChatStreamDecoder()
    events = d.feed(sse(chunk({"content": "a"}, "stop")) + b"data: garbage\n\n")
    assert d.done and d.error is None and isinstance(events[-1], Completed)
    assert d.feed(b"data: more garbage\n\n") == [] and d.finish() == []
    assert d.error is None


def test_freeform_tool_calls_decode_to_custom_tool_calls() -> None:
    prompt = Prompt(tools=[FreeformTool(name="apply_patch"), FunctionTool(name="shell")])
    patch = "*** Begin Patch\n*** End Patch\n"
    body = sse(
        chunk({"tool_calls": [tc(0, id="p", name="apply_patch", args=json.dumps({"input": patch}))]}),
        chunk({"tool_calls": [tc(1, id="s", name="shell", args="{}")]}),
        chunk({"tool_calls": [tc(2, id="q", name="apply_patch", args="not json")]}),
        chunk({}, "tool_calls"),
    )
    events, d = decode(body, decoder=ChatStreamDecoder.for_prompt(prompt))
    assert d.error is None
    assert done_items(events) == [
        CustomToolCall(call_id="p", name="apply_patch", input=patch),
        FunctionCall(call_id="s", name="shell", arguments="{}"),
        CustomToolCall(call_id="q", name="apply_patch", input="not json"),
    ]


# --- request body ----------------------------------------------------------------------------


def _conversation() -> list[Any]:
    return [
        Message(role="developer", content=({"type": "input_text", "text": "Be brief."},)),
        Message(
            role="user",
            content=({"type": "input_text", "text": "List "}, {"type": "input_text", "text": "files."}),
        ),
        Reasoning(id="rs_1", summary=({"type": "summary_text", "text": "thinking"},)),
        Message.assistant("Looking."),
        FunctionCall(call_id="c1", name="shell", arguments='{"cmd":["ls"]}', id="fc_1"),
        FunctionCall(call_id="c2", name="shell", arguments='{"cmd":["pwd"]}'),
        CustomToolCall(call_id="c3", name="apply_patch", input="*** Begin Patch"),
        FunctionCallOutput("c1", FunctionCallOutputPayload.from_text("a.txt")),
        FunctionCallOutput(
            "c2",
            FunctionCallOutputPayload.from_content_items(
                [{"type": "input_text", "text": "/work"}, {"type": "input_image", "image_url": "data:x"}]
            ),
        ),
        CustomToolCallOutput("c3", FunctionCallOutputPayload.from_text("Done!")),
        UnknownItem({"type": "web_search_call", "id": "ws"}),
        FunctionCall(call_id="c4", name="shell", arguments="{}"),
        FunctionCallOutput("c4", FunctionCallOutputPayload.from_text("ok", success=False)),
        Message.assistant("Two files."),
    ]


TOOLS = [
    FunctionTool(
        name="shell",
        description="Run a command",
        parameters={"type": "object", "properties": {"cmd": {"type": "array"}}},
    ),
    FreeformTool(name="apply_patch", description="Patch files", format=FreeformToolFormat(definition="start: /.+/")),
    UnknownTool({"type": "web_search"}),
]


def test_request_body_maps_the_conversation() -> None:
    prompt = Prompt(input=_conversation(), tools=TOOLS, parallel_tool_calls=True, base_instructions="You are helpful.")
    body = chat_request_body(prompt, model="qwen")
    assert body["model"] == "qwen" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["parallel_tool_calls"] is True
    assert body["messages"] == [
        {"role": "system", "content": "You are helpful."},
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "List files."},
        {
            "role": "assistant",
            "content": "Looking.",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "shell", "arguments": '{"cmd":["ls"]}'}},
                {"id": "c2", "type": "function", "function": {"name": "shell", "arguments": '{"cmd":["pwd"]}'}},
                {
                    "id": "c3",
                    "type": "function",
                    "function": {"name": "apply_patch", "arguments": '{"input":"*** Begin Patch"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "a.txt"},
        {"role": "tool", "tool_call_id": "c2", "content": "/work"},
        {"role": "tool", "tool_call_id": "c3", "content": "Done!"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c4", "type": "function", "function": {"name": "shell", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c4", "content": "ok"},
        {"role": "assistant", "content": "Two files."},
    ]
    tools = body["tools"]
    assert tools[0] == {
        "type": "function",
        "function": {"name": "shell", "description": "Run a command", "parameters": TOOLS[0].parameters},
    }
    assert tools[1]["function"]["name"] == "apply_patch"
    params = tools[1]["function"]["parameters"]
    assert params["properties"]["input"]["type"] == "string" and params["required"] == ["input"]
    assert "freeform" in tools[1]["function"]["description"]
    assert "start: /.+/" in params["properties"]["input"]["description"]
    assert len(tools) == 2  # the unknown kind is dropped
    json.dumps(body)  # serialisable as is


def test_request_body_every_call_has_a_matching_tool_message() -> None:
    body = chat_request_body(Prompt(input=_conversation(), tools=TOOLS), model="m")
    pending: set[str] = set()
    for msg in body["messages"]:
        assert not (pending and msg["role"] != "tool"), "tool results must follow their calls"
        if msg["role"] == "assistant":
            pending = {c["id"] for c in msg.get("tool_calls", [])}
        elif msg["role"] == "tool":
            assert msg["tool_call_id"] in pending
            pending.discard(msg["tool_call_id"])
    assert not pending


def test_request_body_without_tools_or_usage() -> None:
    body = chat_request_body(Prompt(input=[Message.user("hi")], base_instructions=""), model="m", include_usage=False)
    assert body == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def test_request_body_developer_role_images_and_output_schema() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    prompt = Prompt(
        input=[
            Message(role="developer", content=({"type": "input_text", "text": "d"},)),
            Message(
                role="user",
                content=(
                    {"type": "input_text", "text": "see"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AA"},
                ),
            ),
        ],
        output_schema=schema,
    )
    body = chat_request_body(prompt, model="m", developer_role="developer")
    assert body["messages"][1] == {"role": "developer", "content": "d"}
    assert body["messages"][2]["content"] == [
        {"type": "text", "text": "see"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
    ]
    assert body["response_format"]["json_schema"]["schema"] == schema


def test_round_trip_decoded_calls_become_matching_tool_messages() -> None:
    """What the decoder emits, recorded with its outputs, is sent back as a well-formed chat."""
    prompt = Prompt(input=[Message.user("go")], tools=TOOLS)
    events, d = decode(
        sse(
            chunk({"content": "Sure."}),
            chunk(
                {
                    "tool_calls": [
                        tc(0, name="shell", args='{"cmd":["ls"]}'),
                        tc(1, id="p1", name="apply_patch", args='{"input":"P"}'),
                    ]
                }
            ),
            chunk({}, "tool_calls"),
        ),
        decoder=ChatStreamDecoder.for_prompt(prompt),
    )
    assert d.error is None
    items = done_items(events)
    outputs: list[Any] = []
    for item in items:
        if isinstance(item, FunctionCall):
            outputs.append(FunctionCallOutput(item.call_id, FunctionCallOutputPayload.from_text("out-" + item.call_id)))
        elif isinstance(item, CustomToolCall):
            outputs.append(CustomToolCallOutput(item.call_id, FunctionCallOutputPayload.from_text("patched")))
    follow_up = Prompt(input=[*prompt.input, *items, *outputs], tools=TOOLS, base_instructions="")
    messages = chat_request_body(follow_up, model="m")["messages"]
    assert messages == [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": "Sure.",
            "tool_calls": [
                {
                    "id": "call_chatcmpl-1_0",
                    "type": "function",
                    "function": {"name": "shell", "arguments": '{"cmd":["ls"]}'},
                },
                {"id": "p1", "type": "function", "function": {"name": "apply_patch", "arguments": '{"input":"P"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_chatcmpl-1_0", "content": "out-call_chatcmpl-1_0"},
        {"role": "tool", "tool_call_id": "p1", "content": "patched"},
    ]
