"""Python functions as tools, and the :class:`ToolActor` that runs their calls.

Two parts:

* **The registry.** :func:`tool` turns a typed function into a :class:`Tool`: its name (the
  function's), its description (the docstring's first paragraph), and a JSON schema of its
  parameters derived from the signature (``str``, ``int``, ``float``, ``bool``, ``list[X]``,
  ``tuple``, ``dict[str, X]``, ``X | None``, ``Literal[...]``, enums, ``Any``; ``Annotated`` with
  a string or :class:`msgspec.Meta` adds a description and constraints; other types msgspec knows —
  dataclasses, ``TypedDict``, ``msgspec.Struct`` — go under ``$defs``). Parameters with a default are
  not required; per-parameter descriptions come from the docstring's Google (``Args:``), Sphinx
  (``:param x:``) or NumPy (``Parameters`` / ``----------``) section. :func:`freeform_tool` registers
  a freeform tool (``{"type": "custom"}``, e.g. ``apply_patch``) whose function receives the raw
  ``input`` string. A :class:`ToolRegistry` holds tools by name; ``registry.specs()`` lists their
  :data:`~kernel.ToolSpec` for the prompt.

* **The actor.** :class:`ToolActor` is one Trio task that implements the kernel's
  :class:`~kernel.ToolExecutor` by messaging: ``execute_tool_call`` sends a request on a memory
  channel and waits for its reply; the actor runs every call in a task of its own nursery, so calls
  run concurrently. Parallel-safe tools (``parallel=True``) share access; the others take an
  exclusive turn (a readers/writer lock, first come first served, so a waiting exclusive call is
  never starved by a stream of parallel ones). If the waiting caller is cancelled, that call's
  task is cancelled (and only that one); if the actor stops, waiting callers get
  :class:`ToolActorClosed` instead of hanging.

Arguments are decoded and checked against the signature with one :mod:`msgspec` decoder per tool
(measured hot path: decoding is ~1 µs). Invalid JSON, a missing or unexpected parameter, or a value
of the wrong type becomes a :class:`~kernel.RespondToModel` naming the problem; so does any
exception a tool raises (``"tool 'x' failed: ValueError: ..."``), except that a tool's own
:class:`~kernel.RespondToModel` and :class:`~kernel.FatalToolError` pass through unchanged.

Example::

    registry = ToolRegistry()

    @registry.tool(parallel=True)
    async def read_file(path: str, limit: int = 200) -> str:
        '''Read a text file.

        Args:
            path: The file to read, relative to the workspace.
            limit: At most this many lines.
        '''
        ...

    async with open_tool_actor(registry) as tools:
        host = TurnHost(model, tools, history, sink,
                        tool_config=registry.tool_config())
        await run_turn(host, [Message.user("hi")])
"""

from __future__ import annotations

import collections
import collections.abc
import enum
import functools
import inspect
import re
import types
import typing
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, Literal, TypeVar, Union, overload

import attrs
import msgspec
import trio

from kernel.items import (
    CustomToolCall,
    CustomToolCallOutput,
    FreeformTool,
    FreeformToolFormat,
    FunctionCall,
    FunctionCallOutput,
    FunctionCallOutputPayload,
    FunctionTool,
    ResponseInputItem,
    ResponseItem,
    ToolSpec,
)
from kernel.prompt import ToolConfig
from kernel.tools import CompletedResponseItem, FatalToolError, RespondToModel

__all__ = [
    "Tool",
    "parse_docstring",
    "tool",
    "freeform_tool",
    "ToolRegistry",
    "ToolInvocation",
    "ToolActor",
    "ToolActorClosed",
    "open_tool_actor",
]

F = TypeVar("F", bound=Callable[..., Any])

_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


# =============================================================================================
# Docstrings
# =============================================================================================

_GOOGLE_HEADERS: Final = frozenset({"args", "arguments", "parameters", "params", "keyword args", "keyword arguments"})
_ANY_GOOGLE_HEADER_RE: Final = re.compile(r"^[A-Z][A-Za-z ]{0,30}:$")
_GOOGLE_ENTRY_RE: Final = re.compile(r"^\*{0,2}([A-Za-z_]\w*)\s*(?:\([^)]*\))?\s*:(?:\s+(.*))?$")
_SPHINX_PARAM_RE: Final = re.compile(r"^:param\s+(?:[^:]*?\s+)?([A-Za-z_]\w*)\s*:\s*(.*)$")
_NUMPY_ENTRY_RE: Final = re.compile(r"^([A-Za-z_]\w*)\s*(?::.*)?$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a docstring into (first paragraph as one line, {parameter: description}).

    Understands Google (``Args:`` / ``Arguments:`` / ``Parameters:``), Sphinx (``:param [type]
    name: text``) and NumPy (``Parameters`` underlined with dashes) sections; continuation lines
    are joined with single spaces. Unknown layouts give no parameter descriptions.
    """
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    for line in lines:
        s = line.strip()
        if not s or s.startswith(":") or _ANY_GOOGLE_HEADER_RE.match(s):
            break
        summary.append(s)
    params: dict[str, str] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        s = line.strip()
        if s.endswith(":") and s[:-1].strip().lower() in _GOOGLE_HEADERS:
            i = _parse_google(lines, i, params)
            continue
        if s.lower() == "parameters" and i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}:
            i = _parse_numpy(lines, i + 2, _indent(line), params)
            continue
        m = _SPHINX_PARAM_RE.match(s)
        if m:
            i = _parse_continuation(lines, i + 1, _indent(line), params, m.group(1), m.group(2))
            continue
        i += 1
    return " ".join(summary), params


def _parse_google(lines: list[str], header: int, params: dict[str, str]) -> int:
    header_indent = _indent(lines[header])
    entry_indent: int | None = None
    current: str | None = None
    i = header + 1
    while i < len(lines):
        line = lines[i]
        s = line.strip()
        if not s:
            i += 1
            continue
        ind = _indent(line)
        if ind <= header_indent:
            break
        if entry_indent is None:
            entry_indent = ind
        if ind <= entry_indent:
            m = _GOOGLE_ENTRY_RE.match(s)
            current = m.group(1) if m else None
            if current is not None:
                params[current] = (m.group(2) or "").strip() if m else ""
        elif current is not None:
            params[current] = f"{params[current]} {s}".strip()
        i += 1
    return i


def _parse_numpy(lines: list[str], start: int, header_indent: int, params: dict[str, str]) -> int:
    current: str | None = None
    i = start
    while i < len(lines):
        line = lines[i]
        s = line.strip()
        if not s:
            i += 1
            continue
        ind = _indent(line)
        if ind <= header_indent:
            if i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}:
                break  # the next section
            m = _NUMPY_ENTRY_RE.match(s)
            current = m.group(1) if m else None
            if current is not None:
                params[current] = ""
        elif current is not None:
            params[current] = f"{params[current]} {s}".strip()
        i += 1
    return i


def _parse_continuation(
    lines: list[str], start: int, field_indent: int, params: dict[str, str], name: str, text: str
) -> int:
    parts = [text.strip()] if text.strip() else []
    i = start
    while i < len(lines):
        line = lines[i]
        s = line.strip()
        if not s or s.startswith(":") or _indent(line) <= field_indent:
            break
        parts.append(s)
        i += 1
    params[name] = " ".join(parts)
    return i


# =============================================================================================
# Schemas
# =============================================================================================

_NoneType: Final = type(None)
_SEQUENCE_ORIGINS: Final = (
    list,
    tuple,
    set,
    frozenset,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    collections.abc.Collection,
    collections.abc.Iterable,
    collections.abc.Set,
    collections.abc.MutableSet,
)
_MAPPING_ORIGINS: Final = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
_SCALARS: Final[dict[Any, str]] = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _json_type(value: Any) -> str | None:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _enum_schema(values: list[Any]) -> dict[str, Any]:
    kinds = {_json_type(v) for v in values}
    schema: dict[str, Any] = {}
    if len(kinds) == 1 and None not in kinds:
        schema["type"] = kinds.pop()
    elif kinds <= {"integer", "number"}:
        schema["type"] = "number"
    schema["enum"] = values
    return schema


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if not schema:
        return schema  # "any" already admits null
    t = schema.get("type")
    if isinstance(t, str) and "anyOf" not in schema and "$ref" not in schema:
        out = dict(schema, type=[t, "null"])
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        return out
    return {"anyOf": [schema, {"type": "null"}]}


_META_KEYS: Final = {
    "string": (("min_length", "minLength"), ("max_length", "maxLength"), ("pattern", "pattern")),
    "array": (("min_length", "minItems"), ("max_length", "maxItems")),
    "object": (("min_length", "minProperties"), ("max_length", "maxProperties")),
    "number": (
        ("ge", "minimum"),
        ("le", "maximum"),
        ("gt", "exclusiveMinimum"),
        ("lt", "exclusiveMaximum"),
        ("multiple_of", "multipleOf"),
    ),
}


def _apply_meta(schema: dict[str, Any], meta: msgspec.Meta) -> None:
    t = schema.get("type")
    kind = "number" if t in ("integer", "number") else t
    for attr, key in _META_KEYS.get(kind, ()) if isinstance(kind, str) else ():
        value = getattr(meta, attr)
        if value is not None:
            schema[key] = value
    for attr in ("title", "description", "examples"):
        value = getattr(meta, attr)
        if value is not None:
            schema[attr] = value
    if meta.extra_json_schema:
        schema.update(meta.extra_json_schema)


class _SchemaBuilder:
    """Builds JSON schemas for one tool; types it does not model inline go to ``$defs`` via
    msgspec's own schema generator."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.defs: dict[str, Any] = {}

    def build(self, tp: Any) -> dict[str, Any]:
        metas: list[Any] = []
        while typing.get_origin(tp) is typing.Annotated:
            metas.extend(tp.__metadata__)
            tp = tp.__origin__
        schema = self._build_plain(tp)
        for meta in metas:
            if isinstance(meta, str):
                schema["description"] = meta
            elif isinstance(meta, msgspec.Meta):
                _apply_meta(schema, meta)
        return schema

    def _build_plain(self, tp: Any) -> dict[str, Any]:
        if tp is Any or tp is object or tp is inspect.Parameter.empty:
            return {}
        scalar = _SCALARS.get(tp)
        if scalar is not None:
            return {"type": scalar}
        if tp is _NoneType or tp is None:
            return {"type": "null"}
        origin = typing.get_origin(tp)
        if origin is Union or origin is types.UnionType:
            args = typing.get_args(tp)
            rest = [a for a in args if a is not _NoneType]
            if len(rest) == 1:
                inner = self.build(rest[0])
            else:
                inner = {"anyOf": [self.build(a) for a in rest]}
            return _nullable(inner) if len(rest) < len(args) else inner
        if origin is Literal:
            return _enum_schema(list(typing.get_args(tp)))
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return _enum_schema([member.value for member in tp])
        if tp in _SEQUENCE_ORIGINS or origin in _SEQUENCE_ORIGINS:
            args = typing.get_args(tp)
            schema: dict[str, Any] = {"type": "array"}
            if (origin or tp) is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
                if args != ((),):
                    schema["prefixItems"] = [self.build(a) for a in args]
                schema["minItems"] = schema["maxItems"] = len(schema.get("prefixItems", ()))
            elif args:
                item = self.build(args[0])
                if item:
                    schema["items"] = item
            if (origin or tp) in (set, frozenset, collections.abc.Set, collections.abc.MutableSet):
                schema["uniqueItems"] = True
            return schema
        if tp in _MAPPING_ORIGINS or origin in _MAPPING_ORIGINS:
            args = typing.get_args(tp)
            schema = {"type": "object"}
            if len(args) == 2:
                value = self.build(args[1])
                if value:
                    schema["additionalProperties"] = value
            return schema
        return self._build_other(tp)

    def _build_other(self, tp: Any) -> dict[str, Any]:
        try:
            (schema,), components = msgspec.json.schema_components([tp], ref_template="#/$defs/{name}")
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"{self.where}: cannot describe type {_type_repr(tp)} as JSON: {exc}. Use str, int, "
                "float, bool, list[X], dict[str, X], X | None, Literal[...], an Enum, or a "
                "dataclass / TypedDict / msgspec.Struct"
            ) from None
        self.defs.update(components)
        return dict(schema)


def _type_repr(tp: Any) -> str:
    return getattr(tp, "__qualname__", None) or repr(tp)


# =============================================================================================
# Tools
# =============================================================================================


def _to_text(value: Any) -> str:
    if type(value) is str:
        return value
    return msgspec.json.encode(value).decode()


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


@attrs.frozen(eq=False, repr=False)
class Tool:
    """A Python function the model may call (build one with :func:`tool` or
    :func:`freeform_tool`).

    ``spec`` is what the model sees (:class:`~kernel.FunctionTool` or
    :class:`~kernel.FreeformTool`); ``parallel`` says whether calls may run alongside other
    parallel-safe calls (otherwise each call runs alone); ``threaded`` says whether a sync function
    runs in a worker thread. Calling the :class:`Tool` calls the function, so a decorated function
    stays usable (and testable) as a function.
    """

    name: str
    fn: Callable[..., Any]
    spec: FunctionTool | FreeformTool
    parallel: bool = False
    is_async: bool = False
    threaded: bool = True
    _decoder: msgspec.json.Decoder[Any] | None = attrs.field(default=None, alias="decoder")
    _fields: tuple[tuple[str, bool, Any], ...] = attrs.field(default=(), alias="fields")

    @property
    def description(self) -> str:
        """The description shown to the model."""
        return self.spec.description

    @property
    def freeform(self) -> bool:
        """Whether this is a freeform (``custom``) tool taking raw text input."""
        return isinstance(self.spec, FreeformTool)

    @property
    def parameters(self) -> Mapping[str, Any] | None:
        """The JSON schema of a function tool's arguments (``None`` for a freeform tool)."""
        return self.spec.parameters if isinstance(self.spec, FunctionTool) else None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        kind = "freeform" if self.freeform else "function"
        return f"<Tool {self.name!r} ({kind}{', parallel' if self.parallel else ''})>"

    def parse_arguments(self, arguments: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Decode a function call's JSON ``arguments`` into ``(args, kwargs)`` for the function.

        Raises :class:`~kernel.RespondToModel` naming the problem: invalid JSON, a missing
        required parameter, an unexpected parameter, or a value of the wrong type.
        """
        decoder = self._decoder
        if decoder is None:  # a freeform tool: the raw text is the one argument
            return (arguments,), {}
        try:
            decoded = decoder.decode(arguments or "{}")
        except msgspec.ValidationError as exc:
            raise RespondToModel(f"invalid arguments for tool {self.name!r}: {_explain(str(exc))}") from None
        except msgspec.DecodeError as exc:
            raise RespondToModel(
                f"invalid arguments for tool {self.name!r}: arguments must be a JSON object ({exc})"
            ) from None
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for name, positional, default in self._fields:
            value = getattr(decoded, name)
            if positional:  # positional-only: a later one may be set, so keep the order
                args.append(default if value is msgspec.UNSET else value)
            elif value is not msgspec.UNSET:
                kwargs[name] = value
        return tuple(args), kwargs

    async def invoke(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> FunctionCallOutputPayload:
        """Run the function and turn its result into an output payload: a ``str`` is the text; a
        :class:`~kernel.FunctionCallOutputPayload` is used as is; anything else is encoded as JSON.
        Sync functions run in a worker thread (abandoned on cancellation: the thread finishes in
        the background) unless the tool was made with ``threaded=False``. Exceptions propagate."""
        fn = self.fn
        if self.is_async:
            value = await fn(*args, **kwargs)
        elif self.threaded:
            value = await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), abandon_on_cancel=True)
        else:
            value = fn(*args, **kwargs)
        if isinstance(value, FunctionCallOutputPayload):
            return value if value.success is not None else attrs.evolve(value, success=True)
        return FunctionCallOutputPayload(_to_text(value), True)


_MISSING_RE: Final = re.compile(r"^Object missing required field `(.*)`(?: - at `\$(.*)`)?$")
_UNKNOWN_RE: Final = re.compile(r"^Object contains unknown field `(.*)`(?: - at `\$(.*)`)?$")
_AT_RE: Final = re.compile(r"^(.*) - at `\$\.?(.*)`$")


def _explain(message: str) -> str:
    """Reword msgspec's validation messages in terms of parameters."""
    m = _MISSING_RE.match(message)
    if m:
        where = f" (in {m.group(2).lstrip('.')})" if m.group(2) else ""
        return f"missing required parameter {m.group(1)!r}{where}"
    m = _UNKNOWN_RE.match(message)
    if m:
        where = f" (in {m.group(2).lstrip('.')})" if m.group(2) else ""
        return f"unexpected parameter {m.group(1)!r}{where}"
    m = _AT_RE.match(message)
    if m:
        return f"parameter {m.group(2)!r}: {m.group(1)}"
    if message.startswith("Expected `object`"):
        return f"arguments must be a JSON object: {message}"
    return message


def _make_function_tool(
    fn: Callable[..., Any],
    *,
    name: str | None,
    description: str | None,
    parallel: bool,
    threaded: bool,
    strict: bool,
) -> Tool:
    tool_name = _check_name(name if name is not None else getattr(fn, "__name__", ""), fn)
    where = f"tool {tool_name!r}"
    summary, param_docs = parse_docstring(inspect.getdoc(fn))
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # an annotation that does not resolve
        raise TypeError(f"{where}: cannot resolve the annotations of {fn!r}: {exc}") from exc
    signature = inspect.signature(fn)
    builder = _SchemaBuilder(where)
    properties: dict[str, Any] = {}
    required: list[str] = []
    struct_fields: list[tuple[str, Any, Any]] = []
    fields: list[tuple[str, bool, Any]] = []
    for param in signature.parameters.values():
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise TypeError(
                f"{where}: parameter {param.name!r} is *args/**kwargs; a tool's parameters must be "
                "named, so the model can be told what to send"
            )
        annotation = hints.get(param.name, Any)
        schema = builder.build(annotation)
        doc = param_docs.get(param.name)
        if doc and "description" not in schema:
            schema = {"description": doc, **schema}
        if param.default is inspect.Parameter.empty:
            required.append(param.name)
            struct_fields.append((param.name, annotation, msgspec.NODEFAULT))
        else:
            try:
                schema["default"] = msgspec.to_builtins(param.default)
            except (TypeError, ValueError):
                pass  # a default the model cannot see (an object): leave it out
            struct_fields.append((param.name, Union[annotation, msgspec.UnsetType], msgspec.UNSET))
        properties[param.name] = schema
        fields.append((param.name, param.kind is inspect.Parameter.POSITIONAL_ONLY, param.default))
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    parameters["additionalProperties"] = False
    if builder.defs:
        parameters["$defs"] = builder.defs
    struct_type = msgspec.defstruct(
        f"{tool_name}_arguments",
        [(n, t) if d is msgspec.NODEFAULT else (n, t, d) for n, t, d in struct_fields],
        forbid_unknown_fields=True,
    )
    try:
        decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(struct_type)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where}: unsupported parameter types: {exc}") from None
    spec = FunctionTool(
        name=tool_name,
        description=description if description is not None else summary,
        parameters=parameters,
        strict=strict,
    )
    return Tool(
        tool_name,
        fn,
        spec,
        parallel,
        _is_async(fn),
        threaded,
        decoder=decoder,
        fields=tuple(fields),
    )


def _make_freeform_tool(
    fn: Callable[..., Any],
    *,
    name: str | None,
    description: str | None,
    format: FreeformToolFormat | None,
    parallel: bool,
    threaded: bool,
) -> Tool:
    tool_name = _check_name(name if name is not None else getattr(fn, "__name__", ""), fn)
    try:
        inspect.signature(fn).bind("input")
    except TypeError:
        raise TypeError(
            f"freeform tool {tool_name!r}: {fn!r} must accept the raw input text as its one positional argument"
        ) from None
    summary, _ = parse_docstring(inspect.getdoc(fn))
    spec = FreeformTool(
        name=tool_name,
        description=description if description is not None else summary,
        format=format if format is not None else FreeformToolFormat(),
    )
    return Tool(tool_name, fn, spec, parallel, _is_async(fn), threaded)


def _check_name(name: str, fn: Any) -> str:
    if not _NAME_RE.match(name):
        raise ValueError(
            f"tool name {name!r} (from {fn!r}) must be 1-64 characters of letters, digits, "
            "'_', '-' or '.'; pass name=... to choose one"
        )
    return name


@overload
def tool(
    fn: Callable[..., Any],
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    parallel: bool = False,
    threaded: bool = True,
    strict: bool = False,
) -> Tool: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    parallel: bool = False,
    threaded: bool = True,
    strict: bool = False,
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    parallel: bool = False,
    threaded: bool = True,
    strict: bool = False,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a function tool from a typed function (``@tool`` or ``@tool(name=..., parallel=True)``).

    ``name`` defaults to the function's name, ``description`` to its docstring's first paragraph.
    The parameters' JSON schema comes from the signature (see the module docstring); it has
    ``additionalProperties: false``. ``parallel=True`` marks the tool safe to run alongside other
    parallel-safe calls; otherwise each call takes an exclusive turn. A sync function runs in a
    worker thread unless ``threaded=False`` (for quick, non-blocking functions: it then runs in
    the actor's task). ``strict`` is passed to the spec as is (the schema is not rewritten for
    OpenAI's strict mode).

    Raises :class:`TypeError` for ``*args``/``**kwargs`` parameters or annotations that have no JSON
    form, :class:`ValueError` for an invalid name.
    """

    def wrap(f: Callable[..., Any]) -> Tool:
        return _make_function_tool(
            f, name=name, description=description, parallel=parallel, threaded=threaded, strict=strict
        )

    return wrap(fn) if fn is not None else wrap


@overload
def freeform_tool(
    fn: Callable[..., Any],
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    format: FreeformToolFormat | None = None,
    parallel: bool = False,
    threaded: bool = True,
) -> Tool: ...
@overload
def freeform_tool(
    *,
    name: str | None = None,
    description: str | None = None,
    format: FreeformToolFormat | None = None,
    parallel: bool = False,
    threaded: bool = True,
) -> Callable[[Callable[..., Any]], Tool]: ...
def freeform_tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    format: FreeformToolFormat | None = None,
    parallel: bool = False,
    threaded: bool = True,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a freeform tool (``{"type": "custom"}``): the model sends free text (optionally
    constrained by ``format``, e.g. a Lark grammar) and the function receives it as its one
    positional argument. Other options as for :func:`tool`."""

    def wrap(f: Callable[..., Any]) -> Tool:
        return _make_freeform_tool(
            f, name=name, description=description, format=format, parallel=parallel, threaded=threaded
        )

    return wrap(fn) if fn is not None else wrap


class ToolRegistry:
    """Tools by name, in registration order.

    ``ToolRegistry([tool_a, fn_b])`` registers :class:`Tool` objects or plain functions (made into
    function tools with the defaults); ``@registry.tool(...)`` and ``@registry.freeform(...)`` make
    and register in one step (they return the :class:`Tool`). Registering a name twice raises
    :class:`ValueError`.
    """

    def __init__(self, tools: Iterable[Tool | Callable[..., Any]] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for t in tools:
            self.add(t)

    def add(self, t: Tool | Callable[..., Any]) -> Tool:
        """Register a :class:`Tool` (or a plain function, as ``tool(fn)``) and return it."""
        made = t if isinstance(t, Tool) else tool(t)
        if made.name in self._tools:
            raise ValueError(f"a tool named {made.name!r} is already registered; pass name=... to rename one")
        self._tools[made.name] = made
        return made

    @overload
    def tool(self, fn: Callable[..., Any], /) -> Tool: ...
    @overload
    def tool(
        self,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        parallel: bool = False,
        threaded: bool = True,
        strict: bool = False,
    ) -> Callable[[Callable[..., Any]], Tool]: ...
    def tool(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        parallel: bool = False,
        threaded: bool = True,
        strict: bool = False,
    ) -> Tool | Callable[[Callable[..., Any]], Tool]:
        """:func:`tool`, and register the result."""

        def wrap(f: Callable[..., Any]) -> Tool:
            return self.add(
                _make_function_tool(
                    f, name=name, description=description, parallel=parallel, threaded=threaded, strict=strict
                )
            )

        return wrap(fn) if fn is not None else wrap

    @overload
    def freeform(self, fn: Callable[..., Any], /) -> Tool: ...
    @overload
    def freeform(
        self,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        format: FreeformToolFormat | None = None,
        parallel: bool = False,
        threaded: bool = True,
    ) -> Callable[[Callable[..., Any]], Tool]: ...
    def freeform(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        format: FreeformToolFormat | None = None,
        parallel: bool = False,
        threaded: bool = True,
    ) -> Tool | Callable[[Callable[..., Any]], Tool]:
        """:func:`freeform_tool`, and register the result."""

        def wrap(f: Callable[..., Any]) -> Tool:
            return self.add(
                _make_freeform_tool(
                    f, name=name, description=description, format=format, parallel=parallel, threaded=threaded
                )
            )

        return wrap(fn) if fn is not None else wrap

    def get(self, name: str) -> Tool | None:
        """The tool called ``name``, or ``None``."""
        return self._tools.get(name)

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(list(self._tools.values()))

    def __len__(self) -> int:
        return len(self._tools)

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._tools)

    def specs(self) -> list[ToolSpec]:
        """The tools' specs for the prompt, in registration order."""
        return [t.spec for t in self._tools.values()]

    def tool_config(self, *, parallel_tool_calls: bool = True) -> ToolConfig:
        """A :class:`~kernel.ToolConfig` of :meth:`specs`. Parallel tool calls are allowed by default:
        the actor serialises the calls of tools that are not parallel-safe."""
        return ToolConfig(tools=self.specs(), parallel_tool_calls=parallel_tool_calls)


# =============================================================================================
# The call object
# =============================================================================================


@attrs.frozen(eq=False)
class ToolInvocation:
    """A classified call (implements :class:`~kernel.ToolCall`): ``payload`` is the JSON
    ``arguments`` of a function call or the raw ``input`` of a custom call; ``tool`` is the
    registered tool, or ``None`` for an unknown name."""

    call_id: str
    name: str
    payload: str
    custom: bool
    tool: Tool | None

    def output(self, payload: FunctionCallOutputPayload) -> ResponseInputItem:
        """This call's output item carrying ``payload``: a ``custom_tool_call_output`` for a custom
        call, a ``function_call_output`` otherwise."""
        if self.custom:
            return CustomToolCallOutput(self.call_id, payload)
        return FunctionCallOutput(self.call_id, payload)

    def error_response(self, message: str) -> ResponseInputItem:
        """The output telling the model this call failed (``success: false``)."""
        return self.output(FunctionCallOutputPayload(message, False))


# =============================================================================================
# The actor
# =============================================================================================


class ToolActorClosed(FatalToolError):
    """The :class:`ToolActor` is not running (not started yet, or stopped while the call waited).

    A :class:`~kernel.FatalToolError`: the turn ends with a clear error rather than hanging.
    """


class _SharedExclusiveLock:
    """A readers/writer lock, first come first served: a request that cannot be granted at once
    queues, and consecutive shared requests at the head of the queue are granted together. So a
    queued exclusive request is never overtaken by later shared ones (fair to writers), and vice
    versa. Acquire does not checkpoint when the lock is free."""

    __slots__ = ("_readers", "_writer", "_queue")

    def __init__(self) -> None:
        self._readers = 0
        self._writer = False
        self._queue: collections.deque[_Waiter] = collections.deque()

    def enqueue(self, exclusive: bool) -> _Waiter:
        """Take a place in line now (synchronously, so places follow arrival order, not the
        random order in which Trio first runs the tasks): granted at once when possible."""
        waiter = _Waiter(exclusive)
        if not self._queue and not self._writer and not (exclusive and self._readers):
            if exclusive:
                self._writer = True
            else:
                self._readers += 1
            waiter.granted = True
        else:
            self._queue.append(waiter)
        return waiter

    async def wait(self, waiter: _Waiter) -> None:
        """Wait until ``waiter`` is granted. Does not checkpoint when it already is. Cancelled
        while queued: leaves the line (or gives the grant back)."""
        if waiter.granted:
            return
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self.release(waiter.exclusive)
            else:
                self._queue.remove(waiter)
                self._grant()
            raise

    async def acquire(self, exclusive: bool) -> None:
        """:meth:`enqueue` then :meth:`wait`."""
        await self.wait(self.enqueue(exclusive))

    def release(self, exclusive: bool) -> None:
        if exclusive:
            self._writer = False
        else:
            self._readers -= 1
        if self._queue:
            self._grant()

    def _grant(self) -> None:
        queue = self._queue
        while queue and not self._writer:
            head = queue[0]
            if head.exclusive:
                if self._readers:
                    return
                self._writer = True
            else:
                self._readers += 1
            queue.popleft()
            head.granted = True
            head.event.set()

    def statistics(self) -> tuple[int, bool, int]:
        """(shared holders, exclusive held, waiting) — for tests and debugging."""
        return self._readers, self._writer, len(self._queue)


class _Waiter:
    __slots__ = ("exclusive", "event", "granted")

    def __init__(self, exclusive: bool) -> None:
        self.exclusive = exclusive
        self.event = trio.Event()
        self.granted = False


class _Request:
    """One call sent to the actor: the parsed arguments, the call's cancel scope, and a one-shot
    reply slot.

    The reply is not a memory channel: it has exactly one writer and one reader, so the actor
    stores ``output`` / ``error`` and wakes the parked caller with
    :func:`trio.lowlevel.reschedule` (measured: a channel pair or a :class:`trio.Event` per call
    costs more). If the caller is cancelled while parked, :meth:`abort` cancels the call's scope
    and keeps the caller parked until the call's task has ended; the caller then raises its
    cancellation (``raise_cancel``), so no call outlives its caller.
    """

    __slots__ = ("call", "tool", "args", "kwargs", "scope", "output", "error", "finished", "task", "raise_cancel")

    def __init__(self, call: ToolInvocation, tool: Tool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.call = call
        self.tool = tool
        self.args = args
        self.kwargs = kwargs
        self.scope = trio.CancelScope()
        self.output: ResponseInputItem | None = None
        self.error: BaseException | None = None
        self.finished = False
        self.task: trio.lowlevel.Task | None = None
        self.raise_cancel: Callable[[], Any] | None = None

    def finish(self) -> None:
        """Mark the reply ready and wake the caller if it is parked (exactly once)."""
        self.finished = True
        task = self.task
        if task is not None:
            self.task = None
            trio.lowlevel.reschedule(task)

    def abort(self, raise_cancel: Callable[[], Any]) -> trio.lowlevel.Abort:
        self.raise_cancel = raise_cancel
        self.scope.cancel()
        return trio.lowlevel.Abort.FAILED


def _unwrap_group(exc: BaseException) -> BaseException:
    """A tool's nursery wraps its errors in groups: a lone leaf is the real error."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class ToolActor:
    """Runs a :class:`ToolRegistry`'s tools; implements :class:`~kernel.ToolExecutor`.

    Start it in a nursery (``await nursery.start(actor.run)``) or with :func:`open_tool_actor`.
    An actor runs once. Requests wait in a memory channel of ``buffer`` entries; when it is full,
    ``execute_tool_call`` waits for room (the actor only hands each request to a new task, so the
    buffer drains at once unless the event loop is saturated).
    """

    def __init__(self, registry: ToolRegistry, *, buffer: int = 64) -> None:
        self.registry = registry
        self._buffer = buffer
        self._send: trio.MemorySendChannel[_Request] | None = None
        self._receive: trio.MemoryReceiveChannel[_Request] | None = None
        self._nursery: trio.Nursery | None = None
        self._lock = _SharedExclusiveLock()
        self._ran = False
        self._stopped = False
        self._closing = False
        self.calls_started = 0
        self.calls_finished = 0

    def _open_channel(self) -> trio.MemorySendChannel[_Request]:
        send, self._receive = trio.open_memory_channel[_Request](self._buffer)
        self._send = send
        if self._closing:
            send.close()
        return send

    # --- lifecycle ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The actor's task: receive calls and run each in a task of its own nursery.

        Returns after :meth:`close` once the calls in flight have finished; when cancelled, the
        calls in flight are cancelled and their callers (and any whose request was still queued)
        get :class:`ToolActorClosed`. Raises :class:`RuntimeError` if run twice.
        """
        if self._ran or self._stopped:
            raise RuntimeError("ToolActor.run: an actor runs once; create a new ToolActor")
        self._ran = True
        send = self._send if self._send is not None else self._open_channel()
        receive = self._receive
        assert receive is not None
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                start = nursery.start_soon
                run_call = self._run_call
                lock = self._lock
                receive_nowait = receive.receive_nowait
                while True:
                    try:
                        request = await receive.receive()
                    except trio.EndOfChannel:
                        break
                    start(run_call, request, lock.enqueue(not request.tool.parallel))
                    # drain what else is queued without a schedule point per request: a turn
                    # sends its calls together, and every receive() is a full scheduler pass
                    while True:
                        try:
                            request = receive_nowait()
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                        start(run_call, request, lock.enqueue(not request.tool.parallel))
        finally:
            self._stopped = True
            # Requests still queued were never started: answer them now. No checkpoint between
            # this drain and closing the channels, so no request can slip in unanswered.
            while True:
                try:
                    request = receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                request.error = ToolActorClosed("the tool actor stopped before this call started")
                request.finish()
            receive.close()
            send.close()

    def start_on_demand(self, nursery: trio.Nursery) -> None:
        """Run the actor in ``nursery``, starting it at the first call that needs it rather than
        now: a session whose model never calls a tool spends no task on its tools. Does not
        checkpoint; raises :class:`RuntimeError` if the actor has already run."""
        if self._ran or self._stopped:
            raise RuntimeError("ToolActor.start_on_demand: an actor runs once; create a new ToolActor")
        self._nursery = nursery

    def close(self) -> None:
        """Stop accepting calls; :meth:`run` returns once the calls in flight finish. Calls made
        after this get :class:`ToolActorClosed`. Idempotent; does not checkpoint."""
        self._closing = True
        if self._send is not None:
            self._send.close()

    @property
    def running(self) -> bool:
        """Whether the actor accepts calls."""
        return (self._send is not None or self._nursery is not None) and not self._stopped and not self._closing

    # --- ToolExecutor ---------------------------------------------------------------------

    async def classify_response_item(self, item: ResponseItem) -> CompletedResponseItem[ToolInvocation]:
        """Function calls and custom tool calls are tool calls (an unknown name too: running it
        answers "unknown tool"); every other item is not. Local: no message to the actor; does
        not checkpoint."""
        call: ToolInvocation
        if isinstance(item, FunctionCall):
            call = ToolInvocation(item.call_id, item.name, item.arguments, False, self.registry.get(item.name))
        elif isinstance(item, CustomToolCall):
            call = ToolInvocation(item.call_id, item.name, item.input, True, self.registry.get(item.name))
        else:
            return CompletedResponseItem.NonTool(item)  # type: ignore[return-value]
        return CompletedResponseItem.ToolCall(item, call)

    async def execute_tool_call(self, call: ToolInvocation) -> ResponseInputItem:
        """Run ``call`` in the actor and return its output item. Always checkpoints.

        Raises :class:`~kernel.RespondToModel` for an unknown tool, invalid arguments, or a tool
        that raised (``"tool 'x' failed: ValueError: ..."``); a tool's own
        :class:`~kernel.RespondToModel` / :class:`~kernel.FatalToolError` pass through;
        :class:`ToolActorClosed` if the actor is not running or stops while the call waits. If
        the caller is cancelled, the call's task in the actor is cancelled and this waits
        (shielded) until it has ended before re-raising ``trio.Cancelled``.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        tool = call.tool
        if tool is None:
            await trio.lowlevel.checkpoint()
            raise RespondToModel(f"unknown tool {call.name!r}")
        if call.custom != tool.freeform:
            await trio.lowlevel.checkpoint()
            if tool.freeform:
                raise RespondToModel(
                    f"tool {call.name!r} is a freeform tool: send its input as raw text, not JSON arguments"
                )
            raise RespondToModel(f"tool {call.name!r} is a function tool: call it with JSON arguments")
        try:
            args, kwargs = tool.parse_arguments(call.payload)
        except RespondToModel:
            await trio.lowlevel.checkpoint()
            raise
        request = _Request(call, tool, args, kwargs)
        send = self._send
        if send is None and self._nursery is not None and not self._stopped:
            send = self._open_channel()  # started on demand: queue this call, then start the task
            try:
                self._nursery.start_soon(self.run)
            except RuntimeError:  # the nursery is closed: the session is ending
                self._stopped = True
                send.close()
        if send is None:
            await trio.lowlevel.checkpoint()
            raise ToolActorClosed(
                "the tool actor is not running: start it with `await nursery.start(actor.run)` "
                "or `async with open_tool_actor(registry) as tools:`"
            )
        try:
            try:
                send.send_nowait(request)
            except trio.WouldBlock:
                await send.send(request)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            await trio.lowlevel.checkpoint()
            raise ToolActorClosed("the tool actor has stopped; calls can no longer run") from None
        if request.finished:  # only if send() blocked and the call ran meanwhile
            await trio.lowlevel.checkpoint()
        else:
            request.task = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(request.abort)
        if request.raise_cancel is not None:  # we were cancelled; the call's task has ended
            request.raise_cancel()
        if request.error is not None:
            raise request.error
        assert request.output is not None
        return request.output

    # --- the call task --------------------------------------------------------------------

    async def _run_call(self, request: _Request, place: _Waiter) -> None:
        tool = request.tool
        exclusive = place.exclusive
        lock = self._lock
        self.calls_started += 1
        try:
            with request.scope:
                await lock.wait(place)
                try:
                    payload = await tool.invoke(request.args, request.kwargs)
                finally:
                    lock.release(exclusive)
                request.output = request.call.output(payload)
            if request.output is None:  # the caller cancelled us; it re-raises its own Cancelled
                request.error = RespondToModel(f"tool {tool.name!r} was cancelled")
        except trio.Cancelled:
            request.error = ToolActorClosed(f"the tool actor stopped while tool {tool.name!r} was running")
            raise
        except Exception as raw:
            exc = _unwrap_group(raw)
            if isinstance(exc, (RespondToModel, FatalToolError)):
                request.error = exc
            else:
                request.error = RespondToModel(f"tool {tool.name!r} failed: {type(exc).__name__}: {exc}")
        finally:
            if request.output is None and request.error is None:
                request.error = ToolActorClosed(f"the tool actor stopped while tool {tool.name!r} was running")
            self.calls_finished += 1
            request.finish()


@asynccontextmanager
async def open_tool_actor(registry: ToolRegistry, *, buffer: int = 64) -> AsyncIterator[ToolActor]:
    """Start a :class:`ToolActor` for ``registry`` in a nursery of its own; on exit the actor is
    cancelled (calls still in flight end, their callers get :class:`ToolActorClosed`)."""
    actor = ToolActor(registry, buffer=buffer)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        try:
            yield actor
        finally:
            nursery.cancel_scope.cancel()
