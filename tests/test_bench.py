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
    assert set(doc["scenarios"]) == {"streaming", "tool_turn", "concurrency", "idle", "sandbox"}
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
    sandbox = doc["scenarios"]["sandbox"]
    assert sandbox["params"]["calls"] == doc["config"]["sandbox_calls"] == 30
    results = sandbox["results"]
    assert set(results) == {"none", "bwrap", "landlock"}
    assert results["none"]["status"] == "ok", results["none"]["status"]
    assert results["none"]["wall_ms"]["n"] == results["none"]["cpu_ms"]["n"] == 3
    for name in ("bwrap", "landlock"):  # a backend is measured, unavailable here (and why) or failed
        entry = results[name]
        assert entry["status"] == "ok" or entry["status"].startswith(("unavailable: ", "failed: "))
        if entry["status"] == "ok":
            assert entry["cpu_ms"]["median"] > 0 and sandbox["ratios"][f"{name}_wall_to_none"] > 0
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
    for heading in (
        "## Targets",
        "## 1. Streaming",
        "## 2. Tool turn",
        "## 3. Concurrency",
        "## 4. Idle memory",
        "## 5. Sandbox cost",
    ):
        assert heading in text
    assert "Load average" in text and "Machine" in text


def test_report_png(quick_run: Path) -> None:
    data = (quick_run / "report.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR" and len(data) > 100


def test_bench_sandbox_standalone(tmp_path: Path) -> None:
    """``python -m benchmarks.bench_sandbox`` prints a line per backend and writes the JSON the
    harness reads: the unsandboxed baseline always runs; a sandbox runs or says why not."""
    out = tmp_path / "sandbox.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_sandbox", "--calls", "3", "--runs", "2", "--warmup", "1"]
        + ["--json", str(out), "--quiet"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert lines[0] == 'shell ["true"]: 3 calls × 2 runs per backend'
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["none", "bwrap", "landlock"]
    doc = json.loads(out.read_text())
    none = doc["results"]["none"]
    assert none["status"] == "ok" and none["wall_ms"]["n"] == 2
    assert none["wall_ms"]["median"] > 0 and none["cpu_ms"]["median"] > 0
    assert none["children_cpu_ms"]["median"] > 0  # `true`'s own CPU is counted
    for name in ("bwrap", "landlock"):
        status = doc["results"][name]["status"]
        assert status == "ok" or status.startswith(("unavailable: ", "failed: ")), status


def test_bench_sandbox_reports_an_unavailable_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """A backend whose sandbox cannot be built here is skipped with the reason, not measured
    and not faked; the others still run."""
    from actors.tools.sandbox import Sandbox, SandboxUnavailable
    from benchmarks import bench_sandbox

    real = Sandbox.for_workspace.__func__  # type: ignore[attr-defined]

    def for_workspace(cls: type[Sandbox], policy: object, workspace: object) -> Sandbox:
        if getattr(policy, "backend", None) == "landlock":
            raise SandboxUnavailable("no Landlock in this test")
        return real(cls, policy, workspace)  # type: ignore[no-any-return]

    monkeypatch.setattr(Sandbox, "for_workspace", classmethod(for_workspace))
    doc = bench_sandbox.measure(calls=2, runs=1, warmup=0)
    assert doc["results"]["landlock"]["status"] == "unavailable: no Landlock in this test"
    assert "wall_ms" not in doc["results"]["landlock"]
    assert doc["ratios"]["landlock_wall_to_none"] is None and doc["ratios"]["landlock_cpu_to_none"] is None
    assert doc["results"]["none"]["status"] == "ok" and doc["results"]["none"]["wall_ms"]["n"] == 1
    assert any("landlock: unavailable: no Landlock in this test" in line for line in bench_sandbox.summary_lines(doc))


def test_placeholder_png_without_matplotlib(tmp_path: Path) -> None:
    from benchmarks.report import write_placeholder_png

    path = tmp_path / "p.png"
    write_placeholder_png(path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data.endswith(b"IEND\xaeB`\x82")
