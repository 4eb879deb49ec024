"""``agent-kernel compact ROLLOUT`` as a subprocess: the rollout gets a compacted record, ``history``
shows it and ``resume`` goes on from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "actors.cli"]


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(XDG_DATA_HOME=str(tmp_path / "xdg"), TMPDIR=str(tmp_path), NO_COLOR="1", PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(
        [*CLI, *args], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )


def test_compact_a_rollout_then_history_and_resume(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    long = "a long answer about the report " * 40
    script.write_text(json.dumps({"replies": [long, "Second answer.", "After the compaction."]}))
    rollout = tmp_path / "session.jsonl"
    workspace = tmp_path / "ws"
    workspace.mkdir()
    common = ["--script", str(script), "--cwd", str(workspace)]
    first = _run(["exec", "tell me about the report", *common, "--rollout", str(rollout)], tmp_path)
    assert first.returncode == 0, first.stderr
    second = _run(["resume", str(rollout), "and more", *common], tmp_path)
    assert second.returncode == 0, second.stderr

    compacted = _run(["compact", str(rollout), "--script", str(script)], tmp_path)
    assert compacted.returncode == 0, compacted.stderr
    assert compacted.stdout.startswith("compacted (remote): 4 items → 3,")
    records = [json.loads(line) for line in rollout.read_text().splitlines()]
    record = [r for r in records if r["type"] == "compacted"][-1]
    assert record["reason"] == "manual" and record["tokens_after"] < record["tokens_before"]
    assert records[-1]["event"]["type"] == "compaction_finished"  # (the event follows the record)
    assert [i.get("type") for i in record["items"]] == ["message", "message", "compaction"]

    shown = _run(["history", str(rollout)], tmp_path)
    assert shown.returncode == 0 and "compacted: 4 items → 3" in shown.stdout

    third = _run(["resume", str(rollout), "go on", *common, "--json"], tmp_path)
    assert third.returncode == 0, third.stderr
    summary = [json.loads(line) for line in third.stdout.splitlines()][-1]
    assert summary["type"] == "summary"


def test_compact_a_missing_rollout_is_a_usage_error(tmp_path: Path) -> None:
    result = _run(["compact", str(tmp_path / "nope.jsonl")], tmp_path)
    assert result.returncode == 2 and "no such rollout file" in result.stderr
