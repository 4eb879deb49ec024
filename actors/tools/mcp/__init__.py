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

The server's side: ``open_mcp_tools(..., elicit=, sample=, on_progress=)`` answers
``elicitation/create`` (declined without ``elicit``), ``sampling/createMessage`` (an error without
``sample``; :func:`model_sampler` serves it with a model behind an approval predicate) and turns
``notifications/progress`` into :class:`~kernel.events.ToolProgress` events. A call cut short (its
timeout, an interrupted turn) sends the server ``notifications/cancelled`` (the SDK's courtesy
cancel on an abandoned request).

Sharing: one :class:`McpTools` (from :func:`open_mcp_tools`) can serve many sessions at once
(``open_session(mcp_servers=[shared])``; :class:`McpToolRegistry` gives each its own view, routing
progress to it); ``McpServer(shared=False)`` marks a server that keeps per-session state, which a
batch then starts per task (:mod:`actors.batch._mcp`). Configuration files: :mod:`actors.cli._config`.

Not yet: URL-mode elicitation (declined); sampling with tools.
"""

from ._client import McpToolRegistry as McpToolRegistry, McpTools as McpTools, open_mcp_tools as open_mcp_tools
from ._config import McpServer as McpServer
from ._convert import result_payload as result_payload
from ._naming import mcp_tool_name as mcp_tool_name, sanitize as sanitize
from ._server_side import (
    ApproveFn as ApproveFn,
    ElicitAnswer as ElicitAnswer,
    ElicitFn as ElicitFn,
    ProgressFn as ProgressFn,
    SampleFn as SampleFn,
    SamplingDeclined as SamplingDeclined,
    model_sampler as model_sampler,
    open_model_sampler as open_model_sampler,
)

__all__ = [
    "McpServer",
    "McpTools",
    "McpToolRegistry",
    "open_mcp_tools",
    "mcp_tool_name",
    "sanitize",
    "result_payload",
    "ElicitAnswer",
    "ElicitFn",
    "SampleFn",
    "ProgressFn",
    "ApproveFn",
    "SamplingDeclined",
    "model_sampler",
    "open_model_sampler",
]
