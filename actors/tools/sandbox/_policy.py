"""Sandbox policies: what a command the model wrote may touch (codex's policy names)."""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Literal

import attrs

__all__ = ["SandboxMode", "SandboxPolicy", "SandboxUnavailable"]


class SandboxMode(str, enum.Enum):
    """How far a command is confined (the values are the command-line spellings)."""

    READ_ONLY = "read-only"
    """Read anything, write nothing (but a private, discarded ``/tmp``); no network."""
    WORKSPACE_WRITE = "workspace-write"
    """The default: write only the workspace (its ``.git`` stays read-only) and a private temp dir;
    no network unless ``network_access``."""
    DANGER_FULL_ACCESS = "danger-full-access"
    """No sandbox: the command runs as this process's user, with everything it can reach."""

    def __str__(self) -> str:
        return self.value


class SandboxUnavailable(RuntimeError):
    """No sandbox backend can run here; the message says what is missing and what to choose."""


Backend = Literal["auto", "bwrap", "landlock"]


def _roots(value: tuple[str | os.PathLike[str], ...] | list[str | os.PathLike[str]]) -> tuple[Path, ...]:
    return tuple(Path(os.path.realpath(p)) for p in value)


@attrs.frozen(kw_only=True)
class SandboxPolicy:
    """What commands may do. ``mode``: see :class:`SandboxMode` (strings accepted).
    ``network_access``: let ``workspace-write`` commands reach the network (``read-only`` never
    does; ``danger-full-access`` always does). ``writable_roots``: more directories a
    ``workspace-write`` command may write, besides the workspace. ``backend``: ``"auto"`` (bubblewrap,
    else Landlock, else :class:`SandboxUnavailable`), or one of them explicitly."""

    mode: SandboxMode = attrs.field(default=SandboxMode.WORKSPACE_WRITE, converter=SandboxMode)
    network_access: bool = False
    writable_roots: tuple[Path, ...] = attrs.field(default=(), converter=_roots)
    backend: Backend = "auto"

    def __attrs_post_init__(self) -> None:
        if self.backend not in ("auto", "bwrap", "landlock"):
            raise ValueError(f"SandboxPolicy.backend must be 'auto', 'bwrap' or 'landlock', got {self.backend!r}")

    @property
    def confined(self) -> bool:
        """Whether commands run in a sandbox at all (everything but ``danger-full-access``)."""
        return self.mode is not SandboxMode.DANGER_FULL_ACCESS

    @property
    def network(self) -> bool:
        """Whether commands may use the network."""
        if self.mode is SandboxMode.DANGER_FULL_ACCESS:
            return True
        return self.mode is SandboxMode.WORKSPACE_WRITE and self.network_access

    def writable(self, workspace: Path) -> tuple[Path, ...]:
        """The directories a command may write (empty for ``read-only``; everything for
        ``danger-full-access`` is not expressible here and is never asked)."""
        if self.mode is not SandboxMode.WORKSPACE_WRITE:
            return ()
        return (workspace, *self.writable_roots)

    def may_write(self, workspace: Path, path: Path) -> bool:
        """Whether a write to the resolved ``path`` is allowed: inside a writable root and not in
        a protected directory (``.git`` at a root's top). Used by ``apply_patch``."""
        if self.mode is SandboxMode.DANGER_FULL_ACCESS:
            return True
        inside = False
        for root in self.writable(workspace):
            if path == root or root in path.parents:
                rel = path.relative_to(root).parts
                if rel and rel[0] in PROTECTED_NAMES:
                    return False  # protected under any root that holds it (as bubblewrap binds them)
                inside = True
        return inside


PROTECTED_NAMES = (".git",)
"""Top-level entries of a writable root that stay read-only (the repository's history and hooks:
a write there could run code the next time the user runs git)."""
