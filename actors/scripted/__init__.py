"""The scripted model server: a real HTTP/1.1 server on loopback that speaks the OpenAI Responses
and Chat Completions streaming protocols, and Responses WebSocket mode, answering from a script,
with fault injection.

Layout: ``_script`` holds the values (items, faults, replies, the script and its JSON loader),
``_render`` turns a reply into SSE bytes once per protocol, ``_server`` is the h11-on-Trio server,
``_ws`` its WebSocket mode (wsproto, on the same port), ``_compact`` the context-window estimate
and compaction. This file re-exports every public name. Run it as a process with
``python -m actors.scripted --port P --script FILE.json [--context-window N] [--no-compact]``.

Usage::

    script = Script([
        Reply(items=[Text("Hello world", chunk_size=5)]),
        Reply(items=[FunctionCall("call_1", "shell", '{"command":["ls"]}', chunk_size=8)]),
        Reply(faults=[HttpError.rate_limited(retry_after=1.5)]),
    ])
    async with open_scripted_server(script) as server:
        ...  # point a client at server.base_url ("http://127.0.0.1:PORT/v1")
        server.requests  # what was received, Authorization redacted

Each POST to ``/v1/responses`` or ``/v1/chat/completions`` (``"stream": true``) consumes the
next reply (one cursor for both endpoints). When the script runs out, the ``default`` reply is
served (assistant text ``"Done."``), or the script starts over when ``cycle`` is true.

WebSocket mode (PROTOCOL §5): ``ws://HOST:PORT/v1/responses`` (``GET /v1/responses`` with
``Upgrade: websocket``, on the HTTP port). Each text frame ``{"type": "response.create", ...the
POST body without stream/background...}`` is one request: recorded like a POST
(``RecordedRequest.transport == "websocket"``, the upgrade request's headers, ``full_input``),
answered from the same cursor / session scripts / router, with the same ``response.*`` event
objects as the SSE ``data:`` lines, one JSON text frame each; requests on a connection are
answered one at a time, in order. A reply's :class:`HttpError` becomes an error frame
``{"type": "error", "status": 429, "error": {...the HTTP body's error...}, "headers": {...}}``
(``headers`` only when the error or reply has some; a reply's ``headers`` are otherwise not sent
on WebSocket) and the connection stays open. Per connection the server remembers the most recent
completed response only: ``previous_response_id`` naming it continues its chain (input + output),
any other id is answered ``previous_response_not_found``; a response.create that does not
complete forgets it; ``"generate": false`` creates an empty response without consuming a reply.
Pings are answered, as is the client's close. ``server.websocket_connections_opened`` and
``server.upgrades_refused`` count the upgrades; ``open_scripted_server(..., websocket=False)``
(or ``websocket=RefuseUpgrade(status=404)``) refuses them all and ``websocket_max_age=3600``
ends connections older than that with ``websocket_connection_limit_reached``::

    async with open_scripted_server(script) as server:
        server.websocket_url    # "ws://127.0.0.1:PORT/v1/responses"
        server.requests[0].transport, server.requests[0].full_input

On WebSocket, ``Disconnect`` drops the TCP connection without a close frame (``mid_event``: after
half of the next frame's bytes; ``clean``: the response just stops, the connection stays open),
``Malformed`` sends ``data`` as a text frame, ``Stall`` sends nothing for a while (pings are still
answered), ``delta_delay`` and ``events_per_write`` apply as on HTTP.

Replies per conversation: with several sessions on one server, give each conversation key its
own script and cursor, so which session gets which reply never depends on timing::

    scripts = Script.per_session({"alice": [Reply(...), ...], "bob": Script([...], cycle=True)})
    async with open_scripted_server(scripts) as server:   # or open_scripted_server({"alice": ...})
        settings = ModelSettings(base_url=server.base_url, model="m",
                                 extra_headers=(("X-Session-Id", "alice"),))

The key is read from the ``X-Session-Id`` header (``Script.per_session(..., header=...)`` names
another), else the JSON body's ``prompt_cache_key``, else its ``user`` (either endpoint). A
request without a key is answered 400, one with a key that has no script 404; the error message
names the key and the known keys. ``server.served_by_session`` holds each key's cursor and each
``RecordedRequest.session`` the key it carried.

Or route with a callable: ``open_scripted_server(router)`` where ``router(request) -> Reply``
(or a string: one text item) receives each streaming request as a ``RecordedRequest`` (method,
path, headers with secrets redacted, parsed JSON ``body``, ``session`` key) and returns the reply
to serve; an exception it raises is answered with HTTP 500 naming it.

Context window and compaction (PROTOCOL §6)::

    async with open_scripted_server(script, context_window=2000) as server:
        ...
        server.window_refusals                  # requests refused for the window
        server.requests[-1].window_refused, server.requests[-1].input_tokens

``context_window=N`` refuses a streaming request (HTTP POST on either endpoint, WebSocket
``response.create``) whose input is estimated above ``N`` tokens, as the real services refuse it,
and consumes no reply: Responses answers HTTP 400 ``{"error": {"message": WINDOW_MESSAGE, "type":
"invalid_request_error", "param": "input", "code": "context_length_exceeded"}}`` (WebSocket: that
error in an error frame with ``"status": 400``), Chat Completions HTTP 400 ``"This model's maximum
context length is N tokens. However, your messages resulted in M tokens. ..."`` (same code, param
``messages``). The estimate is :func:`estimate_tokens` (``actors/scripted/_compact.py``): the bytes
of the compact JSON of the input items (a string input is one user message; Chat: the
``messages``) plus those of the JSON of ``instructions``, divided by 4 and rounded up; on
WebSocket the full reconstructed input (remembered chain + the frame's ``input``) counts. A
compaction item counts small (its ``encrypted_content`` length), and stands for what it
summarised: only the user messages before the latest one count. ``RecordedRequest.input_tokens``
holds each request's estimate. With a window, a reply that sets no usage (``Usage()``) reports
the estimate as ``usage.input_tokens`` (``prompt_tokens`` on Chat); ``estimate_usage=True`` /
``False`` turns that on or off regardless of the window.

``POST /v1/responses/compact`` (body ``{"model", "input", "instructions"?}``, no ``stream``)
answers 200 JSON ``{"id": "cmp_resp_1", "object": "response.compaction", "created_at", "output":
[<the input's user messages, verbatim>, {"type": "compaction", "id": "cmp_<digest>",
"encrypted_content": "<base64>"}], "usage": {...input_tokens: the estimate...}}`` and consumes no
reply; send its ``output`` as the start of the next input (the compaction item round-trips
byte-for-byte and counts small). ``compact=False`` answers it 404 (an endpoint without it);
``compact_errors=[HttpError.server_error(), None, ...]`` answers the compact requests in order
(``None``: serve that one). Counters: ``server.compact_requests`` (all, 404 included),
``server.compactions`` (answered 200); recorded with ``endpoint == "compact"``.

Server-side compaction: a Responses request with ``"context_management": [{"type":
"compaction", "compact_threshold": T}]`` (no threshold: the context window) whose estimate is
above ``T`` gets a compaction item of its input (``response.output_item.added`` / ``.done`` at
output index 0, and first in ``response.completed``'s output) before the reply's own items (whose
ids do not change); the window then applies to the compacted input (user messages + the item),
and ``server.server_compactions`` counts it. A malformed ``context_management`` is answered 400.

JSON script format (``Script.from_json(obj_or_path)``; unknown keys are errors)::

    {
      "model": "scripted-model",      # optional: the model name in every response
      "cycle": false,                 # optional: start over when the replies run out
      "default": <reply>,             # optional: served after the replies run out
      "replies": [<reply>, ...],
      # optional server options (ServerOptions, ``script.server``; open_scripted_server's
      # arguments of the same names override them):
      "context_window": 8000,         # tokens; null: no limit (CLI: --context-window N)
      "estimate_usage": true,         # report the estimate as usage (default: with a window)
      "compact": true,                # serve POST /v1/responses/compact (CLI: --no-compact)
      "compact_errors": [<fault>, null, ...]   # HTTP error faults answering compact requests
    }

A bare list is shorthand for ``{"replies": [...]}``. The keyed form (``load_script(obj_or_path)``
or ``SessionScripts.from_json``; ``python -m actors.scripted --script`` takes either form) maps
each conversation key to a script in the form above::

    {
      "sessions": {"alice": {"replies": [...], "cycle": false}, "bob": ["Hi Bob"]},
      "header": "X-Session-Id",       # optional: the request header carrying the key
      "context_window": 8000          # optional server options, as above (top level only)
    }

A ``<reply>`` is a string (one text item) or an object, every key optional::

    {
      "items": [<item>, ...],
      "faults": [<fault>, ...],
      "usage": {"input_tokens": 0, "cached_tokens": 0, "output_tokens": 0,
                "reasoning_tokens": 0, "total_tokens": null},     # total defaults to in + out
      "end_turn": true,                      # copied into response.completed
      "headers": {"x-codex-primary-used-percent": "42"},         # extra response headers
      "delta_delay": 0.01,                   # seconds slept before each delta event
      "events_per_write": 16,                # SSE events joined per socket write
      "model": "...", "response_id": "..."   # overrides
    }

Items (``type``; a bare string is a text item; ``chunk_size`` is in characters, 0 = one delta)::

    {"type": "text", "text": "...", "chunk_size": 5, "id": "msg_1", "phase": "final_answer"}
    {"type": "reasoning", "summary": ["section", ...], "content": "raw reasoning",
     "encrypted_content": "...", "chunk_size": 4, "id": "rs_1"}
    {"type": "function_call", "call_id": "call_1", "name": "shell",
     "arguments": "{\\"command\\":[\\"ls\\"]}" or {"command": ["ls"]}, "chunk_size": 8, "id": "fc_1",
     "namespace": "..."}
    {"type": "custom_tool_call", "call_id": "call_2", "name": "apply_patch", "input": "...",
     "chunk_size": 8, "id": "ctc_1"}
    {"type": "raw", "item": {...any output item, sent as it is...}}

Faults (``kind``)::

    {"kind": "http_error", "status": 503, "message": "...", "type": "...", "code": "...",
     "error_fields": {...}, "body": {...} or "text", "retry_after": 2, "headers": {...}}
    {"kind": "rate_limited", "retry_after": 1.5, "try_again_in": 1.5, "message": "..."}   # 429
    {"kind": "usage_limit_reached", "plan_type": "plus", "resets_at": 1700000000,
     "message": "...", "headers": {...}}                                                # 429
    {"kind": "context_length_exceeded", "message": "..."}                               # 400
    {"kind": "server_error", "status": 500, "retry_after": 1, "message": "..."}
    {"kind": "unauthorized", "status": 401, "message": "..."}
    {"kind": "failed", "code": "context_length_exceeded", "message": "..."}   # response.failed
    {"kind": "incomplete", "reason": "max_output_tokens"}                     # response.incomplete
    {"kind": "error_event", "code": "server_error", "message": "..."}         # an `error` event
    {"kind": "disconnect", "after_events": 5, "mid_event": false, "clean": false}
    {"kind": "malformed", "after_events": 3, "data": "{not json",
     "event": "response.output_text.delta"}
    {"kind": "stall", "after_events": 3, "seconds": 30}
    {"kind": "websocket_close", "after_events": 3, "code": 1011, "reason": "..."}   # close frame
    {"kind": "refuse_upgrade", "status": 426, "message": "..."}    # the next upgrade gets HTTP 426
    {"kind": "websocket_connection_limit", "status": 400, "message": "...",
     "close_code": 1000}                             # error frame, then close (null: drop the TCP)

An HTTP error, ``refuse_upgrade`` or ``websocket_connection_limit`` fault stands alone; at most
one of failed / incomplete / error_event and one disconnect or websocket_close per reply.
``websocket_close`` on HTTP ends the body like ``disconnect``; ``websocket_connection_limit`` on
HTTP is an HTTP 400 with that error code; a ``refuse_upgrade`` reply is consumed by the next
upgrade attempt (shared cursor, or the session named by the upgrade's session header; not with a
router), and an HTTP POST or response.create reaching it is answered 500 ``script_mismatch``. ``after_events`` counts complete SSE events from the first
(``response.created``; on Chat Completions the first chunk). Chat Completions renders the same
reply as chunks: text as ``delta.content``, calls as ``delta.tool_calls`` fragments (custom calls
as function calls), reasoning as ``delta.reasoning_content``, ``finish_reason`` ``"tool_calls"``
/ ``"stop"`` (``"length"`` for incomplete), a usage chunk when the request asks for
``stream_options.include_usage``, then ``data: [DONE]``; ``failed`` / ``error_event`` become a
``data: {"error": ...}`` chunk without ``[DONE]``.
"""

from ._compact import (
    WINDOW_MESSAGE as WINDOW_MESSAGE,
    compaction_item as compaction_item,
    estimate_tokens as estimate_tokens,
    is_compaction as is_compaction,
)
from ._script import (
    SESSION_HEADER as SESSION_HEADER,
    CustomToolCall as CustomToolCall,
    Disconnect as Disconnect,
    ErrorEvent as ErrorEvent,
    Failed as Failed,
    Fault as Fault,
    FunctionCall as FunctionCall,
    HttpError as HttpError,
    Incomplete as Incomplete,
    Item as Item,
    Malformed as Malformed,
    RawItem as RawItem,
    Reasoning as Reasoning,
    RefuseUpgrade as RefuseUpgrade,
    Reply as Reply,
    Script as Script,
    ScriptError as ScriptError,
    ServerOptions as ServerOptions,
    SessionScripts as SessionScripts,
    Stall as Stall,
    Text as Text,
    Usage as Usage,
    WebSocketClose as WebSocketClose,
    WebSocketConnectionLimit as WebSocketConnectionLimit,
    load_script as load_script,
    rate_limit_headers as rate_limit_headers,
)
from ._server import (
    REDACTED as REDACTED,
    RecordedRequest as RecordedRequest,
    Router as Router,
    ScriptedServer as ScriptedServer,
    open_scripted_server as open_scripted_server,
)

__all__ = [
    "Text",
    "Reasoning",
    "FunctionCall",
    "CustomToolCall",
    "RawItem",
    "Item",
    "HttpError",
    "Failed",
    "Incomplete",
    "ErrorEvent",
    "Disconnect",
    "Malformed",
    "Stall",
    "WebSocketClose",
    "RefuseUpgrade",
    "WebSocketConnectionLimit",
    "Fault",
    "Usage",
    "Reply",
    "Script",
    "ScriptError",
    "ServerOptions",
    "SessionScripts",
    "SESSION_HEADER",
    "load_script",
    "rate_limit_headers",
    "RecordedRequest",
    "Router",
    "ScriptedServer",
    "open_scripted_server",
    "REDACTED",
    "estimate_tokens",
    "compaction_item",
    "is_compaction",
    "WINDOW_MESSAGE",
]
