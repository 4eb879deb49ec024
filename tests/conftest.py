"""Shared test configuration: Hypothesis profiles.

``default`` (CI) keeps the whole suite fast; ``HYPOTHESIS_PROFILE=stress`` runs heavy searches.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "stress",
    max_examples=10_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


import pytest  # noqa: E402
import trio.testing  # noqa: E402


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """A clock that jumps ahead whenever every task is blocked: sleeps take no real time."""
    return trio.testing.MockClock(autojump_threshold=0)
