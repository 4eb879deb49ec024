"""Fuzzing the wire: the SSE splitter, the Responses and Chat Completions stream decoders and the
item / tool-spec codec get random and adversarial bytes and values. They answer with a clear
``KernelError`` (decoders: through ``.error``) or keep the unknown data — never an unhandled
exception, never a hang, and a giant line costs bounded memory and linear time."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import example, given, settings, strategies as st

from actors.history._format import _item_record, _line
from actors.model import ModelSettings
from actors.model._chat import ChatStreamDecoder
from actors.model._responses import MAX_ITEM_DEPTH, ResponsesStreamDecoder
from actors.model._sse import SSEDecoder, SSEOverflow
from actors.model._wire import encode_body as _encode_body
from kernel import (
    KernelError,
    OutputItemDone,
    PromptConfig,
    StreamError,
    ToolConfig,
    WireFormatError,
    item_from_wire,
    item_to_wire,
    tool_from_wire,
    tool_to_wire,
)
from kernel.stream import ModelEvent
from kernel.testing import (
    adversarial_json_texts,
    adversarial_sse_streams,
    chunkings,
    hostile_wire_values,
)


def _sse_run(pieces: list[bytes], max_event_bytes: int = 1 << 24) -> tuple[list[Any], bool, str | None]:
    decoder = SSEDecoder(max_event_bytes)
    events: list[Any] = []
    error = None
    for piece in pieces:
        try:
            events += decoder.feed(piece)
        except SSEOverflow as exc:
            error = str(exc)
            break
    return events, decoder.finish(), error


# --------------------------------------------------------------------------------------------
# the SSE splitter


@given(adversarial_sse_streams(), st.data())
@example(b"data: a\r", None).via("regression: a CR at the end of one read, an empty read, then LF")
def test_sse_splitter_is_split_invariant_and_never_raises(stream: bytes, data: Any) -> None:
    pieces = [stream, b"", b"\ndata: b\n\n"] if data is None else data.draw(chunkings(stream))
    whole = _sse_run([b"".join(pieces)])
    assert _sse_run(pieces) == whole
    for name, payload in whole[0]:
        assert name is None or isinstance(name, str)
        assert isinstance(payload, bytes)


@given(
    limit=st.integers(1, 4096),
    chunk=st.integers(1, 700),
    head=st.sampled_from([b"data: ", b"event: x\ndata: ", b"", b"data: ok\n\ndata: "]),
)
def test_a_giant_line_is_a_clear_error_with_bounded_memory(limit: int, chunk: int, head: bytes) -> None:
    decoder = SSEDecoder(limit)
    stream = head + b"x" * (limit + chunk + 10)
    fed = 0
    with pytest.raises(SSEOverflow, match=f"exceeds {limit} bytes"):
        for i in range(0, len(stream), chunk):
            piece = stream[i : i + chunk]
            decoder.feed(piece)
            fed += len(piece)
            # what the decoder keeps never exceeds the limit by more than one read
            assert len(decoder._buf) <= limit + chunk
    assert fed <= len(head) + limit + 2 * chunk
    assert decoder._buf == b""


@settings(max_examples=10)
@given(chunk=st.sampled_from([256, 512, 1460, 4096]))
@example(chunk=512).via("regression: a long line in small reads was quadratic (tens of seconds)")
def test_a_long_line_in_small_reads_takes_linear_time(chunk: int) -> None:
    limit = 4 << 20
    decoder = SSEDecoder(limit)
    piece = b"x" * chunk
    start = time.process_time()
    decoder.feed(b"data: ")
    with pytest.raises(SSEOverflow):
        for _ in range(limit // chunk + 2):
            decoder.feed(piece)
    # linear: ~0.05 s on a 2-core machine; the quadratic splitter took ~15 s here
    assert time.process_time() - start < 2.0


# --------------------------------------------------------------------------------------------
# the stream decoders


def _responses_run(pieces: list[bytes], max_event_bytes: int = 1 << 24) -> tuple[list[ModelEvent], Any, bool]:
    decoder = ResponsesStreamDecoder(max_event_bytes)
    events: list[ModelEvent] = []
    for piece in pieces:
        events += decoder.feed(piece)  # never raises
    decoder.finish()
    error = decoder.error
    return events, (type(error).__name__, str(error)) if error is not None else None, decoder.done


def _chat_run(pieces: list[bytes]) -> tuple[list[ModelEvent], Any, bool]:
    decoder = ChatStreamDecoder(custom_tools=["apply_patch"])
    events: list[ModelEvent] = []
    for piece in pieces:
        events += decoder.feed(piece)
    events += decoder.finish()
    error = decoder.error
    return events, (type(error).__name__, str(error)) if error is not None else None, decoder.done


@pytest.mark.parametrize("run", [_responses_run, _chat_run], ids=["responses", "chat"])
@given(stream=adversarial_sse_streams(), data=st.data())
def test_decoders_never_raise_and_any_split_decodes_alike(run: Any, stream: bytes, data: Any) -> None:
    whole = run([stream])
    assert run(data.draw(chunkings(stream))) == whole
    events, error, done = whole
    assert all(isinstance(e, ModelEvent.__args__) for e in events)  # type: ignore[attr-defined]
    # after EOF the stream either completed or failed with a clear kernel error
    assert done or error is not None
    if error is not None:
        assert error[1].strip()


@pytest.mark.parametrize("run", [_responses_run, _chat_run], ids=["responses", "chat"])
@given(
    payload=adversarial_json_texts(),
    name=st.none()
    | st.sampled_from(
        ["response.output_item.done", "response.completed", "response.output_text.delta", "error", "response.failed"]
    ),
)
def test_hostile_json_payloads_are_stream_errors_or_ignored(run: Any, payload: str, name: str | None) -> None:
    head = f"event: {name}\n" if name else ""
    stream = (head + "".join(f"data: {line}\n" for line in payload.split("\n")) + "\n").encode("utf-8", "surrogatepass")
    events, error, done = run([stream])
    if error is not None:
        assert error[0] in {c.__name__ for c in _kernel_error_classes()}


def _kernel_error_classes() -> list[type]:
    out, todo = [], [KernelError]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return out


def test_giant_sse_line_through_the_decoders_is_a_stream_error() -> None:
    decoder = ResponsesStreamDecoder(max_event_bytes=1 << 16)
    line = b"event: response.output_text.delta\ndata: " + b"x" * (1 << 18)
    events: list[ModelEvent] = []
    for i in range(0, len(line), 1460):
        events += decoder.feed(line[i : i + 1460])
    assert decoder.done and isinstance(decoder.error, StreamError) and "too large" in str(decoder.error)
    chat = ChatStreamDecoder()
    chunk = b"x" * (1 << 16)
    chat.feed(b"data: ")
    for _ in range((16 << 20) // len(chunk) + 2):
        chat.feed(chunk)
        if chat.error is not None:
            break
    assert isinstance(chat.error, StreamError) and "exceeds" in str(chat.error)


def _deep_item_event(depth: int) -> bytes:
    action = "[" * depth + "1" + "]" * depth
    head = '{"type":"response.output_item.done","output_index":0,"item":{"type":"web_search_call","status":"completed","action":'
    data = head + action + "}}"
    return f"event: response.output_item.done\ndata: {data}\n\n".encode()


@contextlib.contextmanager
def _production_recursion_limit(frames_in_use: int = 100) -> Iterator[None]:
    """Hypothesis raises the recursion limit while a test runs; JSON encoders recurse against it.
    Emulate the default limit (1000) as seen from a call stack ``frames_in_use`` deep (a Trio
    task writing the rollout or encoding a request is a few dozen frames deep)."""
    depth = 0
    frame = sys._getframe()
    while frame is not None:
        depth += 1
        frame = frame.f_back
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 1000 - frames_in_use)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


@given(depth=st.integers(1, 1200))
@example(depth=985).via(
    "regression: accepted by the decoder, then json.dumps in the rollout writer raised RecursionError"
)
@example(depth=MAX_ITEM_DEPTH - 1)
@example(depth=MAX_ITEM_DEPTH)
def test_an_item_the_decoder_accepts_can_be_recorded_and_sent_back(depth: int) -> None:
    decoder = ResponsesStreamDecoder()
    events = decoder.feed(_deep_item_event(depth))
    if decoder.error is not None:
        assert (
            isinstance(decoder.error, StreamError)
            and "nested deeper" in str(decoder.error)
            or "Recursion" in str(decoder.error)
        )
        return
    (done,) = events
    assert isinstance(done, OutputItemDone)
    item = done.item

    def encode_all() -> None:
        _line(_item_record(1, item))  # the rollout writer
        prompt = PromptConfig().build_prompt([item], ToolConfig())
        for wire in ("responses", "chat"):
            _encode_body(ModelSettings(base_url="http://127.0.0.1:1", model="m", wire=wire), prompt)  # type: ignore[arg-type]

    with _production_recursion_limit():
        encode_all()


# --------------------------------------------------------------------------------------------
# the item and tool-spec codec


@given(hostile_wire_values())
def test_item_codec_raises_a_clear_error_or_keeps_everything(value: Any) -> None:
    try:
        item = item_from_wire(value)
    except WireFormatError as exc:
        assert str(exc).strip() and "expected" in str(exc) or "missing" in str(exc)
        return
    assert item_to_wire(item) == value  # lossless, unknown types and fields included


@given(hostile_wire_values())
def test_tool_codec_raises_a_clear_error_or_keeps_everything(value: Any) -> None:
    try:
        tool = tool_from_wire(value)
    except WireFormatError as exc:
        assert str(exc).strip()
        return
    assert tool_to_wire(tool) == value


@given(st.lists(hostile_wire_values(), max_size=4))
def test_decoded_items_survive_the_rollout_line_format(values: list[Any]) -> None:
    for i, value in enumerate(values):
        try:
            item = item_from_wire(value)
        except WireFormatError:
            continue
        line = _line(_item_record(i + 1, item))
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert item_from_wire(json.loads(line)["item"]) == item
