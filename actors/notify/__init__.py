"""Fan-out of kernel events to subscribers with bounded buffers (never blocks a turn)."""

from ._notifier import (
    DEFAULT_MAX_BUFFER as DEFAULT_MAX_BUFFER,
    NotificationActor as NotificationActor,
    Notifier as Notifier,
    Subscription as Subscription,
)

__all__ = ["Notifier", "NotificationActor", "Subscription", "DEFAULT_MAX_BUFFER"]
