"""Hypothesis strategies for wire items, tool specs, prompts and fault schedules."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs

from .. import errors
from ..items import (
    CustomToolCall,
    CustomToolCallOutput,
    FunctionCall,
    FunctionCallOutput,
    FunctionCallOutputPayload,
    Message,
    ResponseItem,
)
from ..prompt import Prompt

__all__ = ["wire_items", "odd_wire_items", "tool_specs", "prompts", "FAULT_KINDS", "Fault", "fault_schedules"]


def _st() -> Any:
    try:
        from hypothesis import strategies
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("kernel.testing strategies need Hypothesis: pip install 'trio-agent-kernel[test]'") from exc
    return strategies


def _json_values(max_leaves: int = 6) -> Any:
    st = _st()
    scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=12)
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
        max_leaves=max_leaves,
    )


def wire_items() -> Any:
    """Valid wire objects (dicts) of every modelled item type, unknown types included, with
    random unknown fields and explicit nulls on optional fields."""
    st = _st()
    ids = st.text(min_size=1, max_size=10)
    text = st.text(max_size=40)

    def opt(s: Any) -> Any:
        return st.none() | s

    content = st.lists(
        st.fixed_dictionaries({"type": st.sampled_from(["input_text", "output_text"]), "text": text}),
        max_size=3,
    )
    payload = text | st.lists(st.fixed_dictionaries({"type": st.just("input_text"), "text": text}), max_size=2)
    extra_keys = st.dictionaries(st.text(min_size=1, max_size=8).map(lambda k: "x_" + k), _json_values(), max_size=2)

    def obj(type_name: str, required: dict[str, Any], optional: dict[str, Any]) -> Any:
        return st.fixed_dictionaries({"type": st.just(type_name), **required}, optional=optional).flatmap(
            lambda d: extra_keys.map(lambda extra: {**extra, **d})
        )

    return st.one_of(
        obj(
            "message",
            {"role": st.sampled_from(["user", "assistant", "developer", "system"]), "content": content},
            {"id": opt(ids), "phase": opt(st.sampled_from(["commentary", "final_answer"]))},
        ),
        obj(
            "reasoning",
            {"summary": st.lists(st.fixed_dictionaries({"type": st.just("summary_text"), "text": text}), max_size=2)},
            {
                "id": ids,
                "encrypted_content": opt(text),
                "content": st.lists(
                    st.fixed_dictionaries({"type": st.just("reasoning_text"), "text": text}), max_size=2
                ),
            },
        ),
        obj(
            "function_call",
            {"call_id": ids, "name": st.sampled_from(["shell", "read", "apply_patch", "x.y"]), "arguments": text},
            {"id": opt(ids), "namespace": opt(ids)},
        ),
        obj("function_call_output", {"call_id": ids, "output": payload}, {}),
        obj(
            "custom_tool_call",
            {"call_id": ids, "name": st.sampled_from(["apply_patch", "grep"]), "input": text},
            {"id": opt(ids), "status": opt(st.sampled_from(["completed", "in_progress"]))},
        ),
        obj("custom_tool_call_output", {"call_id": ids, "output": payload}, {"name": opt(ids)}),
        obj(
            "local_shell_call",
            {
                "status": st.sampled_from(["completed", "in_progress"]),
                "action": st.fixed_dictionaries({"type": st.just("exec"), "command": st.lists(text, max_size=3)}),
            },
            {"call_id": opt(ids), "id": opt(ids)},
        ),
        obj(
            "tool_search_call",
            {"execution": text, "arguments": _json_values()},
            {"call_id": opt(ids), "status": opt(text), "id": opt(ids)},
        ),
        obj(
            "tool_search_output",
            {"status": text, "execution": text, "tools": st.lists(_json_values(), max_size=2)},
            {"call_id": opt(ids)},
        ),
        obj(
            "mcp_tool_call_output",
            {"call_id": ids, "output": st.fixed_dictionaries({"content": st.lists(_json_values(), max_size=2)})},
            {},
        ),
        obj("web_search_call", {"status": text}, {"action": _json_values()}),
        st.dictionaries(st.text(max_size=8), _json_values(), max_size=3).map(
            lambda d: {**d, "type": "future_" + str(len(d))}
        ),
    )


def odd_wire_items() -> Any:
    """Malformed wire objects: a known type with a required field missing or of the wrong JSON
    type. :func:`~kernel.item_from_wire` must raise ``WireFormatError`` naming the field."""
    st = _st()
    from ..items import _ITEM_FIELDS

    cases = []
    for type_name, (_, fields) in _ITEM_FIELDS.items():
        required = [f for f in fields if f[2]]
        for name, kind, _ in required:
            cases.append((type_name, fields, name, kind))

    def build(case: tuple[str, Any, str, str], missing: bool, bad: Any) -> tuple[dict[str, Any], str]:
        if (case[0], case[2]) == ("message", "content") and isinstance(bad, str):
            bad = None  # a string is a valid message content (the SDK's "easy" input message)
        type_name, fields, name, kind = case
        good = {"str": "x", "list": [], "obj": {}, "payload": "out", "json": 1, "bool": True}
        d: dict[str, Any] = {"type": type_name}
        for fname, fkind, req in fields:
            if req:
                d[fname] = good[fkind]
        if missing:
            del d[name]
        else:
            d[name] = bad
        return d, name

    bad_values = {
        "str": st.integers() | st.none() | st.lists(st.integers(), max_size=1),
        "list": st.text(max_size=3) | st.integers() | st.none(),
        "obj": st.text(max_size=3) | st.lists(st.integers(), max_size=1) | st.none(),
        "payload": st.integers() | st.none() | st.just({"a": 1}) | st.just([1]),
        "json": st.nothing(),
    }
    return (
        st.sampled_from(cases)
        .flatmap(
            lambda case: st.tuples(
                st.just(case),
                st.booleans() if case[3] != "json" else st.just(True),
                bad_values[case[3]] if case[3] != "json" else st.just(None),
            )
        )
        .map(lambda t: build(*t))
    )


def tool_specs() -> Any:
    """Wire tool specs: function, freeform ``custom`` (grammar format), and other kinds."""
    st = _st()
    name = st.sampled_from(["shell", "apply_patch", "read_file", "grep"])
    fn = st.fixed_dictionaries(
        {"type": st.just("function"), "name": name},
        optional={
            "description": st.text(max_size=20),
            "strict": st.booleans(),
            "parameters": st.just({"type": "object", "properties": {}}),
        },
    )
    custom = st.fixed_dictionaries(
        {"type": st.just("custom"), "name": name},
        optional={
            "description": st.text(max_size=20),
            "format": st.fixed_dictionaries(
                {"type": st.just("grammar"), "syntax": st.just("lark"), "definition": st.text(max_size=20)}
            ),
        },
    )
    other = st.fixed_dictionaries({"type": st.sampled_from(["local_shell", "web_search"])})
    return st.one_of(fn, custom, other)


def _shell_output_json() -> Any:
    st = _st()
    return st.builds(
        lambda out, code, dur, header: json.dumps(
            {
                "output": (f"Total output lines: {header}\n\n" if header is not None else "") + out,
                "metadata": {"exit_code": code, "duration_seconds": dur},
            }
        ),
        st.text(max_size=30),
        st.integers(-(2**31), 2**31 - 1),
        st.floats(0, 1e6, allow_nan=False) | st.integers(0, 1000),
        st.none() | st.integers(0, 2**32 - 1),
    )


def prompts() -> Any:
    """:class:`~kernel.Prompt` values whose input mixes shell-family calls with JSON shell
    outputs, other calls and messages; tools sometimes include a freeform ``apply_patch``."""
    st = _st()
    from ..items import FreeformTool, FunctionTool

    def conversation(draw: Any) -> list[ResponseItem]:
        items: list[ResponseItem] = []
        n = draw(st.integers(0, 6))
        for i in range(n):
            call_id = f"call-{i}"
            kind = draw(
                st.sampled_from(
                    ["shell", "container.exec", "apply_patch_fn", "apply_patch_custom", "local", "other", "msg"]
                )
            )
            output_text = draw(_shell_output_json() | st.text(max_size=20))
            if kind == "msg":
                items.append(Message.user(draw(st.text(max_size=10))))
                continue
            if kind == "apply_patch_custom":
                items.append(CustomToolCall(call_id=call_id, name="apply_patch", input="*** Begin Patch"))
                items.append(CustomToolCallOutput(call_id, FunctionCallOutputPayload.from_text(output_text)))
                continue
            if kind == "local":
                from ..items import LocalShellCall

                use_id = draw(st.booleans())
                items.append(
                    LocalShellCall(
                        status="completed",
                        action={"type": "exec", "command": ["ls"]},
                        call_id=None if use_id else call_id,
                        id=call_id if use_id else None,
                    )
                )
            else:
                name = {
                    "shell": "shell",
                    "container.exec": "container.exec",
                    "apply_patch_fn": "apply_patch",
                    "other": "read",
                }[kind]
                items.append(FunctionCall(call_id=call_id, name=name, arguments="{}"))
            items.append(FunctionCallOutput(call_id, FunctionCallOutputPayload.from_text(output_text)))
        return items

    tools = st.lists(
        st.sampled_from(
            [
                FreeformTool(name="apply_patch", description="patch"),
                FunctionTool(name="shell"),
                FreeformTool(name="grep"),
            ]
        ),
        max_size=3,
    )
    return st.builds(
        lambda input, tools, parallel: Prompt(input=input, tools=tools, parallel_tool_calls=parallel),
        st.composite(conversation)(),
        tools,
        st.booleans(),
    )


FAULT_KINDS = (
    "ok",
    "stream",
    "stream_delay",
    "server",
    "server_delay",
    "rate_limited",
    "context_window",
    "usage_limit",
    "invalid",
    "unauthorized",
    "quota",
    "fatal",
)
"""Every kind of :class:`Fault` (``"ok"`` is a successful attempt)."""


@attrs.frozen
class Fault:
    """What happens on one attempt: ``kind`` from :data:`FAULT_KINDS`; ``delay`` is the
    server-requested delay (seconds) for the ``*_delay`` and ``rate_limited`` kinds;
    ``after_events`` is how many events stream before the fault hits."""

    kind: str
    delay: float | None = None
    after_events: int = 0

    def to_error(self) -> errors.KernelError | None:
        """The kernel error this fault raises (``None`` for ``"ok"``)."""
        k = self.kind
        if k == "ok":
            return None
        if k == "stream":
            return errors.StreamError("stream closed before response.completed")
        if k == "stream_delay":
            return errors.StreamError("Rate limit reached. Please try again later.", self.delay)
        if k == "server":
            return errors.ServerError("HTTP 500 internal error", status=500)
        if k == "server_delay":
            return errors.ServerError("HTTP 503 overloaded", status=503, retry_after=self.delay)
        if k == "rate_limited":
            return errors.RateLimited("HTTP 429 rate_limit_exceeded", retry_after=self.delay)
        if k == "context_window":
            return errors.ContextWindowExceeded()
        if k == "usage_limit":
            return errors.UsageLimitReached("usage limit", rate_limits={"primary_used_percent": 100.0})
        if k == "invalid":
            return errors.InvalidRequest("HTTP 400 bad request")
        if k == "unauthorized":
            return errors.Unauthorized("HTTP 401")
        if k == "quota":
            return errors.QuotaExceeded()
        if k == "fatal":
            return errors.FatalError("boom")
        raise ValueError(f"Fault.kind must be one of {FAULT_KINDS}, got {k!r}")

    @property
    def retryable(self) -> bool:
        """Whether the loop may retry after this fault."""
        err = self.to_error()
        return err is not None and err.retryable


def fault_schedules(max_size: int = 12, kinds: Sequence[str] = FAULT_KINDS) -> Any:
    """Lists of :class:`Fault`, one per attempt (the schedule may be shorter than the attempts:
    past its end every attempt succeeds)."""
    st = _st()
    delays = st.floats(0, 30, allow_nan=False, allow_infinity=False)

    def build(kind: str, delay: float, after: int) -> Fault:
        wants_delay = kind in ("stream_delay", "server_delay", "rate_limited")
        return Fault(kind, delay if wants_delay else None, after)

    return st.lists(st.builds(build, st.sampled_from(list(kinds)), delays, st.integers(0, 4)), max_size=max_size)
