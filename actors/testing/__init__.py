"""Stress-test a session under random faults, interrupts and crashes (needs the ``test`` extra).

See :func:`session_stress_machine`.
"""

from ._machine import (
    FAILURES as FAILURES,
)
from ._machine import (
    STATS as STATS,
)
from ._machine import (
    STRESS_API_KEY as STRESS_API_KEY,
)
from ._machine import (
    SessionFactory as SessionFactory,
)
from ._machine import (
    SessionSpec as SessionSpec,
)
from ._machine import (
    StressConfig as StressConfig,
)
from ._machine import (
    StressStats as StressStats,
)
from ._machine import (
    chaos_registry as chaos_registry,
)
from ._machine import (
    default_session_factory as default_session_factory,
)
from ._machine import (
    session_stress_machine as session_stress_machine,
)
from ._machine import (
    task_plans as task_plans,
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
    "FAILURES",
]
