"""Example counts scaled to the active Hypothesis profile (``default``: 100 examples per test,
``stress``: 10,000), for tests whose examples are expensive (processes, real sockets)."""

from __future__ import annotations

from hypothesis import settings


def examples(default: int, stress: int) -> int:
    """``default`` under the default profile, ``stress`` under the stress profile, and in
    proportion for any other profile."""
    active = settings.default.max_examples
    if active <= 100:
        return max(1, default * active // 100)
    return max(default, min(stress, stress * active // 10_000))
