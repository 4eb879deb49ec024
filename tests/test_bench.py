"""The benchmark harness runs end to end (``python -m benchmarks --quick``) and writes its three
files. Only the shape is checked, never the figures: a shared CI machine makes numbers noise.

Peers and matplotlib come with the ``bench`` extra; without them the peers are reported as
skipped and ``report.png`` is a placeholder, and this test passes the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# --quick takes well under a minute on an idle 2-core machine; a loaded shared one needs more
TIMEOUT = float(os.environ.get("BENCH_TEST_TIMEOUT", "300"))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--quiet", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def test_results_json(quick_run: Path) -> None:
    doc = json.loads((quick_run / "results.json").read_text())
    assert doc["config"]["quick"] is True
    assert set(doc["scenarios"]) == {"streaming", "tool_turn", "concurrency", "idle"}
    machine = doc["environment"]["machine"]
    assert machine["logical_cpus"] and machine["cpu_model"]
    assert doc["environment"]["python"] and doc["environment"]["packages"]["trio"]
    assert len(doc["load_avg"]["start"]) == 3
    # the floor and the kernel need nothing beyond the core dependencies: they always run
    for scenario in ("streaming", "tool_turn"):
        for system in ("floor", "kernel"):
            entry = doc["scenarios"][scenario]["results"][system]
            assert entry["status"] == "ok", (scenario, system, entry["status"])
    stream = doc["scenarios"]["streaming"]["results"]
    assert stream["kernel"]["cpu_us_per_event"]["n"] == doc["config"]["runs"] == 3
    assert stream["kernel"]["deltas_seen"] == [doc["config"]["stream_deltas"]] * 3
    for entry in stream.values():  # a peer is measured, skipped or failed: never silently absent
        assert entry["status"] == "ok" or entry["status"].startswith(("skipped", "failed"))
    levels = doc["scenarios"]["concurrency"]["results"]["kernel"]["levels"]
    assert set(levels) == {str(n) for n in doc["config"]["levels"]}
    assert doc["scenarios"]["idle"]["results"]["kernel"]["rss_per_session_kib"]["median"] > 0
    assert {t["verdict"] for t in doc["targets"]} <= {
        "met",
        "missed",
        "missed (within the worst case)",
        "n/a (not measured)",
    }


def test_report_md(quick_run: Path) -> None:
    text = (quick_run / "report.md").read_text()
    assert text.startswith("# trio-agent-kernel benchmarks")
    table_rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert any(line.startswith("| --- |") for line in table_rows)
    assert any("trio-agent-kernel" in line for line in table_rows)
    for heading in ("## Targets", "## 1. Streaming", "## 2. Tool turn", "## 3. Concurrency", "## 4. Idle memory"):
        assert heading in text
    assert "Load average" in text and "Machine" in text


def test_report_png(quick_run: Path) -> None:
    data = (quick_run / "report.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR" and len(data) > 100


def test_placeholder_png_without_matplotlib(tmp_path: Path) -> None:
    from benchmarks.report import write_placeholder_png

    path = tmp_path / "p.png"
    write_placeholder_png(path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data.endswith(b"IEND\xaeB`\x82")
