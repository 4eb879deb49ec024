"""Conformance with the official ``openai`` SDK's Responses types, generated at test time.

The members of the SDK's unions ``ResponseStreamEvent``, ``ResponseOutputItem``, ``ResponseItem``
(pydantic models) and ``ResponseInputItemParam`` (TypedDicts) are enumerated from the installed
SDK, and a small generic builder makes valid samples of each from its type, in several variants:
every field set (nested unions taking their 1st, 2nd, 3rd member), required fields only, and
every nullable field ``null``. Then:

* every stream event decodes through :class:`ResponsesStreamDecoder` (framed as SSE) into kernel
  events, or is skipped on purpose: its type is in the library's :data:`HANDLED_EVENT_TYPES` or
  :data:`IGNORED_EVENT_TYPES` (the test names any SDK event type in neither);
* every output / stored / input item round-trips ``item_from_wire`` → ``item_to_wire``
  byte-for-byte (the JSON encodings are equal), the modelled types decoding to their kernel
  class and everything else to an opaque :class:`UnknownItem`;
* no item the SDK can produce breaks a stream: each output item streams through
  ``output_item.added`` / ``.done`` and ``response.completed`` without an error or a duplicate;
* a request carries every input item as it came, without its ``id`` (an ``item_reference``
  keeps it).

A new SDK release that adds a member is covered (or flagged) with no change here.
"""

from __future__ import annotations

import collections.abc
import json
import types
import typing
from typing import Any

import pydantic
import pytest
import typing_extensions

from actors.model._responses import (
    HANDLED_EVENT_TYPES,
    IGNORED_EVENT_TYPES,
    ResponsesStreamDecoder,
    responses_request_body,
)
from kernel.errors import KernelError
from kernel.items import (
    CustomToolCall,
    CustomToolCallOutput,
    FunctionCall,
    FunctionCallOutput,
    LocalShellCall,
    Message,
    Reasoning,
    ResponseItem,
    ToolSearchCall,
    ToolSearchOutput,
    UnknownItem,
    item_from_wire,
    item_to_wire,
)
from kernel.prompt import Prompt
from kernel.stream import Completed, ModelEvent, OutputItemAdded, OutputItemDone

openai_types = pytest.importorskip("openai.types.responses")

# ---------------------------------------------------------------------------------------------
# a generic sample builder over the SDK's types
# ---------------------------------------------------------------------------------------------

_REQUIRED_MARKS = (typing_extensions.Required, getattr(typing, "Required", typing_extensions.Required))
_NOT_REQUIRED_MARKS = (typing_extensions.NotRequired, getattr(typing, "NotRequired", typing_extensions.NotRequired))
_MAX_DEPTH = 10


def _strip(tp: Any) -> tuple[Any, list[Any], bool | None]:
    """``tp`` without ``Annotated`` / ``Required`` / ``NotRequired``; its annotation metadata;
    whether it was marked required (``None``: unmarked)."""
    meta: list[Any] = []
    required: bool | None = None
    while True:
        origin = typing_extensions.get_origin(tp)
        if origin is typing_extensions.Annotated:
            meta.extend(tp.__metadata__)
            tp = tp.__origin__
        elif origin in _REQUIRED_MARKS:
            required = True
            tp = typing_extensions.get_args(tp)[0]
        elif origin in _NOT_REQUIRED_MARKS:
            required = False
            tp = typing_extensions.get_args(tp)[0]
        else:
            return tp, meta, required


def _alias(meta: list[Any]) -> str | None:
    for m in meta:
        alias = getattr(m, "alias", None)
        if isinstance(alias, str) and alias and alias != "None":
            return alias
    return None


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, pydantic.BaseModel)


def _union_members(tp: Any) -> tuple[Any, ...]:
    """The members of a (possibly ``Annotated``, discriminated) union type alias."""
    tp, _, _ = _strip(tp)
    return typing_extensions.get_args(tp) if _is_union(tp) else (tp,)


def _is_union(tp: Any) -> bool:
    return typing_extensions.get_origin(tp) is typing.Union or isinstance(tp, types.UnionType)


class Builder:
    """Builds one sample per type. ``mode``: ``"all"`` (every field), ``"required"`` (required
    fields only), ``"nulls"`` (every field, nullable ones ``None``). ``choice`` rotates which
    member of a union (and which value of a ``Literal``) is taken."""

    def __init__(self, mode: str, choice: int = 0) -> None:
        self.mode = mode
        self.choice = choice
        self.counter = 0

    def _text(self, name: str) -> str:
        self.counter += 1
        return f"{name or 'text'}_{self.counter}"

    def value(self, tp: Any, name: str = "", depth: int = 0) -> Any:
        tp, _, _ = _strip(tp)
        if tp is Any or tp is object:
            return {"key": self._text(name)}
        if tp is type(None) or tp is None:
            return None
        if _is_union(tp):
            members = typing_extensions.get_args(tp)
            concrete = [m for m in members if m is not type(None)]
            if len(concrete) < len(members) and (self.mode == "nulls" or depth >= _MAX_DEPTH):
                return None
            return self.value(concrete[self.choice % len(concrete)], name, depth + 1)
        origin = typing_extensions.get_origin(tp)
        args = typing_extensions.get_args(tp)
        if origin is typing_extensions.Literal or origin is typing.Literal:
            return args[self.choice % len(args)]
        if origin in (list, collections.abc.Sequence, collections.abc.Iterable, tuple, set, frozenset):
            if depth >= _MAX_DEPTH:
                return []
            return [self.value(args[0] if args else Any, name, depth + 1)]
        if origin in (dict, collections.abc.Mapping):
            return {"key": self.value(args[1] if len(args) > 1 else Any, name, depth + 1)}
        if isinstance(tp, type) and tp.__name__ == "SequenceNotStr":  # pragma: no cover - defensive
            return [self._text(name)]
        if origin is not None and getattr(origin, "__name__", "") == "SequenceNotStr":
            return [self.value(args[0], name, depth + 1)]
        if tp is str:
            return self._text(name)
        if tp is bool:
            return True
        if tp is int:
            return 1
        if tp is float:
            return 1.5
        if _is_model(tp):
            return self.model(tp, depth + 1)
        if typing_extensions.is_typeddict(tp):
            return self.typed_dict(tp, depth + 1)
        raise TypeError(f"the sample builder does not know {tp!r} (field {name!r})")

    def _include(self, required: bool) -> bool:
        return required or self.mode != "required"

    def model(self, cls: type[pydantic.BaseModel], depth: int = 0) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field_name, field in cls.model_fields.items():
            if not self._include(field.is_required()):
                continue
            out[field.alias or field_name] = self.value(field.annotation, field_name, depth)
        return out

    def typed_dict(self, cls: Any, depth: int = 0) -> dict[str, Any]:
        hints = typing_extensions.get_type_hints(cls, include_extras=True)
        total = getattr(cls, "__total__", True)
        out: dict[str, Any] = {}
        for key, hint in hints.items():
            inner, meta, marked = _strip(hint)
            required = total if marked is None else marked
            if not self._include(required):
                continue
            out[_alias(meta) or key] = self.value(inner, key, depth)
        return out


VARIANTS = [("all", 0), ("all", 1), ("all", 2), ("required", 0), ("nulls", 0)]


def sdk_samples(cls: Any) -> list[tuple[str, dict[str, Any]]]:
    """Valid samples of ``cls`` (a pydantic model, validated and dumped by the SDK itself, or a
    TypedDict), one per variant, without duplicates."""
    seen: set[str] = set()
    out: list[tuple[str, dict[str, Any]]] = []
    for mode, choice in VARIANTS:
        builder = Builder(mode, choice)
        if _is_model(cls):
            raw = builder.model(cls)
            wire = cls.model_validate(raw).model_dump(mode="json", by_alias=True, exclude_unset=True)
        else:
            wire = builder.typed_dict(cls)
        key = json.dumps(wire)
        if key not in seen:
            seen.add(key)
            out.append((f"{mode}{choice}" if mode == "all" else mode, wire))
    return out


def _type_literal(cls: Any) -> str | None:
    if _is_model(cls):
        annotation = cls.model_fields["type"].annotation
    else:
        annotation = _strip(typing_extensions.get_type_hints(cls, include_extras=True)["type"])[0]
    args = typing_extensions.get_args(_strip(annotation)[0])
    return args[0] if args else None


STREAM_EVENTS = _union_members(openai_types.ResponseStreamEvent)
OUTPUT_ITEMS = _union_members(openai_types.ResponseOutputItem)
STORED_ITEMS = _union_members(openai_types.ResponseItem)
INPUT_ITEMS = _union_members(openai_types.ResponseInputItemParam)

MODELLED: dict[str, type[Any]] = {
    "message": Message,
    "reasoning": Reasoning,
    "function_call": FunctionCall,
    "function_call_output": FunctionCallOutput,
    "custom_tool_call": CustomToolCall,
    "custom_tool_call_output": CustomToolCallOutput,
    "local_shell_call": LocalShellCall,
    "tool_search_call": ToolSearchCall,
    "tool_search_output": ToolSearchOutput,
}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {_dumps(event)}\n\n".encode()


def decode(stream: bytes) -> tuple[list[ModelEvent], KernelError | None]:
    dec = ResponsesStreamDecoder()
    events = list(dec.feed(stream))
    events += dec.finish()
    return events, dec.error


def _ids(members: tuple[Any, ...]) -> list[str]:
    return [m.__name__ for m in members]


# ---------------------------------------------------------------------------------------------
# the unions are what this test expects them to be
# ---------------------------------------------------------------------------------------------


def test_the_sdk_unions_are_enumerated() -> None:
    """Counts at the time of writing (openai 3.63): 59 events, 28 output items, 30 stored items,
    33 input items. A newer SDK may add members: they are covered by the tests below as they
    come; only a collapse of the enumeration (a refactored SDK) fails here."""
    assert len(STREAM_EVENTS) >= 59
    assert len(OUTPUT_ITEMS) >= 28
    assert len(STORED_ITEMS) >= 30
    assert len(INPUT_ITEMS) >= 33
    for members in (STREAM_EVENTS, OUTPUT_ITEMS, STORED_ITEMS):
        assert all(_is_model(m) for m in members)
    assert all(typing_extensions.is_typeddict(m) for m in INPUT_ITEMS)


def test_the_event_tables_are_disjoint_and_reasoned() -> None:
    assert not HANDLED_EVENT_TYPES & set(IGNORED_EVENT_TYPES)
    for reason in IGNORED_EVENT_TYPES.values():
        assert reason.isalpha() and reason.islower(), reason  # one word


def test_every_sdk_stream_event_type_is_handled_or_deliberately_ignored() -> None:
    unclassified = sorted(
        f"{m.__name__} ({_type_literal(m)})"
        for m in STREAM_EVENTS
        if _type_literal(m) not in HANDLED_EVENT_TYPES and _type_literal(m) not in IGNORED_EVENT_TYPES
    )
    assert not unclassified, f"SDK stream events in neither HANDLED_EVENT_TYPES nor IGNORED_EVENT_TYPES: {unclassified}"


# ---------------------------------------------------------------------------------------------
# stream events
# ---------------------------------------------------------------------------------------------

TERMINAL = {"response.failed", "response.incomplete", "error"}


@pytest.mark.parametrize("cls", STREAM_EVENTS, ids=_ids(STREAM_EVENTS))
def test_every_sdk_stream_event_decodes(cls: Any) -> None:
    kind = _type_literal(cls)
    assert kind in HANDLED_EVENT_TYPES or kind in IGNORED_EVENT_TYPES, f"{cls.__name__}: {kind} is unclassified"
    for variant, wire in sdk_samples(cls):
        dec = ResponsesStreamDecoder()
        events = dec.feed(sse(wire))
        where = f"{cls.__name__} [{variant}]"
        if kind in IGNORED_EVENT_TYPES:
            assert events == [] and dec.error is None, where
            continue
        if dec.error is not None:
            assert kind in TERMINAL, f"{where}: {dec.error!r}"
            assert not dec.error.message.startswith("malformed"), f"{where}: {dec.error!r}"
            continue
        assert events, f"{where}: no kernel event"
        if kind == "response.completed":
            assert dec.done and type(events[-1]) is Completed, where
            # every item of the response's output is delivered (backfilled: no done event came)
            backfilled = [e.item for e in events[:-1] if isinstance(e, OutputItemDone)]
            assert [_dumps(item_to_wire(i)) for i in backfilled] == [_dumps(o) for o in wire["response"]["output"]]


# ---------------------------------------------------------------------------------------------
# items: codec round trip, streams, requests
# ---------------------------------------------------------------------------------------------


def _check_round_trip(where: str, wire: dict[str, Any]) -> ResponseItem:
    item = item_from_wire(wire)
    expected = MODELLED.get(wire.get("type", "message" if "role" in wire else ""), UnknownItem)
    assert type(item) is expected, f"{where}: decoded as {type(item).__name__}"
    assert _dumps(item_to_wire(item)) == _dumps(wire), where
    assert item_from_wire(item_to_wire(item)) == item, where
    return item


@pytest.mark.parametrize("cls", OUTPUT_ITEMS, ids=_ids(OUTPUT_ITEMS))
def test_every_sdk_output_item_round_trips(cls: Any) -> None:
    for variant, wire in sdk_samples(cls):
        _check_round_trip(f"{cls.__name__} [{variant}]", wire)


@pytest.mark.parametrize("cls", STORED_ITEMS, ids=_ids(STORED_ITEMS))
def test_every_sdk_stored_item_round_trips(cls: Any) -> None:
    for variant, wire in sdk_samples(cls):
        _check_round_trip(f"{cls.__name__} [{variant}]", wire)


@pytest.mark.parametrize("cls", INPUT_ITEMS, ids=_ids(INPUT_ITEMS))
def test_every_sdk_input_item_round_trips_and_is_sent_as_it_came(cls: Any) -> None:
    for variant, wire in sdk_samples(cls):
        where = f"{cls.__name__} [{variant}]"
        item = _check_round_trip(where, wire)
        sent = responses_request_body(Prompt(input=[item]), model="m")["input"]
        expected = dict(wire)
        reference = wire.get("type") == "item_reference" or (wire.get("type") is None and type(item) is UnknownItem)
        if not reference:
            expected.pop("id", None)  # server-side ids are not sent back (store: false)
        assert _dumps(sent) == _dumps([expected]), where


@pytest.mark.parametrize("cls", OUTPUT_ITEMS, ids=_ids(OUTPUT_ITEMS))
def test_no_sdk_output_item_breaks_a_stream(cls: Any) -> None:
    for variant, wire in sdk_samples(cls):
        where = f"{cls.__name__} [{variant}]"
        events, error = decode(
            sse({"type": "response.output_item.added", "sequence_number": 0, "output_index": 0, "item": wire})
            + sse({"type": "response.output_item.done", "sequence_number": 1, "output_index": 0, "item": wire})
            + sse(
                {
                    "type": "response.completed",
                    "sequence_number": 2,
                    "response": {"id": "resp_1", "status": "completed", "output": [wire]},
                }
            )
        )
        assert error is None, f"{where}: {error!r}"
        assert [type(e) for e in events] == [OutputItemAdded, OutputItemDone, Completed], where  # no duplicate
        assert isinstance(events[1], OutputItemDone) and _dumps(item_to_wire(events[1].item)) == _dumps(wire), where
        # and when only response.completed carries it, it is backfilled
        events, error = decode(
            sse(
                {
                    "type": "response.completed",
                    "sequence_number": 0,
                    "response": {"id": "resp_1", "status": "completed", "output": [wire]},
                }
            )
        )
        assert error is None and [type(e) for e in events] == [OutputItemDone, Completed], where
        assert isinstance(events[0], OutputItemDone) and _dumps(item_to_wire(events[0].item)) == _dumps(wire), where
