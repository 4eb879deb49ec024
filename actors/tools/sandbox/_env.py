"""Which environment variables a tool's command sees (after codex's ``shell_environment_policy``)."""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping
from typing import Final, Literal

import attrs

__all__ = ["EnvironmentPolicy", "CORE_VARIABLES", "DEFAULT_EXCLUDES", "looks_secret"]

CORE_VARIABLES: Final = (
    "HOME", "LOGNAME", "PATH", "SHELL", "USER", "USERNAME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE",
    "TERM", "TZ", "TMPDIR", "TEMP", "TMP", "PWD",
)  # fmt: skip
"""What ``inherit="core"`` keeps: enough for programs to find themselves and speak the locale."""

DEFAULT_EXCLUDES: Final = (
    "*KEY*", "*SECRET*", "*TOKEN*", "*PASS*", "*CREDENTIAL*", "*AUTH*", "*COOKIE*", "*PRIVATE*",
    "*_PAT", "*WEBHOOK*", "SSH_AUTH_SOCK", "GPG_AGENT_INFO",
)  # fmt: skip
"""Names (matched case-insensitively against the whole name) that never reach a command by default:
``OPENAI_KEY``, ``AWS_SECRET_ACCESS_KEY``, ``GH_TOKEN``, ``PGPASSWORD``, ``GH_PAT``,
``SLACK_WEBHOOK_URL``, ``SSH_AUTH_SOCK``…"""

_URL_WITH_PASSWORD: Final = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@", re.IGNORECASE)


def looks_secret(name: str, value: str, patterns: tuple[str, ...] = DEFAULT_EXCLUDES) -> bool:
    """Whether the variable ``name=value`` looks like a secret: its name matches one of
    ``patterns`` (whole name, case-insensitive) or its value is a URL with a password
    (``postgres://user:pw@host/db``)."""
    upper = name.upper()
    if any(fnmatch.fnmatchcase(upper, p.upper()) for p in patterns):
        return True
    return bool(_URL_WITH_PASSWORD.match(value))


@attrs.frozen(kw_only=True)
class EnvironmentPolicy:
    """How a command's environment is built from this process's.

    ``inherit``: ``"all"`` (every variable, the default), ``"core"`` (:data:`CORE_VARIABLES`
    only) or ``"none"``. Then ``exclude`` (glob patterns on the whole name, case-insensitive;
    :data:`DEFAULT_EXCLUDES` unless ``ignore_default_excludes``) drops variables, and so does any
    value that is a URL with a password; ``include_only`` (patterns), when given, keeps only what
    matches; ``set`` adds or overrides variables last (never filtered: the host chose them).
    """

    inherit: Literal["all", "core", "none"] = "all"
    exclude: tuple[str, ...] = ()
    ignore_default_excludes: bool = False
    include_only: tuple[str, ...] = ()
    set: Mapping[str, str] = attrs.field(factory=dict, converter=dict)

    def __attrs_post_init__(self) -> None:
        if self.inherit not in ("all", "core", "none"):
            raise ValueError(f"EnvironmentPolicy.inherit must be 'all', 'core' or 'none', got {self.inherit!r}")

    @property
    def patterns(self) -> tuple[str, ...]:
        """The exclusion patterns in force."""
        return tuple(self.exclude) + (() if self.ignore_default_excludes else DEFAULT_EXCLUDES)

    def build(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment for one command, from ``environ`` (default: ``os.environ``)."""
        source = os.environ if environ is None else environ
        if self.inherit == "none":
            items: dict[str, str] = {}
        elif self.inherit == "core":
            items = {k: v for k, v in source.items() if k.upper() in CORE_VARIABLES}
        else:
            items = dict(source)
        patterns = self.patterns
        out = {k: v for k, v in items.items() if not looks_secret(k, v, patterns)}
        if self.include_only:
            keep = tuple(p.upper() for p in self.include_only)
            out = {k: v for k, v in out.items() if any(fnmatch.fnmatchcase(k.upper(), p) for p in keep)}
        out.update(self.set)
        return out

    def secret_values(self, environ: Mapping[str, str] | None = None, *, min_length: int = 8) -> list[str]:
        """The values this policy withholds that are long enough to scrub from output (a command
        may still find them elsewhere: these are the ones the process knows)."""
        source = os.environ if environ is None else environ
        patterns = self.patterns
        return [v for k, v in source.items() if len(v) >= min_length and looks_secret(k, v, patterns)]
