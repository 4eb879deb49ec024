"""The history actor: the ordered conversation log and its append-only JSONL rollout."""

from ._actor import (
    ABORTED_OUTPUT_TEXT as ABORTED_OUTPUT_TEXT,
)
from ._actor import (
    ROLLOUT_VERSION as ROLLOUT_VERSION,
)
from ._actor import (
    HistoryActor as HistoryActor,
)
from ._actor import (
    HistoryClient as HistoryClient,
)
from ._actor import (
    HistoryClosed as HistoryClosed,
)
from ._actor import (
    ResumedSession as ResumedSession,
)
from ._actor import (
    RolloutError as RolloutError,
)
from ._actor import (
    RolloutWarning as RolloutWarning,
)
from ._actor import (
    SessionMeta as SessionMeta,
)
from ._actor import (
    open_history as open_history,
)
from ._actor import (
    repair as repair,
)
from ._actor import (
    resume as resume,
)
from ._actor import (
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
    "resume",
    "repair",
    "well_formed",
    "RolloutError",
    "RolloutWarning",
    "HistoryClosed",
]
