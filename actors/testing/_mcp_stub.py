"""A tiny MCP server over stdio for the session stress machine: ``python -m actors.testing._mcp_stub``.

The stress machine wants real MCP server processes behind a session's MCP tools — real pipes,
real crashes, real cancellations — and it starts many of them, so this one is written with the
standard library only: no ``mcp`` SDK, no third-party imports, nothing slow to import. The client
on the other end is the official SDK (``mcp.client.stdio.stdio_client`` + ``ClientSession``).

Protocol: newline-delimited JSON-RPC 2.0 on stdin/stdout, MCP's handshake-era lifecycle.
``initialize`` echoes the client's protocol version; ``ping``; ``tools/list`` on two pages
(``echo``, then ``count`` under the cursor ``"p2"``); ``tools/call``; ``notifications/cancelled``
stops a running ``slow`` or ``hang`` call (it then gets no response); other notifications and
responses are ignored. Unknown methods get -32601, unknown tools and bad arguments -32602.

Tools:

* ``echo`` (read-only) with ``mode``: ``ok`` answers ``payload`` as text; ``error`` answers
  ``isError: true`` with ``"stub error: " + payload``; ``slow`` answers like ``ok`` after ~30 ms;
  ``hang`` never answers (until cancelled or stdin closes); ``crash`` exits the process at once
  with status 3 and no answer; ``progress`` sends two ``notifications/progress`` (when the
  request carries ``_meta.progressToken``) and then answers like ``ok``.
* ``count``: ``"count=N payload=…"``, N the number of ``count`` calls this process has served.

Calls overlap: one reader loop on stdin serves each request in turn, a timer thread answers a
``slow`` call and a ``hang`` call is only a pending entry, so neither blocks the reader. Every
line goes out whole under one lock, unbuffered. EOF on stdin exits with status 0 at once (a
``slow`` call still pending is never answered); a closed stdout is ignored (the client is gone).
``--tag TAG`` is an argv marker only, so a test can find the process in ``/proc``; its value is
otherwise ignored.

Start it with :func:`stub_command` (the file run as a script, ~25 ms to the first answer) rather
than ``python -m actors.testing._mcp_stub``: ``-m`` imports the ``actors`` and
``actors.testing`` packages first, and their eager re-exports cost hundreds of milliseconds.
Both run the same code; the module imports nothing from the project, so the script needs no
``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

__all__ = ["CRASH_STATUS", "SLOW_SECONDS", "TOOLS", "main", "stub_command"]

SLOW_SECONDS = 0.03
"""How long a ``slow`` call takes to answer."""

CRASH_STATUS = 3
"""The exit status of a ``crash`` call."""

_MODES = ("ok", "error", "slow", "hang", "crash", "progress")
_FALLBACK_VERSION = "2025-11-25"

_ECHO: dict[str, Any] = {
    "name": "echo",
    "description": "Echo the payload back; mode picks ok, error, slow, hang, crash or progress.",
    "inputSchema": {
        "type": "object",
        "properties": {
            "mode": {"type": "string", "enum": list(_MODES)},
            "payload": {"type": "string"},
        },
    },
    "annotations": {"readOnlyHint": True},
}
_COUNT: dict[str, Any] = {
    "name": "count",
    "description": "How many count calls this server process has served, this one included.",
    "inputSchema": {"type": "object", "properties": {"payload": {"type": "string"}}},
}
TOOLS: tuple[dict[str, Any], ...] = (_ECHO, _COUNT)
"""The tool listing, in page order (one tool a page)."""

_PAGES: dict[str | None, dict[str, Any]] = {
    None: {"tools": [_ECHO], "nextCursor": "p2"},
    "p2": {"tools": [_COUNT]},
}

# JSON-RPC error codes
_PARSE_ERROR = -32700
_INVALID_REQUEST = -32600
_METHOD_NOT_FOUND = -32601
_INVALID_PARAMS = -32602
_INTERNAL_ERROR = -32603


class _RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Server:
    """The state of one server process: its output, its pending calls, its ``count``."""

    def __init__(self, out_fd: int, slow_seconds: float = SLOW_SECONDS) -> None:
        self._out_fd = out_fd
        self._slow_seconds = slow_seconds
        self._out_lock = threading.Lock()
        self._out_closed = False
        self._state_lock = threading.Lock()
        # id of a running ``slow``/``hang`` call -> its timer (None for ``hang``)
        self._pending: dict[Any, threading.Timer | None] = {}
        self._count = 0

    # --- output ----------------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        """Write one message as one line (unbuffered: nothing is left to flush at exit)."""
        data = (json.dumps(message, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        with self._out_lock:
            if self._out_closed:
                return
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._out_fd, view) :]
            except OSError:  # the reader is gone (EPIPE): drop this and every later line
                self._out_closed = True

    def result(self, request_id: Any, result: dict[str, Any]) -> None:
        self.send({"jsonrpc": "2.0", "id": request_id, "result": result})

    def error(self, request_id: Any, code: int, message: str) -> None:
        self.send({"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}})

    # --- input -----------------------------------------------------------------------------

    def handle_line(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            message = json.loads(line)
        except ValueError as exc:
            self.error(None, _PARSE_ERROR, f"parse error: {exc}")
            return
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            self.error(None, _INVALID_REQUEST, "not a JSON-RPC 2.0 message")
            return
        method = message.get("method")
        if not isinstance(method, str):
            return  # a response to something we never sent: ignore
        params = message.get("params")
        if params is None:
            params = {}
        if "id" not in message:
            self.notification(method, params)
            return
        request_id = message["id"]
        if not isinstance(params, dict):
            self.error(request_id, _INVALID_PARAMS, "params must be an object")
            return
        try:
            self.request(request_id, method, params)
        except _RpcError as exc:
            self.error(request_id, exc.code, exc.message)
        except Exception as exc:  # a bug here must not end the reader loop
            self.error(request_id, _INTERNAL_ERROR, f"internal error: {type(exc).__name__}: {exc}")

    def notification(self, method: str, params: Any) -> None:
        if method != "notifications/cancelled" or not isinstance(params, dict):
            return  # notifications/initialized and the rest need nothing
        request_id = params.get("requestId")
        if not isinstance(request_id, str | int):
            return
        with self._state_lock:
            # a request already answered (or never seen) is simply not pending
            timer = self._pending.pop(request_id, None)
        if timer is not None:
            timer.cancel()

    def request(self, request_id: Any, method: str, params: dict[str, Any]) -> None:
        if method == "initialize":
            version = params.get("protocolVersion")
            self.result(
                request_id,
                {
                    "protocolVersion": version if isinstance(version, str) else _FALLBACK_VERSION,
                    "capabilities": {"tools": {"listChanged": True}},
                    "serverInfo": {"name": "stress-stub", "version": "1"},
                },
            )
        elif method == "ping":
            self.result(request_id, {})
        elif method == "tools/list":
            cursor = params.get("cursor")
            page = _PAGES.get(cursor) if cursor is None or isinstance(cursor, str) else None
            if page is None:
                raise _RpcError(_INVALID_PARAMS, f"unknown cursor: {cursor!r}")
            self.result(request_id, page)
        elif method == "tools/call":
            self.call(request_id, params)
        else:
            raise _RpcError(_METHOD_NOT_FOUND, f"method not found: {method}")

    # --- tools -----------------------------------------------------------------------------

    def call(self, request_id: Any, params: dict[str, Any]) -> None:
        name = params.get("name")
        arguments = params.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise _RpcError(_INVALID_PARAMS, "arguments must be an object")
        payload = arguments.get("payload", "")
        if not isinstance(payload, str):
            raise _RpcError(_INVALID_PARAMS, "payload must be a string")
        if name == "count":
            with self._state_lock:
                self._count += 1
                served = self._count
            self.result(request_id, _text(f"count={served} payload={payload}"))
            return
        if name != "echo":
            raise _RpcError(_INVALID_PARAMS, f"unknown tool: {name!r}")
        mode = arguments.get("mode", "ok")
        if mode not in _MODES:
            raise _RpcError(_INVALID_PARAMS, f"unknown mode: {mode!r} (one of {', '.join(_MODES)})")
        if mode == "ok":
            self.result(request_id, _text(payload))
        elif mode == "error":
            self.result(request_id, _text("stub error: " + payload, is_error=True))
        elif mode == "crash":
            os._exit(CRASH_STATUS)
        elif mode == "progress":
            meta = params.get("_meta")
            token = meta.get("progressToken") if isinstance(meta, dict) else None
            if token is not None:
                for progress, message in ((1, "half"), (2, "done")):
                    self.send(
                        {
                            "jsonrpc": "2.0",
                            "method": "notifications/progress",
                            "params": {"progressToken": token, "progress": progress, "total": 2, "message": message},
                        }
                    )
            self.result(request_id, _text(payload))
        elif mode == "hang":
            with self._state_lock:
                self._pending[request_id] = None  # answered never; cancelled is dropped
        else:  # slow
            timer = threading.Timer(self._slow_seconds, self._finish_slow, (request_id, payload))
            timer.daemon = True
            with self._state_lock:
                self._pending[request_id] = timer
            timer.start()

    def _finish_slow(self, request_id: Any, payload: str) -> None:
        with self._state_lock:
            if request_id not in self._pending:
                return  # cancelled meanwhile
            del self._pending[request_id]
        self.result(request_id, _text(payload))


def _text(text: str, *, is_error: bool = False) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": is_error}


def stub_command(tag: str | None = None, *, slow_seconds: float | None = None) -> list[str]:
    """The argv that starts this server fast: this file as a script under the running interpreter
    (``slow_seconds``: how long a ``slow`` call takes, default :data:`SLOW_SECONDS`)."""
    argv = [sys.executable, os.path.abspath(__file__), *(["--tag", tag] if tag is not None else [])]
    return argv + (["--slow", repr(float(slow_seconds))] if slow_seconds is not None else [])


def main(argv: list[str] | None = None) -> int:
    """Serve stdin/stdout until stdin closes; the status to exit with."""
    # ``--tag TAG`` is only a marker for /proc; ``--slow SECONDS`` sets how long a slow call takes
    args = list(argv or ())
    slow = float(args[args.index("--slow") + 1]) if "--slow" in args[:-1] else SLOW_SECONDS
    server = _Server(sys.stdout.fileno(), slow)
    for line in sys.stdin.buffer:
        server.handle_line(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
