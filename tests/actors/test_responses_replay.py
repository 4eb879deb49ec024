"""Replay of real recorded Responses API streams (tests/data/replay/responses, see its
ATTRIBUTION.md): each is decoded whole, in random splits, and over the scripted server on
loopback, and the decoded deltas, items (text, refusals, annotations, reasoning summaries and
content, tool calls), usage, response id and failure are checked against an independent reading of
the recording (a plain JSON walk below, not the decoder). Every decoded output item must also
round-trip: ``item_to_wire(item)`` is the recorded item JSON, key order included.

The recordings come from OpenAI's API and from other servers that speak the Responses wire
(OpenRouter, DeepSeek, Amazon Bedrock Mantle, the ChatGPT Codex backend, GitHub Copilot, LM Studio,
xAI); ``KNOWN_BUGS`` lists the ones that expose a decoder bug (``xfail``, strict: fixing the bug
makes them fail until they are taken off the list).
"""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
from hypothesis import given, settings, strategies as st

from actors.model._responses import ResponsesStreamDecoder
from actors.scripted import Malformed, Reply, Script, open_scripted_server
from kernel.errors import IncompleteResponse
from kernel.items import CustomToolCall, FunctionCall, LocalShellCall, Message, Reasoning, item_to_wire
from kernel.stream import (
    Completed,
    ModelEvent,
    OutputItemDone,
    OutputTextDelta,
    ReasoningContentDelta,
    ReasoningSummaryDelta,
    ReasoningSummaryPartAdded,
    ToolCallInputDelta,
)

from ._replay_helpers import feed_in_pieces, random_cuts
from ._scripted_helpers import BODY, post

REPLAY_DIR = Path(__file__).resolve().parent.parent / "data" / "replay" / "responses"
RECORDINGS = sorted(p.name for p in REPLAY_DIR.glob("*.sse"))

ROTATED_IDS = (
    "decoder bug: an item of response.completed's output whose id differs from the "
    "output_item.done item at the same output_index (the server rotated the id) is backfilled "
    "again, so the item is emitted twice"
)
KNOWN_BUGS: dict[str, str] = {}  # (ROTATED_IDS was one: fixed in the decoder's backfill)


def load(name: str) -> bytes:
    return (REPLAY_DIR / name).read_bytes()


def params(names: list[str]) -> list[Any]:
    """``names`` as pytest params, the known-bug ones marked ``xfail(strict=True)``."""
    return [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[n])) if n in KNOWN_BUGS else n
        for n in names
    ]


# --- the independent reading -------------------------------------------------------------------

TERMINAL = ("response.completed", "response.failed", "response.incomplete", "error")


@attrs.define
class Reading:
    """What a recording says, read naively: its JSON events up to the first terminal one."""

    events: list[dict[str, Any]] = attrs.Factory(list)
    named: bool = False  # whether the events carry ``event:`` lines
    text_deltas: list[tuple[str, str]] = attrs.Factory(list)  # (item_id, delta)
    tool_deltas: list[tuple[str, str]] = attrs.Factory(list)
    summary_deltas: list[tuple[str, str, int]] = attrs.Factory(list)  # (item_id, delta, summary_index)
    content_deltas: list[tuple[str, str, int]] = attrs.Factory(list)  # (item_id, delta, content_index)
    summary_parts: list[tuple[str, int]] = attrs.Factory(list)  # (item_id, summary_index)
    items: list[dict[str, Any]] = attrs.Factory(list)  # the output items, in the order they are due
    backfilled: int = 0  # how many of them only response.completed carries
    terminal: str | None = None
    response_id: str | None = None
    usage: tuple[int, int, int, int, int] | None = None  # input, cached, output, reasoning, total
    failure: str | None = None  # the message of the error that ended the stream
    incomplete: str | None = None  # the incomplete_details.reason


def _usage(u: Any) -> tuple[int, int, int, int, int] | None:
    if not isinstance(u, dict):
        return None
    cached = (u.get("input_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (u.get("output_tokens_details") or {}).get("reasoning_tokens") or 0
    return (u["input_tokens"], cached, u["output_tokens"], reasoning, u["total_tokens"])


@functools.cache
def read_recording(name: str) -> Reading:
    r = Reading()
    done: list[tuple[int, dict[str, Any]]] = []  # (output_index, item) of output_item.done
    lines = load(name).decode("utf-8").splitlines()
    r.named = any(line.startswith("event:") for line in lines)
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            break
        ev = json.loads(data)
        r.events.append(ev)
        kind = ev["type"]
        if kind == "response.created":
            r.response_id = ev["response"]["id"]
        elif kind == "response.output_text.delta":
            r.text_deltas.append((ev["item_id"], ev["delta"]))
        elif kind in ("response.function_call_arguments.delta", "response.custom_tool_call_input.delta"):
            r.tool_deltas.append((ev["item_id"], ev["delta"]))
        elif kind == "response.reasoning_summary_text.delta":
            r.summary_deltas.append((ev["item_id"], ev["delta"], ev["summary_index"]))
        elif kind == "response.reasoning_text.delta":
            r.content_deltas.append((ev["item_id"], ev["delta"], ev["content_index"]))
        elif kind == "response.reasoning_summary_part.added":
            r.summary_parts.append((ev["item_id"], ev["summary_index"]))
        elif kind == "response.output_item.done":
            done.append((ev["output_index"], ev["item"]))
        elif kind in TERMINAL:
            r.terminal = kind
            break
    r.items = [item for _, item in done]
    if r.terminal == "error":
        r.failure = r.events[-1]["error"]["message"]
        return r
    response = r.events[-1]["response"]
    r.response_id = response["id"]
    if r.terminal == "response.failed":
        r.failure = response["error"]["message"]
    elif r.terminal == "response.incomplete":
        r.incomplete = response["incomplete_details"]["reason"]
    elif r.terminal == "response.completed":
        r.usage = _usage(response.get("usage"))
        # an item of the final output that no output_item.done delivered (none with its id, and
        # none at its position) is due after the streamed ones
        ids = {item.get("id") for _, item in done} - {None}
        positions = {index for index, _ in done}
        for index, entry in enumerate(response.get("output") or []):
            if entry.get("id") not in ids and index not in positions:
                r.items.append(entry)
                r.backfilled += 1
    return r


# what the items say, read from their JSON (``expect_*``) and from the decoded items (``got_*``)


def _parts(items: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [p for i in items if i["type"] == "message" for p in i["content"] if p["type"] == kind]


def expect_calls(items: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    out = []
    for i in items:
        if i["type"] == "function_call":
            out.append(("function", i["name"], i["call_id"], i["arguments"]))
        elif i["type"] == "custom_tool_call":
            out.append(("custom", i["name"], i["call_id"], i["input"]))
        elif i["type"] == "local_shell_call":
            out.append(("local_shell", "", i["call_id"], json.dumps(i["action"])))
    return out


def got_calls(items: list[Any]) -> list[tuple[str, str, str, str]]:
    out = []
    for i in items:
        if isinstance(i, FunctionCall):
            out.append(("function", i.name, i.call_id, i.arguments))
        elif isinstance(i, CustomToolCall):
            out.append(("custom", i.name, i.call_id, i.input))
        elif isinstance(i, LocalShellCall):
            out.append(("local_shell", "", i.call_id or "", json.dumps(item_to_wire(i)["action"])))
    return out


def expect_reasoning(items: list[dict[str, Any]]) -> tuple[list[str], list[str], list[str]]:
    """The summary texts, the content texts and the encrypted contents of the reasoning items."""
    rs = [i for i in items if i["type"] == "reasoning"]
    summary = [s["text"] for i in rs for s in i.get("summary") or ()]
    content = [c["text"] for i in rs for c in i.get("content") or ()]
    encrypted = [i["encrypted_content"] for i in rs if i.get("encrypted_content")]
    return summary, content, encrypted


def got_reasoning(items: list[Any]) -> tuple[list[str], list[str], list[str]]:
    rs = [i for i in items if isinstance(i, Reasoning)]
    summary = [s["text"] for i in rs for s in i.summary]
    content = [c["text"] for i in rs for c in i.content or ()]
    encrypted = [i.encrypted_content for i in rs if i.encrypted_content]
    return summary, content, encrypted


# --- the check ---------------------------------------------------------------------------------


def decode(body: bytes, cuts: list[int] | None = None) -> tuple[list[ModelEvent], ResponsesStreamDecoder]:
    d = ResponsesStreamDecoder()
    return feed_in_pieces(d, body, cuts), d


def check(events: list[ModelEvent], d: ResponsesStreamDecoder, expected: Reading) -> None:
    # the deltas, one for one
    assert [(e.item_id, e.delta) for e in events if isinstance(e, OutputTextDelta)] == expected.text_deltas
    assert [(e.item_id, e.delta) for e in events if isinstance(e, ToolCallInputDelta)] == expected.tool_deltas
    summary_deltas = [(e.item_id, e.delta, e.summary_index) for e in events if isinstance(e, ReasoningSummaryDelta)]
    assert summary_deltas == expected.summary_deltas
    content_deltas = [(e.item_id, e.delta, e.content_index) for e in events if isinstance(e, ReasoningContentDelta)]
    assert content_deltas == expected.content_deltas
    parts = [(e.item_id, e.summary_index) for e in events if isinstance(e, ReasoningSummaryPartAdded)]
    assert parts == expected.summary_parts

    # the items: what they say, then each one whole
    items = [e.item for e in events if isinstance(e, OutputItemDone)]
    want = expected.items
    messages = [i for i in items if isinstance(i, Message)]
    got_parts = [p for m in messages for p in m.content]
    assert [p["text"] for p in got_parts if p["type"] == "output_text"] == [
        p["text"] for p in _parts(want, "output_text")
    ]
    assert [p["refusal"] for p in got_parts if p["type"] == "refusal"] == [
        p["refusal"] for p in _parts(want, "refusal")
    ]
    got_annotations = [a for p in got_parts if p["type"] == "output_text" for a in p.get("annotations", ())]
    assert got_annotations == [a for p in _parts(want, "output_text") for a in p.get("annotations", ())]
    assert got_reasoning(items) == expect_reasoning(want)
    assert got_calls(items) == expect_calls(want)
    assert [i["type"] for i in map(item_to_wire, items)] == [i["type"] for i in want]
    for item, recorded in zip(items, want, strict=True):
        wire = item_to_wire(item)
        assert wire == recorded
        assert json.dumps(wire) == json.dumps(recorded)  # the recorded key order too

    # how the stream ended
    completed = [e for e in events if isinstance(e, Completed)]
    if expected.terminal == "response.completed":
        assert d.error is None and d.done
        assert completed == [events[-1]]
        got = completed[0]
        assert got.response_id == expected.response_id == d.response_id
        usage = got.usage
        assert usage is not None
        u = (usage.input_tokens, usage.cached_input_tokens, usage.output_tokens)
        assert (*u, usage.reasoning_output_tokens, usage.total_tokens) == expected.usage
    else:
        assert completed == [] and d.done and d.error is not None
        if expected.incomplete is not None:
            assert isinstance(d.error, IncompleteResponse) and d.error.reason == expected.incomplete
        else:
            assert d.error.message == expected.failure


# --- the corpus --------------------------------------------------------------------------------


def test_the_corpus_covers_the_wire() -> None:
    assert 10 <= len(RECORDINGS) <= 20
    readings = [read_recording(name) for name in RECORDINGS]
    items = [i for r in readings for i in r.items]
    kinds = {i["type"] for i in items}
    event_kinds = {e["type"] for r in readings for e in r.events}
    assert {"message", "reasoning", "function_call", "custom_tool_call", "local_shell_call"} <= kinds
    assert {"web_search_call", "file_search_call", "code_interpreter_call", "image_generation_call"} <= kinds
    assert {"mcp_list_tools", "apply_patch_call"} <= kinds  # items the kernel keeps opaque
    assert any(r.tool_deltas and r.events[0]["response"]["model"].startswith("gpt") for r in readings)
    assert any(r.summary_deltas for r in readings) and any(r.content_deltas for r in readings)
    assert any(expect_reasoning(r.items)[2] for r in readings)  # encrypted_content
    annotations = {a["type"] for p in _parts(items, "output_text") for a in p.get("annotations", ())}
    assert {"url_citation", "file_citation", "container_file_citation"} <= annotations
    assert any(r.backfilled for r in readings)  # output items only response.completed carries
    assert any(r.terminal == "response.completed" and not r.events[-1]["response"]["output"] for r in readings)
    assert any(r.terminal == "error" for r in readings)
    assert any(r.named for r in readings) and any(not r.named for r in readings)
    assert any(b"data: [DONE]" in load(name) for name in RECORDINGS)  # OpenRouter ends with it
    assert {"response.code_interpreter_call_code.delta", "response.output_text.annotation.added"} <= event_kinds
    attribution = (REPLAY_DIR / "ATTRIBUTION.md").read_text()
    for name in RECORDINGS:
        assert f"`{name}`" in attribution, f"{name} has no attribution"
    for name in KNOWN_BUGS:
        assert name in RECORDINGS


@pytest.mark.parametrize("name", RECORDINGS)
def test_the_reading_is_consistent(name: str) -> None:
    """The reading itself, checked against the recording's own redundancy: the streamed deltas of
    an item add up to its final text / arguments / input."""
    r = read_recording(name)
    assert r.items or r.failure
    by_id = {i.get("id"): i for i in r.items}
    for item_id in {i for i, _ in r.tool_deltas}:
        item = by_id.get(item_id)
        if item is not None:  # (GitHub Copilot renames items between events)
            joined = "".join(d for i, d in r.tool_deltas if i == item_id)
            assert joined == item.get("arguments", item.get("input"))
    for item_id in {i for i, _ in r.text_deltas}:
        item = by_id.get(item_id)
        if item is not None:
            assert "".join(d for i, d in r.text_deltas if i == item_id) == "".join(
                p["text"] for p in item["content"] if p["type"] == "output_text"
            )


@pytest.mark.parametrize("name", params(RECORDINGS))
def test_a_recording_decodes_as_read(name: str) -> None:
    events, d = decode(load(name))
    check(events, d, read_recording(name))


@pytest.mark.parametrize("name", RECORDINGS)
def test_seeded_random_splits_give_the_same_events(name: str) -> None:
    body = load(name)
    whole, _ = decode(body)
    rng = random.Random(name)
    for max_piece in (1, 7, 64, 4096):
        split, d = decode(body, random_cuts(len(body), rng, max_piece))
        assert split == whole, (name, max_piece)
        if name not in KNOWN_BUGS:
            check(split, d, read_recording(name))


@pytest.mark.parametrize("name", RECORDINGS)
def test_a_recording_without_its_last_blank_line_decodes_the_same(name: str) -> None:
    body = load(name)
    whole, d = decode(body)
    cut, e = decode(body.rstrip(b"\r\n"))
    assert cut == whole
    assert (e.done, e.response_id, repr(e.error)) == (d.done, d.response_id, repr(d.error))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(RECORDINGS), st.data())
def test_hypothesis_splits_give_the_same_events(name: str, data: st.DataObject) -> None:
    body = load(name)
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=60))
    whole, _ = decode(body)
    split, d = decode(body, cuts)
    assert split == whole
    if name not in KNOWN_BUGS:
        check(split, d, read_recording(name))


@pytest.mark.parametrize("name", params(RECORDINGS))
async def test_a_recording_replayed_over_the_scripted_server(name: str) -> None:
    """The recording's events, served as they are by the scripted server after its own
    ``response.created`` (the decoder stops at the recorded terminal event), read over loopback
    HTTP."""
    faults = []
    for line in load(name).decode("utf-8").splitlines():
        if line.startswith("data:"):
            data = line[len("data:") :].strip()
            kind = json.loads(data)["type"] if data.startswith("{") else "message"
            faults.append(Malformed(after_events=1, data=data, event=kind))
    async with open_scripted_server(Script([Reply(faults=faults)]), events_per_write=5) as server:
        async with httpx.AsyncClient() as client:
            got = await post(client, server.base_url + "/responses", BODY)
    assert got.status == 200 and got.error is None
    events, d = decode(got.body, list(range(0, len(got.body), 1000)))
    check(events, d, read_recording(name))
