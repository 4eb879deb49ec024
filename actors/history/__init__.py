"""The history actor: the ordered conversation log and its append-only JSONL rollout (which
``HistoryClient.replace`` can cut short: context compaction, a ``compacted`` record).

``_actor`` holds the actor and its client, ``_format`` the rollout's records and their encoding,
``_file`` the writer (flush policy), ``_resume`` reading a rollout back and repairing it.
"""

from ._actor import (
    HistoryActor as HistoryActor,
    HistoryClient as HistoryClient,
    HistoryClosed as HistoryClosed,
    open_history as open_history,
)
from ._format import (
    ROLLOUT_VERSION as ROLLOUT_VERSION,
    RolloutError as RolloutError,
    RolloutWarning as RolloutWarning,
    SessionMeta as SessionMeta,
)
from ._resume import (
    ABORTED_OUTPUT_TEXT as ABORTED_OUTPUT_TEXT,
    Compaction as Compaction,
    ResumedSession as ResumedSession,
    repair as repair,
    resume as resume,
    well_formed as well_formed,
)

__all__ = [
    "ROLLOUT_VERSION",
    "ABORTED_OUTPUT_TEXT",
    "SessionMeta",
    "HistoryActor",
    "HistoryClient",
    "open_history",
    "ResumedSession",
    "Compaction",
    "resume",
    "repair",
    "well_formed",
    "RolloutError",
    "RolloutWarning",
    "HistoryClosed",
]
