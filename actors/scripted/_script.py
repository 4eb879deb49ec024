"""The script: what the scripted model server answers, reply by reply, and the faults it injects.

Values only (frozen attrs classes); rendering lives in ``_render`` and I/O in ``_server``. The JSON
form is documented in the package docstring (``actors/scripted/__init__.py``) and loaded by
:meth:`Script.from_json`. Every public name here is public API: the package re-exports each one
and lists them in its ``__all__`` (so this module keeps no list of its own).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Union

import attrs


class ScriptError(ValueError):
    """A script (Python or JSON) is malformed; the message names the place, the value and the
    expected form."""


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ScriptError(f"{attribute.name} must be >= 0, got {value!r}")


def _arguments_to_str(value: str | Mapping[str, Any] | Sequence[Any]) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _to_dict(value: Mapping[str, Any]) -> dict[str, Any]:
    return dict(value)


def _to_strs(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _str_dict(value: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in (value or {}).items()}


# --------------------------------------------------------------------------------------------
# Output items


@attrs.frozen
class Text:
    """An assistant message streamed as ``response.output_text.delta`` events of ``chunk_size``
    characters (``0``: the whole text in one delta; an empty text sends no delta).

    ``id`` defaults to ``msg_<reply>_<index>``; ``phase`` (``"commentary"`` / ``"final_answer"``)
    is copied onto the message item when set.
    """

    text: str
    chunk_size: int = attrs.field(default=0, kw_only=True, validator=_non_negative)
    id: str | None = attrs.field(default=None, kw_only=True)
    phase: str | None = attrs.field(default=None, kw_only=True)


@attrs.frozen
class Reasoning:
    """A reasoning item: each ``summary`` section is streamed as a
    ``response.reasoning_summary_part.added`` then ``response.reasoning_summary_text.delta``
    events of ``chunk_size`` characters; ``content`` (raw reasoning text, optional) as
    ``response.reasoning_text.delta`` events. ``encrypted_content`` is copied onto the item."""

    summary: tuple[str, ...] = attrs.field(default=(), converter=_to_strs)
    chunk_size: int = attrs.field(default=0, kw_only=True, validator=_non_negative)
    content: str | None = attrs.field(default=None, kw_only=True)
    encrypted_content: str | None = attrs.field(default=None, kw_only=True)
    id: str | None = attrs.field(default=None, kw_only=True)


@attrs.frozen
class FunctionCall:
    """A function tool call whose ``arguments`` (a JSON string; a dict or list is encoded) are
    streamed as ``response.function_call_arguments.delta`` events of ``chunk_size`` characters.
    ``id`` defaults to ``fc_<reply>_<index>``."""

    call_id: str
    name: str
    arguments: str = attrs.field(default="{}", converter=_arguments_to_str)
    chunk_size: int = attrs.field(default=0, kw_only=True, validator=_non_negative)
    id: str | None = attrs.field(default=None, kw_only=True)
    namespace: str | None = attrs.field(default=None, kw_only=True)


@attrs.frozen
class CustomToolCall:
    """A freeform (custom) tool call whose ``input`` is streamed as
    ``response.custom_tool_call_input.delta`` events of ``chunk_size`` characters. ``id``
    defaults to ``ctc_<reply>_<index>``. On Chat Completions it is rendered as a function tool
    call whose arguments are the raw input (that API streams only function calls)."""

    call_id: str
    name: str
    input: str = ""
    chunk_size: int = attrs.field(default=0, kw_only=True, validator=_non_negative)
    id: str | None = attrs.field(default=None, kw_only=True)


@attrs.frozen
class RawItem:
    """Any other output item (``web_search_call``, ``local_shell_call``…), sent as it is in
    ``response.output_item.added`` and ``.done``. Not rendered on Chat Completions."""

    item: Mapping[str, Any] = attrs.field(converter=_to_dict)


Item = Union[Text, Reasoning, FunctionCall, CustomToolCall, RawItem]
"""One scripted output item."""


# --------------------------------------------------------------------------------------------
# Faults


@attrs.frozen(kw_only=True)
class HttpError:
    """Answer with an HTTP error instead of a stream; no other fault may be combined with it.

    The body is ``body`` when given (a mapping is sent as JSON, a string as it is), else the
    OpenAI-style ``{"error": {"message", "type", "code", "param", **error_fields}}``.
    ``retry_after`` becomes the ``Retry-After`` header; ``headers`` are added to the response.
    The class methods build the common cases.
    """

    status: int = attrs.field()
    message: str = ""
    type: str | None = None
    code: str | None = None
    error_fields: Mapping[str, Any] = attrs.field(factory=dict, converter=_to_dict)
    body: Mapping[str, Any] | str | None = None
    retry_after: float | str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_str_dict)

    @status.validator
    def _check_status(self, _attribute: attrs.Attribute[Any], value: int) -> None:
        if not 400 <= value <= 599:
            raise ScriptError(f"HttpError.status must be a 4xx or 5xx code, got {value!r}")

    def body_bytes(self) -> bytes:
        """The response body."""
        if isinstance(self.body, str):
            return self.body.encode()
        if self.body is not None:
            return json.dumps(self.body, separators=(",", ":")).encode()
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "param": None,
            "code": self.code,
            **self.error_fields,
        }
        return json.dumps({"error": error}, separators=(",", ":")).encode()

    @classmethod
    def rate_limited(
        cls,
        *,
        retry_after: float | str | None = None,
        try_again_in: float | None = None,
        message: str | None = None,
    ) -> HttpError:
        """HTTP 429 ``rate_limit_exceeded``. ``retry_after`` sets the ``Retry-After`` header;
        ``try_again_in`` (seconds) writes the delay into the message the way OpenAI does
        ("… Please try again in 1.5s.")."""
        if message is None:
            message = "Rate limit reached for requests in organization org-scripted."
            if try_again_in is not None:
                message += f" Please try again in {try_again_in:g}s."
        return cls(
            status=429,
            message=message,
            type="requests",
            code="rate_limit_exceeded",
            retry_after=retry_after,
        )

    @classmethod
    def usage_limit_reached(
        cls,
        *,
        plan_type: str = "plus",
        resets_at: int | None = None,
        message: str = "The usage limit has been reached",
        headers: Mapping[str, str] | None = None,
    ) -> HttpError:
        """HTTP 429 with the codex backend's body
        ``{"error": {"type": "usage_limit_reached", "message", "plan_type", "resets_at"}}``
        (``resets_at`` in Unix seconds)."""
        body: dict[str, Any] = {
            "type": "usage_limit_reached",
            "message": message,
            "plan_type": plan_type,
        }
        if resets_at is not None:
            body["resets_at"] = resets_at
        return cls(status=429, message=message, body={"error": body}, headers=headers or {})

    @classmethod
    def context_length_exceeded(cls, *, message: str | None = None) -> HttpError:
        """HTTP 400 ``invalid_request_error`` with code ``context_length_exceeded``."""
        return cls(
            status=400,
            message=message
            or "Your input exceeds the context window of this model. Please adjust your input and try again.",
            type="invalid_request_error",
            code="context_length_exceeded",
        )

    @classmethod
    def server_error(
        cls,
        status: int = 500,
        *,
        retry_after: float | str | None = None,
        message: str | None = None,
    ) -> HttpError:
        """HTTP 5xx ``server_error`` (500 by default; 502/503 for overload)."""
        return cls(
            status=status,
            message=message or "The server had an error while processing your request. Sorry about that!",
            type="server_error",
            retry_after=retry_after,
        )

    @classmethod
    def unauthorized(cls, *, status: int = 401, message: str | None = None) -> HttpError:
        """HTTP 401 (or 403) ``invalid_api_key``."""
        return cls(
            status=status,
            message=message or "Incorrect API key provided.",
            type="invalid_request_error",
            code="invalid_api_key",
        )


@attrs.frozen
class Failed:
    """End the stream with ``response.failed`` (``error: {code, message}``) after the items
    instead of ``response.completed``. On Chat Completions: a ``data: {"error": …}`` chunk and
    no ``[DONE]``."""

    code: str = "server_error"
    message: str = "The model failed to generate a response."


@attrs.frozen
class Incomplete:
    """End the stream with ``response.incomplete`` (``incomplete_details: {reason}``). On Chat
    Completions: ``finish_reason`` ``"length"`` (or ``"content_filter"``) then ``[DONE]``."""

    reason: str = "max_output_tokens"


@attrs.frozen
class ErrorEvent:
    """End the stream with an ``error`` event (``code, message, param``) after the items. On
    Chat Completions: a ``data: {"error": …}`` chunk and no ``[DONE]``."""

    code: str = "server_error"
    message: str = "An error occurred while processing your request."


@attrs.frozen(kw_only=True)
class Disconnect:
    """Stop after ``after_events`` complete events.

    By default the connection is closed abruptly (the chunked body is left unterminated: the
    client sees a protocol/read error). ``mid_event=True`` first sends the first half of the next
    event's bytes. ``clean=True`` instead ends the HTTP body properly (a clean EOF before
    ``response.completed`` / ``[DONE]``) and keeps the connection alive.

    On WebSocket the TCP connection is closed with no close frame (``mid_event``: after half of
    the next frame's bytes); ``clean=True`` just stops the response's frames and keeps the
    connection open (nothing marks the end: the client sees a stalled response).
    """

    after_events: int = attrs.field(validator=_non_negative)
    mid_event: bool = False
    clean: bool = False

    def __attrs_post_init__(self) -> None:
        if self.mid_event and self.clean:
            raise ScriptError("Disconnect: mid_event and clean cannot both be true")


@attrs.frozen(kw_only=True)
class Malformed:
    """After ``after_events`` events, send an event whose data line is ``data`` (not JSON by
    default), then go on with the rest of the stream. The Responses endpoint names it
    ``event``; Chat Completions sends only the ``data:`` line; WebSocket sends ``data`` as a text
    frame."""

    after_events: int = attrs.field(validator=_non_negative)
    data: str = "{not json"
    event: str = "response.output_text.delta"


@attrs.frozen(kw_only=True)
class Stall:
    """After ``after_events`` events, send nothing for ``seconds`` (``trio.sleep``: a fake clock
    makes it instant), then go on with the rest of the stream. On WebSocket, pings are still
    answered meanwhile."""

    after_events: int = attrs.field(validator=_non_negative)
    seconds: float = attrs.field(validator=_non_negative)


_RESERVED_CLOSE_CODES = frozenset({1004, 1005, 1006, 1015})


def _close_code(_inst: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is None and attribute.name == "close_code":
        return
    if not isinstance(value, int) or not 1000 <= value <= 4999 or value in _RESERVED_CLOSE_CODES:
        raise ScriptError(
            f"{attribute.name} must be a WebSocket close code a peer may send (1000-4999, not 1004, 1005, "
            f"1006 or 1015), got {value!r}"
        )


def _close_reason(_inst: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if len(value.encode()) > 123:
        raise ScriptError(f"{attribute.name} must be at most 123 bytes of UTF-8, got {len(value.encode())}")


def _error_status(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not isinstance(value, int) or not 400 <= value <= 599:
        raise ScriptError(f"{attribute.name} must be a 4xx or 5xx code, got {value!r}")


@attrs.frozen(kw_only=True)
class WebSocketClose:
    """WebSocket: after ``after_events`` complete events, send a close frame with ``code``
    (default 1011, internal error) and ``reason``, wait up to a few seconds for the client's
    close frame, then close the TCP connection. On HTTP it ends the stream like
    ``Disconnect(after_events=...)`` (the chunked body left unterminated)."""

    after_events: int = attrs.field(default=0, validator=_non_negative)
    code: int = attrs.field(default=1011, validator=_close_code)
    reason: str = attrs.field(default="", validator=_close_reason)


@attrs.frozen(kw_only=True)
class RefuseUpgrade:
    """Refuse a WebSocket upgrade: answer the handshake (``GET /v1/responses`` with ``Upgrade:
    websocket``) with HTTP ``status`` (default 426; an endpoint without WebSocket mode says 404,
    405 or 426) and an OpenAI-style JSON error body; the connection stays HTTP (keep-alive).

    In a reply it stands alone and is consumed by the next upgrade attempt (the shared cursor,
    or the session named by the upgrade's session header; not with a router), so a script
    ``[Reply(faults=[RefuseUpgrade()]), Reply(items=["hi"])]`` refuses the first upgrade and
    answers the client's HTTP fallback with ``"hi"``. An HTTP request or a ``response.create``
    that reaches such a reply is a script mismatch, answered 500 naming it. Also a server option:
    ``open_scripted_server(..., websocket=RefuseUpgrade(status=404))`` refuses every upgrade."""

    status: int = attrs.field(default=426, validator=_error_status)
    message: str = "WebSocket mode is not available on this endpoint: use POST /v1/responses"

    def to_http_error(self) -> HttpError:
        """The HTTP answer to the upgrade request."""
        return HttpError(status=self.status, message=self.message, type="invalid_request_error")


CONNECTION_LIMIT_MESSAGE = (
    "Responses websocket connection limit reached (60 minutes). Create a new websocket connection to continue."
)


@attrs.frozen(kw_only=True)
class WebSocketConnectionLimit:
    """WebSocket: answer the ``response.create`` with the error frame
    ``{"type": "error", "status": 400, "error": {"type": "invalid_request_error", "code":
    "websocket_connection_limit_reached", "message", "param": null}}``, then close the connection
    with a close frame of ``close_code`` (default 1000; ``None``: drop the TCP connection with no
    close frame). It stands alone (no other fault). On HTTP: an HTTP ``status`` error with that
    body."""

    message: str = CONNECTION_LIMIT_MESSAGE
    status: int = attrs.field(default=400, validator=_error_status)
    close_code: int | None = attrs.field(default=1000, validator=_close_code)

    def to_http_error(self) -> HttpError:
        """The error as an :class:`HttpError` (its body is the error frame's ``error``)."""
        return HttpError(
            status=self.status,
            message=self.message,
            type="invalid_request_error",
            code="websocket_connection_limit_reached",
        )


Fault = Union[
    HttpError,
    Failed,
    Incomplete,
    ErrorEvent,
    Disconnect,
    Malformed,
    Stall,
    WebSocketClose,
    RefuseUpgrade,
    WebSocketConnectionLimit,
]
"""One injected fault."""

_TERMINAL = (Failed, Incomplete, ErrorEvent)
_TRANSPORT = (Disconnect, Malformed, Stall, WebSocketClose)
_STANDALONE = (HttpError, RefuseUpgrade, WebSocketConnectionLimit)


# --------------------------------------------------------------------------------------------
# Replies and scripts


@attrs.frozen(kw_only=True)
class Usage:
    """Token usage reported in ``response.completed`` (and the Chat Completions usage chunk).
    ``total_tokens`` defaults to ``input_tokens + output_tokens``."""

    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int | None = None

    def to_responses(self) -> dict[str, Any]:
        """The Responses API ``usage`` object."""
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_tokens},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self._total(),
        }

    def to_chat(self) -> dict[str, Any]:
        """The Chat Completions ``usage`` object."""
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self._total(),
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }

    def _total(self) -> int:
        if self.total_tokens is not None:
            return self.total_tokens
        return self.input_tokens + self.output_tokens


def _to_faults(values: Iterable[Fault]) -> tuple[Fault, ...]:
    return tuple(values)


def _to_items(values: Iterable[Item | str]) -> tuple[Item, ...]:
    return tuple(Text(v) if isinstance(v, str) else v for v in values)


@attrs.frozen(kw_only=True)
class Reply:
    """One model response: output items, faults, usage and transport options.

    ``items`` (a string is shorthand for :class:`Text`); ``faults`` (at most one
    :class:`HttpError`, :class:`RefuseUpgrade` or :class:`WebSocketConnectionLimit`, and then
    nothing else; at most one of :class:`Failed` / :class:`Incomplete` / :class:`ErrorEvent`; at
    most one :class:`Disconnect` or :class:`WebSocketClose`); ``usage``; ``end_turn`` (copied
    into ``response.completed`` when set); ``headers`` added to the HTTP response (e.g.
    :func:`rate_limit_headers`; on WebSocket only an error frame carries them, as its
    ``headers``); ``delta_delay`` seconds slept before every delta
    event; ``events_per_write`` overrides the server's batching (forced to one event per write
    around deltas when ``delta_delay`` is set); ``model`` and ``response_id`` override the
    defaults. Raises :class:`ScriptError` for an invalid combination.
    """

    items: tuple[Item, ...] = attrs.field(default=(), converter=_to_items)
    faults: tuple[Fault, ...] = attrs.field(default=(), converter=_to_faults)
    usage: Usage = Usage()
    end_turn: bool | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_str_dict)
    delta_delay: float = attrs.field(default=0.0, validator=_non_negative)
    events_per_write: int | None = None
    model: str | None = None
    response_id: str | None = None

    def __attrs_post_init__(self) -> None:
        for f in self.faults:
            if not isinstance(f, (*_STANDALONE, *_TERMINAL, *_TRANSPORT)):
                raise ScriptError(f"Reply.faults: {f!r} is not a fault")
        standalone = [f for f in self.faults if isinstance(f, _STANDALONE)]
        if standalone and len(self.faults) > 1:
            name = type(standalone[0]).__name__
            raise ScriptError(f"Reply: a {name} fault stands alone: it cannot be combined with other faults")
        if sum(isinstance(f, _TERMINAL) for f in self.faults) > 1:
            raise ScriptError("Reply: at most one of Failed / Incomplete / ErrorEvent")
        if sum(isinstance(f, Disconnect) for f in self.faults) > 1:
            raise ScriptError("Reply: at most one Disconnect fault")
        if sum(isinstance(f, (Disconnect, WebSocketClose)) for f in self.faults) > 1:
            raise ScriptError("Reply: at most one Disconnect / WebSocketClose fault")
        if self.events_per_write is not None and self.events_per_write < 1:
            raise ScriptError(f"Reply.events_per_write must be >= 1, got {self.events_per_write}")

    @property
    def http_error(self) -> HttpError | None:
        """The HTTP error fault, if any."""
        for f in self.faults:
            if isinstance(f, HttpError):
                return f
        return None

    @property
    def refuse_upgrade(self) -> RefuseUpgrade | None:
        """The upgrade refusal fault, if any."""
        for f in self.faults:
            if isinstance(f, RefuseUpgrade):
                return f
        return None

    @property
    def connection_limit(self) -> WebSocketConnectionLimit | None:
        """The WebSocket connection-limit fault, if any."""
        for f in self.faults:
            if isinstance(f, WebSocketConnectionLimit):
                return f
        return None

    @property
    def terminal(self) -> Failed | Incomplete | ErrorEvent | None:
        """The fault that replaces ``response.completed``, if any."""
        for f in self.faults:
            if isinstance(f, _TERMINAL):
                return f
        return None

    @property
    def transport_faults(self) -> tuple[Disconnect | Malformed | Stall | WebSocketClose, ...]:
        """The faults applied while writing the stream, in script order."""
        return tuple(f for f in self.faults if isinstance(f, _TRANSPORT))


def _to_replies(values: Iterable[Reply | str]) -> tuple[Reply, ...]:
    return tuple(Reply(items=[v]) if isinstance(v, str) else v for v in values)


DEFAULT_REPLY = Reply(items=[Text("Done.")])


def _to_compact_errors(values: Iterable[HttpError | None]) -> tuple[HttpError | None, ...]:
    out = tuple(values)
    for i, value in enumerate(out):
        if value is not None and not isinstance(value, HttpError):
            raise ScriptError(f"compact_errors[{i}]: expected an HttpError or None, got {value!r}")
    return out


def _context_window(_inst: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ScriptError(f"{attribute.name} must be a positive number of tokens or None, got {value!r}")


@attrs.frozen(kw_only=True)
class ServerOptions:
    """Server-wide options a script can carry (the JSON script's top-level keys of the same
    names); an ``open_scripted_server`` argument of the same name overrides each one.

    ``context_window`` (tokens, ``None``: no limit) refuses a streaming request whose estimated
    input (:func:`actors.scripted.estimate_tokens`) is above it with HTTP 400
    ``context_length_exceeded``, without consuming a reply. ``estimate_usage`` reports the
    estimate as ``usage.input_tokens`` of replies that set no usage (``None``: when
    ``context_window`` is set). ``compact`` serves ``POST /v1/responses/compact`` (``False``: 404,
    as an endpoint without it). ``compact_errors`` answer the compact requests in order (one each;
    ``None``: serve that one), before they succeed."""

    context_window: int | None = attrs.field(default=None, validator=_context_window)
    estimate_usage: bool | None = None
    compact: bool = True
    compact_errors: tuple[HttpError | None, ...] = attrs.field(default=(), converter=_to_compact_errors)


@attrs.frozen
class Script:
    """The replies a scripted server gives, in order: each streaming POST consumes the next
    one. When they run out the server answers ``default`` (assistant text ``"Done."``), or
    starts over when ``cycle`` is true. ``model`` names the model in every response. ``server``
    holds server-wide options (:class:`ServerOptions`: context window, compaction endpoint)."""

    replies: tuple[Reply, ...] = attrs.field(default=(), converter=_to_replies)
    cycle: bool = attrs.field(default=False, kw_only=True)
    default: Reply = attrs.field(default=DEFAULT_REPLY, kw_only=True)
    model: str = attrs.field(default="scripted-model", kw_only=True)
    server: ServerOptions = attrs.field(factory=ServerOptions, kw_only=True)

    @classmethod
    def from_json(cls, source: Any) -> Script:
        """Build a script from its JSON form: a parsed object (a mapping or a list of replies)
        or the path (``str`` / ``os.PathLike``) of a JSON file. See the package docstring for
        the format. Raises :class:`ScriptError` naming the offending place (a keyed
        ``{"sessions": ...}`` script is an error here: use :func:`load_script`), ``OSError`` when
        the file cannot be read."""
        return _load_script(_read_json(source))

    @classmethod
    def per_session(
        cls, sessions: Mapping[str, Script | Iterable[Reply | str]], *, header: str = "X-Session-Id"
    ) -> SessionScripts:
        """One script per conversation key (a :class:`SessionScripts`): ``sessions`` maps a key
        to its :class:`Script` or to its replies. The server reads a request's key from the
        ``header`` (default ``X-Session-Id``), else the body's ``prompt_cache_key``, else its
        ``user``; each key has its own cursor. Raises :class:`ScriptError` on an empty mapping
        or a key that is not a non-empty string."""
        return SessionScripts(sessions, header=header)


SESSION_HEADER = "X-Session-Id"
"""The request header a :class:`SessionScripts` reads the conversation key from by default."""

SESSION_BODY_FIELDS = ("prompt_cache_key", "user")
"""The request body fields read (in order) for the conversation key when the header is absent."""


def _to_scripts(sessions: Mapping[str, Script | Iterable[Reply | str]]) -> dict[str, Script]:
    if not isinstance(sessions, Mapping):
        raise ScriptError(f"SessionScripts: expected a mapping of session key to script, got {type(sessions).__name__}")
    if not sessions:
        raise ScriptError("SessionScripts: no sessions: give at least one key and its script")
    out: dict[str, Script] = {}
    for key, value in sessions.items():
        if not isinstance(key, str) or not key:
            raise ScriptError(f"SessionScripts: a session key must be a non-empty string, got {key!r}")
        if isinstance(value, Script):
            out[key] = value
        elif isinstance(value, (str, Reply)) or not isinstance(value, Iterable):
            raise ScriptError(f"SessionScripts[{key!r}]: expected a Script or a list of replies, got {value!r}")
        else:
            out[key] = Script(value)
    return out


def _header_name(value: str) -> str:
    if not isinstance(value, str) or not value or not value.isascii() or " " in value or ":" in value:
        raise ScriptError(f"SessionScripts.header: {value!r} is not an HTTP header name")
    return value.lower()


@attrs.frozen(eq=False)
class SessionScripts:
    """One :class:`Script` per conversation key, each with its own cursor (build it with
    :meth:`Script.per_session` or pass a ``{key: script}`` mapping to ``open_scripted_server``).

    The server takes a request's key from the ``header`` (stored lower-case; default
    ``x-session-id``), else from the JSON body's ``prompt_cache_key``, else its ``user``
    (both endpoints). A request without a key gets HTTP 400, one whose key has no script HTTP
    404; both error messages name the key and the known keys. ``server`` holds the server-wide
    options (:class:`ServerOptions`; the scripts' own ``server`` options are not read)."""

    scripts: Mapping[str, Script] = attrs.field(converter=_to_scripts)
    header: str = attrs.field(default=SESSION_HEADER, kw_only=True, converter=_header_name)
    server: ServerOptions = attrs.field(factory=ServerOptions, kw_only=True)

    @classmethod
    def from_json(cls, source: Any) -> SessionScripts:
        """Build keyed scripts from ``{"sessions": {"key": <script>, ...}, "header": "..."}``
        (a parsed object or a JSON file's path; each ``<script>`` is a plain script's JSON
        form). Raises :class:`ScriptError` naming the offending place, ``OSError`` when the file
        cannot be read."""
        return _load_sessions(_read_json(source))


def load_script(source: Any) -> Script | SessionScripts:
    """Load either JSON script form (a parsed object or a JSON file's path): a
    :class:`SessionScripts` when the top-level object has ``"sessions"``, else a
    :class:`Script`. Raises :class:`ScriptError` naming the offending place, ``OSError`` when
    the file cannot be read."""
    obj = _read_json(source)
    if isinstance(obj, Mapping) and "sessions" in obj:
        return _load_sessions(obj)
    return _load_script(obj)


def _read_json(source: Any) -> Any:
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, encoding="utf-8") as f:
                return json.load(f)
        except json.JSONDecodeError as exc:
            raise ScriptError(f"script file {os.fspath(source)!r} is not JSON: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise ScriptError(f"script file {os.fspath(source)!r} is not UTF-8 text: {exc}") from exc
    return source


def rate_limit_headers(
    *,
    primary_used_percent: float | None = None,
    primary_window_minutes: float | None = None,
    primary_reset_after_seconds: float | None = None,
    secondary_used_percent: float | None = None,
    secondary_window_minutes: float | None = None,
    secondary_reset_after_seconds: float | None = None,
) -> dict[str, str]:
    """The codex backend's rate-limit snapshot headers (``x-codex-primary-used-percent``…)
    for the given values; ``None`` values are left out."""
    values = {
        "primary-used-percent": primary_used_percent,
        "primary-window-minutes": primary_window_minutes,
        "primary-reset-after-seconds": primary_reset_after_seconds,
        "secondary-used-percent": secondary_used_percent,
        "secondary-window-minutes": secondary_window_minutes,
        "secondary-reset-after-seconds": secondary_reset_after_seconds,
    }
    return {f"x-codex-{k}": f"{v:g}" for k, v in values.items() if v is not None}


# --------------------------------------------------------------------------------------------
# JSON loading: strict, every error names its place


def _expect_mapping(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, Mapping):
        raise ScriptError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return dict(obj)


def _fields(obj: Any, where: str, required: Sequence[str], optional: Sequence[str], skip: str = "") -> dict[str, Any]:
    data = _expect_mapping(obj, where)
    data.pop(skip, None)
    unknown = set(data) - set(required) - set(optional)
    if unknown:
        raise ScriptError(f"{where}: unknown key(s) {sorted(unknown)}; expected {sorted([*required, *optional])}")
    missing = [k for k in required if k not in data]
    if missing:
        raise ScriptError(f"{where}: missing key(s) {missing}")
    return data


def _build(where: str, factory: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    try:
        return factory(**kwargs)
    except ScriptError as exc:
        raise ScriptError(f"{where}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ScriptError(f"{where}: {exc}") from None


_ITEM_KEYS: dict[str, tuple[Callable[..., Any], tuple[str, ...], tuple[str, ...]]] = {
    "text": (Text, ("text",), ("chunk_size", "id", "phase")),
    "reasoning": (Reasoning, (), ("summary", "chunk_size", "content", "encrypted_content", "id")),
    "function_call": (
        FunctionCall,
        ("call_id", "name"),
        ("arguments", "chunk_size", "id", "namespace"),
    ),
    "custom_tool_call": (CustomToolCall, ("call_id", "name"), ("input", "chunk_size", "id")),
    "raw": (RawItem, ("item",), ()),
}

_FAULT_KEYS: dict[str, tuple[Callable[..., Any], tuple[str, ...], tuple[str, ...]]] = {
    "http_error": (
        HttpError,
        ("status",),
        ("message", "type", "code", "error_fields", "body", "retry_after", "headers"),
    ),
    "rate_limited": (HttpError.rate_limited, (), ("retry_after", "try_again_in", "message")),
    "usage_limit_reached": (
        HttpError.usage_limit_reached,
        (),
        ("plan_type", "resets_at", "message", "headers"),
    ),
    "context_length_exceeded": (HttpError.context_length_exceeded, (), ("message",)),
    "server_error": (HttpError.server_error, (), ("status", "retry_after", "message")),
    "unauthorized": (HttpError.unauthorized, (), ("status", "message")),
    "failed": (Failed, (), ("code", "message")),
    "incomplete": (Incomplete, (), ("reason",)),
    "error_event": (ErrorEvent, (), ("code", "message")),
    "disconnect": (Disconnect, ("after_events",), ("mid_event", "clean")),
    "malformed": (Malformed, ("after_events",), ("data", "event")),
    "stall": (Stall, ("after_events", "seconds"), ()),
    "websocket_close": (WebSocketClose, (), ("after_events", "code", "reason")),
    "refuse_upgrade": (RefuseUpgrade, (), ("status", "message")),
    "websocket_connection_limit": (WebSocketConnectionLimit, (), ("message", "status", "close_code")),
}


def _load_tagged(
    obj: Any,
    where: str,
    tag: str,
    table: Mapping[str, tuple[Callable[..., Any], tuple[str, ...], tuple[str, ...]]],
) -> Any:
    data = _expect_mapping(obj, where)
    kind = data.get(tag)
    if not isinstance(kind, str) or kind not in table:
        raise ScriptError(f"{where}: {tag} {kind!r} is not one of {sorted(table)}")
    factory, required, optional = table[kind]
    return _build(where, factory, _fields(data, where, required, optional, skip=tag))


def _load_reply(obj: Any, where: str) -> Reply:
    if isinstance(obj, str):
        return Reply(items=[Text(obj)])
    data = _fields(
        obj,
        where,
        (),
        (
            "items",
            "faults",
            "usage",
            "end_turn",
            "headers",
            "delta_delay",
            "events_per_write",
            "model",
            "response_id",
        ),
    )
    items = []
    for i, raw in enumerate(data.get("items", [])):
        if isinstance(raw, str):
            items.append(Text(raw))
        else:
            items.append(_load_tagged(raw, f"{where}.items[{i}]", "type", _ITEM_KEYS))
    data["items"] = items
    data["faults"] = [
        _load_tagged(raw, f"{where}.faults[{i}]", "kind", _FAULT_KEYS) for i, raw in enumerate(data.get("faults", []))
    ]
    if "usage" in data:
        usage_fields = (
            "input_tokens",
            "cached_tokens",
            "output_tokens",
            "reasoning_tokens",
            "total_tokens",
        )
        data["usage"] = _build(f"{where}.usage", Usage, _fields(data["usage"], f"{where}.usage", (), usage_fields))
    reply: Reply = _build(where, Reply, data)
    return reply


_SERVER_KEYS = ("context_window", "estimate_usage", "compact", "compact_errors")


def _load_server_options(data: dict[str, Any], where: str) -> ServerOptions:
    """Pop the server options' keys out of a top-level script object."""
    options = {key: data.pop(key) for key in _SERVER_KEYS if key in data}
    for key in ("estimate_usage", "compact"):
        value = options.get(key)
        if value is not None and not isinstance(value, bool):
            raise ScriptError(f"{where}.{key}: expected true or false, got {value!r}")
    if "compact_errors" in options:
        raw = options["compact_errors"]
        if not isinstance(raw, list):
            raise ScriptError(f"{where}.compact_errors: expected a list, got {type(raw).__name__}")
        errors: list[HttpError | None] = []
        for i, entry in enumerate(raw):
            at = f"{where}.compact_errors[{i}]"
            fault = None if entry is None else _load_tagged(entry, at, "kind", _FAULT_KEYS)
            if fault is not None and not isinstance(fault, HttpError):
                raise ScriptError(f"{at}: a compact error must be an HTTP error fault, got kind {entry.get('kind')!r}")
            errors.append(fault)
        options["compact_errors"] = errors
    result: ServerOptions = _build(where, ServerOptions, options)
    return result


def _load_script(obj: Any, where: str = "script") -> Script:
    if isinstance(obj, list):
        obj = {"replies": obj}
    if isinstance(obj, Mapping) and "sessions" in obj and where == "script":
        raise ScriptError(
            'script: a keyed {"sessions": ...} script is not a Script: load it with '
            "actors.scripted.load_script or SessionScripts.from_json"
        )
    if where == "script":
        data = _fields(obj, where, (), ("replies", "cycle", "default", "model", *_SERVER_KEYS))
        data["server"] = _load_server_options(data, where)
    else:
        misplaced = sorted(set(obj) & set(_SERVER_KEYS)) if isinstance(obj, Mapping) else []
        if misplaced:
            raise ScriptError(f"{where}: {misplaced} are server options: put them at the top level of the script")
        data = _fields(obj, where, (), ("replies", "cycle", "default", "model"))
    prefix = "" if where == "script" else f"{where}."
    replies = data.get("replies", [])
    if not isinstance(replies, list):
        raise ScriptError(f"{where}.replies: expected a list, got {type(replies).__name__}")
    data["replies"] = [_load_reply(r, f"{prefix}replies[{i}]") for i, r in enumerate(replies)]
    if "default" in data:
        data["default"] = _load_reply(data["default"], f"{prefix}default")
    script: Script = _build(where, Script, data)
    return script


def _load_sessions(obj: Any) -> SessionScripts:
    data = _fields(obj, "script", ("sessions",), ("header", *_SERVER_KEYS))
    server = _load_server_options(data, "script")
    sessions = _expect_mapping(data["sessions"], "script.sessions")
    if not sessions:
        raise ScriptError("script.sessions: no sessions: give at least one key and its script")
    scripts: dict[str, Script] = {}
    for key, value in sessions.items():
        if not key:
            raise ScriptError("script.sessions: a session key must be a non-empty string")
        scripts[key] = _load_script(value, f"sessions[{key!r}]")
    kwargs: dict[str, Any] = {"header": data["header"]} if "header" in data else {}
    result: SessionScripts = _build("script", SessionScripts, {"scripts": scripts, "server": server, **kwargs})
    return result
