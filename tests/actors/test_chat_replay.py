"""Replay of real recorded Chat Completions streams (tests/data/replay/chat, see its
ATTRIBUTION.md): each is decoded whole, in random splits, and over the scripted server on
loopback, and the decoded text, reasoning, refusals, tool calls, annotations, reasoning details
and usage are checked against an independent reading of the recording (a plain JSON walk below,
not the decoder)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
from hypothesis import given, settings, strategies as st

from actors.model._chat import ChatStreamDecoder
from actors.model._chat_request import LEGACY_CALL_PREFIX
from actors.scripted import Malformed, Reply, Script, open_scripted_server
from kernel.errors import IncompleteResponse
from kernel.items import FunctionCall, Message, Reasoning
from kernel.stream import (
    Completed,
    ModelEvent,
    OutputItemDone,
    OutputTextDelta,
    ReasoningContentDelta,
    ReasoningSummaryDelta,
)

from ._replay_helpers import feed_in_pieces, random_cuts
from ._scripted_helpers import CHAT_BODY, post

REPLAY_DIR = Path(__file__).resolve().parent.parent / "data" / "replay" / "chat"
RECORDINGS = sorted(p.name for p in REPLAY_DIR.glob("*.sse"))


def load(name: str) -> bytes:
    return (REPLAY_DIR / name).read_bytes()


# --- the independent reading -------------------------------------------------------------------


@attrs.define
class Reading:
    """What a recording says, read naively."""

    text: str = ""
    reasoning: str = ""
    refusal: str = ""
    calls: dict[Any, dict[str, str]] = attrs.Factory(dict)  # by tool_calls index, "legacy" last
    urls: list[str] = attrs.Factory(list)
    signatures: str = ""
    encrypted: str = ""
    usage: tuple[int, int, int] | None = None
    truncated: bool = False
    finished: bool = False


def _reasoning_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return _reasoning_text(value.get("text") or value.get("content") or "")
    if isinstance(value, list):
        return "".join(_reasoning_text(v) for v in value)
    return ""


def read_recording(body: bytes) -> Reading:
    r = Reading()
    for line in body.decode("utf-8").splitlines():
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            break
        obj = json.loads(data)
        usage = obj.get("usage") or (obj.get("x_groq") or {}).get("usage")
        if usage:
            total = usage.get("total_tokens") or usage["prompt_tokens"] + usage["completion_tokens"]
            r.usage = (usage["prompt_tokens"], usage["completion_tokens"], total)
        if r.truncated:
            continue  # after "length" only the usage counts
        for choice in obj.get("choices") or []:
            if choice.get("index") not in (0, None):
                continue
            for delta in (choice.get("delta"), choice.get("message")):
                if delta:
                    read_delta(r, delta, whole=delta is choice.get("message"))
            if choice.get("finish_reason"):
                r.finished = True
                r.truncated = choice["finish_reason"] in ("length", "content_filter")
                if r.truncated:
                    break
    return r


def read_delta(r: Reading, delta: dict[str, Any], *, whole: bool) -> None:
    if whole and r.text:  # a final message repeating what was streamed
        return
    reasoning = delta.get("reasoning_content") or _reasoning_text(delta.get("reasoning"))
    for entry in delta.get("reasoning_details") or []:
        r.signatures += entry.get("signature") or ""
        r.encrypted += entry.get("data") or ""
        if not reasoning and entry["type"] in ("reasoning.text", "reasoning.summary"):
            r.reasoning += entry.get("text") or entry.get("summary") or ""
    r.reasoning += reasoning
    content = delta.get("content")
    if isinstance(content, str):
        r.text += content
    for part in content if isinstance(content, list) else []:
        if part["type"] == "text":
            r.text += part["text"]
        elif part["type"] == "thinking":
            r.reasoning += "".join(p["text"] for p in part["thinking"])
    r.refusal += delta.get("refusal") or ""
    for ann in delta.get("annotations") or []:
        if ann["url_citation"]["url"] not in r.urls:
            r.urls.append(ann["url_citation"]["url"])
    for frag in delta.get("tool_calls") or []:
        call = r.calls.setdefault(frag["index"], {"id": "", "name": "", "arguments": ""})
        call["id"] = call["id"] or frag.get("id") or ""
        fn = frag.get("function") or {}
        call["name"] = call["name"] or fn.get("name") or ""
        call["arguments"] += fn.get("arguments") or ""
    if delta.get("function_call"):
        call = r.calls.setdefault("legacy", {"id": "", "name": "", "arguments": ""})
        call["name"] = call["name"] or delta["function_call"].get("name") or ""
        call["arguments"] += delta["function_call"].get("arguments") or ""


# --- the check ---------------------------------------------------------------------------------


def decode(body: bytes, cuts: list[int] | None = None) -> tuple[list[ModelEvent], ChatStreamDecoder]:
    d = ChatStreamDecoder()
    return feed_in_pieces(d, body, cuts), d


def check(events: list[ModelEvent], d: ChatStreamDecoder, expected: Reading) -> None:
    items = [e.item for e in events if isinstance(e, OutputItemDone)]
    messages = [i for i in items if isinstance(i, Message)]
    text = "".join(e.delta for e in events if isinstance(e, OutputTextDelta))
    assert text == expected.text
    parts = [p for m in messages for p in m.content]
    assert "".join(p["text"] for p in parts if p["type"] == "output_text") == expected.text
    assert "".join(p["refusal"] for p in parts if p["type"] == "refusal") == expected.refusal
    urls = [a["url"] for p in parts if p["type"] == "output_text" for a in p.get("annotations", ())]
    assert urls == expected.urls
    reasoning = "".join(e.delta for e in events if isinstance(e, (ReasoningContentDelta, ReasoningSummaryDelta)))
    assert reasoning == expected.reasoning
    details = [e for i in items if isinstance(i, Reasoning) for e in i.extra.get("reasoning_details", ())]
    assert "".join(e.get("signature") or "" for e in details) == expected.signatures
    assert "".join(e.get("data") or "" for e in details) == expected.encrypted
    calls = [i for i in items if isinstance(i, FunctionCall)]
    if expected.truncated:
        assert calls == []  # cut off: never executed
    else:
        wanted = [expected.calls[k] for k in sorted(k for k in expected.calls if k != "legacy")]
        wanted += [expected.calls["legacy"]] if "legacy" in expected.calls else []
        assert [(c.name, c.arguments) for c in calls] == [(w["name"], w["arguments"] or "{}") for w in wanted]
        for call, want in zip(calls, wanted):
            assert call.call_id == want["id"] or (not want["id"] and call.call_id.startswith(LEGACY_CALL_PREFIX))
    usage = d.usage
    assert (None if usage is None else (usage.input_tokens, usage.output_tokens, usage.total_tokens)) == expected.usage
    if expected.truncated:
        assert isinstance(d.error, IncompleteResponse) and not d.done
    else:
        assert d.error is None and d.done
        assert isinstance(events[-1], Completed) and events[-1].usage == usage


# --- the corpus --------------------------------------------------------------------------------


def test_the_corpus_covers_the_dialects() -> None:
    assert 15 <= len(RECORDINGS) <= 30
    readings = {name: read_recording(load(name)) for name in RECORDINGS}
    body = {name: load(name) for name in RECORDINGS}
    assert any(b'"content":[{"type":"thinking"' in b for b in body.values())  # Mistral magistral
    assert any(r.signatures for r in readings.values())  # Anthropic signatures via OpenRouter
    assert any(r.encrypted for r in readings.values())  # reasoning.encrypted
    assert any(b'"x_groq":{' in b and b'"usage":{' in b.split(b'"x_groq"')[1] for b in body.values())
    assert any(r.refusal for r in readings.values())
    assert any(r.urls for r in readings.values())
    assert any("legacy" in r.calls for r in readings.values())
    assert any(r.truncated and r.usage for r in readings.values())  # usage after "length"
    assert sum(len(r.calls) > 1 for r in readings.values()) >= 1  # parallel tool calls
    attribution = (REPLAY_DIR / "ATTRIBUTION.md").read_text()
    for name in RECORDINGS:
        assert f"`{name}`" in attribution, f"{name} has no attribution"


@pytest.mark.parametrize("name", RECORDINGS)
def test_a_recording_decodes_as_read(name: str) -> None:
    body = load(name)
    expected = read_recording(body)
    events, d = decode(body)
    check(events, d, expected)
    assert expected.text or expected.reasoning or expected.calls or expected.refusal


@pytest.mark.parametrize("name", RECORDINGS)
def test_seeded_random_splits_give_the_same_events(name: str) -> None:
    body = load(name)
    whole, _ = decode(body)
    rng = random.Random(name)
    for max_piece in (1, 7, 64, 4096):
        split, d = decode(body, random_cuts(len(body), rng, max_piece))
        assert split == whole, (name, max_piece)
        check(split, d, read_recording(body))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(RECORDINGS), st.data())
def test_hypothesis_splits_give_the_same_events(name: str, data: st.DataObject) -> None:
    body = load(name)
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=60))
    whole, _ = decode(body)
    split, d = decode(body, cuts)
    assert split == whole
    check(split, d, read_recording(body))


@pytest.mark.parametrize("name", RECORDINGS)
async def test_a_recording_replayed_over_the_scripted_server(name: str) -> None:
    """The recording's data lines, served as they are by the scripted server after its own
    first chunk (the decoder stops at the recorded ``[DONE]``), read over loopback HTTP."""
    body = load(name)
    lines = [line[len("data:") :].strip() for line in body.decode().splitlines() if line.startswith("data:")]
    if lines[-1] != "[DONE]":
        lines.append("[DONE]")  # a recording that ended at EOF: the server must end the body
    reply = Reply(faults=[Malformed(after_events=1, data=line) for line in lines])
    request = {**CHAT_BODY, "stream_options": {"include_usage": True}}
    async with open_scripted_server(Script([reply]), events_per_write=3) as server, httpx.AsyncClient() as client:
        got = await post(client, server.base_url + "/chat/completions", request)
    assert got.status == 200 and got.error is None
    events, d = decode(got.body, list(range(0, len(got.body), 1000)))
    check(events, d, read_recording(body))
