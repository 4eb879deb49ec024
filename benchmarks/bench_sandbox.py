"""Benchmark: what the command sandbox costs — the ``shell`` tool running ``["true"]``, sandboxed
and not.

For each backend — ``none`` (``danger-full-access``), ``bwrap`` and ``landlock`` (``workspace-write``,
the backend forced) — the built-in ``shell`` tool (:func:`actors.tools.builtin.shell.make_shell_tool`)
is made for a fresh temporary workspace and called ``calls`` times with ``["true"]``, in-process (no
model, no server). Per call:

* **wall**: ``time.perf_counter()`` around the tool call;
* **CPU**: this process's ``time.process_time()`` delta (the tool's own work: environment, temp
  dir, ``fork``/``exec``, the event loop) plus the children's CPU, the
  ``resource.getrusage(RUSAGE_CHILDREN)`` user + system delta (bwrap or the Landlock launcher and
  ``true``: a child's CPU is counted once it is reaped, which the tool does before it returns).

A run is ``calls`` calls; its figure is the mean per call. Each backend gets ``warmup`` calls first,
then the runs go round-robin (none, bwrap, landlock, none, …) so drift in the machine's load lands on
every backend alike. Figures are the median over the runs with min – max; the ratios divide a
sandbox's median by the unsandboxed one (and, per round, paired). A backend that cannot run here
(:class:`~actors.tools.sandbox.SandboxUnavailable`) is reported as unavailable, with why.

    python -m benchmarks.bench_sandbox                  # 200 calls × 5 runs
    python -m benchmarks.bench_sandbox --calls 30 --runs 3 --json out.json

``python -m benchmarks --only sandbox`` runs this module in a subprocess of its own and puts the
figures in the benchmark report.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

__all__ = ["BACKENDS", "COMMAND", "measure", "summary_lines", "main"]

BACKENDS = ("none", "bwrap", "landlock")
"""The backends measured, the baseline first."""
COMMAND = ["true"]
"""The command each call runs: one that does nothing, so the figures are the tool's and the
sandbox's cost alone."""

_LABELS = {
    "none": "no sandbox (danger-full-access)",
    "bwrap": "bubblewrap (workspace-write)",
    "landlock": "Landlock (workspace-write)",
}

Log = Callable[[str], None]


def _policy(backend: str) -> Any:
    from actors.tools.sandbox import SandboxMode, SandboxPolicy

    if backend == "none":
        return SandboxPolicy(mode=SandboxMode.DANGER_FULL_ACCESS)
    return SandboxPolicy(mode=SandboxMode.WORKSPACE_WRITE, backend=backend)  # type: ignore[arg-type]


def _detail(backend: str) -> str:
    """What runs the sandbox here (the bwrap binary and its version, the Landlock ABI)."""
    try:
        if backend == "bwrap":
            from actors.tools.sandbox._bwrap import bwrap_binary

            binary = bwrap_binary()
            if binary is None:
                return ""
            done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False)
            return f"{done.stdout.strip() or 'bwrap'} ({binary})"
        if backend == "landlock":
            from actors.tools.sandbox._landlock import landlock_abi

            return f"Landlock ABI {landlock_abi()}; launcher: {Path(sys.executable).name} -I _landlock_exec.py"
    except Exception as exc:  # a detail for the report, never a reason to fail
        return f"({type(exc).__name__}: {exc})"
    return "plain fork/exec"


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


async def _call(tool: Any) -> tuple[float, float, float]:
    """One call: (wall s, this process's CPU s, the children's CPU s). Raises if ``true`` failed."""
    c0 = _children_cpu()
    p0 = time.process_time()
    w0 = time.perf_counter()
    out = await tool.fn(command=COMMAND)
    w1 = time.perf_counter()
    p1 = time.process_time()
    c1 = _children_cpu()
    result = json.loads(out)
    code = result["metadata"]["exit_code"]
    if code != 0:
        raise RuntimeError(f"`true` exited {code}: {result['output'].strip()[:300]!r}")
    return w1 - w0, p1 - p0, c1 - c0


def _stats(values: list[float], scale: float = 1.0) -> dict[str, Any] | None:
    """Median, min, max and the samples (the harness's shape), times ``scale``."""
    xs = [v * scale for v in values]
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs), "samples": xs}


def _quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def measure(calls: int = 200, runs: int = 5, warmup: int = 5, log: Log = lambda _m: None) -> dict[str, Any]:
    """Measure every backend (see the module docstring); returns the scenario's document:
    ``params``, ``results`` (per backend: ``status``, ``label``, ``detail`` and, when it ran,
    ``wall_ms`` / ``cpu_ms`` / ``own_cpu_ms`` / ``children_cpu_ms`` per call as median-over-runs
    stats, ``wall_p50_ms`` / ``wall_p99_ms`` over every call), ``ratios`` and ``paired_ratios``
    (``<backend>_{wall,cpu}_to_none``)."""
    if calls < 1 or runs < 1 or warmup < 0:
        raise ValueError("calls and runs must be at least 1, warmup at least 0")
    from actors.tools.builtin.shell import make_shell_tool
    from actors.tools.sandbox import SandboxUnavailable

    results: dict[str, dict[str, Any]] = {}
    tools: dict[str, Any] = {}
    per_run: dict[str, list[tuple[float, float, float]]] = {}
    every_wall: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as workspace:
        for name in BACKENDS:
            results[name] = {"status": "ok", "label": _LABELS[name], "detail": _detail(name)}
            try:
                tools[name] = make_shell_tool(workspace, sandbox=_policy(name))
            except SandboxUnavailable as exc:
                results[name]["status"] = f"unavailable: {exc}"
                log(f"    {name}: {results[name]['status']}")
                continue
            per_run[name] = []
            every_wall[name] = []

        async def main() -> None:
            for name in list(tools):
                try:
                    for _ in range(warmup):
                        await _call(tools[name])
                except Exception as exc:
                    results[name]["status"] = f"failed: {exc}"
                    log(f"    {name}: {results[name]['status']}")
                    del tools[name]
            for r in range(runs):
                for name in list(tools):
                    wall = own = children = 0.0
                    try:
                        for _ in range(calls):
                            w, p, c = await _call(tools[name])
                            wall += w
                            own += p
                            children += c
                            every_wall[name].append(w)
                    except Exception as exc:
                        results[name]["status"] = f"failed: {exc}"
                        log(f"    {name}: {results[name]['status']}")
                        del tools[name]
                        continue
                    per_run[name].append((wall / calls, own / calls, children / calls))
                log(f"    sandbox round {r + 1}/{runs} done (load {os.getloadavg()[0]:.2f})")

        trio.run(main)

    for name, samples in per_run.items():
        entry = results[name]
        if entry["status"] != "ok":
            continue
        entry["wall_ms"] = _stats([w for w, _, _ in samples], 1e3)
        entry["cpu_ms"] = _stats([p + c for _, p, c in samples], 1e3)
        entry["own_cpu_ms"] = _stats([p for _, p, _ in samples], 1e3)
        entry["children_cpu_ms"] = _stats([c for _, _, c in samples], 1e3)
        entry["wall_p50_ms"] = _quantile(every_wall[name], 0.5) * 1e3
        entry["wall_p99_ms"] = _quantile(every_wall[name], 0.99) * 1e3

    ratios: dict[str, float | None] = {}
    paired: dict[str, dict[str, float] | None] = {}
    base = results["none"]
    for name in BACKENDS[1:]:
        entry = results[name]
        for what in ("wall", "cpu"):
            key = f"{name}_{what}_to_none"
            a: dict[str, Any] | None = entry.get(f"{what}_ms")
            b: dict[str, Any] | None = base.get(f"{what}_ms")
            if a is None or b is None or not b["median"]:
                ratios[key] = paired[key] = None
                continue
            ratios[key] = a["median"] / b["median"]
            rs = [x / y for x, y in zip(a["samples"], b["samples"]) if y] if a["n"] == b["n"] else []
            paired[key] = {"median": statistics.median(rs), "min": min(rs), "max": max(rs)} if rs else None
    return {
        "params": {
            "command": COMMAND,
            "calls": calls,
            "runs": runs,
            "warmup_calls": warmup,
            "backends": list(BACKENDS),
            "tool": "actors.tools.builtin.shell.make_shell_tool",
        },
        "results": results,
        "ratios": ratios,
        "paired_ratios": paired,
    }


def _f(x: float | None, unit: str = "") -> str:
    return "—" if x is None else f"{x:.3g}{unit}"


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """The figures of :func:`measure`'s ``doc`` as short lines of text (one per backend)."""
    p = doc["params"]
    lines = [f"shell {json.dumps(p['command'])}: {p['calls']} calls × {p['runs']} runs per backend"]
    for name in BACKENDS:
        e = doc["results"].get(name)
        if e is None:
            continue
        if e["status"] != "ok":
            lines.append(f"  {name:>8}: {e['status']}")
            continue
        wall, cpu = e["wall_ms"], e["cpu_ms"]
        line = (
            f"  {name:>8}: wall {_f(wall['median'])} ms/call ({_f(wall['min'])}–{_f(wall['max'])}), "
            f"CPU {_f(cpu['median'])} ms/call ({_f(cpu['min'])}–{_f(cpu['max'])}; "
            f"own {_f(e['own_cpu_ms']['median'])} + children {_f(e['children_cpu_ms']['median'])})"
        )
        if name != "none":
            line += (
                f"; × none: wall {_f(doc['ratios'].get(f'{name}_wall_to_none'), '×')}, "
                f"CPU {_f(doc['ratios'].get(f'{name}_cpu_to_none'), '×')}"
            )
        lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_sandbox", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--calls", type=int, default=200, help="calls per run (default 200)")
    parser.add_argument("--runs", type=int, default=5, help="runs per backend (default 5)")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured calls per backend first (default 5)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON to PATH")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.runs < 1 or args.warmup < 0:
        parser.error("--calls and --runs must be at least 1, --warmup at least 0")

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    doc = measure(args.calls, args.runs, args.warmup, log)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1))
    print("\n".join(summary_lines(doc)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
