"""Approvals: when a built-in tool must ask before it acts, and who answers.

An :class:`Approvals` object pairs an :class:`ApprovalPolicy` with an :data:`Approver` — an async
callable the embedding application implements (a terminal prompt, a UI dialog, a rule engine):

* ``ApprovalPolicy.NEVER`` — never ask: every command and patch runs.
* ``ApprovalPolicy.UNTRUSTED`` — ask before any command that is not on the conservative read-only
  allow list (:func:`is_read_only_command`), before every patch, and whenever a tool call asks for
  escalated permissions.
* ``ApprovalPolicy.ON_REQUEST`` — ask only when the tool call itself asks for it (the shell tool's
  ``with_escalated_permissions: true`` argument, usually with a ``justification``).

Tools describe what they are about to do as an :class:`ApprovalRequest` and ``await
approvals.check(request)`` before doing it. A refusal raises :class:`~kernel.RespondToModel`: the
call's output tells the model that the action was not approved and that it should not retry it
blindly, and the turn goes on. Refusals include: the approver answering anything but ``True``; no
approver configured while approval is needed; the approver raising an exception (the message names
the error). Cancellation while the approver waits propagates (an interrupted turn is not a refusal).

Example::

    async def ask_user(request: ApprovalRequest) -> bool:
        answer = await trio.to_thread.run_sync(input, f"{request.reason}\\nRun {request.describe()}? [y/N] ")
        return answer.strip().lower() == "y"

    approvals = Approvals(ApprovalPolicy.UNTRUSTED, ask_user)
    shell = make_shell_tool("/path/to/workspace", approvals=approvals)

The policies decide *when to ask*; they are not a sandbox. Nothing here confines what an approved
(or never-asked) command does.
"""

from __future__ import annotations

import enum
import re
import shlex
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Literal

import attrs

from kernel.tools import RespondToModel

__all__ = [
    "ApprovalPolicy",
    "ApprovalRequest",
    "Approver",
    "Approvals",
    "is_read_only_command",
]


class ApprovalPolicy(str, enum.Enum):
    """When a tool asks before it acts (the values are the command-line spellings)."""

    NEVER = "never"
    """Never ask: run every command and apply every patch."""
    UNTRUSTED = "untrusted"
    """Ask before any command not on the read-only allow list, before every patch, and whenever
    a call asks for escalated permissions."""
    ON_REQUEST = "on-request"
    """Ask only when the tool call asks for it (``with_escalated_permissions: true``)."""

    def __str__(self) -> str:
        return self.value


def _str_tuple(value: Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError("expected a sequence of strings, not one string")
    return tuple(str(v) for v in value)


@attrs.frozen(kw_only=True)
class ApprovalRequest:
    """What a tool is about to do, for the approver to judge.

    ``kind`` is ``"exec"`` (run ``command`` in ``cwd``) or ``"patch"`` (apply ``patch``, touching
    ``paths``). ``tool`` is the tool's name; ``call_id`` the model's call id if the tool knows it
    (otherwise ``""``). ``escalated`` says whether the call asked for escalated permissions, with
    the model's ``justification``. ``reason`` says why approval is asked; :meth:`Approvals.check`
    fills it in when the tool left it empty.
    """

    kind: Literal["exec", "patch"]
    tool: str
    call_id: str = ""
    command: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    cwd: str = ""
    paths: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    patch: str = ""
    escalated: bool = False
    justification: str | None = None
    reason: str = ""

    def describe(self) -> str:
        """A short human-readable description: ``the command `ls -la` `` or ``the patch to a.py,
        b.py``."""
        if self.kind == "exec":
            return f"the command `{_display_command(self.command)}`"
        if self.paths:
            shown = ", ".join(self.paths[:5])
            more = f" and {len(self.paths) - 5} more" if len(self.paths) > 5 else ""
            return f"the patch to {shown}{more}"
        return "the patch"


Approver = Callable[[ApprovalRequest], Awaitable[bool]]
"""An async callable that answers an :class:`ApprovalRequest`: ``True`` approves; anything else
(``False``, ``None``, a truthy non-``True`` value) refuses. An exception refuses too."""

_DO_NOT_RETRY: Final = "do not retry it, ask the user or try something else"


class Approvals:
    """An approval policy and the approver that answers when the policy says to ask.

    ``approver`` may be ``None``: then nothing that needs approval can run (with
    ``ApprovalPolicy.NEVER`` nothing needs it).
    """

    def __init__(self, policy: ApprovalPolicy | str = ApprovalPolicy.NEVER, approver: Approver | None = None) -> None:
        self.policy = ApprovalPolicy(policy)
        self.approver = approver

    def __repr__(self) -> str:
        return f"Approvals({self.policy.value!r}, approver={self.approver!r})"

    def reason_for(self, request: ApprovalRequest) -> str | None:
        """Why ``request`` needs approval under this policy, or ``None`` if it does not."""
        policy = self.policy
        if policy is ApprovalPolicy.NEVER:
            return None
        if request.escalated:
            why = "the tool call asked for escalated permissions"
            if request.justification:
                why += f" ({request.justification})"
            return why
        if policy is ApprovalPolicy.ON_REQUEST:
            return None
        # UNTRUSTED
        if request.kind == "patch":
            return "every patch needs approval (approval policy: untrusted)"
        if is_read_only_command(request.command):
            return None
        return "the command is not on the read-only allow list (approval policy: untrusted)"

    def needs_approval(self, request: ApprovalRequest) -> bool:
        """Whether ``request`` must be approved before it runs. Pure; never asks anyone."""
        return self.reason_for(request) is not None

    async def check(self, request: ApprovalRequest) -> None:
        """Return if ``request`` may go ahead; raise :class:`~kernel.RespondToModel` if not.

        Asks the approver only when :meth:`needs_approval`; the approver receives ``request``
        with ``reason`` filled in. Refused when the approver answers anything but ``True``, when
        there is no approver, or when it raises (the message names the error). ``trio.Cancelled``
        while the approver waits propagates. Does not checkpoint when no approval is needed.
        """
        reason = self.reason_for(request)
        if reason is None:
            return
        if not request.reason:
            request = attrs.evolve(request, reason=reason)
        what = request.describe()
        if self.approver is None:
            raise RespondToModel(
                f"approval required but no approver is available: {what} was not run "
                f"({request.reason}); {_DO_NOT_RETRY}"
            )
        try:
            answer = await self.approver(request)
        except Exception as exc:
            raise RespondToModel(
                f"approval failed: the approver raised {type(exc).__name__}: {exc}; {what} was not run; {_DO_NOT_RETRY}"
            ) from exc
        if answer is not True:
            raise RespondToModel(f"rejected by user: {what} was not approved; {_DO_NOT_RETRY}")


def _display_command(command: Sequence[str], limit: int = 300) -> str:
    """The command as a user would type it: the script of ``bash -lc <script>``, else shell-quoted."""
    if len(command) == 3 and _shell_name(command[0]) and command[1] in _SHELL_C_FLAGS:
        text = command[2]
    else:
        text = shlex.join(command)
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


# =============================================================================================
# The read-only allow list
# =============================================================================================

_SHELLS: Final = frozenset({"bash", "sh", "zsh", "dash"})
_SHELL_C_FLAGS: Final = frozenset({"-c", "-lc", "-cl"})
_BIN_DIRS: Final = ("/bin/", "/usr/bin/", "/usr/local/bin/")

# Commands with no option that writes a file or runs another program: any arguments are fine
# (including unquoted globs in a script, which may expand to any file name).
_ANY_ARGS: Final = frozenset(
    {
        "ls", "cat", "head", "tail", "wc", "pwd", "echo", "stat", "which", "nl", "true",
        "false", "grep", "egrep", "fgrep", "basename", "dirname", "realpath", "readlink", "du",
        "df", "whoami", "id", "uname", "cmp", "diff", "cut", "tr", "tac", "rev", "test", "[",
        "printf", "md5sum", "sha1sum", "sha256sum", "cd",
    }
)  # fmt: skip

_FIND_UNSAFE: Final = frozenset(
    {"-exec", "-execdir", "-ok", "-okdir", "-delete", "-fls", "-fprint", "-fprint0", "-fprintf"}
)
_RG_UNSAFE_LONG: Final = ("--pre", "--hostname-bin", "--search-zip")
_GIT_READ: Final = frozenset(
    {"status", "log", "diff", "show", "blame", "ls-files", "rev-parse", "describe", "shortlog"}
)
_GIT_BRANCH_FLAGS: Final = frozenset(
    {"-a", "-r", "-v", "-vv", "-l", "--list", "--all", "--remotes", "--verbose", "--show-current",
     "--no-color", "--color", "--no-abbrev"}
)  # fmt: skip
_SED_SCRIPT_RE: Final = re.compile(r"^\s*(?:(?:\d+|\$)(?:\s*,\s*(?:\d+|\$))?\s*p\s*;?\s*)+$")
_NAME_ASSIGN_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def is_read_only_command(argv: Sequence[str]) -> bool:
    """Whether ``argv`` is on the conservative read-only allow list (run without asking under
    ``ApprovalPolicy.UNTRUSTED``).

    Allowed: ``ls``, ``cat``, ``head``, ``tail``, ``wc``, ``grep``, ``pwd``, ``echo``, ``stat``,
    ``file``, ``which``, ``diff`` and similar commands with any arguments; ``find`` without
    ``-exec``/``-execdir``/``-ok``/``-okdir``/``-delete``/``-fls``/``-fprint*``; ``rg`` without
    ``--pre``/``--hostname-bin``/``--search-zip``/``-z``; ``sort`` without ``-o``; ``sed -n`` with
    only line-printing scripts (``10,20p``); ``git status|log|diff|show|blame|ls-files|rev-parse|
    describe|shortlog`` (without ``--output``/``--ext-diff``) and read forms of ``git branch``;
    ``python --version``. The program must be a bare name or live in ``/bin``, ``/usr/bin`` or
    ``/usr/local/bin``.

    ``bash -lc <script>`` (also ``-c``, and ``sh``/``zsh``/``dash``) is split on ``&&``, ``||``,
    ``;`` and ``|``; every part must be allowed. Any redirection (``>``, ``>>``, ``<``…),
    background ``&``, subshell, command or process substitution, variable expansion (``$``),
    backticks or ``NAME=value`` prefix makes it not read-only. Unquoted globs are accepted only for
    the commands that take any arguments (a glob may expand to a file named like an option).

    The list judges the command line only: it trusts the machine's programs and the repository's
    own configuration (git, for one, may run diff or textconv drivers configured there).
    """
    argv = list(argv)
    if not argv:
        return False
    if len(argv) == 3 and _shell_name(argv[0]) and argv[1] in _SHELL_C_FLAGS:
        commands = _parse_script(argv[2])
        if not commands:
            return False
        return all(_command_is_read_only([w for w, _ in cmd], any(g for _, g in cmd)) for cmd in commands)
    return _command_is_read_only(argv, False)


def _shell_name(program: str) -> bool:
    return _program_name(program) in _SHELLS


def _program_name(program: str) -> str | None:
    """The command name of a bare or standard-location program, else ``None``."""
    if "/" not in program:
        return program
    for directory in _BIN_DIRS:
        if program.startswith(directory) and "/" not in program[len(directory) :]:
            return program[len(directory) :]
    return None


def _command_is_read_only(argv: list[str], has_glob: bool) -> bool:
    name = _program_name(argv[0]) if argv else None
    if not name:
        return False
    args = argv[1:]
    if name in _ANY_ARGS:
        return True
    if has_glob:
        return False
    if name == "find":
        return not any(a in _FIND_UNSAFE for a in args)
    if name == "rg":
        for a in args:
            if a == "--":
                break
            if a.startswith("--"):
                if any(a == u or a.startswith(u + "=") for u in _RG_UNSAFE_LONG):
                    return False
            elif a.startswith("-") and "z" in a:
                return False
        return True
    if name == "file":  # -C / --compile writes a magic file
        return not any(a == "--compile" or (a.startswith("-") and not a.startswith("--") and "C" in a) for a in args)
    if name == "sort":  # -o / --output writes; --compress-program runs a program
        return not any(
            a.startswith(("--output", "--compress-program"))
            or (a.startswith("-") and not a.startswith("--") and "o" in a)
            for a in args
        )
    if name == "sed":
        return _sed_is_read_only(args)
    if name == "git":
        return _git_is_read_only(args)
    if name in ("python", "python3"):
        return args in (["--version"], ["-V"])
    return False


def _sed_is_read_only(args: list[str]) -> bool:
    quiet = False
    script: str | None = None
    files: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-n", "--quiet", "--silent"):
            quiet = True
        elif a in ("-E", "-r", "--regexp-extended"):
            pass
        elif a == "-e" and i + 1 < len(args) and script is None:
            script = args[i + 1]
            i += 1
        elif a.startswith("-"):
            return False  # -i (in place) and anything else
        elif script is None:
            script = a
        else:
            files.append(a)
        i += 1
    return quiet and script is not None and bool(_SED_SCRIPT_RE.match(script))


def _git_is_read_only(args: list[str]) -> bool:
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] == "--no-pager":
            i += 1
        elif args[i] == "-C" and i + 1 < len(args):
            i += 2
        else:
            return False  # -c key=value and other global options can run programs
    if i >= len(args):
        return False
    sub, rest = args[i], args[i + 1 :]
    if sub in _GIT_READ:
        return not any(
            a.startswith("--output") or a in ("--ext-diff", "--exec") or a.startswith("--exec=") for a in rest
        )
    if sub == "branch":
        listing = False
        for a in rest:
            if a in ("-l", "--list"):
                listing = True
            elif (
                a in _GIT_BRANCH_FLAGS
                or a.startswith("--contains")
                or a.startswith("--merged")
                or a.startswith("--no-merged")
            ):
                continue
            elif a.startswith("-") or not listing:
                return False  # -d, -m, -D, a new branch name, …
        return True
    return False


# --- a small POSIX-shell tokenizer: words and control operators, nothing fancier -------------

_OPERATOR_CHARS: Final = frozenset("&|;<>()")
_SEPARATORS: Final = frozenset({"&&", "||", ";", "|"})
_GLOB_CHARS: Final = frozenset("*?[{")


def _parse_script(script: str) -> list[list[tuple[str, bool]]] | None:
    """Split a shell script into commands of ``(word, has_unquoted_glob)``, or ``None`` when it
    uses anything but plain words, quotes and the separators ``&&``, ``||``, ``;``, ``|``."""
    tokens = _tokenize(script)
    if tokens is None:
        return None
    commands: list[list[tuple[str, bool]]] = []
    current: list[tuple[str, bool]] = []
    dangling = False  # the last thing was `&&`, `||` or `|`: a command must follow
    for kind, text, glob in tokens:
        if kind == "op":
            if text not in _SEPARATORS:
                return None  # redirection, `&`, subshell, `;;`, …
            if not current:
                if text == ";":
                    continue  # a blank line (newlines are `;`), or a newline after `&&`
                return None  # `&& ls`, `ls | | cat`
            commands.append(current)
            current = []
            dangling = text != ";"
        else:
            if not current and _NAME_ASSIGN_RE.match(text):
                return None  # FOO=bar cmd: the environment can change what a program does
            current.append((text, glob))
            dangling = False
    if current:
        commands.append(current)
    if dangling:
        return None
    return commands


def _tokenize(script: str) -> list[tuple[str, str, bool]] | None:
    tokens: list[tuple[str, str, bool]] = []
    i, n = 0, len(script)
    word: list[str] = []
    in_word = False
    glob = False

    def flush() -> None:
        nonlocal in_word, glob
        if in_word:
            tokens.append(("word", "".join(word), glob))
        word.clear()
        in_word = False
        glob = False

    while i < n:
        c = script[i]
        if c in " \t":
            flush()
            i += 1
        elif c == "\n":
            flush()
            tokens.append(("op", ";", False))
            i += 1
        elif c == "#" and not in_word:
            while i < n and script[i] != "\n":
                i += 1
        elif c in _OPERATOR_CHARS:
            flush()
            j = i + 1
            while (
                j < n
                and script[j] in _OPERATOR_CHARS
                and script[i : j + 1] in ("&&", "||", ">>", "<<", ";;", "|&", "&>", ">&", "<&", "<>")
            ):
                j += 1
            tokens.append(("op", script[i:j], False))
            i = j
        elif c == "'":
            end = script.find("'", i + 1)
            if end < 0:
                return None
            word.append(script[i + 1 : end])
            in_word = True
            i = end + 1
        elif c == '"':
            i += 1
            in_word = True
            while True:
                if i >= n:
                    return None
                d = script[i]
                if d == '"':
                    i += 1
                    break
                if d in "$`":
                    return None
                if d == "\\" and i + 1 < n and script[i + 1] in '"\\$`\n':
                    word.append(script[i + 1])
                    i += 2
                    continue
                word.append(d)
                i += 1
        elif c == "\\":
            if i + 1 >= n:
                return None
            if script[i + 1] != "\n":
                word.append(script[i + 1])
                in_word = True
            i += 2
        elif c in "$`":
            return None
        else:
            if c in _GLOB_CHARS:
                glob = True  # `*?[` name files, `{a,b}` builds words: either may make `-delete`
            word.append(c)
            in_word = True
            i += 1
    flush()
    return tokens
