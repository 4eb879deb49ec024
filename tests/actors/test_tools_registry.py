"""The tool registry: JSON schemas from signatures and docstrings, registration errors, argument checking."""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

import attrs
import msgspec
import pytest
from hypothesis import given, strategies as st

from actors.tools import (
    Tool,
    ToolRegistry,
    freeform_tool,
    tool,
)
from kernel import (
    FreeformTool,
    FreeformToolFormat,
    FunctionTool,
    RespondToModel,
)


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Opaque:
    """Not JSON: a tool cannot take it."""


@attrs.frozen
class Span:
    start: int
    end: int


# =============================================================================================
# Schemas
# =============================================================================================


def test_schema_of_scalars_defaults_and_google_docstring() -> None:
    @tool
    def read_file(path: str, limit: int = 200, ratio: float = 0.5, follow: bool = False) -> str:
        """Read a text file
        from the workspace.

        Lines are numbered.

        Args:
            path: The file to read,
                relative to the workspace root.
            limit (int): At most this many lines.
            follow: Follow symlinks.

        Returns:
            The text.
        """
        return path

    assert isinstance(read_file, Tool) and read_file.name == "read_file"
    spec = read_file.spec
    assert isinstance(spec, FunctionTool)
    assert spec.description == "Read a text file from the workspace."
    assert spec.parameters == {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "The file to read, relative to the workspace root."},
            "limit": {"type": "integer", "description": "At most this many lines.", "default": 200},
            "ratio": {"type": "number", "default": 0.5},
            "follow": {"type": "boolean", "description": "Follow symlinks.", "default": False},
        },
        "required": ["path"],
        "additionalProperties": False,
    }
    assert read_file("x") == "x"  # the decorated function stays callable
    assert not read_file.parallel and not read_file.freeform


def test_schema_of_containers_optionals_literals_and_enums_with_sphinx_docstring() -> None:
    @tool(name="search", description="Search the code.", parallel=True)
    async def _search(
        query: str,
        paths: list[str],
        mode: Literal["regex", "literal"] = "literal",
        color: Color | None = None,
        level: Level = Level.LOW,
        limits: dict[str, int] | None = None,
        maybe: int | None = None,
        anything: Any = None,
        pair: tuple[int, str] = (1, "a"),
    ) -> list[str]:
        """Ignored: the description is given.

        :param query: What to look for.
        :param list[str] paths: Where to look,
            one path per entry.
        """
        return []

    params = _search.spec.parameters  # type: ignore[union-attr]
    props = params["properties"]
    assert _search.name == "search" and _search.parallel and _search.is_async
    assert _search.spec.description == "Search the code."
    assert props["query"] == {"type": "string", "description": "What to look for."}
    assert props["paths"] == {
        "type": "array",
        "items": {"type": "string"},
        "description": "Where to look, one path per entry.",
    }
    assert props["mode"] == {"type": "string", "enum": ["regex", "literal"], "default": "literal"}
    assert props["color"] == {"type": ["string", "null"], "enum": ["red", "green", None], "default": None}
    assert props["level"] == {"type": "integer", "enum": [1, 2], "default": 1}
    assert props["limits"] == {"type": ["object", "null"], "additionalProperties": {"type": "integer"}, "default": None}
    assert props["maybe"] == {"type": ["integer", "null"], "default": None}
    assert props["anything"] == {"default": None}
    assert props["pair"]["prefixItems"] == [{"type": "integer"}, {"type": "string"}]
    assert params["required"] == ["query", "paths"]
    assert params["additionalProperties"] is False


def test_schema_of_annotated_numpy_docstring_nested_types_and_no_params() -> None:
    @tool
    def shape(
        width: Annotated[int, msgspec.Meta(ge=1, le=100, description="Width in cells.")],
        label: Annotated[str, "A label."],
        span: Span,
        ids: set[int] = frozenset(),  # type: ignore[assignment]
    ) -> None:
        """Draw a shape.

        Parameters
        ----------
        width : int
            Ignored: Annotated wins.
        span : Span
            Where it goes.
        """

    assert shape.parameters is not None
    props = shape.parameters["properties"]
    assert props["width"] == {"type": "integer", "minimum": 1, "maximum": 100, "description": "Width in cells."}
    assert props["label"] == {"type": "string", "description": "A label."}
    assert props["span"] == {"description": "Where it goes.", "$ref": "#/$defs/Span"}
    assert shape.parameters["$defs"]["Span"]["properties"] == {"start": {"type": "integer"}, "end": {"type": "integer"}}
    assert props["ids"] == {"type": "array", "items": {"type": "integer"}, "uniqueItems": True, "default": []}
    assert shape.parse_arguments('{"width": 3, "label": "x", "span": {"start": 1, "end": 2}}')[1]["span"] == Span(1, 2)

    @tool
    def ping() -> str:
        return "pong"

    assert ping.parameters == {"type": "object", "properties": {}, "additionalProperties": False}
    assert ping.spec.description == ""


def test_registration_errors_name_the_problem() -> None:
    with pytest.raises(TypeError, match=r"\*args/\*\*kwargs"):
        tool(lambda *args: None, name="varargs")

    def takes_opaque(x: Opaque) -> None: ...

    with pytest.raises(TypeError, match="cannot describe type .*Opaque"):
        tool(takes_opaque)

    def takes_local(x: LocalType) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(TypeError, match="cannot resolve the annotations"):
        tool(takes_local)
    with pytest.raises(ValueError, match="tool name '<lambda>'"):
        tool(lambda: None)
    with pytest.raises(TypeError, match="raw input text"):
        freeform_tool(lambda: None, name="patch")
    registry = ToolRegistry()
    registry.tool(name="dup")(lambda: "a")
    with pytest.raises(ValueError, match="already registered"):
        registry.tool(name="dup")(lambda: "b")


def test_registry_specs_and_freeform_tools() -> None:
    registry = ToolRegistry()

    @registry.tool(parallel=True)
    def first(x: int) -> int:
        """First."""
        return x

    grammar = FreeformToolFormat(definition='start: "*** Begin Patch" /(.|\\n)*/')

    @registry.freeform(name="apply_patch", format=grammar)
    def apply(patch: str) -> str:
        """Apply a patch."""
        return patch

    def later(y: str) -> str:
        return y

    registry.add(later)
    assert registry.names() == ["first", "apply_patch", "later"]
    assert "apply_patch" in registry and len(registry) == 3 and registry["later"].name == "later"
    specs = registry.specs()
    assert [type(s) for s in specs] == [FunctionTool, FreeformTool, FunctionTool]
    assert specs[1] == FreeformTool(name="apply_patch", description="Apply a patch.", format=grammar)
    assert apply.parameters is None and apply.freeform
    config = registry.tool_config()
    assert list(config.tools) == specs and config.parallel_tool_calls


def test_argument_errors_are_model_visible_and_name_the_problem() -> None:
    @tool
    def edit(path: str, line: int, text: str = "") -> str:
        return path

    cases = {
        "{not json": "arguments must be a JSON object",
        "[1, 2]": "arguments must be a JSON object",
        '{"line": 3}': "missing required parameter 'path'",
        '{"path": "a", "line": 3, "colour": 1}': "unexpected parameter 'colour'",
        '{"path": "a", "line": "3"}': "parameter 'line': Expected `int`, got `str`",
        '{"path": "a", "line": 3.5}': "parameter 'line': Expected `int`, got `float`",
    }
    for arguments, expected in cases.items():
        with pytest.raises(RespondToModel) as info:
            edit.parse_arguments(arguments)
        assert str(info.value).startswith("invalid arguments for tool 'edit': ")
        assert expected in str(info.value), (arguments, str(info.value))
    with pytest.raises(RespondToModel, match="missing required parameter 'path'"):
        edit.parse_arguments("")  # empty arguments mean {}
    assert edit.parse_arguments('{"path": "a", "line": 1}') == ((), {"path": "a", "line": 1})


def test_positional_only_parameters_keep_their_order() -> None:
    @tool
    def f(a: int, b: int = 2, c: int = 3, /, *, d: int = 4) -> list[int]:
        return [a, b, c, d]

    args, kwargs = f.parse_arguments('{"a": 1, "c": 30}')
    assert f(*args, **kwargs) == [1, 2, 30, 4]


@tool
def _typed(
    name: str,
    count: int,
    tags: list[str] = [],  # noqa: B006 - never mutated; shows a list default in the schema
    ratio: float = 1.0,
    mode: Literal["a", "b"] = "a",
    extra: dict[str, bool] | None = None,
) -> None: ...


@given(
    st.fixed_dictionaries(
        {"name": st.text(max_size=8), "count": st.integers(-(2**40), 2**40)},
        optional={
            "tags": st.lists(st.text(max_size=4), max_size=3),
            "ratio": st.floats(allow_nan=False, allow_infinity=False),
            "mode": st.sampled_from(["a", "b"]),
            "extra": st.none() | st.dictionaries(st.text(max_size=3), st.booleans(), max_size=2),
        },
    )
)
def test_valid_arguments_round_trip_through_the_decoder(arguments: dict[str, Any]) -> None:
    _, kwargs = _typed.parse_arguments(msgspec.json.encode(arguments).decode())
    assert kwargs == arguments
