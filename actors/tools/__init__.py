"""Tools: the ``@tool`` registry, the :class:`ToolActor` that runs calls, approvals and the built-ins.

Layout: ``_registry`` (Python functions as tools: :func:`tool`, :func:`freeform_tool`,
:class:`ToolRegistry`), ``_schema`` (a function's signature and docstring -> the JSON schema the
model sees), ``_actor`` (:class:`ToolActor`, the task that runs the calls), ``approvals`` (when a
built-in must ask before it acts), ``builtin/`` (the ``shell`` and ``apply_patch`` tools).

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

from ._actor import (
    ToolActor as ToolActor,
    ToolActorClosed as ToolActorClosed,
    ToolInvocation as ToolInvocation,
    open_tool_actor as open_tool_actor,
)
from ._registry import (
    Tool as Tool,
    ToolRegistry as ToolRegistry,
    freeform_tool as freeform_tool,
    tool as tool,
)
from ._schema import (
    parse_docstring as parse_docstring,
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
