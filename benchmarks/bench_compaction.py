"""What one compaction costs: ``session.compact()`` on a 200-item (~200 KB) history, remote
(``POST /responses/compact``) and local (a summary request to the model, then
:func:`kernel.compaction.build_compacted_history`), client CPU and wall time.

The scripted model server runs in its own process (``python -m actors.scripted``), so this
process's CPU time is the client's alone: encoding the history for the request, decoding the
answer, building the replacement, and writing the durable ``compacted`` rollout record (with its
fsync). Each run resumes a fresh copy of the same rollout (one user task, 99 tool calls with
``--output-kib`` KiB outputs, and the model's last answer), so every compaction starts from the
same 200 items; the modes alternate over ``--runs`` runs. The figures are medians.

``python -m benchmarks.bench_compaction [--runs 10] [--output-kib 2] [--json FILE] [--quiet]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from actors.history import SessionMeta, open_history
from actors.model import ModelSettings
from actors.session import open_session
from kernel import CompactionFinished
from kernel.items import FunctionCall, FunctionCallOutput, FunctionCallOutputPayload, Message, ResponseItem

from .harness import scripted_server_process

SUMMARY = "Summary of the work so far: " + "the parts were read and checked; " * 12


def history(calls: int, output_kib: int) -> list[ResponseItem]:
    """One user task, ``calls`` tool calls with their outputs, and the model's last answer."""
    items: list[ResponseItem] = [Message.user("Read every part of the report and check it.")]
    filler = "x" * 60 + "\n"
    for k in range(calls):
        items.append(FunctionCall(call_id=f"call_{k}", name="read_part", arguments=json.dumps({"part": k})))
        body = f"part {k}:\n" + filler * (output_kib * 1024 // len(filler))
        items.append(FunctionCallOutput(call_id=f"call_{k}", output=FunctionCallOutputPayload.from_text(body)))
    items.append(Message.assistant("All parts read; nothing is wrong so far."))
    return items


async def write_rollout(path: Path, items: list[ResponseItem]) -> None:
    async with open_history(rollout=path, session_meta=SessionMeta.new(model="scripted-model")) as h:
        await h.record(items)


async def one_compaction(base_url: str, mode: str, rollout: Path) -> dict[str, Any]:
    settings = ModelSettings(
        base_url=base_url, model="scripted-model", api_key="bench-key", transport="http", compaction=mode
    )  # type: ignore[arg-type]
    async with open_session(model=settings, rollout=rollout, resume=True) as session:
        before = len(await session.history())
        async with session.subscribe() as events:
            cpu, wall = time.process_time(), time.perf_counter()
            replaced = await session.compact()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            finished = [e for e in events.take_nowait() if isinstance(e, CompactionFinished)]
        after = len(await session.history())
    assert replaced and finished and finished[0].mode == mode, (mode, finished)
    done = finished[0]
    return {
        "cpu_ms": cpu * 1000,
        "wall_ms": wall * 1000,
        "items_before": before,
        "items_after": after,
        "tokens_before": done.tokens_before,
        "tokens_after": done.tokens_after,
    }


def run(runs: int, output_kib: int, quiet: bool) -> dict[str, Any]:
    items = history(99, output_kib)
    script = {"cycle": True, "replies": [{"items": [{"type": "text", "text": SUMMARY}]}]}
    results: dict[str, list[dict[str, Any]]] = {"remote": [], "local": []}
    with tempfile.TemporaryDirectory(prefix="bench-compaction-") as tmp, scripted_server_process(script) as server:
        source = Path(tmp) / "source.jsonl"
        trio.run(write_rollout, source, items)
        size = source.stat().st_size
        for r in range(runs + 1):  # the first round warms up (imports, connections)
            for mode in ("remote", "local"):
                copy = Path(tmp) / f"{mode}-{r}.jsonl"
                shutil.copyfile(source, copy)
                figures = trio.run(one_compaction, server.base_url, mode, copy)
                if r:
                    results[mode].append(figures)
            if not quiet:
                print(f"  round {r}/{runs} done", file=sys.stderr)
    out: dict[str, Any] = {"items": len(items), "rollout_bytes": size, "runs": runs}
    for mode, rows in results.items():
        out[mode] = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_compaction", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--output-kib", type=int, default=2, help="KiB per tool output (default 2: ~200 KB in all)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.runs, args.output_kib, args.quiet)
    print(
        f"one compaction of {result['items']} items ({result['rollout_bytes'] / 1024:.0f} KiB rollout), "
        f"medians of {result['runs']}:"
    )
    for mode in ("remote", "local"):
        m = result[mode]
        print(
            f"  {mode:6}: CPU {m['cpu_ms']:.2f} ms, wall {m['wall_ms']:.2f} ms; "
            f"{m['items_before']:.0f} → {m['items_after']:.0f} items, "
            f"~{m['tokens_before']:.0f} → ~{m['tokens_after']:.0f} tokens"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
