"""The built-in apply_patch tool: parsing codex's patch format (every section type, leniency, errors
with line numbers), applying it to real files (round trips generated with a difflib hunk writer,
add/delete/move, fuzzy matching, line ends), confinement to the workspace, all-or-nothing
application and rollback, and the freeform tool run through the ToolActor."""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from actors.tools import ToolInvocation, ToolRegistry, open_tool_actor
from actors.tools.approvals import ApprovalPolicy, ApprovalRequest, Approvals
from actors.tools.builtin.apply_patch import (
    APPLY_PATCH_LARK_GRAMMAR,
    AddFile,
    DeleteFile,
    Patch,
    PatchError,
    PatchResult,
    UpdateChunk,
    UpdateFile,
    apply_patch,
    make_apply_patch_tool,
    parse_patch,
)
from kernel import (
    CompletedResponseItem,
    CustomToolCall,
    CustomToolCallOutput,
    FreeformTool,
    Prompt,
    RespondToModel,
    execute_tool_call_with_default_output,
)

from ._patch_helpers import snapshot, wrap


def out_text(out: Any) -> str:
    text = out.output.text_content()
    assert isinstance(text, str)
    return text


# =============================================================================================
# Parsing
# =============================================================================================


def test_parse_every_section_type() -> None:
    patch = parse_patch(
        wrap(
            "*** Add File: path/new.txt",
            "+line one",
            "+",
            "+line two",
            "*** Update File: src/app.py",
            "*** Move to: src/main.py",
            "@@ def greet():",
            " context line",
            "-old line",
            "+new line",
            " context line",
            "@@",
            "@@ class Other:",
            "@@ \t def method():",
            "-a",
            "+b",
            "",
            " tail",
            "*** End of File",
            "*** Delete File: old.txt",
        )
    )
    assert patch.hunks == (
        AddFile("path/new.txt", "line one\n\nline two\n"),
        UpdateFile(
            "src/app.py",
            "src/main.py",
            (
                UpdateChunk(
                    ("context line", "old line", "context line"),
                    ("context line", "new line", "context line"),
                    ("def greet():",),
                ),
                UpdateChunk(("a", "", "tail"), ("b", "", "tail"), ("class Other:", "\t def method():"), True),
            ),
        ),
        DeleteFile("old.txt"),
    )
    add, update, delete = patch.hunks
    assert (add.line, update.line, delete.line) == (2, 6, 21)
    assert isinstance(update, UpdateFile)
    assert [c.line for c in update.chunks] == [8, 13]
    assert patch.paths() == ("path/new.txt", "src/app.py", "src/main.py", "old.txt")
    assert patch.text.startswith("*** Begin Patch\n") and patch.text.endswith("\n*** End Patch")


def test_parse_first_chunk_without_header_and_blank_lines_between_hunks() -> None:
    patch = parse_patch(wrap("*** Update File: f.py", "", " import foo", "+bar", "*** Add File: other.py", "+x"))
    assert patch.hunks == (
        UpdateFile("f.py", None, (UpdateChunk(("import foo",), ("import foo", "bar")),)),
        AddFile("other.py", "x\n"),
    )


def test_parse_is_lenient_like_codex() -> None:
    expected = (UpdateFile("a.txt", None, (UpdateChunk(("one",), ("two",)),)),)
    body = ["*** Update File: a.txt", "@@", "-one", "+two"]
    # whitespace around the markers
    assert (
        parse_patch(" *** Begin Patch \n  *** Update File: a.txt\n@@\n-one\n+two\n *** End Patch \n").hunks == expected
    )
    # a heredoc wrapper, quoted or not, with or without the command name
    for opener in ("<<EOF", "<<'EOF'", '<<"EOF"', "apply_patch <<'PATCH'"):
        closer = "PATCH" if "PATCH" in opener else "EOF"
        text = "\n".join([opener, "*** Begin Patch", *body, "*** End Patch", closer]) + "\n"
        parsed = parse_patch(text)
        assert parsed.hunks == expected
        assert parsed.text == "\n".join(["*** Begin Patch", *body, "*** End Patch"])
    # CRLF line ends, surrounding blank lines, no final newline
    assert parse_patch("\r\n\r\n" + wrap(*body).replace("\n", "\r\n")).hunks == expected
    assert parse_patch(wrap(*body).rstrip("\n")).hunks == expected
    # a unified-diff style header counts as its trailing text
    chunk = parse_patch(wrap("*** Update File: a.txt", "@@ -1,3 +1,4 @@ def f():", "-x", "+y")).hunks[0]
    assert isinstance(chunk, UpdateFile) and chunk.chunks[0].contexts == ("def f():",)
    # a pure rename
    assert parse_patch(wrap("*** Update File: a.txt", "*** Move to: b.txt")).hunks == (
        UpdateFile("a.txt", "b.txt", ()),
    )
    # an empty patch parses (applying it fails)
    assert parse_patch(wrap()).hunks == ()


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("", 1, "first line of the patch must be '*** Begin Patch'"),
        ("bad\n*** End Patch", 1, "first line of the patch must be '*** Begin Patch'"),
        ("*** Begin Patch\n*** Add File: a\n+x\n", 3, "last line of the patch must be '*** End Patch'"),
        ("\n\n*** Begin Patch\n*** Add File: a\n", 4, "last line of the patch must be '*** End Patch'"),
        (
            wrap("*** Add File: a", "+x", "*** Frobnicate File: b"),
            4,
            "'*** Frobnicate File: b' is not a valid hunk header",
        ),
        (wrap("*** Add File: a", "oops"), 3, "'oops' is not a valid hunk header"),
        (wrap("*** Delete File: a", "*** Update File: test.py"), 3, "Update file hunk for path 'test.py' is empty"),
        (
            wrap("*** Update File: a", "@@", "-x", "bad line"),
            5,
            "Expected update hunk to start with a @@ context marker, got: 'bad line'",
        ),
        (wrap("*** Update File: a", "@@ ctx", "bad line"), 4, "Unexpected line found in update hunk: 'bad line'"),
        (wrap("*** Update File: a", "@@"), 4, "Update hunk does not contain any lines"),
        (wrap("*** Update File: a", "@@", "*** End of File"), 4, "Update hunk does not contain any lines"),
        (wrap("*** Add File:   "), 2, "'*** Add File: ' needs a path"),
        (wrap("*** Update File: a", "*** Move to:"), 3, "'*** Move to: ' needs a path"),
        ("<<'EOF'\n*** Begin Patch\n*** Add File: a\n+x\nEOF\n", 4, "last line of the patch must be '*** End Patch'"),
    ],
)
def test_parse_errors_name_the_patch_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(PatchError) as info:
        parse_patch(text)
    assert info.value.line == line
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"invalid patch at line {line}: ")


# =============================================================================================
# Applying: a hunk writer, and round-trip properties
# =============================================================================================


def update_section(
    path: str, old: list[str], new: list[str], *, eof_marker: bool = False, move_to: str | None = None
) -> list[str]:
    """The ``*** Update File`` section turning ``old`` into ``new``: difflib's grouped opcodes with
    3 lines of context, one ``@@`` chunk per group."""
    out = [f"*** Update File: {path}"]
    if move_to is not None:
        out.append(f"*** Move to: {move_to}")
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    for group in matcher.get_grouped_opcodes(3):
        if all(tag == "equal" for tag, *_ in group):
            continue
        out.append("@@")
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                out.extend(" " + line for line in old[i1:i2])
            else:
                out.extend("-" + line for line in old[i1:i2])
                out.extend("+" + line for line in new[j1:j2])
        if eof_marker and group[-1][2] == len(old) and old:
            out.append("*** End of File")
    return out


def text_of(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


line_text = st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=10)


@st.composite
def edits(draw: st.DrawFn, tag: str = "") -> tuple[list[str], list[str]]:
    """A file of unique lines and an edited version: lines kept, deleted, replaced, inserted."""
    old = [f"{tag}o{i}|{t}" for i, t in enumerate(draw(st.lists(line_text, max_size=30)))]
    new: list[str] = []
    counter = 0

    def fresh() -> str:
        nonlocal counter
        counter += 1
        return f"{tag}n{counter}|{draw(line_text)}"

    for line in old:
        action = draw(st.sampled_from(["keep", "keep", "keep", "keep", "delete", "replace", "insert"]))
        if action == "insert":
            new.extend([fresh() for _ in range(draw(st.integers(1, 3)))])
        if action in ("keep", "insert"):
            new.append(line)
        elif action == "replace":
            new.extend([fresh() for _ in range(draw(st.integers(1, 3)))])
    if draw(st.booleans()):
        new.extend([fresh() for _ in range(draw(st.integers(1, 3)))])
    return old, new


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edit=edits(), eof_marker=st.booleans())
def test_generated_update_patches_round_trip(
    tmp_path: Path, edit: tuple[list[str], list[str]], eof_marker: bool
) -> None:
    old, new = edit
    assume(old != new)
    ws = tmp_path / "ws-round-trip"
    ws.mkdir(exist_ok=True)
    target = ws / "file.txt"
    target.write_text(text_of(old), encoding="utf-8", newline="")
    result = apply_patch(ws, wrap(*update_section("file.txt", old, new, eof_marker=eof_marker)))
    assert target.read_text(encoding="utf-8") == text_of(new)
    assert result == PatchResult(modified=("file.txt",))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=50)
@given(
    files=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "d"]), edits()), min_size=1, max_size=3, unique_by=lambda f: f[0]
    ),
    moves=st.lists(st.booleans(), min_size=3, max_size=3),
)
def test_multi_file_patches_with_moves_round_trip(tmp_path: Path, files: list[Any], moves: list[bool]) -> None:
    ws = tmp_path / "ws-multi"
    if ws.exists():
        for p in sorted(ws.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
    ws.mkdir(exist_ok=True)
    body: list[str] = []
    expected: dict[str, str] = {}
    for (name, (old, new)), move in zip(files, moves):
        (ws / f"{name}.txt").write_text(text_of(old), encoding="utf-8", newline="")
        dest = f"moved/{name}.txt" if move else None
        section = update_section(f"{name}.txt", old, new, move_to=dest)
        if len(section) == 1 and dest is None:
            expected[f"{name}.txt"] = text_of(old)
            continue
        body.extend(section)
        expected[dest or f"{name}.txt"] = text_of(new)
    assume(body)
    apply_patch(ws, wrap(*body))
    found = {str(p.relative_to(ws)): p.read_text(encoding="utf-8") for p in ws.rglob("*.txt")}
    assert found == expected


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=50)
@given(lines=st.lists(line_text, max_size=10), edit=edits())
def test_add_then_delete_and_move_round_trips(tmp_path: Path, lines: list[str], edit: Any) -> None:
    ws = tmp_path / "ws-add"
    ws.mkdir(exist_ok=True)
    result = apply_patch(ws, wrap("*** Add File: dir/sub/new.txt", *("+" + line for line in lines)))
    assert result.summary == "Success. Updated the following files:\nA dir/sub/new.txt\n"
    assert (ws / "dir/sub/new.txt").read_text(encoding="utf-8") == text_of(lines)
    result = apply_patch(ws, wrap("*** Delete File: dir/sub/new.txt"))
    assert result == PatchResult(deleted=("dir/sub/new.txt",))
    assert not (ws / "dir/sub/new.txt").exists()
    # a move with edits: the destination gets the new text, the source is gone
    old, new = edit
    (ws / "src.txt").write_text(text_of(old), encoding="utf-8", newline="")
    apply_patch(ws, wrap(*update_section("src.txt", old, new, move_to="elsewhere/dst.txt")))
    assert not (ws / "src.txt").exists()
    assert (ws / "elsewhere/dst.txt").read_text(encoding="utf-8") == (text_of(new) if old != new else text_of(old))
    (ws / "elsewhere/dst.txt").unlink()


def test_add_update_move_delete_in_one_patch(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src/app.py").write_text("def greet():\n    print('Hi')\n    return 1\n")
    (tmp_path / "src/app.py").chmod(0o755)
    (tmp_path / "old.txt").write_text("bye\n")
    result = apply_patch(
        tmp_path,
        wrap(
            "*** Add File: hello.txt",
            "+Hello world",
            "*** Update File: src/app.py",
            "*** Move to: src/main.py",
            "@@ def greet():",
            "-    print('Hi')",
            "+    print('Hello, world!')",
            "*** Delete File: old.txt",
        ),
    )
    assert result.summary == ("Success. Updated the following files:\nA hello.txt\nM src/main.py\nD old.txt\n")
    assert (tmp_path / "hello.txt").read_text() == "Hello world\n"
    assert (tmp_path / "src/main.py").read_text() == "def greet():\n    print('Hello, world!')\n    return 1\n"
    assert (tmp_path / "src/main.py").stat().st_mode & 0o777 == 0o755  # the mode moves with the file
    assert not (tmp_path / "src/app.py").exists() and not (tmp_path / "old.txt").exists()


def test_later_hunks_see_earlier_ones(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one\n")
    apply_patch(
        tmp_path,
        wrap(
            "*** Update File: a.txt",
            "@@",
            "-one",
            "+two",
            "*** Update File: a.txt",
            "@@",
            "-two",
            "+three",
            "*** Add File: b.txt",
            "+b",
            "*** Delete File: b.txt",
            "*** Add File: b.txt",
            "+again",
        ),
    )
    assert (tmp_path / "a.txt").read_text() == "three\n"
    assert (tmp_path / "b.txt").read_text() == "again\n"


def test_matching_is_lenient_like_codex(tmp_path: Path) -> None:
    f = tmp_path / "f.py"
    f.write_text("def f():   \n    x = “quoted” — dash\n    return x\n")
    apply_patch(
        tmp_path,
        wrap("*** Update File: f.py", "@@", " def f():", '-x = "quoted" - dash', "+    x = 1", "     return x"),
    )
    # as in codex, the matched range (context lines too) takes the patch's text
    assert f.read_text() == "def f():\n    x = 1\n    return x\n"


def test_context_headers_narrow_the_position(tmp_path: Path) -> None:
    f = tmp_path / "f.py"
    f.write_text("class A:\n    def m(self):\n        pass\nclass B:\n    def m(self):\n        pass\n")
    apply_patch(
        tmp_path,
        wrap("*** Update File: f.py", "@@ class B:", "@@     def m(self):", "-        pass", "+        return 2"),
    )
    assert f.read_text() == "class A:\n    def m(self):\n        pass\nclass B:\n    def m(self):\n        return 2\n"
    # a pure addition goes right after its context line
    apply_patch(tmp_path, wrap("*** Update File: f.py", "@@ class A:", "+    '''Doc.'''"))
    assert f.read_text().startswith("class A:\n    '''Doc.'''\n    def m(self):\n")


def test_end_of_file_anchor_and_final_newline(tmp_path: Path) -> None:
    f = tmp_path / "f.txt"
    f.write_text("x\ny\nx\ny\n")
    apply_patch(tmp_path, wrap("*** Update File: f.txt", "@@", " x", "-y", "+z", "*** End of File"))
    assert f.read_text() == "x\ny\nx\nz\n"
    f.write_text("no newline")
    apply_patch(tmp_path, wrap("*** Update File: f.txt", "@@", "-no newline", "+with newline"))
    assert f.read_text() == "with newline\n"


def test_crlf_bom_and_undecodable_bytes_are_preserved(tmp_path: Path) -> None:
    f = tmp_path / "win.txt"
    f.write_bytes(b"\xef\xbb\xbfone\r\ntwo \xff\r\nthree\r\n")
    apply_patch(tmp_path, wrap("*** Update File: win.txt", "@@", " one", "+inserted", "@@", "-three", "+THREE"))
    assert f.read_bytes() == b"\xef\xbb\xbfone\r\ninserted\r\ntwo \xff\r\nTHREE\r\n"


def test_pure_rename(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"\x00\x01binary\xff")
    result = apply_patch(tmp_path, wrap("*** Update File: a.bin", "*** Move to: b/c.bin"))
    assert result == PatchResult(modified=("b/c.bin",))
    assert (tmp_path / "b/c.bin").read_bytes() == b"\x00\x01binary\xff"
    assert not (tmp_path / "a.bin").exists()


# =============================================================================================
# Refusals and all-or-nothing
# =============================================================================================


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """A workspace with a file and a sibling ``outside`` directory holding a secret."""
    root = tmp_path / "ws"
    root.mkdir()
    (root / "keep.txt").write_text("keep\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret\n")
    return root


def assert_refused(ws: Path, patch: str, *fragments: str) -> PatchError:
    before_ws = snapshot(ws)
    before_out = snapshot(ws.parent / "outside")
    with pytest.raises(PatchError) as info:
        apply_patch(ws, patch)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert snapshot(ws) == before_ws
    assert snapshot(ws.parent / "outside") == before_out
    return info.value


def test_escapes_are_refused_and_nothing_is_written(ws: Path) -> None:
    first = "*** Add File: fine.txt\n+fine"
    assert_refused(
        ws, wrap(first, "*** Add File: ../outside/x.txt", "+x"), "'../outside/x.txt'", "outside the workspace"
    )
    assert_refused(ws, wrap(first, "*** Add File: a/../../outside/x.txt", "+x"), "'a/../../outside/x.txt'", "outside")
    assert_refused(ws, wrap(first, "*** Update File: /etc/passwd", "@@", "-root", "+me"), "'/etc/passwd'", "absolute")
    assert_refused(ws, wrap(first, "*** Delete File: /etc/passwd"), "absolute")
    assert_refused(
        ws,
        wrap(first, "*** Update File: keep.txt", "*** Move to: ../stolen.txt", "@@", "-keep", "+x"),
        "'../stolen.txt'",
    )
    assert_refused(ws, wrap("*** Add File: .", "+x"), "does not name a file")
    # a symlink to a file outside: update, delete, add over it
    (ws / "link.txt").symlink_to(ws.parent / "outside/secret.txt")
    for hunk in (
        ["*** Update File: link.txt", "@@", "-secret", "+pwned"],
        ["*** Delete File: link.txt"],
        ["*** Add File: link.txt", "+x"],
    ):
        err = assert_refused(ws, wrap(first, *hunk), "'link.txt'", "through a symbolic link", "outside")
        assert err.path == "link.txt"
    # a symlinked parent directory
    (ws / "sub").symlink_to(ws.parent / "outside", target_is_directory=True)
    assert_refused(ws, wrap(first, "*** Add File: sub/new.txt", "+x"), "'sub/new.txt'", "symbolic link")
    assert_refused(ws, wrap(first, "*** Update File: sub/secret.txt", "@@", "-secret", "+x"), "'sub/secret.txt'")
    assert_refused(ws, wrap(first, "*** Add File: sub/../../outside/y.txt", "+x"), "outside")
    assert (ws.parent / "outside/secret.txt").read_text() == "secret\n"


def test_symlinks_inside_the_workspace_are_fine(ws: Path) -> None:
    (ws / "real").mkdir()
    (ws / "real/t.txt").write_text("a\n")
    (ws / "alias").symlink_to(ws / "real", target_is_directory=True)
    (ws / "t-link.txt").symlink_to(ws / "real/t.txt")
    apply_patch(ws, wrap("*** Update File: alias/t.txt", "@@", "-a", "+b"))
    assert (ws / "real/t.txt").read_text() == "b\n"
    apply_patch(ws, wrap("*** Update File: t-link.txt", "@@", "-b", "+c"))
    assert (ws / "t-link.txt").is_symlink() and (ws / "real/t.txt").read_text() == "c\n"
    apply_patch(ws, wrap("*** Delete File: t-link.txt"))  # removes the link, not its target
    assert not os.path.lexists(ws / "t-link.txt") and (ws / "real/t.txt").read_text() == "c\n"


def test_missing_and_existing_files_are_errors(ws: Path) -> None:
    assert_refused(
        ws,
        wrap("*** Add File: new.txt", "+x", "*** Update File: nope.txt", "@@", "-a", "+b"),
        "cannot update 'nope.txt'",
        "no such file",
        "patch line 4",
    )
    assert_refused(
        ws, wrap("*** Add File: new.txt", "+x", "*** Delete File: nope.txt"), "cannot delete 'nope.txt'", "no such file"
    )
    assert_refused(ws, wrap("*** Add File: keep.txt", "+x"), "cannot add 'keep.txt'", "already exists")
    (ws / "dir").mkdir()
    assert_refused(ws, wrap("*** Delete File: dir"), "'dir'", "is a directory")
    assert_refused(ws, wrap("*** Add File: keep.txt/inner.txt", "+x"), "'keep.txt' is not a directory")
    (ws / "other.txt").write_text("o\n")
    assert_refused(
        ws,
        wrap("*** Update File: keep.txt", "*** Move to: other.txt", "@@", "-keep", "+k"),
        "destination already exists",
    )
    assert_refused(ws, wrap(), "No files were modified.")


def test_a_mismatch_in_a_later_hunk_or_file_changes_nothing(tmp_path: Path) -> None:
    lines = [f"line {i}" for i in range(1, 41)]
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text(text_of(lines))
    os.utime(tmp_path / "a.txt", ns=(1_000_000_000, 1_000_000_000))
    before = snapshot(tmp_path)
    # the second hunk of the first file does not match
    patch = wrap(
        "*** Add File: new/added.txt",
        "+added",
        "*** Update File: a.txt",
        "@@",
        " line 2",
        "-line 3",
        "+LINE 3",
        " line 4",
        "@@",
        " line 30",
        "-line thirty-one",
        "-line 32",
        "+LINE 31",
        " line 33",
        "*** Update File: b.txt",
        "@@",
        "-line 1",
        "+LINE 1",
    )
    with pytest.raises(PatchError) as info:
        apply_patch(tmp_path, patch)
    message = str(info.value)
    assert info.value.path == "a.txt" and info.value.line == 10
    assert message.startswith("Failed to find expected lines in a.txt: hunk 2 of 2 (patch line 10)")
    assert "at or after line 5" in message
    assert "    line 30\n    line thirty-one\n    line 32\n    line 33" in message
    assert "The closest lines in a.txt are at line 30:" in message and "    30 | line 30" in message
    assert snapshot(tmp_path) == before
    # the second file does not match
    patch = wrap(
        "*** Update File: a.txt", "@@", "-line 1", "+LINE 1", "*** Update File: b.txt", "@@", "-no such line", "+x"
    )
    with pytest.raises(PatchError, match=r"^Failed to find expected lines in b\.txt: hunk 1 of 1") as info:
        apply_patch(tmp_path, patch)
    assert "    no such line" in str(info.value)
    assert snapshot(tmp_path) == before
    # a missing @@ context line
    with pytest.raises(PatchError, match=r"Failed to find context '@@ def nowhere\(\)' in a\.txt: hunk 1 of 1") as info:
        apply_patch(tmp_path, wrap("*** Update File: a.txt", "@@ def nowhere()", "-line 1", "+x"))
    assert snapshot(tmp_path) == before


def test_a_failed_write_rolls_back_what_was_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.txt").write_text("a\n")
    (tmp_path / "b.txt").write_text("b\n")
    (tmp_path / "gone.txt").write_text("gone\n")
    os.utime(tmp_path / "a.txt", ns=(1_000_000_000, 1_000_000_000))
    before = snapshot(tmp_path)
    real_replace = os.replace
    calls = []

    def flaky_replace(src: Any, dst: Any) -> None:
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    patch = wrap(
        "*** Update File: a.txt",
        "@@",
        "-a",
        "+A",
        "*** Add File: deep/new/dir/n.txt",
        "+n",
        "*** Update File: b.txt",
        "@@",
        "-b",
        "+B",
        "*** Delete File: gone.txt",
    )
    with pytest.raises(
        PatchError, match=r"failed to write 'b\.txt': .*No space left on device.*nothing was changed"
    ) as info:
        apply_patch(tmp_path, patch)
    assert not info.value.changed
    assert snapshot(tmp_path) == before  # contents, mtimes, no new dirs, no temp files


# =============================================================================================
# The tool
# =============================================================================================


async def call(actor: Any, text: str, call_id: str = "c1", name: str = "apply_patch") -> Any:
    classified = await actor.classify_response_item(CustomToolCall(call_id=call_id, name=name, input=text))
    assert isinstance(classified, CompletedResponseItem.ToolCall)
    assert isinstance(classified.call, ToolInvocation)
    return await execute_tool_call_with_default_output(actor, classified.call)


def test_tool_spec() -> None:
    tool = make_apply_patch_tool(".")
    assert tool.name == "apply_patch" and tool.freeform and not tool.parallel
    spec = tool.spec
    assert isinstance(spec, FreeformTool)
    assert spec.format.type == "grammar" and spec.format.syntax == "lark"
    assert spec.format.definition == APPLY_PATCH_LARK_GRAMMAR
    assert spec.format.definition.startswith("start: begin_patch hunk+ end_patch\n")
    for needle in (
        "*** Begin Patch",
        "*** Add File:",
        "*** Update File:",
        "*** Move to:",
        "*** Delete File:",
        "@@",
        "*** End of File",
        "FREEFORM",
    ):
        assert needle in spec.description
    assert make_apply_patch_tool(".", name="edit").spec.name == "edit"


async def test_tool_success_and_model_visible_failure(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one\n")
    registry = ToolRegistry([make_apply_patch_tool(tmp_path)])
    async with open_tool_actor(registry) as actor:
        out = await call(actor, wrap("*** Update File: a.txt", "@@", "-one", "+two", "*** Add File: b.txt", "+b"))
        assert isinstance(out, CustomToolCallOutput) and out.output.success is True
        body = json.loads(out_text(out))
        assert body["output"] == "Success. Updated the following files:\nA b.txt\nM a.txt\n"
        assert body["metadata"]["exit_code"] == 0 and isinstance(body["metadata"]["duration_seconds"], float)
        assert (tmp_path / "a.txt").read_text() == "two\n"
        # the kernel re-serialises it like a shell output
        prompt = Prompt(
            input=[CustomToolCall(call_id="c1", name="apply_patch", input="..."), out], tools=registry.specs()
        )
        shown = prompt.formatted_input()[1]
        assert isinstance(shown, CustomToolCallOutput)
        shown_text = out_text(shown)
        assert shown_text.startswith("Exit code: 0\nWall time: ")
        assert shown_text.endswith(" seconds\nOutput:\nSuccess. Updated the following files:\nA b.txt\nM a.txt\n")

        before = snapshot(tmp_path)
        out = await call(
            actor, wrap("*** Add File: c.txt", "+c", "*** Update File: a.txt", "@@", "-one", "+three"), "c2"
        )
        assert isinstance(out, CustomToolCallOutput) and out.output.success is False
        text = out_text(out)
        assert "Failed to find expected lines in a.txt" in text and "    one" in text
        assert text.endswith("No files were changed: the patch applies all or nothing.")
        assert snapshot(tmp_path) == before

        out = await call(actor, "*** Begin Patch\n*** Frob: x\n*** End Patch", "c3")
        assert out.output.success is False and "invalid patch at line 2" in out_text(out)
        out = await call(actor, wrap("*** Add File: ../escape.txt", "+x"), "c4")
        assert out.output.success is False and "refused path '../escape.txt'" in out_text(out)
        assert not (tmp_path.parent / "escape.txt").exists()


@attrs.define
class FakeApprovals:
    decision: Any = None
    refuse: str | None = None
    requests: list[Any] = attrs.field(factory=list)

    async def check(self, request: Any) -> Any:
        self.requests.append(request)
        if self.refuse is not None:
            raise RespondToModel(self.refuse)
        return self.decision


async def test_tool_asks_for_approval(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one\n")
    approvals = FakeApprovals()
    tool = make_apply_patch_tool(tmp_path, approvals=approvals)
    patch = (
        "<<'EOF'\n"
        + wrap("*** Update File: a.txt", "*** Move to: b.txt", "@@", "-one", "+two", "*** Add File: c.txt", "+c")
        + "EOF\n"
    )
    output = await tool.invoke((patch,), {})
    assert output.success is True and (tmp_path / "b.txt").read_text() == "two\n"
    (request,) = approvals.requests
    assert request.kind == "patch" and request.tool == "apply_patch"
    assert tuple(request.paths) == ("a.txt", "b.txt", "c.txt")
    assert request.patch.startswith("*** Begin Patch\n") and request.patch.endswith("*** End Patch")
    assert isinstance(request, ApprovalRequest) and request.describe() == "the patch to a.txt, b.txt, c.txt"

    # refused by raising: the model sees the refusal, nothing is written
    approvals.refuse = "the user declined this patch"
    with pytest.raises(RespondToModel, match="the user declined this patch"):
        await tool.invoke((wrap("*** Add File: d.txt", "+d"),), {})
    # refused by returning False
    approvals.refuse = None
    approvals.decision = False
    with pytest.raises(RespondToModel, match="not approved"):
        await tool.invoke((wrap("*** Add File: d.txt", "+d"),), {})
    assert not (tmp_path / "d.txt").exists()
    # a malformed patch is reported before asking
    count = len(approvals.requests)
    with pytest.raises(RespondToModel, match="invalid patch at line 1"):
        await tool.invoke(("hello",), {})
    assert len(approvals.requests) == count


async def test_tool_with_the_real_approvals(tmp_path: Path) -> None:
    asked: list[ApprovalRequest] = []
    answer = False

    async def approver(request: ApprovalRequest) -> bool:
        asked.append(request)
        return answer

    registry = ToolRegistry([make_apply_patch_tool(tmp_path, approvals=Approvals(ApprovalPolicy.UNTRUSTED, approver))])
    async with open_tool_actor(registry) as actor:
        out = await call(actor, wrap("*** Add File: a.txt", "+a"))
        assert out.output.success is False and "rejected by user: the patch to a.txt was not approved" in out_text(out)
        assert not (tmp_path / "a.txt").exists()
        (request,) = asked
        assert request.kind == "patch" and request.paths == ("a.txt",) and "untrusted" in request.reason
        answer = True
        out = await call(actor, wrap("*** Add File: a.txt", "+a"), "c2")
        assert out.output.success is True and (tmp_path / "a.txt").read_text() == "a\n"
    # ApprovalPolicy.NEVER: nobody is asked
    tool = make_apply_patch_tool(tmp_path, approvals=Approvals(ApprovalPolicy.NEVER))
    assert (await tool.invoke((wrap("*** Delete File: a.txt"),), {})).success is True
    assert len(asked) == 2


def test_patch_values_are_plain_attrs() -> None:
    p = Patch([AddFile("a", "x\n")])
    assert p.hunks == (AddFile("a", "x\n"),) and p == parse_patch(wrap("*** Add File: a", "+x"))
    assert UpdateChunk(["a"], ["b"]).old_lines == ("a",)
