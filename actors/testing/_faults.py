"""What the scripted model does for one task, and what that must produce.

:func:`task_plans` draws the replies of one task (text, reasoning, tool calls of every
:data:`_TOOL_MODES` mode, and one fault from :data:`_FAULT_MENU` per reply); :data:`_triggers`
draws when an interrupt or crash fires. :func:`_allowed_outcomes` says which outcomes an attempt
served a given reply may end with, and :func:`_fault_of` names the fault for :data:`STATS`.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from hypothesis import strategies as st

from kernel import (
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
)
_TOOL_MODES = ["ok"] * 8 + ["respond", "boom", "inject", "fatal", "hang", "slow"]


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


@st.composite
def _faults(draw: Any, key: str, idle: float, n_hint: int) -> tuple[str, list[Any]]:
    kind = draw(st.sampled_from(_FAULT_MENU))
    secret = draw(_secret_texts(key))
    at = draw(st.integers(0, max(1, n_hint)))
    delay = draw(st.sampled_from([0.0, 0.001, 0.01, 0.02, 0.05]))
    if kind == "none":
        return kind, []
    if kind == "drop":
        return kind, [Disconnect(after_events=at)]
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
def _calls(draw: Any, user_calls: Any) -> _CallSpec:
    kind = draw(
        st.sampled_from(
            ["chaos"] * 6
            + ["chaos_x"] * 2
            + ["unknown", "bad_json", "as_custom"]
            + (["user"] * 2 if user_calls is not None else [])
        )
    )
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
def _replies(draw: Any, key: str, idle: float, user_calls: Any) -> _ReplySpec:
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
    calls = tuple(draw(st.lists(_calls(user_calls), max_size=3)))
    for call in calls:
        chunk = draw(st.integers(0, 6))
        if call.custom:
            items.append(CustomToolCall("?", call.tool, call.arguments, chunk_size=chunk))
        else:
            items.append(FunctionCall("?", call.tool, call.arguments, chunk_size=chunk))
    if calls and draw(st.integers(0, 3)) == 0:
        items.append(Text(draw(st.text(max_size=10)), chunk_size=2))
    fault, faults = draw(_faults(key, idle, 3 + 4 * len(items)))
    return _ReplySpec(Reply(items=items, faults=faults), fault, calls)


def task_plans(*, key: str = STRESS_API_KEY, idle: float = 0.2, user_calls: Any = None, max_replies: int = 4) -> Any:
    """Lists of scripted replies for one task (the server's default "Done." follows them)."""
    return st.integers(0, 9).flatmap(
        lambda n: st.lists(_replies(key, idle, user_calls), min_size=0 if n == 0 else 1, max_size=max_replies)
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
    """The outcomes an attempt served ``reply`` may end with (``"cancelled"`` is judged apart)."""
    http = reply.http_error
    if http is not None:
        return {_http_class(http)}
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
        breaks = isinstance(fault, (Disconnect, Malformed)) or (isinstance(fault, Stall) and fault.seconds > idle)
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


def _fault_of(reply: Reply) -> str:
    http = reply.http_error
    if http is not None:
        return f"http_{http.status}_{_http_class(http)}"
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
