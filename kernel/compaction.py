"""Context compaction, the pure part: token estimates, when to compact, and the histories that
replace a long one (PROTOCOL §6).

Sessions decide *when* to compact and run the model requests; this module gives them the
arithmetic and the data. Nothing here does I/O or checkpoints; every function is deterministic.

**Estimates.** :func:`estimate_tokens` counts the UTF-8 bytes of each item's wire JSON (compact
separators, non-ASCII kept) divided by four, rounded up per item, so estimates add up:
``estimate_tokens(a + b) == estimate_tokens(a) + estimate_tokens(b)``. It is a rough byte-based
figure (no tokenizer), the same rule codex uses. :func:`estimate_input_tokens` prefers the
figure the server reported for the last response and estimates only what came after it.
:func:`should_compact` compares an estimate with a threshold; :func:`compact_threshold` derives
the default threshold from a context window (90 %, as codex does).

**Local compaction** (as codex builds it): the model is asked to summarise the conversation with
:data:`COMPACTION_PROMPT`; the history is then replaced by :func:`build_compacted_history` —
the initial context, the most recent user messages (text only, within a token budget), and the
summary as a user message (:func:`summary_message`, recognisable by :data:`SUMMARY_PREFIX`).

**Remote compaction**: :func:`replacement_from_remote` decodes the ``output`` of
``POST /responses/compact`` and keeps it verbatim (the ``compaction`` item is opaque and
round-trips byte-for-byte). With server-side compaction, :func:`drop_before_last_compaction`
drops what the latest compaction item already covers.

**Tool-call pairs.** A tool call (``function_call``, ``custom_tool_call``, ``local_shell_call``,
``tool_search_call``, or any other item with a ``call_id``) and its output (``*_output`` with the
same ``call_id``) must be kept or dropped together. :func:`pairs_intact` checks a history;
:func:`safe_cut` moves a cut position so that no pair is split; :func:`trim_to_budget` drops
the oldest items, at a safe cut, until the rest fits a budget.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from .errors import WireFormatError
from .items import (
    CustomToolCall,
    CustomToolCallOutput,
    FunctionCall,
    FunctionCallOutput,
    LocalShellCall,
    McpToolCallOutput,
    Message,
    ResponseItem,
    ToolSearchCall,
    ToolSearchOutput,
    UnknownItem,
    item_from_wire,
    item_to_wire,
    json_type_name,
)

__all__ = [
    "BYTES_PER_TOKEN",
    "COMPACTION_ITEM_TYPES",
    "COMPACTION_PROMPT",
    "DEFAULT_USER_MESSAGE_BUDGET_TOKENS",
    "NO_SUMMARY_TEXT",
    "SUMMARY_PREFIX",
    "TRUNCATED_MESSAGE_FLOOR_TOKENS",
    "build_compacted_history",
    "collect_user_messages",
    "compact_threshold",
    "drop_before_last_compaction",
    "estimate_input_tokens",
    "estimate_item_tokens",
    "estimate_tokens",
    "is_compaction_item",
    "is_summary_message",
    "pairs_intact",
    "replacement_from_remote",
    "safe_cut",
    "should_compact",
    "summary_message",
    "trim_to_budget",
]

# ---------------------------------------------------------------------------------------------
# Token estimates
# ---------------------------------------------------------------------------------------------

BYTES_PER_TOKEN: Final = 4
"""The estimate's exchange rate: one token per four bytes of wire JSON (rounded up per item)."""


def _json_default(value: Any) -> Any:
    # items built in code may hold read-only mappings or tuples deeper down; anything else that
    # JSON cannot express is counted by its text rather than raising
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (tuple, list, set, frozenset)):
        return list(value)
    return str(value)


def _wire_bytes(item: ResponseItem) -> int:
    text = json.dumps(item_to_wire(item), ensure_ascii=False, separators=(",", ":"), default=_json_default)
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))  # a lone surrogate counts 3 bytes, never raises


def estimate_item_tokens(item: ResponseItem) -> int:
    """One item's estimate: the UTF-8 bytes of its wire JSON (:func:`~kernel.item_to_wire`,
    compact separators, non-ASCII kept) divided by :data:`BYTES_PER_TOKEN`, rounded up. At least
    1 for any item (``{}`` is two bytes). Raises ``TypeError`` for a value that is not an item."""
    return -(-_wire_bytes(item) // BYTES_PER_TOKEN)


def estimate_tokens(items: Sequence[ResponseItem]) -> int:
    """The estimated size of ``items`` in tokens: the sum of :func:`estimate_item_tokens`.

    Additive by construction (``estimate_tokens(a + b) == estimate_tokens(a) +
    estimate_tokens(b)``), so callers may cache per-item figures. A byte count, not a tokenizer:
    English text runs at about four bytes per token; base64 (encrypted reasoning, images) and
    code are overestimated, CJK text underestimated."""
    return sum(estimate_item_tokens(item) for item in items)


def estimate_input_tokens(
    last_input_tokens: int | None, items_at_last_response: int, items: Sequence[ResponseItem]
) -> int:
    """The estimated input size of a request whose input is ``items``.

    ``last_input_tokens`` is what the server reported (``usage.input_tokens``) for the last
    response, whose input was the first ``items_at_last_response`` items of ``items``; the
    result is that figure plus :func:`estimate_tokens` of the items added since (the response's
    output, tool outputs, new user messages). A caller that wants the response's own output
    counted by the server's figure passes ``input_tokens + output_tokens`` and the count of items
    up to the end of that response instead.

    When the figure is unknown (``None``), or the history no longer extends the request it was
    reported for (``items_at_last_response > len(items)``: history was replaced, e.g. by a
    compaction), everything is estimated. Raises ``ValueError`` for a negative count or figure.
    """
    if items_at_last_response < 0:
        raise ValueError(f"items_at_last_response must be >= 0, got {items_at_last_response}")
    if last_input_tokens is not None and last_input_tokens < 0:
        raise ValueError(f"last_input_tokens must be >= 0, got {last_input_tokens}")
    if last_input_tokens is None or items_at_last_response > len(items):
        return estimate_tokens(items)
    return last_input_tokens + estimate_tokens(items[items_at_last_response:])


def should_compact(estimate: int, threshold: int | None) -> bool:
    """Whether a request of ``estimate`` tokens should be compacted first: ``estimate >=
    threshold``. A ``None`` threshold (window unknown, nothing configured) never compacts."""
    return threshold is not None and estimate >= threshold


def compact_threshold(context_window: int | None, configured: int | None = None) -> int | None:
    """The automatic-compaction threshold, in tokens.

    With a known ``context_window``: 90 % of it (``context_window * 9 // 10``), or ``configured``
    when that is lower — the same rule as codex (``ModelInfo::auto_compact_token_limit``): the
    remaining tenth leaves room for the model's reply and for the compaction request itself,
    and a configured limit may lower the threshold but never raise it past 90 %. With an unknown
    window: ``configured`` (``None`` when nothing is configured: no automatic compaction).
    Raises ``ValueError`` for a window or configured limit that is not positive.
    """
    if configured is not None and configured <= 0:
        raise ValueError(f"configured threshold must be > 0, got {configured}")
    if context_window is None:
        return configured
    if context_window <= 0:
        raise ValueError(f"context_window must be > 0, got {context_window}")
    limit = context_window * 9 // 10
    return limit if configured is None else min(configured, limit)


# ---------------------------------------------------------------------------------------------
# Local compaction
# ---------------------------------------------------------------------------------------------

COMPACTION_PROMPT: Final = """\
Context compaction: this conversation is about to be replaced by a short handoff note, because \
it no longer fits the context window. Only your note (and the user's most recent messages) will \
remain. Write the note so that the work can be continued from it alone.

Cover, briefly and concretely:
1. The task: what the user wants, in their terms, with every constraint and preference they gave.
2. Progress: what has been done so far, and the decisions taken along the way (with the reason \
when it matters).
3. State: the files created, changed or inspected that matter (with paths), commands run and \
what they showed, errors not yet resolved, anything set up in the environment.
4. What remains: the next steps in order, and any open questions for the user.
5. Details that cannot be reconstructed: exact names, identifiers, values, commands or snippets \
the remaining work depends on.

Write only the note: no preamble and no tool calls. Prefer short lists to prose, and leave out \
what no longer matters."""
"""The instruction sent (as the last user message) to ask the model for a compaction summary."""

SUMMARY_PREFIX: Final = (
    "Summary of the earlier conversation. The conversation above this point was compacted to fit "
    "the context window; this note, written by the assistant working on the task, replaces it. "
    "Continue from it without redoing finished work; files and tools it mentions may have changed "
    "since, so check before relying on details."
)
"""The first line of every summary message (:func:`is_summary_message` looks for it)."""

NO_SUMMARY_TEXT: Final = "(The model produced no summary.)"
"""What a summary message says when the summary text is empty."""

DEFAULT_USER_MESSAGE_BUDGET_TOKENS: Final = 20_000
"""A default for :func:`build_compacted_history`'s ``budget_tokens`` (codex keeps 20 000)."""

_MARKER_TEMPLATE: Final = "\n[... {omitted} characters of this message were cut by compaction ...]\n"

TRUNCATED_MESSAGE_FLOOR_TOKENS: Final = 40
"""The most a truncated user message can cost (:func:`estimate_item_tokens`) when the budget is
too small for any of its text: a message holding only the truncation marker (for any message of
up to 10^18 characters) fits in this many tokens. See :func:`build_compacted_history`."""


def summary_message(text: str) -> Message:
    """The user-role message carrying a compaction summary: :data:`SUMMARY_PREFIX`, a blank line,
    then ``text`` (stripped; :data:`NO_SUMMARY_TEXT` when it is blank). Idempotent: a text that
    already starts with the prefix is kept as it is."""
    if text.startswith(SUMMARY_PREFIX):
        return Message.user(text)
    body = text.strip() or NO_SUMMARY_TEXT
    return Message.user(f"{SUMMARY_PREFIX}\n\n{body}")


def _user_text(item: ResponseItem) -> str | None:
    """A user-role message's text parts (``input_text`` / ``output_text``, non-empty) joined by
    newlines; ``None`` for anything else."""
    if not isinstance(item, Message) or item.role != "user":
        return None
    parts = []
    for part in item.content:
        kind = part.get("type")
        if kind == "input_text" or kind == "output_text":
            text = part.get("text")
            if isinstance(text, str) and text:
                parts.append(text)
    return "\n".join(parts)


def is_summary_message(item: ResponseItem) -> bool:
    """Whether ``item`` is a user message made by :func:`summary_message`."""
    text = _user_text(item)
    return text is not None and text.startswith(SUMMARY_PREFIX)


def collect_user_messages(history: Sequence[ResponseItem], initial_context: Sequence[ResponseItem] = ()) -> list[str]:
    """The texts of the user's own messages in ``history``, oldest first: user-role
    :class:`~kernel.Message` items, text parts only (images and files dropped), joined by
    newlines. Left out: messages with no text, earlier summaries (:func:`is_summary_message`),
    the compaction request itself (text equal to :data:`COMPACTION_PROMPT`), and messages whose
    text equals that of a user message in ``initial_context`` (the context is restored anyway)."""
    context_texts = {t for t in map(_user_text, initial_context) if t}
    out: list[str] = []
    for item in history:
        text = _user_text(item)
        if not text or text.startswith(SUMMARY_PREFIX) or text == COMPACTION_PROMPT or text in context_texts:
            continue
        out.append(text)
    return out


def _truncated_message(text: str, budget_tokens: int) -> Message:
    """``text`` cut in the middle (head and tail kept, a marker between) so that the message
    costs at most ``budget_tokens``; only the marker when nothing fits."""
    n = len(text)

    def build(kept: int) -> Message:
        head = (kept + 1) // 2
        tail = kept - head
        return Message.user(text[:head] + _MARKER_TEMPLATE.format(omitted=n - kept) + text[n - tail :])

    best = build(0)
    lo, hi = 1, n - 1
    while lo <= hi:  # the largest kept length that fits (binary search; every answer is checked)
        mid = (lo + hi) // 2
        candidate = build(mid)
        if estimate_item_tokens(candidate) <= budget_tokens:
            best, lo = candidate, mid + 1
        else:
            hi = mid - 1
    return best


def build_compacted_history(
    initial_context: Sequence[ResponseItem],
    history: Sequence[ResponseItem],
    summary: str,
    *,
    budget_tokens: int,
) -> list[ResponseItem]:
    """The history that replaces ``history`` after a local compaction.

    In order: the items of ``initial_context`` (as given); the most recent user messages of
    ``history`` (:func:`collect_user_messages`, each rebuilt as a one-part text
    ``Message.user``), oldest first; and :func:`summary_message` of ``summary`` (the model's
    reply to :data:`COMPACTION_PROMPT`).

    Messages are taken newest first while they fit ``budget_tokens`` (measured with
    :func:`estimate_item_tokens` of the rebuilt messages); the walk stops at the first one that
    does not fit, so the kept messages are a contiguous run ending with the latest. None is cut
    mid-message except the latest: when it alone exceeds the budget it is kept anyway, shortened
    in the middle with a marker ("[... N characters of this message were cut by compaction
    ...]"), and is the only one kept.

    Guarantees (``kept`` = the rebuilt user messages in the result):

    * ``estimate_tokens(result) == estimate_tokens(initial_context) + estimate_tokens(kept) +
      estimate_item_tokens(summary_message(summary))``, and
      ``estimate_tokens(kept) <= max(budget_tokens, TRUNCATED_MESSAGE_FLOOR_TOKENS)``
      (``<= budget_tokens`` whenever the latest message fits it);
    * when ``history`` has a user message, the latest one is kept (whole, or truncated as above);
    * the result has no tool calls or outputs beyond those of ``initial_context``, so its pairs
      are intact when the context's are;
    * deterministic; the inputs are not modified.

    Raises ``ValueError`` for a negative budget.
    """
    if budget_tokens < 0:
        raise ValueError(f"budget_tokens must be >= 0, got {budget_tokens}")
    texts = collect_user_messages(history, initial_context)
    kept: list[ResponseItem] = []
    remaining = budget_tokens
    for text in reversed(texts):
        message = Message.user(text)
        cost = estimate_item_tokens(message)
        if cost <= remaining:
            kept.append(message)
            remaining -= cost
            continue
        if not kept:  # the latest message alone is over budget: keep it, shortened
            kept.append(_truncated_message(text, budget_tokens))
        break
    kept.reverse()
    return [*initial_context, *kept, summary_message(summary)]


# ---------------------------------------------------------------------------------------------
# Remote and server-side compaction
# ---------------------------------------------------------------------------------------------

COMPACTION_ITEM_TYPES: Final = frozenset({"compaction", "compaction_summary"})
"""Wire types of the opaque compaction item (``compaction_summary`` is an older alias)."""


def is_compaction_item(item: ResponseItem) -> bool:
    """Whether ``item`` is an opaque compaction item (``{"type": "compaction", "id",
    "encrypted_content"}``, decoded as an :class:`~kernel.UnknownItem`)."""
    return isinstance(item, UnknownItem) and item.type in COMPACTION_ITEM_TYPES


def replacement_from_remote(output: Sequence[Any]) -> list[ResponseItem]:
    """The replacement history from the ``output`` array of ``POST /responses/compact``.

    Every entry is decoded with :func:`~kernel.item_from_wire` and kept, in order, whatever its
    role (the output's messages may come back as ``user`` or ``assistant``) or type: the
    compaction item stays an :class:`~kernel.UnknownItem` holding the object as received, so
    ``item_to_wire`` gives back the same JSON bytes. Nothing is added or removed.

    Raises :class:`~kernel.errors.WireFormatError` when ``output`` is not an array, when an entry
    is malformed (the message names ``output[i]`` and the field), or when there is no compaction
    item (replacing history with the messages alone would lose the conversation: fall back to
    local compaction).
    """
    if isinstance(output, (str, bytes, bytearray)) or not isinstance(output, Sequence):
        raise WireFormatError(f"compaction output: expected an array, got {json_type_name(output)}")
    items: list[ResponseItem] = []
    for i, entry in enumerate(output):
        try:
            items.append(item_from_wire(entry))
        except WireFormatError as exc:
            raise WireFormatError(f"output[{i}]: {exc.message}") from None
    if not any(is_compaction_item(item) for item in items):
        raise WireFormatError("compaction output: no compaction item")
    return items


def drop_before_last_compaction(items: Sequence[ResponseItem]) -> list[ResponseItem]:
    """``items`` without what the latest compaction item covers (server-side compaction,
    PROTOCOL §6): the items from the latest :func:`is_compaction_item` on. The cut is moved
    earlier if it would split a tool call from its output (:func:`safe_cut`), so pairs that were
    intact stay intact. Without a compaction item: all of ``items``, as a new list."""
    for index in range(len(items) - 1, -1, -1):
        if is_compaction_item(items[index]):
            return list(items[safe_cut(items, index, direction="earlier") :])
    return list(items)


# ---------------------------------------------------------------------------------------------
# Tool-call pairs
# ---------------------------------------------------------------------------------------------


def _pair_key(item: ResponseItem) -> tuple[bool, str] | None:
    """``(is_output, call_id)`` for a tool call or output; ``None`` for anything else (and for
    an empty or missing call id: there is nothing to pair by)."""
    call_id: Any
    is_output: bool
    if isinstance(item, (FunctionCall, CustomToolCall, ToolSearchCall)):
        call_id, is_output = item.call_id, False
    elif isinstance(item, LocalShellCall):
        call_id, is_output = (item.call_id if item.call_id is not None else item.id), False
    elif isinstance(item, (FunctionCallOutput, CustomToolCallOutput, McpToolCallOutput, ToolSearchOutput)):
        call_id, is_output = item.call_id, True
    elif isinstance(item, UnknownItem):
        call_id, is_output = item.data.get("call_id"), item.type.endswith("_output")
    else:
        return None
    if not isinstance(call_id, str) or not call_id:
        return None
    return is_output, call_id


def pairs_intact(items: Sequence[ResponseItem], *, require_outputs: bool = True) -> bool:
    """Whether every tool call in ``items`` is followed by exactly one output with its
    ``call_id``, and every output follows its call (no output without a call, no second output,
    no second call with one id). With ``require_outputs=False`` a call may still be waiting for
    its output (a turn in progress). Calls and outputs are the items :func:`safe_cut` pairs."""
    open_calls: set[str] = set()
    seen: set[str] = set()
    for item in items:
        key = _pair_key(item)
        if key is None:
            continue
        is_output, call_id = key
        if is_output:
            if call_id not in open_calls:
                return False
            open_calls.discard(call_id)
        else:
            if call_id in seen:
                return False
            seen.add(call_id)
            open_calls.add(call_id)
    return not (require_outputs and open_calls)


def _split_positions(items: Sequence[ResponseItem]) -> list[bool]:
    """``split[c]`` for ``0 <= c <= len(items)``: whether cutting before index ``c`` separates
    two items sharing a ``call_id`` (a call and its output, or any other such group)."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for index, item in enumerate(items):
        key = _pair_key(item)
        if key is not None:
            first.setdefault(key[1], index)
            last[key[1]] = index
    depth = [0] * (len(items) + 2)
    for call_id, lo in first.items():
        hi = last[call_id]
        if hi > lo:  # cuts at lo+1 .. hi separate the group
            depth[lo + 1] += 1
            depth[hi + 1] -= 1
    split = [False] * (len(items) + 1)
    running = 0
    for c in range(len(items) + 1):
        running += depth[c]
        split[c] = running > 0
    return split


def safe_cut(items: Sequence[ResponseItem], index: int, *, direction: Literal["earlier", "later"] = "earlier") -> int:
    """A cut position near ``index`` that splits no tool call from its output.

    Cutting at ``c`` separates ``items[:c]`` from ``items[c:]``. The result is the nearest ``c``
    at or before ``index`` (``direction="earlier"``: the later part grows) or at or after it
    (``"later"``: the later part shrinks) such that all items sharing a ``call_id`` — a call and
    its output(s) — fall on one side. ``index`` is first clamped to ``0 .. len(items)``; 0 and
    ``len(items)`` are always safe, so a result always exists. O(len(items)).
    """
    if direction not in ("earlier", "later"):
        raise ValueError(f"direction must be 'earlier' or 'later', got {direction!r}")
    index = max(0, min(index, len(items)))
    split = _split_positions(items)
    step = -1 if direction == "earlier" else 1
    while split[index]:
        index += step
    return index


def trim_to_budget(items: Sequence[ResponseItem], budget_tokens: int) -> list[ResponseItem]:
    """The longest suffix of ``items`` whose :func:`estimate_tokens` is at most
    ``budget_tokens`` and that starts at a :func:`safe_cut` position (no call split from its
    output). The oldest items go first, as codex trims a compaction request that does not fit
    the window. May be empty. Raises ``ValueError`` for a negative budget."""
    if budget_tokens < 0:
        raise ValueError(f"budget_tokens must be >= 0, got {budget_tokens}")
    split = _split_positions(items)
    costs = [estimate_item_tokens(item) for item in items]
    suffix = 0
    start = len(items)
    # walk back while the suffix fits; remember the earliest safe start seen
    for c in range(len(items) - 1, -1, -1):
        suffix += costs[c]
        if suffix > budget_tokens:
            break
        if not split[c]:
            start = c
    return list(items[start:])
