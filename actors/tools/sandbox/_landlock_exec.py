"""The Landlock launcher: confines itself, then becomes the command (``execvp``).

Run as ``python -I <this file> <spec> -- <argv...>``: isolated mode keeps the working directory
(the workspace), the script's directory and ``PYTHON*`` variables out, so nothing the command wrote
is imported before the sandbox is in place (``python -m actors.tools.sandbox._landlock_exec`` works
but is unsafe for that reason, and slow: it imports the whole package). It imports only the
standard library. ``<spec>`` is JSON:
``{"writable": [dirs], "protected": [names], "network": bool, "tmpdir": dir or null}``.

What it does: ``PR_SET_NO_NEW_PRIVS``; a Landlock ruleset handling every *write* right the running
ABI knows, granting them on each writable root (on its top-level entries one by one, all but the
protected ones, when a protected name such as ``.git`` exists there), on the devices a shell needs
and on a private temporary directory (the caller's ``tmpdir``, else one made here and named by
``TMPDIR``); every TCP bind and connect denied when the network is (ABI 4); signals (and, without
network, abstract unix sockets) scoped to the sandbox (ABI 6); ``landlock_restrict_self``; ``execvp``
with ``SIGPIPE`` and ``SIGXFSZ`` back to their defaults (Python ignores them). A command that cannot start exits 127 (not found) or 126 (not executable), as a shell
would; a sandbox that cannot be built exits 125 without running anything.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import signal
import stat
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any, Final

__all__ = [
    "abi_version",
    "write_access",
    "confine",
    "SYS_CREATE_RULESET",
    "SYS_ADD_RULE",
    "SYS_RESTRICT_SELF",
    "NETWORK_ABI",
    "SCOPE_ABI",
    "SETUP_FAILED",
    "TEMP_PREFIX",
    "main",
]

# Syscall numbers: the generic table (x86_64, aarch64, arm, riscv, i386, powerpc, s390: all 444-446).
SYS_CREATE_RULESET: Final = 444
SYS_ADD_RULE: Final = 445
SYS_RESTRICT_SELF: Final = 446

_CREATE_RULESET_VERSION: Final = 1 << 0
_RULE_PATH_BENEATH: Final = 1
_PR_SET_NO_NEW_PRIVS: Final = 38

# Filesystem rights (uapi/linux/landlock.h). Reading and executing are never handled: allowed everywhere.
_WRITE_FILE: Final = 1 << 1
_REMOVE_DIR: Final = 1 << 4
_REMOVE_FILE: Final = 1 << 5
_MAKE_CHAR: Final = 1 << 6
_MAKE_DIR: Final = 1 << 7
_MAKE_REG: Final = 1 << 8
_MAKE_SOCK: Final = 1 << 9
_MAKE_FIFO: Final = 1 << 10
_MAKE_BLOCK: Final = 1 << 11
_MAKE_SYM: Final = 1 << 12
_REFER: Final = 1 << 13  # ABI 2
_TRUNCATE: Final = 1 << 14  # ABI 3
_IOCTL_DEV: Final = 1 << 15  # ABI 5
_FILE_RIGHTS: Final = _WRITE_FILE | _TRUNCATE | _IOCTL_DEV
"""The rights a rule on a non-directory may carry (of those handled here)."""

_NET_BIND_TCP: Final = 1 << 0  # ABI 4
_NET_CONNECT_TCP: Final = 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET: Final = 1 << 0  # ABI 6
_SCOPE_SIGNAL: Final = 1 << 1

NETWORK_ABI: Final = 4
"""The first ABI that can deny TCP."""
SCOPE_ABI: Final = 6
"""The first ABI that can scope signals and abstract unix sockets."""
SETUP_FAILED: Final = 125
"""The exit status when the sandbox cannot be built (nothing was run)."""
TEMP_PREFIX: Final = "landlock-sandbox-"
"""Private temporary directories are ``$TMPDIR/landlock-sandbox-<pid>-*``, removed by a later
launcher once ``<pid>`` has exited."""

_DEVICES: Final = ("/dev/null", "/dev/zero", "/dev/full", "/dev/tty", "/dev/pts", "/dev/shm")


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]  # fmt: skip


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _syscall(number: int, *args: Any) -> int:
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    result: int = libc.syscall(ctypes.c_long(number), *args)
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def abi_version() -> int:
    """This kernel's Landlock ABI version. Raises :class:`OSError` (``ENOSYS``: no Landlock in the
    kernel; ``EOPNOTSUPP``: built in but disabled at boot)."""
    return _syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))


def write_access(abi: int) -> int:
    """Every write-type filesystem right ABI ``abi`` knows."""
    rights = _WRITE_FILE | _REMOVE_DIR | _REMOVE_FILE | _MAKE_CHAR | _MAKE_DIR | _MAKE_REG
    rights |= _MAKE_SOCK | _MAKE_FIFO | _MAKE_BLOCK | _MAKE_SYM
    if abi >= 2:
        rights |= _REFER
    if abi >= 3:
        rights |= _TRUNCATE
    if abi >= 5:
        rights |= _IOCTL_DEV
    return rights


def _grants(writable: Sequence[str], protected: Sequence[str]) -> Iterator[str]:
    """The paths to grant write rights beneath: each writable root, or, when one of the
    ``protected`` names exists at its top, its other top-level entries (symlinks skipped: a rule
    follows them to their target, which may be anywhere)."""
    for root in writable:
        if not os.path.isdir(root):
            continue
        if not any(os.path.lexists(os.path.join(root, name)) for name in protected):
            yield root
            continue
        with os.scandir(root) as entries:
            for entry in entries:
                if entry.name not in protected and not entry.is_symlink():
                    yield entry.path


def _add_rule(ruleset: int, path: str, rights: int, *, follow: bool = True) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW))
    except OSError:
        return  # gone since it was listed, or unreadable: nothing to grant
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISLNK(mode):
            return  # became a symlink since it was listed: its target may be anywhere
        if not stat.S_ISDIR(mode):
            rights &= _FILE_RIGHTS
        if rights:
            rule = _PathBeneathAttr(allowed_access=rights, parent_fd=fd)
            _syscall(SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH), ctypes.byref(rule), ctypes.c_uint32(0))  # fmt: skip
    finally:
        os.close(fd)


def _sweep_stale_temp(base: str) -> None:
    """Remove this user's private temporary directories whose launcher has exited."""
    with contextlib.suppress(OSError), os.scandir(base) as entries:
        for entry in entries:
            if not entry.name.startswith(TEMP_PREFIX):
                continue
            pid_text = entry.name[len(TEMP_PREFIX) :].split("-", 1)[0]
            try:
                info = entry.stat(follow_symlinks=False)
                if not pid_text.isdigit() or info.st_uid != os.getuid() or not stat.S_ISDIR(info.st_mode):
                    continue
                os.kill(int(pid_text), 0)
            except ProcessLookupError:
                shutil.rmtree(entry.path, ignore_errors=True)
            except OSError:
                continue  # alive (PermissionError: someone else's process), or vanished


def confine(writable: Sequence[str], protected: Sequence[str], network: bool, tmpdir: str | None = None) -> str | None:
    """Confine this process (and what it executes) for good. ``tmpdir``: a private directory the
    caller made, writable too; without one, a private directory is made here and returned (the
    caller points ``TMPDIR`` at it)."""
    abi = abi_version()
    if not network and abi < NETWORK_ABI:
        raise OSError(errno.ENOTSUP, f"Landlock ABI {abi} cannot deny the network (needs ABI {NETWORK_ABI})")
    made = None
    if tmpdir is None:
        base = tempfile.gettempdir()
        _sweep_stale_temp(base)
        made = tmpdir = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=base)
    rights = write_access(abi)
    attr = _RulesetAttr(handled_access_fs=rights)
    if not network:
        attr.handled_access_net = _NET_BIND_TCP | _NET_CONNECT_TCP  # no rules: every port denied
    if abi >= SCOPE_ABI:
        attr.scoped = _SCOPE_SIGNAL | (0 if network else _SCOPE_ABSTRACT_UNIX_SOCKET)
    ruleset = _syscall(SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0))  # fmt: skip
    try:
        for path in _grants(writable, protected):
            _add_rule(ruleset, path, rights, follow=False)
        for path in (*_DEVICES, tmpdir):
            _add_rule(ruleset, path, rights)
        no_new_privs = _libc().prctl(_PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))  # fmt: skip
        if no_new_privs != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(code)}")
        _syscall(SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0))
    finally:
        os.close(ruleset)
    return made


def main(args: Sequence[str]) -> int:
    """``<spec> -- <argv...>``: confine, then exec ``argv`` (returns only on failure)."""
    if len(args) < 3 or args[1] != "--":
        print("usage: _landlock_exec <json spec> -- <program> [args...]", file=sys.stderr)
        return SETUP_FAILED
    argv = list(args[2:])
    try:
        spec = json.loads(args[0])
        tmpdir = spec.get("tmpdir")
        private = confine(list(spec["writable"]), list(spec["protected"]), bool(spec["network"]), tmpdir)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        print(f"landlock sandbox: cannot confine the command, so it was not run: {exc}", file=sys.stderr)
        return SETUP_FAILED
    if private is not None:
        os.environ["TMPDIR"] = private
    for name in ("SIGPIPE", "SIGXFSZ"):  # Python ignores these; the command must not inherit that
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        print(f"{argv[0]}: command not found", file=sys.stderr)
        return 127
    except PermissionError as exc:
        print(f"{argv[0]}: permission denied ({exc.strerror})", file=sys.stderr)
        return 126
    except OSError as exc:
        print(f"{argv[0]}: cannot run: {exc.strerror or exc}", file=sys.stderr)
        return 126


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
