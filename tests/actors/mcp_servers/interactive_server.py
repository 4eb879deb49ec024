"""An MCP server (stdio) for the server-side tests: ``ask`` (elicits a name), ``summarise``
(requests sampling), ``steps`` (reports progress), ``nap`` (sleeps; on cancellation writes
``cancelled`` to the file named by ``marker``)."""

from __future__ import annotations

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import SamplingMessage, TextContent
from pydantic import BaseModel

server = MCPServer("interactive")


class Person(BaseModel):
    name: str
    age: int


@server.tool()
async def ask(ctx: Context) -> str:
    """Ask the user who they are."""
    result = await ctx.elicit("Who are you?", schema=Person)
    if result.action == "accept":
        return f"hello {result.data.name}, {result.data.age}"
    return f"no answer: {result.action}"


@server.tool()
async def summarise(text: str, ctx: Context) -> str:
    """Ask the client's model to summarise the text."""
    try:
        result = await ctx.session.create_message(
            [SamplingMessage(role="user", content=TextContent(type="text", text=f"Summarise: {text}"))],
            max_tokens=50,
            system_prompt="Be brief.",
        )
    except Exception as exc:
        return f"sampling failed: {exc}"
    content = result.content
    said = content.text if isinstance(content, TextContent) else str(content)
    return f"model {result.model} said: {said}"


@server.tool()
async def steps(n: int, ctx: Context) -> str:
    """Report progress n times."""
    for i in range(1, n + 1):
        await ctx.report_progress(i, n, f"step {i}")
    return f"did {n} steps"


@server.tool()
async def nap(seconds: float, marker: str) -> str:
    """Sleep; write ``cancelled`` to ``marker`` if cancelled."""
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        with open(marker, "w") as f:
            f.write("cancelled")
        raise
    with open(marker, "w") as f:
        f.write("finished")
    return "rested"


if __name__ == "__main__":
    server.run()
