"""Server configuration: :class:`McpServer`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Literal

import attrs

__all__ = ["McpServer"]


def _frozen_names(names: Iterable[str] | None) -> frozenset[str] | None:
    if names is None:
        return None
    if isinstance(names, str):
        raise TypeError("enabled_tools / disabled_tools take an iterable of tool names, not one string")
    return frozenset(names)


@attrs.frozen(repr=False)
class McpServer:
    """One MCP server the session takes tools from. Build it with :meth:`stdio` or :meth:`http`.

    ``name`` prefixes its tools (``mcp__<name>__<tool>``). ``startup_timeout`` bounds starting
    the server, ``initialize`` and listing its tools (seconds); ``tool_timeout`` bounds each
    ``tools/call``. ``enabled_tools`` (when given) keeps only those MCP tool names;
    ``disabled_tools`` drops names. ``shared``: whether one running server may serve several
    sessions at once (a batch then starts it once per worker, not once per task); ``False`` for a
    server that keeps per-session state. The repr never shows environment values, headers or
    tokens.
    """

    name: str
    transport: Literal["stdio", "http"]
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    url: str | None = None
    headers: Mapping[str, str] | None = None
    bearer_token_env_var: str | None = None
    startup_timeout: float = 10.0
    tool_timeout: float = 60.0
    enabled_tools: frozenset[str] | None = None
    disabled_tools: frozenset[str] | None = None
    shared: bool = True

    def __attrs_post_init__(self) -> None:
        if not self.name:
            raise ValueError("McpServer: name must not be empty")
        if self.startup_timeout <= 0 or self.tool_timeout <= 0:
            raise ValueError(f"McpServer {self.name!r}: startup_timeout and tool_timeout must be positive")

    @classmethod
    def stdio(
        cls,
        name: str,
        command: str,
        args: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        startup_timeout: float = 10,
        tool_timeout: float = 60,
        enabled_tools: Iterable[str] | None = None,
        disabled_tools: Iterable[str] | None = None,
        shared: bool = True,
    ) -> McpServer:
        """A server run as a subprocess speaking MCP over its stdin/stdout.

        ``env`` is added to a minimal default environment (the SDK's: ``HOME``, ``PATH``, ...);
        ``cwd`` is its working directory. The process runs in its own process group, started
        with the session and stopped (its group terminated) when the session ends.
        """
        if isinstance(args, str):
            raise TypeError("McpServer.stdio: args is an iterable of arguments, not one string")
        return cls(
            name,
            "stdio",
            command=command,
            args=tuple(args),
            env=dict(env) if env is not None else None,
            cwd=os.fspath(cwd) if cwd is not None else None,
            startup_timeout=float(startup_timeout),
            tool_timeout=float(tool_timeout),
            enabled_tools=_frozen_names(enabled_tools),
            disabled_tools=_frozen_names(disabled_tools),
            shared=bool(shared),
        )

    @classmethod
    def http(
        cls,
        name: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        bearer_token_env_var: str | None = None,
        startup_timeout: float = 10,
        tool_timeout: float = 60,
        enabled_tools: Iterable[str] | None = None,
        disabled_tools: Iterable[str] | None = None,
        shared: bool = True,
    ) -> McpServer:
        """A server reached over streamable HTTP at ``url``.

        ``headers`` go with every request; ``bearer_token_env_var`` names an environment
        variable whose value is sent as ``Authorization: Bearer <value>`` (read when the server
        is started; it is never logged or shown).
        """
        return cls(
            name,
            "http",
            url=url,
            headers=dict(headers) if headers is not None else None,
            bearer_token_env_var=bearer_token_env_var,
            startup_timeout=float(startup_timeout),
            tool_timeout=float(tool_timeout),
            enabled_tools=_frozen_names(enabled_tools),
            disabled_tools=_frozen_names(disabled_tools),
            shared=bool(shared),
        )

    def allows(self, tool_name: str) -> bool:
        """Whether the filters keep the MCP tool ``tool_name``."""
        if self.enabled_tools is not None and tool_name not in self.enabled_tools:
            return False
        return not (self.disabled_tools is not None and tool_name in self.disabled_tools)

    def secrets(self) -> list[str]:
        """The values never to show: environment values, header values and the bearer token."""
        values = [*(self.env or {}).values(), *(self.headers or {}).values()]
        if self.bearer_token_env_var:
            token = os.environ.get(self.bearer_token_env_var)
            if token:
                values.append(token)
        return [v for v in values if v and len(v) >= 3]

    def __repr__(self) -> str:
        where = (
            f"command={self.command!r}, args={list(self.args)!r}" if self.transport == "stdio" else f"url={self.url!r}"
        )
        return f"McpServer.{self.transport}({self.name!r}, {where})"
