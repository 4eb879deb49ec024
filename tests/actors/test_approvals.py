"""Approvals: each policy × read-only / mutating command × escalation × approver (yes, no, absent,
raising), patches, the refusal texts the model sees, and the read-only allow list."""

from __future__ import annotations

import pytest
import trio

from actors.tools.approvals import ApprovalPolicy, ApprovalRequest, Approvals, is_read_only_command
from kernel import RespondToModel

READ_ONLY = ("bash", "-lc", "ls -la && cat README.md")
MUTATING = ("bash", "-lc", "rm -rf build")


class Recorder:
    """An approver that answers as told and remembers what it was asked."""

    def __init__(self, answer: object = True, error: Exception | None = None) -> None:
        self.answer = answer
        self.error = error
        self.requests: list[ApprovalRequest] = []

    async def __call__(self, request: ApprovalRequest) -> bool:
        await trio.lowlevel.checkpoint()
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        return self.answer  # type: ignore[return-value]


def expected_needs(policy: ApprovalPolicy, read_only: bool, escalated: bool) -> bool:
    if policy is ApprovalPolicy.NEVER:
        return False
    if escalated:
        return True
    if policy is ApprovalPolicy.ON_REQUEST:
        return False
    return not read_only


@pytest.mark.parametrize("policy", list(ApprovalPolicy))
@pytest.mark.parametrize("read_only", [True, False])
@pytest.mark.parametrize("escalated", [False, True])
@pytest.mark.parametrize("approver", ["yes", "no", "absent", "raising"])
async def test_exec_policy_matrix(policy: ApprovalPolicy, read_only: bool, escalated: bool, approver: str) -> None:
    recorder = {
        "yes": Recorder(True),
        "no": Recorder(False),
        "absent": None,
        "raising": Recorder(error=ValueError("boom")),
    }[approver]
    approvals = Approvals(policy, recorder)
    request = ApprovalRequest(
        kind="exec",
        tool="shell",
        call_id="call_7",
        command=READ_ONLY if read_only else MUTATING,
        cwd="/ws",
        escalated=escalated,
        justification="needs the network" if escalated else None,
    )
    needs = expected_needs(policy, read_only, escalated)
    assert approvals.needs_approval(request) is needs
    if not needs or approver == "yes":
        await approvals.check(request)
    else:
        with pytest.raises(RespondToModel) as info:
            await approvals.check(request)
        message = info.value.message
        shown = "ls -la && cat README.md" if read_only else "rm -rf build"
        assert f"`{shown}`" in message
        assert "do not retry it" in message
        if approver == "no":
            assert message.startswith("rejected by user: the command")
            assert "was not approved" in message
        elif approver == "absent":
            assert "no approver is available" in message
        else:
            assert "ValueError: boom" in message
    if isinstance(recorder, Recorder):
        if needs:
            (asked,) = recorder.requests
            assert asked.call_id == "call_7" and asked.command == request.command
            assert asked.reason  # filled in by check()
            if escalated:
                assert "escalated" in asked.reason and "needs the network" in asked.reason
        else:
            assert recorder.requests == []


@pytest.mark.parametrize(
    ("policy", "needs"),
    [(ApprovalPolicy.NEVER, False), (ApprovalPolicy.UNTRUSTED, True), (ApprovalPolicy.ON_REQUEST, False)],
)
async def test_patch_policies(policy: ApprovalPolicy, needs: bool) -> None:
    request = ApprovalRequest(kind="patch", tool="apply_patch", paths=("a.py", "b/c.py"), patch="*** Begin Patch\n")
    assert Approvals(policy).needs_approval(request) is needs
    recorder = Recorder(False)
    if needs:
        with pytest.raises(RespondToModel, match=r"^rejected by user: the patch to a\.py, b/c\.py was not approved"):
            await Approvals(policy, recorder).check(request)
        assert recorder.requests[0].reason.startswith("every patch needs approval")
    else:
        await Approvals(policy, recorder).check(request)
        assert recorder.requests == []


async def test_only_true_approves() -> None:
    request = ApprovalRequest(kind="exec", tool="shell", command=MUTATING)
    for answer in (None, 1, "yes", False):
        with pytest.raises(RespondToModel, match="rejected by user"):
            await Approvals("untrusted", Recorder(answer)).check(request)


async def test_reason_given_by_tool_is_kept_and_policy_accepts_strings() -> None:
    recorder = Recorder(True)
    approvals = Approvals("on-request", recorder)
    assert approvals.policy is ApprovalPolicy.ON_REQUEST
    await approvals.check(ApprovalRequest(kind="exec", tool="shell", command=("ls",), escalated=True, reason="custom"))
    assert recorder.requests[0].reason == "custom"
    with pytest.raises(ValueError):
        Approvals("sometimes")


async def test_cancellation_while_asking_propagates() -> None:
    async def never(request: ApprovalRequest) -> bool:
        await trio.sleep_forever()
        raise AssertionError

    with trio.move_on_after(0.01) as scope:
        await Approvals(ApprovalPolicy.UNTRUSTED, never).check(
            ApprovalRequest(kind="exec", tool="shell", command=MUTATING)
        )
    assert scope.cancelled_caught


def test_describe_and_request_shape() -> None:
    req = ApprovalRequest(kind="exec", tool="shell", command=["git", "commit", "-m", "a b"])
    assert req.command == ("git", "commit", "-m", "a b")
    assert req.describe() == "the command `git commit -m 'a b'`"
    many = ApprovalRequest(kind="patch", tool="apply_patch", paths=[f"f{i}" for i in range(7)])
    assert many.describe() == "the patch to f0, f1, f2, f3, f4 and 2 more"
    with pytest.raises(TypeError):
        ApprovalRequest(kind="exec", tool="shell", command="ls -la")
    assert str(ApprovalPolicy.ON_REQUEST) == "on-request"


READ_ONLY_CASES = [
    ["ls"],
    ["ls", "-la", "src"],
    ["/bin/ls"],
    ["cat", "x"],
    ["head", "-n", "5", "x"],
    ["tail", "-n", "5", "x"],
    ["wc", "-l", "x"],
    ["grep", "-rn", "foo", "."],
    ["rg", "-n", "foo"],
    ["find", ".", "-name", "*.py"],
    ["pwd"],
    ["echo", "hi"],
    ["stat", "x"],
    ["file", "x"],
    ["which", "python"],
    ["git", "status"],
    ["git", "log", "--oneline", "-5"],
    ["git", "diff", "HEAD~1"],
    ["git", "show", "HEAD"],
    ["git", "branch"],
    ["git", "branch", "-a", "-v"],
    ["git", "branch", "--list", "feat*"],
    ["git", "--no-pager", "log"],
    ["git", "-C", "sub", "status"],
    ["python", "--version"],
    ["python3", "-V"],
    ["sed", "-n", "1,20p", "x.py"],
    ["sed", "-n", "$p", "x.py"],
    ["sort", "-u", "x"],
    ["bash", "-lc", "ls && cat x"],
    ["bash", "-lc", "ls || pwd; echo done"],
    ["bash", "-lc", "cat x | grep foo | wc -l"],
    ["bash", "-c", "ls *.py"],
    ["sh", "-c", "grep -n 'a > b' x"],
    ["bash", "-lc", 'echo "quoted; words" && ls'],
    ["bash", "-lc", "cd src && ls\nfind . -name '*.rs'"],
    ["bash", "-lc", "ls &&\n  cat x"],
    ["/usr/bin/bash", "-lc", "ls"],
    ["bash", "-lc", "sed -n '10,20p' x"],
]

NOT_READ_ONLY_CASES = [
    [],
    ["rm", "-rf", "build"],
    ["./ls"],
    ["/tmp/ls"],
    ["touch", "x"],
    ["find", ".", "-delete"],
    ["find", ".", "-exec", "rm", "{}", ";"],
    ["find", ".", "-fprint", "out"],
    ["rg", "--pre", "sh", "foo"],
    ["rg", "-z", "foo"],
    ["rg", "--search-zip", "foo"],
    ["sed", "-i", "s/a/b/", "x"],
    ["sed", "-n", "w out", "x"],
    ["sed", "s/a/b/", "x"],
    ["sort", "-o", "out", "x"],
    ["file", "-C", "-m", "magic"],
    ["git", "commit", "-m", "x"],
    ["git", "push"],
    ["git", "branch", "-D", "main"],
    ["git", "branch", "new-feature"],
    ["git", "-c", "core.pager=sh", "log"],
    ["git", "diff", "--output=patch.txt"],
    ["git"],
    ["python", "script.py"],
    ["python", "-c", "print(1)"],
    ["xargs", "rm"],
    ["bash", "-lc", "ls > out"],
    ["bash", "-lc", "ls >> out"],
    ["bash", "-lc", "ls 2>/dev/null"],
    ["bash", "-lc", "cat < x"],
    ["bash", "-lc", "echo $(rm -rf x)"],
    ["bash", "-lc", "echo `rm -rf x`"],
    ["bash", "-lc", 'echo "$(rm x)"'],
    ["bash", "-lc", "echo $HOME"],
    ["bash", "-lc", "ls && rm x"],
    ["bash", "-lc", "ls | tee out"],
    ["bash", "-lc", "ls &"],
    ["bash", "-lc", "(ls)"],
    ["bash", "-lc", "ls &&"],
    ["bash", "-lc", "&& ls"],
    ["bash", "-lc", "FOO=1 ls"],
    ["bash", "-lc", "find * -name x"],
    ["bash", "-lc", "find . -{del,}ete"],
    ["bash", "-lc", "ls 'unterminated"],
    ["bash", "-lc"],
    ["bash", "-lc", "ls", "extra"],
    ["bash", "-x", "ls"],
    ["bash", "-lc", ""],
    ["bash", "script.sh"],
    ["bash", "-lc", "if true; then rm x; fi"],
    ["bash", "-lc", "bash -c ls"],
]


@pytest.mark.parametrize("argv", READ_ONLY_CASES, ids=lambda a: " ".join(a))
def test_read_only(argv: list[str]) -> None:
    assert is_read_only_command(argv) is True


@pytest.mark.parametrize("argv", NOT_READ_ONLY_CASES, ids=lambda a: " ".join(a) or "<empty>")
def test_not_read_only(argv: list[str]) -> None:
    assert is_read_only_command(argv) is False
