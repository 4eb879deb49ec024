"""A small MCP server for the tests: ``python demo_server.py`` (stdio) or
``python demo_server.py http PORT`` (streamable HTTP on 127.0.0.1:PORT).

Tools: ``echo`` (text), ``weather`` (structured content), ``pixel`` (an image), ``fail``
(``isError``), ``slow`` (sleeps), ``crash`` (kills the server process mid-call), ``grow`` (adds a
tool, ``extra``, and sends ``notifications/tools/list_changed``), ``pid`` (the server's PID),
``resources`` (a resource link and an embedded resource), ``peek`` (read-only).
"""

from __future__ import annotations

import base64
import os
import sys

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image
from mcp_types import EmbeddedResource, ResourceLink, TextResourceContents, ToolAnnotations
from pydantic import BaseModel

# a 1x1 transparent PNG
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)

server = MCPServer("demo")


class Weather(BaseModel):
    city: str
    celsius: float


@server.tool()
def echo(text: str) -> str:
    """Echo the text back."""
    return f"echo: {text}"


@server.tool()
def weather(city: str) -> Weather:
    """The weather in a city."""
    return Weather(city=city, celsius=21.5)


@server.tool()
def pixel() -> Image:
    """A one-pixel image."""
    return Image(data=PNG, format="png")


@server.tool()
def fail(reason: str) -> str:
    """Always fails."""
    raise ToolError(f"failed on purpose: {reason}")


@server.tool()
async def slow(seconds: float) -> str:
    """Sleep, then answer."""
    await anyio.sleep(seconds)
    return f"slept {seconds}"


@server.tool()
def crash() -> str:
    """Kill the server process mid-call."""
    os._exit(3)


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def peek() -> str:
    """A read-only tool."""
    return "peeked"


@server.tool()
def resources() -> list[ResourceLink | EmbeddedResource]:
    """A resource link and an embedded resource."""
    return [
        ResourceLink(type="resource_link", uri="file:///tmp/a.txt", name="a.txt", mime_type="text/plain"),
        EmbeddedResource(
            type="resource",
            resource=TextResourceContents(uri="file:///tmp/b.txt", mime_type="text/plain", text="bee"),
        ),
    ]


def extra(n: int) -> str:
    """A tool added at run time."""
    return f"extra {n}"


@server.tool()
async def grow(ctx: Context) -> str:
    """Add the tool ``extra`` and announce the change."""
    server.add_tool(extra)
    await ctx.session.send_tool_list_changed()
    return "grown"


if __name__ == "__main__":
    if os.environ.get("DEMO_PID_FILE"):
        with open(os.environ["DEMO_PID_FILE"], "w") as f:
            f.write(str(os.getpid()))
    if os.environ.get("DEMO_HANG_AT_START"):
        import time

        time.sleep(60)
    if len(sys.argv) > 2 and sys.argv[1] == "http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
