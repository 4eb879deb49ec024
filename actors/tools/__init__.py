"""Tools: the ``@tool`` registry, the :class:`ToolActor` that runs calls, approvals and the built-ins.

Layout: ``_registry`` (Python functions as tools), ``approvals`` (when a built-in must ask before it
acts), ``builtin/`` (the ``shell`` and ``apply_patch`` tools).
"""

from ._registry import (
    Tool as Tool,
)
from ._registry import (
    ToolActor as ToolActor,
)
from ._registry import (
    ToolActorClosed as ToolActorClosed,
)
from ._registry import (
    ToolInvocation as ToolInvocation,
)
from ._registry import (
    ToolRegistry as ToolRegistry,
)
from ._registry import (
    freeform_tool as freeform_tool,
)
from ._registry import (
    open_tool_actor as open_tool_actor,
)
from ._registry import (
    parse_docstring as parse_docstring,
)
from ._registry import (
    tool as tool,
)

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
