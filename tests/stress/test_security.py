"""Security under faults: the API key never appears in rollouts, events, outcomes, log records or
warnings even when the server echoes it back in error bodies; tool output and model text that look
like rollout records or SSE events cannot forge records; the scripted server binds loopback only.
(The stateful machine scans every artifact it produces too; these are the focused properties.)"""

from __future__ import annotations

import json
import logging
import socket
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import example, given, settings, strategies as st

from actors import ModelSettings, ToolRegistry, open_session
from actors.history import resume
from actors.scripted import (
    Disconnect,
    ErrorEvent,
    Failed,
    FunctionCall,
    HttpError,
    Malformed,
    Reply,
    Script,
    Text,
    open_scripted_server,
)
from kernel import FunctionCallOutput, Message, event_to_dict
from kernel.testing import INJECTION_TEXTS, FastBackoff, injection_texts, well_formed_violations

from ._profile import examples

KEY = "sk-test-SECURITY-0f1e2d3c4b5a69788796"

FAULTS: dict[str, Any] = {
    "http_401": lambda text: HttpError.unauthorized(message=text),
    "http_429": lambda text: HttpError(status=429, message=text, code="rate_limit_exceeded", retry_after=0),
    "http_500": lambda text: HttpError.server_error(500, message=text),
    "http_400": lambda text: HttpError(status=400, message=text, type="invalid_request_error"),
    "http_400_text_body": lambda text: HttpError(status=400, body=text),
    "usage_limit": lambda text: HttpError.usage_limit_reached(message=text),
    "failed": lambda text: Failed("server_error", text),
    "failed_quota": lambda text: Failed("insufficient_quota", text),
    "failed_context": lambda text: Failed("context_length_exceeded", text),
    "error_event": lambda text: ErrorEvent("server_error", text),
    "malformed": lambda text: Malformed(after_events=1, data="{not json " + text),
}
PLACEMENTS = [
    "Incorrect API key provided: {key}.",
    "key={key}",
    '{{"api_key": "{key}"}}',
    "Authorization: Bearer {key}",
    "token {key} rejected",
    "{key}",
]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@settings(max_examples=examples(100, 3000))
@given(
    wire=st.sampled_from(["responses", "chat"]),
    fault=st.sampled_from(sorted(FAULTS)),
    placement=st.sampled_from(PLACEMENTS),
    retries=st.integers(0, 1),
    transport=st.sampled_from(["http", "websocket"]),  # (the Chat wire is HTTP whatever is asked)
)
@example(wire="chat", fault="failed", placement="{key}", retries=0, transport="http").via(
    "regression: Chat Completions error chunks were quoted into errors unredacted"
)
@example(wire="chat", fault="malformed", placement="{key}", retries=0, transport="http").via(
    "regression: a malformed chat chunk was quoted into the error unredacted"
)
@example(wire="chat", fault="failed_context", placement="{key}", retries=0, transport="http")
@example(wire="chat", fault="error_event", placement="{key}", retries=1, transport="http")
@example(wire="responses", fault="http_401", placement="{key}", retries=0, transport="websocket")
@example(wire="responses", fault="malformed", placement="{key}", retries=1, transport="websocket")
def test_the_api_key_never_leaks(wire: str, fault: str, placement: str, retries: int, transport: str) -> None:
    text = placement.format(key=KEY)
    handler = _Records()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        with warnings.catch_warnings(record=True) as warned, tempfile.TemporaryDirectory() as tmp:
            warnings.simplefilter("always")
            rollout = Path(tmp) / "rollout.jsonl"
            outcome, events, requests = trio.run(_one_turn, wire, FAULTS[fault](text), rollout, retries, transport)
            artifacts = [rollout.read_text(), str(outcome.error), repr(outcome.error), repr(outcome)]
            artifacts += [repr(e) for e in events]
            artifacts += [json.dumps(event_to_dict(e), default=repr) for e in events if e.lifecycle]
            artifacts += [r.getMessage() for r in handler.records]
            artifacts += [str(w.message) for w in warned]
            artifacts += [json.dumps(r.headers) for r in requests]
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert outcome.status == "failed" or (outcome.status == "completed" and fault == "malformed")
    leaks = [a for a in artifacts if KEY in a]
    assert not leaks, leaks[0][:500]
    assert all(r.headers["authorization"] == "Bearer [REDACTED]" for r in requests)


async def _one_turn(
    wire: str, fault: Any, rollout: Path, retries: int, transport: str
) -> tuple[Any, list[Any], list[Any]]:
    reply = (
        Reply(items=[Text("partial text", chunk_size=3)], faults=[fault])
        if not isinstance(fault, HttpError)
        else Reply(faults=[fault])
    )
    async with open_scripted_server(Script([reply] * (retries + 1), default=Reply(items=[Text("ok")]))) as server:
        model = ModelSettings(
            base_url=server.base_url,
            model="m",
            api_key=KEY,
            wire=wire,  # type: ignore[arg-type]
            stream_max_retries=retries,
            transport="http" if wire == "chat" else transport,  # type: ignore[arg-type]
        )
        async with open_session(model=model, rollout=rollout, max_retries=retries) as session:
            session.host.rng = FastBackoff(0.001)
            async with session.subscribe() as sub:
                outcome = await session.run("hello")
                events = sub.take_nowait()
        return outcome, events, list(server.requests)


# --------------------------------------------------------------------------------------------
# injection

echo = ToolRegistry()


@echo.tool(parallel=True)
async def shout(text: str) -> str:
    """Return the text as it is.

    Args:
        text: What to return.
    """
    return text


@settings(max_examples=examples(100, 3000))
@given(
    payload=injection_texts(), text=injection_texts(), wire=st.sampled_from(["responses", "chat"]), drop=st.booleans()
)
@example(payload=INJECTION_TEXTS[0], text=INJECTION_TEXTS[2], wire="responses", drop=False)
def test_tool_output_and_model_text_cannot_forge_records(payload: str, text: str, wire: str, drop: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rollout = Path(tmp) / "rollout.jsonl"
        history = trio.run(_injection_turn, payload, text, wire, drop, rollout)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            resumed = resume(rollout)
        assert list(resumed.items) == history
        lines = rollout.read_bytes().split(b"\n")
        assert lines[-1] == b""
        records = [json.loads(line) for line in lines[:-1]]
        items = [r for r in records if r["type"] == "item"]
        assert len(items) == len(history)  # one line per record: nothing forged, nothing split
        assert [r["seq"] for r in records[1:]] == list(range(1, len(records)))
    outputs = [i for i in history if isinstance(i, FunctionCallOutput)]
    assert [o.output.body for o in outputs] == [payload]
    messages = [i.text() for i in history if isinstance(i, Message) and i.role == "assistant"]
    assert messages[-1] == text
    assert not well_formed_violations(history)


async def _injection_turn(payload: str, text: str, wire: str, drop: bool, rollout: Path) -> list[Any]:
    first = Reply(items=[Text(text, chunk_size=5), FunctionCall("inj_1", "shout", {"text": payload}, chunk_size=7)])
    script = [first, Reply(items=[Text(text, chunk_size=4)])]
    if drop:  # a retry in between: the history re-sent holds the forged-looking text too
        script.insert(1, Reply(items=[Text(text)], faults=[Disconnect(after_events=3)]))
    async with open_scripted_server(Script(script)) as server:
        model = ModelSettings(base_url=server.base_url, model="m", wire=wire)  # type: ignore[arg-type]
        async with open_session(model=model, tools=echo, rollout=rollout) as session:
            session.host.rng = FastBackoff(0.001)
            outcome = await session.run("inject")
            assert outcome.status == "completed", outcome
            return await session.history()


# --------------------------------------------------------------------------------------------
# loopback only


def _non_loopback_addresses() -> list[str]:
    found = set()
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for a UDP connect
        found.add(probe.getsockname()[0])
        probe.close()
    except OSError:
        pass
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            found.add(info[4][0])
    except OSError:
        pass
    return sorted(a for a in found if not a.startswith("127.") and a != "0.0.0.0")


async def test_the_scripted_server_binds_loopback_only() -> None:
    async with open_scripted_server(Script()) as server:
        assert server.host == "127.0.0.1" and server.base_url.startswith("http://127.0.0.1:")
        for address in _non_loopback_addresses():
            with pytest.raises(OSError):
                with trio.fail_after(2):
                    stream = await trio.open_tcp_stream(address, server.port)
                    await stream.aclose()
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.aclose()
