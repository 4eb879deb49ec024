"""Connections to MCP servers and the :class:`Tool` objects that call them."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, NoReturn, TextIO

import mcp_types as types
import msgspec
import trio
from mcp.client.session import ClientRequestContext, ClientSession, IncomingMessage
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from kernel.events import ToolProgress
from kernel.items import FunctionCallOutputPayload, FunctionTool
from kernel.tools import RespondToModel

from .._registry import Tool, ToolRegistry
from ..approvals import ApprovalRequest, Approvals
from ._config import McpServer
from ._convert import result_payload
from ._naming import mcp_tool_name, server_prefix
from ._server_side import ElicitFn, ProgressFn, SampleFn, elicitation_result, sampling_result

__all__ = ["McpTools", "McpToolRegistry", "open_mcp_tools"]

log = logging.getLogger(__name__)

_ARGS = msgspec.json.Decoder(dict[str, Any])
_BACKOFF_CAP = 30.0


def _errlog() -> TextIO:
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return open(os.devnull, "w")
    return sys.stderr


class _Connection:
    """One server: starts it (again, with backoff, after a failure), lists and calls its tools."""

    def __init__(self, server: McpServer, owner: McpTools) -> None:
        self.server = server
        self.owner = owner
        self.session: ClientSession | None = None
        self.error: str | None = None  # why it is down
        self.failures = 0
        self.retry_at = 0.0
        self.mcp_tools: list[types.Tool] = []
        self._scope: trio.CancelScope | None = None
        self._starting: trio.Event | None = None
        self._stale = False
        self._refresh_lock = trio.Lock()

    # --- secrets ---------------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        for secret in self.server.secrets():
            text = text.replace(secret, "***")
        return text

    def describe(self, exc: BaseException) -> str:
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        text = str(exc) or type(exc).__name__
        return self.scrub(f"{type(exc).__name__}: {text}")

    # --- lifecycle -------------------------------------------------------------------------

    async def ensure(self) -> ClientSession:
        """The live session, starting the server if it is down and its backoff has passed.
        Raises :class:`RespondToModel` naming the server otherwise."""
        name = self.server.name
        if self.session is not None:
            return self.session
        if self._starting is None:
            now = trio.current_time()
            if now < self.retry_at:
                raise RespondToModel(
                    f"MCP server {name!r} is unavailable ({self.error}); "
                    f"it will be restarted in {math.ceil(self.retry_at - now)}s"
                )
            self._starting = trio.Event()
            self.owner.nursery.start_soon(self._run, self._starting)
        await self._starting.wait()
        if self.session is None:
            raise RespondToModel(f"MCP server {name!r} is unavailable: {self.error}")
        return self.session

    def _failed(self, message: str) -> None:
        self.session = None
        self.error = message
        self.failures += 1
        delay = 0.0 if self.failures == 1 else min(2.0 ** (self.failures - 2), _BACKOFF_CAP)
        self.retry_at = trio.current_time() + delay
        log.warning("MCP server %r: %s", self.server.name, message)

    def stop(self) -> None:
        """Stop the server (its task tears the connection down)."""
        if self._scope is not None:
            self._scope.cancel()

    async def _run(self, ready: trio.Event) -> None:
        server = self.server
        started = False
        scope = trio.CancelScope()
        try:
            # one scope for the startup deadline and stop(): a deadline inside the exit stack
            # would be exited before the contexts it entered
            scope.deadline = trio.current_time() + server.startup_timeout
            self._scope = scope
            with scope:
                async with AsyncExitStack() as stack:
                    session = await self._connect(stack)
                    await session.initialize()
                    await self._list(session)
                    scope.deadline = math.inf
                    self.session = session
                    self.error = None
                    self.failures = 0
                    started = True
                    self.owner._changed(self)
                    ready.set()
                    # a call after a crash starts the server again while this one tears down
                    self._starting = None
                    await trio.sleep_forever()
            if not started and scope.cancelled_caught and trio.current_time() >= scope.deadline:
                self._failed(f"did not start within {server.startup_timeout:g}s")
        except Exception as exc:
            if self._scope is scope:  # (not when a newer start replaced this one)
                self._failed(("failed to start: " if not started else "stopped: ") + self.describe(exc))
        finally:
            mine = self._scope is scope
            if mine and self.session is not None and scope.cancel_called:
                self.session = None
                if self.error is None:
                    self.error = "stopped"
            if mine:
                self._scope = None
            if self._starting is ready:
                self._starting = None
            ready.set()

    async def _connect(self, stack: AsyncExitStack) -> ClientSession:
        server = self.server
        if server.transport == "stdio":
            assert server.command is not None
            params = StdioServerParameters(
                command=server.command, args=list(server.args), env=dict(server.env or {}) or None, cwd=server.cwd
            )
            read, write = await stack.enter_async_context(stdio_client(params, errlog=_errlog()))
        else:
            assert server.url is not None
            headers = dict(server.headers or {})
            if server.bearer_token_env_var:
                token = os.environ.get(server.bearer_token_env_var)
                if not token:
                    raise RuntimeError(f"environment variable {server.bearer_token_env_var} is not set")
                headers["Authorization"] = f"Bearer {token}"
            http = await stack.enter_async_context(create_mcp_http_client(headers=headers))
            read, write = await stack.enter_async_context(streamable_http_client(server.url, http_client=http))
        sampling = self._on_sampling if self.owner.sample is not None else None
        return await stack.enter_async_context(
            ClientSession(
                read,
                write,
                message_handler=self._on_message,
                elicitation_callback=self._on_elicitation,
                sampling_callback=sampling,
            )
        )

    async def _on_elicitation(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        return await elicitation_result(self.server.name, self.owner.elicit, params)

    async def _on_sampling(
        self, context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.ErrorData:
        assert self.owner.sample is not None
        return await sampling_result(self.server.name, self.owner.sample, params)

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self._stale = True

    async def _list(self, session: ClientSession) -> None:
        tools: list[types.Tool] = []
        cursor: str | None = None
        while True:
            params = types.PaginatedRequestParams(cursor=cursor) if cursor is not None else None
            page = await session.list_tools(params=params)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        self.mcp_tools = [t for t in tools if self.server.allows(t.name)]

    async def refresh_if_stale(self) -> None:
        """List the tools again if the server said they changed."""
        async with self._refresh_lock:
            session = self.session
            if not self._stale or session is None:
                return
            self._stale = False
            with trio.fail_after(self.server.startup_timeout):
                await self._list(session)
            self.owner._changed(self)

    # --- calls -----------------------------------------------------------------------------

    async def call(
        self, tool: str, arguments: dict[str, Any], model_name: str = "", on_progress: ProgressFn | None = None
    ) -> FunctionCallOutputPayload:
        """Run ``tool``; its progress notifications go to ``on_progress`` (default: the owner's),
        in increasing order, while the call runs (one that arrives after the answer is dropped)."""
        await self.refresh_if_stale()
        session = await self.ensure()
        if on_progress is None:
            on_progress = self.owner.on_progress
        if on_progress is None:
            return await self._call(session, tool, arguments, None)
        send, receive = trio.open_memory_channel[ToolProgress](math.inf)
        shown, server = model_name or tool, self.server.name

        async def report(progress: float, total: float | None, message: str | None) -> None:
            # the SDK runs this in a task of its own: queue it for this call's pump (in order)
            with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
                send.send_nowait(ToolProgress(shown, progress, total, message, server=server))

        failed: RespondToModel | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pump_progress, receive, on_progress, server)
            try:
                result = await self._call(session, tool, arguments, report)
                # the SDK started a task for each notification read before the answer: by the
                # next checkpoint they have queued their events
                await trio.lowlevel.checkpoint()
            except RespondToModel as exc:  # raised after the nursery, not inside a group
                failed = exc
            finally:
                send.close()
        if failed is not None:
            raise failed
        return result

    async def _call(
        self, session: ClientSession, tool: str, arguments: dict[str, Any], report: Any
    ) -> FunctionCallOutputPayload:
        name = self.server.name
        timeout = self.server.tool_timeout
        try:
            # leaving this scope early (the timeout, an interrupt) abandons the request: the SDK
            # then sends the server notifications/cancelled for it
            with trio.move_on_after(timeout) as scope:
                result = await session.call_tool(tool, arguments, progress_callback=report)
        except MCPError as exc:
            if exc.code == types.CONNECTION_CLOSED:
                self._lost(tool, exc)
            # a JSON-RPC error answer: the connection is fine
            raise RespondToModel(f"MCP tool {tool!r} on server {name!r} failed: {self.describe(exc)}") from None
        except Exception as exc:
            self._lost(tool, exc)
        if scope.cancelled_caught:
            raise RespondToModel(f"MCP tool {tool!r} on server {name!r} timed out after {timeout:g}s")
        try:
            await self.refresh_if_stale()
        except Exception as exc:
            log.warning("MCP server %r: refreshing the tool list failed: %s", name, self.describe(exc))
        return result_payload(result)

    def _lost(self, tool: str, exc: BaseException) -> NoReturn:
        message = self.describe(exc)
        self._failed(f"the connection failed: {message}")
        self.stop()
        raise RespondToModel(
            f"MCP server {self.server.name!r} failed while running tool {tool!r} ({message}); "
            "it will be restarted on the next call"
        ) from None


class McpTools:
    """The running servers and their tools (from :func:`open_mcp_tools`). Iterating yields the
    current :class:`~actors.tools.Tool` objects; :attr:`errors` maps a server that is down to why.
    ``on_change`` callbacks run (synchronously) when a server's tool list changed."""

    def __init__(
        self,
        servers: Sequence[McpServer],
        nursery: trio.Nursery,
        reserved: Iterable[str] = (),
        *,
        elicit: ElicitFn | None = None,
        sample: SampleFn | None = None,
        on_progress: ProgressFn | None = None,
    ) -> None:
        names = [s.name for s in servers]
        if len(set(names)) != len(names):
            raise ValueError(f"MCP server names must be unique: {names}")
        prefixes = [server_prefix(n) for n in names]
        if len(set(prefixes)) != len(prefixes):
            raise ValueError(f"MCP server names must stay distinct once sanitised: {names}")
        self.nursery = nursery
        self.elicit = elicit
        self.sample = sample
        self.on_progress = on_progress
        self.connections = [_Connection(s, self) for s in servers]
        self._reserved = frozenset(reserved)
        self._tools: dict[str, Tool] = {}
        self.on_change: list[Callable[[], None]] = []

    @property
    def errors(self) -> dict[str, str]:
        """Why each server that is down is down, by server name."""
        return {c.server.name: c.error for c in self.connections if c.session is None and c.error}

    def __iter__(self) -> Iterator[Tool]:
        return iter(list(self._tools.values()))

    def __len__(self) -> int:
        return len(self._tools)

    def connection_for(self, name: str) -> _Connection | None:
        """The server whose tool-name prefix ``name`` has."""
        for conn in self.connections:
            if name.startswith(server_prefix(conn.server.name)):
                return conn
        return None

    def _changed(self, conn: _Connection) -> None:
        kept = {n: t for n, t in self._tools.items() if getattr(t.fn, "connection", None) is not conn}
        taken = set(kept) | self._reserved
        for mcp_tool in conn.mcp_tools:
            name = mcp_tool_name(conn.server.name, mcp_tool.name, taken)
            taken.add(name)
            kept[name] = _make_tool(conn, mcp_tool, name)
        self._tools = kept
        for callback in self.on_change:
            callback()

    async def start(self) -> None:
        """Start every server concurrently; wait until each is up or has failed."""
        async with trio.open_nursery() as nursery:
            for conn in self.connections:
                nursery.start_soon(_start_quietly, conn)

    def stop(self) -> None:
        for conn in self.connections:
            conn.stop()


async def _pump_progress(receive: trio.MemoryReceiveChannel[ToolProgress], deliver: ProgressFn, server: str) -> None:
    """Deliver one call's progress events until the call closes the channel, in increasing
    ``progress`` (the SDK hands each notification to a task of its own, and Trio may run a batch
    of them in any order: what is queued together is sorted, and a late one behind a higher
    value is dropped — the protocol says progress only increases)."""
    last = -math.inf
    async with receive:
        async for event in receive:
            batch = [event]
            while True:
                try:
                    batch.append(receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            for item in sorted(batch, key=lambda e: e.progress):
                if item.progress <= last:
                    continue
                last = item.progress
                try:
                    await deliver(item)
                except Exception as exc:
                    log.warning("MCP server %r: the progress callback failed: %r", server, exc)


async def _start_quietly(conn: _Connection) -> None:
    try:
        await conn.ensure()
    except RespondToModel:
        pass


class _Caller:
    """The function behind an MCP tool: takes the raw JSON arguments. ``hints``: the tool's
    annotations (for approvals); ``approvals`` (a session's) is consulted before each call."""

    def __init__(
        self,
        connection: _Connection,
        tool: str,
        name: str = "",
        on_progress: ProgressFn | None = None,
        *,
        hints: tuple[str, ...] = (),
        approvals: Approvals | None = None,
    ) -> None:
        self.connection = connection
        self.tool = tool
        self.name = name
        self.on_progress = on_progress
        self.hints = hints
        self.approvals = approvals

    def routed(self, on_progress: ProgressFn | None, approvals: Approvals | None) -> _Caller:
        """This caller for one session: its progress callback and its approvals."""
        return _Caller(
            self.connection,
            self.tool,
            self.name,
            on_progress or self.on_progress,
            hints=self.hints,
            approvals=approvals or self.approvals,
        )

    async def __call__(self, arguments: str) -> FunctionCallOutputPayload:
        try:
            args = _ARGS.decode(arguments or "{}")
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise RespondToModel(f"invalid arguments: arguments must be a JSON object ({exc})") from None
        if self.approvals is not None:
            request = ApprovalRequest(
                kind="mcp",
                tool=self.name or self.tool,
                server=self.connection.server.name,
                arguments=arguments or "{}",
                hints=self.hints,
            )
            await self.approvals.check(request)  # raises RespondToModel when refused
        return await self.connection.call(self.tool, args, self.name, self.on_progress)


class _Unavailable:
    """The function behind a name of a server that is down: restart it (backoff permitting) and
    run the call if the tool is there now, else a model-visible error naming the server."""

    def __init__(self, registry: McpToolRegistry, connection: _Connection, name: str) -> None:
        self.registry = registry
        self.connection = connection
        self.name = name

    async def __call__(self, arguments: str) -> FunctionCallOutputPayload:
        await self.connection.ensure()
        found = self.registry.listed(self.name)
        if found is not None:
            result: FunctionCallOutputPayload = await found.fn(arguments)
            return result
        raise RespondToModel(f"MCP server {self.connection.server.name!r} has no tool named {self.name!r}")


def _parameters(schema: dict[str, Any]) -> dict[str, Any]:
    params = dict(schema)
    if params.get("type", "object") == "object":
        params["type"] = "object"
        params.setdefault("properties", {})
    return params


_HINTS = (
    ("read_only_hint", "read-only"),
    ("destructive_hint", "destructive"),
    ("idempotent_hint", "idempotent"),
    ("open_world_hint", "open-world"),
)


def _hints(annotations: types.ToolAnnotations | None) -> tuple[str, ...]:
    """The annotations the server gave (``"not destructive"`` for an explicit false)."""
    if annotations is None:
        return ()
    out = []
    for field, label in _HINTS:
        value = getattr(annotations, field, None)
        if value is not None:
            out.append(label if value else f"not {label}")
    return tuple(out)


def _make_tool(conn: _Connection, mcp_tool: types.Tool, name: str) -> Tool:
    description = mcp_tool.description or mcp_tool.title or ""
    spec = FunctionTool(name=name, description=description, parameters=_parameters(mcp_tool.input_schema), strict=False)
    hints = _hints(mcp_tool.annotations)
    return Tool(name, _Caller(conn, mcp_tool.name, name, hints=hints), spec, "read-only" in hints, True)


class McpToolRegistry(ToolRegistry):
    """A :class:`~actors.tools.ToolRegistry` of some tools plus the MCP tools of one or more
    :class:`McpTools` (a session's own servers, servers shared with other sessions), kept in sync
    with the servers' tool lists. ``on_progress`` receives the progress of the calls made
    through this registry (default: each :class:`McpTools`' own); ``approvals`` is consulted
    before each call (an :class:`~actors.tools.approvals.ApprovalRequest` of kind ``"mcp"`` with
    the tool's annotations as ``hints``; default: none, every call runs). The registry's own tools win a
    name clash. A name with an MCP server's prefix that is not (or no longer) listed resolves to
    a stand-in that restarts the server if it is down, or answers with an error naming the
    server. :meth:`detach` (when done with a shared :class:`McpTools`) stops following it.
    Raises ``ValueError`` when two sources have servers of the same name."""

    def __init__(
        self,
        tools: Iterable[Tool | Callable[..., Any]],
        mcp: McpTools | Sequence[McpTools],
        *,
        on_progress: ProgressFn | None = None,
        approvals: Approvals | None = None,
    ) -> None:
        super().__init__(tools)
        self._own = list(self._tools)
        self.sources: list[McpTools] = [mcp] if isinstance(mcp, McpTools) else list(mcp)
        names = [c.server.name for source in self.sources for c in source.connections]
        prefixes = [server_prefix(n) for n in names]
        if len(set(prefixes)) != len(prefixes):
            raise ValueError(f"MCP server names must be unique (once sanitised) across a session's servers: {names}")
        self.mcp = self.sources[0] if self.sources else None
        self.on_progress = on_progress
        self.approvals = approvals
        self.on_change: list[Callable[[], None]] = []
        self._listed: dict[str, Tool] = {}
        for source in self.sources:
            source.on_change.append(self._sync)
        self._sync()

    def detach(self) -> None:
        """Stop following the sources' tool lists (a shared :class:`McpTools` outlives this)."""
        for source in self.sources:
            with contextlib.suppress(ValueError):
                source.on_change.remove(self._sync)

    def _sync(self) -> None:
        own = {n: self._tools[n] for n in self._own if n in self._tools}
        listed: dict[str, Tool] = {}
        for source in self.sources:
            for t in source:
                if t.name in own:
                    continue
                if (self.on_progress is not None or self.approvals is not None) and isinstance(t.fn, _Caller):
                    t = Tool(t.name, t.fn.routed(self.on_progress, self.approvals), t.spec, t.parallel, True)
                listed[t.name] = t
        self._listed = listed
        self._tools = {**own, **listed}
        for callback in self.on_change:
            callback()

    def listed(self, name: str) -> Tool | None:
        """The MCP tool ``name`` if a server lists it now."""
        return self._listed.get(name)

    def get(self, name: str) -> Tool | None:
        found = super().get(name)
        if found is not None:
            return found
        for source in self.sources:
            conn = source.connection_for(name)
            if conn is not None:
                spec = FunctionTool(name=name, description="", parameters={"type": "object", "properties": {}})
                return Tool(name, _Unavailable(self, conn, name), spec, False, True)
        return None


@asynccontextmanager
async def open_mcp_tools(
    servers: Iterable[McpServer],
    *,
    reserved_names: Iterable[str] = (),
    elicit: ElicitFn | None = None,
    sample: SampleFn | None = None,
    on_progress: ProgressFn | None = None,
) -> AsyncIterator[McpTools]:
    """Start ``servers`` (concurrently, each within its ``startup_timeout``) and yield their
    tools as :class:`McpTools`. A server that fails to start does not raise: it is listed in
    :attr:`McpTools.errors` and restarted on the next call of one of its names. Leaving the block
    stops every server (a stdio server's process group is terminated). ``reserved_names`` are
    names MCP tools must not take (the session's own tools).

    The server's side of the conversation (see :mod:`actors.tools.mcp._server_side`):
    ``elicit(server, message, requested_schema)`` answers ``elicitation/create`` with an
    :class:`ElicitAnswer` (declined when not given); ``sample(server, messages, system_prompt,
    max_tokens)`` answers ``sampling/createMessage`` with ``(text, model, usage)`` (not offered
    when not given: the server gets an error; :func:`model_sampler` builds one);
    ``on_progress(event)`` receives a :class:`~kernel.events.ToolProgress` for each
    ``notifications/progress`` of a running call. A call cut short (its ``tool_timeout``, or the
    caller cancelled: an interrupted turn) sends the server ``notifications/cancelled``."""
    async with trio.open_nursery() as nursery:
        tools = McpTools(list(servers), nursery, reserved_names, elicit=elicit, sample=sample, on_progress=on_progress)
        try:
            await tools.start()
            yield tools
        finally:
            tools.stop()
            nursery.cancel_scope.cancel()
