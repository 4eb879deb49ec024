"""Matching: where an update's chunks go in a file's lines (codex's ``seek_sequence``), the new
text they make (:func:`apply_chunks`), and the errors that show the closest lines when they do not
match."""

from __future__ import annotations

import collections
import difflib
from collections.abc import Iterable, Sequence
from typing import Final

from ._values import PatchError, UpdateChunk

__all__ = ["apply_chunks"]

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


def apply_chunks(text: str, chunks: Sequence[UpdateChunk], path: str) -> str:
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
