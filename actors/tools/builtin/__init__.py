"""The built-in tools: ``shell`` (run a command in the workspace) and ``apply_patch`` (edit
files with codex's patch format), both confined to a workspace root under one sandbox policy
(:mod:`actors.tools.sandbox`; default ``workspace-write``) and both asking an
:class:`~actors.tools.approvals.Approvals` before they act when its policy says so.

::

    from actors import open_session
    from actors.tools.approvals import Approvals, ApprovalPolicy
    from actors.tools.builtin import builtin_tools

    approvals = Approvals(ApprovalPolicy.UNTRUSTED, ask_user)
    async with open_session(model=settings, tools=builtin_tools("/path/to/repo", approvals=approvals)) as session:
        ...

This file re-exports the public names of ``shell`` and ``apply_patch``.
"""

from __future__ import annotations

import os

from actors.tools import Tool
from actors.tools.approvals import Approvals
from actors.tools.sandbox import EnvironmentPolicy, SandboxMode, SandboxPolicy

from .apply_patch import make_apply_patch_tool as make_apply_patch_tool
from .shell import make_shell_tool as make_shell_tool

__all__ = ["builtin_tools", "make_apply_patch_tool", "make_shell_tool"]


def builtin_tools(
    workspace: str | os.PathLike[str],
    *,
    approvals: Approvals | None = None,
    shell_timeout: float = 120.0,
    sandbox: SandboxPolicy | SandboxMode | str = SandboxMode.WORKSPACE_WRITE,
    env_policy: EnvironmentPolicy | None = None,
) -> list[Tool]:
    """``[shell, apply_patch]`` for ``workspace`` (the root both are confined to), sharing one
    ``approvals`` (``None``: never ask) and one ``sandbox`` policy (commands run in it; patches
    write only where it lets commands write). ``shell_timeout`` is the shell tool's default
    per-command timeout in seconds (a call may ask for another with ``timeout_ms``);
    ``env_policy`` builds the commands' environment (default: secrets left out).

    Raises :class:`~actors.tools.sandbox.SandboxUnavailable` when the policy needs a sandbox this
    machine cannot provide."""
    return [
        make_shell_tool(
            workspace, approvals=approvals, default_timeout=shell_timeout, sandbox=sandbox, env_policy=env_policy
        ),
        make_apply_patch_tool(workspace, approvals=approvals, sandbox=sandbox),
    ]
