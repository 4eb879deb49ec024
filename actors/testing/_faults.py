"""What the scripted model does for one task, and what that must produce.

:func:`task_plans` draws the replies of one task (text, reasoning, tool calls of every
:data:`_TOOL_MODES` mode, sometimes rate-limit headers or one event per write, and one fault from
:data:`_FAULT_MENU` per reply); :data:`_triggers` draws when an interrupt or crash fires. :func:`_expect` says how an
attempt served a given reply over a given transport may end (:func:`_allowed_outcomes` on HTTP,
adjusted by :data:`TRANSPORT_DIFFERENCES`, the one table of what legitimately differs on
WebSocket), and :func:`_fault_of` names the fault for :data:`STATS`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs
from hypothesis import strategies as st

from kernel import (
    CompactionStarted,
    ItemCompleted,
    ReasoningDelta,
    StreamRetry,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolInputDelta,
)
from kernel.testing import INJECTION_TEXTS

from ..scripted import (
    CustomToolCall,
    Disconnect,
    ErrorEvent,
    Failed,
    FunctionCall,
    HttpError,
    Incomplete,
    Malformed,
    Reasoning,
    Reply,
    Stall,
    Text,
    WebSocketClose,
    WebSocketConnectionLimit,
    rate_limit_headers,
)
from ..scripted._render import render_chat, render_responses
from ._config import STRESS_API_KEY

_DONE = Reply(items=[Text("Done.")])
"""What the scripted server answers once a task's replies are used up."""

# =============================================================================================
# Plans: what the scripted model does for one task
# =============================================================================================

_FAULT_MENU = (
    ["none"] * 14
    + ["drop", "drop", "drop_mid_event", "drop_clean", "malformed", "malformed", "stall_short"]
    + ["rate_limited", "rate_limited", "rate_limited_message", "server_error", "server_error_delay"]
    + ["failed_retryable", "failed_rate_limit", "error_event"]
    + ["context_window_http", "context_window_failed", "usage_limit", "failed_quota", "incomplete"]
    + ["unauthorized", "invalid_request", "stall_timeout"]
    + ["ws_close", "connection_limit"]
)
_TOOL_MODES = ["ok"] * 8 + ["respond", "boom", "inject", "fatal", "hang", "slow"]
_MCP_MODES = ["ok"] * 3 + ["error", "slow", "progress", "progress", "hang", "crash"]
MCP_SERVER = "stress"
"""The name of the MCP stub server the stress sessions get (``StressConfig.mcp``)."""


_RATE_LIMIT_HEADERS = rate_limit_headers(primary_used_percent=42, primary_window_minutes=300)
"""Headers some replies carry: a rate-limit snapshot on HTTP, nothing on WebSocket (see
:data:`TRANSPORT_DIFFERENCES`)."""


@attrs.frozen
class _CallSpec:
    tool: str
    arguments: str
    custom: bool = False
    mode: str = "ok"


@attrs.frozen
class _ReplySpec:
    reply: Reply  # call ids are placeholders until the plan is installed
    fault: str
    calls: tuple[_CallSpec, ...]


def _secret_texts(key: str) -> Any:
    return st.sampled_from(
        [
            f"Incorrect API key provided: {key}.",
            f"key={key} is not valid",
            f'{{"api_key": "{key}"}}',
            f"Authorization: Bearer {key}",
            f"token {key} rejected",
        ]
    )


_AFTER_END = 10_000
"""A fault position past any reply's last event (the server applies it after the terminal one)."""


@st.composite
def _faults(draw: Any, key: str, idle: float, n_hint: int) -> tuple[str, list[Any]]:
    kind = draw(st.sampled_from(_FAULT_MENU))
    secret = draw(_secret_texts(key))
    where = draw(st.sampled_from(["within"] * 6 + ["first", "after_end"]))
    # before the first event (a WebSocket may resend it), within the reply, or after its terminal
    # event (on WebSocket: left on the connection for its next request)
    at = {"first": 0, "after_end": _AFTER_END}.get(where) or draw(st.integers(0, max(1, n_hint)))
    delay = draw(st.sampled_from([0.0, 0.001, 0.01, 0.02, 0.05]))
    if kind == "none":
        return kind, []
    if kind == "drop":
        return kind, [Disconnect(after_events=at)]
    if kind == "ws_close":
        # before the terminal event (a reply renders >= 3 + 4 * items events; n_hint is that bound):
        # after it, on WebSocket, the close frame would be read by the connection's next request
        return kind, [WebSocketClose(after_events=min(at, n_hint - 1), code=1011, reason="chaos")]
    if kind == "connection_limit":
        return kind, [WebSocketConnectionLimit()]
    if kind == "drop_mid_event":
        return kind, [Disconnect(after_events=at, mid_event=True)]
    if kind == "drop_clean":
        return kind, [Disconnect(after_events=at, clean=True)]
    if kind == "malformed":
        data = draw(st.sampled_from(["{not json", "[1, 2", '{"a": ', "nul", "{not json " + key]))
        return kind, [Malformed(after_events=at, data=data)]
    if kind == "stall_short":
        return kind, [Stall(after_events=at, seconds=min(0.02, idle / 10))]
    if kind == "stall_timeout":
        return kind, [Stall(after_events=at, seconds=idle + 0.1)]
    if kind == "rate_limited":
        return kind, [
            HttpError(
                status=429,
                message=f"Rate limit reached. {secret}",
                type="requests",
                code="rate_limit_exceeded",
                retry_after=delay,
            )
        ]
    if kind == "rate_limited_message":
        return kind, [
            HttpError.rate_limited(message=f"Rate limit reached ({secret}). Please try again in {int(delay * 1000)}ms.")
        ]
    if kind == "server_error":
        return kind, [HttpError.server_error(draw(st.sampled_from([500, 502, 503])), message=f"overloaded {secret}")]
    if kind == "server_error_delay":
        return kind, [HttpError.server_error(503, retry_after=delay, message=f"overloaded {secret}")]
    if kind == "failed_retryable":
        return kind, [Failed("server_error", f"The model failed ({secret}).")]
    if kind == "failed_rate_limit":
        return kind, [
            Failed("rate_limit_exceeded", f"Rate limit ({secret}). Please try again in {int(delay * 1000)}ms.")
        ]
    if kind == "error_event":
        return kind, [ErrorEvent("server_error", f"stream error {secret}")]
    if kind == "context_window_http":
        return kind, [HttpError.context_length_exceeded(message=f"Your input exceeds the context window. {secret}")]
    if kind == "context_window_failed":
        return kind, [Failed("context_length_exceeded", f"too long {secret}")]
    if kind == "usage_limit":
        return kind, [
            HttpError.usage_limit_reached(
                message=f"usage limit {secret}",
                headers=rate_limit_headers(primary_used_percent=100, primary_window_minutes=300),
            )
        ]
    if kind == "failed_quota":
        return kind, [Failed("insufficient_quota", f"no quota {secret}")]
    if kind == "incomplete":
        return kind, [Incomplete(draw(st.sampled_from(["max_output_tokens", "content_filter"])))]
    if kind == "unauthorized":
        return kind, [HttpError.unauthorized(message=secret)]
    if kind == "invalid_request":
        return kind, [
            HttpError(
                status=draw(st.sampled_from([400, 404, 422])),
                message=f"bad request {secret}",
                type="invalid_request_error",
            )
        ]
    raise AssertionError(kind)


@st.composite
def _calls(draw: Any, user_calls: Any, mcp: bool = False) -> _CallSpec:
    kind = draw(
        st.sampled_from(
            ["chaos"] * 6
            + ["chaos_x"] * 2
            + ["unknown", "bad_json", "as_custom"]
            + (["user"] * 2 if user_calls is not None else [])
            + (["mcp"] * 3 + ["mcp_count"] if mcp else [])
        )
    )
    if kind in ("mcp", "mcp_count"):
        payload = draw(st.text(max_size=12))
        if kind == "mcp_count":
            return _CallSpec(f"mcp__{MCP_SERVER}__count", json.dumps({"payload": payload}), mode="mcp_count")
        mode = draw(st.sampled_from(_MCP_MODES))
        args = json.dumps({"mode": mode, "payload": payload})
        return _CallSpec(f"mcp__{MCP_SERVER}__echo", args, mode=f"mcp_{mode}")
    if kind == "user":
        name, arguments = draw(user_calls)
        return _CallSpec(name, arguments, mode="user")
    if kind == "unknown":
        return _CallSpec("no_such_tool", "{}", mode="unknown")
    if kind == "bad_json":
        return _CallSpec("chaos", '{"mode": "ok", ', mode="bad_json")
    if kind == "as_custom":
        return _CallSpec("chaos", "free text", custom=True, mode="as_custom")
    mode = draw(st.sampled_from(_TOOL_MODES))
    seconds = draw(st.sampled_from([0.0, 0.0, 0.001, 0.01])) if mode != "slow" else draw(st.sampled_from([0.02, 0.05]))
    payload = draw(st.text(max_size=12) | st.sampled_from(INJECTION_TEXTS))
    args = json.dumps({"mode": "ok" if mode == "slow" else mode, "seconds": seconds, "payload": payload})
    return _CallSpec(kind, args, mode=mode)


@st.composite
def _replies(draw: Any, key: str, idle: float, user_calls: Any, mcp: bool = False) -> _ReplySpec:
    items: list[Any] = []
    if draw(st.integers(0, 5)) == 0:
        items.append(
            Reasoning(
                summary=draw(st.lists(st.text(max_size=10), min_size=1, max_size=2)), chunk_size=draw(st.integers(0, 3))
            )
        )
    if draw(st.booleans()):
        text = draw(st.text(max_size=30) | st.sampled_from(INJECTION_TEXTS) | st.just("x" * 200))
        items.append(Text(text, chunk_size=draw(st.integers(0, 6))))
    calls = tuple(draw(st.lists(_calls(user_calls, mcp), max_size=3)))
    for call in calls:
        chunk = draw(st.integers(0, 6))
        if call.custom:
            items.append(CustomToolCall("?", call.tool, call.arguments, chunk_size=chunk))
        else:
            items.append(FunctionCall("?", call.tool, call.arguments, chunk_size=chunk))
    if calls and draw(st.integers(0, 3)) == 0:
        items.append(Text(draw(st.text(max_size=10)), chunk_size=2))
    fault, faults = draw(_faults(key, idle, 3 + 4 * len(items)))
    headers = _RATE_LIMIT_HEADERS if draw(st.integers(0, 5)) == 0 else {}
    per_write = draw(st.sampled_from([None, None, None, 1]))  # 1: every event in a write of its own
    return _ReplySpec(Reply(items=items, faults=faults, headers=headers, events_per_write=per_write), fault, calls)


def task_plans(
    *, key: str = STRESS_API_KEY, idle: float = 0.2, user_calls: Any = None, max_replies: int = 4, mcp: bool = False
) -> Any:
    """Lists of scripted replies for one task (the server's default "Done." follows them);
    ``mcp``: some calls go to the MCP stub server's tools."""
    return st.integers(0, 9).flatmap(
        lambda n: st.lists(_replies(key, idle, user_calls, mcp), min_size=0 if n == 0 else 1, max_size=max_replies)
    )


@attrs.frozen
class _Trigger:
    """Fire on the ``nth`` event of kind ``on`` — at once, inside the turn's publish (``delay``
    ``None``), or from another task after ``delay`` real seconds."""

    on: str
    nth: int
    delay: float | None


_TRIGGER_EVENTS: dict[str, tuple[type, ...]] = {
    "text": (TextDelta,),
    "tool_input": (ToolInputDelta,),
    "tool_started": (ToolCallStarted,),
    "tool_finished": (ToolCallFinished,),
    "retry": (StreamRetry,),
    "item": (ItemCompleted,),
    "reasoning": (ReasoningDelta,),
    "compaction": (CompactionStarted,),  # a threshold or window compaction in a turn
}

_triggers = st.builds(
    _Trigger,
    st.sampled_from(
        [
            "text",
            "text",
            "item",
            "item",
            "tool_started",
            "tool_started",
            "retry",
            "tool_finished",
            "tool_input",
            "reasoning",
            "compaction",
        ]
    ),
    st.sampled_from([1, 1, 1, 2, 3]),
    st.none() | st.sampled_from([0.0, 0.001, 0.005, 0.02]),
)


# =============================================================================================
# Expected outcomes of one served reply
# =============================================================================================


def _http_class(error: HttpError) -> str:
    body = error.body if isinstance(error.body, dict) else {"error": {"type": error.type, "code": error.code}}
    err = body.get("error") if isinstance(body, dict) else None
    names = {err.get("type"), err.get("code")} if isinstance(err, dict) else set()
    status = error.status
    if "context_length_exceeded" in names and 400 <= status < 500:
        return "ContextWindowExceeded"
    if status == 429:
        if "usage_limit_reached" in names:
            return "UsageLimitReached"
        return "RateLimited"
    if status >= 500:
        return "ServerError"
    if status in (401, 403):
        return "Unauthorized"
    if status in (408, 409):
        return "StreamError"
    return "InvalidRequest"


def _terminal_class(fault: Any, wire: str) -> str:
    if isinstance(fault, Incomplete):
        return "IncompleteResponse"
    code = fault.code
    if code == "context_length_exceeded":
        return "ContextWindowExceeded"
    if code == "insufficient_quota":
        return "QuotaExceeded"
    if code == "rate_limit_exceeded":
        return "RateLimited"
    return "StreamError"


def _allowed_outcomes(reply: Reply, wire: str, idle: float) -> set[str]:
    """The outcomes an attempt served ``reply`` over HTTP may end with (``"cancelled"`` is judged
    apart)."""
    http = reply.http_error
    if http is not None:
        return {_http_class(http)}
    limit = reply.connection_limit
    if limit is not None:
        return {_http_class(limit.to_http_error())}
    if wire == "responses":
        rendered = render_responses(reply, tag="x", model="m")
        n = len(rendered.events)
        decided = n - 1  # the terminal event
    else:
        rendered = render_chat(reply, tag="x", model="m", include_usage=True)
        n = len(rendered.events)
        finish = [i for i, e in enumerate(rendered.events) if b'"finish_reason":"' in e or b'"error":{' in e]
        decided = finish[-1] if finish else n - 1
    terminal = reply.terminal
    natural = {_terminal_class(terminal, wire)} if terminal is not None else {"completed"}
    if wire == "chat" and isinstance(terminal, Incomplete):
        natural = {"IncompleteResponse"}
    allowed: set[str] = set()
    broken_before = False
    broken_after = False
    for fault in reply.transport_faults:
        pos = min(fault.after_events, n)
        breaks = isinstance(fault, (Disconnect, Malformed, WebSocketClose)) or (
            isinstance(fault, Stall) and fault.seconds > idle
        )
        if isinstance(fault, Stall):
            allowed.add("StreamError")  # real time: a loaded machine may stall past the timeout
        if not breaks or pos >= n:
            continue
        if pos <= decided:
            broken_before = True
        else:
            broken_after = True
    if broken_before:
        return allowed | {"StreamError"}
    allowed |= natural
    if broken_after:
        allowed.add("StreamError")
    return allowed


# =============================================================================================
# What legitimately differs between the transports
# =============================================================================================


@attrs.frozen
class _Cell:
    """How one transport handles one kind of served reply.

    ``outcomes``: what the attempt may end with (``None``: what the reply makes it end with on
    HTTP, :func:`_allowed_outcomes`); ``says``: a text the attempt's error must contain when it
    ends with one of them; ``resend``: the transport may send the request again at once, on a new
    connection and without spending the retry budget (the server then records one more request
    for the same attempt; the fault served on the first did not end the attempt); ``carry``:
    outcomes the *next* request on the same connection may end with (``unrecorded``: and the
    server may never record that request); ``forgets``: the server forgets the response, so the
    next request continuing it (``previous_response_id``) is refused with
    ``previous_response_not_found`` and resent in full, budget-free; ``rate_limits``: whether
    the attempt must (``True``) or must not (``False``) see a rate-limit snapshot in its stream
    (``None``: no expectation)."""

    outcomes: frozenset[str] | None = None
    says: str | None = None
    resend: bool = False
    carry: frozenset[str] = frozenset()
    unrecorded: bool = False
    forgets: bool = False
    rate_limits: bool | None = None
    why: str = ""


_SAME = _Cell()

TRANSPORT_DIFFERENCES: Mapping[str, Mapping[str, _Cell]] = {
    "clean_close": {
        "http": _Cell(
            frozenset({"StreamError"}),
            says="closed before response.completed",
            why="Disconnect(clean) before the terminal event: the body ends properly, before it",
        ),
        "websocket": _Cell(
            frozenset({"StreamError"}),
            says="idle timeout",
            why="the response just stops on an open connection: nothing ends it but the idle timeout",
        ),
    },
    "clean_stop_after_end": {
        "http": _SAME,
        "websocket": _Cell(
            forgets=True,
            why="the scripted server forgets a response cut short by Disconnect(clean), even after its "
            "terminal event: the connection's next request continues it and is refused "
            "(previous_response_not_found), then resent in full at once",
        ),
    },
    "drop_first": {
        "http": _SAME,
        "websocket": _Cell(
            resend=True,
            why="a drop before any event on a REUSED connection is resent on a new one, budget-free "
            "(on a fresh connection it is a StreamError, as on HTTP)",
        ),
    },
    "connection_limit": {
        "http": _Cell(frozenset({"InvalidRequest"}), why="HTTP 400 websocket_connection_limit_reached"),
        "websocket": _Cell(
            frozenset({"StreamError"}),
            resend=True,
            why="resent on a new connection, budget-free (a StreamError after three resends)",
        ),
    },
    "rate_limit_headers": {
        "http": _Cell(rate_limits=True, why="the response's headers: a rate-limit snapshot before the events"),
        "websocket": _Cell(rate_limits=False, why="frames carry no headers (only an error frame does)"),
    },
    "previous_response_not_found": {
        "http": _SAME,  # never: every HTTP request carries its whole input
        "websocket": _Cell(
            frozenset(),
            resend=True,
            why="the refusal of a continuation (no reply consumed): resent in full at once, it never "
            "ends an attempt (a cancelled one aside)",
        ),
    },
    "trailing_junk": {
        "http": _SAME,
        "websocket": _Cell(
            carry=frozenset({"StreamError"}),
            why="a bad frame after the terminal event stays on the connection: its next request reads it first",
        ),
    },
    "trailing_stall": {
        "http": _SAME,
        "websocket": _Cell(
            carry=frozenset({"StreamError"}),
            unrecorded=True,
            why="the server sleeps after the terminal event and answers one response at a time: the "
            "connection's next request may hit the idle timeout, and the client's close then ends the "
            "connection before the server has read (recorded) it",
        ),
    },
}
"""Where an attempt legitimately ends differently on WebSocket than on HTTP, by kind of served
reply (:func:`_differences` names the rows a reply falls under; ``previous_response_not_found``
is the server's answer to a continuation it cannot match, which consumes no reply); everything
else is expected to end alike on both (:func:`_allowed_outcomes`), including every in-stream and
error-frame failure (an ``error`` event, ``response.failed``, a status in an error frame with its
headers, ``Retry-After`` included)."""


def _differences(reply: Reply, wire: str, idle: float) -> list[str]:
    """The rows of :data:`TRANSPORT_DIFFERENCES` ``reply`` falls under."""
    rows: list[str] = []
    if reply.connection_limit is not None:
        rows.append("connection_limit")
    if reply.headers and reply.http_error is None and reply.connection_limit is None:
        rows.append("rate_limit_headers")
    if reply.http_error is not None or reply.connection_limit is not None or wire != "responses":
        return rows
    n = len(render_responses(reply, tag="x", model="m").events)
    for fault in reply.transport_faults:
        if isinstance(fault, Disconnect) and fault.clean and fault.after_events < n:
            rows.append("clean_close")
        elif isinstance(fault, Disconnect) and fault.clean:
            rows.append("clean_stop_after_end")
        elif isinstance(fault, Disconnect) and fault.after_events == 0:
            rows.append("drop_first")
        elif isinstance(fault, Malformed) and fault.after_events >= n:
            rows.append("trailing_junk")
        elif isinstance(fault, Stall) and fault.after_events >= n and fault.seconds > idle:
            rows.append("trailing_stall")
    return rows


@attrs.frozen
class _Expect:
    """How an attempt served a reply over a transport may end (see :class:`_Cell`)."""

    outcomes: frozenset[str]
    says: str | None
    resend: bool
    carry: frozenset[str]
    unrecorded: bool
    forgets: bool
    rate_limits: bool | None


def _expect(reply: Reply, wire: str, idle: float, transport: str) -> _Expect:
    """What an attempt served ``reply`` over ``transport`` may end with: the HTTP outcomes,
    changed by the :data:`TRANSPORT_DIFFERENCES` rows the reply falls under."""
    rows = _differences(reply, wire, idle)
    return _fold(frozenset(_allowed_outcomes(reply, wire, idle)), [TRANSPORT_DIFFERENCES[r][transport] for r in rows])


def _fold(outcomes: frozenset[str], cells: list[_Cell]) -> _Expect:
    says: str | None = None
    resend = unrecorded = forgets = False
    carry: frozenset[str] = frozenset()
    rate_limits: bool | None = None
    for cell in cells:
        if cell.outcomes is not None:
            outcomes = cell.outcomes
        says = cell.says or says
        resend = resend or cell.resend
        carry |= cell.carry
        unrecorded = unrecorded or cell.unrecorded
        forgets = forgets or cell.forgets
        if cell.rate_limits is not None:
            rate_limits = cell.rate_limits
    return _Expect(outcomes, says, resend, carry, unrecorded, forgets, rate_limits)


_REFUSED = _fold(frozenset(), [TRANSPORT_DIFFERENCES["previous_response_not_found"]["websocket"]])
"""A WebSocket request continuing a response the server forgot: refused, and resent in full."""


def _fault_of(reply: Reply) -> str:
    http = reply.http_error
    if http is not None:
        return f"http_{http.status}_{_http_class(http)}"
    if reply.connection_limit is not None:
        return "connection_limit"
    parts = []
    for f in reply.transport_faults:
        parts.append(type(f).__name__.lower())
    if reply.terminal is not None:
        parts.append(
            type(reply.terminal).__name__.lower()
            + ":"
            + getattr(reply.terminal, "code", getattr(reply.terminal, "reason", ""))
        )
    return "+".join(parts) or "none"
