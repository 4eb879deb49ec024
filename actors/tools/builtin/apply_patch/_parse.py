"""Parsing: :func:`parse_patch` turns patch text into a :class:`~.Patch` (and
:data:`APPLY_PATCH_LARK_GRAMMAR`, the format's grammar)."""

from __future__ import annotations

import re
from typing import Final

from ._values import AddFile, DeleteFile, Hunk, Patch, PatchError, UpdateChunk, UpdateFile

__all__ = ["APPLY_PATCH_LARK_GRAMMAR", "parse_patch"]


APPLY_PATCH_LARK_GRAMMAR: Final = r"""start: begin_patch hunk+ end_patch
begin_patch: "*** Begin Patch" LF
end_patch: "*** End Patch" LF?

hunk: add_hunk | delete_hunk | update_hunk
add_hunk: "*** Add File: " filename LF add_line+
delete_hunk: "*** Delete File: " filename LF
update_hunk: "*** Update File: " filename LF change_move? change?

filename: /(.+)/
add_line: "+" /(.*)/ LF -> line

change_move: "*** Move to: " filename LF
change: (change_context | change_line)+ eof_line?
change_context: ("@@" | "@@ " /(.+)/) LF
change_line: ("+" | "-" | " ") /(.*)/ LF
eof_line: "*** End of File" LF

%import common.LF
"""
"""codex's Lark grammar of the patch format (the freeform tool's ``format.definition``)."""

_BEGIN: Final = "*** Begin Patch"
_END: Final = "*** End Patch"
_ADD: Final = "*** Add File:"
_DELETE: Final = "*** Delete File:"
_UPDATE: Final = "*** Update File:"
_MOVE: Final = "*** Move to:"
_EOF: Final = "*** End of File"
_HEREDOC_OPEN: Final = re.compile(r"^(?:apply_?patch\s+)?<<-?\s*(?:'(\w+)'|\"(\w+)\"|(\w+))\s*$")
_UNIFIED_HEADER: Final = re.compile(r"^-\d+(?:,\d+)? \+\d+(?:,\d+)? @@ ?(.*)$")
_EMPTY_CHUNK: Final = "Update hunk does not contain any lines"


class _Lines:
    """The patch's lines (CR of CRLF removed) and the 1-based line number of the first."""

    __slots__ = ("lines", "first")

    def __init__(self, text: str) -> None:
        body = text.strip()
        lead = len(text) - len(text.lstrip())
        self.first = text.count("\n", 0, lead) + 1
        self.lines = [ln[:-1] if ln.endswith("\r") else ln for ln in body.split("\n")] if body else []

    def number(self, index: int) -> int:
        return self.first + min(index, max(len(self.lines) - 1, 0))

    def error(self, index: int, message: str) -> PatchError:
        line = self.number(index)
        return PatchError(f"invalid patch at line {line}: {message}", line=line)


def parse_patch(text: str) -> Patch:
    """Parse a patch in codex's format (leniently, see the module docstring).

    Raises :class:`PatchError` naming the patch line for a missing ``*** Begin Patch`` /
    ``*** End Patch``, an unknown hunk header, an Update without chunks, a chunk without lines or
    with a line that does not start with ``' '``, ``'-'`` or ``'+'``, or an empty path. A patch
    with no file operations parses (applying it fails).
    """
    src = _Lines(text)
    lo, hi = _boundaries(src)
    lines = src.lines
    hunks: list[Hunk] = []
    i = lo + 1
    while i < hi:
        hunk, i = _parse_hunk(src, i, hi)
        hunks.append(hunk)
    return Patch(hunks, text="\n".join(lines[lo : hi + 1]))


def _boundaries(src: _Lines) -> tuple[int, int]:
    """The indices of the ``*** Begin Patch`` and ``*** End Patch`` lines."""
    lines = src.lines

    def strict(lo: int, hi: int) -> tuple[int, int]:
        if hi < lo or lines[lo].strip() != _BEGIN:
            raise src.error(lo, f"the first line of the patch must be '{_BEGIN}'")
        if hi == lo or lines[hi].strip() != _END:
            raise src.error(hi, f"the last line of the patch must be '{_END}'")
        return lo, hi

    try:
        return strict(0, len(lines) - 1)
    except PatchError:
        if len(lines) >= 4:
            m = _HEREDOC_OPEN.match(lines[0].strip())
            if m and lines[-1].strip() == (m.group(1) or m.group(2) or m.group(3)):
                return strict(1, len(lines) - 2)
        raise


def _header_path(src: _Lines, index: int, header: str, marker: str) -> str:
    path = header[len(marker) :].strip()
    if not path:
        raise src.error(index, f"'{marker} ' needs a path")
    return path


def _parse_hunk(src: _Lines, i: int, end: int) -> tuple[Hunk, int]:
    lines = src.lines
    header = lines[i].strip()
    number = src.number(i)
    if header.startswith(_ADD):
        path = _header_path(src, i, header, _ADD)
        j = i + 1
        content: list[str] = []
        while j < end and lines[j].startswith("+"):
            content.append(lines[j][1:] + "\n")
            j += 1
        return AddFile(path, "".join(content), line=number), j
    if header.startswith(_DELETE):
        return DeleteFile(_header_path(src, i, header, _DELETE), line=number), i + 1
    if header.startswith(_UPDATE):
        path = _header_path(src, i, header, _UPDATE)
        j = i + 1
        move_to: str | None = None
        if j < end and lines[j].strip().startswith(_MOVE):
            move_to = _header_path(src, j, lines[j].strip(), _MOVE)
            j += 1
        chunks: list[UpdateChunk] = []
        while j < end:
            if not lines[j].strip():  # blank lines between chunks
                j += 1
                continue
            if lines[j].startswith("*"):
                break
            chunk, j = _parse_chunk(src, j, end, first=not chunks)
            chunks.append(chunk)
        if not chunks and move_to is None:
            raise src.error(i, f"Update file hunk for path '{path}' is empty")
        return UpdateFile(path, move_to, chunks, line=number), j
    raise src.error(
        i,
        f"'{header}' is not a valid hunk header. Valid hunk headers: '*** Add File: {{path}}', "
        "'*** Delete File: {path}', '*** Update File: {path}'",
    )


def _context_header(line: str) -> tuple[bool, str | None]:
    """Whether ``line`` is an ``@@`` line, and its context text (``None`` for a bare ``@@``)."""
    if not line.startswith("@@"):
        return False, None
    rest = line[2:]
    if rest.strip() == "":
        return True, None
    if rest[0] not in " \t":
        return False, None
    text = rest[1:] if rest.startswith(" ") else rest
    m = _UNIFIED_HEADER.match(text.strip())
    if m:
        text = m.group(1)
    return True, (text if text.strip() else None)


def _parse_chunk(src: _Lines, j: int, end: int, *, first: bool) -> tuple[UpdateChunk, int]:
    lines = src.lines
    start = j
    contexts: list[str] = []
    headers = 0
    while j < end:
        is_header, text = _context_header(lines[j])
        if not is_header:
            break
        headers += 1
        if text is not None:
            contexts.append(text)
        j += 1
    if not headers and not first:
        raise src.error(j, f"Expected update hunk to start with a @@ context marker, got: '{lines[j]}'")
    if j >= end:
        raise src.error(j, _EMPTY_CHUNK)
    old: list[str] = []
    new: list[str] = []
    eof = False
    count = 0
    while j < end:
        line = lines[j]
        if line.strip() == _EOF:
            if count == 0:
                raise src.error(j, _EMPTY_CHUNK)
            eof = True
            j += 1
            break
        kind = line[:1]
        if kind == "":  # an empty line: an empty context line
            old.append("")
            new.append("")
        elif kind == " ":
            old.append(line[1:])
            new.append(line[1:])
        elif kind == "-":
            old.append(line[1:])
        elif kind == "+":
            new.append(line[1:])
        else:
            if count == 0:
                raise src.error(
                    j,
                    f"Unexpected line found in update hunk: '{line}'. Every line should start with "
                    "' ' (context line), '+' (added line), or '-' (removed line)",
                )
            break  # the start of the next chunk or hunk
        count += 1
        j += 1
    return UpdateChunk(old, new, contexts, eof, line=src.number(start)), j
