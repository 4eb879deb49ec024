"""``agent-kernel compact ROLLOUT``: compact a saved session's history now (``session.compact()``).

The model flags choose the endpoint as for ``resume`` (the built-in demo model without them); the
rollout gets one ``compacted`` record and later ``resume`` / ``history`` start from it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from actors.compaction import CompactionFailed
from actors.scripted import open_scripted_server
from actors.session import open_session
from kernel import CompactionFinished

from ._render import Console
from ._run import choose_model, model_settings

__all__ = ["run_compact"]


async def run_compact(args: Any, console: Console, rollout: Path) -> int:
    """Compact ``rollout``'s history and print what changed; the exit status (0, or 1 when the
    compaction failed)."""
    choice = choose_model(args, os.environ)
    console.add_secret(choice.api_key)
    server = None
    base_url = choice.base_url
    if choice.script is not None:
        server = open_scripted_server(choice.script, record_requests=False)
    async with server if server is not None else _nothing() as running:
        if running is not None:
            base_url = running.base_url
        assert base_url is not None
        settings = model_settings(args, choice, base_url, compaction=args.mode)
        async with open_session(model=settings, rollout=rollout, resume=True) as session:
            async with session.subscribe() as events:
                try:
                    await session.compact()
                except CompactionFailed as exc:
                    console.error(f"agent-kernel: {exc}")
                    return 1
                done = [e for e in events.take_nowait() if isinstance(e, CompactionFinished)]
    for event in done:
        console.write(
            f"compacted ({event.mode}): {event.items_before} items → {event.items_after}, "
            f"~{event.tokens_before:,} → ~{event.tokens_after:,} tokens\n"
        )
    return 0


class _nothing:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None
