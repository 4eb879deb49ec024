"""History compaction: ``HistoryClient.replace``, the ``compacted`` rollout record, resuming from
the last compaction (also after a crash mid-compaction) and ``agent-kernel history``'s rendering."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import types
import warnings
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings, strategies as st

import actors.history._file as file_module
import actors.history._resume as resume_module
from actors.cli._history import describe_compaction, print_history
from actors.cli._render import Console
from actors.history import (
    ABORTED_OUTPUT_TEXT,
    Compaction,
    RolloutError,
    RolloutWarning,
    open_history,
    resume,
    well_formed,
)
from actors.secrets import REDACTED, Redactor
from kernel import (
    CustomToolCall,
    CustomToolCallOutput,
    FunctionCall,
    FunctionCallOutput,
    FunctionCallOutputPayload,
    Message,
    ResponseItem,
    TurnCompleted,
    TurnStarted,
    UnknownItem,
    item_to_wire,
)

from .test_history import keys, read_records

ROOT = Path(__file__).resolve().parents[2]


def out(call_id: str, text: str, success: bool | None = None) -> FunctionCallOutput:
    return FunctionCallOutput(call_id, FunctionCallOutputPayload.from_text(text, success))


def old_history() -> list[ResponseItem]:
    return [
        Message.user("fix the failing test — ünïcödé ✓"),
        FunctionCall(call_id="c1", name="shell", arguments='{"command": ["pytest"]}'),
        out("c1", "1 failed\n", False),
        CustomToolCall(call_id="c2", name="apply_patch", input="*** Begin Patch\n*** End Patch"),
        CustomToolCallOutput("c2", FunctionCallOutputPayload.from_text("Done!", True)),
        Message.assistant("fixed", id="msg-1"),
    ]


def new_history(n: int = 1) -> list[ResponseItem]:
    return [
        Message.user("fix the failing test — ünïcödé ✓"),
        Message.user(f"Summary #{n}: the test failed on a typo in parse(); patched, now green."),
        UnknownItem({"type": "compaction", "id": f"cmp-{n}", "encrypted_content": "gAAAA" + "x" * 40}),
    ]


def spy_fsync(monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> list[int]:
    """Count the writer's fsyncs (only the history's file module sees the proxy)."""
    fsyncs: list[int] = []

    def fsync(fd: int) -> None:
        fsyncs.append(fd)
        os.fsync(fd)

    proxy = types.SimpleNamespace(**{name: getattr(os, name) for name in dir(os) if not name.startswith("__")})
    proxy.fsync = fsync
    for name, value in overrides.items():
        setattr(proxy, name, value)
    monkeypatch.setattr(file_module, "os", proxy)
    return fsyncs


def strict_resume(path: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return resume(path)


# ---------------------------------------------------------------------------------------------
# replace(): memory
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("on_disk", [False, True], ids=["in-memory", "rollout"])
async def test_replace_then_prompt_input(tmp_path: Path, on_disk: bool) -> None:
    rollout = tmp_path / "r.jsonl" if on_disk else None
    async with open_history(rollout=rollout) as history:
        await history.record(old_history())
        before = await history.snapshot()
        new = new_history()
        await history.replace(new, tokens_before=48_000, tokens_after=3_100)
        assert keys(await history.prompt_input()) == keys(new)
        assert keys(await history.items()) == keys(new)
        assert keys(before) == keys(old_history())  # an earlier snapshot is not changed under its holder
        snapshot = await history.snapshot()
        assert await history.snapshot() is snapshot
        # later records are appended to the new history
        later: list[ResponseItem] = [Message.user("now add a test"), FunctionCall(call_id="c9", name="f", arguments="")]
        await history.record(later)
        assert keys(await history.items()) == keys(new + later)
        # an orphan output (its call was compacted away) never reaches the prompt
        await history.record([out("c1", "late answer to a compacted call")])
        assert keys(await history.prompt_input()) == keys(new + later)
        await history.replace([])
        assert await history.items() == [] and await history.prompt_input() == []
        with trio.testing.assert_checkpoints():
            await history.replace(new)


async def test_readers_see_the_old_or_the_new_history_never_a_mix(tmp_path: Path) -> None:
    old, new = old_history(), new_history()
    valid = {tuple(keys(old)), tuple(keys(new)), tuple(keys(new + old))}
    seen: set[tuple[Any, ...]] = set()
    async with open_history(rollout=tmp_path / "r.jsonl", buffer=2) as history:
        await history.record(old)
        async with trio.open_nursery() as nursery:

            async def reader() -> None:
                for _ in range(200):
                    seen.add(tuple(keys(await history.prompt_input())))

            for _ in range(4):
                nursery.start_soon(reader)
            for _ in range(20):
                await history.replace(new)
                await history.record(old)
                await history.replace(old)
    assert seen <= valid and len(seen) > 1


# ---------------------------------------------------------------------------------------------
# The compacted record
# ---------------------------------------------------------------------------------------------


async def test_compacted_record_shape_and_seq(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.jsonl"
    kept: list[ResponseItem] = [
        *new_history(),
        FunctionCall(call_id="k1", name="shell", arguments="{}"),
        out("k1", "kept output", True),
        out("k2", "unknown success"),
    ]
    async with open_history(rollout=path) as history:
        await history.record_event(TurnStarted("t1"))
        await history.record(old_history())
        fsyncs = spy_fsync(monkeypatch)
        await history.replace(kept, reason="compaction", tokens_before=48_000, tokens_after=3_100)
        assert len(fsyncs) == 1  # durable before replace() returns, like a turn boundary
        monkeypatch.undo()
        await history.replace(new_history(2), reason="manual /compact")
        await history.record([Message.user("go on")])
        await history.record_event(TurnCompleted("t1", None))

    records = read_records(path)
    body = records[1:]
    assert [r["seq"] for r in body] == list(range(1, len(body) + 1))
    assert [r["type"] for r in body] == ["event"] + ["item"] * 6 + ["compacted", "compacted", "item", "event"]
    first, second = body[7], body[8]
    assert first == {
        "type": "compacted",
        "seq": 8,
        "items": [item_to_wire(i) for i in kept],
        "reason": "compaction",
        "tokens_before": 48_000,
        "tokens_after": 3_100,
        "success": [None, None, None, None, True, None],
    }
    assert second == {
        "type": "compacted",
        "seq": 9,
        "items": [item_to_wire(i) for i in new_history(2)],
        "reason": "manual /compact",
        "tokens_before": None,
        "tokens_after": None,
    }  # no "success" when no output knows it
    assert path.read_bytes().count(b"\n") == len(records)  # one record, one line


async def test_bad_arguments_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    async with open_history(rollout=path) as history:
        await history.record(old_history())
        size = path.stat().st_size
        bad: list[tuple[type[Exception], dict[str, Any]]] = [
            (TypeError, {"items": "a summary"}),
            (TypeError, {"items": {"type": "message"}}),
            (TypeError, {"items": [], "reason": None}),
            (TypeError, {"items": [], "tokens_before": True}),
            (TypeError, {"items": [], "tokens_after": 1.5}),
            (ValueError, {"items": [], "tokens_before": -1}),
        ]
        for error, kwargs in bad:
            with pytest.raises(error):
                await history.replace(**kwargs)
        # an item JSON cannot encode: refused whole, the history and the file unchanged
        with pytest.raises(TypeError, match="not JSON-serialisable"):
            await history.replace([Message.user("ok"), UnknownItem({"type": "x", "v": object()})])
        assert keys(await history.items()) == keys(old_history())
        assert path.stat().st_size == size
        await history.replace(new_history())  # still usable
    assert keys(strict_resume(path).items) == keys(new_history())


async def test_a_failed_write_keeps_the_old_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.jsonl"

    def half_write(fd: int, data: Any) -> int:  # half the record reaches the disk, then it fails
        os.write(fd, bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    async with open_history(rollout=path) as history:
        await history.record(old_history())
        spy_fsync(monkeypatch, write=half_write)
        with pytest.raises(RolloutError, match="No space left"):
            await history.replace(new_history())
        monkeypatch.undo()
        assert keys(await history.items()) == keys(old_history())
        with pytest.raises(RolloutError, match="accepts no more records"):
            await history.replace(new_history())
        assert keys(await history.prompt_input()) == keys(old_history())
    assert keys(strict_resume(path).items) == keys(old_history())  # the half line was cut back out


async def test_replace_is_done_or_not_done_under_cancellation(tmp_path: Path) -> None:
    for rollout in (None, tmp_path / "r.jsonl"):
        async with open_history(rollout=rollout) as history:
            await history.record(old_history())
            with trio.CancelScope() as scope:
                scope.cancel()
                await history.replace(new_history())  # cancelled before it was sent: not done
            assert scope.cancelled_caught
            assert keys(await history.items()) == keys(old_history())
            if rollout is not None:
                with trio.CancelScope() as scope:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(history.replace, new_history())
                        await trio.testing.wait_all_tasks_blocked()
                        scope.cancel()  # sent: waited for, shielded, and done
                assert keys(await history.items()) == keys(new_history())
        if rollout is not None:
            assert keys(strict_resume(rollout).items) == keys(new_history())


# ---------------------------------------------------------------------------------------------
# Resume
# ---------------------------------------------------------------------------------------------


async def test_resume_starts_from_the_last_of_several_compactions(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    async with open_history(rollout=path) as history:
        for n in range(1, 4):
            await history.record_event(TurnStarted(f"t{n}"))
            await history.record(old_history())
            await history.replace(new_history(n), reason=f"round {n}", tokens_before=1000 * n, tokens_after=n)
            await history.record([Message.user(f"after {n}")])
            await history.record_event(TurnCompleted(f"t{n}", None))
        in_memory = await history.items()
    expected = [*new_history(3), Message.user("after 3")]
    assert keys(in_memory) == keys(expected)

    resumed = strict_resume(path)
    assert keys(resumed.items) == keys(expected) and keys(resumed.recorded) == keys(expected)
    assert resumed.added == () and resumed.dropped == ()
    assert resumed.compactions == 3
    records = read_records(path)
    assert resumed.last_seq == records[-1]["seq"]
    last = resumed.compaction
    assert isinstance(last, Compaction)
    assert (last.seq, last.line, last.reason, last.tokens_before, last.tokens_after) == (
        records[-3]["seq"],
        len(records) - 2,
        "round 3",
        3000,
        3,
    )
    assert keys(last.items) == keys(new_history(3))
    assert [e["type"] for e in resumed.events] == ["turn_started", "turn_completed"] * 3  # every event

    # resuming goes on from there: same items, seq continues, and a later resume agrees
    async with open_history(rollout=path, resume=True) as history:
        assert keys(await history.items()) == keys(expected)
        await history.record([Message.user("resumed")])
        await history.replace(new_history(4))
        await history.record([Message.user("after 4")])
        final = await history.items()
    records = read_records(path)
    assert [r["seq"] for r in records[1:]] == list(range(1, len(records)))
    again = strict_resume(path)
    assert keys(again.items) == keys(final) == keys([*new_history(4), Message.user("after 4")])
    assert again.compactions == 4


async def test_resume_does_not_rebuild_what_a_compaction_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r.jsonl"
    async with open_history(rollout=path) as history:
        for _ in range(50):
            await history.record(old_history())
        await history.replace(new_history())
        await history.record([Message.user("after")])
    decoded: list[dict[str, Any]] = []
    real = resume_module.item_from_wire

    def counting(wire: Any) -> ResponseItem:
        decoded.append(wire)
        return real(wire)

    monkeypatch.setattr(resume_module, "item_from_wire", counting)
    assert keys(strict_resume(path).items) == keys([*new_history(), Message.user("after")])
    assert len(decoded) == len(new_history()) + 1  # not the 300 items before the compaction

    # so an item before the compaction that could not be decoded no longer matters ...
    lines = path.read_bytes().split(b"\n")
    lines[2] = json.dumps({"type": "item", "seq": 2, "item": {"type": "message", "role": 7}}).encode()
    path.write_bytes(b"\n".join(lines))
    assert keys(strict_resume(path).items) == keys([*new_history(), Message.user("after")])
    # ... but every line is still read as a record: damage before it is reported
    lines[2] = b"\x00\x00 not json"
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(RolloutError, match="line 3") as info:
        resume(path)
    assert info.value.line == 3


async def test_resume_repairs_the_history_after_a_compaction(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    call = FunctionCall(call_id="k1", name="shell", arguments="{}")
    async with open_history(rollout=path) as history:
        await history.record(old_history())
        await history.replace([*new_history(), call, out("k1", "kept", True)])
        await history.record([out("c1", "answer to a call the compaction removed")])
        await history.record([FunctionCall(call_id="k2", name="shell", arguments="{}")])  # crash: no output
    resumed = resume(path)
    assert [i.call_id for i in resumed.dropped] == ["c1"]  # type: ignore[union-attr]
    assert [i.call_id for i in resumed.added] == ["k2"]  # type: ignore[union-attr]
    assert resumed.added[0].output.text_content() == ABORTED_OUTPUT_TEXT  # type: ignore[union-attr]
    assert resumed.items[len(new_history()) + 1].output.success is True  # type: ignore[union-attr]
    assert keys(well_formed(resumed.items)) == keys(resumed.items)
    async with open_history(rollout=path, resume=True) as history:
        assert keys(await history.items()) == keys(resumed.items)
    assert strict_resume(path).added == ()  # the repair was written after the compaction


async def test_crash_mid_compaction_truncated_at_every_offset(tmp_path: Path) -> None:
    """A crash while the compacted record is written leaves a prefix of its line: resume gives the
    old history (any strict prefix) or the new one (the whole record, with or without its
    newline), never a mix; and the session can go on from either."""
    path = tmp_path / "full.jsonl"
    old = [*old_history(), Message.user("last words ✓")]
    new = [*new_history(), FunctionCall(call_id="k", name="f", arguments="{}"), out("k", "kept ✓", True)]
    async with open_history(rollout=path) as history:
        await history.record(old)
        await history.record_event(TurnCompleted("t1", None))
        await history.replace(new, tokens_before=48_000, tokens_after=3_100)
    data = path.read_bytes()
    start = data.rindex(b"\n", 0, len(data) - 1) + 1
    line = data[start:]
    n_lines = data.count(b"\n")
    assert json.loads(line)["type"] == "compacted" and len(line) > 300

    torn = tmp_path / "torn.jsonl"
    old_keys, new_keys = keys(old), keys(new)
    for cut in range(len(line) + 1):
        torn.write_bytes(data[: start + cut])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            resumed = resume(torn)
        notes = [str(w.message) for w in caught if issubclass(w.category, RolloutWarning)]
        got = keys(resumed.items)
        if cut >= len(line) - 1:  # the whole record (its newline may be missing): the new history
            assert got == new_keys, cut
            assert notes == [] and resumed.compactions == 1
        else:
            assert got == old_keys, cut
            assert resumed.compaction is None and resumed.valid_size == start
            if cut == 0:
                assert notes == []
            else:
                assert len(notes) == 1 and f"line {n_lines}" in notes[0], (cut, notes)
                assert resumed.torn_line == n_lines

        # and the session goes on (a sample of the offsets: each opens, fsyncs and closes a file)
        if cut % 23 in (0, 1) or cut >= len(line) - 2:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RolloutWarning)
                async with open_history(rollout=torn, resume=True) as history:
                    await history.record([Message.user("after the crash")])
                    expected = await history.items()
            assert keys(expected) == got + keys([Message.user("after the crash")])
            records = read_records(torn)
            assert [r["seq"] for r in records[1:]] == list(range(1, len(records)))
            assert keys(strict_resume(torn).items) == keys(expected)


async def test_a_last_compacted_line_that_cannot_be_decoded_is_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    async with open_history(rollout=path) as history:
        await history.record(old_history())
    record = {"type": "compacted", "seq": 7, "items": [{"type": "message", "role": 1}], "reason": "compaction"}
    with path.open("ab") as f:
        f.write(json.dumps(record).encode() + b"\n")
    with pytest.warns(RolloutWarning, match="line 8"):
        resumed = resume(path)
    assert keys(resumed.items) == keys(old_history()) and resumed.compaction is None
    # the same line with a record after it is damage, not a torn write: an error naming it
    with path.open("ab") as f:
        f.write(json.dumps({"type": "item", "seq": 8, "item": item_to_wire(Message.user("x"))}).encode() + b"\n")
    with pytest.raises(RolloutError, match="line 8.*'items'\\[0\\]"):
        resume(path)
    bad_shapes: list[dict[str, Any]] = [
        {"items": "x"},
        {"items": [1]},
        {"reason": None},
        {"tokens_before": "many"},
        {"tokens_after": -5},
        {"success": [True, False]},
        {"success": ["yes"]},
        {"seq": 3},
    ]
    header_and_items = path.read_bytes().split(b"\n")[:7]
    for change in bad_shapes:
        bad = {"type": "compacted", "seq": 7, "items": [item_to_wire(Message.user("s"))], "reason": "r", **change}
        path.write_bytes(b"\n".join([*header_and_items, json.dumps(bad).encode(), b'{"type":"future"}', b""]))
        with pytest.raises(RolloutError, match="line 8"):
            resume(path)


def test_sigkill_during_compactions_resumes_to_an_acknowledged_or_the_next_history(tmp_path: Path) -> None:
    """A real process replaces its history over and over (large records: a kill often lands
    while one is being written or fsynced, before ``replace`` returned) and is killed with
    SIGKILL; the resumed history is the last acknowledged one or the one in flight, exactly.
    (A kill does not tear a ``write()`` to a regular file; torn lines are tested byte by byte
    above.)"""
    child = tmp_path / "child.py"
    child.write_text(
        textwrap.dedent("""
        import json, os, sys, trio
        from actors.history import open_history
        from kernel import Message

        def ack(step):
            os.write(1, (json.dumps(step) + "\\n").encode())

        async def main(path):
            async with open_history(rollout=path) as history:
                await history.record([Message.user("first")])
                ack(0)
                k = 0
                while True:
                    k += 1
                    await history.replace([Message.user(f"summary {k} " + "x" * 100_000), Message.user(f"recent {k}")])
                    ack(2 * k - 1)
                    await history.record([Message.user(f"after {k}")])
                    ack(2 * k)

        trio.run(main, sys.argv[1])
        """)
    )

    def state(step: int) -> list[str]:
        if step == 0:
            return ["first"]
        k = (step + 1) // 2
        texts = [f"summary {k} " + "x" * 100_000, f"recent {k}"]
        return texts + [f"after {k}"] if step % 2 == 0 else texts

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for delay in (0.05, 0.2, 0.4):
        rollout = tmp_path / f"r{delay}.jsonl"
        proc = subprocess.Popen([sys.executable, str(child), str(rollout)], stdout=subprocess.PIPE, env=env)
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"0\n"  # started
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=60)
        acked = [0] + [int(line) for line in rest.split(b"\n") if line.strip().isdigit()]
        last = acked[-1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RolloutWarning)
            resumed = resume(rollout)
        texts = [i.text() for i in resumed.items]  # type: ignore[union-attr]
        assert texts in (state(last), state(last + 1)), (delay, last, [t[:20] for t in texts])


# ---------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------


ENV_KEY = "OPENAI_" + "API_KEY"  # (spelt apart: a key scanner would read NAME=value as a committed key)


async def test_replacement_items_scrubbed_like_tool_outputs_never_reach_the_rollout(tmp_path: Path) -> None:
    """The history writes items as given (like ``record``); a session scrubs the replacement
    with its redactor first, as tool outputs are scrubbed before they are recorded."""
    secret = "sk-test-COMPACT-0123456789abcdef"
    redactor = Redactor([secret])
    path = tmp_path / "r.jsonl"
    replacement: list[ResponseItem] = [
        *new_history(),
        FunctionCall(call_id="k", name="shell", arguments='{"command": ["env"]}'),
        out("k", f"{ENV_KEY}={secret}\nHOME=/root", True),
    ]
    scrubbed = [
        redactor.redact_output(i) if isinstance(i, (FunctionCallOutput, CustomToolCallOutput)) else i
        for i in replacement
    ]
    async with open_history(rollout=path) as history:
        await history.replace(scrubbed)
        assert secret not in json.dumps([item_to_wire(i) for i in await history.items()])
    text = path.read_text()
    assert secret not in text and REDACTED in text
    assert strict_resume(path).items[-1].output.success is True  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------
# agent-kernel history
# ---------------------------------------------------------------------------------------------


async def _compacted_rollout(path: Path) -> None:
    async with open_history(rollout=path, session_meta={"model": "m", "cwd": "/w"}) as history:
        for n in range(91):
            await history.record([Message.user(f"question {n}"), Message.assistant(f"answer {n}")])
        await history.record_event(TurnCompleted("t1", None))
        summary = [Message.user(f"recent {n}") for n in range(6)] + [Message.user("Summary: all answered")]
        await history.replace(summary, tokens_before=48_000, tokens_after=3_100)
        await history.record([Message.user("one more"), FunctionCall(call_id="c", name="shell", arguments="{}")])
        await history.record([out("c", "boom", False)])
        await history.replace([Message.user("Summary again")], reason="manual")


def test_history_command_shows_the_compactions(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    trio.run(_compacted_rollout, path)
    env = {**os.environ, "NO_COLOR": "1", "PYTHONIOENCODING": "utf-8", "PYTHONPATH": str(ROOT)}
    shown = subprocess.run(
        [sys.executable, "-m", "actors.cli", "history", str(path)], capture_output=True, text=True, env=env, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    rule = [n for n, line in enumerate(lines) if "compacted:" in line]
    assert len(rule) == 2
    assert lines[rule[0]] == " 184  ── compacted: 182 items → 7 (compaction; ~48,000 → ~3,100 tokens)"
    assert lines[rule[0] - 1].endswith("turn completed (t1)") and "answer 90" in lines[rule[0] - 2]
    # the new history follows it (no seq: the items belong to the record), then later records
    assert [line.strip() for line in lines[rule[0] + 1 : rule[0] + 8]] == [
        *(f"user: recent {n}" for n in range(6)),
        "user: Summary: all answered",
    ]
    assert lines[rule[0] + 1].startswith("      user: ")
    assert lines[rule[0] + 8] == " 185  user: one more"
    assert "output [c] (failed): boom" in lines[rule[0] + 10]
    assert lines[rule[1]] == " 188  ── compacted: 10 items → 1 (manual)"
    assert lines[rule[1] + 1 :] == ["      user: Summary again"]

    as_json = subprocess.run(
        [sys.executable, "-m", "actors.cli", "history", str(path), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert as_json.returncode == 0, as_json.stderr
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert records == read_records(path)
    assert [r["type"] for r in records].count("compacted") == 2

    # a compaction torn by a crash is skipped with a note, like any torn last line
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex(b"\n", 0, len(data) - 1) + 30])
    torn = subprocess.run(
        [sys.executable, "-m", "actors.cli", "history", str(path)], capture_output=True, text=True, env=env, timeout=60
    )
    assert torn.returncode == 0 and "torn last line" in torn.stderr
    assert torn.stdout.count("compacted:") == 1


class _Utf8(io.StringIO):
    encoding = "utf-8"


def test_compaction_line_variants_and_ascii_terminals(tmp_path: Path) -> None:
    record: dict[str, Any] = {"type": "compacted", "seq": 5, "items": [{}, {}], "reason": "compaction"}
    assert describe_compaction(record, 1) == "compacted: 1 item → 2 (compaction)"
    assert (
        describe_compaction({**record, "tokens_before": 1234}, 9)
        == "compacted: 9 items → 2 (compaction; ~1,234 tokens before)"
    )
    assert describe_compaction({**record, "tokens_after": 99, "reason": ""}, 3, arrow="->") == (
        "compacted: 3 items -> 2 (compaction; ~99 tokens after)"
    )
    assert describe_compaction({"items": None, "tokens_before": True}, 0) == "compacted: 0 items → 0 (compaction)"

    path = tmp_path / "r.jsonl"
    trio.run(_compacted_rollout, path)
    for stream, rule in ((_Utf8(), "── compacted: 182 items → 7"), (io.StringIO(), "-- compacted: 182 items -> 7")):
        print_history(path, Console(stream, io.StringIO()))
        assert f" 184  {rule} (compaction; ~48,000 " in stream.getvalue()


# ---------------------------------------------------------------------------------------------
# Property: any sequence of records and replacements resumes to what memory held
# ---------------------------------------------------------------------------------------------


_ITEMS = [*old_history(), *new_history(1), *new_history(2), Message.user("x")]


@settings(max_examples=max(10, settings().max_examples // 4), deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.lists(st.sampled_from(range(len(_ITEMS))), max_size=4)),
        max_size=8,
    )
)
def test_records_and_replacements_resume_to_memory(ops: list[tuple[bool, list[int]]]) -> None:
    async def main(path: Path) -> tuple[list[ResponseItem], list[ResponseItem]]:
        async with open_history(rollout=path) as history, open_history() as memory:
            for replace, indices in ops:
                items = [_ITEMS[i] for i in indices]
                for h in (history, memory):
                    await (h.replace(items) if replace else h.record(items))
            return await history.items(), await memory.items()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.jsonl"
        on_disk, in_memory = trio.run(main, path)
        resumed = strict_resume(path)
    assert keys(on_disk) == keys(in_memory) == keys(resumed.recorded)
    assert resumed.compactions == sum(1 for replace, _ in ops if replace)
