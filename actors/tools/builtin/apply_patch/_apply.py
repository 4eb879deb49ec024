"""Applying: :func:`apply_patch` plans a patch, then writes it — each file atomically, deletions
last — and on a failure midway restores what was written (content, mode, times) and removes the
directories it created."""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Sequence

from ._parse import parse_patch
from ._plan import Plan, inside
from ._values import Patch, PatchError, PatchResult

__all__ = ["apply_patch", "commit"]


def commit(plan: Plan) -> PatchResult:
    """Write what ``plan`` verified: changed files atomically, then the deletions; on a failure,
    restore what was written and raise :class:`~.PatchError` (``changed`` if restoring failed too)."""
    writes: list[tuple[str, bytes, int | None]] = []
    deletes: list[str] = []
    for key, value in plan.state.items():
        d = plan.stat(key)
        if value is None:
            if d.kind != "missing":
                deletes.append(key)
            continue
        data = value.encode()
        if d.kind == "file" and d.data == data:
            continue  # unchanged: leave the file (and its times) alone
        writes.append((key, data, d.mode if d.kind == "file" else value.mode))
    done: list[str] = []
    created: list[str] = []
    current = ""
    try:
        for key, data, mode in writes:
            current = key
            created.extend(_make_parents(os.path.dirname(key), plan.root))
            _atomic_write(key, data, mode)
            done.append(key)
        for key in deletes:
            current = key
            os.unlink(key)
            done.append(key)
    except BaseException as exc:
        failures = _rollback(plan, done, created)
        if not isinstance(exc, OSError):
            raise
        name = plan.names.get(current, current)
        if failures:
            raise PatchError(
                f"failed to write '{name}': {exc}; restoring the workspace failed too, these "
                f"paths may be changed: {', '.join(failures)}",
                path=name,
                changed=True,
            ) from exc
        raise PatchError(
            f"failed to write '{name}': {exc}; the files already written were restored, nothing was changed",
            path=name,
        ) from exc
    return PatchResult(plan.added, plan.modified, plan.deleted)


def _rollback(plan: Plan, done: Sequence[str], created: Sequence[str]) -> list[str]:
    """Put back what was at each path of ``done`` and remove the directories ``created``; the paths
    that could not be restored."""
    failures: list[str] = []
    for key in reversed(done):
        d = plan.disk[key]
        try:
            if d.kind == "file":
                _atomic_write(key, d.data, d.mode, d.times)
            elif d.kind == "link":
                if os.path.lexists(key):
                    os.unlink(key)
                os.symlink(d.link, key)
            elif os.path.lexists(key):
                os.unlink(key)
        except OSError:
            failures.append(plan.names.get(key, key))
    for directory in reversed(created):
        try:
            os.rmdir(directory)
        except OSError:
            failures.append(os.path.relpath(directory, plan.root))
    return failures


def _make_parents(directory: str, root: str) -> list[str]:
    """Create ``directory`` and its missing ancestors (inside ``root``); the ones created, outermost
    first."""
    missing: list[str] = []
    while directory != root and inside(directory, root) and not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    created: list[str] = []
    for d in reversed(missing):
        try:
            os.mkdir(d)
        except FileExistsError:
            if not os.path.isdir(d):
                raise
            continue
        except BaseException:
            for c in reversed(created):
                try:
                    os.rmdir(c)
                except OSError:
                    pass
            raise
        created.append(d)
    return created


def _atomic_write(path: str, data: bytes, mode: int | None, times: tuple[int, int] | None = None) -> None:
    """Write ``data`` to a temporary file next to ``path`` and :func:`os.replace` it into place.
    ``mode``: the permission bits to give it (``None``: the default for new files)."""
    directory, name = os.path.split(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = os.path.join(directory, f".{name[:200]}.{secrets.token_hex(4)}.patch-tmp")
        try:
            fd = os.open(tmp, flags, 0o666 if mode is None else stat.S_IMODE(mode))
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, stat.S_IMODE(mode))  # the umask may have masked some bits
        if times is not None:
            os.utime(tmp, ns=times)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def apply_patch(workspace: str | os.PathLike[str], patch: str | Patch) -> PatchResult:
    """Apply ``patch`` (text or a parsed :class:`Patch`) to the directory ``workspace``, all or
    nothing (see the package docstring). Synchronous; blocking file I/O.

    Returns the :class:`PatchResult` (``result.summary`` is codex's success text). Raises
    :class:`PatchError` for a malformed patch, an empty patch (``"No files were modified."``), a
    refused path, a hunk that does not match, or a write that failed (after restoring the
    workspace).
    """
    parsed = patch if isinstance(patch, Patch) else parse_patch(patch)
    if not parsed.hunks:
        raise PatchError("No files were modified.")
    root = os.path.realpath(workspace)
    if not os.path.isdir(root):
        raise PatchError(f"the workspace {os.fspath(workspace)} is not a directory")
    plan = Plan(root)
    for hunk in parsed.hunks:
        plan.add(hunk)
    return commit(plan)
