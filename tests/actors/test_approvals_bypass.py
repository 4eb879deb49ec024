"""The `untrusted` allow list played as an attacker would: abbreviated long options (`sort --out=`),
options that run programs (`sort --compress-prog=sh`, `rg --pre`, `find -exec`), option clusters
and `--opt=value` forms; a model of GNU ``getopt_long`` checks that whatever the list accepts parses
to safe options only; and the bypasses run for real through the shell tool."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, strategies as st

from actors.tools.approvals import ApprovalPolicy, ApprovalRequest, Approvals, is_read_only_command
from actors.tools.builtin.shell import make_shell_tool
from kernel import RespondToModel

# --- the bypasses, one by one ----------------------------------------------------------------

BYPASSES = [
    # sort: abbreviations of --output / --compress-program / --temporary-directory, short forms
    ["sort", "--out=../x", "f"],
    ["sort", "--outp=../x", "f"],
    ["sort", "--o=../x", "f"],
    ["sort", "--out", "../x", "f"],
    ["sort", "--output=../x", "f"],
    ["sort", "f", "--output", "../x"],
    ["sort", "-o../x", "f"],
    ["sort", "-uo", "../x", "f"],
    ["sort", "-nro", "../x", "f"],
    ["sort", "--compress-prog=sh", "f"],
    ["sort", "--compress-program=sh", "f"],
    ["sort", "--comp", "sh", "f"],
    ["sort", "--temporary-directory=..", "f"],
    ["sort", "--tem=..", "f"],
    ["sort", "-T", "..", "f"],
    ["sort", "-uT..", "f"],
    ["sort", "--files0-from=list"],
    ["sort", "--reverse=yes", "f"],  # a flag given a value: not a form we know
    ["sort", "-y", "x", "f"],  # obsolete, unknown to the list
    ["sort", "--", "--out=../x"],  # conservative: `--` does not end the check
    ["bash", "-lc", "sort --out=../x f"],
    ["bash", "-lc", "cat f | sort --compress-prog=sh -S 1"],
    # file: --compile writes a .mgc, -z runs decompressors, -p touches access times
    ["file", "--compile", "-m", "magic"],
    ["file", "--comp", "-m", "magic"],
    ["file", "-C", "-m", "magic"],
    ["file", "-bC", "-m", "magic"],
    ["file", "-m", "magic", "-C"],
    ["file", "-z", "x.gz"],
    ["file", "-Z", "x.gz"],
    ["file", "--uncompress", "x.gz"],
    ["file", "-p", "x"],
    ["file", "--preserve-date", "x"],
    ["file", "-S", "x"],
    ["file", "--no-sandbox", "x"],
    ["file", "--mime-t", "x"],  # even an abbreviation of a safe option asks
    # rg: --pre / --hostname-bin run programs, -z runs decompressors
    ["rg", "--pre=sh", "foo"],
    ["rg", "--pre", "sh", "foo"],
    ["rg", "--pr=sh", "foo"],
    ["rg", "--pre-glob=*", "--pre=sh", "foo"],
    ["rg", "--pre-glob", "*", "foo"],
    ["rg", "--hostname-bin=./x", "foo"],
    ["rg", "--hostname=./x", "foo"],
    ["rg", "-z", "foo"],
    ["rg", "-iz", "foo"],
    ["rg", "-nz", "foo"],
    ["rg", "--search-zip", "foo"],
    ["rg", "--search-z", "foo"],
    ["rg", "foo", "--pre=sh"],
    ["rg", "-e", "foo", "--pre", "sh"],
    ["rg", "--unknown-option", "foo"],
    # find: actions that run or write, and anything not known
    ["find", ".", "-exec", "sh", "-c", "x", ";"],
    ["find", ".", "-execdir", "rm", "{}", "+"],
    ["find", ".", "-ok", "rm", "{}", ";"],
    ["find", ".", "-okdir", "rm", "{}", ";"],
    ["find", ".", "-delete"],
    ["find", ".", "-name", "x", "-delete"],
    ["find", ".", "-fls", "../x"],
    ["find", ".", "-fprint", "../x"],
    ["find", ".", "-fprint0", "../x"],
    ["find", ".", "-fprintf", "../x", "%p"],
    ["find", ".", "-files0-from", "list"],
    ["find", "-D", "exec", "."],
    ["find", "-O3", "."],
    ["find", ".", "-name", "-delete"],  # conservative: every word is judged
    # sed: anything but -n with line-printing scripts
    ["sed", "-n", "--in-place", "1p", "x"],
    ["sed", "-n", "-i.bak", "1p", "x"],
    ["sed", "-ni", "1p", "x"],
    ["sed", "-n", "--expression=w out", "x"],
    ["sed", "-n", "-e", "1p", "-e", "w out", "x"],
    ["sed", "-n", "-f", "script.sed", "x"],
    ["sed", "-n", "1p", "--", "x"],
    ["sed", "-n", "1w out", "x"],
    ["sed", "-n", "1e touch x", "x"],
    # git: writing, external programs, config
    ["git", "diff", "--output=../x"],
    ["git", "diff", "--output", "../x"],
    ["git", "diff", "--out=../x"],
    ["git", "log", "-p", "--outp=../x"],
    ["git", "show", "--ext-diff"],
    ["git", "diff", "--ext"],
    ["git", "show", "--textconv"],
    ["git", "-c", "core.pager=sh", "log"],
    ["git", "-c", "diff.external=./x", "diff"],
    ["git", "--config-env=core.pager=X", "log"],
    ["git", "--exec-path=.", "status"],
    ["git", "--git-dir=../other/.git", "log"],
    ["git", "--work-tree=..", "status"],
    ["git", "-p", "log"],
    ["git", "log", "--help"],  # may start a browser
    ["git", "log", "-c"],
    ["git", "status", "-sbz", "--porcelain", "--output=x"],
    ["git", "branch", "--set-upstream-to=origin/x"],
    ["git", "branch", "-c", "a", "b"],
    ["git", "branch", "-l", "new"],  # older git: -l was --create-reflog
    ["git", "branch", "new", "--list"],
    ["git", "fetch"],
    ["git", "config", "core.pager"],
    # printf: bash's builtin `printf -v` assigns a variable
    ["printf", "-v", "PATH", "."],
    ["bash", "-lc", "printf -v PATH . && ls"],
    # python: only the version
    ["python", "-V", "-c", "1"],
]


@pytest.mark.parametrize("argv", BYPASSES, ids=lambda a: " ".join(a))
def test_bypass_is_not_read_only(argv: list[str]) -> None:
    assert is_read_only_command(argv) is False


STILL_READ_ONLY = [
    ["sort", "-k2,2", "-t,", "-n", "-r", "f"],
    ["sort", "-k", "2", "-t", ":", "-u", "f"],
    ["sort", "--key=2", "--field-separator=:", "--numeric-sort", "f"],
    ["sort", "--check=quiet", "f"],
    ["sort", "-S", "1M", "--parallel=2", "f", "-"],
    ["sort", "-nrk3", "f"],
    ["file", "-b", "--mime-type", "x"],
    ["file", "-bL", "--", "x"],
    ["file", "-f", "list", "-F", ":"],
    ["rg", "-n", "-i", "--glob", "*.py", "-e", "foo"],
    ["rg", "-A3", "-B", "2", "--no-heading", "foo", "src"],
    ["rg", "--files", "--hidden", "--type=py"],
    ["rg", "-e", "-foo"],
    ["find", ".", "-type", "f", "-mtime", "-1", "-size", "+10k", "-print"],
    ["find", ".", "-newermt", "2020-01-01", "!", "-name", "*.pyc", "-o", "-perm", "-644"],
    ["find", "-L", ".", "-maxdepth", "2", "-printf", "%p\\n"],
    ["git", "log", "--format=%H", "-n5", "--", "src"],
    ["git", "log", "-n", "5", "--author=alice", "--since=2.weeks"],
    ["git", "diff", "--stat", "--cached", "-U0"],
    ["git", "status", "-sb", "--porcelain=v2", "-uno"],
    ["git", "shortlog", "-sn"],
    ["git", "rev-parse", "--show-toplevel"],
    ["git", "rev-parse", "--abbrev-ref", "HEAD"],
    ["git", "describe", "--tags", "--always", "--dirty"],
    ["git", "blame", "-L", "1,10", "x.py"],
    ["git", "branch", "--contains=HEAD"],
    ["git", "branch", "--merged", "main"],
    ["git", "branch", "--show-current"],
    ["git", "-C", "sub", "--no-pager", "diff", "--name-only"],
    ["printf", "%s\\n", "a"],
    ["bash", "-lc", "sort -u f | head -n 3 && git log --oneline -3"],
]


@pytest.mark.parametrize("argv", STILL_READ_ONLY, ids=lambda a: " ".join(a))
def test_safe_forms_stay_read_only(argv: list[str]) -> None:
    assert is_read_only_command(argv) is True


# --- properties: every spelling of a dangerous option asks ------------------------------------

SAFE_CONTEXT: dict[str, list[list[str]]] = {
    "sort": [[], ["-n"], ["-k2,2"], ["-t", ":"], ["--reverse"], ["f"], ["-", "g"]],
    "file": [[], ["-b"], ["--mime-type"], ["-L"], ["x"], ["-F", ":"]],
    "rg": [[], ["-n"], ["-i"], ["--hidden"], ["foo"], ["-e", "foo"], ["src"]],
    "git log": [[], ["--oneline"], ["-p"], ["-n5"], ["HEAD~1"], ["--", "src"]],
    "git diff": [[], ["--stat"], ["--cached"], ["HEAD"], ["--", "x.py"]],
    "git show": [[], ["--stat"], ["HEAD"]],
}

# (command, dangerous long option, the shortest prefix that must still ask). GNU getopt takes any
# unambiguous prefix; ripgrep and git take exact names only, but must ask for prefixes all the same.
# `--textconv` stops at `--textc`: `git diff --text` is a different, safe option.
DANGEROUS_LONG = [
    ("sort", "--output", 3),
    ("sort", "--compress-program", 3),
    ("sort", "--temporary-directory", 3),
    ("file", "--compile", 3),
    ("file", "--uncompress", 3),
    ("file", "--preserve-date", 3),
    ("file", "--no-sandbox", 3),
    ("rg", "--pre", 3),
    ("rg", "--pre-glob", 3),
    ("rg", "--hostname-bin", 3),
    ("rg", "--search-zip", 3),
    ("git log", "--output", 3),
    ("git diff", "--output", 3),
    ("git diff", "--ext-diff", 3),
    ("git show", "--ext-diff", 3),
    ("git diff", "--textconv", 7),
]


@st.composite
def with_dangerous_long(draw: st.DrawFn) -> list[str]:
    command, option, shortest = draw(st.sampled_from(DANGEROUS_LONG))
    spelled = option[: draw(st.integers(min_value=shortest, max_value=len(option)))]
    value = draw(st.sampled_from(["../x", "sh", "./evil", "-", "x=y", ""]))
    form = draw(st.sampled_from(["equals", "next", "bare"]))
    words = {"equals": [f"{spelled}={value}"], "next": [spelled, value], "bare": [spelled]}[form]
    before = draw(st.sampled_from(SAFE_CONTEXT[command]))
    after = draw(st.sampled_from(SAFE_CONTEXT[command]))
    return [*command.split(), *before, *words, *after]


@given(with_dangerous_long())
def test_every_spelling_of_a_dangerous_long_option_asks(argv: list[str]) -> None:
    assert is_read_only_command(argv) is False
    assert is_read_only_command(["bash", "-lc", " ".join(f"'{w}'" for w in argv)]) is False


# Short options that write or run, and the flags (no value) they may be clustered with.
DANGEROUS_SHORT = [
    ("sort", "oT", "bcCdfghiMmnRrsuVz"),
    ("file", "CzZpS", "bcdEhikLlNnrsv0"),
    ("rg", "z", "abcFHhIiLlNnoPpqSsUuVvwx0"),
]


@st.composite
def with_dangerous_cluster(draw: st.DrawFn) -> list[str]:
    command, dangerous, flags = draw(st.sampled_from(DANGEROUS_SHORT))
    cluster = draw(st.lists(st.sampled_from(flags), max_size=5))
    cluster.insert(draw(st.integers(0, len(cluster))), draw(st.sampled_from(dangerous)))
    tail = draw(st.sampled_from(["", "../x", "sh"]))  # an attached value, for -o../x
    operands = draw(st.lists(st.sampled_from(["f", "../x", "-", "--"]), max_size=3))
    return [command, *operands[:1], "-" + "".join(cluster) + tail, *operands[1:]]


@given(with_dangerous_cluster())
def test_a_dangerous_letter_in_any_cluster_asks(argv: list[str]) -> None:
    assert is_read_only_command(argv) is False


FIND_DANGEROUS = ["-exec", "-execdir", "-ok", "-okdir", "-delete", "-fls", "-fprint", "-fprint0", "-fprintf"]


@given(
    st.sampled_from(FIND_DANGEROUS),
    st.text(alphabet="0adfirtxe_", max_size=4),
    st.lists(st.sampled_from([".", "-name", "*.py", "-type", "f", "!", "(", ")", "-print"]), max_size=4),
)
def test_find_actions_and_their_variants_ask(action: str, suffix: str, context: list[str]) -> None:
    cut = len(context) // 2
    assert is_read_only_command(["find", *context[:cut], action + suffix, *context[cut:]]) is False


@given(st.sampled_from(["-c", "--config-env", "--exec-path", "--git-dir", "--work-tree", "-p", "--paginate"]))
def test_git_global_options_that_can_run_programs_ask(option: str) -> None:
    for value in (["core.pager=sh"], [], ["x"]):
        assert is_read_only_command(["git", option, *value, "log"]) is False
        assert is_read_only_command(["git", "--no-pager", option, *value, "diff"]) is False


# --- a model of GNU getopt_long: what the real program would parse -----------------------------

# (long name, has_arg: 0 none / 1 required / 2 optional, the short letter or "" if none)
SORT_LONG = [
    ("ignore-leading-blanks", 0, "b"), ("check", 2, ""), ("compress-program", 1, ""),
    ("debug", 0, ""), ("dictionary-order", 0, "d"), ("ignore-case", 0, "f"), ("files0-from", 1, ""),
    ("general-numeric-sort", 0, "g"), ("ignore-nonprinting", 0, "i"), ("key", 1, "k"),
    ("merge", 0, "m"), ("month-sort", 0, "M"), ("numeric-sort", 0, "n"),
    ("human-numeric-sort", 0, "h"), ("version-sort", 0, "V"), ("random-sort", 0, "R"),
    ("random-source", 1, ""), ("sort", 1, ""), ("output", 1, "o"), ("reverse", 0, "r"),
    ("stable", 0, "s"), ("batch-size", 1, ""), ("buffer-size", 1, "S"), ("field-separator", 1, "t"),
    ("temporary-directory", 1, "T"), ("unique", 0, "u"), ("zero-terminated", 0, "z"),
    ("parallel", 1, ""), ("help", 0, ""), ("version", 0, ""),
]  # fmt: skip
SORT_SHORT = "bcCdfghik:mMno:rRsS:t:T:uVy:z"
SORT_DANGEROUS = {"o", "output", "compress-program", "T", "temporary-directory"}

FILE_LONG = [
    ("help", 0, ""), ("version", 0, "v"), ("magic-file", 1, "m"), ("uncompress", 0, "z"),
    ("uncompress-noreport", 0, "Z"), ("brief", 0, "b"), ("checking-printout", 0, "c"),
    ("exclude", 1, "e"), ("exclude-quiet", 1, ""), ("files-from", 1, "f"), ("separator", 1, "F"),
    ("mime", 0, "i"), ("apple", 0, ""), ("extension", 0, ""), ("mime-type", 0, ""),
    ("mime-encoding", 0, ""), ("keep-going", 0, "k"), ("list", 0, "l"), ("dereference", 0, "L"),
    ("no-dereference", 0, "h"), ("no-buffer", 0, "n"), ("no-pad", 0, "N"), ("print0", 0, "0"),
    ("preserve-date", 0, "p"), ("parameter", 1, "P"), ("raw", 0, "r"), ("special-files", 0, "s"),
    ("no-sandbox", 0, "S"), ("compile", 0, "C"), ("debug", 0, "d"),
]  # fmt: skip
FILE_SHORT = "bcCde:Ef:F:hiklLm:nNpP:rsSvzZ0"
FILE_DANGEROUS = {
    "C",
    "compile",
    "z",
    "uncompress",
    "Z",
    "uncompress-noreport",
    "p",
    "preserve-date",
    "S",
    "no-sandbox",
}


def getopt_long(args: list[str], short: str, long: list[tuple[str, int, str]]) -> list[str]:
    """The options GNU getopt_long (permuting, abbreviations allowed) parses from ``args`` before
    it stops, each as its long name, or its letter when it has none; a usage error stops it."""
    parsed: list[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        i += 1
        if word == "--":
            break
        if word.startswith("--"):
            name, eq, _ = word[2:].partition("=")
            exact = [o for o in long if o[0] == name]
            found = exact or [o for o in long if o[0].startswith(name)]
            if len(found) != 1:
                break  # unknown or ambiguous: usage error
            opt, has_arg, _letter = found[0]
            if has_arg == 0 and eq:
                break
            if has_arg == 1 and not eq:
                if i >= len(args):
                    break
                i += 1
            parsed.append(opt)
        elif word.startswith("-") and word != "-":
            for j, letter in enumerate(word[1:], start=1):
                at = short.find(letter)
                if at < 0 or letter == ":":
                    return parsed  # invalid option: usage error
                parsed.append(letter)
                if short[at + 1 : at + 2] == ":":
                    if j == len(word) - 1:
                        i += 1  # the value is the next word
                    break
    return parsed


VOCABULARY_EXTRA = ["--", "-", "f", "../x", "sh", "=", "-x", "-Q", "--bogus", "--=x", "-1"]


def vocabulary(short: str, long: list[tuple[str, int, str]]) -> st.SearchStrategy[str]:
    letters = [c for c in short if c != ":"] + list("aAoTxyQ")
    return st.one_of(
        st.sampled_from(VOCABULARY_EXTRA),
        st.builds(lambda cs: "-" + "".join(cs), st.lists(st.sampled_from(letters), min_size=1, max_size=4)),
        st.builds(
            lambda o, n, v: f"--{o[0][: max(1, n)]}" + (f"={v}" if v is not None else ""),
            st.sampled_from(long),
            st.integers(1, 25),
            st.none() | st.sampled_from(["../x", "sh", "2", ""]),
        ),
    )


@given(st.lists(vocabulary(SORT_SHORT, SORT_LONG), max_size=6))
def test_what_the_list_accepts_sort_parses_to_safe_options(args: list[str]) -> None:
    if is_read_only_command(["sort", *args]):
        assert not SORT_DANGEROUS & set(getopt_long(args, SORT_SHORT, SORT_LONG)), args


@given(st.lists(vocabulary(FILE_SHORT, FILE_LONG), max_size=6))
def test_what_the_list_accepts_file_parses_to_safe_options(args: list[str]) -> None:
    if is_read_only_command(["file", *args]):
        assert not FILE_DANGEROUS & set(getopt_long(args, FILE_SHORT, FILE_LONG)), args


def test_the_getopt_model_sees_the_bypasses() -> None:
    """The model is not vacuous: it finds the options the old check missed."""
    assert "output" in getopt_long(["--out=../x", "f"], SORT_SHORT, SORT_LONG)
    assert "compress-program" in getopt_long(["--compress-prog=sh"], SORT_SHORT, SORT_LONG)
    assert "o" in getopt_long(["-nro", "../x"], SORT_SHORT, SORT_LONG)
    assert "o" not in getopt_long(["-ko", "f"], SORT_SHORT, SORT_LONG)  # -k's value
    assert "compile" in getopt_long(["--comp", "-m", "m"], FILE_SHORT, FILE_LONG)


# --- the attacker runs for real through the shell tool ----------------------------------------


class Refuser:
    """An approver that records what it was asked and refuses (or approves, when told to)."""

    def __init__(self, answer: bool = False) -> None:
        self.answer = answer
        self.requests: list[ApprovalRequest] = []

    async def __call__(self, request: ApprovalRequest) -> bool:
        await trio.lowlevel.checkpoint()
        self.requests.append(request)
        return self.answer


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "somefile").write_text("b\na\nc\n")
    return ws


def compress_payload(workspace: Path, marker: Path) -> None:
    """A file that, sorted with ``--compress-program=sh`` and a tiny buffer, makes sort feed
    ``touch MARKER`` lines to ``sh``."""
    lines = [f"touch {marker}"] * 500 + [": " + "a" * 60] * 3000
    (workspace / "payload.txt").write_text("\n".join(lines) + "\n")


ATTACKS = [
    ["sort", "--out=../x", "somefile"],
    ["bash", "-lc", "sort --out=../x somefile"],
    ["sort", "--compress-prog=sh", "-S", "1", "payload.txt"],
    ["bash", "-lc", "sort -S 1 --compress-prog=sh payload.txt"],
    ["file", "--comp", "-m", "../x"],
]


@pytest.mark.parametrize("sandbox", ["workspace-write", "danger-full-access"])
@pytest.mark.parametrize("command", ATTACKS, ids=lambda a: " ".join(a))
async def test_refused_bypass_runs_nothing(workspace: Path, sandbox: str, command: list[str]) -> None:
    outside = workspace.parent / "x"
    marker = workspace.parent / "pwned"
    compress_payload(workspace, marker)
    approver = Refuser()
    shell = make_shell_tool(workspace, approvals=Approvals(ApprovalPolicy.UNTRUSTED, approver), sandbox=sandbox)
    with pytest.raises(RespondToModel, match="^rejected by user: the command"):
        await shell(command)
    (asked,) = approver.requests
    assert asked.command == tuple(command)
    assert "read-only allow list" in asked.reason
    assert not outside.exists()
    assert not marker.exists()
    assert not (workspace.parent / "x.mgc").exists()
    assert sorted(p.name for p in workspace.iterdir()) == ["payload.txt", "somefile"]


async def run(tool: Any, command: list[str]) -> dict[str, Any]:
    result = await tool(command)
    assert isinstance(result, str)
    decoded: dict[str, Any] = json.loads(result)
    return decoded


async def test_the_bypasses_are_real_when_approved_without_a_sandbox(workspace: Path) -> None:
    """The control: approved and unsandboxed, the same command lines do write and run."""
    outside = workspace.parent / "x"
    marker = workspace.parent / "pwned"
    compress_payload(workspace, marker)
    approver = Refuser(answer=True)
    shell = make_shell_tool(
        workspace, approvals=Approvals(ApprovalPolicy.UNTRUSTED, approver), sandbox="danger-full-access"
    )
    await run(shell, ["sort", "--out=../x", "somefile"])
    assert outside.read_text() == "a\nb\nc\n"
    await run(shell, ["sort", "--compress-prog=sh", "-S", "1", "payload.txt"])
    assert marker.exists()
    assert len(approver.requests) == 2


async def test_read_only_commands_still_run_unasked(workspace: Path) -> None:
    approver = Refuser()
    shell = make_shell_tool(workspace, approvals=Approvals(ApprovalPolicy.UNTRUSTED, approver))
    result = await run(shell, ["bash", "-c", "sort -r -k1,1 somefile | head -n 2"])
    assert result["output"] == "c\nb\n"
    assert result["metadata"]["exit_code"] == 0
    assert approver.requests == []
