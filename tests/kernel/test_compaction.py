"""Context compaction: token estimates, the compacted history, the remote result, and tool-call
pairs kept together when a history is cut."""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Any

import pytest
from hypothesis import event, given, strategies as st

from kernel import (
    COMPACTION_PROMPT,
    DEFAULT_USER_MESSAGE_BUDGET_TOKENS,
    NO_SUMMARY_TEXT,
    SUMMARY_PREFIX,
    TRUNCATED_MESSAGE_FLOOR_TOKENS,
    CustomToolCall,
    CustomToolCallOutput,
    FunctionCall,
    FunctionCallOutput,
    FunctionCallOutputPayload,
    LocalShellCall,
    McpToolCallOutput,
    Message,
    Reasoning,
    ResponseItem,
    ToolSearchCall,
    ToolSearchOutput,
    UnknownItem,
    WireFormatError,
    build_compacted_history,
    collect_user_messages,
    compact_threshold,
    drop_before_last_compaction,
    estimate_input_tokens,
    estimate_item_tokens,
    estimate_tokens,
    is_compaction_item,
    is_summary_message,
    item_from_wire,
    item_to_wire,
    items_to_wire,
    pairs_intact,
    replacement_from_remote,
    safe_cut,
    should_compact,
    summary_message,
    trim_to_budget,
)
from kernel.compaction import _MARKER_TEMPLATE
from kernel.testing import assert_well_formed, well_formed_violations, wire_items

# ---------------------------------------------------------------------------------------------
# helpers and strategies
# ---------------------------------------------------------------------------------------------


def wire_len(item: ResponseItem) -> int:
    return len(json.dumps(item_to_wire(item), ensure_ascii=False, separators=(",", ":")).encode())


def text_of(item: ResponseItem) -> str:
    assert isinstance(item, Message) and item.role == "user"
    (part,) = item.content
    assert part["type"] == "input_text"
    return str(part["text"])


def out(call_id: str, text: str = "ok") -> FunctionCallOutput:
    return FunctionCallOutput(call_id, FunctionCallOutputPayload.from_text(text))


def call(call_id: str, name: str = "shell") -> FunctionCall:
    return FunctionCall(call_id=call_id, name=name, arguments="{}")


def compaction(id: str = "cmp_1", blob: str = "gAAAA-opaque") -> UnknownItem:
    return UnknownItem({"type": "compaction", "id": id, "encrypted_content": blob})


def groups(items: list[ResponseItem]) -> dict[str, list[int]]:
    """Indices of the items sharing each call_id (the brute-force reference for safe_cut)."""
    by_id: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        cid = getattr(item, "call_id", None)
        if isinstance(item, LocalShellCall) and cid is None:
            cid = item.id
        if isinstance(item, UnknownItem):
            cid = item.data.get("call_id")
        if isinstance(cid, str) and cid:
            by_id.setdefault(cid, []).append(i)
    return by_id


def splits(items: list[ResponseItem], c: int) -> bool:
    return any(min(ix) < c <= max(ix) for ix in groups(items).values())


texts = st.text(max_size=40)
# big texts without making Hypothesis generate thousands of characters one by one
big_texts = st.builds(lambda s, k: s * k, st.text(min_size=1, max_size=12), st.integers(20, 300))
any_text = texts | big_texts


def _call_and_output(kind: str, cid: str, body: str) -> tuple[ResponseItem, ResponseItem]:
    payload = FunctionCallOutputPayload.from_text(body)
    if kind == "function":
        return FunctionCall(call_id=cid, name="shell", arguments=json.dumps({"cmd": body[:20]})), FunctionCallOutput(
            cid, payload
        )
    if kind == "custom":
        return CustomToolCall(call_id=cid, name="apply_patch", input=body[:30]), CustomToolCallOutput(cid, payload)
    if kind == "local_shell":
        return (
            LocalShellCall(status="completed", action={"type": "exec", "command": ["ls"]}, call_id=cid),
            FunctionCallOutput(cid, payload),
        )
    if kind == "local_shell_by_id":
        return (
            LocalShellCall(status="completed", action={"type": "exec", "command": ["ls"]}, id=cid),
            FunctionCallOutput(cid, payload),
        )
    if kind == "mcp":
        return FunctionCall(call_id=cid, name="mcp__x", arguments="{}"), McpToolCallOutput(
            call_id=cid, output={"content": [{"type": "text", "text": body}]}
        )
    if kind == "tool_search":
        return ToolSearchCall(call_id=cid, arguments={"q": body[:10]}, execution="client"), ToolSearchOutput(
            call_id=cid, status="completed", execution="client", tools=()
        )
    assert kind == "unknown"
    return (
        UnknownItem({"type": "shell_call", "call_id": cid, "action": {"commands": ["ls"]}}),
        UnknownItem({"type": "shell_call_output", "call_id": cid, "output": body}),
    )


CALL_KINDS = ["function", "custom", "local_shell", "local_shell_by_id", "mcp", "tool_search", "unknown"]


@st.composite
def histories(draw: Any, max_steps: int = 20) -> list[ResponseItem]:
    """Well-formed conversations: user / assistant messages, reasoning, earlier summaries,
    image-only user messages, opaque items, and batches of (parallel) tool calls whose outputs
    follow in any order."""
    items: list[ResponseItem] = []
    serial = 0
    for _ in range(draw(st.integers(0, max_steps))):
        step = draw(st.sampled_from(["user", "user", "assistant", "reasoning", "calls", "calls", "other"]))
        if step == "user":
            items.append(Message.user(draw(any_text)))
        elif step == "assistant":
            items.append(Message.assistant(draw(texts)))
        elif step == "reasoning":
            items.append(Reasoning(id=f"rs_{serial}", summary=({"type": "summary_text", "text": draw(texts)},)))
            serial += 1
        elif step == "other":
            items.append(
                draw(
                    st.sampled_from(
                        [
                            summary_message("old summary"),
                            Message(role="user", content=({"type": "input_image", "image_url": "data:,x"},)),
                            Message(
                                role="user",
                                content=(
                                    {"type": "input_text", "text": "see"},
                                    {"type": "input_image", "image_url": "data:,x"},
                                    {"type": "input_text", "text": "this"},
                                ),
                            ),
                            Message(role="developer", content=({"type": "input_text", "text": "dev note"},)),
                            UnknownItem({"type": "web_search_call", "id": "ws", "status": "completed"}),
                            compaction(),
                        ]
                    )
                )
            )
        else:
            batch = []
            for kind in draw(st.lists(st.sampled_from(CALL_KINDS), min_size=1, max_size=3)):
                batch.append(_call_and_output(kind, f"call_{serial}", draw(any_text)))
                serial += 1
            items.extend(c for c, _ in batch)
            if draw(st.booleans()):
                items.append(Message.assistant("working on it"))
            outputs = draw(st.permutations([o for _, o in batch]))
            items.extend(outputs)
    return items


@st.composite
def messy_sequences(draw: Any) -> list[ResponseItem]:
    """Calls and outputs in any order, ids repeated: histories that are not well-formed."""
    ids = st.sampled_from(["a", "b", "c", "d"])
    kinds = st.sampled_from(["call", "out", "custom", "custom_out", "msg"])
    items: list[ResponseItem] = []
    for kind, cid in draw(st.lists(st.tuples(kinds, ids), max_size=14)):
        if kind == "call":
            items.append(call(cid))
        elif kind == "out":
            items.append(out(cid))
        elif kind == "custom":
            items.append(CustomToolCall(call_id=cid, name="grep", input="x"))
        elif kind == "custom_out":
            items.append(CustomToolCallOutput(cid, FunctionCallOutputPayload.from_text("x")))
        else:
            items.append(Message.user("hi"))
    return items


CONTEXT_ITEMS: list[ResponseItem] = [
    Message(role="developer", content=({"type": "input_text", "text": "<permissions>ask</permissions>"},)),
    Message.user("<environment_context>cwd=/repo</environment_context>"),
    Message.user("# AGENTS.md\nbe brief"),
]
initial_contexts = st.lists(st.sampled_from(range(len(CONTEXT_ITEMS))), max_size=3, unique=True).map(
    lambda picks: [CONTEXT_ITEMS[i] for i in picks]
)


def split_truncated(text: str) -> tuple[str, int, str]:
    """(head, omitted characters, tail) of a truncated message text."""
    match = re.fullmatch(
        r"(.*)\n\[\.\.\. (\d+) characters of this message were cut by compaction \.\.\.\]\n(.*)", text, re.S
    )
    assert match, text
    return match[1], int(match[2]), match[3]


# ---------------------------------------------------------------------------------------------
# estimates
# ---------------------------------------------------------------------------------------------


def test_estimate_is_wire_bytes_over_four_rounded_up_per_item() -> None:
    items: list[ResponseItem] = [Message.user("hello"), call("c1"), out("c1", "x" * 1001)]
    assert estimate_tokens([]) == 0
    for item in items:
        assert estimate_item_tokens(item) == math.ceil(wire_len(item) / 4)
    assert estimate_tokens(items) == sum(math.ceil(wire_len(i) / 4) for i in items)


def test_estimate_counts_utf8_bytes_and_the_decoded_wire_form() -> None:
    ascii_, cjk = Message.user("a" * 30), Message.user("語" * 30)  # 30 vs 90 bytes of text
    assert estimate_item_tokens(cjk) - estimate_item_tokens(ascii_) == 15
    easy = item_from_wire({"role": "user", "content": "hi"})  # written back in its short form
    assert estimate_item_tokens(easy) == math.ceil(len('{"role":"user","content":"hi"}') / 4)
    assert estimate_item_tokens(Message.user("\udc80")) >= 1  # a lone surrogate does not raise


@given(st.lists(wire_items(), max_size=6), st.lists(wire_items(), max_size=6))
def test_estimate_is_additive_and_positive(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    left = [item_from_wire(w) for w in a]
    right = [item_from_wire(w) for w in b]
    assert estimate_tokens(left + right) == estimate_tokens(left) + estimate_tokens(right)
    assert all(estimate_item_tokens(i) >= 1 for i in left)


def test_estimate_input_tokens_uses_the_reported_figure_for_what_it_covers() -> None:
    items: list[ResponseItem] = [Message.user("q"), call("c1"), out("c1", "result " * 50)]
    added = estimate_tokens(items[1:])
    assert estimate_input_tokens(1000, 1, items) == 1000 + added
    assert estimate_input_tokens(1000, 3, items) == 1000  # nothing new
    assert estimate_input_tokens(None, 1, items) == estimate_tokens(items)  # unknown figure
    assert estimate_input_tokens(1000, 4, items) == estimate_tokens(items)  # history was replaced
    assert estimate_input_tokens(0, 0, items) == estimate_tokens(items)
    with pytest.raises(ValueError):
        estimate_input_tokens(10, -1, items)
    with pytest.raises(ValueError):
        estimate_input_tokens(-1, 0, items)


def test_should_compact_and_the_default_threshold() -> None:
    assert should_compact(900, 900) and should_compact(901, 900)
    assert not should_compact(899, 900)
    assert not should_compact(10**9, None)
    assert compact_threshold(272_000) == 244_800  # 90 %
    assert compact_threshold(128_000) == 115_200
    assert compact_threshold(10) == 9
    assert compact_threshold(272_000, 200_000) == 200_000  # a configured limit may lower it
    assert compact_threshold(272_000, 300_000) == 244_800  # ... but not raise it past 90 %
    assert compact_threshold(None, 50_000) == 50_000
    assert compact_threshold(None) is None
    for bad in [(0, None), (-5, None), (100, 0)]:
        with pytest.raises(ValueError):
            compact_threshold(*bad)


# ---------------------------------------------------------------------------------------------
# the summary message and the prompt
# ---------------------------------------------------------------------------------------------


def test_summary_message_is_a_user_message_with_a_clear_prefix() -> None:
    msg = summary_message("  did X; next: Y  ")
    assert text_of(msg) == f"{SUMMARY_PREFIX}\n\ndid X; next: Y"
    assert text_of(msg).startswith("Summary of the earlier conversation")
    assert is_summary_message(msg)
    assert summary_message(text_of(msg)) == msg  # idempotent
    assert text_of(summary_message("   ")).endswith(NO_SUMMARY_TEXT)
    assert not is_summary_message(Message.user("hello"))
    assert not is_summary_message(Message.assistant(SUMMARY_PREFIX))  # only the user role
    assert not is_summary_message(call("c"))


def test_the_prompt_asks_for_task_decisions_state_and_what_remains() -> None:
    lowered = COMPACTION_PROMPT.lower()
    for topic in ["task", "decisions", "files", "remains", "next steps"]:
        assert topic in lowered
    assert "CONTEXT CHECKPOINT" not in COMPACTION_PROMPT  # our own text


# ---------------------------------------------------------------------------------------------
# build_compacted_history
# ---------------------------------------------------------------------------------------------


def test_compacted_history_is_context_then_recent_user_messages_then_summary() -> None:
    ctx: list[ResponseItem] = [
        Message(role="developer", content=({"type": "input_text", "text": "rules"},)),
        Message.user("<environment_context>cwd=/r</environment_context>"),
    ]
    history: list[ResponseItem] = [
        *ctx,  # a history starts with the context: it is not repeated as a user message
        Message.user("first ask"),
        Message.assistant("answer"),
        call("c1"),
        out("c1", "big output " * 100),
        Message(
            role="user",
            content=(
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "data:,x"},
                {"type": "input_text", "text": "here"},
            ),
        ),
        Message(role="user", content=({"type": "input_image", "image_url": "data:,y"},)),  # no text
        summary_message("an older summary"),
        Message.user("latest ask"),
        Message.user(COMPACTION_PROMPT),  # the compaction request itself
    ]
    result = build_compacted_history(ctx, history, "the summary", budget_tokens=10_000)
    assert result[:2] == ctx
    assert [text_of(m) for m in result[2:-1]] == ["first ask", "look\nhere", "latest ask"]
    assert result[-1] == summary_message("the summary")
    assert collect_user_messages(history, ctx) == ["first ask", "look\nhere", "latest ask"]
    assert collect_user_messages(history) == [
        "<environment_context>cwd=/r</environment_context>",
        "first ask",
        "look\nhere",
        "latest ask",
    ]


def test_the_walk_stops_at_the_first_message_that_does_not_fit() -> None:
    small = [Message.user(f"m{i}") for i in range(3)]
    cost = estimate_item_tokens(small[0])
    history: list[ResponseItem] = [small[0], Message.user("x" * 4000), small[1], small[2]]
    result = build_compacted_history([], history, "s", budget_tokens=3 * cost)
    # m1 and m2 fit; the big one does not, and the walk does not skip it to reach m0
    assert [text_of(m) for m in result[:-1]] == ["m1", "m2"]
    assert all("cut by compaction" not in text_of(m) for m in result[:-1])  # nobody truncated
    exact = build_compacted_history([], small, "s", budget_tokens=3 * cost)
    assert [text_of(m) for m in exact[:-1]] == ["m0", "m1", "m2"]  # a budget met exactly is enough
    fewer = build_compacted_history([], small, "s", budget_tokens=3 * cost - 1)
    assert [text_of(m) for m in fewer[:-1]] == ["m1", "m2"]


def test_an_over_budget_latest_message_is_truncated_in_the_middle_and_kept_alone() -> None:
    latest = "HEAD " + "filler " * 2000 + " TAIL"
    history: list[ResponseItem] = [Message.user("older"), Message.user(latest)]
    result = build_compacted_history([], history, "s", budget_tokens=200)
    assert len(result) == 2
    kept = text_of(result[0])
    assert kept.startswith("HEAD ") and kept.endswith(" TAIL")
    head, omitted, tail = split_truncated(kept)
    assert len(head) + omitted + len(tail) == len(latest)
    assert latest.startswith(head) and latest.endswith(tail) and 0 <= len(head) - len(tail) <= 1
    assert estimate_item_tokens(result[0]) <= 200
    assert estimate_item_tokens(result[0]) >= 195  # as much as fits (within a few tokens)


def test_a_zero_budget_keeps_only_a_marker_for_the_latest_message() -> None:
    result = build_compacted_history([], [Message.user("abcdef")], "s", budget_tokens=0)
    assert text_of(result[0]) == _MARKER_TEMPLATE.format(omitted=6)
    assert estimate_item_tokens(result[0]) <= TRUNCATED_MESSAGE_FLOOR_TOKENS
    assert build_compacted_history([], [], "s", budget_tokens=0) == [summary_message("s")]
    with pytest.raises(ValueError):
        build_compacted_history([], [], "s", budget_tokens=-1)


def test_the_floor_covers_the_marker_for_any_realistic_length() -> None:
    for omitted in [1, 9, 10**6, 10**12, 10**18]:
        marker_only = Message.user(_MARKER_TEMPLATE.format(omitted=omitted))
        assert estimate_item_tokens(marker_only) <= TRUNCATED_MESSAGE_FLOOR_TOKENS


@given(initial_contexts, histories(), st.text(max_size=300), st.integers(0, 2000))
def test_compacted_history_properties(
    ctx: list[ResponseItem], history: list[ResponseItem], summary: str, budget: int
) -> None:
    before = (copy.deepcopy(items_to_wire(ctx)), copy.deepcopy(items_to_wire(history)))
    result = build_compacted_history(ctx, history, summary, budget_tokens=budget)
    assert (items_to_wire(ctx), items_to_wire(history)) == before  # inputs untouched

    # shape: context, rebuilt user messages, summary
    assert result[: len(ctx)] == ctx
    assert result[-1] == summary_message(summary)
    kept = result[len(ctx) : -1]
    kept_texts = [text_of(m) for m in kept]

    # well-formed: nothing but messages added
    assert_well_formed(result)
    assert pairs_intact(result)

    # the exact size bound
    kept_cost = estimate_tokens(kept)
    assert estimate_tokens(result) == (
        estimate_tokens(ctx) + kept_cost + estimate_item_tokens(summary_message(summary))
    )
    assert kept_cost <= max(budget, TRUNCATED_MESSAGE_FLOOR_TOKENS)

    # the latest user message is kept; the kept ones are the most recent, contiguous, maximal
    users = collect_user_messages(history, ctx)
    if not users:
        assert kept == []
        return
    latest_fits = estimate_item_tokens(Message.user(users[-1])) <= budget
    event("latest fits" if latest_fits else "latest truncated")
    event("all kept" if len(kept) == len(users) else "some dropped")
    if latest_fits:
        assert kept_cost <= budget
        assert kept_texts == users[len(users) - len(kept) :]
        if len(kept) < len(users):
            older = Message.user(users[len(users) - len(kept) - 1])
            assert kept_cost + estimate_item_tokens(older) > budget
    else:
        assert len(kept) == 1
        head, omitted, tail = split_truncated(kept_texts[0])
        assert omitted >= 1 and len(head) + omitted + len(tail) == len(users[-1])
        assert users[-1].startswith(head) and users[-1].endswith(tail)

    # deterministic
    again = build_compacted_history(ctx, history, summary, budget_tokens=budget)
    assert again == result and items_to_wire(again) == items_to_wire(result)


def test_a_200_item_history_with_200kb_of_tool_output() -> None:
    history: list[ResponseItem] = []
    for turn in range(20):
        history.append(Message.user(f"request {turn}: " + "please do the thing " * 20))
        for k in range(4):
            cid = f"call_{turn}_{k}"
            history += [call(cid), out(cid, f"line {k}\n" * 360)]  # ~2.5 KB each, ~200 KB in all
        history.append(Message.assistant("done"))
    history = history[:200]
    assert len(history) == 200
    assert sum(len(o.output.to_text() or "") for o in history if isinstance(o, FunctionCallOutput)) >= 200_000
    result = build_compacted_history([], history, "summary", budget_tokens=DEFAULT_USER_MESSAGE_BUDGET_TOKENS)
    assert len(result) == 21  # 20 user messages fit the default budget, then the summary
    assert estimate_tokens(result) < estimate_tokens(history) // 20


# ---------------------------------------------------------------------------------------------
# remote compaction
# ---------------------------------------------------------------------------------------------

REMOTE_OUTPUT: list[dict[str, Any]] = [
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix the bug"}]},
    {"role": "user", "content": "and add a test"},
    {"id": "msg_1", "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
    {"type": "compaction", "id": "cmp_9", "encrypted_content": "gAAAAB" + "x" * 300, "x_future": [1, {"a": None}]},
]


def test_replacement_from_remote_keeps_the_output_verbatim() -> None:
    wire = copy.deepcopy(REMOTE_OUTPUT)
    items = replacement_from_remote(wire)
    assert wire == REMOTE_OUTPUT  # not mutated
    assert len(items) == 4 and is_compaction_item(items[-1])
    assert [i.role for i in items[:3] if isinstance(i, Message)] == ["user", "user", "assistant"]
    assert json.dumps(items_to_wire(items)) == json.dumps(REMOTE_OUTPUT)  # byte-for-byte
    for x, item in zip(REMOTE_OUTPUT, items):
        assert item_to_wire(item_from_wire(x)) == x
        assert json.dumps(item_to_wire(item)) == json.dumps(x)
    assert replacement_from_remote([{"type": "compaction_summary", "encrypted_content": "e"}])  # the alias


def test_replacement_from_remote_rejects_what_cannot_replace_a_history() -> None:
    with pytest.raises(WireFormatError, match="no compaction item"):
        replacement_from_remote(REMOTE_OUTPUT[:3])
    with pytest.raises(WireFormatError, match=r"output\[1\]: message: required field 'content'"):
        replacement_from_remote([REMOTE_OUTPUT[0], {"type": "message", "role": "user"}, REMOTE_OUTPUT[3]])
    with pytest.raises(WireFormatError, match=r"output\[0\]: item: expected an object, got a string"):
        replacement_from_remote(["compaction"])
    bad_outputs: list[Any] = ["[]", {"output": []}, None]
    for bad in bad_outputs:
        with pytest.raises(WireFormatError, match="expected an array"):
            replacement_from_remote(bad)


json_leaves = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
json_values = st.recursive(
    json_leaves,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
    max_leaves=6,
)


@st.composite
def remote_outputs(draw: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, 4))):
        role = draw(st.sampled_from(["user", "assistant"]))
        part = "input_text" if role == "user" else "output_text"
        content: Any = draw(
            st.text(max_size=30) | st.lists(st.fixed_dictionaries({"type": st.just(part), "text": texts}), max_size=2)
        )
        msg: dict[str, Any] = {"role": role, "content": content}
        if draw(st.booleans()):
            msg = {"type": "message", **msg}
        if draw(st.booleans()):
            msg["id"] = draw(st.text(min_size=1, max_size=8))
        out.append(msg)
    cmp: dict[str, Any] = {"type": "compaction", "encrypted_content": draw(st.text(max_size=60))}
    if draw(st.booleans()):
        cmp = {"id": draw(st.text(max_size=8)), **cmp}
    cmp.update(draw(st.dictionaries(st.text(min_size=1, max_size=6).map(lambda k: "x_" + k), json_values, max_size=2)))
    out.append(cmp)
    return out


@given(remote_outputs())
def test_remote_output_round_trips_byte_for_byte(output: list[dict[str, Any]]) -> None:
    items = replacement_from_remote(output)
    assert len(items) == len(output)
    assert json.dumps(items_to_wire(items), ensure_ascii=False) == json.dumps(output, ensure_ascii=False)
    assert all(item_to_wire(item_from_wire(x)) == x for x in output)


# ---------------------------------------------------------------------------------------------
# server-side compaction: drop what the compaction item covers
# ---------------------------------------------------------------------------------------------


def test_drop_before_last_compaction() -> None:
    a, b = compaction("a"), compaction("b")
    items: list[ResponseItem] = [Message.user("1"), a, Message.user("2"), b, Message.assistant("3")]
    assert drop_before_last_compaction(items) == [b, Message.assistant("3")]
    plain: list[ResponseItem] = [Message.user("1"), Message.assistant("2")]
    kept = drop_before_last_compaction(plain)
    assert kept == plain and kept is not plain
    assert drop_before_last_compaction([]) == []
    # a compaction item between a call and its output: the call is kept with its output
    split: list[ResponseItem] = [Message.user("1"), call("c"), a, out("c"), Message.assistant("2")]
    assert drop_before_last_compaction(split) == split[1:]


@given(histories(), st.data())
def test_dropping_before_a_compaction_keeps_pairs_intact(history: list[ResponseItem], data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(history)))
    items = [*history[:at], compaction("z"), *history[at:]]
    kept = drop_before_last_compaction(items)
    last = max(i for i, item in enumerate(items) if is_compaction_item(item))
    assert kept == items[len(items) - len(kept) :]  # a suffix ...
    assert len(items) - len(kept) <= last  # ... that holds the latest compaction item
    assert pairs_intact(kept)


# ---------------------------------------------------------------------------------------------
# tool-call pairs
# ---------------------------------------------------------------------------------------------


def test_pairs_intact() -> None:
    assert pairs_intact([])
    assert pairs_intact([call("a"), call("b"), out("b"), out("a")])
    assert not pairs_intact([out("a"), call("a")])  # output before its call
    assert not pairs_intact([call("a"), out("a"), out("a")])  # a second output
    assert not pairs_intact([call("a"), out("a"), call("a"), out("a")])  # a reused call id
    assert not pairs_intact([call("a")])  # no output yet ...
    assert pairs_intact([call("a")], require_outputs=False)  # ... fine mid-turn
    assert not pairs_intact([out("a")], require_outputs=False)
    shell_by_id = LocalShellCall(status="completed", action={"type": "exec"}, id="ls1")
    assert pairs_intact([shell_by_id, out("ls1")]) and not pairs_intact([shell_by_id])
    unknown = UnknownItem({"type": "computer_call", "call_id": "k"})
    assert pairs_intact([unknown, UnknownItem({"type": "computer_call_output", "call_id": "k"})])
    assert not pairs_intact([unknown])
    # items without a call id are not paired
    assert pairs_intact(
        [UnknownItem({"type": "web_search_call", "id": "w"}), FunctionCallOutput("", FunctionCallOutputPayload())]
    )


@given(messy_sequences())
def test_pairs_intact_agrees_with_the_kernel_testing_checker(items: list[ResponseItem]) -> None:
    assert pairs_intact(items) == (not well_formed_violations(items))
    assert pairs_intact(items, require_outputs=False) == (not well_formed_violations(items, require_outputs=False))


def test_safe_cut_moves_the_cut_off_a_pair() -> None:
    items: list[ResponseItem] = [Message.user("q"), call("a"), call("b"), out("a"), out("b"), Message.assistant("x")]
    assert [safe_cut(items, i) for i in range(7)] == [0, 1, 1, 1, 1, 5, 6]
    assert [safe_cut(items, i, direction="later") for i in range(7)] == [0, 1, 5, 5, 5, 5, 6]
    assert safe_cut(items, -3) == 0 and safe_cut(items, 99) == 6
    assert safe_cut([], 0) == 0
    with pytest.raises(ValueError):
        safe_cut(items, 1, direction="sideways")  # type: ignore[arg-type]


@given(histories() | messy_sequences(), st.data())
def test_safe_cut_is_the_nearest_position_that_splits_no_pair(items: list[ResponseItem], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(items)))
    early = safe_cut(items, index)
    late = safe_cut(items, index, direction="later")
    assert early <= index <= late
    assert not splits(items, early) and not splits(items, late)
    assert all(splits(items, c) for c in range(early + 1, index + 1))
    assert all(splits(items, c) for c in range(index, late))
    if pairs_intact(items):
        for c in (early, late):
            assert pairs_intact(items[:c]) and pairs_intact(items[c:])


def test_trim_to_budget_drops_the_oldest_items_and_never_splits_a_pair() -> None:
    items: list[ResponseItem] = [Message.user("q"), call("a"), out("a", "x" * 400), Message.assistant("done")]
    assert trim_to_budget(items, estimate_tokens(items)) == items
    tail = estimate_tokens(items[1:])
    assert trim_to_budget(items, tail) == items[1:]
    # room for the output but not its call: both go
    assert trim_to_budget(items, tail - 1) == items[3:]
    assert trim_to_budget(items, 0) == []
    with pytest.raises(ValueError):
        trim_to_budget(items, -1)


@given(histories(max_steps=10), st.integers(0, 3000))
def test_trim_to_budget_is_the_longest_safe_suffix_within_budget(items: list[ResponseItem], budget: int) -> None:
    kept = trim_to_budget(items, budget)
    start = len(items) - len(kept)
    assert kept == items[start:]
    assert estimate_tokens(kept) <= budget
    assert not splits(items, start)
    assert pairs_intact(kept)
    for c in range(start):
        assert splits(items, c) or estimate_tokens(items[c:]) > budget
