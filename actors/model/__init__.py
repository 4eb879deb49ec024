"""The model actor and its transports.

:class:`ModelActor` serves streaming requests for many sessions at once over one or more
:class:`ModelTransport` implementations (primary first; a session falls back to the next when its
retry budget is spent). Layout: ``_actor`` (the actor and the session-side client), ``transport``
(the transport protocol and the shared read loop), ``_websocket`` (Responses over WebSocket, with
incremental input; the default's primary) on ``_ws_conn`` (the RFC 6455 client), ``_http_sse``
(HTTP+SSE), ``_wire`` (which body and decoder a wire uses), ``_responses`` and ``_chat`` (the two
wire codecs: request bodies and streaming decoders), ``_sse`` (the SSE splitter), ``_error_table``
(every error's class and retry decision, as data) with ``_http_errors`` and ``_chat_errors``,
``_pool`` (the sharded connection pool).
"""

from ._actor import (
    HttpModelClient as HttpModelClient,
    ModelActor as ModelActor,
    ModelSettings as ModelSettings,
    default_transports as default_transports,
    open_model_actor as open_model_actor,
)
from ._http_sse import HttpSseTransport as HttpSseTransport, default_ssl_context as default_ssl_context
from ._websocket import WebSocketTransport as WebSocketTransport, websocket_url as websocket_url
from .transport import (
    ModelTransport as ModelTransport,
    StreamDecoder as StreamDecoder,
    StreamRequest as StreamRequest,
    deliver_batch as deliver_batch,
    pump_stream as pump_stream,
)

__all__ = [
    "ModelSettings",
    "ModelActor",
    "HttpModelClient",
    "open_model_actor",
    "HttpSseTransport",
    "WebSocketTransport",
    "websocket_url",
    "default_transports",
    "default_ssl_context",
    "ModelTransport",
    "StreamDecoder",
    "StreamRequest",
    "deliver_batch",
    "pump_stream",
]
