"""The benchmark harness runs end to end (``python -m benchmarks --quick``) and writes its three
files. Only the shape is checked, never the timings: a shared CI machine makes them noise (byte
counts, which do not depend on the machine, are checked).

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
    assert set(doc["scenarios"]) == {"streaming", "tool_turn", "concurrency", "idle", "sandbox", "websocket"}
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
    websocket = doc["scenarios"]["websocket"]
    assert websocket["params"]["calls"] == doc["config"]["ws_calls"] == 50  # --quick keeps the 50 calls
    assert websocket["params"]["runs"] == doc["config"]["ws_runs"] == 2
    assert websocket["params"]["deltas"] == doc["config"]["ws_deltas"] == 5_000
    ws_results = websocket["results"]
    assert set(ws_results) == {"http", "websocket"}
    for name, entry in ws_results.items():  # the kernel's own transports: they always run
        assert entry["status"] == "ok", (name, entry["status"])
        assert entry["requests"] == 51
        assert entry["bytes_per_follow_up"] > 0 and entry["cpu_ms_per_request"] > 0
        assert entry["wall_ms_per_turn"] > 0 and entry["streaming_us_per_delta"] > 0
    assert ws_results["http"]["incremental_requests"] == 0
    assert ws_results["websocket"]["incremental_requests"] == ws_results["websocket"]["requests"] - 1
    # HTTP re-sends the ~200 KB history; WebSocket sends the new items (figures are noise, sizes are not)
    assert ws_results["http"]["bytes_last_request"] > 200 * 1024
    assert 0 < websocket["ratios"]["bytes_per_request"] < 0.2
    assert websocket["ratios"]["cpu_per_request"] > 0 and websocket["ratios"]["streaming_cpu_per_delta"] > 0
    assert websocket["bench_ws"]["calls"] == 50  # bench_ws's own JSON, kept
    ws_targets = {t["target"]: t for t in doc["targets"] if t["target"].startswith("websocket: ")}
    assert len(ws_targets) == 3
    assert all(t["value"] is not None and t["value"] > 0 for t in ws_targets.values())
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
        "## 6. WebSocket vs HTTP",
    ):
        assert heading in text
    assert "Load average" in text and "Machine" in text
    assert "| WebSocket | 51 | 50 |" in text and "| HTTP + SSE | 51 | 0 |" in text


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


def test_bench_compaction_standalone(tmp_path: Path) -> None:
    """``python -m benchmarks.bench_compaction`` compacts the same 200-item history remotely and
    locally against a scripted server process and reports what it cost."""
    out = tmp_path / "compaction.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_compaction", "--runs", "1", "--json", str(out), "--quiet"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads(out.read_text())
    assert doc["items"] == 200 and doc["rollout_bytes"] > 200_000
    for mode in ("remote", "local"):
        figures = doc[mode]
        assert figures["items_before"] == 200 and figures["items_after"] < 10
        assert figures["tokens_after"] < figures["tokens_before"] / 50
        assert figures["cpu_ms"] > 0 and figures["wall_ms"] > 0
    assert "one compaction of 200 items" in proc.stdout


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


def test_websocket_failure_document(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """When ``bench_ws`` gives no JSON (it failed or ran out of time), both transports are
    reported failed with why, the targets say why they have no value, and the report renders."""
    import dataclasses

    from benchmarks import harness
    from benchmarks._targets import targets
    from benchmarks.report import write_markdown

    calls: list[tuple[str, list[str], float]] = []

    def run(module: str, args: list[str], limit: float, log: object) -> tuple[None, str]:
        calls.append((module, args, limit))
        return None, "no result within 240 s"

    monkeypatch.setattr(harness, "_run_bench_module", run)
    cfg = dataclasses.replace(harness.QUICK, scenarios=("websocket",))
    scenario = harness.scenario_websocket(cfg, lambda _m: None, harness.Pool(cfg.timeout))
    assert calls == [
        ("benchmarks.bench_ws", ["--calls", "50", "--output-kib", "4", "--deltas", "5000", "--runs", "2"], 240.0)
    ]
    assert {e["status"] for e in scenario["results"].values()} == {"failed: no result within 240 s"}
    assert set(scenario["ratios"].values()) == {None} and scenario["bench_ws"] is None
    found = targets({"websocket": scenario}, cfg)
    assert [t["verdict"] for t in found] == ["n/a (not measured)"] * 3
    assert found[0]["not_measured"] == "http failed: no result within 240 s; websocket failed: no result within 240 s"
    doc = {
        "date": "today",
        "argv": ["x", "--only", "websocket"],
        "config": dataclasses.asdict(cfg),
        "environment": harness.environment(),
        "load_avg": {"start": [0, 0, 0], "end": [0, 0, 0]},
        "systems": {},
        "scenarios": {"websocket": scenario},
        "targets": found,
    }
    write_markdown(doc, tmp_path / "report.md")
    text = (tmp_path / "report.md").read_text()
    assert "| WebSocket | failed: no result within 240 s |" in text and "## Systems" not in text


def test_placeholder_png_without_matplotlib(tmp_path: Path) -> None:
    from benchmarks.report import write_placeholder_png

    path = tmp_path / "p.png"
    write_placeholder_png(path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data.endswith(b"IEND\xaeB`\x82")
