"""The report: ``report.md`` (tables of medians, min–max spread and ratios, the machine) and
``report.png`` (matplotlib; without it, a small placeholder PNG asking for the ``bench`` extra).

``python -m benchmarks.report RESULTS.json [--out DIR]`` re-renders both from a results file.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["write_markdown", "write_png", "write_placeholder_png", "render"]

_ORDER = ("floor", "kernel", "openai_sdk", "agents_sdk", "pydantic_ai")


def _fmt(x: float | None, digits: int = 3) -> str:
    """``x`` with ``digits`` significant digits (thousands separated), or an em dash."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if x == 0:
        return "0"
    magnitude = int(math.floor(math.log10(abs(x))))
    decimals = max(0, digits - 1 - magnitude)
    return f"{x:,.{decimals}f}"


def _stat(s: dict[str, Any] | None) -> tuple[str, str]:
    if not s:
        return "—", "—"
    return _fmt(s["median"]), f"{_fmt(s['min'])} – {_fmt(s['max'])}"


def _ratio(x: float | None) -> str:
    return "—" if x is None else f"{_fmt(x)}×"


def _label(doc: dict[str, Any], name: str) -> str:
    return str(doc["systems"].get(name, {}).get("label", name))


def _ordered(results: dict[str, Any]) -> list[str]:
    return [n for n in _ORDER if n in results] + [n for n in results if n not in _ORDER]


def _median(s: dict[str, Any] | None) -> float | None:
    return s["median"] if s else None


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: list[str]) -> list[str]:
    """A table's header row and its separator."""
    return [_row(header), "| " + " | ".join("---" for _ in header) + " |"]


def _system_table(
    doc: dict[str, Any], results: dict[str, Any], header: list[str], cells: Callable[[dict[str, Any]], list[str]]
) -> list[str]:
    """A scenario's table, one row per system: its label and ``cells(entry)``, or its status
    (skipped, failed…) and empty cells."""
    rows = _table(header)
    for name in _ordered(results):
        e = results[name]
        if e["status"] != "ok":
            rows.append(f"| {_label(doc, name)} | {e['status']} |" + " |" * (len(header) - 2))
        else:
            rows.append(_row([_label(doc, name), *cells(e)]))
    return rows


def _load_line(scenario: dict[str, Any]) -> str:
    return f"Load average: {scenario['load_avg']['start']} → {scenario['load_avg']['end']}."


def _header(doc: dict[str, Any]) -> list[str]:
    """The title, the command line, the machine and the method."""
    env = doc["environment"]
    m = env["machine"]
    cfg = doc["config"]
    lines = [f"# trio-agent-kernel benchmarks — {doc['date']}", ""]
    add = lines.append
    add(
        f"`{' '.join(['python -m benchmarks', *doc['argv'][1:]])}`"
        + (" (**--quick**: small sizes, a smoke test, not figures to quote)" if cfg["quick"] else "")
    )
    add("")
    add(
        f"- **Machine**: {m['cpu_model']}, {m['logical_cpus']} logical CPUs ({m['usable_cpus']} usable), {m['ram_gib']} GiB RAM"
    )
    add(f"- **OS / Python**: {env['os']}; {env['python']}")
    la = doc["load_avg"]
    add(
        f"- **Load average** (1, 5, 15 min): {la['start']} at the start, {la.get('end')} at the end "
        "(the machine may be shared: a load above the core count inflates wall times, and CPU times somewhat)"
    )
    git = env.get("git", {})
    if git.get("commit"):
        dirty = " (kernel/ or actors/ modified in the work tree)" if git.get("kernel_or_actors_modified") else ""
        add(f"- **Commit**: `{git['commit'][:12]}`{dirty}")
    pk = ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)
    add(f"- **Packages**: {pk}")
    missing = [k for k, v in env["packages"].items() if not v]
    if missing:
        add(f"- **Not installed**: {', '.join(missing)}")
    add(
        "- **Method**: "
        + (
            "the scripted server runs in its own process; each system runs in its own subprocess; "
            f"CPU is `time.process_time()` of the client process; one warm-up run, then {cfg['runs']} measured runs "
            "interleaved round-robin across systems; figures are medians with min – max; ratios divide medians "
            "measured in this one invocation."
            if _systems_ran(doc)
            else f"figures are medians of {cfg['runs']} runs with min – max; ratios divide medians measured in this one invocation."
            if "sandbox" in doc["scenarios"]
            else "ratios divide medians measured in this one invocation."
        )
        + (
            " The sandbox scenario runs in a subprocess of its own (`python -m benchmarks.bench_sandbox`, no "
            "server): CPU there is its `time.process_time()` plus its reaped children's "
            "(`getrusage(RUSAGE_CHILDREN)`)."
            if "sandbox" in doc["scenarios"]
            else ""
        )
        + (
            " The WebSocket scenario runs in a subprocess of its own (`python -m benchmarks.bench_ws`, which "
            "starts scripted servers of its own, a fresh one per run): the transports alternate over "
            f"{doc['scenarios']['websocket']['params']['runs']} runs, its figures are medians (no spread), and CPU "
            "there is its `time.process_time()`."
            if "websocket" in doc["scenarios"]
            else ""
        )
        + f" Took {doc.get('seconds', '?')} s."
    )
    add("")
    return lines


_SUBPROCESS_SCENARIOS = ("sandbox", "websocket")
"""The scenarios that compare no systems: each runs a module of its own in a subprocess."""


def _systems_ran(doc: dict[str, Any]) -> bool:
    """Whether a scenario that compares systems (all but ``sandbox`` and ``websocket``) ran."""
    return any(key not in _SUBPROCESS_SCENARIOS for key in doc["scenarios"])


def _targets_section(doc: dict[str, Any]) -> list[str]:
    lines = ["## Targets", "", *_table(["target", "goal", "worst acceptable", "measured", "verdict"])]
    for t in doc["targets"]:
        cmp = "≥" if t["higher_is_better"] else "≤"
        worst = f"{cmp} {_fmt(t['worst'])} {t['unit']}" if t["worst"] is not None else "—"
        verdict = f"**{t['verdict']}**" if t["verdict"].startswith("missed") else t["verdict"]
        note = f" ({t['note']})" if t.get("note") else ""
        lines.append(
            f"| {t['target']}{note} | {cmp} {_fmt(t['goal'])} {t['unit']} | {worst} | {_fmt(t['value'])} {t['unit'] if t['value'] is not None else ''} | {verdict} |"
        )
    lines.append("")
    return lines


def _streaming_section(doc: dict[str, Any], st: dict[str, Any]) -> list[str]:
    p = st["params"]
    lines = [
        f"## 1. Streaming — one response of {p['deltas']:,} text deltas ({p['sse_events']:,} SSE events)",
        "",
        "Client CPU per SSE event (µs) and time to first token (ms, wall, from the request).",
        "",
    ]
    header = [
        "system",
        "CPU µs/event",
        "min – max",
        "× floor",
        "× kernel",
        "TTFT ms",
        "TTFT min – max",
        "text deltas seen",
    ]
    res = st["results"]
    floor = _median(res.get("floor", {}).get("cpu_us_per_event"))
    kern = _median(res.get("kernel", {}).get("cpu_us_per_event"))

    def cells(e: dict[str, Any]) -> list[str]:
        cpu = e["cpu_us_per_event"]
        seen = sorted(set(x for x in e.get("deltas_seen", []) if x is not None))
        return [
            *_stat(cpu),
            _ratio(cpu["median"] / floor if floor else None),
            _ratio(cpu["median"] / kern if kern else None),
            *_stat(e["ttft_ms"]),
            ", ".join(f"{x:,}" for x in seen),
        ]

    lines += _system_table(doc, res, header, cells)
    pr = st.get("paired_ratios", {}).get("kernel_to_floor")
    if pr:
        lines.append("")
        lines.append(
            f"Kernel ÷ floor per round (paired, same load): median {_fmt(pr['median'])}×, min {_fmt(pr['min'])}×, max {_fmt(pr['max'])}×."
        )
    lines += [_load_line(st), ""]
    return lines


def _tool_turn_section(doc: dict[str, Any], tt: dict[str, Any]) -> list[str]:
    p = tt["params"]
    lines = [
        f"## 2. Tool turn — the model calls {p['tools_per_turn']} no-op tools at once, then answers; {p['turns']} turns per run",
        "",
        "Client CPU per turn (µs; a turn is two streamed requests and ten tool calls) and wall time per turn (ms).",
        "",
    ]
    header = ["system", "CPU µs/turn", "min – max", "× kernel", "wall ms/turn", "wall min – max"]
    res = tt["results"]
    kern = _median(res.get("kernel", {}).get("cpu_us_per_turn"))

    def cells(e: dict[str, Any]) -> list[str]:
        ratio = _ratio(e["cpu_us_per_turn"]["median"] / kern if kern else None)
        return [*_stat(e["cpu_us_per_turn"]), ratio, *_stat(e["wall_ms_per_turn"])]

    lines += _system_table(doc, res, header, cells)
    lines += [f"\n{_load_line(tt)}", ""]
    return lines


def _concurrency_section(doc: dict[str, Any], cc: dict[str, Any]) -> list[str]:
    p = cc["params"]
    lines = [
        f"## 3. Concurrency — N sessions at once, each streaming {p['deltas']} deltas ({p['sse_events_per_session']} SSE events)",
        "",
        "The kernel's sessions share one ModelActor (one HTTP client). A batch opens N sessions (not timed), "
        "starts one turn in each at once and waits for them all; a run repeats batches until it has streamed "
        f"{p.get('min_events_per_run', 0):,} events and lasted {p.get('min_wall_s_per_run', 0):g} s (the batches "
        "column: the median run's count; a run of a fraction of a second measures noise). Aggregate events/s = events ÷ the batches' "
        "wall time; TTFT from the batch's start; peak RSS of the client process (a fresh process per run) and "
        "(peak − RSS before the sessions) ÷ N, shown from 100 sessions up (below, a few MiB of allocator noise "
        "swamp it); the scripted server's CPU time as a share of the wall time (near 100 %: the single-threaded "
        "server is the bottleneck; — for runs too short for /proc's 10 ms ticks)."
        + (
            f" Peers run at {', '.join(map(str, p['peer_levels']))} sessions."
            if p["peer_levels"]
            else " Peers not run at these levels."
        ),
        "",
        *_table(
            [
                "system",
                "sessions",
                "batches",
                "events/s",
                "min – max",
                "CPU µs/event",
                "TTFT p50 ms",
                "TTFT p99 ms",
                "peak RSS MiB",
                "RSS/session KiB",
                "server CPU % of wall",
            ]
        ),
    ]
    add = lines.append
    res = cc["results"]
    for name in _ordered(res):
        e = res[name]
        if e["status"] != "ok" and not e["levels"]:
            add(f"| {_label(doc, name)} | | | {e['status']} | | | | | | | |")
            continue
        for level, le in e["levels"].items():
            if le["status"] != "ok":
                add(f"| {_label(doc, name)} | {int(level):,} | | {le['status']} | | | | | | | |")
                continue
            med, spread = _stat(le["events_per_s"])
            per_session = _fmt(_median(le["rss_per_session_kib"])) if int(level) >= 100 else "—"
            add(
                f"| {_label(doc, name)} | {int(level):,} | {le.get('batches', 1)} | {med} | {spread} | {_fmt(_median(le['cpu_us_per_event']))} | "
                f"{_fmt(_median(le['ttft_p50_ms']))} | {_fmt(_median(le['ttft_p99_ms']))} | {_fmt(_median(le['peak_rss_mib']))} | "
                f"{per_session} | {_fmt(_median(le.get('server_cpu_pct')), 2)} |"
            )
    for k, v in cc["ratios"].items():
        add(f"\n{k.replace('_', ' ')}: {_ratio(v)}")
    lines += [f"\n{_load_line(cc)}", ""]
    return lines


def _idle_section(doc: dict[str, Any], idle: dict[str, Any]) -> list[str]:
    n = idle["params"]["sessions"]
    lines = [
        f"## 4. Idle memory — {n:,} open idle sessions sharing one ModelActor",
        "",
        "Current RSS (`/proc/self/statm`, after `gc.collect()`) with the sessions open minus before, ÷ N; "
        "a fresh process per run. The holder-task column is the benchmark's own cost per session (a bare Trio "
        "task waiting on an event), included in the first column.",
        "",
    ]
    header = [
        "system",
        "RSS/session KiB",
        "min – max",
        "holder task KiB",
        "net of holder KiB",
        "open CPU µs/session",
        "RSS with all open MiB",
    ]

    def cells(e: dict[str, Any]) -> list[str]:
        hold = _median(e["holder_task_kib"])
        net = e["rss_per_session_kib"]["median"] - hold if hold is not None else None
        return [
            *_stat(e["rss_per_session_kib"]),
            _fmt(hold),
            _fmt(net),
            _fmt(_median(e["open_cpu_us_per_session"])),
            _fmt(_median(e["rss_open_mib"])),
        ]

    lines += _system_table(doc, idle["results"], header, cells)
    lines += [f"\n{_load_line(idle)}", ""]
    return lines


def _sandbox_section(doc: dict[str, Any], sb: dict[str, Any]) -> list[str]:
    p = sb["params"]
    lines = [
        f"## 5. Sandbox cost — the `shell` tool running `{json.dumps(p.get('command', ['true']))}`, "
        f"{p.get('calls', '?')} calls × {p.get('runs', '?')} runs per backend",
        "",
        "The built-in `shell` tool (`make_shell_tool`, called in-process: no model, no server) runs a command "
        "that does nothing, unsandboxed (`danger-full-access`) and under `workspace-write` with each backend "
        "forced. Measured in a subprocess of its own (`python -m benchmarks.bench_sandbox`). Wall: "
        "`perf_counter` around the call. CPU: that process's `time.process_time()` delta (own: the tool's "
        "Python work, the private temp dir, fork/exec) plus its reaped children's `getrusage(RUSAGE_CHILDREN)` "
        "user + system (children: bwrap or the Landlock launcher, and `true`). A run's figure is the mean per "
        f"call after {p.get('warmup_calls', '?')} warm-up calls; runs go round-robin across backends; medians "
        "over the runs with min – max; × none divides a sandbox's median by the unsandboxed one. Per-call "
        "p50 / p99 wall over every measured call.",
        "",
        *_table(
            [
                "backend",
                "wall ms/call",
                "min – max",
                "× none",
                "CPU ms/call",
                "min – max",
                "× none",
                "own CPU ms",
                "children CPU ms",
                "wall p50 / p99 ms",
            ]
        ),
    ]
    res = sb["results"]
    ratios = sb.get("ratios", {})
    for name, e in res.items():
        label = e.get("label", name)
        if e["status"] != "ok":
            lines.append(f"| {label} | {e['status']} |" + " |" * 8)
            continue
        base = name == "none"
        lines.append(
            _row(
                [
                    label,
                    *_stat(e["wall_ms"]),
                    "1×" if base else _ratio(ratios.get(f"{name}_wall_to_none")),
                    *_stat(e["cpu_ms"]),
                    "1×" if base else _ratio(ratios.get(f"{name}_cpu_to_none")),
                    _fmt(_median(e["own_cpu_ms"])),
                    _fmt(_median(e["children_cpu_ms"])),
                    f"{_fmt(e.get('wall_p50_ms'))} / {_fmt(e.get('wall_p99_ms'))}",
                ]
            )
        )
    paired = sb.get("paired_ratios", {})
    for name, e in res.items():
        w, c = paired.get(f"{name}_wall_to_none"), paired.get(f"{name}_cpu_to_none")
        if w and c:
            lines.append(
                f"\n{e.get('label', name)} ÷ none per round (paired, same load): wall median {_fmt(w['median'])}× "
                f"({_fmt(w['min'])}× – {_fmt(w['max'])}×), CPU median {_fmt(c['median'])}× "
                f"({_fmt(c['min'])}× – {_fmt(c['max'])}×)."
            )
    details = [f"{e.get('label', name)}: {e['detail']}" for name, e in res.items() if e.get("detail")]
    if details:
        lines.append("\nWhat runs each: " + "; ".join(details) + ".")
    lines += [f"\n{_load_line(sb)}", ""]
    return lines


def _websocket_section(doc: dict[str, Any], ws: dict[str, Any]) -> list[str]:
    p = ws["params"]
    res = ws["results"]
    ratios = ws.get("ratios", {})
    lines = [
        f"## 6. WebSocket vs HTTP — one session, {p['calls']} sequential tool calls, then {p['deltas']:,} "
        f"streamed deltas; {p['runs']} runs per transport",
        "",
        f"The kernel over each of its transports against the scripted server: the model calls one tool {p['calls']} "
        f"times in a row, each output {p['output_kib']} KiB, so the history grows to "
        f"~{p['calls'] * p['output_kib'] * 1024 / 1000:,.0f} KB by the last request. Over HTTP every request's body "
        "carries the whole history; over WebSocket a follow-up is a `response.create` frame with "
        "`previous_response_id` and only the new items (an incremental request). KiB sent per follow-up: the mean "
        "over the requests after the first (the HTTP body, the WebSocket frame). Client CPU per request: the "
        "turn's `time.process_time()` ÷ its requests (the tool calls and the first request included; the "
        "scripted server runs in a process of its own). Wall: the whole turn. Streaming: client CPU per text "
        f"delta of one {p['deltas']:,}-delta response, after a warm-up turn. Measured in a subprocess of its own "
        "(`python -m benchmarks.bench_ws`), the transports alternating, a fresh server per run; figures are "
        "medians over the runs (bench_ws keeps no spread).",
        "",
        *_table(
            [
                "transport",
                "requests",
                "incremental requests",
                "KiB sent per follow-up",
                "client CPU ms/request",
                "wall ms/turn",
                "streaming CPU µs/delta",
            ]
        ),
    ]
    for name, e in res.items():
        label = e.get("label", name)
        if e["status"] != "ok":
            lines.append(f"| {label} | {e['status']} |" + " |" * 5)
            continue
        lines.append(
            _row(
                [
                    label,
                    str(e["requests"]),
                    str(e["incremental_requests"]),
                    _fmt(e["bytes_per_follow_up"] / 1024),
                    _fmt(e["cpu_ms_per_request"]),
                    _fmt(e["wall_ms_per_turn"]),
                    _fmt(e.get("streaming_us_per_delta")),
                ]
            )
        )
    if any(ratios.get(k) is not None for k in ("bytes_per_request", "cpu_per_request", "wall_per_turn")):
        lines.append(
            _row(
                [
                    "WebSocket ÷ HTTP",
                    "",
                    "",
                    _ratio(ratios.get("bytes_per_request")),
                    _ratio(ratios.get("cpu_per_request")),
                    _ratio(ratios.get("wall_per_turn")),
                    _ratio(ratios.get("streaming_cpu_per_delta")),
                ]
            )
        )
    sizes = [
        f"{e.get('label', name)} {_fmt(e['bytes_first_request'] / 1024)} KiB first, "
        f"{_fmt(e['bytes_last_request'] / 1024)} KiB last"
        for name, e in res.items()
        if e["status"] == "ok"
    ]
    if sizes:
        lines.append("\nRequest sizes: " + "; ".join(sizes) + ".")
    lines += [f"\n{_load_line(ws)}", ""]
    return lines


def _systems_section(doc: dict[str, Any]) -> list[str]:
    lines = ["## Systems", "", *_table(["system", "status", "how it is driven", "versions"])]
    for name in _ordered(doc["systems"]):
        s = doc["systems"][name]
        statuses = set()
        versions: dict[str, str] = {}
        for scen in doc["scenarios"].values():
            e = scen["results"].get(name)
            if e:
                statuses.add(e["status"])
                versions.update(e.get("versions") or {})
        status = ", ".join(sorted(statuses)) or ("not run" if s["installed"] else "skipped (not installed)")
        ver = ", ".join(f"{k} {v}" for k, v in versions.items())
        lines.append(f"| {s['label']} | {status} | {s['note']} | {ver} |")
    lines.append("")
    return lines


_SECTIONS: tuple[tuple[str, Callable[[dict[str, Any], dict[str, Any]], list[str]]], ...] = (
    ("streaming", _streaming_section),
    ("tool_turn", _tool_turn_section),
    ("concurrency", _concurrency_section),
    ("idle", _idle_section),
    ("sandbox", _sandbox_section),
    ("websocket", _websocket_section),
)


def write_markdown(doc: dict[str, Any], path: Path) -> None:
    """Render ``doc`` (the results document) as Markdown: the header, the targets, one section
    per scenario that ran, the systems (when a scenario that compares them ran)."""
    lines = _header(doc)
    if doc.get("targets"):
        lines += _targets_section(doc)
    for key, section in _SECTIONS:
        scenario = doc["scenarios"].get(key)
        if scenario:
            lines += section(doc, scenario)
    if _systems_ran(doc):
        lines += _systems_section(doc)
    path.write_text("\n".join(lines))


# ---- the plot ----------------------------------------------------------------------------------


_COLORS = {
    "floor": "#7f7f7f",
    "kernel": "#d62728",
    "openai_sdk": "#1f77b4",
    "agents_sdk": "#2ca02c",
    "pydantic_ai": "#9467bd",
}


def _bars(ax: Any, doc: dict[str, Any], results: dict[str, Any], key: str, title: str, ylabel: str) -> None:
    """A bar per system of ``results[*][key]``: medians with min–max error bars."""
    names = [n for n in _ordered(results) if results[n]["status"] == "ok" and results[n].get(key)]
    if not names:
        ax.set_axis_off()
        ax.set_title(title + "\n(not run)")
        return
    meds = [results[n][key]["median"] for n in names]
    lo = [results[n][key]["median"] - results[n][key]["min"] for n in names]
    hi = [results[n][key]["max"] - results[n][key]["median"] for n in names]
    xs = range(len(names))
    ax.bar(xs, meds, yerr=[lo, hi], capsize=4, color=[_COLORS.get(n, "#8c564b") for n in names])
    ax.set_xticks(list(xs), [_label(doc, n).split(" (")[0] for n in names], rotation=20, ha="right", fontsize=8)
    if max(meds) / max(min(meds), 1e-12) > 30:
        ax.set_yscale("log")
    for x, v in zip(xs, meds):
        ax.annotate(_fmt(v), (x, v), ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    skipped = [n for n in results if results[n]["status"] != "ok"]
    if skipped:
        ax.text(
            0.01,
            0.98,
            "not shown: " + ", ".join(f"{n} ({results[n]['status']})" for n in skipped),
            transform=ax.transAxes,
            fontsize=7,
            va="top",
        )


def _scenario_bars(axes: Any, doc: dict[str, Any]) -> None:
    """The top row: streaming CPU, tool-turn CPU, streaming TTFT."""
    sc = doc["scenarios"]
    st = sc.get("streaming")
    if st:
        _bars(
            axes[0][0],
            doc,
            st["results"],
            "cpu_us_per_event",
            f"Streaming: client CPU per SSE event\n({st['params']['sse_events']:,} events)",
            "µs / event (min–max bars)",
        )
        _bars(axes[0][2], doc, st["results"], "ttft_ms", "Streaming: time to first token", "ms (wall)")
    else:
        axes[0][0].set_axis_off()
        axes[0][2].set_axis_off()
    tt = sc.get("tool_turn")
    if tt:
        _bars(
            axes[0][1],
            doc,
            tt["results"],
            "cpu_us_per_turn",
            f"Tool turn: client CPU per turn\n({tt['params']['tools_per_turn']} parallel calls, 2 requests)",
            "µs / turn (min–max bars)",
        )
    else:
        axes[0][1].set_axis_off()


def _concurrency_lines(ax_t: Any, ax_l: Any, ax_m: Any, doc: dict[str, Any], cc: dict[str, Any] | None) -> None:
    """Throughput and TTFT against the level; the streaming peak RSS per session onto ``ax_m``."""
    if not cc:
        ax_t.set_axis_off()
        ax_l.set_axis_off()
        return
    for name in _ordered(cc["results"]):
        levels = {int(k): v for k, v in cc["results"][name]["levels"].items() if v["status"] == "ok"}
        if not levels:
            continue
        xs = sorted(levels)
        c = _COLORS.get(name)
        label = _label(doc, name).split(" (")[0]
        ax_t.plot(xs, [levels[x]["events_per_s"]["median"] for x in xs], "o-", color=c, label=label)
        ax_l.plot(xs, [levels[x]["ttft_p50_ms"]["median"] for x in xs], "o-", color=c, label=f"{label} p50")
        ax_l.plot(xs, [levels[x]["ttft_p99_ms"]["median"] for x in xs], "s--", color=c, label=f"{label} p99")
        big = [x for x in xs if x >= 100]
        if big:
            ax_m.plot(
                big,
                [max(levels[x]["rss_per_session_kib"]["median"], 0.1) for x in big],
                "o-",
                color=c,
                label=f"{label} (streaming, peak)",
            )
    ax_t.set_title("Throughput vs concurrency", fontsize=10)
    ax_t.set_xlabel("concurrent sessions")
    ax_t.set_ylabel("aggregate SSE events / s")
    ax_l.set_title("Time to first token vs concurrency", fontsize=10)
    ax_l.set_xlabel("concurrent sessions")
    ax_l.set_ylabel("ms (wall, from the batch's start)")
    for ax in (ax_t, ax_l, ax_m):
        ax.set_xscale("log")
    ax_t.set_yscale("log")
    ax_l.set_yscale("log")
    ax_t.legend(fontsize=7)
    ax_l.legend(fontsize=6, ncol=2)


def _memory_plot(ax_m: Any, idle: dict[str, Any] | None) -> None:
    """The kernel's idle RSS per session and the target lines (over the streaming peaks)."""
    if idle and idle["results"].get("kernel", {}).get("status") == "ok":
        k = idle["results"]["kernel"]["rss_per_session_kib"]
        ax_m.errorbar(
            [idle["params"]["sessions"]],
            [k["median"]],
            yerr=[[k["median"] - k["min"]], [k["max"] - k["median"]]],
            fmt="D",
            color=_COLORS["kernel"],
            capsize=4,
            label="trio-agent-kernel (idle)",
        )
        ax_m.annotate(
            _fmt(k["median"]) + " KiB",
            (idle["params"]["sessions"], k["median"]),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax_m.axhline(20, color="black", linestyle=":", linewidth=1, label="target 20 KiB (idle)")
    ax_m.axhline(50, color="black", linestyle="--", linewidth=0.8, label="worst 50 KiB (idle)")
    ax_m.set_title("Memory per session", fontsize=10)
    ax_m.set_xlabel("sessions")
    ax_m.set_ylabel("KiB RSS per session")
    ax_m.set_xscale("log")
    ax_m.set_yscale("log")
    ax_m.legend(fontsize=7)


def write_png(doc: dict[str, Any], path: Path) -> bool:
    """Plot with matplotlib; without it, write the placeholder. Returns whether matplotlib drew it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        write_placeholder_png(path)
        return False
    sc = doc["scenarios"]
    fig, axes = plt.subplots(2, 3, figsize=(17, 10))
    _scenario_bars(axes, doc)
    ax_t, ax_l, ax_m = axes[1]
    _concurrency_lines(ax_t, ax_l, ax_m, doc, sc.get("concurrency"))
    _memory_plot(ax_m, sc.get("idle"))
    m = doc["environment"]["machine"]
    fig.suptitle(
        f"trio-agent-kernel benchmarks {doc['date']}{' (--quick)' if doc['config']['quick'] else ''} — {m['cpu_model']}, "
        f"{m['logical_cpus']} CPUs, load {doc['load_avg']['start'][0]}→{doc['load_avg'].get('end', ['?'])[0]}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


# A 5×7 bitmap font for the placeholder's few letters (rows top to bottom, 5 bits each).
_GLYPHS = {
    "A": (0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11),
    "B": (0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E),
    "C": (0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E),
    "D": (0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E),
    "E": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F),
    "F": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10),
    "H": (0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11),
    "I": (0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E),
    "K": (0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11),
    "L": (0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F),
    "M": (0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11),
    "N": (0x11, 0x19, 0x15, 0x13, 0x11, 0x11, 0x11),
    "O": (0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E),
    "P": (0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10),
    "R": (0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11),
    "S": (0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E),
    "T": (0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04),
    "X": (0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11),
    "[": (0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E),
    "]": (0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E),
    ".": (0, 0, 0, 0, 0, 0x0C, 0x0C),
    "-": (0, 0, 0, 0x1F, 0, 0, 0),
    " ": (0,) * 7,
}


def write_placeholder_png(
    path: Path,
    lines: tuple[str, ...] = ("INSTALL THE BENCH EXTRA FOR PLOTS", "PIP INSTALL -E .[BENCH]", "SEE REPORT.MD"),
) -> None:
    """A small grey-scale PNG saying ``lines`` (zlib + struct only: no matplotlib, no Pillow)."""
    scale, pad = 3, 12
    width = pad * 2 + scale * 6 * max(len(t) for t in lines)
    height = pad * 2 + scale * 10 * len(lines)
    pixels = [bytearray(b"\xff" * width) for _ in range(height)]
    for row, text in enumerate(lines):
        for col, ch in enumerate(text.upper()):
            glyph = _GLYPHS.get(ch, _GLYPHS[" "])
            for gy, bits in enumerate(glyph):
                for gx in range(5):
                    if bits & (0x10 >> gx):
                        for dy in range(scale):
                            y = pad + row * 10 * scale + gy * scale + dy
                            x0 = pad + col * 6 * scale + gx * scale
                            pixels[y][x0 : x0 + scale] = b"\x00" * scale
    raw = b"".join(b"\x00" + bytes(r) for r in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    path.write_bytes(png)


def render(doc: dict[str, Any], out: Path) -> None:
    """Write ``report.md`` and ``report.png`` for ``doc`` into ``out``."""
    write_markdown(doc, out / "report.md")
    write_png(doc, out / "report.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description="Re-render a results.json.")
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path, help="directory (default: the results file's)")
    args = parser.parse_args(argv)
    doc = json.loads(args.results.read_text())
    render(doc, args.out or args.results.parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
