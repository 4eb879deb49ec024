"""The built-in ``apply_patch`` freeform tool: codex's patch format, applied all or nothing inside a
workspace.

The format (codex's ``apply_patch``; :data:`APPLY_PATCH_LARK_GRAMMAR` is its Lark grammar)::

    *** Begin Patch
    *** Add File: path/new.txt
    +line one
    +line two
    *** Update File: src/app.py
    *** Move to: src/main.py          (optional)
    @@ def greet():                    (optional context header; may repeat; a bare @@ is allowed)
     context line
    -old line
    +new line
     context line
    *** End of File                    (optional: the hunk is anchored at the end of the file)
    *** Delete File: old.txt
    *** End Patch

Three layers:

* :func:`parse_patch` turns the text into a :class:`Patch` of typed hunks (:class:`AddFile`,
  :class:`DeleteFile`, :class:`UpdateFile` made of :class:`UpdateChunk`), raising
  :class:`PatchError` with the patch line number on malformed input. It is as lenient as codex:
  whitespace around the markers, a heredoc wrapper (``<<'EOF'`` ... ``EOF``), CRLF line ends,
  blank lines between hunks, a first chunk without ``@@``. Beyond codex: several ``@@`` lines in a
  row narrow the position step by step (as codex's own instructions describe), a unified-diff
  header ``@@ -12,7 +12,8 @@ text`` counts as ``@@ text``, and a ``*** Move to:`` without
  chunks is a pure rename.

* :func:`apply_patch` (synchronous) applies a patch to a workspace directory. Every path must be
  relative and stay inside the workspace: absolute paths, ``..`` escapes and symbolic links (in any
  component, the file itself included) that resolve outside the root are refused, naming the path.
  It is all or nothing: every hunk is first verified against the files' current contents and every
  new content computed in memory (the hunks see the effect of earlier hunks of the same patch); an
  Update or Delete of a missing file, an Add of an existing one, or a chunk whose lines are not
  found raises :class:`PatchError` (the file, the hunk number, the approximate line, the expected
  lines and the closest lines found) and nothing is written. Then each file is written to a
  temporary file in its own directory and moved into place with :func:`os.replace` (atomic per
  file), parent directories are created for adds and moves, and deletions come last; if anything
  fails midway, the files already written are restored from in-memory backups (content, mode and
  times) and the directories created are removed, so the workspace ends as it was.

  Matching follows codex's ``seek_sequence``: exact, then ignoring trailing whitespace, then
  ignoring surrounding whitespace, then also mapping typographic dashes, quotes and spaces to ASCII.
  Updated files keep their byte-order mark, their CRLF line ends (when every line end is CRLF) and
  their mode, and end with a newline (as in codex). A chunk with no ``-`` or context lines is
  inserted right after its ``@@`` context line, or at the end of the file when it has none.

* :func:`make_apply_patch_tool` wraps it as a freeform :class:`~actors.tools.Tool` (Lark grammar,
  a description that teaches the format, exclusive scheduling). A call is checked with the
  optional approvals object (``await approvals.check(ApprovalRequest(kind="patch", ...))``), then
  applied in a worker thread; a :class:`PatchError` becomes a model-visible
  :class:`~kernel.RespondToModel`. Success output is the shell-like JSON
  ``{"output": "Success. Updated the following files:\\nA ...", "metadata": {"exit_code": 0,
  "duration_seconds": 0.0}}`` that :meth:`kernel.Prompt.formatted_input` re-serialises.
"""

from __future__ import annotations

import collections
import difflib
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final, Literal, Protocol, Union

import attrs
import trio

from actors.tools._registry import Tool, freeform_tool
from actors.tools.approvals import ApprovalRequest, Approvals
from kernel.items import FreeformToolFormat
from kernel.tools import RespondToModel

__all__ = [
    "APPLY_PATCH_LARK_GRAMMAR",
    "APPLY_PATCH_DESCRIPTION",
    "PatchError",
    "AddFile",
    "DeleteFile",
    "UpdateChunk",
    "UpdateFile",
    "Hunk",
    "Patch",
    "PatchResult",
    "ApprovalChecker",
    "parse_patch",
    "apply_patch",
    "make_apply_patch_tool",
]


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

APPLY_PATCH_DESCRIPTION: Final = """\
Use the `apply_patch` tool to edit files. This is a FREEFORM tool: send the patch itself as the \
input, do not wrap it in JSON.

A patch is a stripped-down, file-oriented diff:

*** Begin Patch
[ one or more file operations ]
*** End Patch

Each file operation starts with one of three headers:
*** Add File: <path> - create a new file. Every following line is a + line (the initial contents).
*** Delete File: <path> - remove an existing file. Nothing follows.
*** Update File: <path> - patch an existing file in place, optionally followed by \
*** Move to: <new path> to rename it.

An update is made of hunks, each introduced by @@ (optionally followed by a line of the file, such \
as a class or function definition, that the hunk comes after). Within a hunk every line starts \
with ' ' (context, unchanged), '-' (removed) or '+' (added). Show 3 lines of context above and \
below each change; do not repeat context shared with the previous hunk. If 3 lines of context do \
not identify the place uniquely, add an @@ line naming the enclosing class or function; several \
@@ lines in a row narrow it further. End a hunk that must match the end of the file with \
*** End of File.

Example:

*** Begin Patch
*** Add File: hello.txt
+Hello world
*** Update File: src/app.py
*** Move to: src/main.py
@@ def greet():
-print("Hi")
+print("Hello, world!")
*** Delete File: obsolete.txt
*** End Patch

Remember:
- Paths are relative to the workspace root, NEVER absolute, and must stay inside it.
- Prefix every new line with + even when creating a file.
- Context and - lines must match the current file; re-read a file before patching it if unsure.
- The patch applies all or nothing: if any hunk does not match, no file is changed."""
"""The tool description shown to the model: teaches the format (after codex's instructions)."""


# =============================================================================================
# Values
# =============================================================================================


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


# =============================================================================================
# Parsing
# =============================================================================================

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


# =============================================================================================
# Matching
# =============================================================================================

_PUNCTUATION: Final = str.maketrans(
    {
        **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212", "-"),
        **dict.fromkeys("\u2018\u2019\u201a\u201b", "'"),
        **dict.fromkeys("\u201c\u201d\u201e\u201f", '"'),
        **dict.fromkeys("\u00a0\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000", " "),
    }
)


def _normalise(s: str) -> str:
    return s.strip().translate(_PUNCTUATION)


def _seek(lines: Sequence[str], pattern: Sequence[str], start: int, eof: bool) -> int | None:
    """codex's ``seek_sequence``: the first index ``>= start`` where ``pattern`` occurs (only the
    end of the file when ``eof``), trying exact, trailing-whitespace-insensitive,
    whitespace-insensitive, then punctuation-normalised comparison."""
    m = len(pattern)
    if m == 0:
        return start
    n = len(lines)
    if m > n:
        return None
    lo = max(start, n - m) if eof else start
    if lo > n - m:
        return None
    for norm in (None, str.rstrip, str.strip, _normalise):
        if norm is None:
            pat: Sequence[str] = pattern
            cand: Sequence[str] = lines
            offset = 0
        else:
            pat = [norm(p) for p in pattern]
            cand = [norm(x) for x in lines[lo:]]
            offset = lo
        head = pat[0]
        for i in range(lo, n - m + 1):
            k = i - offset
            if cand[k] == head and cand[k : k + m] == pat:
                return i
    return None


def _closest(lines: Sequence[str], pattern: Sequence[str], near: int) -> tuple[int, int] | None:
    """Where the file looks most like ``pattern``: (start index, matching lines), by voting with
    each pattern line's exact (normalised) occurrences; ties go to the start nearest ``near``."""
    positions: dict[str, list[int]] = collections.defaultdict(list)
    for i, line in enumerate(lines):
        positions[_normalise(line)].append(i)
    votes: collections.Counter[int] = collections.Counter()
    for j, p in enumerate(pattern):
        key = _normalise(p)
        if not key:
            continue  # blank lines match everywhere
        for pos in positions.get(key, ())[:1000]:
            votes[pos - j] += 1
    if not votes:
        return None
    start, score = max(votes.items(), key=lambda kv: (kv[1], -abs(kv[0] - near)))
    return start, score


def _show(lines: Iterable[str], first_number: int | None = None) -> str:
    if first_number is None:
        return "\n".join(f"    {line}" for line in lines)
    return "\n".join(f"{first_number + k:>6} | {line}" for k, line in enumerate(lines))


def _mismatch(path: str, n: int, total: int, chunk: UpdateChunk, lines: Sequence[str], start: int) -> PatchError:
    where = f"hunk {n} of {total} (patch line {chunk.line})" if chunk.line else f"hunk {n} of {total}"
    anchor = " at the end of the file" if chunk.is_end_of_file else f" at or after line {start + 1}"
    parts = [
        f"Failed to find expected lines in {path}: {where} does not match the file{anchor}. Expected lines:",
        _show(chunk.old_lines) if chunk.old_lines else "    (none)",
    ]
    best = _closest(lines, chunk.old_lines, start)
    if best is not None:
        first, _ = best
        lo = max(first, 0)
        hi = min(first + len(chunk.old_lines), len(lines))
        if lo < hi:
            parts.append(f"The closest lines in {path} are at line {lo + 1}:")
            parts.append(_show(lines[lo:hi], lo + 1))
    return PatchError("\n".join(parts), line=chunk.line or None, path=path)


def _context_missing(
    path: str, n: int, total: int, chunk: UpdateChunk, context: str, lines: Sequence[str], start: int
) -> PatchError:
    where = f"hunk {n} of {total} (patch line {chunk.line})" if chunk.line else f"hunk {n} of {total}"
    parts = [
        f"Failed to find context '@@ {context.strip()}' in {path}: {where}, searching from line "
        f"{start + 1} of the file."
    ]
    stripped = [x.strip() for x in lines]
    close = difflib.get_close_matches(context.strip(), stripped, n=1, cutoff=0.6)
    if close:
        at = stripped.index(close[0])
        parts.append(f"The closest line in {path} is line {at + 1}:")
        parts.append(_show([lines[at]], at + 1))
    return PatchError("\n".join(parts), line=chunk.line or None, path=path)


def _apply_chunks(text: str, chunks: Sequence[UpdateChunk], path: str) -> str:
    """The new text of a file (``\\n`` line ends) after ``chunks``; as codex's
    ``derive_new_contents_from_chunks`` (the result ends with a newline)."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    replacements: list[tuple[int, int, list[str]]] = []
    index = 0
    total = len(chunks)
    for n, chunk in enumerate(chunks, 1):
        for context in chunk.contexts:
            found = _seek(lines, [context], index, False)
            if found is None:
                raise _context_missing(path, n, total, chunk, context, lines, index)
            index = found + 1
        if not chunk.old_lines:  # a pure addition
            if chunk.contexts and not chunk.is_end_of_file:
                at = index
            else:
                at = len(lines) - 1 if lines and lines[-1] == "" else len(lines)
            replacements.append((at, 0, list(chunk.new_lines)))
            continue
        pattern = list(chunk.old_lines)
        new = list(chunk.new_lines)
        found = _seek(lines, pattern, index, chunk.is_end_of_file)
        if found is None and pattern[-1] == "":
            # a trailing empty line stands for the file's final newline
            pattern.pop()
            if new and new[-1] == "":
                new.pop()
            found = _seek(lines, pattern, index, chunk.is_end_of_file)
        if found is None:
            raise _mismatch(path, n, total, chunk, lines, index)
        replacements.append((found, len(pattern), new))
        index = found + len(pattern)
    replacements.sort(key=lambda r: r[0])  # stable: chunk order among equal starts
    out: list[str] = []
    pos = 0
    for start, length, new_lines in replacements:
        out.extend(lines[pos:start])
        out.extend(new_lines)
        pos = max(pos, start + length)
    out.extend(lines[pos:])
    if not out or out[-1] != "":
        out.append("")
    return "\n".join(out)


# =============================================================================================
# Files
# =============================================================================================

_BOM: Final = b"\xef\xbb\xbf"


@attrs.frozen
class _Text:
    """A file's content as text with ``\\n`` line ends, and how to encode it back."""

    text: str
    bom: bool = False
    crlf: bool = False
    mode: int | None = None  # carried to a move destination

    @staticmethod
    def decode(data: bytes, mode: int | None) -> _Text:
        bom = data.startswith(_BOM)
        if bom:
            data = data[len(_BOM) :]
        text = data.decode("utf-8", "surrogateescape")
        newlines = text.count("\n")
        crlf = newlines > 0 and text.count("\r\n") == newlines
        if crlf:
            text = text.replace("\r\n", "\n")
        return _Text(text, bom, crlf, mode)

    def encode(self) -> bytes:
        text = self.text.replace("\n", "\r\n") if self.crlf else self.text
        return (_BOM if self.bom else b"") + text.encode("utf-8", "surrogateescape")


@attrs.frozen
class _Disk:
    """What was on disk at a path before the patch: the backup used to roll back."""

    kind: Literal["missing", "file", "dir", "link", "other"]
    data: bytes = b""
    mode: int = 0
    times: tuple[int, int] | None = None
    link: str = ""


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


@attrs.frozen
class _Target:
    display: str  # as written in the patch
    real: str  # every symbolic link resolved
    entry: str  # the directory entry itself (its parent resolved)
    is_link: bool


_DRIVE: Final = re.compile(r"^[A-Za-z]:")
_Absent = None


class _Plan:
    """Verifies the hunks against a virtual view of the workspace, then commits."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.disk: dict[str, _Disk] = {}
        self.state: dict[str, _Text | None] = {}  # virtual content; None: absent
        self.names: dict[str, str] = {}
        self.added: list[str] = []
        self.modified: list[str] = []
        self.deleted: list[str] = []

    # --- paths ------------------------------------------------------------------------------

    def resolve(self, raw: str, line: int) -> _Target:
        at = f" (patch line {line})" if line else ""
        if "\0" in raw:
            raise PatchError(f"refused path {raw!r}{at}: it contains a NUL character", line=line or None, path=raw)
        if os.path.isabs(raw) or raw.startswith(("/", "\\")) or _DRIVE.match(raw):
            raise PatchError(
                f"refused path '{raw}'{at}: absolute paths are not allowed; use a path relative to the workspace root",
                line=line or None,
                path=raw,
            )
        root = self.root
        joined = os.path.join(root, raw)
        head, name = os.path.split(joined)
        if name in ("", ".", ".."):
            raise PatchError(f"refused path '{raw}'{at}: it does not name a file", line=line or None, path=raw)
        parent = os.path.realpath(head)
        real = os.path.realpath(joined)
        for resolved in (parent, real):
            if not _inside(resolved, root):
                how = " through a symbolic link" if _inside(os.path.normpath(joined), root) else ""
                raise PatchError(
                    f"refused path '{raw}'{at}: it resolves{how} to {resolved}, outside the workspace "
                    f"root {root}; nothing was changed",
                    line=line or None,
                    path=raw,
                )
        if real == root:
            raise PatchError(f"refused path '{raw}'{at}: it is the workspace root", line=line or None, path=raw)
        entry = os.path.join(parent, name)
        target = _Target(raw, real, entry, os.path.islink(entry))
        self.names.setdefault(real, raw)
        self.names.setdefault(entry, raw)
        return target

    def check_parents(self, target: _Target, line: int) -> None:
        """Every ancestor directory that exists is a directory (and not a file of this patch)."""
        parent = os.path.dirname(target.real)
        while _inside(parent, self.root) and parent != self.root:
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

    def stat(self, path: str) -> _Disk:
        d = self.disk.get(path)
        if d is None:
            d = self.disk[path] = _read_disk(path)
        return d

    def load(self, key: str, display: str, line: int) -> _Text | None:
        """The current (virtual) content at ``key``; ``None`` if absent."""
        if key in self.state:
            return self.state[key]
        d = self.stat(key)
        if d.kind == "missing":
            return None
        if d.kind == "file":
            return _Text.decode(d.data, d.mode)
        what = {"dir": "a directory", "link": "a symbolic link that cannot be resolved"}.get(
            d.kind, "not a regular file"
        )
        raise PatchError(f"'{display}' (patch line {line}) is {what}", line=line or None, path=display)

    # --- hunks ------------------------------------------------------------------------------

    def add(self, hunk: Hunk) -> None:
        if isinstance(hunk, AddFile):
            t = self.resolve(hunk.path, hunk.line)
            if self.load(t.real, t.display, hunk.line) is not None:
                raise PatchError(
                    f"cannot add '{hunk.path}' (patch line {hunk.line}): the file already exists; "
                    "use '*** Update File:' to change it",
                    line=hunk.line or None,
                    path=hunk.path,
                )
            self.check_parents(t, hunk.line)
            self.state[t.real] = _Text(hunk.content)
            self.added.append(hunk.path)
        elif isinstance(hunk, DeleteFile):
            t = self.resolve(hunk.path, hunk.line)
            if t.is_link and t.entry not in self.state:
                self.stat(t.entry)
                self.state[t.entry] = _Absent  # remove the link itself, not what it points to
            else:
                if self.load(t.real, t.display, hunk.line) is None:
                    raise PatchError(
                        f"cannot delete '{hunk.path}' (patch line {hunk.line}): no such file",
                        line=hunk.line or None,
                        path=hunk.path,
                    )
                self.state[t.real] = _Absent
            self.deleted.append(hunk.path)
        else:
            t = self.resolve(hunk.path, hunk.line)
            current = self.load(t.real, t.display, hunk.line)
            if current is None:
                raise PatchError(
                    f"cannot update '{hunk.path}' (patch line {hunk.line}): no such file",
                    line=hunk.line or None,
                    path=hunk.path,
                )
            if hunk.chunks:
                new = attrs.evolve(current, text=_apply_chunks(current.text, hunk.chunks, hunk.path))
            else:
                new = current  # a pure rename keeps the bytes as they are
            if hunk.move_to is None:
                self.state[t.real] = new
                self.modified.append(hunk.path)
                return
            d = self.resolve(hunk.move_to, hunk.line)
            if d.real != t.real:
                if self.load(d.real, d.display, hunk.line) is not None:
                    raise PatchError(
                        f"cannot move '{hunk.path}' to '{hunk.move_to}' (patch line {hunk.line}): "
                        "the destination already exists",
                        line=hunk.line or None,
                        path=hunk.move_to,
                    )
                self.check_parents(d, hunk.line)
                self.state[d.real] = new
                self.state[t.real] = _Absent
            else:
                self.state[t.real] = new
            self.modified.append(hunk.move_to)

    # --- commit -----------------------------------------------------------------------------

    def commit(self) -> PatchResult:
        writes: list[tuple[str, bytes, int | None]] = []
        deletes: list[str] = []
        for key, value in self.state.items():
            d = self.stat(key)
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
                created.extend(_make_parents(os.path.dirname(key), self.root))
                _atomic_write(key, data, mode)
                done.append(key)
            for key in deletes:
                current = key
                os.unlink(key)
                done.append(key)
        except BaseException as exc:
            failures = self.rollback(done, created)
            if not isinstance(exc, OSError):
                raise
            name = self.names.get(current, current)
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
        return PatchResult(self.added, self.modified, self.deleted)

    def rollback(self, done: Sequence[str], created: Sequence[str]) -> list[str]:
        failures: list[str] = []
        for key in reversed(done):
            d = self.disk[key]
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
                failures.append(self.names.get(key, key))
        for directory in reversed(created):
            try:
                os.rmdir(directory)
            except OSError:
                failures.append(os.path.relpath(directory, self.root))
        return failures


def _read_disk(path: str) -> _Disk:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return _Disk("missing")
    except NotADirectoryError:
        return _Disk("missing")  # an ancestor is a file: check_parents reports it
    times = (st.st_atime_ns, st.st_mtime_ns)
    if stat.S_ISLNK(st.st_mode):
        return _Disk("link", mode=st.st_mode, times=times, link=os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return _Disk("dir", mode=st.st_mode, times=times)
    if not stat.S_ISREG(st.st_mode):
        return _Disk("other", mode=st.st_mode, times=times)
    with open(path, "rb") as fh:
        data = fh.read()
    return _Disk("file", data, st.st_mode, times)


def _make_parents(directory: str, root: str) -> list[str]:
    """Create ``directory`` and its missing ancestors (inside ``root``); the ones created, outermost
    first."""
    missing: list[str] = []
    while directory != root and _inside(directory, root) and not os.path.isdir(directory):
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
    nothing (see the module docstring). Synchronous; blocking file I/O.

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
    plan = _Plan(root)
    for hunk in parsed.hunks:
        plan.add(hunk)
    return plan.commit()


# =============================================================================================
# The tool
# =============================================================================================


class ApprovalChecker(Protocol):
    """What the tool needs of ``approvals``: :class:`~actors.tools.approvals.Approvals`, or any object
    whose async ``check`` returns to approve and raises (or returns ``False``) to refuse."""

    async def check(self, request: ApprovalRequest) -> Any: ...


def _model_error(exc: PatchError) -> str:
    text = str(exc)
    if not exc.changed and "nothing was changed" not in text:
        text += "\nNo files were changed: the patch applies all or nothing."
    return text


def make_apply_patch_tool(
    workspace: str | os.PathLike[str],
    *,
    approvals: Approvals | ApprovalChecker | None = None,
    name: str = "apply_patch",
) -> Tool:
    """The ``apply_patch`` freeform tool for ``workspace``.

    Its spec is a :class:`~kernel.FreeformTool` with :data:`APPLY_PATCH_LARK_GRAMMAR` and
    :data:`APPLY_PATCH_DESCRIPTION`; it is not parallel-safe (each call runs alone). A call parses
    the patch (a malformed one is refused before anyone is asked), then, when ``approvals`` is
    given, awaits ``approvals.check(ApprovalRequest(kind="patch", tool=name, paths=<every path
    touched, as written in the patch, move destinations included>, patch=<the patch text>))``:
    :meth:`~actors.tools.approvals.Approvals.check` fills in the reason and refuses by raising
    :class:`~kernel.RespondToModel` (any object with such an async ``check`` works; one returning
    ``False`` refuses too). Then :func:`apply_patch` runs in a worker thread (not abandoned on
    cancellation: a patch is written whole or rolled back). A :class:`PatchError` becomes
    :class:`~kernel.RespondToModel`. The output is the JSON text ``{"output": summary,
    "metadata": {"exit_code": 0, "duration_seconds": seconds}}``.
    """
    root = Path(workspace)

    async def apply_patch_tool(input: str) -> str:
        started = time.monotonic()
        try:
            patch = parse_patch(input)
        except PatchError as exc:
            raise RespondToModel(_model_error(exc)) from None
        if approvals is not None:
            request = ApprovalRequest(kind="patch", tool=name, paths=patch.paths(), patch=patch.text)
            if await approvals.check(request) is False:
                raise RespondToModel(f"{name}: the patch was not approved; no files were changed")
        try:
            result = await trio.to_thread.run_sync(apply_patch, root, patch)
        except PatchError as exc:
            raise RespondToModel(_model_error(exc)) from None
        duration = round(time.monotonic() - started, 1)
        return json.dumps(
            {"output": result.summary, "metadata": {"exit_code": 0, "duration_seconds": duration}},
            ensure_ascii=False,
        )

    return freeform_tool(
        apply_patch_tool,
        name=name,
        description=APPLY_PATCH_DESCRIPTION,
        format=FreeformToolFormat(type="grammar", syntax="lark", definition=APPLY_PATCH_LARK_GRAMMAR),
        parallel=False,
    )
