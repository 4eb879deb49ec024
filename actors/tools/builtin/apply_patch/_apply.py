"""Applying: :func:`apply_patch` plans a patch, then writes it — each file atomically, deletions
last — and on a failure midway restores what was written (content, mode, times) and removes the
directories it created.

Writing never follows a symbolic link: every directory is opened from its root down, one component
at a time, with ``O_NOFOLLOW``, and files are created, replaced and removed relative to those
directory descriptors (``openat``-style). A link put in place of a checked directory between
planning and writing makes the write fail (and the patch roll back) instead of landing wherever the
link points; a link put in place of a file is replaced by the new file, not written through."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Sequence
from typing import Final

from ...sandbox import SandboxMode, SandboxPolicy
from ._parse import parse_patch
from ._plan import Plan
from ._values import Patch, PatchError, PatchResult

__all__ = ["apply_patch", "commit", "as_policy", "read_only_refusal"]

_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
_TMP_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
_PROC_FD: Final = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else None
"""Linux: ``/proc/self/fd/N/name`` names ``name`` in the directory descriptor ``N`` holds, without
resolving ``N``'s path again (as ``renameat`` would)."""


def as_policy(sandbox: SandboxPolicy | SandboxMode | str) -> SandboxPolicy:
    """``sandbox`` as a :class:`~actors.tools.sandbox.SandboxPolicy` (a mode or its name: that
    mode's default policy). Raises :class:`ValueError` naming the valid modes."""
    if isinstance(sandbox, SandboxPolicy):
        return sandbox
    try:
        return SandboxPolicy(mode=SandboxMode(sandbox))
    except ValueError:
        valid = ", ".join(m.value for m in SandboxMode)
        raise ValueError(f"sandbox must be a SandboxPolicy or one of {valid}, not {sandbox!r}") from None


def read_only_refusal(patch: Patch) -> str:
    """The model-visible refusal of ``patch`` under the ``read-only`` sandbox policy."""
    return (
        f"refused the patch to {', '.join(patch.paths())}: the sandbox policy is read-only, which allows "
        "no file changes; nothing was changed. Describe the change instead, or ask the user to run "
        "with the workspace-write sandbox policy."
    )


class _Tree:
    """The directories a commit touches, opened from their root down without following symbolic
    links, and kept open (so each is checked once and later operations stay in it)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.fds: dict[str, int] = {}
        self.created: list[str] = []  # directories made, outermost first

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def parent(self, path: str, *, create: bool) -> tuple[int, str]:
        """(descriptor of the directory holding the resolved ``path``, ``path``'s last name),
        creating missing directories when ``create``. Raises :class:`OSError` when a component is
        missing (and not ``create``), not a directory, or a symbolic link."""
        root = self.plan.root_of(path)
        if root is None:  # the plan never yields one
            raise OSError(errno.EXDEV, f"{path} is outside the roots this patch may write")
        *dirs, name = os.path.relpath(path, root).split(os.sep)
        fd = self._open(root, None, root, create=False)
        current = root
        for part in dirs:
            nxt = os.path.join(current, part)
            fd = self._open(nxt, fd, part, create)
            current = nxt
        return fd, name

    def _open(self, path: str, parent: int | None, name: str, create: bool) -> int:
        fd = self.fds.get(path)
        if fd is not None:
            return fd
        try:
            if parent is None:
                fd = os.open(path, _DIR_FLAGS)
            else:
                fd = self._open_child(path, parent, name, create)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            raise OSError(
                exc.errno,
                f"'{self.plan.display(path)}' is no longer a directory (a symbolic link or a file was put "
                "there after the patch was checked); refusing to follow it",
            ) from exc
        self.fds[path] = fd
        return fd

    def _open_child(self, path: str, parent: int, name: str, create: bool) -> int:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
        try:
            os.mkdir(name, 0o777, dir_fd=parent)
        except FileExistsError:
            pass  # made meanwhile: opened (and checked) below
        else:
            self.created.append(path)
        return os.open(name, _DIR_FLAGS, dir_fd=parent)

    def exists(self, path: str) -> bool:
        """Whether something (a symbolic link included) is at ``path`` (its directory must exist)."""
        fd, name = self.parent(path, create=False)
        try:
            os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def unlink(self, path: str) -> None:
        fd, name = self.parent(path, create=False)
        os.unlink(name, dir_fd=fd)

    def symlink(self, target: str, path: str) -> None:
        fd, name = self.parent(path, create=False)
        os.symlink(target, name, dir_fd=fd)

    def rmdir(self, path: str) -> None:
        fd, name = self.parent(path, create=False)
        own = self.fds.pop(path, None)
        if own is not None:
            os.close(own)
        os.rmdir(name, dir_fd=fd)

    def write(
        self, path: str, data: bytes, mode: int | None, times: tuple[int, int] | None = None, *, create: bool = True
    ) -> None:
        """Write ``data`` to a new temporary file next to ``path`` and move it into place
        atomically. ``mode``: the permission bits to give it (``None``: the default for new files);
        ``times``: (atime, mtime) in ns to set; ``create``: make missing parent directories."""
        fd, name = self.parent(path, create=create)
        while True:
            tmp = f".{name[:200]}.{secrets.token_hex(4)}.patch-tmp"
            try:
                out = os.open(tmp, _TMP_FLAGS, 0o666 if mode is None else stat.S_IMODE(mode), dir_fd=fd)
                break
            except FileExistsError:
                continue
        try:
            with os.fdopen(out, "wb") as fh:
                fh.write(data)
                fh.flush()
                if mode is not None:
                    os.fchmod(fh.fileno(), stat.S_IMODE(mode))  # the umask may have masked some bits
                if times is not None:
                    os.utime(fh.fileno(), ns=times)
                os.fsync(fh.fileno())
            _replace_at(fd, tmp, name)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=fd)
            except OSError:
                pass
            raise


def _replace_at(fd: int, src: str, dst: str) -> None:
    """Rename ``src`` to ``dst``, both names in the directory ``fd`` (``renameat``): through
    ``/proc/self/fd`` where there is one, which keeps :func:`os.replace` called as
    ``(src, dst)``, the form the rollback tests intercept."""
    if _PROC_FD is not None:
        os.replace(f"{_PROC_FD}/{fd}/{src}", f"{_PROC_FD}/{fd}/{dst}")
    else:
        os.replace(src, dst, src_dir_fd=fd, dst_dir_fd=fd)


def commit(plan: Plan) -> PatchResult:
    """Write what ``plan`` verified: changed files atomically, then the deletions; on a failure,
    restore what was written and raise :class:`~.PatchError` (``changed`` if restoring failed too).
    No symbolic link is followed on the way (see the module docstring)."""
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
    tree = _Tree(plan)
    done: list[str] = []
    current = ""
    try:
        try:
            for key, data, mode in writes:
                current = key
                tree.write(key, data, mode)
                done.append(key)
            for key in deletes:
                current = key
                tree.unlink(key)
                done.append(key)
        except BaseException as exc:
            failures = _rollback(plan, tree, done)
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
    finally:
        tree.close()
    return PatchResult(plan.added, plan.modified, plan.deleted)


def _rollback(plan: Plan, tree: _Tree, done: Sequence[str]) -> list[str]:
    """Put back what was at each path of ``done`` and remove the directories the commit created;
    the paths that could not be restored."""
    failures: list[str] = []
    for key in reversed(done):
        d = plan.disk[key]
        try:
            if d.kind == "file":
                tree.write(key, d.data, d.mode, d.times, create=False)
            elif d.kind == "link":
                if tree.exists(key):
                    tree.unlink(key)
                tree.symlink(d.link, key)
            elif tree.exists(key):
                tree.unlink(key)
        except OSError:
            failures.append(plan.names.get(key, key))
    for directory in reversed(tree.created):
        try:
            tree.rmdir(directory)
        except OSError:
            failures.append(plan.display(directory))
    return failures


def apply_patch(
    workspace: str | os.PathLike[str],
    patch: str | Patch,
    *,
    sandbox: SandboxPolicy | SandboxMode | str = SandboxMode.WORKSPACE_WRITE,
) -> PatchResult:
    """Apply ``patch`` (text or a parsed :class:`Patch`) to the directory ``workspace``, all or
    nothing (see the package docstring). Synchronous; blocking file I/O.

    ``sandbox`` (a :class:`~actors.tools.sandbox.SandboxPolicy`, or a mode or its name) says where
    it may write, as for the shell: ``workspace-write`` (the default) the workspace and the policy's
    ``writable_roots``, never inside a root's ``.git``; ``danger-full-access`` the workspace,
    ``.git`` included; ``read-only`` nowhere (every patch is refused).

    Returns the :class:`PatchResult` (``result.summary`` is codex's success text). Raises
    :class:`PatchError` for a malformed patch, an empty patch (``"No files were modified."``), a
    refused path, a hunk that does not match, or a write that failed (after restoring the
    workspace).
    """
    policy = as_policy(sandbox)
    parsed = patch if isinstance(patch, Patch) else parse_patch(patch)
    if not parsed.hunks:
        raise PatchError("No files were modified.")
    if policy.mode is SandboxMode.READ_ONLY:
        raise PatchError(read_only_refusal(parsed))
    root = os.path.realpath(workspace)
    if not os.path.isdir(root):
        raise PatchError(f"the workspace {os.fspath(workspace)} is not a directory")
    plan = Plan(root, policy)
    for hunk in parsed.hunks:
        plan.add(hunk)
    return commit(plan)
