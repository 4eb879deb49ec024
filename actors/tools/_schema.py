"""Signature and docstring -> JSON schema: what :func:`~actors.tools.tool` tells the model about a function.

:func:`describe_function` derives a function tool's description (the docstring's first paragraph),
the JSON schema of its parameters and the :mod:`msgspec` decoder that checks a call's arguments.
The schema comes from the signature: ``str``, ``int``, ``float``, ``bool``, ``list[X]``, ``tuple``,
``dict[str, X]``, ``X | None``, ``Literal[...]``, enums, ``Any``; ``Annotated`` with a string or
:class:`msgspec.Meta` adds a description and constraints; other types msgspec knows — dataclasses,
``TypedDict``, ``msgspec.Struct`` — go under ``$defs``. Parameters with a default are not required;
per-parameter descriptions come from the docstring's Google (``Args:``), Sphinx (``:param x:``) or
NumPy (``Parameters`` / ``----------``) section (:func:`parse_docstring`).

This runs once per tool, when it is made; the calls only use the decoder it built.
"""

from __future__ import annotations

import collections.abc
import enum
import inspect
import re
import types
import typing
from collections.abc import Callable
from typing import Any, Final, Literal, Union

import msgspec

__all__ = ["parse_docstring", "describe_function"]

CallFields = tuple[tuple[str, bool, Any], ...]
"""Per parameter, in order: (name, positional-only, default) — how decoded arguments are passed."""


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
            i = _parse_entries(lines, i + 1, _indent(line), params, numpy=False)
            continue
        if s.lower() == "parameters" and _underlined(lines, i):
            i = _parse_entries(lines, i + 2, _indent(line), params, numpy=True)
            continue
        m = _SPHINX_PARAM_RE.match(s)
        if m:
            i = _parse_continuation(lines, i + 1, _indent(line), params, m.group(1), m.group(2))
            continue
        i += 1
    return " ".join(summary), params


def _underlined(lines: list[str], i: int) -> bool:
    """Whether ``lines[i]`` is a NumPy section header (the next line is all dashes)."""
    return i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}


def _parse_entries(lines: list[str], start: int, header_indent: int, params: dict[str, str], *, numpy: bool) -> int:
    """Read the entries of a Google (``name (type): text``) or NumPy (``name : type``) parameter
    section from ``lines[start]`` into ``params``, each with its deeper-indented continuation lines;
    the index where the section ends. An entry is a line at the first entry's indentation (NumPy:
    the header's); the section ends at a line indented no deeper than its header (NumPy: at the next
    section header)."""
    entry_re = _NUMPY_ENTRY_RE if numpy else _GOOGLE_ENTRY_RE
    entry_indent: int | None = header_indent if numpy else None
    current: str | None = None
    i = start
    while i < len(lines):
        line = lines[i]
        s = line.strip()
        if not s:
            i += 1
            continue
        ind = _indent(line)
        if ind <= header_indent and (not numpy or _underlined(lines, i)):
            break  # NumPy: the next section
        if entry_indent is None:
            entry_indent = ind
        if ind <= entry_indent:
            m = entry_re.match(s)
            current = m.group(1) if m else None
            if m is not None:
                params[m.group(1)] = "" if numpy else (m.group(2) or "").strip()
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
# Signatures
# =============================================================================================


def describe_function(
    fn: Callable[..., Any], tool_name: str
) -> tuple[str, dict[str, Any], msgspec.json.Decoder[Any], CallFields]:
    """``(summary, parameters, decoder, fields)`` of the function tool ``tool_name`` made from ``fn``:
    the docstring's first paragraph, the JSON schema of the arguments (``additionalProperties:
    false``), a decoder of the arguments JSON into a struct of the parameters (those with a default
    decode to :data:`msgspec.UNSET` when absent) and the :data:`CallFields` that pass them to ``fn``.

    Raises :class:`TypeError` for ``*args``/``**kwargs`` parameters, annotations that do not resolve
    and types that have no JSON form.
    """
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
    return summary, parameters, decoder, tuple(fields)
