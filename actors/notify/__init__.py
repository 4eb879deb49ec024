"""Fan-out of kernel events to subscribers with bounded buffers (never blocks a turn)."""

from ._notifier import (
    DEFAULT_MAX_BUFFER as DEFAULT_MAX_BUFFER,
)
from ._notifier import (
    NotificationActor as NotificationActor,
)
from ._notifier import (
    Notifier as Notifier,
)
from ._notifier import (
    Subscription as Subscription,
)

__all__ = ["Notifier", "NotificationActor", "Subscription", "DEFAULT_MAX_BUFFER"]
