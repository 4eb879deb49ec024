"""The conversation data model: Responses API items and tool specs, with a lossless wire codec.

Every item is a frozen attrs class. :func:`item_from_wire` turns a decoded JSON object into an item
and :func:`item_to_wire` turns it back; the pair is lossless:

* unknown item types decode to :class:`UnknownItem`, which keeps the whole object;
* unknown fields of a known type are kept in the item's ``extra`` mapping and written back;
* an optional field sent as an explicit ``null`` is kept as ``null``;
* the decoded object's key order, an absent ``type`` (the SDK's "easy" input message
  ``{"role": "user", "content": "hello"}``) and a message ``content`` sent as a plain string are
  remembered (see :class:`WireForm`), so encoding a decoded item gives the same JSON bytes.

Top-level sequences (message content, reasoning summary/content, tool-search tools) are stored as
tuples, so equality does not depend on where an item came from; values nested deeper are stored as
decoded (lists and dicts, not copied): treat them as read-only.

Input items (``ResponseInputItem``: function-call output, custom-tool-call output, MCP tool-call
output, tool-search output, message) use the same classes and the same codec. A malformed object
raises :class:`~kernel.errors.WireFormatError` naming the type and the field; nothing is half-built.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Union

import attrs

from .errors import WireFormatError

__all__ = [
    "json_type_name",
    "Message",
    "Reasoning",
    "FunctionCall",
    "FunctionCallOutput",
    "FunctionCallOutputPayload",
    "CustomToolCall",
    "CustomToolCallOutput",
    "LocalShellCall",
    "ToolSearchCall",
    "ToolSearchOutput",
    "McpToolCallOutput",
    "UnknownItem",
    "WireForm",
    "ResponseItem",
    "ResponseInputItem",
    "item_from_wire",
    "item_to_wire",
    "items_from_wire",
    "items_to_wire",
    "FunctionTool",
    "FreeformTool",
    "FreeformToolFormat",
    "UnknownTool",
    "ToolSpec",
    "tool_from_wire",
    "tool_to_wire",
]

_EMPTY: Final[Mapping[str, Any]] = {}


@attrs.frozen
class WireForm:
    """How a decoded wire object was laid out, beyond its values: codec bookkeeping that lets
    :func:`item_to_wire` reproduce the object byte-for-byte (``json.dumps`` of the encoded dict
    equals that of the decoded one).

    ``keys`` are the object's keys in their order (``"type"`` missing for an untyped message);
    ``text_content`` is true when a message's ``content`` was a plain string (kept as one text
    part, written back as the string while the content is still that one part). Items built in
    code have no wire form and encode in the canonical order (``type`` first). Not part of an
    item's equality or ``repr``; :func:`attrs.evolve` carries it over (a changed field keeps its
    place, an added one goes last)."""

    keys: tuple[str, ...]
    text_content: bool = False


def _to_tuple(value: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(value)


def _opt_tuple(value: Iterable[Any] | None) -> tuple[Any, ...] | None:
    return None if value is None else tuple(value)


# ---------------------------------------------------------------------------------------------
# Function-call output payload
# ---------------------------------------------------------------------------------------------


@attrs.frozen
class FunctionCallOutputPayload:
    """The body of a (custom) tool call's output.

    ``body`` is either text (``str``) or a list of content items (``input_text`` /
    ``input_image`` objects). On the wire it is exactly that value; ``success`` is kernel-side
    metadata (``False`` for a model-visible error) and is never sent.
    """

    body: str | tuple[Mapping[str, Any], ...] = ""
    success: bool | None = None

    @classmethod
    def from_text(cls, text: str, success: bool | None = None) -> FunctionCallOutputPayload:
        """A text body."""
        return cls(text, success)

    @classmethod
    def from_content_items(
        cls, items: Sequence[Mapping[str, Any]], success: bool | None = None
    ) -> FunctionCallOutputPayload:
        """A body of content items (``{"type": "input_text", "text": ...}``, images, ...)."""
        return cls(tuple(items), success)

    def text_content(self) -> str | None:
        """The text body, or ``None`` for a content-item body."""
        return self.body if isinstance(self.body, str) else None

    def content_items(self) -> tuple[Mapping[str, Any], ...] | None:
        """The content items, or ``None`` for a text body."""
        return None if isinstance(self.body, str) else self.body

    def to_text(self) -> str | None:
        """Best-effort text for humans: the text body, or the non-blank ``input_text`` items joined
        by newlines (images dropped); ``None`` when there is no text."""
        if isinstance(self.body, str):
            return self.body
        parts = [
            str(item.get("text"))
            for item in self.body
            if item.get("type") == "input_text" and str(item.get("text", "")).strip()
        ]
        return "\n".join(parts) if parts else None

    def to_wire(self) -> str | list[Any]:
        """The wire value of ``output``."""
        return self.body if isinstance(self.body, str) else [dict(i) for i in self.body]

    @classmethod
    def from_wire(cls, value: Any, where: str = "output") -> FunctionCallOutputPayload:
        """Decode the wire value of ``output`` (a string or a list of content-item objects)."""
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, list):
            for i, entry in enumerate(value):
                if not isinstance(entry, dict):
                    raise WireFormatError(f"{where}[{i}]: expected a content item object, got {json_type_name(entry)}")
            return cls(tuple(value))
        raise WireFormatError(f"{where}: expected a string or a list of content items, got {json_type_name(value)}")

    def __str__(self) -> str:
        if isinstance(self.body, str):
            return self.body
        import json

        return json.dumps([dict(i) for i in self.body])


# ---------------------------------------------------------------------------------------------
# Items
# ---------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Message:
    """``{"type": "message", "role", "content": [...], "id"?, "phase"?}``.

    The SDK's "easy" input message (``{"role": "user", "content": "hello"}``, ``type``
    optional, ``content`` a string) decodes to a message whose content is one text part
    (``input_text``, or ``output_text`` for the ``assistant`` role); its :attr:`wire_form`
    writes it back as it came.
    """

    role: str
    content: Sequence[Mapping[str, Any]] = attrs.field(converter=_to_tuple)
    id: str | None = None
    phase: str | None = None
    extra: Mapping[str, Any] = _EMPTY
    wire_form: WireForm | None = attrs.field(default=None, eq=False, repr=False, kw_only=True)

    def text(self) -> str:
        """The concatenated text of the content: ``output_text`` / ``input_text`` parts' ``text``
        and ``refusal`` parts' ``refusal`` (a model's refusal is its answer: it must not read as
        an empty message), in content order."""
        parts: list[str] = []
        for c in self.content:
            kind = c.get("type")
            if kind == "output_text" or kind == "input_text":
                parts.append(str(c.get("text", "")))
            elif kind == "refusal":
                parts.append(str(c.get("refusal", "")))
        return "".join(parts)

    @classmethod
    def user(cls, text: str) -> Message:
        """A user message with one ``input_text`` part."""
        return cls(role="user", content=({"type": "input_text", "text": text},))

    @classmethod
    def assistant(cls, text: str, *, id: str | None = None) -> Message:
        """An assistant message with one ``output_text`` part."""
        return cls(role="assistant", content=({"type": "output_text", "text": text},), id=id)


@attrs.frozen(kw_only=True)
class Reasoning:
    """``{"type": "reasoning", "id", "summary": [...], "content"?, "encrypted_content"?}``."""

    id: str | None = None
    summary: Sequence[Mapping[str, Any]] = attrs.field(default=(), converter=_to_tuple)
    content: Sequence[Mapping[str, Any]] | None = attrs.field(default=None, converter=_opt_tuple)
    encrypted_content: str | None = None
    extra: Mapping[str, Any] = _EMPTY
    wire_form: WireForm | None = attrs.field(default=None, eq=False, repr=False, kw_only=True)


@attrs.frozen(kw_only=True)
class FunctionCall:
    """``{"type": "function_call", "call_id", "name", "arguments": "<json>", "id"?, "namespace"?}``."""

    call_id: str
    name: str
    arguments: str
    id: str | None = None
    namespace: str | None = None
    extra: Mapping[str, Any] = _EMPTY
    wire_form: WireForm | None = attrs.field(default=None, eq=False, repr=False, kw_only=True)


@attrs.frozen
class FunctionCallOutput:
    """``{"type": "function_call_output", "call_id", "output"}`` — a response item and an input item.

    ``call_id`` is optional in the API's types: absent (or ``null``) on the wire it decodes to
    ``""`` (no call to pair with) and encodes back as it came."""

    call_id: str
    output: FunctionCallOutputPayload
    extra: Mapping[str, Any] = attrs.field(default=_EMPTY, kw_only=True)
    wire_form: WireForm | None = attrs.field(default=None, eq=False, repr=False, kw_only=True)


@attrs.frozen(kw_only=True)
class CustomToolCall:
    """``{"type": "custom_tool_call", "call_id", "name", "input", "id"?, "status"?}`` (freeform tools)."""

    call_id: str
    name: str
    input: str
    id: str | None = None
    status: str | None = None
    extra: Mapping[str, Any] = _EMPTY
    wire_form: WireForm | None = attrs.field(default=None, eq=False, repr=False, kw_only=True)


@attrs.frozen
class CustomToolCallOutput:
    """``{"type": "custom_tool_call_output", "call_id", "output", "name"?}``."""

    call_id: str
    output: FunctionCallOutputPayload
    name: str | None = attrs.field(default=None, kw_only=True)
    extra: Mapping[str, Any] = attrs.field(default=_EMPTY, kw_only=True)
    wire_form: WireForm | None = attrs.field(default=None, eq=False, repr=False, kw_only=True)


@attrs.frozen(kw_only=True)
class LocalShellCall:
    """``{"type": "local_shell_call", "call_id"?, "id"?, "status", "action": {...}}``."""

    status: str
    action: Mapping[str, Any]
    call_id: str | None = None
    id: str | None = None
    extra: Mapping[str, Any] = _EMPTY
    wire_form: WireForm | None = attrs.field(default=None, eq=False, repr=False, kw_only=True)


@attrs.frozen(kw_only=True)
class ToolSearchCall:
    """``{"type": "tool_search_call", "call_id"?, "execution"?, "arguments", "status"?, "id"?}``."""

    arguments: Any
    execution: str | None = None
    call_id: str | None = None
    status: str | None = None
    id: str | None = None
    extra: Mapping[str, Any] = _EMPTY
    wire_form: WireForm | None = attrs.field(default=None, eq=False, repr=False, kw_only=True)


@attrs.frozen(kw_only=True)
class ToolSearchOutput:
    """``{"type": "tool_search_output", "call_id"?, "status"?, "execution"?, "tools": [...]}``."""

    status: str | None = None
    execution: str | None = None
    call_id: str | None = None
    tools: Sequence[Any] = attrs.field(default=(), converter=_to_tuple)
    extra: Mapping[str, Any] = _EMPTY
    wire_form: WireForm | None = attrs.field(default=None, eq=False, repr=False, kw_only=True)


@attrs.frozen(kw_only=True)
class McpToolCallOutput:
    """Input item ``{"type": "mcp_tool_call_output", "call_id", "output": CallToolResult}``.

    ``output`` is the MCP ``CallToolResult`` object (``content``, ``structuredContent``/
    ``structured_content``, ``isError``/``is_error``); :meth:`as_function_call_output_payload`
    converts it as the seed does.
    """

    call_id: str
    output: Mapping[str, Any]
    extra: Mapping[str, Any] = _EMPTY
    wire_form: WireForm | None = attrs.field(default=None, eq=False, repr=False, kw_only=True)

    def as_function_call_output_payload(self) -> FunctionCallOutputPayload:
        """Structured content as JSON text if present; image content as content items; otherwise
        the JSON of ``content``. ``success`` is ``not is_error``."""
        import json

        out = self.output
        is_error = out.get("is_error", out.get("isError"))
        success = is_error is not True
        structured = out.get("structured_content", out.get("structuredContent"))
        if structured is not None:
            return FunctionCallOutputPayload(_compact_json(structured), success)
        content = list(out.get("content") or [])
        if any(isinstance(c, dict) and c.get("type") == "image" for c in content):
            items: list[Mapping[str, Any]] = []
            for c in content:
                if isinstance(c, dict) and c.get("type") == "text" and isinstance(c.get("text"), str):
                    items.append({"type": "input_text", "text": c["text"]})
                elif isinstance(c, dict) and c.get("type") == "image" and isinstance(c.get("data"), str):
                    data = c["data"]
                    if not data.startswith("data:"):
                        mime = c.get("mimeType") or c.get("mime_type") or "application/octet-stream"
                        data = f"data:{mime};base64,{data}"
                    items.append({"type": "input_image", "image_url": data, "detail": "high"})
                else:
                    items.append({"type": "input_text", "text": json.dumps(c, separators=(",", ":"))})
            return FunctionCallOutputPayload(tuple(items), success)
        return FunctionCallOutputPayload(_compact_json(content), success)


@attrs.frozen
class UnknownItem:
    """An item whose ``type`` the kernel does not model (``web_search_call``,
    ``image_generation_call``, ``compaction``, future types). ``data`` is the whole object."""

    data: Mapping[str, Any]

    @property
    def type(self) -> str:
        """The item's wire ``type`` (``""`` when missing)."""
        t = self.data.get("type")
        return t if isinstance(t, str) else ""


ResponseItem = Union[
    Message,
    Reasoning,
    FunctionCall,
    FunctionCallOutput,
    CustomToolCall,
    CustomToolCallOutput,
    LocalShellCall,
    ToolSearchCall,
    ToolSearchOutput,
    McpToolCallOutput,
    UnknownItem,
]
"""Any conversation item (the Responses API output item union plus input-only items)."""

ResponseInputItem = Union[Message, FunctionCallOutput, CustomToolCallOutput, McpToolCallOutput, ToolSearchOutput]
"""An item a tool execution hands back to the model."""


# ---------------------------------------------------------------------------------------------
# Codec: one field table per type, one generic encoder/decoder
# ---------------------------------------------------------------------------------------------

# kinds: "str" (string), "json" (any JSON), "list" (JSON array), "obj" (JSON object),
# "payload" (FunctionCallOutputPayload wire value). A field is required or optional.
_Field = tuple[str, str, bool]

_ITEM_FIELDS: Final[dict[str, tuple[type[Any], tuple[_Field, ...]]]] = {
    "message": (
        Message,
        (("role", "str", True), ("content", "list", True), ("id", "str", False), ("phase", "str", False)),
    ),
    "reasoning": (
        Reasoning,
        (
            ("id", "str", False),
            ("summary", "list", True),
            ("content", "list", False),
            ("encrypted_content", "str", False),
        ),
    ),
    "function_call": (
        FunctionCall,
        (
            ("call_id", "str", True),
            ("name", "str", True),
            ("arguments", "str", True),
            ("id", "str", False),
            ("namespace", "str", False),
        ),
    ),
    "function_call_output": (
        FunctionCallOutput,
        (("call_id", "str", False), ("output", "payload", True)),
    ),
    "custom_tool_call": (
        CustomToolCall,
        (
            ("call_id", "str", True),
            ("name", "str", True),
            ("input", "str", True),
            ("id", "str", False),
            ("status", "str", False),
        ),
    ),
    "custom_tool_call_output": (
        CustomToolCallOutput,
        (("call_id", "str", True), ("output", "payload", True), ("name", "str", False)),
    ),
    "local_shell_call": (
        LocalShellCall,
        (("status", "str", True), ("action", "obj", True), ("call_id", "str", False), ("id", "str", False)),
    ),
    "tool_search_call": (
        ToolSearchCall,
        (
            ("execution", "str", False),
            ("arguments", "json", True),
            ("call_id", "str", False),
            ("status", "str", False),
            ("id", "str", False),
        ),
    ),
    "tool_search_output": (
        ToolSearchOutput,
        (("call_id", "str", False), ("status", "str", False), ("execution", "str", False), ("tools", "list", True)),
    ),
    "mcp_tool_call_output": (
        McpToolCallOutput,
        (("call_id", "str", True), ("output", "obj", True)),
    ),
}

_TYPE_OF_CLASS: Final[dict[type[Any], str]] = {cls: t for t, (cls, _) in _ITEM_FIELDS.items()}
_FIELDS_OF_CLASS: Final[dict[type[Any], tuple[_Field, ...]]] = {cls: fields for cls, fields in _ITEM_FIELDS.values()}

# optional wire fields that the class keeps as a non-None default (absent / null on the wire → the
# default; written back absent / null as decoded, thanks to the item's wire form)
_DEFAULTS: Final[dict[type[Any], dict[str, Any]]] = {FunctionCallOutput: {"call_id": ""}}


def json_type_name(value: Any, *, show_number: bool = True, array: str = "an array") -> str:
    """How an error message names the JSON type of a decoded ``value``: ``"null"``, ``"a boolean"``,
    ``"a number (3)"`` (the value only with ``show_number``), ``"a string"``, ``array`` (``"an
    array"``; a task file says ``"a list"``), ``"an object"``, else the Python type's name. Shared by
    every decoder that reports a wrongly typed field (items, stream events, batch task lines)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})" if show_number else "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return array
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _compact_json(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _decode_value(kind: str, value: Any, where: str) -> Any:
    if kind == "str":
        if not isinstance(value, str):
            raise WireFormatError(f"{where}: expected a string, got {json_type_name(value)}")
        return value
    if kind == "list":
        if not isinstance(value, list):
            raise WireFormatError(f"{where}: expected an array, got {json_type_name(value)}")
        return value
    if kind == "obj":
        if not isinstance(value, dict):
            raise WireFormatError(f"{where}: expected an object, got {json_type_name(value)}")
        return value
    if kind == "payload":
        return FunctionCallOutputPayload.from_wire(value, where)
    if kind == "bool":
        if not isinstance(value, bool):
            raise WireFormatError(f"{where}: expected a boolean, got {json_type_name(value)}")
        return value
    return value  # "json"


def _decode_fields(
    type_name: str, fields: tuple[_Field, ...], data: Mapping[str, Any], where: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, kind, required in fields:
        if name not in data:
            if required:
                raise WireFormatError(f"{where}: required field {name!r} is missing ({type_name})")
            continue
        value = data[name]
        if value is None and not required:
            extra[name] = None  # an explicit null survives the round trip
            continue
        kwargs[name] = _decode_value(kind, value, f"{where}.{name}")
    known = {name for name, _, _ in fields}
    for key, value in data.items():
        if key != "type" and key not in known:
            extra[key] = value
    return kwargs, extra


def item_from_wire(data: Mapping[str, Any]) -> ResponseItem:
    """Decode one item from its wire object.

    Raises :class:`~kernel.errors.WireFormatError` naming the field when a known type is
    malformed (missing required field, wrong JSON type). An unknown ``type`` gives an
    :class:`UnknownItem` holding the whole object. An object without ``type`` that has ``role``
    and ``content`` is a message (the SDK's easy input message); any other untyped object, or
    one whose ``type`` is ``null`` (an ``item_reference`` may omit its type or send it null), is
    an :class:`UnknownItem`. A message ``content`` may be a string (one text part). The item
    remembers the object's layout (:class:`WireForm`), so :func:`item_to_wire` gives it back
    byte-for-byte. Does not copy nested values.
    """
    if not isinstance(data, Mapping):
        raise WireFormatError(f"item: expected an object, got {json_type_name(data)}")
    item_type = data.get("type")
    if not isinstance(item_type, str):
        if item_type is None:  # absent, or null (an item_reference's type is nullable)
            if "type" not in data and "role" in data and "content" in data:
                try:
                    return _decode_item("message", data)
                except WireFormatError:
                    pass  # not a message after all: keep it whole, as any untyped object
            return UnknownItem(dict(data))
        raise WireFormatError(f"item.type: expected a string, got {json_type_name(item_type)}")
    if item_type not in _ITEM_FIELDS:
        return UnknownItem(dict(data))
    return _decode_item(item_type, data)


def _decode_item(item_type: str, data: Mapping[str, Any]) -> ResponseItem:
    cls, fields = _ITEM_FIELDS[item_type]
    text_content = False
    if cls is Message:
        content = data.get("content")
        if isinstance(content, str):
            # the easy input message: one text part, written back as the string
            part = "output_text" if data.get("role") == "assistant" else "input_text"
            data = {**data, "content": [{"type": part, "text": content}]}
            text_content = True
        elif "content" in data and not isinstance(content, list):
            raise WireFormatError(f"{item_type}.content: expected a string or an array, got {json_type_name(content)}")
    kwargs, extra = _decode_fields(item_type, fields, data, item_type)
    defaults = _DEFAULTS.get(cls)
    if defaults is not None:
        for name, value in defaults.items():
            kwargs.setdefault(name, value)
    if extra:
        kwargs["extra"] = extra
    kwargs["wire_form"] = WireForm(tuple(data), text_content)
    return cls(**kwargs)  # type: ignore[no-any-return]


def item_to_wire(item: ResponseItem) -> dict[str, Any]:
    """Encode one item (response or input) to its wire object; inverse of :func:`item_from_wire`.

    Optional fields that are ``None`` are omitted (unless the decoded object carried an
    explicit ``null``); ``FunctionCallOutputPayload.success`` is not sent. A decoded item is
    written in the decoded object's layout (its :class:`WireForm`: key order, no ``type`` when
    it had none, a string message ``content``); an item built in code puts ``type`` first.
    """
    if isinstance(item, UnknownItem):
        return dict(item.data)
    cls = type(item)
    fields = _FIELDS_OF_CLASS.get(cls)
    if fields is None:
        raise TypeError(f"item_to_wire: {cls.__name__} is not a conversation item")
    out: dict[str, Any] = {"type": _TYPE_OF_CLASS[cls]}
    for name, kind, required in fields:
        value = getattr(item, name)
        if value is None and not required:
            continue
        if kind == "payload":
            out[name] = value.to_wire()
        elif kind == "list" and not isinstance(value, list):
            out[name] = list(value)
        else:
            out[name] = value
    extra = item.extra
    if extra:
        for key, value in extra.items():
            if key not in out:
                out[key] = value
    form = item.wire_form
    if form is not None:
        return _apply_form(out, item, form)
    return out


def _apply_form(out: dict[str, Any], item: Any, form: WireForm) -> dict[str, Any]:
    """``out`` laid out as the object ``item`` was decoded from (see :class:`WireForm`)."""
    keys = form.keys
    if "type" not in keys:
        del out["type"]
    defaults = _DEFAULTS.get(type(item))
    if defaults is not None:
        for name, default in defaults.items():
            if out.get(name) == default and name not in keys:
                del out[name]  # absent on the wire
            elif out.get(name) == default and item.extra.get(name, default) is None:
                out[name] = None  # an explicit null
    if form.text_content:
        content = out.get("content")
        if isinstance(content, list) and len(content) == 1:
            part = content[0]
            if (
                isinstance(part, Mapping)
                and len(part) == 2
                and part.get("type") in ("input_text", "output_text")
                and isinstance(part.get("text"), str)
            ):
                out["content"] = part["text"]
    if tuple(out) == keys:
        return out
    ordered = {key: out[key] for key in keys if key in out}
    if len(ordered) != len(out):
        for key, value in out.items():  # fields set after decoding go last
            if key not in ordered:
                ordered[key] = value
    return ordered


def items_from_wire(data: Sequence[Mapping[str, Any]]) -> list[ResponseItem]:
    """Decode a list of wire items; the error names the index of a malformed one."""
    out: list[ResponseItem] = []
    for i, entry in enumerate(data):
        try:
            out.append(item_from_wire(entry))
        except WireFormatError as exc:
            raise WireFormatError(f"input[{i}]: {exc.message}") from None
    return out


def items_to_wire(items: Sequence[ResponseItem]) -> list[dict[str, Any]]:
    """Encode a list of items."""
    return [item_to_wire(i) for i in items]


# ---------------------------------------------------------------------------------------------
# Tool specs
# ---------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class FunctionTool:
    """``{"type": "function", "name", "description", "strict", "parameters": {json schema}}``."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = attrs.field(factory=lambda: {"type": "object", "properties": {}})
    strict: bool = False
    extra: Mapping[str, Any] = _EMPTY


@attrs.frozen(kw_only=True)
class FreeformToolFormat:
    """A freeform tool's input format: ``{"type": "grammar", "syntax": "lark", "definition"}``."""

    type: str = "grammar"
    syntax: str = "lark"
    definition: str = ""
    extra: Mapping[str, Any] = _EMPTY


@attrs.frozen(kw_only=True)
class FreeformTool:
    """``{"type": "custom", "name", "description", "format": {...}}`` — its calls are
    ``custom_tool_call`` items with free-text ``input`` (``apply_patch`` is one)."""

    name: str
    description: str = ""
    format: FreeformToolFormat = attrs.field(factory=FreeformToolFormat)
    extra: Mapping[str, Any] = _EMPTY


@attrs.frozen
class UnknownTool:
    """A tool spec of another kind (``local_shell``, ``web_search``, ...), kept whole."""

    data: Mapping[str, Any]

    @property
    def name(self) -> str:
        """The spec's ``name`` if it has one, else its ``type``."""
        n = self.data.get("name", self.data.get("type", ""))
        return n if isinstance(n, str) else ""


ToolSpec = Union[FunctionTool, FreeformTool, UnknownTool]
"""A tool the model may call."""


def _decode_defaulted(
    type_name: str, fields: tuple[_Field, ...], data: Mapping[str, Any], where: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Like :func:`_decode_fields` for specs whose optional fields have non-None defaults: an
    absent field is remembered as absent, an explicit null as null, so encoding restores both."""
    kwargs, extra = _decode_fields(type_name, fields, data, where)
    for name, _, required in fields:
        if not required and name not in data:
            extra[name] = _ABSENT
    return kwargs, extra


def tool_from_wire(data: Mapping[str, Any]) -> ToolSpec:
    """Decode a tool spec; unknown kinds become :class:`UnknownTool`. Malformed known kinds raise
    :class:`~kernel.errors.WireFormatError` naming the field."""
    if not isinstance(data, Mapping):
        raise WireFormatError(f"tool: expected an object, got {json_type_name(data)}")
    kind = data.get("type")
    if kind == "function":
        kwargs, extra = _decode_defaulted(
            "function tool",
            (
                ("name", "str", True),
                ("description", "str", False),
                ("parameters", "obj", False),
                ("strict", "bool", False),
            ),
            data,
            "tool",
        )
        return FunctionTool(**kwargs, extra=extra)
    if kind == "custom":
        kwargs, extra = _decode_defaulted(
            "custom tool",
            (("name", "str", True), ("description", "str", False), ("format", "obj", False)),
            data,
            "tool",
        )
        fmt = kwargs.pop("format", None)
        if fmt is not None:
            fkw, fextra = _decode_defaulted(
                "format",
                (("type", "str", False), ("syntax", "str", False), ("definition", "str", False)),
                fmt,
                "tool.format",
            )
            kwargs["format"] = FreeformToolFormat(**fkw, extra=fextra)
        return FreeformTool(**kwargs, extra=extra)
    return UnknownTool(dict(data))


class _Absent:
    """Marks a defaulted field that was absent on the wire (so encoding leaves it out)."""

    _instance: _Absent | None = None

    def __new__(cls) -> _Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<absent>"


_ABSENT: Final = _Absent()


def _encode_known(out: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if value is _ABSENT:
            out.pop(key, None)
        else:  # explicit nulls of known fields, and unknown fields
            out[key] = value
    return out


def tool_to_wire(tool: ToolSpec) -> dict[str, Any]:
    """Encode a tool spec; inverse of :func:`tool_from_wire`."""
    if isinstance(tool, UnknownTool):
        return dict(tool.data)
    if isinstance(tool, FunctionTool):
        out: dict[str, Any] = {
            "type": "function",
            "name": tool.name,
            "description": tool.description,
            "strict": tool.strict,
            "parameters": tool.parameters,
        }
        return _encode_known(out, tool.extra)
    if isinstance(tool, FreeformTool):
        fmt = tool.format
        fmt_out = _encode_known({"type": fmt.type, "syntax": fmt.syntax, "definition": fmt.definition}, fmt.extra)
        out = {"type": "custom", "name": tool.name, "description": tool.description, "format": fmt_out}
        return _encode_known(out, tool.extra)
    raise TypeError(f"tool_to_wire: {type(tool).__name__} is not a tool spec")
