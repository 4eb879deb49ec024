"""Planning: :class:`Plan` verifies every hunk against a virtual view of the workspace (paths
confined to where the sandbox policy lets a patch write, files present or absent as the hunk needs,
chunks matching) and computes every new content in memory, before anything is written."""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import Final, Literal

import attrs

from ...sandbox import SandboxMode, SandboxPolicy
from ...sandbox._policy import PROTECTED_NAMES
from ._match import apply_chunks
from ._values import AddFile, DeleteFile, Hunk, PatchError, UpdateFile

__all__ = ["Plan", "Disk", "Text", "inside"]

_BOM: Final = b"\xef\xbb\xbf"
_READ_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


@attrs.frozen
class Text:
    """A file's content as text with ``\\n`` line ends, and how to encode it back."""

    text: str
    bom: bool = False
    crlf: bool = False
    mode: int | None = None  # carried to a move destination

    @staticmethod
    def decode(data: bytes, mode: int | None) -> Text:
        bom = data.startswith(_BOM)
        if bom:
            data = data[len(_BOM) :]
        text = data.decode("utf-8", "surrogateescape")
        newlines = text.count("\n")
        crlf = newlines > 0 and text.count("\r\n") == newlines
        if crlf:
            text = text.replace("\r\n", "\n")
        return Text(text, bom, crlf, mode)

    def encode(self) -> bytes:
        text = self.text.replace("\n", "\r\n") if self.crlf else self.text
        return (_BOM if self.bom else b"") + text.encode("utf-8", "surrogateescape")


@attrs.frozen
class Disk:
    """What was on disk at a path before the patch: the backup used to roll back."""

    kind: Literal["missing", "file", "dir", "link", "other"]
    data: bytes = b""
    mode: int = 0
    times: tuple[int, int] | None = None
    link: str = ""


def inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


@attrs.frozen
class _Target:
    display: str  # as written in the patch
    real: str  # every symbolic link resolved
    entry: str  # the directory entry itself (its parent resolved)
    is_link: bool


_DRIVE: Final = re.compile(r"^[A-Za-z]:")
_Absent = None


def _refused(raw: str, line: int, why: str) -> PatchError:
    at = f" (patch line {line})" if line else ""
    return PatchError(f"refused path '{raw}'{at}: {why}", line=line or None, path=raw)


def _read_disk(path: str) -> Disk:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return Disk("missing")
    except NotADirectoryError:
        return Disk("missing")  # an ancestor is a file: check_parents reports it
    times = (st.st_atime_ns, st.st_mtime_ns)
    if stat.S_ISLNK(st.st_mode):
        return Disk("link", mode=st.st_mode, times=times, link=os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return Disk("dir", mode=st.st_mode, times=times)
    if not stat.S_ISREG(st.st_mode):
        return Disk("other", mode=st.st_mode, times=times)
    try:  # no link or FIFO swapped in since the lstat is followed or waited on
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        return Disk("other", mode=st.st_mode, times=times)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            return Disk("other", mode=st.st_mode, times=times)
        data = fh.read()
    return Disk("file", data, st.st_mode, (st.st_atime_ns, st.st_mtime_ns))


def _outside(resolved: str, roots: tuple[str, ...]) -> str:
    extra = roots[1:]
    where = f"the workspace root {roots[0]}"
    if extra:
        where += f" and the writable roots {', '.join(extra)}"
    return f"outside {where}"


class Plan:
    """Verifies the hunks against a virtual view of the workspace (``state``) and keeps what was on
    disk before (``disk``: the backups); :func:`~._apply.commit` writes it.

    ``root`` is the workspace (symbolic links resolved); ``policy`` says where a patch may write:
    ``workspace-write`` (the default) the workspace and the policy's ``writable_roots`` but never a
    root's ``.git``; ``danger-full-access`` the workspace, ``.git`` included; ``read-only`` nowhere.
    ``roots`` are the directories paths may resolve into, the workspace first."""

    def __init__(self, root: str, policy: SandboxPolicy | None = None) -> None:
        self.root = root
        self.policy = policy if policy is not None else SandboxPolicy()
        roots = [root]
        if self.policy.mode is SandboxMode.WORKSPACE_WRITE:
            roots.extend(str(r) for r in self.policy.writable_roots if str(r) not in roots)
        self.roots: tuple[str, ...] = tuple(roots)
        self.disk: dict[str, Disk] = {}
        self.state: dict[str, Text | None] = {}  # virtual content; None: absent
        self.names: dict[str, str] = {}
        self.added: list[str] = []
        self.modified: list[str] = []
        self.deleted: list[str] = []

    # --- paths ------------------------------------------------------------------------------

    def root_of(self, path: str) -> str | None:
        """The innermost of ``roots`` that holds the resolved ``path`` (``None``: none does)."""
        best: str | None = None
        for root in self.roots:
            if inside(path, root) and (best is None or len(root) > len(best)):
                best = root
        return best

    def resolve(self, raw: str, line: int) -> _Target:
        """Where the patch path ``raw`` (of patch line ``line``) is; refused unless it stays inside
        the roots the policy lets a patch write (symbolic links resolved) and out of their ``.git``.
        A relative path is taken from the workspace; an absolute one only names a place inside a root."""
        if "\0" in raw:
            at = f" (patch line {line})" if line else ""
            raise PatchError(f"refused path {raw!r}{at}: it contains a NUL character", line=line or None, path=raw)
        if self.policy.mode is SandboxMode.READ_ONLY:
            raise _refused(raw, line, "the read-only sandbox policy allows no file changes; nothing was changed")
        root = self.root
        if (
            raw.startswith("\\")
            or _DRIVE.match(raw)
            or (os.path.isabs(raw) and self.root_of(os.path.realpath(raw)) is None)
        ):
            roots = "" if len(self.roots) == 1 else f" (or an absolute path inside {', '.join(self.roots[1:])})"
            raise _refused(
                raw, line, f"absolute paths are not allowed; use a path relative to the workspace root{roots}"
            )
        joined = os.path.join(root, raw)
        head, name = os.path.split(joined)
        if name in ("", ".", ".."):
            raise _refused(raw, line, "it does not name a file")
        parent = os.path.realpath(head)
        real = os.path.realpath(joined)
        for resolved in (parent, real):
            if self.root_of(resolved) is None:
                normal = os.path.normpath(joined)
                how = " through a symbolic link" if self.root_of(normal) is not None else ""
                raise _refused(
                    raw, line, f"it resolves{how} to {resolved}, {_outside(resolved, self.roots)}; nothing was changed"
                )
        if real in self.roots:
            what = "the workspace root" if real == root else f"the writable root {real}"
            raise _refused(raw, line, f"it is {what}")
        entry = os.path.join(parent, name)
        for path in (entry, real):
            protected = self._protected(path)
            if protected is not None:
                raise _refused(raw, line, protected)
        target = _Target(raw, real, entry, os.path.islink(entry))
        self.names.setdefault(real, raw)
        self.names.setdefault(entry, raw)
        return target

    def _protected(self, path: str) -> str | None:
        """Why the policy refuses a write to the resolved ``path`` inside a root (it is in the
        ``.git`` of a root, any root that holds it, as the shell's sandbox binds each read-only);
        ``None`` when it allows it."""
        if self.policy.mode is SandboxMode.DANGER_FULL_ACCESS:
            return None
        for root in self.roots:
            if not inside(path, root) or path == root:
                continue
            top = os.path.relpath(path, root).split(os.sep)[0]
            if top in PROTECTED_NAMES:
                shown = top if root == self.root else os.path.join(root, top)
                return (
                    f"it is inside '{shown}', which the {self.policy.mode.value} sandbox policy keeps "
                    "read-only (a change there could run code the next time git runs); nothing was changed"
                )
        if not self.policy.may_write(Path(self.root), Path(path)):
            return f"the {self.policy.mode.value} sandbox policy does not allow writing {path}; nothing was changed"
        return None

    def check_parents(self, target: _Target, line: int) -> None:
        """Every ancestor directory that exists is a directory (and not a file of this patch)."""
        parent = os.path.dirname(target.real)
        while self.root_of(parent) is not None and parent not in self.roots:
            if self.state.get(parent) is not None:
                raise PatchError(
                    f"cannot write '{target.display}' (patch line {line}): its parent "
                    f"'{self.names.get(parent, parent)}' is a file this patch creates",
                    line=line or None,
                    path=target.display,
                )
            d = self.stat(parent)
            if d.kind == "dir":
                return
            if d.kind != "missing":
                rel = self.display(parent)
                raise PatchError(
                    f"cannot write '{target.display}' (patch line {line}): '{rel}' is not a directory",
                    line=line or None,
                    path=target.display,
                )
            parent = os.path.dirname(parent)

    def display(self, path: str) -> str:
        """``path`` as a patch would name it: relative to the workspace when inside it."""
        return os.path.relpath(path, self.root) if inside(path, self.root) else path

    # --- contents ---------------------------------------------------------------------------

    def stat(self, path: str) -> Disk:
        d = self.disk.get(path)
        if d is None:
            d = self.disk[path] = _read_disk(path)
        return d

    def load(self, key: str, display: str, line: int) -> Text | None:
        """The current (virtual) content at ``key``; ``None`` if absent."""
        if key in self.state:
            return self.state[key]
        d = self.stat(key)
        if d.kind == "missing":
            return None
        if d.kind == "file":
            return Text.decode(d.data, d.mode)
        what = {"dir": "a directory", "link": "a symbolic link that cannot be resolved"}.get(
            d.kind, "not a regular file"
        )
        raise PatchError(f"'{display}' (patch line {line}) is {what}", line=line or None, path=display)

    # --- hunks ------------------------------------------------------------------------------

    def add(self, hunk: Hunk) -> None:
        """Verify ``hunk`` against the workspace as the earlier hunks left it, and record its effect."""
        if isinstance(hunk, AddFile):
            self._add_file(hunk)
        elif isinstance(hunk, DeleteFile):
            self._delete_file(hunk)
        else:
            self._update_file(hunk)

    def _add_file(self, hunk: AddFile) -> None:
        t = self.resolve(hunk.path, hunk.line)
        exists = (
            f"cannot add '{hunk.path}' (patch line {hunk.line}): the file already exists; "
            "use '*** Update File:' to change it"
        )
        self.create(t, hunk.line, Text(hunk.content), exists)
        self.added.append(hunk.path)

    def _delete_file(self, hunk: DeleteFile) -> None:
        t = self.resolve(hunk.path, hunk.line)
        if t.is_link and t.entry not in self.state:
            self.stat(t.entry)
            self.state[t.entry] = _Absent  # remove the link itself, not what it points to
        else:
            self.existing(t, hunk.line, "delete")
            self.state[t.real] = _Absent
        self.deleted.append(hunk.path)

    def _update_file(self, hunk: UpdateFile) -> None:
        t = self.resolve(hunk.path, hunk.line)
        current = self.existing(t, hunk.line, "update")
        if hunk.chunks:
            new = attrs.evolve(current, text=apply_chunks(current.text, hunk.chunks, hunk.path))
        else:
            new = current  # a pure rename keeps the bytes as they are
        if hunk.move_to is None:
            self.state[t.real] = new
            self.modified.append(hunk.path)
            return
        d = self.resolve(hunk.move_to, hunk.line)
        if d.real != t.real:
            exists = (
                f"cannot move '{hunk.path}' to '{hunk.move_to}' (patch line {hunk.line}): "
                "the destination already exists"
            )
            self.create(d, hunk.line, new, exists)
            self.state[t.real] = _Absent
        else:
            self.state[t.real] = new
        self.modified.append(hunk.move_to)

    def existing(self, target: _Target, line: int, verb: str) -> Text:
        """The current content of ``target``, which must exist (``verb``: what the hunk does to it)."""
        current = self.load(target.real, target.display, line)
        if current is None:
            raise PatchError(
                f"cannot {verb} '{target.display}' (patch line {line}): no such file",
                line=line or None,
                path=target.display,
            )
        return current

    def create(self, target: _Target, line: int, content: Text, exists: str) -> None:
        """Record ``content`` at ``target``, which must not exist yet (``exists``: the error when it
        does) and whose existing ancestors must be directories."""
        if self.load(target.real, target.display, line) is not None:
            raise PatchError(exists, line=line or None, path=target.display)
        self.check_parents(target, line)
        self.state[target.real] = content
