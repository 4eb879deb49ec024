"""The stress suite prints what it exercised (faults served by kind, interrupts, crashes
survived, acknowledged items checked) at the end of the run; ``STRESS_STATS=path`` also writes it
as JSON."""

from __future__ import annotations

import json
import os
from typing import Any

from actors.testing import STATS


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not STATS.examples:
        return
    counts = STATS.as_dict()
    path = os.environ.get("STRESS_STATS")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(counts, f, indent=1, sort_keys=True)
    terminalreporter.write_sep("-", "session stress machine")
    for key in (
        "examples",
        "steps",
        "tasks",
        "attempts",
        "acked_items_checked_after_crash",
        "repaired_calls",
        "torn_rollouts",
        "restarts",
        "incremental_requests",
        "websocket_resends",
        "fallbacks",
        "quiet_retries",
        "summary_requests",
        "compact_requests",
        "window_refusals",
        "window_retries",
        "mcp_progress_events",
        "mcp_sessions_checked",
    ):
        terminalreporter.write_line(f"{key}: {counts[key]}")
    for key in (
        "outcomes",
        "faults_served",
        "interrupts",
        "crashes",
        "tool_modes",
        "subscribers",
        "transports",
        "attempts_by_transport",
        "requests_by_transport",
        "rate_limit_snapshots",
        "compaction_settings",
        "compactions",
        "compaction_failures",
        "crash_during_compaction",
        "request_tokens",
        "mcp_calls",
    ):
        terminalreporter.write_line(f"{key}: {json.dumps(counts[key], sort_keys=True)}")
