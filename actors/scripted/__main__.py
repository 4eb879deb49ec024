"""``python -m actors.scripted --port P --script FILE.json [--host 127.0.0.1] [--context-window N] [--no-compact]``

Serves the script until SIGINT or SIGTERM. Once bound it prints exactly one line,
``listening on http://HOST:PORT``, to stdout (flushed), so a parent process can wait for it and
read the port (``--port 0`` picks a free one). Without ``--script`` every request gets the default
reply ("Done."). The script file may be keyed by conversation
(``{"sessions": {"alice": <script>, ...}}``, see :mod:`actors.scripted`). ``--context-window N``
refuses requests whose input is estimated above N tokens (it overrides the script's
``context_window``); ``--no-compact`` answers ``POST /v1/responses/compact`` with 404.
"""

from __future__ import annotations

import argparse
import signal
import sys

import trio

from ._script import Script, ScriptError, SessionScripts, load_script
from ._server import open_scripted_server


async def _serve(
    script: Script | SessionScripts,
    host: str,
    port: int,
    events_per_write: int,
    websocket: bool = True,
    context_window: int | None = None,
    compact: bool | None = None,
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        # nobody reads the records of a long-lived process: don't keep every request body
        async with open_scripted_server(
            script,
            host=host,
            port=port,
            events_per_write=events_per_write,
            record_requests=False,
            websocket=websocket,
            context_window=context_window,
            compact=compact,
        ) as server:
            print(f"listening on {server.url}", flush=True)
            async for _ in signals:
                break


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve until a signal; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m actors.scripted",
        description="Scripted OpenAI-compatible model server (Responses over SSE and WebSocket, Chat Completions SSE).",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: pick a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--script", help="JSON script file, plain or keyed by session (see actors.scripted's docstring)"
    )
    parser.add_argument("--events-per-write", type=int, default=16, help="SSE events per socket write")
    parser.add_argument(
        "--no-websocket", action="store_true", help="refuse WebSocket upgrades (an endpoint without WebSocket mode)"
    )
    parser.add_argument(
        "--context-window",
        type=int,
        metavar="N",
        help="refuse requests whose input is estimated above N tokens (context_length_exceeded)",
    )
    parser.add_argument(
        "--no-compact", action="store_true", help="answer POST /v1/responses/compact with 404 (no compaction endpoint)"
    )
    args = parser.parse_args(argv)
    if args.context_window is not None and args.context_window < 1:
        parser.error(f"--context-window must be a positive number of tokens, got {args.context_window}")
    try:
        script = load_script(args.script) if args.script else Script()
    except (OSError, ScriptError) as exc:
        print(f"error: cannot load script: {exc}", file=sys.stderr)
        return 2
    try:
        trio.run(
            _serve,
            script,
            args.host,
            args.port,
            args.events_per_write,
            not args.no_websocket,
            args.context_window,
            False if args.no_compact else None,
        )
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
