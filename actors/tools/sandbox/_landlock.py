"""The Landlock backend: the fallback where bubblewrap cannot make namespaces (Linux 5.13+).

Each command is started by a small launcher (:mod:`._landlock_exec`, standard library only) that
restricts itself with Landlock, then ``exec``\\ s the command, which keeps the restriction, as does
everything it starts. The launcher runs by its file path under ``python -I``: neither the working
directory nor the script's is on ``sys.path`` and ``PYTHON*`` variables are ignored, so no module
the command left in the workspace runs before the sandbox is in place (``python -m`` would import
a workspace ``json.py``, unconfined). What it enforces:

* **Writes**: only beneath the writable roots, a private temporary directory (the caller's, else
  one the launcher makes and names in ``TMPDIR``; ``/tmp`` itself is not writable), ``/dev/null``,
  ``/dev/zero``, ``/dev/full``, ``/dev/tty``, ``/dev/pts`` and ``/dev/shm`` (the last shared with
  this user's other processes). ``read-only`` writes only
  the temporary directory and those devices.
* **``.git`` stays read-only**: Landlock only grants, never takes away, so a root whose top holds a
  protected name gets its *other* top-level entries granted one by one (symlinks skipped). The price:
  in such a root (a git checkout), files and directories cannot be created, removed or renamed at
  the top level itself; existing top-level files can be rewritten, and everything beneath the
  top-level directories works. A root without ``.git`` is granted whole.
* **Network**: with the network denied, every TCP ``bind`` and ``connect`` fails (ABI 4, so
  :func:`landlock_problem` refuses older kernels), and so does reaching an abstract unix socket
  outside the sandbox (ABI 6). UDP (DNS included) and pathname unix sockets are *not* covered by Landlock.
* **Processes**: no signals to processes outside the sandbox (ABI 6); no ``ptrace`` of them, nor
  reading their memory (``/proc/<pid>/mem``); ``PR_SET_NO_NEW_PRIVS``.

What it does not do, and why bubblewrap is preferred: reading stays allowed everywhere. Landlock
cannot hide ``/proc``: every process is listed, and the ``environ`` and ``maps`` of this user's
processes stay readable — this process's included, so a secret in its *initial* environment can be
read by a command (``os.environ.pop`` does not change ``/proc/<pid>/environ``), which is why the
environment policy and the scrubbing of tool output still matter. There is no PID namespace: a
command that leaves its process group (``setsid``) survives the call.
"""

from __future__ import annotations

import errno
import functools
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from . import _landlock_exec
from ._landlock_exec import NETWORK_ABI
from ._policy import PROTECTED_NAMES, SandboxPolicy

__all__ = ["landlock_abi", "landlock_problem", "landlock_argv"]

_LAUNCHER = str(Path(_landlock_exec.__file__).resolve())


@functools.cache
def _probe() -> tuple[int, str | None]:
    """(ABI version, ``None``), or (0, why Landlock cannot run here): asks the kernel once."""
    if not sys.platform.startswith("linux"):
        return 0, f"Landlock needs Linux (this is {sys.platform})"
    try:
        return _landlock_exec.abi_version(), None
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            return 0, "this kernel has no Landlock (it needs Linux 5.13+ built with CONFIG_SECURITY_LANDLOCK)"
        if exc.errno == errno.EOPNOTSUPP:
            return 0, "Landlock is built into this kernel but disabled (add landlock to the lsm= boot parameter)"
        return 0, f"Landlock cannot be used here ({exc.strerror or exc})"


def landlock_abi() -> int:
    """This kernel's Landlock ABI version (0: no Landlock)."""
    return _probe()[0]


def landlock_problem(policy: SandboxPolicy) -> str | None:
    """Why Landlock cannot enforce ``policy`` here (``None`` when it can)."""
    abi, problem = _probe()
    if problem is not None:
        return problem
    if not policy.network and abi < NETWORK_ABI:
        return (
            f"this kernel's Landlock (ABI {abi}) cannot deny the network, which the {policy.mode.value!r} "
            f"policy requires (it needs ABI {NETWORK_ABI}: Linux 6.7+)"
        )
    return None


def landlock_argv(
    policy: SandboxPolicy, workspace: Path, argv: Sequence[str], *, tmpdir: Path | None = None
) -> list[str]:
    """The command line that runs ``argv`` confined by Landlock under ``policy`` (the working
    directory is the caller's to set). ``tmpdir``: a private directory the caller made (and
    removes), writable too; without it the launcher makes one under ``$TMPDIR`` and points
    ``TMPDIR`` at it (a later launcher removes it once the command has exited)."""
    spec = {
        "writable": [str(root) for root in policy.writable(workspace)],
        "protected": list(PROTECTED_NAMES),
        "network": policy.network,
        "tmpdir": None if tmpdir is None else str(tmpdir),
    }
    return [sys.executable, "-I", _LAUNCHER, json.dumps(spec), "--", *argv]
