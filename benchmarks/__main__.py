"""``python -m benchmarks`` — the kernel against the floor and against the agent frameworks.

Runs every scenario (streaming, tool turn, concurrency, idle memory, what the command sandbox
costs: ``shell ["true"]`` sandboxed vs not, and the kernel over WebSocket vs over HTTP: 50 sequential
tool calls, then a stream) and writes ``benchmarks/results/<timestamp>/results.json``, ``report.md``
and ``report.png``.

    python -m benchmarks                      # the issue's sizes, 5 runs each (several minutes)
    python -m benchmarks --quick              # small sizes, 3 runs: a CI smoke test (< 1 min)
    python -m benchmarks --only streaming     # one scenario (repeat or comma-separate for more)
    python -m benchmarks --only sandbox       # the sandbox's cost alone (no server, no peers)
    python -m benchmarks --only websocket     # WebSocket vs HTTP alone (no peers)
    python -m benchmarks --systems kernel,floor --out /tmp/bench

Peers (``openai``, ``openai-agents``, ``pydantic-ai-slim``) and matplotlib come with the ``bench``
extra (``pip install -e '.[bench]'``); a peer that is not installed is reported as skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from datetime import datetime
from pathlib import Path

from .bench_sandbox import summary_lines
from .harness import FULL, QUICK, SCENARIOS, run_benchmarks
from .report import render
from .systems import SYSTEMS

__all__ = ["main"]


def _names(
    values: list[str] | None, allowed: tuple[str, ...], what: str, parser: argparse.ArgumentParser
) -> tuple[str, ...] | None:
    if not values:
        return None
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        parser.error(f"unknown {what} {', '.join(unknown)} (choose from {', '.join(allowed)})")
    return tuple(n for n in allowed if n in names)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; returns the exit status (0 also when a target is missed: see the report)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--quick", action="store_true", help="small sizes and 3 runs (CI smoke, under a minute)")
    parser.add_argument("--out", type=Path, help="output directory (default benchmarks/results/<timestamp>)")
    parser.add_argument(
        "--only",
        action="append",
        metavar="SCENARIO",
        help=f"run only these scenarios (repeat or comma-separate): {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--systems", action="append", metavar="NAME", help=f"run only these systems: {', '.join(SYSTEMS)}"
    )
    parser.add_argument(
        "--runs", type=int, help="measured runs per figure (default 5; --quick 3, its websocket scenario 2)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)

    cfg = QUICK if args.quick else FULL
    scenarios = _names(args.only, SCENARIOS, "scenario", parser)
    systems = _names(args.systems, tuple(SYSTEMS), "system", parser)
    if scenarios:
        cfg = dataclasses.replace(cfg, scenarios=scenarios)
    if systems:
        cfg = dataclasses.replace(cfg, systems=systems)
    if args.runs is not None:
        if args.runs < 1:
            parser.error("--runs must be at least 1")
        cfg = dataclasses.replace(cfg, runs=args.runs, ws_runs=None)  # every scenario: --quick's 2 too

    out = args.out or Path(__file__).resolve().parent / "results" / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    log(f"benchmarks → {out} ({'quick' if cfg.quick else 'full'}: {', '.join(cfg.scenarios)})")
    doc = run_benchmarks(cfg, log)
    (out / "results.json").write_text(json.dumps(doc, indent=1))
    render(doc, out)
    for t in doc["targets"]:
        value = "—" if t["value"] is None else f"{t['value']:.3g} {t['unit']}"
        why = f" ({t['not_measured']})" if t.get("not_measured") else ""
        log(f"  {t['verdict']:>32}: {t['target']} = {value}{why}")
    sandbox = doc["scenarios"].get("sandbox")
    if sandbox and "calls" in sandbox["params"]:
        for line in summary_lines(sandbox):
            log(f"  sandbox: {line.strip()}")
    log(f"wrote {out / 'results.json'}, {out / 'report.md'}, {out / 'report.png'} in {doc['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
