"""Sandboxes for the commands a model writes, and the environment they see.

:class:`SandboxPolicy` says what a command may do (``read-only``, ``workspace-write`` — the default —
or ``danger-full-access``); :class:`Sandbox` resolves it to a backend that can run on this machine
(bubblewrap namespaces, else Landlock) and wraps each command line; :class:`EnvironmentPolicy` says
which of this process's environment variables a command sees (secrets never, by default).
Layout: ``_policy`` (policies), ``_bwrap`` and ``_landlock`` (the backends), ``_sandbox`` (the
resolver), ``_env`` (the environment policy), ``_denial`` (telling a sandbox denial apart).
"""

from ._env import (
    CORE_VARIABLES as CORE_VARIABLES,
    DEFAULT_EXCLUDES as DEFAULT_EXCLUDES,
    EnvironmentPolicy as EnvironmentPolicy,
    looks_secret as looks_secret,
)
from ._policy import (
    SandboxMode as SandboxMode,
    SandboxPolicy as SandboxPolicy,
    SandboxUnavailable as SandboxUnavailable,
)
from ._sandbox import Sandbox as Sandbox

__all__ = [
    "SandboxMode",
    "SandboxPolicy",
    "SandboxUnavailable",
    "Sandbox",
    "EnvironmentPolicy",
    "CORE_VARIABLES",
    "DEFAULT_EXCLUDES",
    "looks_secret",
]
