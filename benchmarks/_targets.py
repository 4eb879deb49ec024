"""The issue's targets (and the WebSocket transport's: bytes and client CPU per follow-up request
against HTTP's, and its streaming CPU per delta for information): each measured ratio or figure
against its goal, with a verdict, and — for a target without a value — why (a system not
installed, failed, or not selected).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .systems import SYSTEMS, missing

if TYPE_CHECKING:
    from .harness import Config

__all__ = ["targets"]


def _verdict(value: float | None, target: float, worst: float | None, higher_is_better: bool) -> str:
    if value is None:
        return "n/a (not measured)"
    good = value >= target if higher_is_better else value <= target
    if good:
        return "met"
    if worst is not None and (value >= worst if higher_is_better else value <= worst):
        return "missed (within the worst case)"
    return "missed"


_INSTALL_HINT = "pip install '.[bench]'"


def _why_not_measured(scenario: dict[str, Any], systems: tuple[str, ...]) -> str:
    """Why a target that compares ``systems`` in ``scenario`` has no value: each of them that did
    not run, and why (for the console summary; ``report.md`` says it in its tables)."""
    reasons = []
    for name in systems:
        status = scenario["results"].get(name, {}).get("status")
        if status == "ok":
            continue
        if status is None:
            reasons.append(f"{name} not run: not in --systems")
        elif status.startswith("skipped (not installed)"):
            absent = missing(SYSTEMS[name]) if name in SYSTEMS else ()
            what = f"{', '.join(absent)} not installed" if absent else "not installed"
            reasons.append(f"{name} skipped: {what}: {_INSTALL_HINT}")
        else:
            reasons.append(f"{name} {status}")
    return "; ".join(reasons) or "a run it needs gave no figure (see report.md)"


def targets(scenarios: dict[str, Any], cfg: Config) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and a verdict (and, when there is no
    value, ``not_measured``: why)."""
    out: list[dict[str, Any]] = []

    def add(
        scenario: dict[str, Any],
        systems: tuple[str, ...],
        name: str,
        value: float | None,
        goal: tuple[float, float | None, bool, str],
        why: str = "",
    ) -> None:
        target, worst, higher, unit = goal
        out.append(
            {
                "target": name,
                "value": value,
                "goal": target,
                "worst": worst,
                "higher_is_better": higher,
                "unit": unit,
                "verdict": _verdict(value, target, worst, higher),
                "note": why,
                "not_measured": _why_not_measured(scenario, systems) if value is None else None,
            }
        )

    def ratio(scenario: dict[str, Any], key: str, name: str, goal: tuple[float, float | None, bool, str]) -> None:
        """A target on ``scenario["ratios"][key]``, ``"<system>_to_<system>"``."""
        first, _, second = key.partition("_to_")
        add(scenario, (first, second), name, scenario["ratios"].get(key), goal)

    ten_times = (10, None, True, "×")
    st = scenarios.get("streaming")
    if st:
        ratio(st, "kernel_to_floor", "streaming: kernel CPU/event ÷ floor", (1.5, 2.0, False, "×"))
        ratio(st, "openai_sdk_to_kernel", "streaming: openai SDK CPU/event ÷ kernel", ten_times)
        ratio(st, "agents_sdk_to_kernel", "streaming: Agents SDK CPU/event ÷ kernel", ten_times)
    tt = scenarios.get("tool_turn")
    if tt:
        ratio(tt, "agents_sdk_to_kernel", "tool turn: Agents SDK CPU/turn ÷ kernel", ten_times)
        ratio(tt, "pydantic_ai_to_kernel", "tool turn: pydantic-ai CPU/turn ÷ kernel", ten_times)
    cc = scenarios.get("concurrency")
    if cc:
        top = max(cc["params"]["levels"])
        value = cc["ratios"].get(f"kernel_{top}_to_10")
        note = "" if top >= 1000 else f"--quick: {top} sessions stand in for 1,000"
        add(
            cc,
            ("kernel",),
            f"concurrency: kernel events/s at {top} ÷ at 10 sessions",
            value,
            (0.8, None, True, "×"),
            note,
        )
    idle = scenarios.get("idle")
    if idle:
        n = idle["params"]["sessions"]
        k = idle["results"].get("kernel", {}).get("rss_per_session_kib")
        note = "" if n >= 10_000 else f"--quick: {n} sessions"
        add(
            idle,
            ("kernel",),
            f"idle: kernel RSS per open session at {n}",
            k["median"] if k else None,
            (20, 50, False, "KiB"),
            note,
        )
    ws = scenarios.get("websocket")
    if ws:
        p, r = ws["params"], ws["ratios"]
        transports = ("http", "websocket")
        add(
            ws,
            transports,
            f"websocket: WebSocket bytes per follow-up request ÷ HTTP's at {p['calls']} tool calls",
            r.get("bytes_per_request"),
            (0.05, None, False, "×"),
        )
        add(
            ws,
            transports,
            "websocket: WebSocket client CPU per follow-up request ÷ HTTP's",
            r.get("cpu_per_request"),
            (0.5, None, False, "×"),
            f"the turn's client CPU ÷ its {p['calls'] + 1} requests",
        )
        deltas = p["deltas"]
        add(
            ws,
            transports,
            "websocket: streaming client CPU per delta, WebSocket ÷ HTTP",
            r.get("streaming_cpu_per_delta"),
            (1.1, None, False, "×"),
            "for information" + ("" if deltas >= 20_000 else f"; --quick: {deltas:,} deltas"),
        )
    return out
