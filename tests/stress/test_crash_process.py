"""Crash test with a real process: a child runs a session that writes its rollout constantly and
is killed with SIGKILL at a random moment (often in the middle of writing a batch); a new
process resumes the rollout. Everything the child saw acknowledged (``record()`` returned) is in
the resumed history, in order; dangling tool calls are repaired; the resumed session goes on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import trio
from hypothesis import given, settings, strategies as st

from actors import ModelSettings, open_session
from actors.history import ABORTED_OUTPUT_TEXT, resume
from actors.scripted import Reply, Script, Text, open_scripted_server
from kernel import item_to_wire
from kernel.testing import well_formed_violations

from ._profile import examples

CHILD = Path(__file__).with_name("crash_child.py")
ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-test-CRASH-0123456789abcdef"


def _wire(item: Any) -> dict[str, Any]:
    out = {"item": item_to_wire(item)}
    success = getattr(getattr(item, "output", None), "success", None)
    if success is not None:
        out["success"] = success
    return out


class _Child:
    """A child process whose stdout is drained by a thread (so it never blocks on a full pipe)."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(ROOT), env=env
        )
        self.lines: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                obj = json.loads(raw)
            except ValueError:  # a line cut by the kill
                continue
            self.lines.append(obj)
            if obj.get("ready"):
                self.ready.set()
        self.ready.set()

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        rc = self.proc.wait(timeout)
        self.reader.join(timeout)
        assert self.proc.stderr is not None
        return rc, self.proc.stderr.read().decode("utf-8", "replace")


@settings(max_examples=examples(4, 40), deadline=None)
@given(kill_after=st.floats(0.0, 0.6), wire=st.sampled_from(["responses", "chat"]))
def test_sigkill_at_a_random_moment_loses_nothing_acknowledged(kill_after: float, wire: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rollout = Path(tmp) / "rollout.jsonl"
        child = _Child(str(rollout), wire)
        assert child.ready.wait(60), "the child never became ready"
        time.sleep(kill_after)
        os.kill(child.proc.pid, signal.SIGKILL)
        rc, err = child.finish()
        assert rc == -signal.SIGKILL, err
        acked_items = [
            {k: v for k, v in line.items() if k != "ack"} for line in child.lines if line.get("ack") == "item"
        ]
        acked_events = [line["event"] for line in child.lines if line.get("ack") == "event"]

        # a new process (this one) reads what survived
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            resumed = resume(rollout)
        recorded = [_wire(i) for i in resumed.recorded]
        assert recorded[: len(acked_items)] == acked_items, "an acknowledged item was lost or reordered"
        assert list(resumed.events[: len(acked_events)]) == acked_events, "an acknowledged event was lost"
        assert not well_formed_violations(list(resumed.items))
        for added in resumed.added:
            assert added.output.body == ABORTED_OUTPUT_TEXT and added.output.success is False  # type: ignore[union-attr]
        text = rollout.read_bytes()
        assert KEY.encode() not in text

        # this process (not the one that wrote the file) resumes the session and goes on
        first, last = trio.run(_resume_and_continue, rollout, wire)
        assert first == [_wire(i) for i in resumed.items]
        assert last[: len(first)] == first
        assert last[-1]["item"]["content"][0]["text"] == "after the crash"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the resumed session left a clean file behind
            final = resume(rollout)
        assert [_wire(i) for i in final.items] == last and not final.added
        assert KEY.encode() not in rollout.read_bytes()


async def _resume_and_continue(rollout: Path, wire: str) -> tuple[list[Any], list[Any]]:
    async with open_scripted_server(Script([Reply(items=[Text("after the crash")])])) as server:
        model = ModelSettings(base_url=server.base_url, model="m", api_key=KEY, wire=wire)  # type: ignore[arg-type]
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            async with open_session(model=model, rollout=rollout, resume=True) as session:
                first = [_wire(i) for i in await session.history()]
                outcome = await session.run("go on")
                assert outcome.status == "completed", outcome
                return first, [_wire(i) for i in await session.history()]
