"""The registry: Python functions as tools.

:func:`tool` turns a typed function into a :class:`Tool`: its name (the function's), its
description (the docstring's first paragraph), and a JSON schema of its parameters derived from the
signature (``_schema`` lists the types it understands). :func:`freeform_tool` registers a freeform
tool (``{"type": "custom"}``, e.g. ``apply_patch``) whose function receives the raw ``input``
string. A :class:`ToolRegistry` holds tools by name; ``registry.specs()`` lists their
:data:`~kernel.ToolSpec` for the prompt.

Arguments are decoded and checked against the signature with one :mod:`msgspec` decoder per tool
(measured hot path: decoding is ~1 µs). Invalid JSON, a missing or unexpected parameter, or a value
of the wrong type becomes a :class:`~kernel.RespondToModel` naming the problem
(:meth:`Tool.parse_arguments`).
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final, overload

import attrs
import msgspec
import trio

from kernel.items import FreeformTool, FreeformToolFormat, FunctionCallOutputPayload, FunctionTool, ToolSpec
from kernel.prompt import ToolConfig
from kernel.tools import RespondToModel

from ._schema import CallFields, describe_function, parse_docstring

__all__ = ["Tool", "tool", "freeform_tool", "ToolRegistry"]

_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


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
    _fields: CallFields = attrs.field(default=(), alias="fields")

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
    summary, parameters, decoder, fields = describe_function(fn, tool_name)
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
        fields=fields,
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
    The parameters' JSON schema comes from the signature (see ``_schema``'s docstring); it has
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
        make = tool(name=name, description=description, parallel=parallel, threaded=threaded, strict=strict)
        return self._register(make, fn)

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
        make = freeform_tool(name=name, description=description, format=format, parallel=parallel, threaded=threaded)
        return self._register(make, fn)

    def _register(
        self, make: Callable[[Callable[..., Any]], Tool], fn: Callable[..., Any] | None
    ) -> Tool | Callable[[Callable[..., Any]], Tool]:
        """``make(fn)`` registered, or (no ``fn``: used as ``@registry.tool(...)``) a decorator doing that."""

        def wrap(f: Callable[..., Any]) -> Tool:
            return self.add(make(f))

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
