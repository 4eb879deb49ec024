"""apply_patch under the shell's sandbox policy, played as a hostile model would: real files, real
symbolic links.

``read-only`` refuses every patch; ``workspace-write`` (the default) writes only the workspace and
the policy's writable roots, never a root's ``.git``; ``danger-full-access`` keeps to the workspace.
A symbolic link swapped into a checked path between planning and writing (the check-then-write
race, forced deterministically by wrapping the commit step) makes the write fail and roll back: the
file outside is absent or unchanged."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from actors.tools.builtin import builtin_tools
from actors.tools.builtin.apply_patch import PatchError, PatchResult, _apply, apply_patch, make_apply_patch_tool
from actors.tools.builtin.apply_patch._plan import Plan
from actors.tools.sandbox import SandboxMode, SandboxPolicy
from actors.tools.sandbox._bwrap import bwrap_problem
from kernel import RespondToModel

from ._patch_helpers import snapshot, wrap


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """A workspace with a file and a git repository's ``.git``, next to an ``outside`` directory."""
    root = tmp_path / "ws"
    (root / ".git" / "hooks").mkdir(parents=True)
    (root / ".git" / "config").write_text("[core]\n")
    (root / "keep.txt").write_text("keep\n")
    (root / "sub").mkdir()
    (root / "sub" / "a.txt").write_text("inside\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.txt").write_text("outside\n")
    (outside / "secret.txt").write_text("secret\n")
    return root


@attrs.define
class FakeApprovals:
    requests: list[Any] = attrs.field(factory=list)

    async def check(self, request: Any) -> Any:
        self.requests.append(request)
        return True


# =============================================================================================
# read-only
# =============================================================================================


async def test_read_only_refuses_every_patch_and_writes_nothing(ws: Path) -> None:
    before = snapshot(ws)
    patch = wrap("*** Add File: new.txt", "+x", "*** Update File: keep.txt", "@@", "-keep", "+changed")
    for mode in ("read-only", SandboxMode.READ_ONLY, SandboxPolicy(mode=SandboxMode.READ_ONLY)):
        with pytest.raises(PatchError, match="read-only") as info:
            apply_patch(ws, patch, sandbox=mode)
        assert "new.txt, keep.txt" in str(info.value) and "nothing was changed" in str(info.value)
    approvals = FakeApprovals()
    tool = make_apply_patch_tool(ws, approvals=approvals, sandbox="read-only")
    assert "read-only" in tool.spec.description
    with pytest.raises(RespondToModel, match=r"apply_patch: refused the patch to new\.txt, keep\.txt: .*read-only"):
        await tool.invoke((patch,), {})
    assert approvals.requests == []  # refused before anyone is asked
    assert snapshot(ws) == before
    # a malformed patch is still reported as such
    with pytest.raises(RespondToModel, match="invalid patch"):
        await tool.invoke(("hello",), {})


def test_an_unknown_mode_is_a_clear_error(ws: Path) -> None:
    with pytest.raises(ValueError, match="read-only, workspace-write, danger-full-access, not 'lax'"):
        make_apply_patch_tool(ws, sandbox="lax")


# =============================================================================================
# .git stays read-only
# =============================================================================================


def assert_refused(ws: Path, patch: str, *fragments: str, sandbox: Any = SandboxMode.WORKSPACE_WRITE) -> None:
    before_ws = snapshot(ws)
    before_out = snapshot(ws.parent / "outside")
    with pytest.raises(PatchError) as info:
        apply_patch(ws, patch, sandbox=sandbox)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert snapshot(ws) == before_ws
    assert snapshot(ws.parent / "outside") == before_out


def test_git_is_read_only_under_workspace_write(ws: Path) -> None:
    first = "*** Add File: fine.txt\n+fine"  # a valid hunk first: the patch is refused whole
    why = ("'.git'", "workspace-write sandbox policy keeps read-only", "nothing was changed")
    assert_refused(ws, wrap(first, "*** Update File: .git/config", "@@", "-[core]", "+[core] x"), *why)
    assert_refused(ws, wrap(first, "*** Delete File: .git/config"), *why)
    assert_refused(ws, wrap(first, "*** Add File: .git/hooks/pre-commit", "+#!/bin/sh", "+echo pwned"), *why)
    assert_refused(ws, wrap(first, "*** Add File: .git/config", "+[core]"), *why)
    assert_refused(ws, wrap(first, "*** Update File: keep.txt", "*** Move to: .git/hooks/post-checkout"), *why)
    assert_refused(ws, wrap(first, "*** Update File: .git/config", "*** Move to: stolen.txt"), *why)
    assert_refused(ws, wrap(first, "*** Update File: keep.txt", "*** Move to: .git/config"), *why)
    # the error names the path as written and its patch line
    with pytest.raises(PatchError) as info:
        apply_patch(ws, wrap(first, "*** Delete File: .git/config"))
    assert info.value.path == ".git/config" and info.value.line == 4
    assert str(info.value).startswith("refused path '.git/config' (patch line 4): it is inside '.git'")
    # a symbolic link into .git, or .git itself, does not get around it
    (ws / "gitdir").symlink_to(ws / ".git", target_is_directory=True)
    (ws / "cfg").symlink_to(ws / ".git" / "config")
    assert_refused(ws, wrap(first, "*** Add File: gitdir/hooks/pre-commit", "+echo pwned"), *why)
    assert_refused(ws, wrap(first, "*** Update File: cfg", "@@", "-[core]", "+[core] x"), *why)
    assert_refused(ws, wrap(first, "*** Add File: sub/../.git/hooks/x", "+x"), *why)
    (ws / ".git" / "config").unlink()
    (ws / ".git" / "hooks").rmdir()
    (ws / ".git").rmdir()
    assert_refused(ws, wrap(first, "*** Add File: .git", "+gitdir: /elsewhere"), *why)
    assert_refused(ws, wrap(first, "*** Add File: .git/config", "+[core]"), *why)
    assert not (ws / ".git").exists()
    # a .git below the top is an ordinary directory (as in the shell's sandbox)
    apply_patch(ws, wrap("*** Add File: vendor/.git/notes.txt", "+ok"))
    assert (ws / "vendor/.git/notes.txt").read_text() == "ok\n"


def test_danger_full_access_keeps_to_the_workspace_git_included(ws: Path) -> None:
    result = apply_patch(
        ws, wrap("*** Update File: .git/config", "@@", "-[core]", "+[core] x"), sandbox="danger-full-access"
    )
    assert result == PatchResult(modified=[".git/config"])
    assert (ws / ".git/config").read_text() == "[core] x\n"
    # never outside, whatever the policy's writable roots say
    policy = SandboxPolicy(mode=SandboxMode.DANGER_FULL_ACCESS, writable_roots=[ws.parent / "outside"])
    outside = str(ws.parent / "outside" / "x.txt")
    assert_refused(ws, wrap("*** Add File: ../outside/x.txt", "+x"), "outside the workspace", sandbox=policy)
    assert_refused(ws, wrap(f"*** Add File: {outside}", "+x"), "absolute paths are not allowed", sandbox=policy)
    assert not (ws.parent / "outside" / "x.txt").exists()


# =============================================================================================
# extra writable roots
# =============================================================================================


async def test_a_writable_extra_root_can_be_written(ws: Path, tmp_path: Path) -> None:
    extra = tmp_path / "shared"
    (extra / ".git").mkdir(parents=True)
    (extra / "notes.txt").write_text("one\n")
    policy = SandboxPolicy(writable_roots=[extra])
    # an absolute path inside it, a relative one leading into it, a symbolic link into it
    result = apply_patch(
        ws,
        wrap(
            f"*** Update File: {extra}/notes.txt",
            "@@",
            "-one",
            "+two",
            "*** Add File: ../shared/deep/new.txt",
            "+new",
            "*** Add File: here.txt",
            "+here",
        ),
        sandbox=policy,
    )
    assert result == PatchResult(added=["../shared/deep/new.txt", "here.txt"], modified=[f"{extra}/notes.txt"])
    assert (extra / "notes.txt").read_text() == "two\n"
    assert (extra / "deep/new.txt").read_text() == "new\n" and (ws / "here.txt").read_text() == "here\n"
    (ws / "shared").symlink_to(extra, target_is_directory=True)
    apply_patch(ws, wrap("*** Delete File: shared/deep/new.txt"), sandbox=policy)
    assert not (extra / "deep/new.txt").exists()
    # its .git is read-only; the root itself is not a file; elsewhere is still outside
    assert_refused(ws, wrap(f"*** Add File: {extra}/.git/config", "+x"), f"'{extra}/.git'", sandbox=policy)
    assert_refused(ws, wrap("*** Add File: shared/.git/hooks/pre-push", "+x"), f"'{extra}/.git'", sandbox=policy)
    assert_refused(ws, wrap(f"*** Add File: {extra}", "+x"), "writable root", sandbox=policy)
    assert_refused(ws, wrap("*** Add File: ../outside/x.txt", "+x"), "outside the workspace", sandbox=policy)
    assert_refused(ws, wrap(f"*** Add File: {tmp_path}/outside/x.txt", "+x"), "absolute", str(extra), sandbox=policy)
    # without it in the policy, the same patch is refused
    assert_refused(ws, wrap(f"*** Add File: {extra}/other.txt", "+x"), "absolute paths are not allowed")
    assert_refused(ws, wrap("*** Add File: shared/other.txt", "+x"), "through a symbolic link", "outside")
    assert not (extra / "other.txt").exists()
    # the tool takes the policy and tells the model about the root
    tool = make_apply_patch_tool(ws, sandbox=policy)
    assert str(extra) in tool.spec.description
    output = await tool.invoke((wrap(f"*** Add File: {extra}/from-tool.txt", "+t"),), {})
    assert output.success is True and (extra / "from-tool.txt").read_text() == "t\n"


# =============================================================================================
# the check-then-write race
# =============================================================================================


@pytest.fixture
def race(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Callable[[], None]], None]]:
    """``race(step)``: ``step`` runs after the next patch is planned and before it is written,
    as a concurrent process swapping files would."""
    steps: list[Callable[[], None]] = []
    real_commit = _apply.commit

    def commit_after_step(plan: Plan) -> PatchResult:
        while steps:
            steps.pop(0)()
        return real_commit(plan)

    monkeypatch.setattr(_apply, "commit", commit_after_step)
    yield steps.append
    assert not steps, "the patch never reached its commit"


def swap_for_link(path: Path, target: Path) -> Callable[[], None]:
    def step() -> None:
        path.rename(path.with_name(path.name + ".moved-away"))
        path.symlink_to(target, target_is_directory=target.is_dir())

    return step


def test_a_parent_swapped_for_a_link_to_outside_is_not_followed(
    ws: Path, race: Callable[[Callable[[], None]], None]
) -> None:
    outside = ws.parent / "outside"
    cases = [
        (wrap("*** Add File: sub/new.txt", "+pwned"), "new.txt"),
        (wrap("*** Update File: sub/a.txt", "@@", "-inside", "+pwned"), "a.txt"),
        (wrap("*** Delete File: sub/a.txt"), "a.txt"),
        (wrap("*** Update File: keep.txt", "*** Move to: sub/moved.txt"), "moved.txt"),
        (wrap("*** Add File: sub/deeper/new.txt", "+pwned"), "deeper"),
    ]
    for patch, planted in cases:
        before_out = snapshot(outside)
        race(swap_for_link(ws / "sub", outside))
        with pytest.raises(PatchError) as info:
            apply_patch(ws, patch)
        message = str(info.value)
        assert "'sub' is no longer a directory" in message and "refusing to follow it" in message
        assert "nothing was changed" in message and not info.value.changed
        assert snapshot(outside) == before_out  # nothing added, changed or removed outside
        assert (outside / "a.txt").read_text() == "outside\n"
        assert planted == "a.txt" or not (outside / planted).exists()
        # undo the swap for the next case: the workspace is as it was
        (ws / "sub").unlink()
        (ws / "sub.moved-away").rename(ws / "sub")
        assert (ws / "sub/a.txt").read_text() == "inside\n" and (ws / "keep.txt").read_text() == "keep\n"
        assert sorted(os.listdir(ws / "sub")) == ["a.txt"]


def test_a_deeper_parent_swapped_rolls_back_what_was_written(
    ws: Path, race: Callable[[Callable[[], None]], None]
) -> None:
    outside = ws.parent / "outside"
    (ws / "sub/inner").mkdir()
    (ws / "sub/inner/b.txt").write_text("b\n")
    os.utime(ws / "keep.txt", ns=(1_000_000_000, 1_000_000_000))
    race(swap_for_link(ws / "sub/inner", outside))
    patch = wrap(
        "*** Update File: keep.txt",  # written first, then restored
        "@@",
        "-keep",
        "+changed",
        "*** Add File: fresh/dir/new.txt",  # its directories are made, then removed
        "+new",
        "*** Update File: sub/inner/b.txt",
        "@@",
        "-b",
        "+pwned",
    )
    before = snapshot(ws)
    with pytest.raises(PatchError, match=r"failed to write 'sub/inner/b\.txt': .*'sub/inner' is no longer a directory"):
        apply_patch(ws, patch)
    assert (ws / "keep.txt").read_text() == "keep\n" and (ws / "keep.txt").stat().st_mtime_ns == 1_000_000_000
    assert not (ws / "fresh").exists()
    assert not (outside / "b.txt").exists()
    after = snapshot(ws)
    assert {k: v for k, v in after.items() if not k.startswith("sub/inner")} == {
        k: v for k, v in before.items() if not k.startswith("sub/inner")
    }
    assert not any(".patch-tmp" in name for name in after)


def test_a_file_swapped_for_a_link_is_replaced_not_written_through(
    ws: Path, race: Callable[[Callable[[], None]], None]
) -> None:
    outside = ws.parent / "outside"

    def plant(name: str) -> Callable[[], None]:
        def step() -> None:
            target = ws / name
            if target.exists():
                target.unlink()
            target.symlink_to(outside / "secret.txt")

        return step

    race(plant("keep.txt"))
    apply_patch(ws, wrap("*** Update File: keep.txt", "@@", "-keep", "+new keep"))
    assert not (ws / "keep.txt").is_symlink() and (ws / "keep.txt").read_text() == "new keep\n"
    race(plant("added.txt"))
    apply_patch(ws, wrap("*** Add File: added.txt", "+added"))
    assert not (ws / "added.txt").is_symlink() and (ws / "added.txt").read_text() == "added\n"
    assert (outside / "secret.txt").read_text() == "secret\n"
    assert sorted(os.listdir(outside)) == ["a.txt", "secret.txt"]


async def test_the_tool_reports_the_race_to_the_model(ws: Path, race: Callable[[Callable[[], None]], None]) -> None:
    outside = ws.parent / "outside"
    race(swap_for_link(ws / "sub", outside))
    tool = make_apply_patch_tool(ws)
    with pytest.raises(RespondToModel) as info:
        await tool.invoke((wrap("*** Add File: sub/escape.txt", "+pwned"),), {})
    assert "refusing to follow it" in str(info.value) and "nothing was changed" in str(info.value)
    assert not (outside / "escape.txt").exists()


# =============================================================================================
# builtin_tools shares the policy
# =============================================================================================


async def test_builtin_tools_pass_the_sandbox_to_both_tools(ws: Path) -> None:
    shell, patcher = builtin_tools(ws, sandbox="danger-full-access")
    output = await patcher.invoke((wrap("*** Update File: .git/config", "@@", "-[core]", "+[core] x"),), {})
    assert output.success is True
    body = json.loads(await shell(["cat", ".git/config"]))
    assert body["output"] == "[core] x\n"


@pytest.mark.skipif(bwrap_problem() is not None, reason=f"no bubblewrap here: {bwrap_problem()}")
async def test_builtin_tools_under_the_default_and_read_only_policies(ws: Path) -> None:
    shell, patcher = builtin_tools(ws)
    with pytest.raises(RespondToModel, match="'.git'"):
        await patcher.invoke((wrap("*** Delete File: .git/config"),), {})
    body = json.loads(await shell(["bash", "-c", "echo x > .git/config"]))
    assert body["metadata"]["exit_code"] != 0
    assert (ws / ".git/config").read_text() == "[core]\n"
    shell, patcher = builtin_tools(ws, sandbox=SandboxPolicy(mode=SandboxMode.READ_ONLY))
    with pytest.raises(RespondToModel, match="read-only"):
        await patcher.invoke((wrap("*** Add File: new.txt", "+x"),), {})
    body = json.loads(await shell(["bash", "-c", "echo x > new.txt"]))
    assert body["metadata"]["exit_code"] != 0
    assert not (ws / "new.txt").exists()
