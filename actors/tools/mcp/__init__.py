"""MCP servers as tool sources.

::

    servers = [
        McpServer.stdio("files", "npx", ["-y", "@modelcontextprotocol/server-filesystem", "."]),
        McpServer.http("docs", "https://example.com/mcp", bearer_token_env_var="DOCS_TOKEN"),
    ]
    async with open_session(model=..., mcp_servers=servers) as session:
        ...

Each server's tools appear to the model as ``mcp__<server>__<tool>`` (sanitised to
``^[a-zA-Z0-9_-]{1,64}$``, cut with a short hash when too long, made unique), with the tool's
description and ``inputSchema``. Calls run through the :class:`~actors.tools.ToolActor` like any
tool (``readOnlyHint`` makes one parallel-safe), bounded by the server's ``tool_timeout``.
Results: text joined, ``structuredContent`` as JSON, images as ``input_image`` content items,
resources described; ``isError`` is a model-visible error. A server that fails to start, crashes
or hangs gives model-visible errors naming it and is restarted (with backoff) on the next call;
it never takes the session down. ``notifications/tools/list_changed`` makes the tool list be
fetched again before the next request to that server (and right after the call it arrived in).

Not yet: TOML configuration / CLI ``--mcp-config``, elicitation, sampling, progress events,
``notifications/cancelled`` on interrupt beyond what the SDK sends.
"""

from ._client import McpToolRegistry as McpToolRegistry, McpTools as McpTools, open_mcp_tools as open_mcp_tools
from ._config import McpServer as McpServer
from ._convert import result_payload as result_payload
from ._naming import mcp_tool_name as mcp_tool_name, sanitize as sanitize

__all__ = ["McpServer", "McpTools", "McpToolRegistry", "open_mcp_tools", "mcp_tool_name", "sanitize", "result_payload"]
