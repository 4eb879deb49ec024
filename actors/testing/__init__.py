"""Stress-test a session under random faults, interrupts and crashes (needs the ``test`` extra).

See :func:`session_stress_machine` and :class:`SessionStressMachine`. Each example draws the
session's wire and, on the Responses wire, its transport (``StressConfig.transports``: HTTP,
WebSocket, or ``"auto"``: WebSocket falling back to HTTP); the invariants hold on each, with the
transports' legitimate differences in one table (``actors.testing._faults.TRANSPORT_DIFFERENCES``).
With ``StressConfig.compaction`` (default on) each example also draws the session's compaction
mode and sometimes a small context window, and compacts on demand between turns: the
acknowledged history restarts at each compaction's replacement.
"""

from ._config import (
    STATS as STATS,
    STRESS_API_KEY as STRESS_API_KEY,
    SessionFactory as SessionFactory,
    SessionSpec as SessionSpec,
    StressConfig as StressConfig,
    StressStats as StressStats,
    chaos_registry as chaos_registry,
    default_session_factory as default_session_factory,
)
from ._faults import (
    task_plans as task_plans,
)
from ._invariants import (
    FAILURES as FAILURES,
)
from ._machine import (
    SessionStressMachine as SessionStressMachine,
    session_stress_machine as session_stress_machine,
)

__all__ = [
    "STRESS_API_KEY",
    "SessionSpec",
    "SessionFactory",
    "default_session_factory",
    "StressConfig",
    "StressStats",
    "STATS",
    "chaos_registry",
    "task_plans",
    "session_stress_machine",
    "SessionStressMachine",
    "FAILURES",
]
