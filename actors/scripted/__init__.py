"""The scripted model server: a real HTTP/1.1 server on loopback that speaks the OpenAI Responses
and Chat Completions streaming protocols, answering from a script, with fault injection.

Layout: ``_script`` holds the values (items, faults, replies, the script and its JSON loader),
``_render`` turns a reply into SSE bytes once per protocol, ``_server`` is the h11-on-Trio server.
This file re-exports every public name. Run it as a process with
``python -m actors.scripted --port P --script FILE.json``.

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

JSON script format (``Script.from_json(obj_or_path)``; unknown keys are errors)::

    {
      "model": "scripted-model",      # optional: the model name in every response
      "cycle": false,                 # optional: start over when the replies run out
      "default": <reply>,             # optional: served after the replies run out
      "replies": [<reply>, ...]
    }

A bare list is shorthand for ``{"replies": [...]}``. A ``<reply>`` is a string (one text item)
or an object, every key optional::

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

An HTTP error fault stands alone; at most one of failed / incomplete / error_event and one
disconnect per reply. ``after_events`` counts complete SSE events from the first
(``response.created``; on Chat Completions the first chunk). Chat Completions renders the same
reply as chunks: text as ``delta.content``, calls as ``delta.tool_calls`` fragments (custom calls
as function calls), reasoning as ``delta.reasoning_content``, ``finish_reason`` ``"tool_calls"``
/ ``"stop"`` (``"length"`` for incomplete), a usage chunk when the request asks for
``stream_options.include_usage``, then ``data: [DONE]``; ``failed`` / ``error_event`` become a
``data: {"error": ...}`` chunk without ``[DONE]``.
"""

from ._script import (
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
    Reply as Reply,
    Script as Script,
    ScriptError as ScriptError,
    Stall as Stall,
    Text as Text,
    Usage as Usage,
    rate_limit_headers as rate_limit_headers,
)
from ._server import (
    REDACTED as REDACTED,
    RecordedRequest as RecordedRequest,
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
    "Fault",
    "Usage",
    "Reply",
    "Script",
    "ScriptError",
    "rate_limit_headers",
    "RecordedRequest",
    "ScriptedServer",
    "open_scripted_server",
    "REDACTED",
]
