"""A :class:`Sandbox`: a policy resolved to a backend that can run here, for one workspace."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ._bwrap import bwrap_argv, bwrap_problem
from ._policy import SandboxMode, SandboxPolicy, SandboxUnavailable

__all__ = ["Sandbox"]


class Sandbox:
    """Runs commands for one workspace under one :class:`SandboxPolicy`.

    Build it with :meth:`for_workspace`, which picks the backend (bubblewrap, else Landlock) and
    raises :class:`SandboxUnavailable` naming what is missing when none can run, so a misconfigured
    machine fails when the tool is made, not when the model first runs a command.
    """

    def __init__(self, policy: SandboxPolicy, workspace: Path, backend: str) -> None:
        self.policy = policy
        self.workspace = workspace
        self.backend = backend

    def __repr__(self) -> str:
        return f"Sandbox({self.policy.mode.value!r}, backend={self.backend!r}, workspace={str(self.workspace)!r})"

    @classmethod
    def for_workspace(cls, policy: SandboxPolicy | SandboxMode | str, workspace: str | os.PathLike[str]) -> Sandbox:
        """Resolve ``policy`` for ``workspace``. Raises :class:`SandboxUnavailable`."""
        if not isinstance(policy, SandboxPolicy):
            policy = SandboxPolicy(mode=SandboxMode(policy))
        root = Path(os.path.realpath(workspace))
        if not policy.confined:
            return cls(policy, root, "none")
        problems: list[str] = []
        if policy.backend in ("auto", "bwrap"):
            problem = bwrap_problem()
            if problem is None:
                return cls(policy, root, "bwrap")
            problems.append(problem)
        if policy.backend in ("auto", "landlock"):
            from ._landlock import landlock_problem

            problem = landlock_problem(policy)
            if problem is None:
                return cls(policy, root, "landlock")
            problems.append(problem)
        raise SandboxUnavailable(
            f"no sandbox for the {policy.mode.value!r} policy can run here: {'; '.join(problems)}. "
            "Install bubblewrap (or enable unprivileged user namespaces), or choose "
            "'danger-full-access' knowingly: commands then run with all of this user's rights."
        )

    def wrap(
        self, argv: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None, tmpdir: Path | None = None
    ) -> list[str]:
        """The command line that runs ``argv`` in ``cwd`` inside this sandbox. ``env``: the
        environment it will be started with (the sandbox adds nothing to it); ``tmpdir``: a private
        directory the command may also write (the caller creates it, points ``TMPDIR`` at it and
        removes it afterwards)."""
        if self.backend == "bwrap":
            keep_pwd = env is None or "PWD" in env
            return bwrap_argv(self.policy, self.workspace, cwd, argv, keep_pwd=keep_pwd, tmpdir=tmpdir)
        if self.backend == "landlock":
            from ._landlock import landlock_argv

            return landlock_argv(self.policy, self.workspace, argv, tmpdir=tmpdir)
        return list(argv)
