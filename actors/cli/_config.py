"""The configuration file: ``$XDG_CONFIG_HOME/agent-kernel/config.toml`` (``~/.config/...`` when
unset), or the file ``--mcp-config`` / ``--config`` names. Codex's shape::

    model = "gpt-5"                      # model settings, each overridden by its flag
    base_url = "https://api.openai.com/v1"
    wire = "responses"                   # or "chat"
    api_key_env = "OPENAI_API_KEY"
    approval = "on-request"              # never, on-request, untrusted
    profile = "work"                     # the profile used without --profile

    [profiles.work]                      # --profile work
    model = "gpt-5-mini"

    [mcp_servers.files]                  # stdio: command, args, env, cwd
    command = "npx"
    args = ["-y", "@modelcontextprotocol/server-filesystem", "."]
    env = { TOKEN = "..." }

    [mcp_servers.docs]                   # streamable HTTP: url, bearer_token_env_var, http_headers
    url = "https://example.com/mcp"
    bearer_token_env_var = "DOCS_TOKEN"
    startup_timeout_sec = 10             # both kinds: startup_timeout_sec, tool_timeout_sec,
    tool_timeout_sec = 60                # enabled_tools, disabled_tools, enabled (false: skipped),
    shared = true                        # shared (false: a batch starts one per task, not per worker)

Precedence: flag, then the selected profile, then the file's top level, then the default. Bad
configuration is a :class:`ConfigError` (exit status 2) naming the file, the server and the key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ._run import CliError

if TYPE_CHECKING:
    from actors.tools.mcp import McpServer

__all__ = [
    "ConfigError",
    "LoadedConfig",
    "ServerSpec",
    "Setting",
    "default_config_path",
    "load_config",
    "resolve_config",
    "mcp_servers",
    "describe",
]

MCP_EXTRA_HINT = "pip install 'trio-agent-kernel[mcp]'"

# setting -> (argparse dest, default, allowed values or None)
SETTINGS: dict[str, tuple[Any, tuple[str, ...] | None]] = {
    "model": (None, None),
    "base_url": (None, None),
    "wire": ("responses", ("responses", "chat")),
    "api_key_env": ("OPENAI_API_KEY", None),
    "approval": ("on-request", ("never", "on-request", "untrusted")),
}
_TOP_KEYS = {*SETTINGS, "profile", "profiles", "mcp_servers"}
_COMMON_SERVER_KEYS = {
    "startup_timeout_sec",
    "tool_timeout_sec",
    "enabled_tools",
    "disabled_tools",
    "enabled",
    "shared",
}
_STDIO_KEYS = {"command", "args", "env", "cwd"}
_HTTP_KEYS = {"url", "bearer_token_env_var", "http_headers"}
_SERVER_KEYS = _COMMON_SERVER_KEYS | _STDIO_KEYS | _HTTP_KEYS


class ConfigError(CliError):
    """Bad configuration: one line naming the file (and the server and key), exit status 2."""

    def __init__(self, path: Path | str, where: str | None, message: str) -> None:
        super().__init__(f"{path}: {where}: {message}" if where else f"{path}: {message}", status=2)


@attrs.frozen(kw_only=True)
class ServerSpec:
    """One ``[mcp_servers.NAME]`` table, checked."""

    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] | None = None
    cwd: str | None = None
    url: str | None = None
    bearer_token_env_var: str | None = None
    http_headers: dict[str, str] | None = None
    startup_timeout_sec: float = 10.0
    tool_timeout_sec: float = 60.0
    enabled_tools: tuple[str, ...] | None = None
    disabled_tools: tuple[str, ...] | None = None
    shared: bool = True

    @property
    def transport(self) -> str:
        return "stdio" if self.command is not None else "http"

    def secrets(self) -> list[str]:
        return [v for v in [*(self.env or {}).values(), *(self.http_headers or {}).values()] if v]

    def masked(self) -> dict[str, Any]:
        """The spec as shown by ``agent-kernel config``: env and header values as ``***``."""
        out: dict[str, Any] = {"transport": self.transport}
        if self.command is not None:
            out.update(command=self.command, args=list(self.args))
            if self.env is not None:
                out["env"] = {k: "***" for k in self.env}
            if self.cwd is not None:
                out["cwd"] = self.cwd
        else:
            out["url"] = self.url
            if self.bearer_token_env_var is not None:
                out["bearer_token_env_var"] = self.bearer_token_env_var
            if self.http_headers is not None:
                out["http_headers"] = {k: "***" for k in self.http_headers}
        out.update(startup_timeout_sec=self.startup_timeout_sec, tool_timeout_sec=self.tool_timeout_sec)
        if self.enabled_tools is not None:
            out["enabled_tools"] = list(self.enabled_tools)
        if self.disabled_tools is not None:
            out["disabled_tools"] = list(self.disabled_tools)
        if not self.shared:
            out["shared"] = False
        return out


@attrs.frozen(kw_only=True)
class LoadedConfig:
    """A configuration file read and checked (empty when the default file does not exist)."""

    path: Path
    exists: bool
    settings: dict[str, str] = attrs.field(factory=dict)
    profile: str | None = None
    profiles: dict[str, dict[str, str]] = attrs.field(factory=dict)
    servers: list[ServerSpec] = attrs.field(factory=list)


@attrs.frozen
class Setting:
    """A value in force and where it came from: ``flag``, ``profile``, ``file`` or ``default``."""

    value: Any
    source: str


def default_config_path(environ: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/agent-kernel/config.toml`` (an absolute ``XDG_CONFIG_HOME`` only), else
    ``~/.config/agent-kernel/config.toml``."""
    xdg = environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
    return base / "agent-kernel" / "config.toml"


# ---------------------------------------------------------------------------------------------
# Reading and checking
# ---------------------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


class _Checker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str | None, message: str) -> ConfigError:
        return ConfigError(self.path, where, message)

    def string(self, value: Any, where: str, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str):
            raise self.fail(where, f"expected a string, got {_kind(value)}")
        if choices is not None and value not in choices:
            raise self.fail(where, f"expected one of {', '.join(choices)}, got {value!r}")
        if not value:
            raise self.fail(where, "must not be empty")
        return value

    def strings(self, value: Any, where: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            got = "an array with a non-string" if isinstance(value, list) else _kind(value)
            raise self.fail(where, f"expected an array of strings, got {got}")
        return tuple(value)

    def string_table(self, value: Any, where: str) -> dict[str, str]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a table of strings, got {_kind(value)}")
        for key, item in value.items():
            if not isinstance(item, str):
                raise self.fail(f"{where}.{key}", f"expected a string, got {_kind(item)}")
        return dict(value)

    def seconds(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(where, f"expected a number of seconds, got {_kind(value)}")
        if not value > 0 or value == float("inf"):
            raise self.fail(where, f"expected a positive number of seconds, got {value!r}")
        return float(value)

    def table(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a table, got {_kind(value)}")
        return value

    def settings(self, data: Mapping[str, Any], prefix: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for key in SETTINGS:
            if key in data:
                out[key] = self.string(data[key], prefix + key, SETTINGS[key][1])
        return out

    def server(self, name: str, data: Any) -> ServerSpec | None:
        where = f"mcp_servers.{name}"
        data = self.table(data, where)
        for key in data:
            if key not in _SERVER_KEYS:
                raise self.fail(where, f"unknown key {key!r} (known: {', '.join(sorted(_SERVER_KEYS))})")
        if "command" in data and "url" in data:
            raise self.fail(where, "has both command and url: a server is either stdio (command) or HTTP (url)")
        if "command" not in data and "url" not in data:
            raise self.fail(where, "needs command (a stdio server) or url (a streamable HTTP server)")
        stdio = "command" in data
        for key in data:
            if stdio and key in _HTTP_KEYS:
                raise self.fail(f"{where}.{key}", "is for HTTP servers (url), not stdio ones (command)")
            if not stdio and key in _STDIO_KEYS:
                raise self.fail(f"{where}.{key}", "is for stdio servers (command), not HTTP ones (url)")
        for key in ("enabled", "shared"):
            if key in data and not isinstance(data[key], bool):
                raise self.fail(f"{where}.{key}", f"expected a boolean, got {_kind(data[key])}")
        if not data.get("enabled", True):
            return None
        fields: dict[str, Any] = {}
        if "shared" in data:
            fields["shared"] = data["shared"]
        for key in ("command", "cwd", "url", "bearer_token_env_var"):
            if key in data:
                fields[key] = self.string(data[key], f"{where}.{key}")
        if "cwd" in fields:
            fields["cwd"] = os.path.expanduser(fields["cwd"])
        for key in ("args", "enabled_tools", "disabled_tools"):
            if key in data:
                fields[key] = self.strings(data[key], f"{where}.{key}")
        for key in ("env", "http_headers"):
            if key in data:
                fields[key] = self.string_table(data[key], f"{where}.{key}")
        for key in ("startup_timeout_sec", "tool_timeout_sec"):
            if key in data:
                fields[key] = self.seconds(data[key], f"{where}.{key}")
        return ServerSpec(name=name, **fields)


def load_config(path: Path, *, explicit: bool) -> LoadedConfig:
    """Read and check the file at ``path``. A missing file is an error when ``explicit`` (named
    by a flag), else an empty configuration. Raises :class:`ConfigError`."""
    check = _Checker(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if explicit:
            raise check.fail(None, "no such config file") from None
        return LoadedConfig(path=path, exists=False)
    except IsADirectoryError:
        raise check.fail(None, "is a directory, not a config file") from None
    except OSError as exc:
        raise check.fail(None, f"cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise check.fail(None, f"not valid TOML: {exc}") from None
    for key in data:
        if key not in _TOP_KEYS:
            raise check.fail(key, f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
    settings = check.settings(data, "")
    profile = check.string(data["profile"], "profile") if "profile" in data else None
    profiles: dict[str, dict[str, str]] = {}
    for name, table in check.table(data.get("profiles", {}), "profiles").items():
        table = check.table(table, f"profiles.{name}")
        for key in table:
            if key not in SETTINGS:
                raise check.fail(f"profiles.{name}", f"unknown key {key!r} (known: {', '.join(SETTINGS)})")
        profiles[name] = check.settings(table, f"profiles.{name}.")
    servers: list[ServerSpec] = []
    for name, table in check.table(data.get("mcp_servers", {}), "mcp_servers").items():
        spec = check.server(name, table)
        if spec is not None:
            servers.append(spec)
    return LoadedConfig(path=path, exists=True, settings=settings, profile=profile, profiles=profiles, servers=servers)


# ---------------------------------------------------------------------------------------------
# Applying it to the parsed flags
# ---------------------------------------------------------------------------------------------


def resolve_config(args: Any, environ: Mapping[str, str]) -> dict[str, Setting]:
    """Read the configuration and fill in every model setting on ``args`` the flags left unset
    (flags parse to ``None``); records ``args.config`` (the :class:`LoadedConfig`),
    ``args.config_profile`` and ``args.mcp_specs``. Returns each setting with its source."""
    explicit = getattr(args, "config_file", None)
    path = Path(explicit).expanduser().absolute() if explicit else default_config_path(environ)
    config = load_config(path, explicit=bool(explicit))
    args.config = config
    flag_profile = getattr(args, "profile", None)
    profile_name = flag_profile or config.profile
    profile: dict[str, str] = {}
    if profile_name is not None:
        if profile_name not in config.profiles:
            known = ", ".join(sorted(config.profiles)) or "none"
            where = "profile" if flag_profile is None else None
            raise ConfigError(path, where, f"no profile {profile_name!r} (profiles: {known})")
        profile = config.profiles[profile_name]
    args.config_profile = profile_name
    scripted = bool(getattr(args, "script", None))
    resolved: dict[str, Setting] = {}
    for key, (default, _choices) in SETTINGS.items():
        if not hasattr(args, key):
            continue  # a command without this flag (approval on compact and batch)
        flag = getattr(args, key)
        if flag is not None:
            setting = Setting(flag, "flag")
        elif scripted and key in ("model", "base_url"):
            setting = Setting(None, "default")  # --script runs its own model: the file's endpoint stays out
        elif key in profile:
            setting = Setting(profile[key], f"profile {profile_name}")
        elif key in config.settings:
            setting = Setting(config.settings[key], "file")
        else:
            setting = Setting(default, "default")
        setattr(args, key, setting.value)
        resolved[key] = setting
    args.mcp_specs = list(config.servers)
    return resolved


def mcp_servers(specs: list[ServerSpec]) -> list[McpServer]:
    """The session's :class:`~actors.tools.mcp.McpServer` list (imports the optional ``mcp``
    package only when there are servers). Raises :class:`CliError` without it."""
    if not specs:
        return []
    try:
        import mcp  # noqa: F401

        from actors.tools.mcp import McpServer
    except ImportError as exc:
        raise CliError(
            f"MCP servers are configured but the mcp package is missing ({exc}): {MCP_EXTRA_HINT}", status=1
        ) from None
    servers: list[McpServer] = []
    for spec in specs:
        common: dict[str, Any] = dict(
            startup_timeout=spec.startup_timeout_sec,
            tool_timeout=spec.tool_timeout_sec,
            enabled_tools=spec.enabled_tools,
            disabled_tools=spec.disabled_tools,
            shared=spec.shared,
        )
        if spec.command is not None:
            servers.append(
                McpServer.stdio(spec.name, spec.command, args=spec.args, env=spec.env, cwd=spec.cwd, **common)
            )
        else:
            assert spec.url is not None
            servers.append(
                McpServer.http(
                    spec.name,
                    spec.url,
                    headers=spec.http_headers,
                    bearer_token_env_var=spec.bearer_token_env_var,
                    **common,
                )
            )
    return servers


def describe(args: Any, resolved: Mapping[str, Setting]) -> dict[str, Any]:
    """What ``agent-kernel config --json`` prints: the file, the profile, each setting with its
    source, and the MCP servers with secret values masked."""
    config: LoadedConfig = args.config
    profile_source = "flag" if getattr(args, "profile", None) else ("file" if config.profile else None)
    return {
        "config_file": os.fspath(config.path),
        "config_file_exists": config.exists,
        "profile": {"value": args.config_profile, "source": profile_source},
        "settings": {k: {"value": s.value, "source": s.source} for k, s in resolved.items()},
        "mcp_servers": {spec.name: {**spec.masked(), "source": "file"} for spec in config.servers},
    }
