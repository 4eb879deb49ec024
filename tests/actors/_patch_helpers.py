"""Helpers shared by the apply_patch tests."""

from __future__ import annotations

import os
from pathlib import Path


def wrap(*body: str) -> str:
    return "\n".join(["*** Begin Patch", *body, "*** End Patch"]) + "\n"


def snapshot(root: Path) -> dict[str, tuple[str, bytes | str, int]]:
    """Every entry under ``root``: kind, bytes (or link target), mtime in ns."""
    out: dict[str, tuple[str, bytes | str, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            st_ = p.lstat()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p), st_.st_mtime_ns)
            elif p.is_dir():
                out[rel] = ("dir", b"", 0)
            else:
                out[rel] = ("file", p.read_bytes(), st_.st_mtime_ns)
    return out
