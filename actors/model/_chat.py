"""The Chat Completions wire (PROTOCOL §4): request bodies and an incremental stream decoder.

For OpenAI-compatible local servers (vLLM, Ollama, llama.cpp, LM Studio). Both directions map onto
the kernel's Responses item model, so the sampling loop and the turn supervisor are identical on
either wire:

* :func:`chat_request_body` turns a :class:`~kernel.prompt.Prompt` into a ``/chat/completions``
  body: items become ``messages`` (function calls become assistant ``tool_calls``, their outputs
  ``role: "tool"`` messages), tool specs become ``{"type": "function", "function": {...}}``.
* :class:`ChatStreamDecoder` turns the streamed bytes into :mod:`kernel.stream` events: text and
  reasoning deltas as they arrive, one ``OutputItemDone`` per finished item when the
  ``finish_reason`` arrives, and :class:`~kernel.stream.Completed` at ``[DONE]``.

A stream that ends without ``[DONE]`` and without a ``finish_reason`` is a failed stream
(:class:`~kernel.errors.StreamError`, retried), never a short answer.

Layout: ``_chat_request`` builds the request body, ``_chat_stream`` decodes the stream, and
``_chat_errors`` maps error objects (:func:`chat_error`); this module re-exports them.
"""

from ._chat_errors import chat_error as chat_error
from ._chat_request import chat_request_body as chat_request_body, freeform_tool_names as freeform_tool_names
from ._chat_stream import ChatStreamDecoder as ChatStreamDecoder

__all__ = [
    "ChatStreamDecoder",
    "chat_request_body",
    "chat_error",
    "freeform_tool_names",
]
