"""Telling a sandbox denial apart from an ordinary failure (after codex's ``is_likely_sandbox_denied``)."""

from __future__ import annotations

from typing import Final

__all__ = ["likely_denied"]

_DENIAL_MARKERS: Final = (
    "read-only file system",
    "operation not permitted",
    "permission denied",
    "network is unreachable",
    "temporary failure in name resolution",
    "name or service not known",
    "could not resolve host",
    "cannot assign requested address",
)


def likely_denied(exit_code: int, output: str) -> bool:
    """Whether a sandboxed command that exited with ``exit_code`` and printed ``output`` was probably
    stopped by the sandbox (a write outside the writable roots, the network): it failed and its
    output names one of the errors the sandbox causes."""
    if exit_code == 0:
        return False
    text = output.lower()
    return any(marker in text for marker in _DENIAL_MARKERS)
