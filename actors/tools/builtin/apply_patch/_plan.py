"""Planning: :class:`Plan` verifies every hunk against a virtual view of the workspace (paths
confined to the root, files present or absent as the hunk needs, chunks matching) and computes
every new content in memory, before anything is written."""

from __future__ import annotations

import os
import re
import stat
from typing import Final, Literal

import attrs

from ._match import apply_chunks
from ._values import AddFile, DeleteFile, Hunk, PatchError, UpdateFile

__all__ = ["Plan", "Disk", "Text", "inside"]

_BOM: Final = b"\xef\xbb\xbf"


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
    with open(path, "rb") as fh:
        data = fh.read()
    return Disk("file", data, st.st_mode, times)


class Plan:
    """Verifies the hunks against a virtual view of the workspace (``state``) and keeps what was on
    disk before (``disk``: the backups); :func:`~._apply.commit` writes it."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.disk: dict[str, Disk] = {}
        self.state: dict[str, Text | None] = {}  # virtual content; None: absent
        self.names: dict[str, str] = {}
        self.added: list[str] = []
        self.modified: list[str] = []
        self.deleted: list[str] = []

    # --- paths ------------------------------------------------------------------------------

    def resolve(self, raw: str, line: int) -> _Target:
        """Where the patch path ``raw`` (of patch line ``line``) is; refused unless it is relative
        and stays inside the root, symbolic links resolved."""
        if "\0" in raw:
            at = f" (patch line {line})" if line else ""
            raise PatchError(f"refused path {raw!r}{at}: it contains a NUL character", line=line or None, path=raw)
        if os.path.isabs(raw) or raw.startswith(("/", "\\")) or _DRIVE.match(raw):
            raise _refused(raw, line, "absolute paths are not allowed; use a path relative to the workspace root")
        root = self.root
        joined = os.path.join(root, raw)
        head, name = os.path.split(joined)
        if name in ("", ".", ".."):
            raise _refused(raw, line, "it does not name a file")
        parent = os.path.realpath(head)
        real = os.path.realpath(joined)
        for resolved in (parent, real):
            if not inside(resolved, root):
                how = " through a symbolic link" if inside(os.path.normpath(joined), root) else ""
                raise _refused(
                    raw, line, f"it resolves{how} to {resolved}, outside the workspace root {root}; nothing was changed"
                )
        if real == root:
            raise _refused(raw, line, "it is the workspace root")
        entry = os.path.join(parent, name)
        target = _Target(raw, real, entry, os.path.islink(entry))
        self.names.setdefault(real, raw)
        self.names.setdefault(entry, raw)
        return target

    def check_parents(self, target: _Target, line: int) -> None:
        """Every ancestor directory that exists is a directory (and not a file of this patch)."""
        parent = os.path.dirname(target.real)
        while inside(parent, self.root) and parent != self.root:
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
                rel = os.path.relpath(parent, self.root)
                raise PatchError(
                    f"cannot write '{target.display}' (patch line {line}): '{rel}' is not a directory",
                    line=line or None,
                    path=target.display,
                )
            parent = os.path.dirname(parent)

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
