"""The two streamed-delta classes shared by model events and UI events (see ``kernel.stream``)."""

from __future__ import annotations

from typing import ClassVar

import attrs

__all__ = ["TextDelta", "ToolInputDelta"]


@attrs.frozen
class TextDelta:
    """Assistant text as it streams (also the model event ``OutputTextDelta``)."""

    item_id: str
    delta: str
    turn_id: str = attrs.field(default="", eq=False, kw_only=True)
    lifecycle: ClassVar[bool] = False


@attrs.frozen
class ToolInputDelta:
    """Tool-call arguments (or freeform input) as they stream (also the model event
    ``ToolCallInputDelta``)."""

    item_id: str
    delta: str
    turn_id: str = attrs.field(default="", eq=False, kw_only=True)
    lifecycle: ClassVar[bool] = False
