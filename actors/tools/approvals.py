"""Approvals: when a built-in or MCP tool must ask before it acts, and who answers.

An :class:`Approvals` object pairs an :class:`ApprovalPolicy` with an :data:`Approver` — an async
callable the embedding application implements (a terminal prompt, a UI dialog, a rule engine).

Approvals are layered on the sandbox, as in codex. The shell tool runs every command inside its
sandbox (:mod:`actors.tools.sandbox`; by default ``workspace-write``: writes only to the workspace
and a private ``/tmp``, no network); the policy decides when to *ask* — before running a command at
all, and before running one *outside* the sandbox:

* ``ApprovalPolicy.ON_REQUEST`` (the usual default) — commands run in the sandbox without asking;
  asks only when a call asks to run outside it (the shell tool's ``with_escalated_permissions:
  true``, usually with a ``justification``), or to re-run outside a command the sandbox blocked.
* ``ApprovalPolicy.UNTRUSTED`` — asks before every command that is not on a strict read-only allow
  list (:func:`is_read_only_command`), before every patch, and before anything runs outside the
  sandbox. An approved command still runs in the sandbox unless it asked to leave it.
* ``ApprovalPolicy.NEVER`` — never asks, and nothing leaves the sandbox: the shell tool refuses
  ``with_escalated_permissions`` itself, before approvals are consulted.

So the sandbox confines what a command does, approved or not; approvals add a human decision on
top (and are the only guard under ``danger-full-access``, where the sandbox is off).

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
    """When a tool asks before it acts (the values are the command-line spellings).

    Layered on the shell tool's sandbox (:mod:`actors.tools.sandbox`): the sandbox confines every
    command; the policy says when a human is asked first, and whether a command may leave it.
    """

    NEVER = "never"
    """Never ask: every command runs in the sandbox and every patch is applied; a call asking to
    run outside the sandbox is refused (by the shell tool)."""
    UNTRUSTED = "untrusted"
    """Ask before any command not on the strict read-only allow list (:func:`is_read_only_command`),
    before every patch, before every MCP tool call whose server does not mark the tool read-only,
    and whenever a call asks to run outside the sandbox. Approved commands still run in the
    sandbox unless they asked to leave it."""
    ON_REQUEST = "on-request"
    """Run commands in the sandbox without asking; ask only when a call asks to run outside it
    (``with_escalated_permissions: true``), to re-run outside a command the sandbox blocked, or to
    call an MCP tool its server marks destructive (``destructiveHint``)."""

    def __str__(self) -> str:
        return self.value


def _str_tuple(value: Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError("expected a sequence of strings, not one string")
    return tuple(str(v) for v in value)


@attrs.frozen(kw_only=True)
class ApprovalRequest:
    """What a tool is about to do, for the approver to judge.

    ``kind`` is ``"exec"`` (run ``command`` in ``cwd``), ``"patch"`` (apply ``patch``, touching
    ``paths``) or ``"mcp"`` (call the MCP tool ``tool`` of ``server`` with the JSON ``arguments``;
    ``hints`` are the annotations the server gave it: ``"read-only"``, ``"destructive"``,
    ``"idempotent"``, ``"open-world"``, each prefixed ``"not "`` when the server said false).
    ``tool`` is the tool's name; ``call_id`` the model's call id if the tool knows it (otherwise
    ``""``). ``escalated`` says whether the call asked for escalated permissions, with the model's
    ``justification``. ``reason`` says why approval is asked; :meth:`Approvals.check` fills it in
    when the tool left it empty.
    """

    kind: Literal["exec", "patch", "mcp"]
    tool: str
    call_id: str = ""
    command: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    cwd: str = ""
    paths: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    patch: str = ""
    escalated: bool = False
    justification: str | None = None
    reason: str = ""
    server: str = ""
    arguments: str = ""
    hints: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)

    def describe(self) -> str:
        """A short human-readable description: ``the command `ls -la` ``, ``the patch to a.py,
        b.py`` or ``the MCP tool `search` of server `docs```."""
        if self.kind == "exec":
            return f"the command `{_display_command(self.command)}`"
        if self.kind == "mcp":
            return f"the MCP tool `{self.tool}` of server `{self.server}`"
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
        if request.kind == "mcp":
            return _mcp_reason(policy, request.hints)
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


def _mcp_reason(policy: ApprovalPolicy, hints: Sequence[str]) -> str | None:
    """Why an MCP tool call needs approval: under ``on-request`` when its server says it is
    destructive (and not read-only), under ``untrusted`` unless its server says it is read-only."""
    if "read-only" in hints:
        return None
    if policy is ApprovalPolicy.ON_REQUEST:
        return "the MCP server says this tool may be destructive" if "destructive" in hints else None
    return "MCP tools not marked read-only need approval (approval policy: untrusted)"


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

# Commands with no option that writes a file or runs another program (checked against each GNU
# program's options): any arguments are fine, including unquoted globs in a script, which may
# expand to any file name. (``diff -l`` pipes through the fixed ``pr``; ``tail -f`` only waits.)
_ANY_ARGS: Final = frozenset(
    {
        "ls", "cat", "head", "tail", "wc", "pwd", "echo", "stat", "which", "nl", "true",
        "false", "grep", "egrep", "fgrep", "basename", "dirname", "realpath", "readlink", "du",
        "df", "whoami", "id", "uname", "cmp", "diff", "cut", "tr", "tac", "rev", "test", "[",
        "md5sum", "sha1sum", "sha256sum", "cd",
    }
)  # fmt: skip


@attrs.frozen
class _Options:
    """The options with which a command stays read-only, in GNU ``getopt_long`` syntax.

    Only what is listed passes: an unknown short option (alone or in a cluster), any long option
    not spelled out in full (GNU accepts unambiguous abbreviations: ``--out`` is ``--output``)
    and ``--name=value`` for a name not in ``long_valued`` make the command not read-only.
    ``valued`` letters must really take a value: the rest of their word is skipped as that value.
    """

    flags: str = ""
    """Short options without a value (may be clustered: ``-nr``)."""
    valued: str = ""
    """Short options with a value: the rest of the word (``-k1,2``) or the next word."""
    long_flags: frozenset[str] = frozenset()
    """Long options without a value, ``--name``."""
    long_valued: frozenset[str] = frozenset()
    """Long options with a value, ``--name=value`` or ``--name value``."""


def _words(names: str) -> frozenset[str]:
    return frozenset(names.split())


# GNU sort. Not: -o/--output (writes FILE), --compress-program (runs PROG), -T/--temporary-directory
# (writes temporaries where told), --files0-from and --random-source (read names/bytes from a file).
_SORT: Final = _Options(
    flags="bcCdfghiMmnRrsuVz",
    valued="kSt",
    long_flags=_words(
        "ignore-leading-blanks dictionary-order ignore-case general-numeric-sort ignore-nonprinting "
        "month-sort human-numeric-sort numeric-sort random-sort reverse version-sort check merge "
        "stable unique zero-terminated debug help version"
    ),
    long_valued=_words("sort key field-separator buffer-size parallel batch-size check"),
)

# file(1). Not: -C/--compile (writes a .mgc), -m/--magic-file, -z/-Z (run decompressors),
# -p/--preserve-date (sets access times), -S/--no-sandbox.
_FILE: Final = _Options(
    flags="bcdEhikLlNnrsv0",
    valued="eFfP",
    long_flags=_words(
        "help version brief checking-printout mime apple extension mime-type mime-encoding "
        "keep-going list dereference no-dereference no-buffer no-pad print0 raw special-files debug"
    ),
    long_valued=_words("exclude exclude-quiet files-from separator parameter"),
)

# ripgrep. Not: --pre/--pre-glob (run a preprocessor), --hostname-bin (runs a program),
# -z/--search-zip (runs decompressors), nor anything else not listed.
_RG: Final = _Options(
    flags="abcFHhIiLlNnoPpqSsUuVvwx0",
    valued="ABCEefgjMmrTt",
    long_flags=_words(
        "ignore-case case-sensitive smart-case line-number no-line-number count count-matches "
        "files-with-matches files-without-match files fixed-strings word-regexp line-regexp "
        "invert-match only-matching hidden no-hidden no-ignore no-ignore-vcs no-ignore-parent "
        "no-ignore-dot no-ignore-global no-ignore-exclude no-ignore-files follow no-follow "
        "with-filename no-filename heading no-heading column no-column json vimgrep pretty quiet "
        "text multiline multiline-dotall pcre2 no-messages null null-data sort-files stats trim "
        "unrestricted byte-offset crlf debug help version type-list no-config passthru "
        "one-file-system"
    ),
    long_valued=_words(
        "regexp file glob iglob type type-not max-count max-depth max-filesize max-columns "
        "after-context before-context context context-separator field-match-separator "
        "field-context-separator replace threads encoding color colors sort sortr ignore-file "
        "path-separator engine regex-size-limit dfa-size-limit type-add"
    ),
)

# GNU find: tests and printing actions (a value such as `-1` or `-644` is a word of its own).
# Not: -exec/-execdir/-ok/-okdir (run programs), -delete, -fls/-fprint/-fprint0/-fprintf (write
# files), -files0-from, -D, -O, nor anything else not listed.
_FIND_WORDS: Final = _words(
    "-print -print0 -printf -ls -prune -quit -true -false -depth -mount -xdev -noleaf -follow "
    "-daystart -ignore_readdir_race -noignore_readdir_race -nowarn -warn -empty -executable "
    "-readable -writable -nogroup -nouser -not -and -or -a -o -H -L -P -name -iname -path -ipath "
    "-wholename -iwholename -regex -iregex -regextype -type -xtype -size -perm -user -group -uid "
    "-gid -links -inum -samefile -newer -anewer -cnewer -mtime -atime -ctime -mmin -amin -cmin "
    "-used -maxdepth -mindepth -lname -ilname -fstype -context"
)
_FIND_WORD_RE: Final = re.compile(r"-newer[aBcmt][aBcmt]|-\d+[a-zA-Z]?", re.ASCII)

# git: these subcommands with only these options (each word whole: no clusters, no abbreviations).
# Not: --output (writes), --ext-diff/--textconv (run configured programs), -c (config), …
_GIT_READ: Final = frozenset(
    {"status", "log", "diff", "show", "blame", "ls-files", "rev-parse", "describe", "shortlog"}
)
_GIT_READ_FLAGS: Final = _words(
    "-p -u -s -w -b -z -q -v -a -t -r -e -M -C -B -R -S -G -D -W -L -n -o -m -d -i -k "
    "-sb -sn -ns -sne -uno -uall -unormal "
    "--oneline --stat --numstat --shortstat --summary --name-only --name-status --patch --no-patch "
    "--raw --graph --decorate --no-decorate --all --branches --tags --remotes --follow --reverse "
    "--no-merges --merges --first-parent --abbrev-commit --no-abbrev-commit --cached --staged "
    "--ignore-all-space --ignore-space-change --ignore-blank-lines --ignore-space-at-eol "
    "--ignore-cr-at-eol --word-diff --color --no-color --no-ext-diff --no-textconv --full-index "
    "--binary --minimal --patience --histogram --find-renames --find-copies --no-renames --short "
    "--long --branch --porcelain --untracked-files --ignored --show-stash --ahead-behind "
    "--no-ahead-behind --verbose --null --others --modified --deleted --exclude-standard "
    "--error-unmatch --full-name --stage --unmerged --killed --directory --show-toplevel "
    "--abbrev-ref --verify --quiet --git-dir --absolute-git-dir --git-common-dir "
    "--is-inside-work-tree --is-inside-git-dir --is-bare-repository --show-prefix --show-cdup "
    "--symbolic-full-name --symbolic --always --dirty --exact-match --contains --numbered --email "
    "--show-email --line-porcelain --incremental --root --show-name --show-number --relative-date "
    "--date-order --topo-order --author-date-order --left-right --cherry-pick --cherry-mark "
    "--boundary --no-walk --simplify-by-decoration --full-diff --relative --text --check"
)
_GIT_READ_VALUED: Final = _words(
    "format pretty date author committer grep since until after before max-count skip stat "
    "relative abbrev diff-filter diff-algorithm word-diff word-diff-regex color decorate unified "
    "untracked-files porcelain ignore-submodules ignored short abbrev-ref match exclude dirty "
    "candidates max-parents min-parents find-renames find-copies"
)
_GIT_NUMBER_RE: Final = re.compile(r"-(?:n|U)?\d+", re.ASCII)
_GIT_BRANCH_FLAGS: Final = _words(
    "-a -r -v -vv -l --all --remotes --verbose --show-current --no-color --color --no-abbrev "
    "--list --contains --no-contains --merged --no-merged --points-at"
)
_GIT_BRANCH_VALUED: Final = _words("contains no-contains merged no-merged points-at sort format color abbrev")
_GIT_BRANCH_LISTING: Final = _words(
    "--list --contains --no-contains --merged --no-merged --points-at"
)  # git lists (never creates) with these: a word after them is a pattern or their value
_SED_SCRIPT_RE: Final = re.compile(r"^\s*(?:(?:\d+|\$)(?:\s*,\s*(?:\d+|\$))?\s*p\s*;?\s*)+$", re.ASCII)
_NAME_ASSIGN_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def is_read_only_command(argv: Sequence[str]) -> bool:
    """Whether ``argv`` is on the strict read-only allow list (run without asking under
    ``ApprovalPolicy.UNTRUSTED``).

    Allowed with any arguments: ``ls``, ``cat``, ``head``, ``tail``, ``wc``, ``grep``, ``pwd``,
    ``echo``, ``stat``, ``which``, ``diff``, ``cmp`` and similar commands that have no option
    that writes or runs a program; ``printf`` without options (bash's ``printf -v`` sets a
    variable). With only the options known to be safe, every one spelled out in full (as codex's
    ``is_safe_command`` does; an abbreviation such as ``sort --out=FILE``, an unknown option or an
    unknown letter in a cluster makes the command not read-only): ``sort`` (no ``-o``,
    ``--compress-program``, ``-T``), ``file`` (no ``-C``, ``-z``, ``-p``), ``rg`` (no ``--pre``,
    ``--hostname-bin``, ``-z``), ``find`` (tests and ``-print*``/``-ls`` only: no ``-exec*``,
    ``-ok*``, ``-delete``, ``-fprint*``, ``-fls``); ``sed -n`` with only line-printing scripts
    (``10,20p``); ``git status|log|diff|show|blame|ls-files|rev-parse|describe|shortlog`` and read
    forms of ``git branch`` (global options: only ``--no-pager`` and ``-C DIR``); ``python
    --version``. Every word is checked, even after ``--`` or where the program would take it as
    an option's value (so ``rg -- -x`` asks). The program must be a bare name or live in ``/bin``,
    ``/usr/bin`` or ``/usr/local/bin``.

    ``bash -lc <script>`` (also ``-c``, and ``sh``/``zsh``/``dash``) is split on ``&&``, ``||``,
    ``;`` and ``|``; every part must be allowed. Any redirection (``>``, ``>>``, ``<``…),
    background ``&``, subshell, command or process substitution, variable expansion (``$``),
    backticks or ``NAME=value`` prefix makes it not read-only. Unquoted globs are accepted only for
    the commands that take any arguments (a glob may expand to a file named like an option).

    The list judges the command line only: it limits what a command *writes or runs*, not what
    it reads (the sandbox hides other processes' ``/proc``), and it trusts the machine's programs,
    the environment and the repository's own configuration (git, for one, may run diff, textconv
    or fsmonitor programs configured there; the sandbox still confines them).
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
    if name == "printf":  # bash's builtin `printf -v NAME` assigns a variable (PATH, …)
        return not (args and args[0].startswith("-"))
    if name == "sort":
        return _options_are_safe(args, _SORT)
    if name == "file":
        return _options_are_safe(args, _FILE)
    if name == "rg":
        return _options_are_safe(args, _RG)
    if name == "find":
        return all(not a.startswith("-") or a in _FIND_WORDS or _FIND_WORD_RE.fullmatch(a) for a in args)
    if name == "sed":
        return _sed_is_read_only(args)
    if name == "git":
        return _git_is_read_only(args)
    if name in ("python", "python3"):
        return args in (["--version"], ["-V"])
    return False


def _options_are_safe(args: list[str], spec: _Options) -> bool:
    """Whether every option in ``args`` is one ``spec`` lists (see :class:`_Options`).

    No word is ever skipped as the value of the option before it, and ``--`` does not end the
    check: a word the program takes as a value may be judged as an option (and make the command
    ask), but a word the program takes as an option is always judged as one.
    """
    for arg in args:
        if arg in ("-", "--") or not arg.startswith("-"):
            continue  # standard input, the end of options, or an operand
        if arg.startswith("--"):
            name, eq, _ = arg[2:].partition("=")
            if eq:
                if name not in spec.long_valued:
                    return False
            elif name not in spec.long_flags and name not in spec.long_valued:
                return False
            continue
        for letter in arg[1:]:
            if letter in spec.valued:
                break  # the rest of the word is its value
            if letter not in spec.flags:
                return False
    return True


def _sed_is_read_only(args: list[str]) -> bool:
    quiet = False
    script: str | None = None
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-n", "--quiet", "--silent"):
            quiet = True
        elif a in ("-E", "-r", "--regexp-extended"):
            pass
        elif a == "-e" and i + 1 < len(args) and script is None:
            script = args[i + 1]  # checked below: only line-printing commands
            i += 1
        elif a.startswith("-"):
            return False  # -i (in place), -f, --expression=, a second script, `--`, …
        elif script is None:
            script = a
        # else: a file to read
        i += 1
    return quiet and script is not None and bool(_SED_SCRIPT_RE.match(script))


def _git_is_read_only(args: list[str]) -> bool:
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] == "--no-pager":
            i += 1
        elif args[i] == "-C" and i + 1 < len(args):
            i += 2  # git always takes the next word as the directory
        else:
            return False  # -c key=value, --exec-path, --git-dir, … can run programs
    if i >= len(args):
        return False
    sub, rest = args[i], args[i + 1 :]
    if sub in _GIT_READ:
        return all(_git_word_is_safe(a, _GIT_READ_FLAGS, _GIT_READ_VALUED) for a in rest)
    if sub == "branch":
        listing = False
        for a in rest:
            if not a.startswith("-"):
                if not listing:
                    return False  # a new branch name
            elif not _git_word_is_safe(a, _GIT_BRANCH_FLAGS, _GIT_BRANCH_VALUED):
                return False  # -d, -m, -D, -c, --set-upstream-to, …
            elif a.partition("=")[0] in _GIT_BRANCH_LISTING:
                listing = True
        return True
    return False


def _git_word_is_safe(arg: str, flags: frozenset[str], valued: frozenset[str]) -> bool:
    if arg == "--" or not arg.startswith("-"):
        return True  # the end of options, a revision or a path
    if arg.startswith("--") and "=" in arg:
        return arg[2:].partition("=")[0] in valued
    return arg in flags or bool(_GIT_NUMBER_RE.fullmatch(arg))


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
