"""MCP servers in a batch: each ``shared`` server runs once per worker (the batch process, or a
Ray worker) and serves every session that names it; a server with ``shared=False`` is started by
each task's session for itself. A task takes every configured server unless its ``mcp_servers``
key names some (an unknown name fails that task, naming the known ones).

In a batch nobody answers a server's questions or approves its sampling requests: elicitation is
declined and sampling refused (both are answered to the server as the protocol says; the tool
call goes on).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import attrs
import trio

if TYPE_CHECKING:
    from actors.tools.mcp import McpServer, McpTools

__all__ = ["BatchMcp", "UnknownMcpServer", "open_batch_mcp"]


class UnknownMcpServer(Exception):
    """A task names an MCP server the batch was not given."""


@attrs.frozen
class BatchMcp:
    """The batch's MCP servers: the running shared ones and the configurations of the others."""

    shared: dict[str, McpTools] = attrs.field(factory=dict)
    own: dict[str, McpServer] = attrs.field(factory=dict)

    @property
    def names(self) -> list[str]:
        return [*self.shared, *self.own]

    def for_task(self, names: Sequence[str] | None) -> list[McpServer | McpTools]:
        """What a task's session gets: every server (``names`` is ``None``) or those named.
        Raises :class:`UnknownMcpServer` for a name the batch does not have."""
        wanted = self.names if names is None else list(names)
        out: list[McpServer | McpTools] = []
        for name in wanted:
            if name in self.shared:
                out.append(self.shared[name])
            elif name in self.own:
                out.append(self.own[name])
            else:
                known = ", ".join(repr(n) for n in self.names) or "none"
                raise UnknownMcpServer(
                    f"the task names MCP server {name!r}, which the batch does not have (it has {known})"
                )
        return out


@asynccontextmanager
async def open_batch_mcp(servers: Sequence[McpServer]) -> AsyncIterator[BatchMcp]:
    """Start the ``shared`` servers of ``servers`` (concurrently; one that fails to start is
    restarted on its next call, as in a session) and yield the batch's :class:`BatchMcp`; stop
    them when the block ends. Raises ``ValueError`` for duplicate server names."""
    if not servers:
        yield BatchMcp()
        return
    from actors.tools.mcp import McpTools
    from actors.tools.mcp._naming import server_prefix

    names = [s.name for s in servers]
    if len({server_prefix(n) for n in names}) != len(names):
        raise ValueError(f"MCP server names must be unique (once sanitised): {names}")

    async with trio.open_nursery() as nursery:
        shared = {s.name: McpTools([s], nursery) for s in servers if s.shared}
        try:
            async with trio.open_nursery() as starting:
                for tools in shared.values():
                    starting.start_soon(tools.start)
            yield BatchMcp(shared, {s.name: s for s in servers if not s.shared})
        finally:
            for tools in shared.values():
                tools.stop()
            nursery.cancel_scope.cancel()
