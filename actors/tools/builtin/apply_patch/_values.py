"""The values of a patch: :class:`Patch` and its hunks (:class:`AddFile`, :class:`DeleteFile`,
:class:`UpdateFile` made of :class:`UpdateChunk`), :class:`PatchResult` and :class:`PatchError`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Union

import attrs

__all__ = ["PatchError", "AddFile", "DeleteFile", "UpdateChunk", "UpdateFile", "Hunk", "Patch", "PatchResult"]


class PatchError(Exception):
    """A patch that cannot be parsed or applied. ``str(error)`` is the whole, model-readable
    message. ``line`` is the 1-based patch line it concerns (``None`` when it is not about one
    line); ``path`` the file it concerns, if any; ``changed`` is ``True`` only if writing failed
    midway *and* restoring the workspace failed too (otherwise nothing was changed)."""

    def __init__(
        self, message: str, *, line: int | None = None, path: str | None = None, changed: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.path = path
        self.changed = changed

    def __str__(self) -> str:
        return self.message


def _lines_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen
class AddFile:
    """``*** Add File: path`` with its ``+`` lines: ``content`` is the new file's text (each line
    ends with ``\\n``). ``line`` is the header's patch line (not compared)."""

    path: str
    content: str = ""
    line: int = attrs.field(default=0, eq=False)


@attrs.frozen
class DeleteFile:
    """``*** Delete File: path``."""

    path: str
    line: int = attrs.field(default=0, eq=False)


@attrs.frozen
class UpdateChunk:
    """One hunk of an update: the lines it expects (``old_lines``: context and ``-`` lines) and
    their replacement (``new_lines``: context and ``+`` lines). ``contexts`` are the texts of its
    ``@@ text`` lines, sought in order before the old lines (a bare ``@@`` adds none);
    ``is_end_of_file`` anchors the old lines at the end of the file."""

    old_lines: tuple[str, ...] = attrs.field(default=(), converter=_lines_tuple)
    new_lines: tuple[str, ...] = attrs.field(default=(), converter=_lines_tuple)
    contexts: tuple[str, ...] = attrs.field(default=(), converter=_lines_tuple)
    is_end_of_file: bool = False
    line: int = attrs.field(default=0, eq=False)


def _chunks_tuple(value: Iterable[UpdateChunk]) -> tuple[UpdateChunk, ...]:
    return tuple(value)


@attrs.frozen
class UpdateFile:
    """``*** Update File: path`` (with ``*** Move to: move_to``) and its chunks, in file order."""

    path: str
    move_to: str | None = None
    chunks: tuple[UpdateChunk, ...] = attrs.field(default=(), converter=_chunks_tuple)
    line: int = attrs.field(default=0, eq=False)


Hunk = Union[AddFile, DeleteFile, UpdateFile]
"""One file operation of a patch."""


def _hunks_tuple(value: Iterable[Hunk]) -> tuple[Hunk, ...]:
    return tuple(value)


@attrs.frozen
class Patch:
    """A parsed patch: its file operations in order, and ``text``, the patch from ``*** Begin
    Patch`` to ``*** End Patch`` (any heredoc wrapper removed; not compared)."""

    hunks: tuple[Hunk, ...] = attrs.field(default=(), converter=_hunks_tuple)
    text: str = attrs.field(default="", eq=False)

    def paths(self) -> tuple[str, ...]:
        """Every path the patch touches (move destinations included), first mention first."""
        seen: dict[str, None] = {}
        for hunk in self.hunks:
            seen.setdefault(hunk.path)
            if isinstance(hunk, UpdateFile) and hunk.move_to is not None:
                seen.setdefault(hunk.move_to)
        return tuple(seen)


@attrs.frozen
class PatchResult:
    """What :func:`apply_patch` did: the paths (as written in the patch) added, modified (a moved
    file under its new name) and deleted, in patch order."""

    added: tuple[str, ...] = attrs.field(default=(), converter=_lines_tuple)
    modified: tuple[str, ...] = attrs.field(default=(), converter=_lines_tuple)
    deleted: tuple[str, ...] = attrs.field(default=(), converter=_lines_tuple)

    @property
    def summary(self) -> str:
        """codex's summary: ``Success. Updated the following files:`` then ``A path`` / ``M path``
        / ``D path`` lines, each ending with a newline."""
        out = ["Success. Updated the following files:\n"]
        out.extend(f"A {p}\n" for p in self.added)
        out.extend(f"M {p}\n" for p in self.modified)
        out.extend(f"D {p}\n" for p in self.deleted)
        return "".join(out)
