"""Helpers shared by the sandboxed shell tests."""

from __future__ import annotations

import json
from typing import Any


async def run(tool: Any, command: list[str], **kwargs: Any) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(await tool(command, **kwargs))
    return result


def sh(script: str) -> list[str]:
    return ["bash", "-c", script]
